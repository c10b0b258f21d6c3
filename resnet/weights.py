"""Getting NVIDIA's checkpoints onto disk and into a model, safely.

One module with one job: download into torch.hub's checkpoint cache (atomic,
with timeouts and a size check), read files with ``weights_only=True``, turn
every layout users hold into this repository's key names, and check that the
result fits the model before anything is loaded.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import struct
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .checkpoints import CHECKPOINTS, MIRROR_ENV, Checkpoint

PathLike = Union[str, "os.PathLike[str]"]
KeyMapFn = Callable[[str], str]

#: Seconds to wait for a connection, and for each read of the response.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

_OFFLINE_HELP = (
    "Without network access, supply the file yourself: put it at {cache} "
    "(the torch hub cache; set TORCH_HOME to move it), pass pretrained_from_file=PATH, "
    "or set {env}=URL to a mirror that serves the file by name."
)


class WeightsError(RuntimeError):
    """Base class of every error about getting or loading pretrained weights."""


class WeightsDownloadError(WeightsError):
    """The checkpoint could not be downloaded (HTTP error, timeout, unreachable host, cut short)."""


class CorruptCheckpointError(WeightsError):
    """The file is not a readable PyTorch checkpoint (truncated, damaged, or something else)."""


class UnsafeCheckpointError(WeightsError):
    """The file holds Python objects other than plain weights and was refused."""


class CheckpointMismatchError(WeightsError):
    """The checkpoint does not fit the requested architecture."""


def checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache: ``<torch.hub.get_dir()>/checkpoints`` (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def offline_help(checkpoint: Checkpoint) -> str:
    """The three ways to provide ``checkpoint`` without NGC, with the exact cache path."""
    return _OFFLINE_HELP.format(cache=checkpoint_dir() / checkpoint.file_name, env=MIRROR_ENV)


def download_file(
    url: str,
    destination: Path,
    *,
    progress: bool = True,
    timeout: Optional[tuple[float, float]] = None,
) -> Path:
    """Download ``url`` to ``destination`` atomically.

    The body goes to a hidden temporary file beside ``destination``, is checked
    against ``Content-Length``, and only then renamed into place, so an interrupted
    or short download never leaves a file under the final name.

    Raises:
        WeightsDownloadError: HTTP status other than 200, connection failure, a
            timeout (``timeout`` = (connect, per-read) seconds, by default
            (CONNECT_TIMEOUT, READ_TIMEOUT)), or a short body.
    """
    if timeout is None:
        timeout = (CONNECT_TIMEOUT, READ_TIMEOUT)
    import requests  # imported on first use: it adds about 0.1 s to every start-up

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.partial")
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise WeightsDownloadError(
                    f"downloading {url} failed: HTTP {response.status_code} {response.reason}"
                )
            expected = response.headers.get("Content-Length")
            total = int(expected) if expected and expected.isdigit() else None
            received = 0
            with open(partial, "wb") as out, torch.hub.tqdm(
                total=total,
                disable=not progress,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=destination.name,
            ) as bar:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise WeightsDownloadError(
                    f"downloading {url} was cut short: received {received} of {total} bytes"
                )
        os.replace(partial, destination)
    except requests.Timeout as error:
        raise WeightsDownloadError(
            f"downloading {url} timed out (connect {timeout[0]:g}s, read {timeout[1]:g}s): {error}"
        ) from error
    except requests.RequestException as error:
        raise WeightsDownloadError(f"downloading {url} failed: {error}") from error
    finally:
        partial.unlink(missing_ok=True)
    return destination


def resolve_url(checkpoint: Checkpoint, mirror: Optional[str] = None) -> str:
    """Where to download ``checkpoint`` from: ``mirror``, else ``$CONVNETS_WEIGHTS_MIRROR``, else NGC."""
    base = mirror or os.environ.get(MIRROR_ENV) or None
    return checkpoint.mirror_url(base) if base else checkpoint.url


def fetch_checkpoint(
    arch: str, *, mirror: Optional[str] = None, progress: bool = True
) -> Path:
    """Path of ``arch``'s NGC checkpoint in the torch hub cache, downloading it if it is not there."""
    checkpoint = CHECKPOINTS[arch]
    path = checkpoint_dir() / checkpoint.file_name
    if path.is_file():
        return path
    url = resolve_url(checkpoint, mirror)
    try:
        return download_file(url, path, progress=progress)
    except WeightsDownloadError as error:
        raise WeightsDownloadError(f"{error}\n{offline_help(checkpoint)}") from error


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
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked").
_UNSAFE_DETAIL = re.compile(r"^.*(?:unsupported global|not an allowed global).*$", re.IGNORECASE | re.MULTILINE)

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


