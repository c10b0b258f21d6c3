"""``python -m resnet export``: TorchScript and ONNX files, or a Triton model repository.

The files and their interface are made by :mod:`resnet.exporters`, the Triton layout by
:mod:`resnet.triton_repository`; this module is the command: its options, the checks that run before
any work (option mix-ups, missing packages, the output path) and the export itself, written into a
temporary folder beside the target and moved into place when complete (:mod:`resnet.atomic`).

A new file format is one entry in :data:`FORMATS`: its suffix, the packages it needs (checked before
the model is built) and the function that writes it; ``--format`` offers it from there.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torch import nn

from processing_utils.classes import get_imgnet_classes

from .atomic import OutputPathError, atomic_directory, check_directory_target
from .checkpoints import CHECKPOINTS
from .exporters import (
    DEFAULT_OPSET,
    INPUT_NAME,
    ONNX_EXPORTERS,
    OUTPUT_NAME,
    ExportError,
    export_metadata,
    export_onnx,
    export_torchscript,
    first_line,
    highest_opset,
    prepare_for_export,
    resolve_onnx_exporter,
)
from .options import CommandError, add_model_options, load_model, positive_int, run_command
from .preprocessing import INPUT_SHAPE
from .triton_repository import BACKENDS, DEFAULT_MAX_BATCH_SIZE, write_triton_repository

__all__ = [
    "BACKEND_FORMATS",
    "BACKEND_SETS",
    "FORMATS",
    "FORMAT_SETS",
    "ExportSettings",
    "FileFormat",
    "Plan",
    "add_arguments",
    "model_name",
    "plan_export",
    "run",
    "write_exports",
]


@dataclass
class ExportSettings:
    """How the files of one export are written (what :attr:`FileFormat.write` receives)."""

    metadata: dict[str, Any]
    opset: int = DEFAULT_OPSET
    onnx_exporter: str = "auto"


@dataclass(frozen=True)
class FileFormat:
    """A kind of model file ``--format`` can write.

    Attributes:
        suffix: the file is ``<arch><suffix>``.
        write: ``write(model, path, settings) -> path`` writes the prepared model (see
            :func:`resnet.exporters.prepare_for_export`).
        packages: modules it needs beyond the runtime requirements, importable under the name
            ``pip install`` takes; checked before the model is built.
        uses_onnx_exporter: made by torch's ONNX exporter, so ``--opset`` and ``--onnx-exporter`` apply.
    """

    suffix: str
    write: Callable[[nn.Module, Path, ExportSettings], Path]
    packages: tuple[str, ...] = ()
    uses_onnx_exporter: bool = False


def _write_torchscript(model: nn.Module, path: Path, settings: ExportSettings) -> Path:
    return export_torchscript(model, path, metadata=settings.metadata)


def _write_onnx(model: nn.Module, path: Path, settings: ExportSettings) -> Path:
    return export_onnx(model, path, opset=settings.opset, exporter=settings.onnx_exporter,
                       metadata=settings.metadata)


#: ``--format`` name -> the file it writes.
FORMATS: dict[str, FileFormat] = {
    "torchscript": FileFormat(".pt", _write_torchscript),
    "onnx": FileFormat(".onnx", _write_onnx, packages=("onnx",), uses_onnx_exporter=True),
}
#: ``--format`` names that stand for several formats.
FORMAT_SETS: dict[str, tuple[str, ...]] = {"both": ("torchscript", "onnx")}
#: Triton backend -> the format of its model file.
BACKEND_FORMATS: dict[str, str] = {"onnxruntime": "onnx", "pytorch": "torchscript"}
#: ``--backend`` names that stand for several backends.
BACKEND_SETS: dict[str, tuple[str, ...]] = {"both": tuple(BACKENDS)}


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
    """Write ``<arch><suffix>`` for each of ``formats`` (names in :data:`FORMATS`) and ``export.json``
    into the existing folder ``output``; return the model files written."""
    settings = ExportSettings(metadata=metadata, opset=opset, onnx_exporter=onnx_exporter)
    written = [FORMATS[name].write(model, output / f"{arch}{FORMATS[name].suffix}", settings) for name in formats]
    (output / "export.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return written


# --------------------------------------------------------------------------- arguments


def model_name(text: str) -> str:
    """argparse type of ``--model-name``: a Triton model name, also a folder name."""
    if not text or text[0] in ".-" or not all(c.isalnum() or c in "_-." for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot name a Triton model folder: use letters, digits, '_', '-' and '.' "
            "(not first)")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m resnet export``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Export a model as TorchScript and/or ONNX, or as a Triton model repository.\n"
        f"Input {INPUT_NAME!r}: float32 (N, {', '.join(map(str, INPUT_SHAPE))}), normalised as resnet.preprocessing "
        f"says;\noutput {OUTPUT_NAME!r}: float32 (N, classes) logits. N is dynamic.\n"
        "Files are written to a temporary folder beside the target and moved into place when complete;\n"
        "files get mode 644 and folders 755 whatever the umask, so a server running as another user can\n"
        "read them. Exit status: 0 done, 1 the export failed (nothing written), 2 bad arguments, no weights\n"
        "or a missing package (checked before any work)."
    )
    parser.epilog = (
        "examples:\n"
        "  python -m resnet export --pretrained --output exported/\n"
        "  python -m resnet export --weights my.pth.tar --arch se-resnext101-32x4d --format onnx --output out/\n"
        "  python -m resnet export --pretrained --fold-bn --fp16 --triton model_repository/"
    )
    add_model_options(
        parser, pretrained_option=True, weights_help="local checkpoint (NGC file or training checkpoint)",
        quiet_help="no download progress bar, no list of the files written",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", metavar="DIR", help="write <arch>.pt / <arch>.onnx and export.json here")
    where.add_argument("--triton", metavar="DIR", help="write a Triton model repository here")
    parser.add_argument("--format", choices=(*FORMATS, *FORMAT_SETS), default=None,
                        help=f"with --output: what to write (default both: {', '.join(FORMAT_SETS['both'])})")
    parser.add_argument("--backend", choices=(*BACKENDS, *BACKEND_SETS), default=None,
                        help="with --triton: which Triton backends get a model (default both)")
    parser.add_argument("--model-name", type=model_name, metavar="NAME",
                        help="with --triton: base model name; folders are NAME_onnx, NAME_libtorch (default: arch)")
    parser.add_argument("--max-batch-size", type=positive_int, default=DEFAULT_MAX_BATCH_SIZE, metavar="N",
                        help=f"with --triton: max_batch_size of the configs (default {DEFAULT_MAX_BATCH_SIZE})")
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convolutions")
    parser.add_argument("--fp16", action="store_true",
                        help="half-precision weights and compute (input and output stay float32)")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default="auto",
                        help="torch's ONNX exporter: dynamo (needs onnxscript and torch 2.5), torchscript, or "
                             "auto (dynamo where both are there; default)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")


# --------------------------------------------------------------------------- checks


@dataclass
class Plan:
    """What an export will write, settled before the model is built."""

    target: Path
    formats: tuple[str, ...]
    backends: tuple[str, ...] = ()
    onnx_exporter: Optional[str] = None


def plan_export(args: argparse.Namespace) -> Plan:
    """Check everything that can be checked before the model is built, so that bad input fails fast.

    Raises:
        CommandError: an option that does not fit the others, a package that is missing, an ONNX
            opset torch cannot write, or an output path that cannot receive the export.
    """
    if args.triton and args.format is not None:
        raise CommandError("--format applies to --output; with --triton choose the backends with --backend")
    if args.output and (args.backend is not None or args.model_name is not None):
        raise CommandError("--backend and --model-name apply to --triton; with --output choose --format")
    if args.triton:
        backends = BACKEND_SETS.get(args.backend or "both", (args.backend,))
        formats = tuple(BACKEND_FORMATS[backend] for backend in backends)
    else:
        backends = ()
        formats = FORMAT_SETS.get(args.format or "both", (args.format,))
    _check_packages(formats, backends)
    exporter = None
    if any(FORMATS[name].uses_onnx_exporter for name in formats):
        try:
            exporter = resolve_onnx_exporter(args.onnx_exporter)
        except ExportError as error:
            raise CommandError(str(error)) from None
        highest = highest_opset(exporter)
        if highest is not None and not 7 <= args.opset <= highest:
            raise CommandError(f"--opset {args.opset} is not supported by torch's {exporter} ONNX exporter; "
                               f"use 7 to {highest}")
    target = Path(args.triton or args.output)
    try:
        check_directory_target(target, force=args.force)
    except OutputPathError as error:
        raise CommandError(str(error)) from None
    return Plan(target=target, formats=formats, backends=backends, onnx_exporter=exporter)


def _check_packages(formats: Sequence[str], backends: Sequence[str]) -> None:
    """Raise :class:`CommandError` naming the ``pip install`` when a format's package cannot be imported."""
    missing = sorted({package for name in formats for package in FORMATS[name].packages if not _importable(package)})
    if not missing:
        return

    def usable(name: str) -> bool:
        return not set(FORMATS[name].packages) & set(missing)

    packages = " ".join(missing)
    if backends:
        blocked = [backend for backend in backends if not usable(BACKEND_FORMATS[backend])]
        others = [backend for backend in BACKENDS if usable(BACKEND_FORMATS[backend])]
        subject = f"the model of Triton's {' and '.join(blocked)} backend"
        hint = f" (or --backend {others[0]} to write the {others[0]} model only)" if others else ""
    else:
        blocked = [name for name in formats if not usable(name)]
        others = [name for name in FORMATS if usable(name)]
        subject = f"the {' and '.join(blocked)} export"
        hint = f" (or --format {others[0]} to write {others[0]} only)" if others else ""
    noun = "package" if len(missing) == 1 else "packages"
    raise CommandError(f"{subject} needs the {packages} {noun}, not installed here: pip install {packages}{hint}")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    """Entry point of the ``export`` subcommand; returns the exit status (0 done, 1 failed, 2 bad input).

    Errors are printed as one ``error:`` line on stderr.
    """
    return run_command(_export, args)


