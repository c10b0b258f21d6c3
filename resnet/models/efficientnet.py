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
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from resnet.models.resnet import init_module
# The configurations are data without torch (the command line reads them before importing it); their names stay
# this module's too.
from resnet.models.efficientnet_archs import (  # noqa: F401
    ACTIVATIONS,
    B0_FEATURE_CHANNELS,
    B0_STAGES,
    B0_STEM_CHANNELS,
    BN_EPSILON,
    BN_MOMENTUM,
    EFFICIENTNET_ARCHS,
    PARAM_NAMES,
    SE_RATIO,
    Activation,
    ConvInit,
    EfficientNetArch,
    Stage,
    canonical_efficientnet_arch,
    check_params,
    get_efficientnet_arch,
    scale_channels,
    scale_repeats,
)

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
