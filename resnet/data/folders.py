"""Labelled image folders for ``train`` and ``evaluate``: scanning, checking, splitting, class matching.

A labelled folder has torchvision's ``ImageFolder`` layout: one sub-folder per class, holding that class's
images. The classes are the sorted folder names (links to folders included). Each class folder is searched
as every command searches folders (:func:`resnet.data.inputs.scan_images`: recursively, hidden files
and folders left out, links to folders followed once), with the DATA folder and the other class folders
kept out: an image is found once, under its own class, even through a link loop or a link into another
class. Everything a user can get wrong about the folder is a :class:`DataFolderError` that
names the folder and says what to do.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from resnet.data.inputs import IMAGE_SUFFIXES, FolderScan, folder_key, scan_images, scan_warnings

from resnet.errors import ConvNetsError


LAYOUT_HELP = "expected one sub-folder of images per class (DATA/<class>/<image>), or DATA/train and DATA/val"


class DataFolderError(ConvNetsError):
    """A folder of labelled images that cannot be used as given; the message names it and the layout expected."""


@dataclass
class LabelledFolder:
    """The result of :func:`scan_folder`.

    Attributes:
        root: the folder.
        classes: the class folder names, sorted (the class index is the position here).
        samples: ``(path, class index)`` for every image file, in sorted order.
        empty: class folders that hold no image file.
        unreadable: class folders that could not be read (they are in ``empty`` too).
        scan: what the search found besides the images (folders that could not be read, files left out
            for their type, links not followed again), over all class folders.
    """

    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]
    empty: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    scan: FolderScan = field(default_factory=FolderScan)

    def warnings(self) -> list[str]:
        """What a command should tell the user about the search (:func:`resnet.data.inputs.scan_warnings`)."""
        return scan_warnings(self.scan)

    def counts(self) -> list[int]:
        """Images per class."""
        counts = [0] * len(self.classes)
        for _, label in self.samples:
            counts[label] += 1
        return counts


def scan_folder(root: os.PathLike | str, *, what: str = "DATA", keep_out: Sequence[os.PathLike | str] = ()
                ) -> LabelledFolder:
    """List the classes and image files of a labelled folder (hidden files and folders are left out).

    ``keep_out``: more folders whose images belong elsewhere (DATA/val while DATA/train is scanned): links
    to them are not followed.

    Raises:
        DataFolderError: ``root`` does not exist, is not a folder, cannot be read, holds no class folder, or two
            class folders are the same folder (a link).
    """
    root = Path(root)
    if not root.exists():
        raise DataFolderError(f"{what} folder {str(root)!r} does not exist; {LAYOUT_HELP}")
    if not root.is_dir():
        raise DataFolderError(f"{what} {str(root)!r} is a file, not a folder; {LAYOUT_HELP}")
    try:
        with os.scandir(root) as listing:
            entries = list(listing)
    except OSError as error:
        raise DataFolderError(f"cannot read the {what} folder {str(root)!r}: {error.strerror or error}; "
                           "give a folder this user can read") from None
    classes = sorted(e.name for e in entries if _is_folder(e) and not e.name.startswith("."))
    if not classes:
        raise DataFolderError(f"{what} folder {str(root)!r} holds no class folders; {LAYOUT_HELP}")
    # The DATA folder and every class folder are searched by their own class only (keys of unreadable
    # class folders are left out: their search reports them).
    searched: set[tuple[int, int]] = set()
    owner: dict[tuple[int, int], str] = {}
    for folder in (root, *keep_out):
        with contextlib.suppress(OSError):
            searched.add(folder_key(folder))
    for name in classes:
        with contextlib.suppress(OSError):
            key = folder_key(root / name)
            if key in owner:
                raise DataFolderError(f"class folders {owner[key]!r} and {name!r} in {what} ({str(root)!r}) are the "
                                   "same folder (a link to it); remove one of them")
            owner[key] = name
    searched |= set(owner)
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    unreadable: list[str] = []
    total = FolderScan()
    for label, name in enumerate(classes):
        folder = root / name
        scan = scan_images(folder, searched=searched)
        if not scan.images:
            empty.append(name)
        if any(path == str(folder) for path, _ in scan.unreadable):
            unreadable.append(name)
        samples.extend((path, label) for path in scan.images)
        total.unreadable += scan.unreadable
        total.other_files += scan.other_files
        total.repeated += scan.repeated
    return LabelledFolder(root, classes, samples, empty, unreadable, total)


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def split_layout(data: os.PathLike | str) -> tuple[Path, Optional[Path]]:
    """``(DATA/train, DATA/val)`` when DATA holds both folders, else ``(DATA, None)``."""
    data = Path(data)
    train, val = data / "train", data / "val"
    if train.is_dir() and val.is_dir():
        return train, val
    return data, None


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, held out)``: ``fraction`` of each class, drawn with ``seed``, is held out.

    A class with two or more images gives at least one to each side; a class with one image keeps it for
    training. The same labels, fraction and seed always give the same split.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    generator = torch.Generator().manual_seed(seed)
    train: list[int] = []
    held: list[int] = []
    for label in sorted(by_class):
        indices = by_class[label]
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        n_held = 0
        if fraction > 0 and len(indices) >= 2:
            n_held = min(max(1, round(fraction * len(indices))), len(indices) - 1)
        held.extend(order[:n_held])
        train.extend(order[n_held:])
    return sorted(train), sorted(held)


def match_classes(folders: Sequence[str], classes: Sequence[str], *, where: str) -> list[int]:
    """The model's class index for each folder name.

    A folder matches a class by its exact name, by its WordNet id when the model has ImageNet's 1000
    classes (``n01440764`` -> 0), or, ignoring letter case, by the class's full name or the first of its
    comma-separated names when that is unambiguous (``tench`` -> ``tench, Tinca tinca``).

    Raises:
        DataFolderError: a folder matches no class (or several); the message names it.
    """
    from resnet.data.synsets import imagenet_class_names, imagenet_wnids

    imagenet = list(classes) == imagenet_class_names()
    exact: dict[str, set[int]] = {}
    loose: dict[str, set[int]] = {}
    for index, name in enumerate(classes):
        exact.setdefault(name, set()).add(index)
        for key in {name.casefold(), name.split(",")[0].strip().casefold()}:
            loose.setdefault(key, set()).add(index)
    if imagenet:
        for index, wnid in enumerate(imagenet_wnids()):
            exact.setdefault(wnid, set()).add(index)
    indices, unmatched, ambiguous = [], [], []
    for folder in folders:
        found = exact.get(folder) or loose.get(folder.casefold(), set())
        if len(found) == 1:
            indices.append(next(iter(found)))
        else:
            (ambiguous if found else unmatched).append(folder)
    if unmatched or ambiguous:
        problems = []
        if unmatched:
            problems.append(f"{len(unmatched)} folder(s) match no class of the model: {_names(unmatched)}")
        if ambiguous:
            problems.append(f"folder(s) {_names(ambiguous)} match several classes; name them by full class name")
        known = "WordNet ids such as 'n01440764' or class names such as 'tench'" if imagenet else _names(classes)
        raise DataFolderError(f"{where}: {'; '.join(problems)}. The model knows {len(classes)} classes: {known}")
    return indices


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass
class TrainingData:
    """The images of a training run: ``(path, class index)`` pairs to train on and to validate on, and what the
    search of DATA should tell the user (:meth:`LabelledFolder.warnings`)."""

    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    val_source: str
    warnings: list[str] = field(default_factory=list)


def load_training_data(data: os.PathLike | str, *, val_split: float, seed: int, global_batch: int) -> TrainingData:
    """Scan DATA (class folders, or train/ and val/), check it, and hold out the validation share.

    Raises:
        DataFolderError: DATA missing or empty, one class only, a class folder that cannot be read or holds no
            images, val/ classes that train/ lacks, or fewer training images than one global batch.
    """
    train_root, val_root = split_layout(data)
    what = "DATA/train" if val_root else "DATA"
    scan = scan_folder(train_root, what=what, keep_out=[data, val_root] if val_root else ())
    if scan.unreadable:
        reasons = {folder: reason for folder, reason in scan.scan.unreadable}
        reason = reasons.get(str(train_root / scan.unreadable[0]), "")
        raise DataFolderError(
            f"class folder(s) {_names(scan.unreadable)} in {what} ({str(train_root)!r}) cannot be read ({reason}); "
            "give this user read access to them, or remove them"
        )
    if scan.empty:
        raise DataFolderError(
            f"class folder(s) {_names(scan.empty)} in {what} ({str(train_root)!r}) hold no images (files ending "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder(s)"
        )
    if len(scan.classes) < 2:
        raise DataFolderError(
            f"{what} ({str(train_root)!r}) has a single class folder, {scan.classes[0]!r}: a classifier needs "
            "at least two classes, one folder each"
        )
    if val_root is not None:
        val_scan = scan_folder(val_root, what="DATA/val", keep_out=[data, train_root])
        index = {name: i for i, name in enumerate(scan.classes)}
        unknown = [name for name in val_scan.classes if name not in index]
        if unknown:
            raise DataFolderError(f"DATA/val has class folder(s) that DATA/train lacks: {_names(unknown)}; "
                               "the two must use the same class folder names")
        train = scan.samples
        val = [(path, index[val_scan.classes[label]]) for path, label in val_scan.samples]
        source = "DATA/val"
    else:
        kept, held = stratified_split([label for _, label in scan.samples], val_split, seed)
        train, val = [scan.samples[i] for i in kept], [scan.samples[i] for i in held]
        source = f"a {val_split:.0%} split of each class"
    if global_batch > len(train):
        raise DataFolderError(
            f"the global batch of {global_batch} images (--batch-size times the number of processes) is larger "
            f"than the {len(train)} training images in {what}; give a smaller --batch-size"
        )
    warnings = scan.warnings() + (val_scan.warnings() if val_root is not None else [])
    return TrainingData(scan.classes, train, val, source, warnings)

