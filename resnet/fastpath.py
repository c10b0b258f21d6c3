"""Inference fast path: fold BatchNorm into convolutions, then lay out and run the model for speed.

The model's arithmetic is unchanged; only where and in what number format it happens changes:

* :func:`fold_batchnorm` merges every ``Conv2d -> BatchNorm2d`` pair (stem, the three convs of each
  bottleneck and the ``downsample`` shortcut) into one convolution with a bias, using the BN running
  statistics. In float32 the logits stay within 1e-4 of the unfolded model. The result is a plain
  ``nn.Module`` tree (BN layers become ``nn.Identity``), so it still traces, scripts and exports.
* :func:`optimize_for_inference` returns an :class:`InferenceModel`: a module that takes the usual
  float32 NCHW batch and returns float32 logits, and inside runs the folded model in the fastest layout
  and precision the device offers: channels-last everywhere; on CPU, ReLU and residual adds fused into
  the oneDNN convolutions, and bfloat16 on CPUs with native BF16 instructions; float16 on CUDA;
  optionally compiled with ``torch.compile`` and/or replayed as CUDA graphs.
* :func:`eval_features` is the same folding and fusion applied to the model itself, call by call:
  :class:`resnet.model.ResNet` uses it in eval mode under ``no_grad`` for float32 CPU batches, so the
  model runs fast exactly as the documented example uses it, with nothing cached that could go stale.

Accuracy of each variant (measured on the parity fixtures and the sample photos, see
``tests/test_fastpath.py`` and ``benchmarks/README.md``): every float32 variant stays within 1e-4 of
the reference logits; bfloat16 / float16 keep the top-1 class and the top-5 set of the float32 model
on those inputs, with a logit error bounded by :data:`REDUCED_PRECISION_TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import threading
import weakref
from typing import Callable, Iterator, Literal, Optional, Union

import torch
from torch import nn

__all__ = [
    "CPU_MICRO_BATCH",
    "EVAL_MIN_BATCH",
    "REDUCED_PRECISION_TOLERANCE",
    "InferenceModel",
    "cpu_supports_bf16",
    "eval_features",
    "fold_batchnorm",
    "fused_kernels_work",
    "optimize_for_inference",
    "resolve_dtype",
]

DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: Documented bound on the logit error of the reduced-precision variants, relative to the largest
#: float32 logit of the same input: ``max|low - fp32| <= tol * max|fp32|``. Measured for bfloat16 on
#: the parity fixtures and sample photos: 0.36-0.42% for all three architectures (benchmarks/README.md);
#: the bound leaves 5x head-room. float16 has 3 more mantissa bits; its bound is not yet measured on a GPU.
REDUCED_PRECISION_TOLERANCE: dict[torch.dtype, float] = {torch.bfloat16: 0.02, torch.float16: 0.01}

#: Slice size for large CPU batches (``micro_batch="auto"``); see :func:`optimize_for_inference`.
CPU_MICRO_BATCH = 8


def _bn_scale_bias(conv: nn.Conv2d, bn: nn.BatchNorm2d, dtype: torch.dtype) -> "tuple[torch.Tensor, torch.Tensor]":
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
    scale, bias = _bn_scale_bias(conv, bn, torch.float64)
    folded = (weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))).to(dtype)
    if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last):
        folded = folded.contiguous(memory_format=torch.channels_last)
    conv.weight = nn.Parameter(folded, requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=weight.requires_grad)


def _fold_pairs(module: nn.Module) -> int:
    """Fold the conv/BN pairs directly inside ``module``; return how many were folded."""
    folded = 0
    if isinstance(module, nn.Sequential):
        # Sequential(conv, bn, ...) as in the downsample shortcut.
        children = list(module._modules.items())
        for (_, first), (name, second) in zip(children, children[1:]):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                fold_conv_bn(first, second)
                module._modules[name] = nn.Identity()
                folded += 1
        return folded
    # Attribute pairs convN -> bnN, the naming of NVIDIA's and torchvision's ResNets.
    for name, child in list(module._modules.items()):
        if isinstance(child, nn.Conv2d) and name.startswith("conv"):
            bn_name = "bn" + name[len("conv"):]
            bn = module._modules.get(bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                fold_conv_bn(child, bn)
                module._modules[bn_name] = nn.Identity()
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


# --------------------------------------------------------------------------- device capabilities


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16) and oneDNN can use it.

    Without those instructions bfloat16 is emulated and far slower than float32 (about 6x slower on an
    AVX2-only AMD EPYC), so ``dtype="auto"`` stays float32 there. Reads ``/proc/cpuinfo``; on systems
    without it the answer is ``False`` (pass ``dtype="bfloat16"`` explicitly to force it).
    """
    flags = _cpu_flags()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    return native and torch.backends.mkldnn.is_available()


