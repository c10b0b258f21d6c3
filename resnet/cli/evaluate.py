"""``python -m resnet evaluate DATA``: the accuracy of a model on a folder of labelled images.

DATA has one sub-folder of images per class (ImageNet's validation set in ImageFolder layout, or your
own). Folders are matched to the model's classes: by WordNet id (``n01440764``) or class name for
NVIDIA's 1000-class weights, by the stored class names for a ``model.pth`` written by ``train``; a
folder that matches no class is an error naming it. Prints top-1 and top-5 accuracy, the number of
images and of unreadable files, the classes with the lowest accuracy and the speed; ``--json`` prints
one JSON object with all of it (per-class accuracy included), ``--confusion PNG`` draws the confusion
matrix. Runs on the inference fast path, or with ``--onnx FILE`` an exported model (fp32 or INT8) on ONNX
Runtime or OpenVINO (``--runtime``), with the same report. Exit status: 0 every image was read, 1 some
images or folders could not be (they are named and left out of the accuracy) or the ``--confusion`` chart
could not be written (the report is printed first), 2 nothing could run.

With ``--distributed`` under torchrun each process measures every WORLD_SIZE-th image and rank 0
reports the sums, the same numbers as one process.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

# Only what --help and the argument checks need is imported here; torch and the model come with run().
from resnet.cli.options import (
    CommandError,
    add_decode_option,
    add_device_option,
    add_model_options,
    add_onnx_options,
    add_precision_option,
    add_workers_option,
    check_onnx_options,
    image_size,
    load_model,
    load_onnx,
    onnx_image_size,
    output_file,
    positive_int,
    report_warning,
)
from resnet.data.defaults import default_workers
from resnet.models.family import get_head, model_data_config

if TYPE_CHECKING:
    import torch

    from resnet.training.evaluation import Predictor, Report

#: Names of the old ``resnet.evaluate`` module that live in :mod:`resnet.training.evaluation` (imported at first use).
_EVALUATION_NAMES = ("Predictor", "Report", "evaluate_folder", "match_folders")


def __getattr__(name: str) -> Any:
    """PEP 562: :data:`_EVALUATION_NAMES`, imported with torch when first asked for."""
    if name in _EVALUATION_NAMES:
        from resnet.training import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m resnet evaluate``."""
    parser.add_argument("data", metavar="DATA", help="folder with one sub-folder of images per class (folders "
                        "named by class name, or by WordNet id for ImageNet)")
    add_model_options(parser)
    parser.add_argument("-b", "--batch-size", type=positive_int, default=32,
                        help="images per forward pass and process (default 32)")
    add_workers_option(parser, "threads")
    add_decode_option(parser, "exact", "accuracy comparable with published figures")
    add_device_option(parser)
    add_precision_option(parser, "fp32", "compute precision (default fp32, the arithmetic of the published "
                                "accuracy)")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="SIZE",
                        help="centre crop, after resizing in the arch's proportion (default: the size the model was "
                        "trained at, which a model.pth of 'train' records, else the arch's: 224, 380 for the "
                        "EfficientNet-B4s; an --onnx export takes its own size)")
    parser.add_argument("--lowest", type=positive_int, default=5, metavar="N",
                        help="classes with the lowest accuracy to list (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    parser.add_argument("--confusion", type=output_file, metavar="PNG",
                        help="draw the confusion matrix into this PNG file")
    parser.add_argument("--distributed", action="store_true",
                        help="shard the images over the ranks of a torchrun job (gloo on CPU, NCCL on CUDA)")
    add_onnx_options(parser)


