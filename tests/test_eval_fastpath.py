"""The model itself in eval mode under no_grad (the documented example) runs BN-folded and fused.

``ResNet.forward`` consults the accelerator ``resnet.fast.eval_path`` plugs in (``resnet.fast.eval_path.accelerate``).
These tests check that it (1) computes NVIDIA's reference logits within 1e-4 for every architecture, at any
batch size, (2) is really taken where it should be and not where it must not be (training, autograd, hooks,
tracing, vmap, autocast, ...; every kind of user change: tests/test_fast_vs_plain.py), (3) never serves stale
weights: what it keeps is refolded when a parameter or buffer changes, (4) keeps its folded weights on the
model, one set, freed with it, and (5) that the model itself knows nothing of it (one extension point).

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

from resnet import eval_path, model as model_module, trunk
from resnet.models.builder import create_model
from resnet.fast import forget_folded, fused_kernels_work
from resnet.models.resnet import ACCELERATOR_STATE
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

    def spy(weights, x):
        calls.append(x.shape[0])
        return original(weights, x)

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
@pytest.mark.slow
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


@pytest.mark.slow
def test_hub_keyword_switches_it_off(ngc_file, trunk_calls: list[int]) -> None:
    model = torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", pretrained=False,
                           pretrained_from_file=str(ngc_file("resnet50")), source="local", fast_inference=False)
    assert model.fast_inference is False
    with torch.no_grad():
        logits = model.eval()(parity_input("resnet50"))
    assert trunk_calls == []
    assert max_diff_to_reference(logits) <= TOLERANCE


@pytest.mark.slow
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


@pytest.mark.slow
def test_micro_batches_equal_the_whole_batch(resnet50, trunk_calls: list[int]) -> None:
    x = torch.randn(trunk.CPU_MICRO_BATCH + 3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = resnet50(x)
    assert trunk_calls == fused_calls([trunk.CPU_MICRO_BATCH, 3])
    assert (fast - plain_logits(resnet50, x)).abs().max().item() <= TOLERANCE


@pytest.mark.slow
def test_weight_changes_are_always_seen(ngc_file, trunk_calls: list[int]) -> None:
    """No stale folded weights: edits through torch (in place under no_grad, ``.data`` assigned, load_state_dict)
    are seen by the next call, which folds again."""
    model = create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()
    x = parity_input("resnet50")
    with torch.no_grad():
        before = model(x)
        model.layer3[2].conv2.weight.mul_(1.5)
        model.layer1[0].bn3.running_var.mul_(2.0)
    model.layer4[0].downsample[1].bias.data = model.layer4[0].downsample[1].bias.data + 0.3
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


@needs_fused
@pytest.mark.slow
def test_edits_behind_torch_s_back_need_forget_folded(ngc_file, trunk_calls: list[int]) -> None:
    """In place through ``.data`` or a numpy view, torch's version counters do not move (autograd does not see
    such writes either): the documented remedy, ``forget_folded(model)``, makes the next call fold them in."""
    model = create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()
    x = parity_input("resnet50")
    with torch.no_grad():
        model(x)
    model.layer2[1].conv1.weight.data.mul_(1.5)
    model.layer3[0].bn2.running_mean.numpy()[:] += 0.5
    forget_folded(model)
    assert ACCELERATOR_STATE not in model.__dict__
    with torch.no_grad():
        fast = model(x)
    assert len(trunk_calls) == 2
    assert (fast - plain_logits(model, x)).abs().max().item() <= TOLERANCE
    assert max_diff_to_reference(fast) > 100 * TOLERANCE, "the edits change the logits"


@pytest.mark.parametrize(
    "case",
    ["training", "grad", "hook-on-layer4", "bfloat16", "autocast", "switched-off", "replaced-bn", "global-hook",
     "hook-on-fc", "no-accelerator"],
)
@pytest.mark.slow
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
    elif case == "hook-on-fc":
        removable = model.fc.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    elif case == "no-accelerator":
        removable = Unplugged(model_module.set_inference_accelerator(None))
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
    if case in ("hook-on-layer4", "global-hook", "hook-on-fc"):
        assert seen, "the hooks fire"
    if case in ("switched-off", "hook-on-layer4", "global-hook", "hook-on-fc", "no-accelerator"):
        assert max_diff_to_reference(out) <= TOLERANCE


class Unplugged:
    """Puts the accelerator back (``remove()``, like a hook handle)."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator

    def remove(self) -> None:
        model_module.set_inference_accelerator(self.accelerator)


