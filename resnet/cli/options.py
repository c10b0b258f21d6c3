"""What every ``python -m resnet`` command shares: model options, argument types, the model loader.

Each command adds the options it needs with :func:`add_model_options` / :func:`add_device_option`
and builds its model with :func:`load_model`, so ``--arch``, ``--weights``, ``--mirror`` and ``--device``
are spelled, checked and reported the same way everywhere. ``classify`` and ``evaluate`` also run an
exported ONNX model instead (:func:`add_onnx_options`, :func:`check_onnx_options`, :func:`load_onnx`).
Anything a user can get wrong on the command line is refused at parse time by argparse (one ``error:``
line, exit status 2); what can only be found later (a checkpoint that does not load) is a
:class:`CommandError`, which ``python -m resnet`` prints as one ``error:`` line with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable, Optional

# Nothing imported here imports torch: --help and argument errors need none of it (the model is built in run()).
from resnet.data.defaults import DECODE_MODES, default_workers
from resnet.data.preprocessing import MIN_IMAGE_SIZE
from resnet.errors import ConvNetsError, cli_text  # noqa: F401  (cli_text: shared by the commands)
from resnet.models.family import ARCHS, EFFICIENTNETS_WITH_WEIGHTS, canonical_model_arch

if TYPE_CHECKING:
    from torch import nn


def __getattr__(name: str) -> Any:
    """``resolve_device`` (``--device``, shared by the commands), imported with torch when first asked for."""
    if name == "resolve_device":
        from resnet.fast.devices import resolve_device

        return resolve_device
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CommandError(ConvNetsError):
    """A command cannot go on; ``python -m resnet`` prints ``error: <message>`` and exits with ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message, partial=status == 1)
        self.status = status


def exit_status(error: ConvNetsError) -> int:
    """The exit status of a command that stopped on ``error``: its own for a :class:`CommandError`, else 1 when
    part of the work was delivered (``error.partial``) and 2 when nothing could run."""
    return error.status if isinstance(error, CommandError) else 1 if error.partial else 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with errors as one line: ``error: <what is wrong> (<prog> --help lists the options)``.

    A mistyped option or choice also gets the closest one (``did you mean --top-k?``).
    """

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}{self._suggestion(message)} ('{self.prog} --help' lists the options)\n")

    def unrecognized(self, extras: list[str]):
        """Refuse ``extras`` (what ``parse_known_args`` left over) as this parser's unrecognized arguments."""
        self.error(f"unrecognized arguments: {' '.join(extras)}")

    def _suggestion(self, message: str) -> str:
        """``; did you mean X?`` for the first mistyped option or choice that ``message`` names, else ``""``."""
        import difflib

        choice = _INVALID_CHOICE.search(message)
        if choice:
            given, options = choice.group(1), re.findall(r"'([^']*)'", choice.group(2))
        elif message.startswith("unrecognized arguments: "):
            words = [word.split("=", 1)[0] for word in message.split(": ", 1)[1].split() if word.startswith("--")]
            options = [name for name in self._option_string_actions if name.startswith("--")]
            for given in words:
                close = difflib.get_close_matches(given, options, n=1, cutoff=0.75)
                if close:
                    return f"; did you mean {close[0]}?"
            return ""
        else:
            return ""
        close = difflib.get_close_matches(given, options, n=1, cutoff=0.75)
        return f"; did you mean {close[0]}?" if close else ""


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


# --------------------------------------------------------------------------- argument types


