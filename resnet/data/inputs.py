"""What the user typed, turned into the list of images to classify: files, folders, URLs, file:// URIs.

Shared by the ``python -m resnet`` commands that take image inputs. Nothing is decoded
here, and nothing raises for a bad input: a path that cannot be examined (missing, a name
too long for the file system, inside a folder that cannot be entered) is kept, so that the
loader reports it with the other failures, and folder problems come back as warnings.

:func:`scan_images` is the one way every command searches a folder for images (``classify``'s
folders, the class folders of ``train`` and ``evaluate``, the calibration folder of ``export
--int8``):

- sub-folders are searched too; names that start with ``.`` (hidden files and folders, such as
  ``.ipynb_checkpoints`` or macOS's ``._photo.jpg``) are left out;
- a file is an image when its suffix is one of :data:`IMAGE_SUFFIXES`, in any case; links to files
  count as files; the other files are left out and listed, so that a command can say how many
  and which (``.heic`` photos, say);
- links to folders are followed, but no folder is entered twice in one search: a link to a folder
  already searched (a loop such as ``loop -> .`` or ``up -> ..``, or a second way to one folder)
  is not followed again, and is listed. So a search always ends, and finds each image once;
- a folder that cannot be read is listed with the reason, not skipped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from resnet.data.errors import ImageLoadError
from resnet.data.files import file_uri_to_path, is_file_uri
from resnet.data.images import is_url

#: File suffixes (lower case) taken from folders; files named explicitly are always tried.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


@dataclass
class FolderScan:
    """What :func:`scan_images` found in a folder and its sub-folders.

    Attributes:
        images: the image files, sorted as paths (a folder's files and sub-folders interleave by name).
        unreadable: ``(folder, reason)`` for each folder that could not be read.
        other_files: files left out because their suffix is not an image suffix, sorted.
        repeated: links to folders that were not followed because the folder was already searched.
    """

    images: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)


def folder_key(path: os.PathLike | str) -> tuple[int, int]:
    """What identifies a folder however it is reached (through links too): its device and inode.

    Raises:
        OSError: ``path`` cannot be examined.
    """
    info = os.stat(path)
    return info.st_dev, info.st_ino


def scan_images(folder: os.PathLike | str, *, searched: Optional[set[tuple[int, int]]] = None) -> FolderScan:
    """Search ``folder`` for image files by the rule of this module's docstring.

    ``searched`` holds the :func:`folder_key` of the folders already searched (or to be kept out of this
    search: the other class folders of a labelled folder, for instance); the folders entered here are added
    to it. Never raises: folders that cannot be read are listed in :attr:`FolderScan.unreadable`.
    """
    searched = set() if searched is None else searched
    result = FolderScan()
    top = os.fspath(folder)
    try:
        searched.add(folder_key(top))
    except OSError as error:
        result.unreadable.append((top, error.strerror or str(error)))
        return result
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as error:
            result.unreadable.append((directory, error.strerror or str(error)))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()  # through a link too
            except OSError:
                is_folder = False
            if not is_folder:
                suffix = os.path.splitext(entry.name)[1].lower()
                (result.images if suffix in IMAGE_SUFFIXES else result.other_files).append(entry.path)
                continue
            try:
                key = folder_key(entry.path)
            except OSError as error:
                result.unreadable.append((entry.path, error.strerror or str(error)))
                continue
            if key in searched:
                result.repeated.append(entry.path)
            else:
                searched.add(key)
                pending.append(entry.path)
    result.images.sort(key=Path)
    result.other_files.sort(key=Path)
    result.repeated.sort(key=Path)
    result.unreadable.sort(key=lambda item: Path(item[0]))
    return result


def _listed(paths: list[str], root: Optional[str], limit: int = 5) -> str:
    def shown(path: str) -> str:
        return repr(os.path.relpath(path, root) if root is not None else path)

    text = ", ".join(shown(path) for path in paths[:limit])
    return text + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def scan_warnings(scan: FolderScan, root: Optional[str] = None) -> list[str]:
    """One message per kind of problem of ``scan``, each naming what it is about (paths relative to ``root``
    when given): folders that could not be read, files left out for their type (counted by suffix), links
    to folders that were not followed again."""
    messages = [f"cannot read the folder {folder!r} ({reason}); the images in it are left out"
                for folder, reason in scan.unreadable]
    if scan.other_files:
        counts: dict[str, int] = {}
        for path in scan.other_files:
            suffix = os.path.splitext(path)[1].lower() or "no suffix"
            counts[suffix] = counts.get(suffix, 0) + 1
        by_type = ", ".join(f"{n} {suffix}" for suffix, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        messages.append(
            f"{len(scan.other_files)} file(s) left out for their type ({by_type}; images are "
            f"{' '.join(sorted(IMAGE_SUFFIXES))}): {_listed(scan.other_files, root)}; convert photos of another "
            "format (such as .heic) to .jpg to use them"
        )
    if scan.repeated:
        messages.append(
            f"{len(scan.repeated)} link(s) to folders searched already (a loop, or a second way to one folder) "
            f"not followed again: {_listed(scan.repeated, root)}"
        )
    return messages


@dataclass
class ExpandedInputs:
    """The outcome of :func:`expand_inputs`.

    Attributes:
        uris: what to load, in order: files, URLs and file:// URIs as given, and the image
            files of each folder in its place (recursive, sorted).
        warnings: one message per folder that holds no image file, per folder (or
            sub-folder) that could not be read, and per folder input with files left out for
            their type or links not followed again (:func:`scan_warnings`); each names them.
    """

    uris: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def expand_inputs(inputs: Iterable[str]) -> ExpandedInputs:
    """Files stay, folders become their image files (recursive, sorted), URLs stay; order kept.

    A folder is searched by :func:`scan_images` (the rule of this module's docstring: image
    suffixes in any case, hidden names left out, links to folders followed once). A ``file://`` URI of a
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
    scan = scan_images(folder)
    warnings.extend(scan_warnings(scan))
    if not scan.images and not any(path == folder for path, _ in scan.unreadable):
        warnings.append(
            f"no image files in the folder {folder!r} (looked for {' '.join(sorted(IMAGE_SUFFIXES))} files, "
            "in sub-folders too)"
        )
    return scan.images
