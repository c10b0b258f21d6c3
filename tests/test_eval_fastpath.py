"""The model itself in eval mode under no_grad (the documented example) runs BN-folded and fused.

``ResNet.forward_features`` hands eligible calls to ``resnet.fastpath.eval_features``. These tests
check that it (1) computes NVIDIA's reference logits within 1e-4 for every architecture, (2) is
really taken where it should be and not where it must not be (training, autograd, hooks, tracing,
autocast, ...), and (3) never serves stale weights: every call folds the current parameters.
"""

from __future__ import annotations

import copy
import io
import threading
import warnings

import pytest
import torch
from torch import nn

from resnet import fastpath
from resnet.builder import create_model
from support import ARCH_NAMES, REPO_ROOT, load_expected, parity_input

TOLERANCE = 1e-4


@pytest.fixture
def trunk_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes that went through the fused trunk during the test."""
    calls: list[int] = []
    original = fastpath._fused_trunk

    def spy(model, x, params):
        calls.append(x.shape[0])
        return original(model, x, params)

    monkeypatch.setattr(fastpath, "_fused_trunk", spy)
    return calls


@pytest.fixture(scope="module")
def resnet50(ngc_file) -> nn.Module:
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()


def plain_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer-by-layer computation of the same model (fast path switched off)."""
    model.fast_inference = False
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.fast_inference = True


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_documented_use_runs_fused_and_matches_reference(ngc_file, arch: str, trunk_calls: list[int]) -> None:
    model = torch.hub.load(
        str(REPO_ROOT), "nvidia_" + arch.replace("-", "_"), pretrained=False,
        pretrained_from_file=str(ngc_file(arch)), source="local",
    ).eval()
    x = parity_input(arch)
    with torch.no_grad():
        logits = model(x)
    assert trunk_calls == [2], "eval + no_grad on a CPU float32 batch takes the fused path"
    expected = load_expected(arch)["logits"]
    fast_diff = (logits - expected).abs().max().item()
    plain_diff = (plain_logits(model, x) - expected).abs().max().item()
    print(f"{arch}: max abs diff to NVIDIA's logits, eval fast path {fast_diff:.2g}, layer by layer {plain_diff:.2g}")
    assert fast_diff <= TOLERANCE and plain_diff <= TOLERANCE
    assert trunk_calls == [2], "fast_inference=False runs the layers one by one"


def test_hub_keyword_switches_it_off(ngc_file, trunk_calls: list[int]) -> None:
    model = torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", pretrained=False,
                           pretrained_from_file=str(ngc_file("resnet50")), source="local", fast_inference=False)
    assert model.fast_inference is False
    with torch.no_grad():
        logits = model.eval()(parity_input("resnet50"))
    assert trunk_calls == []
    assert (logits - load_expected("resnet50")["logits"]).abs().max().item() <= TOLERANCE


def test_inference_mode_and_no_grad_alternate(resnet50, trunk_calls: list[int]) -> None:
    """Buffers made under inference_mode stay writable under no_grad and the other way round."""
    x = parity_input("resnet50")
    expected = load_expected("resnet50")["logits"]
    with torch.inference_mode():
        first = resnet50(x)
    with torch.no_grad():
        second = resnet50(x)
    with torch.inference_mode():
        third = resnet50(x)
    assert trunk_calls == [2, 2, 2]
    for out in (first, second, third):
        assert (out - expected).abs().max().item() <= TOLERANCE


def test_micro_batches_equal_the_whole_batch(resnet50, trunk_calls: list[int]) -> None:
    x = torch.randn(fastpath.CPU_MICRO_BATCH + 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = resnet50(x)
    assert trunk_calls == [fastpath.CPU_MICRO_BATCH, 3]
    assert (fast - plain_logits(resnet50, x)).abs().max().item() <= TOLERANCE


def test_weight_changes_are_always_seen(ngc_file, trunk_calls: list[int]) -> None:
    """No stale cache: in-place edits (even through .data, which autograd does not track) show at once."""
    model = create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()
    x = parity_input("resnet50")
    with torch.no_grad():
        before = model(x)
    model.layer3[2].conv2.weight.data.mul_(1.5)
    model.layer1[0].bn3.running_var.data.mul_(2.0)
    model.layer4[0].downsample[1].bias.data.add_(0.3)
    with torch.no_grad():
        after = model(x)
    assert len(trunk_calls) == 2
    assert (after - before).abs().max().item() > 100 * TOLERANCE, "the edits change the logits"
    assert (after - plain_logits(model, x)).abs().max().item() <= TOLERANCE
    state = copy.deepcopy(create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).state_dict())
    model.load_state_dict(state)
    with torch.no_grad():
        restored = model(x)
    assert (restored - load_expected("resnet50")["logits"]).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize(
    "case",
    ["training", "grad", "batch-1", "hook-on-layer4", "bfloat16", "autocast", "switched-off", "replaced-bn",
     "global-hook"],
)
def test_falls_back_to_the_layers_where_it_must(resnet50, trunk_calls: list[int], case: str) -> None:
    model = copy.deepcopy(resnet50)
    x = parity_input("resnet50")
    seen: list[tuple] = []
    context = torch.no_grad()
    removable = None
    if case == "training":
        model.train()  # a copy: its BN statistics may change
    elif case == "grad":
        context = torch.enable_grad()
    elif case == "batch-1":
        x = x[:1]
    elif case == "hook-on-layer4":
        removable = model.layer4.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    elif case == "bfloat16":
        model = model.to(torch.bfloat16)
        x = x.to(torch.bfloat16)
    elif case == "autocast":
        context = torch.autocast("cpu", dtype=torch.bfloat16)
    elif case == "switched-off":
        model.fast_inference = False
    elif case == "replaced-bn":
        model.layer2[1].bn2 = nn.Identity()
    elif case == "global-hook":
        removable = nn.modules.module.register_module_forward_hook(lambda mod, inp, out: seen.append(type(mod)))
    try:
        if case == "autocast":
            with torch.no_grad(), context:
                out = model(x)
        else:
            with context:
                out = model(x)
    finally:
        if removable is not None:
            removable.remove()
    assert trunk_calls == [], f"{case}: the fused trunk must not run"
    assert out.shape == (x.shape[0], 1000)
    if case in ("hook-on-layer4", "global-hook"):
        assert seen, "hooks on trunk modules still fire"
    if case in ("batch-1", "switched-off", "hook-on-layer4", "global-hook"):
        expected = load_expected("resnet50")["logits"][: x.shape[0]]
        assert (out - expected).abs().max().item() <= TOLERANCE


