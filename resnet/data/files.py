"""Local image files: file:// URIs (RFC 8089), and the checks a path passes before it is opened."""

from __future__ import annotations

import errno
import os
import stat
import urllib.parse
import urllib.request
from typing import Optional

from PIL import Image

from resnet.data.decode import MAX_IMAGE_BYTES, ResizeTo, decode_image
from resnet.data.errors import ImageLoadError, ImageNotFoundError, Uri


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


def load_local_image(path: str, uri: Uri, *, resize_to: Optional[ResizeTo] = None) -> Image.Image:
    """Decode the image file at ``path`` (``uri`` as the caller gave it: the path, or a file:// URI); with
    ``resize_to``, a large JPEG at reduced scale (:func:`~resnet.data.decode.decode_image`).

    Its ``os.stat`` comes first: a path that cannot be examined is named with the reason, a
    directory, a pipe or a device is refused without being opened, and so is an empty file or one
    over :data:`~resnet.data.decode.MAX_IMAGE_BYTES`.
    """
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
            return decode_image(file, label, uri, resize_to=resize_to)
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
    if info.st_size > MAX_IMAGE_BYTES:
        raise ImageLoadError(
            f"{label} is too large to be a photo ({info.st_size:,} bytes, limit {MAX_IMAGE_BYTES:,}); "
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
