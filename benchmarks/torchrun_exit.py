"""How often a two-process torchrun job hangs at exit on this torch (pytorch/pytorch#75097).

Each run starts ``torchrun --nproc-per-node 2`` on 127.0.0.1 with a job that imports torchvision (as
every command of this repository does), joins a gloo process group, gathers one object and leaves the
group; a run that has not ended within ``--timeout`` seconds is counted as hung and stopped. This is
the measurement behind ``resnet.training.distributed.CLEAN_EXIT_TORCH``::

    python benchmarks/torchrun_exit.py --runs 12
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

JOB = """
import torchvision  # noqa: F401  (imported before the group, as the commands do)
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
counts = [None] * world if rank == 0 else None
dist.gather_object(1, counts, dst=0)
dist.destroy_process_group()
if rank == 0:
    print("gathered", sum(counts))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="jobs to start, one after another (default 12)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds after which a job counts as hung")
    args = parser.parse_args()
    import torch

    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    hung = failed = 0
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "job.py"
        script.write_text(JOB)
        for run in range(args.runs):
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                       "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(script)]
            job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)  # its own process group: a hung rank is stopped too
            try:
                status = job.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
                hung += 1
                outcome = "hung"
            else:
                failed += status != 0
                outcome = "ok" if status == 0 else f"exit {status}"
            print(f"run {run + 1}/{args.runs}: {outcome}", flush=True)
    print(f"torch {torch.__version__}: {hung} of {args.runs} runs hung at exit, {failed} failed otherwise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
