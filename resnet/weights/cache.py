"""NVIDIA's checkpoints in torch.hub's cache: found and verified, or downloaded once.

The cache holds, under ``<torch hub dir>`` (``TORCH_HOME`` moves it):

- ``checkpoints/<file>``: the checkpoint as NGC (or the mirror) served it;
- ``checkpoints/<file>.sha256``: its SHA-256, written when it was downloaded, in ``sha256sum``'s
  format (``sha256sum -c`` checks it); every later load verifies the file against it;
- ``checkpoints/.<file>.<random>.partial``: a download in progress, renamed into place only once
  complete and verified;
- ``.locks/<file>.lock``: held while a process downloads; other processes wait for it, then load
  the finished file instead of downloading it again.

Every failure is a :class:`~resnet.weights.reading.WeightsError` that names the path or URL and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import torch

from resnet.weights.catalogue import CHECKPOINTS, MIRROR_ENV, Checkpoint
from resnet.io.download import DownloadError, Limits, open_stream
from resnet.weights.reading import Audience, HashMismatchError, WeightsCacheError, WeightsDownloadError

#: Seconds to wait for a connection, and for each read of the response.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: The slowest checkpoint download accepted: MIN_RATE bytes per second on average over every
#: RATE_WINDOW seconds (8 KiB/s, about 65 kbit/s). At that pace the 98 MB ResNet-50 file takes
#: 3.5 hours, so an honest slow link finishes; a server trickling a byte a second is dropped after
#: 2 minutes. There is no fixed total deadline, which would cut slow honest links.
MIN_RATE = 8 * 1024
RATE_WINDOW = 120.0
#: The largest checkpoint accepted, announced or not: 1 GiB, over five times the largest NGC file
#: (SE-ResNeXt-101 32x4d, 45.3 M parameters, about 182 MB in float32; ResNet-50's is 97.74 MB).
MAX_CHECKPOINT_BYTES = 1 << 30

_HEX64 = re.compile(r"[0-9a-f]{64}")
_USER_AGENT = "nvidia-convnets-torchhub"
_LOCAL_FILE = {"python": "pass pretrained=False, pretrained_from_file=PATH", "cli": "pass --weights FILE"}
_RETRY = {"python": "run the same call again", "cli": "run the same command again"}
_MIRROR_ADVICE = {
    "python": f"set {MIRROR_ENV}=URL (or mirror=URL) to a server that has the file by name",
    "cli": f"pass --mirror URL (or set {MIRROR_ENV}=URL) for a server that has the file by name",
}
_NO_MIRROR = {"python": "leave out mirror=", "cli": "leave out --mirror"}


def checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache: ``<torch.hub.get_dir()>/checkpoints`` (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sidecar_path(path: Path) -> Path:
    """Where the SHA-256 of the cached file ``path`` is recorded: ``<path>.sha256``."""
    return path.with_name(path.name + ".sha256")


def offline_help(
    checkpoint: Checkpoint,
    audience: Audience = "python",
    *,
    mirror: Optional[str] = None,
    mirror_from_env: bool = False,
    missing_on_mirror: bool = False,
) -> str:
    """How to provide ``checkpoint`` without the server that failed, with the exact cache path.

    Worded for the Python API (``audience="python"``: ``pretrained=False, pretrained_from_file=PATH``,
    ``mirror=URL``) or the command line (``"cli"``: ``--weights FILE``, ``--mirror URL``). With
    ``mirror`` (the mirror that was used; ``mirror_from_env`` when ``$CONVNETS_WEIGHTS_MIRROR`` chose
    it) the advice is about that mirror; ``missing_on_mirror`` says it does not have the file.
    """
    cache = checkpoint_dir() / checkpoint.file_name
    place = f"put the file at {cache} (the torch hub cache; TORCH_HOME moves it)"
    local = _LOCAL_FILE[audience]
    if mirror is None:
        other = _MIRROR_ADVICE[audience]
        return f"Without network access, supply the file yourself: {place}, {local}, or {other}."
    source = f" (set by {MIRROR_ENV})" if mirror_from_env else ""
    problem = "does not have" if missing_on_mirror else "could not serve"
    first = f"The mirror {mirror}{source} {problem} {checkpoint.file_name}: "
    first += "copy the file there" if missing_on_mirror else "try again later"
    ngc = f"unset {MIRROR_ENV}" if mirror_from_env else _NO_MIRROR[audience]
    return f"{first}, {place}, {local}, or {ngc} to download from NGC."


def resolve_url(checkpoint: Checkpoint, mirror: Optional[str] = None) -> str:
    """Where to download ``checkpoint`` from: ``mirror``, else ``$CONVNETS_WEIGHTS_MIRROR``, else NGC."""
    base = mirror or os.environ.get(MIRROR_ENV) or None
    return checkpoint.mirror_url(base) if base else checkpoint.url


def normalise_sha256(sha256: Optional[str]) -> Optional[str]:
    """``sha256`` as 64 lower-case hex digits (None stays None).

    Raises:
        ValueError: it is not a SHA-256 hex digest.
    """
    if sha256 is None:
        return None
    value = sha256.strip().lower() if isinstance(sha256, str) else sha256
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError(
            f"sha256 must be the 64 hex digits of a SHA-256 digest (as `sha256sum FILE` prints), got {sha256!r}"
        )
    return value


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path`` (lower-case hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_file_hash(path: Path, sha256: str) -> None:
    """Verify a user's own file against the ``sha256=`` they gave; the file is never touched.

    Raises:
        HashMismatchError: naming the file, both digests and what to do.
    """
    actual = file_sha256(path)
    if actual != sha256:
        raise HashMismatchError(
            f"{str(path)!r} has SHA-256 {actual}, not the {sha256} given as sha256=: it is damaged or not "
            "the file you meant. Check the file (sha256sum prints its digest) or the value passed"
        )


def fetch_checkpoint(
    arch: str, *, mirror: Optional[str] = None, progress: bool = True, sha256: Optional[str] = None
) -> Path:
    """Path of ``arch``'s NGC checkpoint in the torch hub cache, verified, downloading it if needed.

    A cached file is verified against the checkpoint table's SHA-256 when known, else against the
    hash recorded beside it at download, and against ``sha256`` when given. Verifying costs one
    read of the file, done on every load. Measured for the 102.5 MB stand-in of ResNet-50's file
    (AMD EPYC, 2 shared cores): 0.07 s idle and 0.2-0.3 s under load with the CPU's SHA
    instructions, 0.65 s with them hidden from OpenSSL (as on CPUs without them), next to 0.7-1 s
    for the whole load. A check by size and time stamp would cost nothing but miss a damaged disk
    block or a copy that kept the time stamp; a model quietly built from damaged weights costs more.

    A missing file is downloaded under a lock, so that processes starting together download it once.

    Raises:
        WeightsDownloadError: the download failed (the message names the URL and the offline routes).
        WeightsCacheError: the cache cannot hold the file (names the path and what to do).
        HashMismatchError: (a CorruptCheckpointError) the cached file does not match its recorded hash
            (it was removed, so that the next call downloads it afresh), or the file does not match
            ``sha256`` (a download that differs is not kept; a cached file is left as it is).
    """
    checkpoint = CHECKPOINTS[arch]
    sha256 = normalise_sha256(sha256)
    path = checkpoint_dir() / checkpoint.file_name
    if not _is_cached(path):
        if _download_once(checkpoint, path, mirror=mirror, progress=progress, sha256=sha256):
            return path  # verified while it streamed in
    _verify_cached(path, checkpoint, sha256)
    return path


def discard(path: Path) -> Optional[str]:
    """Remove a cached checkpoint and its recorded hash; return why that failed, or None."""
    try:
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
    except OSError as error:
        return error.strerror or str(error)
    return None


def removal_note(problem: Optional[str], path: Path, audience: Audience) -> str:
    """The sentence that follows a damaged cache file's error, given what :func:`discard` returned."""
    if problem is None:
        return f"The damaged file was removed from the cache; {_RETRY[audience]} to download it afresh."
    return f"It could not be removed ({problem}): delete {path} yourself, then {_RETRY[audience]}."


