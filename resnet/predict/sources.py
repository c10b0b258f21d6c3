"""The inputs of a batch job, listed: files, folders, URLs, list files, and URIs that pyarrow's file systems read.

Local paths, folders, ``http(s)://`` URLs and ``file://`` URIs are expanded as every command expands them
(:func:`resnet.data.inputs.expand_inputs`: folders recursively, sorted, hidden names left out). A URI of
another scheme (``s3://bucket/photos``, ``gs://...``, ``hdfs://...``) names a file or a folder of a pyarrow
file system; a folder there is listed the same way (recursive, image suffixes, hidden names left out, sorted).
A list file names one input per line (blank lines and lines starting with ``#`` skipped); it may itself be a
local path or such a URI.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Optional

from resnet.data.decode import MAX_IMAGE_BYTES, ResizeTo, decode_image
from resnet.data.errors import ImageLoadError, ImageNotFoundError
from resnet.data.inputs import IMAGE_SUFFIXES, ExpandedInputs, expand_inputs
from resnet.predict.results import ResultsError, is_uri, require_pyarrow

#: Schemes that :func:`resnet.data.images.load_image` reads itself; any other ``scheme://`` goes to pyarrow.
OWN_SCHEMES = ("http", "https", "file")


def is_filesystem_uri(text: str) -> bool:
    """Whether ``text`` is a URI for pyarrow's file systems (``s3://``, ``gs://``...), not a URL or a path."""
    return is_uri(text) and text.split(":", 1)[0].lower() not in OWN_SCHEMES


def _filesystem(uri: str):
    pa = require_pyarrow("reading " + uri.split(":", 1)[0] + ":// inputs")
    try:
        return pa.fs.FileSystem.from_uri(uri)
    except (pa.ArrowException, ValueError, OSError) as error:
        raise ResultsError(f"cannot open {uri!r}: {error}") from None


def read_list_file(name: str) -> list[str]:
    """The inputs a list file names, one per line (blank lines and ``#`` comments skipped), in order.

    Raises:
        ResultsError: the file cannot be read (the message names it).
    """
    try:
        if is_filesystem_uri(name):
            filesystem, path = _filesystem(name)
            with filesystem.open_input_stream(path) as stream:
                text = stream.read().decode("utf-8")
        else:
            with open(name, encoding="utf-8") as file:
                text = file.read()
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ResultsError(f"cannot read the list file {name!r}: {error}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def list_inputs(inputs: Iterable[str]) -> ExpandedInputs:
    """What to classify, in order: local inputs as :func:`resnet.data.inputs.expand_inputs` expands them,
    pyarrow URIs of folders listed (recursive, image suffixes, sorted), URIs of files kept.

    A URI that does not exist is kept (its row will say so); a folder without images is a warning.

    Raises:
        ResultsError: a URI's file system cannot be opened (an unknown scheme, no credentials).
    """
    result = ExpandedInputs()
    local: list[str] = []

    def flush_local() -> None:
        if local:
            expanded = expand_inputs(local)
            result.uris.extend(expanded.uris)
            result.warnings.extend(expanded.warnings)
            local.clear()

    for item in inputs:
        if not is_filesystem_uri(item):
            local.append(item)
            continue
        flush_local()
        result.uris.extend(_list_uri(item, result.warnings))
    flush_local()
    return result


def _list_uri(uri: str, warnings: list[str]) -> list[str]:
    pa = require_pyarrow()
    filesystem, path = _filesystem(uri)
    try:
        info = filesystem.get_file_info(path)
        if info.type != pa.fs.FileType.Directory:
            return [uri]
        found = filesystem.get_file_info(pa.fs.FileSelector(path, recursive=True))
    except (pa.ArrowException, OSError) as error:
        raise ResultsError(f"cannot list {uri!r}: {error}") from None
    prefix = uri.split("://", 1)[0] + "://"  # pyarrow's paths drop the scheme
    query = "?" + uri.split("?", 1)[1] if "?" in uri else ""  # options such as ?endpoint_override=... stay
    base = path.rstrip("/")
    images = []
    for entry in found:
        relative = entry.path[len(base):].lstrip("/")
        if entry.type != pa.fs.FileType.File or any(part.startswith(".") for part in relative.split("/")):
            continue
        if os.path.splitext(entry.base_name)[1].lower() in IMAGE_SUFFIXES:
            images.append(entry.path)
    images.sort(key=lambda p: p.split("/"))
    if not images:
        warnings.append(f"no image files in {uri!r} (looked for {' '.join(sorted(IMAGE_SUFFIXES))} files, in "
                        "sub-folders too)")
    return [prefix + p + query for p in images]


def read_filesystem_image(uri: str, *, resize_to: Optional[ResizeTo] = None):
    """Open a pyarrow URI of an image (``s3://bucket/cat.jpg``) as upright RGB, as
    :func:`resnet.data.images.load_image` opens a local file (the same size and decoding bounds); with
    ``resize_to``, a large JPEG decoded at reduced scale as :func:`resnet.data.images.load_for_resize` does.

    Raises:
        ImageNotFoundError: no such file.
        ImageLoadError: anything else (too large, damaged, not an image, the store cannot be read).
    """
    pa = require_pyarrow()
    try:
        filesystem, path = _filesystem(uri)
        info = filesystem.get_file_info(path)
        if info.type == pa.fs.FileType.NotFound:
            raise ImageNotFoundError(f"{uri} does not exist", uri)
        if info.type != pa.fs.FileType.File:
            raise ImageLoadError(f"{uri} is not a file", uri)
        if info.size is not None and info.size > MAX_IMAGE_BYTES:
            raise ImageLoadError(f"{uri} is too large to be a photo ({info.size:,} bytes, limit "
                                 f"{MAX_IMAGE_BYTES:,}); resize it first", uri)
        with filesystem.open_input_stream(path) as stream:
            data = stream.read(MAX_IMAGE_BYTES + 1)
    except ResultsError as error:
        raise ImageLoadError(str(error), uri) from None
    except (pa.ArrowException, OSError) as error:
        raise ImageLoadError(f"cannot read {uri}: {error}", uri) from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageLoadError(f"{uri} is too large to be a photo (over {MAX_IMAGE_BYTES:,} bytes); resize it "
                             "first", uri)
    if not data:
        raise ImageLoadError(f"{uri} is empty, not an image", uri)
    return decode_image(io.BytesIO(data), uri, uri, resize_to=resize_to)
