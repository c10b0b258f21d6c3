"""The guard around oneDNN's private fused convolutions (resnet/fast/onednn.py) and the fallback behind it.

The operators are replaced by stand-ins computed with ``F.conv2d`` (the independent peer), correct or
deliberately wrong, or hidden altogether, so each branch is tested whatever torch and CPU run the suite.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from resnet import onednn, trunk
from resnet.models.builder import create_model
from resnet.fast import fused_kernels_work, optimize_for_inference
from support import eval_path_can_tell_context, load_expected, parity_input

TOLERANCE = 1e-4


class Namespace:
    """``torch.ops.mkldnn`` with some operators replaced (a value) or hidden (``None``)."""

    def __init__(self, real: object, **replaced: object) -> None:
        self._real = real
        self._replaced = replaced

    def __getattr__(self, name: str) -> object:
        if name in self._replaced:
            value = self._replaced[name]
            if value is None:
                raise AttributeError(f"no operator {name} (hidden by the test)")
            return value
        return getattr(self._real, name)


class FakePointwise:
    """``_convolution_pointwise`` and its ``.binary`` overload computed with ``F.conv2d``.

    ``error``: relative error added to results computed in a dtype of ``wrong_in`` (a wrong kernel);
    ``relu=False``: ignores the ReLU post-op; ``binary=False``: has no ``.binary`` overload.
    """

    def __init__(self, error: float = 0.0, wrong_in: tuple = (), relu: bool = True, binary: bool = True) -> None:
        self.error, self.wrong_in, self.relu, self.has_binary = error, wrong_in, relu, binary

    def _finish(self, y: torch.Tensor, unary: str) -> torch.Tensor:
        if unary == "relu" and self.relu:
            y = y.relu()
        return y * (1 + self.error) if y.dtype in self.wrong_in else y

    def __call__(self, x, weight, bias, padding, stride, dilation, groups, unary, scalars, algorithm):
        return self._finish(F.conv2d(x, weight, bias, stride, padding, dilation, groups), unary)

    def __getattr__(self, name: str) -> object:
        if name == "binary" and self.has_binary:
            def binary(x, other, weight, bias, padding, stride, dilation, groups, op, alpha, unary, scalars, algo):
                assert op == "add"
                return self._finish(F.conv2d(x, weight, bias, stride, padding, dilation, groups) + alpha * other,
                                    unary)
            return binary
        raise AttributeError(name)


@pytest.fixture
def kernels(monkeypatch: pytest.MonkeyPatch):
    """``kernels(op)`` puts ``op`` (``None``: nothing) in place of the fused operator and runs the checks
    afresh; their cached answers are reset before and after the test."""
    monkeypatch.delenv(onednn.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    onednn._kernels_agree.cache_clear()
    onednn._packing_agrees.cache_clear()
    real = torch.ops.mkldnn

    def install(op: object) -> bool:
        monkeypatch.setattr(torch.ops, "mkldnn", Namespace(real, _convolution_pointwise=op))
        onednn._kernels_agree.cache_clear()
        onednn._packing_agrees.cache_clear()  # (packed weights are checked with the operator installed)
        return fused_kernels_work()

    yield install
    onednn._kernels_agree.cache_clear()
    onednn._packing_agrees.cache_clear()


@pytest.fixture
def trunk_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = trunk.fused_features
    monkeypatch.setattr(trunk, "fused_features", lambda weights, x: calls.append(x.shape[0]) or original(weights, x))
    return calls


@pytest.fixture(scope="module")
def resnet50(ngc_file) -> nn.Module:
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()


def test_check_accepts_kernels_that_compute_conv2d(kernels) -> None:
    assert kernels(FakePointwise()) is True


def test_check_leaves_the_random_state_alone(kernels) -> None:
    """The first eval call runs the check: a seeded script draws the same numbers with or without it."""
    state = torch.get_rng_state()
    assert kernels(FakePointwise()) is True
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    "op",
    [None, FakePointwise(binary=False), FakePointwise(relu=False), FakePointwise(0.01, wrong_in=(torch.float32,))],
    ids=["missing", "no-binary-overload", "ignores-relu", "off-by-1%"],
)
def test_check_rejects_missing_or_wrong_kernels(kernels, op: object) -> None:
    assert kernels(op) is False


@pytest.mark.parametrize("value, works", [("0", False), ("off", False), ("false", False), ("1", True), ("", True)])
def test_environment_variable_switches_them_off(kernels, monkeypatch: pytest.MonkeyPatch, value: str,
                                                works: bool) -> None:
    monkeypatch.setenv(onednn.ENV_VAR, value)
    assert kernels(FakePointwise()) is works


def test_calling_a_missing_kernel_says_so(kernels) -> None:
    kernels(None)
    x = torch.ones(1, 2, 3, 3)
    with pytest.raises(onednn.FusedKernelsUnavailable, match="no oneDNN fused convolution"):
        onednn.conv(x, nn.Conv2d(2, 2, 1), torch.ones(2, 2, 1, 1), None, relu=True)


@pytest.mark.parametrize("how", ["hidden-operator", "environment"])
@pytest.mark.slow
def test_without_fused_kernels_everything_runs_the_layers(
    kernels, monkeypatch: pytest.MonkeyPatch, resnet50, trunk_calls: list[int], how: str
) -> None:
    """The model's eval path and optimize_for_inference both fall back to plain layers, same logits."""
    if how == "hidden-operator":
        assert kernels(None) is False
    else:
        monkeypatch.setenv(onednn.ENV_VAR, "0")
    assert fused_kernels_work() is False
    expected = load_expected("resnet50")["logits"]
    with torch.no_grad():
        logits = resnet50(parity_input("resnet50"))
    fast = optimize_for_inference(resnet50)
    assert not fast.fused
    assert (fast(parity_input("resnet50")) - expected).abs().max().item() <= TOLERANCE
    assert trunk_calls == []
    assert (logits - expected).abs().max().item() <= TOLERANCE
    with pytest.raises(ValueError, match="working oneDNN fused convolutions"):
        optimize_for_inference(resnet50, fuse=True)


