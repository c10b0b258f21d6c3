"""NVIDIA's EfficientNets as data: the B0 stage table, the width / depth / resolution of each member, the
squeeze-excitation kind, the eval data config and the NGC checkpoint (:data:`EFFICIENTNET_ARCHS`), and their names.

Imports nothing heavy, so that the command line can list and check ``--arch`` without importing torch;
:mod:`resnet.models.efficientnet` builds the modules from these configurations (and holds the same names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional

from resnet.data.preprocessing import DataConfig
from resnet.weights.catalogue import CHECKPOINTS, Checkpoint


Activation = Literal["silu", "relu", "onnx-silu"]
ConvInit = Literal["fan_in", "fan_out"]

#: BatchNorm epsilon of NVIDIA's EfficientNets (PyTorch's default is 1e-5).
BN_EPSILON = 1e-3
#: BatchNorm momentum (PyTorch convention), written as NVIDIA writes it: ``1 - 0.99`` = 0.010000000000000009.
BN_MOMENTUM = 1 - 0.99
#: Squeeze-excitation width as a fraction of the channels it is computed from.
SE_RATIO = 0.25
#: Activations NVIDIA's ``activation`` parameter accepts.
ACTIVATIONS = ("silu", "relu", "onnx-silu")
#: The keyword arguments of NVIDIA's ``EffNetParams`` that a model accepts (``quantized`` is NVIDIA's too, but
#: needs NVIDIA's ``pytorch_quantization``; only ``quantized=False`` is accepted).
PARAM_NAMES = (
    "dropout", "num_classes", "activation", "conv_init", "bn_momentum", "bn_epsilon", "survival_prob", "trt",
)


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks; the stride applies to its first block only."""

    expansion: int
    kernel: int
    stride: int
    repeats: int
    channels: int


#: EfficientNet-B0: stem channels, the seven stages, and the channels of the head convolution.
B0_STEM_CHANNELS = 32
B0_STAGES = (
    Stage(expansion=1, kernel=3, stride=1, repeats=1, channels=16),
    Stage(expansion=6, kernel=3, stride=2, repeats=2, channels=24),
    Stage(expansion=6, kernel=5, stride=2, repeats=2, channels=40),
    Stage(expansion=6, kernel=3, stride=2, repeats=3, channels=80),
    Stage(expansion=6, kernel=5, stride=1, repeats=3, channels=112),
    Stage(expansion=6, kernel=5, stride=2, repeats=4, channels=192),
    Stage(expansion=6, kernel=3, stride=1, repeats=1, channels=320),
)
B0_FEATURE_CHANNELS = 1280


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (at least ``divisor``), rounded up by one
    more ``divisor`` where rounding to the nearest would lose more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def scale_repeats(repeats: int, depth: float) -> int:
    """Blocks of a stage scaled by ``depth``, rounded up (``round`` would give B4 different stages)."""
    return int(math.ceil(repeats * depth))


