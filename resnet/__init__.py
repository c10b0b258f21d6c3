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

``import resnet`` imports no torch: the names below are imported when first used (``resnet.ResNet``,
``from resnet import create_model``), so that ``python -m resnet --help`` answers at once. Whenever the model's
module is imported, by any path, the eval fast path (:mod:`resnet.fast.eval_path`) is plugged into it
(:func:`resnet.models.resnet.set_inference_accelerator`, :mod:`resnet._plug`): the model itself never imports it.
Modules that moved when the package was split keep their old import paths (:mod:`resnet._moved`).
"""

from __future__ import annotations

import importlib
from typing import Any

from resnet import _moved, _plug

#: The package's names -> the module that defines each (imported at first use).
_EXPORTS: dict[str, str] = {
    "ARCHS": "resnet.models.archs",
    "ArchConfig": "resnet.models.archs",
    "get_arch": "resnet.models.archs",
    "Bottleneck": "resnet.models.resnet",
    "ResNet": "resnet.models.resnet",
    "SqueezeExcitation": "resnet.models.resnet",
    "EFFICIENTNET_ARCHS": "resnet.models.efficientnet_archs",
    "EfficientNetArch": "resnet.models.efficientnet_archs",
    "get_efficientnet_arch": "resnet.models.efficientnet_archs",
    "EfficientNet": "resnet.models.efficientnet",
    "MODEL_ARCHS": "resnet.models.family",
    "DataConfig": "resnet.data.preprocessing",
    "create_model": "resnet.models.builder",
    "CHECKPOINTS": "resnet.weights.catalogue",
    "MIRROR_ENV": "resnet.weights.catalogue",
    "Checkpoint": "resnet.weights.catalogue",
    **dict.fromkeys(
        ("CheckpointMismatchError", "CheckpointNotFoundError", "CorruptCheckpointError", "HashMismatchError",
         "UnsafeCheckpointError", "WeightsCacheError", "WeightsDownloadError", "WeightsError"),
        "resnet.weights.reading",
    ),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """PEP 562: the package's names, imported from their modules at first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


_moved.install(_moved.MOVED)
_plug.install()
