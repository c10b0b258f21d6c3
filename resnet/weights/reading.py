"""Checkpoint files into a model, safely: the errors of the weights path, reading, key names, fit.

Files are read with ``torch.load(weights_only=True)``; every layout users hold is turned into this
repository's key names; the result is checked against the model (keys, shapes, dtypes, finite
values) before anything is loaded. Getting NVIDIA's file onto disk is :mod:`resnet.weights.cache`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch

# Imported here, not where used: after torch.hub loads this repository, a user's own module named ``resnet``
# may be what ``resnet`` means, and a submodule first imported later would not be found.
from resnet.errors import Audience, TwoAudiences
from resnet.io import filetypes
from resnet.io.filetypes import ZIP_MAGIC, looks_like_onnx, not_a_regular_file

PathLike = Union[str, "os.PathLike[str]"]
KeyMapFn = Callable[[str], str]


class WeightsError(TwoAudiences, RuntimeError):
    """Base class of every error about getting or loading pretrained weights.

    ``str(error)`` gives the advice in Python terms (``pretrained_from_file=PATH``);
    ``error.describe("cli")`` gives it for the command line (``--weights FILE``) where it differs.
    """


class WeightsWarning(TwoAudiences, UserWarning):
    """A warning of the weights loader (a new classifier head ...), worded for the Python API by ``str()`` and
    for the command line by ``describe("cli")``."""


class WeightsDownloadError(WeightsError):
    """The checkpoint could not be downloaded (HTTP error, timeout, unreachable host, cut short)."""


class WeightsCacheError(WeightsError):
    """The torch hub cache cannot hold the checkpoint: a folder in the way, no write permission, a full
    disk, ``TORCH_HOME`` naming a file. The message names the path and what to do."""


class CorruptCheckpointError(WeightsError):
    """The file is not a readable PyTorch checkpoint (truncated, damaged, or something else)."""


class HashMismatchError(CorruptCheckpointError):
    """The file's SHA-256 is not the expected one (the checkpoint table's, the hash recorded at
    download, or the ``sha256=`` given)."""


class UnsafeCheckpointError(WeightsError):
    """The file holds Python objects other than plain weights and was refused."""


class CheckpointMismatchError(WeightsError):
    """The checkpoint does not fit the requested architecture (keys, shapes, dtypes or values)."""


def _numpy_safe_globals() -> list[Any]:
    """numpy scalars and dtypes, which NVIDIA's training script may store as ``best_prec1``."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in (np.float32, np.float64)}]


def _allow_numpy_scalars() -> contextlib.AbstractContextManager:
    """A context in which ``torch.load(weights_only=True)`` also accepts numpy scalars.

    ``torch.serialization.safe_globals`` exists from torch 2.5; on older torch the allowlist is not
    extended (plain tensor files load as before; a file holding numpy scalars is refused as unsafe,
    never mistaken for a damaged one).
    """
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:
        return contextlib.nullcontext()
    return safe_globals(_numpy_safe_globals())


# How torch.load(weights_only=True) words a refused global ("Unsupported global: GLOBAL x.y",
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"); torch 2.1 to 2.3 end
# their advice line with "Unsupported class posix.system", of which only that part is kept.
_UNSAFE_DETAIL = re.compile(
    r"^.*(?:unsupported global|not an allowed global).*$|unsupported class \S+", re.IGNORECASE | re.MULTILINE
)

#: What ``torch.load`` raises on a damaged, truncated or foreign file. Anything else (an ``AttributeError``
#: or ``ImportError`` of this environment, ``MemoryError``, an ``OSError`` of the disk) is not evidence
#: that the file is bad, so it propagates unchanged and the file is never deleted because of it.
DAMAGED_FILE_ERRORS: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError,  # also what weights_only raises for a refused global
    EOFError,
    RuntimeError,  # "PytorchStreamReader failed reading zip archive", "Invalid magic number", ...
    ValueError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OverflowError,
    struct.error,
    zipfile.BadZipFile,
)


#: The start of the UserWarning torch 2.1's ``torch.load`` gives about its own use of TypedStorage.
_TYPED_STORAGE_WARNING = r"TypedStorage is deprecated"


