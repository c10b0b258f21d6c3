"""``python -m resnet export``: TorchScript / ONNX parity with the reference, Triton repositories, bad input.

Parity: the exported files are run (TorchScript with torch.jit, ONNX with onnxruntime's CPU provider)
on the parity fixtures and compared with the reference's logits for the stand-in NGC weights.
Triton: config.pbtxt is parsed with Triton's own ModelConfig schema (model_config.proto as shipped in
the tritonclient wheel) and checked against the exported model files; the example client is run
against a loopback server that speaks Triton's HTTP protocol and executes the repository's models.
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support import (
    PHOTOS, REPO_ROOT, LoopbackHTTP, QuietHandler, assert_top_k_agrees, load_expected, parity_input, run_resnet,
)
from resnet import export as exporter
from resnet.io.atomic import DIR_MODE, FILE_MODE, OutputPathError, atomic_directory, staging_name
from resnet.deploy.exporters import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    export_metadata,
    export_onnx,
    export_torchscript,
    has_dynamo_exporter,
    has_onnxscript,
    prepare_for_export,
    tracing_exporter_keywords,
)
from resnet.fast.devices import cpu_runs_float16_convolutions
from resnet.deploy.pt2 import program_available
from resnet.deploy.triton import served_data_config, triton_config
from resnet.models.builder import create_model
from resnet.data.preprocessing import DEFAULT_DATA_CONFIG, INPUT_SHAPE, MEAN, DataConfig, build_transform

# Loading TorchScript is what these tests are about; torch 2.14 flags torch.jit as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

import onnx  # noqa: E402 - required by the tests (requirements-test.txt)
import onnxruntime as ort  # noqa: E402

TOLERANCE = 1e-4  # max abs diff on fp32 logits
HAS_DYNAMO_EXPORTER = has_onnxscript() and has_dynamo_exporter()


def run_export(*args: str, timeout: float = 300, umask: int = -1) -> subprocess.CompletedProcess:
    """``python -m resnet export ARGS`` in a child process (the end-to-end runs; the others use ``cli``)."""
    return run_resnet("export", *args, timeout=timeout, umask=umask)


def exit_status(argv: list[str]) -> int:
    """``python -m resnet`` in-process: main()'s return value, or the status of argparse's exit."""
    from resnet.__main__ import main

    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def assert_one_line_error(result, status: int, *fragments: str) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    stderr = result.stderr.strip()
    assert "Traceback" not in stderr, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)
    return stderr


def entries(folder: Path) -> list[str]:
    """Names in ``folder``, less the isolated torch hub home of conftest."""
    return sorted(p.name for p in folder.iterdir() if p.name != "torch_home")


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def ort_session(path: Path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- shared exports


@pytest.fixture(scope="module")
def resnet50(standin_resnet50) -> torch.nn.Module:
    """The stand-in weights in an eval-mode, NCHW float32 ResNet-50 (conftest's, shared by the session)."""
    return standin_resnet50


def load_resnet50(ngc_file) -> torch.nn.Module:
    """The stand-in weights in an eval-mode, NCHW float32 ResNet-50."""
    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50"), channels_last=False).eval()


@pytest.fixture(scope="module")
def eager_extra(resnet50) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Batch size -> (input, eager logits), for the dynamic batch axis checks."""
    batches = {}
    for batch in (1, 3):
        x = torch.randn(batch, *INPUT_SHAPE, generator=torch.Generator().manual_seed(100 + batch))
        with torch.no_grad():
            batches[batch] = (x, resnet50(x))
    return batches


@pytest.fixture(scope="module")
def exports(resnet50, standin_onnx, tmp_path_factory) -> dict[str, Path]:
    """The resnet50 files, made once: TorchScript and ONNX, with and without BN folding (the plain ONNX file is
    conftest's, made once per session the same way)."""
    root = tmp_path_factory.mktemp("exports")
    made: dict[str, Path] = {"onnx-torchscript-plain": standin_onnx}
    for variant, fold_bn in (("plain", False), ("fold_bn", True)):
        model = prepare_for_export(resnet50, fold_bn=fold_bn)
        meta = export_metadata("resnet50", weights="stand-in", fold_bn=fold_bn)
        made[f"torchscript-{variant}"] = export_torchscript(model, root / f"{variant}.pt", metadata=meta)
        if fold_bn:
            made[f"onnx-torchscript-{variant}"] = export_onnx(
                model, root / f"{variant}.onnx", exporter="torchscript", metadata=meta
            )
    return made


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", ["plain", "fold_bn"])
@pytest.mark.slow
def test_torchscript_matches_reference_logits(exports, eager_extra, variant: str) -> None:
    module = torch.jit.load(str(exports[f"torchscript-{variant}"]), map_location="cpu")
    with torch.no_grad():
        logits = module(parity_input("resnet50"))
    diff = max_diff(logits, load_expected("resnet50")["logits"])
    print(f"torchscript {variant}: max abs diff {diff:.3g}")
    assert diff <= TOLERANCE
    for batch, (x, expected) in eager_extra.items():  # the batch axis is not baked in by tracing
        with torch.no_grad():
            out = module(x)
        assert out.shape == (batch, 1000) and out.dtype == torch.float32
        assert max_diff(out, expected) <= TOLERANCE
    assert [a.name for a in module.forward.schema.arguments[1:]] == [INPUT_NAME]
    extra = {"metadata.json": ""}
    torch.jit.load(str(exports[f"torchscript-{variant}"]), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["arch"] == "resnet50" and meta["fold_bn"] == (variant == "fold_bn")


def check_onnx_file(path: Path, eager_extra, *, fp16: bool = False) -> float:
    """Check the ONNX interface; return the max abs diff to the reference logits."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}.get("", None) == DEFAULT_OPSET
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert (graph_input.name, graph_output.name) == (INPUT_NAME, OUTPUT_NAME)
    for value, rest in ((graph_input, list(INPUT_SHAPE)), (graph_output, [1000])):
        tensor_type = value.type.tensor_type
        assert tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out, fp16 or not
        dims = tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
        assert [d.dim_value for d in dims[1:]] == rest
    weight_types = {init.data_type for init in proto.graph.initializer if len(init.dims) == 4}
    assert weight_types == {onnx.TensorProto.FLOAT16 if fp16 else onnx.TensorProto.FLOAT}
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["arch"] == "resnet50" and json.loads(props["input"])["name"] == INPUT_NAME
    assert json.loads(props["preprocessing"])["mean"] == list(MEAN)  # the model says how to feed it

    session = ort_session(path)
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: parity_input("resnet50").numpy()})
    diff = max_diff(logits, load_expected("resnet50")["logits"])
    if not fp16:
        for batch, (x, expected) in eager_extra.items():
            (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
            assert out.shape == (batch, 1000) and out.dtype == np.float32
            assert max_diff(out, expected) <= TOLERANCE
    return diff


@pytest.mark.parametrize("variant", ["plain", "fold_bn"])
@pytest.mark.slow
def test_onnx_matches_reference_logits(exports, eager_extra, variant: str) -> None:
    diff = check_onnx_file(exports[f"onnx-torchscript-{variant}"], eager_extra)
    print(f"onnx (torchscript exporter) {variant}: max abs diff {diff:.3g}")
    assert diff <= TOLERANCE


@pytest.mark.skipif(not HAS_DYNAMO_EXPORTER,
                    reason="the dynamo ONNX exporter needs onnxscript and torch.onnx.export(dynamo=, dynamic_shapes=)")
@pytest.mark.slow
def test_onnx_dynamo_exporter_matches_reference_logits(resnet50, eager_extra, tmp_path: Path) -> None:
    path = export_onnx(
        prepare_for_export(resnet50), tmp_path / "dynamo.onnx", exporter="dynamo",
        metadata=export_metadata("resnet50", weights="stand-in"),
    )
    diff = check_onnx_file(path, eager_extra)
    print(f"onnx (dynamo exporter) plain: max abs diff {diff:.3g}")
    assert diff <= TOLERANCE


@pytest.mark.skipif(not cpu_runs_float16_convolutions(), reason="this torch has no float16 convolutions for the "
                    "CPU (torch 2.2 has) to trace an fp16 export; test_fp16_export_without_cpu_float16_is_refused "
                    "checks the refusal")
@pytest.mark.slow
def test_fp16_exports_run_on_cpu(resnet50, eager_extra, tmp_path: Path) -> None:
    """--fold-bn --fp16: half-precision weights, float32 interface; both files run on the CPU here."""
    model = prepare_for_export(resnet50, fold_bn=True, fp16=True)
    meta = export_metadata("resnet50", weights="stand-in", fold_bn=True, fp16=True)
    expected = load_expected("resnet50")["logits"]
    # fp16 keeps ~3 significant digits: allow 0.5% of the largest logit (about 2.4e-3 here).
    bound = 5e-3 * float(expected.abs().max())

    onnx_path = export_onnx(model, tmp_path / "fp16.onnx", exporter="torchscript", metadata=meta)
    onnx_diff = check_onnx_file(onnx_path, eager_extra, fp16=True)
    module = torch.jit.load(str(export_torchscript(model, tmp_path / "fp16.pt", metadata=meta)))
    with torch.no_grad():
        ts_logits = module(parity_input("resnet50"))
    assert ts_logits.dtype == torch.float32
    ts_diff = max_diff(ts_logits, expected)
    print(f"fp16 (folded): onnx max abs diff {onnx_diff:.3g}, torchscript {ts_diff:.3g}, bound {bound:.3g}")
    assert onnx_diff <= bound and ts_diff <= bound
    assert torch.equal(ts_logits.argmax(1), expected.argmax(1))


@pytest.mark.slow
def test_cli_exports_another_arch(ngc_file, tmp_path: Path) -> None:
    """se-resnext101-32x4d (grouped convs + squeeze-excitation) through the command line, both formats."""
    arch = "se-resnext101-32x4d"
    out = tmp_path / "exports" / arch
    result = run_export("--arch", arch, "--weights", str(ngc_file(arch)), "--output", str(out),
                        "--onnx-exporter", "torchscript", "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{arch}.onnx", f"{arch}.pt", "export.json"])
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not the private mode of a temp folder
    meta = json.loads((out / "export.json").read_text())
    assert meta["arch"] == arch and meta["input"]["name"] == INPUT_NAME and meta["output"]["name"] == OUTPUT_NAME
    assert meta["onnx_exporter"] == "torchscript" and meta["onnx_opset"] == DEFAULT_OPSET

    x, expected = parity_input(arch), load_expected(arch)["logits"]
    (onnx_logits,) = ort_session(out / f"{arch}.onnx").run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        ts_logits = torch.jit.load(str(out / f"{arch}.pt"))(x)
    print(f"{arch}: onnx max abs diff {max_diff(onnx_logits, expected):.3g}, "
          f"torchscript {max_diff(ts_logits, expected):.3g}")
    assert max_diff(onnx_logits, expected) <= TOLERANCE
    assert max_diff(ts_logits, expected) <= TOLERANCE
    assert [p.name for p in out.parent.iterdir()] == [arch]  # no temporary folder left beside it


# --------------------------------------------------------------------------- Triton


def triton_model_config_class():
    """Triton's ``inference.ModelConfig`` message, built from the schema in the tritonclient wheel.

    ``tritonclient/grpc/model_config_pb2.py`` is generated from Triton's model_config.proto. Importing it
    as ``tritonclient.grpc.model_config_pb2`` needs grpcio (the package's __init__), and its generated
    code insists on a protobuf runtime of its own generation; the serialized file descriptor inside it
    needs neither, so the message class is built from that.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    tritonclient = pytest.importorskip("tritonclient")
    source = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    if not source.is_file():
        pytest.skip("this tritonclient wheel has no model_config_pb2.py")
    serialized = next(
        node.args[0].value
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(serialized))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_config(path: Path):
    from google.protobuf import text_format

    config = triton_model_config_class()()
    text_format.Parse(path.read_text(), config)  # unknown fields or enum values raise ParseError
    return config


@pytest.fixture(scope="module")
def triton_repo(ngc_file, tmp_path_factory) -> Path:
    """A repository for both backends from the command line, with BN folded and a max batch of 64.

    Written under umask 077, the most private setting a user may have.
    """
    repo = tmp_path_factory.mktemp("triton") / "models"
    result = run_export("--weights", str(ngc_file("resnet50")), "--triton", str(repo), "--fold-bn",
                        "--max-batch-size", "64", "--onnx-exporter", "torchscript", "--quiet", umask=0o077)
    assert result.returncode == 0, result.stderr
    return repo


@pytest.mark.slow
def test_triton_repository_is_readable_by_another_user(triton_repo: Path) -> None:
    """A Triton container runs as its own user: every folder is 755 and every file 644, whatever the umask."""
    folders = [triton_repo, *(p for p in triton_repo.rglob("*") if p.is_dir())]
    files = [p for p in triton_repo.rglob("*") if p.is_file()]
    assert len(folders) == 5 and len(files) == 6
    assert {oct(p.stat().st_mode & 0o777) for p in folders} == {oct(DIR_MODE)} == {"0o755"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(FILE_MODE)} == {"0o644"}


@pytest.mark.slow
def test_triton_repository_layout_and_configs_match_models(triton_repo: Path) -> None:
    assert sorted(p.name for p in triton_repo.iterdir()) == ["resnet50_libtorch", "resnet50_onnx"]
    expected = load_expected("resnet50")["logits"]
    x = parity_input("resnet50")
    for folder, backend, platform, filename in (
        ("resnet50_onnx", "onnxruntime", "onnxruntime_onnx", "model.onnx"),
        ("resnet50_libtorch", "pytorch", "pytorch_libtorch", "model.pt"),
    ):
        model_dir = triton_repo / folder
        assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
        assert [p.name for p in (model_dir / "1").iterdir()] == [filename]
        config = parse_config(model_dir / "config.pbtxt")
        assert (config.name, config.backend, config.platform) == (folder, backend, platform)
        assert config.default_model_filename == filename
        assert config.max_batch_size == 64
        assert config.HasField("dynamic_batching")
        (config_in,), (config_out,) = config.input, config.output
        TYPE_FP32 = type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name[
            "data_type"].enum_type.values_by_name["TYPE_FP32"].number
        assert config_in.data_type == TYPE_FP32 and config_out.data_type == TYPE_FP32
        labels = (model_dir / config_out.label_filename).read_text().splitlines()
        assert len(labels) == 1000 and labels[0] == "tench, Tinca tinca"

        # The model file agrees with the config: names, per-sample dims, float32, dynamic batch.
        model_file = model_dir / "1" / filename
        if backend == "onnxruntime":
            proto = onnx.load(str(model_file))
            (graph_in,), (graph_out,) = proto.graph.input, proto.graph.output
            assert (config_in.name, config_out.name) == (graph_in.name, graph_out.name)
            for config_io, graph_io in ((config_in, graph_in), (config_out, graph_out)):
                dims = graph_io.type.tensor_type.shape.dim
                assert dims[0].dim_param  # Triton's batch axis must be dynamic in the model
                assert list(config_io.dims) == [d.dim_value for d in dims[1:]]
                assert graph_io.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            (logits,) = ort_session(model_file).run([config_out.name], {config_in.name: x.numpy()})
        else:
            module = torch.jit.load(str(model_file))
            # Triton's PyTorch backend maps config input names to forward()'s argument names.
            assert [a.name for a in module.forward.schema.arguments[1:]] == [config_in.name]
            with torch.no_grad():
                logits = module(x.contiguous())
            assert logits.dtype == torch.float32
            assert list(logits.shape[1:]) == list(config_out.dims)
            assert list(x.shape[1:]) == list(config_in.dims)
        diff = max_diff(logits, expected)
        print(f"triton {folder} (BN folded): max abs diff {diff:.3g}")
        assert diff <= TOLERANCE


def test_triton_config_text_is_strict_model_config() -> None:
    """Every field written is one of Triton's; bad values are refused before anything is written."""
    ModelConfig = triton_model_config_class()
    from google.protobuf import text_format

    for backend in ("onnxruntime", "pytorch"):
        text = triton_config(f"m_{backend}", backend, max_batch_size=8, num_classes=10)
        config = text_format.Parse(text, ModelConfig())
        assert list(config.output[0].dims) == [10] and config.max_batch_size == 8
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
    with pytest.raises(ExportError, match="max-batch-size"):
        triton_config("m", "onnxruntime", max_batch_size=0)
    with pytest.raises(ExportError, match="tensorrt"):
        triton_config("m", "tensorrt", max_batch_size=8)


def test_triton_config_carries_the_preprocessing() -> None:
    """The parameters hold the model's DataConfig and arch as strings; served_data_config reads them back from the
    JSON Triton serves, and a config without them (written before) falls back to its input's side."""
    ModelConfig = triton_model_config_class()
    from google.protobuf import text_format

    b4 = DataConfig(380, 412, "bicubic")
    text = triton_config("m", "onnxruntime", image_size=b4, arch="efficientnet-b4")
    config = text_format.Parse(text, ModelConfig())
    assert {key: value.string_value for key, value in config.parameters.items()} == {
        "arch": "efficientnet-b4", "image_size": "380", "resize_size": "412", "interpolation": "bicubic"}
    assert list(config.input[0].dims) == [3, 380, 380]
    served = triton_config_json(config)
    assert served["parameters"]["interpolation"] == {"string_value": "bicubic"} and served["max_batch_size"] == 256
    assert served_data_config(served) == b4
    # A side alone is the ResNets' preprocessing at that size (a fine-tuned ResNet at 128: resize 146, bilinear).
    resnet128 = triton_config_json(text_format.Parse(triton_config("m", "pytorch", image_size=128), ModelConfig()))
    assert "arch" not in resnet128["parameters"]
    assert served_data_config(resnet128) == DataConfig(128, 146, "bilinear") == DEFAULT_DATA_CONFIG.at(128)
    # Written before the parameters: the input's side, the ResNets' proportion.
    old = text_format.Parse("\n".join(line for line in text.splitlines() if not line.startswith("parameters")),
                            ModelConfig())
    assert not old.parameters and served_data_config(triton_config_json(old)) == DEFAULT_DATA_CONFIG.at(380)
    incomplete = dict(served, parameters={"image_size": {"string_value": "380"}})
    with pytest.raises(ValueError, match="resize_size, interpolation"):
        served_data_config(incomplete)
    with pytest.raises(ValueError, match="interpolation"):
        served_data_config(dict(served, parameters={**served["parameters"], "interpolation": {"string_value": "x"}}))


def triton_config_json(config) -> dict:
    """A parsed config.pbtxt as Triton serves it (``GET /v2/models/<name>/config``): core's ModelConfigToJson
    prints the ModelConfig with protobuf's JSON printer keeping the proto field names (``max_batch_size``) and
    printing fields left at their defaults, then turns the 64-bit integers protobuf prints as strings back into
    numbers (``dims``, the dynamic batcher's). Map fields are objects: ``parameters: {key: {"string_value": ...}}``.
    """
    import inspect

    from google.protobuf import json_format

    defaults = ("always_print_fields_with_no_presence"  # protobuf 5.26+; the older name before
                if "always_print_fields_with_no_presence" in inspect.signature(json_format.MessageToDict).parameters
                else "including_default_value_fields")
    data = json_format.MessageToDict(config, preserving_proto_field_name=True, **{defaults: True})
    for io in data.get("input", []) + data.get("output", []):
        io["dims"] = [int(d) for d in io.get("dims", [])]
    batching = data.get("dynamic_batching", {})
    for key in ("max_queue_delay_microseconds", "priority_levels", "default_priority_level"):
        if key in batching:
            batching[key] = int(batching[key])
    return data


class LoopbackTriton(LoopbackHTTP):
    """Answers Triton's HTTP/REST requests (KServe v2) on 127.0.0.1 for a model repository: a model's config
    (``GET /v2/models/<name>[/versions/<v>]/config``, the JSON of :func:`triton_config_json`) and inference.

    Each inference request is checked against the model's config.pbtxt as Triton checks it (input and output
    names, FP32, per-sample dims, batch size up to max_batch_size), then run on the repository's
    model file: ONNX with onnxruntime, TorchScript with torch.jit. :attr:`requests` keeps each request's JSON
    header, :attr:`inputs` its input array, :attr:`gets` the paths of the GET requests.
    """

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.requests: list[dict] = []
        self.inputs: list[np.ndarray] = []
        self.gets: list[str] = []
        self._models: dict[str, tuple] = {}
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                status, reply = outer.get(self.path)
                self.reply(status, reply)

            def reply(self, status: int, reply: dict) -> None:
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                status, reply = outer.infer(self.path, body, self.headers.get("Inference-Header-Content-Length"))
                self.reply(status, reply)

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.address

    def model(self, name: str):
        if name not in self._models:
            config = parse_config(self.repo / name / "config.pbtxt")
            path = self.repo / name / "1" / config.default_model_filename
            if config.backend == "onnxruntime":
                session = ort_session(path)
                run = lambda x: session.run([config.output[0].name], {config.input[0].name: x})[0]  # noqa: E731
            else:
                module = torch.jit.load(str(path))

                def run(x):
                    with torch.no_grad():
                        return module(torch.from_numpy(x)).numpy()
            self._models[name] = (config, run)
        return self._models[name]

    def get(self, path: str) -> tuple[int, dict]:
        self.gets.append(path)
        match = re.fullmatch(r"/v2/models/([^/?]+)(?:/versions/\d+)?/config", path.split("?", 1)[0])
        if not match or not (self.repo / match.group(1) / "config.pbtxt").is_file():
            return 404, {"error": f"unknown model or path {path}"}
        config, _ = self.model(match.group(1))
        return 200, triton_config_json(config)

    def infer(self, path: str, body: bytes, header_length) -> tuple[int, dict]:
        match = re.fullmatch(r"/v2/models/([^/]+)(?:/versions/\d+)?/infer", path)
        if not match or not (self.repo / match.group(1) / "config.pbtxt").is_file():
            return 404, {"error": f"unknown model or path {path}"}
        config, run = self.model(match.group(1))
        split = int(header_length) if header_length is not None else len(body)
        request = json.loads(body[:split])
        self.requests.append(request)
        (inp,) = request["inputs"]
        (config_in,), (config_out,) = config.input, config.output
        if inp["name"] != config_in.name or inp["datatype"] != "FP32":
            return 400, {"error": f"unexpected input {inp['name']} {inp['datatype']}"}
        shape = inp["shape"]
        if shape[1:] != list(config_in.dims) or not 1 <= shape[0] <= config.max_batch_size:
            return 400, {"error": f"unexpected shape {shape}"}
        if [o["name"] for o in request.get("outputs", [])] not in ([], [config_out.name]):
            return 400, {"error": f"unknown outputs {request['outputs']}"}
        size = inp.get("parameters", {}).get("binary_data_size")
        if size is not None:
            x = np.frombuffer(body[split:split + size], dtype=np.float32).reshape(shape).copy()
        else:
            x = np.asarray(inp["data"], dtype=np.float32).reshape(shape)
        self.inputs.append(x)
        logits = run(np.ascontiguousarray(x))
        output = {"name": config_out.name, "datatype": "FP32", "shape": list(logits.shape),
                  "data": logits.ravel().tolist()}
        return 200, {"model_name": config.name, "model_version": "1", "outputs": [output]}


def load_client():
    import importlib.util

    try:  # any ImportError skips (pytest.importorskip's exc_type= for that needs pytest 8.2)
        import tritonclient.http  # noqa: F401
    except ImportError as error:
        pytest.skip(f"tritonclient[http] cannot be imported: {error}")
    spec = importlib.util.spec_from_file_location("triton_client_example", REPO_ROOT / "examples" / "triton_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_client_preprocessing_equals_build_transform() -> None:
    """The example client's numpy preprocessing gives exactly the tensor of resnet.data.preprocessing's pipeline."""
    from PIL import Image, ImageOps

    client = load_client()
    transform = build_transform()
    for photo in PHOTOS:
        ours = client.preprocess(str(photo))
        reference = transform(ImageOps.exif_transpose(Image.open(photo)).convert("RGB")).numpy()
        assert ours.shape == INPUT_SHAPE and ours.dtype == np.float32
        assert max_diff(ours, reference) <= 1e-6, photo.name


def without_parameters(repo: Path, folder: str, into: Path) -> Path:
    """A repository holding ``repo``'s model ``folder`` as written before configs carried the preprocessing: its
    config.pbtxt less the ``parameters`` lines, the model version folder linked."""
    (into / folder).mkdir(parents=True)
    text = (repo / folder / "config.pbtxt").read_text()
    assert "parameters" in text
    (into / folder / "config.pbtxt").write_text(
        "".join(line for line in text.splitlines(keepends=True) if not line.startswith("parameters")))
    (into / folder / "1").symlink_to(repo / folder / "1")
    return into


@pytest.mark.parametrize("model_name, written_before", [("resnet50_onnx", False), ("resnet50_libtorch", False),
                                                        ("resnet50_onnx", True)])
@pytest.mark.slow
def test_example_client_against_loopback_triton(triton_repo: Path, ngc_file, model_name: str, written_before: bool,
                                                tmp_path: Path) -> None:
    """examples/triton_client.py asks for the model's config, sends the photos to each exported model, prepared
    as the config says, and prints the eager model's top 5; a repository written before the configs carried the
    preprocessing (``written_before``) is served the same (its input's side, the ResNets' proportion)."""
    load_client()
    repo = without_parameters(triton_repo, model_name, tmp_path / "old") if written_before else triton_repo
    photos = [str(p) for p in PHOTOS]
    model = load_resnet50(ngc_file)
    transform = build_transform()
    from processing_utils import load_image

    batch = torch.stack([transform(load_image(p)) for p in photos])
    with torch.no_grad():
        expected = model(batch)

    with LoopbackTriton(repo) as server:
        result = subprocess.run(
            [sys.executable, "examples/triton_client.py", "--url", server.url, "--model", model_name, *photos],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
        )
    assert result.returncode == 0, result.stderr
    assert server.gets == [f"/v2/models/{model_name}/config"]
    (request,) = server.requests
    assert request["inputs"][0]["shape"] == [len(photos), *INPUT_SHAPE]
    assert max_diff(server.inputs[0], batch) <= 1e-6
    blocks = re.split(r"^(?=\S)", result.stdout, flags=re.MULTILINE)
    blocks = [b for b in blocks if b.strip()]
    assert [b.splitlines()[0] for b in blocks] == photos
    for block, logits in zip(blocks, expected):
        printed = [int(line.split()[1]) for line in block.splitlines()[1:]]
        assert len(printed) == 5
        assert_top_k_agrees(printed, logits, TOLERANCE)


#: The EfficientNet served in the Triton tests: B0 at a small size (cheap), prepared as B0 is at that size.
B0 = "efficientnet-b0"
B0_SIZE = 64
B0_CONFIG = DataConfig(64, 73, "bicubic")  # B0's 224 / 256 bicubic, scaled to 64


@pytest.fixture(scope="module")
def b0_weights(tmp_path_factory) -> Path:
    """The stand-in of NVIDIA's NGC file for EfficientNet-B0 (live recipe, as tests/test_efficientnet_cli.py)."""
    from support import standin_state_dict

    path = tmp_path_factory.mktemp("b0") / "nvidia_efficientnet-b0_210412.pth"
    torch.save(standin_state_dict(B0, live=True), path)
    return path


@pytest.fixture(scope="module")
def b0_triton_repo(b0_weights: Path, tmp_path_factory) -> Path:
    """``export --arch efficientnet-b0 --triton`` at ``--image-size 64``, both backends, from the command line."""
    from resnet.__main__ import main

    repo = tmp_path_factory.mktemp("b0-triton") / "models"
    assert main(["export", "--arch", B0, "--weights", str(b0_weights), "--triton", str(repo), "--image-size",
                 str(B0_SIZE), "--onnx-exporter", "torchscript", "--quiet"]) == 0
    return repo


@pytest.mark.slow
def test_efficientnet_triton_configs_hold_its_preprocessing(b0_triton_repo: Path) -> None:
    """Both configs of an EfficientNet-B0 repository name the arch and its bicubic preprocessing at the size asked."""
    assert sorted(p.name for p in b0_triton_repo.iterdir()) == [f"{B0}_libtorch", f"{B0}_onnx"]
    for folder in sorted(b0_triton_repo.iterdir()):
        config = parse_config(folder / "config.pbtxt")
        assert {key: value.string_value for key, value in config.parameters.items()} == {
            "arch": B0, "image_size": "64", "resize_size": "73", "interpolation": "bicubic"}
        assert list(config.input[0].dims) == [3, B0_SIZE, B0_SIZE]
        assert served_data_config(triton_config_json(config)) == B0_CONFIG


@pytest.mark.parametrize("model_name", [f"{B0}_onnx", f"{B0}_libtorch"])
@pytest.mark.slow
def test_example_client_prepares_an_efficientnet_as_its_config_says(b0_triton_repo: Path, b0_weights: Path,
                                                                    model_name: str) -> None:
    """examples/triton_client.py against an EfficientNet-B0 repository: the photos are sent prepared as B0 is
    (bicubic, resize 73, crop 64: the config's parameters, not the input's side with the ResNets' bilinear resize),
    and the printed top 5 are the eager model's on them."""
    load_client()
    from processing_utils import load_image

    photos = [str(p) for p in PHOTOS]
    batch = torch.stack([build_transform(B0_CONFIG)(load_image(p)) for p in photos])
    bilinear = torch.stack([build_transform(DEFAULT_DATA_CONFIG.at(B0_SIZE))(load_image(p)) for p in photos])
    assert max_diff(batch, bilinear) > 0.05  # what the client would send if it took the input dims alone
    model = create_model(B0, pretrained_from_file=b0_weights).eval()
    with torch.no_grad():
        expected = model(batch)

    with LoopbackTriton(b0_triton_repo) as server:
        result = subprocess.run(
            [sys.executable, "examples/triton_client.py", "--url", server.url, "--model", model_name, *photos],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
        )
    assert result.returncode == 0, result.stderr
    assert server.gets == [f"/v2/models/{model_name}/config"]
    (sent,) = server.inputs
    assert sent.shape == (len(photos), 3, B0_SIZE, B0_SIZE)
    assert max_diff(sent, batch) <= 1e-5
    blocks = [b for b in re.split(r"^(?=\S)", result.stdout, flags=re.MULTILINE) if b.strip()]
    assert [b.splitlines()[0] for b in blocks] == photos
    for block, logits in zip(blocks, expected):
        printed = [int(line.split()[1]) for line in block.splitlines()[1:]]
        assert len(printed) == 5
        assert_top_k_agrees(printed, logits, TOLERANCE)


def test_example_client_class_names(tmp_path: Path) -> None:
    """ImageNet's names for 1000 classes, ``class N`` otherwise, or the lines of --labels (its count checked)."""
    client = load_client()
    assert client.class_names(1000)[0] == "tench, Tinca tinca"
    assert client.class_names(3) == ["class 0", "class 1", "class 2"]
    labels = tmp_path / "labels.txt"
    labels.write_text("apple\nbanana\ncherry\n", encoding="utf-8")
    assert client.class_names(3, str(labels)) == ["apple", "banana", "cherry"]
    with pytest.raises(SystemExit, match="3 names for a 4-class model"):
        client.class_names(4, str(labels))


# --------------------------------------------------------------------------- bad input, atomic output


def test_cli_refuses_non_empty_output_without_force(cli, ngc_file, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("export", "--weights", str(ngc_file("resnet50")), "--output", str(out))
    assert_one_line_error(result, 2, str(out), "not empty", "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert entries(tmp_path) == ["out"]


def test_cli_unknown_arch(cli, ngc_file, tmp_path: Path) -> None:
    result = cli("export", "--arch", "resnet51", "--weights", str(ngc_file("resnet50")), "--output",
                        str(tmp_path / "out"))
    assert_one_line_error(result, 2, "'resnet51'", "resnet50", "se-resnext101-32x4d")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_weights_that_do_not_fit_the_arch(cli, ngc_file, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    result = cli("export", "--arch", "resnet50", "--weights", str(ngc_file("se-resnext101-32x4d")),
                        "--triton", str(out))
    assert_one_line_error(result, 2, str(ngc_file("se-resnext101-32x4d")), "se-resnext101-32x4d")
    assert not (tmp_path / "deep").exists()


def test_cli_missing_weights_file(cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth.tar"
    result = cli("export", "--weights", str(missing), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, 2, str(missing), "does not exist")
    assert not (tmp_path / "out").exists()


def test_option_mix_ups_fail_before_the_model_is_built(ngc_file, tmp_path: Path, capsys, monkeypatch) -> None:
    """Through the real dispatcher (in-process, to stay fast); the model loader must not even be reached."""
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: pytest.fail("model built despite bad options"))
    weights = str(ngc_file("resnet50"))
    for argv, fragments in (
        (["--triton", str(tmp_path / "t"), "--format", "onnx"], ("--format", "--backend")),
        (["--output", str(tmp_path / "o"), "--backend", "pytorch"], ("--backend", "--triton")),
        (["--output", str(tmp_path / "o"), "--opset", "99"], ("--opset 99",)),
        (["--triton", str(tmp_path / "t"), "--max-batch-size", "0"], ("--max-batch-size",)),
        (["--triton", str(tmp_path / "t"), "--model-name", "../escape"], ("--model-name", "../escape")),
        (["--output", str(tmp_path / "o"), "--opset", "0"], ("--opset",)),
        (["--output", str(tmp_path / "o"), "--mirror", "not-a-url"], ("--mirror",)),
        (["--output", str(ngc_file("resnet50")), "--force"], ("not a directory",)),
        (["--output", str(ngc_file("resnet50") / "out")], ("is a file, not a folder",)),
    ):
        assert exit_status(["export", "--weights", weights, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        assert all(f in err for f in fragments), (fragments, err)
    assert entries(tmp_path) == []


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--output", "OUT"], ("the onnx export", "pip install onnx", "--format torchscript")),
        (["--output", "OUT", "--format", "onnx"], ("the onnx export", "pip install onnx", "--format torchscript")),
        (["--triton", "OUT"], ("onnxruntime backend", "pip install onnx", "--backend pytorch")),
        (["--triton", "OUT", "--backend", "onnxruntime"], ("onnxruntime backend", "pip install onnx")),
    ],
)
def test_a_missing_onnx_package_is_named_before_any_work(
    argv, fragments, ngc_file, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A runtime-only install (no onnx): exit 2 with the pip command, before the model is built."""
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: pytest.fail("model built without onnx"))
    argv = [str(tmp_path / "out") if arg == "OUT" else arg for arg in argv]
    assert exit_status(["export", "--weights", str(ngc_file("resnet50")), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert all(f in err for f in fragments), (fragments, err)
    assert entries(tmp_path) == []


#: ``python -m resnet export ARGS`` in a process where onnx and onnxscript cannot be imported.
WITHOUT_ONNX = (
    "import runpy, sys; sys.modules.update(dict.fromkeys(['onnx', 'onnxscript'])); "
    "sys.argv = ['resnet', 'export', *sys.argv[1:]]; runpy.run_module('resnet', run_name='__main__')"
)


@pytest.mark.slow
def test_torchscript_alone_is_exported_without_onnx(ngc_file, tmp_path: Path, monkeypatch) -> None:
    """A runtime-only install (no onnx, as requirements.txt leaves it out) exports TorchScript."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    plan = exporter.plan_export(_args(triton=str(tmp_path / "t"), output=None, backend="pytorch"))
    assert plan.formats == ("torchscript",) and plan.backends == ("pytorch",) and plan.onnx_exporter is None

    out = tmp_path / "out"
    weights = str(ngc_file("resnet50"))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-c", WITHOUT_ONNX, "--weights", weights, "--output"]
    result = subprocess.run([*command, str(out), "--format", "torchscript", "--quiet"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "resnet50.pt"]
    refused = subprocess.run([*command, str(tmp_path / "both")], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert_one_line_error(refused, 2, "pip install onnx", "--format torchscript")
    assert not (tmp_path / "both").exists()
    with torch.no_grad():
        logits = torch.jit.load(str(out / "resnet50.pt"))(parity_input("resnet50"))
    assert max_diff(logits, load_expected("resnet50")["logits"]) <= TOLERANCE


def test_opset_check_without_torchs_opset_table(tmp_path: Path, monkeypatch) -> None:
    """torch's private table of the highest opset may go away: then the exporter itself judges --opset."""
    from torch.onnx import _constants

    from resnet.deploy.exporters import highest_opset
    from resnet.cli.options import CommandError

    assert highest_opset("torchscript") is not None  # this torch has the table, so the test hides it
    with pytest.raises(CommandError, match="--opset 99"):
        exporter.plan_export(_args(output=str(tmp_path / "o"), opset=99, onnx_exporter="torchscript"))
    monkeypatch.delattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET")
    assert highest_opset("torchscript") is None
    plan = exporter.plan_export(_args(output=str(tmp_path / "o"), opset=99, onnx_exporter="torchscript"))
    assert plan.onnx_exporter == "torchscript"


def test_default_opset_is_what_this_torchs_tracing_exporter_writes(monkeypatch) -> None:
    """Opset 20 where torch writes it; torch 2.1-2.3's tracing exporter stops at 17; no table: 20."""
    from torch.onnx import _constants

    from resnet.deploy.exporters import PREFERRED_OPSET, default_opset

    assert PREFERRED_OPSET == 20
    for highest, expected in ((17, 17), (20, 20), (23, 20)):
        monkeypatch.setattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", highest, raising=False)
        assert default_opset() == expected
    monkeypatch.delattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET")
    assert default_opset() == 20


def _onnx_export_of(keywords: str):
    """torch.onnx.export as an older torch has it: torch 2.1-2.3 (no ``dynamo=``) or 2.4 (``dynamo=`` alone)."""
    real = torch.onnx.export

    def export_2_1(model, args, f, *, input_names=None, output_names=None, opset_version=None,
                   do_constant_folding=True, dynamic_axes=None):
        return real(model, args, f, input_names=input_names, output_names=output_names, opset_version=opset_version,
                    do_constant_folding=do_constant_folding, dynamic_axes=dynamic_axes,
                    **tracing_exporter_keywords(real))

    def export_2_4(model, args, f, *, input_names=None, output_names=None, opset_version=None,
                   do_constant_folding=True, dynamic_axes=None, dynamo=False):
        assert not dynamo, "torch 2.4's dynamo=True ignores dynamic_shapes: it must not be used"
        return export_2_1(model, args, f, input_names=input_names, output_names=output_names,
                          opset_version=opset_version, do_constant_folding=do_constant_folding,
                          dynamic_axes=dynamic_axes)

    return {"2.1": export_2_1, "2.4": export_2_4}[keywords]


def test_tracing_exporter_keywords_pass_dynamo_only_where_export_takes_it(monkeypatch) -> None:
    """dynamo=False for an export with dynamo= (torch 2.4 on), nothing for torch 2.1-2.3's; default: torch's own."""
    assert tracing_exporter_keywords(_onnx_export_of("2.1")) == {}
    assert tracing_exporter_keywords(_onnx_export_of("2.4")) == {"dynamo": False}
    monkeypatch.setattr(torch.onnx, "export", _onnx_export_of("2.1"))
    assert tracing_exporter_keywords() == {}
    monkeypatch.setattr(torch.onnx, "export", _onnx_export_of("2.4"))
    assert tracing_exporter_keywords() == {"dynamo": False}


@pytest.mark.parametrize("keywords", ["2.1", "2.4"])
@pytest.mark.slow
def test_torch_without_the_dynamo_exporter_exports_with_the_tracing_one(
    keywords, resnet50, eager_extra, tmp_path: Path, monkeypatch
) -> None:
    """On a torch.onnx.export without dynamo= and dynamic_shapes=, auto means the tracing exporter,
    dynamo is refused naming torch 2.5, and the export works (without passing dynamo=)."""
    from resnet import exporters

    monkeypatch.setattr(exporters, "has_onnxscript", lambda: True)
    monkeypatch.setattr(torch.onnx, "export", _onnx_export_of(keywords))
    assert not has_dynamo_exporter()
    assert exporters.resolve_onnx_exporter("auto") == "torchscript"
    with pytest.raises(ExportError, match=r"no dynamo ONNX exporter.*torch 2\.5.*--onnx-exporter torchscript"):
        exporters.resolve_onnx_exporter("dynamo")
    path = export_onnx(prepare_for_export(resnet50), tmp_path / "old.onnx",
                       metadata=export_metadata("resnet50", weights="stand-in"))
    assert check_onnx_file(path, eager_extra) <= TOLERANCE


@pytest.mark.slow
def test_pretrained_weights_come_through_the_hub_cache(server, hub_dir: Path, ngc_file, tmp_path: Path) -> None:
    """--pretrained fetches the NGC file (here from a loopback mirror) into the torch hub cache."""
    from resnet.__main__ import main
    from resnet.weights.catalogue import CHECKPOINTS
    from support import Route

    file_name = CHECKPOINTS["resnet50"].file_name
    server.routes[f"/{file_name}"] = Route(ngc_file("resnet50").read_bytes())
    out = tmp_path / "out"
    status = main(["export", "--pretrained", "--mirror", server.base_url, "--output", str(out),
                   "--format", "torchscript", "--quiet"])
    assert status == 0
    assert (hub_dir / "checkpoints" / file_name).is_file()
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "resnet50.pt"]
    assert json.loads((out / "export.json").read_text())["weights"].startswith("NGC")
    with torch.no_grad():
        logits = torch.jit.load(str(out / "resnet50.pt"))(parity_input("resnet50"))
    assert max_diff(logits, load_expected("resnet50")["logits"]) <= TOLERANCE


def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    exporter.add_arguments(parser)
    args = parser.parse_args(["--weights", "unused", "--output", "unused"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.slow
def test_failed_export_leaves_nothing_behind(resnet50, monkeypatch, tmp_path: Path, capsys, existing: bool) -> None:
    """An exporter failing half-way through: no partial output, and a previous export stays as it was."""
    out = tmp_path / "parent" / "out"
    if existing:
        out.mkdir(parents=True)
        (out / "old.txt").write_text("previous export")

    def half_written(model, path, **kwargs):
        Path(path).write_bytes(b"half an onnx file")
        raise RuntimeError("simulated exporter crash\nwith a second line")

    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: resnet50)
    monkeypatch.setattr(exporter, "export_onnx", half_written)
    status = exporter.run(_args(output=str(out), force=existing, onnx_exporter="torchscript", quiet=True))
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "simulated exporter crash" in err and str(out) in err
    if existing:
        assert [p.name for p in out.parent.iterdir()] == ["out"]
        assert [p.name for p in out.iterdir()] == ["old.txt"]
    else:
        assert not (tmp_path / "parent").exists()


def test_force_replaces_an_existing_export(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputPathError, match="--force"):
        with atomic_directory(out):
            pass
    with atomic_directory(out, force=True) as staging:
        assert staging.parent == tmp_path and staging != out
        (staging / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # replaced only at the end
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert entries(tmp_path) == ["out"]


def test_interrupted_export_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(out) as staging:
            (staging / "model.onnx").write_bytes(b"partial")
            raise KeyboardInterrupt
    assert entries(tmp_path) == []


@pytest.mark.slow
def test_ctrl_c_during_an_export_is_one_line_and_leaves_nothing(resnet50, monkeypatch, tmp_path, capsys) -> None:
    out = tmp_path / "out"

    def interrupted(model, path, **kwargs):
        Path(path).write_bytes(b"half an onnx file")
        signal.raise_signal(signal.SIGINT)  # Ctrl+C: Python's handler raises KeyboardInterrupt here
        pytest.fail("the export went on after Ctrl+C")

    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: resnet50)
    monkeypatch.setattr(exporter, "export_onnx", interrupted)
    try:
        status = exit_status(["export", "--weights", "unused", "--output", str(out), "--format", "onnx",
                              "--onnx-exporter", "torchscript", "--quiet"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl+C came out of the command as a KeyboardInterrupt traceback")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err == [f"error: interrupted (Ctrl+C): nothing was written to '{out}'"]
    assert entries(tmp_path) == []


@pytest.mark.parametrize("given", [".", "x/.."])
def test_the_current_folder_as_output_is_refused_before_any_work(tmp_path, monkeypatch, capsys, given) -> None:
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: pytest.fail("the model was built"))
    status = exit_status(["export", "--weights", "unused", "--output", given, "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "is the folder this command runs in" in err[0], err
    assert (tmp_path / "x").is_dir()


@pytest.mark.slow
def test_an_export_sweeps_what_a_killed_export_left(resnet50, monkeypatch, tmp_path, capsys) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine = f"-{os.getpid():010d}-"
    dead = tmp_path / staging_name("out").replace(mine, f"-{int(ended.stdout):010d}-")  # its process has ended
    live = tmp_path / staging_name("out")  # a writer that runs (this process)
    for folder in (dead, live):
        folder.mkdir()
        (folder / "resnet50.pt").write_bytes(b"half an export")
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: resnet50)
    assert exporter.run(_args(output=str(tmp_path / "out"), format="torchscript", quiet=True)) == 0
    assert entries(tmp_path) == sorted(["out", live.name])


# --------------------------------------------------------------------------- fine-tuned weights, INT8, pt2

FRUIT = ["apple", "banana", "cherry"]


@pytest.fixture(scope="module")
def fruit_model(tmp_path_factory) -> Path:
    """A 3-class ``model.pth`` as ``python -m resnet train`` writes it: stand-in backbone, its own class names."""
    import resnet.training.run_files as run_files
    from support import standin_state_dict

    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:3].clone(), state["fc.bias"][:3].clone()
    path = tmp_path_factory.mktemp("fruit") / "model.pth"
    torch.save(run_files.model_file(state, arch="resnet50", classes=FRUIT, image_size=224), path)
    return path


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for photo in PHOTOS:
        (folder / photo.name).write_bytes(photo.read_bytes())
    return folder


@pytest.mark.slow
def test_triton_int8_repository_of_a_fine_tuned_model(fruit_model: Path, photo_folder: Path, tmp_path: Path,
                                                       capsys) -> None:
    """--triton --int8 adds <name>_int8_onnx; both models carry the fine-tuned names (labels.txt and metadata)."""
    from resnet.__main__ import main

    repo = tmp_path / "models"
    assert main(["export", "--weights", str(fruit_model), "--triton", str(repo), "--backend", "onnxruntime",
                 "--int8", "--calibration", str(photo_folder), "--calibration-images", "2",
                 "--onnx-exporter", "torchscript", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: --calibration: only 2 readable calibration image(s)"), err
    assert sorted(p.name for p in repo.iterdir()) == ["resnet50_int8_onnx", "resnet50_onnx"]
    x = parity_input("resnet50")
    for folder in ("resnet50_onnx", "resnet50_int8_onnx"):
        model_dir = repo / folder
        assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
        config = parse_config(model_dir / "config.pbtxt")
        assert (config.name, config.backend, config.platform) == (folder, "onnxruntime", "onnxruntime_onnx")
        assert list(config.output[0].dims) == [3] and config.output[0].label_filename == "labels.txt"
        assert (model_dir / "labels.txt").read_text().splitlines() == FRUIT
        proto = onnx.load(str(model_dir / "1" / "model.onnx"))
        props = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(props["class_names"]) == FRUIT
        quantized = any(node.op_type == "QuantizeLinear" for node in proto.graph.node)
        assert quantized == (folder == "resnet50_int8_onnx")
        if quantized:
            assert json.loads(props["quantization"])["calibration_images"] == 2
        (logits,) = ort_session(model_dir / "1" / "model.onnx").run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        assert logits.shape == (2, 3)
    assert {oct(p.stat().st_mode & 0o777) for p in repo.rglob("*") if p.is_file()} == {oct(FILE_MODE)}


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--output", "OUT", "--int8"], ("--int8 needs --calibration DIR",)),
        (["--output", "OUT", "--calibration", "PHOTOS"], ("--calibration applies to --int8",)),
        (["--output", "OUT", "--calibration-method", "entropy"], ("--calibration-method applies to --int8",)),
        (["--output", "OUT", "--int8", "--calibration", "PHOTOS", "--fp16"], ("cannot be combined with --fp16",)),
        (["--output", "OUT", "--int8", "--calibration", "PHOTOS", "--format", "torchscript"],
         ("--format torchscript writes none", "--format onnx")),
        (["--output", "OUT", "--int8", "--calibration", "PHOTOS", "--format", "pt2"], ("--format pt2 writes none",)),
        (["--triton", "OUT", "--int8", "--calibration", "PHOTOS", "--backend", "pytorch"],
         ("--backend pytorch writes none", "onnxruntime")),
        (["--output", "OUT", "--int8", "--calibration", "MISSING"], ("--calibration", "MISSING", "does not exist")),
        (["--output", "OUT", "--int8", "--calibration", "EMPTY"], ("--calibration", "EMPTY", "holds no image files")),
        (["--output", "OUT", "--int8", "--calibration", "BROKEN"], ("none of the 1 image files", "BROKEN")),
        (["--output", "OUT", "--int8", "--calibration", "PHOTOS", "--calibration-images", "0"],
         ("--calibration-images",)),
        (["--output", "OUT", "--int8", "--calibration", "PHOTOS", "--calibration-method", "kl"],
         ("--calibration-method",)),
    ],
)
def test_int8_mix_ups_and_bad_calibration_folders_fail_before_the_model_is_built(
    argv, fragments, ngc_file, photo_folder: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: pytest.fail("model built despite bad options"))
    inputs = tmp_path / "inputs"
    (inputs / "EMPTY").mkdir(parents=True)
    (inputs / "BROKEN").mkdir()
    (inputs / "BROKEN" / "x.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    names = {"OUT": str(tmp_path / "out"), "PHOTOS": str(photo_folder), "MISSING": str(inputs / "MISSING"),
             "EMPTY": str(inputs / "EMPTY"), "BROKEN": str(inputs / "BROKEN")}
    assert exit_status(["export", "--weights", str(ngc_file("resnet50")), *[names.get(a, a) for a in argv]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert all(f in err for f in fragments), (fragments, err)
    assert entries(tmp_path) == ["inputs"]


def test_fp16_export_without_cpu_float16_is_refused(ngc_file, tmp_path: Path, capsys, monkeypatch) -> None:
    """torch 2.1 has no float16 convolutions for the CPU, where exports are traced: --fp16 is refused up front, one
    line naming the torch version (torch 2.1's missing kernel is faked)."""
    from resnet.fast.devices import cpu_runs_float16_convolutions as probe

    real = torch.nn.functional.conv2d

    def conv2d_of_torch_2_1(input, *args, **kwargs):  # noqa: A002 - torch's name
        if input.dtype == torch.float16 and input.device.type == "cpu":
            raise RuntimeError('"slow_conv2d_cpu" not implemented for \'Half\'')
        return real(input, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", conv2d_of_torch_2_1)
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: pytest.fail("model built without float16 on CPU"))
    assert not probe()
    argv = ["export", "--weights", str(ngc_file("resnet50")), "--output", str(tmp_path / "out"), "--fp16"]
    assert exit_status(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --fp16")
    assert f"torch {torch.__version__}" in err and "torch 2.2" in err and entries(tmp_path) == []


def test_int8_entropy_without_scipy_on_older_onnxruntime_is_refused_before_any_work(ngc_file, photo_folder, tmp_path,
                                                                                    capsys, monkeypatch) -> None:
    """onnxruntime 1.16's entropy calibration imports scipy: without it (faked: newer onnxruntime's own entropy and
    scipy hidden), exit 2 with one line naming scipy and the other methods, before the model is built."""
    from onnxruntime.quantization import calibrate

    monkeypatch.delattr(calibrate, "entropy", raising=False)
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: pytest.fail("model built without scipy"))
    argv = ["export", "--weights", str(ngc_file("resnet50")), "--output", str(tmp_path / "out"), "--int8",
            "--calibration", str(photo_folder), "--calibration-method", "entropy"]
    assert exit_status(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --calibration-method entropy:"), err
    assert "pip install scipy" in err and "minmax or percentile" in err and entries(tmp_path) == []


def test_int8_without_onnxruntime_names_the_package_before_any_work(ngc_file, photo_folder, tmp_path, capsys,
                                                                   monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: pytest.fail("model built without onnxruntime"))
    argv = ["export", "--weights", str(ngc_file("resnet50")), "--output", str(tmp_path / "out"), "--int8",
            "--calibration", str(photo_folder)]
    assert exit_status(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--int8 needs the onnxruntime package" in err
    assert "pip install onnxruntime" in err and entries(tmp_path) == []


@pytest.mark.skipif(not program_available(), reason="this torch has no torch.export.Dim / export(dynamic_shapes=) "
                    "(torch 2.2) to write the ExportedProgram; the refusal is tested below")
@pytest.mark.slow
def test_pt2_writes_the_program_and_one_aoti_package_per_device(ngc_file, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    """The AOTInductor compile itself (minutes) is tested in test_pt2.py; here: what --format pt2 writes and
    hands to it, on a machine with CUDA (faked: the CUDA program is a stand-in) and without (torch 2.2-2.5, which
    have no AOTInductor package API, are given the faked compile too)."""
    from resnet.__main__ import main

    compiled, traced = [], []

    def compile_package(program, path, *, metadata):
        compiled.append((program, Path(path).name, metadata))
        Path(path).write_bytes(b"an AOTInductor package")
        return Path(path), 0.0

    def make_program(model, *, device):
        traced.append((type(model).__name__, device))
        return f"program on {device}"

    monkeypatch.setattr(exporter, "compile_package", compile_package)
    monkeypatch.setattr(exporter, "make_program", make_program)
    monkeypatch.setattr(exporter, "aoti_devices", lambda: ("cpu", "cuda"))
    monkeypatch.setattr(exporter, "aoti_available", lambda: True)
    out = tmp_path / "out"
    assert main(["export", "--weights", str(ngc_file("resnet50")), "--format", "pt2", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    files = ["resnet50.pt2", "resnet50-aoti-cpu.pt2", "resnet50-aoti-cuda.pt2"]
    assert captured.out.splitlines() == [str(out / name) for name in files]
    assert "AOTInductor package for CPU" in captured.err and "AOTInductor package for CUDA" in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "export.json"])
    record = json.loads((out / "export.json").read_text())
    assert record["files"] == files and "onnx_opset" not in record

    assert [name for _, name, _ in compiled] == files[1:] and traced == [("ExportModule", "cuda")]
    assert isinstance(compiled[0][0], torch.export.ExportedProgram) and compiled[1][0] == "program on cuda"
    assert all(meta == {k: v for k, v in record.items() if k != "files"} for _, _, meta in compiled)
    extra = {"metadata.json": ""}
    program = torch.export.load(str(out / "resnet50.pt2"), extra_files=extra)
    assert json.loads(extra["metadata.json"])["arch"] == "resnet50"
    with torch.no_grad():
        logits = program.module()(parity_input("resnet50"))
    assert max_diff(logits, load_expected("resnet50")["logits"]) <= TOLERANCE


@pytest.mark.parametrize("missing", ["aoti_compile_and_package", "torch.export.Dim"])
def test_pt2_without_aotinductor_is_refused_before_any_work(missing, ngc_file, tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    """Without AOTInductor's package API (torch < 2.6) or torch.export.Dim (torch 2.1): exit 2, one line naming
    the torch version, before the model is built."""
    import torch._inductor

    if missing == "torch.export.Dim":
        monkeypatch.setattr(exporter, "aoti_available", lambda: True)
        monkeypatch.delattr(torch.export, "Dim", raising=False)
    else:
        monkeypatch.delattr(torch._inductor, "aoti_compile_and_package", raising=False)
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: pytest.fail("model built without AOTInductor"))
    argv = ["export", "--weights", str(ngc_file("resnet50")), "--format", "pt2", "--output", str(tmp_path / "o")]
    assert exit_status(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch 2.6 or newer" in err and torch.__version__ in err
    assert entries(tmp_path) == []
