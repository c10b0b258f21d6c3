"""Static INT8 quantization (resnet.deploy.quantize): calibration input, the QDQ model, and its accuracy.

Accuracy is measured against the fp32 export run by ONNX Runtime (itself checked against the
reference fixtures in test_export.py), on photos the calibration never saw:

* ResNet-50 with the stand-in weights. Their logits are almost flat (neighbouring classes are often
  within 1% of the logit range of each other), so top-1 agreement says little there; the checks are
  the INT8 logits' error relative to the fp32 logit range and their correlation with the fp32 logits.
* A small fine-tuned model: the stand-in backbone with a 4-class head fitted on generated images of
  4 kinds (colour and texture), whose logits are decisive like a trained model's. Top-1 agreement with
  the fp32 model must be complete on held-out generated images, with the same error checks.

The bounds are about 2-3x what was measured here (AMD EPYC with VNNI, ONNX Runtime 1.32), so a
correct quantization passes on other CPUs and a broken one (wrong preprocessing, ranges or scales)
fails by far; the measured figures are printed with -s and quoted in benchmarks/README.md.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photos import jittered_photos
from support import PHOTOS
from resnet.models.builder import create_model
from resnet.cli.export import INPUT_NAME, OUTPUT_NAME, export_metadata, export_onnx, prepare_for_export
from resnet.deploy.exporters import tracing_exporter_keywords
from resnet.data.preprocessing import build_transform

import onnx  # noqa: E402 - required by the tests (requirements-test.txt)
import onnxruntime as ort  # noqa: E402

from resnet.deploy.quantize import (  # noqa: E402
    MIN_CALIBRATION_IMAGES,
    QuantizationError,
    load_calibration_set,
    quantize_onnx,
    skipped_summary,
)

CALIBRATION_IMAGES = 16  # few, to keep the test short (one warning, asserted where it matters)

# Bounds, from the figures measured here (printed by the tests), with head-room.
STANDIN_MAX_REL_ERROR = 0.05  # max |int8 - fp32| / (max - min of the fp32 logits of that image)
STANDIN_MIN_CORRELATION = 0.995  # Pearson correlation of the 1000 logits of each image
TUNED_MAX_REL_ERROR = 0.25  # a 4-class head on a random backbone amplifies feature noise
TUNED_MIN_AGREEMENT = 1.0  # held-out images whose int8 top-1 equals the fp32 top-1


# --------------------------------------------------------------------------- images


def pattern_image(kind: int, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """One generated image of ``kind`` (0..3): colour and texture differ by kind, details are random."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(10, 30)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == 0:  # reddish horizontal stripes
        wave, tint = np.sin(yy / period * 2 * np.pi + phase), (1.0, 0.35, 0.3)
    elif kind == 1:  # greenish vertical stripes
        wave, tint = np.sin(xx / period * 2 * np.pi + phase), (0.3, 1.0, 0.4)
    elif kind == 2:  # bluish checkerboard
        wave, tint = np.sign(np.sin(xx / period * 2 * np.pi + phase) * np.sin(yy / period * 2 * np.pi)), (0.3, 0.4, 1.0)
    else:  # grey blobs
        wave, tint = np.sin(np.hypot(xx - size / 2, yy - size / 2) / period * 2 * np.pi + phase), (0.7, 0.7, 0.7)
    base = 0.5 + 0.35 * wave[..., None] * np.asarray(tint, dtype=np.float32)[None, None]
    base = base * rng.uniform(0.8, 1.2) + rng.normal(0, 0.05, size=base.shape)
    return Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))