class CheckpointNotFoundError(FileNotFoundError):
    """The checkpoint path does not exist or is not a regular file (a folder, a named pipe, ``/dev/null``).

    ``str(error)`` words the advice for the Python API, ``error.describe("cli")`` for the command line.
    """

    def __init__(self, path: PathLike, what: Optional[str] = None) -> None:
        self.path = str(path)
        problem = "does not exist" if what is None else f"is {what}, not a file"
        self.messages = {
            audience: f"checkpoint {self.path!r} {problem}; give the path of the checkpoint file as {flag}"
            for audience, flag in (("python", "pretrained_from_file=PATH"), ("cli", "--weights FILE"))
        }
        super().__init__(self.messages["python"])

    def describe(self, audience: Audience = "python") -> str:
        """The message worded for ``audience``: ``"python"`` (the default) or ``"cli"``."""
        return self.messages.get(audience, str(self))


def read_checkpoint(path: PathLike) -> Any:
    """Load ``path`` with ``torch.load(weights_only=True)`` on the CPU.

    The file's first bytes are looked at before ``torch.load`` reads it: a zip archive cut short (its central
    directory, at the end, missing) and an ONNX model are refused with a message saying so.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist or is not a regular file (a ``FileNotFoundError``).
        UnsafeCheckpointError: the file contains objects other than tensors and plain containers.
        CorruptCheckpointError: the file is not a readable PyTorch checkpoint (one of
            :data:`DAMAGED_FILE_ERRORS` came out of ``torch.load``, or the first bytes already say so).
            Other errors propagate as they are.
    """
    path = Path(path)
    what = not_a_regular_file(path)
    if what is not None or not path.is_file():
        raise CheckpointNotFoundError(path, what)
    head = filetypes.read_head(path)
    if looks_like_onnx(head):
        raise _onnx_given_as_checkpoint(path)
    is_zip = head.startswith(ZIP_MAGIC)
    use_mmap = zipfile.is_zipfile(path)  # mmap works only for the zip format of torch.save
    if is_zip and not use_mmap:
        # torch's zip reader fails on such a file with a bare "OSError: [Errno 22] Invalid argument".
        raise CorruptCheckpointError(_corrupt_message(path, None, "BadZipFile: the zip archive is cut short, its "
                                                      "central directory, written last, is missing"))
    with _allow_numpy_scalars(), warnings.catch_warnings():
        # torch 2.1's torch.load warns about its own internal use of TypedStorage; nothing for users to act on.
        warnings.filterwarnings("ignore", message=_TYPED_STORAGE_WARNING, category=UserWarning)
        try:  # a str: torch 2.1 and 2.2 take mmap=True only with a file name given as str
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=use_mmap)
        except pickle.UnpicklingError as error:
            found = _UNSAFE_DETAIL.search(str(error))
            if found and not (not is_zip and _pickles_cut_short(path)):
                no_allowlist = "numpy" in found.group(0) and not hasattr(torch.serialization, "safe_globals")
                text = (
                    f"refusing to load {str(path)!r}: it contains Python objects other than weights "
                    f"({found.group(0).strip().rstrip('.')}), and unpickling them could run "
                    "arbitrary code. If you trust the file, extract the weights once yourself "
                    "(torch.load(path, weights_only=False)['state_dict']) and save them with "
                    "torch.save(state_dict, new_path), then load new_path"
                )
                note = (" torch 2.5 and later load the numpy scalars of training checkpoints (best_prec1) as "
                        "they are." if no_allowlist else "")
                raise UnsafeCheckpointError(f"{text}.{note}", cli_message=f"{text} with --weights.{note}") from error
            raise CorruptCheckpointError(_corrupt_message(path, error)) from error
        except DAMAGED_FILE_ERRORS as error:
            raise CorruptCheckpointError(_corrupt_message(path, error)) from error
        except OSError as error:
            # Seeking outside a damaged zip archive: EINVAL from a regular file is the file, not the disk.
            if is_zip and error.errno == errno.EINVAL:
                raise CorruptCheckpointError(_corrupt_message(path, error)) from error
            raise


def _onnx_given_as_checkpoint(path: Path) -> CorruptCheckpointError:
    start = f"{str(path)!r} is an ONNX model, not a PyTorch checkpoint"
    return CorruptCheckpointError(
        f"{start}: run it with resnet.deploy.runtimes.load_onnx_model(PATH) (ONNX Runtime or OpenVINO), or load the "
        "PyTorch checkpoint it was exported from",
        cli_message=f"{start}: give it as --onnx FILE (classify and evaluate run it), or give the PyTorch "
        "checkpoint it was exported from as --weights",
    )


