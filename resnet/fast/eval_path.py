"""The model's eval fast path: an inference accelerator plugged into :class:`resnet.models.resnet.ResNet`.

Importing this module plugs :func:`accelerate` into the model (:func:`resnet.models.resnet.set_inference_accelerator`;
``import resnet`` does it). For every ``forward`` of a model with ``fast_inference`` it either computes the
logits with BatchNorm folded into the convolutions and ReLU / residual adds fused into oneDNN convolutions
(:mod:`resnet.fast.trunk`), or returns ``None`` and the model's own modules run. It computes only what the modules
would compute, so it declines unless all of this holds, checked on every call:

* the call: eval mode, autograd off (``torch.no_grad()`` / ``torch.inference_mode()``), no tracing, scripting,
  ``torch.compile``, ONNX export, ``torch.func`` transform, torch function or dispatch mode, CPU autocast, nor
  ``torch.jit.trace``'s check of its trace; the fused kernels work (:func:`resnet.fast.onednn.fused_kernels_work`);
* the input: a plain ``torch.Tensor``, float32, CPU, strided, (N, 3, H, W), every value finite (NaN and inf
  take the modules' path, so they propagate exactly as there);
* the model (:func:`exact_structure`): exactly the module tree its :class:`~resnet.models.resnet.ArchConfig` builds (the
  exact classes, no subclass, the same children, block counts, channels, strides, groups, shortcuts and
  squeeze-excitation, one module in one place only), every module in eval mode, no module hooks nor global
  ones (any ``torch.nn.modules.module._global_*hooks*`` registry; one it cannot find counts as a hook), no
  method overridden on an instance or patched on those classes, no parametrization or pruning (both change a
  class or add hooks), parameters and buffers float32 CPU strided ``nn.Parameter`` / ``torch.Tensor``.

Folded weights: kept per model, in the model's :data:`resnet.models.resnet.ACCELERATOR_STATE` attribute (never copied,
pickled or saved; freed with the model): one set of BN-folded float32 channels-last convolution weights (94 MB
for ResNet-50, 168 MB for the ResNeXt-101s) and, where this torch can pack weights for oneDNN
(:func:`resnet.fast.onednn.prepacking_works`), the same packed for the slice shape of one input size (about as
much again): packed for the first call after folding, and again when another input size comes twice in a row.
A call racing a refold keeps the set it started with until it returns. The set is reused while nothing it was
folded from changed: the same module tree and, for every parameter and buffer, the same tensor object, version
counter (bumped by every in-place change torch tracks: optimiser steps, ``load_state_dict``, ``copy_`` under
``no_grad``), data pointer, shape, strides, dtype and device, and the same BatchNorm ``eps``. Writes that
bypass torch's version counters (in place through ``.data``, through a ``.numpy()`` view or other shared
memory) are not seen: call :func:`forget_folded` after them. Every torch API it depends on that is not public
is looked up with a fallback: when one is missing, the answer is "decline".
"""

from __future__ import annotations

import sys
import threading
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, compress
from operator import attrgetter, call, is_, itemgetter, methodcaller
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from resnet.fast import onednn, trunk
from resnet.fast.folding import bn_scale_bias
from resnet.models.resnet import (
    ACCELERATOR_STATE,
    ArchConfig,
    Bottleneck,
    ResNet,
    SqueezeExcitation,
    set_inference_accelerator,
)

__all__ = ["EVAL_BUFFER_SETS", "EVAL_MIN_BATCH", "accelerate", "decide", "eval_features", "exact_structure",
           "folded_state", "forget_folded", "fusable"]

#: Smallest batch the eval path runs: every batch. (Before the folded weights were kept, a call folded them
#: afresh and batches below 2 ran layer by layer; the name is kept for code that reads it.)
EVAL_MIN_BATCH = 1

#: Sets of folded weights a model keeps: one (with its oneDNN-packed copy for one input shape). Calls that
#: race a refold hold the set they started with until they return.
EVAL_BUFFER_SETS = 1


