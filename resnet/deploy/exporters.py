"""The exported files: TorchScript and ONNX, with the interface every deployment sees.

Every exported model takes one input named ``input``, float32 of shape (N, 3, S, S) and
normalised as in :mod:`resnet.data.preprocessing` (S is the image size the model was trained at: 224 for
NVIDIA's weights, the ``image_size`` a ``model.pth`` of ``train`` records), and returns one output named
``logits``, float32 (N, num_classes), raw scores before softmax. The batch axis N is dynamic.

:func:`prepare_for_export` makes what is exported (optionally BatchNorm folded into the
convolutions and half-precision compute; the input and output stay float32 either way, so clients
never change); :func:`export_torchscript` and :func:`export_onnx` write one file each;
:func:`export_metadata` describes an export (stored inside both files and as ``export.json``).
The ``python -m resnet export`` command (:mod:`resnet.cli.export`) and the Triton repository writer
(:mod:`resnet.deploy.triton`) are built on these.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

# The graph's names, the preferred opset and the exporters' names are data (also this module's names).
from resnet.deploy.choices import INPUT_NAME, ONNX_EXPORTERS, OUTPUT_NAME, PREFERRED_OPSET  # noqa: F401
from resnet.fast import fold_batchnorm
from resnet.data.preprocessing import CROP_SIZE, MEAN, STD, ImageSize, data_config
from resnet.models.family import model_data_config

__all__ = [
    "BATCH_AXIS",
    "DEFAULT_OPSET",
    "ExportError",
    "ExportModule",
    "INPUT_NAME",
    "ONNX_EXPORTERS",
    "OUTPUT_NAME",
    "PREFERRED_OPSET",
    "default_opset",
    "export_metadata",
    "export_onnx",
    "export_torchscript",
    "first_line",
    "has_dynamo_exporter",
    "has_onnxscript",
    "highest_opset",
    "prepare_for_export",
    "resolve_onnx_exporter",
    "tracing_exporter_keywords",
]

#: Name of the dynamic batch axis in the ONNX graph.
BATCH_AXIS = "batch"
#: Batch used to trace / export: 2 for torch.export (a batch of 1 would be specialised), else 1.
_EXAMPLE_BATCH = {"dynamo": 2, "torchscript": 1}


def highest_opset(exporter: str) -> Optional[int]:
    """The highest ONNX opset torch's ``exporter`` writes, where this torch says (a private table, read
    only when present), or None."""
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - other torch versions
        return None
    name = "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET" if exporter == "torchscript" else "ONNX_MAX_OPSET"
    return getattr(_constants, name, None)


def default_opset() -> int:
    """:data:`PREFERRED_OPSET`, or the highest opset this torch's TorchScript-based exporter writes where
    that is lower (17 on torch 2.1 to 2.3)."""
    highest = highest_opset("torchscript")
    return PREFERRED_OPSET if highest is None else min(PREFERRED_OPSET, highest)


#: ONNX opset written by default on this torch (see :func:`default_opset`).
DEFAULT_OPSET = default_opset()


class ExportError(RuntimeError):
    """An export could not be done as asked; the message names the input and what to do."""


# --------------------------------------------------------------------------- model preparation


class ExportModule(nn.Module):
    """What gets exported: the network, with float32 input and output whatever it computes in.

    The argument of :meth:`forward` is named ``input`` so that Triton's PyTorch backend maps
    the config's input name onto it. :attr:`image_size` is the side S of the (N, 3, S, S) input it is
    exported for.
    """

    def __init__(self, model: nn.Module, *, fp16: bool = False, image_size: int = CROP_SIZE) -> None:
        super().__init__()
        self.model = model
        self.fp16 = fp16
        self.image_size = image_size

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - the name is the interface
        if self.fp16:
            return self.model(input.half()).float()
        return self.model(input)


def prepare_for_export(model: nn.Module, *, fold_bn: bool = False, fp16: bool = False,
                       image_size: Optional[int] = None) -> ExportModule:
    """Return an eval-mode copy of ``model`` wrapped as :class:`ExportModule`, with the fast-path changes.

    ``fold_bn`` folds BatchNorm into the convolutions (:func:`resnet.fast.fold_batchnorm`);
    ``fp16`` casts the weights to half precision (input and output stay float32). ``image_size`` is the
    side of the input the files take (default: ``model.image_size``, the size a fine-tuned model was
    trained at, else the architecture's: 224, 380 for the EfficientNet-B4s). ``model`` itself is not changed.
    """
    if image_size is None:
        image_size = model_data_config(model).image_size
    prepared = copy.deepcopy(model).eval().float().to(memory_format=torch.contiguous_format)
    if fold_bn:
        prepared = fold_batchnorm(prepared, inplace=True)
    if fp16:
        prepared = prepared.half()
    for parameter in prepared.parameters():
        parameter.requires_grad_(False)
    return ExportModule(prepared, fp16=fp16, image_size=image_size).eval()


def export_metadata(
    arch: str,
    *,
    weights: str,
    fold_bn: bool = False,
    fp16: bool = False,
    num_classes: int = 1000,
    opset: Optional[int] = None,
    onnx_exporter: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    image_size: ImageSize = CROP_SIZE,
) -> dict[str, Any]:
    """Describe an export: model, weights, fast-path changes, interface and preprocessing.

    Stored as ``export.json`` beside the files, in the ONNX file's metadata and in the TorchScript
    archive (``extra/metadata.json``), so a deployed model says how to feed it. ``class_names`` (one
    per output; a fine-tuned model's) become the ``class_names`` entry, which
    :mod:`resnet.deploy.runtimes` reads; without it a 1000-class export is named with ImageNet's classes.
    ``image_size`` is the side S of the (N, 3, S, S) input (the preprocessing resizes to 256/224 of it), or the
    model's whole :class:`resnet.data.preprocessing.DataConfig` (an EfficientNet's: its resize and interpolation).
    """
    config = data_config(image_size)
    image_size = config.image_size
    if class_names is not None and len(class_names) != num_classes:
        raise ExportError(f"{len(class_names)} class names given for a {num_classes}-class model")
    meta: dict[str, Any] = {
        "arch": arch,
        "weights": weights,
        "fold_bn": fold_bn,
        "fp16": fp16,
        "input": {"name": INPUT_NAME, "shape": [BATCH_AXIS, 3, image_size, image_size], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": [BATCH_AXIS, num_classes], "dtype": "float32",
                   "meaning": "logits (apply softmax for probabilities)"},
        "preprocessing": {"resize": config.resize_size, "interpolation": config.interpolation,
                          "center_crop": image_size,
                          "scale": "0..1", "mean": list(MEAN), "std": list(STD), "channels": "RGB"},
        "torch": torch.__version__,
    }
    if opset is not None:
        meta["onnx_opset"] = opset
    if onnx_exporter is not None:
        meta["onnx_exporter"] = onnx_exporter
    if class_names is not None:
        meta["class_names"] = [str(name) for name in class_names]
    return meta


# --------------------------------------------------------------------------- file exporters


def export_torchscript(
    model: nn.Module, path: os.PathLike | str, *, metadata: Optional[dict[str, Any]] = None
) -> Path:
    """Trace ``model`` (prepared by :func:`prepare_for_export`) and save it as TorchScript at ``path``.

    The traced module takes ``input`` (N, 3, S, S) float32 for any N (S: ``model.image_size``) and returns
    the logits.
    ``metadata`` is stored in the archive as ``extra/metadata.json``
    (``torch.jit.load(path, _extra_files={"metadata.json": ""})`` reads it back).
    """
    path = Path(path)
    model = model.eval()
    example = _example_input(model, _EXAMPLE_BATCH["torchscript"])
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit.trace is deprecated in favour of torch.export, but TorchScript is what
        # Triton's PyTorch (libtorch) backend and C++ deployments load.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.trace")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.save")
        traced = torch.jit.trace(model, (example,), check_trace=False)
        extra = {"metadata.json": json.dumps(metadata or {}, indent=2)}
        torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def resolve_onnx_exporter(exporter: str = "auto") -> str:
    """``auto`` -> ``dynamo`` when this torch has it and onnxscript is installed, else ``torchscript``;
    others checked and returned."""
    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(ONNX_EXPORTERS)}")
    if exporter == "auto":
        return "dynamo" if has_dynamo_exporter() and has_onnxscript() else "torchscript"
    if exporter == "dynamo" and not has_dynamo_exporter():
        raise ExportError(
            f"torch {torch.__version__} has no dynamo ONNX exporter (torch.onnx.export(dynamo=True) comes with "
            "torch 2.5): upgrade torch, or pass --onnx-exporter torchscript"
        )
    if exporter == "dynamo" and not has_onnxscript():
        raise ExportError(
            "the dynamo ONNX exporter needs the onnxscript package: pip install onnxscript, "
            "or pass --onnx-exporter torchscript"
        )
    return exporter


def export_onnx(
    model: nn.Module,
    path: os.PathLike | str,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    metadata: Optional[dict[str, Any]] = None,
) -> Path:
    """Export ``model`` (prepared by :func:`prepare_for_export`) to one self-contained ONNX file.

    The graph has input ``input`` (batch, 3, S, S) (S: ``model.image_size``) and output ``logits`` (batch, classes),
    both float32, with ``batch`` dynamic. ``exporter`` picks torch's ONNX exporter (see
    :data:`ONNX_EXPORTERS`); ``metadata`` becomes the model's ``metadata_props`` (values JSON-encoded
    unless they are strings). The file is checked with ``onnx.checker`` before returning.
    """
    import onnx

    path = Path(path)
    exporter = resolve_onnx_exporter(exporter)
    model = model.eval()
    example = _example_input(model, _EXAMPLE_BATCH[exporter])
    common = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            if exporter == "dynamo":
                batch = torch.export.Dim(BATCH_AXIS, min=1, max=65536)
                torch.onnx.export(
                    model, (example,), str(path), dynamo=True, verbose=False, external_data=False,
                    dynamic_shapes=({0: batch},), **common,
                )
            else:
                # Chosen knowingly (no onnxscript, or asked for): silence torch's deprecation notice.
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", category=FutureWarning)
                common.update(tracing_exporter_keywords())
                torch.onnx.export(
                    model, (example,), str(path), do_constant_folding=True,
                    dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}}, **common,
                )
    except ExportError:
        raise
    except Exception as error:
        raise ExportError(
            f"the {exporter} ONNX exporter failed at opset {opset}: {first_line(error)}"
            + ("; try --onnx-exporter torchscript" if exporter == "dynamo" else "")
        ) from error
    proto = onnx.load(str(path))
    _name_batch_axis(proto)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _name_batch_axis(proto: Any) -> None:
    """Give the first axis of the graph's input and output the same symbolic name, ``batch``."""
    for value in (*proto.graph.input, *proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_AXIS


def _example_input(model: nn.Module, batch: int) -> torch.Tensor:
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    side = getattr(model, "image_size", CROP_SIZE)
    return torch.randn(batch, 3, side, side, generator=generator).to(device)


#: Keywords of ``torch.onnx.export`` that the dynamo export passes (torch 2.5 on; 2.4 has ``dynamo`` alone).
_DYNAMO_KEYWORDS = frozenset({"dynamo", "dynamic_shapes", "external_data"})


def _export_keywords() -> frozenset[str]:
    """The keyword arguments this torch's ``torch.onnx.export`` takes."""
    return frozenset(inspect.signature(torch.onnx.export).parameters)


def tracing_exporter_keywords(export: Optional[Callable[..., Any]] = None) -> dict[str, Any]:
    """The keywords that make ``export`` (default: ``torch.onnx.export``) use the TorchScript-based (tracing)
    exporter: ``{"dynamo": False}`` where it takes ``dynamo=`` (torch 2.4 on; dynamo=True is the default of newer
    torch, as of 2.14), else none (torch 2.1 to 2.3, whose export has that exporter only and no ``dynamo=``).

    :func:`export_onnx` and the tests' own tracing exports pass these, so no call names dynamo= itself.
    """
    keywords = _export_keywords() if export is None else frozenset(inspect.signature(export).parameters)
    return {"dynamo": False} if "dynamo" in keywords else {}


def has_dynamo_exporter() -> bool:
    """Whether this torch's ``torch.onnx.export`` has the dynamo exporter as used here (torch 2.5 and later)."""
    return _DYNAMO_KEYWORDS <= _export_keywords()


def has_onnxscript() -> bool:
    """Whether the ``onnxscript`` package, which torch's dynamo ONNX exporter needs, can be imported."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (exporters' messages run to pages), or its type's name."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)

