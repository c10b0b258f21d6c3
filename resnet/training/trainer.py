"""One training run (:class:`Trainer`): NVIDIA's recipe on a folder of labelled images, into a run folder.

Training starts from NVIDIA's NGC weights (or a checkpoint, or random weights) with a head for the folder's
classes and follows the recipe scaled to the batch (:mod:`resnet.training.recipe`). The run folder receives
checkpoint.pth.tar (every epoch and on Ctrl+C), model.pth (the best epoch by validation top-1, with the class
names), log.jsonl and curves.png (:mod:`resnet.training.run_files`). Under torchrun each process trains on its
share of every batch (DistributedDataParallel). ``python -m resnet train`` (:mod:`resnet.cli.train`) is the
command around it; its options are the settings the trainer reads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from resnet.data.folders import TrainingData, load_training_data
from resnet.data.loading import EpochBatches, ImageDataset, default_workers, make_loader, ordered_batches, sample_seed
from resnet.data.preprocessing import build_train_transform, model_input_transform
from resnet.errors import ConvNetsError, cli_text
from resnet.models.family import arch_data_config, get_head, set_head
from resnet.training import distributed, recipe
from resnet.training import run_files as files


class TrainingError(ConvNetsError):
    """A run that cannot start or go on: unusable data or run folder, a checkpoint that cannot be resumed, a
    failed write; the message names the file or option and what to do."""


#: Exit status after Ctrl+C (128 + SIGINT), once the checkpoint is written.
INTERRUPTED = 130
#: Above this share of image files that cannot be read, the epoch's summary says so loudly: that many usually
#: means a problem with the data (a format that is not supported, a broken copy), not a few bad files.
UNREADABLE_ALERT = 0.1
#: An epoch's train loss this many times its reference (the lowest before it, at most the loss of a uniform
#: guess, ln(classes)), or not finite, is reported as divergence.
DIVERGENCE_FACTOR = 1000.0
#: Epochs of validation top-1 at or below chance level (100% / classes) after which a warning says so.
CHANCE_EPOCHS = 2


def training_warnings(history: list[dict], num_classes: int) -> list[str]:
    """Warnings that the last record of ``history`` (``log.jsonl``'s) brings: the training diverges (the train
    loss not finite, or :data:`DIVERGENCE_FACTOR` times its reference), or validation top-1 has stayed at chance
    level for :data:`CHANCE_EPOCHS` epochs. Each is given once: at the first epoch where it holds."""

    def divergence(records: list[dict]) -> Optional[str]:
        loss, epoch = records[-1]["train_loss"], records[-1]["epoch"]
        if not math.isfinite(loss):
            return (f"the training diverged: the train loss of epoch {epoch} is {loss}, and later epochs learn nothing "
                    f"(model.pth keeps the best epoch before); start over (--force) with a lower --lr")
        earlier = [r["train_loss"] for r in records[:-1] if math.isfinite(r["train_loss"]) and r["train_loss"] > 0]
        reference = min([math.log(max(2, num_classes)), *earlier])
        if loss > DIVERGENCE_FACTOR * reference:
            return (f"the training diverges: the train loss of epoch {epoch}, {loss:.4g}, is {loss / reference:,.0f} "
                    f"times {'its lowest before' if reference in earlier else 'that of a uniform guess'} "
                    f"({reference:.4g}); lower --lr")
        return None

    def chance(records: list[dict]) -> Optional[str]:
        level = 100.0 / num_classes
        validated = [r for r in records if r.get("top1") is not None]
        if len(validated) >= CHANCE_EPOCHS and all(r["top1"] <= level + 1e-6 for r in validated):
            return (f"validation top-1 has stayed at chance level ({level:.2f}% for {num_classes} classes) for "
                    f"{len(validated)} epochs: the model is not learning. Check that each class folder of DATA holds "
                    "images of its class, or try another --lr")
        return None

    found = []
    for check in (divergence, chance):
        message = check(history)
        if message and not any(check(history[:end]) for end in range(1, len(history))):
            found.append(message)
    return found


def run_options(args: argparse.Namespace, world: int) -> dict:
    """The arguments that define a run (stored in its checkpoint and compared on --resume)."""
    return {
        "data": os.path.abspath(args.data), "arch": args.arch,
        "weights": os.path.abspath(args.weights) if args.weights else None, "from_scratch": args.from_scratch,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "warmup_epochs": args.warmup_epochs,
        "mixup": args.mixup, "image_size": args.image_size, "freeze_backbone": args.freeze_backbone,
        "val_split": args.val_split, "seed": args.seed, "precision": args.precision, "world_size": world,
    }


class StopRequests:
    """Ctrl+C (SIGINT) or SIGTERM asks the training to stop after the current step, with a checkpoint.

    A second Ctrl+C stops at once, without one.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame) -> None:
        # Nothing is printed here: the handler may run while the main thread is writing to the same stream.
        self.requested = True
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Interrupted(Exception):
    """Training stopped on request; the checkpoint is written."""


