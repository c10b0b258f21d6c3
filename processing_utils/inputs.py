"""What the user typed, turned into the list of images to classify: files, folders, URLs, file:// URIs.

Shared by the ``python -m resnet`` commands that take image inputs. Nothing is decoded
here, and nothing raises for a bad input: a path that cannot be examined (missing, a name
too long for the file system, inside a folder that cannot be entered) is kept, so that the
loader reports it with the other failures, and folder problems come back as warnings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import ImageLoadError
from .files import file_uri_to_path, is_file_uri
from .images import is_url

#: File suffixes (lower case) taken from folders; files named explicitly are always tried.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


@dataclass
class ExpandedInputs:
    """The outcome of :func:`expand_inputs`.

    Attributes:
        uris: what to load, in order: files, URLs and file:// URIs as given, and the image
            files of each folder in its place (recursive, sorted).
        warnings: one message per folder that holds no image file and per folder (or
            sub-folder) that could not be read; each names the folder.
    """

    uris: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def expand_inputs(inputs: Iterable[str]) -> ExpandedInputs:
    """Files stay, folders become their image files (recursive, sorted), URLs stay; order kept.

    A folder is searched for files whose suffix is in :data:`IMAGE_SUFFIXES` (any case),
    symbolic links to files included, links to folders not followed. A ``file://`` URI of a
    folder is searched as that folder. Anything that is not a folder is kept as given, even a
    path that does not exist or cannot be examined, so that loading it reports the failure
    with a message naming it. Never raises for a bad input.
    """
    result = ExpandedInputs()
    for item in inputs:
        folder = _folder(item)
        if folder is None:
            result.uris.append(item)
        else:
            result.uris.extend(_images_in(folder, result.warnings))
    return result


def _folder(item: str) -> str | None:
    """The folder ``item`` names (a path or a file:// URI), or None for anything else."""
    if is_file_uri(item):
        try:
            path = file_uri_to_path(item)
        except ImageLoadError:
            return None  # the loader reports it
    elif is_url(item):
        return None
    else:
        path = item
    # False too for a path that cannot be examined (a name too long, a folder that cannot be
    # entered): it is kept as an input, and the loader says what is wrong with it.
    return path if os.path.isdir(path) else None


def _images_in(folder: str, warnings: list[str]) -> list[str]:
    found: list[Path] = []
    unreadable: list[str] = []

    def report(error: OSError) -> None:
        name = error.filename if error.filename is not None else folder
        unreadable.append(name)
        warnings.append(
            f"cannot read the folder {os.fspath(name)!r} ({error.strerror or error}); the images in it are left out"
        )

    for directory, _, names in os.walk(folder, onerror=report):
        for name in names:
            path = Path(directory, name)
            if path.suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(path):
                found.append(path)
    if not found and folder not in unreadable:
        warnings.append(
            f"no image files in the folder {folder!r} (looked for {' '.join(sorted(IMAGE_SUFFIXES))} files, "
            "in sub-folders too)"
        )
    # Sorted as paths, like Path.rglob: a folder's files and sub-folders interleave by name.
    return [str(path) for path in sorted(found)]
