"""The model itself in eval mode under no_grad (the documented example) runs BN-folded and fused.

``ResNet.forward_features`` hands eligible calls to ``resnet.eval_path.eval_features``. These tests
check that it (1) computes NVIDIA's reference logits within 1e-4 for every architecture, (2) is
really taken where it should be and not where it must not be (training, autograd, hooks, tracing,
vmap, autocast, ...), (3) never serves stale weights: every call folds the current parameters, and
(4) keeps a bounded amount of memory.

Where this torch has no working fused kernels (or ``RESNET_FUSED_KERNELS=0``), or cannot tell the eval
path whether it is being compiled (torch < 2.3), the fallback runs: the same tests then check that the
layers run and give the same logits; tests about the fused path itself are skipped.
"""

from __future__ import annotations

import copy
import gc
import io
import threading
import warnings
import weakref

import pytest
import torch
from torch import nn

from resnet import eval_path, trunk
from resnet.builder import create_model
from resnet.fastpath import fused_kernels_work
from resnet.model import Bottleneck
from support import ARCH_NAMES, REPO_ROOT, eval_path_can_tell_context, load_expected, parity_input

TOLERANCE = 1e-4
#: Whether the fast path can run here at all; tests expect the fused trunk only then.
FUSED = fused_kernels_work() and eval_path_can_tell_context()
needs_fused = pytest.mark.skipif(
    not FUSED, reason="no working oneDNN fused kernels in this torch (or RESNET_FUSED_KERNELS=0), or no "
                      "torch.compiler.is_compiling (torch 2.3) to tell a compile from an eval call: the layers run"
)


def fused_calls(calls: list[int]) -> list[int]:
    """The trunk calls expected: ``calls`` where the fused kernels work, none where they do not."""
    return calls if FUSED else []


@pytest.fixture
def trunk_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes that went through the fused trunk during the test."""
    calls: list[int] = []
    original = trunk.fused_features

    def spy(model, x, params):
        calls.append(x.shape[0])
        return original(model, x, params)

    monkeypatch.setattr(trunk, "fused_features", spy)
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


def max_diff_to_reference(logits: torch.Tensor) -> float:
    return (logits - load_expected("resnet50")["logits"][: logits.shape[0]]).abs().max().item()


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_documented_use_runs_fused_and_matches_reference(ngc_file, arch: str, trunk_calls: list[int]) -> None:
    model = torch.hub.load(
        str(REPO_ROOT), "nvidia_" + arch.replace("-", "_"), pretrained=False,
        pretrained_from_file=str(ngc_file(arch)), source="local",
    ).eval()
    x = parity_input(arch)
    with torch.no_grad():
        logits = model(x)
    assert trunk_calls == fused_calls([2]), "eval + no_grad on a CPU float32 batch takes the fused path"
    expected = load_expected(arch)["logits"]
    fast_diff = (logits - expected).abs().max().item()
    plain_diff = (plain_logits(model, x) - expected).abs().max().item()
    print(f"{arch}: max abs diff to NVIDIA's logits, eval fast path {fast_diff:.2g}, layer by layer {plain_diff:.2g}")
    assert fast_diff <= TOLERANCE and plain_diff <= TOLERANCE
    assert trunk_calls == fused_calls([2]), "fast_inference=False runs the layers one by one"


def test_hub_keyword_switches_it_off(ngc_file, trunk_calls: list[int]) -> None:
    model = torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", pretrained=False,
                           pretrained_from_file=str(ngc_file("resnet50")), source="local", fast_inference=False)
    assert model.fast_inference is False
    with torch.no_grad():
        logits = model.eval()(parity_input("resnet50"))
    assert trunk_calls == []
    assert max_diff_to_reference(logits) <= TOLERANCE


def test_inference_mode_and_no_grad_alternate(resnet50, trunk_calls: list[int]) -> None:
    """Buffers made under inference_mode stay writable under no_grad and the other way round."""
    x = parity_input("resnet50")
    with torch.inference_mode():
        first = resnet50(x)
    with torch.no_grad():
        second = resnet50(x)
    with torch.inference_mode():
        third = resnet50(x)
    assert trunk_calls == fused_calls([2, 2, 2])
    for out in (first, second, third):
        assert max_diff_to_reference(out) <= TOLERANCE


def test_micro_batches_equal_the_whole_batch(resnet50, trunk_calls: list[int]) -> None:
    x = torch.randn(trunk.CPU_MICRO_BATCH + 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = resnet50(x)
    assert trunk_calls == fused_calls([trunk.CPU_MICRO_BATCH, 3])
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
    assert len(trunk_calls) == len(fused_calls([2, 2]))
    assert (after - before).abs().max().item() > 100 * TOLERANCE, "the edits change the logits"
    assert (after - plain_logits(model, x)).abs().max().item() <= TOLERANCE
    state = copy.deepcopy(create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).state_dict())
    model.load_state_dict(state)
    with torch.no_grad():
        restored = model(x)
    assert max_diff_to_reference(restored) <= TOLERANCE


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
        assert max_diff_to_reference(out) <= TOLERANCE


def test_hooks_outside_the_trunk_keep_the_fast_path(resnet50, trunk_calls: list[int]) -> None:
    """A hook on ``fc`` (e.g. to grab features) fires and the trunk still runs fused."""
    inputs: list[torch.Tensor] = []
    handle = resnet50.fc.register_forward_hook(lambda mod, inp, out: inputs.append(inp[0]))
    try:
        with torch.no_grad():
            logits = resnet50(parity_input("resnet50"))
    finally:
        handle.remove()
    assert trunk_calls == fused_calls([2]) and inputs[0].shape == (2, 2048)
    assert max_diff_to_reference(logits) <= TOLERANCE


def test_trace_script_and_export_see_the_plain_layers(resnet50, trunk_calls: list[int]) -> None:
    x = parity_input("resnet50")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(resnet50, x, check_trace=False)
        scripted = torch.jit.script(resnet50)
        graph = str(traced.inlined_graph)
        assert "batch_norm" in graph and "mkldnn" not in graph, "the trace records the model's own layers"
        assert max_diff_to_reference(traced(x)) <= TOLERANCE
        assert max_diff_to_reference(scripted(x)) <= TOLERANCE
    assert trunk_calls == []


def test_trace_check_compares_the_same_computation(trunk_calls: list[int]) -> None:
    """``torch.jit.trace`` re-runs the module in Python under no_grad to check its trace: that run takes
    the layers too, so no "does not match" warning even with weights whose logits are in the hundreds
    (the fused convolutions round differently, 1e-3 apart on those logits; the check allows 1e-5)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("resnet50").eval()  # Kaiming-initialised: logits up to about 1000
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(model, x)  # check_trace=True, the default
    mismatches = [str(w.message) for w in caught if "does not match" in str(w.message)]
    assert mismatches == []
    assert trunk_calls == [], "neither the trace nor its check ran the fused trunk"
    with torch.no_grad():
        assert (traced(x) - plain_logits(model, x)).abs().max().item() <= TOLERANCE


