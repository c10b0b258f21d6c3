"""oneDNN's fused convolutions: the one place that calls these private torch operators.

``torch.ops.mkldnn._convolution_pointwise`` (a convolution with its ReLU as a fused post-op) and its
``.binary`` overload (convolution, residual add and ReLU in one pass) are the kernels ``torch.compile``
emits for CPU convolutions; ``torch.ops.mkldnn._reorder_convolution_weight`` packs a weight once into
the layout those kernels read (:func:`pack_weight`). They are not public API: a torch build may lack them (no oneDNN), a
release may rename or change them. So nothing calls them before :func:`fused_kernels_work` has
checked, once per process, that they exist and agree with ``F.conv2d``; when it says no, every user
of this module (the model's eval fast path, :func:`resnet.fast.inference.optimize_for_inference`) runs the
plain layers instead.

Set the environment variable ``RESNET_FUSED_KERNELS=0`` to switch the fused kernels off in a process
(the same fallback, e.g. to rule them out when results look wrong, or to run the test suite the way a
torch without them does).
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch
from torch import nn

__all__ = [
    "ENV_VAR", "FusedKernelsUnavailable", "conv", "conv_add_relu", "fused_kernels_work", "pack_weight",
    "prepacking_works",
]

#: Environment variable: ``0`` / ``false`` / ``no`` / ``off`` switch the fused kernels off.
ENV_VAR = "RESNET_FUSED_KERNELS"
_OFF = frozenset({"0", "false", "no", "off"})


class FusedKernelsUnavailable(RuntimeError):
    """This torch has no oneDNN fused convolution operator (or one of another form)."""


def _operator(overload: Optional[str] = None):
    """``torch.ops.mkldnn._convolution_pointwise`` (or one of its overloads), looked up on every use."""
    namespace = getattr(torch.ops, "mkldnn", None)
    try:
        packet = getattr(namespace, "_convolution_pointwise")
        return packet if overload is None else getattr(packet, overload)
    except (AttributeError, RuntimeError) as error:  # RuntimeError: older torch's "No such operator"
        raise FusedKernelsUnavailable(f"this torch has no oneDNN fused convolution ({error})") from None


def conv(
    x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor], *, relu: bool
) -> torch.Tensor:
    """``conv(x)`` with ``weight`` / ``bias`` (then ReLU when ``relu``) in one oneDNN pass.

    The arithmetic per element is that of ``F.conv2d`` followed by ``relu``; the stride, padding,
    dilation and groups come from ``conv``. Raises :class:`FusedKernelsUnavailable` without the
    operator; check :func:`fused_kernels_work` first.
    """
    return _operator()(
        x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "relu" if relu else "none", [], "",
    )


def conv_add_relu(
    x: torch.Tensor, residual: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """``relu(conv(x) + residual)`` in one oneDNN pass (the residual add and ReLU are post-ops)."""
    return _operator("binary")(
        x, residual, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "add", 1.0, "relu", [], "",
    )


def fused_kernels_work() -> bool:
    """Whether the fused convolutions may be used: not switched off by ``RESNET_FUSED_KERNELS=0``, and
    present and in agreement with ``F.conv2d`` in this torch (checked once per process)."""
    if os.environ.get(ENV_VAR, "").strip().lower() in _OFF:
        return False
    return _kernels_agree()


@functools.lru_cache(maxsize=None)
def _kernels_agree() -> bool:
    """Both operators exist and compute what ``F.conv2d`` (+ add, ReLU) computes, on a small strided,
    padded, grouped channels-last convolution. Inputs are deterministic: the check draws no random
    numbers (it would change the caller's random state, and fail inside ``torch.vmap``)."""
    if not torch.backends.mkldnn.is_available():
        return False
    x = torch.arange(2 * 32 * 9 * 9, dtype=torch.float32).reshape(2, 32, 9, 9).mul(0.37).sin()
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.arange(32 * 8 * 3 * 3, dtype=torch.float32).reshape(32, 8, 3, 3).mul(0.61).cos().mul(0.2)
    weight = weight.contiguous(memory_format=torch.channels_last)
    bias = torch.linspace(-0.5, 0.5, 32)
    layer = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=4, device="meta")  # its geometry only: no RNG use
    try:
        with torch.no_grad():
            expected = nn.functional.conv2d(x, weight, bias, 2, 1, 1, 4)
            got = conv(x, layer, weight, bias, relu=True)
            added = conv_add_relu(x, expected, layer, weight, bias)
        return torch.allclose(got, expected.relu(), atol=1e-5) and torch.allclose(
            added, (2 * expected).relu(), atol=1e-5
        )
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False


def _reorder_operator():
    """``torch.ops.mkldnn._reorder_convolution_weight``, or ``None`` where this torch lacks it."""
    namespace = getattr(torch.ops, "mkldnn", None)
    try:
        return getattr(namespace, "_reorder_convolution_weight")
    except (AttributeError, RuntimeError):
        return None


def pack_weight(conv: nn.Conv2d, weight: torch.Tensor, input_shape: "list[int]") -> torch.Tensor:
    """``weight`` reordered once into the blocked layout oneDNN's kernels read for inputs of ``input_shape``.

    The fused convolutions take it in place of the plain weight with the same arithmetic; without it
    oneDNN makes this reorder inside every call (about 100 MB of float32 weights per ResNet-50 pass).
    This is what ``torch.compile``'s weight freezing does for CPU convolutions. Check
    :func:`prepacking_works` first.
    """
    reorder = _reorder_operator()
    if reorder is None:
        raise FusedKernelsUnavailable("this torch cannot pack convolution weights for oneDNN")
    return reorder(weight, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                   list(input_shape))


def prepacking_works() -> bool:
    """Whether convolution weights may be packed once (:func:`pack_weight`): the fused kernels may be used,
    and in this torch a packed weight exists and gives the same result as the plain one (checked once)."""
    return fused_kernels_work() and _packing_agrees()


@functools.lru_cache(maxsize=None)
def _packing_agrees() -> bool:
    x = torch.arange(2 * 16 * 9 * 9, dtype=torch.float32).reshape(2, 16, 9, 9).mul(0.29).sin()
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.arange(16 * 16 * 3 * 3, dtype=torch.float32).reshape(16, 16, 3, 3).mul(0.43).cos().mul(0.2)
    weight = weight.contiguous(memory_format=torch.channels_last)
    bias = torch.linspace(-0.5, 0.5, 16)
    layer = nn.Conv2d(16, 16, 3, padding=1, device="meta")
    try:
        with torch.no_grad():
            packed = pack_weight(layer, weight, list(x.shape))
            return torch.allclose(conv(x, layer, packed, bias, relu=True), conv(x, layer, weight, bias, relu=True),
                                  atol=1e-5)
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False
