"""The hub model is a plain module: torch's utilities treat it as they treat torchvision's ResNet-50.

Each utility is applied alike to the hub model (as ``torch.hub.load`` returns it, fast path on) and to
torchvision's ``resnet50()`` holding the same weights (the independent peer); both are then run the same
way and must give the same logits.
"""

from __future__ import annotations

import copy
import io
import pickle
from typing import Callable

import pytest
import torch
import torch.nn.utils.parametrizations as parametrizations
from torch import nn
from torch.nn.utils import parametrize, prune

from support import REPO_ROOT


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many short calls on 64x64 inputs: one thread does not wait on the other at every operator."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pair(ngc_file) -> tuple[nn.Module, nn.Module]:
    import torchvision

    ours = torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", pretrained=False,
                          pretrained_from_file=str(ngc_file("resnet50")), source="local").eval()
    peer = torchvision.models.resnet50().eval()
    peer.load_state_dict(ours.state_dict())
    return ours, peer


def batch(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(dtype)


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def seeded(fn: Callable[[], object]) -> object:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return fn()


class Halved(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * 0.5


def state_dict_round_trip(model: nn.Module) -> torch.Tensor:
    buffer = io.BytesIO()
    torch.save({k: v * 1.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}, buffer)
    model.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    return run(model, batch())


def functional_call(model: nn.Module) -> torch.Tensor:
    params = {name: p * 0.9 for name, p in model.named_parameters()}
    with torch.no_grad():
        return torch.func.functional_call(model, params, (batch(),))


def vmapped(model: nn.Module) -> torch.Tensor:
    x = torch.randn(3, 2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return torch.vmap(model)(x)


def hooked(model: nn.Module) -> torch.Tensor:
    model.layer2[1].conv2.register_forward_hook(lambda module, args, out: out * 1.5)
    model.layer3.register_forward_pre_hook(lambda module, args: (args[0] - 0.1,))
    return run(model, batch())


UTILITIES: dict[str, Callable[[nn.Module], torch.Tensor]] = {
    "prune.l1_unstructured": lambda m: prune.l1_unstructured(m.conv1, "weight", amount=0.3) and run(m, batch()),
    "prune.random_unstructured": lambda m: seeded(lambda: prune.random_unstructured(
        m.layer2[0].conv2, "weight", amount=0.3)) and run(m, batch()),
    "prune.global_unstructured": lambda m: prune.global_unstructured(
        [(m.layer1[0].conv1, "weight"), (m.layer4[2].conv3, "weight")], pruning_method=prune.L1Unstructured,
        amount=0.4) or run(m, batch()),
    "parametrize": lambda m: parametrize.register_parametrization(m.layer3[1].conv2, "weight", Halved())
    and run(m, batch()),
    "weight_norm": lambda m: parametrizations.weight_norm(m.layer1[2].conv3) and run(m, batch()),
    "spectral_norm": lambda m: seeded(lambda: parametrizations.spectral_norm(m.fc)) and run(m, batch()),
    "hooks": hooked,
    "functional_call": functional_call,
    "deepcopy": lambda m: run(copy.deepcopy(m), batch()),
    "pickle": lambda m: run(pickle.loads(pickle.dumps(m)), batch()),
    "state_dict round trip": state_dict_round_trip,
    ".double()": lambda m: run(m.double(), batch(torch.float64)),
    ".half()": lambda m: run(m.half(), batch(torch.float16)).float(),
    "vmap": vmapped,
}


@pytest.mark.slow  # full-size ResNet-50 pairs: a second or more each on a 2-core CPU
@pytest.mark.parametrize("utility", list(UTILITIES))
def test_torch_utilities_work_as_on_torchvision(pair, utility: str) -> None:
    ours, peer = (copy.deepcopy(m) for m in pair)
    with torch.no_grad():
        run(ours, batch())  # a first call: whatever the fast path keeps, the utility must still work afterwards
    got, expected = UTILITIES[utility](ours), UTILITIES[utility](peer)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_parameters_are_standard_tensors(pair) -> None:
    ours, peer = pair
    for (name, p), (_, q) in zip(ours.named_parameters(), peer.named_parameters()):
        assert type(p) is nn.Parameter and p.is_contiguous() and p.stride() == q.stride(), name