# --------------------------------------------------------------------------- the accelerator


def accelerate(model: ResNet, x: torch.Tensor) -> Optional[torch.Tensor]:
    """``model(x)`` computed BN-folded and fused, or ``None`` when that would not be exactly what the model's
    modules compute (the module docstring lists the conditions). The logits equal the modules' within float32
    rounding (1e-4)."""
    features = _fused_features(model, x)
    if features is None:
        return None
    fc = model.fc
    out = F.linear(features, fc.weight, fc.bias)
    # Finite inputs can still overflow inside; the modules' path then decides where inf and NaN go.
    return out if bool(torch.isfinite(out).all()) else None


def eval_features(model: nn.Module, x: torch.Tensor, block_type: object = None) -> Optional[torch.Tensor]:
    """``model.forward_features(x)`` computed BN-folded and fused, or ``None`` where :func:`accelerate` would
    decline. ``block_type`` is ignored (kept for callers of the earlier signature)."""
    return _fused_features(model, x)


def _fused_features(model: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    folded = decide(model, x)
    if folded is None:
        return None
    x = x.contiguous(memory_format=torch.channels_last)
    first = tuple(x[: trunk.CPU_MICRO_BATCH].shape)
    weights = folded.weights_for(first)
    return trunk.in_slices(
        lambda part: trunk.fused_features(weights if tuple(part.shape) == first else folded.trunk, part),
        x, trunk.CPU_MICRO_BATCH,
    )


def decide(model: nn.Module, x: torch.Tensor) -> Optional["_Folded"]:
    """The guard, run on every call: the model's current folded weights when ``model(x)`` may run fused, else
    ``None``. (Folds when the weights changed; apart from that, its cost is the whole per-call overhead of the
    eval path: ``benchmarks/eval_path.py`` measures it.)"""
    if type(x) is not torch.Tensor or model.training or torch.is_grad_enabled() or not _plain_input(x):
        return None
    if _being_transformed() or _autocast_enabled() or _hooks_anywhere() or not onednn.fused_kernels_work():
        return None
    try:
        folded = _current_fold(model)
    except (RuntimeError, TypeError):  # a tensor without a data pointer (sparse, nested ...), an odd attribute
        return None
    if folded is None or not _all_finite(x) or _in_trace_check():
        return None
    return folded


def _all_finite(x: torch.Tensor) -> bool:
    """Every value of ``x`` is finite: its sum is finite only then (a sum that overflows just declines). Summed by
    numpy, on this thread: a torch reduction would wait for a second core, which costs milliseconds on a busy
    machine."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf, or an overflow: no warning, just "no"
        return bool(np.isfinite(x.detach().resolve_neg().numpy().sum()))


def _plain_input(x: torch.Tensor) -> bool:
    return (x.dtype is torch.float32 and x.device.type == "cpu" and x.layout is torch.strided and x.dim() == 4
            and x.shape[1] == 3 and x.numel() > 0)


def forget_folded(model: nn.Module) -> None:
    """Drop the folded weights kept for ``model`` (freeing their memory); its next eval call folds afresh.

    Needed only after writes torch's version counters do not see: in place through ``.data``
    (``model.conv1.weight.data.mul_(2)``), through a ``.numpy()`` view or other memory shared with a parameter.
    Edits through torch (``load_state_dict``, optimiser steps, ``copy_`` / ``mul_`` under ``torch.no_grad()``,
    assigning a new ``nn.Parameter``, ``.to()``) are seen without it.
    """
    model.__dict__.pop(ACCELERATOR_STATE, None)


def folded_state(model: nn.Module) -> Optional["_Folded"]:
    """The folded weights kept for ``model`` (``None``: none kept), for tests and memory accounting."""
    state = model.__dict__.get(ACCELERATOR_STATE)
    folded = getattr(state, "folded", None)
    return folded if folded is not None and folded.trunk is not None else None


# --------------------------------------------------------------------------- per-model state


@dataclass(eq=False)
class _Folded:
    """What one model's structure and tensors were when folded (:class:`_Snapshot`), the folded trunk (``None``:
    that structure is not one the fused trunk reproduces) and its packed copy for one slice shape."""

    snapshot: "_Snapshot"
    trunk: Optional[trunk.FusedTrunk]
    can_pack: bool = False
    packed: Optional[tuple[tuple[int, ...], trunk.FusedTrunk]] = None
    last_shape: Optional[tuple[int, ...]] = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def weights_for(self, shape: tuple[int, ...]) -> trunk.FusedTrunk:
        """The trunk for slices of ``shape``: packed for it when it is the first shape after folding or the
        second call in a row with it; otherwise the packed trunk of that shape kept, or the plain one."""
        packed, previous = self.packed, self.last_shape
        self.last_shape = shape
        if packed is not None and packed[0] == shape:
            return packed[1]
        if not self.can_pack or (packed is not None and shape != previous):
            return self.trunk
        with self.lock:
            if self.packed is None or self.packed[0] != shape:
                with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, usable in either mode
                    self.packed = (shape, trunk.packed(self.trunk, shape))
            return self.packed[1]

    def nbytes(self) -> int:
        """Bytes of folded (and packed) convolution weights held."""
        trunks = [t for t in (self.trunk, self.packed[1] if self.packed else None) if t is not None]
        return sum(_nbytes(conv.weight) + (_nbytes(conv.bias) if conv.bias is not None else 0)
                   for t in trunks for conv in t.convs())


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()  # (a packed weight: the same count, whatever padding its layout adds)


class _State:
    """Kept in the model's :data:`~resnet.models.resnet.ACCELERATOR_STATE` attribute: its current :class:`_Folded`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.folded: Optional[_Folded] = None


