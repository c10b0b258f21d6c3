"""A ResNet's trunk computed from BN-folded weights with fused oneDNN convolutions, in CPU-sized slices.

Both fast paths run the trunk here: the model's own eval path (:mod:`resnet.fast.eval_path`, weights folded
once per model and kept while they are current) and :func:`resnet.fast.inference.optimize_for_inference`
(weights folded into a copy). The arithmetic of a block is written out again here, from its weights
alone: what the model's modules compute is :meth:`resnet.models.resnet.Bottleneck.forward`, and the callers
run this trunk only for a model whose structure is exactly what this reproduces (the eval path's guard,
:func:`resnet.fast.eval_path.exact_structure`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
from torch.nn import functional as F

from resnet.fast import onednn

__all__ = [
    "CPU_MICRO_BATCH", "FusedBlock", "FusedConv", "FusedSqueeze", "FusedTrunk", "conv_input_shapes",
    "fused_features", "in_slices", "packed",
]

#: Slice size for large CPU batches: the activations of 8 ResNet-50 images stay in a 32 MB L3 cache
#: (measured in ``benchmarks/README.md``).
CPU_MICRO_BATCH = 8

#: The stem's max pooling, as every model of the family builds it (kernel, stride, padding).
MAXPOOL = (3, 2, 1)


@dataclass(frozen=True)
class FusedConv:
    """One convolution with its BatchNorm folded in: ``bn(conv(x)) == conv(x; weight, bias)``.

    ``weight`` is a plain (channels-last) tensor or one packed for oneDNN (:func:`resnet.fast.onednn.pack_weight`);
    the geometry attributes have the names of ``nn.Conv2d``'s, which :mod:`resnet.fast.onednn` reads.
    """

    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the output for an input of ``height`` x ``width``."""
        return tuple(  # type: ignore[return-value]
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip((height, width), self.kernel_size, self.stride, self.padding, self.dilation)
        )


