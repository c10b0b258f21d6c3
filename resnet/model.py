"""One configurable ResNet for NVIDIA's ResNet-50 v1.5 family.

The three published architectures differ only in data (block counts, widths,
bottleneck expansion, groups and squeeze-excitation), held in :data:`ARCHS`.
Module names follow torchvision's layout (``conv1``, ``bn1``, ``layer1`` ..
``layer4``, ``downsample``, ``fc``), which is also the layout of NVIDIA's NGC
checkpoint files, so those load without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import torch
from torch import nn

from . import onednn
from .eval_path import eval_features

ConvInit = Literal["fan_in", "fan_out"]


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


class SqueezeExcitation(nn.Module):
    """Channel attention: mean over H, W -> squeeze -> ReLU -> expand -> sigmoid.

    Returns the per-channel scale with shape (N, C, 1, 1); the block multiplies by it.
    With ``use_conv`` the two projections are 1x1 convolutions (4-D weights), the form
    TensorRT prefers; otherwise they are ``nn.Linear`` (2-D weights).
    """

    def __init__(self, channels: int, hidden: int, use_conv: bool = False) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.squeeze: nn.Module = nn.Conv2d(channels, hidden, 1)
            self.expand: nn.Module = nn.Conv2d(hidden, channels, 1)
        else:
            self.squeeze = nn.Linear(channels, hidden)
            self.expand = nn.Linear(hidden, channels)
        self.relu = nn.ReLU(inplace=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv:
            s = x.mean(dim=(2, 3), keepdim=True)
            return self.sigmoid(self.expand(self.relu(self.squeeze(s))))
        s = x.mean(dim=(2, 3))
        s = self.sigmoid(self.expand(self.relu(self.squeeze(s))))
        return s.unsqueeze(-1).unsqueeze(-1)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, groups) -> 1x1 bottleneck with the v1.5 stride on the 3x3."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        expansion: int,
        stride: int = 1,
        groups: int = 1,
        se_hidden: Optional[int] = None,
        trt: bool = False,
        fused_se: bool = True,
    ) -> None:
        super().__init__()
        out_channels = width * expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.squeeze: Optional[SqueezeExcitation] = None
        if se_hidden is not None:
            self.squeeze = SqueezeExcitation(out_channels, se_hidden, use_conv=trt)
        self.fused_se = fused_se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compute(x)

    def compute(
        self, x: torch.Tensor, folded: Optional[Dict[str, Tuple[torch.Tensor, torch.Tensor]]] = None
    ) -> torch.Tensor:
        """What the block computes, for both ways of running it.

        ``folded=None`` (``forward``): layer by layer, calling the block's own modules (so hooks,
        tracing and scripting see them). Otherwise ``folded`` maps each convolution (``"conv1"``,
        ``"conv2"``, ``"conv3"``, ``"downsample"``) to its BN-folded ``(weight, bias)`` and every
        conv + BN (+ ReLU, or + residual add + ReLU) runs as one oneDNN convolution
        (:mod:`resnet.onednn`; CPU, after :func:`resnet.onednn.fused_kernels_work`), the
        inference fast path. Squeeze-excitation runs as written in both.
        """
        residual = x if self.downsample is None else self._conv_bn("downsample", x, folded)
        out = self._conv_bn("conv1", x, folded, relu=True)
        out = self._conv_bn("conv2", out, folded, relu=True)
        if self.squeeze is None:
            return self._conv_bn("conv3", out, folded, relu=True, residual=residual)
        out = self._conv_bn("conv3", out, folded)
        if self.fused_se:
            out = torch.addcmul(residual, out, self.squeeze(out))
        else:
            out = out * self.squeeze(out) + residual
        return self.relu(out)

    def _conv_bn(
        self,
        name: str,
        x: torch.Tensor,
        folded: Optional[Dict[str, Tuple[torch.Tensor, torch.Tensor]]],
        relu: bool = False,
        residual: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``bn(conv(x))`` of convolution ``name``, then ``+ residual`` (which is always followed by ReLU)
        and ReLU when asked."""
        if folded is not None:
            return self._fused_conv_bn(name, x, folded, relu, residual)
        if name == "conv1":
            out = self.bn1(self.conv1(x))
        elif name == "conv2":
            out = self.bn2(self.conv2(x))
        elif name == "conv3":
            out = self.bn3(self.conv3(x))
        elif self.downsample is not None:
            out = self.downsample(x)
        else:
            raise ValueError(f"this block has no convolution {name}")
        if residual is not None:
            out = out + residual
        return self.relu(out) if relu else out

    @torch.jit.unused
    def _fused_conv_bn(self, name, x, folded, relu, residual):
        # type: (str, Tensor, Dict[str, Tuple[Tensor, Tensor]], bool, Optional[Tensor]) -> Tensor
        # (a type comment: TorchScript reads an unused method's real annotations, which are strings here)
        conv = self.downsample[0] if name == "downsample" else getattr(self, name)
        weight, bias = folded[name]
        if residual is None:
            return onednn.conv(x, conv, weight, bias, relu=relu)
        return onednn.conv_add_relu(x, residual, conv, weight, bias)


