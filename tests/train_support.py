"""Small generated image folders and command runners for the train / evaluate tests."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
import pytest
from PIL import Image

from support import REPO_ROOT, free_port, skip_unless_torchrun_exits_cleanly

#: Each class is a noisy patch of one colour: a linear head on any backbone's features separates them.
COLORS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40), "yellow": (220, 210, 40)}
#: Options that keep a training run to a few seconds on a CPU, the same on every CPU (no bf16).
FAST = ["--image-size", "32", "--precision", "fp32", "--workers", "0", "--quiet"]


def write_images(folder: Path, color: tuple[int, int, int], count: int, *, seed: int, size: int = 40) -> list[Path]:
    """``count`` PNG files of ``color`` plus noise in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = np.clip(np.array(color)[None, None, :] + rng.normal(0, 30, (size, size, 3)), 0, 255)
        path = folder / f"{i:03d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def make_dataset(root: Path, classes: Iterable[str] = ("blue", "green", "red"), per_class: int = 4,
                 val_per_class: Optional[int] = None) -> Path:
    """``root/<class>/NNN.png``, or ``root/train/<class>`` and ``root/val/<class>`` with ``val_per_class``."""
    for k, name in enumerate(classes):
        if val_per_class is None:
            write_images(root / name, COLORS[name], per_class, seed=k)
        else:
            write_images(root / "train" / name, COLORS[name], per_class, seed=k)
            write_images(root / "val" / name, COLORS[name], val_per_class, seed=100 + k)
    return root


def deny(monkeypatch: pytest.MonkeyPatch, function: str, denied: Path) -> None:
    """``os.<function>`` on ``denied`` (or inside it) raises PermissionError, as without permission (this
    machine may run as root, where folder permissions are not enforced; variants with real permissions run
    elsewhere)."""
    real = getattr(os, function)

    def guarded(target, *args, **kwargs):
        path = os.fspath(target)
        if path == str(denied) or path.startswith(str(denied) + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, function, guarded)


def main(*args: str) -> int:
    """``python -m resnet ARGS`` in this process; returns the exit status."""
    from resnet.__main__ import main as resnet_main

    return resnet_main([str(a) for a in args])


def subprocess_env(**extra: str) -> dict:
    """The environment of a ``python -m resnet`` child: this checkout, one thread, gloo on loopback."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", MPLBACKEND="Agg")
    env.update(extra)
    return env


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node N -m resnet ARGS`` on 127.0.0.1 (the test is skipped on a torch whose
    torchrun jobs can hang at exit)."""
    skip_unless_torchrun_exits_cleanly()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "resnet", *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def peer_schedule(lr: float, warmup: int, total: int) -> list[float]:
    """Learning rate per step from torch's LinearLR then CosineAnnealingLR (the torchvision reference's)."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup])
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates
