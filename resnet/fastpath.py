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

Accuracy of each variant (measured on the parity fixtures and the sample photos, see
``tests/test_fastpath.py`` and ``benchmarks/README.md``): every float32 variant stays within 1e-4 of
the reference logits; bfloat16 / float16 keep the top-1 class and the top-5 set of the float32 model
on those inputs, with a logit error bounded by :data:`REDUCED_PRECISION_TOLERANCE`.
"""

from __future__ import annotations

import copy
import functools
from typing import Callable, Literal, Optional, Union

import torch
from torch import nn

__all__ = [
    "CPU_MICRO_BATCH",
    "REDUCED_PRECISION_TOLERANCE",
    "InferenceModel",
    "cpu_supports_bf16",
    "fold_batchnorm",
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
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
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


class _FusedConv2d(nn.Module):
    """A BN-folded convolution run by oneDNN with its ReLU (and residual add) fused as post-ops.

    ``conv(x)`` then ``relu`` (and ``+ residual`` then ``relu``) are one pass over memory instead of
    two or three; the arithmetic per element is the same. CPU only (the ``mkldnn`` operators that
    ``torch.compile`` emits for CPU), float32, or bfloat16 on CPUs that support it.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"{conv}: only explicit zero padding can be fused")
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.attr = "relu" if relu else "none"
        self.register_buffer("weight", conv.weight.detach())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups, self.attr, [], ""
        )

    def add_relu(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + residual)`` in one pass."""
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            "add", 1.0, "relu", [], "",
        )


class _FusedBottleneck(nn.Module):
    """A BN-folded :class:`~resnet.model.Bottleneck` (or torchvision's) with fused conv epilogues."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1 = _FusedConv2d(block.conv1, relu=True)
        self.conv2 = _FusedConv2d(block.conv2, relu=True)
        self.squeeze: Optional[nn.Module] = getattr(block, "squeeze", None)
        self.conv3 = _FusedConv2d(block.conv3, relu=False)
        self.fused_se = bool(getattr(block, "fused_se", True))
        self.downsample: Optional[nn.Module] = None
        if block.downsample is not None:
            self.downsample = _FusedConv2d(block.downsample[0], relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.squeeze is None:
            return self.conv3.add_relu(out, residual)
        out = self.conv3(out)
        if self.fused_se:
            out = torch.addcmul(residual, out, self.squeeze(out))
        else:
            out = out * self.squeeze(out) + residual
        return torch.relu(out)


class _FusedFeatures(nn.Module):
    """``forward_features`` of a BN-folded ResNet with every conv epilogue fused (CPU)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.stem = _FusedConv2d(model.conv1, relu=True)
        self.maxpool = model.maxpool
        self.blocks = nn.Sequential(
            *[_FusedBottleneck(block) for name in ("layer1", "layer2", "layer3", "layer4")
              for block in getattr(model, name)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.maxpool(self.stem(x)))
        return torch.flatten(x.mean(dim=(2, 3)), 1)


def _is_folded_resnet(model: nn.Module) -> bool:
    """A ResNet laid out like ours / torchvision's whose BatchNorms are all folded (nn.Identity)."""
    needed = ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc")
    if not all(hasattr(model, n) for n in needed) or not isinstance(model.bn1, nn.Identity):
        return False
    for name in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(model, name):
            if not all(isinstance(getattr(block, f"bn{i}", None), nn.Identity) for i in (1, 2, 3)):
                return False
            if not all(isinstance(getattr(block, f"conv{i}", None), nn.Conv2d) for i in (1, 2, 3)):
                return False
            down = getattr(block, "downsample", None)
            if down is not None and not (len(down) == 2 and isinstance(down[1], nn.Identity)):
                return False
    return True


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
    dtype: Union[DtypeName, torch.dtype] = "auto",
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
    * the compute ``dtype``: ``"auto"`` = float16 on CUDA, bfloat16 on CPUs with native BF16
      instructions (:func:`cpu_supports_bf16`), float32 otherwise; or ``"float32"``, ``"bfloat16"``,
      ``"float16"`` explicitly. Weights and activations are converted once (no per-call autocast
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
