"""NVIDIA's ImageNet ConvNets for torch.hub: models, pretrained weights, deployment and the command line.

The package is layered; each layer imports only the ones below it (checked by ``lint-imports``):

=============================================  ====================================================
``resnet.cli``                                 ``python -m resnet COMMAND``: arguments, exit statuses
``resnet.training``                            recipe, trainer, run files, evaluation, torchrun
``resnet.deploy``                              ONNX / TorchScript / pt2 exports, INT8, Triton, runtimes
``resnet.fast``                                BatchNorm folding, oneDNN kernels, the eval fast path
``resnet.models``                              ResNet and EfficientNet modules and their builders
``resnet.weights``                             NVIDIA's checkpoint catalogue, reading, the cache
``resnet.data``                                preprocessing, class names, images, folders, batches
``resnet.io``                                  downloads and atomic file writes
=============================================  ====================================================

Importing the package plugs the eval fast path (:mod:`resnet.fast.eval_path`) into the model
(:func:`resnet.models.resnet.set_inference_accelerator`): the model itself never imports it. Modules that moved
when the package was split keep their old import paths (:mod:`resnet._moved`).
"""

from resnet import _moved
from resnet.fast import eval_path as _eval_path  # noqa: F401  (plugs the eval fast path into ResNet)
from resnet.models.builder import create_model
from resnet.weights.catalogue import CHECKPOINTS, MIRROR_ENV, Checkpoint
from resnet.models.resnet import ARCHS, ArchConfig, Bottleneck, ResNet, SqueezeExcitation, get_arch
from resnet.weights.reading import (
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

_moved.install(_moved.MOVED)
