"""Pretrained weights: NVIDIA's checkpoint catalogue (:mod:`~resnet.weights.catalogue`), reading and validating
checkpoint files (:mod:`~resnet.weights.reading`) and the download cache (:mod:`~resnet.weights.cache`).

The public names of :mod:`resnet.weights.reading` are re-exported here: ``from resnet.weights import
read_checkpoint`` worked before the package was split into layers and still does.
"""

from resnet.weights.reading import (
    DAMAGED_FILE_ERRORS,
    Audience,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    HashMismatchError,
    KeyMapFn,
    PathLike,
    UnsafeCheckpointError,
    WeightsCacheError,
    WeightsDownloadError,
    WeightsError,
    WeightsWarning,
    extract_state_dict,
    fit_state_dict,
    read_checkpoint,
    resnet_stage_names,
)

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
