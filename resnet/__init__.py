"""NVIDIA's ResNet-50 v1.5 family for torch.hub: model, checkpoints and weight loading."""

from .builder import create_model
from .checkpoints import CHECKPOINTS, MIRROR_ENV, Checkpoint
from .model import ARCHS, ArchConfig, Bottleneck, ResNet, SqueezeExcitation, get_arch
from .weights import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
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
    "CorruptCheckpointError",
    "ResNet",
    "SqueezeExcitation",
    "UnsafeCheckpointError",
    "WeightsDownloadError",
    "WeightsError",
    "create_model",
    "get_arch",
]
