"""A user's own modules named ``resnet`` / ``processing_utils`` and this repository's packages coexist.

The hub loads this repository's packages without tripping on the user's modules (imported before the load,
or only present on their path), and afterwards ``import resnet`` still gives the user's module. Each case
runs in a fresh interpreter whose working directory holds the user's modules, as a notebook beside the
user's code would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import PHOTOS, REPO_ROOT, load_expected, parity_input

SCRIPT = r"""
import json, sys, torch
IMPORT_FIRST = {import_first}
if IMPORT_FIRST:
    import resnet, processing_utils
REPO, WEIGHTS, PHOTOS, PLOT, INPUT = sys.argv[1:6]
PHOTOS = PHOTOS.split(",")
model = torch.hub.load(REPO, "nvidia_resnet50", source="local", pretrained=False, pretrained_from_file=WEIGHTS)
utils = torch.hub.load(REPO, "nvidia_convnets_processing_utils", source="local")
model.eval()
# The documented example and the batch helpers, all of which reach into the repository's submodules.
batch = torch.cat([utils.prepare_input_from_uri(p) for p in PHOTOS])
with torch.no_grad():
    probs = torch.nn.functional.softmax(model(batch), dim=1)
    logits = model(torch.load(INPUT))
results = utils.pick_n_best(predictions=probs, n=3)
loaded = utils.load_batch(PHOTOS)
streamed = [len(b.uris) for b in utils.iter_batches(PHOTOS, 2)]
utils.show_predictions(PHOTOS, results, output=PLOT)
again = torch.hub.load(REPO, "nvidia_se_resnext101_32x4d", source="local", pretrained=False)
import resnet, processing_utils
print(json.dumps({{
    "resnet": getattr(resnet, "WHO", resnet.__file__),
    "processing_utils": getattr(processing_utils, "WHO", processing_utils.__file__),
    "model_module": type(model).__module__,
    "logits": logits.tolist(),
    "loaded": len(loaded.uris), "streamed": streamed, "results": len(results),
    "again": type(again).__name__,
}}))
"""


def write_user_modules(folder: Path, as_package: bool) -> None:
    for name in ("resnet", "processing_utils"):
        text = f"WHO = \"the user's {name}\"\n"
        if as_package:
            (folder / name).mkdir()
            (folder / name / "__init__.py").write_text(text)
            (folder / name / "preprocessing.py").write_text("VALUE = 'the user s submodule'\n")
        else:
            (folder / f"{name}.py").write_text(text)


@pytest.mark.parametrize(
    "import_first, as_package",
    [(True, False), (False, False), (True, True)],
    ids=["module-imported-before-load", "module-only-on-path", "package-imported-before-load"],
)
@pytest.mark.slow
def test_user_modules_of_the_same_names(tmp_path: Path, ngc_file, import_first: bool, as_package: bool) -> None:
    user = tmp_path / "user_project"
    user.mkdir()
    write_user_modules(user, as_package)
    script = user / "notebook.py"
    script.write_text(SCRIPT.format(import_first=import_first))
    x = parity_input("resnet50")
    import torch

    torch.save(x, tmp_path / "input.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MPLBACKEND"] = "Agg"
    result = subprocess.run(
        [sys.executable, str(script), str(REPO_ROOT), str(ngc_file("resnet50")), ",".join(map(str, PHOTOS[:3])),
         str(tmp_path / "plot.png"), str(tmp_path / "input.pt")],
        cwd=user, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["resnet"] == "the user's resnet"
    assert report["processing_utils"] == "the user's processing_utils"
    assert report["model_module"] == "resnet.models.resnet"
    assert report["loaded"] == 3 and report["streamed"] == [2, 1] and report["results"] == 3
    assert report["again"] == "ResNet"
    assert (tmp_path / "plot.png").stat().st_size > 0
    expected = load_expected("resnet50")["logits"]
    assert (torch.tensor(report["logits"]) - expected).abs().max().item() <= 1e-4


@pytest.mark.slow
def test_without_a_clash_the_packages_stay_importable_after_a_load(tmp_path: Path) -> None:
    """No module of those names elsewhere: after the load, ``from resnet.fast import ...`` works as before."""
    code = (
        "import torch, sys\n"
        f"torch.hub.load({str(REPO_ROOT)!r}, 'nvidia_resnet50', source='local', pretrained=False)\n"
        "from resnet.fast import optimize_for_inference\n"
        "import resnet, processing_utils\n"
        "print(resnet.__file__); print(processing_utils.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    files = result.stdout.split()
    assert files == [str(REPO_ROOT / "resnet" / "__init__.py"), str(REPO_ROOT / "processing_utils" / "__init__.py")]
