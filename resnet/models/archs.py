"""The members of NVIDIA's ResNet-50 v1.5 family as data (:data:`ARCHS`), and their names.

Imports nothing heavy, so that the command line can list and check ``--arch`` without importing torch;
:mod:`resnet.models.resnet` builds the modules from these configurations (and holds the same names).
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet.data.preprocessing import DEFAULT_DATA_CONFIG, DataConfig


@dataclass(frozen=True)
class ArchConfig:
    """Shape of one member of the family.

    Attributes:
        name: NVIDIA's architecture name (``resnet50``, ``resnext101-32x4d``, ...).
        title: human-readable name.
        num_params: parameter count with 1000 classes (stated for documentation; the tests
            check it against the built model).
        blocks: bottleneck blocks per stage.
        widths: width of the 3x3 convolution in each stage.
        expansion: output channels of a block = width * expansion.
        groups: groups of the 3x3 convolution (32 for ResNeXt).
        squeeze_excitation: whether every block has an SE module.
        se_hidden: hidden size of the SE module (a constant 16 in NVIDIA's models, not C/16).
        stem_width: output channels of the 7x7 stem convolution.
    """

    name: str
    title: str
    num_params: int
    blocks: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    expansion: int
    groups: int = 1
    squeeze_excitation: bool = False
    se_hidden: int = 16
    stem_width: int = 64

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.widths[-1] * self.expansion

    @property
    def data_config(self) -> DataConfig:
        """How NVIDIA evaluates the ResNets: 224, after a bilinear resize to 256."""
        return DEFAULT_DATA_CONFIG


ARCHS: dict[str, ArchConfig] = {
    "resnet50": ArchConfig(
        "resnet50", "ResNet-50 v1.5", 25_557_032, (3, 4, 6, 3), (64, 128, 256, 512), expansion=4
    ),
    "resnext101-32x4d": ArchConfig(
        "resnext101-32x4d",
        "ResNeXt-101 32x4d",
        44_177_704,
        (3, 4, 23, 3),
        (128, 256, 512, 1024),
        expansion=2,
        groups=32,
    ),
    "se-resnext101-32x4d": ArchConfig(
        "se-resnext101-32x4d",
        "SE-ResNeXt-101 32x4d",
        45_251_128,
        (3, 4, 23, 3),
        (128, 256, 512, 1024),
        expansion=2,
        groups=32,
        squeeze_excitation=True,
    ),
}


def canonical_arch(name: str) -> str:
    """The name in :data:`ARCHS` for ``name``, which may use the underscore spelling of the hub entrypoints
    and timm (``resnext101_32x4d``, ``se_resnext101_32x4d``) or other letter case.

    Raises:
        ValueError: ``name`` is no architecture of the family; the message lists the known ones.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    if key in ARCHS:
        return key
    raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHS)}")


def get_arch(name: str) -> ArchConfig:
    """Return the configuration of architecture ``name`` (see :func:`canonical_arch` for the spellings
    accepted); ``ValueError`` lists the known ones."""
    return ARCHS[canonical_arch(name)]


# Pickles (of a whole model, whose ``config`` is one of these) keep naming the class where it has always been
# importable, resnet.models.resnet (resnet.model before the package was split), so that they load with any
# version of this repository.
ArchConfig.__module__ = "resnet.models.resnet"