def _current_fold(model: ResNet) -> Optional[_Folded]:
    """The model's folded weights if they are current and the model may run fused now, else ``None``."""
    d = model.__dict__
    state = d.get(ACCELERATOR_STATE)
    if state is None:
        state = d.setdefault(ACCELERATOR_STATE, _State())
    folded = state.folded
    verdict = _CHANGED if folded is None else folded.snapshot.compare(model)
    if verdict is _CHANGED:
        with state.lock:  # one thread folds; the others wait for its result instead of folding too
            folded = state.folded
            verdict = _CHANGED if folded is None else folded.snapshot.compare(model)
            if verdict is _CHANGED:
                state.folded = None  # the stale set is freed before a new one is made
                snapshot = _Snapshot.of(model)
                verdict = snapshot.compare(model)
                if verdict is not _SAME:
                    return None  # a module in training mode, a hook ...: fold when a call can use it
                folded = state.folded = _fold(model, snapshot)
    if verdict is not _SAME or folded.trunk is None:
        return None
    return folded


@torch.no_grad()
def _fold(model: ResNet, snapshot: "_Snapshot") -> _Folded:
    if exact_structure(model) is not None:
        return _Folded(snapshot, None)  # remembered, so that the check is not repeated on every call
    with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, usable in and out of inference mode
        fused = _fold_trunk(model)
    return _Folded(snapshot, fused, can_pack=onednn.prepacking_works())


def _fused_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> trunk.FusedConv:
    """The pair folded: scale and bias in float64 (per channel, cheap), the weight scaled in one float32 pass
    straight into channels-last memory (a float64 copy of every weight would cost ten times the time)."""
    scale, bias = bn_scale_bias(conv, bn, torch.float64)
    weight = torch.empty(conv.weight.shape, dtype=torch.float32, memory_format=torch.channels_last)
    torch.mul(conv.weight, scale.float().reshape(-1, 1, 1, 1), out=weight)
    return trunk.FusedConv(weight, bias.float(), tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding),
                           tuple(conv.dilation), conv.groups)


