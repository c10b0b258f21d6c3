"""The model entrypoints through torch.hub: parity with NVIDIA's reference on every loading path.

Expected logits come from the reference implementation (tests/fixtures/ngc), computed by
NVIDIA's own code from the same stand-in weights; torchvision is the live second peer.
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch

from support import ARCH_NAMES, REPO_ROOT, Route, load_expected, parity_input, standin_state_dict

ENTRY = {
    "resnet50": "nvidia_resnet50",
    "resnext101-32x4d": "nvidia_resnext101_32x4d",
    "se-resnext101-32x4d": "nvidia_se_resnext101_32x4d",
}
FILE_NAME = {
    "resnet50": "nvidia_resnet50_200821.pth.tar",
    "resnext101-32x4d": "nvidia_resnext101-32x4d_200821.pth.tar",
    "se-resnext101-32x4d": "nvidia_se-resnext101-32x4d_200821.pth.tar",
}
TOLERANCE = 1e-4


def hub_load(entry: str, *args, **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(REPO_ROOT), entry, *args, source="local", **kwargs)


def assert_reference_logits(model: torch.nn.Module, arch: str) -> None:
    model.eval()
    with torch.no_grad():
        logits = model(parity_input(arch))
    expected = load_expected(arch)["logits"]
    assert logits.shape == expected.shape
    diff = (logits - expected).abs().max().item()
    assert diff <= TOLERANCE, f"{arch}: max abs diff {diff} to the reference logits"


# --------------------------------------------------------------------------- architecture facts


@pytest.mark.parametrize(
    "arch, params, entries",
    [("resnet50", 25_557_032, 320), ("resnext101-32x4d", 44_177_704, 626), ("se-resnext101-32x4d", 45_251_128, 758)],
)
@pytest.mark.slow
def test_parameter_counts_and_state_dict_layout(arch: str, params: int, entries: int) -> None:
    model = hub_load(ENTRY[arch], pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == params
    state = model.state_dict()
    assert len(state) == entries
    assert sum(k.endswith("num_batches_tracked") for k in state) == 53 + (0 if arch == "resnet50" else 51)
    # The NGC file's names and shapes, in the fixture schema, are exactly the model's.
    schema = {name: list(shape) for name, shape in __import__("support").load_schema(arch)["keys"]}
    assert {k: list(v.shape) for k, v in state.items()} == schema


@pytest.mark.slow
def test_returned_model_is_cpu_float32_training_mode_like_the_reference() -> None:
    model = hub_load("nvidia_resnet50", pretrained=False)
    assert model.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters()), "standard layouts, as torch's utilities expect"
    assert not model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    channels_last = hub_load("nvidia_resnet50", pretrained=False, channels_last=True)
    assert channels_last.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_v15_stride_is_on_the_3x3_convolution() -> None:
    model = hub_load("nvidia_resnet50", pretrained=False)
    block = model.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2)
    assert model.layer1[0].downsample is not None  # channels change in stage 0 too


@pytest.mark.slow
def test_initialisation_options() -> None:
    model = hub_load("nvidia_resnet50", pretrained=False, last_bn_0_init=True, conv_init="fan_out")
    assert torch.count_nonzero(model.layer1[0].bn3.weight) == 0
    assert torch.all(model.layer1[0].bn2.weight == 1)
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * k * k)).
    w = model.layer4[0].conv2.weight
    expected_std = (2.0 / (w.shape[0] * 9)) ** 0.5
    assert abs(w.std().item() - expected_std) / expected_std < 0.05
    with pytest.raises(ValueError, match="conv_init"):
        hub_load("nvidia_resnet50", pretrained=False, conv_init="uniform")


@pytest.mark.slow
def test_trt_builds_squeeze_excitation_as_1x1_convolutions() -> None:
    model = hub_load("nvidia_se_resnext101_32x4d", pretrained=False, trt=True)
    assert model.layer1[0].squeeze.squeeze.weight.shape == (16, 256, 1, 1)
    assert sum(p.numel() for p in model.parameters()) == 45_251_128


# --------------------------------------------------------------------------- parity, every path


@pytest.mark.parametrize("arch", ARCH_NAMES)
@pytest.mark.slow
def test_download_from_loopback_mirror_matches_reference(arch, server, hub_dir, ngc_file) -> None:
    server.routes[f"/weights/{FILE_NAME[arch]}"] = Route(ngc_file(arch).read_bytes())
    model = hub_load(ENTRY[arch], pretrained=True, mirror=server.url("/weights"), progress=False)
    assert_reference_logits(model, arch)
    assert (hub_dir / "checkpoints" / FILE_NAME[arch]).is_file()
    # The file and the SHA-256 recorded beside it at download, nothing else (no partial file).
    assert sorted(p.name for p in (hub_dir / "checkpoints").iterdir()) == [FILE_NAME[arch], FILE_NAME[arch] + ".sha256"]


@pytest.mark.parametrize("arch", ARCH_NAMES)
@pytest.mark.slow
def test_preseeded_hub_cache_is_used_without_network(arch, hub_dir, ngc_file) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(ngc_file(arch), hub_dir / "checkpoints" / FILE_NAME[arch])
    # No mirror and no network: the cached file must be enough.
    model = hub_load(ENTRY[arch], pretrained=True)
    assert_reference_logits(model, arch)


@pytest.mark.slow
def test_mirror_from_environment_variable(server, hub_dir, ngc_file, monkeypatch) -> None:
    server.routes[f"/m/{FILE_NAME['resnet50']}"] = Route(ngc_file("resnet50").read_bytes())
    monkeypatch.setenv("CONVNETS_WEIGHTS_MIRROR", server.url("/m/"))
    model = hub_load("nvidia_resnet50", progress=False)  # pretrained=True is the default
    assert server.hits == {f"/m/{FILE_NAME['resnet50']}": 1}
    assert_reference_logits(model, "resnet50")
    # A second load is served from the cache.
    hub_load("nvidia_resnet50", progress=False)
    assert server.hits == {f"/m/{FILE_NAME['resnet50']}": 1}


def _layouts(arch: str) -> dict[str, object]:
    flat = standin_state_dict(arch)
    prefixed = OrderedDict(("module." + k, v) for k, v in flat.items())
    layers = OrderedDict()
    for k, v in flat.items():
        if k.startswith("layer"):
            stage, rest = k[len("layer") :].split(".", 1)
            k = f"layers.{int(stage) - 1}.{rest}"
        layers[k] = v
    training = {
        "epoch": 90,
        "best_prec1": 77.1,
        "arch": arch,
        "state_dict": prefixed,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.875, "params": [0, 1]}]},
    }
    layouts = {"ngc-flat": flat, "module-prefix": prefixed, "training-checkpoint": training, "layers-naming": layers}
    if arch == "se-resnext101-32x4d":
        layouts["se-4d"] = OrderedDict(
            (k, v[:, :, None, None] if ".squeeze." in k and k.endswith("weight") else v) for k, v in flat.items()
        )
    return layouts


@pytest.mark.parametrize("arch", ARCH_NAMES)
@pytest.mark.slow
def test_pretrained_from_file_accepts_every_layout(arch, tmp_path) -> None:
    for layout, obj in _layouts(arch).items():
        path = tmp_path / f"{layout}.pth"
        torch.save(obj, path)
        model = hub_load(ENTRY[arch], pretrained=False, pretrained_from_file=str(path))
        assert_reference_logits(model, arch)
        path.unlink()


@pytest.mark.slow
def test_pretrained_from_file_accepts_pathlib_and_trt_gets_4d_se(tmp_path, ngc_file) -> None:
    model = hub_load("nvidia_se_resnext101_32x4d", pretrained=False,
                     pretrained_from_file=ngc_file("se-resnext101-32x4d"), trt=True)
    assert model.layer1[0].squeeze.expand.weight.dim() == 4
    assert_reference_logits(model, "se-resnext101-32x4d")


@pytest.mark.slow
def test_state_dict_key_map_fn_is_applied_to_every_key(tmp_path) -> None:
    renamed = OrderedDict(("backbone/" + k, v) for k, v in standin_state_dict("resnet50").items())
    path = tmp_path / "renamed.pth"
    torch.save(renamed, path)
    seen = []

    def strip(key: str) -> str:
        seen.append(key)
        return key.removeprefix("backbone/")

    model = hub_load("nvidia_resnet50", False, str(path), strip)
    assert len(seen) == 320
    assert_reference_logits(model, "resnet50")


@pytest.mark.slow
def test_legacy_alias_is_resnext(ngc_file) -> None:
    model = hub_load("nvidia_resneXt", pretrained=False, pretrained_from_file=ngc_file("resnext101-32x4d"))
    assert_reference_logits(model, "resnext101-32x4d")


@pytest.mark.slow
def test_channels_last_on_gives_the_same_logits(ngc_file) -> None:
    model = hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=ngc_file("resnet50"),
                     channels_last=True)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert_reference_logits(model, "resnet50")


@pytest.mark.parametrize("arch", ["resnet50", "resnext101-32x4d"])
@pytest.mark.slow
def test_torchvision_peer_gives_the_same_logits(arch, ngc_file, tmp_path) -> None:
    from torchvision.models import resnet50
    from torchvision.models.resnet import Bottleneck, ResNet

    peer = resnet50() if arch == "resnet50" else ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4)
    peer.load_state_dict(standin_state_dict(arch))
    ours = hub_load(ENTRY[arch], pretrained=False, pretrained_from_file=ngc_file(arch)).eval()
    x = parity_input(arch)
    with torch.no_grad():
        diff = (ours(x) - peer.eval()(x)).abs().max().item()
    assert diff <= TOLERANCE
    # And a state dict saved from the torchvision model loads into ours.
    path = tmp_path / "torchvision.pth"
    torch.save(peer.state_dict(), path)
    assert_reference_logits(hub_load(ENTRY[arch], pretrained=False, pretrained_from_file=path), arch)


@pytest.mark.slow
def test_pretrained_load_skips_random_initialisation(ngc_file, monkeypatch) -> None:
    calls = []
    real = torch.nn.init.kaiming_normal_

    def spy(tensor, *args, **kwargs):
        calls.append(tensor.is_meta)
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", spy)
    model = hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=ngc_file("resnet50"))
    assert all(calls), "pretrained weights were preceded by a real random initialisation"
    assert not any(t.is_meta for t in model.state_dict().values())
    hub_load("nvidia_resnet50", pretrained=False)  # the spy works: a model without weights initialises
    assert calls and not calls[-1]


@pytest.mark.slow
def test_loading_in_a_fresh_process_stays_light(ngc_file) -> None:
    """Loading cached weights imports no compiler (torch._dynamo alone takes seconds), HTTP or export modules."""
    code = (
        "import sys, torch\n"
        f"m = torch.hub.load({str(REPO_ROOT)!r}, 'nvidia_resnet50', pretrained=False, "
        f"pretrained_from_file={str(ngc_file('resnet50'))!r}, source='local')\n"
        "with torch.no_grad():\n"
        "    m.eval()(torch.zeros(2, 3, 64, 64))\n"
        "print(sorted(n for n in ('torch._dynamo', 'torchvision', 'torch.onnx', 'requests') if n in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_fine_tuning_head_keeps_backbone_and_warns(ngc_file) -> None:
    with pytest.warns(UserWarning, match="num_classes=10"):
        model = hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=ngc_file("resnet50"), num_classes=10)
    reference = standin_state_dict("resnet50")
    assert model.fc.weight.shape == (10, 2048) and not model.fc.weight.is_meta
    assert torch.equal(model.layer3[2].conv2.weight, reference["layer3.2.conv2.weight"])
    assert not torch.equal(model.fc.bias, torch.zeros(10))  # nn.Linear's default init, not left empty
    with torch.no_grad():
        assert model.eval()(parity_input("resnet50")).shape == (2, 10)


@pytest.mark.slow
def test_fine_tuned_checkpoint_loads_with_its_num_classes(tmp_path) -> None:
    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:10].clone(), state["fc.bias"][:10].clone()
    path = tmp_path / "ten.pth"
    torch.save(state, path)
    model = hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path, num_classes=10)
    assert torch.equal(model.fc.weight, state["fc.weight"])


# --------------------------------------------------------------------------- torch.hub.list / help


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO_ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_list_shows_only_the_entrypoints() -> None:
    hubconf = _hubconf()
    # torch.hub.list's rule: callable attributes not starting with "_".
    listed = sorted(f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_"))
    assert listed == sorted(
        [
            "nvidia_convnets_processing_utils",
            "nvidia_efficientnet",
            "nvidia_efficientnet_b0",
            "nvidia_efficientnet_b4",
            "nvidia_efficientnet_widese_b0",
            "nvidia_efficientnet_widese_b4",
            "nvidia_resneXt",
            "nvidia_resnet50",
            "nvidia_resnext101_32x4d",
            "nvidia_se_resnext101_32x4d",
        ]
    )
    for dep in hubconf.dependencies:
        assert importlib.util.find_spec(dep) is not None, dep


#: What NVIDIA publishes for each checkpoint (spec section 3), written out as facts: the NGC address,
#: the accuracy figures and the parameter count that torch.hub.help must state.
_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia"
PUBLISHED = {
    "resnet50": (f"{_NGC}/resnet50_pyt_amp/versions/20.06.0/files/nvidia_resnet50_200821.pth.tar",
                 ["top-1 78.60%", "top-5 94.19%", "78.69 / 94.16", "250 epochs"], "25,557,032"),
    "resnext101-32x4d": (f"{_NGC}/resnext101_32x4d_pyt_amp/versions/20.06.0/files/"
                         "nvidia_resnext101-32x4d_200821.pth.tar", ["top-1 80.43%"], "44,177,704"),
    "se-resnext101-32x4d": (f"{_NGC}/seresnext101_32x4d_pyt_amp/versions/20.06.0/files/"
                            "nvidia_se-resnext101-32x4d_200821.pth.tar", ["top-1 81.00%"], "45,251,128"),
}


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_checkpoint_table_holds_the_published_files(arch) -> None:
    from resnet import CHECKPOINTS

    assert CHECKPOINTS[arch].url == PUBLISHED[arch][0]
    assert CHECKPOINTS[arch].file_name == FILE_NAME[arch]
    assert CHECKPOINTS[arch].sha256 is None  # NVIDIA publishes no hash: none may be made up


@pytest.mark.parametrize("arch", ARCH_NAMES)
@pytest.mark.slow
def test_hub_help_describes_each_model_entrypoint(arch) -> None:
    doc = getattr(_hubconf(), ENTRY[arch]).__doc__
    _, accuracy, params = PUBLISHED[arch]
    assert FILE_NAME[arch] in doc
    for figure in accuracy:
        assert figure in doc, figure
    assert f"({params} parameters)" in doc
    assert f"{sum(p.numel() for p in hub_load(ENTRY[arch], pretrained=False).parameters()):,}" == params
    for word in ("Returns", "logits", "pretrained_from_file", "state_dict_key_map_fn", "num_classes",
                 "mirror", "sha256", "HashMismatchError", "channels_last", "TORCH_HOME", "Example", ".eval()"):
        assert word in doc, word
    signature = inspect.signature(getattr(_hubconf(), ENTRY[arch]))
    assert list(signature.parameters)[:3] == ["pretrained", "pretrained_from_file", "state_dict_key_map_fn"]
    assert signature.parameters["pretrained"].default is True
    extra = [p for p in list(signature.parameters.values())[3:]]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)
    undocumented = [p.name for p in signature.parameters.values() if f"    {p.name}: " not in doc]
    assert undocumented == [], "every argument of the entrypoint is described in torch.hub.help"


def test_hub_help_for_processing_utils_is_useful() -> None:
    doc = _hubconf().nvidia_convnets_processing_utils.__doc__
    for word in ("prepare_input_from_uri", "pick_n_best", "get_imgnet_classes"):
        assert word in doc


def test_readme_github_snippet_mentions_trust_repo() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "trust_repo=True" in readme
    assert "source='local'" in readme or 'source="local"' in readme
