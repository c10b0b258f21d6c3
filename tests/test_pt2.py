"""resnet.deploy.pt2: torch.export ExportedProgram and AOTInductor package, loaded without this repository.

The files are loaded and run in a fresh Python process started in isolated mode (``-I``: no
PYTHONPATH, no current folder on sys.path) from an empty folder, so nothing of this repository can
be imported there; the logits are compared with the reference fixtures as the ONNX exports are
(test_export.py, 1e-4).

AOTInductor compiles C++ for the whole network: ResNet-50 took 231 s on the 2-core development
machine while other jobs ran. The default run compiles a small network of the same layer kinds
(conv, BatchNorm, ReLU, residual add, pooling, linear) through the same function; the ResNet-50
fixture parity of the AOTInductor package runs when RESNET_TEST_AOTI_RESNET50=1 is set, EfficientNet-B0's
(depthwise convs, squeeze-excitation, SiLU; ``export --format pt2`` took 2.4 min in all) when
RESNET_TEST_AOTI_EFFICIENTNET=1 is. EfficientNet-B0's ExportedProgram is checked by default (slow) against
the eager model and NVIDIA's live fixture logits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from support import load_expected, load_live, parity_input, standin_state_dict
from resnet.models.builder import create_model
from resnet.cli.export import export_metadata, prepare_for_export
from resnet.deploy.pt2 import (
    PACKAGE_METADATA_PREFIX,
    Pt2Error,
    aoti_available,
    compile_package,
    export_program,
    load_metadata,
    program_available,
)

TOLERANCE = 1e-4
FULL_AOTI = os.environ.get("RESNET_TEST_AOTI_RESNET50") == "1"
FULL_AOTI_EFFICIENTNET = os.environ.get("RESNET_TEST_AOTI_EFFICIENTNET") == "1"
#: The EfficientNet checked: B0 with the stand-in of NVIDIA's NGC weights (live recipe).
EFFICIENTNET = "efficientnet-b0"
#: Against NVIDIA's own logits for those weights (another implementation), as the ONNX export is checked.
LIVE_TOLERANCE = 1e-3
needs_program = pytest.mark.skipif(
    not program_available(), reason="this torch has no torch.export.Dim / export(dynamic_shapes=) (torch 2.2) for "
    "the dynamic batch axis; test_without_dynamic_axes_the_error_names_the_torch_version checks the refusal")


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def run_outside_repository(tmp_path: Path, body: str, inputs: dict[str, torch.Tensor]) -> dict:
    """Run ``body`` in ``python -I`` from an empty folder with ``inputs`` loaded; return its ``outputs`` dict."""
    folder = tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    torch.save(inputs, folder / "inputs.pt")
    script = textwrap.dedent("""
        import sys, torch
        inputs = torch.load("inputs.pt")
        outputs = {}
    """) + textwrap.dedent(body) + textwrap.dedent("""
        assert not any(name == "resnet" or name.startswith(("resnet.", "processing_utils")) for name in sys.modules)
        torch.save(outputs, "outputs.pt")
    """)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(folder / "outputs.pt")


@pytest.fixture(scope="module")
def standin(ngc_file) -> torch.nn.Module:
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50"), channels_last=False).eval()


@pytest.fixture(scope="module")
def program(standin, tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "resnet50.pt2"
    meta = export_metadata("resnet50", weights="stand-in")
    return export_program(prepare_for_export(standin), path, metadata=meta)


def batches(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parity input and random batches of 1 and 3 (the dynamic batch axis) with the eager logits."""
    inputs = {"parity": parity_input("resnet50")}
    for batch in (1, 3):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        inputs[f"x{batch}"] = x
        with torch.no_grad():
            inputs[f"expected{batch}"] = model(x)
    return inputs


def check_parity(label: str, outputs: dict, inputs: dict) -> None:
    """The reference logits for the parity input, the eager logits for batches of 1 and 3 (float32)."""
    diff = max_diff(outputs["parity"], load_expected("resnet50")["logits"])
    print(f"{label}: max abs diff to the reference logits {diff:.3g}")
    assert diff <= TOLERANCE
    for batch in (1, 3):
        assert outputs[f"x{batch}"].shape == (batch, 1000) and outputs[f"x{batch}"].dtype == torch.float32
        assert max_diff(outputs[f"x{batch}"], inputs[f"expected{batch}"]) <= TOLERANCE


def load_program_script(path) -> str:
    """The code that loads the ExportedProgram at ``path`` with plain torch and runs it on the parity, batch-1 and
    batch-3 inputs (for :func:`run_outside_repository`)."""
    return f"""
        import json
        extra = {{"metadata.json": ""}}
        module = torch.export.load({str(path)!r}, extra_files=extra).module()
        outputs["metadata"] = json.loads(extra["metadata.json"])
        with torch.no_grad():
            for key in ("parity", "x1", "x3"):
                outputs[key] = module(inputs[key])
    """


