"""What the machine offers: CPU instruction sets, and the compute dtype they make worthwhile.

The one vocabulary of compute precisions: ``fp32``, ``bf16``, ``fp16`` (the command line's ``--precision``) or
their dtype names ``float32``, ``bfloat16``, ``float16`` (``optimize_for_inference(dtype=...)``), and ``auto``, the
fastest number format the device computes natively (:func:`resolve_dtype`).
"""

from __future__ import annotations

import functools
from typing import Literal, Union

import torch

from resnet.errors import ConvNetsError

__all__ = [
    "DTYPES", "PRECISIONS", "DtypeName", "cpu_runs_float16_convolutions", "cpu_supports_bf16", "precision_name",
    "resolve_dtype",
]

DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
#: The compute dtypes by name.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: The command line's short names of the same dtypes (``--precision``).
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_name(dtype: Union[torch.dtype, str, None]) -> str:
    """The short name (``fp32``, ``bf16``, ``fp16``) of a dtype, a dtype name or a short name (``None``: fp32)."""
    if dtype is None:
        return "fp32"
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype) or PRECISIONS[dtype]
    return next(name for name, value in PRECISIONS.items() if value == dtype)


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_runs_float16_convolutions() -> bool:
    """Whether this torch has float16 convolutions for the CPU (torch 2.2 on; torch 2.1 raises
    ``"slow_conv2d_cpu" not implemented for 'Half'``). A 1x1 convolution of a 1x1 image is tried."""
    one = torch.ones(1, 1, 1, 1, dtype=torch.float16)
    try:
        torch.nn.functional.conv2d(one, one)
    except RuntimeError:
        return False
    return True


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16) and oneDNN can use it.

    Without those instructions bfloat16 is emulated and far slower than float32 (about 6x slower on an
    AVX2-only AMD EPYC), so ``dtype="auto"`` stays float32 there. Reads ``/proc/cpuinfo``; on systems
    without it the answer is ``False`` (pass ``dtype="bfloat16"`` explicitly to force it).
    """
    flags = _cpu_flags()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    return native and torch.backends.mkldnn.is_available()


def resolve_dtype(dtype: Union[DtypeName, torch.dtype], device: Union[str, torch.device]) -> torch.dtype:
    """The compute dtype for ``dtype`` on ``device``: ``"auto"`` is float16 on CUDA, bfloat16 on a CPU
    with native BF16 (:func:`cpu_supports_bf16`) and float32 elsewhere; a name or a ``torch.dtype`` of
    float32, bfloat16 or float16 (or its short name, ``fp32`` ...) is itself. Anything else is a ``ValueError``."""
    device = torch.device(device)
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be float32, bfloat16 or float16, not {dtype}")
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_supports_bf16():
            return torch.bfloat16
        return torch.float32
    try:
        return DTYPES[dtype] if dtype in DTYPES else PRECISIONS[dtype]
    except KeyError:
        raise ValueError(
            f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', not {dtype!r}"
        ) from None


class DeviceError(ConvNetsError):
    """A device that is not there (CUDA on a machine without it, a GPU number too high)."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The ``torch.device`` for a ``--device`` value; ``cuda`` without an index picks ``local_rank``'s GPU.

    Raises:
        DeviceError: CUDA was asked for but is not available, or the GPU number does not exist.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name} was asked for but CUDA is not available here; use --device cpu")
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", local_rank % count)
    if device.index >= count:
        raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}")
    return device
