"""``python -m resnet export``: TorchScript, ONNX (also INT8) and ``torch.export`` files, or a Triton model repository.

The files and their interface are made by :mod:`resnet.deploy.exporters`, :mod:`resnet.deploy.pt2` and
:mod:`resnet.deploy.quantize`, the Triton layout by :mod:`resnet.deploy.triton`; this module is the
command: its options, the checks that run before any work (option mix-ups, missing packages, the
output path, the calibration images of ``--int8``) and the export itself, written into a temporary
folder beside the target and moved into place when complete (:mod:`resnet.io.atomic`).

A new file format is one entry in :data:`FORMATS`: its suffix, the packages it needs and what else it
needs of this torch (both checked before the model is built) and the function that writes it;
``--format`` offers it from there. ``--int8`` is not a format but a step after the ONNX export: the
fp32 ONNX file is quantized (:func:`resnet.deploy.quantize.quantize_onnx`) into ``<arch>-int8.onnx`` beside
it, or into a Triton model ``<name>_int8_onnx``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

# Only what --help and the argument checks need is imported here (data, no torch); the exporters, the runtimes and
# torch are imported by _load_heavy() when the command runs (python -m resnet export --help answers at once).
from resnet.cli.options import (
    image_size,
    CommandError,
    add_model_options,
    load_model,
    positive_int,
    report_warning,
    run_command,
)
from resnet.data.preprocessing import ImageSize, data_config
from resnet.data.synsets import imagenet_class_names
from resnet.deploy.choices import (
    BACKENDS,
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_MAX_BATCH_SIZE,
    INPUT_NAME,
    MIN_CALIBRATION_IMAGES,
    ONNX_EXPORTERS,
    OUTPUT_NAME,
    PREFERRED_OPSET,
)
from resnet.io.atomic import OutputPathError, atomic_directory, check_directory_target
from resnet.models.family import arch_data_config, get_head, model_data_config
from resnet.weights.catalogue import CHECKPOINTS

if TYPE_CHECKING:  # bound at run time by _load_heavy()
    import torch
    from torch import nn

    from resnet.deploy.exporters import (
        DEFAULT_OPSET,
        ExportError,
        export_metadata,
        export_onnx,
        export_torchscript,
        first_line,
        highest_opset,
        prepare_for_export,
        resolve_onnx_exporter,
    )
    from resnet.deploy.pt2 import (
        Pt2Error,
        aoti_available,
        compile_package,
        export_program,
        make_program,
        program_available,
    )
    from resnet.deploy.quantize import (
        CalibrationSet,
        QuantizationError,
        entropy_calibration_problem,
        load_calibration_set,
        quantize_onnx,
        skipped_summary,
    )
    from resnet.deploy.triton import model_file as triton_model_file
    from resnet.deploy.triton import write_triton_model, write_triton_repository
    from resnet.fast.devices import cpu_runs_float16_convolutions

#: Names this module takes from the modules that import torch, by module: imported by :func:`_load_heavy` (when
#: the command runs, or when one of them is first asked for), as if imported at the top.
_HEAVY: dict[str, tuple[str, ...]] = {
    "torch": (),
    "resnet.fast.devices": ("cpu_runs_float16_convolutions",),
    "resnet.deploy.exporters": ("DEFAULT_OPSET", "ExportError", "export_metadata", "export_onnx", "export_torchscript",
                                "first_line", "highest_opset", "prepare_for_export", "resolve_onnx_exporter"),
    "resnet.deploy.pt2": ("Pt2Error", "aoti_available", "compile_package", "export_program", "make_program",
                          "program_available"),
    "resnet.deploy.quantize": ("CalibrationSet", "QuantizationError", "entropy_calibration_problem",
                               "load_calibration_set", "quantize_onnx", "skipped_summary"),
    "resnet.deploy.triton": ("write_triton_model", "write_triton_repository"),
}
_HEAVY_ALIASES = {"nn": ("torch", "nn"), "triton_model_file": ("resnet.deploy.triton", "model_file")}


def _load_heavy() -> None:
    """Import the exporters (and torch) and bind :data:`_HEAVY`'s names here; a name already bound (a test's
    replacement) is kept."""
    if globals().get("_heavy_loaded"):
        return
    names = globals()
    for module_name, wanted in _HEAVY.items():
        module = importlib.import_module(module_name)
        if module_name == "torch":
            names.setdefault("torch", module)
        for name in wanted:
            names.setdefault(name, getattr(module, name))
    for name, (module_name, attribute) in _HEAVY_ALIASES.items():
        names.setdefault(name, getattr(importlib.import_module(module_name), attribute))
    names["_heavy_loaded"] = True


def __getattr__(name: str) -> Any:
    """PEP 562: a name of :data:`_HEAVY` asked for before the command ran (``from resnet.cli.export import
    export_onnx``)."""
    if name in _HEAVY_ALIASES or name == "torch" or any(name in wanted for wanted in _HEAVY.values()):
        _load_heavy()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKEND_FORMATS",
    "BACKEND_SETS",
    "FORMATS",
    "FORMAT_SETS",
    "ExportSettings",
    "FileFormat",
    "INT8_SUFFIX",
    "Int8Plan",
    "Plan",
    "add_arguments",
    "aoti_devices",
    "model_name",
    "plan_export",
    "run",
    "write_exports",
]


def _silent(text: str) -> None:
    """Progress lines go nowhere (``--quiet``)."""


@dataclass
class ExportSettings:
    """How the files of one export are written (what :attr:`FileFormat.write` receives).

    ``say(text)`` reports a long step (an AOTInductor compile, a quantization) as it starts.
    """

    metadata: dict[str, Any]
    opset: Optional[int] = None  # None: DEFAULT_OPSET of this torch
    onnx_exporter: str = "auto"
    say: Callable[[str], None] = field(default=_silent)


@dataclass(frozen=True)
class FileFormat:
    """A kind of model file ``--format`` can write.

    Attributes:
        suffix: the (main) file is ``<arch><suffix>``.
        write: ``write(model, path, settings) -> [paths]`` writes the prepared model (see
            :func:`resnet.deploy.exporters.prepare_for_export`) at ``path``, and any companion files beside it;
            returns every file written.
        packages: modules it needs beyond the runtime requirements, importable under the name
            ``pip install`` takes; checked before the model is built.
        uses_onnx_exporter: made by torch's ONNX exporter, so ``--opset`` and ``--onnx-exporter`` apply.
        unavailable: ``unavailable()`` says why this torch cannot write the format (``None``: it can);
            checked before the model is built.
    """

    suffix: str
    write: Callable[[nn.Module, Path, ExportSettings], list[Path]]
    packages: tuple[str, ...] = ()
    uses_onnx_exporter: bool = False
    unavailable: Optional[Callable[[], Optional[str]]] = None


def _write_torchscript(model: nn.Module, path: Path, settings: ExportSettings) -> list[Path]:
    return [export_torchscript(model, path, metadata=settings.metadata)]


def _write_onnx(model: nn.Module, path: Path, settings: ExportSettings) -> list[Path]:
    return [export_onnx(model, path, opset=settings.opset or DEFAULT_OPSET, exporter=settings.onnx_exporter,
                        metadata=settings.metadata)]


#: What an AOTInductor package costs to compile, as the progress line says (benchmarks/README.md).
AOTI_COMPILE_TIME = "ResNet-50 took 20 s to 4 min on 2 CPU cores"


def aoti_devices() -> tuple[str, ...]:
    """Devices ``--format pt2`` compiles an AOTInductor package for: the CPU, and CUDA where it is available."""
    _load_heavy()
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def _write_pt2(model: nn.Module, path: Path, settings: ExportSettings) -> list[Path]:
    """``<arch>.pt2`` (the ExportedProgram) and ``<arch>-aoti-<device>.pt2`` for each of :func:`aoti_devices`."""
    _, program = export_program(model, path, metadata=settings.metadata)
    written = [path]
    for device in aoti_devices():
        if device != "cpu":  # a program traced on the GPU compiles to GPU code; the CPU copy stays as it is
            program = make_program(copy.deepcopy(model), device=device)
        settings.say(f"compiling the AOTInductor package for {device.upper()} ({AOTI_COMPILE_TIME})")
        package, _ = compile_package(program, path.with_name(f"{path.stem}-aoti-{device}{path.suffix}"),
                                     metadata=settings.metadata)
        written.append(package)
    return written


def _aoti_missing() -> Optional[str]:
    if aoti_available() and program_available():  # torch 2.6+ has both (torch.export.Dim: 2.2)
        return None
    return (f"--format pt2 writes an AOTInductor package, which needs torch 2.6 or newer with "
            f"torch._inductor.aoti_compile_and_package (this is torch {torch.__version__}); upgrade torch")


#: ``--format`` name -> the file it writes.
FORMATS: dict[str, FileFormat] = {
    "torchscript": FileFormat(".pt", _write_torchscript),
    "onnx": FileFormat(".onnx", _write_onnx, packages=("onnx",), uses_onnx_exporter=True),
    "pt2": FileFormat(".pt2", _write_pt2, unavailable=_aoti_missing),
}
#: ``--format`` names that stand for several formats (``both`` predates ``pt2`` and keeps its meaning).
FORMAT_SETS: dict[str, tuple[str, ...]] = {"both": ("torchscript", "onnx")}
#: Triton backend -> the format of its model file.
BACKEND_FORMATS: dict[str, str] = {"onnxruntime": "onnx", "pytorch": "torchscript"}
#: ``--backend`` names that stand for several backends.
BACKEND_SETS: dict[str, tuple[str, ...]] = {"both": tuple(BACKENDS)}
#: The INT8 model of ``--int8`` is ``<arch><INT8_SUFFIX>`` beside ``<arch>.onnx``; in a Triton repository
#: the model folder ``<name>_int8_onnx``.
INT8_SUFFIX = "-int8.onnx"
INT8_TRITON_SUFFIX = "_int8_onnx"
#: Packages ``--int8`` needs: onnx for the fp32 export, onnxruntime's quantization tools.
INT8_PACKAGES = ("onnx", "onnxruntime")


@dataclass
class Int8Plan:
    """The calibration of ``--int8``, read before the model is built."""

    calibration: CalibrationSet
    method: str = DEFAULT_CALIBRATION_METHOD


def write_exports(
    model: nn.Module,
    output: Path,
    *,
    arch: str,
    formats: Sequence[str],
    metadata: dict[str, Any],
    opset: Optional[int] = None,
    onnx_exporter: str = "auto",
    int8: Optional[Int8Plan] = None,
    say: Callable[[str], None] = _silent,
) -> list[Path]:
    """Write ``<arch><suffix>`` for each of ``formats`` (names in :data:`FORMATS`) and ``export.json``
    into the existing folder ``output``; return the model files written.

    With ``int8`` (``formats`` must hold ``onnx``), ``<arch>.onnx`` is then quantized into
    ``<arch>-int8.onnx``, and ``export.json`` gets an ``int8`` entry: the file and its quantization
    (calibration images, skipped files, method; :func:`resnet.deploy.quantize.quantize_onnx`). ``export.json``
    lists every file written under ``files``. ``opset`` ``None`` is the default of this torch
    (:data:`resnet.deploy.exporters.DEFAULT_OPSET`).
    """
    _load_heavy()
    settings = ExportSettings(metadata=metadata, opset=opset, onnx_exporter=onnx_exporter, say=say)
    written: list[Path] = []
    for name in formats:
        written += FORMATS[name].write(model, output / f"{arch}{FORMATS[name].suffix}", settings)
    record = dict(metadata)
    if int8 is not None:
        if "onnx" not in formats:
            raise ExportError("an INT8 model is quantized from the ONNX export: include the onnx format")
        target = output / f"{arch}{INT8_SUFFIX}"
        record["int8"] = {"file": target.name, **_quantize(output / f"{arch}.onnx", target, int8, say)}
        written.append(target)
    record["files"] = [path.name for path in written]
    (output / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return written


def _quantize(source: Path, target: Path, int8: Int8Plan, say: Callable[[str], None]) -> dict[str, Any]:
    say(f"quantizing to INT8, calibrated on {len(int8.calibration)} images ({int8.method})")
    return quantize_onnx(source, target, int8.calibration, method=int8.method)


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
        "Export a model as TorchScript, ONNX (optionally also INT8) or torch.export files, or as a Triton model\n"
        "repository.\n"
        f"Input {INPUT_NAME!r}: float32 (N, 3, S, S), S = 224 or the size the model was trained at, normalised as\n"
        f"resnet.data.preprocessing says; output {OUTPUT_NAME!r}: float32 (N, classes) logits. N is dynamic.\n"
        "Files are written to a temporary folder beside the target and moved into place when complete;\n"
        "files get mode 644 and folders 755 whatever the umask, so a server running as another user can\n"
        "read them. Exit status: 0 done, 1 the export failed or was interrupted (nothing written), 2 bad\n"
        "arguments, no weights, a missing package or an output that cannot be written (checked before any work)."
    )
    parser.epilog = (
        "examples:\n"
        "  python -m resnet export --pretrained --output exported/\n"
        "  python -m resnet export --weights my.pth.tar --arch se-resnext101-32x4d --format onnx --output out/\n"
        "  python -m resnet export --pretrained --fold-bn --fp16 --triton model_repository/\n"
        "  python -m resnet export --pretrained --format onnx --int8 --calibration photos/ --output out/\n"
        "  python -m resnet export --weights RUN/model.pth --format pt2 --output out/"
    )
    add_model_options(
        parser, pretrained_option=True,
        weights_help="local checkpoint (NGC file, training checkpoint, or a model.pth written by 'python -m resnet "
        "train', exported with its number of classes and class names)",
        quiet_help="no download progress bar, no list of the files written",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", metavar="DIR", help="write the files of --format and export.json here")
    where.add_argument("--triton", metavar="DIR", help="write a Triton model repository here")
    parser.add_argument(
        "--format", choices=(*FORMATS, *FORMAT_SETS), default=None,
        help="with --output: torchscript (<arch>.pt; what Triton's libtorch backend loads), onnx (<arch>.onnx), "
        "pt2 (<arch>.pt2, a torch.export program, and <arch>-aoti-cpu.pt2, an AOTInductor package; "
        f"-aoti-cuda.pt2 too where CUDA is; {AOTI_COMPILE_TIME} to compile), or "
        f"both (= {' + '.join(FORMAT_SETS['both'])}; the default)")
    parser.add_argument("--backend", choices=(*BACKENDS, *BACKEND_SETS), default=None,
                        help="with --triton: which Triton backends get a model (default both)")
    parser.add_argument("--model-name", type=model_name, metavar="NAME",
                        help="with --triton: base model name; folders are NAME_onnx, NAME_libtorch, "
                        f"NAME{INT8_TRITON_SUFFIX} (default: arch)")
    parser.add_argument("--max-batch-size", type=positive_int, default=DEFAULT_MAX_BATCH_SIZE, metavar="N",
                        help=f"with --triton: max_batch_size of the configs (default {DEFAULT_MAX_BATCH_SIZE})")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="SIZE",
                        help="side S of the (N, 3, S, S) input of the files (default: the size the model was trained "
                        "at, which a model.pth of 'train' records, else the arch's: 224, 380 for the "
                        "EfficientNet-B4s)")
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convolutions")
    parser.add_argument("--fp16", action="store_true",
                        help="half-precision weights and compute (input and output stay float32)")
    parser.add_argument("--opset", type=positive_int, default=None, metavar="N",
                        help=f"ONNX opset (default {PREFERRED_OPSET}, or the highest this torch's exporter writes "
                        "where that is lower: 17 on torch 2.1 to 2.3)")
    parser.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default="auto",
                        help="torch's ONNX exporter: dynamo (needs onnxscript and torch 2.5), torchscript, or "
                             "auto (dynamo where both are there; default)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    int8 = parser.add_argument_group(
        "INT8", "static INT8 quantization of the ONNX export (ONNX Runtime, QDQ, int8 weights per channel,\n"
        "fp32 classifier), calibrated on sample images; needs onnxruntime")
    int8.add_argument("--int8", action="store_true",
                      help=f"also write <arch>{INT8_SUFFIX} beside <arch>.onnx (with --triton: a model "
                      f"<name>{INT8_TRITON_SUFFIX}); needs --calibration")
    int8.add_argument("--calibration", metavar="DIR",
                      help="folder of sample images (searched recursively, sorted) of the kind the model will "
                      "see, preprocessed as every input; unreadable files are skipped and named")
    int8.add_argument("--calibration-images", type=positive_int, default=None, metavar="N",
                      help=f"use the first N readable images (default {DEFAULT_CALIBRATION_IMAGES}; fewer than "
                      f"{MIN_CALIBRATION_IMAGES} give a warning)")
    int8.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default=None,
                      help=f"how activation ranges are measured (default {DEFAULT_CALIBRATION_METHOD}: the "
                      "observed range; entropy and percentile clip outliers and take several times longer)")


# --------------------------------------------------------------------------- checks


@dataclass
class Plan:
    """What an export will write, settled before the model is built."""

    target: Path
    formats: tuple[str, ...]
    backends: tuple[str, ...] = ()
    onnx_exporter: Optional[str] = None
    int8: Optional[Int8Plan] = None


def plan_export(args: argparse.Namespace) -> Plan:
    """Check everything that can be checked before the model is built, so that bad input fails fast.

    With ``--int8`` the calibration images are read here too (their warnings are printed).

    Raises:
        CommandError: an option that does not fit the others, a package that is missing, a format this
            torch cannot write, --fp16 where torch has no float16 convolutions for the CPU, an ONNX opset
            torch cannot write, an output path that cannot receive the export, or calibration images that
            cannot be used.
    """
    _load_heavy()
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
    _check_int8_options(args, formats)
    if args.fp16 and not cpu_runs_float16_convolutions():
        raise CommandError(f"--fp16 exports are traced on the CPU, and torch {torch.__version__} has no float16 "
                           "convolutions there (torch 2.2 and later have); upgrade torch, or leave out --fp16")
    _check_packages(formats, backends)
    for name in formats:
        problem = FORMATS[name].unavailable() if FORMATS[name].unavailable is not None else None
        if problem is not None:
            raise CommandError(problem)
    exporter = None
    if any(FORMATS[name].uses_onnx_exporter for name in formats):
        try:
            exporter = resolve_onnx_exporter(args.onnx_exporter)
        except ExportError as error:
            raise CommandError(str(error)) from None
        highest = highest_opset(exporter)
        opset = args.opset or DEFAULT_OPSET
        if highest is not None and not 7 <= opset <= highest:
            raise CommandError(f"--opset {opset} is not supported by torch's {exporter} ONNX exporter; "
                               f"use 7 to {highest}")
    target = Path(args.triton or args.output)
    try:
        check_directory_target(target, force=args.force)
    except OutputPathError as error:
        raise CommandError(str(error)) from None
    # At the arch's preprocessing (read again once the model is built if its weights record another size).
    planned = arch_data_config(args.arch).at(args.image_size) if args.image_size else arch_data_config(args.arch)
    int8 = _read_calibration(args, planned) if args.int8 else None
    return Plan(target=target, formats=formats, backends=backends, onnx_exporter=exporter, int8=int8)


def _check_int8_options(args: argparse.Namespace, formats: Sequence[str]) -> None:
    """``--int8`` and its calibration options fit together and with the rest; its packages are installed."""
    calibration_options = [flag for flag, value in (
        ("--calibration", args.calibration), ("--calibration-images", args.calibration_images),
        ("--calibration-method", args.calibration_method)) if value is not None]
    if not args.int8:
        if calibration_options:
            verb = "applies" if len(calibration_options) == 1 else "apply"
            raise CommandError(f"{' and '.join(calibration_options)} {verb} to --int8; add --int8 to write an INT8 "
                               "model, or leave out the calibration options")
        return
    if args.calibration is None:
        raise CommandError(
            "--int8 needs --calibration DIR: a folder of sample images of the kind the model will see (a few "
            f"hundred; the first {DEFAULT_CALIBRATION_IMAGES} are used unless --calibration-images says), on "
            "which the activation ranges are measured"
        )
    if args.fp16:
        raise CommandError("--int8 quantizes the float32 ONNX export; it cannot be combined with --fp16")
    if "onnx" not in formats:
        if args.triton:
            raise CommandError("--int8 quantizes the model of Triton's onnxruntime backend, and --backend "
                               f"{args.backend} writes none; use --backend onnxruntime or both")
        raise CommandError(f"--int8 quantizes the ONNX export, and --format {args.format} writes none; use "
                           "--format onnx or both")
    missing = [package for package in INT8_PACKAGES if not _importable(package)]
    if missing:
        packages = " ".join(missing)
        raise CommandError(f"--int8 needs the {packages} package{'s' if len(missing) > 1 else ''}, not installed "
                           f"here: pip install {packages}")
    problem = entropy_calibration_problem() if args.calibration_method == "entropy" else None
    if problem is not None:
        raise CommandError(f"--calibration-method entropy: {problem}")


def _read_calibration(args: argparse.Namespace, size: ImageSize, *, report: bool = True) -> Int8Plan:
    """The calibration images of ``--calibration`` prepared as the model's images (``size``: a side or the model's
    :class:`resnet.data.preprocessing.DataConfig`); warnings (few images, unreadable files) are printed unless
    ``report`` is false."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            calibration = load_calibration_set(args.calibration, args.calibration_images or DEFAULT_CALIBRATION_IMAGES,
                                               image_size=size)
        except QuantizationError as error:
            raise CommandError(f"--calibration: {error}") from None
    for warning in caught if report else ():
        report_warning(f"--calibration: {warning.message}")
    for line in skipped_summary(calibration) if report else ():
        report_warning(f"--calibration: {line}")
    return Int8Plan(calibration, args.calibration_method or DEFAULT_CALIBRATION_METHOD)


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
    opset = args.opset or DEFAULT_OPSET
    model = load_model(args, pretrained_default=args.pretrained).eval()  # a CommandError says what is wrong
    num_classes = get_head(model).out_features
    # ImageNet's names for NVIDIA's weights, a fine-tuned model.pth's own ('python -m resnet train'), or None.
    class_names = model.classes
    # The files take images of the size the model was trained at (a model.pth records it), unless told, prepared
    # as the arch's are (an EfficientNet's size and bicubic resize; the metadata says so).
    config = model_data_config(model, args.image_size)
    size = config.image_size
    if plan.int8 is not None and data_config(plan.int8.calibration.image_size) != config:  # read before it was known
        plan.int8 = _read_calibration(args, config, report=False)
    meta = export_metadata(
        args.arch, weights=str(args.weights) if args.weights else f"NGC {CHECKPOINTS[args.arch].file_name}",
        fold_bn=args.fold_bn, fp16=args.fp16, num_classes=num_classes,
        opset=opset if plan.onnx_exporter else None, onnx_exporter=plan.onnx_exporter,
        class_names=class_names if class_names is not None and class_names != imagenet_class_names() else None,
        image_size=config,
    )
    exporter = plan.onnx_exporter or "auto"
    say = _silent if args.quiet else (lambda text: print(f"{text} ...", file=sys.stderr, flush=True))
    try:
        prepared = prepare_for_export(model, fold_bn=args.fold_bn, fp16=args.fp16, image_size=size)
        with atomic_directory(plan.target, force=args.force) as staging:
            if args.triton:
                name = args.model_name or args.arch
                written = write_triton_repository(
                    prepared, staging, model_name=name, backends=plan.backends,
                    max_batch_size=args.max_batch_size, num_classes=num_classes, opset=opset,
                    onnx_exporter=exporter, metadata=meta, class_names=class_names, image_size=config,
                    arch=args.arch,
                )
                if plan.int8 is not None:
                    fp32 = triton_model_file(staging, name, "onnxruntime")
                    written.append(write_triton_model(
                        staging, f"{name}{INT8_TRITON_SUFFIX}", "onnxruntime",
                        lambda path: _quantize(fp32, path, plan.int8, say),
                        max_batch_size=args.max_batch_size, num_classes=num_classes, class_names=class_names,
                        image_size=config, arch=args.arch,
                    ))
            else:
                written = write_exports(prepared, staging, arch=args.arch, formats=plan.formats, metadata=meta,
                                        opset=opset, onnx_exporter=exporter, int8=plan.int8, say=say)
    except KeyboardInterrupt:  # the temporary folder is gone (atomic_directory); one line, no traceback
        raise CommandError(f"interrupted (Ctrl+C): nothing was written to {str(plan.target)!r}", status=1) from None
    except OutputPathError as error:  # the target changed since it was checked
        raise CommandError(str(error)) from error
    except (ExportError, Pt2Error, QuantizationError) as error:
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
