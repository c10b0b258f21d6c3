"""NVIDIA's ResNet-50 v1.5 family for torch.hub: model, checkpoints and weight loading."""

from .builder import create_model
from .checkpoints import CHECKPOINTS, MIRROR_ENV, Checkpoint
from .model import ARCHS, ArchConfig, Bottleneck, ResNet, SqueezeExcitation, get_arch
from .weights import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    HashMismatchError,
    UnsafeCheckpointError,
    WeightsCacheError,
    WeightsDownloadError,
    WeightsError,
)

__all__ = [
    "ARCHS",
    "CHECKPOINTS",
    "MIRROR_ENV",
    "ArchConfig",
    "Bottleneck",
    "Checkpoint",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "HashMismatchError",
    "ResNet",
    "SqueezeExcitation",
    "UnsafeCheckpointError",
    "WeightsCacheError",
    "WeightsDownloadError",
    "WeightsError",
    "create_model",
    "get_arch",
]
