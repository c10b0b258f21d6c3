"""NVIDIA's EfficientNet entrypoints through torch.hub: every loading path against NVIDIA's own logits.

Expected logits are the live fixtures (tests/fixtures/ngc/README.md), computed with NVIDIA's code from the
stand-in weights; file names, URLs, parameter counts and the entrypoint names are NVIDIA's (the spec).
Nothing leaves 127.0.0.1: weights come from a pre-seeded hub cache, a loopback mirror or a local file.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from support import REPO_ROOT, Route, load_live, parity_input

ARCHS = ("efficientnet-b0", "efficientnet-widese-b0", "efficientnet-b4", "efficientnet-widese-b4")
ENTRY = {arch: "nvidia_" + arch.replace("-", "_") for arch in ARCHS}
#: NVIDIA's file names on NGC (the last part of effnet.py's URLs).
FILE_NAME = {arch: f"nvidia_{arch}_210412.pth" for arch in ARCHS}
#: Parameter counts of NVIDIA's models (established by running NVIDIA's code).
NUM_PARAMS = {"efficientnet-b0": 5_288_548, "efficientnet-b4": 19_341_616, "efficientnet-widese-b0": 8_423_848,
              "efficientnet-widese-b4": 34_927_246, "efficientnet-b1": 7_794_184}
EFFNET_PARAMS = ["dropout", "num_classes", "activation", "conv_init", "bn_momentum", "bn_epsilon", "survival_prob",
                 "trt"]


def hub_load(entry: str, *args, **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(REPO_ROOT), entry, *args, source="local", **kwargs)


def max_diff(model: torch.nn.Module, arch: str, size: int = 224) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(parity_input(arch, size, live=True))
    expected = load_live(arch)["logits" if size == 224 else "logits_380"]
    assert logits.shape == expected.shape
    return (logits.double() - expected.double()).abs().max().item()


def assert_live_parity(model: torch.nn.Module, arch: str) -> None:
    assert max_diff(model, arch) <= 1e-4


@pytest.fixture(scope="module")
def live_file(tmp_path_factory, live_standin):
    """``live_file(arch)``: :func:`live_standin` saved as NVIDIA's file, written once."""
    root = tmp_path_factory.mktemp("effnet-ngc")
    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = root / FILE_NAME[arch]
            torch.save(live_standin(arch), cache[arch])
        return cache[arch]

    return get


# --------------------------------------------------------------------------- pretrained=True


@pytest.mark.slow  # loads NVIDIA's stand-in weights and checks logits: seconds on 2 cores
@pytest.mark.parametrize("arch", ARCHS)
def test_preseeded_hub_cache_matches_nvidia(arch, hub_dir, live_file) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(live_file(arch), hub_dir / "checkpoints" / FILE_NAME[arch])
    model = hub_load(ENTRY[arch], pretrained=True)  # no mirror, no network: the cached file is enough
    assert model.training and type(model).__name__ == "EfficientNet"
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS[arch]
    assert max_diff(model, arch) <= 1e-4
    if "b4" in arch:
        assert max_diff(model, arch, 380) <= 1e-3  # NVIDIA's evaluation size for the B4s


@pytest.mark.slow  # loads NVIDIA's stand-in weights and checks logits: seconds on 2 cores
@pytest.mark.parametrize("arch", ARCHS)
def test_loopback_mirror_download_matches_nvidia(arch, server, hub_dir, live_file) -> None:
    body = live_file(arch).read_bytes()
    server.routes[f"/weights/{FILE_NAME[arch]}"] = Route(body)
    model = hub_load(ENTRY[arch], pretrained=True, mirror=server.url("/weights"), progress=False)
    assert_live_parity(model, arch)
    # The cache machinery of the ResNets: the file and its SHA-256 recorded beside it, nothing else.
    cached = hub_dir / "checkpoints"
    assert sorted(p.name for p in cached.iterdir()) == [FILE_NAME[arch], FILE_NAME[arch] + ".sha256"]
    assert (cached / (FILE_NAME[arch] + ".sha256")).read_text().split()[0] == hashlib.sha256(body).hexdigest()
    # A second load is served from the cache, verified against that hash.
    hub_load(ENTRY[arch], pretrained=True, mirror=server.url("/weights"), progress=False)
    assert server.hits == {f"/weights/{FILE_NAME[arch]}": 1}


@pytest.mark.slow  # loads NVIDIA's stand-in weights and checks logits: seconds on 2 cores
def test_mirror_from_the_environment_and_a_damaged_cache_file(server, hub_dir, live_file, monkeypatch) -> None:
    arch = "efficientnet-b0"
    server.routes[f"/m/{FILE_NAME[arch]}"] = Route(live_file(arch).read_bytes())
    monkeypatch.setenv("CONVNETS_WEIGHTS_MIRROR", server.url("/m/"))
    hub_load(ENTRY[arch], progress=False)  # pretrained=True is the default
    cached = hub_dir / "checkpoints" / FILE_NAME[arch]
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    from resnet.weights.reading import HashMismatchError

    with pytest.raises(HashMismatchError, match="damaged"):
        hub_load(ENTRY[arch], progress=False)
    assert not cached.exists()  # removed: the next call downloads it afresh
    assert_live_parity(hub_load(ENTRY[arch], progress=False), arch)
    assert server.hits == {f"/m/{FILE_NAME[arch]}": 2}


