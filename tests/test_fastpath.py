"""The inference fast path (resnet.fast): every variant computes what the model computes.

float32 variants must stay within 1e-4 of the reference logits (tests/fixtures/ngc); reduced-precision
variants must keep the top-1 class and the top-5 set of the float32 model on the parity inputs and the
sample photos, with a logit error within REDUCED_PRECISION_TOLERANCE. Speed is measured by
benchmarks/benchmark.py, not tested. Set RESNET_SKIP_COMPILE_TESTS=1 to skip the torch.compile test
(about a minute on 2 CPU cores). Where this torch has no working fused kernels (or RESNET_FUSED_KERNELS=0)
every variant must run unfused and still be right; bfloat16 tests name their dtype and use small batches
(bfloat16 is emulated, slowly, on CPUs without native BF16).
"""

from __future__ import annotations

import os
import re
import warnings

import pytest
import torch
from torch import nn

from resnet import devices, trunk
from resnet.models.builder import create_model
from resnet.fast import (
    CPU_MICRO_BATCH,
    REDUCED_PRECISION_TOLERANCE,
    cpu_supports_bf16,
    fold_batchnorm,
    fused_kernels_work,
    optimize_for_inference,
    resolve_dtype,
)
from resnet.fast.inference import compile_unavailable
from support import IMAGES, REPO_ROOT, load_expected, onednn_has_bfloat16_convolutions, parity_input

TOLERANCE = 1e-4
skip_compile = pytest.mark.skipif(
    os.environ.get("RESNET_SKIP_COMPILE_TESTS", "") not in ("", "0"), reason="RESNET_SKIP_COMPILE_TESTS is set"
)
#: Why torch.compile cannot generate code here (torch 2.1 without pkg_resources), or None.
COMPILE_UNAVAILABLE = compile_unavailable()
needs_compiler = pytest.mark.skipif(
    COMPILE_UNAVAILABLE is not None,
    reason=f"{COMPILE_UNAVAILABLE}; test_compile_without_inductor_s_cpp_extension_is_refused_up_front checks the "
    "refusal",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
#: Whether the fused oneDNN kernels run here; where they do not, every variant runs unfused.
FUSED = fused_kernels_work()
needs_fused = pytest.mark.skipif(
    not FUSED, reason="no working oneDNN fused kernels in this torch (or RESNET_FUSED_KERNELS=0)"
)


@pytest.fixture(scope="module")
def resnet50(ngc_file) -> nn.Module:
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).eval()


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """The sample photos, preprocessed as every entry point does."""
    from PIL import Image

    from resnet.data.preprocessing import build_transform

    transform = build_transform()
    paths = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert len(paths) == 4
    return torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def max_diff_to_reference(model: nn.Module, arch: str = "resnet50") -> float:
    logits = logits_of(model, parity_input(arch))
    assert logits.dtype == torch.float32 and logits.shape == (2, 1000)
    return (logits - load_expected(arch)["logits"]).abs().max().item()


def assert_agreement(low: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """Top-1 equal, top-5 sets equal, and the documented logit bound, row by row."""
    assert low.dtype == torch.float32
    assert torch.equal(low.argmax(1), ref.argmax(1))
    for a, b in zip(low.topk(5).indices.tolist(), ref.topk(5).indices.tolist()):
        assert set(a) == set(b)
    bound = REDUCED_PRECISION_TOLERANCE[dtype] * ref.abs().max().item()
    assert (low - ref).abs().max().item() <= bound


# --------------------------------------------------------------------------- fold_batchnorm


@pytest.mark.parametrize("arch", ["resnet50", "se-resnext101-32x4d"])
@pytest.mark.slow
def test_fold_batchnorm_keeps_reference_logits(ngc_file, arch: str) -> None:
    model = create_model(arch, pretrained_from_file=ngc_file(arch), channels_last=True)
    folded = fold_batchnorm(model)
    assert folded is not model and model.training, "the default returns a copy and leaves the input alone"
    assert not folded.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded.layer1[0].downsample[1], nn.Identity), "the shortcut's BN is folded too"
    assert folded.layer1[0].downsample[0].bias is not None
    assert folded.conv1.weight.is_contiguous(memory_format=torch.channels_last), "the weights keep their layout"
    assert max_diff_to_reference(folded, arch) <= TOLERANCE


