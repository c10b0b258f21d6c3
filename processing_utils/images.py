"""One image in, one model input out: load a URL, a path or a file:// URI as RGB, then preprocess it.

Every failure is an :class:`ImageLoadError` (a ``ValueError``) whose message names the
input and says what to do; a path that does not exist is an :class:`ImageNotFoundError`,
which is both an ``ImageLoadError`` and a ``FileNotFoundError``.

Hostile files are refused before they cost memory: a local file must be a regular file
(never a pipe or a device, which are not read at all) of at most :data:`MAX_DOWNLOAD_BYTES`;
an image whose longer side is more than :data:`MAX_ASPECT_RATIO` times its shorter side is
refused from its header, before decoding; and a PNG chunk other than pixel data may declare
at most :data:`MAX_PNG_CHUNK_BYTES` (Pillow reads such a chunk whole, whatever its length).
"""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
import struct
import urllib.parse
import urllib.request
from typing import Callable, Optional, Union

import numpy as np
import torch
import validators
from PIL import Image, ImageOps, UnidentifiedImageError

# Imported here, not lazily: torch.hub takes the repository off sys.path once hubconf is loaded.
from resnet.preprocessing import RESIZE_SIZE, build_transform

if torch.distributed.is_available():
    # Before any process group exists (30 ms). The first preprocess() imports torchvision, which
    # imports torch._dynamo and with it torch.distributed.nn.functional, whose functions take
    # ``group=group.WORLD`` as a default argument, evaluated at import. Imported after
    # init_process_group(), they would hold the default group for the life of the interpreter:
    # destroy_process_group() could not free it, its gloo threads would still run at interpreter
    # shutdown, and one of them releasing the last collective's tensors would abort the process
    # ("terminate called without an active exception": torchrun jobs using iter_batches, torch 2.14).
    import torch.distributed.nn.functional  # noqa: F401

#: A URL (http/https), a local file path, or a file:// URI (RFC 8089) naming a local file.
Uri = Union[str, "os.PathLike[str]"]
#: Seconds for a URL download, as ``requests`` takes them: one number for both, or (connect, read).
Timeout = Union[float, tuple[float, float]]

#: Default (connect, read) timeout in seconds: connecting to the server, then each wait for more
#: bytes. A server that accepts the connection and never answers fails after the read timeout.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
#: Largest image accepted, downloaded from a URL or read from a local file, in bytes (far above
#: any photo the model is meant for).
MAX_DOWNLOAD_BYTES: int = 200 * 1024 * 1024
#: Longest side over shortest side accepted. Resize(256) scales the shorter side to 256 pixels, so
#: the resized image is at most 256 x 5,120 pixels (3.9 MB); a 1 x 30,000 pixel PNG of 200 bytes
#: would otherwise become 256 x 7,680,000 pixels (5.9 GB). No photo is that elongated, and the
#: model would see only the centre 1/20 of it.
MAX_ASPECT_RATIO: int = 20
#: Largest PNG chunk other than pixel data (text, ICC profile, EXIF...) accepted, in bytes.
#: Pillow reads such a chunk whole before looking at it; a sparse file of a few KB on disk
#: can declare one of gigabytes.
MAX_PNG_CHUNK_BYTES: int = 16 * 1024 * 1024

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
    """True for a URL to download: what ``validators.url`` accepts (NVIDIA's test), plus any text that
    starts with ``http://`` or ``https://`` (validators rejects hosts such as ``localhost``).
    A ``file:`` URI is not one: it names a local file (see :func:`file_uri_to_path`)."""
    if not isinstance(uri, str) or is_file_uri(uri):
        return False
    if uri[:8].lower().startswith(("http://", "https://")):
        return True
    return bool(validators.url(uri))


def is_file_uri(uri: object) -> bool:
    """True for text starting with the ``file:`` scheme (any case), as ``pathlib.Path.as_uri()`` writes."""
    return isinstance(uri, str) and uri[:5].lower() == "file:"


