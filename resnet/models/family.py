"""The model family as a whole: NVIDIA's ResNets and EfficientNets under one set of architecture names.

The commands, the trainer and the exporters ask this module, not a model class, what an architecture is
called, whether it is an EfficientNet, what its classifier head is and how its images are prepared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

# Architecture data only, no torch: the command line checks --arch and prints --help before importing it.
from resnet.data.preprocessing import DEFAULT_DATA_CONFIG, DataConfig
from resnet.models.archs import ARCHS, canonical_arch, get_arch
from resnet.models.efficientnet_archs import EFFICIENTNET_ARCHS, canonical_efficientnet_arch, get_efficientnet_arch

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "EFFICIENTNETS_WITH_WEIGHTS",
    "MODEL_ARCHS",
    "arch_data_config",
    "canonical_model_arch",
    "get_head",
    "is_efficientnet",
    "model_data_config",
    "set_head",
]

#: The EfficientNets NVIDIA published NGC weights for (the others build with random weights only).
EFFICIENTNETS_WITH_WEIGHTS: tuple[str, ...] = tuple(
    name for name, config in EFFICIENTNET_ARCHS.items() if config.checkpoint is not None)
#: Every architecture name: the ResNets, then the EfficientNets (originals b0-b7, then WideSE).
MODEL_ARCHS: tuple[str, ...] = (*ARCHS, *EFFICIENTNET_ARCHS)


def is_efficientnet(name: str) -> bool:
    """Whether ``name`` names an EfficientNet (any spelling :func:`canonical_model_arch` takes, QAT variants
    included, which it then refuses with their own message)."""
    if not isinstance(name, str):
        return False
    key = name.strip().lower().replace("_", "-")
    return key.startswith("efficientnet-") or key == "efficient-b0"


def canonical_model_arch(name: str) -> str:
    """The architecture name for ``name``: a key of :data:`resnet.models.resnet.ARCHS` or
    :data:`resnet.models.efficientnet.EFFICIENTNET_ARCHS`, also written with underscores (the hub entrypoints'
    spelling) or as NVIDIA's misspelt hub default ``efficient-b0``.

    Raises:
        ValueError: a QAT variant (the message points at ``export --int8``) or no architecture of the family (the
            message lists them).
    """
    if is_efficientnet(name):
        return canonical_efficientnet_arch(name)
    try:
        return canonical_arch(name)
    except ValueError:
        raise ValueError(
            f"unknown architecture {name!r}; choose one of {', '.join(ARCHS)}, {', '.join(EFFICIENTNETS_WITH_WEIGHTS)} "
            f"(or another EfficientNet without NGC weights: "
            f"{', '.join(n for n in EFFICIENTNET_ARCHS if n not in EFFICIENTNETS_WITH_WEIGHTS)})"
        ) from None


def arch_data_config(name: str) -> DataConfig:
    """NVIDIA's evaluation preprocessing of the architecture ``name``: 224 / 256 / bilinear for the ResNets, the
    arch's size / size + 32 / bicubic for the EfficientNets (224 / 256 for B0, 380 / 412 for B4)."""
    arch = canonical_model_arch(name)
    return (get_efficientnet_arch(arch) if arch in EFFICIENTNET_ARCHS else get_arch(arch)).data_config


def model_data_config(model: object, image_size: Optional[int] = None) -> DataConfig:
    """How images become ``model``'s input: its architecture's :class:`~resnet.data.preprocessing.DataConfig`
    (``model.arch.data_config``; NVIDIA's ResNet preprocessing for a model without one) at ``image_size`` when
    given (``--image-size``), else at the size the model was trained at (``model.image_size``, which a
    ``model.pth`` of ``python -m resnet train`` records), else as NVIDIA evaluates the architecture. A size other
    than the architecture's scales the resize in proportion and keeps the interpolation."""
    arch = getattr(model, "arch", None)
    config = getattr(arch, "data_config", None)
    if not isinstance(config, DataConfig):
        config = DEFAULT_DATA_CONFIG
    size = image_size or getattr(model, "image_size", None)
    return config.at(size) if size else config


def _head_path(model: nn.Module) -> str:
    return getattr(model, "head_name", None) or "fc"


def get_head(model: nn.Module) -> nn.Module:
    """The classifier of ``model``: the module its ``head_name`` names (``fc`` for the ResNets,
    ``classifier.fc`` for the EfficientNets; ``fc`` for a model without one, as torchvision's ResNets).

    Raises:
        AttributeError: ``model`` has no such module.
    """
    return model.get_submodule(_head_path(model))


def set_head(model: nn.Module, head: nn.Module) -> nn.Module:
    """Put ``head`` in place of ``model``'s classifier (:func:`get_head`); returns the one it replaced."""
    parent_path, _, name = _head_path(model).rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    previous = getattr(parent, name)
    setattr(parent, name, head)
    return previous
