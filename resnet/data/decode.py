"""Decoding an image file or a downloaded body as upright 8-bit RGB, within bounds checked first.

Before Pillow decodes anything: PNG chunks other than pixel data are bounded
(:data:`MAX_PNG_CHUNK_BYTES`), then the header's size is checked against Pillow's pixel limit
and :data:`MAX_ASPECT_RATIO`. :data:`MAX_IMAGE_BYTES` bounds what is read at all (local files
and downloads).

Two ways to decode (:data:`DECODE_MODES`): ``"exact"`` decodes every pixel; ``"reduced"`` lets libjpeg
scale a JPEG much larger than the model needs by 1/2, 1/4 or 1/8 while decoding (Pillow's ``Image.draft``),
keeping both decoded sides at least :data:`REDUCED_MARGIN` times the resize target, then resizes the
decoded part (the ``box`` that ``draft`` reports, turned with the EXIF orientation) straight to the size
that ``Resize`` gives the full-resolution image. The crop that follows is then the exact path's crop box;
only the pixels' fine detail differs (:func:`decode_image`).
"""

from __future__ import annotations

import io
import struct
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnet.data.preprocessing import RESIZE_SIZE, DataConfig, resized_size  # noqa: F401  (resized_size: also here)

from resnet.data.defaults import DECODE_MODES, Decode, check_decode  # noqa: F401  (also this module's names)
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

#: Reduced decoding keeps both decoded sides at least this many times the shorter side resized to (512 pixels
#: for Resize(256)). With 2, top-1 agreed with exact decoding as often as a second exact implementation of the
#: resize did (benchmarks/decode_agreement.py); with 1 it agreed clearly less often.
REDUCED_MARGIN: int = 2
#: EXIF orientation -> the transpose that ``ImageOps.exif_transpose`` applies for it (Pillow's table).
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset(
    {Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE}
)
_EXIF_ORIENTATION = 0x0112


#: What a preprocessing resizes to first: the shorter side of a bilinear ``Resize``, or a
#: :class:`~resnet.data.preprocessing.DataConfig` (its ``resize_size`` and ``interpolation``: bicubic for an
#: EfficientNet).
ResizeTo = Union[int, DataConfig]

_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def decode_image(file: io.BufferedIOBase, label: str, uri: Uri, *,
                 resize_to: Optional[ResizeTo] = None) -> Image.Image:
    """Decode an open file or buffer as upright RGB; ``label`` names it in errors.

    Without ``resize_to`` every pixel is decoded. With ``resize_to`` (the shorter side that preprocessing
    resizes to: 256 for a 224 crop) a JPEG whose sides are both at least twice :data:`REDUCED_MARGIN` x
    ``resize_to`` (1,024 pixels for 256) is decoded at 1/2, 1/4 or 1/8 scale, both sides kept at least
    :data:`REDUCED_MARGIN` x ``resize_to``, and comes back already resized to what
    ``Resize(resize_to)`` makes of the full image (its size from the full-resolution size after the EXIF
    orientation, the decoded part given as the resize's ``box``, with the config's interpolation when
    ``resize_to`` is a :class:`~resnet.data.preprocessing.DataConfig`), so the centre crop is the same. Any other
    image (PNG, small JPEGs) is decoded in full, as without ``resize_to``. The checks and errors are the same
    either way: a truncated JPEG fails the same.
    """
    try:
        _check_png_chunks(file, label, uri)
        with Image.open(file) as image:
            _check_pixel_limit(image, label, uri)
            check_aspect_ratio(image, label, uri)
            full = image.size
            side = resize_to.resize_size if isinstance(resize_to, DataConfig) else resize_to
            box = _draft(image, side) if side is not None else None
            image.load()  # decode now, so truncated or damaged data fails here and not later
            if box is None:
                return to_rgb(_upright(image))
            interpolation = resize_to.interpolation if isinstance(resize_to, DataConfig) else "bilinear"
            return _resized_from_draft(image, full, box, side, _RESAMPLING[interpolation])
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


Box = tuple[float, float, float, float]


def _draft(image: Image.Image, resize_to: int) -> Optional[Box]:
    """Ask libjpeg to decode ``image`` (opened, not loaded) at the smallest scale that keeps both sides at
    least ``REDUCED_MARGIN * resize_to``; the part of the smaller image that the JPEG covers, or ``None``
    when the image is decoded at full scale (not a JPEG, or not large enough)."""
    least = REDUCED_MARGIN * resize_to
    if min(image.size) < 2 * least:
        return None  # no halving keeps both sides at least `least`
    drafted = image.draft("RGB", (least, least))
    if drafted is None or image.size == drafted[1][2:]:
        return None
    return drafted[1]


def _resized_from_draft(image: Image.Image, full: tuple[int, int], box: Box, resize_to: int,
                        resample: Image.Resampling) -> Image.Image:
    """The reduced decoding ``image`` of a ``full``-size JPEG turned upright, converted to RGB and resized from
    ``box`` (with ``resample``) to the size ``Resize(resize_to)`` gives the full-size upright image."""
    try:
        method = EXIF_TRANSPOSE.get(image.getexif().get(_EXIF_ORIENTATION, 1))
        upright = ImageOps.exif_transpose(image)
    except Exception:  # as _upright: a broken EXIF block leaves the image as stored
        method, upright = None, image
    if method is not None:
        box = transposed_box(box, image.size, method)
        if method in _SWAPS_AXES:
            full = (full[1], full[0])
    return to_rgb(upright).resize(resized_size(*full, resize_to), resample, box=box)


def transposed_box(box: Box, size: tuple[int, int], method: Image.Transpose) -> Box:
    """``box`` on an image of ``size``, mapped through the transpose ``method``."""
    w, h = size
    corners = []
    for x, y in ((box[0], box[1]), (box[2], box[3])):
        corners.append({
            Image.Transpose.FLIP_LEFT_RIGHT: (w - x, y),
            Image.Transpose.FLIP_TOP_BOTTOM: (x, h - y),
            Image.Transpose.ROTATE_90: (y, w - x),
            Image.Transpose.ROTATE_180: (w - x, h - y),
            Image.Transpose.ROTATE_270: (h - y, x),
            Image.Transpose.TRANSPOSE: (y, x),
            Image.Transpose.TRANSVERSE: (h - y, w - x),
        }[method])
    (ax, ay), (bx, by) = corners
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


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
