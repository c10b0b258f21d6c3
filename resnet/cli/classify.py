"""``python -m resnet classify``: classify image files, folders and URLs from the command line.

Inputs are expanded in the order given (folders recursively, sorted), decoded in
background threads while the model runs, and reported one result per image, as text
or as JSON lines. A bad image is reported and skipped. Exit status: 0 when every
input was classified, 1 when some failed, 2 when nothing could run (bad arguments,
no weights).

With ``--onnx FILE`` an exported model runs instead of the PyTorch one, on ONNX Runtime or
OpenVINO (``--runtime``), with the class names its metadata holds.

Results are printed as they come, batch by batch, in input order. With ``--output DIR`` they go to a
Parquet dataset instead (:mod:`resnet.predict.results`), written part by part while running; a rerun with
the same ``--output`` skips the inputs already there. With ``--engine ray`` the same work runs as a Ray Data
pipeline (:mod:`resnet.predict.ray_data`), on a local Ray or an existing cluster (``--ray-address``).

With ``--distributed`` under ``torchrun``, each rank classifies every WORLD_SIZE-th
input; rank 0 prints all results in input order, identical to a single process, gathering them a
chunk at a time, or each rank writes its own part files of ``--output``.
Under ``torchrun`` with more than one process but without ``--distributed``, the
command refuses to start (exit status 2, the message on rank 0): every process would
classify and print every input.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, TextIO

# Only what --help and the argument checks need is imported here: torch, the decoders and the model come with run()
# (python -m resnet classify --help answers without importing torch).
from resnet.data.defaults import DEFAULT_DEADLINE, DEFAULT_TIMEOUT, PLOT_LIMIT, Decode
from resnet.errors import ConvNetsError
from resnet.predict.results import DEFAULT_PART_ROWS, Outcome
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
    positive_float,
    positive_int,
    report_warning,
)
from resnet.data.names import printable_name
from resnet.data.preprocessing import CROP_SIZE, ImageSize
from resnet.models.family import get_head, model_data_config

if TYPE_CHECKING:
    import torch
    from tqdm import tqdm


def __getattr__(name: str) -> Any:
    """PEP 562: ``classify_stream`` (this module's name since before the engine moved to
    :mod:`resnet.predict.engine`), imported with torch when first asked for."""
    if name == "classify_stream":
        from resnet.predict.engine import classify_stream

        return classify_stream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: More inputs than this get a progress bar on stderr.
PROGRESS_THRESHOLD = 8


#: Results gathered from the ranks of a torchrun job per exchange (per rank), when printing.
GATHER_CHUNK = 256

__all__ = ["Outcome", "classify", "classify_stream", "add_arguments", "run", "plot", "write_outcomes", "top_k",  # noqa: F822
           "url_timeout", "DTYPE_PRECISIONS", "PROGRESS_THRESHOLD"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m resnet classify``."""
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="image files, folders (recursive), http(s) URLs or file:// URIs; with --engine ray also URIs of "
        "pyarrow's file systems (s3://bucket/photos, gs://...)")
    parser.add_argument("--input-list", action="append", default=[], metavar="FILE",
                        help="a text file naming one input per line (blank lines and # comments skipped), read "
                        "after the INPUTs; may be given more than once")
    add_model_options(parser)
    parser.add_argument("-k", "--top-k", type=top_k, default=5, help="classes to report per image (default 5)")
    parser.add_argument("-b", "--batch-size", type=positive_int, default=32,
                        help="images per forward pass (default 32)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="decoding threads, which work while the model runs (default: the CPU count, at most 8; "
                        "the model uses one thread per physical core); with --engine ray, decoding tasks at once "
                        "(default: as many as Ray schedules)")
    add_decode_option(parser, "reduced", "the same classes, faster")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="SIZE",
                        help="centre crop, after resizing in the arch's proportion (default: the size the model was "
                        "trained at, which a model.pth of 'train' records, else the arch's: 224, 380 for the "
                        "EfficientNet-B4s; an --onnx export takes its own size)")
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
    results = parser.add_argument_group(
        "results dataset and Ray", "write the results as a Parquet dataset (pip install -r requirements-ray.txt), "
        "and run on Ray Data")
    results.add_argument("--output", metavar="DIR",
                         help="write one row per input to a Parquet dataset in DIR (a folder, or a URI such as "
                         "s3://bucket/run) while running, instead of printing; a rerun with the same DIR skips "
                         "the inputs already there")
    results.add_argument("--part-rows", type=positive_int, default=DEFAULT_PART_ROWS, metavar="N",
                         help=f"with --output: rows per Parquet part file, the most a crash can lose (default "
                         f"{DEFAULT_PART_ROWS})")
    results.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="local: this process (or a torchrun job); ray: a Ray Data pipeline (needs --output): "
                         "CPU tasks decode, an actor pool classifies (default local)")
    results.add_argument("--ray-address", metavar="ADDR",
                         help="with --engine ray: the cluster to join (auto, HOST:PORT or ray://HOST:10001; default: "
                         "RAY_ADDRESS, else a Ray started here on 127.0.0.1)")
    results.add_argument("--actors", type=positive_int, default=None, metavar="N",
                         help="with --engine ray: model actors (default: one per GPU of the cluster for a CUDA "
                         "device, else one)")
    results.add_argument("--actor-cpus", type=positive_float, default=None, metavar="N",
                         help="with --engine ray: CPUs each actor reserves, and its compute threads on a CPU "
                         "(default: a local Ray's CPUs less one, at least one; 1 on a cluster)")


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
    image_size: ImageSize = CROP_SIZE,
    decode: Decode = "exact",
) -> list[Outcome]:
    """Classify ``uris`` in input order (:func:`resnet.predict.engine.classify`), with a progress bar on stderr
    when ``progress``. Decoding runs in threads while the model computes. Images are cropped to ``image_size``
    (the size the model was trained at) after resizing to 256/224 of it, or prepared as a
    :class:`resnet.data.preprocessing.DataConfig` says (the model's: :func:`resnet.models.family.model_data_config`);
    ``decode`` as :func:`resnet.data.batch.iter_batches` takes it."""
    from tqdm import tqdm

    from resnet.predict import engine

    with tqdm(total=len(uris), disable=not progress, unit="img", file=sys.stderr) as bar:
        return engine.classify(uris, model, classes, top_k=top_k, batch_size=batch_size, device=device,
                               workers=workers, timeout=timeout, image_size=image_size, progress=bar.update,
                               decode=decode)


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


