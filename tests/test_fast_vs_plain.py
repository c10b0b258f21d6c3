"""The eval fast path against the model's own modules, after every kind of change a user makes.

A generated list of changes (replaced modules and subclasses, hooks, parametrizations, pruning, weight edits
after a first call, training-mode parts, patched ``forward``s, shared modules, dtypes, inputs, copies ...).
Each is applied to two fresh copies of a model: one with ``fast_inference=True``, one with
``fast_inference=False`` (the modules always run). The model is ResNet-50's module tree at an eighth of its
width (every block, stride and shortcut where ResNet-50 has it; stand-in weights), so that the whole list
runs in seconds; a few changes run on the full ResNet-50 too, and some on a small SE-ResNeXt of the family.
Both must end alike: logits within 1e-4 with NaN
at the same places, or the same exception. The fused trunk's calls are counted: a change it reproduces (a new
weight, another input size ...) must still run fused, and a change it does not reproduce must not, so the
comparison cannot pass merely because the fast path never ran.

The file names only APIs the model has had from the start (``fast_inference``, ``resnet.fast.trunk.fused_features``),
so it also runs against earlier versions of the code.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
import torch.nn.utils.parametrizations as parametrizations
from torch import nn
from torch.nn.utils import parametrize, prune

from resnet import trunk
from resnet.models.builder import create_model
from resnet.fast import fused_kernels_work
from resnet.models.resnet import ArchConfig, Bottleneck, ResNet
from support import eval_path_can_tell_context, load_standin_weights

TOLERANCE = 1e-4
#: Whether the fused trunk can run here at all (kernels present and agreeing, torch >= 2.3).
FUSED = fused_kernels_work() and eval_path_can_tell_context()


# --------------------------------------------------------------------------- models and inputs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models, many short calls: one thread spends no time waiting on the other at every operator (on a
    busy 2-core machine that wait made the file 50x slower). Nothing here depends on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def resnet50(ngc_file) -> nn.Module:
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()


#: ResNet-50's blocks, strides and shortcuts at an eighth of its width.
NARROW = ArchConfig("narrow-resnet50", "ResNet-50 at 1/8 width", 0, (3, 4, 6, 3), (8, 16, 32, 64), expansion=4,
                    stem_width=8)


@pytest.fixture(scope="module")
def narrow() -> nn.Module:
    return load_standin_weights(ResNet(NARROW, num_classes=100), seed=100).eval()


#: A small member of the family with squeeze-excitation and grouped convolutions (SE-ResNeXt-like).
TINY_SE = ArchConfig("tiny-se", "tiny SE-ResNeXt", 0, (1, 1, 2, 1), (8, 16, 16, 32), expansion=4, groups=4,
                     squeeze_excitation=True, se_hidden=4, stem_width=8)


@pytest.fixture(scope="module")
def tiny_se() -> nn.Module:
    return load_standin_weights(ResNet(TINY_SE, num_classes=10), seed=200).eval()


def image_batch(n: int = 2, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def logits(model: nn.Module, x: Optional[torch.Tensor] = None) -> torch.Tensor:
    with torch.no_grad():
        return model(image_batch() if x is None else x)


# --------------------------------------------------------------------------- the changes


@dataclass
class Change:
    """``apply(model)`` changes a fresh model (returning it, or one that replaces it); ``run(model)`` then calls it
    as the user would. ``fused``: whether the fast path must run (it reproduces the change exactly) or must not
    (``None``: either, as long as the results agree). ``raises``: the model itself raises (both ways must raise
    the same); otherwise the change and the call must work."""

    name: str
    apply: Callable[[nn.Module], Optional[nn.Module]]
    fused: Optional[bool]
    run: Callable[[nn.Module], torch.Tensor] = logits
    model: str = "narrow"
    raises: bool = False


def at(path: str) -> Callable[[nn.Module], nn.Module]:
    """A getter of the module at ``path`` (``"layer1.0.conv2"``)."""
    return lambda model: model.get_submodule(path) if path else model


def replace(path: str, make: Callable[[nn.Module], nn.Module]) -> Callable[[nn.Module], None]:
    parent, _, name = path.rpartition(".")

    def apply(model: nn.Module) -> None:
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, name, make(getattr(owner, name)))
    return apply


def seeded(make: Callable[..., nn.Module], *args: object) -> nn.Module:
    """``make(*args)``, drawing the same random numbers for both copies."""
    with torch.random.fork_rng():
        torch.manual_seed(5)
        return make(*args)


def as_subclass(cls: type) -> Callable[[nn.Module], nn.Module]:
    """The same module (same parameters), made an instance of ``cls``, a subclass of its class."""
    def make(module: nn.Module) -> nn.Module:
        module.__class__ = cls
        return module
    return make


class ClampedReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).clamp(max=0.5)


class SameReLU(nn.ReLU):
    """A subclass that computes exactly what ReLU does: the fast path still cannot know that."""


class ScaledConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 1.25


class ShiftedBatchNorm(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 0.25


class SkipLastSequential(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in list(self)[:-1]:
            x = module(x)
        return x


class ScaledBottleneck(Bottleneck):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 0.75


class NoisyResNet(ResNet):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward_features(x) + 0.5


def scale_output(factor: float) -> Callable:
    return lambda module, args, output: output * factor


def patch_forward(path: str, factor: float = 1.25) -> Callable[[nn.Module], None]:
    def apply(model: nn.Module) -> None:
        module = model.get_submodule(path)
        original = module.forward
        module.forward = lambda *args: original(*args) * factor
    return apply


def bn_paths(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def every_block_relu(make: Callable[[], nn.Module]) -> Callable[[nn.Module], None]:
    def apply(model: nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, Bottleneck):
                module.relu = make()
    return apply


def after_first_call(edit: Callable[[nn.Module], None]) -> Callable[[nn.Module], torch.Tensor]:
    """Run once (folding the weights), edit, run again: the second call must see the edit."""
    def run(model: nn.Module) -> torch.Tensor:
        logits(model)
        edit(model)
        return logits(model)
    return run


def no_grad_edit(fn: Callable[[nn.Module], None]) -> Callable[[nn.Module], None]:
    def edit(model: nn.Module) -> None:
        with torch.no_grad():
            fn(model)
    return edit


def training_step(model: nn.Module) -> None:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(image_batch(4, seed=7)).logsumexp(dim=1).mean()
    loss.backward()
    optimizer.step()
    model.eval()


def reload_state(model: nn.Module) -> None:
    state = {k: v * 1.1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)


def saved_and_loaded(model: nn.Module) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    state["layer2.0.bn1.running_mean"] += 0.5
    model.load_state_dict(state)


def with_input(x: torch.Tensor, context: Callable = torch.no_grad) -> Callable[[nn.Module], torch.Tensor]:
    def run(model: nn.Module) -> torch.Tensor:
        with context():
            return model(x)
    return run


def one_pixel(value: float) -> torch.Tensor:
    x = image_batch()
    x[1, 2, 30, 17] = value
    return x


def functional(model: nn.Module) -> torch.Tensor:
    params = {name: p * 0.9 if "conv" in name else p for name, p in model.named_parameters()}
    with torch.no_grad():
        return torch.func.functional_call(model, (params, dict(model.named_buffers())), (image_batch(),))


def deep_copied(model: nn.Module) -> torch.Tensor:
    logits(model)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.layer3[1].conv1.weight.mul_(1.5)
    logits(model)
    return torch.cat([logits(clone), logits(model)])


def pickled(model: nn.Module) -> torch.Tensor:
    logits(model)
    clone = pickle.loads(pickle.dumps(model))
    return torch.cat([logits(clone), logits(model)])


def shared_conv(model: nn.Module) -> None:
    model.layer1[2].conv2 = model.layer1[1].conv2


def truncated_layer1(model: nn.Module) -> None:
    model.layer1 = model.layer1[1:]


def as_dtype(dtype: torch.dtype) -> Callable[[nn.Module], torch.Tensor]:
    def run(model: nn.Module) -> torch.Tensor:
        model.to(dtype)
        return logits(model, image_batch().to(dtype)).float()
    return run


def global_hook(register: Callable, hook: Callable) -> Callable[[nn.Module], torch.Tensor]:
    def run(model: nn.Module) -> torch.Tensor:
        handle = register(hook)
        try:
            return logits(model)
        finally:
            handle.remove()
    return run


def parametrized(model: nn.Module) -> None:
    class Doubled(nn.Module):
        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight * 2

    parametrize.register_parametrization(model.layer2[1].conv2, "weight", Doubled())


def pruned(method: Callable, path: str) -> Callable[[nn.Module], None]:
    def apply(model: nn.Module) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(11)
            method(model.get_submodule(path), "weight", amount=0.3)
    return apply


def changes() -> list[Change]:
    """The generated list: every kind of change at several places of the model."""
    out: list[Change] = []
    # Each module class replaced by another class or by a subclass, at places taken in turn.
    relus = {"SiLU": nn.SiLU, "LeakyReLU": lambda: nn.LeakyReLU(0.1), "Identity": nn.Identity,
             "ClampedReLU": lambda: ClampedReLU(inplace=True), "SameReLU": lambda: SameReLU(inplace=True)}
    places = ("relu", "layer1.0.relu", "layer3.2.relu", "layer4.2.relu")
    for i, (label, make) in enumerate(relus.items()):
        path = places[i % len(places)]
        out.append(Change(f"{path} -> {label}", replace(path, lambda _, make=make: make()), fused=False))
    out.append(Change("every Bottleneck.relu -> SiLU", every_block_relu(nn.SiLU), fused=False))
    for path in ("conv1", "layer2.0.downsample.0"):
        out.append(Change(f"{path} -> Conv2d subclass", replace(path, as_subclass(ScaledConv)), fused=False))
    for path in ("bn1", "layer3.0.downsample.1"):
        out.append(Change(f"{path} -> BatchNorm2d subclass", replace(path, as_subclass(ShiftedBatchNorm)),
                          fused=False))
    out.append(Change("layer2.1.bn3 -> Identity", replace("layer2.1.bn3", lambda _: nn.Identity()), fused=False))
    out += [
        Change("layer2 -> Sequential subclass", replace("layer2", as_subclass(SkipLastSequential)), fused=False),
        Change("layer3.4 -> Bottleneck subclass", replace("layer3.4", as_subclass(ScaledBottleneck)), fused=False),
        Change("model -> ResNet subclass", as_subclass(NoisyResNet), fused=False),
        Change("maxpool -> MaxPool2d(2)", replace("maxpool", lambda _: nn.MaxPool2d(2)), fused=False),
        Change("avgpool -> AdaptiveMaxPool2d", replace("avgpool", lambda _: nn.AdaptiveMaxPool2d(1)), fused=False),
        Change("fc -> Dropout + Linear", replace("fc", lambda fc: nn.Sequential(nn.Dropout().eval(), fc)),
               fused=False),
        Change("fc -> a new 10-class Linear, eval()",
               replace("fc", lambda fc: seeded(nn.Linear, fc.in_features, 10).eval()), fused=True),
        Change("fc -> a new Linear left in training mode",
               replace("fc", lambda fc: seeded(nn.Linear, fc.in_features, 10)), fused=False),
    ]
    # Hooks of every kind, on modules and global.
    out += [
        Change("forward hook on layer3.1.conv2",
               lambda m: m.layer3[1].conv2.register_forward_hook(scale_output(1.5)) and None, fused=False),
        Change("forward pre-hook on layer1",
               lambda m: m.layer1.register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,)) and None, fused=False),
        Change("forward hook on fc", lambda m: m.fc.register_forward_hook(scale_output(2.0)) and None, fused=False),
        Change("backward hook on layer2.0.bn1",
               lambda m: m.layer2[0].bn1.register_backward_hook(lambda *a: None) and None, fused=False),
        Change("full backward hook on layer4",
               lambda m: m.layer4.register_full_backward_hook(lambda *a: None) and None, fused=False),
        Change("global forward hook", lambda m: None, fused=False,
               run=global_hook(nn.modules.module.register_module_forward_hook,
                               lambda mod, args, out: out * 1.1 if isinstance(mod, nn.BatchNorm2d) else None)),
        Change("global forward pre-hook", lambda m: None, fused=False,
               run=global_hook(nn.modules.module.register_module_forward_pre_hook,
                               lambda mod, args: (args[0] * 0.9,) if isinstance(mod, nn.Conv2d) else None)),
    ]
    # Parametrizations and pruning.
    out += [
        Change("parametrize layer2.1.conv2.weight", parametrized, fused=False),
        Change("weight_norm on layer1.1.conv3",
               lambda m: parametrizations.weight_norm(m.layer1[1].conv3) and None, fused=False),
        Change("spectral_norm on layer4.0.conv1",
               lambda m: seeded(parametrizations.spectral_norm, m.layer4[0].conv1) and None, fused=False),
        Change("prune.l1_unstructured layer1.0.conv1", pruned(prune.l1_unstructured, "layer1.0.conv1"), fused=False),
        Change("prune.random_unstructured layer3.3.conv2", pruned(prune.random_unstructured, "layer3.3.conv2"),
               fused=False),
    ]
    # Weights and settings changed after a first call (which folded them).
    edits = {
        "conv weight in place under no_grad": no_grad_edit(lambda m: m.layer3[2].conv2.weight.mul_(1.5)),
        "conv weight .data assigned": lambda m: setattr(m.layer2[3].conv1.weight, "data",
                                                        m.layer2[3].conv1.weight.data * 1.5),
        "conv weight a new Parameter": lambda m: setattr(m.layer1[2].conv3, "weight",
                                                         nn.Parameter(m.layer1[2].conv3.weight.detach() * 0.5)),
        "BN running_var in place under no_grad": no_grad_edit(lambda m: m.layer1[0].bn3.running_var.mul_(2.0)),
        "BN bias a new Parameter": lambda m: setattr(m.layer4[0].downsample[1], "bias",
                                                     nn.Parameter(m.layer4[0].downsample[1].bias.detach() + 0.3)),
        "BN eps changed": lambda m: setattr(m.layer2[1].bn2, "eps", 0.5),
        "load_state_dict": reload_state,
        "state_dict saved, edited, loaded": saved_and_loaded,
        "a training step": training_step,
        "parameters made channels-last": lambda m: m.to(memory_format=torch.channels_last),
        "requires_grad_(False)": lambda m: m.requires_grad_(False),
    }
    out += [Change(f"after a first call: {label}", lambda m: None, fused=True, run=after_first_call(edit))
            for label, edit in edits.items()]
    # Parts left in training mode inside an eval model; forward patched on an instance; shared modules.
    out += [Change(f"{path or 'the stem conv'} left in train()", lambda m, path=path: at(path)(m).train() and None,
                   fused=False) for path in ("layer2.0.bn2", "bn1", "layer3", "conv1")]
    out += [Change(f"forward patched on {path}", patch_forward(path), fused=False)
            for path in ("layer2.1", "layer1.0.conv1", "layer3.2.bn1", "conv1", "layer3.0.downsample")]
    out += [
        Change("two blocks share one conv", shared_conv, fused=False),
        Change("truncated layer1 (the model raises)", truncated_layer1, fused=False, raises=True),
        Change("conv padding changed (the model raises)", lambda m: setattr(m.layer2[1].conv2, "padding", (2, 2)),
               fused=False, raises=True),
        Change("maxpool ceil_mode", lambda m: setattr(m.maxpool, "ceil_mode", True), fused=False),
        Change("the model registered inside one of its blocks", lambda m: m.layer2[0].add_module("owner", m),
               fused=False),
        Change("an unused module added", lambda m: m.layer2[0].add_module("spare", nn.Linear(2, 2).eval()),
               fused=False),
        Change("a sparse buffer added", lambda m: m.layer1[0].register_buffer("mask", torch.eye(3).to_sparse()),
               fused=False),
    ]
    # dtypes, inputs and ways of calling.
    channels_last = image_batch().contiguous(memory_format=torch.channels_last)
    out += [
        Change(".double()", lambda m: None, fused=False, run=as_dtype(torch.float64)),
        Change(".half()", lambda m: None, fused=False, run=as_dtype(torch.float16)),
        Change("input 97x131", lambda m: None, fused=True, run=with_input(image_batch(2, 97, 131))),
        Change("input 32x32", lambda m: None, fused=True, run=with_input(image_batch(3, 32, 32))),
        Change("input batch 1", lambda m: None, fused=True, run=with_input(image_batch(1))),
        Change("input batch 11 (slices)", lambda m: None, fused=True, run=with_input(image_batch(11, 40, 40))),
        Change("non-contiguous input", lambda m: None, fused=True,
               run=with_input(image_batch(2, 96, 64)[:, :, ::2, :].transpose(2, 3))),
        Change("channels-last input", lambda m: None, fused=True, run=with_input(channels_last)),
        Change("inference_mode", lambda m: None, fused=True, run=with_input(image_batch(), torch.inference_mode)),
        Change("NaN in one pixel", lambda m: None, fused=False, run=with_input(one_pixel(math.nan))),
        Change("inf in one pixel", lambda m: None, fused=False, run=with_input(one_pixel(math.inf))),
        Change("-inf in one pixel", lambda m: None, fused=False, run=with_input(one_pixel(-math.inf))),
        Change("functional_call with other weights", lambda m: None, fused=None, run=functional),
        Change("deepcopy after a call, the copy edited", lambda m: None, fused=True, run=deep_copied),
        Change("pickled after a call", lambda m: None, fused=True, run=pickled),
    ]
    # The full ResNet-50 with stand-in weights.
    out += [
        Change("ResNet-50: unchanged", lambda m: None, fused=True, model="resnet50"),
        Change("ResNet-50: every Bottleneck.relu -> SiLU", every_block_relu(nn.SiLU), fused=False, model="resnet50"),
        Change("ResNet-50: forward patched on layer3.1.conv2", patch_forward("layer3.1.conv2"), fused=False,
               model="resnet50"),
        Change("ResNet-50: prune.l1_unstructured conv1", pruned(prune.l1_unstructured, "conv1"), fused=False,
               model="resnet50"),
        Change("ResNet-50: weights loaded after a first call", lambda m: None, fused=True, model="resnet50",
               run=after_first_call(reload_state)),
    ]
    # The squeeze-excitation parts, on a small SE-ResNeXt of the family.
    out += [
        Change("SE: unchanged", lambda m: None, fused=True, model="tiny_se"),
        Change("SE: squeeze ReLU -> SiLU", replace("layer3.1.squeeze.relu", lambda _: nn.SiLU()), fused=False,
               model="tiny_se"),
        Change("SE: sigmoid -> Hardsigmoid", replace("layer1.0.squeeze.sigmoid", lambda _: nn.Hardsigmoid()),
               fused=False, model="tiny_se"),
        Change("SE: expand -> Linear subclass",
               replace("layer2.0.squeeze.expand", as_subclass(type("Lin", (nn.Linear,), {
                   "forward": lambda self, x: nn.Linear.forward(self, x) * 2}))), fused=False, model="tiny_se"),
        Change("SE: forward hook on the squeeze module",
               lambda m: m.layer4[0].squeeze.register_forward_hook(scale_output(0.5)) and None, fused=False,
               model="tiny_se"),
        Change("SE: fused_se off", lambda m: [setattr(b, "fused_se", False) for b in m.modules()
                                              if isinstance(b, Bottleneck)] and None, fused=True, model="tiny_se"),
        Change("SE: weights edited after a first call", lambda m: None, fused=True, model="tiny_se",
               run=after_first_call(no_grad_edit(lambda m: m.layer3[0].squeeze.squeeze.weight.mul_(3.0)))),
    ]
    return out


CHANGES = changes()


def test_the_list_is_long_enough() -> None:
    assert len(CHANGES) >= 30 and len({c.name for c in CHANGES}) == len(CHANGES)


@pytest.fixture
def trunk_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the fused trunk during the test (whatever its signature)."""
    calls: list[int] = []
    original = trunk.fused_features

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(trunk, "fused_features", spy)
    return calls