def test_feature_extraction_sees_torchvision_s_graph(resnet50, trunk_calls: list[int]) -> None:
    """torch.fx traces the plain layers: the trunk's node names are torchvision's ResNet-50's (so
    ``create_feature_extractor`` return nodes carry over; only the shortcut runs first in ours), and
    the extracted logits are the model's."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    def trunk_nodes(model: nn.Module) -> list[str]:
        return [n for n in get_graph_node_names(model.eval())[1] if n.startswith("layer")]

    assert sorted(trunk_nodes(resnet50)) == sorted(trunk_nodes(torchvision.models.resnet50()))
    extractor = create_feature_extractor(resnet50, {"layer3.5.relu_2": "layer3", "fc": "logits"})
    with torch.no_grad():
        out = extractor(parity_input("resnet50"))
    assert out["layer3"].shape == (2, 1024, 14, 14)
    assert max_diff_to_reference(out["logits"]) <= TOLERANCE
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


def test_vmap_runs_the_layers(resnet50, trunk_calls: list[int]) -> None:
    """``torch.vmap(model)`` under no_grad works as for any module: each mapped batch gets the layers."""
    x = torch.randn(3, 2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mapped = torch.vmap(resnet50)(x)
    assert trunk_calls == []
    expected = torch.stack([plain_logits(resnet50, batch) for batch in x])
    assert (mapped - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize(
    "owner, name",
    [
        (torch._C._functorch, "peek_interpreter_stack"),
        (torch._C, "_len_torch_function_stack"),
        (torch.utils._python_dispatch, "_get_current_dispatch_mode"),
        (torch.compiler, "is_compiling"),
    ],
    ids=["functorch-stack", "torch-function-stack", "dispatch-mode", "is-compiling"],
)
def test_a_torch_without_an_internal_it_checks_runs_the_layers(
    resnet50, trunk_calls: list[int], monkeypatch: pytest.MonkeyPatch, owner: object, name: str
) -> None:
    """Each torch API the eval path asks "is anything unusual going on?" may be missing from a torch
    release (private ones especially): it then cannot tell, and runs the layers."""
    monkeypatch.delattr(owner, name, raising=False)  # torch < 2.3 has no torch.compiler.is_compiling
    with torch.no_grad():
        logits = resnet50(parity_input("resnet50"))
    assert trunk_calls == []
    assert max_diff_to_reference(logits) <= TOLERANCE


@pytest.mark.parametrize("registry", ["global", "module"])
def test_hook_registries_it_cannot_see_count_as_hooks(
    resnet50, trunk_calls: list[int], monkeypatch: pytest.MonkeyPatch, registry: str
) -> None:
    """nn.Module keeps hooks in private attributes; where one is missing, the eval path declines.

    Called directly: without these attributes nn.Module itself cannot run a module any more."""
    model = copy.deepcopy(resnet50)
    if registry == "global":
        monkeypatch.delattr(nn.modules.module, "_global_forward_pre_hooks")
    else:
        monkeypatch.delattr(model.layer3[1].conv2, "_forward_hooks")
    with torch.no_grad():
        assert eval_path.eval_features(model, parity_input("resnet50"), Bottleneck) is None
    assert trunk_calls == []


def test_a_torch_without_the_trace_checker_still_runs_fast(
    resnet50, trunk_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding torch.jit.trace's checker is best effort: without it, ordinary calls are unaffected."""
    monkeypatch.delattr(torch.jit._trace, "_check_trace")
    with torch.no_grad():
        logits = resnet50(parity_input("resnet50"))
    assert trunk_calls == fused_calls([2])
    assert max_diff_to_reference(logits) <= TOLERANCE


