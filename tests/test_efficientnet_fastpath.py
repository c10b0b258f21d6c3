"""EfficientNets and the fast paths: the eval fast path is ResNet-specific, so an EfficientNet always runs its own
modules (never a different answer); ``optimize_for_inference`` (what classify and evaluate run) folds its
BatchNorms and keeps NVIDIA's logits. Expected logits: the live fixtures, computed with NVIDIA's code."""

from __future__ import annotations

import pytest
import torch
from support import load_live, parity_input, standin_state_dict

import resnet  # noqa: F401  (plugs the eval fast path into the models, as every user's import does)
from resnet.models import resnet as resnet_module
from resnet.models.efficientnet_builder import efficientnet_from_checkpoint

ARCH = "efficientnet-b0"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return efficientnet_from_checkpoint(ARCH, standin_state_dict(ARCH, live=True)).eval()


def modules_in_order(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's modules called one after the other, the plain computation."""
    return model.classifier(model.features(model.layers(model.stem(x))))


def test_eval_calls_never_reach_the_resnet_accelerator(model, monkeypatch) -> None:
    calls = []

    def accelerator(module, x):
        calls.append(type(module).__name__)
        return torch.zeros(x.shape[0], 1000)  # a different answer, were it ever used

    assert resnet_module.inference_accelerator() is not None  # `import resnet` plugged the eval fast path in
    monkeypatch.setattr(resnet_module, "_accelerator", accelerator)
    x = parity_input(ARCH, live=True)
    expected = load_live(ARCH)["logits"]
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            logits = model(x)
            plain = modules_in_order(model, x)
        assert torch.equal(logits, plain)
        assert (logits - expected).abs().max() <= 1e-4
    assert calls == []
    # The accelerator is live: a ResNet in eval mode under no_grad does consult it (built on the meta device: the
    # accelerator answers before any layer would run).
    with torch.device("meta"):
        resnet50 = resnet_module.ResNet("resnet50").eval()
    with torch.no_grad():
        resnet50(torch.zeros(1, 3, 64, 64, device="meta"))
    assert calls == ["ResNet"]


def test_the_resnet_eval_path_declines_an_efficientnet(model) -> None:
    from resnet.fast.eval_path import exact_structure

    assert "EfficientNet is not exactly resnet.models.resnet.ResNet" in exact_structure(model)


def test_optimize_for_inference_folds_batchnorm_and_keeps_nvidias_logits(model) -> None:
    from resnet.fast import optimize_for_inference

    fast = optimize_for_inference(model, dtype="float32")
    assert not fast.fused  # the fused oneDNN trunk is ResNet's; the folded modules run
    logits = fast(parity_input(ARCH, live=True))
    assert (logits - load_live(ARCH)["logits"]).abs().max() <= 1e-4
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is unchanged
    with pytest.raises(ValueError, match="fuse=True needs"):
        optimize_for_inference(model, fuse=True)
