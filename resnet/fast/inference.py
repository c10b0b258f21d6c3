"""``optimize_for_inference``: a fast inference-only copy of a model (fold once, layout, fuse, precision,
compile, CUDA graphs), wrapped as an :class:`InferenceModel`.

What runs inside: BatchNorm folded once (:mod:`resnet.fast.folding`), channels-last, on CPU the trunk with
fused oneDNN convolutions (:mod:`resnet.fast.trunk`, checked on a probe input before it is used), in the
compute dtype chosen by :func:`resnet.fast.devices.resolve_dtype`, optionally compiled or replayed as CUDA
graphs; large CPU batches run in slices (:func:`resnet.fast.trunk.in_slices`).
"""

from __future__ import annotations

import copy
import importlib
import threading
from typing import Callable, Literal, Optional, Union

import torch
from torch import nn

from resnet.fast import onednn, trunk
from resnet.fast.devices import DtypeName, resolve_dtype
from resnet.fast.eval_path import fusable
from resnet.fast.folding import fold_batchnorm

__all__ = ["REDUCED_PRECISION_TOLERANCE", "InferenceModel", "compile_unavailable", "optimize_for_inference"]

#: Documented bound on the logit error of the reduced-precision variants, relative to the largest
#: float32 logit of the same input: ``max|low - fp32| <= tol * max|fp32|``. Measured for bfloat16 on
#: the parity fixtures and sample photos: 0.36-0.42% for all three architectures (benchmarks/README.md);
#: the bound leaves 5x head-room. float16 has 3 more mantissa bits; its bound is not yet measured on a GPU.
REDUCED_PRECISION_TOLERANCE: dict[torch.dtype, float] = {torch.bfloat16: 0.02, torch.float16: 0.01}


class _FusedFeatures(nn.Module):
    """``forward_features`` of a BN-folded ResNet with every conv epilogue fused (CPU), run by :mod:`resnet.fast.trunk`.

    With ``prepack_batch``, the first input of that many images packs the convolution weights once into
    oneDNN's blocked layout for that input shape (:func:`resnet.fast.trunk.packed`), and later inputs of
    the same shape run on them: the same arithmetic, without oneDNN reordering every weight on every call.
    Inputs of other shapes run on the plain weights. The packed weights are a cache: a copy or a pickle of
    the model leaves them out and packs again when used.
    """

    def __init__(self, model: nn.Module, prepack_batch: Optional[int] = None) -> None:
        super().__init__()
        self.model = model
        self.prepack_batch = prepack_batch
        self._packed: Optional[tuple[tuple[int, ...], trunk.FusedTrunk]] = None
        self._lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prepack_batch is not None and x.shape[0] == self.prepack_batch:
            packed = self._packed or self._pack(tuple(x.shape))
            if packed[0] == tuple(x.shape):
                return trunk.fused_features(packed[1], x)
        return trunk.fused_features(folded_trunk(self.model), x)

    @torch.no_grad()
    def _pack(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], trunk.FusedTrunk]:
        with self._lock:
            if self._packed is None:
                self._packed = (shape, trunk.packed(folded_trunk(self.model), shape))
            return self._packed

    @property
    def packed(self) -> bool:
        """Whether packed weights are in use (after the first input of ``prepack_batch`` images)."""
        return self._packed is not None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_packed"], state["_lock"] = None, None  # opaque oneDNN tensors copy or pickle as nothing
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()


