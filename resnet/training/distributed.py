"""Processes of a ``torchrun`` job for ``train`` and ``evaluate``: set-up, tear-down and small collectives.

``torchrun --nproc-per-node N -m resnet COMMAND ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in their environment. :func:`start` joins them into one process
group: NCCL on GPUs (one GPU per local rank), gloo on CPUs. The small exchanges of a step (how many images
each rank decoded, whether one was interrupted) and of an epoch (metrics, lists of unreadable files)
always go through gloo on CPU tensors, so they never wait on a GPU stream.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional

import torch

from resnet.errors import ConvNetsError
from resnet.fast.devices import resolve_device

class DistributedError(ConvNetsError):
    """A multi-process job asked for that cannot be joined as asked."""


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


#: How long a collective waits for the other ranks before failing (a rank that died, a hung loader).
TIMEOUT = timedelta(minutes=30)

#: The oldest torch on which two-rank gloo jobs were seen to exit cleanly (torch 2.14.1: no hang in 32 runs
#: of a job that imports torchvision and then joins, gathers and leaves the group). On torch 2.1.0 and 2.4.1
#: a rank of that job hung in ``destroy_process_group()`` in 2 of 10 and 2 of 12 runs
#: (pytorch/pytorch#75097); the releases in between are untested. Measured with benchmarks/torchrun_exit.py.
CLEAN_EXIT_TORCH = (2, 14)


def torch_release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a torch version string such as ``"2.4.1+cu121"``."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def exit_hang_warning(version: Optional[str] = None) -> Optional[str]:
    """What to tell a torchrun user of a torch older than :data:`CLEAN_EXIT_TORCH` (``None`` on a newer one)."""
    version = version or torch.__version__
    if torch_release(version) >= CLEAN_EXIT_TORCH:
        return None
    return (
        f"on torch {version}, a process of a torchrun job can hang at exit, after the results are out "
        "(in destroy_process_group(); seen on torch 2.1 and 2.4, not on 2.14): stop it with Ctrl-C if it "
        "does, or upgrade torch"
    )


@dataclass
class Processes:
    """Where this process stands in its job: ``rank`` of ``world`` processes, its ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    group: Any = None  # the gloo group for CPU-side exchanges; None outside a job

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.group is not None

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of a CPU tensor (``values`` itself outside a job)."""
        if self.distributed:
            import torch.distributed as dist

            values = values.cpu().clone()
            dist.all_reduce(values, group=self.group)
        return values

    def all_gather(self, values: torch.Tensor) -> torch.Tensor:
        """Every rank's CPU tensor stacked in rank order, shape ``(world, *values.shape)``."""
        if not self.distributed:
            return values.unsqueeze(0)
        import torch.distributed as dist

        parts = [torch.empty_like(values) for _ in range(self.world)]
        dist.all_gather(parts, values.cpu(), group=self.group)
        return torch.stack(parts)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's picklable ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value, group=self.group)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's picklable ``value``, on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


def launcher_environment() -> Optional[tuple[int, int]]:
    """``(rank, world size)`` that ``torchrun`` (or another launcher setting ``RANK`` and ``WORLD_SIZE``) gave this
    process, or ``None`` when it was not started that way (or the values are not whole numbers)."""
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets ``RANK``)."""
    return launcher_environment() is not None


def start(device_name: str, *, distributed: bool, command: str,
          warn: Callable[[str], None] = _warn) -> Processes:
    """Join the ``torchrun`` job when ``distributed`` (else a single process on ``device_name``).

    Rank 0 passes a warning about the job (torch releases that hang at exit) to ``warn`` (default: Python's
    :func:`warnings.warn`).

    Raises:
        DistributedError: ``distributed`` without torchrun's environment.
        DeviceError: a device that is not there.
    """
    if not distributed:
        return Processes(device=resolve_device(device_name))
    if not launched_by_torchrun():
        raise DistributedError(
            f"--distributed needs torchrun (e.g. torchrun --nproc-per-node 2 -m resnet {command} ... --distributed)"
        )
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    group = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else dist.group.WORLD
    warning = exit_hang_warning()
    if warning is not None and dist.get_rank() == 0:
        warn(warning)
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank, device, group)


def stop(processes: Optional[Processes]) -> None:
    """Leave the job's process group (nothing to do for a single process)."""
    if processes is None or not processes.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def job(device_name: str, *, distributed: bool, command: str,
        warn: Callable[[str], None] = _warn) -> Iterator[Processes]:
    """:func:`start` on entry, :func:`stop` on exit, however the block ends."""
    processes = start(device_name, distributed=distributed, command=command, warn=warn)
    try:
        yield processes
    finally:
        stop(processes)
