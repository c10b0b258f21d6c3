"""``python -m resnet --help``, a command's ``--help`` and argument errors import no torch (nor numpy, Pillow,
requests, tqdm), so that they answer at once; and ``import resnet`` stays light while every way of getting
the model still plugs its eval fast path in."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import REPO_ROOT

HEAVY = ("torch", "torchvision", "numpy", "PIL", "requests", "tqdm", "validators", "onnx", "onnxruntime", "openvino")

PROBE = """
import json, sys
from resnet.__main__ import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(HEAVY)))
print(json.dumps({"status": status, "heavy": heavy}), file=sys.__stderr__)
"""


def probe(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.replace("HEAVY", repr(json.dumps(HEAVY))), *argv],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["classify", "--help"],
    ["evaluate", "--help"],
    ["classify", "photo.jpg", "--top-k", "0"],
    ["classify", "photo.jpg", "--decode", "fast"],
    ["classify", "photo.jpg", "--arch", "resnet51"],
    ["classify", "photo.jpg", "--workers", "x"],
    ["classify", "photo.jpg", "--plot", "/no/such/folder/chart.png"],
    ["classify", "photo.jpg", "--topk", "3"],
    ["classify"],
    ["evaluate", "data", "--decode", "fast"],
    ["train", "--help"],
    ["export", "--help"],
    ["train", "data"],
    ["train", "data", "-o", "run", "--epochs", "0"],
    ["export", "--output", "out", "--format", "tflite"],
    ["export", "--output", "out", "--opset", "x"],
    ["nonsense"],
], ids=lambda argv: " ".join(argv))
def test_help_and_argument_errors_import_nothing_heavy(argv: list[str]) -> None:
    result = probe(*argv)
    assert result["status"] == (0 if "--help" in argv else 2)
    assert result["heavy"] == [], f"python -m resnet {' '.join(argv)} imported {result['heavy']}"


@pytest.mark.slow  # a fresh process that imports torch
def test_import_resnet_is_light_and_its_names_import_on_use() -> None:
    code = ("import sys, resnet; light = 'torch' not in sys.modules; import resnet.models.archs; "
            "print(light, 'torch' in sys.modules, resnet.ARCHS['resnet50'].title, "
            "resnet.ResNet.__module__, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False", "ResNet-50", "v1.5", "resnet.models.resnet", "True"]


@pytest.mark.slow  # seven fresh processes that import torch
@pytest.mark.parametrize("first", [
    "import resnet; resnet.ResNet",
    "from resnet import create_model",
    "from resnet.models.resnet import ResNet",
    "from resnet.models.builder import create_model",
    "import resnet.hub",
    "import resnet.fast.trunk",
    "from resnet import model",
])
def test_the_fast_path_is_plugged_in_whichever_way_the_model_is_imported(first: str) -> None:
    # The accelerator is read before this code imports the fast path itself (its import plugs it in).
    code = (f"{first}\nfrom resnet.models import resnet as m\nplugged = m.inference_accelerator()\n"
            "from resnet.fast import eval_path\nprint(plugged is eval_path.accelerate)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


@pytest.mark.slow  # a fresh process that imports torch
def test_the_package_names_both_families_without_torch() -> None:
    """``import resnet`` lists the EfficientNets beside the ResNets (data only: no torch), and ``resnet.EfficientNet``
    is the class the builder returns."""
    code = ("import sys, resnet; print(resnet.MODEL_ARCHS[3], resnet.EFFICIENTNET_ARCHS['efficientnet-b4']"
            ".data_config.interpolation, 'torch' in sys.modules); "
            "m = resnet.create_model('efficientnet-widese-b0', pretrained=False); "
            "print(type(m) is resnet.EfficientNet, m.arch is resnet.get_efficientnet_arch('efficientnet-widese-b0'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["efficientnet-b0", "bicubic", "False", "True", "True"]
