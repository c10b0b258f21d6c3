"""The files of a training run, written so that a crash, Ctrl+C or a full disk never leaves a broken one.

``RUN/`` holds :data:`CHECKPOINT` (the whole training state), :data:`MODEL` (the best weights with their
class names), :data:`LOG` (one JSON object per epoch) and :data:`CURVES` (a plot). Every file is written
by :func:`atomic_write` (:func:`resnet.atomic.atomic_file`): into a hidden temporary file beside the target,
flushed to disk (``fsync``), then renamed over the target (``os.replace``, atomic on POSIX and Windows) and the
folder entry synced. A write
that fails part-way (``ENOSPC``, a crash) leaves the previous file as it was; the temporary file is removed.
Both ``.pth`` files load with ``torch.load(weights_only=True)``: they hold tensors, numbers, strings,
lists and dicts only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import torch

from .atomic import atomic_file
from .options import CommandError

CHECKPOINT = "checkpoint.pth.tar"
MODEL = "model.pth"
LOG = "log.jsonl"
CURVES = "curves.png"
#: Every file ``train`` writes into RUN/ (``--force`` replaces exactly these).
RUN_FILES = (CHECKPOINT, MODEL, LOG, CURVES)

#: ``format`` entry of the training checkpoint and of the model file, and their layout version.
CHECKPOINT_FORMAT = "resnet-train-checkpoint"
MODEL_FORMAT = "resnet-model"
VERSION = 1


def _open_temp(path: Path) -> BinaryIO:
    """Open the temporary file that :func:`resnet.atomic.atomic_file` made for writing."""
    return open(path, "wb")


def atomic_write(path: os.PathLike | str, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, all or nothing, with the permissions the
    process umask gives new files (:func:`resnet.atomic.atomic_file` with ``mode=None``).

    Raises:
        OSError: the write, flush or rename failed (``ENOSPC`` ...); ``path`` is unchanged.
    """
    with atomic_file(path, mode=None) as staging, _open_temp(staging) as file:
        write(file)


def save(obj: Any, path: os.PathLike | str) -> None:
    """``torch.save(obj)`` into ``path`` atomically.

    Raises:
        OSError: as :func:`atomic_write` (also when the disk fills inside ``torch.save``, which reports it as
            a ``RuntimeError`` of its zip writer raised while handling the ``OSError``).
    """

    def write(file: BinaryIO) -> None:
        try:
            torch.save(obj, file)
        except RuntimeError as error:
            if isinstance(error.__context__, OSError):
                raise error.__context__ from None
            raise

    atomic_write(path, write)


def write_bytes(path: os.PathLike | str, data: bytes) -> None:
    """Write ``data`` into ``path`` atomically."""
    atomic_write(path, lambda file: file.write(data))


def load(path: os.PathLike | str, expected_format: str) -> dict:
    """Read a file written by ``train`` (``weights_only=True``) and check its ``format`` entry.

    Raises:
        FileNotFoundError, resnet.weights.WeightsError: missing, damaged or unsafe file.
        ValueError: the file is not a ``expected_format`` file of this repository.
    """
    from .weights import read_checkpoint

    obj = read_checkpoint(path)
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        raise ValueError(f"{str(path)!r} is not a {expected_format} file written by 'python -m resnet train'")
    if obj.get("version", 0) > VERSION:
        raise ValueError(f"{str(path)!r} was written by a newer version of this repository (layout "
                         f"{obj.get('version')}; this one reads {VERSION}); update the repository")
    return obj


def model_file(state_dict: dict[str, torch.Tensor], *, arch: str, classes: list[str], image_size: int,
               metrics: Optional[dict] = None) -> dict:
    """The contents of ``model.pth``: what the hub entrypoints, ``classify``, ``evaluate`` and ``export``
    need to use the trained model (``pretrained_from_file`` reads ``state_dict`` and ``classes``)."""
    return {
        "format": MODEL_FORMAT,
        "version": VERSION,
        "arch": arch,
        "classes": list(classes),
        "num_classes": len(classes),
        "image_size": image_size,
        "metrics": dict(metrics or {}),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }



# --------------------------------------------------------------------------- the run folder

#: Options a ``--resume`` may change: how long to train, and nothing that changes the arithmetic.
RESUMABLE_CHANGES = frozenset({"data", "epochs"})


def option_flag(key: str) -> str:
    """How the user spells an option key of the stored options."""
    if key == "data":
        return "DATA"
    if key == "world_size":
        return "the number of processes"
    return "--" + key.replace("_", "-")


def differences(stored: dict, current: dict, *, ignore: frozenset = frozenset()) -> list[str]:
    """``--lr 0.1 (the run: 0.256)`` for every option whose value differs."""
    keys = [k for k in {**stored, **current} if k not in ignore]
    return [f"{option_flag(k)} {current.get(k)} (the run: {stored.get(k)})"
            for k in keys if stored.get(k) != current.get(k)]


def existing_run_files(folder: Path) -> list[str]:
    """The :data:`RUN_FILES` present in ``folder``."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def refuse_existing(folder: Path, options: dict) -> None:
    """Without ``--resume`` or ``--force``, a folder holding a run is not touched.

    Raises:
        CommandError: ``folder`` holds files of a run; the message says how it differs from ``options``.
    """
    present = existing_run_files(folder)
    if not present:
        return
    detail = ""
    try:
        stored = load(folder / CHECKPOINT, CHECKPOINT_FORMAT)
    except (OSError, ValueError, RuntimeError):
        stored = None
    if stored is not None:
        diff = differences(stored["options"], options)
        epochs = f"{stored['epoch']} of {stored['options']['epochs']} epochs done"
        detail = (f" ({epochs}; it was started with other arguments: {'; '.join(diff)})" if diff
                  else f" of the same arguments ({epochs})")
    raise CommandError(
        f"--output {str(folder)!r} already holds a training run{detail}: add --resume to continue it, "
        f"--force to start over (replacing {', '.join(present)}), or choose another --output"
    )


def check_resumable(stored: dict, options: dict, classes: list[str], folder: Path) -> None:
    """``--resume`` goes on only with the run's arguments (``--epochs`` may grow) and its classes.

    Raises:
        CommandError: naming each option that differs, or the classes that differ.
    """
    diff = differences(stored["options"], options, ignore=RESUMABLE_CHANGES)
    if diff:
        raise CommandError(
            f"--resume: {str(folder / CHECKPOINT)!r} is a run of other arguments: {'; '.join(diff)}. Resume with "
            "the run's arguments (only --epochs may grow), or start a new run with --force or another --output"
        )
    if stored["classes"] != classes:
        missing = [c for c in stored["classes"] if c not in classes]
        new = [c for c in classes if c not in stored["classes"]]
        raise CommandError(
            f"--resume: DATA's classes differ from those of the run in {str(folder)!r}"
            + (f"; missing: {', '.join(map(repr, missing[:5]))}" if missing else "")
            + (f"; not in the run: {', '.join(map(repr, new[:5]))}" if new else "")
            + "; resume with the run's data, or start a new run with --force or another --output"
        )
    if options["epochs"] < stored["epoch"]:
        raise CommandError(f"--resume --epochs {options['epochs']}: the run in {str(folder)!r} has already "
                           f"trained {stored['epoch']} epochs; give --epochs {stored['epoch']} or more")