def file_uri_to_path(uri: str) -> str:
    """The local path a ``file:`` URI names (RFC 8089), percent-encoded characters decoded.

    Accepts ``file:///path``, ``file://localhost/path`` and ``file:/path``; the output of
    ``pathlib.Path.as_uri()`` gives back the path it was made from, non-UTF-8 names included.

    Raises:
        ImageLoadError: a file on another host (``file://server/share/photo.jpg``), a relative
            path, or a query or fragment (``?``, ``#``), which a file URI cannot carry.
    """
    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc
    if host and host.lower() != "localhost":
        raise ImageLoadError(
            f"{uri} names a file on the host {host!r}; only files on this machine can be read "
            "(file:///path or file://localhost/path): copy the image here, or mount the share and "
            "pass its local path",
            uri,
        )
    if parts.query or parts.fragment or uri.endswith(("?", "#")):
        raise ImageLoadError(
            f"{uri} has a query or fragment ('?' or '#'), which a file URI cannot carry; "
            "if they are part of the file name, percent-encode them as %3F and %23 (pathlib.Path.as_uri() does)",
            uri,
        )
    if os.name == "nt":  # pragma: no cover - file:///C:/photo.jpg, file://localhost/C:/photo.jpg
        path = urllib.request.url2pathname(parts.path)
    else:
        # Bytes first, then the file system's decoding: names that are not UTF-8 survive.
        path = os.fsdecode(urllib.parse.unquote_to_bytes(parts.path))
    if not os.path.isabs(path):
        raise ImageLoadError(
            f"{uri} does not name an absolute path; write file:///absolute/path "
            "(pathlib.Path(path).resolve().as_uri()) or pass the path itself",
            uri,
        )
    return path


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
            :data:`MAX_DOWNLOAD_BYTES`, an image over ``PIL.Image.MAX_IMAGE_PIXELS`` or more
            elongated than :data:`MAX_ASPECT_RATIO`, a PNG chunk over :data:`MAX_PNG_CHUNK_BYTES`,
            a ``file://`` URI of another host, an HTTP error status, a timeout, a redirect loop,
            or a server answering with something that is not an image.
        TypeError: ``uri`` is neither text nor a path.
    """
    _check_timeout(timeout)
    if is_file_uri(uri):
        return _load_path(file_uri_to_path(uri), uri)
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

    Raises:
        ImageLoadError: the image is more elongated than :data:`MAX_ASPECT_RATIO` (Resize(256)
            would blow it up: 1 x 30,000 pixels become 256 x 7,680,000).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"preprocess expects a PIL.Image.Image, got {type(image).__name__}; "
            "load files and URLs with load_image() first"
        )
    _check_aspect_ratio(image, "the image", None)
    return _transform()(to_rgb(image))


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
    label = f"{path!r} (from {uri})" if is_file_uri(uri) else repr(path)
    try:
        info = os.stat(path)
    except (OSError, ValueError) as error:
        raise _unexaminable(path, label, uri, error) from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(
            f"{label} is a directory, not an image file; pass the image files in it, "
            f"e.g. sorted(pathlib.Path({path!r}).glob('*.jpg'))",
            uri,
        )
    _check_regular_file(info, label, uri)
    try:
        # Non-blocking, so that a file swapped for a pipe since the stat above cannot hang the
        # open; the descriptor's own stat is then checked again.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(descriptor, "rb") as file:
            _check_regular_file(os.fstat(descriptor), label, uri)
            return _decode(file, label, uri)
    except PermissionError:
        raise ImageLoadError(f"cannot read {label}: permission denied", uri) from None
    except ImageLoadError:
        raise
    except OSError as error:
        raise ImageLoadError(f"cannot read {label}: {error.strerror or error}", uri) from None


def _check_regular_file(info: os.stat_result, label: str, uri: Uri) -> None:
    """Refuse what is not a plain file with image data in it: pipes, devices, empty or huge files."""
    mode = info.st_mode
    if not stat.S_ISREG(mode):
        kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))
        kind = next((name for test, name in kinds if test(mode)), "a special file")
        raise ImageLoadError(f"{label} is not a regular file: it is {kind}; pass an image file", uri)
    if info.st_size == 0:
        raise ImageLoadError(f"{label} is an empty file (0 bytes), not an image; re-copy or re-download it", uri)
    if info.st_size > MAX_DOWNLOAD_BYTES:
        raise ImageLoadError(
            f"{label} is too large to be a photo ({info.st_size:,} bytes, limit {MAX_DOWNLOAD_BYTES:,}); "
            "resize it first",
            uri,
        )


def _unexaminable(path: str, label: str, uri: Uri, error: Exception) -> ImageLoadError:
    """The error for a path whose ``os.stat`` failed, saying why."""
    code = getattr(error, "errno", None)
    if isinstance(error, ValueError):  # "embedded null byte"
        return ImageLoadError(f"{label} is not a usable path: it contains a NUL character", uri)
    if code == errno.ENOENT and os.path.islink(path):
        return ImageNotFoundError(
            f"no such image file: {label} is a symbolic link to {os.readlink(path)!r}, which does not exist; "
            "fix or remove the link",
            uri,
            path,
        )
    if code in (errno.ENOENT, errno.ENOTDIR):
        absolute = os.path.abspath(path)
        where = "" if absolute == path else f" (looked for {absolute!r})"
        return ImageNotFoundError(
            f"no such image file: {label}{where}; check the path, or pass an http(s) URL", uri, path
        )
    if code == errno.ELOOP:
        return ImageLoadError(
            f"cannot open {label}: a symbolic link loop (too many levels of symbolic links); fix the links", uri
        )
    if code == errno.ENAMETOOLONG:
        return ImageLoadError(
            f"{label} is not a usable path: a name in it is too long for the file system (ENAMETOOLONG: "
            "most allow 255 bytes per file or folder name); check how the path was built, or rename the file",
            uri,
        )
    if code in (errno.EACCES, errno.EPERM):
        return ImageLoadError(
            f"cannot examine {label}: permission denied (a folder on the path cannot be entered)", uri
        )
    return ImageLoadError(f"cannot examine {label}: {getattr(error, 'strerror', None) or error}", uri)


# --------------------------------------------------------------------------- decoding


def _decode(file: io.BufferedIOBase, label: str, uri: Uri) -> Image.Image:
    """Decode an open file or buffer fully, as upright RGB; ``label`` names it in errors."""
    try:
        _check_png_chunks(file, label, uri)
        with Image.open(file) as image:
            _check_pixel_limit(image, label, uri)
            _check_aspect_ratio(image, label, uri)
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


def _check_aspect_ratio(image: Image.Image, label: str, uri: Optional[Uri]) -> None:
    """Refuse, from the header's size, an image that Resize(256) would blow up (see MAX_ASPECT_RATIO)."""
    width, height = image.size
    short, long = sorted((width, height))
    if short < 1:
        raise ImageLoadError(f"{label} has no pixels ({width}x{height}); it is damaged", uri)
    if long > MAX_ASPECT_RATIO * short:
        resized = (RESIZE_SIZE, RESIZE_SIZE * long // short)
        if width > height:
            resized = resized[::-1]
        raise ImageLoadError(
            f"{label} is {width}x{height} pixels: its longer side is {long / short:,.1f} times its shorter "
            f"side, and images more elongated than {MAX_ASPECT_RATIO}:1 are refused (Resize({RESIZE_SIZE}) would "
            f"make this one {resized[0]:,}x{resized[1]:,} pixels, {3 * resized[0] * resized[1] / 1e9:,.1f} GB); "
            "crop it to the part to classify",
            uri,
        )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PIXEL_CHUNKS = frozenset({b"IDAT", b"fdAT"})  # read by Pillow in small blocks, whatever their length


def _check_png_chunks(file: io.BufferedIOBase, label: str, uri: Uri) -> None:
    """Walk a PNG's chunk headers (seeking over their data) and refuse an oversized non-pixel chunk.

    Pillow reads every other chunk whole, in memory, before checking it (``ImageFile._safe_read``
    with the declared length; ``PngImagePlugin.MAX_TEXT_CHUNK`` applies to text only, after the
    read, and is a process-wide setting): a sparse file of 4 KB on disk declaring a 256 MiB text
    chunk cost 770 MB and 10 s. Pixel data is read in 64 KB blocks, and what is left of a broken
    IDAT chunk is skipped in one read, bounded by the file size limit.
    """
    start = file.tell()
    try:
        if file.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
            return
        while True:
            header = file.read(8)
            if len(header) < 8:
                return  # cut short: Pillow says so
            length, kind = struct.unpack(">I4s", header)
            if kind not in _PNG_PIXEL_CHUNKS and length > MAX_PNG_CHUNK_BYTES:
                raise ImageLoadError(
                    f"{label} is not a usable PNG: its {kind.decode('latin-1')!r} chunk declares {length:,} bytes, "
                    f"over the limit of {MAX_PNG_CHUNK_BYTES:,} for anything but pixel data; it is damaged "
                    "or crafted to exhaust memory",
                    uri,
                )
            if kind == b"IEND":
                return
            file.seek(length + 4, io.SEEK_CUR)  # the data and its CRC
    finally:
        file.seek(start)


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
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    ok = len(values) == (2 if isinstance(timeout, tuple) else 1) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
    )
    if not ok:
        raise ValueError(
            f"timeout must be positive seconds, one number or (connect, read), got {timeout!r}; "
            f"the default is {DEFAULT_TIMEOUT}"
        )


