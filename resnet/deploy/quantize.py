"""Static INT8 quantization of an exported fp32 ONNX model, calibrated on a folder of images.

:func:`quantize_onnx` turns an ONNX file written by :func:`resnet.cli.export.export_onnx` into an INT8
model with ONNX Runtime's static quantization tools: QDQ format (QuantizeLinear/DequantizeLinear
pairs around every quantized operator, a standard ONNX graph that ONNX Runtime, OpenVINO and
TensorRT all run), int8 weights quantized per output channel (symmetric), uint8 activations
quantized per tensor with ranges measured on calibration images. The input and output stay float32
(``input`` (N, 3, 224, 224), ``logits`` (N, classes)), so clients do not change.

Calibration images come from a folder (recursively, sorted, the first ``num_images``) and are
decoded and preprocessed exactly as every other input of this repository
(:func:`processing_utils.load_image` then :func:`processing_utils.preprocess`: resize 256, centre
crop 224, ImageNet mean/std from :mod:`resnet.data.preprocessing`); unreadable files are skipped and
counted. Fewer than :data:`MIN_CALIBRATION_IMAGES` readable images give a warning, none an error.

Calibration methods (``method``): ``minmax`` (the observed range of each activation; the default),
``entropy`` (the range that minimises the KL divergence of the quantized histogram) and
``percentile`` (clip to the 99.999th percentile of the absolute values).

Which INT8 model, runtime and tool, and why (the measured figures are in ``docs/export.md`` and
``benchmarks/README.md``, from ``python benchmarks/benchmark.py --runtimes``; they are not repeated here,
where they would drift):

* Format: ONNX Runtime's static QDQ model (this module): one ONNX file that every ONNX runtime runs, made
  with ``onnxruntime`` alone. OpenVINO runs it at least as fast as ONNX Runtime (``resnet.deploy.runtimes``);
  ONNX Runtime has the lower batch-1 latency.
* OpenVINO's own quantization (NNCF) was not faster at equal accuracy (twice the logit error), so it is not
  offered. torchao's PT2E quantization for inductor fails on torch 2.14 for this model and for torchvision's
  ``resnet50()`` alike (``prepare_pt2e``), so it could not be measured or offered.
* Calibration: ``minmax`` is the default: its observed ranges keep the held-out error low (tests/test_quantize.py)
  and it is the fastest to calibrate. ImageNet accuracy of the INT8 model is measured with
  ``python -m resnet evaluate --onnx FILE`` on a labelled ImageNet copy.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

# The calibration methods offered, the default and the image counts are data (also this module's names).
from resnet.deploy.choices import (  # noqa: F401
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_CALIBRATION_METHOD,
    MIN_CALIBRATION_IMAGES,
)
from resnet.data.inputs import IMAGE_SUFFIXES, FolderScan, scan_images, scan_warnings
from resnet.data.preprocessing import ImageSize

__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_CALIBRATION_METHOD",
    "MIN_CALIBRATION_IMAGES",
    "CalibrationSet",
    "QuantizationError",
    "entropy_calibration_problem",
    "find_images",
    "load_calibration_set",
    "quantize_onnx",
    "skipped_summary",
]

#: Images per calibration run of the model (the ranges do not depend on it; memory does).
CALIBRATION_BATCH = 8
#: Metadata key of the ONNX file (and of export.json) that describes the quantization.
METADATA_KEY = "quantization"

_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: Histogram settings of the histogram methods: the entropy search of TensorRT's INT8 calibration
#: (2048 bins, thresholds searched from 128 quantized bins up); percentile keeps ONNX Runtime's own.
HISTOGRAM_BINS: dict[str, dict[str, int]] = {"entropy": {"num_bins": 2048, "num_quantized_bins": 128}}


class QuantizationError(ValueError):
    """Quantization cannot be done as asked; the message names the input and what to do."""


@dataclass
class CalibrationSet:
    """Preprocessed calibration images.

    Attributes:
        tensor: (N, 3, S, S) float32 (S = ``image_size``), preprocessed as :mod:`resnet.data.preprocessing` defines.
        image_size: the side S, or the model's whole :class:`resnet.data.preprocessing.DataConfig` the images were
            prepared with.
        paths: the files behind the rows of ``tensor``, in order.
        skipped: ``(path, message)`` of every file that could not be read.
        folder: where the images came from.
    """

    tensor: torch.Tensor
    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    folder: Optional[Path] = None
    image_size: ImageSize = 224

    def __len__(self) -> int:
        return int(self.tensor.shape[0])


def find_images(folder: os.PathLike | str) -> list[Path]:
    """Image files (by suffix, :data:`IMAGE_SUFFIXES`) under ``folder``, recursively, in sorted order, found as
    every command searches folders (:func:`resnet.data.inputs.scan_images`: hidden names left out, links
    to folders followed once).

    Raises:
        QuantizationError: ``folder`` does not exist or is not a directory.
    """
    return [Path(path) for path in _scan(folder).images]


def _scan(folder: os.PathLike | str) -> FolderScan:
    root = Path(folder)
    if not root.exists():
        raise QuantizationError(f"calibration folder {str(root)!r} does not exist; pass a folder of sample images")
    if not root.is_dir():
        raise QuantizationError(
            f"calibration path {str(root)!r} is not a folder; pass a folder of sample images (it is searched "
            "recursively)"
        )
    return scan_images(root)


def load_calibration_set(
    folder: os.PathLike | str,
    num_images: int = DEFAULT_CALIBRATION_IMAGES,
    *,
    min_images: int = MIN_CALIBRATION_IMAGES,
    image_size: ImageSize = 224,
) -> CalibrationSet:
    """Load and preprocess up to ``num_images`` readable images from ``folder`` (sorted, recursive).

    Files that do not decode are skipped and listed in :attr:`CalibrationSet.skipped`; reading goes
    on until ``num_images`` images loaded or the folder is exhausted. Fewer than ``min_images``
    readable images give a ``UserWarning`` that says how many there were; so does each problem of the
    search (:func:`resnet.data.inputs.scan_warnings`: sub-folders that cannot be read, files left out
    for their type, links not followed again). ``image_size`` is the side of the model's input (the centre
    crop; the resize is 256/224 of it), or the model's :class:`resnet.data.preprocessing.DataConfig` (an
    EfficientNet's: its own resize and interpolation).

    Raises:
        QuantizationError: the folder does not exist, holds no image files, or none of them is
            readable; ``num_images`` is below 1.
    """
    from resnet.data.images import load_image
    from resnet.data.images import preprocess_at

    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise QuantizationError(f"the number of calibration images must be at least 1, not {num_images!r}")
    root = Path(folder)
    scan = _scan(root)
    for message in scan_warnings(scan):
        warnings.warn(message, UserWarning, stacklevel=2)
    candidates = [Path(path) for path in scan.images]
    if not candidates:
        raise QuantizationError(
            f"calibration folder {str(root)!r} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            "put sample photos of the kind the model will see there"
        )
    tensors: list[torch.Tensor] = []
    paths: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in candidates:
        if len(tensors) >= num_images:
            break
        try:
            tensors.append(preprocess_at(load_image(path), image_size))
        except (ValueError, OSError) as error:  # ImageLoadError is a ValueError
            skipped.append((path, str(error)))
            continue
        paths.append(path)
    if not tensors:
        raise QuantizationError(
            f"none of the {len(candidates)} image files in {str(root)!r} could be read "
            f"(first: {skipped[0][1]}); pass a folder of readable images"
        )
    if len(tensors) < min_images:
        warnings.warn(
            f"only {len(tensors)} readable calibration image(s) in {str(root)!r}"
            + (f" ({len(skipped)} unreadable skipped)" if skipped else "")
            + f"; at least {min_images} are recommended so that the measured activation ranges cover the "
            "photos the model will see",
            UserWarning,
            stacklevel=2,
        )
    return CalibrationSet(torch.stack(tensors), paths, skipped, root, image_size)


class _Reader:
    """ONNX Runtime calibration data reader over a :class:`CalibrationSet`, in batches.

    ``set_range`` lets the calibrator collect a slice at a time (bounded memory: the histogram
    methods keep every activation of a slice until they summarise it).
    """

    def __init__(self, tensor: torch.Tensor, input_name: str, batch: int = CALIBRATION_BATCH) -> None:
        self.batches = [b.numpy() for b in tensor.split(batch)]
        self.input_name = input_name
        self._iter: Iterator[np.ndarray] = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self.batches[start_index:end_index])

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self.batches)


def _check_fp32_model(path: Path) -> Any:
    """Load the fp32 model; refuse one that is already quantized or does not take a float32 image batch."""
    import onnx

    if not path.is_file():
        raise QuantizationError(f"ONNX model {str(path)!r} does not exist; export one first (--format onnx)")
    try:
        proto = onnx.load(str(path))
    except Exception as error:
        raise QuantizationError(f"{str(path)!r} is not a readable ONNX model ({error})") from None
    ops = {node.op_type for node in proto.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"}:
        raise QuantizationError(f"{str(path)!r} is already quantized; quantize the fp32 export instead")
    inputs = [i for i in proto.graph.input if i.name not in {init.name for init in proto.graph.initializer}]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise QuantizationError(
            f"{str(path)!r} does not take one float32 image batch (inputs: {[i.name for i in inputs]}); "
            "quantize a float32 export of this repository (not an --fp16 one)"
        )
    return proto


def _calibrate(prepared: Path, reader: _Reader, method: str, work: Path) -> dict[str, Any]:
    """Measure the activation ranges; return the arguments that hand them to ``quantize_static``.

    Where this ONNX Runtime takes a calibration cache (``calibration_cache_path``), the calibrator is
    driven here, one batch at a time (the histogram methods keep every activation of what they
    collect until they summarise it), with :data:`HISTOGRAM_BINS` for the histogram methods, and
    its ranges are passed on as the cache. Older versions calibrate inside ``quantize_static``, a
    batch at a time too (``CalibStridedMinMax``), with their default bins: their ``entropy`` search
    then has a single candidate range (128 bins quantized to 128), the observed one.
    """
    import inspect

    import onnxruntime.quantization as quantization

    options: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    save = getattr(quantization, "save_tensors_data", None)
    if save is None or "calibration_cache_path" not in inspect.signature(quantization.quantize_static).parameters:
        if method == "entropy":
            warnings.warn(
                f"onnxruntime {_ort_version()} takes no calibration cache, so its entropy calibration runs with "
                "its default 128-bin histograms, whose only candidate range is the observed one (as minmax); "
                "upgrade onnxruntime for the 2048-bin entropy search",
                UserWarning,
                stacklevel=3,
            )
        options["CalibStridedMinMax"] = 1 if method != "minmax" else len(reader)
        return {"extra_options": options}
    calibrator = quantization.create_calibrator(
        prepared, [], augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=getattr(quantization.CalibrationMethod, _METHODS[method]),
        extra_options=HISTOGRAM_BINS.get(method, {}),
    )
    for index in range(len(reader)):
        reader.set_range(index, index + 1)
        calibrator.collect_data(reader)
    cache = work / "ranges.json"
    save(calibrator.compute_data(), cache)
    del calibrator
    return {"extra_options": options, "calibration_cache_path": str(cache)}


def entropy_calibration_problem() -> Optional[str]:
    """Why ONNX Runtime's entropy calibration cannot run here, or ``None``: older onnxruntime (1.16, for one)
    imports ``scipy.stats.entropy`` for it, and scipy is not a dependency of onnxruntime; newer ones define
    their own ``entropy`` in ``onnxruntime.quantization.calibrate``."""
    from onnxruntime.quantization import calibrate

    if callable(getattr(calibrate, "entropy", None)):
        return None
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        return (f"the entropy calibration of onnxruntime {_ort_version()} needs scipy, not installed here: pip "
                "install scipy (or upgrade onnxruntime), or choose --calibration-method minmax or percentile")
    return None


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _classifier_nodes(path: Path) -> list[str]:
    """Names of the fully connected layers (Gemm / MatMul) of the model at ``path``.

    Nodes are excluded from quantization by name, so unnamed nodes (allowed in ONNX) are named first
    (``node_<index>``) and the model is saved back.
    """
    import onnx

    proto = onnx.load(str(path))
    names = {node.name for node in proto.graph.node}
    unnamed = [(i, node) for i, node in enumerate(proto.graph.node) if not node.name]
    for index, node in unnamed:
        name = f"node_{index}"
        while name in names:
            name += "_"
        node.name = name
        names.add(name)
    if unnamed:
        onnx.save(proto, str(path))
    return [node.name for node in proto.graph.node if node.op_type in ("Gemm", "MatMul")]


def quantize_onnx(
    model_path: os.PathLike | str,
    output_path: os.PathLike | str,
    calibration: CalibrationSet,
    *,
    method: str = DEFAULT_CALIBRATION_METHOD,
    per_channel: bool = True,
    float_classifier: bool = True,
) -> dict[str, Any]:
    """Write a static INT8 (QDQ) version of the fp32 ONNX model ``model_path`` to ``output_path``.

    The model is first prepared with ONNX Runtime's ``quant_pre_process`` (shape inference, constant
    folding, BatchNorm folded into the convolutions), then calibrated with ``method`` on
    ``calibration`` (:func:`load_calibration_set`) and quantized: int8 weights per output channel
    (``per_channel``), uint8 activations per tensor, QDQ format. With ``float_classifier`` (the
    default) the final fully connected layer keeps float32 weights and runs in float32 on the
    dequantized pooled features: it is 0.05% of ResNet-50's arithmetic, and int8 classifier weights
    cost accuracy on fine-tuned heads (measured: a 4-class head kept 25% of its
    predictions quantized, 100% in float32; tests/test_quantize.py). The fp32 model's ``metadata_props``
    are carried over and a ``quantization`` entry is added; the same entry is returned, for
    ``export.json``::

        {"format": "QDQ", "weights": "int8, symmetric, per channel", "activations": "uint8, per tensor",
         "classifier": "float32", "calibration_images": 256, "calibration_skipped": 1,
         "calibration_skipped_files": ["broken.jpg"], "calibration_method": "minmax", "tool": "onnxruntime 1.32.0"}

    (the skipped files are named relative to the calibration folder).

    The output is written to a temporary file beside ``output_path`` and moved into place at the
    end, so a failure leaves nothing behind.

    Raises:
        QuantizationError: unknown ``method``, ``entropy`` where this onnxruntime cannot run it
            (:func:`entropy_calibration_problem`), an empty calibration set, a model that is not an fp32
            ONNX file, or ONNX Runtime failing to quantize it.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise QuantizationError(
            f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}"
        )
    if len(calibration) == 0:
        raise QuantizationError("the calibration set is empty; pass a folder with sample images")
    problem = entropy_calibration_problem() if method == "entropy" else None
    if problem is not None:
        raise QuantizationError(problem)
    source, target = Path(model_path), Path(output_path)
    proto = _check_fp32_model(source)
    input_name = next(i.name for i in proto.graph.input if i.name not in {x.name for x in proto.graph.initializer})
    metadata = {
        "format": "QDQ",
        "weights": "int8, symmetric, " + ("per channel" if per_channel else "per tensor"),
        "activations": "uint8, per tensor",
        "classifier": "float32" if float_classifier else "int8",
        "calibration_images": len(calibration),
        "calibration_skipped": len(calibration.skipped),
        "calibration_skipped_files": [_relative(path, calibration.folder) for path, _ in calibration.skipped],
        "calibration_method": method,
        "tool": f"onnxruntime {onnxruntime.__version__}",
    }
    reader = _Reader(calibration.tensor, input_name)
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=target.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        staged = Path(work) / "int8.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ONNX Runtime prints its progress
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
                options = _calibrate(prepared, reader, method, Path(work))
                quantize_static(
                    str(prepared), str(staged), reader,
                    quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, _METHODS[method]),
                    nodes_to_exclude=_classifier_nodes(prepared) if float_classifier else None,
                    **options,
                )
        except Exception as error:
            raise QuantizationError(
                f"ONNX Runtime could not quantize {str(source)!r}: {type(error).__name__}: {error}"
            ) from error
        quantized = onnx.load(str(staged))
        del quantized.metadata_props[:]
        for entry in proto.metadata_props:
            if entry.key != METADATA_KEY:
                quantized.metadata_props.add(key=entry.key, value=entry.value)
        quantized.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
        onnx.save(quantized, str(staged))
        os.replace(staged, target)
    metadata["seconds"] = round(time.perf_counter() - start, 1)
    return metadata


def _relative(path: Path, folder: Optional[Path]) -> str:
    """``path`` relative to ``folder`` where it lies inside it, else as given."""
    try:
        return str(path.relative_to(folder)) if folder is not None else str(path)
    except ValueError:
        return str(path)


def skipped_summary(calibration: CalibrationSet, limit: int = 3) -> Sequence[str]:
    """Lines naming the skipped calibration files (at most ``limit``, then a count)."""
    lines = [f"skipped {path}: {message}" for path, message in calibration.skipped[:limit]]
    if len(calibration.skipped) > limit:
        lines.append(f"... and {len(calibration.skipped) - limit} more unreadable file(s)")
    return lines