@pytest.mark.slow
def test_fold_batchnorm_inplace_and_torchvision(resnet50) -> None:
    import torchvision

    peer = torchvision.models.resnet50()
    peer.load_state_dict(resnet50.state_dict())
    folded = fold_batchnorm(peer, inplace=True)
    assert folded is peer
    assert sum(isinstance(m, nn.Conv2d) and m.bias is not None for m in folded.modules()) == 53
    assert max_diff_to_reference(folded) <= TOLERANCE


@pytest.mark.slow
def test_folded_model_scripts_and_traces(resnet50) -> None:
    folded = fold_batchnorm(resnet50)
    x = parity_input("resnet50")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(folded)
        traced = torch.jit.trace(folded, x)
    assert max_diff_to_reference(scripted) <= TOLERANCE
    assert max_diff_to_reference(traced) <= TOLERANCE


# --------------------------------------------------------------------------- the hub model as documented


@pytest.mark.slow
def test_hub_model_defaults_to_standard_layouts_with_channels_last_opt_in(ngc_file) -> None:
    """The hub model's parameters are contiguous (what torch's utilities expect); channels_last=True stores the
    4-D weights channels-last. The documented example gives the same logits either way."""
    path = str(ngc_file("resnet50"))
    plain = torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", pretrained=False, pretrained_from_file=path,
                           source="local")
    channels_last = torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", pretrained=False, pretrained_from_file=path,
                                   source="local", channels_last=True)
    assert all(p.is_contiguous() for p in plain.parameters())
    convs = [m for m in channels_last.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert max_diff_to_reference(plain.eval()) <= TOLERANCE
    assert max_diff_to_reference(channels_last.eval()) <= TOLERANCE


@pytest.mark.slow
def test_pretrained_load_does_no_random_init(ngc_file, monkeypatch: pytest.MonkeyPatch) -> None:
    """With weights the model is built on the meta device: no initialiser writes a real tensor."""
    calls = []

    def spy(name, original):
        def init(tensor, *args, **kwargs):
            if tensor.device.type != "meta":
                calls.append(name)
            return original(tensor, *args, **kwargs)
        return init

    for name in ("kaiming_normal_", "ones_", "zeros_", "normal_", "uniform_", "kaiming_uniform_"):
        monkeypatch.setattr(nn.init, name, spy(name, getattr(nn.init, name)))
    model = create_model("resnet50", pretrained_from_file=ngc_file("resnet50"))
    assert calls == [], f"loading weights ran initialisers on real tensors: {sorted(set(calls))}"
    assert max_diff_to_reference(model.eval()) <= TOLERANCE
    create_model("resnet50")  # the check itself works: a random model does initialise
    assert calls


# --------------------------------------------------------------------------- optimize_for_inference, float32


@pytest.mark.parametrize(
    "options, fused, layout",
    [
        ({}, True, "channels_last"),
        ({"fuse": False}, False, "channels_last"),
        ({"channels_last": False}, True, "contiguous"),
        ({"channels_last": False, "fuse": False}, False, "contiguous"),
        ({"fold_bn": False}, False, "channels_last"),
        ({"micro_batch": 1}, True, "channels_last"),
        ({"micro_batch": None}, True, "channels_last"),
    ],
    ids=["default", "unfused", "nchw-fused", "nchw", "no-fold", "micro-batch-1", "whole-batch"],
)
@pytest.mark.slow
def test_float32_variants_match_reference(
    resnet50, options: dict, fused: bool, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fused = fused and FUSED
    fast = optimize_for_inference(resnet50, dtype="float32", **options)
    assert (fast.dtype, fast.layout, fast.fused, fast.compiled) == (torch.float32, layout, fused, False)
    assert fast.micro_batch == options.get("micro_batch", CPU_MICRO_BATCH)
    trunks = []
    original = trunk.fused_features
    monkeypatch.setattr(trunk, "fused_features", lambda *args: trunks.append(1) or original(*args))
    assert max_diff_to_reference(fast) <= TOLERANCE
    assert bool(trunks) is fused, "the options decide how the copy runs, not the model's own eval path"


@pytest.mark.parametrize("arch", ["resnext101-32x4d", "se-resnext101-32x4d"])
@pytest.mark.slow
def test_fused_path_for_the_other_architectures(ngc_file, arch: str) -> None:
    model = create_model(arch, pretrained_from_file=ngc_file(arch))
    fast = optimize_for_inference(model, dtype="float32")
    assert fast.fused is FUSED
    assert max_diff_to_reference(fast, arch) <= TOLERANCE


@pytest.mark.slow
def test_inference_model_contract(resnet50) -> None:
    """fp32 NCHW in (any memory format), fp32 logits out, no autograd; the input model is untouched."""
    trained = create_model("resnet50")
    trained.load_state_dict(resnet50.state_dict())
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    fast = optimize_for_inference(trained)
    assert trained.training and any(isinstance(m, nn.BatchNorm2d) for m in trained.modules())
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    x = parity_input("resnet50")
    out = fast(x)  # no no_grad here: the fast path needs none
    assert out.dtype == torch.float32 and not out.requires_grad
    expected = load_expected("resnet50")["logits"]
    assert (fast(x.contiguous(memory_format=torch.channels_last)) - expected).abs().max() <= TOLERANCE
    assert (out - expected).abs().max() <= TOLERANCE
    assert f"fused={FUSED}" in repr(fast)


def test_plain_module_is_folded_and_wrapped() -> None:
    """Not a ResNet: BN inside a Sequential is folded, nothing ResNet-specific is applied."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 5)
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(3, 3, 4, 4)
    fast = optimize_for_inference(model, dtype="float32")
    assert not fast.fused and isinstance(fast.pipeline.features[1], nn.Identity)
    assert (fast(x) - logits_of(model, x)).abs().max() <= TOLERANCE


# --------------------------------------------------------------------------- reduced precision


@pytest.mark.slow
def test_bfloat16_agrees_with_float32_on_fixtures_and_photos(resnet50, photos) -> None:
    """bf16 runs on any CPU (emulated, slowly, without native BF16); the check is accuracy only."""
    fast = optimize_for_inference(resnet50, dtype="bfloat16")
    assert fast.dtype == torch.bfloat16
    assert_agreement(logits_of(fast, parity_input("resnet50")), load_expected("resnet50")["logits"], torch.bfloat16)
    assert_agreement(logits_of(fast, photos), logits_of(resnet50, photos), torch.bfloat16)


@needs_fused
@pytest.mark.slow
def test_bfloat16_stays_fused_for_weights_with_large_logits() -> None:
    """torchvision-initialised weights give logits in the tens: fused and unfused bfloat16 then differ by
    about 0.2 in absolute terms, 0.5% of the largest logit. The probe judges that against the documented
    bound, relative to the logits, and keeps the fused kernels; the result stays within that bound of
    torchvision's own float32 model."""
    import torchvision

    with torch.random.fork_rng():
        torch.manual_seed(0)
        peer = torchvision.models.resnet50().eval()
    model = create_model("resnet50")
    model.load_state_dict(peer.state_dict())
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    reference = logits_of(peer, x)
    assert reference.abs().max().item() > 20, "the premise: logits in the tens"
    fast = optimize_for_inference(model, dtype="bfloat16")
    assert fast.dtype == torch.bfloat16
    kernels = onednn_has_bfloat16_convolutions()  # none on an AVX2-only CPU: the unfused path runs there
    if kernels is not None:
        assert fast.fused is kernels
    error = (logits_of(fast, x) - reference).abs().max().item()
    assert error <= REDUCED_PRECISION_TOLERANCE[torch.bfloat16] * reference.abs().max().item()


@needs_cuda
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_float16_agrees_with_float32(resnet50, photos, cuda_graphs: bool) -> None:
    fast = optimize_for_inference(resnet50, device="cuda", cuda_graphs=cuda_graphs, dtype="auto")
    assert fast.dtype == torch.float16
    for _ in range(2):  # the second call replays the captured graph
        assert_agreement(logits_of(fast, parity_input("resnet50")).cpu(), load_expected("resnet50")["logits"],
                         torch.float16)
    assert_agreement(logits_of(fast, photos).cpu(), logits_of(resnet50, photos), torch.float16)


# --------------------------------------------------------------------------- dtype choice and errors


@pytest.mark.parametrize("mkldnn", [True, False])
def test_cpu_bf16_detection_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, mkldnn: bool) -> None:
    """Both kinds of CPU are faked, whatever this one is: the answer comes from the flags alone."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    for flags, native in [({"avx2", "fma"}, False), ({"avx512f", "avx512_bf16"}, True), ({"amx_bf16"}, True),
                          ({"avx512f", "avx512bw", "avx512_vnni"}, False), (set(), False)]:
        monkeypatch.setattr(devices, "_cpu_flags", lambda flags=flags: frozenset(flags))
        expected_native = native and mkldnn
        assert cpu_supports_bf16() is expected_native, flags
        assert resolve_dtype("auto", "cpu") is (torch.bfloat16 if expected_native else torch.float32), flags
        assert resolve_dtype("float32", "cpu") is torch.float32
    assert resolve_dtype("auto", "cuda") is torch.float16
    assert resolve_dtype("float32", "cuda") is torch.float32
    assert resolve_dtype(torch.bfloat16, "cpu") is torch.bfloat16


@pytest.mark.parametrize("flags", [{"avx2", "fma"}, {"avx512f", "avx512_bf16", "amx_bf16"}])
@pytest.mark.slow
def test_default_dtype_is_float32_on_every_cpu(monkeypatch: pytest.MonkeyPatch, resnet50, flags: set) -> None:
    """optimize_for_inference(model) gives the same numbers on an AVX2 CPU and on one with native BF16."""
    monkeypatch.setattr(devices, "_cpu_flags", lambda: frozenset(flags))
    assert optimize_for_inference(resnet50).dtype == torch.float32
    native = optimize_for_inference(resnet50, dtype="auto").dtype
    assert native is (torch.bfloat16 if "avx512_bf16" in flags and torch.backends.mkldnn.is_available()
                      else torch.float32)


@pytest.mark.slow
def test_bad_options_are_named(resnet50) -> None:
    with pytest.raises(ValueError, match="dtype must be"):
        optimize_for_inference(resnet50, dtype="int8")
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        optimize_for_inference(resnet50, device="cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="micro_batch must be"):
        optimize_for_inference(resnet50, micro_batch=0)
    with pytest.raises(ValueError, match="fuse=True needs"):
        optimize_for_inference(resnet50, fuse=True, fold_bn=False)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            optimize_for_inference(resnet50, device="cuda")


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("missing", ["a module", "pkg_resources"])
def test_compile_without_inductor_s_cpp_extension_is_refused_up_front(missing, resnet50, monkeypatch) -> None:
    """Where torch.utils.cpp_extension cannot be imported (torch 2.1 imports pkg_resources, gone in setuptools 82),
    compile=True fails at once naming the cause, not at the first call inside inductor; the import is faked."""
    import importlib

    real = importlib.import_module

    def import_module(name, *args):
        if name == "torch.utils.cpp_extension":
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", import_module)
    assert compile_unavailable() is not None
    hint = r".*pip install 'setuptools<82', or use torch 2\.2" if missing == "pkg_resources" else ""
    version = re.escape(torch.__version__)
    with pytest.raises(RuntimeError, match=rf"compile=True: .*torch\.utils\.cpp_extension.*torch {version}"
                       rf".*No module named '{missing}'{hint}"):
        optimize_for_inference(resnet50, compile=True)
    if missing != "pkg_resources":
        assert "setuptools" not in compile_unavailable()


@skip_compile
@needs_compiler
@pytest.mark.slow
def test_compiled_float32_matches_reference(resnet50) -> None:
    fast = optimize_for_inference(resnet50, dtype="float32", compile=True)
    assert fast.compiled and not fast.fused and fast.micro_batch is None
    assert max_diff_to_reference(fast) <= TOLERANCE