class Trainer:
    """One training run: the model, its optimizer and schedule, the data, and RUN's files."""

    def __init__(self, args: argparse.Namespace, procs: distributed.Processes, *,
                 build_model: Callable[..., nn.Module], warn: Callable[[str], None]) -> None:
        """``args``: the run's settings (the options of ``python -m resnet train``); ``build_model(args,
        pretrained_default=..., **options)`` builds the starting model (``options`` go to
        :func:`resnet.models.builder.create_model`); ``warn`` reports a warning about the data to the user."""
        self.args, self.procs, self.device = args, procs, procs.device
        # The arch's preprocessing (an EfficientNet's bicubic resize), at --image-size (default: the arch's size).
        self.data_config = arch_data_config(args.arch)
        if getattr(args, "image_size", None) is None:
            args.image_size = self.data_config.image_size
        self.data_config = self.data_config.at(args.image_size)
        self.build_model, self.warn = build_model, warn
        self.out = Path(args.output)
        self.options = run_options(args, procs.world)
        self.main = procs.is_main
        self.say = print if self.main else (lambda *a, **k: None)

    # ------------------------------------------------------------------ set-up

    def run(self) -> int:
        """Train; returns the exit status (0 done, :data:`INTERRUPTED` stopped with a checkpoint).

        Raises:
            TrainingError: bad data, a RUN that cannot be used (a file, not writable, another trainer's), a
                checkpoint that cannot be resumed, a failed write, or a second Ctrl+C (status 1).
        """
        self.dtype = recipe.resolve_precision(self.args.precision, self.device)
        with self._claimed_folder():
            try:
                return self._run()
            except KeyboardInterrupt:
                raise TrainingError(self._stopped_at_once(), partial=True) from None

    @contextlib.contextmanager
    def _claimed_folder(self):
        """Rank 0 holds RUN (:class:`resnet.training.run_files.RunFolder`) for the time of the run; every rank stops
        with rank 0's message when it cannot."""
        folder = files.RunFolder(self.out) if self.main else None
        error = None
        if folder is not None:
            try:
                folder.open()
            except ConvNetsError as refused:
                error = str(refused)
        error = self.procs.broadcast(error)
        if error:
            raise TrainingError(error)
        failed = True
        try:
            yield
            failed = False
        finally:
            if folder is not None:
                folder.close(failed=failed)

    def _stopped_at_once(self) -> str:
        again = getattr(self, "stop", None) is not None and self.stop.requested
        what = ("interrupted again (a second Ctrl+C): stopped at once, without saving the current step" if again
                else "interrupted (Ctrl+C)")
        checkpoint = self.out / files.CHECKPOINT
        if checkpoint.exists():
            return f"{what}; {checkpoint} holds the run as last saved: add --resume to the command to continue it"
        force = " with --force" if self.out.is_dir() and files.existing_run_files(self.out) else ""
        return f"{what}; no checkpoint was written, so there is nothing to resume: run the command again{force}"

    def _run(self) -> int:
        args = self.args
        stored = self._stored_run()
        # A --batch-size larger than the data is capped below (every image is trained on), so the data need
        # only hold one image per process (two where BatchNorm trains).
        self.data: TrainingData = load_training_data(args.data, val_split=args.val_split, seed=args.seed,
                                                     global_batch=self.procs.world * self._least_batch())
        self.batch_size = min(args.batch_size, -(-len(self.data.train) // self.procs.world))
        for message in self.data.warnings if self.main else ():
            self.warn(message)
        if stored is not None:
            files.check_resumable(stored, self.options, self.data.classes, self.out)
            error = self._recover_model_file(stored) if self.main else None
            error = self.procs.broadcast(error)
            if error:
                raise TrainingError(error)
            if stored["epoch"] >= args.epochs and stored["step"] == 0:
                self.say(f"the run in {self.out} has finished its {stored['epoch']} epochs; "
                         f"--epochs N with N > {stored['epoch']} extends it")
                return 0
        self.model = self._build_model(stored)
        self._build_training(stored)
        if self.main and args.force and stored is None:
            for name in files.existing_run_files(self.out):
                (self.out / name).unlink()
        self._announce()
        with StopRequests() as stop:
            self.stop = stop
            try:
                for epoch in range(self.epoch, args.epochs):
                    self._epoch(epoch)
            except Interrupted:
                return INTERRUPTED
        best = self.best
        if (self.out / files.MODEL).exists():
            self.say(f"done: {self.out / files.MODEL} holds epoch {best['epoch']}"
                     + (f" (validation top-1 {best['top1']:.2f}%)" if best.get("top1") is not None else ""))
        else:
            self.say(f"done: the run's best epoch is {best['epoch']}, but its weights were not in {self.out} "
                     f"({files.MODEL} is missing: the checkpoint was resumed without it, and no epoch trained here "
                     f"did better); {self.out / files.CHECKPOINT} holds the last epoch, {self.epoch}")
        return 0

    def _recover_model_file(self, stored: dict) -> Optional[str]:
        """A checkpoint resumed without its model.pth (copied alone): write model.pth from it when it holds the
        best epoch's weights, else say that model.pth comes only with an epoch that does better. Returns what
        went wrong (a failed write), for every rank to stop with."""
        target, best = self.out / files.MODEL, stored["best"]
        if target.exists() or not best:
            return None
        if stored["step"] == 0 and best["epoch"] == stored["epoch"]:
            try:
                files.save(files.model_file(stored["state_dict"], arch=stored["arch"], classes=stored["classes"],
                                            image_size=stored["options"]["image_size"], metrics=best), target)
            except OSError as error:
                return f"could not write {str(target)!r}: {error.strerror or error}"
            print(f"note: {target} was missing; written from the checkpoint, which holds the best epoch so far "
                  f"({best['epoch']})", file=sys.stderr)
        else:
            print(f"note: {target} is missing, and the checkpoint holds epoch {stored['epoch']}, not the best one so "
                  f"far ({best['epoch']}): {files.MODEL} is written again when an epoch does better", file=sys.stderr)
        return None

    def _stored_run(self) -> Optional[dict]:
        path = self.out / files.CHECKPOINT
        if not self.args.resume:
            error = None
            if self.main and not self.args.force:
                try:
                    files.refuse_existing(self.out, self.options)
                except ConvNetsError as refused:
                    error = str(refused)
            error = self.procs.broadcast(error)
            if error:
                raise TrainingError(error)
            return None
        if not path.is_file():
            raise TrainingError(f"--resume: there is no checkpoint at {str(path)!r}; leave out --resume to start "
                               "a new run there, or give the --output of an existing run")
        try:
            return files.load_checkpoint(path, self.options)
        except files.CheckpointError as error:
            raise TrainingError(f"--resume: {error}") from None
        except (OSError, ValueError, RuntimeError) as error:
            raise TrainingError(f"--resume: cannot read {str(path)!r}: {error}") from error

    def _resumed_model(self, stored: dict) -> nn.Module:
        """The model of a checkpoint already read and validated (:func:`resnet.training.run_files.load_checkpoint`)."""
        from resnet.models.builder import create_model

        model = create_model(stored["arch"], pretrained=False, num_classes=len(self.data.classes), channels_last=True)
        try:
            model.load_state_dict(stored["state_dict"])
        except RuntimeError as error:
            raise TrainingError(f"--resume: {str(self.out / files.CHECKPOINT)!r} holds weights that do not fit "
                                f"{stored['arch']} with {len(self.data.classes)} classes: "
                                f"{str(error).splitlines()[0]}; "
                                "start the run over with --force") from None
        model.image_size = stored["options"]["image_size"]
        return model

    def _build_model(self, stored: Optional[dict]) -> nn.Module:
        args, classes = self.args, self.data.classes
        torch.manual_seed(args.seed)  # the new head starts the same in every process and every run
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Channels-last weights: training feeds channels-last batches (the faster layout for convolutions).
            if stored is not None:  # the checkpoint read once, by _stored_run
                model = self._resumed_model(stored)
            else:
                model = self.build_model(args, pretrained_default=not args.from_scratch, num_classes=len(classes),
                                         channels_last=True, report_warnings=False)
        for warning in caught:
            if issubclass(warning.category, UserWarning):
                self.say(f"note: {cli_text(warning.message)}", file=sys.stderr)
        if stored is None and model.classes not in (None, classes) and not _imagenet(model.classes):
            # A fine-tuned file of as many, but other, classes: its head rows mean something else.
            self.say(f"note: the head of {args.weights} was trained for other classes ({', '.join(model.classes[:3])}"
                     "...); it starts fresh", file=sys.stderr)
            from resnet.models.resnet import init_module

            init_module(get_head(model))
        model.classes = list(classes)
        if args.freeze_backbone:
            model.requires_grad_(False)
            get_head(model).requires_grad_(True)
        return model.to(self.device)

    def _build_training(self, stored: Optional[dict]) -> None:
        args, procs = self.args, self.procs
        self.head = get_head(self.model) if args.freeze_backbone else self.model
        self.features = self._frozen_features() if args.freeze_backbone else None
        self.trainable: nn.Module = self.head
        if procs.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trainable = DistributedDataParallel(self.head, device_ids=ids)
        global_batch = self.batch_size * procs.world
        self.optimizer = recipe.make_optimizer(self.head, recipe.scaled_lr(global_batch, args.lr))
        self.scaler = recipe.grad_scaler(self.dtype == torch.float16)
        self.loss_fn = recipe.loss_function()
        workers = default_workers() if args.workers is None else args.workers
        train_set = ImageDataset(self.data.train, build_train_transform(self.data_config), seed=args.seed)
        # Every image is trained on: the last batch holds what is left (joined to the one before when it would
        # be a single image per process, which BatchNorm in training mode cannot take).
        self.batches = EpochBatches(len(train_set), self.batch_size, rank=procs.rank, world=procs.world,
                                    seed=args.seed, least=self._least_batch())
        self.loader = make_loader(train_set, self.batches, workers=workers, pin_memory=self.device.type == "cuda")
        self.workers = workers
        self.val_set = ImageDataset(self.data.val, model_input_transform(self.data_config)) if self.data.val else None
        self.steps = self.batches.steps_per_epoch()
        total = self.steps * args.epochs
        warmup = min(total, round(args.warmup_epochs * self.steps))
        self.schedule = recipe.WarmupCosine(recipe.scaled_lr(global_batch, args.lr), warmup, total)
        self.epoch, self.step, self.history, self.best, self.unreadable = 0, 0, [], {}, {}
        self.partial = {"loss_sum": 0.0, "images": 0, "seconds": 0.0}
        if stored is not None:
            self._restore(stored)

    def _restore(self, stored: dict) -> None:
        """The training state of a checked checkpoint (:func:`resnet.training.run_files.check_checkpoint`); an entry
        that does not fit this run is a :class:`TrainingError` naming it."""
        def unfit(entry: str, why: str) -> TrainingError:
            return TrainingError(f"--resume: {str(self.out / files.CHECKPOINT)!r} is not a usable training checkpoint: "
                                f"its {entry!r} entry {why}; resume from an intact copy, or start a new run with "
                                "--force or another --output")

        if stored["step"] >= self.steps:
            raise unfit("step", f"is {stored['step']}, but an epoch of this run has {self.steps} steps")
        for entry, restore in (("optimizer", self.optimizer.load_state_dict), ("scaler", self.scaler.load_state_dict)):
            try:
                restore(stored[entry])
            except (ValueError, RuntimeError, KeyError, TypeError, IndexError, AttributeError) as error:
                raise unfit(entry, f"does not fit this run ({type(error).__name__}: {str(error)[:200]})") from None
        self.epoch, self.step = stored["epoch"], stored["step"]
        self.history, self.best = list(stored["history"]), dict(stored["best"])
        self.unreadable = dict(stored["unreadable"])
        if self.main:  # the partial epoch's sums are global; one rank carries them
            self.partial = dict(stored["partial"])
        try:
            torch.set_rng_state(stored["rng"]["torch"])
        except (RuntimeError, TypeError, ValueError) as error:
            raise unfit("rng", f"is not a random generator state ({str(error)[:200]})") from None

    def _least_batch(self) -> int:
        """The fewest images a step may have per process: 2 where BatchNorm trains, else 1."""
        return 1 if self.args.freeze_backbone else 2

    def _frozen_features(self) -> nn.Module:
        """The frozen backbone as a feature extractor on the inference fast path: BatchNorm folded once,
        weights cast once to the training precision, channels-last."""
        from resnet.fast import optimize_for_inference

        head = set_head(self.model, nn.Identity())
        try:
            return optimize_for_inference(self.model, device=self.device, dtype=self.dtype or torch.float32)
        finally:
            set_head(self.model, head)

    def _announce(self) -> None:
        args, data = self.args, self.data
        held = f"{len(data.val)} images in {data.val_source}" if data.val else "none"
        procs = f"{self.procs.world} processes x " if self.procs.world > 1 else ""
        where = f"resume at epoch {self.epoch + 1}, step {self.step + 1}" if self.epoch or self.step else "start"
        batch = f"batch {self.batch_size}"
        if self.batch_size < args.batch_size:
            batch += f" (--batch-size {args.batch_size} capped by the {len(data.train)} training images)"
        sizes = self.batches.sizes()
        steps = f"{self.steps} step{'s' if self.steps > 1 else ''} per epoch"
        if len(sizes) > 1 and sizes[-1] != self.batch_size:
            steps += f", the last of {sizes[-1]} images" + (" per process" if self.procs.world > 1 else "")
        self.say(f"train {args.arch} on {len(data.train)} images of {len(data.classes)} classes (validation: "
                 f"{held}); {procs}{batch}, {steps}, lr {self.schedule.lr:g}, "
                 f"{recipe.precision_name(self.dtype)} on {self.device}; {where} -> {self.out}", flush=True)

    # ------------------------------------------------------------------ training

    def _epoch(self, epoch: int) -> None:
        args, procs = self.args, self.procs
        started = time.perf_counter() - self.partial["seconds"]
        self.model.eval() if args.freeze_backbone else self.model.train()
        self.batches.set_epoch(epoch, self.step)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        bar = torch.hub.tqdm(total=self.steps, initial=self.step, desc=f"epoch {epoch + 1}/{args.epochs}",
                             unit="step", file=sys.stderr, disable=args.quiet or not self.main, dynamic_ncols=True)
        failures: list[tuple[str, str]] = []
        images = decoded = 0
        batches = iter(self.loader)
        while True:
            batch = next(batches, None)
            counts = procs.all_gather(torch.tensor([-1 if batch is None else len(batch), int(self.stop.requested)]))
            if bool(counts[:, 1].any()):
                bar.close()
                self._interrupt(epoch, loss_sum, images, started, failures)
            if batch is None:
                break
            failures.extend(batch.failures)
            decoded += len(batch)
            global_count = int(counts[:, 0].sum())
            if int(counts[:, 0].min()) >= (1 if args.freeze_backbone else 2):
                lr = self.schedule(epoch * self.steps + self.step)
                loss_sum += self.train_step(batch, global_count, lr, epoch)
                images += len(batch)
            self.step += 1
            bar.update(1)
            if self.step % 10 == 0 or self.step == self.steps:
                bar.set_postfix(loss=f"{float(loss_sum) / max(1, images):.4f}",
                                img_s=f"{images * procs.world / (time.perf_counter() - started):.1f}", refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - started
        totals = procs.all_reduce(torch.tensor([float(loss_sum) + self.partial["loss_sum"],
                                                images + self.partial["images"], decoded + self.partial["images"],
                                                len(failures)], dtype=torch.float64))
        if totals[2] == 0 and totals[3] > 0:
            first = procs.gather_objects(failures[:1])
            example = next((part[0][1] for part in first if part), "")
            raise TrainingError(
                f"none of the {int(totals[3])} training images in {self.args.data!r} could be read (the first: "
                f"{example}); nothing was trained. Check that the files are images of a supported format, then "
                "run again")
        self._finish_epoch(epoch, float(totals[0]) / max(1.0, float(totals[1])), int(totals[1]), train_seconds,
                           started, failures)

    def train_step(self, batch, global_count: int, lr: float, epoch: int) -> torch.Tensor:
        """One optimizer step on this process's share of a global batch of ``global_count`` images; returns
        the summed loss of the share. Gradients are those of the global batch's mean loss."""
        args = self.args
        recipe.set_lr(self.optimizer, lr)
        images = batch.images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = batch.labels.to(self.device, non_blocking=True)
        partners, weight = labels, 1.0
        if args.mixup:
            generator = torch.Generator().manual_seed(sample_seed(args.seed, epoch, self.step, self.procs.rank))
            images, labels, partners, weight = recipe.mixup(images, labels, args.mixup, generator)
        with recipe.autocast(self.device, self.dtype):
            if self.features is not None:
                with torch.no_grad():
                    features = self.features(images)
                logits = self.trainable(features)
            else:
                logits = self.trainable(images)
        logits = logits.float()
        loss_sum = self.loss_fn(logits, labels)
        if weight != 1.0:
            loss_sum = weight * loss_sum + (1.0 - weight) * self.loss_fn(logits, partners)
        # DistributedDataParallel averages gradients over the processes: scale to the global mean.
        loss = loss_sum * (self.procs.world / global_count)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_sum.detach().double()

    # ------------------------------------------------------------------ after an epoch

    def _validate(self) -> Optional[dict]:
        if self.val_set is None:
            return None
        from resnet.training.metrics import measure

        self.model.eval()
        mine = range(self.procs.rank, len(self.val_set), self.procs.world)
        batches = ordered_batches(self.val_set, mine, self.args.batch_size, workers=self.workers)
        with recipe.autocast(self.device, self.dtype):
            metrics, _ = measure(self.model, batches, len(self.data.classes), device=self.device,
                                 loss_fn=self.loss_fn, processes=self.procs)
        return {"val_loss": metrics.loss, "top1": metrics.top1, "top5": metrics.top5, "failures": metrics.failures}

    def _finish_epoch(self, epoch, train_loss, images, train_seconds, started, failures) -> None:
        validation = self._validate()
        failures = [f for part in self.procs.gather_objects(failures) for f in part]
        failures += validation.pop("failures") if validation else []
        new = {path: message for path, message in failures if path not in self.unreadable}
        self.unreadable.update(new)
        record = {
            "epoch": epoch + 1, "train_loss": train_loss,
            "val_loss": None, "top1": None, "top5": None, **(validation or {}),
            "lr": self.schedule((epoch + 1) * self.steps - 1), "images": images,
            "images_per_second": images / max(train_seconds, 1e-9),
            "seconds": time.perf_counter() - started, "unreadable": len(self.unreadable),
            "unreadable_files": sorted(new),
        }
        # The best epoch: highest validation top-1; on a tie (small validation sets), the lower validation loss.
        improved = validation is None or not self.best or (record["top1"], -record["val_loss"]) > (
            self.best["top1"], -self.best["val_loss"])
        record["best"] = improved
        self.history.append(record)
        if improved:
            self.best = {k: record[k] for k in ("epoch", "train_loss", "val_loss", "top1", "top5")}
        self.epoch, self.step = epoch + 1, 0
        self.partial = {"loss_sum": 0.0, "images": 0, "seconds": 0.0}
        self._write(improved)
        self._summary(record, new)

    def _summary(self, record: dict, new: dict) -> None:
        val = (f", val loss {record['val_loss']:.4f}, top-1 {record['top1']:.2f}%, top-5 {record['top5']:.2f}%"
               if record["top1"] is not None else "")
        self.say(f"epoch {record['epoch']}/{self.args.epochs}: train loss {record['train_loss']:.4f}{val}, "
                 f"lr {record['lr']:.4g}, {record['images_per_second']:.1f} img/s, {record['seconds']:.1f} s"
                 + (" [best]" if record["best"] else "")
                 + (f", {record['unreadable']} unreadable files skipped" if record["unreadable"] else ""), flush=True)
        for path, message in list(new.items())[:10]:
            self.say(f"warning: skipped unreadable image: {message}", file=sys.stderr)
        files_in_run = len(self.data.train) + len(self.data.val)
        if new and len(self.unreadable) > UNREADABLE_ALERT * files_in_run:
            share = len(self.unreadable) / files_in_run
            self.say(f"warning: {len(self.unreadable)} of the {files_in_run} image files ({share:.0%}, more than "
                     f"{UNREADABLE_ALERT:.0%}) could not be read and are left out of training and validation: this "
                     "many usually means a problem with the data (a format that is not supported, a broken copy); "
                     f"they are listed in {self.out / files.LOG}", file=sys.stderr, flush=True)
        for message in training_warnings(self.history, len(self.data.classes)):
            self.say(f"warning: {message}", file=sys.stderr, flush=True)

    def _interrupt(self, epoch: int, loss_sum: torch.Tensor, images: int, started: float,
                   failures: list[tuple[str, str]]) -> None:
        totals = self.procs.all_reduce(torch.tensor([float(loss_sum) + self.partial["loss_sum"],
                                                     images + self.partial["images"]], dtype=torch.float64))
        self.unreadable.update(f for part in self.procs.gather_objects(failures) for f in part)
        self.partial = {"loss_sum": float(totals[0]), "images": int(totals[1]),
                        "seconds": time.perf_counter() - started}
        self.epoch = epoch
        self._write(False)
        self.say(f"interrupted (Ctrl+C or SIGTERM) at epoch {epoch + 1}, step {self.step} of {self.steps}: "
                 f"{self.out / files.CHECKPOINT} is saved; run the same command with --resume to continue",
                 file=sys.stderr)
        raise Interrupted

    def _checkpoint(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": files.CHECKPOINT_FORMAT, "version": files.VERSION, "arch": self.args.arch,
            "classes": list(self.data.classes), "options": self.options, "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step, "partial": self.partial,
            "history": self.history, "best": self.best, "unreadable": self.unreadable, "rng": rng,
        }

    def _write(self, improved: bool) -> None:
        """Rank 0 writes RUN's files; a failed write (a full disk) stops every rank with the same message."""
        error = None
        if self.main:
            error = self._write_files(improved)
        error = self.procs.broadcast(error)
        if error:
            raise TrainingError(error)

    def _write_files(self, improved: bool) -> Optional[str]:
        from resnet.training.plots import curves_png

        # model.pth before the checkpoint: a checkpoint never records a best epoch that model.pth lacks.
        target = self.out / files.MODEL
        try:
            if improved:
                files.save(files.model_file(self.model.state_dict(), arch=self.args.arch, classes=self.data.classes,
                                            image_size=self.args.image_size, metrics=self.best), target)
            target = self.out / files.CHECKPOINT
            files.save(self._checkpoint(), target)
            target = self.out / files.LOG
            files.write_bytes(target, "".join(json.dumps(r) + "\n" for r in self.history).encode())
            if self.history:
                target = self.out / files.CURVES
                files.write_bytes(target, curves_png(self.history, len(self.data.classes)))
        except OSError as error:
            kept = (f"the previous {target.name} is kept unchanged" if target.exists()
                    else f"{target.name} was not written")
            if (self.out / files.CHECKPOINT).exists():
                advice = "Free some space and continue with the same command and --resume"
            else:
                again = " with --force" if files.existing_run_files(self.out) else ""
                advice = (f"No checkpoint was written yet, so there is nothing to resume: free some space and run "
                          f"the same command again{again}")
            return f"could not write {str(target)!r}: {error.strerror or error}; {kept}. {advice}"
        return None


def _imagenet(names: list[str]) -> bool:
    from resnet.data.synsets import imagenet_class_names

    return names == imagenet_class_names()
