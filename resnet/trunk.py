"""A ResNet's trunk run with BN-folded weights and fused oneDNN convolutions, in CPU-sized slices.

Both fast paths run the trunk here: the model's own eval path (:mod:`resnet.eval_path`, weights folded
on every call) and :func:`resnet.inference.optimize_for_inference` (weights folded once). What each
block computes is :meth:`resnet.model.Bottleneck.compute`; this module only feeds it the folded weights,
in the order the stages run, and splits large batches (:func:`in_slices`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from . import onednn
from .folding import resnet_blocks

__all__ = ["CPU_MICRO_BATCH", "ConvParams", "fused_features", "in_slices", "own_params"]

#: Slice size for large CPU batches: the activations of 8 ResNet-50 images stay in a 32 MB L3 cache
#: (about 1.1x the throughput of whole batches of 32 on 2 cores).
CPU_MICRO_BATCH = 8

#: ``params(conv) -> (weight, bias)``: the BN-folded weights a convolution runs with.
ConvParams = Callable[[nn.Conv2d], "tuple[torch.Tensor, Optional[torch.Tensor]]"]


def own_params(conv: nn.Conv2d) -> "tuple[torch.Tensor, Optional[torch.Tensor]]":
    """The conv's own weight and bias (a model whose BatchNorms were folded into its convs)."""
    return conv.weight, conv.bias


def _block_params(block: nn.Module, params: ConvParams) -> "dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]]":
    folded = {name: params(getattr(block, name)) for name in ("conv1", "conv2", "conv3")}
    if block.downsample is not None:
        folded["downsample"] = params(block.downsample[0])
    return folded


def fused_features(model: nn.Module, x: torch.Tensor, params: ConvParams) -> torch.Tensor:
    """The pooled features ``flatten(avgpool(trunk(x)), 1)`` of a ResNet of this family, every
    convolution run fused with ``params(conv)``.

    The stem is conv1 + bn1 + ReLU (one fused convolution), then ``maxpool``; every block of
    ``layer1`` .. ``layer4`` is :meth:`~resnet.model.Bottleneck.compute` with its folded weights.
    ``maxpool``, ``avgpool`` and squeeze-excitation modules are called as they are. Call only where
    :func:`resnet.onednn.fused_kernels_work` is true.
    """
    x = model.maxpool(onednn.conv(x, model.conv1, *params(model.conv1), relu=True))
    for block in resnet_blocks(model):
        x = block.compute(x, _block_params(block, params))
    return torch.flatten(model.avgpool(x), 1)


def in_slices(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """``fn(x)`` computed on slices of ``size`` images along the batch (``None``: the whole batch).

    Each image's result is independent of the others in its batch, so the results are the same;
    small slices keep the activations in the CPU caches.
    """
    if size is None or x.shape[0] <= size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(size)])
