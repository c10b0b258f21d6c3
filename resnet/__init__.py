"""NVIDIA's ResNet-50 v1.5 family for torch.hub: model, checkpoints and weight loading.

Importing the package plugs the eval fast path (:mod:`resnet.eval_path`) into the model
(:func:`resnet.model.set_inference_accelerator`): the model itself never imports it.
"""

from . import eval_path as _eval_path  # noqa: F401  (plugs the eval fast path into ResNet)
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