@needs_program
@pytest.mark.slow
def test_exported_program_loads_without_this_repository(program, standin, tmp_path) -> None:
    path, _ = program
    inputs = batches(standin)
    outputs = run_outside_repository(tmp_path, load_program_script(path), inputs)
    check_parity("ExportedProgram", outputs, inputs)
    assert outputs["metadata"]["arch"] == "resnet50" and outputs["metadata"]["input"]["name"] == "input"
    assert load_metadata(path) == outputs["metadata"]
    assert not list(path.parent.glob(".*partial*"))


class SmallNet(torch.nn.Module):
    """The layer kinds of ResNet-50 (conv, BN, ReLU, residual add, max/avg pool, linear), small."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, stride=4, padding=3), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1))
        self.body = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8))
        self.fc = torch.nn.Linear(8, 10)
        for bn in (self.stem[1], self.body[1]):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.body(x) + x)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.skipif(not aoti_available(), reason="this torch has no AOTInductor package API")
@pytest.mark.slow
def test_aoti_package_loads_without_this_repository(tmp_path) -> None:
    model = SmallNet().eval()
    meta = {"arch": "small", "classes": 10}
    _, exported = export_program(model, tmp_path / "small.pt2", metadata=meta)
    package, seconds = compile_package(exported, tmp_path / "small-aoti.pt2", metadata=meta)
    print(f"AOTInductor compile of the small network: {seconds:.0f} s")
    inputs = {f"x{b}": torch.randn(b, 3, 224, 224, generator=torch.Generator().manual_seed(b)) for b in (1, 3)}
    outputs = run_outside_repository(tmp_path, f"""
        compiled = torch._inductor.aoti_load_package({str(package)!r})
        outputs["metadata"] = dict(compiled.get_metadata())
        with torch.no_grad():
            for key in ("x1", "x3"):
                outputs[key] = compiled(inputs[key])
    """, inputs)
    for batch in (1, 3):
        with torch.no_grad():
            expected = model(inputs[f"x{batch}"])
        assert outputs[f"x{batch}"].shape == (batch, 10)
        assert max_diff(outputs[f"x{batch}"], expected) <= TOLERANCE
    assert outputs["metadata"][PACKAGE_METADATA_PREFIX + "arch"] == "small"
    assert json.loads(outputs["metadata"][PACKAGE_METADATA_PREFIX + "classes"]) == 10
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.skipif(not FULL_AOTI, reason="AOTInductor compile of ResNet-50 takes minutes: "
                                          "set RESNET_TEST_AOTI_RESNET50=1 to run it")
@pytest.mark.skipif(not aoti_available(), reason="this torch has no AOTInductor package API")
def test_aoti_resnet50_matches_reference_logits(program, standin, tmp_path) -> None:
    _, exported = program
    package, seconds = compile_package(exported, tmp_path / "resnet50-aoti.pt2",
                                       metadata=export_metadata("resnet50", weights="stand-in"))
    print(f"AOTInductor compile of ResNet-50: {seconds:.0f} s")
    inputs = batches(standin)
    outputs = run_outside_repository(tmp_path, f"""
        compiled = torch._inductor.aoti_load_package({str(package)!r})
        with torch.no_grad():
            for key in ("parity", "x1", "x3"):
                outputs[key] = compiled(inputs[key])
    """, inputs)
    check_parity("AOTInductor package", outputs, inputs)


@pytest.fixture(scope="module")
def efficientnet(tmp_path_factory) -> torch.nn.Module:
    path = tmp_path_factory.mktemp("b0") / "nvidia_efficientnet-b0_210412.pth"
    torch.save(standin_state_dict(EFFICIENTNET, live=True), path)
    return create_model(EFFICIENTNET, pretrained_from_file=path).eval()


@pytest.fixture(scope="module")
def efficientnet_program(efficientnet, tmp_path_factory):
    from resnet.models.family import model_data_config

    path = tmp_path_factory.mktemp("pt2-b0") / f"{EFFICIENTNET}.pt2"
    meta = export_metadata(EFFICIENTNET, weights="stand-in", image_size=model_data_config(efficientnet))
    return export_program(prepare_for_export(efficientnet), path, metadata=meta)


def efficientnet_batches(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """NVIDIA's live parity input and random batches of 1 and 3 with the eager logits."""
    inputs = {"parity": parity_input(EFFICIENTNET, live=True)}
    for batch in (1, 3):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(10 + batch))
        inputs[f"x{batch}"] = x
        with torch.no_grad():
            inputs[f"expected{batch}"] = model(x)
    return inputs


