"""The model's own eval fast path: BatchNorm folded on every call, convolutions fused (CPU float32).

:class:`resnet.model.ResNet` hands each eval-mode, no-grad forward to :func:`eval_features`; it runs
the trunk fused (:mod:`resnet.trunk`) when that computes exactly what the layers would, and returns
``None`` (the caller runs its layers one by one) whenever it cannot tell. Every torch API it depends on
that is not public is looked up with a fallback: when one is missing, the answer is "cannot tell".
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from typing import Iterator, Optional

import torch
from torch import nn

from . import onednn, trunk
from .folding import fold_into, fusable_conv, trunk_pairs

__all__ = ["EVAL_BUFFER_SETS", "EVAL_MIN_BATCH", "eval_features"]

#: Smallest batch for which :func:`eval_features` runs: below it the per-call folding (about 13 ms for
#: ResNet-50 on 2 cores) costs more than the fused convolutions save, so small batches run unchanged.
EVAL_MIN_BATCH = 2

#: Sets of folded weights a model keeps between calls for reuse (one set: a float32 copy of its conv
#: weights, 94 MB for ResNet-50, 168 MB for (SE-)ResNeXt-101). A call beyond this many at the same time
#: folds into a temporary set, freed when it returns.
EVAL_BUFFER_SETS = 2


def eval_features(model: nn.Module, x: torch.Tensor, block_type: type) -> Optional[torch.Tensor]:
    """``model.forward_features(x)`` computed BN-folded and fused, or ``None`` when that does not apply.

    This is what makes the plain model fast when used for inference: in eval mode, with autograd
    off (``torch.no_grad()`` / ``torch.inference_mode()``), for a float32 CPU batch of at least
    :data:`EVAL_MIN_BATCH` images, the BatchNorms are folded into the convolution weights on every
    call (into reused buffers, so there is no cache that could go stale: changed weights or
    statistics are always used) and the trunk runs channels-last with ReLU and residual adds fused
    into oneDNN convolutions, in slices of :data:`resnet.trunk.CPU_MICRO_BATCH` images. The pooled
    features equal the layer-by-layer computation within float32 rounding (logits within 1e-4).

    Memory: a call folds into one float32 copy of the convolution weights (94 MB for ResNet-50). A
    model keeps at most :data:`EVAL_BUFFER_SETS` such sets for reuse while it exists; more concurrent
    calls fold into temporary sets that are freed when they return.

    Returns ``None`` (the caller runs its layers one by one) in training mode, with autograd on,
    under tracing (and ``torch.jit.trace``'s check of its trace) / scripting / ``torch.compile`` /
    ONNX export / ``torch.func`` transforms such as ``vmap`` / torch function or dispatch modes
    (FLOP counters, fake tensors) / CPU autocast, for other devices, dtypes or batch shapes, when a
    trunk module has hooks or is not the exact type the fused trunk reproduces, when this torch has
    no working fused kernels (or ``RESNET_FUSED_KERNELS=0``), and when a torch internal it checks
    cannot be found.
    """
    if model.training or torch.is_grad_enabled() or type(x) is not torch.Tensor or _being_transformed():
        return None
    if x.dim() != 4 or x.shape[0] < EVAL_MIN_BATCH or not _plain_float32_cpu(x):
        return None
    if _autocast_enabled() or _global_hooks_set() or not onednn.fused_kernels_work():
        return None
    pairs = _unfolded_pairs(model, block_type)
    if pairs is None or x.shape[1] != model.conv1.in_channels or _in_trace_check():
        return None
    with _FOLD_BUFFERS_LOCK:
        pool = _FOLD_BUFFERS.get(model)
        if pool is None:
            pool = _FOLD_BUFFERS[model] = _FoldBuffers()
    x = x.contiguous(memory_format=torch.channels_last)
    with pool.borrow(pairs) as buffers:
        folded = fold_into(pairs, buffers)
        return trunk.in_slices(lambda part: trunk.fused_features(model, part, folded.__getitem__), x,
                               trunk.CPU_MICRO_BATCH)


# --------------------------------------------------------------------------- reused folding buffers


class _FoldBuffers:
    """Reusable storage for one model's folded weights: at most :data:`EVAL_BUFFER_SETS` sets kept.

    Folding into fresh tensors on every call costs about 8x more than folding into reused ones
    (page faults of 100 MB of new memory); a set is borrowed for the duration of a call, so threads
    calling the same model concurrently never share one.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: Optional[tuple] = None
        self.free: list[list[torch.Tensor]] = []

    @contextlib.contextmanager
    def borrow(self, pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]]) -> Iterator[list[torch.Tensor]]:
        """A set of buffers shaped like the convs' weights, this call's alone until it returns."""
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
                if key == self.key and len(self.free) < EVAL_BUFFER_SETS:
                    self.free.append(buffers)


