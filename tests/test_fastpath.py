"""The inference fast path (resnet/fastpath.py): every variant computes what the model computes.

float32 variants must stay within 1e-4 of the reference logits (tests/fixtures/ngc); speed is
measured by benchmarks/benchmark.py, not tested here.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from resnet.builder import create_model
from resnet.fastpath import fold_batchnorm
from support import load_expected, parity_input

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def resnet50(ngc_file) -> nn.Module:
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()


def max_diff_to_reference(model: nn.Module, arch: str = "resnet50") -> float:
    with torch.no_grad():
        logits = model(parity_input(arch))
    assert logits.dtype == torch.float32 and logits.shape == (2, 1000)
    return (logits - load_expected(arch)["logits"]).abs().max().item()


@pytest.mark.parametrize("arch", ["resnet50", "se-resnext101-32x4d"])
def test_fold_batchnorm_keeps_reference_logits(ngc_file, arch: str) -> None:
    model = create_model(arch, pretrained_from_file=ngc_file(arch))
    folded = fold_batchnorm(model)
    assert folded is not model and model.training, "the default returns a copy and leaves the input alone"
    assert not folded.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded.layer1[0].downsample[1], nn.Identity), "the shortcut's BN is folded too"
    assert folded.layer1[0].downsample[0].bias is not None
    assert folded.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert max_diff_to_reference(folded, arch) <= TOLERANCE


def test_fold_batchnorm_inplace_and_torchvision(resnet50) -> None:
    import torchvision

    peer = torchvision.models.resnet50()
    peer.load_state_dict(resnet50.state_dict())
    folded = fold_batchnorm(peer, inplace=True)
    assert folded is peer
    assert sum(isinstance(m, nn.Conv2d) and m.bias is not None for m in folded.modules()) == 53
    assert max_diff_to_reference(folded) <= TOLERANCE


def test_folded_model_scripts_and_traces(resnet50) -> None:
    folded = fold_batchnorm(resnet50)
    x = parity_input("resnet50")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(folded)
        traced = torch.jit.trace(folded, x)
    assert max_diff_to_reference(scripted) <= TOLERANCE
    assert max_diff_to_reference(traced) <= TOLERANCE