def _export(args: argparse.Namespace) -> int:
    plan = plan_export(args)
    model = load_model(args, pretrained_default=args.pretrained).eval()  # a CommandError says what is wrong
    num_classes = model.fc.out_features
    meta = export_metadata(
        args.arch, weights=str(args.weights) if args.weights else f"NGC {CHECKPOINTS[args.arch].file_name}",
        fold_bn=args.fold_bn, fp16=args.fp16, num_classes=num_classes,
        opset=args.opset if plan.onnx_exporter else None, onnx_exporter=plan.onnx_exporter,
    )
    exporter = plan.onnx_exporter or "auto"
    try:
        prepared = prepare_for_export(model, fold_bn=args.fold_bn, fp16=args.fp16)
        with atomic_directory(plan.target, force=args.force) as staging:
            if args.triton:
                class_names = [str(name) for name in get_imgnet_classes()] if num_classes == 1000 else None
                written = write_triton_repository(
                    prepared, staging, model_name=args.model_name or args.arch, backends=plan.backends,
                    max_batch_size=args.max_batch_size, num_classes=num_classes, opset=args.opset,
                    onnx_exporter=exporter, metadata=meta, class_names=class_names,
                )
            else:
                written = write_exports(prepared, staging, arch=args.arch, formats=plan.formats, metadata=meta,
                                        opset=args.opset, onnx_exporter=exporter)
    except OutputPathError as error:  # the target changed since it was checked
        raise CommandError(str(error)) from error
    except ExportError as error:
        raise CommandError(str(error), status=1) from error
    except OSError as error:
        raise CommandError(f"could not write {str(plan.target)!r}: {error}", status=1) from error
    except Exception as error:  # an exporter failing in an unforeseen way: still one line, nothing written
        raise CommandError(f"export to {str(plan.target)!r} failed: {type(error).__name__}: {first_line(error)}",
                           status=1) from error
    if not args.quiet:
        for path in written:
            print(plan.target / path.relative_to(staging))
    return 0