def arch_name(text: str) -> str:
    """argparse type: an architecture name (a ResNet or an EfficientNet), also in the underscore spelling of the hub
    entrypoints."""
    try:
        return canonical_model_arch(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least {least}, not {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def base_url(text: str) -> str:
    """argparse type: an ``http://`` or ``https://`` URL with a host (a mirror's base address)."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL such as https://mirror.example/models, "
                                         f"not {text!r}")
    return text.strip()


def output_file(text: str) -> str:
    """argparse type: a file path that can be written (its folder exists and is writable; not a folder)."""
    from resnet.io.atomic import OutputPathError, check_file_target  # only when such an option is given

    try:
        check_file_target(text)
    except OutputPathError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device_name(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    name = text.strip().lower()
    if not _DEVICE.match(name):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N (N a GPU number), not {text!r}")
    return name


# --------------------------------------------------------------------------- option groups


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    weights_help: Optional[str] = None,
    pretrained_option: bool = False,
    quiet_help: str = "no progress bars",
) -> None:
    """``--arch``, ``--weights``, ``--mirror`` and ``--quiet``, as every command spells them.

    With ``pretrained_option``, ``--weights FILE`` and ``--pretrained`` (NVIDIA's NGC weights) are
    alternatives and one of them is required (``args.pretrained`` says which); otherwise the NGC
    weights are used unless ``--weights`` is given.
    """
    parser.add_argument(
        "--arch", type=arch_name, default="resnet50", metavar="ARCH", action=_NoteGiven,
        help=f"architecture: {', '.join((*ARCHS, *EFFICIENTNETS_WITH_WEIGHTS))} (underscores accepted; default "
        "resnet50); the other EfficientNets (efficientnet-b1 ...) have no NGC weights: train them or give --weights",
    )
    source = parser.add_mutually_exclusive_group(required=True) if pretrained_option else parser
    source.add_argument(
        "--weights", metavar="FILE",
        help=weights_help or "local checkpoint instead of NVIDIA's NGC weights (NGC file, training checkpoint, "
        "or a model.pth written by 'python -m resnet train')",
    )
    if pretrained_option:
        source.add_argument("--pretrained", action="store_true",
                            help="NVIDIA's NGC weights, from the torch hub cache (downloaded when missing)")
    parser.add_argument("--mirror", type=base_url, metavar="URL",
                        help="http(s) base URL serving the NGC checkpoint files by name")
    parser.add_argument("--quiet", action="store_true", help=quiet_help)


class _NoteGiven(argparse.Action):
    """Store the value, and note on the namespace that the option was given (``args.<dest>_given``)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda|cuda:N``."""
    parser.add_argument(
        "--device", type=device_name, default="auto", metavar="DEVICE",
        help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)",
    )


# --------------------------------------------------------------------------- exported ONNX models

#: ``--runtime`` choices, as :mod:`resnet.deploy.runtimes` names them (kept here so that ``--help`` imports no runtime).
ONNX_RUNTIMES = ("onnxruntime", "openvino")


def add_onnx_options(parser: argparse.ArgumentParser) -> None:
    """``--onnx FILE`` and ``--runtime onnxruntime|openvino``: run an exported model instead of a PyTorch one."""
    group = parser.add_argument_group(
        "exported models", "run an ONNX file written by 'python -m resnet export' (fp32 or --int8) on the CPU "
        "instead of a PyTorch model: same inputs, outputs and class names (from the file's metadata)")
    group.add_argument("--onnx", metavar="FILE",
                       help="the ONNX file (instead of --weights/--mirror; --arch does not apply: the file holds "
                       "its architecture)")
    group.add_argument("--runtime", choices=ONNX_RUNTIMES, default=None,
                       help="with --onnx: onnxruntime (default) or openvino (pip install openvino; fastest "
                       "for INT8 models)")


def check_onnx_options(args: argparse.Namespace, precision: str) -> None:
    """Refuse options that do not go with ``--onnx`` (or ``--runtime`` without it), before any work.

    ``precision`` is the one asked for (``fp32``, ``bf16``, ``fp16`` or ``auto``; see :func:`onnx_precision`).

    Raises:
        CommandError: ``--runtime`` without ``--onnx``; ``--onnx`` with ``--weights``, ``--mirror``, ``--arch``,
            a CUDA ``--device`` (the runtimes run on the CPU here) or a precision the runtime cannot give.
    """
    if not args.onnx:
        if args.runtime is not None:
            raise CommandError("--runtime applies to --onnx FILE (an exported model); PyTorch models run on "
                               "PyTorch")
        return
    given = [flag for flag, value in (("--weights", args.weights), ("--mirror", args.mirror),
                                      ("--arch", getattr(args, "arch_given", False))) if value]
    if given:
        raise CommandError(f"{' and '.join(given)} cannot be combined with --onnx: the ONNX file holds the "
                           "architecture, the weights and the class names")
    if args.device not in ("auto", "cpu"):
        raise CommandError(f"--onnx runs on the CPU (ONNX Runtime's or OpenVINO's CPU device), not --device "
                           f"{args.device}; leave out --device, or run the PyTorch model on the GPU")
    onnx_precision(args.runtime, precision)


def onnx_precision(runtime: str, asked: str) -> str:
    """The runtime precision (``fp32`` or ``bf16``) for ``asked`` = ``fp32``, ``bf16``, ``fp16`` or ``auto``.

    ONNX Runtime runs what the file holds (fp32, or INT8 with fp32 between): ``fp32`` and ``auto``.
    OpenVINO honours bf16 (its inference-precision hint) where the CPU computes it natively
    (:func:`resnet.fast.devices.cpu_supports_bf16`): ``auto`` picks it there and fp32 elsewhere; ``bf16``
    asked for on a CPU without native BF16 is refused rather than emulated.

    Raises:
        CommandError: a precision the runtime cannot give here.
    """
    from resnet.fast.devices import cpu_supports_bf16

    if asked == "fp16":
        raise CommandError("float16 is for CUDA devices; --onnx runs on the CPU: use float32, or bfloat16 with "
                           "--runtime openvino on a CPU with native BF16")
    if runtime != "openvino":
        if asked == "bf16":
            raise CommandError("ONNX Runtime runs the precision the file holds (float32, or INT8 for an --int8 "
                               "export); for bfloat16 use --runtime openvino (on a CPU with native BF16)")
        return "fp32"
    if asked == "fp32":
        return "fp32"
    if cpu_supports_bf16():
        return "bf16"
    if asked == "bf16":
        raise CommandError("this CPU has no native BF16 (AVX512-BF16 or AMX), so OpenVINO would not compute in "
                           "bfloat16 here; use float32 (or auto, which picks bfloat16 only where it is native)")
    return "fp32"


def load_onnx(args: argparse.Namespace, precision: str):
    """The :class:`resnet.deploy.runtimes.OnnxModel` of ``--onnx`` on ``--runtime``, for the ``precision`` asked for
    (``fp32``, ``bf16``, ``fp16`` or ``auto``; the runtime's is :func:`onnx_precision`'s answer).

    Its warnings (a file without this repository's metadata runs with ImageNet's names) are printed as
    ``warning:`` lines.

    Raises:
        CommandError: the runtime (or onnx) is not installed (the message names the ``pip install``), the
            file is missing or is not an image classifier of this interface (the message says what does
            not fit), or the runtime cannot give ``precision``.
    """
    import warnings

    from resnet.deploy.runtimes import RuntimeModelError, RuntimeUnavailableError, load_onnx_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load_onnx_model(args.onnx, args.runtime or ONNX_RUNTIMES[0],
                                    precision=onnx_precision(args.runtime, precision))
        except RuntimeModelError as error:
            raise CommandError(error.describe("cli")) from None
        except RuntimeUnavailableError as error:
            raise CommandError(str(error)) from None
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            report_warning(cli_text(warning.message))
    return model


def onnx_image_size(args: argparse.Namespace, size: int) -> int:
    """The image size of ``--onnx``'s model: ``size``, the one its graph takes; ``--image-size`` may only repeat it.

    Raises:
        CommandError: ``--image-size`` names another size.
    """
    asked = getattr(args, "image_size", None)
    if asked is not None and asked != size:
        raise CommandError(f"--image-size {asked} does not apply to --onnx {args.onnx}: the exported model takes "
                           f"{size}x{size} images; leave out --image-size")
    return size


def add_workers_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--workers N``: image decoding processes or threads (``what``)."""
    parser.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                        help=f"image decoding {what} (default: the CPU count, at most 8: {default_workers()} "
                        "here; 0 decodes in the main thread)")


#: ``--decode`` help: what reduced decoding is and what it was measured to change.
DECODE_HELP = (
    "how JPEGs are decoded. 'reduced' decodes a JPEG over 1024 pixels on its shorter side at 1/2, 1/4 or 1/8 "
    "scale inside libjpeg (both sides kept at least twice the resize target, 512 pixels for 224), then resizes it "
    "to the size the exact path resizes to, so the centre crop is the same: a 12-megapixel photo is prepared "
    "about 5x faster (50 instead of 281 ms on one core). Its top-1 class agreed with exact decoding on 95.0%% of "
    "180 test photos and on 100%% of the 120 whose top two classes were not a near tie (probabilities within "
    "0.05); every change was such a tie, which an exact decode resized another way also flips (95.6%%). "
    "'exact' decodes every pixel, as prepare_input_from_uri does; smaller images and PNGs decode exactly either way"
)


def add_decode_option(parser: argparse.ArgumentParser, default: str, why: str) -> None:
    """``--decode {exact,reduced}`` with ``default``, and ``why`` that default."""
    parser.add_argument("--decode", choices=DECODE_MODES, default=default,
                        help=f"{DECODE_HELP} (default {default}: {why})")


def image_size(text: str) -> int:
    """argparse type of ``--image-size``: a side of at least :data:`resnet.data.preprocessing.MIN_IMAGE_SIZE`."""
    value = positive_int(text)
    if value < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_IMAGE_SIZE}, not {value}")
    return value


def add_precision_option(parser: argparse.ArgumentParser, default: str, help_default: str) -> None:
    """``--precision {auto,fp32,bf16,fp16}``."""
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16", "fp16"), default=default,
        help=f"{help_default}; auto: float16 on CUDA, bfloat16 on CPUs with native BF16 (AVX512-BF16, AMX), "
        "float32 elsewhere",
    )


