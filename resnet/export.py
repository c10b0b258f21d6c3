"""``python -m resnet export``: TorchScript and ONNX files, and Triton model repositories.

Every exported model takes one input named ``input``, float32 of shape (N, 3, 224, 224) and
normalised as in :mod:`resnet.preprocessing`, and returns one output named ``logits``, float32
(N, num_classes), raw scores before softmax. The batch axis N is dynamic.

Optional fast-path changes: ``--fold-bn`` folds every BatchNorm into the convolution before it
(:func:`resnet.fastpath.fold_batchnorm`) and ``--fp16`` computes in half precision; the input and
output stay float32 either way, so clients never change.

Output is written into a temporary folder beside the target and moved into place at the end, so a
failed export leaves nothing behind and an existing export is replaced only when it succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from .checkpoints import CHECKPOINTS
from .model import ARCHS
from .options import arch_name, load_model, report_error
from .preprocessing import CROP_SIZE, INPUT_SHAPE, MEAN, RESIZE_SIZE, STD

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_OPSET",
    "ExportError",
    "ExportModule",
    "INPUT_NAME",
    "ONNX_EXPORTERS",
    "OUTPUT_NAME",
    "TRITON_VERSION",
    "export_metadata",
    "export_onnx",
    "export_torchscript",
    "prepare_for_export",
    "triton_config",
    "write_exports",
    "write_triton_repository",
]

#: Name of the single model input, in every exported format and in the Triton configs.
INPUT_NAME = "input"
#: Name of the single model output.
OUTPUT_NAME = "logits"
#: Name of the dynamic batch axis in the ONNX graph.
BATCH_AXIS = "batch"
#: ONNX opset written by default: the default of torch 2.14's exporter and the highest its
#: TorchScript-based exporter supports; ONNX Runtime reads it from 1.17 on.
DEFAULT_OPSET = 20
#: ``max_batch_size`` of the Triton configs unless told otherwise.
DEFAULT_MAX_BATCH_SIZE = 256
#: ONNX exporters of torch: ``dynamo`` (torch.export based, needs onnxscript; torch's default),
#: ``torchscript`` (the older tracing exporter; deprecated by torch but needs nothing else).
ONNX_EXPORTERS = ("auto", "dynamo", "torchscript")
#: Triton backend -> (model folder suffix, platform, model file name in the version folder).
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("onnx", "onnxruntime_onnx", "model.onnx"),
    "pytorch": ("libtorch", "pytorch_libtorch", "model.pt"),
}
#: The model version folder written into a Triton repository.
TRITON_VERSION = "1"
#: Class-name file written beside config.pbtxt for 1000-class (ImageNet) models.
LABELS_FILE = "labels.txt"
#: Batch used to trace / export: 2 for torch.export (a batch of 1 would be specialised), else 1.
_EXAMPLE_BATCH = {"dynamo": 2, "torchscript": 1}


class ExportError(RuntimeError):
    """An export could not be done as asked; the message names the input and what to do."""


# --------------------------------------------------------------------------- model preparation


class ExportModule(nn.Module):
    """What gets exported: the network, with float32 input and output whatever it computes in.

    The argument of :meth:`forward` is named ``input`` so that Triton's PyTorch backend maps
    the config's input name onto it.
    """

    def __init__(self, model: nn.Module, *, fp16: bool = False) -> None:
        super().__init__()
        self.model = model
        self.fp16 = fp16

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - the name is the interface
        if self.fp16:
            return self.model(input.half()).float()
        return self.model(input)


def prepare_for_export(model: nn.Module, *, fold_bn: bool = False, fp16: bool = False) -> ExportModule:
    """Return an eval-mode copy of ``model`` wrapped as :class:`ExportModule`, with the fast-path changes.

    ``fold_bn`` folds BatchNorm into the convolutions (:func:`resnet.fastpath.fold_batchnorm`);
    ``fp16`` casts the weights to half precision (input and output stay float32). ``model`` itself
    is not changed.
    """
    prepared = copy.deepcopy(model).eval().float().to(memory_format=torch.contiguous_format)
    if fold_bn:
        try:
            from .fastpath import fold_batchnorm
        except ImportError as error:  # pragma: no cover - fastpath ships with the package
            raise ExportError(f"--fold-bn needs resnet.fastpath.fold_batchnorm, which is missing ({error})") from None
        prepared = fold_batchnorm(prepared, inplace=True)
    if fp16:
        prepared = prepared.half()
    for parameter in prepared.parameters():
        parameter.requires_grad_(False)
    return ExportModule(prepared, fp16=fp16).eval()


def export_metadata(
    arch: str,
    *,
    weights: str,
    fold_bn: bool = False,
    fp16: bool = False,
    num_classes: int = 1000,
    opset: Optional[int] = None,
    onnx_exporter: Optional[str] = None,
) -> dict[str, Any]:
    """Describe an export: model, weights, fast-path changes, interface and preprocessing.

    Stored as ``export.json`` beside the files, in the ONNX file's metadata and in the TorchScript
    archive (``extra/metadata.json``), so a deployed model says how to feed it.
    """
    meta: dict[str, Any] = {
        "arch": arch,
        "weights": weights,
        "fold_bn": fold_bn,
        "fp16": fp16,
        "input": {"name": INPUT_NAME, "shape": [BATCH_AXIS, *INPUT_SHAPE], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": [BATCH_AXIS, num_classes], "dtype": "float32",
                   "meaning": "logits (apply softmax for probabilities)"},
        "preprocessing": {"resize": RESIZE_SIZE, "interpolation": "bilinear", "center_crop": CROP_SIZE,
                          "scale": "0..1", "mean": list(MEAN), "std": list(STD), "channels": "RGB"},
        "torch": torch.__version__,
    }
    if opset is not None:
        meta["onnx_opset"] = opset
    if onnx_exporter is not None:
        meta["onnx_exporter"] = onnx_exporter
    return meta


# --------------------------------------------------------------------------- file exporters


def export_torchscript(
    model: nn.Module, path: os.PathLike | str, *, metadata: Optional[dict[str, Any]] = None
) -> Path:
    """Trace ``model`` (prepared by :func:`prepare_for_export`) and save it as TorchScript at ``path``.

    The traced module takes ``input`` (N, 3, 224, 224) float32 for any N and returns the logits.
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
    """``auto`` -> ``dynamo`` when onnxscript is installed, else ``torchscript``; others checked and returned."""
    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(ONNX_EXPORTERS)}")
    if exporter == "auto":
        return "dynamo" if _has_onnxscript() else "torchscript"
    if exporter == "dynamo" and not _has_onnxscript():
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

    The graph has input ``input`` (batch, 3, 224, 224) and output ``logits`` (batch, classes),
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
                torch.onnx.export(
                    model, (example,), str(path), dynamo=False, do_constant_folding=True,
                    dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}}, **common,
                )
    except ExportError:
        raise
    except Exception as error:
        raise ExportError(
            f"the {exporter} ONNX exporter failed at opset {opset}: {_first_line(error)}"
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
    return torch.randn(batch, *INPUT_SHAPE, generator=generator).to(device)


def _has_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)


