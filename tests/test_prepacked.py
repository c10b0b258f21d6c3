"""optimize_for_inference packs the convolution weights once for oneDNN: same logits, any batch or shape."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from support import load_expected, onednn_has_bfloat16_convolutions, parity_input
from resnet import onednn
from resnet.models.builder import create_model
from resnet.fast.inference import REDUCED_PRECISION_TOLERANCE, optimize_for_inference

TOLERANCE = 1e-4

needs_packing = pytest.mark.skipif(not onednn.prepacking_works(), reason="this torch cannot pack oneDNN conv weights")


@pytest.fixture(scope="module")
def standin(ngc_file) -> torch.nn.Module:
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@needs_packing
@pytest.mark.slow
def test_packed_fp32_matches_the_reference_for_any_batch_and_shape(standin) -> None:
    fast = optimize_for_inference(standin, micro_batch=2)
    assert fast.fused and fast.prepacked and "prepacked=True" in repr(fast)
    assert not fast.pipeline.features.packed  # packed when the first full slice arrives
    diff = (fast(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max().item()
    assert fast.pipeline.features.packed
    assert diff <= TOLERANCE
    for shape in ((1, 3, 224, 224), (5, 3, 224, 224), (2, 3, 160, 192)):  # other slices and sizes: plain weights
        x = torch.randn(shape, generator=torch.Generator().manual_seed(shape[0]))
        out = fast(x)
        assert out.shape == (shape[0], 1000) and out.dtype == torch.float32
        assert (out - logits(standin, x)).abs().max().item() <= TOLERANCE, shape


@needs_packing
@pytest.mark.slow
def test_packed_and_plain_weights_give_the_same_logits(standin) -> None:
    x = parity_input("resnet50")
    packed = optimize_for_inference(standin, micro_batch=2)
    plain = optimize_for_inference(standin, micro_batch=2, prepack=False)
    assert packed.prepacked and not plain.prepacked and plain.fused
    assert (packed(x) - plain(x)).abs().max().item() <= 1e-5


@needs_packing
@pytest.mark.slow
def test_packed_bfloat16_stays_within_the_bf16_bound(standin) -> None:
    x = parity_input("resnet50")
    expected = load_expected("resnet50")["logits"]
    fast = optimize_for_inference(standin, dtype="bfloat16", micro_batch=2)
    relative = ((fast(x) - expected).abs().max() / expected.abs().max()).item()
    kernels = onednn_has_bfloat16_convolutions()  # none on an AVX2-only CPU: unfused, so nothing is packed
    if kernels is not None:
        assert fast.fused is kernels and fast.prepacked is kernels
    assert getattr(fast.pipeline.features, "packed", False) == fast.prepacked
    assert relative <= REDUCED_PRECISION_TOLERANCE[torch.bfloat16]


@needs_packing
@pytest.mark.slow
def test_a_packed_model_copies_and_pickles_and_packs_again(standin) -> None:
    x = parity_input("resnet50")
    fast = optimize_for_inference(standin, micro_batch=2)
    expected = fast(x)
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert not clone.pipeline.features.packed
        assert torch.equal(clone(x), expected) and clone.pipeline.features.packed


@pytest.mark.slow
def test_without_the_packing_operator_the_fused_path_runs_unpacked(standin, monkeypatch) -> None:
    monkeypatch.setattr(onednn, "_reorder_operator", lambda: None)
    onednn._packing_agrees.cache_clear()
    try:
        assert not onednn.prepacking_works()
        fast = optimize_for_inference(standin, micro_batch=2)
        assert fast.fused == onednn.fused_kernels_work() and not fast.prepacked
        assert (fast(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= TOLERANCE
        with pytest.raises(ValueError, match="prepack=True needs"):
            optimize_for_inference(standin, micro_batch=2, prepack=True)
    finally:
        onednn._packing_agrees.cache_clear()


@pytest.mark.slow
def test_prepack_needs_a_slice_size(standin) -> None:
    with pytest.raises(ValueError, match="prepack=True needs"):
        optimize_for_inference(standin, micro_batch=None, prepack=True)
    assert not optimize_for_inference(standin, micro_batch=None).prepacked