# --------------------------------------------------------------------------- the model


def load_model(args: argparse.Namespace, *, pretrained_default: bool = True, report_warnings: bool = True,
               **options) -> nn.Module:
    """Build ``args.arch`` (a ResNet or an EfficientNet) with ``--weights FILE``, or NVIDIA's NGC weights through
    the hub cache.

    ``options`` go to :func:`resnet.models.builder.create_model` (``channels_last``, ``num_classes`` ...).
    Every error of the weights (missing or damaged file, no network, a file of another architecture)
    becomes a :class:`CommandError` whose message names the file and the command-line remedy. The loader's
    warnings (stored class names that do not fit, names made printable) are printed as ``warning:`` lines,
    unless ``report_warnings`` is false (they then reach the caller as Python warnings).
    """
    import warnings

    if not report_warnings:
        return _create_model(args, pretrained_default, options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _create_model(args, pretrained_default, options)
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            report_warning(cli_text(warning.message))
    return model


def _create_model(args: argparse.Namespace, pretrained_default: bool, options: dict) -> nn.Module:
    from resnet.models.builder import create_model
    from resnet.weights.reading import CheckpointNotFoundError, WeightsError

    weights = getattr(args, "weights", None)
    try:
        return create_model(
            args.arch,
            pretrained=weights is None and pretrained_default,
            pretrained_from_file=weights,
            mirror=getattr(args, "mirror", None),
            progress=not getattr(args, "quiet", False),
            **options,
        )
    except (WeightsError, CheckpointNotFoundError) as error:
        raise CommandError(error.describe("cli")) from error
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from error
    except PermissionError as error:  # a --weights file this user may not read
        raise CommandError(f"cannot read --weights {weights!r}: {error.strerror or error}") from error


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command's ``run(args)``; a library error (:class:`resnet.errors.ConvNetsError`, a
    :class:`CommandError` among them) becomes one ``error:`` line and its :func:`exit_status`, and Ctrl+C that the
    command does not handle itself one ``error: interrupted`` line and status 1."""
    try:
        return run(args)
    except ConvNetsError as error:
        report_error(error)
        return exit_status(error)
    except KeyboardInterrupt:
        report_error("interrupted (Ctrl+C)")
        return 1
    except BrokenPipeError:
        # Whoever read the output stopped reading (``... | head``): stop quietly, as command-line tools do.
        # Output still buffered would fail again at exit, so stdout now writes to nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def report_error(error: object) -> None:
    """Print ``error`` on stderr as one line, ``error: <message>`` (line breaks of the message become spaces)."""
    text = " ".join(str(error).split()) or type(error).__name__
    print(f"error: {text}", file=sys.stderr)


def report_warning(message: str) -> None:
    """Print ``message`` on stderr as one line, ``warning: <message>``."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)