def _in_order(mine: Iterable[Outcome], processes, total: int, chunk: int = GATHER_CHUNK) -> Iterator[Outcome]:
    """Every rank's outcomes, in input order, on rank 0 (nothing on the others), exchanged ``chunk`` per rank at
    a time: rank r holds inputs r, r + world, ... and every rank takes part in each exchange."""
    world = processes.world
    mine = iter(mine)
    rounds = math.ceil(math.ceil(total / world) / chunk)
    for _ in range(rounds):
        gathered = processes.gather_objects(list(itertools.islice(mine, chunk)))
        if processes.rank != 0:
            continue
        for t in range(max(len(part) for part in gathered)):
            for part in gathered:
                if t < len(part):
                    yield part[t]


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


def _check_combinations(args: argparse.Namespace) -> None:
    """Refuse options that do not go together, before any work (exit status 2)."""
    if not args.inputs and not args.input_list:
        raise CommandError("no inputs: give image files, folders or URLs, or --input-list FILE")
    ray_only = [flag for flag, value in (("--ray-address", args.ray_address), ("--actors", args.actors),
                                         ("--actor-cpus", args.actor_cpus)) if value is not None]
    if args.engine != "ray" and ray_only:
        raise CommandError(f"{' and '.join(ray_only)} apply to --engine ray")
    if args.engine == "ray":
        if not args.output:
            raise CommandError("--engine ray writes its results to a Parquet dataset: add --output DIR (a folder, "
                               "or a URI such as s3://bucket/run)")
        if args.distributed:
            raise CommandError("--engine ray and --distributed are two ways to use many processes; pick one "
                               "(Ray: --ray-address; torchrun: --distributed)")
    if args.output:
        printing = [flag for flag, value in (("--json", args.json), ("--plot", args.plot)) if value]
        if printing:
            raise CommandError(f"{' and '.join(printing)} show results that --output writes to its dataset "
                               "instead; leave out one or the other")


