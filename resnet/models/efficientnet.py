"""One configurable EfficientNet for NVIDIA's EfficientNet family (B0 to B7, original and WideSE).

Every member is EfficientNet-B0's stage table scaled by a width and a depth multiplier; the WideSE
variants differ only in the width of squeeze-excitation (computed from a block's expanded channels
instead of its input channels). The members are data, held in :data:`EFFICIENTNET_ARCHS` under NVIDIA's
arch keys (``efficientnet-b0`` .. ``efficientnet-b7``, ``efficientnet-widese-b0`` .. ``-b7``).

Module names follow NVIDIA's current code, so ``state_dict()`` has NVIDIA's names: ``stem.{conv,bn}``,
``layers.K.blockJ.{expand,depsep,proj}.{conv,bn}``, ``layers.K.blockJ.se.{squeeze,expand}``,
``features.{conv,bn}``, ``classifier.fc``. NVIDIA's NGC files name the stages ``layer1`` .. ``layer7``
instead; :mod:`resnet.models.efficientnet_builder` reads every layout. What the network computes is
NVIDIA's (``image_classification/models/efficientnet.py`` and ``common.py``, summarised in the
project's spec): BatchNorm eps 1e-3 and momentum 0.01, convolutions padded by ``(k - 1) // 2`` on
every side (also at stride 2, unlike TensorFlow's "SAME"), the stride on the depthwise convolution,
squeeze-excitation on the depthwise output with the network's activation, no activation after the
projection, stochastic depth on residual blocks, dropout before the classifier.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from resnet.data.preprocessing import DataConfig
from resnet.weights.catalogue import CHECKPOINTS, Checkpoint
from resnet.models.resnet import init_module

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "EFFICIENTNET_ARCHS",
    "PARAM_NAMES",
    "EfficientNet",
    "EfficientNetArch",
    "ExplicitSiLU",
    "MBConvBlock",
    "SqueezeExcitationGate",
    "Stage",
    "StochasticDepthAdd",
    "canonical_efficientnet_arch",
    "check_params",
    "get_efficientnet_arch",
    "scale_channels",
    "scale_repeats",
]

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


class ExplicitSiLU(nn.Module):
    """``x * sigmoid(x)`` written out (NVIDIA's ``onnx-silu``), for exporters without a SiLU operator."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` in :data:`ACTIVATIONS`."""
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "onnx-silu":
        return ExplicitSiLU()
    raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, not {name!r}")


class _Layers:
    """What every convolution block of one model shares: its activation and BatchNorm settings."""

    def __init__(self, activation: str, bn_epsilon: float, bn_momentum: Optional[float]) -> None:
        self.activation, self.bn_epsilon, self.bn_momentum = activation, bn_epsilon, bn_momentum

    def conv_bn(
        self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
    ) -> nn.Sequential:
        """Convolution (no bias, padded ``(kernel - 1) // 2`` on every side), BatchNorm, and the activation."""
        parts: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2,
                               groups=groups, bias=False)),
            ("bn", nn.BatchNorm2d(out_channels, eps=self.bn_epsilon, momentum=self.bn_momentum)),
        ]
        if act:
            parts.append(("act", make_activation(self.activation)))
        return nn.Sequential(OrderedDict(parts))


class SqueezeExcitationGate(nn.Module):
    """``x`` times a per-channel gate: mean over H, W -> squeeze -> activation -> expand -> sigmoid.

    With ``use_conv`` (NVIDIA's ``trt=True``) the two projections are 1x1 convolutions with 4-D weights
    after an ``AdaptiveAvgPool2d``, the form TensorRT and INT8 tools prefer; otherwise ``nn.Linear``
    with 2-D weights. Both compute the same.
    """

    def __init__(self, channels: int, hidden: int, activation: nn.Module, use_conv: bool = False) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.pooling: nn.Module = nn.AdaptiveAvgPool2d(1)
            self.squeeze: nn.Module = nn.Conv2d(channels, hidden, 1)
            self.expand: nn.Module = nn.Conv2d(hidden, channels, 1)
        else:
            self.pooling = nn.Identity()
            self.squeeze = nn.Linear(channels, hidden)
            self.expand = nn.Linear(hidden, channels)
        self.activation = activation
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv:
            gate = self.sigmoid(self.expand(self.activation(self.squeeze(self.pooling(x)))))
            return x * gate
        gate = self.sigmoid(self.expand(self.activation(self.squeeze(x.mean(dim=(2, 3))))))
        return x * gate.unsqueeze(-1).unsqueeze(-1)