class _Bounded:
    """A binary file whose reads never ask for more than what is left (pickletools reads lengths the file
    declares, which a damaged file can make huge)."""

    def __init__(self, file: Any, size: int) -> None:
        self.file, self.size = file, size

    def read(self, count: int = -1) -> bytes:
        left = max(0, self.size - self.file.tell())
        return self.file.read(left if count < 0 else min(count, left))

    def readline(self) -> bytes:
        return self.file.readline(max(1, self.size - self.file.tell()))

    def tell(self) -> int:
        return self.file.tell()


def _pickles_cut_short(path: Path, count: int = 5) -> bool:
    """Whether one of the first ``count`` pickles of the older ``torch.save`` format (magic number, protocol,
    system info, the object, its storage keys) ends before its STOP opcode, or is unreadable as a pickle.

    A refused "global" in such a file is the file cut short in the middle of a name, not a crafted object.
    The opcodes are only parsed (``pickletools.genops``), never executed.
    """
    import pickletools

    size = path.stat().st_size
    with open(path, "rb") as file:
        reader = _Bounded(file, size)
        for _ in range(count):
            if file.tell() >= size:
                return False
            try:
                for _op, _arg, _pos in pickletools.genops(reader):
                    pass
            except Exception:  # a cut or damaged pickle: genops raises ValueError, UnicodeDecodeError, ...
                return True
    return False


def _corrupt_message(path: Path, error: Optional[BaseException], reason: Optional[str] = None) -> str:
    size = path.stat().st_size if path.exists() else 0
    if reason is None and error is not None:
        reason = f"{type(error).__name__}: {_load_failure_reason(error)}"
    return (
        f"{str(path)!r} ({size} bytes) is not a readable PyTorch checkpoint: it is truncated, "
        f"damaged or not a checkpoint at all ({reason})"
    )


