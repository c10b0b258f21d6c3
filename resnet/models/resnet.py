"""One configurable ResNet for NVIDIA's ResNet-50 v1.5 family.

The three published architectures differ only in data (block counts, widths,
bottleneck expansion, groups and squeeze-excitation), held in :data:`ARCHS`.
Module names follow torchvision's layout (``conv1``, ``bn1``, ``layer1`` ..
``layer4``, ``downsample``, ``fc``), which is also the layout of NVIDIA's NGC
checkpoint files, so those load without renaming.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import torch
from torch import nn

# The configurations are data without torch (the command line reads them before importing it); their names stay
# this module's too.
from resnet.models.archs import ARCHS, ArchConfig, canonical_arch, get_arch  # noqa: F401

ConvInit = Literal["fan_in", "fan_out"]

#: ``accelerator(model, x) -> logits or None``: computes ``model(x)`` some faster way, or declines with ``None``.
InferenceAccelerator = Callable[["ResNet", torch.Tensor], Optional[torch.Tensor]]

#: The accelerator every :class:`ResNet` with ``fast_inference`` consults (see :func:`set_inference_accelerator`).
_accelerator: Optional[InferenceAccelerator] = None

#: Name of the instance attribute where an accelerator keeps its state for one model (folded weights):
#: never copied, pickled or saved with the model, freed with it.
ACCELERATOR_STATE = "_accelerator_state"


def set_inference_accelerator(accelerator: Optional[InferenceAccelerator]) -> Optional[InferenceAccelerator]:
    """Plug ``accelerator`` into :class:`ResNet` (``None`` unplugs it); returns the one it replaces.

    This is the model's one extension point: the model knows nothing of how an accelerator works. A
    :class:`ResNet` whose ``fast_inference`` is true (and that is not being scripted) calls
    ``accelerator(model, x)`` at the start of ``forward``; a tensor returned is the result, ``None``
    means "not for this call" and the model's own modules run. An accelerator must return exactly what
    the modules would compute (within float32 rounding) or ``None``. It may keep per-model state in the
    attribute named :data:`ACCELERATOR_STATE`, which copies, pickles and ``state_dict`` leave out.

    ``import resnet`` plugs in this package's eval fast path (:mod:`resnet.fast.eval_path`).
    """
    global _accelerator
    previous, _accelerator = _accelerator, accelerator
    return previous


def inference_accelerator() -> Optional[InferenceAccelerator]:
    """The accelerator plugged in by :func:`set_inference_accelerator`, or ``None``."""
    return _accelerator


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
        # The shortcut runs first (as in NVIDIA's code); graph node names still match torchvision's.
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.squeeze is None:
            out = out + residual
        elif self.fused_se:
            out = torch.addcmul(residual, out, self.squeeze(out))
        else:
            out = out * self.squeeze(out) + residual
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet / ResNeXt / SE-ResNeXt v1.5 built from an :class:`ArchConfig`.

    Args:
        arch: an :class:`ArchConfig` or the name of one in :data:`ARCHS`.
        num_classes: outputs of the final linear layer.
        last_bn_0_init: start the last BatchNorm of every block at zero (identity blocks).
        conv_init: ``"fan_in"`` or ``"fan_out"``, the Kaiming-normal mode for convolutions.
        trt: build squeeze-excitation projections as 1x1 convolutions (4-D weights).
        fused_se: apply SE and the residual add as one ``addcmul``.
        fast_inference: let the plugged-in inference accelerator (:func:`set_inference_accelerator`)
            compute ``forward`` when it can; it declines whenever it would not compute exactly what the
            modules compute, and the modules run. ``import resnet`` plugs in the eval fast path
            (:mod:`resnet.fast.eval_path`: eval mode, autograd off, an unmodified float32 CPU model and
            input). ``False``: the modules always run. Also an attribute, so it can be switched on an
            existing model.

    The forward pass is the modules' own (``forward_features`` then ``fc``) and returns raw logits (no
    softmax). Parameters are ordinary tensors; the model is a plain ``nn.Module`` to torch's utilities.
    :attr:`head_name` names the classifier (``fc``) for code that works on any model of the family
    (:func:`resnet.models.family.get_head`).
    """

    #: The classifier's module path (:func:`resnet.models.family.get_head`).
    head_name = "fc"

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
        """Globally pooled features (N, 2048) that feed ``fc``, computed by the modules."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_inference and not torch.jit.is_scripting():
            fast = self._accelerated(x)
            if fast is not None:
                return fast
        return self.fc(self.forward_features(x))

    @torch.jit.unused
    def _accelerated(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        accelerator = _accelerator
        return None if accelerator is None else accelerator(self, x)

    def __getstate__(self) -> dict[str, Any]:
        # The accelerator's state (folded weights, a lock) belongs to this instance only.
        state = super().__getstate__()
        state.pop(ACCELERATOR_STATE, None)
        return state


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
