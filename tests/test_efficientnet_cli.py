"""``python -m resnet classify / evaluate / train / export --arch efficientnet-b0``, end to end in this process.

Weights are the live stand-in of NVIDIA's NGC file written to a file (``--weights``), never the network. The
peer is torchvision's own ``efficientnet_b0`` (the same architecture as NVIDIA's original B0, with BatchNorm eps
set to NVIDIA's 1e-3) holding the same weights, fed by torchvision's transforms at NVIDIA's evaluation
preprocessing (Resize 256 bicubic, CenterCrop 224: the spec's configs.yml and dataloaders.py); it is checked
against NVIDIA's live fixture logits first. ONNX exports are checked against those fixture logits.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import PHOTOS, load_live, parity_input, standin_state_dict
from torchvision import transforms
from train_support import FAST, main, make_dataset

ARCH = "efficientnet-b0"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Probabilities printed by classify against the peer's softmax (the logits agree within 1e-4).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ngc_state() -> "OrderedDict[str, torch.Tensor]":
    return standin_state_dict(ARCH, live=True)


@pytest.fixture(scope="module")
def weights(ngc_state, tmp_path_factory) -> Path:
    """NVIDIA's NGC file for B0 (stand-in), as a local file."""
    path = tmp_path_factory.mktemp("b0") / "nvidia_efficientnet-b0_210412.pth"
    torch.save(ngc_state, path)
    return path


@pytest.fixture(scope="module")
def sharp_state(ngc_state) -> "OrderedDict[str, torch.Tensor]":
    """The NGC file with a 3-class head of three of its rows, sharpened: probabilities that follow the features
    (the 1000-class stand-in's are nearly uniform, so a change of preprocessing would hardly show)."""
    state = OrderedDict(ngc_state)
    rows = [10, 500, 900]
    state["classifier.fc.weight"] = ngc_state["classifier.fc.weight"][rows].clone() * 10
    state["classifier.fc.bias"] = ngc_state["classifier.fc.bias"][rows].clone()
    return state