# torch's text around the reason for a refused or unreadable pickle: its advice to re-run with
# weights_only=False (which this repository never gives), a request to file an issue, a docs link.
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", re.S)
_TORCH_ADVICE = re.compile(r"weights_only|file an issue|internal miniz error|high likelihood", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _load_failure_reason(error: BaseException) -> str:
    """What ``torch.load`` found wrong, in whole sentences, without torch's own advice."""
    text = str(error)
    found = _UNPICKLER_REASON.search(text)
    if found and found.group(1):
        text = found.group(1)
    sentences = [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]
    kept = [s for s in sentences if not _TORCH_ADVICE.search(s)][:1]
    return " ".join(kept) if kept else "the file ends early or holds no checkpoint"


_PREFIXES = ("module.", "_orig_mod.")
_LAYERS_KEY = re.compile(r"^layers\.(\d+)\.")


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def resnet_stage_names(key: str) -> str:
    """A key in the ResNets' stage naming: NVIDIA's current training code names the stages ``layers.0`` ..
    ``layers.3``, the ResNets (and NVIDIA's NGC files) ``layer1`` .. ``layer4``."""
    return _LAYERS_KEY.sub(lambda m: f"layer{int(m.group(1)) + 1}.", key)


def extract_state_dict(
    obj: Any, source: str, key_map_fn: Optional[KeyMapFn] = None, *, stage_names: KeyMapFn = resnet_stage_names
) -> dict[str, torch.Tensor]:
    """Turn any supported checkpoint object into a state dict with the model family's key names.

    Accepts a flat ``name -> tensor`` mapping (NGC files, torchvision-layout state dicts)
    or a training checkpoint ``{"state_dict": ..., "epoch": ...}``. ``key_map_fn`` (the
    entrypoints' ``state_dict_key_map_fn``) is applied to each raw key first; then
    ``module.`` / ``_orig_mod.`` prefixes are stripped and ``stage_names`` names the stages as the
    family does (the default, :func:`resnet_stage_names`, turns ``layers.N`` into ``layer{N+1}``).
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointMismatchError(
            f"{source}: expected a state dict (a mapping of names to tensors) or a training "
            f"checkpoint with a 'state_dict' entry, found {type(obj).__name__}"
        )
    state: dict[str, torch.Tensor] = {}
    for raw_key, value in obj.items():
        if not isinstance(raw_key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointMismatchError(
                f"{source}: entry {raw_key!r} is a {type(value).__name__}, not a tensor; "
                "this is not a state dict of this model family"
            )
        key = raw_key if key_map_fn is None else key_map_fn(raw_key)
        state[stage_names(_strip_prefixes(key))] = value
    return state


def fit_state_dict(
    state: dict[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    source: str,
    target: str,
    *,
    skip_prefixes: tuple[str, ...] = (),
    squeeze_excitation: tuple[str, ...] = (".squeeze.",),
) -> dict[str, torch.Tensor]:
    """Check ``state`` against the model's ``expected`` entries and adapt harmless differences.

    Squeeze-excitation weights (entries whose name contains one of ``squeeze_excitation``; the default
    fits the ResNets' ``.squeeze.squeeze`` / ``.squeeze.expand``) are reshaped between 2-D (Linear) and
    4-D (1x1 conv) forms,
    float16 / bfloat16 / float64 tensors take the model's dtype (float32 weights, int64
    ``num_batches_tracked``), and keys under ``skip_prefixes`` are left out (so a new classifier
    head keeps its fresh initialisation). Then every value is checked to be finite: one reduction
    per tensor, 0.07-0.2 s for ResNet-50 on a loaded 2-core machine (isfinite().all(): 0.8-1.3 s).

    Raises:
        CheckpointMismatchError: naming ``source`` and ``target`` and listing the first missing,
            unexpected and wrongly shaped entries; or naming the first entry of a dtype that is not
            a weight's (integer or bool weights, complex, sparse or quantized tensors), or holding
            NaN or infinite values.
    """
    fitted: dict[str, torch.Tensor] = {}
    unexpected, wrong_shape, wrong_kind = [], [], []
    for key, value in state.items():
        if key.startswith(skip_prefixes):
            continue
        if key not in expected:
            unexpected.append(key)
            continue
        problem = _dtype_problem(value, expected[key])
        if problem:
            wrong_kind.append((key, problem))
            continue
        want = expected[key].shape
        if value.shape != want:
            if any(marker in key for marker in squeeze_excitation) and value.numel() == want.numel():
                value = value.reshape(want)
            else:
                wrong_shape.append((key, tuple(value.shape), tuple(want)))
                continue
        if value.dtype != expected[key].dtype:
            if value.is_floating_point() and not expected[key].is_floating_point():
                _check_finite(value, key, source)  # a NaN counter would turn into an arbitrary integer
            value = value.to(expected[key].dtype)
        fitted[key] = value
    missing = [k for k in expected if k not in state and not k.startswith(skip_prefixes)]
    if unexpected or missing or wrong_shape:
        lines = [f"  missing: {k} {list(expected[k].shape)}" for k in missing[:5]]
        lines += [f"  unexpected: {k} {list(state[k].shape)}" for k in unexpected[:5]]
        lines += [f"  wrong shape: {k}: file {list(f)}, model {list(m)}" for k, f, m in wrong_shape[:5]]
        raise CheckpointMismatchError(
            f"{source} does not fit {target}: {len(missing)} missing, {len(unexpected)} unexpected "
            f"and {len(wrong_shape)} wrongly shaped entries. First mismatches:\n" + "\n".join(lines)
        )
    if wrong_kind:
        key, problem = wrong_kind[0]
        others = f" ({len(wrong_kind) - 1} more entries like it)" if len(wrong_kind) > 1 else ""
        raise CheckpointMismatchError(
            f"{source}: entry {key!r} is {problem}{others}; weights must be floating-point tensors "
            "(float32, float16, bfloat16 or float64). The file is not a checkpoint of this model as trained; "
            "save the model's state_dict() and load that"
        )
    for key, value in fitted.items():
        _check_finite(value, key, source)
    return fitted


def _check_finite(value: torch.Tensor, key: str, source: str) -> None:
    # A finite sum proves every value finite (a NaN or an infinity makes it NaN or infinite) in one
    # reduction, without the boolean tensor of isfinite(); only a non-finite sum (or an overflow) is
    # looked at value by value.
    if not value.is_floating_point() or bool(torch.isfinite(value.sum())):
        return
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = value.numel() - int(finite.sum())
        raise CheckpointMismatchError(
            f"{source}: entry {key!r} holds {bad:,} NaN or infinite values (of {value.numel():,}); the "
            "weights are damaged or diverged in training, and a model built from them would output NaN. "
            "Use a checkpoint saved before the values broke"
        )


def _dtype_problem(value: torch.Tensor, expected: torch.Tensor) -> Optional[str]:
    """Why ``value`` cannot stand for ``expected`` (None when a dtype conversion is all it needs)."""
    if value.layout != torch.strided:
        return f"a sparse tensor ({value.layout})"
    if value.is_quantized:
        return f"a quantized tensor ({value.dtype})"
    if value.is_complex():
        return f"a complex tensor ({value.dtype})"
    if expected.is_floating_point() and not value.is_floating_point():
        return f"a {value.dtype} tensor where the model has {expected.dtype} weights"
    if value.dtype == torch.bool:
        return f"a {value.dtype} tensor where the model has a {expected.dtype} counter"
    return None
