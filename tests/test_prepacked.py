"""resnet.prepacked: the fused CPU path on weights packed once for oneDNN gives the model's logits."""

from __future__ import annotations

import pytest
import torch

from support import load_expected, parity_input
from resnet import prepacked
from resnet.builder import create_model
from resnet.prepacked import prepack_for_cpu, prepacking_works

TOLERANCE = 1e-4
BF16_RELATIVE = 0.02  # the fast path's documented bf16 bound, relative to the largest fp32 logit

needs_packing = pytest.mark.skipif(not prepacking_works(), reason="this torch cannot pack oneDNN conv weights")


@pytest.fixture(scope="module")
def standin(ngc_file) -> torch.nn.Module:
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()


@needs_packing
def test_prepacked_fp32_matches_reference_logits_for_any_batch(standin) -> None:
    model = prepack_for_cpu(standin, micro_batch=2)
    assert model.packed and model.fused and model.dtype == torch.float32
    diff = (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max().item()
    print(f"prepacked fp32: max abs diff to the reference logits {diff:.3g}")
    assert diff <= TOLERANCE
    for batch in (1, 5):  # smaller than and not a multiple of the packed slice
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = standin(x)
        out = model(x)
        assert out.shape == (batch, 1000) and out.dtype == torch.float32
        assert (out - expected).abs().max().item() <= TOLERANCE


@needs_packing
def test_prepacked_bf16_stays_within_the_bf16_bound(standin) -> None:
    x = parity_input("resnet50")
    expected = load_expected("resnet50")["logits"]
    model = prepack_for_cpu(standin, dtype="bfloat16", micro_batch=2)
    relative = ((model(x) - expected).abs().max() / expected.abs().max()).item()
    print(f"prepacked bf16: packed={model.packed}, max error {100 * relative:.2f}% of the largest logit")
    assert relative <= BF16_RELATIVE


def test_without_the_packing_operator_the_fused_path_runs_unpacked(standin, monkeypatch) -> None:
    monkeypatch.setattr(prepacked, "_reorder_op", lambda: None)
    prepacked.prepacking_works.cache_clear()
    try:
        assert not prepacked.prepacking_works()
        model = prepack_for_cpu(standin, micro_batch=2)
        assert not model.packed and "packed=False" in repr(model)
        diff = (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max().item()
        assert diff <= TOLERANCE
    finally:
        prepacked.prepacking_works.cache_clear()


def test_micro_batch_must_be_positive(standin) -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="micro_batch must be a positive integer"):
            prepack_for_cpu(standin, micro_batch=bad)
