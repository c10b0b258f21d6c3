"""Every import path that worked before ``resnet/`` was split into layered packages still works.

``fixtures/public_names_before_layers.json`` lists each module of ``resnet`` and ``processing_utils`` as it was
then, with the public names it defined (written once from that tree). Each must still import and hold those
names; moved modules are the new module itself, so patching through the old name patches the code that runs.
Three command-line helpers moved up into the command layer (a lower layer may not import it); they are listed
with their new home.
"""

from __future__ import annotations

import ast
import importlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BEFORE = json.loads((Path(__file__).parent / "fixtures" / "public_names_before_layers.json").read_text())

#: (old module, name) -> the module that holds it now: argparse helpers of the command line, which the layers
#: below it cannot re-export.
MOVED_TO_CLI = {
    ("resnet.loading", "add_workers_option"): "resnet.cli.options",
    ("resnet.loading", "image_size"): "resnet.cli.options",
    ("resnet.recipe", "add_precision_option"): "resnet.cli.options",
}


@pytest.mark.parametrize("module", sorted(BEFORE))
def test_every_module_and_name_still_imports(module: str) -> None:
    imported = importlib.import_module(module)
    for name in BEFORE[module]:
        home = MOVED_TO_CLI.get((module, name))
        owner = importlib.import_module(home) if home else imported
        assert hasattr(owner, name), f"{module}.{name} no longer imports"


def test_moved_modules_are_the_new_modules() -> None:
    import resnet.builder
    import resnet.fastpath
    import resnet.model
    import resnet.models.builder
    import resnet.models.resnet

    assert resnet.builder is resnet.models.builder
    assert resnet.model is resnet.models.resnet and resnet.model.ResNet is resnet.models.resnet.ResNet
    assert resnet.fastpath.optimize_for_inference is resnet.fast.optimize_for_inference
    import processing_utils.inputs
    import resnet.data.inputs

    assert processing_utils.inputs is resnet.data.inputs


@pytest.mark.slow
def test_a_model_pickled_under_the_old_module_name_loads() -> None:
    """Models pickled before the split name ``resnet.model.ResNet``."""
    from resnet.model import ResNet

    model = ResNet("resnet50", num_classes=3)
    data = pickle.dumps(model, protocol=2)  # protocol 2 names classes as "module\nname\n" lines, without lengths
    assert b"cresnet.models.resnet\nResNet\n" in data
    old = data.replace(b"cresnet.models.resnet\n", b"cresnet.model\n")
    assert b"resnet.models" not in old
    code = ("import pickle, sys; m = pickle.loads(sys.stdin.buffer.read()); "
            "print(type(m).__module__, m.fc.out_features)")
    out = subprocess.run([sys.executable, "-c", code], input=old, capture_output=True, cwd=REPO, check=True)
    assert out.stdout.decode().split() == ["resnet.models.resnet", "3"]


def test_the_package_top_level_is_a_handful_of_modules() -> None:
    top = sorted(p.name for p in (REPO / "resnet").glob("*.py"))
    assert len(top) <= 12, top


def test_only_the_command_layer_knows_commanderror() -> None:
    """Library code raises its own errors; ``CommandError`` (exit statuses) is the command line's."""
    users = []
    for path in sorted((REPO / "resnet").rglob("*.py")):
        if path.relative_to(REPO).parts[:2] == ("resnet", "cli"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.Name) and node.id == "CommandError" for node in ast.walk(tree)):
            users.append(str(path.relative_to(REPO)))
    assert users == []