def _fold_trunk(model: ResNet) -> trunk.FusedTrunk:
    blocks = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            down = block.downsample
            se = block.squeeze
            blocks.append(trunk.FusedBlock(
                _fused_conv(block.conv1, block.bn1), _fused_conv(block.conv2, block.bn2),
                _fused_conv(block.conv3, block.bn3), None if down is None else _fused_conv(down[0], down[1]),
                None if se is None else trunk.FusedSqueeze(se.squeeze.weight, se.squeeze.bias, se.expand.weight,
                                                           se.expand.bias, se.use_conv),
                block.fused_se,
            ))
    return trunk.FusedTrunk(_fused_conv(model.conv1, model.bn1), tuple(blocks))


# --------------------------------------------------------------------------- the snapshot (the cache key)

#: Attributes whose values decide what a module computes (read from its ``__dict__``), per exact class.
#: A change is a change of the model: the structure is checked again and the weights refolded.
_ATTRIBUTES: dict[type, tuple[str, ...]] = {
    ResNet: ("arch",),
    Bottleneck: ("fused_se",),
    SqueezeExcitation: ("use_conv",),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                "padding_mode", "transposed", "output_padding"),
    nn.BatchNorm2d: ("num_features", "eps", "affine", "track_running_stats"),
    nn.Linear: ("in_features", "out_features"),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    nn.AdaptiveAvgPool2d: ("output_size",),
}
_GETTERS = {cls: itemgetter(*names) for cls, names in _ATTRIBUTES.items()}
#: What may differ from the architecture's defaults: it changes the folded values, not the structure.
_FREE_ATTRIBUTES = {nn.BatchNorm2d: ("eps",), Bottleneck: ("fused_se",), ResNet: ("arch",)}

_SAME, _CHANGED, _DECLINE = "same", "changed", "decline"

#: Per-module hook registries of ``nn.Module`` (private attributes; a missing one counts as a hook).
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_hooks_of = itemgetter(*_MODULE_HOOKS)



def _no_attributes(d: dict) -> None:
    return None


def _none() -> None:
    """Stands for the weak reference of a child or tensor slot holding ``None``."""
    return None


def _ref(obj: object) -> Callable[[], object]:
    return _none if obj is None else weakref.ref(obj)


# (The device needs no key: tensors on different devices never share a data pointer.)
_tensor_attributes = attrgetter("_version", "shape", "dtype")
_data_ptr = methodcaller("data_ptr")
_stride = methodcaller("stride")
_modules_of, _parameters_of, _buffers_of = itemgetter("_modules"), itemgetter("_parameters"), itemgetter("_buffers")
_hook_registries = tuple(itemgetter(name) for name in _MODULE_HOOKS)
_training = itemgetter("training")