def load_predictor(args: argparse.Namespace, device: torch.device,
                   check: Optional[Callable[[Optional[list[str]], int], object]] = None) -> Predictor:
    """The model of ``--arch``/``--weights``/``--mirror`` on the inference fast path, in ``--precision``;
    or the exported model of ``--onnx`` on ``--runtime`` (``--precision`` as :func:`resnet.cli.options.onnx_precision`
    says).

    ``check(class names, outputs)`` runs once the weights are read, before the fast path is built. The image
    size is ``--image-size``, else the size the model was trained at (an ONNX export's own size).
    """
    import torch

    from resnet.fast import optimize_for_inference
    from resnet.training import recipe
    from resnet.training.evaluation import Predictor

    if args.onnx:
        model = load_onnx(args, args.precision)
        onnx_image_size(args, model.image_size)
        if check is not None:
            check(model.classes, model.num_classes)
        kind = "INT8" if model.quantized else "fp32"
        description = f"{model.path.name} ({kind} ONNX) on {model.runtime}, {model.precision}"
        return Predictor(model, model.classes, model.num_classes, description, model.data_config)
    dtype = recipe.resolve_precision(args.precision, device)
    model = load_model(args)
    outputs = get_head(model).out_features
    if check is not None:
        check(model.classes, outputs)
    fast = optimize_for_inference(model.to(device), device=device, dtype=dtype or torch.float32)
    source = args.weights or "NVIDIA's NGC weights"
    # The arch's preprocessing (an EfficientNet's size and bicubic resize), at the size it was trained at.
    config = model_data_config(model, getattr(args, "image_size", None))
    return Predictor(fast, model.classes, outputs,
                     f"{args.arch} ({source}), {recipe.precision_name(dtype)}, {config.describe()}", config)


def run(args: argparse.Namespace) -> int:
    """Entry point of the ``evaluate`` subcommand; returns the exit status."""
    from resnet.data.folders import scan_folder
    from resnet.deploy.runtimes import RuntimeModelError
    from resnet.training import distributed
    from resnet.training.evaluation import evaluate_folder, match_folders

    check_onnx_options(args, args.precision)
    device = "cpu" if args.onnx else args.device  # the runtimes run on the CPU
    with distributed.job(device, distributed=args.distributed, command="evaluate", warn=report_warning) as procs:
        scan = scan_folder(args.data)  # a missing or empty DATA fails before the weights are read
        for message in scan.warnings() if procs.is_main else ():
            report_warning(message)
        predictor = load_predictor(args, procs.device, check=lambda names, outputs: match_folders(scan, names, outputs))
        try:
            report = evaluate_folder(
                predictor, scan, batch_size=args.batch_size,
                workers=default_workers() if args.workers is None else args.workers, image_size=predictor.image_size,
                device=procs.device, processes=procs, progress=not args.quiet and procs.is_main, decode=args.decode,
            )
        except RuntimeModelError as error:  # an exported model that fails on real input (its output's shape...)
            raise CommandError(error.describe("cli")) from None
    if not procs.is_main:
        return 0
    # The report comes first: a chart that cannot be written (a full disk) must not cost the evaluation.
    if args.json:
        print(json.dumps(report.as_json(args.data, predictor.description, args.lowest)), flush=True)
    else:
        print_report(report, args.data, predictor.description, args.lowest)
        sys.stdout.flush()
    for path, message in report.metrics.failures:
        print(f"warning: unreadable image skipped: {message}", file=sys.stderr)
    if args.confusion:
        from resnet.io.atomic import OutputPathError
        from resnet.training.run_files import write_bytes
        from resnet.training.plots import confusion_png

        try:
            write_bytes(args.confusion, confusion_png(report.metrics.confusion, report.classes))
        except (OSError, OutputPathError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise CommandError(f"the report above is complete, but the confusion matrix could not be written to "
                               f"--confusion {args.confusion!r}: {reason}", status=1) from error
    return 1 if report.metrics.failures or scan.scan.unreadable else 0


def print_report(report: Report, data: str, description: str, lowest: int) -> None:
    """The human-readable report on stdout."""
    m = report.metrics
    folder_of = {index: folder for folder, index in zip(report.folders, report.targets)}
    print(f"{data}: {m.count} images in {len(report.folders)} class folders"
          + (f", {len(m.failures)} unreadable files skipped" if m.failures else "") + f"; model {description}")
    print(f"top-1 {m.top1:.2f}%  top-5 {m.top5:.2f}%")
    print(f"lowest top-1 per class ({min(lowest, len(m.per_class()))} of {len(m.per_class())}):")
    for index, percent, correct, total in m.lowest(lowest):
        name = report.classes[index]
        folder = folder_of.get(index, name)
        label = folder if folder == name else f"{folder} ({name})"
        print(f"  {percent:6.2f}%  {label}: {correct} of {total}")
    print(f"{report.images_per_second:.1f} images/s ({report.seconds:.1f} s)")