def outcome(change: Change, base: nn.Module, fast: bool) -> tuple[Optional[torch.Tensor], Optional[BaseException]]:
    model = copy.deepcopy(base)
    model.fast_inference = fast
    try:
        model = change.apply(model) or model
        return change.run(model), None
    except Exception as error:  # compared below: both ways must raise alike
        return None, error


SLOW_CHANGES = {"pickled after a call"}


@pytest.mark.parametrize("change", [
    # The full-size ResNet-50 changes take seconds each, and pickling a called model one: the slow tier (the narrow
    # model covers each kind).
    pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.model == "resnet50" or c.name in SLOW_CHANGES else [])
    for c in CHANGES])
def test_fast_equals_plain(change: Change, request: pytest.FixtureRequest, trunk_calls: list[int]) -> None:
    base = request.getfixturevalue(change.model)
    plain, plain_error = outcome(change, base, fast=False)
    assert trunk_calls == [], "fast_inference=False never runs the fused trunk"
    fast, fast_error = outcome(change, base, fast=True)
    assert (plain_error is not None) is change.raises, f"the model itself: {plain_error!r}"
    if plain_error is not None or fast_error is not None:
        assert (type(fast_error), str(fast_error)) == (type(plain_error), str(plain_error))
    else:
        torch.testing.assert_close(fast, plain, rtol=0, atol=TOLERANCE, equal_nan=True)
    if change.fused is not None:
        assert bool(trunk_calls) is (change.fused and FUSED), (
            "the fast path must run for a change it reproduces" if change.fused else
            "the fast path must step aside for a change it does not reproduce exactly")


def test_class_level_patch_steps_aside(narrow, trunk_calls: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """``nn.ReLU.forward`` patched for every ReLU: the modules compute something else, so the fast path steps
    aside."""
    model = copy.deepcopy(narrow)
    expected_plain = copy.deepcopy(narrow)
    expected_plain.fast_inference = False
    monkeypatch.setattr(nn.ReLU, "forward", lambda self, x: torch.nn.functional.leaky_relu(x, 0.2))
    fast, plain = logits(model), logits(expected_plain)
    assert trunk_calls == []
    torch.testing.assert_close(fast, plain, rtol=0, atol=TOLERANCE)


def test_nan_stays_where_the_model_puts_it(narrow, trunk_calls: list[int]) -> None:
    """A NaN pixel: that image's logits are NaN and the other image's stay finite, as the modules compute them;
    the next finite batch runs fused again."""
    model = copy.deepcopy(narrow)
    out = logits(model, one_pixel(math.nan))
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()
    assert trunk_calls == []
    assert torch.isfinite(logits(model)).all()
    assert len(trunk_calls) == (1 if FUSED else 0)