def read_checkpoint(path: PathLike) -> Any:
    """Load ``path`` with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist (or is not a file).
        UnsafeCheckpointError: the file contains objects other than tensors and plain containers.
        CorruptCheckpointError: the file is not a readable PyTorch checkpoint (one of
            :data:`DAMAGED_FILE_ERRORS` came out of ``torch.load``). Other errors propagate as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint file {str(path)!r} does not exist"
            + (" (it is a directory)" if path.is_dir() else "")
            + "; check the path given as pretrained_from_file / --weights"
        )
    use_mmap = zipfile.is_zipfile(path)  # mmap works only for the zip format of torch.save
    with _allow_numpy_scalars():
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
        except pickle.UnpicklingError as error:
            found = _UNSAFE_DETAIL.search(str(error))
            if found:
                raise UnsafeCheckpointError(
                    f"refusing to load {str(path)!r}: it contains Python objects other than weights "
                    f"({found.group(0).strip().rstrip('.')}), and unpickling them could run "
                    "arbitrary code. If you trust the file, extract the weights once yourself "
                    "(torch.load(path, weights_only=False)['state_dict']) and save them with "
                    "torch.save(state_dict, new_path), then load new_path."
                ) from error
            raise CorruptCheckpointError(_corrupt_message(path, error)) from error
        except DAMAGED_FILE_ERRORS as error:
            raise CorruptCheckpointError(_corrupt_message(path, error)) from error


def _corrupt_message(path: Path, error: BaseException) -> str:
    size = path.stat().st_size if path.exists() else 0
    reason = str(error).split("\n", 1)[0] or type(error).__name__
    return (
        f"{str(path)!r} ({size} bytes) is not a readable PyTorch checkpoint: it is truncated, "
        f"damaged or not a checkpoint at all ({type(error).__name__}: {reason[:200]})"
    )


_PREFIXES = ("module.", "_orig_mod.")
_LAYERS_KEY = re.compile(r"^layers\.(\d+)\.")


def _normalise_key(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    # NVIDIA's current training code names the stages layers.0 .. layers.3.
    return _LAYERS_KEY.sub(lambda m: f"layer{int(m.group(1)) + 1}.", key)


def extract_state_dict(
    obj: Any, source: str, key_map_fn: Optional[KeyMapFn] = None
) -> dict[str, torch.Tensor]:
    """Turn any supported checkpoint object into a state dict with this repository's key names.

    Accepts a flat ``name -> tensor`` mapping (NGC files, torchvision-layout state dicts)
    or a training checkpoint ``{"state_dict": ..., "epoch": ...}``. ``key_map_fn`` (the
    entrypoints' ``state_dict_key_map_fn``) is applied to each raw key first; then
    ``module.`` / ``_orig_mod.`` prefixes are stripped and ``layers.N`` becomes ``layer{N+1}``.
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
        state[_normalise_key(key)] = value
    return state


def fit_state_dict(
    state: dict[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    source: str,
    target: str,
    *,
    skip_prefixes: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Check ``state`` against the model's ``expected`` entries and adapt harmless differences.

    Squeeze-excitation weights are reshaped between 2-D (Linear) and 4-D (1x1 conv) forms,
    floating tensors become float32, and keys under ``skip_prefixes`` are left out (so a
    new classifier head keeps its fresh initialisation).

    Raises:
        CheckpointMismatchError: naming ``source`` and ``target`` and listing the first
            missing, unexpected and wrongly shaped entries.
    """
    fitted: dict[str, torch.Tensor] = {}
    unexpected, wrong_shape = [], []
    for key, value in state.items():
        if key.startswith(skip_prefixes):
            continue
        if key not in expected:
            unexpected.append(key)
            continue
        want = expected[key].shape
        if value.shape != want:
            if ".squeeze." in key and value.numel() == want.numel():
                value = value.reshape(want)
            else:
                wrong_shape.append((key, tuple(value.shape), tuple(want)))
                continue
        if value.is_floating_point() and value.dtype != torch.float32:
            value = value.float()
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
    return fitted