def pattern_set(folder: Path, per_kind: int, seed: int) -> list[tuple[Path, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made = []
    for i in range(per_kind):
        for kind in range(4):
            path = folder / f"{seed}-{kind}-{i:02d}.png"
            pattern_image(kind, rng).save(path)
            made.append((path, kind))
    return made


def preprocessed(paths) -> torch.Tensor:
    """The images as the model input, through resnet.data.preprocessing's pipeline (the reference)."""
    transform = build_transform()
    tensors = []
    for path in paths:
        with Image.open(path) as image:
            tensors.append(transform(image.convert("RGB")))
    return torch.stack(tensors)


# --------------------------------------------------------------------------- shared models


def ort_run(path: Path, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quantize")


@pytest.fixture(scope="module")
def standin(standin_resnet50) -> torch.nn.Module:
    return standin_resnet50


@pytest.fixture(scope="module")
def fp32_onnx(standin_onnx) -> Path:
    """The float32 ONNX export of the stand-in ResNet-50 (conftest's, made once per session)."""
    return standin_onnx


@pytest.fixture(scope="module")
def calibration_folder(workdir) -> Path:
    folder = workdir / "calibration"
    jittered_photos(folder, CALIBRATION_IMAGES - 4, seed=1)
    pattern_set(folder / "patterns", 1, seed=2)
    return folder


@pytest.fixture(scope="module")
def int8(fp32_onnx, calibration_folder, workdir) -> tuple[Path, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer than MIN_CALIBRATION_IMAGES: tested on its own below
        calibration = load_calibration_set(calibration_folder, CALIBRATION_IMAGES)
    meta = quantize_onnx(fp32_onnx, workdir / "int8.onnx", calibration, method="minmax")
    return workdir / "int8.onnx", meta


def logit_errors(int8: np.ndarray, fp32: np.ndarray) -> tuple[float, float, float]:
    """(max error relative to each image's fp32 logit range, min per-image correlation, top-1 agreement)."""
    spread = fp32.max(axis=1) - fp32.min(axis=1)
    relative = float((np.abs(int8 - fp32).max(axis=1) / spread).max())
    correlation = min(float(np.corrcoef(a, b)[0, 1]) for a, b in zip(int8, fp32))
    agreement = float((int8.argmax(1) == fp32.argmax(1)).mean())
    return relative, correlation, agreement


# --------------------------------------------------------------------------- the model file


@pytest.mark.slow
def test_int8_model_is_qdq_with_per_channel_int8_weights(fp32_onnx, int8) -> None:
    path, meta = int8
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = [node.op_type for node in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    initializers = {init.name: init for init in proto.graph.initializer}
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert len(convs) == 53  # every convolution of ResNet-50 (BN folded), none left out
    producers = {out: node for node in proto.graph.node for out in node.output}
    for conv in convs:
        dequant = producers[conv.input[1]]
        assert dequant.op_type == "DequantizeLinear"
        weight, scale = initializers[dequant.input[0]], initializers[dequant.input[1]]
        assert weight.data_type == onnx.TensorProto.INT8
        assert list(scale.dims) == [weight.dims[0]]  # one scale per output channel
        assert conv.input[0] in producers and producers[conv.input[0]].op_type == "DequantizeLinear"
    (gemm,) = [node for node in proto.graph.node if node.op_type == "Gemm"]  # the classifier stays float32
    assert [initializers[name].data_type for name in gemm.input[1:]] == [onnx.TensorProto.FLOAT] * 2
    # Same interface as the fp32 export: float32 in and out, dynamic batch.
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert (graph_input.name, graph_output.name) == (INPUT_NAME, OUTPUT_NAME)
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    # The export's metadata is carried over and the quantization is described, as returned for export.json.
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["arch"] == "resnet50" and json.loads(props["input"])["name"] == INPUT_NAME
    recorded = json.loads(props["quantization"])
    assert recorded["calibration_images"] == CALIBRATION_IMAGES and recorded["calibration_method"] == "minmax"
    assert recorded["format"] == "QDQ" and "per channel" in recorded["weights"]
    assert {k: v for k, v in meta.items() if k != "seconds"} == recorded
    assert not list(path.parent.glob(".quantize-*"))  # no work files left beside the output


@pytest.mark.slow
def test_input_range_is_calibrated_on_preprocessed_images(int8, calibration_folder) -> None:
    """The input's quantization range is the min/max of the calibration images as resnet.data.preprocessing
    makes them."""
    path, _ = int8
    proto = onnx.load(str(path))
    quantize = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == INPUT_NAME)
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    scale, zero_point = float(initializers[quantize.input[1]]), int(initializers[quantize.input[2]])
    files = sorted(p for p in calibration_folder.rglob("*") if p.is_file())[:CALIBRATION_IMAGES]
    x = preprocessed(files)
    low, high = min(0.0, float(x.min())), max(0.0, float(x.max()))
    print(f"input range {low:.4f}..{high:.4f}: scale {scale:.6f}, zero point {zero_point}")
    assert scale == pytest.approx((high - low) / 255, rel=1e-4)
    assert zero_point == round(-low / scale)


@pytest.mark.slow
def test_int8_logits_follow_fp32_on_held_out_photos(fp32_onnx, int8, tmp_path) -> None:
    """Stand-in weights: the INT8 logits track the fp32 ones (relative error, correlation) on unseen photos."""
    path, _ = int8
    held_out = list(PHOTOS) + jittered_photos(tmp_path / "held_out", 8, seed=99)
    x = preprocessed(held_out)
    fp32, quantized = ort_run(fp32_onnx, x), ort_run(path, x)
    relative, correlation, agreement = logit_errors(quantized, fp32)
    print(f"stand-in, {len(x)} held-out photos: max error {100 * relative:.2f}% of the logit range, "
          f"min correlation {correlation:.4f}, top-1 agreement {agreement:.0%}")
    assert relative <= STANDIN_MAX_REL_ERROR
    assert correlation >= STANDIN_MIN_CORRELATION


@pytest.fixture(scope="module")
def tuned(standin, workdir) -> tuple[torch.nn.Module, Path]:
    """The stand-in backbone with a 4-class head fitted (least squares on pooled features) to the patterns."""
    train = pattern_set(workdir / "tune", 8, seed=3)
    model = create_model("resnet50", num_classes=4, channels_last=False)
    state = {k: v for k, v in standin.state_dict().items() if not k.startswith("fc.")}
    model.load_state_dict(state, strict=False)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(preprocessed([p for p, _ in train])).double()
    targets = torch.full((len(train), 4), -1.0, dtype=torch.float64)
    targets[range(len(train)), [k for _, k in train]] = 1.0
    mean, std = features.mean(0), features.std(0) + 1e-6
    design = torch.cat([(features - mean) / std, torch.ones(len(train), 1, dtype=torch.float64)], 1)
    ridge = 1.0 * torch.eye(design.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(design.T @ design + ridge, design.T @ targets)  # (features + 1, 4)
    weight = (solution[:-1] / std[:, None]).T
    bias = solution[-1] - weight @ mean
    with torch.no_grad():
        model.fc.weight.copy_(weight.float())
        model.fc.bias.copy_(bias.float())
    meta = export_metadata("resnet50", weights="stand-in, 4-class head", num_classes=4)
    path = export_onnx(prepare_for_export(model), workdir / "tuned.onnx", exporter="torchscript", metadata=meta)
    return model, path


@pytest.mark.slow
def test_int8_of_a_fine_tuned_model_keeps_its_predictions(tuned, workdir, tmp_path) -> None:
    model, fp32_path = tuned
    calibration = pattern_set(workdir / "tune-calibration", 4, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration_set(workdir / "tune-calibration", len(calibration))
    quantize_onnx(fp32_path, tmp_path / "tuned-int8.onnx", cal)
    held_out = pattern_set(tmp_path / "held_out", 6, seed=5)
    x = preprocessed([p for p, _ in held_out])
    fp32, quantized = ort_run(fp32_path, x), ort_run(tmp_path / "tuned-int8.onnx", x)
    labels = np.array([k for _, k in held_out])
    relative, correlation, agreement = logit_errors(quantized, fp32)
    margin = np.sort(fp32, axis=1)
    print(f"fine-tuned 4-class model, {len(x)} held-out images: fp32 accuracy {(fp32.argmax(1) == labels).mean():.0%}, "
          f"int8 accuracy {(quantized.argmax(1) == labels).mean():.0%}, top-1 agreement {agreement:.0%}, "
          f"max error {100 * relative:.2f}% of the logit range, min correlation {correlation:.4f}, "
          f"smallest fp32 top-1 margin {float((margin[:, -1] - margin[:, -2]).min()):.3f}")
    assert (fp32.argmax(1) == labels).mean() >= 0.9  # the head did learn the kinds: the check means something
    assert agreement >= TUNED_MIN_AGREEMENT
    assert relative <= TUNED_MAX_REL_ERROR


# --------------------------------------------------------------------------- calibration methods (small model)


class Tiny(torch.nn.Module):
    """conv -> relu -> pool -> linear on the model input: a fast stand-in for method checks."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def tiny_onnx(workdir) -> Path:
    path = workdir / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tiny().eval(), (torch.randn(2, 3, 224, 224),), str(path),
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          **tracing_exporter_keywords())
    return path


def activation_scales(path: Path) -> dict[str, float]:
    """Scale of every quantized activation (QuantizeLinear of a tensor computed at run time), by tensor name."""
    proto = onnx.load(str(path))
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    return {n.input[0]: float(initializers[n.input[1]]) for n in proto.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in initializers}


def _entropy_problem():
    from resnet.deploy.quantize import entropy_calibration_problem

    return entropy_calibration_problem()


needs_entropy = pytest.mark.skipif(
    _entropy_problem() is not None,
    reason=f"{_entropy_problem()} (test_entropy_without_scipy_on_older_onnxruntime_is_refused checks the refusal)",
)


def test_entropy_without_scipy_on_older_onnxruntime_is_refused(tiny_onnx, calibration_folder, tmp_path,
                                                                monkeypatch) -> None:
    """onnxruntime 1.16's entropy calibration imports scipy (not one of its dependencies): without it, entropy is
    refused naming scipy before any work; newer onnxruntime's own entropy is hidden here, and scipy."""
    import sys

    from onnxruntime.quantization import calibrate

    from resnet.deploy.quantize import entropy_calibration_problem

    monkeypatch.delattr(calibrate, "entropy", raising=False)
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    problem = entropy_calibration_problem()
    assert problem is not None and "pip install scipy" in problem and "--calibration-method minmax" in problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration_set(calibration_folder, 4)
    with pytest.raises(QuantizationError, match="entropy calibration of onnxruntime .* needs scipy"):
        quantize_onnx(tiny_onnx, tmp_path / "entropy.onnx", cal, method="entropy")
    assert list(tmp_path.iterdir()) == []


@needs_entropy
@pytest.mark.slow
def test_calibration_methods_differ_as_documented(tiny_onnx, calibration_folder, tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration_set(calibration_folder, 8)
    scales = {}
    x = preprocessed(cal.paths)
    fp32 = ort_run(tiny_onnx, x)
    for method in ("minmax", "entropy", "percentile"):
        out = tmp_path / f"{method}.onnx"
        meta = quantize_onnx(tiny_onnx, out, cal, method=method)
        assert meta["calibration_method"] == method
        assert json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["quantization"])[
            "calibration_method"] == method
        scales[method] = activation_scales(out)
        relative, _, _ = logit_errors(ort_run(out, x), fp32)
        assert relative <= 0.1, (method, relative)
    print("activation scales:", scales)
    # minmax covers every value seen; percentile clips the extreme 0.001% and entropy chooses its own range.
    assert scales["minmax"].keys() == scales["percentile"].keys() == scales["entropy"].keys()
    assert all(scales["percentile"][name] <= scales["minmax"][name] * (1 + 1e-6) for name in scales["minmax"])
    assert scales["percentile"][INPUT_NAME] < scales["minmax"][INPUT_NAME]
    if not hasattr(__import__("onnxruntime.quantization").quantization, "save_tensors_data"):
        return  # older onnxruntime: entropy with 128 bins (warned; see the test below)
    assert any(scales["entropy"][name] != pytest.approx(scales["minmax"][name], rel=1e-3) for name in scales["minmax"])


@needs_entropy
def test_without_calibration_cache_support_entropy_warns_and_still_quantizes(tiny_onnx, calibration_folder,
                                                                             tmp_path, monkeypatch) -> None:
    """Older onnxruntime (no save_tensors_data / calibration_cache_path): calibration inside quantize_static."""
    import onnxruntime.quantization as quantization

    monkeypatch.delattr(quantization, "save_tensors_data", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration_set(calibration_folder, 4)
    x = preprocessed(cal.paths)
    with pytest.warns(UserWarning, match="no calibration cache.*128-bin"):
        quantize_onnx(tiny_onnx, tmp_path / "entropy.onnx", cal, method="entropy")
    quantize_onnx(tiny_onnx, tmp_path / "minmax.onnx", cal, method="minmax")
    for name in ("entropy", "minmax"):
        assert "QuantizeLinear" in {node.op_type for node in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node}
        relative, _, _ = logit_errors(ort_run(tmp_path / f"{name}.onnx", x), ort_run(tiny_onnx, x))
        assert relative <= 0.1, (name, relative)


# --------------------------------------------------------------------------- bad input


def test_calibration_folder_errors(tmp_path) -> None:
    with pytest.raises(QuantizationError, match="does not exist"):
        load_calibration_set(tmp_path / "missing")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(QuantizationError, match="not a folder"):
        load_calibration_set(tmp_path / "file.jpg")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "album.jpg").mkdir()  # a folder with an image suffix is not an image
    (empty / "notes.txt").write_text("no images here")
    (empty / "sub" / "IMG_0001.HEIC").write_bytes(b"an iPhone photo")
    left_out = r"2 file\(s\) left out for their type \(1 \.heic, 1 \.txt; .*IMG_0001\.HEIC"
    with pytest.raises(QuantizationError, match="holds no image files") as caught, \
            pytest.warns(UserWarning, match=left_out):
        load_calibration_set(empty)
    assert str(empty) in str(caught.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg")
    (broken / "b.png").write_bytes(b"")
    with pytest.raises(QuantizationError, match="none of the 2 image files") as caught:
        load_calibration_set(broken)
    assert str(broken) in str(caught.value)
    with pytest.raises(QuantizationError, match="at least 1"):
        load_calibration_set(broken, 0)


@pytest.mark.slow
def test_unreadable_files_are_skipped_and_counted_and_few_images_warn(tmp_path, tiny_onnx) -> None:
    folder = tmp_path / "mixed"
    photos = jittered_photos(folder, 5, seed=7)
    (folder / "000-damaged.jpg").write_bytes(photos[0].read_bytes()[:200])
    (folder / "zzz-text.png").write_text("not an image")
    expected = rf"only 5 readable calibration image\(s\).*2 unreadable.*{MIN_CALIBRATION_IMAGES}"
    with pytest.warns(UserWarning, match=expected):
        cal = load_calibration_set(folder)
    assert len(cal) == 5 and cal.paths == sorted(photos)
    assert sorted(p.name for p, _ in cal.skipped) == ["000-damaged.jpg", "zzz-text.png"]
    assert all(str(p) in message for p, message in cal.skipped)  # each message names its file
    lines = skipped_summary(cal, limit=1)
    assert len(lines) == 2 and "000-damaged.jpg" in lines[0] and lines[1].startswith("... and 1 more")
    assert torch.allclose(cal.tensor, preprocessed(photos), atol=1e-6)  # preprocessed as resnet.data.preprocessing says
    meta = quantize_onnx(tiny_onnx, tmp_path / "out.onnx", cal)
    assert (meta["calibration_images"], meta["calibration_skipped"]) == (5, 2)
    # num_images takes the first N readable images in sorted order, no warning when min_images is met.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = load_calibration_set(folder, 3, min_images=3)
    assert first.paths == sorted(photos)[:3]


def test_quantize_refuses_bad_models_and_methods(tiny_onnx, calibration_folder, tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_calibration_set(calibration_folder, 2)
    with pytest.raises(QuantizationError, match="unknown calibration method 'kl'"):
        quantize_onnx(tiny_onnx, tmp_path / "x.onnx", cal, method="kl")
    with pytest.raises(QuantizationError, match="does not exist"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "x.onnx", cal)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(QuantizationError, match="not a readable ONNX model"):
        quantize_onnx(tmp_path / "junk.onnx", tmp_path / "x.onnx", cal)
    quantize_onnx(tiny_onnx, tmp_path / "once.onnx", cal)
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_onnx(tmp_path / "once.onnx", tmp_path / "twice.onnx", cal)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "twice.onnx").exists()
    assert not list(tmp_path.glob(".quantize-*"))