def _is_not_image_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith("image/"):
        return False
    return media.startswith("text/") or media in _NOT_IMAGE_TYPES or media.endswith(("+json", "+xml", "/html"))


def _download(url: str, timeout: Timeout) -> bytes:
    """The body of ``url``, or an ImageLoadError naming the URL and what went wrong."""
    hint = "check the URL in a browser, or download the image and pass its path"
    import requests  # imported on first use: it adds about 0.1 s to every start-up

    try:
        with requests.get(
            url, stream=True, timeout=timeout, headers={"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.5"}
        ) as response:
            status = response.status_code
            if not 200 <= status < 300:
                raise ImageLoadError(
                    f"could not download {url}: HTTP {status} {response.reason or ''}".rstrip() + f"; {hint}", url
                )
            content_type = response.headers.get("Content-Type", "")
            if _is_not_image_type(content_type):
                raise ImageLoadError(
                    f"{url} did not answer with an image: HTTP {status} with content type {content_type!r}; "
                    "the URL must point at the image file itself, not at a web page that shows it",
                    url,
                )
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > MAX_DOWNLOAD_BYTES:
                raise ImageLoadError(_too_big(url, int(announced)), url)
            chunks: list[bytes] = []
            received = 0
            for chunk in response.iter_content(chunk_size=1 << 16):
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise ImageLoadError(_too_big(url, received), url)
                chunks.append(chunk)
    except requests.exceptions.TooManyRedirects:
        raise ImageLoadError(
            f"could not download {url}: too many redirects (the server redirects in a loop); {hint}", url
        ) from None
    except requests.exceptions.ConnectTimeout:
        raise ImageLoadError(
            f"could not download {url}: no connection within {_seconds(timeout, 0)} s; "
            "check the network or pass a larger timeout",
            url,
        ) from None
    except requests.exceptions.Timeout:
        raise ImageLoadError(
            f"could not download {url}: the server did not answer within {_seconds(timeout, 1)} s; "
            "try again later or pass a larger timeout",
            url,
        ) from None
    except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema):
        raise ImageLoadError(
            f"cannot download {url}: only http:// and https:// URLs are supported; for a local file pass its path",
            url,
        ) from None
    except requests.exceptions.ChunkedEncodingError:
        raise ImageLoadError(
            f"could not download {url}: the connection closed before the whole image arrived; try again", url
        ) from None
    except requests.exceptions.RequestException as error:
        # Connection refused, DNS failure, TLS errors, and read timeouts while streaming the body
        # (which requests reports as a ConnectionError).
        if "timed out" in str(error).lower():
            raise ImageLoadError(
                f"could not download {url}: the server stopped sending for {_seconds(timeout, 1)} s (timeout); "
                "try again later or pass a larger timeout",
                url,
            ) from None
        raise ImageLoadError(f"could not download {url}: {type(error).__name__}: {error}; {hint}", url) from None
    if received == 0:
        raise ImageLoadError(f"{url} answered HTTP {status} with an empty body, not an image", url)
    return b"".join(chunks)


def _seconds(timeout: Timeout, part: int) -> float:
    """The connect (0) or read (1) part of a requests timeout."""
    return timeout[part] if isinstance(timeout, tuple) else timeout


def _too_big(url: str, size: int) -> str:
    return (
        f"{url} is too large to be a photo ({size:,} bytes so far, limit {MAX_DOWNLOAD_BYTES:,}); "
        "download and resize it first"
    )
