"""Where a model's weights come from, for every family: NVIDIA's file through the cache, or a local file.

The ResNet builder (:mod:`resnet.models.builder`) and the EfficientNet builder
(:mod:`resnet.models.efficientnet_builder`) share these steps, so ``pretrained``, ``pretrained_from_file``,
``sha256``, ``mirror`` and ``progress`` mean the same for every architecture, and a damaged cache entry is
handled the same way: the checks of the arguments, the download through :mod:`resnet.weights.cache` (mirror,
lock, recorded hash), reading the file, and what the file stores beside its tensors (class names, the image
size of a ``model.pth`` written by ``python -m resnet train``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

from resnet.data.names import load_class_names
from resnet.data.preprocessing import MIN_IMAGE_SIZE
from resnet.data.synsets import NUM_IMAGENET_CLASSES, imagenet_class_names
from resnet.weights.cache import check_file_hash, discard, fetch_checkpoint, normalise_sha256, removal_note
from resnet.weights.reading import CorruptCheckpointError, PathLike, read_checkpoint

__all__ = ["WeightsFile", "class_names", "locate_weights", "read_weights", "stored_image_size"]


class WeightsFile:
    """A weights file to load: its ``path``, and whether it is NVIDIA's file in the torch hub cache
    (``in_cache``: a damaged one is removed so that the next call downloads it afresh)."""

    def __init__(self, path: Path, in_cache: bool) -> None:
        self.path, self.in_cache = path, in_cache

    @property
    def source(self) -> str:
        """The file as error messages name it."""
        return repr(str(self.path))


def locate_weights(
    arch: str,
    *,
    pretrained: Any,
    pretrained_from_file: Optional[PathLike],
    sha256: Optional[str],
    mirror: Optional[str],
    progress: bool,
) -> Optional[WeightsFile]:
    """The weights file the arguments ask for (``None``: random weights), NVIDIA's downloaded into the cache
    first if needed; ``sha256`` checked against it.

    Raises:
        TypeError: ``pretrained`` is not a bool (``torch.hub.load(repo, entry, "model.pth")`` passes a file there;
            the message says how to load it).
        ValueError: ``pretrained=True`` with ``pretrained_from_file``, a ``sha256`` that is no SHA-256, or one
            without a file to check.
        resnet.weights.reading.WeightsError: the download or the cache failed, or a file does not match ``sha256``.
    """
    if not isinstance(pretrained, bool):
        hint = (f"to load the file {str(pretrained)!r}, pass pretrained=False, pretrained_from_file={str(pretrained)!r}"
                if isinstance(pretrained, (str, os.PathLike)) else
                "pass pretrained=True for NVIDIA's weights, or pretrained=False with pretrained_from_file=PATH")
        raise TypeError(f"pretrained must be True or False, not the {type(pretrained).__name__} {pretrained!r}; {hint}")
    if pretrained and pretrained_from_file is not None:
        raise ValueError(
            "pretrained=True and pretrained_from_file are mutually exclusive: pass "
            "pretrained=False, pretrained_from_file=PATH to load a local file, or leave out "
            "pretrained_from_file to use NVIDIA's NGC weights"
        )
    sha256 = normalise_sha256(sha256)
    if sha256 is not None and not pretrained and pretrained_from_file is None:
        raise ValueError(
            "sha256 is the expected hash of the weights file: pass it with pretrained=True (NVIDIA's file) "
            "or with pretrained_from_file=PATH"
        )
    if pretrained:
        return WeightsFile(fetch_checkpoint(arch, mirror=mirror, progress=progress, sha256=sha256), True)
    if pretrained_from_file is None:
        return None
    path = Path(pretrained_from_file)
    if sha256 is not None and path.is_file():
        check_file_hash(path, sha256)
    return WeightsFile(path, False)


def read_weights(weights: WeightsFile) -> Any:
    """The checkpoint in ``weights`` (:func:`resnet.weights.reading.read_checkpoint`); a damaged file in the cache is
    removed, and the error says so.

    Raises:
        resnet.weights.reading.WeightsError: the file is missing, unreadable, damaged or unsafe.
    """
    try:
        return read_checkpoint(weights.path)
    except CorruptCheckpointError as error:
        if not weights.in_cache:
            raise
        # A damaged cache entry would fail every later call: remove it so the next one downloads afresh.
        problem = discard(weights.path)
        raise CorruptCheckpointError(
            f"{error}. {removal_note(problem, weights.path, 'python')}",
            cli_message=f"{error.describe('cli')}. {removal_note(problem, weights.path, 'cli')}",
        ) from error


def stored_image_size(stored: object, source: str) -> Optional[int]:
    """The training image size a file records (``model.pth``), or None; a value that cannot be one is left out
    with a warning."""
    if stored is None:
        return None
    if isinstance(stored, int) and not isinstance(stored, bool) and MIN_IMAGE_SIZE <= stored <= 4096:
        return stored
    warnings.warn(f"{source}: the stored image_size {stored!r} is not an image side from {MIN_IMAGE_SIZE} to 4096; "
                  "it is not used (the architecture's is)", UserWarning, stacklevel=3)
    return None


def class_names(num_classes: int, stored: object, source: str = "") -> Optional[list[str]]:
    """The file's class names when it stores one per output (made printable, :mod:`resnet.data.names`), ImageNet's
    for 1000 outputs, else None. Stored names that do not fit the head are left out with a warning."""
    names = load_class_names(stored, num_classes, source)
    if names is not None:
        return names
    return imagenet_class_names() if num_classes == NUM_IMAGENET_CLASSES else None