def _listed_inputs(args: argparse.Namespace, rank: int) -> list[str]:
    """The inputs, expanded (folders, list files); warnings on rank 0."""
    from resnet.data.inputs import expand_inputs
    from resnet.predict.sources import is_filesystem_uri, list_inputs, read_list_file

    items = list(args.inputs)
    for name in args.input_list:
        items.extend(read_list_file(name))
    if args.engine == "ray":
        expanded = list_inputs(items)
    else:
        remote = [item for item in items if is_filesystem_uri(item)]
        if remote:
            raise CommandError(f"{remote[0]!r}: URIs of pyarrow's file systems (s3://, gs://...) are read by "
                               "--engine ray; copy the files here, or add --engine ray --output DIR")
        expanded = expand_inputs(items)
    for warning in expanded.warnings if rank == 0 else ():
        report_warning(warning)
    if not expanded.uris:
        raise CommandError("no images found in " + " ".join(items))
    return expanded.uris


def run(args: argparse.Namespace) -> int:
    """Entry point of the ``classify`` subcommand; returns the exit status."""
    check_onnx_options(args, args.precision)
    _check_combinations(args)  # an argument error answers before torch is imported
    if args.engine == "ray":
        return run_ray(args)
    from resnet.deploy.runtimes import RuntimeModelError
    from resnet.fast import optimize_for_inference
    from resnet.training import distributed

    device_name = "cpu" if args.onnx else args.device  # the runtimes run on the CPU
    if not args.distributed:
        refused = _refuse_torchrun_without_distributed()
        if refused is not None:
            return refused
    if args.output:
        from resnet.predict.results import require_pyarrow

        try:
            require_pyarrow()
        except ConvNetsError as error:
            raise CommandError(str(error)) from None
    processes = distributed.start(device_name, distributed=args.distributed, command="classify", warn=report_warning)
    rank, device = processes.rank, processes.device

    try:
        uris = _listed_inputs(args, rank)
        if args.onnx:
            model = load_onnx(args, args.precision)  # class names from the export's metadata
            classes = model.class_names
            onnx_image_size(args, model.image_size)
            size: ImageSize = model.data_config  # the export's own resize and interpolation
        else:
            model = load_model(args)
            # ImageNet's names, or those a fine-tuned model.pth stores ('python -m resnet train').
            classes = model.classes or [f"class {i}" for i in range(get_head(model).out_features)]
            # The arch's preprocessing (an EfficientNet's size and bicubic resize), at the size it was trained at.
            size = model_data_config(model, args.image_size)
            # BN folded into the convolutions, channels-last, fused conv+ReLU/add on CPU: same logits, faster.
            model = optimize_for_inference(model.to(device), device=device, dtype=args.precision)
        options = dict(top_k=min(args.top_k, len(classes)), batch_size=args.batch_size, device=device,
                       workers=args.workers, timeout=args.timeout, image_size=size, decode=args.decode)
        try:
            if args.output:
                return _write_dataset(args, uris, model, classes, options, processes)
            return _print_results(args, uris, model, classes, options, processes)
        except RuntimeModelError as error:  # an exported model that fails on real input (its output's shape...)
            raise CommandError(error.describe("cli")) from None
    finally:
        distributed.stop(processes)


def _progress_bar(args: argparse.Namespace, rank: int, total: int) -> tqdm:
    from tqdm import tqdm

    return tqdm(total=total, disable=args.quiet or rank != 0 or total <= PROGRESS_THRESHOLD, unit="img",
                file=sys.stderr)


