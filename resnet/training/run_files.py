"""The files of a training run, written so that a crash, Ctrl+C or a full disk never leaves a broken one.

``RUN/`` holds :data:`CHECKPOINT` (the whole training state), :data:`MODEL` (the best weights with their
class names), :data:`LOG` (one JSON object per epoch) and :data:`CURVES` (a plot). Every file is written
by :func:`atomic_write` (:func:`resnet.io.atomic.atomic_file`): into a hidden temporary file beside the target,
flushed to disk (``fsync``), then renamed over the target (``os.replace``, atomic on POSIX and Windows) and the
folder entry synced. A write
that fails part-way (``ENOSPC``, a crash) leaves the previous file as it was; the temporary file is removed.
Both ``.pth`` files load with ``torch.load(weights_only=True)``: they hold tensors, numbers, strings,
lists and dicts only.

One trainer at a time writes RUN: :class:`RunFolder` checks it can be written before any work, makes it,
and holds :data:`LOCK` in it (the ``filelock`` package; the lock of a killed process frees itself) for the
whole run, recording who holds it, so that a second trainer is refused naming the first. Holding the lock,
it removes the temporary files that a killed trainer left beside the run's files.
"""

from __future__ import annotations

import contextlib
import datetime
import numbers
import os
import socket
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Optional

import torch

from resnet.io.atomic import atomic_file, staging_name, sweep_stale
from resnet.errors import ConvNetsError


class RunFolderError(ConvNetsError):
    """A run folder (``--output``) that cannot hold this run: a file, not writable, another trainer's, or the
    files of a different run; the message names it and what to do."""


CHECKPOINT = "checkpoint.pth.tar"
MODEL = "model.pth"
LOG = "log.jsonl"
CURVES = "curves.png"
#: Every file ``train`` writes into RUN/ (``--force`` replaces exactly these).
RUN_FILES = (CHECKPOINT, MODEL, LOG, CURVES)
#: The lock file of RUN/ (hidden; it stays when the run ends, as lock files do, so that every trainer locks
#: the same file). It holds a line naming the process that holds it.
LOCK = ".train.lock"

#: ``format`` entry of the training checkpoint and of the model file, and their layout version.
CHECKPOINT_FORMAT = "resnet-train-checkpoint"
MODEL_FORMAT = "resnet-model"
VERSION = 1


def _open_temp(path: Path) -> BinaryIO:
    """Open the temporary file that :func:`resnet.io.atomic.atomic_file` made for writing."""
    return open(path, "wb")


