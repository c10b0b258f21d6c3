"""Labelled image folders for ``train`` and ``evaluate``: scanning, checking, splitting, class matching.

A labelled folder has torchvision's ``ImageFolder`` layout: one sub-folder per class, holding that class's
images (searched recursively; hidden files and folders such as ``.ipynb_checkpoints`` are left out). The
classes are the sorted folder names. Everything a user can get wrong about the folder is a
:class:`resnet.options.CommandError` that names the folder and says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from processing_utils.inputs import IMAGE_SUFFIXES  # the one list of image suffixes (any case)

from .options import CommandError


LAYOUT_HELP = "expected one sub-folder of images per class (DATA/<class>/<image>), or DATA/train and DATA/val"


@dataclass
class LabelledFolder:
    """The result of :func:`scan_folder`.

    Attributes:
        root: the folder.
        classes: the class folder names, sorted (the class index is the position here).
        samples: ``(path, class index)`` for every image file, in sorted order.
        empty: class folders that hold no image file.
    """

    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]
    empty: list[str] = field(default_factory=list)

    def counts(self) -> list[int]:
        """Images per class."""
        counts = [0] * len(self.classes)
        for _, label in self.samples:
            counts[label] += 1
        return counts


def scan_folder(root: os.PathLike | str, *, what: str = "DATA") -> LabelledFolder:
    """List the classes and image files of a labelled folder (hidden files and folders are left out).

    Raises:
        CommandError: ``root`` does not exist, is not a folder, or holds no class folder.
    """
    root = Path(root)
    if not root.exists():
        raise CommandError(f"{what} folder {str(root)!r} does not exist; {LAYOUT_HELP}")
    if not root.is_dir():
        raise CommandError(f"{what} {str(root)!r} is a file, not a folder; {LAYOUT_HELP}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise CommandError(f"{what} folder {str(root)!r} holds no class folders; {LAYOUT_HELP}")
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        files = _image_files(root / name)
        if not files:
            empty.append(name)
        samples.extend((path, label) for path in files)
    return LabelledFolder(root, classes, samples, empty)


def _image_files(folder: Path) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found.extend(
            os.path.join(directory, f) for f in sorted(files)
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
        )
    return found


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
        CommandError: a folder matches no class (or several); the message names it.
    """
    from .synsets import imagenet_class_names, imagenet_wnids

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
        raise CommandError(f"{where}: {'; '.join(problems)}. The model knows {len(classes)} classes: {known}")
    return indices


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass
class TrainingData:
    """The images of a training run: ``(path, class index)`` pairs to train on and to validate on."""

    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    val_source: str


def load_training_data(data: os.PathLike | str, *, val_split: float, seed: int, global_batch: int) -> TrainingData:
    """Scan DATA (class folders, or train/ and val/), check it, and hold out the validation share.

    Raises:
        CommandError: DATA missing or empty, one class only, a class folder without images, val/ classes that
            train/ lacks, or fewer training images than one global batch.
    """
    train_root, val_root = split_layout(data)
    what = "DATA/train" if val_root else "DATA"
    scan = scan_folder(train_root, what=what)
    if scan.empty:
        raise CommandError(
            f"class folder(s) {_names(scan.empty)} in {what} ({str(train_root)!r}) hold no images (files ending "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder(s)"
        )
    if len(scan.classes) < 2:
        raise CommandError(
            f"{what} ({str(train_root)!r}) has a single class folder, {scan.classes[0]!r}: a classifier needs "
            "at least two classes, one folder each"
        )
    if val_root is not None:
        val_scan = scan_folder(val_root, what="DATA/val")
        index = {name: i for i, name in enumerate(scan.classes)}
        unknown = [name for name in val_scan.classes if name not in index]
        if unknown:
            raise CommandError(f"DATA/val has class folder(s) that DATA/train lacks: {_names(unknown)}; "
                               "the two must use the same class folder names")
        train = scan.samples
        val = [(path, index[val_scan.classes[label]]) for path, label in val_scan.samples]
        source = "DATA/val"
    else:
        kept, held = stratified_split([label for _, label in scan.samples], val_split, seed)
        train, val = [scan.samples[i] for i in kept], [scan.samples[i] for i in held]
        source = f"a {val_split:.0%} split of each class"
    if global_batch > len(train):
        raise CommandError(
            f"the global batch of {global_batch} images (--batch-size times the number of processes) is larger "
            f"than the {len(train)} training images in {what}; give a smaller --batch-size"
        )
    return TrainingData(scan.classes, train, val, source)

