"""BatchNorm folding: merge each ``Conv2d -> BatchNorm2d`` pair into one convolution with a bias.

In eval mode a BatchNorm is a per-channel affine map with fixed statistics, so
``bn(conv(x)) == conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``.
:func:`fold_batchnorm` does it once, into a model copy (what ``optimize_for_inference`` and
``export --fold-bn`` use); :func:`fold_into` does it into given buffers on every call (the model's own
eval fast path). :func:`trunk_pairs` names the pairs of a ResNet's trunk, in the order it runs them.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

__all__ = ["bn_scale_bias", "fold_batchnorm", "fold_conv_bn", "fold_into", "fusable_conv", "is_folded_resnet",
           "resnet_blocks", "trunk_pairs"]

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
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (with its running statistics) into ``conv`` in place; ``conv`` gains a bias.

    ``bn(conv(x)) == conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and
    ``b' = (b - m) * g / sqrt(v + eps) + beta``, computed in float64 and stored in the conv's dtype.
    The weight keeps its memory format (channels-last stays channels-last).
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
    conv.weight = nn.Parameter(folded, requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=weight.requires_grad)


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


def resnet_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of ``layer1`` .. ``layer4``, in the order they run."""
    return [block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(model, name)]


def trunk_pairs(model: nn.Module) -> Optional[list[tuple[nn.Conv2d, nn.Module]]]:
    """``(conv, norm)`` of every convolution of a ResNet's trunk, in the order it runs them: the stem,
    then per block ``convN``/``bnN`` and the ``downsample`` shortcut. ``norm`` is an ``nn.Identity``
    once folded. ``None`` when ``model`` is not a ResNet laid out like ours / torchvision's."""
    needed = ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
    if not all(hasattr(model, n) for n in needed):
        return None
    pairs = [(model.conv1, model.bn1)]
    for block in resnet_blocks(model):
        for i in (1, 2, 3):
            conv, norm = getattr(block, f"conv{i}", None), getattr(block, f"bn{i}", None)
            if conv is None or norm is None:
                return None
            pairs.append((conv, norm))
        down = getattr(block, "downsample", None)
        if down is not None:
            if len(down) != 2:
                return None
            pairs.append((down[0], down[1]))
    return pairs


def fusable_conv(conv: object) -> bool:
    """A plain ``nn.Conv2d`` with zero padding given as numbers (what the fused kernels reproduce)."""
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def is_folded_resnet(model: nn.Module) -> bool:
    """A ResNet laid out like ours / torchvision's whose BatchNorms are all folded (nn.Identity)."""
    pairs = trunk_pairs(model)
    return pairs is not None and all(fusable_conv(conv) and isinstance(norm, nn.Identity) for conv, norm in pairs)


def fold_into(
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]], buffers: list[torch.Tensor]
) -> dict[nn.Conv2d, tuple[torch.Tensor, torch.Tensor]]:
    """BN-folded ``(weight, bias)`` of every pair, in float32, the weights written into ``buffers``
    (one per pair, each of its conv's weight shape); the convs and BNs are only read."""
    folded = {}
    for (conv, bn), buffer in zip(pairs, buffers):
        scale, bias = bn_scale_bias(conv, bn, torch.float32)
        torch.mul(conv.weight, scale.reshape(-1, 1, 1, 1), out=buffer)
        folded[conv] = (buffer, bias)
    return folded