_FOLD_BUFFERS: "weakref.WeakKeyDictionary[nn.Module, _FoldBuffers]" = weakref.WeakKeyDictionary()
_FOLD_BUFFERS_LOCK = threading.Lock()


# --------------------------------------------------------------------------- may the trunk run fused?


def _plain_float32_cpu(*tensors: Optional[torch.Tensor]) -> bool:
    return all(
        t is None or (t.dtype is torch.float32 and t.device.type == "cpu" and t.layout is torch.strided)
        for t in tensors
    )


#: The per-module hook registries of ``nn.Module`` (private attributes; a missing one counts as a hook).
_HOOK_REGISTRIES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
#: The global ones, in ``torch.nn.modules.module`` (``register_module_forward_hook`` and its pre-hook).
_GLOBAL_HOOK_REGISTRIES = ("_global_forward_hooks", "_global_forward_pre_hooks")


def _has_hooks(module: nn.Module) -> bool:
    """``module`` has hooks, or this torch keeps them where we cannot see."""
    for name in _HOOK_REGISTRIES:
        hooks = getattr(module, name, None)
        if hooks is None or hooks:
            return True
    return False


def _global_hooks_set() -> bool:
    """A global module (pre-)forward hook is registered, or this torch keeps them where we cannot see."""
    registry = sys.modules.get("torch.nn.modules.module")
    for name in _GLOBAL_HOOK_REGISTRIES:
        hooks = getattr(registry, name, None)
        if hooks is None or hooks:
            return True
    return False


def _bn_pair(conv: object, bn: object) -> bool:
    """``conv -> bn`` foldable in float32 on the CPU, neither carrying hooks."""
    return (
        fusable_conv(conv)
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
    pairs = trunk_pairs(model)
    if pairs is None or not all(_bn_pair(conv, norm) for conv, norm in pairs):
        return None
    return pairs


def _autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _being_transformed() -> bool:
    """Tracing, scripting, compiling, exporting, a ``torch.func`` transform, or a torch function /
    dispatch mode is active, or this torch cannot tell us."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    onnx = sys.modules.get("torch.onnx")  # not imported: no export can be running (and importing it costs)
    if onnx is not None and onnx.is_in_onnx_export():
        return True
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)  # torch >= 2.3
    if is_compiling is None or is_compiling():
        return True
    return _functorch_active() or _torch_function_mode_active() or _dispatch_mode_active()


def _functorch_active() -> bool:
    """A ``torch.func`` transform (vmap, grad, jvp, ...) is running: its interpreter stack is not empty."""
    peek = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)
    return peek is None or peek() is not None


def _torch_function_mode_active() -> bool:
    length = getattr(torch._C, "_len_torch_function_stack", None)
    return length is None or length() > 0


def _dispatch_mode_active() -> bool:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:
        return True
    return _get_current_dispatch_mode() is not None


def _in_trace_check() -> bool:
    """Running inside ``torch.jit.trace``'s check of its trace, which compares the trace with the module
    run again in Python: that run must compute what the trace recorded (the layers), or it warns that
    the outputs differ. Found by the checker's frame on the call stack; where this torch has no such
    checker, or Python no frame access, there is nothing to find (the fast path runs)."""
    checker = getattr(sys.modules.get("torch.jit._trace"), "_check_trace", None)
    code = getattr(getattr(checker, "__wrapped__", checker), "__code__", None)
    frame = sys._getframe(1) if code is not None and hasattr(sys, "_getframe") else None
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False
