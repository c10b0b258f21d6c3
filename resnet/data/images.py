"""One image in, one model input out: load a URL, a path or a file:// URI as RGB, then preprocess it.

Every failure is an :class:`ImageLoadError` (a ``ValueError``) whose message names the
input and says what to do; a path that does not exist is an :class:`ImageNotFoundError`,
which is both an ``ImageLoadError`` and a ``FileNotFoundError``.

Hostile inputs are refused before they cost memory or block: local files are checked by
:mod:`resnet.data.files` (regular files only, at most ``MAX_IMAGE_BYTES``), and every
image by :mod:`resnet.data.decode` before it is decoded (aspect ratio, pixels, PNG chunks).
"""

from __future__ import annotations

import io
import os
from typing import Optional

import torch
import validators
from PIL import Image

# Imported here, not lazily: torch.hub takes the repository off sys.path once hubconf is loaded.
from resnet.io.download import DownloadError, Limits, Timeout, check_timeout, open_stream
from resnet.data.preprocessing import (  # noqa: F401  (build_transform: also this module's name)
    CROP_SIZE,
    DEFAULT_DATA_CONFIG,
    ImageSize,
    build_transform,
    data_config,
    to_model_input,
)

from resnet.data.decode import (  # noqa: F401  (Decode, DECODE_MODES: also the names of this module)
    DECODE_MODES,
    MAX_IMAGE_BYTES,
    Decode,
    ResizeTo,
    check_aspect_ratio,
    check_decode,
    decode_image,
    to_rgb,
)
from resnet.data.defaults import DEFAULT_DEADLINE, DEFAULT_TIMEOUT  # noqa: F401  (also this module's names)
from resnet.data.errors import ImageLoadError, Uri
from resnet.data.files import file_uri_to_path, is_file_uri, load_local_image

if torch.distributed.is_available():
    # Before any process group exists (30 ms). build_transform() (evaluation, training) imports torchvision, which
    # imports torch._dynamo and with it torch.distributed.nn.functional, whose functions take
    # ``group=group.WORLD`` as a default argument, evaluated at import. Imported after
    # init_process_group(), they would hold the default group for the life of the interpreter:
    # destroy_process_group() could not free it, its gloo threads would still run at interpreter
    # shutdown, and one of them releasing the last collective's tensors would abort the process
    # ("terminate called without an active exception": torchrun jobs using iter_batches, torch 2.14).
    import torch.distributed.nn.functional  # noqa: F401

#: Largest download accepted from a URL, in bytes: the bound on every image file.
MAX_DOWNLOAD_BYTES: int = MAX_IMAGE_BYTES

_USER_AGENT = "nvidia-convnets-torchhub-processing-utils"
# Media types a server sends for web pages, API answers and documents, never for images.
_NOT_IMAGE_TYPES = frozenset(
    {"application/json", "application/xml", "application/xhtml+xml", "application/javascript", "application/pdf"}
)


def is_url(uri: object) -> bool:
    """True for a URL to download: what ``validators.url`` accepts (NVIDIA's test), plus any text that
    starts with ``http://`` or ``https://`` (validators rejects hosts such as ``localhost``).
    A ``file:`` URI is not one: it names a local file (see :func:`file_uri_to_path`)."""
    if not isinstance(uri, str) or is_file_uri(uri):
        return False
    if uri[:8].lower().startswith(("http://", "https://")):
        return True
    return bool(validators.url(uri))


