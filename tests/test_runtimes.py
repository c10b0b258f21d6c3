"""resnet.deploy.runtimes: exported ONNX models on ONNX Runtime and OpenVINO, behind one interface.

Parity is against the reference fixtures (tests/fixtures/ngc) for the stand-in weights, as in
test_export.py; files that are not this repository's exports are built with onnx.helper.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support import load_expected, parity_input
from resnet.cli.export import export_metadata

import onnx  # noqa: E402 - required by the tests (requirements-test.txt)
import onnxruntime  # noqa: E402,F401

from onnx import TensorProto, helper  # noqa: E402

from processing_utils.classes import get_imgnet_classes  # noqa: E402
from resnet.deploy.quantize import CalibrationSet, quantize_onnx  # noqa: E402
from resnet.deploy.runtimes import (  # noqa: E402
    RuntimeModelError,
    RuntimeUnavailableError,
    load_onnx_model,
    read_onnx_metadata,
    runtime_available,
)

TOLERANCE = 1e-4  # max abs diff of fp32 logits, as for the ONNX exports
#: bf16 bound, relative to the largest fp32 logit: the fast path's documented bf16 bound (2%).
BF16_RELATIVE = 0.02
HAS_OPENVINO = runtime_available("openvino")
RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino is not installed (pip install openvino)"))]


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope="module")
def standin(standin_resnet50) -> torch.nn.Module:
    return standin_resnet50


@pytest.fixture(scope="module")
def exported(standin_onnx) -> Path:
    """The float32 ONNX export of the stand-in ResNet-50 (conftest's, made once per session)."""
    return standin_onnx


def tiny_classifier(
    path: Path,
    *,
    classes: int = 10,
    batch: object = "N",
    channels: int = 3,
    side: int = 224,
    input_type: int = TensorProto.FLOAT,
    second_input: bool = False,
    output_rank: int = 2,
    outputs: tuple[str, ...] = ("logits",),
    metadata: dict | None = None,
) -> Path:
    """conv(3->4, 16x16 stride 16) -> global average pool -> flatten -> gemm(4->classes), as ONNX."""
    rng = np.random.default_rng(0)
    weights = [
        helper.make_tensor("w", TensorProto.FLOAT, [4, channels, 16, 16],
                           rng.normal(0, 0.05, (4, channels, 16, 16)).astype(np.float32).ravel()),
        helper.make_tensor("fw", TensorProto.FLOAT, [classes, 4],
                           rng.normal(0, 1, (classes, 4)).astype(np.float32).ravel()),
        helper.make_tensor("fb", TensorProto.FLOAT, [classes], rng.normal(0, 0.1, classes).astype(np.float32)),
    ]
    nodes = []
    source = "input"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT))
        source = "x"
    nodes += [
        helper.make_node("Conv", [source, "w"], ["c"], strides=[16, 16]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], [outputs[0]], transB=1),
    ]
    out_shape: list = [batch, classes] if output_rank == 2 else [batch, classes, 1]
    if output_rank != 2:
        nodes[-1].output[0] = "g"
        nodes.append(helper.make_node("Unsqueeze", ["g", "axes"], [outputs[0]]))
        weights.append(helper.make_tensor("axes", TensorProto.INT64, [1], [2]))
    for extra in outputs[1:]:
        nodes.append(helper.make_node("Identity", [outputs[0]], [extra]))
    inputs = [helper.make_tensor_value_info("input", input_type, [batch, channels, side, side])]
    if second_input:
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Identity", ["scale"], ["scale_out"]))
    graph_outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, out_shape) for name in outputs]
    if second_input:
        graph_outputs.append(helper.make_tensor_value_info("scale_out", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(nodes, "tiny", inputs, graph_outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_reference(x: torch.Tensor, path: Path) -> np.ndarray:
    """The tiny classifier's logits computed with torch from the file's weights (an independent peer)."""
    weights = {i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy())
               for i in onnx.load(str(path)).graph.initializer}
    features = torch.relu(torch.nn.functional.conv2d(x, weights["w"], stride=16)).mean((2, 3))
    return (features @ weights["fw"].T + weights["fb"]).numpy()


# --------------------------------------------------------------------------- our exports


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.slow
def test_export_runs_with_reference_logits_and_imagenet_names(exported, standin, runtime: str) -> None:
    model = load_onnx_model(exported, runtime, threads=2)
    logits = model(parity_input("resnet50"))
    assert isinstance(logits, torch.Tensor) and logits.dtype == torch.float32 and logits.shape == (2, 1000)
    diff = max_diff(logits, load_expected("resnet50")["logits"])
    print(f"{runtime}: max abs diff to the reference logits {diff:.3g}")
    assert diff <= TOLERANCE
    assert model.class_names == [str(n) for n in get_imgnet_classes()]
    assert model.metadata["arch"] == "resnet50" and not model.quantized
    for batch in (1, 3):  # the dynamic batch axis
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = standin(x)
        assert max_diff(model(x), expected) <= TOLERANCE


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")
@pytest.mark.slow
def test_openvino_bf16_precision_stays_within_the_bf16_bound(exported) -> None:
    """Where the CPU has no native BF16 OpenVINO keeps fp32; either way the bf16 bound holds."""
    x = parity_input("resnet50")
    fp32 = load_expected("resnet50")["logits"]
    logits = load_onnx_model(exported, "openvino", precision="bf16")(x)
    relative = max_diff(logits, fp32) / float(fp32.abs().max())
    correlation = min(float(np.corrcoef(a, b)[0, 1]) for a, b in zip(logits.numpy(), fp32.numpy()))
    print(f"openvino bf16: max error {100 * relative:.2f}% of the largest logit, min correlation {correlation:.5f}")
    assert relative <= BF16_RELATIVE and correlation >= 0.999


def test_int8_model_runs_on_both_runtimes(tmp_path) -> None:
    """A QDQ model: quantized, and OpenVINO computes what ONNX Runtime computes (within a quantization step)."""
    fp32_path = tiny_classifier(tmp_path / "tiny.onnx", metadata=export_metadata("tiny", weights="x", num_classes=10))
    x = torch.randn(6, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    quantize_onnx(fp32_path, tmp_path / "int8.onnx", CalibrationSet(x))
    reference = tiny_reference(x, fp32_path)
    results = {}
    for runtime in ("onnxruntime", "openvino") if HAS_OPENVINO else ("onnxruntime",):
        model = load_onnx_model(tmp_path / "int8.onnx", runtime)
        assert model.quantized and model.metadata["quantization"]["calibration_images"] == 6
        results[runtime] = model(x).numpy()
        spread = float(reference.max() - reference.min())
        assert max_diff(results[runtime], reference) <= 0.05 * spread, runtime
    if len(results) == 2:
        assert max_diff(results["openvino"], results["onnxruntime"]) <= 0.02 * spread


# --------------------------------------------------------------------------- files from elsewhere


@pytest.mark.slow
def test_file_without_metadata_runs_with_imagenet_names_and_a_warning(exported, tmp_path) -> None:
    proto = onnx.load(str(exported))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    assert read_onnx_metadata(bare) == {}
    with pytest.warns(UserWarning, match="no export metadata.*ImageNet"):
        model = load_onnx_model(bare)
    assert model.class_names == [str(n) for n in get_imgnet_classes()]
    assert max_diff(model(parity_input("resnet50")), load_expected("resnet50")["logits"]) <= TOLERANCE


def test_class_names_come_from_metadata_or_are_numbered(tmp_path) -> None:
    names = [f"kind {i}" for i in range(10)]
    meta = dict(export_metadata("tiny", weights="x", num_classes=10), class_names=names)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with_names = tiny_classifier(tmp_path / "named.onnx", metadata=meta)
    model = load_onnx_model(with_names)
    assert model.class_names == names
    assert max_diff(model(x), tiny_reference(x, with_names)) <= 1e-5
    with torch.inference_mode():  # as the classify command calls its model
        assert max_diff(model(x.clone()), tiny_reference(x, with_names)) <= 1e-5
    with pytest.warns(UserWarning, match="10 classes; its classes are named by number"):
        anonymous = load_onnx_model(tiny_classifier(tmp_path / "anonymous.onnx"))
    assert anonymous.class_names == [f"class {i}" for i in range(10)]


def test_fixed_batch_model_runs_any_batch_in_slices(tmp_path) -> None:
    path = tiny_classifier(tmp_path / "fixed.onnx", batch=2, metadata=export_metadata("t", weights="x", num_classes=10))
    model = load_onnx_model(path)
    assert model.fixed_batch == 2
    x = torch.randn(5, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out = model(x)
    assert out.shape == (5, 10)
    assert max_diff(out, tiny_reference(x, path)) <= 1e-5


@pytest.mark.parametrize(
    "options, fragments",
    [
        (dict(second_input=True), ["2 inputs (input, scale)", "one float32 input"]),
        (dict(channels=1, side=28), ["input 'input'", "(N, 1, 28, 28)", "(N, 3, S, S), S from 32 to 4,096"]),
        (dict(side=16), ["input 'input'", "(N, 3, 16, 16)", "(N, 3, S, S), S from 32 to 4,096"]),
        (dict(input_type=TensorProto.INT64), ["input 'input' is int64", "float32"]),
        (dict(output_rank=3), ["output 'logits'", "(N, 10, 1)", "(N, classes)"]),
        (dict(outputs=("a", "b")), ["2 outputs (a, b)", "named 'logits'"]),
    ],
    ids=["two-inputs", "input-shape", "input-too-small", "input-type", "output-rank", "two-outputs"],
)
def test_interface_that_does_not_fit_is_refused_naming_what(tmp_path, options, fragments) -> None:
    path = tiny_classifier(tmp_path / "odd.onnx", **options)
    with pytest.raises(RuntimeModelError) as caught:
        load_onnx_model(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_openvino_missing_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert not runtime_available("openvino")
    with pytest.raises(RuntimeUnavailableError, match=r"pip install openvino.*onnxruntime"):
        load_onnx_model(tiny_classifier(tmp_path / "tiny.onnx"), "openvino")


def test_bad_arguments_and_files(tmp_path) -> None:
    valid = tiny_classifier(tmp_path / "tiny.onnx")  # a valid model: only the arguments are wrong
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        load_onnx_model(valid, "tensorrt")
    with pytest.raises(ValueError, match="use runtime='openvino'"):
        load_onnx_model(valid, "onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="threads"):
        load_onnx_model(valid, threads=0)
    with pytest.raises(RuntimeModelError, match="does not exist"):
        load_onnx_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_text("not a model")
    with pytest.raises(RuntimeModelError, match="is not an ONNX model"):
        load_onnx_model(tmp_path / "junk.onnx")
    meta = export_metadata("t", weights="x", num_classes=10)
    model = load_onnx_model(tiny_classifier(tmp_path / "t.onnx", metadata=meta))
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\), got \(2, 3, 32, 32\)"):
        model(torch.zeros(2, 3, 32, 32))
    # A graph for another image size takes that size (a model trained at it; fixed in the graph, or by metadata).
    small = load_onnx_model(tiny_classifier(tmp_path / "s.onnx", side=64, metadata=meta))
    assert small.image_size == 64 and small(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\), got \(2, 3, 224, 224\)"):
        small(torch.zeros(2, 3, 224, 224))


# --------------------------------------------------------------------------- hostile files


def _edit(path: Path, change) -> Path:
    """Load ``path``, apply ``change(proto)``, save it back (no checker: the edits make it inconsistent)."""
    proto = onnx.load(str(path))
    change(proto)
    onnx.save(proto, str(path))
    return path


def _no_runtime(monkeypatch) -> None:
    """Fail the test if a runtime is asked to open the file."""
    import resnet.deploy.runtimes

    def refuse(*args, **kwargs):
        raise AssertionError("a runtime was asked to read the file")

    monkeypatch.setattr(resnet.deploy.runtimes, "_make_runner", refuse)


def test_huge_declared_batch_or_class_count_is_refused_before_any_allocation(tmp_path, monkeypatch) -> None:
    _no_runtime(monkeypatch)
    batch = tiny_classifier(tmp_path / "batch.onnx", batch=2**40)
    with pytest.raises(RuntimeModelError, match=r"fixed batch of 1,099,511,627,776 images; at most 1,024"):
        load_onnx_model(batch)

    def huge_head(proto) -> None:
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2**28

    head = _edit(tiny_classifier(tmp_path / "head.onnx"), huge_head)
    with pytest.raises(RuntimeModelError, match=r"head.onnx.*declares 268,435,456 classes, more than the 1,048,576"):
        load_onnx_model(head)

    def dynamic_head(proto) -> None:
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"

    meta = export_metadata("t", weights="x", num_classes=2**28)
    dynamic = _edit(tiny_classifier(tmp_path / "dynamic.onnx", metadata=meta), dynamic_head)
    with pytest.raises(RuntimeModelError, match=r"metadata's output shape declares 268,435,456 classes"):
        load_onnx_model(dynamic)


def test_a_huge_file_is_refused_by_its_first_bytes_or_size_without_reading_it(tmp_path, monkeypatch) -> None:
    import resnet.deploy.runtimes

    def whole_read(*args, **kwargs):
        raise AssertionError("onnx.load read the file")

    monkeypatch.setattr(onnx, "load", whole_read)
    with open(tmp_path / "video.onnx", "wb") as file:  # 3 GB, sparse: nothing is written but the header
        file.write(b"\x00\x00\x00\x18ftypmp42")
        file.truncate(3 << 30)
    with pytest.raises(RuntimeModelError, match="video.onnx' is not an ONNX model .its first bytes"):
        load_onnx_model(tmp_path / "video.onnx")
    with open(tmp_path / "big.onnx", "wb") as file:
        file.write(tiny_classifier(tmp_path / "t.onnx").read_bytes()[:64])
        file.truncate(3 << 30)
    with pytest.raises(RuntimeModelError, match=r"big.onnx' \(3,221,225,472 bytes\) is larger than an ONNX model"):
        load_onnx_model(tmp_path / "big.onnx")
    assert resnet.deploy.runtimes.MAX_ONNX_BYTES == 2 << 30


def _with_external_weights(folder: Path, location: str) -> Path:
    """A tiny classifier whose conv weights ``w`` live in the external file ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = tiny_classifier(folder / "model.onnx")

    def externalise(proto) -> None:
        (tensor,) = [t for t in proto.graph.initializer if t.name == "w"]
        data = onnx.numpy_helper.to_array(tensor).tobytes()
        inside = folder / "w.bin"
        inside.write_bytes(data)
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        for key, value in (("location", location), ("length", str(len(data)))):
            tensor.external_data.add(key=key, value=value)
        tensor.data_location = TensorProto.EXTERNAL

    return _edit(path, externalise)


def test_external_data_inside_the_folder_runs(tmp_path) -> None:
    path = _with_external_weights(tmp_path / "m", "w.bin")
    with pytest.warns(UserWarning, match="named by number"):
        model = load_onnx_model(path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    reference = tiny_classifier(tmp_path / "same.onnx")  # the same weights, inside the file
    assert max_diff(model(x), tiny_reference(x, reference)) <= 1e-5


@pytest.mark.parametrize("case", ["parent", "absolute", "symlink_out", "dev_zero", "proc", "fifo", "past_the_end"])
def test_external_data_outside_the_folder_is_refused_before_a_runtime_reads_it(tmp_path, monkeypatch, case) -> None:
    _no_runtime(monkeypatch)
    folder = tmp_path / "models" / "m"
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(4 * 3 * 16 * 16 * 4))
    location = {"parent": "../../secret.bin", "absolute": str(secret), "symlink_out": "link.bin",
                "dev_zero": "/dev/zero", "proc": "/proc/self/environ", "fifo": "pipe.bin",
                "past_the_end": "short.bin"}[case]
    path = _with_external_weights(folder, location)
    if case == "symlink_out":
        (folder / "link.bin").symlink_to(secret)
    elif case == "fifo":
        os.mkfifo(folder / "pipe.bin")
    elif case == "past_the_end":
        (folder / "short.bin").write_bytes(b"\0" * 10)
    expected = {"parent": "outside the model's folder", "absolute": "outside the model's folder",
                "symlink_out": "leads outside the model's folder", "dev_zero": "outside the model's folder",
                "proc": "outside the model's folder", "fifo": "is a named pipe (FIFO), not a file",
                "past_the_end": "beyond the file's 10 bytes"}[case]
    for runtime in ("onnxruntime", *(["openvino"] if HAS_OPENVINO else [])):
        with pytest.raises(RuntimeModelError) as caught:
            load_onnx_model(path, runtime)
        message = str(caught.value)
        assert str(path) in message and "tensor 'w'" in message and expected in message, message


def test_a_checkpoint_or_a_special_file_given_as_onnx_is_named_for_what_it_is(tmp_path, ngc_file) -> None:
    with pytest.raises(RuntimeModelError) as caught:
        load_onnx_model(ngc_file("resnet50"))
    assert "is a PyTorch checkpoint, not an ONNX model" in str(caught.value)
    assert "pretrained_from_file" in str(caught.value) and "--weights FILE" in caught.value.describe("cli")
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeModelError, match="is a PyTorch checkpoint"):
        load_onnx_model(legacy)
    os.mkfifo(tmp_path / "pipe.onnx")
    for path, what in ((tmp_path, "is a directory"), (tmp_path / "pipe.onnx", "is a named pipe (FIFO)"),
                       (Path("/dev/null"), "is a character device")):
        with pytest.raises(RuntimeModelError, match=re.escape(f"{what}, not a file")) as caught:
            load_onnx_model(path)
        assert "does not exist" not in str(caught.value)


def test_an_output_wider_than_declared_is_a_runtime_model_error(tmp_path) -> None:
    def declare_four(proto) -> None:
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4

    path = _edit(tiny_classifier(tmp_path / "wide.onnx", classes=5), declare_four)
    with pytest.warns(UserWarning):
        model = load_onnx_model(path)
    with pytest.raises(RuntimeModelError, match=r"wide.onnx"):
        model(torch.zeros(2, 3, 224, 224))


@pytest.mark.parametrize("names, problem", [
    ([f"n{i}" for i in range(10**6)], "1,000,000 names for the model's 10 outputs"),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "10 entries that are not strings (the first: entry 0, of type int)"),
], ids=["a-million-names", "numbers"])
@pytest.mark.slow
def test_class_names_that_do_not_fit_the_head_are_left_out_with_a_warning(tmp_path, names, problem) -> None:
    meta = dict(export_metadata("tiny", weights="x", num_classes=10), class_names=names)
    path = tiny_classifier(tmp_path / "named.onnx", metadata=meta)
    with pytest.warns(UserWarning, match=re.escape(problem)):
        model = load_onnx_model(path)
    assert model.class_names == [f"class {i}" for i in range(10)]


def test_unprintable_class_names_in_the_metadata_are_escaped(tmp_path) -> None:
    names = [f"kind {i}" for i in range(10)]
    names[1], names[2], names[3] = "\x1b[2Jred\x1b[0m", "cat\n  99.9%  dog", "caf\udce9"
    meta = dict(export_metadata("tiny", weights="x", num_classes=10), class_names=names)
    path = tiny_classifier(tmp_path / "named.onnx", metadata={**meta, "class_names": json.dumps(names)})
    with pytest.warns(UserWarning, match=r"class name\(s\) 1 .*2 .*3 .*shown escaped"):
        model = load_onnx_model(path)
    assert model.class_names[1:4] == ["\\x1b[2Jred\\x1b[0m", "cat\\n  99.9%  dog", "caf\\udce9"]
    assert model.class_names[4:] == names[4:]
