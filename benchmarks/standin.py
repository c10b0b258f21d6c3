"""A stand-in for NVIDIA's NGC ResNet-50 checkpoint, so that the benchmarks download nothing.

Deterministic random weights in the layout of the NGC file (this repository's key names, which are
also torchvision's), with the value ranges of a trained network: convolution and linear weights
scaled by 1/sqrt(fan-in), BatchNorm scales in [0.5, 1), running variances in [0.75, 1.25), small
shifts and means. Activations then keep their scale through the 50 layers and the classes are not
tied, which the agreement columns (max logit difference, top-1 and top-5 against the peer) need;
speed does not depend on the values.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn


def standin_checkpoint(arch: str = "resnet50", seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """The state dict of ``arch`` with deterministic trained-looking weights (see the module text)."""
    from resnet.models.builder import create_model

    model = create_model(arch, channels_last=False, fast_inference=False)
    generator = torch.Generator().manual_seed(seed)

    def normal(tensor: torch.Tensor, scale: float) -> torch.Tensor:
        return scale * torch.randn(tensor.shape, generator=generator)

    def uniform(tensor: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(tensor.shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(normal(module.weight, 1 / math.sqrt(module.weight[0].numel())))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias, 0.01))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight, 0.5, 1.0))
                module.bias.copy_(normal(module.bias, 0.01))
                module.running_mean.copy_(normal(module.running_mean, 0.01))
                module.running_var.copy_(uniform(module.running_var, 0.75, 1.25))
    return OrderedDict((name, value.contiguous()) for name, value in model.state_dict().items())