@pytest.mark.slow
def test_every_batch_size_runs_fused(resnet50, trunk_calls: list[int]) -> None:
    """One path for every batch size: with the folded weights kept, one image runs fused too."""
    x = parity_input("resnet50")
    with torch.no_grad():
        one = resnet50(x[:1])
        two = resnet50(x)
    assert trunk_calls == fused_calls([1, 2])
    assert max_diff_to_reference(one) <= TOLERANCE and max_diff_to_reference(two) <= TOLERANCE


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_dispatch_modes_see_the_plain_layers(resnet50, trunk_calls: list[int]) -> None:
    """FLOP counters and similar dispatch modes count the model's convolutions, not fused kernels."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        resnet50(parity_input("resnet50"))
    assert trunk_calls == []
    gmac_per_image = counter.get_total_flops() / 2 / 2 / 1e9
    assert 4.0 < gmac_per_image < 4.2, "ResNet-50 is 4.09 GMAC per 224x224 image"


@pytest.mark.slow
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
@pytest.mark.slow
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
@pytest.mark.slow
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
        assert eval_path.accelerate(model, parity_input("resnet50")) is None
    assert trunk_calls == []


@pytest.mark.slow
def test_a_torch_without_the_trace_checker_still_runs_fast(
    resnet50, trunk_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding torch.jit.trace's checker is best effort: without it, ordinary calls are unaffected."""
    monkeypatch.delattr(torch.jit._trace, "_check_trace")
    with torch.no_grad():
        logits = resnet50(parity_input("resnet50"))
    assert trunk_calls == fused_calls([2])
    assert max_diff_to_reference(logits) <= TOLERANCE


@pytest.mark.slow
def test_concurrent_calls_on_two_models_get_their_own_weights(resnet50, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads on two models with different weights: all wait inside the trunk until every other has its
    weights too. Had the models shared folded weights, one model's would be everybody's; each thread must
    still get its own model's answer."""
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

    def after_everyone_folded(weights, x):
        calls.append(x.shape[0])
        all_folded.wait()
        return original(weights, x)

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
@pytest.mark.slow
def test_one_set_of_folded_weights_per_model(ngc_file, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads call a fresh model at once: it folds once (the others wait for that fold), and keeps that
    one set. The weights change while calls are running: the calls that started keep the old set until they
    return, the next call folds the new one, and afterwards only the new set is alive."""
    model = create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()
    callers = 4
    folds: list[weakref.ref] = []
    fold_trunk = eval_path._fold_trunk

    def recording_fold(m):
        folded = fold_trunk(m)
        folds.append(weakref.ref(folded.stem.weight))
        return folded

    inside = threading.Barrier(callers + 1, timeout=120)
    release = threading.Event()
    original = trunk.fused_features

    def held(weights, x):
        if not release.is_set():
            inside.wait()  # every caller is in the trunk, holding its weights
            release.wait(timeout=120)
        return original(weights, x)

    monkeypatch.setattr(eval_path, "_fold_trunk", recording_fold)
    monkeypatch.setattr(trunk, "fused_features", held)
    x = parity_input("resnet50")
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.no_grad():
                results.append(model(x))
        except BaseException as error:  # reported below
            errors.append(error)
            inside.abort()

    threads = [threading.Thread(target=work) for _ in range(callers)]
    for t in threads:
        t.start()
    inside.wait()
    assert len(folds) == 1, "the first caller folded; the others used its weights"
    with torch.no_grad():
        model.layer2[0].conv2.weight.mul_(1.25)  # while the calls are in the trunk
        release.set()
        changed = model(x)
    for t in threads:
        t.join()
    assert not errors and len(results) == callers
    for out in results:
        assert max_diff_to_reference(out) <= TOLERANCE, "calls that started before the edit used the weights then"
    assert len(folds) == 2 and (changed - plain_logits(model, x)).abs().max().item() <= TOLERANCE
    gc.collect()
    assert folds[0]() is None and folds[1]() is not None, "one set kept: the stale one was freed"


@needs_fused
@pytest.mark.slow
def test_folded_weights_belong_to_the_model(ngc_file) -> None:
    """Kept in an attribute of the model: not in its state_dict, copies or pickles, and freed with it."""
    model = create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()
    keys = set(model.state_dict())
    with torch.no_grad():
        model(parity_input("resnet50"))
    folded = eval_path.folded_state(model)
    assert folded is not None and ACCELERATOR_STATE in model.__dict__
    assert 90e6 < folded.nbytes() < 2 * 100e6, "one float32 copy of the conv weights (94 MB), and its packed copy"
    assert set(model.state_dict()) == keys
    assert ACCELERATOR_STATE not in copy.deepcopy(model).__dict__
    buffer = io.BytesIO()
    torch.save(model, buffer)
    assert b"_accelerator_state" not in buffer.getvalue()
    weight = weakref.ref(folded.trunk.stem.weight)
    del model, folded
    gc.collect()
    assert weight() is None


def test_the_model_does_not_import_the_fast_path() -> None:
    """resnet/models/resnet.py imports torch and the architectures' data only; the fast path plugs itself in
    (one extension point)."""
    import ast

    tree = ast.parse((REPO_ROOT / "resnet" / "models" / "resnet.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    own = {name for name in imported if name.startswith("resnet.")}
    assert imported - own <= {"__future__", "dataclasses", "typing", "torch"}, imported
    # A lower layer (the architectures' data, the data layer) only, never resnet.fast.
    assert all(name == "resnet.models.archs" or name.startswith("resnet.data.") for name in own), own
    assert model_module.inference_accelerator() is eval_path.accelerate, "import resnet plugs it in"


@pytest.mark.slow
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
