"""One image in, one model input out: load a URL or a path as RGB, then preprocess it.

Every failure is an :class:`ImageLoadError` (a ``ValueError``) whose message names the
input and says what to do; a path that does not exist is an :class:`ImageNotFoundError`,
which is both an ``ImageLoadError`` and a ``FileNotFoundError``.
"""

from __future__ import annotations

import errno
import functools
import io
import os
from typing import Callable, Optional, Union

import numpy as np
import torch
import validators
from PIL import Image, ImageOps, UnidentifiedImageError

# Imported here, not lazily: torch.hub takes the repository off sys.path once hubconf is loaded.
from resnet.download import DownloadError, Limits, Timeout, check_timeout, open_stream
from resnet.preprocessing import build_transform

#: A URL (http/https) or a local file path.
Uri = Union[str, "os.PathLike[str]"]

#: Default (connect, read) timeout in seconds: connecting to the server, then each wait for more
#: bytes. A server that accepts the connection and never answers fails after the read timeout.
#: ``timeout=`` also takes one number, or (connect, read, deadline) (see ``resnet.download.Timeout``).
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
#: Seconds a URL download may take in all, unless ``timeout`` has a third element: a server that
#: sends a byte every few seconds never trips the read timeout, and is stopped by this.
DEFAULT_DEADLINE: float = 180.0
#: Largest download accepted from a URL, in bytes (far above any photo the model is meant for).
MAX_DOWNLOAD_BYTES: int = 200 * 1024 * 1024

_USER_AGENT = "nvidia-convnets-torchhub-processing-utils"
# Media types a server sends for web pages, API answers and documents, never for images.
_NOT_IMAGE_TYPES = frozenset(
    {"application/json", "application/xml", "application/xhtml+xml", "application/javascript", "application/pdf"}
)
# Pillow modes that hold more than 8 bits per sample: converting them with convert("RGB")
# clips every value above 255 (a 16-bit photo turns almost white), so they are scaled instead.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class ImageLoadError(ValueError):
    """An input could not be turned into an image; the message names it and says what to do.

    ``uri`` holds the input as it was given.
    """

    def __init__(self, message: str, uri: Optional[Uri] = None) -> None:
        super().__init__(message)
        self.uri = uri


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """A local path that does not exist (catch it as ``ImageLoadError`` or ``FileNotFoundError``)."""

    def __init__(self, message: str, uri: Optional[Uri] = None, path: Optional[str] = None) -> None:
        super().__init__(message, uri)
        self.errno = errno.ENOENT
        self.filename = path

    def __str__(self) -> str:  # the message, not OSError's "[Errno 2] ..." form
        return str(self.args[0])


def is_url(uri: object) -> bool:
    """True for an http(s) URL: what ``validators.url`` accepts (NVIDIA's test), plus any text that
    starts with ``http://`` or ``https://`` (validators rejects hosts such as ``localhost``)."""
    if not isinstance(uri, str):
        return False
    if uri[:8].lower().startswith(("http://", "https://")):
        return True
    return bool(validators.url(uri))