@pytest.fixture(scope="module")
def sharp_weights(sharp_state, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sharp") / "three_classes.pth"
    torch.save(sharp_state, path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Noise photos, 340x300: the stand-in's BatchNorm statistics were measured on noise, so its features stay in
    range on them (on real photos they saturate), and resampling them shows (bicubic differs from bilinear)."""
    import numpy as np

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        path = folder / f"noise{i}.png"
        Image.fromarray(rng.integers(0, 256, (300, 340, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def torchvision_peer(state: "OrderedDict[str, torch.Tensor]", num_classes: int = 1000) -> torch.nn.Module:
    """torchvision's efficientnet_b0 with ``state`` (NVIDIA's entry order is torchvision's; SE weights 4-D there)."""
    from torchvision.models import efficientnet_b0

    peer = efficientnet_b0(num_classes=num_classes)
    for module in peer.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-3  # NVIDIA's; torchvision's B0 keeps PyTorch's 1e-5
    theirs = peer.state_dict()
    assert len(theirs) == len(state)
    mapped = {}
    for (name, value), (their_name, their_value) in zip(state.items(), theirs.items()):
        assert value.numel() == their_value.numel(), (name, their_name)
        mapped[their_name] = value.reshape(their_value.shape)
    peer.load_state_dict(mapped)
    return peer.eval()


@pytest.fixture(scope="module")
def peer(ngc_state) -> torch.nn.Module:
    model = torchvision_peer(ngc_state)
    with torch.no_grad():
        logits = model(parity_input(ARCH, live=True))
    assert (logits - load_live(ARCH)["logits"]).abs().max() <= 1e-4  # the peer computes NVIDIA's B0
    return model


def pipeline(size: int, resize: int, interpolation: transforms.InterpolationMode):
    return transforms.Compose([transforms.Resize(resize, interpolation=interpolation), transforms.CenterCrop(size),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def peer_probabilities(model: torch.nn.Module, photos, size: int = 224, resize: int = 256,
                       interpolation=transforms.InterpolationMode.BICUBIC) -> torch.Tensor:
    batch = torch.stack([pipeline(size, resize, interpolation)(Image.open(p).convert("RGB")) for p in photos])
    with torch.no_grad():
        return model(batch).softmax(1).double()


def classify_table(capsys, photos, classes: int, *args) -> torch.Tensor:
    assert main("classify", *photos, "--json", "--quiet", "--top-k", "5", *args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    table = torch.zeros(len(rows), classes, dtype=torch.float64)
    for i, row in enumerate(rows):
        for entry in row["top"]:
            table[i, entry["index"]] = entry["probability"]
    return table


def agrees(table: torch.Tensor, probabilities: torch.Tensor) -> float:
    """Largest difference over the classes classify printed."""
    shown = table > 0
    return (table[shown] - probabilities[shown]).abs().max().item()


# --------------------------------------------------------------------------- classify, evaluate


@pytest.mark.slow  # a whole command run in process: seconds to a minute on 2 cores
def test_classify_uses_the_arch_preprocessing(sharp_weights, sharp_state, photos, capsys) -> None:
    peer = torchvision_peer(sharp_state, 3)
    table = classify_table(capsys, photos, 3, "--arch", ARCH, "--weights", sharp_weights)
    bicubic = peer_probabilities(peer, photos)
    bilinear = peer_probabilities(peer, photos, interpolation=transforms.InterpolationMode.BILINEAR)
    assert agrees(table, bilinear) > 100 * TOLERANCE  # the interpolation shows in the probabilities
    assert agrees(table, bicubic) <= TOLERANCE
    # --image-size overrides the size; the resize follows in the arch's proportion, bicubic still.
    table = classify_table(capsys, photos, 3, "--arch", "efficientnet_b0", "--weights", sharp_weights,
                           "--image-size", "192")
    assert agrees(table, peer_probabilities(peer, photos, 192, round(192 * 256 / 224))) <= TOLERANCE


@pytest.mark.slow  # a whole command run in process: seconds to a minute on 2 cores
def test_evaluate_end_to_end(weights, peer, photos, tmp_path, capsys) -> None:
    from resnet.data.synsets import imagenet_wnids

    logits = peer_probabilities(peer, photos).log()
    top2 = logits.topk(2, dim=1).values
    assert bool(((top2[:, 0] - top2[:, 1]) > 1e-3).all())  # no near-tie that the fast path's rounding could swap
    data = tmp_path / "data"
    for photo, label in zip(photos, logits.argmax(1).tolist()):
        folder = data / imagenet_wnids()[label]  # ImageNet's layout: folders named by WordNet id
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.name)
    assert main("evaluate", data, "--arch", ARCH, "--weights", weights, "--json", "--quiet") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["top1"] == 100.0 and report["images"] == len(photos)
    assert report["model"].startswith(ARCH) and report["model"].endswith("224x224 (resize 256, bicubic)")


def test_arch_options_and_their_errors(weights, capsys) -> None:
    with pytest.raises(SystemExit) as refused:  # refused by argparse, at parse time
        main("classify", PHOTOS[0], "--arch", "efficientnet-quant-b0", "--weights", weights)
    assert refused.value.code == 2 and "export --int8" in capsys.readouterr().err
    # No NGC weights for B1: a clear error, before any download.
    assert main("classify", PHOTOS[0], "--arch", "efficientnet-b1") == 2
    err = capsys.readouterr().err
    assert "no pretrained weights for efficientnet-b1" in err and "--weights FILE" in err
    # A file of another arch names the one it fits.
    assert main("classify", PHOTOS[0], "--arch", "efficientnet-widese-b0", "--weights", weights) == 2
    assert "efficientnet-b0" in capsys.readouterr().err


# --------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "data", per_class=3, val_per_class=2)


@pytest.mark.slow  # a whole command run in process: seconds to a minute on 2 cores
def test_train_freeze_backbone_then_classify_and_evaluate_the_run(weights, ngc_state, tiny_data, tmp_path,
                                                                  capsys) -> None:
    from resnet.models.builder import create_model
    from resnet.weights.reading import read_checkpoint

    run = tmp_path / "run"
    args = ["--arch", ARCH, "--weights", weights, "--output", run, "--epochs", "2", "-b", "4", "--freeze-backbone",
            *FAST]
    args[args.index("--image-size") + 1] = "64"
    assert main("train", tiny_data, *args) == 0
    saved = read_checkpoint(run / "model.pth")
    assert saved["arch"] == ARCH and saved["image_size"] == 64 and saved["classes"] == ["blue", "green", "red"]
    # The backbone (BatchNorm statistics included) is NVIDIA's file unchanged; the new head was trained.
    model = create_model(ARCH, pretrained_from_file=run / "model.pth")
    assert model.classes == ["blue", "green", "red"] and model.image_size == 64
    reference = create_model(ARCH, pretrained_from_file=weights).state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("classifier.fc."):
            assert torch.equal(value, reference[name]), name
    assert model.classifier.fc.weight.shape == (3, 1280)
    capsys.readouterr()
    # The run's model.pth works in every command, at its own size (64) with the arch's interpolation.
    peer = torchvision_peer(model.state_dict(), num_classes=3)
    photos = sorted((tiny_data / "val").rglob("*.png"))
    table = classify_table(capsys, photos, 3, "--arch", ARCH, "--weights", run / "model.pth")
    assert agrees(table, peer_probabilities(peer, photos, 64, round(64 * 256 / 224))) <= TOLERANCE
    assert main("evaluate", tiny_data / "val", "--arch", ARCH, "--weights", run / "model.pth", "--json",
                "--quiet") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 6 and report["model"].endswith("64x64 (resize 73, bicubic)")


@pytest.mark.slow  # a whole command run in process: seconds to a minute on 2 cores
def test_train_the_whole_network(weights, tiny_data, tmp_path) -> None:
    """Fine-tuning every layer: training mode (dropout, BatchNorm batch statistics) and a new head."""
    from resnet.weights.reading import read_checkpoint

    run = tmp_path / "run"
    args = ["--arch", ARCH, "--weights", weights, "--output", run, "--epochs", "1", "-b", "3", *FAST]
    args[args.index("--image-size") + 1] = "64"
    assert main("train", tiny_data, *args) == 0
    saved = read_checkpoint(run / "model.pth")["state_dict"]
    original = standin_state_dict(ARCH, live=True)
    assert not torch.equal(saved["stem.conv.weight"], original["stem.conv.weight"])  # the backbone trained too
    assert saved["classifier.fc.weight"].shape == (3, 1280)


# --------------------------------------------------------------------------- export


@pytest.mark.slow  # a whole command run in process: seconds to a minute on 2 cores
def test_export_onnx_matches_nvidia_through_onnx_runtime(weights, tmp_path, capsys) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from resnet.deploy.runtimes import load_onnx_model

    out = tmp_path / "out"
    assert main("export", "--arch", ARCH, "--weights", weights, "--format", "both", "--output", out, "--quiet") == 0
    record = json.loads((out / "export.json").read_text())
    assert record["arch"] == ARCH and record["input"]["shape"] == ["batch", 3, 224, 224]
    assert record["preprocessing"]["resize"] == 256 and record["preprocessing"]["interpolation"] == "bicubic"
    onnx_files = sorted(out.glob("*.onnx"))
    assert len(onnx_files) == 1
    model = load_onnx_model(onnx_files[0], "onnxruntime")
    assert model.data_config.interpolation == "bicubic" and model.data_config.resize_size == 256
    expected = load_live(ARCH)["logits"]
    assert (model(parity_input(ARCH, live=True)) - expected).abs().max() <= 1e-3
    scripted = torch.jit.load(str(next(out.glob("*.pt"))))
    with torch.no_grad():
        assert (scripted(parity_input(ARCH, live=True)) - expected).abs().max() <= 1e-3


@pytest.mark.slow  # a whole command run in process: seconds to a minute on 2 cores
def test_classify_onnx_prepares_images_as_the_export_says(sharp_weights, sharp_state, photos, tmp_path,
                                                          capsys) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    assert main("export", "--arch", ARCH, "--weights", sharp_weights, "--format", "onnx", "--output", out,
                "--quiet") == 0
    table = classify_table(capsys, photos, 3, "--onnx", next(out.glob("*.onnx")))
    assert agrees(table, peer_probabilities(torchvision_peer(sharp_state, 3), photos)) <= 1e-3


@pytest.mark.slow  # a whole command run in process: seconds to a minute on 2 cores
def test_export_int8_of_an_efficientnet(weights, tmp_path, capsys) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, calibration / photo.name)
    out = tmp_path / "out"
    assert main("export", "--arch", ARCH, "--weights", weights, "--format", "onnx", "--int8", "--calibration",
                calibration, "--output", out, "--quiet") == 0
    record = json.loads((out / "export.json").read_text())
    assert record["preprocessing"]["interpolation"] == "bicubic"
    assert len(list(out.glob("*.onnx"))) == 2
