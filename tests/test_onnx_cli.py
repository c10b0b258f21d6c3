"""``classify --onnx`` / ``evaluate --onnx`` and ``export --int8`` of a fine-tuned model, from the command line.

One fine-tuned file (``model.pth`` as ``train`` writes it: the stand-in backbone and a decisive 3-class head,
one class per sample photo, fitted on the pooled features that torchvision's ``resnet50`` -- the peer --
computes for the photos) is exported once, fp32 ONNX and INT8, with a tiny calibration set. The
exported model must then print what the PyTorch model prints (classify) and report what it reports
(evaluate), with the fine-tuned class names read from the export's metadata. Everything runs in this
process through ``python -m resnet``'s ``main``, except the two-process evaluation (torchrun).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from support import PHOTOS, assert_top_k_agrees, standin_state_dict
from train_support import main, torchrun

import onnx  # noqa: E402 - required by the tests (requirements-test.txt)
import onnxruntime  # noqa: E402,F401

from test_evaluate import peer_logits  # noqa: E402
from test_runtimes import tiny_classifier, tiny_reference  # noqa: E402

import resnet.training.run_files as run_files  # noqa: E402
from resnet.cli.options import CommandError, onnx_precision  # noqa: E402
from resnet.deploy.runtimes import runtime_available  # noqa: E402
from resnet.data.synsets import imagenet_class_names  # noqa: E402

FRUIT = ["apple", "banana", "cherry"]
#: Probabilities printed by the PyTorch fast path and by ONNX Runtime on the fp32 export (logits within 1e-4).
PROBABILITY_TOLERANCE = 1e-4
HAS_OPENVINO = runtime_available("openvino")


def run(capsys, *args) -> tuple[int, str, str]:
    """``python -m resnet ARGS`` in-process: (exit status, stdout, stderr)."""
    try:
        status = main(*args)
    except SystemExit as exit:  # argparse
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------- shared files


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, dict]:
    """``model.pth`` of a 3-class model and its state dict: photo i (i < 3) is class i for the peer.

    Class j's weights point from the photos' mean feature to photo j's (the stand-in ImageNet head ranks
    the same class first for every sample photo, so its rows would not separate them).
    """
    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = torch.eye(2048), torch.zeros(2048)
    features = peer_logits(state, PHOTOS)  # an identity head: the pooled features
    mean = features.mean(0)
    weight = features[:3] - mean
    weight = 10 * weight / weight.norm(dim=1, keepdim=True)
    state["fc.weight"], state["fc.bias"] = weight, -(weight @ mean)
    assert peer_logits(state, PHOTOS).argmax(1).tolist()[:3] == [0, 1, 2]
    path = tmp_path_factory.mktemp("tuned") / "model.pth"
    torch.save(run_files.model_file(state, arch="resnet50", classes=FRUIT, image_size=224), path)
    return path, state


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    """The 4 sample photos and a file that is not an image."""
    folder = tmp_path_factory.mktemp("calibration")
    for photo in PHOTOS:
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder


@pytest.fixture(scope="module")
def exported(tuned, calibration, tmp_path_factory) -> tuple[Path, str]:
    """``export --format onnx --int8`` of the fine-tuned file: (output folder, stderr)."""
    out = tmp_path_factory.mktemp("export") / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main("export", "--weights", tuned[0], "--format", "onnx", "--int8", "--calibration", calibration,
                      "--onnx-exporter", "torchscript", "--output", out)
    assert status == 0, err.getvalue()
    return out, err.getvalue()


@pytest.fixture(scope="module")
def data(tuned, tmp_path_factory) -> Path:
    """A labelled folder: two photos in their predicted class, two in another one."""
    predicted = peer_logits(tuned[1], PHOTOS).argmax(1).tolist()
    truth = [predicted[0], (predicted[1] + 1) % 3, predicted[2], (predicted[3] + 2) % 3]
    root = tmp_path_factory.mktemp("data") / "fruit"
    for photo, label in zip(PHOTOS, truth):
        (root / FRUIT[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / FRUIT[label] / photo.name)
    return root


# --------------------------------------------------------------------------- export --int8


@pytest.mark.slow
def test_int8_export_of_a_fine_tuned_model_records_its_calibration_and_names(exported) -> None:
    out, err = exported
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "resnet50-int8.onnx", "resnet50.onnx"]
    record = json.loads((out / "export.json").read_text())
    assert record["class_names"] == FRUIT and record["output"]["shape"] == ["batch", 3]
    assert record["files"] == ["resnet50.onnx", "resnet50-int8.onnx"]
    int8 = record["int8"]
    assert int8["file"] == "resnet50-int8.onnx" and int8["calibration_method"] == "minmax"
    assert (int8["calibration_images"], int8["calibration_skipped"], int8["calibration_skipped_files"]) == (
        4, 1, ["broken.jpg"])

    proto = onnx.load(str(out / "resnet50-int8.onnx"))
    props = {p.key: json.loads(p.value) if p.value[:1] in "[{" else p.value for p in proto.metadata_props}
    assert props["class_names"] == FRUIT
    assert {k: props["quantization"][k] for k in ("calibration_images", "calibration_skipped_files",
                                                  "calibration_method")} == {
        "calibration_images": 4, "calibration_skipped_files": ["broken.jpg"], "calibration_method": "minmax"}
    assert any(node.op_type == "QuantizeLinear" for node in proto.graph.node)
    fp32 = {p.key: p.value for p in onnx.load(str(out / "resnet50.onnx"), load_external_data=False).metadata_props}
    assert json.loads(fp32["class_names"]) == FRUIT and "quantization" not in fp32

    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, err  # fewer images than the minimum; the unreadable file, named
    assert "only 4 readable calibration image(s)" in warnings[0] and "at least 32" in warnings[0]
    assert "broken.jpg" in warnings[1]


# --------------------------------------------------------------------------- classify --onnx


@pytest.mark.slow
def test_classify_onnx_prints_what_the_pytorch_model_prints(tuned, exported, capsys) -> None:
    photos = [str(p) for p in PHOTOS]
    status, out, _ = run(capsys, "classify", *photos, "--weights", tuned[0], "--json", "--quiet")
    assert status == 0
    expected = [json.loads(line) for line in out.splitlines()]
    status, out, err = run(capsys, "classify", *photos, "--onnx", exported[0] / "resnet50.onnx", "--json", "--quiet")
    assert status == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records] == photos
    for record, reference in zip(records, expected):
        assert [t["index"] for t in record["top"]] == [t["index"] for t in reference["top"]]
        assert [t["class"] for t in record["top"]] == [t["class"] for t in reference["top"]]
        assert max(abs(a["probability"] - b["probability"]) for a, b in zip(record["top"], reference["top"])) \
            <= PROBABILITY_TOLERANCE
    assert [r["top"][0]["class"] for r in records[:3]] == FRUIT  # the fine-tuned names, from the metadata

    status, out, _ = run(capsys, "classify", photos[0], "--onnx", exported[0] / "resnet50.onnx", "-k", "2")
    assert status == 0 and out.splitlines()[0] == photos[0] and out.splitlines()[1].endswith(FRUIT[0])


def test_a_file_without_metadata_runs_with_imagenet_names_and_a_warning(tmp_path, capsys) -> None:
    path = tiny_classifier(tmp_path / "foreign.onnx", classes=1000)
    status, out, err = run(capsys, "classify", PHOTOS[0], "--onnx", path, "--json", "--quiet", "-k", "3")
    assert status == 0
    (line,) = err.strip().splitlines()
    assert line.startswith("warning: ") and "no export metadata" in line and "ImageNet" in line
    (record,) = [json.loads(line) for line in out.splitlines()]
    from resnet.data.preprocessing import build_transform
    from processing_utils import load_image

    logits = tiny_reference(build_transform()(load_image(PHOTOS[0]))[None], path)[0]
    assert_top_k_agrees([t["index"] for t in record["top"]], logits, 1e-4)
    assert [t["class"] for t in record["top"]] == [imagenet_class_names()[t["index"]] for t in record["top"]]


# --------------------------------------------------------------------------- evaluate --onnx


def without_speed(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("model", "images_per_second", "seconds")}


@pytest.mark.slow
def test_evaluate_onnx_reports_what_the_pytorch_model_reports(tuned, exported, data, capsys) -> None:
    common = ["--json", "--workers", "0", "--quiet"]
    status, out, _ = run(capsys, "evaluate", data, "--weights", tuned[0], *common)
    assert status == 0
    reference = json.loads(out)
    assert (reference["top1"], reference["top5"], reference["images"]) == (50.0, 100.0, 4)

    status, out, _ = run(capsys, "evaluate", data, "--onnx", exported[0] / "resnet50.onnx", *common)
    assert status == 0
    fp32 = json.loads(out)
    assert without_speed(fp32) == without_speed(reference)
    assert fp32["model"] == "resnet50.onnx (fp32 ONNX) on onnxruntime, fp32"

    runtime = "openvino" if HAS_OPENVINO else "onnxruntime"
    status, out, _ = run(capsys, "evaluate", data, "--onnx", exported[0] / "resnet50-int8.onnx", "--runtime", runtime,
                         *common)
    assert status == 0
    int8 = json.loads(out)
    assert list(int8) == list(reference) and int8["model"] == f"resnet50-int8.onnx (INT8 ONNX) on {runtime}, fp32"
    assert [{k: row[k] for k in ("folder", "index", "class", "images")} for row in int8["per_class"]] == \
        [{k: row[k] for k in ("folder", "index", "class", "images")} for row in reference["per_class"]]


@pytest.mark.parametrize("command", ["evaluate", "classify"])
@pytest.mark.slow
def test_onnx_in_two_processes_gives_the_output_of_one(command, exported, data, capsys) -> None:
    target = [data, "--workers", "0"] if command == "evaluate" else [*PHOTOS, PHOTOS[0]]  # 5 inputs: uneven shards
    args = [command, *target, "--onnx", exported[0] / "resnet50.onnx", "--json", "--quiet"]
    status, single, _ = run(capsys, *args)
    assert status == 0
    result = torchrun(2, *args, "--distributed")
    assert result.returncode == 0, result.stderr[-3000:]
    if command == "evaluate":
        (line,) = result.stdout.strip().splitlines()  # rank 0 alone reports
        assert without_speed(json.loads(line)) == without_speed(json.loads(single))
    else:
        assert result.stdout == single


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize("native", [True, False])
def test_precision_with_onnx_follows_the_runtime_and_the_cpu(native: bool, monkeypatch) -> None:
    """ONNX Runtime runs the file's precision; OpenVINO's bf16 hint only where the CPU has native BF16."""
    from resnet import devices

    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: native)
    assert onnx_precision("openvino", "auto") == ("bf16" if native else "fp32")
    assert onnx_precision("openvino", "fp32") == "fp32"
    if native:
        assert onnx_precision("openvino", "bf16") == "bf16"
    else:
        with pytest.raises(CommandError, match="no native BF16"):
            onnx_precision("openvino", "bf16")
    for runtime in ("onnxruntime", None):
        assert onnx_precision(runtime, "auto") == onnx_precision(runtime, "fp32") == "fp32"
        with pytest.raises(CommandError, match="--runtime openvino"):
            onnx_precision(runtime, "bf16")
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(CommandError, match="float16 is for CUDA"):
            onnx_precision(runtime, "fp16")


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install openvino)")
@pytest.mark.parametrize("native", [True, False])
def test_classify_dtype_auto_asks_openvino_for_bf16_on_native_cpus(native: bool, tmp_path, capsys,
                                                                    monkeypatch) -> None:
    from resnet import devices, runtimes

    asked = []
    real = runtimes.load_onnx_model

    def recording(path, runtime, *, precision, **kwargs):
        asked.append((runtime, precision))
        return real(path, runtime, precision="fp32", **kwargs)  # the same arithmetic on every CPU

    monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: native)
    monkeypatch.setattr(runtimes, "load_onnx_model", recording)
    path = tiny_classifier(tmp_path / "tiny.onnx", classes=3, metadata={"arch": "tiny", "output": {},
                                                                        "class_names": FRUIT})
    for dtype in ("auto", "float32"):
        status, out, _ = run(capsys, "classify", PHOTOS[0], "--onnx", path, "--runtime", "openvino", "--dtype",
                             dtype, "--quiet")
        assert status == 0 and out.startswith(str(PHOTOS[0]))
    assert asked == [("openvino", "bf16" if native else "fp32"), ("openvino", "fp32")]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("command", ["classify", "evaluate"])
def test_options_that_do_not_go_with_onnx_are_refused_before_any_work(command, tmp_path, capsys,
                                                                     monkeypatch) -> None:
    from resnet import classify, evaluate

    for module in (classify, evaluate):
        monkeypatch.setattr(module, "load_model", lambda *a, **k: pytest.fail("model built despite bad options"))
        monkeypatch.setattr(module, "load_onnx", lambda *a, **k: pytest.fail("ONNX model loaded despite bad options"))
    target = str(PHOTOS[0]) if command == "classify" else str(tmp_path)
    model = str(tmp_path / "m.onnx")
    cases = [
        (["--onnx", model, "--weights", "w.pth"], "--weights cannot be combined with --onnx"),
        (["--onnx", model, "--mirror", "http://127.0.0.1:9/"], "--mirror cannot be combined with --onnx"),
        (["--onnx", model, "--arch", "resnet50"], "--arch cannot be combined with --onnx"),
        (["--onnx", model, "--device", "cuda"], "--onnx runs on the CPU"),
        (["--runtime", "openvino"], "--runtime applies to --onnx"),
        (["--onnx", model, "--runtime", "tensorrt"], "--runtime"),
    ]
    if command == "classify":
        cases += [(["--onnx", model, "--dtype", "bfloat16"], "for bfloat16 use --runtime openvino"),
                  (["--onnx", model, "--dtype", "float16"], "float16 is for CUDA")]
    else:
        cases += [(["--onnx", model, "--precision", "bf16"], "for bfloat16 use --runtime openvino")]
    for argv, fragment in cases:
        status, _, err = run(capsys, command, target, *argv)
        assert status == 2 and fragment in one_error_line(err), (argv, err)


@pytest.mark.parametrize("command", ["classify", "evaluate"])
def test_bad_onnx_files_and_missing_runtimes_are_one_line_errors(command, tmp_path, capsys, monkeypatch) -> None:
    data = tmp_path / "data"
    (data / "tench").mkdir(parents=True)
    shutil.copy(PHOTOS[0], data / "tench" / PHOTOS[0].name)
    target = str(PHOTOS[0]) if command == "classify" else str(data)
    grey = tiny_classifier(tmp_path / "grey.onnx", channels=1)
    status, _, err = run(capsys, command, target, "--onnx", grey, "--quiet")
    assert status == 2 and str(grey) in one_error_line(err) and "float32 of shape (N, 3, S, S)" in err
    missing = tmp_path / "missing.onnx"
    status, _, err = run(capsys, command, target, "--onnx", missing, "--quiet")
    assert status == 2 and str(missing) in one_error_line(err) and "does not exist" in err
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    status, _, err = run(capsys, command, target, "--onnx", text, "--quiet")
    assert status == 2 and "is not an ONNX model" in one_error_line(err)

    good = tiny_classifier(tmp_path / "tiny.onnx", classes=1000)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    status, _, err = run(capsys, command, target, "--onnx", good, "--runtime", "openvino", "--quiet")
    assert status == 2 and "pip install openvino" in one_error_line(err)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    status, _, err = run(capsys, command, target, "--onnx", good, "--quiet")
    assert status == 2 and "pip install onnxruntime" in one_error_line(err)


# --------------------------------------------------------------------------- hostile and mistaken files


@pytest.mark.parametrize("command", ["classify", "evaluate"])
def test_an_output_wider_than_declared_is_a_one_line_error(command, tmp_path, capsys) -> None:
    from test_runtimes import _edit

    def declare_four(proto) -> None:
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4

    meta = {"arch": "tiny", "output": {"shape": ["batch", 4]}, "class_names": ["a", "b", "c", "d"]}
    path = _edit(tiny_classifier(tmp_path / "wide.onnx", classes=5, metadata=meta), declare_four)
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    shutil.copy(PHOTOS[0], data / "a" / PHOTOS[0].name)
    target = PHOTOS[0] if command == "classify" else data
    status, _, err = run(capsys, command, target, "--onnx", path, "--quiet")
    assert status == 2 and str(path) in one_error_line(err) and "(1, 5)" in err, err


def test_a_checkpoint_folder_or_fifo_given_as_onnx_is_named_for_what_it_is(tmp_path, ngc_file, capsys) -> None:
    status, _, err = run(capsys, "classify", PHOTOS[0], "--onnx", ngc_file("resnet50"), "--quiet")
    line = one_error_line(err)
    assert status == 2 and "is a PyTorch checkpoint, not an ONNX model: give it as --weights FILE" in line, line
    assert "pretrained" not in line
    os.mkfifo(tmp_path / "pipe.onnx")
    for path, what in ((tmp_path, "is a directory"), (tmp_path / "pipe.onnx", "is a named pipe (FIFO)")):
        status, _, err = run(capsys, "classify", PHOTOS[0], "--onnx", path, "--quiet")
        line = one_error_line(err)
        assert status == 2 and f"{what}, not a file" in line and "does not exist" not in line, line


def test_classify_onnx_prints_unprintable_class_names_escaped(tmp_path, capsys) -> None:
    names = ["\x1b[2J\x1b[31mred", "cat\n  99.9%  dog", "caf\udce9"]
    meta = {"arch": "tiny", "output": {"shape": ["batch", 3]}, "class_names": names}
    path = tiny_classifier(tmp_path / "named.onnx", classes=3, metadata=meta)
    status, out, err = run(capsys, "classify", PHOTOS[0], "--onnx", path, "--top-k", "3", "--quiet")
    assert status == 0 and "\x1b" not in out and len(out.splitlines()) == 4, out
    assert sorted(line.split("%  ", 1)[1] for line in out.splitlines()[1:]) == sorted(
        ["\\x1b[2J\\x1b[31mred", "cat\\n  99.9%  dog", "caf\\udce9"])
    assert "shown escaped" in err