@pytest.mark.slow
def test_stand_in_kernels_run_the_fused_paths(kernels, resnet50, trunk_calls: list[int]) -> None:
    """With correct stand-ins both fast paths run fused and match the reference: what they compute
    depends on the operators' contract alone (and the tests above really exercise the fallback)."""
    assert kernels(FakePointwise()) is True
    expected = load_expected("resnet50")["logits"]
    model = copy.deepcopy(resnet50)  # no weights folded (and packed) by earlier tests with the real kernels
    with torch.no_grad():
        logits = model(parity_input("resnet50"))
    fast = optimize_for_inference(model)
    assert fast.fused
    assert (fast(parity_input("resnet50")) - expected).abs().max().item() <= TOLERANCE
    assert (logits - expected).abs().max().item() <= TOLERANCE
    eval_path_call = [2] if eval_path_can_tell_context() else []  # torch < 2.3: the eval path runs the layers
    assert trunk_calls == [*eval_path_call, 1, 2], "eval path, optimize_for_inference's probe, its call"


@pytest.mark.slow
def test_bfloat16_probe_rejects_a_kernel_wrong_in_bfloat16(kernels, resnet50) -> None:
    """A kernel right in float32 but 10% off in bfloat16: float32 runs fused, bfloat16 does not (and
    ``fuse=True`` says why)."""
    assert kernels(FakePointwise(0.1, wrong_in=(torch.bfloat16,))) is True
    assert optimize_for_inference(resnet50, dtype="float32").fused
    fast = optimize_for_inference(resnet50, dtype="bfloat16")
    assert fast.dtype == torch.bfloat16 and not fast.fused
    with pytest.raises(ValueError, match="bfloat16 probe differs from the float32 model"):
        optimize_for_inference(resnet50, dtype="bfloat16", fuse=True)
