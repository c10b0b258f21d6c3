"""The model family as a whole: NVIDIA's ResNets and EfficientNets under one set of architecture names.

The commands, the trainer and the exporters ask this module, not a model class, what an architecture is
called, whether it is an EfficientNet, what its classifier head is and how its images are prepared.
"""

from __future__ import annotations

from resnet.models.efficientnet import EFFICIENTNET_ARCHS, canonical_efficientnet_arch
from resnet.models.resnet import ARCHS, canonical_arch

__all__ = ["EFFICIENTNETS_WITH_WEIGHTS", "MODEL_ARCHS", "canonical_model_arch", "is_efficientnet"]

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
