"""Decoding an image file or a downloaded body as upright 8-bit RGB, within bounds checked first.

Before Pillow decodes anything: PNG chunks other than pixel data are bounded
(:data:`MAX_PNG_CHUNK_BYTES`), then the header's size is checked against Pillow's pixel limit
and :data:`MAX_ASPECT_RATIO`. :data:`MAX_IMAGE_BYTES` bounds what is read at all (local files
and downloads).
"""

from __future__ import annotations

import io
import struct
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnet.data.preprocessing import RESIZE_SIZE

from resnet.data.errors import ImageLoadError, Uri

#: Largest image accepted, read from a local file or downloaded from a URL, in bytes (far above
#: any photo the model is meant for).
MAX_IMAGE_BYTES: int = 200 * 1024 * 1024
#: Longest side over shortest side accepted. Resize(256) scales the shorter side to 256 pixels, so
#: the resized image is at most 256 x 5,120 pixels (3.9 MB); a 1 x 30,000 pixel PNG of 200 bytes
#: would otherwise become 256 x 7,680,000 pixels (5.9 GB). No photo is that elongated, and the
#: model would see only the centre 1/20 of it.
MAX_ASPECT_RATIO: int = 20
#: Largest PNG chunk other than pixel data (text, ICC profile, EXIF...) accepted, in bytes.
#: Pillow reads such a chunk whole before looking at it; a sparse file of a few KB on disk
#: can declare one of gigabytes.
MAX_PNG_CHUNK_BYTES: int = 16 * 1024 * 1024
# Pillow modes that hold more than 8 bits per sample: converting them with convert("RGB")
# clips every value above 255 (a 16-bit photo turns almost white), so they are scaled instead.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def decode_image(file: io.BufferedIOBase, label: str, uri: Uri) -> Image.Image:
    """Decode an open file or buffer fully, as upright RGB; ``label`` names it in errors."""
    try:
        _check_png_chunks(file, label, uri)
        with Image.open(file) as image:
            _check_pixel_limit(image, label, uri)
            check_aspect_ratio(image, label, uri)
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


def check_aspect_ratio(image: Image.Image, label: str, uri: Optional[Uri]) -> None:
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