def load_image(uri: Uri, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Image.Image:
    """Load ``uri`` (an http/https URL, a local path, ``str`` or ``os.PathLike``, or a ``file://``
    URI) as an RGB image.

    The EXIF orientation is applied (phone photos come out upright) and any other mode
    (greyscale, palette, RGBA, CMYK, 16-bit) is converted to 8-bit RGB. URLs are fetched with
    ``requests`` under ``timeout`` seconds ((connect, read), or one number for both).

    Raises:
        ImageNotFoundError: the path does not exist (also a ``FileNotFoundError``).
        ImageLoadError: anything else: a directory, a pipe or device (not a regular file), a
            symbolic link loop, a name too long for the file system, a folder on the path that
            cannot be entered, an empty, unreadable, damaged or truncated file, a file over
            ``MAX_IMAGE_BYTES``, an image over ``PIL.Image.MAX_IMAGE_PIXELS`` or more elongated
            than ``MAX_ASPECT_RATIO``, a PNG chunk over ``MAX_PNG_CHUNK_BYTES`` (all in
            :mod:`resnet.data.decode`),
            a ``file://`` URI of another host, an HTTP error status, a timeout, a redirect loop,
            or a server answering with something that is not an image.
        TypeError: ``uri`` is neither text nor a path.
    """
    _check_timeout(timeout)
    return load_for_resize(uri, None, timeout=timeout)


def load_input(uri: Uri, *, image_size: ImageSize = CROP_SIZE, decode: Decode = "exact",
               timeout: Timeout = DEFAULT_TIMEOUT) -> torch.Tensor:
    """Load ``uri`` as :func:`load_image` does and preprocess it for a model of ``image_size``: the
    (3, image_size, image_size) float32 input (:func:`preprocess_at`).

    ``decode="exact"`` decodes every pixel, as :func:`prepare_input_from_uri` does. ``decode="reduced"``
    decodes a JPEG of more than 4x the resize target (1,024 pixels on its shorter side for a 224 crop) at
    1/2, 1/4 or 1/8 scale inside libjpeg and resizes that straight to the exact path's size
    (:func:`resnet.data.decode.decode_image`): the same crop box, pixels within a few thousandths after
    normalisation, and a 12-megapixel photo prepared about 5x faster. Other images decode exactly either way.

    Raises:
        ImageLoadError, ImageNotFoundError, TypeError: as :func:`load_image`.
        ValueError: ``decode`` is neither ``"exact"`` nor ``"reduced"``.
    """
    check_decode(decode)
    _check_timeout(timeout)
    resize_to = data_config(image_size) if decode == "reduced" else None
    return preprocess_at(load_for_resize(uri, resize_to, timeout=timeout), image_size)


def load_for_resize(uri: Uri, resize_to: Optional[ResizeTo], *, timeout: Timeout = DEFAULT_TIMEOUT) -> Image.Image:
    """:func:`load_image` (``timeout`` not checked here) for a transform that starts with ``Resize(resize_to)``
    (``resize_to`` a side, bilinear, or a :class:`~resnet.data.preprocessing.DataConfig`'s resize):
    a JPEG much larger than that is decoded at reduced scale and comes back already resized to what the
    ``Resize`` makes of the full image (:func:`resnet.data.decode.decode_image`); ``None`` decodes exactly."""
    if is_file_uri(uri):
        return load_local_image(file_uri_to_path(uri), uri, resize_to=resize_to)
    if isinstance(uri, str) and is_url(uri):
        data = _download(uri, timeout)
        return decode_image(io.BytesIO(data), f"the image at {uri}", uri, resize_to=resize_to)
    if isinstance(uri, os.PathLike):
        path = os.fspath(uri)
        if not isinstance(path, str):
            raise TypeError(f"expected a text path, got the bytes path {path!r}; decode it with os.fsdecode()")
    elif isinstance(uri, str):
        path = uri
    else:
        raise TypeError(
            f"expected an image URL or file path (str or os.PathLike), got {type(uri).__name__}: {uri!r:.100}"
        )
    return load_local_image(path, uri, resize_to=resize_to)


def preprocess(image: Image.Image) -> torch.Tensor:
    """Turn a PIL image into the (3, 224, 224) float32 model input.

    Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet mean/std), the pipeline
    of ``resnet.data.preprocessing.build_transform`` (the one place its constants are defined), computed without
    importing torchvision and equal to it (:func:`resnet.data.preprocessing.to_model_input`).
    Images that are not RGB are converted first, as :func:`load_image` does.

    Raises:
        ImageLoadError: the image is more elongated than ``decode.MAX_ASPECT_RATIO`` (Resize(256)
            would blow it up: 1 x 30,000 pixels become 256 x 7,680,000).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"preprocess expects a PIL.Image.Image, got {type(image).__name__}; "
            "load files and URLs with load_image() first"
        )
    check_aspect_ratio(image, "the image", None)
    return to_model_input(to_rgb(image))


def preprocess_at(image: Image.Image, image_size: ImageSize) -> torch.Tensor:
    """:func:`preprocess` for a model trained at another size: resize to 256/224 of ``image_size``, centre crop
    ``image_size`` (``resnet.data.preprocessing.build_transform(image_size)``); 224 is :func:`preprocess` itself.
    A :class:`resnet.data.preprocessing.DataConfig` gives the sizes and the interpolation (an EfficientNet's)."""
    config = data_config(image_size)
    if config == DEFAULT_DATA_CONFIG:
        return preprocess(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"preprocess_at expects a PIL.Image.Image, got {type(image).__name__}")
    check_aspect_ratio(image, "the image", None)
    return to_model_input(to_rgb(image), config)


def prepare_input_from_uri(uri: Uri, cuda: bool = False, *, timeout: Timeout = DEFAULT_TIMEOUT) -> torch.Tensor:
    """Load ``uri`` (http/https URL or local path) and return a (1, 3, 224, 224) float32 tensor.

    NVIDIA's function, with the same pipeline and constants (the tensors agree to 1e-6 on RGB
    images): Resize(256), CenterCrop(224), ToTensor, then (x - mean) / std. Batch several with
    ``torch.cat``. With ``cuda=True`` the tensor is moved to the current CUDA device.

    Unlike NVIDIA's version it also takes ``file://`` URIs, converts greyscale/palette/RGBA/
    CMYK/16-bit images to RGB, applies the EXIF orientation, bounds URL downloads by ``timeout``,
    checks the HTTP status and refuses image bombs (see :func:`load_image`); errors are
    :class:`ImageLoadError` naming ``uri``.
    """
    if cuda and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise RuntimeError(
            f"prepare_input_from_uri({uri!r}, cuda=True): CUDA is not available on this machine "
            f"(torch {torch.__version__}, {build}, no usable GPU). Call it with cuda=False and move "
            "the batch with .to(device) where device = 'cuda' if torch.cuda.is_available() else 'cpu'."
        )
    tensor = preprocess(load_image(uri, timeout=timeout)).unsqueeze(0)
    return tensor.cuda() if cuda else tensor


# --------------------------------------------------------------------------- URLs


def _check_timeout(timeout: Timeout) -> None:
    check_timeout(timeout, DEFAULT_TIMEOUT)


def _is_not_image_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith("image/"):
        return False
    return media.startswith("text/") or media in _NOT_IMAGE_TYPES or media.endswith(("+json", "+xml", "/html"))


def _download(url: str, timeout: Timeout) -> bytes:
    """The body of ``url``, or an ImageLoadError naming the URL and what went wrong."""
    limits = Limits.from_timeout(timeout, default_deadline=DEFAULT_DEADLINE, max_bytes=MAX_DOWNLOAD_BYTES)
    headers = {"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.5"}
    chunks: list[bytes] = []
    try:
        with open_stream(url, limits, headers=headers) as stream:
            status = stream.status
            if not 200 <= status < 300:
                raise stream.status_error()
            content_type = stream.headers.get("Content-Type", "")
            if _is_not_image_type(content_type):
                raise ImageLoadError(
                    f"{url} did not answer with an image: HTTP {status} with content type {content_type!r}; "
                    "the URL must point at the image file itself, not at a web page that shows it",
                    url,
                )
            chunks.extend(stream.chunks(1 << 16))
    except DownloadError as error:
        if error.kind == "too-large":
            raise ImageLoadError(_too_big(url, error.size), url) from None
        raise ImageLoadError(f"{error}; {_DOWNLOAD_ADVICE.get(error.kind, _CHECK_URL)}", url) from None
    if not chunks:
        raise ImageLoadError(f"{url} answered HTTP {status} with an empty body, not an image", url)
    return b"".join(chunks)


_CHECK_URL = "check the URL in a browser, or download the image and pass its path"
_DOWNLOAD_ADVICE = {
    "connect-timeout": "check the network or pass a larger timeout",
    "read-timeout": "try again later or pass a larger timeout",
    "deadline": "try again later, or pass timeout=(connect, read, deadline) with a longer deadline",
    "incomplete": "try again",
    "unsupported-url": "for a local file pass its path",
}


def _too_big(url: str, size: int) -> str:
    return (
        f"{url} is too large to be a photo ({size:,} bytes so far, limit {MAX_DOWNLOAD_BYTES:,}); "
        "download and resize it first"
    )