def test_hooks_outside_the_trunk_keep_the_fast_path(resnet50, trunk_calls: list[int]) -> None:
    """A hook on ``fc`` (e.g. to grab features) fires and the trunk still runs fused."""
    inputs: list[torch.Tensor] = []
    handle = resnet50.fc.register_forward_hook(lambda mod, inp, out: inputs.append(inp[0]))
    try:
        with torch.no_grad():
            logits = resnet50(parity_input("resnet50"))
    finally:
        handle.remove()
    assert trunk_calls == [2] and inputs[0].shape == (2, 2048)
    assert (logits - load_expected("resnet50")["logits"]).abs().max().item() <= TOLERANCE


def test_trace_script_and_export_see_the_plain_layers(resnet50, trunk_calls: list[int]) -> None:
    x = parity_input("resnet50")
    expected = load_expected("resnet50")["logits"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(resnet50, x, check_trace=False)
        scripted = torch.jit.script(resnet50)
        graph = str(traced.inlined_graph)
        assert "batch_norm" in graph and "mkldnn" not in graph, "the trace records the model's own layers"
        assert (traced(x) - expected).abs().max().item() <= TOLERANCE
        assert (scripted(x) - expected).abs().max().item() <= TOLERANCE
    assert trunk_calls == []


def test_dispatch_modes_see_the_plain_layers(resnet50, trunk_calls: list[int]) -> None:
    """FLOP counters and similar dispatch modes count the model's convolutions, not fused kernels."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        resnet50(parity_input("resnet50"))
    assert trunk_calls == []
    gmac_per_image = counter.get_total_flops() / 2 / 2 / 1e9
    assert 4.0 < gmac_per_image < 4.2, "ResNet-50 is 4.09 GMAC per 224x224 image"


def test_concurrent_calls_on_one_model(resnet50, trunk_calls: list[int]) -> None:
    """Threads sharing a model each borrow their own folded weights and get their own answers."""
    inputs = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    expected = [plain_logits(resnet50, x) for x in inputs]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        try:
            barrier.wait()
            with torch.no_grad():
                for _ in range(3):
                    results[i] = resnet50(inputs[i])
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(trunk_calls) == 3 * len(inputs)
    for i, x in enumerate(inputs):
        assert (results[i] - expected[i]).abs().max().item() <= TOLERANCE


def test_model_still_copies_and_saves_after_fast_calls(resnet50, trunk_calls: list[int]) -> None:
    x = parity_input("resnet50")
    with torch.no_grad():
        resnet50(x)
    clone = copy.deepcopy(resnet50)
    buffer = io.BytesIO()
    torch.save(resnet50.state_dict(), buffer)
    assert set(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)) == set(resnet50.state_dict())
    with torch.no_grad():
        assert (clone(x) - load_expected("resnet50")["logits"]).abs().max().item() <= TOLERANCE
    assert trunk_calls == [2, 2]


def test_broken_fused_kernels_fall_back(resnet50, monkeypatch: pytest.MonkeyPatch, trunk_calls: list[int]) -> None:
    """A torch without working oneDNN fused convolutions runs the layers; nothing else changes."""
    monkeypatch.setattr(fastpath, "fused_kernels_work", lambda: False)
    with torch.no_grad():
        logits = resnet50(parity_input("resnet50"))
    assert trunk_calls == []
    assert (logits - load_expected("resnet50")["logits"]).abs().max().item() <= TOLERANCE


def test_fused_kernel_check_passes_here() -> None:
    """This CPU build has the kernels (so the tests above exercise the fast path, not the fallback)."""
    assert fastpath.fused_kernels_work()
