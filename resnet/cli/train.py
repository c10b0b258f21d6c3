"""``python -m resnet train DATA --output RUN``: fine-tune a model of the family on a folder of images.

DATA holds one sub-folder of images per class (or DATA/train and DATA/val of that layout; without val/,
--val-split holds out a stratified, seeded share of each class). Training starts from NVIDIA's NGC
weights (or --weights FILE, or --from-scratch) with a head for DATA's classes, and follows NVIDIA's
recipe scaled to the batch: SGD (momentum 0.875, lr 0.256 per 256 images, no weight decay on BatchNorm
and biases), label smoothing 0.1, linear warm-up then cosine, mixed precision on the device's fast type,
channels-last. RUN receives checkpoint.pth.tar (every epoch and on Ctrl+C), model.pth (the best epoch by
validation top-1, with the class names), log.jsonl and curves.png. Under torchrun each process trains on
its share of every batch (DistributedDataParallel); the learning rate follows the global batch.
"""

from __future__ import annotations

import argparse
from typing import Any

from resnet.cli.options import (
    CommandError,
    add_device_option,
    add_model_options,
    add_precision_option,
    add_workers_option,
    image_size,
    load_model,
    non_negative_int,
    positive_float,
    positive_int,
    report_warning,
)
# Only what --help and the argument checks need is imported here; torch and the trainer come with run().
from resnet.training.hyperparameters import LR_PER_256

#: Names of the old ``resnet.train`` module that live in :mod:`resnet.training.trainer` (imported at first use).
_TRAINER_NAMES = ("CHANCE_EPOCHS", "DIVERGENCE_FACTOR", "INTERRUPTED", "UNREADABLE_ALERT", "Interrupted",
                  "StopRequests", "Trainer", "run_options", "training_warnings")


def __getattr__(name: str) -> Any:
    """PEP 562: :data:`_TRAINER_NAMES` (and ``distributed``, ``recipe``), imported with torch when first asked for."""
    if name in _TRAINER_NAMES:
        from resnet.training import trainer

        return getattr(trainer, name)
    if name in ("distributed", "recipe"):
        import importlib

        return importlib.import_module(f"resnet.training.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        above_low = value > low if low_open else value >= low
        below_high = value < high if high_open else value <= high
        if not (above_low and below_high):  # written so that NaN, which compares False, is refused
            lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
            raise argparse.ArgumentTypeError(f"must be in {lo}, {hi}, not {text}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m resnet train``."""
    parser.add_argument("data", metavar="DATA", help="folder with one sub-folder of images per class, "
                        "or with train/ and val/ folders of that layout")
    parser.add_argument("-o", "--output", required=True, metavar="RUN", help="folder for the run's files")
    add_model_options(parser, weights_help="start from this checkpoint (any layout the hub entrypoints accept) "
                      "instead of NVIDIA's NGC weights")
    parser.add_argument("--from-scratch", action="store_true", help="start from random weights")
    parser.add_argument("--epochs", type=positive_int, default=10, help="epochs to train (default 10)")
    parser.add_argument("-b", "--batch-size", type=positive_int, default=32,
                        help="images per step and process (default 32); the global batch is this times the "
                        "number of processes")
    parser.add_argument("--lr", type=positive_float, default=LR_PER_256,
                        help=f"learning rate per 256 images of the global batch (default {LR_PER_256})")
    parser.add_argument("--warmup-epochs", type=_number(0, float("inf")), default=1.0,
                        help="epochs of linear learning-rate warm-up before the cosine decay (default 1)")
    parser.add_argument("--mixup", type=positive_float, metavar="ALPHA",
                        help="mixup with Beta(ALPHA, ALPHA) blends (default off; NVIDIA uses 0.2 for 250 epochs)")
    parser.add_argument("--image-size", type=image_size, default=None,
                        help="training crop; validation resizes in the arch's proportion (256/224 for the ResNets) "
                        "and crops it (default: the arch's size, 224, 380 for the EfficientNet-B4s; e.g. 128 for a "
                        "quick CPU run)")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="train only the classifier head; BatchNorm statistics stay frozen too (fast on a CPU)")
    parser.add_argument("--val-split", type=_number(0, 1), default=0.1, metavar="F",
                        help="share of each class held out for validation when DATA has no val/ (default 0.1)")
    add_workers_option(parser, "processes for training, threads for validation")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the split, the data order, "
                        "the augmentation and the new head (default 0)")
    add_device_option(parser)
    add_precision_option(parser, "auto", "compute precision (default auto; fp16 uses a gradient scaler)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN where it stopped")
    parser.add_argument("--force", action="store_true", help="start over in a RUN that holds a run")


def run(args: argparse.Namespace) -> int:
    """Entry point of the ``train`` subcommand; returns the exit status."""
    if args.resume and args.force:
        raise CommandError("--resume continues the run in RUN and --force starts it over: give one of them")
    if args.from_scratch and args.weights:
        raise CommandError("--from-scratch and --weights exclude each other: give one of them")
    if args.batch_size < 2 and not args.freeze_backbone:
        raise CommandError("--batch-size 1 cannot train BatchNorm layers (they need 2 or more images per step "
                           "and process): give --batch-size 2 or more, or --freeze-backbone")
    from resnet.training import distributed
    from resnet.training.trainer import Trainer

    with distributed.job(args.device, distributed=distributed.launched_by_torchrun(), command="train",
                         warn=report_warning) as procs:
        return Trainer(args, procs, build_model=load_model, warn=report_warning).run()