def _print_results(args, uris: list[str], model, classes: list[str], options: dict, processes) -> int:
    """Classify this rank's share and print every result in input order as it comes (rank 0 prints)."""
    from resnet.predict.engine import classify_stream

    rank, world = processes.rank, processes.world
    kept: list[Outcome] = []  # the first images --plot draws
    failed = total = 0
    with _progress_bar(args, rank, len(uris[rank::world])) as bar:
        outcomes = classify_stream(uris[rank::world], model, classes, progress=bar.update, **options)
        if world > 1:
            outcomes = _in_order(outcomes, processes, len(uris))
        for outcome in outcomes:
            write_outcomes([outcome], as_json=args.json, out=sys.stdout, err=sys.stderr)
            total += 1
            failed += outcome.error is not None
            if args.plot and outcome.error is None and len(kept) < PLOT_LIMIT + 1:
                kept.append(outcome)
    if rank != 0:
        return 0
    if args.plot:
        plot(kept, args.plot)
    if failed and not args.json:
        print(f"{failed} of {total} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def _write_dataset(args, uris: list[str], model, classes: list[str], options: dict, processes) -> int:
    """Classify this rank's share of the inputs not yet in ``--output`` and write them there, part by part."""
    import torch

    from resnet.predict.engine import classify_stream
    from resnet.predict.results import ResultWriter, read_done

    rank, world = processes.rank, processes.world
    uris = list(dict.fromkeys(uris))  # one row per input
    mine = uris[rank::world]  # the share is fixed first: what another rank writes meanwhile cannot move it
    try:
        done = read_done(args.output)
        todo = [uri for uri in mine if uri not in done]
        with ResultWriter(args.output, tag=f"r{rank:05d}", part_rows=args.part_rows) as writer, \
                _progress_bar(args, rank, len(todo)) as bar:
            for outcome in classify_stream(todo, model, classes, progress=bar.update, **options):
                writer.add(outcome)
    except ConvNetsError as error:
        if isinstance(error, CommandError):
            raise
        raise CommandError(str(error), status=1 if getattr(error, "partial", False) else 2) from None
    before = sum(1 for uri in mine if done.get(uri))
    counts = processes.all_reduce(torch.tensor([len(mine), len(mine) - len(todo), writer.rows_written,
                                                writer.failed + before], dtype=torch.int64)).tolist()
    listed, present, written, failed = counts
    if rank == 0:
        print(f"{written} results written to {args.output} ({present} of {listed} inputs were there already); "
              f"{failed} of {listed} inputs failed" if failed else
              f"{written} results written to {args.output} ({present} of {listed} inputs were there already)",
              file=sys.stderr)
    return 1 if failed else 0


def run_ray(args: argparse.Namespace) -> int:
    """``--engine ray``: the inputs not yet in ``--output`` through a Ray Data pipeline."""
    from resnet.predict.results import MissingDependencyError

    try:
        from resnet.predict import ray_data
    except MissingDependencyError as error:
        raise CommandError(str(error)) from None
    uris = _listed_inputs(args, 0)
    # The model is loaded here once first: a missing or damaged weights file, an unusable ONNX file or device
    # is a clear error (exit 2) before any actor starts, and gives the classes and the image size.
    if args.onnx:
        exported = load_onnx(args, args.precision)
        onnx_image_size(args, exported.image_size)
        classes, size = exported.class_names, exported.data_config  # the export's own resize and interpolation
        from resnet.cli.options import onnx_precision

        model_options = dict(onnx=args.onnx, runtime=args.runtime, precision=onnx_precision(args.runtime,
                                                                                             args.precision))
        del exported
    else:
        checked = load_model(args)
        classes = checked.classes or [f"class {i}" for i in range(get_head(checked).out_features)]
        size = model_data_config(checked, args.image_size)  # the arch's preprocessing at the size it was trained at
        del checked
        model_options = dict(arch=args.arch, weights=args.weights and _absolute(args.weights), mirror=args.mirror,
                             precision=args.precision, device="cpu" if args.device == "auto" else args.device)
    try:
        local = ray_data.start_ray(args.ray_address, quiet=args.quiet)
        resources = ray_data.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        use_gpus = not args.onnx and gpus > 0 and args.device in ("auto", "cuda") or args.device.startswith("cuda")
        if use_gpus:
            model_options["device"] = "cuda"
        actors = args.actors or (max(1, gpus) if use_gpus else 1)
        actor_cpus = args.actor_cpus or (max(1, cpus - 1) if local and not use_gpus else 1)
        threads = None if use_gpus else max(1, int(actor_cpus) if not local else max(1, cpus // actors))
        job = ray_data.classify_with_ray(
            uris, args.output,
            classifier=dict(model_options, image_size=size, top_k=min(args.top_k, len(classes)), threads=threads,
                            timeout=args.timeout),
            batch_size=args.batch_size, actors=actors, actor_cpus=actor_cpus, actor_gpus=1 if use_gpus else 0,
            decode_tasks=args.workers, image_size=size, decode=args.decode, timeout=args.timeout,
            part_rows=args.part_rows,
            progress=not args.quiet,
        )
    except ConvNetsError as error:
        raise CommandError(str(error)) from None
    if job.missing or job.duplicated:
        raise CommandError(f"the results in {args.output} are not one row per input: {len(job.missing)} missing "
                           f"(first: {job.missing[:1]}), {len(job.duplicated)} more than once "
                           f"(first: {job.duplicated[:1]})", status=1)
    summary = (f"{job.written} results written to {args.output} ({job.present} of {job.listed} inputs were there "
               "already)")
    if job.failed:
        summary += f"; {job.failed} of {job.listed} inputs failed"
    print(summary, file=sys.stderr)
    return 1 if job.failed else 0


def _absolute(path: str) -> str:
    return os.path.abspath(path)


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