@dataclass(frozen=True)
class EfficientNetArch:
    """One member of the family: how B0 is scaled, its training defaults, its data config and its weights.

    Attributes:
        name: NVIDIA's arch key (``efficientnet-b0``, ``efficientnet-widese-b4``, ...).
        title: human-readable name.
        width: channel multiplier applied to B0's stem, stages and head (:func:`scale_channels`).
        depth: block-count multiplier applied to B0's stages (:func:`scale_repeats`).
        image_size: NVIDIA's evaluation (and training) crop (``default_image_size``).
        dropout: NVIDIA's dropout before the classifier.
        survival_prob: NVIDIA's stochastic-depth survival probability of the last block (1: none).
        widese: squeeze-excitation width from a block's expanded channels (WideSE) instead of its input.
        num_params: parameter count with 1000 classes as NVIDIA's code builds it, where established
            (the tests check it against the built model); ``None`` where nobody counted NVIDIA's.
        interpolation: resampling of the evaluation resize in NVIDIA's configs (``bicubic`` for every
            EfficientNet; NVIDIA's hub utils and ``classify.py`` use bilinear 224 regardless).
        checkpoint: NVIDIA's pretrained weights on NGC, or ``None`` where NVIDIA published none.
    """

    name: str
    title: str
    width: float
    depth: float
    image_size: int
    dropout: float
    survival_prob: float = 1.0
    widese: bool = False
    num_params: Optional[int] = None
    interpolation: str = "bicubic"
    checkpoint: Optional[Checkpoint] = None

    @property
    def resize_size(self) -> int:
        """Shorter side after the evaluation resize, before the center crop: ``image_size + 32`` as in
        NVIDIA's validation loaders (256 for B0, 412 for B4)."""
        return self.image_size + 32

    @property
    def data_config(self) -> DataConfig:
        """How NVIDIA evaluates this arch (``configs.yml``, ``dataloaders.py``): ``image_size``, after a resize to
        ``resize_size`` with ``interpolation`` (bicubic)."""
        return DataConfig(self.image_size, self.resize_size, self.interpolation)

    @property
    def stem_channels(self) -> int:
        """Output channels of the stem convolution."""
        return scale_channels(B0_STEM_CHANNELS, self.width)

    @property
    def feature_channels(self) -> int:
        """Channels of the head convolution, which feed the classifier."""
        return scale_channels(B0_FEATURE_CHANNELS, self.width)

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The seven stages, scaled."""
        return tuple(
            Stage(s.expansion, s.kernel, s.stride, scale_repeats(s.repeats, self.depth),
                  scale_channels(s.channels, self.width))
            for s in B0_STAGES
        )

    @property
    def num_blocks(self) -> int:
        """MBConv blocks in all stages (16 for B0, 32 for B4)."""
        return sum(stage.repeats for stage in self.stages)


def _pair(
    key: str, width: float, depth: float, image_size: int, dropout: float, survival_prob: float = 1.0,
    original: Optional[dict] = None, widese: Optional[dict] = None,
) -> list[EfficientNetArch]:
    """The original and the WideSE member scaled by ``width`` and ``depth``; ``original`` / ``widese``:
    their own further fields (``num_params``, ``checkpoint``)."""
    return [
        EfficientNetArch(
            f"efficientnet-{prefix}{key}", f"EfficientNet-{title}{key.upper()}", width, depth, image_size, dropout,
            survival_prob=survival_prob, widese=bool(prefix), **(fields or {}),
        )
        for prefix, title, fields in (("", "", original), ("widese-", "WideSE-", widese))
    ]


# Scaling, image sizes, dropout and survival probabilities: NVIDIA's ``architectures`` table.
# Parameter counts: established by running NVIDIA's code (the spec); weights and accuracy: the catalogue.
_ALL = [
    *_pair("b0", 1.0, 1.0, 224, 0.2,
           original=dict(num_params=5_288_548, checkpoint=CHECKPOINTS["efficientnet-b0"]),
           widese=dict(num_params=8_423_848, checkpoint=CHECKPOINTS["efficientnet-widese-b0"])),
    *_pair("b1", 1.0, 1.1, 240, 0.2, original=dict(num_params=7_794_184)),
    *_pair("b2", 1.1, 1.2, 260, 0.3),
    *_pair("b3", 1.2, 1.4, 300, 0.3),
    *_pair("b4", 1.4, 1.8, 380, 0.4, survival_prob=0.8,
           original=dict(num_params=19_341_616, checkpoint=CHECKPOINTS["efficientnet-b4"]),
           widese=dict(num_params=34_927_246, checkpoint=CHECKPOINTS["efficientnet-widese-b4"])),
    *_pair("b5", 1.6, 2.2, 456, 0.4),
    *_pair("b6", 1.8, 2.6, 528, 0.5),
    *_pair("b7", 2.0, 3.1, 600, 0.5),
]
#: Every member, by NVIDIA's arch key; originals first (b0 .. b7), then WideSE.
EFFICIENTNET_ARCHS: dict[str, EfficientNetArch] = {
    a.name: a for a in sorted(_ALL, key=lambda a: (a.widese, a.name))
}

#: NVIDIA's hub default ``type='efficient-b0'`` is a misspelling its own lookup rejects; it means B0.
_ALIASES = {"efficient-b0": "efficientnet-b0"}


def canonical_efficientnet_arch(name: str) -> str:
    """The key in :data:`EFFICIENTNET_ARCHS` for ``name``: NVIDIA's arch key, its underscore spelling
    (``efficientnet_widese_b0``) in any letter case, or NVIDIA's misspelt hub default ``efficient-b0``.

    Raises:
        ValueError: ``name`` is a QAT variant (``efficientnet-quant-b0``; they need NVIDIA's
            ``pytorch_quantization``) or no member of the family; the message lists the known keys.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    if key in EFFICIENTNET_ARCHS:
        return key
    if isinstance(key, str) and key.startswith("efficientnet-quant-"):
        raise ValueError(
            f"{name!r} is one of NVIDIA's quantization-aware-trained models, which need NVIDIA's "
            "pytorch_quantization (only a placeholder on PyPI). Use the float model "
            f"{key.replace('quant-', '')!r} and quantize it after training (python -m resnet export --int8)"
        )
    raise ValueError(f"unknown EfficientNet architecture {name!r}; choose one of {', '.join(EFFICIENTNET_ARCHS)}")


def get_efficientnet_arch(name: str) -> EfficientNetArch:
    """The :class:`EfficientNetArch` of ``name`` (spellings: :func:`canonical_efficientnet_arch`)."""
    return EFFICIENTNET_ARCHS[canonical_efficientnet_arch(name)]


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check keyword arguments meant for :class:`EfficientNet` by their names, as NVIDIA's ``EffNetParams``
    would take them, and return those the model takes (``quantized=False`` is NVIDIA's default and dropped).

    Raises:
        TypeError: a name that is no parameter; the message lists the accepted ones.
        ValueError: ``quantized=True`` (NVIDIA's QAT models need NVIDIA's ``pytorch_quantization``).
    """
    unknown = sorted(set(params) - set(PARAM_NAMES) - {"quantized"})
    if unknown:
        raise TypeError(
            f"unexpected keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for an "
            f"EfficientNet; the accepted ones are {', '.join(PARAM_NAMES)}"
        )
    taken = dict(params)
    if taken.pop("quantized", False):
        raise ValueError(
            "quantized=True builds NVIDIA's quantization-aware-training model, which needs NVIDIA's "
            "pytorch_quantization (only a placeholder on PyPI); build the float model and quantize it after "
            "training instead (python -m resnet export --int8)"
        )
    return taken