def folded_trunk(model: nn.Module) -> trunk.FusedTrunk:
    """The trunk of a ResNet of this family whose BatchNorms :func:`~resnet.fast.folding.fold_batchnorm` folded into its
    convolutions, as :mod:`resnet.fast.trunk` runs it: the convolutions' own weights and biases."""
    def conv(module: nn.Conv2d) -> trunk.FusedConv:
        return trunk.FusedConv(module.weight, module.bias, tuple(module.kernel_size), tuple(module.stride),
                               tuple(module.padding), tuple(module.dilation), module.groups)

    blocks = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            se = block.squeeze
            blocks.append(trunk.FusedBlock(
                conv(block.conv1), conv(block.conv2), conv(block.conv3),
                None if block.downsample is None else conv(block.downsample[0]),
                None if se is None else trunk.FusedSqueeze(se.squeeze.weight, se.squeeze.bias, se.expand.weight,
                                                           se.expand.bias, se.use_conv),
                block.fused_se,
            ))
    return trunk.FusedTrunk(conv(model.conv1), tuple(blocks))


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
    (``"channels_last"`` or ``"contiguous"``), :attr:`fused` (oneDNN conv epilogue fusion), :attr:`prepacked`
    (convolution weights packed once for oneDNN, for slices of :attr:`micro_batch` images),
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
        self.prepacked = self.fused and pipeline.features.prepack_batch is not None
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
            return trunk.in_slices(self._call, x.to(self.device, non_blocking=True), self.micro_batch)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run(x)
        if self.compiled and self.cuda_graphs:
            out = out.clone()  # cudagraph-tree outputs are overwritten by the next replay
        return out

    def extra_repr(self) -> str:
        return (
            f"device={self.device}, dtype={self.dtype}, layout={self.layout!r}, fused={self.fused}, "
            f"prepacked={self.prepacked}, "
            f"compiled={self.compiled}, cuda_graphs={self.cuda_graphs}, micro_batch={self.micro_batch}"
        )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def compile_unavailable() -> Optional[str]:
    """Why ``torch.compile`` cannot generate code here, or ``None``.

    Its inductor backend imports ``torch.utils.cpp_extension``; torch 2.1's imports ``pkg_resources``, which
    setuptools 82 removed (and a venv may have no setuptools at all), so there it fails at the first call.
    """
    try:
        importlib.import_module("torch.utils.cpp_extension")
    except ImportError as error:
        hint = (" (it imports pkg_resources, which setuptools 82 removed: pip install 'setuptools<82', or use "
                "torch 2.2 or later)" if getattr(error, "name", None) == "pkg_resources" else "")
        return (f"torch.compile's inductor needs torch.utils.cpp_extension, which torch {torch.__version__} cannot "
                f"import here: {type(error).__name__}: {error}{hint}")
    return None


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
    prepack: Optional[bool] = None,
) -> InferenceModel:
    """Return a fast inference-only version of ``model`` (which is left unchanged).

    The returned :class:`InferenceModel` accepts a float32 NCHW batch and returns float32 logits, like
    the model in eval mode under ``no_grad``; inside it runs:

    * BatchNorm folded into the convolutions (``fold_bn``, :func:`resnet.fast.folding.fold_batchnorm`);
    * channels-last activations and weights (``channels_last``);
    * on CPU, ReLU and the residual add fused into the convolutions as oneDNN post-ops (``fuse``;
      ``None`` = whenever possible: CPU, ``fold_bn``, no ``compile``, a ResNet of this family, and
      fused kernels that work in this torch (:func:`resnet.fast.onednn.fused_kernels_work`) and agree with
      the unfused model in this dtype on a probe input; :attr:`InferenceModel.fused` says which ran);
    * the compute ``dtype``: ``"float32"`` by default, so the same call gives the same numbers on every
      machine; reduced precision is asked for: ``"auto"`` = float16 on CUDA, bfloat16 on CPUs with native
      BF16 instructions (:func:`~resnet.fast.devices.cpu_supports_bf16`), float32 otherwise; or ``"bfloat16"``,
      ``"float16"`` explicitly. Weights and activations are converted once (no per-call autocast
      casts); the classifier ``fc`` and the returned logits stay float32;
    * ``compile=True``: ``torch.compile`` of the folded model (CPU: inductor with weight freezing, which
      does its own fusions; CUDA: default mode, or ``reduce-overhead`` with ``cuda_graphs``). The first
      call per input shape compiles (30-60 s for ResNet-50 on 2 CPU cores). Where inductor cannot generate
      code (:func:`compile_unavailable`: torch 2.1 without pkg_resources) a ``RuntimeError`` says so at once;
    * ``cuda_graphs=True`` (CUDA only): each input shape is captured once as a CUDA graph and replayed,
      removing the per-layer launch overhead that dominates at small batches;
    * ``micro_batch``: batches larger than this run as slices of this size (each image's result is
      independent of the others in the batch, so the logits are the same). ``"auto"`` =
      8 (:data:`~resnet.fast.trunk.CPU_MICRO_BATCH`) on CPU without ``compile`` (ResNet-50 activations of 8
      images stay in a 32 MB L3 cache; ``benchmarks/README.md`` has the figures), ``None`` elsewhere;
    * ``prepack`` (fused CPU path with a ``micro_batch``): the convolution weights are packed once into the
      blocked layout oneDNN's kernels read, for the input shape of a full slice, when the first such slice
      arrives (:func:`resnet.fast.onednn.pack_weight`, as ``torch.compile``'s freezing does); without it oneDNN
      reorders every weight on every call. Same logits, faster (figures in ``benchmarks/README.md``). Costs one
      more copy of the convolution weights (98 MB float32 for ResNet-50). Slices of other shapes (a smaller last
      slice, one image) run on the plain weights. ``None`` = whenever this torch can pack
      (:func:`resnet.fast.onednn.prepacking_works`); :attr:`InferenceModel.prepacked` says whether it does.

    Args:
        model: a model of this repository's family (or any ``nn.Module`` taking NCHW images; the
            ResNet-specific fusions then do not apply).
        device: where to run; default the model's device.

    Accuracy: float32 variants are within 1e-4 of the model's logits; bfloat16/float16 keep the
    top-1 class and top-5 set on the parity fixtures and sample photos, with logit error at most
    :data:`REDUCED_PRECISION_TOLERANCE` times the largest logit (measured figures: benchmarks/README.md).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    problem = compile_unavailable() if compile else None
    if problem is not None:
        raise RuntimeError(f"compile=True: {problem}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={str(device)!r} was asked for but CUDA is not available here; use device='cpu'")
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a CUDA device, not {str(device)!r}")
    compute_dtype = resolve_dtype(dtype, device)
    if micro_batch == "auto":
        micro_batch = trunk.CPU_MICRO_BATCH if device.type == "cpu" and not compile else None
    elif micro_batch is not None and (not isinstance(micro_batch, int) or micro_batch < 1):
        raise ValueError(f"micro_batch must be 'auto', None or a positive integer, not {micro_batch!r}")

    as_built = device.type == "cpu" and _fusable_resnet(model)  # judged on the model given, before folding
    model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    if hasattr(model, "fast_inference"):
        model.fast_inference = False  # this copy runs as the options below say, not by its own eval path
    model.requires_grad_(False)
    model.to(device=device)
    has_head = callable(getattr(model, "forward_features", None)) and isinstance(getattr(model, "fc", None), nn.Linear)
    can_fuse = as_built and fold_bn and not compile and has_head and onednn.fused_kernels_work()
    if fuse and not can_fuse:
        raise ValueError(
            "fuse=True needs a CPU device, fold_bn=True, compile=False, a ResNet of this family exactly as built "
            "(float32, no replaced modules, subclasses or hooks) and a torch "
            f"with working oneDNN fused convolutions (not switched off by {onednn.ENV_VAR}=0)"
        )
    use_fused = bool(fuse or (fuse is None and can_fuse))
    reference = _probe_logits(model) if use_fused else None  # float32, before the dtype conversion
    model.to(dtype=compute_dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    layout = "channels_last" if channels_last else "contiguous"
    head: Optional[nn.Module] = model.fc.float() if has_head else None  # the classifier and logits stay float32

    can_pack = use_fused and micro_batch is not None and onednn.prepacking_works()
    if prepack and not can_pack:
        raise ValueError(
            "prepack=True needs the fused CPU path (see fuse), a micro_batch to pack for, and a torch whose oneDNN "
            "can pack convolution weights"
        )
    if use_fused:
        prepack_batch = micro_batch if can_pack and prepack is not False else None
        pipeline = _try_fused(model, head, compute_dtype, layout, reference, prepack_batch, strict=bool(fuse))
        if pipeline is not None:
            return InferenceModel(pipeline, device=device, compiled=False, cuda_graphs=False, micro_batch=micro_batch)

    features: nn.Module = model if head is None else _Features(model)
    pipeline = _Pipeline(features, head, compute_dtype, layout)
    return InferenceModel(
        pipeline, device=device, compiled=compile, cuda_graphs=cuda_graphs, micro_batch=micro_batch
    )


def _fusable_resnet(model: nn.Module) -> bool:
    """``model`` (before folding) is exactly a module tree the fused trunk reproduces, with no hooks or overridden
    methods (:func:`resnet.fast.eval_path.fusable`); its training mode does not matter (the copy runs in eval mode)."""
    return fusable(model, any_mode=True) is None


def _probe_input() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _probe_logits(model: nn.Module) -> torch.Tensor:
    """The float32 logits of ``model`` (layer by layer) on the probe input."""
    with torch.no_grad():
        return model(_probe_input()).float()


def _try_fused(
    model: nn.Module, head: nn.Module, dtype: torch.dtype, layout: str, reference: torch.Tensor,
    prepack_batch: Optional[int], *, strict: bool,
) -> Optional[_Pipeline]:
    """The fused pipeline, or ``None`` when it does not keep the accuracy promised for ``dtype`` here.

    Checked on a probe input against ``reference``, the float32 logits of the same folded model run
    layer by layer: float32 within 1e-4 (absolute and relative); reduced precision within the
    documented bound, :data:`REDUCED_PRECISION_TOLERANCE` times the largest reference logit (so the
    check scales with the logits: weights with logits of 50 round 50 times more than logits of 1).
    """
    try:
        fused = _Pipeline(_FusedFeatures(model, prepack_batch), head, dtype, layout)
        with torch.no_grad():
            got = fused(_probe_input())
        problem = _probe_disagreement(got, reference, dtype)
        if problem is not None:
            raise RuntimeError(problem)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError) as error:
        if strict:
            raise ValueError(f"this model cannot run with fused convolutions here: {error}") from error
        return None
    return fused


def _probe_disagreement(got: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> Optional[str]:
    """Why the fused logits ``got`` miss the float32 ``reference`` by more than ``dtype`` allows (``None``: they
    do not)."""
    error = (got - reference).abs().max().item()
    if dtype == torch.float32:
        if torch.allclose(got, reference, rtol=1e-4, atol=1e-4):
            return None
        return f"fused probe differs from the float32 model by {error:.3g} (bound 1e-4)"
    scale = reference.abs().max().item()
    share = REDUCED_PRECISION_TOLERANCE[dtype]
    if error <= share * scale:  # also false for NaN
        return None
    return (f"fused {str(dtype).replace('torch.', '')} probe differs from the float32 model by {error:.3g}, more "
            f"than {share:.0%} of its largest logit {scale:.3g}")