class ResNet(nn.Module):
    """ResNet / ResNeXt / SE-ResNeXt v1.5 built from an :class:`ArchConfig`.

    Args:
        arch: an :class:`ArchConfig` or the name of one in :data:`ARCHS`.
        num_classes: outputs of the final linear layer.
        last_bn_0_init: start the last BatchNorm of every block at zero (identity blocks).
        conv_init: ``"fan_in"`` or ``"fan_out"``, the Kaiming-normal mode for convolutions.
        trt: build squeeze-excitation projections as 1x1 convolutions (4-D weights).
        fused_se: apply SE and the residual add as one ``addcmul``.
        fast_inference: in eval mode with autograd off, run a float32 CPU batch (2 or more images)
            with BatchNorm folded into the convolutions and ReLU / residual adds fused into them
            (:func:`resnet.eval_path.eval_features`, which says when it applies): the same logits
            within 1e-4, about 1.5x faster than layer by layer on a 2-core CPU at batch 32. It folds
            into a float32 copy of the conv weights per call (94 MB for ResNet-50), of which the
            model keeps up to :data:`resnet.eval_path.EVAL_BUFFER_SETS` for reuse. ``False`` always
            runs the layers one by one. Also an attribute, so it can be switched on an existing model.

    The forward pass returns raw logits (no softmax).
    """

    def __init__(
        self,
        arch: ArchConfig | str,
        num_classes: int = 1000,
        last_bn_0_init: bool = False,
        conv_init: ConvInit = "fan_in",
        trt: bool = False,
        fused_se: bool = True,
        fast_inference: bool = True,
    ) -> None:
        super().__init__()
        config = get_arch(arch) if isinstance(arch, str) else arch
        if conv_init not in ("fan_in", "fan_out"):
            raise ValueError(f"conv_init must be 'fan_in' or 'fan_out', not {conv_init!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, not {num_classes!r}")
        self.arch = config
        self.num_classes = num_classes
        self.fast_inference = fast_inference
        self.conv1 = nn.Conv2d(3, config.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = config.stem_width
        se_hidden = config.se_hidden if config.squeeze_excitation else None
        for stage, (blocks, width) in enumerate(zip(config.blocks, config.widths)):
            layer = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layer.append(
                    Bottleneck(
                        in_channels, width, config.expansion, stride, config.groups, se_hidden, trt, fused_se
                    )
                )
                in_channels = width * config.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(config.num_features, num_classes)
        if self.fc.weight.device.type != "meta":
            # Built on the meta device (to receive loaded weights) there are no values to initialise;
            # skipping it also avoids the costly meta-tensor path of the nn.init functions.
            self.reset_parameters(conv_init=conv_init, last_bn_0_init=last_bn_0_init)

    def reset_parameters(self, conv_init: ConvInit = "fan_in", last_bn_0_init: bool = False) -> None:
        """Initialise every layer as NVIDIA's training recipe does."""
        for module in self.modules():
            init_module(module, conv_init)
        if last_bn_0_init:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features (N, 2048) that feed ``fc``."""
        if self.fast_inference and not torch.jit.is_scripting():
            fast = self._fast_features(x)
            if fast is not None:
                return fast
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    @torch.jit.unused
    def _fast_features(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return eval_features(self, x, Bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def init_module(module: nn.Module, conv_init: ConvInit = "fan_in") -> None:
    """Initialise one layer (not its children): Kaiming-normal convs, BN to (1, 0), default Linear."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode=conv_init, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        module.reset_running_stats()
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        module.reset_parameters()