def test_concurrent_calls_each_fold_their_own_weights(resnet50, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads on two models with different weights: every thread folds, then all wait until every
    other has folded too, and only then run the trunk. Had they shared one set of folded buffers, the
    last fold would be everybody's weights; each must still get its own model's answer."""
    other = copy.deepcopy(resnet50)
    with torch.no_grad():
        for module in other.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.add_(0.05)
                module.weight.mul_(1.2)
    models = [resnet50, other, resnet50, other]
    inputs = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(s)) for s in range(len(models))]
    expected = [plain_logits(m, x) for m, x in zip(models, inputs)]
    assert (plain_logits(other, inputs[0]) - expected[0]).abs().max().item() > 100 * TOLERANCE

    all_folded = threading.Barrier(len(models), timeout=120)
    calls: list[int] = []
    original = trunk.fused_features

    def after_everyone_folded(model, x, params):
        calls.append(x.shape[0])
        all_folded.wait()
        return original(model, x, params)

    monkeypatch.setattr(trunk, "fused_features", after_everyone_folded)
    results: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(models))}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with torch.no_grad():
                for _ in range(2):
                    results[i].append(models[i](inputs[i]))
        except BaseException as error:  # reported below
            errors.append(error)
            all_folded.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == len(fused_calls([2] * 2 * len(models)))
    for i in range(len(models)):
        for out in results[i]:
            assert (out - expected[i]).abs().max().item() <= TOLERANCE, f"thread {i} got another model's weights"


@needs_fused
def test_buffer_pool_is_bounded(ngc_file, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four calls at once need four sets of folded weights; afterwards the model keeps at most
    EVAL_BUFFER_SETS of them, and the others are freed."""
    model = create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()
    callers = 4
    assert callers > eval_path.EVAL_BUFFER_SETS
    sets: list[weakref.ref] = []
    fold_into = eval_path.fold_into

    def recording_fold(pairs, buffers):
        sets.append(weakref.ref(buffers[0]))
        return fold_into(pairs, buffers)

    all_in = threading.Barrier(callers, timeout=120)
    original = trunk.fused_features

    def together(model, x, params):
        all_in.wait()  # every caller holds its set at this point
        return original(model, x, params)

    monkeypatch.setattr(eval_path, "fold_into", recording_fold)
    monkeypatch.setattr(trunk, "fused_features", together)
    x = parity_input("resnet50")
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.no_grad():
                results.append(model(x))
        except BaseException as error:  # reported below
            errors.append(error)
            all_in.abort()

    for _ in range(2):  # a second round reuses the kept sets and allocates only the missing ones
        threads = [threading.Thread(target=work) for _ in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and len(results) == 2 * callers
    assert len(sets) == 2 * callers, "every call folded"
    for out in results:
        assert max_diff_to_reference(out) <= TOLERANCE
    gc.collect()
    alive = {id(ref()) for ref in sets if ref() is not None}
    assert len(alive) == eval_path.EVAL_BUFFER_SETS, "kept: EVAL_BUFFER_SETS sets; the others were freed"
    assert len(eval_path._FOLD_BUFFERS[model].free) == eval_path.EVAL_BUFFER_SETS


def test_model_still_copies_and_saves_after_fast_calls(resnet50, trunk_calls: list[int]) -> None:
    x = parity_input("resnet50")
    with torch.no_grad():
        resnet50(x)
    clone = copy.deepcopy(resnet50)
    buffer = io.BytesIO()
    torch.save(resnet50.state_dict(), buffer)
    assert set(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)) == set(resnet50.state_dict())
    with torch.no_grad():
        assert max_diff_to_reference(clone(x)) <= TOLERANCE
    assert trunk_calls == fused_calls([2, 2])
