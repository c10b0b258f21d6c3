"""Pretrained weights: NVIDIA's checkpoint catalogue (:mod:`~resnet.weights.catalogue`), reading and validating
checkpoint files (:mod:`~resnet.weights.reading`) and the download cache (:mod:`~resnet.weights.cache`).

The public names of :mod:`resnet.weights.reading` are re-exported here: ``from resnet.weights import
read_checkpoint`` worked before the package was split into layers and still does. They are imported (with torch)
when first asked for: the catalogue is read without torch (``--help`` lists the architectures).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DAMAGED_FILE_ERRORS",
    "Audience",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "HashMismatchError",
    "KeyMapFn",
    "PathLike",
    "UnsafeCheckpointError",
    "WeightsCacheError",
    "WeightsDownloadError",
    "WeightsError",
    "WeightsWarning",
    "extract_state_dict",
    "fit_state_dict",
    "read_checkpoint",
    "resnet_stage_names",
]


def __getattr__(name: str) -> Any:
    """PEP 562: the names of :mod:`resnet.weights.reading`, imported when first asked for."""
    if name in __all__:
        from resnet.weights import reading

        return getattr(reading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