@dataclass(frozen=True, eq=False)
class _Snapshot:
    """A model's module tree and a key of every tensor in it, flattened: :meth:`compare` tells, without reading a
    value, whether anything the fused trunk was folded from has changed, and whether the model may run fused
    right now (eval mode, no hooks, no overridden methods). Weak references only: the snapshot keeps nothing
    alive. The comparisons run as whole-sequence operations (``map``), which keeps a call's check cheap."""

    modules: tuple[Callable[[], object], ...]  # every module but the model itself (no reference cycle)
    types: tuple[type, ...]  # then, as for every field below, one entry per module, the model first
    getters: tuple[Callable[[dict], object], ...]
    attributes: tuple[object, ...]
    shadowed: tuple[frozenset, ...]
    child_names: tuple[str, ...]  # over all modules in order
    children: tuple[Callable[[], object], ...]
    tensor_counts: tuple[int, ...]  # parameters, then buffers, per module
    tensor_names: tuple[str, ...]  # all parameters, then all buffers
    tensors: tuple[Callable[[], object], ...]
    keyed: tuple[bool, ...]  # which tensors have keys: not None, not num_batches_tracked (unused in eval mode)
    keys: tuple[tuple, tuple, tuple]  # (version, shape, dtype), data pointer, strides of each keyed tensor

    @classmethod
    def of(cls, model: nn.Module) -> "_Snapshot":
        modules = [m for _, m in _walk(model) if m is not None]
        dicts = [m.__dict__ for m in modules]
        getters = tuple(_GETTERS.get(type(m), _no_attributes) for m in modules)
        kids = [d.get("_modules", {}) for d in dicts]
        params, buffers = [d.get("_parameters", {}) for d in dicts], [d.get("_buffers", {}) for d in dicts]
        tensors = [t for p in params for t in p.values()] + [t for b in buffers for t in b.values()]
        names = tuple(name for p in params for name in p) + tuple(name for b in buffers for name in b)
        keyed = tuple(t is not None and name != "num_batches_tracked" for t, name in zip(tensors, names))
        present = list(compress(tensors, keyed))
        return cls(
            tuple(weakref.ref(m) for m in modules[1:]), tuple(map(type, modules)), getters,
            tuple(_attributes(g, d) for g, d in zip(getters, dicts)), tuple(_SHADOWED[type(m)] for m in modules),
            tuple(name for k in kids for name in k), tuple(_ref(c) for k in kids for c in k.values()),
            tuple(map(len, params)) + tuple(map(len, buffers)), names, tuple(map(_ref, tensors)), keyed,
            (tuple(map(_tensor_attributes, present)), tuple(map(_data_ptr, present)), tuple(map(_stride, present))),
        )

    def compare(self, model: nn.Module) -> str:
        """``_SAME``; ``_CHANGED`` (the structure or a tensor changed: fold again); ``_DECLINE`` (unchanged, but
        a module is in training mode, has hooks or an overridden method: run the modules this time)."""
        try:
            modules = [model, *map(call, self.modules)]
            if tuple(map(type, modules)) != self.types:
                return _CHANGED  # (a module that no longer exists is None here)
            dicts = list(map(_dict_of, modules))
            if tuple(map(call, self.getters, dicts)) != self.attributes:
                return _CHANGED
            kids = list(map(_modules_of, dicts))
            if (tuple(chain.from_iterable(kids)) != self.child_names
                    or not all(map(is_, chain.from_iterable(map(dict.values, kids)), map(call, self.children)))):
                return _CHANGED
            params, buffers = list(map(_parameters_of, dicts)), list(map(_buffers_of, dicts))
            if (tuple(map(len, params)) + tuple(map(len, buffers)) != self.tensor_counts
                    or tuple(chain(chain.from_iterable(params), chain.from_iterable(buffers))) != self.tensor_names):
                return _CHANGED
            tensors = list(chain(chain.from_iterable(map(dict.values, params)),
                                 chain.from_iterable(map(dict.values, buffers))))
            if not all(map(is_, tensors, map(call, self.tensors))):
                return _CHANGED
            present = list(compress(tensors, self.keyed))
            versions, pointers, strides = self.keys
            if (tuple(map(_tensor_attributes, present)) != versions or tuple(map(_data_ptr, present)) != pointers
                    or tuple(map(_stride, present)) != strides):
                return _CHANGED
            if (any(map(_training, dicts)) or any(any(map(registry, dicts)) for registry in _hook_registries)
                    or not all(map(frozenset.isdisjoint, self.shadowed, dicts))):
                return _DECLINE
        except KeyError:  # a registry nn.Module should have is missing: count it as a change (and then a hook)
            return _CHANGED
        return _SAME


_MISSING = object()
_dict_of = attrgetter("__dict__")


def _attributes(getter: Callable[[dict], object], d: dict) -> object:
    try:
        return getter(d)
    except KeyError:
        return _MISSING


class _ShadowedNames(dict):
    """``{class: names of its methods}``: an instance attribute of such a name overrides a method."""

    def __missing__(self, cls: type) -> frozenset:
        names = frozenset({name for name in dir(cls) if callable(getattr(cls, name, None))}
                          | {"_compiled_call_impl"})  # set by module.compile(): calls go elsewhere
        self[cls] = names
        return names


_SHADOWED = _ShadowedNames()


