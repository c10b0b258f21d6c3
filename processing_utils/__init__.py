"""Image processing utilities for NVIDIA's ConvNets, the ``nvidia_convnets_processing_utils`` hub entrypoint.

``torch.hub.load(REPO, 'nvidia_convnets_processing_utils')`` returns an object with NVIDIA's
three methods, ``prepare_input_from_uri``, ``pick_n_best`` and ``get_imgnet_classes``, which
behave as NVIDIA's do (same pipeline and constants, the same printed line and return value),
plus ``load_image``, ``preprocess``, ``load_batch``, ``iter_batches`` and ``show_predictions``.
It is a thin layer over :mod:`resnet.data` (decoding, preprocessing, batches, charts), shared with the
command line and the exporters; ``resnet`` never imports it.

Deliberate differences from NVIDIA's implementation:

- Greyscale, palette, RGBA, CMYK and other non-RGB images are converted to RGB
  (``Image.convert("RGB")``; alpha is dropped) instead of crashing; 16-bit greyscale is scaled
  to 8 bits, because ``convert("RGB")`` would clip it to white. RGB images give the same tensor.
- The EXIF orientation is applied, so phone photos are classified upright, as they are shown.
  NVIDIA's version classifies the pixels as stored (often rotated by 90 degrees).
- URL downloads have a timeout (5 s to connect, 30 s per read by default; ``timeout=``),
  check the HTTP status and content type, stop redirect loops, and fail with an
  ``ImageLoadError`` naming the URL. NVIDIA's hangs on a silent server and hands error pages
  to Pillow.
- ``file://`` URIs (RFC 8089, as ``pathlib.Path.as_uri()`` writes them) name local files;
  ``file://otherhost/...`` is refused.
- Image bombs are refused before decoding: an aspect ratio over 20:1 (``Resize(256)`` would
  blow a 1 x 30,000 PNG up to 5.9 GB), a file over 200 MB, a PNG chunk other than pixel data
  over 16 MiB. Pipes and devices are refused as not regular files, without being opened.
- Class names ship inside the package (``resnet/data/imagenet_synsets.txt``, the names of NVIDIA's
  LOC_synset_mapping.json): no download and no file written into the working directory.
- ``pick_n_best`` also takes a single (1000,) row, warns when the rows are not probabilities
  (softmax forgotten), and rejects a wrong shape or ``n`` outside 1..1000 with a clear error.
- ``prepare_input_from_uri(uri, cuda=True)`` without CUDA says so and suggests ``cuda=False``.
"""

from __future__ import annotations

from processing_utils.classes import NUM_CLASSES, get_imgnet_classes, pick_n_best
from resnet._moved import install
from resnet.data.batch import BatchResult, iter_batches, load_batch
from resnet.data.decode import to_rgb
from resnet.data.display import show_predictions
from resnet.data.errors import ImageLoadError, ImageNotFoundError
from resnet.data.files import file_uri_to_path, is_file_uri
from resnet.data.images import DEFAULT_TIMEOUT, is_url, load_image, prepare_input_from_uri, preprocess

#: This package's modules that moved into :mod:`resnet.data`; their old import paths still work.
MOVED: dict[str, str] = {
    f"processing_utils.{name}": f"resnet.data.{name}"
    for name in ("batch", "decode", "display", "errors", "files", "images", "inputs")
}
install(MOVED)

__all__ = [
    "DEFAULT_TIMEOUT",
    "NUM_CLASSES",
    "BatchResult",
    "ConvNetsProcessingUtils",
    "ImageLoadError",
    "ImageNotFoundError",
    "file_uri_to_path",
    "get_imgnet_classes",
    "is_file_uri",
    "is_url",
    "iter_batches",
    "load_batch",
    "load_image",
    "nvidia_convnets_processing_utils",
    "pick_n_best",
    "prepare_input_from_uri",
    "preprocess",
    "show_predictions",
    "to_rgb",
]


class ConvNetsProcessingUtils:
    """NVIDIA's processing utils object: ``prepare_input_from_uri``, ``pick_n_best``,
    ``get_imgnet_classes``, plus ``load_image``, ``preprocess``, ``load_batch``,
    ``iter_batches`` and ``show_predictions`` (see the ``processing_utils`` module)."""

    prepare_input_from_uri = staticmethod(prepare_input_from_uri)
    pick_n_best = staticmethod(pick_n_best)
    get_imgnet_classes = staticmethod(get_imgnet_classes)
    load_image = staticmethod(load_image)
    preprocess = staticmethod(preprocess)
    load_batch = staticmethod(load_batch)
    iter_batches = staticmethod(iter_batches)
    show_predictions = staticmethod(show_predictions)
    ImageLoadError = ImageLoadError

    def __repr__(self) -> str:
        return (
            "ConvNetsProcessingUtils(prepare_input_from_uri, pick_n_best, get_imgnet_classes, "
            "load_image, preprocess, load_batch, iter_batches, show_predictions)"
        )


def nvidia_convnets_processing_utils() -> ConvNetsProcessingUtils:
    """Helpers to prepare images for NVIDIA's ConvNets and read their predictions.

    Returns an object with NVIDIA's methods (same behaviour, same printed output):

    - ``prepare_input_from_uri(uri, cuda=False)``: an http(s) URL, a local path (str or
      pathlib.Path) or a file:// URI -> (1, 3, 224, 224) float32 tensor: Resize(256), CenterCrop(224),
      ToTensor, normalised with the ImageNet mean/std. Batch several with ``torch.cat``.
    - ``pick_n_best(predictions, n=5)``: for (N, 1000) probabilities (apply softmax to the
      logits first) prints ``sample i: [('tabby, tabby cat', '84.7%'), ...]`` per row and
      returns those lists of (class name, percentage) pairs.
    - ``get_imgnet_classes()``: numpy array of the 1000 ImageNet class names in index order
      (shipped with the package; works offline).

    and this repository's additions:

    - ``load_batch(uris, num_workers=None)``: decode many URLs/paths in parallel threads ->
      ``BatchResult(tensor (N, 3, 224, 224), uris, failures)``; bad inputs are reported, not fatal.
    - ``iter_batches(uris, batch_size)``: the same as a stream of batches in input order,
      decoding ahead in the background while the model runs.
    - ``show_predictions(uris, results, output=None)``: each image beside a bar chart of its
      top classes, shown (notebook; returns None) or saved to a PNG (returns the Figure).
    - ``load_image(uri)`` / ``preprocess(image)``: the two halves of ``prepare_input_from_uri``.

    Differences from NVIDIA's: non-RGB images (greyscale, palette, RGBA, CMYK, 16-bit) are
    converted to RGB, EXIF orientation is applied, downloads time out (``timeout=``) and check
    the HTTP status, file:// URIs are accepted, image bombs (over 20:1, over 200 MB) are
    refused before decoding, and errors (``ImageLoadError``) name the input.

    Example:
        utils = torch.hub.load(REPO, 'nvidia_convnets_processing_utils')
        batch = torch.cat([utils.prepare_input_from_uri(u) for u in uris])
        with torch.no_grad():
            probs = torch.nn.functional.softmax(model.eval()(batch), dim=1)
        results = utils.pick_n_best(predictions=probs, n=5)
    """
    return ConvNetsProcessingUtils()