def load_image(uri: Uri, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Image.Image:
    """Load ``uri`` (an http/https URL or a local path, ``str`` or ``os.PathLike``) as an RGB image.

    The EXIF orientation is applied (phone photos come out upright) and any other mode
    (greyscale, palette, RGBA, CMYK, 16-bit) is converted to 8-bit RGB. URLs are fetched with
    ``requests`` under ``timeout`` seconds ((connect, read), or one number for both).

    Raises:
        ImageNotFoundError: the path does not exist (also a ``FileNotFoundError``).
        ImageLoadError: anything else: a directory, an empty, unreadable, damaged or truncated
            file, an image over ``PIL.Image.MAX_IMAGE_PIXELS``, an HTTP error status, a
            timeout, a redirect loop, or a server answering with something that is not an image.
        TypeError: ``uri`` is neither text nor a path.
    """
    _check_timeout(timeout)
    if isinstance(uri, str) and is_url(uri):
        data = _download(uri, timeout)
        return _decode(io.BytesIO(data), f"the image at {uri}", uri)
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
    return _load_path(path, uri)


@functools.lru_cache(maxsize=1)
def _transform() -> Callable[[Image.Image], torch.Tensor]:
    # Built once: the pipeline is stateless and shared safely by the decoding threads.
    return build_transform()


def preprocess(image: Image.Image) -> torch.Tensor:
    """Turn a PIL image into the (3, 224, 224) float32 model input.

    Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet mean/std), the pipeline
    of ``resnet.preprocessing.build_transform`` (the one place its constants are defined).
    Images that are not RGB are converted first, as :func:`load_image` does.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"preprocess expects a PIL.Image.Image, got {type(image).__name__}; "
            "load files and URLs with load_image() first"
        )
    return _transform()(to_rgb(image))


def prepare_input_from_uri(uri: Uri, cuda: bool = False, *, timeout: Timeout = DEFAULT_TIMEOUT) -> torch.Tensor:
    """Load ``uri`` (http/https URL or local path) and return a (1, 3, 224, 224) float32 tensor.

    NVIDIA's function, with the same pipeline and constants (the tensors agree to 1e-6 on RGB
    images): Resize(256), CenterCrop(224), ToTensor, then (x - mean) / std. Batch several with
    ``torch.cat``. With ``cuda=True`` the tensor is moved to the current CUDA device.

    Unlike NVIDIA's version it converts greyscale/palette/RGBA/CMYK/16-bit images to RGB,
    applies the EXIF orientation, bounds URL downloads by ``timeout`` and checks the HTTP
    status; errors are :class:`ImageLoadError` naming ``uri``.
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


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as 8-bit RGB; 16-bit greyscale is scaled down rather than clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image).astype(np.float64)
        # Mode "I" (32-bit integers) carries no bit depth; treat it as 16-bit when it uses that range.
        if mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255:
            values = values / 257.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        # Through RGBA, as Pillow asks for palette images with transparency.
        image = image.convert("RGBA")
    return image.convert("RGB")


# --------------------------------------------------------------------------- local files


def _load_path(path: str, uri: Uri) -> Image.Image:
    if not path:
        raise ImageLoadError("an empty string is not an image path or URL", uri)
    if not os.path.exists(path):
        absolute = os.path.abspath(path)
        where = "" if absolute == path else f" (looked for {absolute!r})"
        raise ImageNotFoundError(
            f"no such image file: {path!r}{where}; check the path, or pass an http(s) URL", uri, path
        )
    if os.path.isdir(path):
        raise ImageLoadError(
            f"{path!r} is a directory, not an image file; pass the image files in it, "
            f"e.g. sorted(pathlib.Path({path!r}).glob('*.jpg'))",
            uri,
        )
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise ImageLoadError(f"{path!r} is an empty file (0 bytes), not an image; re-copy or re-download it", uri)
        with open(path, "rb") as file:
            return _decode(file, repr(path), uri)
    except PermissionError:
        raise ImageLoadError(f"cannot read {path!r}: permission denied", uri) from None
    except ImageLoadError:
        raise
    except OSError as error:
        raise ImageLoadError(f"cannot read {path!r}: {error.strerror or error}", uri) from None


# --------------------------------------------------------------------------- decoding


def _decode(file: io.BufferedIOBase, label: str, uri: Uri) -> Image.Image:
    """Decode an open file or buffer fully, as upright RGB; ``label`` names it in errors."""
    try:
        with Image.open(file) as image:
            _check_pixel_limit(image, label, uri)
            image.load()  # decode now, so truncated or damaged data fails here and not later
            return to_rgb(_upright(image))
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageLoadError(_too_large(label, str(error)), uri) from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"{label} is not an image Pillow can read (not a JPEG, PNG, GIF, BMP, TIFF, WebP...); "
            "check that it is an image file and not a web page, text or an archive",
            uri,
        ) from None
    except OSError as error:
        # Pillow says "image file is truncated" / "broken data stream" for damaged files.
        raise ImageLoadError(
            f"{label} is damaged or truncated ({error}); re-copy or re-download it", uri
        ) from None
    except Exception as error:  # malformed files make Pillow's plugins raise all kinds of errors
        raise ImageLoadError(
            f"{label} could not be decoded ({type(error).__name__}: {error}); it is probably damaged", uri
        ) from None


def _check_pixel_limit(image: Image.Image, label: str, uri: Uri) -> None:
    # Pillow itself refuses only images over twice its limit; over the limit is refused here too.
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise ImageLoadError(
            _too_large(label, f"{width}x{height} = {width * height:,} pixels, over the limit of {limit:,}"), uri
        )


def _too_large(label: str, detail: str) -> str:
    return (
        f"{label} is too large to decode safely ({detail}); shrink it, or if you trust the file "
        "raise PIL.Image.MAX_IMAGE_PIXELS"
    )


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not cost an otherwise good image
        return image


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