@dataclass(frozen=True)
class FusedSqueeze:
    """A squeeze-excitation module's weights: two projections, as ``nn.Linear`` (2-D) or 1x1 convolutions."""

    squeeze_weight: torch.Tensor
    squeeze_bias: Optional[torch.Tensor]
    expand_weight: torch.Tensor
    expand_bias: Optional[torch.Tensor]
    use_conv: bool

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C, 1, 1) channel scale, with the operations ``SqueezeExcitation.forward`` runs."""
        if self.use_conv:
            s = F.conv2d(x.mean(dim=(2, 3), keepdim=True), self.squeeze_weight, self.squeeze_bias)
            return torch.sigmoid(F.conv2d(F.relu(s), self.expand_weight, self.expand_bias))
        s = F.relu(F.linear(x.mean(dim=(2, 3)), self.squeeze_weight, self.squeeze_bias))
        return torch.sigmoid(F.linear(s, self.expand_weight, self.expand_bias)).unsqueeze(-1).unsqueeze(-1)


@dataclass(frozen=True)
class FusedBlock:
    """A bottleneck block: 1x1 -> 3x3 -> 1x1, an optional ``downsample`` shortcut and squeeze-excitation."""

    conv1: FusedConv
    conv2: FusedConv
    conv3: FusedConv
    downsample: Optional[FusedConv]
    squeeze: Optional[FusedSqueeze] = None
    fused_se: bool = True


@dataclass(frozen=True)
class FusedTrunk:
    """Everything the trunk runs: the stem convolution (then ``MAXPOOL``) and the blocks in order."""

    stem: FusedConv
    blocks: tuple[FusedBlock, ...]

    def convs(self) -> list[FusedConv]:
        """Every convolution, in the order :func:`conv_input_shapes` lists their inputs."""
        out = [self.stem]
        for block in self.blocks:
            out += [block.conv1, block.conv2, block.conv3] + ([block.downsample] if block.downsample else [])
        return out


def _block(block: FusedBlock, x: torch.Tensor) -> torch.Tensor:
    """What ``Bottleneck.forward`` computes, every conv + BN (+ ReLU, or + residual add + ReLU) one oneDNN call."""
    residual = x if block.downsample is None else onednn.conv(x, block.downsample, *_wb(block.downsample), relu=False)
    out = onednn.conv(x, block.conv1, *_wb(block.conv1), relu=True)
    out = onednn.conv(out, block.conv2, *_wb(block.conv2), relu=True)
    if block.squeeze is None:
        return onednn.conv_add_relu(out, residual, block.conv3, *_wb(block.conv3))
    out = onednn.conv(out, block.conv3, *_wb(block.conv3), relu=False)
    if block.fused_se:
        out = torch.addcmul(residual, out, block.squeeze.scale(out))
    else:
        out = out * block.squeeze.scale(out) + residual
    return F.relu(out, inplace=True)


def _wb(conv: FusedConv) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    return conv.weight, conv.bias


def fused_features(trunk: FusedTrunk, x: torch.Tensor) -> torch.Tensor:
    """The pooled features ``flatten(avgpool(layer4(...(maxpool(relu(bn1(conv1(x))))))), 1)`` of a ResNet of
    this family, from ``trunk``'s weights. ``x``: a channels-last batch in the weights' dtype. Call only where
    :func:`resnet.fast.onednn.fused_kernels_work` is true."""
    x = onednn.conv(x, trunk.stem, *_wb(trunk.stem), relu=True)
    x = F.max_pool2d(x, *MAXPOOL)
    for block in trunk.blocks:
        x = _block(block, x)
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def conv_input_shapes(trunk: FusedTrunk, shape: tuple[int, ...]) -> list[list[int]]:
    """The input shape of every convolution of ``trunk`` (in :meth:`FusedTrunk.convs` order) for a batch of
    ``shape`` (N, C, H, W), from the convolutions' geometry alone."""
    n, c, h, w = shape
    shapes = [[n, c, h, w]]
    h, w = trunk.stem.output_hw(h, w)
    k, s, p = MAXPOOL
    h, w = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    c = trunk.stem.weight.shape[0]
    for block in trunk.blocks:
        shapes.append([n, c, h, w])
        h1, w1 = block.conv1.output_hw(h, w)
        shapes.append([n, block.conv1.weight.shape[0], h1, w1])
        h2, w2 = block.conv2.output_hw(h1, w1)
        shapes.append([n, block.conv2.weight.shape[0], h2, w2])
        if block.downsample is not None:
            shapes.append([n, c, h, w])
        c, h, w = block.conv3.weight.shape[0], h2, w2
    return shapes


def packed(trunk: FusedTrunk, shape: tuple[int, ...]) -> FusedTrunk:
    """``trunk`` with every convolution weight packed once into the layout oneDNN's kernels read for a batch of
    ``shape`` (:func:`~resnet.fast.onednn.pack_weight`; check :func:`~resnet.fast.onednn.prepacking_works` first).
    The same arithmetic for inputs of any shape; for inputs of ``shape`` oneDNN no longer reorders every weight per
    call."""
    shapes = iter(conv_input_shapes(trunk, shape))

    def pack(conv: FusedConv) -> FusedConv:
        return replace(conv, weight=onednn.pack_weight(conv, conv.weight, next(shapes)))

    stem = pack(trunk.stem)
    blocks = []
    for block in trunk.blocks:
        conv1, conv2, conv3 = pack(block.conv1), pack(block.conv2), pack(block.conv3)
        down = pack(block.downsample) if block.downsample is not None else None
        blocks.append(replace(block, conv1=conv1, conv2=conv2, conv3=conv3, downsample=down))
    return FusedTrunk(stem, tuple(blocks))


def in_slices(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """``fn(x)`` computed on slices of ``size`` images along the batch (``None``: the whole batch).

    Each image's result is independent of the others in its batch, so the results are the same;
    small slices keep the activations in the CPU caches.
    """
    if size is None or x.shape[0] <= size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(size)])