def resolve_dtype(dtype: Union[DtypeName, torch.dtype], device: Union[str, torch.device]) -> torch.dtype:
    """The compute dtype for ``dtype`` on ``device``: ``"auto"`` is float16 on CUDA, bfloat16 on a CPU
    with native BF16 (:func:`cpu_supports_bf16`) and float32 elsewhere."""
    device = torch.device(device)
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be float32, bfloat16 or float16, not {dtype}")
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_supports_bf16():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(
            f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', not {dtype!r}"
        ) from None


# --------------------------------------------------------------------------- the optimised module


ConvParams = Callable[[nn.Conv2d], "tuple[torch.Tensor, Optional[torch.Tensor]]"]


def _conv(
    x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool
) -> torch.Tensor:
    """``conv(x)`` (then ReLU) with ``weight``/``bias`` in one oneDNN pass: ReLU is a fused post-op.

    These are the ``mkldnn`` operators that ``torch.compile`` emits for CPU convolutions; the
    arithmetic per element is the same as ``F.conv2d`` followed by ``relu``.
    """
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "relu" if relu else "none", [], "",
    )


def _conv_add_relu(
    x: torch.Tensor, residual: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """``relu(conv(x) + residual)`` in one pass."""
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "add", 1.0, "relu", [], "",
    )


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [block for name in ("layer1", "layer2", "layer3", "layer4") for block in getattr(model, name)]


def _fused_trunk(model: nn.Module, x: torch.Tensor, params: ConvParams) -> torch.Tensor:
    """Stem and the four stages of a ResNet laid out like ours / torchvision's, before pooling.

    Every convolution runs with ``params(conv)`` (its BN-folded weight and bias) and its ReLU or
    residual add + ReLU fused in (CPU, oneDNN). ``maxpool`` and squeeze-excitation modules are called
    as they are.
    """
    x = model.maxpool(_conv(x, model.conv1, *params(model.conv1), relu=True))
    for block in _blocks(model):
        if block.downsample is None:
            residual = x
        else:
            residual = _conv(x, block.downsample[0], *params(block.downsample[0]), relu=False)
        out = _conv(x, block.conv1, *params(block.conv1), relu=True)
        out = _conv(out, block.conv2, *params(block.conv2), relu=True)
        squeeze = getattr(block, "squeeze", None)
        if squeeze is None:
            x = _conv_add_relu(out, residual, block.conv3, *params(block.conv3))
            continue
        out = _conv(out, block.conv3, *params(block.conv3), relu=False)
        if getattr(block, "fused_se", True):
            out = torch.addcmul(residual, out, squeeze(out))
        else:
            out = out * squeeze(out) + residual
        x = torch.relu(out)
    return x


def _own_params(conv: nn.Conv2d) -> "tuple[torch.Tensor, Optional[torch.Tensor]]":
    return conv.weight, conv.bias


class _FusedFeatures(nn.Module):
    """``forward_features`` of a BN-folded ResNet with every conv epilogue fused (CPU)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model.avgpool(_fused_trunk(self.model, x, _own_params)), 1)


def _fusable_conv(conv: object) -> bool:
    return (
        type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
    )


def _trunk_pairs(model: nn.Module) -> Optional[list[tuple[nn.Module, nn.Module]]]:
    """``(conv, norm)`` of every convolution :func:`_fused_trunk` runs, in its order: the stem, then per
    block ``convN``/``bnN`` and the ``downsample`` shortcut. ``None`` when ``model`` is not a ResNet
    laid out like ours / torchvision's."""
    needed = ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
    if not all(hasattr(model, n) for n in needed):
        return None
    pairs = [(model.conv1, model.bn1)]
    for block in _blocks(model):
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


