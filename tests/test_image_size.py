"""The image size a model was trained at (``image_size`` in a model.pth of ``train``) is what classify, evaluate
and export use by default; ``--image-size`` overrides it. The peer is torchvision's resnet50 with the same
weights and torchvision's own transforms at that size (Resize 256/224 of it, CenterCrop)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from support import PHOTOS, standin_state_dict
from train_support import main

import resnet.training.run_files as run_files

CLASSES = ["apple", "banana", "cherry"]
#: Probabilities printed by the fast path against the peer's softmax (logits within 1e-4).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> tuple[Path, dict]:
    """A 3-class model.pth trained (as far as the file says) at 128 x 128."""
    state = standin_state_dict("resnet50")
    rows = [10, 500, 900]  # three rows of the stand-in head, sharpened: probabilities that follow the features
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][rows].clone() * 3, state["fc.bias"][rows].clone()
    path = tmp_path_factory.mktemp("small") / "model.pth"
    torch.save(run_files.model_file(state, arch="resnet50", classes=CLASSES, image_size=128), path)
    return path, state


def peer_probabilities(state: dict, size: int) -> torch.Tensor:
    from torchvision import transforms
    from torchvision.models import resnet50

    peer = resnet50(num_classes=3)
    peer.load_state_dict(state)
    pipeline = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size),
                                   transforms.ToTensor(),
                                   transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    batch = torch.stack([pipeline(Image.open(p).convert("RGB")) for p in PHOTOS])
    with torch.no_grad():
        return peer.eval()(batch).softmax(1)


def classify_json(capsys, *args) -> torch.Tensor:
    assert main("classify", *PHOTOS, "--json", "--quiet", "--top-k", "3", *args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    table = torch.zeros(len(rows), 3, dtype=torch.float64)
    for i, row in enumerate(rows):
        for entry in row["top"]:
            table[i, entry["index"]] = entry["probability"]
    return table


@pytest.mark.slow
def test_the_model_records_its_size(small_model) -> None:
    from resnet.models.builder import create_model

    assert create_model("resnet50", pretrained_from_file=small_model[0]).image_size == 128
    assert create_model("resnet50").image_size is None


@pytest.mark.slow
def test_classify_uses_the_trained_size_unless_told(small_model, capsys) -> None:
    path, state = small_model
    at_128, at_224 = peer_probabilities(state, 128), peer_probabilities(state, 224)
    assert (at_128 - at_224).abs().max() > 50 * TOLERANCE  # the size makes a difference
    assert (classify_json(capsys, "--weights", path) - at_128).abs().max() <= TOLERANCE
    assert (classify_json(capsys, "--weights", path, "--image-size", "224") - at_224).abs().max() <= TOLERANCE


@pytest.mark.slow
def test_evaluate_uses_the_trained_size_unless_told(small_model, tmp_path, capsys) -> None:
    path, state = small_model
    data = tmp_path / "data"
    labels = peer_probabilities(state, 128).argmax(1).tolist()
    for photo, label in zip(PHOTOS, labels):
        (data / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, data / CLASSES[label] / photo.name)
    assert main("evaluate", data, "--weights", path, "--json", "--quiet") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"].endswith("128x128") and report["top1"] == 100.0
    assert main("evaluate", data, "--weights", path, "--json", "--quiet", "--image-size", "224") == 0
    assert json.loads(capsys.readouterr().out)["model"].endswith("224x224")


@pytest.mark.slow
def test_export_writes_the_trained_size_and_its_onnx_runs_at_it(small_model, tmp_path, capsys) -> None:
    path, state = small_model
    out = tmp_path / "out"
    assert main("export", "--weights", path, "--format", "onnx", "--onnx-exporter", "torchscript", "--output", out,
                "--quiet") == 0
    record = json.loads((out / "export.json").read_text())
    assert record["input"]["shape"] == ["batch", 3, 128, 128]
    assert record["preprocessing"]["resize"] == 146 and record["preprocessing"]["center_crop"] == 128
    from resnet.deploy.runtimes import load_onnx_model

    assert load_onnx_model(out / "resnet50.onnx").image_size == 128
    assert (classify_json(capsys, "--onnx", out / "resnet50.onnx") - peer_probabilities(state, 128)).abs().max() \
        <= TOLERANCE
    # The export's own size only: another --image-size is refused, in one line.
    assert main("classify", PHOTOS[0], "--onnx", out / "resnet50.onnx", "--image-size", "224", "--quiet") == 2
    assert "the exported model takes 128x128 images" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.slow
def test_triton_configs_and_torchscript_take_the_trained_size(small_model, tmp_path) -> None:
    path, _ = small_model
    repo = tmp_path / "repo"
    assert main("export", "--weights", path, "--triton", repo, "--backend", "pytorch", "--quiet") == 0
    config = (repo / "resnet50_libtorch" / "config.pbtxt").read_text()
    assert "dims: [ 3, 128, 128 ]" in config
    # The preprocessing a client needs: a ResNet trained at 128 is served images resized to 146, bilinear.
    for key, value in (("image_size", "128"), ("resize_size", "146"), ("interpolation", "bilinear")):
        assert f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}' in config
    traced = torch.jit.load(str(repo / "resnet50_libtorch" / "1" / "model.pt"))
    assert traced(torch.zeros(2, 3, 128, 128)).shape == (2, 3)
    assert (repo / "resnet50_libtorch" / "labels.txt").read_text().splitlines() == CLASSES