def check_efficientnet_parity(label: str, outputs: dict, inputs: dict) -> None:
    diff = max_diff(outputs["parity"], load_live(EFFICIENTNET)["logits"])
    print(f"{label}: max abs diff to NVIDIA's live logits {diff:.3g}")
    assert diff <= LIVE_TOLERANCE
    for batch in (1, 3):
        assert outputs[f"x{batch}"].shape == (batch, 1000) and outputs[f"x{batch}"].dtype == torch.float32
        diff = max_diff(outputs[f"x{batch}"], inputs[f"expected{batch}"])
        print(f"{label}: batch {batch}, max abs diff to the eager model {diff:.3g}")
        assert diff <= TOLERANCE


@needs_program
@pytest.mark.slow
def test_efficientnet_program_loads_without_this_repository(efficientnet_program, efficientnet, tmp_path) -> None:
    """EfficientNet-B0's ExportedProgram (its own modules: depthwise convs, squeeze-excitation, SiLU) runs on plain
    torch like the eager model, for batches of 1 and 3, and says how to prepare its images (bicubic)."""
    path, _ = efficientnet_program
    inputs = efficientnet_batches(efficientnet)
    outputs = run_outside_repository(tmp_path, load_program_script(path), inputs)
    check_efficientnet_parity("EfficientNet-B0 ExportedProgram", outputs, inputs)
    meta = outputs["metadata"]
    assert meta["arch"] == EFFICIENTNET and meta["input"]["shape"] == ["batch", 3, 224, 224]
    assert (meta["preprocessing"]["resize"], meta["preprocessing"]["interpolation"]) == (256, "bicubic")


@pytest.mark.skipif(not FULL_AOTI_EFFICIENTNET, reason="AOTInductor compile of EfficientNet-B0 takes minutes: "
                                                       "set RESNET_TEST_AOTI_EFFICIENTNET=1 to run it")
@pytest.mark.skipif(not aoti_available(), reason="this torch has no AOTInductor package API")
@pytest.mark.slow
def test_aoti_efficientnet_matches_the_eager_model(efficientnet_program, efficientnet, tmp_path) -> None:
    _, exported = efficientnet_program
    package, seconds = compile_package(exported, tmp_path / f"{EFFICIENTNET}-aoti.pt2",
                                       metadata=export_metadata(EFFICIENTNET, weights="stand-in"))
    print(f"AOTInductor compile of EfficientNet-B0: {seconds:.0f} s")
    inputs = efficientnet_batches(efficientnet)
    outputs = run_outside_repository(tmp_path, f"""
        compiled = torch._inductor.aoti_load_package({str(package)!r})
        with torch.no_grad():
            for key in ("parity", "x1", "x3"):
                outputs[key] = compiled(inputs[key])
    """, inputs)
    check_efficientnet_parity("EfficientNet-B0 AOTInductor package", outputs, inputs)


def test_without_aotinductor_the_error_names_the_torch_version(monkeypatch, tmp_path) -> None:
    import torch._inductor

    monkeypatch.delattr(torch._inductor, "aoti_compile_and_package", raising=False)  # torch < 2.6 has none
    assert not aoti_available()
    with pytest.raises(Pt2Error, match=r"torch 2\.6 or newer.*this is torch"):
        compile_package(object(), tmp_path / "x.pt2")
    assert list(tmp_path.iterdir()) == []


class DataDependent(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on values: torch.export cannot capture it
            return x.flatten(1)
        return -x.flatten(1)


@pytest.mark.parametrize("hidden", ["Dim", "dynamic_shapes"])
def test_without_dynamic_axes_the_error_names_the_torch_version(hidden, monkeypatch, tmp_path) -> None:
    """torch 2.1's torch.export has no Dim and no dynamic_shapes=: refused up front, naming torch 2.2, nothing
    written."""
    if hidden == "Dim":
        monkeypatch.delattr(torch.export, "Dim", raising=False)
    else:
        real = torch.export.export
        monkeypatch.setattr(torch.export, "export", lambda f, args, kwargs=None, *, constraints=None: real(f, args))
    assert not program_available()
    with pytest.raises(Pt2Error, match=r"torch 2\.2 or newer with torch\.export\.Dim \(this is torch .+\); upgrade"):
        export_program(SmallNet().eval(), tmp_path / "x.pt2")
    assert list(tmp_path.iterdir()) == []


@needs_program
@pytest.mark.slow
def test_export_failure_is_reported_and_leaves_nothing(tmp_path) -> None:
    with pytest.raises(Pt2Error, match="torch.export could not export the model"):
        export_program(DataDependent(), tmp_path / "bad.pt2")
    assert list(tmp_path.iterdir()) == []
