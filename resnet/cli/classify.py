"""``python -m resnet classify``: classify image files, folders and URLs from the command line.

Inputs are expanded in the order given (folders recursively, sorted), decoded in
background threads while the model runs, and reported one result per image, as text
or as JSON lines. A bad image is reported and skipped. Exit status: 0 when every
input was classified, 1 when some failed, 2 when nothing could run (bad arguments,
no weights).

With ``--onnx FILE`` an exported model runs instead of the PyTorch one, on ONNX Runtime or
OpenVINO (``--runtime``), with the class names its metadata holds.

With ``--distributed`` under ``torchrun``, each rank classifies every WORLD_SIZE-th
input and rank 0 writes all results in input order, identical to a single process.
Under ``torchrun`` with more than one process but without ``--distributed``, the
command refuses to start (exit status 2, the message on rank 0): every process would
classify and print every input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, TextIO

# Only what --help and the argument checks need is imported here: torch, the decoders and the model come with run()
# (python -m resnet classify --help answers without importing torch).
from resnet.data.defaults import DEFAULT_DEADLINE, DEFAULT_TIMEOUT, PLOT_LIMIT, Decode
from resnet.io.download import Timeout, parse_timeout
from resnet.cli.options import (
    add_decode_option,
    add_precision_option,
    image_size,
    CommandError,
    add_device_option,
    add_model_options,
    add_onnx_options,
    check_onnx_options,
    load_model,
    load_onnx,
    onnx_image_size,
    output_file,
    positive_int,
    report_warning,
)
from resnet.data.names import printable_name
from resnet.data.preprocessing import CROP_SIZE

if TYPE_CHECKING:
    import torch

#: More inputs than this get a progress bar on stderr.
PROGRESS_THRESHOLD = 8


@dataclass
class Outcome:
    """The result for one input: its top-k ``(class index, name, probability)`` or an error."""

    input: str
    top: list[tuple[int, str, float]] = field(default_factory=list)
    error: Optional[str] = None

    def as_json(self) -> dict:
        if self.error is not None:
            return {"input": self.input, "error": self.error}
        return {
            "input": self.input,
            "top": [{"index": i, "class": name, "probability": round(p, 6)} for i, name, p in self.top],
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m resnet classify``."""
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive), http(s) URLs or file:// URIs"
    )
    add_model_options(parser)
    parser.add_argument("-k", "--top-k", type=top_k, default=5, help="classes to report per image (default 5)")
    parser.add_argument("-b", "--batch-size", type=positive_int, default=32,
                        help="images per forward pass (default 32)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="decoding threads, which work while the model runs (default: the CPU count, at most 8; "
                        "the model uses one thread per physical core)")
    add_decode_option(parser, "reduced", "the same classes, faster")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="SIZE",
                        help="centre crop, after resizing to 256/224 of it (default: the size the model was trained "
                        "at, which a model.pth of 'train' records, else 224; an --onnx export takes its own size)")
    add_device_option(parser)
    add_precision_option(
        parser, "fp32", "compute precision of the inference fast path (default fp32, same logits as the plain model "
        "within 1e-4). With --onnx: ONNX Runtime runs the file's own precision (fp32 or auto); OpenVINO computes "
        "in bfloat16 with auto or bf16 on a CPU with native BF16")
    parser.add_argument("--dtype", dest="precision", type=_dtype_name, metavar="{float32,auto,bfloat16,float16}",
                        help="the older spelling of --precision (float32 = fp32, bfloat16 = bf16, float16 = fp16)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image (JSON lines)")
    parser.add_argument("--plot", type=output_file, metavar="PNG",
                        help=f"draw the first {PLOT_LIMIT} images with their top classes into this PNG file "
                        "(its folder must exist)")
    parser.add_argument(
        "--timeout", type=url_timeout, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help="limits of each URL download in seconds: CONNECT,READ (default %s,%s: connecting, then each wait "
        "for more bytes), CONNECT,READ,DEADLINE to also bound the whole download (default deadline %s), or one "
        "number for connect and read" % tuple(f"{t:g}" for t in (*DEFAULT_TIMEOUT, DEFAULT_DEADLINE)),
    )
    parser.add_argument(
        "--distributed", action="store_true",
        help="shard the inputs over the ranks of a torchrun job (gloo on CPU, NCCL on CUDA); required "
        "under torchrun with more than one process",
    )
    add_onnx_options(parser)


