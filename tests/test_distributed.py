"""``torchrun ... -m resnet classify --distributed``: 2 CPU processes on 127.0.0.1 (gloo); the torchrun jobs are in
the slow tier."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from support import PHOTOS as PHOTO_PATHS, REPO_ROOT, free_port, skip_unless_torchrun_exits_cleanly

PHOTOS = [str(p) for p in PHOTO_PATHS]


@pytest.mark.slow
def test_two_ranks_give_the_single_process_output_in_input_order(seeded_cache, tmp_path) -> None:
    skip_unless_torchrun_exits_cleanly()
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


def test_distributed_without_torchrun_is_a_clear_error(cli, monkeypatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    result = cli("classify", PHOTOS[0], "--distributed")
    assert result.returncode == 2 and "torchrun" in result.stderr


# A torchrun job of two ranks using the batch loader as the CLI does: the package imported first,
# then the process group, the decoding (whose first image imports torchvision, and with it
# torch._dynamo), a collective, and destroy_process_group(). Each rank then checks that gloo's
# threads are gone: a process group that outlives destroy_process_group() keeps them running into
# interpreter shutdown, where they abort the process at random ("terminate called without an
# active exception", SIGABRT); the check makes that failure certain instead of occasional.
TORCHRUN_JOB = """
import os, sys
import processing_utils
import torch.distributed as dist

photos = sys.argv[1:]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
loaded = sum(len(b.uris) for b in processing_utils.iter_batches(photos[rank::world], 1, num_workers=1))
counts = [None] * world if rank == 0 else None
dist.gather_object(loaded, counts, dst=0)
dist.destroy_process_group()
if os.path.isdir("/proc/self/task"):
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{task}/comm").read().strip())
        except OSError:
            pass
    gloo = [name for name in names if "gloo" in name]
    if gloo:
        sys.exit(f"rank {rank}: gloo threads still running after destroy_process_group(): {gloo}")
if rank == 0:
    print("loaded", sum(counts))
"""


#: Jobs per run: the thread check in each rank makes a lingering gloo thread a certain failure rather than an
#: occasional abort, so two jobs show it as surely as the twenty this test used to run.
JOBS = 2


@pytest.mark.slow
def test_torchrun_jobs_with_the_batch_loader_all_exit_cleanly(tmp_path) -> None:
    skip_unless_torchrun_exits_cleanly()
    script = tmp_path / "job.py"
    script.write_text(TORCHRUN_JOB)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GLOO_SOCKET_IFNAME="lo")
    failures = []
    start = time.monotonic()
    for run in range(JOBS):
        job = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
             "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(script), *PHOTOS],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        if job.returncode != 0 or f"loaded {len(PHOTOS)}" not in job.stdout:
            failures.append(f"run {run}: exit {job.returncode}\n{job.stderr[-1500:]}")
    elapsed = time.monotonic() - start
    assert not failures, f"{len(failures)} of {JOBS} runs failed ({elapsed:.0f} s):\n" + "\n".join(failures[:3])


@pytest.mark.parametrize("version, warned", [
    ("2.1.0+cu121", True), ("2.4.1", True), ("2.13.0a0+git1234", True), ("2.14.1", False), ("2.15.0", False),
    ("3.0.0", False),
])
def test_torchrun_on_a_torch_that_can_hang_at_exit_is_told_so_by_rank_0(version, warned, monkeypatch, capsys) -> None:
    """Joining a job prints, on rank 0 only, that this torch's torchrun jobs can hang at exit (seen on torch
    2.1 and 2.4), and nothing on a torch where they exit cleanly; the process group itself is faked."""
    import torch
    import torch.distributed as dist

    from resnet.cli.options import report_warning
    from resnet.training import distributed

    monkeypatch.setattr(torch, "__version__", version)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: None)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    for rank in (0, 1):
        monkeypatch.setattr(dist, "get_rank", lambda *a, rank=rank, **k: rank)
        processes = distributed.start("cpu", distributed=True, command="classify", warn=report_warning)
        assert (processes.rank, processes.world) == (rank, 2)
        err = capsys.readouterr().err
        if warned and rank == 0:
            assert err.startswith(f"warning: on torch {version}, a process of a torchrun job can hang at exit")
            assert len(err.splitlines()) == 1 and "upgrade torch" in err
        else:
            assert err == ""
