"""BatchNorm folding: merge each ``Conv2d -> BatchNorm2d`` pair into one convolution with a bias.

In eval mode a BatchNorm is a per-channel affine map with fixed statistics, so
``bn(conv(x)) == conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``.
:func:`fold_batchnorm` does it into a model copy (what ``optimize_for_inference`` and ``export --fold-bn``
use); :func:`folded_weight_bias` computes one pair's folded weights without touching the modules (the model's
own eval fast path, which keeps them beside the model).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["bn_scale_bias", "fold_batchnorm", "fold_conv_bn", "folded_weight_bias"]


def bn_scale_bias(conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel ``scale`` and ``bias`` with ``bn(conv(x)) == conv(x; w * scale, bias)``, in ``dtype``.

    ``scale = g / sqrt(v + eps)`` and ``bias = (b - m) * scale + beta`` from the running statistics.
    """
    scale = bn.running_var.to(dtype).add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.to(dtype)
    mean = bn.running_mean.to(dtype)
    bias = (-mean if conv.bias is None else conv.bias.to(dtype) - mean) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.to(dtype)
    return scale, bias


@torch.no_grad()
def folded_weight_bias(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w', b')`` with ``bn(conv(x)) == conv(x; w', b')`` (eval mode), leaving both modules untouched.

    ``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``, computed in float64 and
    returned in the conv weight's dtype; ``w'`` keeps the weight's memory format (channels-last stays
    channels-last). Raises ``ValueError`` for a BN without running statistics or of another width.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fold {bn}: it has no running statistics (track_running_stats=False)")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"cannot fold {bn} into {conv}: {conv.out_channels} outputs vs {bn.num_features} features")
    weight = conv.weight
    dtype = weight.dtype
    scale, bias = bn_scale_bias(conv, bn, torch.float64)
    folded = (weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))).to(dtype)
    if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last):
        folded = folded.contiguous(memory_format=torch.channels_last)
    return folded, bias.to(dtype)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (with its running statistics) into ``conv`` in place; ``conv`` gains a bias.

    The values are :func:`folded_weight_bias`'s (float64 arithmetic, stored in the conv's dtype and memory format).
    """
    weight, bias = folded_weight_bias(conv, bn)
    requires_grad = conv.weight.requires_grad
    conv.weight = nn.Parameter(weight, requires_grad=requires_grad)
    conv.bias = nn.Parameter(bias, requires_grad=requires_grad)


def _fold_pairs(module: nn.Module) -> int:
    """Fold the conv/BN pairs directly inside ``module``; return how many were folded."""
    folded = 0
    children = list(module.named_children())
    if isinstance(module, nn.Sequential):
        # Sequential(conv, bn, ...) as in the downsample shortcut.
        for (_, first), (name, second) in zip(children, children[1:]):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                fold_conv_bn(first, second)
                setattr(module, name, nn.Identity())
                folded += 1
        return folded
    # Attribute pairs convN -> bnN, the naming of NVIDIA's and torchvision's ResNets.
    named = dict(children)
    for name, child in children:
        if isinstance(child, nn.Conv2d) and name.startswith("conv"):
            bn_name = "bn" + name[len("conv"):]
            bn = named.get(bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                fold_conv_bn(child, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Return ``model`` in eval mode with every conv + BatchNorm pair folded into one biased conv.

    Pairs found: attribute pairs named ``convN``/``bnN`` on the same module (the stem and the three
    convs of each bottleneck) and consecutive ``Conv2d, BatchNorm2d`` inside an ``nn.Sequential``
    (the ``downsample`` shortcut). Folded BN layers are replaced by ``nn.Identity``, so the forward
    code, parameter names of the convs, tracing, scripting and ONNX export all keep working.
    Works for this repository's ResNet family and for torchvision's ResNets alike.

    Args:
        model: the model; its BN running statistics are used (the eval-mode computation).
        inplace: modify ``model`` itself instead of a deep copy (saves memory on large models).

    Returns:
        The folded model, in eval mode. Its float32 outputs equal the eval-mode outputs of ``model``
        within float32 rounding (1e-4 on logits of the ResNet-50 parity fixtures).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        _fold_pairs(module)
    return model