# --------------------------------------------------------------------------- cached file


def _is_cached(path: Path) -> bool:
    try:
        if path.is_file():
            return True
        if path.is_dir():
            raise _cache_error(OSError(errno.EISDIR, os.strerror(errno.EISDIR)), path, "use")
        if path.exists():  # a FIFO, a socket, a device
            raise _cache_error(OSError(errno.EINVAL, "it is not a regular file; remove it"), path, "use")
    except OSError as error:  # a path component that cannot be examined
        raise _cache_error(error, path, "use") from error
    return False


def _verify_cached(path: Path, checkpoint: Checkpoint, sha256: Optional[str]) -> None:
    sidecar = sidecar_path(path)
    try:
        recorded = checkpoint.sha256 or _read_sidecar(sidecar)
        if recorded is None and sha256 is None:
            return  # a file put into the cache by hand, and nothing to check it against
        actual = file_sha256(path)
    except OSError as error:
        raise _cache_error(error, path, "read") from error
    if recorded is not None and actual != recorded:
        where = "the checkpoint table" if checkpoint.sha256 else f"{sidecar.name}, written when it was downloaded"
        detail = "its recorded hash is unreadable" if recorded == "" else f"it has SHA-256 {actual}, not {recorded}"
        start = f"The cached checkpoint {path} is damaged: {detail} (from {where})."
        problem = discard(path)
        raise HashMismatchError(
            f"{start} {removal_note(problem, path, 'python')}",
            cli_message=f"{start} {removal_note(problem, path, 'cli')}",
        )
    if sha256 is not None and actual != sha256:
        verified = "it matches the hash recorded at download, so" if recorded else "nothing else records its hash;"
        raise HashMismatchError(
            f"The cached checkpoint {path} has SHA-256 {actual}, not the {sha256} given as sha256=: {verified} "
            "check the value passed (or remove the file to download it afresh)"
        )


