"""The CPU fast path with its convolution weights packed once into oneDNN's blocked layouts.

:func:`resnet.fastpath.optimize_for_inference` runs every convolution as a fused oneDNN call
(``torch.ops.mkldnn._convolution_pointwise``) on plain channels-last weights, so oneDNN reorders
each weight into the blocked layout its kernels read on every call: for ResNet-50 that is about
100 MB (fp32) of weights rewritten per forward pass and per micro-batch slice. ONNX Runtime (NCHWc
weights) and OpenVINO (blocked weights) do this once, when the session is made; so does
``torch.compile``'s freezing. :func:`prepack_for_cpu` does the same for our fused path: each weight is
reordered once with ``torch.ops.mkldnn._reorder_convolution_weight`` for the input shape of its
layer, and the fused trunk then runs on the packed weights. The arithmetic is the same (the logits
are identical to the unpacked fused path's).

Measured on a 2-core AMD EPYC (Zen 5, AVX512-BF16/VNNI), batch 32, medians of 5 interleaved rounds
in one process, ratios to torchvision's eager fp32 ``resnet50()`` (``python benchmarks/benchmark.py
--runtimes``; the tables are in benchmarks/README.md): fp32 1.78x unpacked -> 1.93x packed, bf16
3.74x -> 4.13x on a quiet machine; 1.45x -> 2.14x and 2.00x -> 3.08x with other jobs running.
ONNX Runtime and OpenVINO fp32 ran at 2.24x and 2.19x, OpenVINO bf16 at 4.49x: packing closes part
of the gap, not all. At batch 1 the weights packed for slices of 8 are slower in fp32 (1.21x the
baseline's latency against 0.97x unpacked) and faster in bf16 (0.38x against 0.52x).

``torch.ops.mkldnn._reorder_convolution_weight`` is a private operator (torch's inductor uses it
for frozen convolutions); it is feature-detected and checked on a probe (:func:`prepacking_works`),
and without it :func:`prepack_for_cpu` returns the unpacked fused model and says so in
:attr:`PrepackedModel.packed`.
"""

from __future__ import annotations

import functools
from typing import Optional, Union

import torch
from torch import nn

from .fastpath import CPU_MICRO_BATCH, InferenceModel, _fused_trunk, _trunk_pairs, optimize_for_inference

__all__ = ["PrepackedModel", "prepack_for_cpu", "prepacking_works"]


def _reorder_op():
    return getattr(torch.ops.mkldnn, "_reorder_convolution_weight", None) if hasattr(torch.ops, "mkldnn") else None


@functools.lru_cache(maxsize=None)
def prepacking_works() -> bool:
    """Whether this torch can pack convolution weights for oneDNN and run the fused convolution on them."""
    reorder = _reorder_op()
    if reorder is None or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 9, 9, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(16, 16, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(16, generator=generator)
    try:
        with torch.no_grad():
            packed = reorder(weight, [1, 1], [1, 1], [1, 1], 1, list(x.shape))
            got = torch.ops.mkldnn._convolution_pointwise(x, packed, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
            expected = nn.functional.conv2d(x, weight, bias, 1, 1).relu()
        return torch.allclose(got, expected, atol=1e-4)
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False


class PrepackedModel(nn.Module):
    """A fused CPU inference model whose convolution weights are packed for oneDNN once.

    Call it like the model (float32 NCHW batch in, float32 logits out, no autograd). Attributes:
    :attr:`dtype` (compute dtype), :attr:`micro_batch` (slice size the weights are packed for; larger
    batches run in slices of it), :attr:`packed` (``False`` when this torch cannot pack, or the
    fused path does not apply: the model :func:`~resnet.fastpath.optimize_for_inference` made runs
    instead), :attr:`fused` (whether the convolutions run as oneDNN fused calls).
    """

    def __init__(self, base: InferenceModel, micro_batch: int) -> None:
        super().__init__()
        self.base = base
        self.dtype = base.dtype
        self.micro_batch = micro_batch
        self.fused = base.fused
        self.model = base.pipeline.features.model
        self.head = base.pipeline.head
        self.packed = base.fused and prepacking_works()
        self._weights: dict[nn.Module, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
        if self.packed:
            self._pack()

    @torch.no_grad()
    def _pack(self) -> None:
        pairs = _trunk_pairs(self.model)
        shapes: dict[nn.Module, list[int]] = {}
        hooks = [conv.register_forward_hook(
            lambda module, args, _out: shapes.__setitem__(module, list(args[0].shape))) for conv, _ in pairs]
        try:
            probe = torch.zeros(self.micro_batch, 3, 224, 224, dtype=self.dtype)
            self.model.forward_features(probe.contiguous(memory_format=torch.channels_last))
        finally:
            for hook in hooks:
                hook.remove()
        reorder = _reorder_op()
        for conv, _ in pairs:
            weight = reorder(conv.weight.detach(), list(conv.padding), list(conv.stride), list(conv.dilation),
                             conv.groups, shapes[conv])
            self._weights[conv] = (weight, None if conv.bias is None else conv.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            return self.base(x)
        with torch.no_grad():
            parts = []
            for part in x.to("cpu").split(self.micro_batch):
                part = part.to(self.dtype).contiguous(memory_format=torch.channels_last)
                features = _fused_trunk(self.model, part, self._weights.__getitem__)
                parts.append(self.head(torch.flatten(self.model.avgpool(features), 1).float()))
            return parts[0] if len(parts) == 1 else torch.cat(parts)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, micro_batch={self.micro_batch}, packed={self.packed}"


def prepack_for_cpu(
    model: nn.Module,
    *,
    dtype: Union[str, torch.dtype] = "float32",
    micro_batch: int = CPU_MICRO_BATCH,
) -> PrepackedModel:
    """Return a CPU inference model of ``model`` (left unchanged) with weights packed for oneDNN once.

    It is :func:`resnet.fastpath.optimize_for_inference` (BatchNorm folded, channels-last, ReLU and
    residual adds fused into oneDNN convolutions, ``dtype`` ``"float32"``, ``"bfloat16"`` or
    ``"auto"``) with every convolution weight reordered once into the blocked layout oneDNN uses for
    an input slice of ``micro_batch`` images; batches run in slices of that size.

    Where the fused path does not apply (not a ResNet of this family or torchvision's, no fused
    oneDNN kernels for ``dtype`` in this torch) or packing is not available, the model runs as
    ``optimize_for_inference`` made it (:attr:`PrepackedModel.packed` is ``False``).

    Raises:
        ValueError: ``micro_batch`` below 1, or an unknown ``dtype``.
    """
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1:
        raise ValueError(f"micro_batch must be a positive integer, not {micro_batch!r}")
    base = optimize_for_inference(model, device="cpu", dtype=dtype, micro_batch=micro_batch)
    return PrepackedModel(base, micro_batch).eval()