class StochasticDepthAdd(nn.Module):
    """The residual add of a block: ``shortcut + branch``, with stochastic depth in training.

    In training with ``survival_prob < 1`` one Bernoulli draw decides for the whole batch at once (not
    per sample, as NVIDIA does it): the branch is dropped, or kept and scaled by ``1 / survival_prob``.
    The draw is dropout of a 0-d tensor of ones, one random number from torch's generator per block
    and step, as in NVIDIA's code. (NVIDIA's ``StochasticDepthResidual`` in ``common.py`` makes that
    draw and then discards its result, so NVIDIA's training runs the plain add; this module applies it.)
    In eval mode it is a plain add.
    """

    def __init__(self, survival_prob: float = 1.0) -> None:
        super().__init__()
        self.survival_prob = float(survival_prob)

    def forward(self, shortcut: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        if not self.training or self.survival_prob >= 1.0:
            return shortcut + branch
        keep = F.dropout(torch.ones((), dtype=branch.dtype, device=branch.device), 1.0 - self.survival_prob, True)
        return torch.addcmul(shortcut, keep, branch)

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.5g}"


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand -> kxk depthwise (stride) -> squeeze-excitation -> 1x1 projection.

    The expansion is absent when ``expansion == 1``; the projection has BatchNorm and no activation. The
    shortcut (identity, no convolution) is added when the stride is 1 and the channels do not change.
    """

    def __init__(
        self,
        layers: _Layers,
        in_channels: int,
        out_channels: int,
        expansion: int,
        kernel: int,
        stride: int,
        se_hidden: int,
        survival_prob: float = 1.0,
        trt: bool = False,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand: Optional[nn.Sequential] = (
            None if expansion == 1 else layers.conv_bn(in_channels, hidden, 1)
        )
        self.depsep = layers.conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden)
        self.se = SqueezeExcitationGate(hidden, se_hidden, make_activation(layers.activation), use_conv=trt)
        self.proj = layers.conv_bn(hidden, out_channels, 1, act=False)
        self.residual: Optional[StochasticDepthAdd] = (
            StochasticDepthAdd(survival_prob) if stride == 1 and in_channels == out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.proj(self.se(self.depsep(out)))
        if self.residual is None:
            return out
        return self.residual(x, out)


class EfficientNet(nn.Module):
    """EfficientNet built from an :class:`EfficientNetArch`, with NVIDIA's ``EffNetParams`` as keywords.

    Args:
        arch: an :class:`EfficientNetArch` or an arch key (:func:`canonical_efficientnet_arch`).
        num_classes: outputs of the classifier.
        dropout: dropout probability before the classifier (training only); ``None``: the arch's.
        activation: ``"silu"``, ``"relu"`` or ``"onnx-silu"`` (SiLU written as ``x * sigmoid(x)``),
            used everywhere, squeeze-excitation included.
        conv_init: ``"fan_in"`` or ``"fan_out"``, the Kaiming-normal mode of the convolutions.
        bn_momentum: BatchNorm momentum (PyTorch convention; ``None``: cumulative average).
        bn_epsilon: BatchNorm epsilon.
        survival_prob: stochastic-depth survival probability of the last block; block ``i`` of ``n``
            survives with ``1 - (1 - survival_prob) * i / n``. ``None``: the arch's (0.8 for B4, else 1).
        trt: squeeze-excitation as 1x1 convolutions (4-D weights) instead of ``nn.Linear``.

    Attributes ``arch``, ``num_classes``, ``classes`` (class names, or ``None``; the builders of
    :mod:`resnet.models.efficientnet_builder` set them) and ``image_size`` (the training size a ``model.pth``
    records, else ``None``: ``arch.image_size``) describe the model; :attr:`head_name` names the classifier
    (``classifier.fc``) for code that works on any model of the family (:func:`resnet.models.family.get_head`).
    The forward pass returns raw logits (no softmax). Initialisation is NVIDIA's: Kaiming-normal convolutions
    (ReLU gain), BatchNorm 1 / 0, PyTorch's default for the classifier and squeeze-excitation.
    """

    #: The classifier's module path (:func:`resnet.models.family.get_head`).
    head_name = "classifier.fc"

    def __init__(
        self,
        arch: EfficientNetArch | str,
        num_classes: int = 1000,
        *,
        dropout: Optional[float] = None,
        activation: Activation = "silu",
        conv_init: ConvInit = "fan_in",
        bn_momentum: Optional[float] = BN_MOMENTUM,
        bn_epsilon: float = BN_EPSILON,
        survival_prob: Optional[float] = None,
        trt: bool = False,
    ) -> None:
        super().__init__()
        config = get_efficientnet_arch(arch) if isinstance(arch, str) else arch
        dropout = config.dropout if dropout is None else dropout
        survival_prob = config.survival_prob if survival_prob is None else survival_prob
        _check_values(num_classes, dropout, activation, conv_init, bn_momentum, bn_epsilon, survival_prob)
        self.arch = config
        self.num_classes = num_classes
        self.classes = None  # Optional[List[str]]; not annotated, which TorchScript would warn about
        self.image_size = None  # Optional[int]: the training size a model.pth records (None: the arch's)
        layers = _Layers(activation, bn_epsilon, bn_momentum)

        self.stem = layers.conv_bn(3, config.stem_channels, 3, stride=2)
        in_channels, index, stages = config.stem_channels, 0, []
        for stage in config.stages:
            blocks = []
            for j in range(stage.repeats):
                base = in_channels * stage.expansion if config.widese else in_channels
                blocks.append((f"block{j}", MBConvBlock(
                    layers, in_channels, stage.channels, stage.expansion, stage.kernel,
                    stride=stage.stride if j == 0 else 1,
                    se_hidden=max(1, int(base * SE_RATIO)),
                    survival_prob=1.0 - (1.0 - survival_prob) * index / config.num_blocks,
                    trt=trt,
                )))
                in_channels, index = stage.channels, index + 1
            stages.append(nn.Sequential(OrderedDict(blocks)))
        self.layers = nn.Sequential(*stages)
        self.features = layers.conv_bn(in_channels, config.feature_channels, 1)
        self.classifier = nn.Sequential(OrderedDict([
            ("pooling", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten(1)),
            ("dropout", nn.Dropout(dropout)),
            ("fc", nn.Linear(config.feature_channels, num_classes)),
        ]))
        if self.classifier.fc.weight.device.type != "meta":
            # On the meta device (to receive loaded weights) there is nothing to initialise.
            self.reset_parameters(conv_init)

    def reset_parameters(self, conv_init: ConvInit = "fan_in") -> None:
        """Initialise every layer as NVIDIA does (see the class docstring)."""
        squeeze_excitation = {id(m) for gate in self.modules() if isinstance(gate, SqueezeExcitationGate)
                              for m in (gate.squeeze, gate.expand)}
        for module in self.modules():
            if id(module) in squeeze_excitation:
                module.reset_parameters()  # NVIDIA builds these outside its conv factory: PyTorch's default
            else:
                init_module(module, conv_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.layers(self.stem(x))))

    @torch.jit.unused
    def feature_names(self) -> List[str]:
        """What :meth:`extract_features` can return, in the order they are computed."""
        return [f"layer{i + 1}" for i in range(len(self.layers))] + ["features", "classifier"]

    @torch.jit.unused
    def extract_features(self, x: torch.Tensor, layers: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """Intermediate outputs by name, as NVIDIA's ``extract_features``: ``layer1`` .. ``layer7`` (each stage's
        output), ``features`` (the head convolution's, before pooling) and ``classifier`` (the logits).

        ``layers`` names the outputs wanted (``None``: all); the network runs only as far as the last one.

        Raises:
            ValueError: a name that is not one of :meth:`feature_names`.
        """
        names = self.feature_names()
        wanted = names if layers is None else [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ValueError(f"unknown feature name(s) {unknown}; choose from {', '.join(names)}")
        last = max((names.index(n) for n in wanted), default=-1)
        found: Dict[str, torch.Tensor] = {}
        if last < 0:
            return found
        x = self.stem(x)
        for i, stage in enumerate(self.layers):
            if i > last:
                return found
            x = stage(x)
            if names[i] in wanted:
                found[names[i]] = x
        if last >= len(self.layers):
            x = self.features(x)
            if "features" in wanted:
                found["features"] = x
        if "classifier" in wanted:
            found["classifier"] = self.classifier(x)
        return found


def _check_values(
    num_classes: Any, dropout: Any, activation: Any, conv_init: Any, bn_momentum: Any, bn_epsilon: Any,
    survival_prob: Any,
) -> None:
    """Refuse a value no model can be built with, naming the parameter and what it accepts."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, not {num_classes!r}")
    if not number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1), not {dropout!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, not {activation!r}")
    if conv_init not in ("fan_in", "fan_out"):
        raise ValueError(f"conv_init must be 'fan_in' or 'fan_out', not {conv_init!r}")
    if bn_momentum is not None and (not number(bn_momentum) or not 0 <= bn_momentum <= 1):
        raise ValueError(f"bn_momentum must be in [0, 1] (or None for a cumulative average), not {bn_momentum!r}")
    if not number(bn_epsilon) or bn_epsilon <= 0:
        raise ValueError(f"bn_epsilon must be a positive number, not {bn_epsilon!r}")
    if not number(survival_prob) or not 0 < survival_prob <= 1:
        raise ValueError(f"survival_prob must be a probability in (0, 1], not {survival_prob!r}")