def _read_sidecar(sidecar: Path) -> Optional[str]:
    """The recorded digest, None without a record, or "" for a record that cannot be read as one."""
    try:
        text = sidecar.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    digest = text.split(maxsplit=1)[0].lower() if text.split() else ""
    return digest if _HEX64.fullmatch(digest) else ""


# --------------------------------------------------------------------------- download


def checkpoint_limits() -> Limits:
    """The bounds of a checkpoint download (this module's constants, read at each call)."""
    return Limits(
        CONNECT_TIMEOUT, READ_TIMEOUT, min_rate=MIN_RATE, rate_window=RATE_WINDOW, max_bytes=MAX_CHECKPOINT_BYTES
    )


def _download_once(
    checkpoint: Checkpoint, path: Path, *, mirror: Optional[str], progress: bool, sha256: Optional[str]
) -> bool:
    """Download ``checkpoint`` to ``path`` unless another process does it first; True if this one did."""
    url = resolve_url(checkpoint, mirror)
    lock_file = Path(torch.hub.get_dir()) / ".locks" / f"{path.name}.lock"
    for folder, role in ((path.parent, "create the cache folder"), (lock_file.parent, "create the lock folder")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _cache_error(error, folder, role) from error
    with _download_lock(lock_file, path, progress):
        if path.is_file():
            return False  # another process downloaded it while this one waited
        _remove_stale_partials(path)
        try:
            _download(url, path, checkpoint, progress=progress, sha256=sha256)
        except DownloadError as error:
            raise _download_failure(error, checkpoint, mirror) from None
    return True


@contextlib.contextmanager
def _download_lock(lock_file: Path, path: Path, progress: bool) -> Iterator[None]:
    """Hold ``lock_file`` (waiting, with a note on stderr when ``progress``, if another process has it)."""
    import filelock

    lock = filelock.FileLock(str(lock_file))
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if progress:
                print(
                    f"Waiting for another process that is downloading {path.name} (lock {lock_file}) ...",
                    file=sys.stderr, flush=True,
                )
            lock.acquire()
    except OSError as error:
        raise _cache_error(error, lock_file, "create the lock file") from error
    try:
        yield
    finally:
        lock.release()


def _remove_stale_partials(path: Path) -> None:
    """Remove what killed downloads of ``path`` left behind.

    Called with the download lock held: every download of this file writes its partial files only
    while holding that lock, so any that exist now belong to a process that died (SIGKILL, power
    loss) and will never finish them.
    """
    stale = re.compile(rf"\.{re.escape(path.name)}(\.sha256)?\.[0-9a-f]{{32}}\.partial")
    for leftover in path.parent.iterdir():
        if stale.fullmatch(leftover.name):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _download(url: str, path: Path, checkpoint: Checkpoint, *, progress: bool, sha256: Optional[str]) -> None:
    """Stream ``url`` into a partial file, verify it, record its hash, then rename it to ``path``."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    sidecar = sidecar_path(path)
    sidecar_partial = sidecar.with_name(f".{sidecar.name}.{uuid.uuid4().hex}.partial")
    digest = hashlib.sha256()
    try:
        with open_stream(url, checkpoint_limits(), headers={"User-Agent": _USER_AGENT}) as stream:
            if stream.status != 200:
                raise stream.status_error()
            from tqdm import tqdm  # imported on first download, like requests

            with _writing(partial, path) as out, tqdm(
                total=stream.content_length, disable=not progress, unit="B", unit_scale=True,
                unit_divisor=1024, desc=path.name,
            ) as bar:
                shown = 0  # counted here: a disabled bar of tqdm < 4.17 keeps no count (bar.n)
                for chunk in stream.chunks(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(stream.wire_bytes - shown)
                    shown = stream.wire_bytes
        actual = digest.hexdigest()
        for expected, source in ((checkpoint.sha256, "the checkpoint table"), (sha256, "sha256=")):
            if expected is not None and actual != expected:
                raise HashMismatchError(
                    f"the file served at {url} has SHA-256 {actual}, not the {expected} of {source}: it is "
                    "damaged or not NVIDIA's file, and was not kept. Check the server (or the value passed)"
                )
        with _writing(sidecar_partial, sidecar) as out:
            out.write(f"{actual}  {path.name}\n".encode("ascii"))
        try:
            os.replace(sidecar_partial, sidecar)  # the record first: a file in place is always verifiable
            os.replace(partial, path)
        except OSError as error:
            raise _cache_error(error, path, "write") from error
    finally:
        for leftover in (partial, sidecar_partial):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _writing(partial: Path, final: Path) -> Iterator:
    """``partial`` open for writing; an OSError of the disk becomes a WeightsCacheError naming ``final``."""
    try:
        with open(partial, "wb") as out:
            yield out
    except OSError as error:
        raise _cache_error(error, final, "write") from error


def _download_failure(error: DownloadError, checkpoint: Checkpoint, mirror: Optional[str]) -> WeightsDownloadError:
    """A WeightsDownloadError for ``error``, with the offline routes worded for Python and the CLI."""
    verb = {"connect-timeout": "timed out", "read-timeout": "timed out", "deadline": "timed out",
            "too-slow": "stalled", "incomplete": "was cut short"}.get(error.kind, "failed")
    head = f"downloading {error.url} {verb}: {error.detail}"
    base = mirror or os.environ.get(MIRROR_ENV) or None
    context = dict(mirror=base, mirror_from_env=base is not None and not mirror,
                   missing_on_mirror=base is not None and error.status == 404)
    return WeightsDownloadError(
        f"{head}\n{offline_help(checkpoint, 'python', **context)}",
        cli_message=f"{head}\n{offline_help(checkpoint, 'cli', **context)}",
    )


def _cache_error(error: OSError, path: Path, action: str) -> WeightsCacheError:
    """A WeightsCacheError for an OSError met while trying to ``action`` ``path`` in the cache."""
    code = error.errno
    if code in (errno.ENOTDIR, errno.EEXIST) or (code == errno.EISDIR and action != "use"):
        blocker = _first_file_in(path)
        home = os.environ.get("TORCH_HOME")
        if blocker is not None and home is not None and blocker in (Path(home), *Path(home).parents):
            cause = f"{blocker} is a file, not a folder"
            advice = f"point TORCH_HOME at a folder (it is {home!r})"
        elif blocker is not None:
            cause = f"{blocker} is a file, not a folder"
            advice = f"remove or rename {blocker} (the cache needs a folder there), or point TORCH_HOME elsewhere"
        else:
            cause, advice = error.strerror or str(error), "point TORCH_HOME at another folder"
    elif code == errno.EISDIR:
        cause = "a directory is where the checkpoint file belongs"
        advice = f"remove that directory (rm -r {path}) or point TORCH_HOME at another folder"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) and action == "read":
        cause = f"permission denied ({error.strerror})"
        advice = f"make the file readable (chmod a+r {path}) or point TORCH_HOME at another folder"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = f"permission denied ({error.strerror})"
        advice = "make the folder writable or point TORCH_HOME at a writable folder"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        cause = "no space left on the device"
        advice = "free some space (the largest checkpoint needs about 180 MB) or point TORCH_HOME at another disk"
    else:
        cause = error.strerror or str(error)
        advice = "check the disk and the folder, or point TORCH_HOME at another folder"
    where = " in the torch hub cache" if action in ("use", "read", "write") else ""  # the others name a folder
    head = f"cannot {action} {path}{where}: {cause}. Fix: {advice}, or"
    return WeightsCacheError(
        f"{head} {_LOCAL_FILE['python']} to load a file you have",
        cli_message=f"{head} {_LOCAL_FILE['cli']} to load a file you have",
    )


def _first_file_in(path: Path) -> Optional[Path]:
    """The first component of ``path`` that exists and is not a folder (blocking folders under it)."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None