#: ``--dtype`` name (the older spelling) -> its ``--precision`` name.
DTYPE_PRECISIONS = {"float32": "fp32", "auto": "auto", "bfloat16": "bf16", "float16": "fp16"}


def _dtype_name(text: str) -> str:
    """argparse type of ``--dtype``: its ``--precision`` name."""
    if text not in DTYPE_PRECISIONS:
        choices = ", ".join(repr(name) for name in DTYPE_PRECISIONS)
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {choices})")
    return DTYPE_PRECISIONS[text]


def url_timeout(text: str) -> Timeout:
    """argparse type of ``--timeout``: ``30``, ``5,30`` or ``5,30,180`` seconds."""
    try:
        return parse_timeout(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def top_k(text: str) -> int:
    """argparse type of ``--top-k``: 1 to the number of classes."""
    value = positive_int(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000, not {value}")
    return value


def classify(
    uris: list[str],
    model: Callable[[torch.Tensor], torch.Tensor],
    classes: list[str],
    *,
    top_k: int,
    batch_size: int,
    device: torch.device,
    workers: Optional[int] = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    progress: bool = False,
    image_size: int = CROP_SIZE,
    decode: Decode = "exact",
) -> list[Outcome]:
    """Classify ``uris`` in input order; decoding runs in threads while the model computes. Images are cropped
    to ``image_size`` (the size the model was trained at) after resizing to 256/224 of it; ``decode`` as
    :func:`resnet.data.batch.iter_batches` takes it."""
    import torch
    from tqdm import tqdm

    from resnet.data.batch import iter_batches

    outcomes: dict[str, list[Outcome]] = {}
    batches = iter_batches(uris, batch_size, num_workers=workers, timeout=timeout, image_size=image_size,
                           decode=decode)
    # Closing the batches on the way out (an error too) leaves no decoding running.
    with tqdm(total=len(uris), disable=not progress, unit="img", file=sys.stderr) as bar, \
            contextlib.closing(batches), torch.inference_mode():
        for batch in batches:
            for uri, message in batch.failures:
                outcomes.setdefault(uri, []).append(Outcome(uri, error=message))
            if len(batch.uris):
                probs = torch.softmax(model(batch.tensor.to(device)).float(), dim=1)
                values, indices = probs.topk(top_k, dim=1)
                for uri, vs, ix in zip(batch.uris, values.tolist(), indices.tolist()):
                    top = [(i, classes[i], v) for v, i in zip(vs, ix)]
                    outcomes.setdefault(uri, []).append(Outcome(uri, top=top))
            bar.update(len(batch.uris) + len(batch.failures))
    # The same input may be given twice; hand results back in input order.
    return [outcomes[uri].pop(0) for uri in uris]


def write_outcomes(outcomes: list[Outcome], *, as_json: bool, out: TextIO, err: TextIO) -> None:
    """Text (a block per image) or JSON lines on ``out``; in text mode failures go to ``err``."""
    for outcome in outcomes:
        if as_json:
            print(json.dumps(outcome.as_json()), file=out)
        elif outcome.error is not None:
            print(f"error: {outcome.error}", file=err)
        else:
            # Class names are printable (resnet.data.names); a file name may hold line breaks or escape sequences too.
            print(printable_name(str(outcome.input)), file=out)
            for _, name, p in outcome.top:
                print(f"  {100 * p:5.1f}%  {name}", file=out)


def _gather_in_order(local: list[Outcome], rank: int, world: int, total: int) -> Optional[list[Outcome]]:
    """Collect every rank's outcomes on rank 0, in input order (rank r holds inputs r, r+world, ...)."""
    import torch.distributed as dist

    gathered: Optional[list] = [None] * world if rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    if rank != 0:
        return None
    ordered: list[Outcome] = []
    for i in range(total):
        ordered.append(gathered[i % world][i // world])
    return ordered


def _refuse_torchrun_without_distributed() -> Optional[int]:
    """Under torchrun with several processes but without --distributed: the exit status, else None."""
    from resnet.training import distributed

    launched = distributed.launcher_environment()
    if launched is None or launched[1] <= 1:
        return None
    rank, world = launched
    if rank != 0:
        return 2  # rank 0 says why; one message, not one per process
    raise CommandError(
        f"this is one of {world} processes started by torchrun, but --distributed was not given, so each "
        "would classify and print every input; add --distributed to share the inputs between them, "
        "or run 'python -m resnet classify' without torchrun"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of the ``classify`` subcommand; returns the exit status."""
    from resnet.data.inputs import expand_inputs
    from resnet.deploy.runtimes import RuntimeModelError
    from resnet.fast import optimize_for_inference
    from resnet.training import distributed

    check_onnx_options(args, args.precision)
    device_name = "cpu" if args.onnx else args.device  # the runtimes run on the CPU
    if not args.distributed:
        refused = _refuse_torchrun_without_distributed()
        if refused is not None:
            return refused
    processes = distributed.start(device_name, distributed=args.distributed, command="classify", warn=report_warning)
    rank, world, device = processes.rank, processes.world, processes.device

    try:
        expanded = expand_inputs(args.inputs)
        for warning in expanded.warnings if rank == 0 else ():
            report_warning(warning)
        uris = expanded.uris
        if not uris:
            raise CommandError("no images found in " + " ".join(args.inputs))
        if args.onnx:
            model = load_onnx(args, args.precision)  # class names from the export's metadata
            classes = model.class_names
            size = onnx_image_size(args, model.image_size)
        else:
            model = load_model(args)
            # ImageNet's names, or those a fine-tuned model.pth stores ('python -m resnet train').
            classes = model.classes or [f"class {i}" for i in range(model.fc.out_features)]
            size = args.image_size or model.image_size or CROP_SIZE  # the size it was trained at
            # BN folded into the convolutions, channels-last, fused conv+ReLU/add on CPU: same logits, faster.
            model = optimize_for_inference(model.to(device), device=device, dtype=args.precision)
        mine = uris[rank::world]
        try:
            outcomes = classify(
                mine, model, classes, top_k=min(args.top_k, len(classes)), batch_size=args.batch_size, device=device,
                workers=args.workers, timeout=args.timeout,
                progress=not args.quiet and rank == 0 and len(uris) > PROGRESS_THRESHOLD, image_size=size,
                decode=args.decode,
            )
        except RuntimeModelError as error:  # an exported model that fails on real input (its output's shape...)
            raise CommandError(error.describe("cli")) from None
        if world > 1:
            outcomes = _gather_in_order(outcomes, rank, world, len(uris))
            if outcomes is None:
                return 0
    finally:
        distributed.stop(processes)

    write_outcomes(outcomes, as_json=args.json, out=sys.stdout, err=sys.stderr)
    if args.plot:
        plot(outcomes, args.plot)
    failed = sum(o.error is not None for o in outcomes)
    if failed and not args.json:
        print(f"{failed} of {len(outcomes)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def plot(outcomes: list[Outcome], path: str) -> None:
    """Draw the first :data:`PLOT_LIMIT` classified images into the PNG ``path`` (written atomically).

    Says on stderr when images were left out, or when nothing was drawn because every input failed.

    Raises:
        CommandError: the file could not be written (exit status 1: the results were printed).
    """
    from resnet.data.display import save_predictions_chart

    good = [o for o in outcomes if o.error is None]
    results = [[(name, f"{100 * p:.1f}%") for _, name, p in o.top] for o in good]
    try:
        warnings = save_predictions_chart([o.input for o in good], results, path)
    except (OSError, ValueError) as error:
        raise CommandError(f"--plot: could not write {path}: {error}", status=1) from error
    for warning in warnings:
        report_warning(f"--plot: {warning}")
