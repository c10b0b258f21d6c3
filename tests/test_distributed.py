"""``torchrun ... -m resnet classify --distributed``: 2 CPU processes on 127.0.0.1 (gloo)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

from support import PHOTOS as PHOTO_PATHS, REPO_ROOT

PHOTOS = [str(p) for p in PHOTO_PATHS]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_give_the_single_process_output_in_input_order(hub_dir, ngc_file, tmp_path) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(ngc_file("resnet50"), hub_dir / "checkpoints" / "nvidia_resnet50_200821.pth.tar")
    missing = str(tmp_path / "missing.jpg")
    # Five inputs over two ranks: uneven shards, and a failure on rank 1 that must come back too.
    inputs = [*PHOTOS[:3], missing, *PHOTOS[3:]]  # index 3 -> rank 1
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    common = ["classify", *inputs, "--json", "--quiet", "--batch-size", "1", "--device", "cpu"]
    single = subprocess.run(
        [sys.executable, "-m", "resnet", *common], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert single.returncode == 1, single.stderr  # the missing file
    distributed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
         "-m", "resnet", *common, "--distributed"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert distributed.returncode != 0  # the failure is reported through the exit status too
    assert distributed.stdout == single.stdout
    lines = single.stdout.splitlines()
    assert len(lines) == 5 and "missing.jpg" in lines[3] and '"error"' in lines[3]


def test_distributed_without_torchrun_is_a_clear_error() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    result = subprocess.run(
        [sys.executable, "-m", "resnet", "classify", PHOTOS[0], "--distributed"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "torchrun" in result.stderr