def atomic_write(path: os.PathLike | str, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, all or nothing, with the permissions the
    process umask gives new files (:func:`resnet.io.atomic.atomic_file` with ``mode=None``).

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
        FileNotFoundError, resnet.weights.reading.WeightsError: missing, damaged or unsafe file.
        ValueError: the file is not a ``expected_format`` file of this repository.
    """
    from resnet.weights.reading import read_checkpoint

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
        RunFolderError: ``folder`` holds files of a run; the message says how it differs from ``options``.
    """
    present = existing_run_files(folder)
    if not present:
        return
    if CHECKPOINT not in present:
        raise RunFolderError(
            f"--output {str(folder)!r} already holds files of a training run ({', '.join(present)}) but no "
            f"{CHECKPOINT}, so it cannot be resumed: add --force to start over (replacing them), or choose "
            "another --output"
        )
    detail = ""
    try:
        stored = load_checkpoint(folder / CHECKPOINT, options)
    except (OSError, ValueError, RuntimeError):
        stored = None
    if stored is not None:
        diff = differences(stored["options"], options)
        epochs = f"{stored['epoch']} of {stored['options']['epochs']} epochs done"
        detail = (f" ({epochs}; it was started with other arguments: {'; '.join(diff)})" if diff
                  else f" of the same arguments ({epochs})")
    raise RunFolderError(
        f"--output {str(folder)!r} already holds a training run{detail}: add --resume to continue it, "
        f"--force to start over (replacing {', '.join(present)}), or choose another --output"
    )


def check_resumable(stored: dict, options: dict, classes: list[str], folder: Path) -> None:
    """``--resume`` goes on only with the run's arguments (``--epochs`` may grow) and its classes.

    Raises:
        RunFolderError: naming each option that differs, or the classes that differ.
    """
    diff = differences(stored["options"], options, ignore=RESUMABLE_CHANGES)
    if diff:
        raise RunFolderError(
            f"--resume: {str(folder / CHECKPOINT)!r} is a run of other arguments: {'; '.join(diff)}. Resume with "
            "the run's arguments (only --epochs may grow), or start a new run with --force or another --output"
        )
    if stored["classes"] != classes:
        missing = [c for c in stored["classes"] if c not in classes]
        new = [c for c in classes if c not in stored["classes"]]
        raise RunFolderError(
            f"--resume: DATA's classes differ from those of the run in {str(folder)!r}"
            + (f"; missing: {', '.join(map(repr, missing[:5]))}" if missing else "")
            + (f"; not in the run: {', '.join(map(repr, new[:5]))}" if new else "")
            + "; resume with the run's data, or start a new run with --force or another --output"
        )
    if options["epochs"] < stored["epoch"]:
        raise RunFolderError(f"--resume --epochs {options['epochs']}: the run in {str(folder)!r} has already "
                           f"trained {stored['epoch']} epochs; give --epochs {stored['epoch']} or more")


# --------------------------------------------------------------------------- checking a checkpoint


class CheckpointError(ValueError):
    """A training checkpoint whose contents are not what ``train`` writes; the message names the entry."""


def _whole(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _tensors(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _record(value: Any) -> bool:
    """An epoch's record as the log holds it (validation figures are None without a validation set)."""
    return (isinstance(value, dict) and _whole(value.get("epoch"), 1) and _number(value.get("train_loss"))
            and all(value.get(key) is None or _number(value.get(key)) for key in ("val_loss", "top1", "top5"))
            and all(key in value for key in ("val_loss", "top1", "top5")))


#: What each entry of a training checkpoint must be: (test, what it should be, as the message says it).
_ENTRIES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "arch": (lambda v: isinstance(v, str), "an architecture name"),
    "classes": (lambda v: _strings(v) and len(v) >= 2, "a list of two or more class names"),
    "options": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a dict of the run's options"),
    "state_dict": (_tensors, "a dict of tensors"),
    "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list), "an optimizer state (state and param_groups)"),
    "scheduler": (lambda v: isinstance(v, dict), "a dict"),
    "scaler": (lambda v: isinstance(v, dict), "a dict"),
    "epoch": (_whole, "a whole number of at least 0"),
    "step": (_whole, "a whole number of at least 0"),
    "partial": (lambda v: isinstance(v, dict) and _number(v.get("loss_sum")) and _whole(v.get("images"))
                and _number(v.get("seconds")), "a dict of loss_sum, images and seconds"),
    "history": (lambda v: isinstance(v, list) and all(_record(r) for r in v),
                "a list of epoch records (epoch, train_loss, val_loss, top1, top5)"),
    "best": (lambda v: v == {} or _record(v), "an epoch record (epoch, train_loss, val_loss, top1, top5) or {}"),
    "unreadable": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(m, str)
                                                         for k, m in v.items()), "a dict of file -> message"),
    "rng": (lambda v: isinstance(v, dict) and isinstance(v.get("torch"), torch.Tensor)
            and v["torch"].dtype == torch.uint8, "a dict with the uint8 tensor 'torch'"),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return (text[:60] + "...") if len(text) > 60 else text


def check_checkpoint(checkpoint: dict, path: os.PathLike | str, option_keys: Iterable[str] = ()) -> None:
    """Check that ``checkpoint`` has every entry ``train`` writes, each of the right type, and that its
    ``options`` hold each of ``option_keys``.

    Raises:
        CheckpointError: naming ``path`` and the first entry that is missing or wrong.
    """
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{str(path)!r} is not a usable training checkpoint: {what}; it may be damaged or "
                               "edited. Resume from an intact copy, or start a new run with --force or another "
                               "--output")

    for entry, (test, expected) in _ENTRIES.items():
        if entry not in checkpoint:
            raise bad(f"it has no {entry!r} entry")
        value = checkpoint[entry]
        if not test(value):
            raise bad(f"its {entry!r} entry is {_shown(value)} ({type(value).__name__}), not {expected}")
    missing = [key for key in option_keys if key not in checkpoint["options"]]
    if missing:
        raise bad(f"its 'options' entry lacks {', '.join(map(repr, missing))}")