# --------------------------------------------------------------------------- Triton


def triton_config(
    name: str,
    backend: str,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    num_classes: int = 1000,
    label_filename: Optional[str] = None,
    max_queue_delay_microseconds: int = 100,
) -> str:
    """Text of a Triton ``config.pbtxt`` (ModelConfig in protobuf text format) for an exported model.

    ``backend`` is ``onnxruntime`` or ``pytorch``. The batch axis is Triton's (``max_batch_size``),
    so ``dims`` leave it out: input ``[3, 224, 224]``, output ``[num_classes]``, both TYPE_FP32.
    Dynamic batching is on.
    """
    if backend not in BACKENDS:
        raise ExportError(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be at least 1, not {max_batch_size}")
    _, platform, filename = BACKENDS[backend]
    dims_in = ", ".join(str(d) for d in INPUT_SHAPE)
    label = f'\n    label_filename: "{label_filename}"' if label_filename else ""
    return f"""\
name: "{name}"
backend: "{backend}"
platform: "{platform}"
default_model_filename: "{filename}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ {dims_in} ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {num_classes} ]{label}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {max_queue_delay_microseconds}
}}
"""


def write_triton_repository(
    model: nn.Module,
    root: os.PathLike | str,
    *,
    model_name: str,
    backends: Sequence[str] = ("onnxruntime", "pytorch"),
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    num_classes: int = 1000,
    opset: int = DEFAULT_OPSET,
    onnx_exporter: str = "auto",
    metadata: Optional[dict[str, Any]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> list[Path]:
    """Write a Triton model repository for ``model`` (prepared by :func:`prepare_for_export`) into ``root``.

    One model folder per backend, ``<model_name>_onnx`` (ONNX Runtime) and ``<model_name>_libtorch``
    (PyTorch), each with ``config.pbtxt``, ``1/model.onnx`` or ``1/model.pt`` and, when
    ``class_names`` is given, ``labels.txt`` for Triton's classification extension. ``root`` must
    exist (the CLI makes it atomically); returns the model folders.
    """
    root = Path(root)
    folders = []
    for backend in backends:
        if backend not in BACKENDS:
            raise ExportError(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        suffix, _, filename = BACKENDS[backend]
        name = f"{model_name}_{suffix}"
        folder = root / name
        (folder / TRITON_VERSION).mkdir(parents=True)
        target = folder / TRITON_VERSION / filename
        if backend == "onnxruntime":
            export_onnx(model, target, opset=opset, exporter=onnx_exporter, metadata=metadata)
        else:
            export_torchscript(model, target, metadata=metadata)
        label_filename = None
        if class_names is not None:
            if len(class_names) != num_classes:
                raise ExportError(f"{len(class_names)} class names given for a {num_classes}-class model")
            (folder / LABELS_FILE).write_text("\n".join(class_names) + "\n", encoding="utf-8")
            label_filename = LABELS_FILE
        config = triton_config(name, backend, max_batch_size=max_batch_size, num_classes=num_classes,
                               label_filename=label_filename)
        (folder / "config.pbtxt").write_text(config, encoding="utf-8")
        folders.append(folder)
    return folders


# --------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def atomic_directory(target: os.PathLike | str, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it becomes ``target``.

    ``target`` may be absent or an empty folder; a non-empty one is replaced only with ``force``
    (and only once everything was written). On any error the temporary folder and any parent
    folders made for it are removed, and an existing ``target`` is left as it was.
    """
    target = Path(target)
    check_output_target(target, force=force)
    made = _make_parents(target.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        # mkdtemp makes the folder private (0700); the export is an ordinary folder, readable by
        # e.g. a Triton container running as another user, so give it the usual umask permissions.
        staging.chmod(0o777 & ~_current_umask())
    except BaseException:
        _remove_made(made)
        raise
    try:
        yield staging
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_made(made)
        raise


def check_output_target(target: Path, *, force: bool = False) -> None:
    """Raise :class:`ExportError` unless ``target`` can receive an export (see :func:`atomic_directory`)."""
    if target.exists() and not target.is_dir():
        raise ExportError(f"output {str(target)!r} exists and is not a directory; choose another path")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ExportError(
            f"output directory {str(target)!r} exists and is not empty; pass --force to replace it "
            "or choose another directory"
        )


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; return those made, deepest first."""
    missing = []
    for folder in (parent, *parent.parents):
        if folder.exists():
            break
        missing.append(folder)
    parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_made(made: list[Path]) -> None:
    for folder in made:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    # An existing folder (empty, or replaced with --force) is moved aside first, so that the
    # swap is two renames and the old export comes back if the second one fails.
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    backup.rmdir()
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


# --------------------------------------------------------------------------- the command


def write_exports(
    model: nn.Module,
    output: Path,
    *,
    arch: str,
    formats: Sequence[str],
    metadata: dict[str, Any],
    opset: int = DEFAULT_OPSET,
    onnx_exporter: str = "auto",
) -> list[Path]:
    """Write ``<arch>.pt`` and/or ``<arch>.onnx`` and ``export.json`` into the existing folder ``output``."""
    written = []
    if "torchscript" in formats:
        written.append(export_torchscript(model, output / f"{arch}.pt", metadata=metadata))
    if "onnx" in formats:
        written.append(export_onnx(model, output / f"{arch}.onnx", opset=opset, exporter=onnx_exporter,
                                   metadata=metadata))
    (output / "export.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m resnet export``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Export a model as TorchScript and/or ONNX, or as a Triton model repository.\n"
        f"Input {INPUT_NAME!r}: float32 (N, {', '.join(map(str, INPUT_SHAPE))}), normalised as resnet.preprocessing "
        f"says;\noutput {OUTPUT_NAME!r}: float32 (N, classes) logits. N is dynamic.\n"
        "Files are written to a temporary folder beside the target and moved into place when complete."
    )
    parser.epilog = (
        "examples:\n"
        "  python -m resnet export --pretrained --output exported/\n"
        "  python -m resnet export --weights my.pth.tar --arch se-resnext101-32x4d --format onnx --output out/\n"
        "  python -m resnet export --pretrained --fold-bn --fp16 --triton model_repository/"
    )
    parser.add_argument("--arch", type=arch_name, default="resnet50", metavar="ARCH",
                        help=f"architecture: {', '.join(ARCHS)} (underscores accepted; default resnet50)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", metavar="FILE", help="local checkpoint (NGC file or training checkpoint)")
    source.add_argument("--pretrained", action="store_true",
                        help="NVIDIA's NGC weights, from the torch hub cache (downloaded when missing)")
    parser.add_argument("--mirror", metavar="URL", help="base URL serving the NGC checkpoint files by name")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", metavar="DIR", help="write <arch>.pt / <arch>.onnx and export.json here")
    where.add_argument("--triton", metavar="DIR", help="write a Triton model repository here")
    parser.add_argument("--format", choices=("torchscript", "onnx", "both"), default=None,
                        help="with --output: what to write (default both)")
    parser.add_argument("--backend", choices=("onnxruntime", "pytorch", "both"), default=None,
                        help="with --triton: which Triton backends get a model (default both)")
    parser.add_argument("--model-name", metavar="NAME",
                        help="with --triton: base model name; folders are NAME_onnx, NAME_libtorch (default: arch)")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, metavar="N",
                        help=f"with --triton: max_batch_size of the configs (default {DEFAULT_MAX_BATCH_SIZE})")
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convolutions")
    parser.add_argument("--fp16", action="store_true",
                        help="half-precision weights and compute (input and output stay float32)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default="auto",
                        help="torch's ONNX exporter: dynamo (needs onnxscript), torchscript, or auto "
                             "(dynamo when onnxscript is installed; default)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("--quiet", action="store_true", help="no download progress bar, no summary")


def run(args: argparse.Namespace) -> int:
    """Entry point of the ``export`` subcommand; returns the exit status (0 done, 2 bad input, 1 failure)."""
    try:
        plan = _check_arguments(args)
    except ExportError as error:
        return _fail(error)
    target = Path(args.triton or args.output)
    model = load_model(args, pretrained_default=args.pretrained).eval()  # a CommandError says what is wrong
    num_classes = model.fc.out_features
    meta = export_metadata(
        args.arch, weights=str(args.weights) if args.weights else f"NGC {CHECKPOINTS[args.arch].file_name}",
        fold_bn=args.fold_bn, fp16=args.fp16, num_classes=num_classes,
        opset=args.opset if plan["onnx"] else None, onnx_exporter=plan["onnx_exporter"],
    )
    try:
        prepared = prepare_for_export(model, fold_bn=args.fold_bn, fp16=args.fp16)
        with atomic_directory(target, force=args.force) as staging:
            if args.triton:
                written = write_triton_repository(
                    prepared, staging, model_name=args.model_name or args.arch, backends=plan["backends"],
                    max_batch_size=args.max_batch_size, num_classes=num_classes, opset=args.opset,
                    onnx_exporter=plan["onnx_exporter"] or "auto", metadata=meta,
                    class_names=_imagenet_names() if num_classes == 1000 else None,
                )
            else:
                written = write_exports(prepared, staging, arch=args.arch, formats=plan["formats"], metadata=meta,
                                        opset=args.opset, onnx_exporter=plan["onnx_exporter"] or "auto")
    except ExportError as error:
        return _fail(error, status=1)
    except OSError as error:
        return _fail(f"could not write {str(target)!r}: {error}", status=1)
    except Exception as error:  # an exporter failing in an unforeseen way: still one line, nothing written
        return _fail(f"export to {str(target)!r} failed: {type(error).__name__}: {_first_line(error)}", status=1)
    if not args.quiet:
        for path in written:
            print(target / path.relative_to(staging))
    return 0


def _check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that can be checked before the model is built, so bad input fails fast."""
    if args.triton and args.format is not None:
        raise ExportError("--format applies to --output; with --triton choose the backends with --backend")
    if args.output and (args.backend is not None or args.model_name is not None):
        raise ExportError("--backend and --model-name apply to --triton; with --output choose --format")
    if args.max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be at least 1, not {args.max_batch_size}")
    if args.triton:
        backends = ["onnxruntime", "pytorch"] if args.backend in (None, "both") else [args.backend]
        formats: list[str] = []
        onnx = "onnxruntime" in backends
    else:
        backends = []
        formats = ["torchscript", "onnx"] if args.format in (None, "both") else [args.format]
        onnx = "onnx" in formats
    exporter = resolve_onnx_exporter(args.onnx_exporter) if onnx else None
    if onnx:
        highest = _highest_opset(exporter)
        if highest is not None and not 7 <= args.opset <= highest:
            raise ExportError(f"--opset {args.opset} is not supported by torch's {exporter} ONNX exporter; "
                              f"use 7 to {highest}")
    check_output_target(Path(args.triton or args.output), force=args.force)
    return {"backends": backends, "formats": formats, "onnx": onnx, "onnx_exporter": exporter}


def _highest_opset(exporter: str) -> Optional[int]:
    """The highest opset torch's ``exporter`` writes, where this torch says (a private table)."""
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - other torch versions
        return None
    name = "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET" if exporter == "torchscript" else "ONNX_MAX_OPSET"
    return getattr(_constants, name, None)


def _imagenet_names() -> Optional[list[str]]:
    try:
        from processing_utils.classes import get_imgnet_classes
    except ImportError:
        return None
    return [str(name) for name in get_imgnet_classes()]


def _fail(error: object, status: int = 2) -> int:
    """Print ``error`` as one line on stderr and return ``status``."""
    report_error(error)
    return status