def test_sha256_is_checked_for_nvidias_file(server, live_file) -> None:
    from resnet.weights.reading import HashMismatchError

    arch = "efficientnet-b0"
    server.routes[f"/w/{FILE_NAME[arch]}"] = Route(live_file(arch).read_bytes())
    with pytest.raises(HashMismatchError, match="was not kept"):
        hub_load(ENTRY[arch], mirror=server.url("/w"), progress=False, sha256="0" * 64)


def test_no_network_error_names_the_cache_path_and_the_offline_routes(hub_dir, monkeypatch) -> None:
    from resnet.weights.reading import WeightsDownloadError

    monkeypatch.setenv("CONVNETS_WEIGHTS_MIRROR", "http://127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(WeightsDownloadError) as info:
        hub_load("nvidia_efficientnet_widese_b0", progress=False)
    message = str(info.value)
    assert str(hub_dir / "checkpoints" / FILE_NAME["efficientnet-widese-b0"]) in message
    assert "pretrained_from_file=PATH" in message


# --------------------------------------------------------------------------- pretrained_from_file


def _module_prefix_se_4d(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """NVIDIA's NGC file as DistributedDataParallel and trt=True would write it: 'module.' and 4-D SE weights."""
    return OrderedDict(("module." + k, v.reshape(*v.shape, 1, 1) if ".se." in k and v.dim() == 2 else v)
                       for k, v in state.items())


@pytest.mark.slow  # loads NVIDIA's stand-in weights and checks logits: seconds on 2 cores
@pytest.mark.parametrize("arch", ARCHS)
def test_pretrained_from_file_with_module_prefix_and_4d_se(arch, tmp_path, live_standin) -> None:
    state = _module_prefix_se_4d(live_standin(arch))
    assert any(v.dim() == 4 and ".se.squeeze." in k for k, v in state.items())
    path = tmp_path / "ddp.pth"
    torch.save(state, path)
    model = hub_load(ENTRY[arch], pretrained=False, pretrained_from_file=str(path))
    assert_live_parity(model, arch)


@pytest.mark.slow  # loads NVIDIA's stand-in weights and checks logits: seconds on 2 cores
def test_pretrained_from_file_ngc_naming_and_trt(live_file) -> None:
    """NVIDIA's own pretrained_from_file fails on its NGC files (KeyError 'layer1.block0.se'); here they load,
    also into the 1x1-convolution SE of trt=True."""
    arch = "efficientnet-widese-b0"
    model = hub_load(ENTRY[arch], False, live_file(arch), trt=True)
    assert model.layers[0].block0.se.squeeze.weight.dim() == 4
    assert_live_parity(model, arch)


@pytest.mark.slow  # loads NVIDIA's stand-in weights and checks logits: seconds on 2 cores
def test_state_dict_key_map_fn_sees_every_raw_key(tmp_path, live_standin) -> None:
    arch = "efficientnet-b0"
    renamed = OrderedDict(("net/" + k, v) for k, v in live_standin(arch).items())
    path = tmp_path / "renamed.pth"
    torch.save(renamed, path)
    seen = []

    def strip(key: str) -> str:
        seen.append(key)
        return key.removeprefix("net/")

    assert_live_parity(hub_load(ENTRY[arch], False, str(path), strip), arch)
    assert len(seen) == 360


def test_file_of_another_arch_names_the_arch_it_fits(live_file) -> None:
    from resnet.weights.reading import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError, match="efficientnet-widese-b0"):
        hub_load("nvidia_efficientnet_b0", pretrained=False, pretrained_from_file=live_file("efficientnet-widese-b0"))


def test_pretrained_with_a_file_and_a_file_given_as_pretrained_are_refused(live_file) -> None:
    path = live_file("efficientnet-b0")
    with pytest.raises(ValueError, match="mutually exclusive"):
        hub_load("nvidia_efficientnet_b0", pretrained=True, pretrained_from_file=path)
    with pytest.raises(TypeError, match="pretrained=False, pretrained_from_file="):
        hub_load("nvidia_efficientnet_b0", str(path))


def test_new_head_keeps_the_backbone(live_file, live_standin) -> None:
    with pytest.warns(UserWarning, match="freshly initialised"):
        model = hub_load("nvidia_efficientnet_b0", pretrained=False, pretrained_from_file=live_file("efficientnet-b0"),
                         num_classes=10)
    assert model.classifier.fc.out_features == 10 and model.classes is None
    assert torch.equal(model.stem.conv.weight, live_standin("efficientnet-b0")["stem.conv.weight"])


# --------------------------------------------------------------------------- signature, errors, nvidia_efficientnet


@pytest.mark.parametrize("entry", list(ENTRY.values()))
def test_signature_is_nvidias_and_the_docstring_helps(entry) -> None:
    import resnet.hub

    function = getattr(resnet.hub, entry)
    parameters = list(inspect.signature(function).parameters.values())
    assert [p.name for p in parameters[:3]] == ["pretrained", "pretrained_from_file", "state_dict_key_map_fn"]
    assert parameters[0].default is True and parameters[1].default is None and parameters[2].default is None
    assert [p.name for p in parameters[3:11]] == EFFNET_PARAMS
    arch = entry.removeprefix("nvidia_").replace("_", "-")
    doc = function.__doc__
    assert FILE_NAME[arch] in doc and "not re-measured here" in doc
    size = 380 if "b4" in arch else 224
    assert f"{size}x{size}" in doc and f"{size + 32}" in doc and "bicubic" in doc


def test_unknown_keyword_lists_the_accepted_ones() -> None:
    with pytest.raises(TypeError) as info:
        hub_load("nvidia_efficientnet_b0", pretrained=False, last_bn_0_init=True)
    message = str(info.value)
    listed = message.split("it accepts ", 1)[1].split(".", 1)[0].split(", ")
    assert listed[:3] == ["pretrained", "pretrained_from_file", "state_dict_key_map_fn"]
    assert listed[3:11] == EFFNET_PARAMS
    with pytest.raises(TypeError, match=r"'survival_prop'.*Did you mean 'survival_prob'\?"):
        hub_load("nvidia_efficientnet_b4", pretrained=False, survival_prop=0.5)


def test_effnet_params_take_effect() -> None:
    model = hub_load("nvidia_efficientnet_b0", pretrained=False, dropout=0.3, bn_epsilon=1e-5, bn_momentum=0.1,
                     activation="relu", num_classes=7, survival_prob=0.5)
    assert model.classifier.dropout.p == 0.3 and model.classifier.fc.out_features == 7
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not any(isinstance(m, torch.nn.SiLU) for m in model.modules())
    assert model.layers[6].block0.residual is None and model.layers[5].block1.residual.survival_prob < 1
    with pytest.raises(ValueError, match="quantized=True.*export --int8"):
        hub_load("nvidia_efficientnet_b0", pretrained=False, quantized=True)


def test_nvidia_efficientnet_default_and_nvidias_misspelt_default() -> None:
    import resnet.hub

    assert inspect.signature(resnet.hub.nvidia_efficientnet).parameters["pretrained"].default is True
    assert hub_load("nvidia_efficientnet", pretrained=False).arch.name == "efficientnet-b0"
    assert hub_load("nvidia_efficientnet", type="efficient-b0", pretrained=False).arch.name == "efficientnet-b0"
    model = hub_load("nvidia_efficientnet", type="efficientnet_widese_b4", pretrained=False)
    assert model.arch.name == "efficientnet-widese-b4"
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS["efficientnet-widese-b4"]


@pytest.mark.slow  # loads NVIDIA's stand-in weights and checks logits: seconds on 2 cores
def test_nvidia_efficientnet_with_weights(hub_dir, live_file) -> None:
    arch = "efficientnet-widese-b0"
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(live_file(arch), hub_dir / "checkpoints" / FILE_NAME[arch])
    assert_live_parity(hub_load("nvidia_efficientnet", type=arch), arch)


def test_archs_without_ngc_weights_build_but_refuse_pretrained(tmp_path) -> None:
    from resnet.weights.reading import WeightsError

    model = hub_load("nvidia_efficientnet", type="efficientnet-b1", pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS["efficientnet-b1"]
    with pytest.raises(WeightsError, match=r"no pretrained weights for efficientnet-b1 .*pretrained=False"):
        hub_load("nvidia_efficientnet", type="efficientnet-b1")
    with pytest.raises(WeightsError, match="efficientnet-widese-b7"):
        hub_load("nvidia_efficientnet", type="efficientnet-widese-b7", pretrained=True)
    # Own weights of such an arch load with pretrained_from_file.
    path = tmp_path / "b1.pth"
    torch.save(model.state_dict(), path)
    again = hub_load("nvidia_efficientnet", type="efficientnet-b1", pretrained=False, pretrained_from_file=path)
    assert torch.equal(again.classifier.fc.weight, model.classifier.fc.weight)


@pytest.mark.parametrize("key", ["efficientnet-quant-b0", "efficientnet-quant-b4"])
def test_qat_variants_point_at_export_int8(key) -> None:
    with pytest.raises(ValueError, match=r"pytorch_quantization.*python -m resnet export --int8"):
        hub_load("nvidia_efficientnet", type=key, pretrained=False)


def test_nvidia_efficientnet_refuses_other_families_and_unknown_keys() -> None:
    with pytest.raises(ValueError, match="'nvidia_resnet50' entrypoint"):
        hub_load("nvidia_efficientnet", type="resnet50", pretrained=False)
    with pytest.raises(ValueError, match="unknown EfficientNet architecture 'efficientnet-b9'"):
        hub_load("nvidia_efficientnet", type="efficientnet-b9", pretrained=False)
    with pytest.raises(TypeError, match="it accepts type, pretrained, pretrained_from_file"):
        hub_load("nvidia_efficientnet", pretrained=False, weights="DEFAULT")