def load_checkpoint(path: os.PathLike | str, options: Optional[dict] = None) -> dict:
    """Read and check a training checkpoint (:func:`load`, then :func:`check_checkpoint` against the keys of
    ``options``).

    Raises:
        FileNotFoundError, resnet.weights.reading.WeightsError: missing, damaged or unsafe file.
        ValueError: not a checkpoint of this repository, or one with an entry missing or wrong
            (:class:`CheckpointError`).
    """
    checkpoint = load(path, CHECKPOINT_FORMAT)
    check_checkpoint(checkpoint, path, options or ())
    return checkpoint


# --------------------------------------------------------------------------- one trainer per run folder


def _holder_line() -> str:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, since {started}"


class RunFolder:
    """RUN, claimed by one trainer for the time of a run (a context manager; :meth:`open` and :meth:`close`).

    :meth:`open` checks that RUN can be a run folder and can be written, makes it (and its missing parents)
    when absent, takes its lock without waiting, records the holder in it, and removes what killed trainers
    left (temporary files of the run's files). :meth:`close` releases the lock; after a failure it removes
    RUN again when this trainer made it and wrote nothing into it.
    """

    def __init__(self, path: os.PathLike | str, *, flag: str = "--output") -> None:
        self.path = Path(path)
        self.flag = flag
        self.made: list[Path] = []
        self._lock = None

    def _error(self, what: str) -> RunFolderError:
        return RunFolderError(f"{self.flag} {str(self.path)!r}: {what}")

    def open(self) -> "RunFolder":
        """Claim RUN.

        Raises:
            RunFolderError: RUN is not a folder, cannot be made or written, or another trainer holds it (named).
        """
        import filelock

        path = self.path
        if path.exists() and not path.is_dir():
            raise self._error("is a file, not a folder; give the folder for the run's files (it is made when "
                              "missing)")
        self._make()
        probe = path / staging_name(LOCK, "partial")
        try:  # a file made and removed: the same test as the writes of the run, before any work
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as error:
            self._unmake()
            raise self._error(f"cannot write into this folder ({error.strerror or error}); give a folder this user "
                              "can write to") from None
        lock_path = path / LOCK
        holder = _read_holder(lock_path)
        lock = filelock.FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise self._error(
                f"another training process is writing this run ({holder or 'its pid is not recorded'}; lock "
                f"{str(lock_path)!r}): wait for it to finish, stop it, or choose another --output") from None
        except OSError as error:
            self._unmake()
            raise self._error(f"cannot lock {LOCK} in it ({error.strerror or error})") from None
        self._lock = lock
        with contextlib.suppress(OSError):
            with open(lock_path, "r+", encoding="utf-8") as file:
                file.truncate(0)
                file.write(_holder_line() + "\n")
        for name in RUN_FILES:  # every writer of these holds the lock: the temporary files left are dead ones
            sweep_stale(path / name, every=True)
        return self

    def close(self, failed: bool = False) -> None:
        """Release RUN; after a failure, remove it when this trainer made it and it holds nothing else."""
        if self._lock is None:
            return
        if failed and self.made:
            with contextlib.suppress(OSError):
                if [p.name for p in self.path.iterdir()] == [LOCK]:  # made for this run, which wrote nothing
                    (self.path / LOCK).unlink()
        self._lock.release()
        self._lock = None
        if failed:
            self._unmake()

    def __enter__(self) -> "RunFolder":
        return self.open()

    def __exit__(self, kind, error, trace) -> None:
        self.close(failed=kind is not None)

    def _make(self) -> None:
        missing = [folder for folder in (self.path, *self.path.parents) if not folder.exists()]
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as error:
                self._unmake()
                raise self._error(f"cannot make the folder {str(folder)!r} ({error.strerror or error}); give a "
                                  "folder inside one this user can write to") from None
            self.made.insert(0, folder)

    def _unmake(self) -> None:
        for folder in self.made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.made = []


def _read_holder(lock_path: Path) -> str:
    try:
        return " ".join(lock_path.read_text(encoding="utf-8", errors="replace").split())[:200]
    except OSError:
        return ""