def _walk(model: nn.Module, prefix: str = "", seen: Optional[set] = None) -> Iterator[tuple[str, Optional[nn.Module]]]:
    """``(path, module)`` for the model and every module under it, depth first in registration order (a
    child slot set to ``None`` included); a module reached again is listed again, but not entered again (a
    module registered inside itself would otherwise never end)."""
    seen = set() if seen is None else seen
    yield prefix, model
    if id(model) in seen:
        return
    seen.add(id(model))
    for name, child in model.__dict__.get("_modules", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        if child is None:
            yield path, None
        else:
            yield from _walk(child, path, seen)


# --------------------------------------------------------------------------- the structure it reproduces


def exact_structure(model: nn.Module) -> Optional[str]:
    """Why ``model`` is not exactly a module tree the fused trunk reproduces, or ``None`` when it is.

    It must be a :class:`~resnet.models.resnet.ResNet` (exactly, no subclass) with the module tree
    ``ResNet(model.arch, num_classes=model.fc.out_features, trt=...)`` builds: the same classes
    at the same places, the same children, configuration and parameter and buffer shapes (BatchNorm ``eps``
    and ``fused_se`` may differ), no module at two places, and every parameter and buffer an ``nn.Parameter``
    / ``torch.Tensor`` (no subclass), strided on the CPU, float32 (``num_batches_tracked``: int64).
    Whether modules are in eval mode or carry hooks is checked on every call, not here.
    """
    if type(model) is not ResNet:
        return f"{type(model).__name__} is not exactly resnet.models.resnet.ResNet"
    fc = model._modules.get("fc")
    block = getattr(model._modules.get("layer1"), "_modules", {}).get("0")
    arch = model.__dict__.get("arch")
    if type(fc) is not nn.Linear or type(block) is not Bottleneck or not isinstance(arch, ArchConfig):
        return "fc, layer1[0] or arch is not what the architecture builds"
    squeeze = block._modules.get("squeeze")
    try:
        reference = _reference(arch, fc.out_features, type(squeeze) is SqueezeExcitation and bool(squeeze.use_conv))
    except (AttributeError, TypeError, ValueError, RuntimeError) as error:  # an ArchConfig nothing can be built from
        return f"the architecture cannot be built: {error}"
    walked = list(_walk(model))
    seen: set[int] = set()
    if len(walked) != len(reference):
        return f"{len(walked)} modules where the architecture has {len(reference)}"
    for (path, module), (ref_path, ref_cls, ref_attrs, ref_tensors) in zip(walked, reference):
        if module is None or path != ref_path or type(module) is not ref_cls:
            return f"{path or 'the model'} is {type(module).__name__}, not {ref_cls.__name__} as built"
        if id(module) in seen:
            return f"{path} is also used at another place"
        seen.add(id(module))
        if _structure(module) != ref_attrs:
            return f"{path} is configured otherwise than built"
        if not _valid_free_attributes(module):
            return f"{path} has an attribute of an unexpected type"
        tensors = _tensors(module)
        if [(name, shape) for name, shape, _ in tensors] != [(name, shape) for name, shape, _ in ref_tensors]:
            return f"{path} has other parameters or buffers than built"
        for (name, _, t), (_, _, ref_dtype) in zip(tensors, ref_tensors):
            dtype = torch.float32 if ref_dtype is not None and ref_dtype.is_floating_point else ref_dtype
            if t is not None and not _plain_tensor(t, dtype):
                return f"{path}.{name} is not a float32 CPU strided tensor"
    return None


def fusable(model: nn.Module, *, any_mode: bool = False) -> Optional[str]:
    """Why ``model`` cannot run on the fused trunk as it is now, or ``None`` when it can: :func:`exact_structure`,
    no module or global hooks, no method overridden on an instance or patched on a class, and (unless
    ``any_mode``) every module in eval mode. Says nothing about the call (autograd, input, tracing ...)."""
    reason = exact_structure(model)
    if reason is not None:
        return reason
    if _hooks_anywhere():
        return "a global module hook is registered, or a module class has been patched"
    for path, module in _walk(model):
        d = module.__dict__
        try:
            if any(_hooks_of(d)):
                return f"{path or 'the model'} has hooks"
            if not any_mode and d["training"]:
                return f"{path or 'the model'} is in training mode"
        except KeyError:
            return f"{path or 'the model'} lacks a hook registry of nn.Module"
        if not _SHADOWED[type(module)].isdisjoint(d):
            return f"{path or 'the model'} overrides a method on the instance"
    return None


def _structure(module: nn.Module) -> object:
    names = [n for n in _ATTRIBUTES.get(type(module), ()) if n not in _FREE_ATTRIBUTES.get(type(module), ())]
    try:
        return tuple(module.__dict__[n] for n in names)
    except KeyError:
        return _MISSING


def _valid_free_attributes(module: nn.Module) -> bool:
    if type(module) is nn.BatchNorm2d:
        eps = module.__dict__.get("eps")
        return type(eps) in (float, int) and eps >= 0
    return True


def _tensors(module: nn.Module) -> list[tuple[str, Optional[tuple[int, ...]], Optional[torch.Tensor]]]:
    d = module.__dict__
    return [(f"{registry}.{name}", None if t is None else tuple(t.shape), t)
            for registry in ("_parameters", "_buffers") for name, t in d.get(registry, {}).items()]


def _plain_tensor(t: torch.Tensor, dtype: torch.dtype) -> bool:
    expected = nn.Parameter if isinstance(t, nn.Parameter) else torch.Tensor
    return type(t) is expected and t.dtype is dtype and t.device.type == "cpu" and t.layout is torch.strided


@lru_cache(maxsize=16)
def _reference(arch: ArchConfig, num_classes: int, trt: bool) -> tuple:
    """``(path, class, configuration, [(tensor, shape, dtype)])`` of every module of the model these arguments
    build (on the meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        model = ResNet(arch, num_classes=num_classes, trt=trt, fast_inference=False)
    return tuple((path, type(m), _structure(m), [(n, s, None if t is None else t.dtype) for n, s, t in _tensors(m)])
                 for path, m in _walk(model))


# --------------------------------------------------------------------------- may it run fused at all?


#: Global hook registries of ``torch.nn.modules.module`` (``register_module_forward_hook`` and the others). Those
#: named here must exist (else this torch keeps them where we cannot see, which counts as a hook); any other
#: ``_global_*hooks*`` registry found in this torch is checked too.
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def _global_hook_registries() -> tuple[str, ...]:
    found = {name for name in dir(sys.modules.get("torch.nn.modules.module"))
             if name.startswith("_global_") and "hooks" in name}
    return tuple(sorted(found | set(_GLOBAL_HOOKS)))


_GLOBAL_HOOK_REGISTRIES = _global_hook_registries()

#: The methods the modules' forward runs, as they were when this module was imported: a class patched since
#: (``nn.ReLU.forward = ...``) computes something else, so the eval path declines.
_METHODS = tuple(
    (cls, name, getattr(cls, name))
    for cls, names in {
        nn.Module: ("__call__", "_call_impl", "_wrapped_call_impl"),
        ResNet: ("forward", "forward_features", "_accelerated"),
        Bottleneck: ("forward",), SqueezeExcitation: ("forward",), nn.Sequential: ("forward", "__iter__"),
        nn.Conv2d: ("forward", "_conv_forward"), nn.BatchNorm2d: ("forward", "_check_input_dim"),
        nn.ReLU: ("forward",), nn.Sigmoid: ("forward",), nn.MaxPool2d: ("forward",),
        nn.AdaptiveAvgPool2d: ("forward",), nn.Linear: ("forward",),
    }.items()
    for name in names
)


def _hooks_anywhere() -> bool:
    """A global module hook is registered (or a registry is missing), or a module class has been patched."""
    registry = sys.modules.get("torch.nn.modules.module")
    for name in _GLOBAL_HOOK_REGISTRIES:
        hooks = getattr(registry, name, None)
        if hooks is None or hooks:
            return True
    return any(getattr(cls, name, None) is not method for cls, name, method in _METHODS)


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


set_inference_accelerator(accelerate)