def _is_folded_resnet(model: nn.Module) -> bool:
    """A ResNet laid out like ours / torchvision's whose BatchNorms are all folded (nn.Identity)."""
    pairs = _trunk_pairs(model)
    return pairs is not None and all(_fusable_conv(conv) and isinstance(norm, nn.Identity) for conv, norm in pairs)


# --------------------------------------------------------------------------- eval-mode fast forward


#: Smallest batch for which :func:`eval_features` runs: below it the per-call folding (about 13 ms for
#: ResNet-50 on 2 cores) costs more than the fused convolutions save, so small batches run unchanged.
EVAL_MIN_BATCH = 2


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def _plain_float32_cpu(*tensors: Optional[torch.Tensor]) -> bool:
    return all(
        t is None or (t.dtype is torch.float32 and t.device.type == "cpu" and t.layout is torch.strided)
        for t in tensors
    )


def _bn_pair(conv: object, bn: object) -> bool:
    """``conv -> bn`` foldable in float32 on the CPU, neither carrying hooks."""
    return (
        _fusable_conv(conv)
        and type(bn) is nn.BatchNorm2d
        and bn.running_mean is not None
        and bn.running_var is not None
        and conv.out_channels == bn.num_features
        and not _has_hooks(conv)
        and not _has_hooks(bn)
        and _plain_float32_cpu(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    )


def _unfolded_pairs(model: nn.Module, block_type: type) -> Optional[list[tuple[nn.Conv2d, nn.BatchNorm2d]]]:
    """Every conv -> BN pair of ``model`` when its trunk can run fused exactly as written, else ``None``.

    The trunk's own modules (stem conv/BN/ReLU, stages, blocks and their convs, BNs and ReLUs, the
    ``downsample`` shortcut) must be the exact types the fused trunk reproduces and carry no hooks,
    since their ``forward`` is not called. ``maxpool``, ``avgpool``, squeeze-excitation and ``fc``
    are called as they are, so those may be anything.
    """
    if type(model.relu) is not nn.ReLU or _has_hooks(model.relu):
        return None
    for name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(model, name)
        if type(layer) is not nn.Sequential or _has_hooks(layer):
            return None
        for block in layer:
            if type(block) is not block_type or _has_hooks(block) or _has_hooks(block.relu):
                return None
            down = block.downsample
            if down is not None and (type(down) is not nn.Sequential or _has_hooks(down)):
                return None
    pairs = _trunk_pairs(model)
    if pairs is None or not all(_bn_pair(conv, norm) for conv, norm in pairs):
        return None
    return pairs


class _FoldBuffers:
    """Reusable storage for one model's folded weights, one set per concurrent call.

    Folding into fresh tensors on every call costs about 8x more than folding into reused ones
    (page faults of 100 MB of new memory); a set is borrowed for the duration of a call, so
    threads calling the same model concurrently never share one.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: Optional[tuple] = None
        self.free: list[list[torch.Tensor]] = []

    @contextlib.contextmanager
    def borrow(self, pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]]) -> Iterator[list[torch.Tensor]]:
        key = tuple((id(conv), tuple(conv.weight.shape)) for conv, _ in pairs)
        with self.lock:
            if key != self.key:
                self.key, self.free = key, []
            buffers = self.free.pop() if self.free else None
        if buffers is None:
            with torch.inference_mode(False):  # normal tensors: writable in and out of inference mode
                buffers = [
                    torch.empty(conv.weight.shape, dtype=torch.float32, memory_format=torch.channels_last)
                    for conv, _ in pairs
                ]
        try:
            yield buffers
        finally:
            with self.lock:
                if key == self.key:
                    self.free.append(buffers)


_FOLD_BUFFERS: "weakref.WeakKeyDictionary[nn.Module, _FoldBuffers]" = weakref.WeakKeyDictionary()
_FOLD_BUFFERS_LOCK = threading.Lock()


def _fold_into(
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]], buffers: list[torch.Tensor]
) -> dict[nn.Conv2d, "tuple[torch.Tensor, torch.Tensor]"]:
    """BN-folded (weight, bias) of every pair, the weights written into ``buffers`` (float32)."""
    folded = {}
    for (conv, bn), buffer in zip(pairs, buffers):
        scale, bias = _bn_scale_bias(conv, bn, torch.float32)
        torch.mul(conv.weight, scale.reshape(-1, 1, 1, 1), out=buffer)
        folded[conv] = (buffer, bias)
    return folded


def _autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _being_transformed() -> bool:
    """Tracing, scripting, compiling, exporting, or a torch function / dispatch mode is active."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    onnx = sys.modules.get("torch.onnx")  # not imported: no export can be running (and importing it costs)
    if onnx is not None and onnx.is_in_onnx_export():
        return True
    if torch.compiler.is_compiling():
        return True
    if torch._C._len_torch_function_stack() > 0:
        return True
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is not None


@functools.lru_cache(maxsize=None)
def fused_kernels_work() -> bool:
    """Whether this torch's oneDNN fused convolutions exist and agree with ``F.conv2d`` (checked once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 9, 9, generator=generator).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=4)
    weight = conv.weight.detach().contiguous(memory_format=torch.channels_last)
    bias = conv.bias.detach()
    try:
        with torch.no_grad():
            expected = nn.functional.conv2d(x, weight, bias, 2, 1, 1, 4)
            got = _conv(x, conv, weight, bias, relu=True)
            added = _conv_add_relu(x, expected, conv, weight, bias)
        return torch.allclose(got, expected.relu(), atol=1e-5) and torch.allclose(
            added, (2 * expected).relu(), atol=1e-5
        )
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


def eval_features(model: nn.Module, x: torch.Tensor, block_type: type) -> Optional[torch.Tensor]:
    """``model.forward_features(x)`` computed BN-folded and fused, or ``None`` when that does not apply.

    This is what makes the plain model fast when used for inference: in eval mode, with autograd
    off (``torch.no_grad()`` / ``torch.inference_mode()``), for a float32 CPU batch of at least
    :data:`EVAL_MIN_BATCH` images, the BatchNorms are folded into the convolution weights on every
    call (into reused buffers, so there is no cache that could go stale: changed weights or
    statistics are always used) and the trunk runs channels-last with ReLU and residual adds fused
    into oneDNN convolutions, in slices of :data:`CPU_MICRO_BATCH` images. The pooled features equal
    the layer-by-layer computation within float32 rounding (logits within 1e-4).
    Memory: one float32 copy of the convolution weights per concurrent call (94 MB for ResNet-50),
    kept for reuse while the model exists.

    Returns ``None`` (the caller runs its layers one by one) in training mode, with autograd on,
    under tracing / scripting / ``torch.compile`` / ONNX export / torch function or dispatch modes /
    CPU autocast, for other devices, dtypes or batch shapes, when a trunk module has hooks or is not
    the exact type the fused trunk reproduces, and when this torch has no working fused kernels.
    """
    if model.training or torch.is_grad_enabled() or type(x) is not torch.Tensor or _being_transformed():
        return None
    if x.dim() != 4 or x.shape[0] < EVAL_MIN_BATCH or not _plain_float32_cpu(x):
        return None
    if _autocast_enabled() or not fused_kernels_work():
        return None
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return None
    pairs = _unfolded_pairs(model, block_type)
    if pairs is None or x.shape[1] != model.conv1.in_channels:
        return None
    with _FOLD_BUFFERS_LOCK:
        pool = _FOLD_BUFFERS.get(model)
        if pool is None:
            pool = _FOLD_BUFFERS[model] = _FoldBuffers()
    x = x.contiguous(memory_format=torch.channels_last)
    with pool.borrow(pairs) as buffers:
        folded = _fold_into(pairs, buffers)
        parts = [
            torch.flatten(model.avgpool(_fused_trunk(model, part, folded.__getitem__)), 1)
            for part in x.split(CPU_MICRO_BATCH)
        ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _Features(nn.Module):
    """``model.forward_features`` as a module (the part that runs in reduced precision)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _Pipeline(nn.Module):
    """Cast + layout + features (+ float32 head): the pure computation that is compiled or graphed."""

    def __init__(self, features: nn.Module, head: Optional[nn.Module], dtype: torch.dtype, layout: str) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.dtype = dtype
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.features(x).float()
        if self.head is not None:
            y = self.head(y)
        return y


class _CudaGraphs:
    """Replay ``fn`` as one CUDA graph per input shape (captured on first sight of the shape)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], warmup: int = 3) -> None:
        self.fn = fn
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self.graphs.get(key)
        if entry is None:
            static_in = x.clone()
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):  # cuDNN autotuning and allocations happen outside capture
                    self.fn(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(static_in)
            entry = self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


class InferenceModel(nn.Module):
    """An inference-only model made by :func:`optimize_for_inference`.

    Call it like the original model with a float32 NCHW batch (on any device; it is moved to
    :attr:`device`); it returns float32 logits on :attr:`device`, computed without autograd. The
    attributes say how it runs: :attr:`device`, :attr:`dtype` (compute dtype), :attr:`layout`
    (``"channels_last"`` or ``"contiguous"``), :attr:`fused` (oneDNN conv epilogue fusion),
    :attr:`compiled`, :attr:`cuda_graphs`, :attr:`micro_batch` (larger batches are run in slices of
    this many images, whose activations stay in the CPU caches; ``None``: whole batches).
    It is fixed to its device and dtype: do not ``.to()`` it, build another one instead.
    """

    def __init__(
        self,
        pipeline: _Pipeline,
        *,
        device: torch.device,
        compiled: bool,
        cuda_graphs: bool,
        micro_batch: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.micro_batch = micro_batch
        self.device = device
        self.dtype = pipeline.dtype
        self.layout = pipeline.layout
        self.fused = isinstance(pipeline.features, _FusedFeatures)
        self.compiled = compiled
        self.cuda_graphs = cuda_graphs
        run: Callable[[torch.Tensor], torch.Tensor] = pipeline
        if compiled:
            if device.type == "cpu":
                # Freezing folds the weights into the graph as constants and prepacks them for oneDNN.
                run = torch.compile(pipeline, options={"freezing": True})
            elif cuda_graphs:
                run = torch.compile(pipeline, mode="reduce-overhead")
            else:
                run = torch.compile(pipeline)
        elif cuda_graphs:
            run = _CudaGraphs(pipeline)
        self._run = run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = x.to(self.device, non_blocking=True)
            if self.micro_batch is not None and x.shape[0] > self.micro_batch:
                return torch.cat([self._call(part) for part in x.split(self.micro_batch)])
            return self._call(x)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run(x)
        if self.compiled and self.cuda_graphs:
            out = out.clone()  # cudagraph-tree outputs are overwritten by the next replay
        return out

    def extra_repr(self) -> str:
        return (
            f"device={self.device}, dtype={self.dtype}, layout={self.layout!r}, fused={self.fused}, "
            f"compiled={self.compiled}, cuda_graphs={self.cuda_graphs}, micro_batch={self.micro_batch}"
        )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def optimize_for_inference(
    model: nn.Module,
    *,
    device: Union[str, torch.device, None] = None,
    dtype: Union[DtypeName, torch.dtype] = "float32",
    compile: bool = False,  # noqa: A002 - the natural name, as in torch.compile
    cuda_graphs: bool = False,
    fold_bn: bool = True,
    channels_last: bool = True,
    fuse: Optional[bool] = None,
    micro_batch: Union[int, Literal["auto"], None] = "auto",
) -> InferenceModel:
    """Return a fast inference-only version of ``model`` (which is left unchanged).

    The returned :class:`InferenceModel` accepts a float32 NCHW batch and returns float32 logits, like
    the model in eval mode under ``no_grad``; inside it runs:

    * BatchNorm folded into the convolutions (``fold_bn``, :func:`fold_batchnorm`);
    * channels-last activations and weights (``channels_last``);
    * on CPU, ReLU and the residual add fused into the convolutions as oneDNN post-ops (``fuse``;
      ``None`` = whenever possible: CPU, ``fold_bn``, no ``compile``, a ResNet of this family or
      torchvision's, and the fused kernels exist for the dtype on this CPU);
    * the compute ``dtype``: ``"float32"`` by default, so the same call gives the same numbers on every
      machine; reduced precision is asked for: ``"auto"`` = float16 on CUDA, bfloat16 on CPUs with native
      BF16 instructions (:func:`cpu_supports_bf16`), float32 otherwise; or ``"bfloat16"``, ``"float16"``
      explicitly. Weights and activations are converted once (no per-call autocast
      casts); the classifier ``fc`` and the returned logits stay float32;
    * ``compile=True``: ``torch.compile`` of the folded model (CPU: inductor with weight freezing, which
      does its own fusions; CUDA: default mode, or ``reduce-overhead`` with ``cuda_graphs``). The first
      call per input shape compiles (30-60 s for ResNet-50 on 2 CPU cores);
    * ``cuda_graphs=True`` (CUDA only): each input shape is captured once as a CUDA graph and replayed,
      removing the per-layer launch overhead that dominates at small batches;
    * ``micro_batch``: batches larger than this run as slices of this size (each image's result is
      independent of the others in the batch, so the logits are the same). ``"auto"`` =
      :data:`CPU_MICRO_BATCH` on CPU without ``compile`` (ResNet-50 activations of 8 images stay in a
      32 MB L3 cache: about 1.1x the throughput of whole batches of 32 on 2 cores), ``None`` elsewhere.

    Args:
        model: a model of this repository's family (or any ``nn.Module`` taking NCHW images; the
            ResNet-specific fusions then do not apply).
        device: where to run; default the model's device.

    Accuracy: float32 variants are within 1e-4 of the model's logits; bfloat16/float16 keep the
    top-1 class and top-5 set on the parity fixtures and sample photos, with logit error at most
    :data:`REDUCED_PRECISION_TOLERANCE` times the largest logit (measured figures: benchmarks/README.md).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={str(device)!r} was asked for but CUDA is not available here; use device='cpu'")
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a CUDA device, not {str(device)!r}")
    compute_dtype = resolve_dtype(dtype, device)
    if micro_batch == "auto":
        micro_batch = CPU_MICRO_BATCH if device.type == "cpu" and not compile else None
    elif micro_batch is not None and (not isinstance(micro_batch, int) or micro_batch < 1):
        raise ValueError(f"micro_batch must be 'auto', None or a positive integer, not {micro_batch!r}")

    model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    if hasattr(model, "fast_inference"):
        model.fast_inference = False  # this copy runs as the options below say, not by its own eval path
    model.requires_grad_(False)
    model.to(device=device, dtype=compute_dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    layout = "channels_last" if channels_last else "contiguous"
    head: Optional[nn.Module] = None
    if callable(getattr(model, "forward_features", None)) and isinstance(getattr(model, "fc", None), nn.Linear):
        head = model.fc.float()  # the classifier and the logits stay float32

    can_fuse = (
        device.type == "cpu" and fold_bn and not compile and torch.backends.mkldnn.is_available()
        and head is not None and _is_folded_resnet(model)
    )
    if fuse and not can_fuse:
        raise ValueError(
            "fuse=True needs a CPU device, fold_bn=True, compile=False, a torch built with oneDNN and a "
            "ResNet of this family (or torchvision's)"
        )
    if fuse or (fuse is None and can_fuse):
        pipeline = _try_fused(model, head, compute_dtype, layout, strict=bool(fuse))
        if pipeline is not None:
            return InferenceModel(pipeline, device=device, compiled=False, cuda_graphs=False, micro_batch=micro_batch)

    features: nn.Module = model if head is None else _Features(model)
    pipeline = _Pipeline(features, head, compute_dtype, layout)
    return InferenceModel(
        pipeline, device=device, compiled=compile, cuda_graphs=cuda_graphs, micro_batch=micro_batch
    )


def _try_fused(
    model: nn.Module, head: nn.Module, dtype: torch.dtype, layout: str, *, strict: bool
) -> Optional[_Pipeline]:
    """The fused pipeline, or ``None`` when this torch / CPU has no fused kernel for it (checked on a probe)."""
    dense = _Pipeline(_Features(model), head, dtype, layout)
    probe = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    try:
        fused = _Pipeline(_FusedFeatures(model), head, dtype, layout)
        with torch.no_grad():
            expected, got = dense(probe), fused(probe)
        tolerance = 1e-4 if dtype == torch.float32 else 0.05
        if not torch.allclose(got, expected, rtol=tolerance, atol=tolerance):
            raise RuntimeError(
                f"fused probe differs from the unfused model by {(got - expected).abs().max().item():.3g}"
            )
    except (RuntimeError, ValueError, NotImplementedError, AttributeError) as error:
        if strict:
            raise ValueError(f"this model cannot run with fused convolutions here: {error}") from error
        return None
    return fused
