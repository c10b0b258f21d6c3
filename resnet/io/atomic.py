"""Output that is either complete or absent: atomic files and folders, with explicit permissions.

Whatever a command writes (an export folder, a checkpoint, a chart) is written beside its target
under a temporary name and renamed into place only once complete. An error or an interrupt leaves
no partial output behind, and a file or folder that was already there stays as it was until the
new one replaces it in one rename.

The temporary name says who writes it: ``.<target>.<host>-<pid>-<random>.partial<suffix>`` (a
folder moved aside while it is replaced: ``....old``), where ``<host>`` is a short hash of the
machine's name and process namespace and ``<pid>`` the writer's process id, ten digits. A process
killed outright (SIGKILL, a power cut) cannot remove its temporary output, so the next write of the
same target on the same machine removes those whose process no longer runs
(:func:`sweep_stale`); those of a writer still running, or of another machine, stay. A long target
name is shortened in the temporary name (with a hash of it), so that any valid file name can be
written. Special files are never replaced: a target that is a named pipe, a device or a socket is
refused, and a symbolic link is written through (the file or folder it points to is replaced; the
link stays).

Permissions are set explicitly rather than taken from the process umask (reading the umask means
changing it, which races with other threads): files get :data:`FILE_MODE` (``rw-r--r--``) and
folders :data:`DIR_MODE` (``rwxr-xr-x``), so that the output can be read by other accounts, such as
a Triton server container running as its own user, whatever the umask of the process that wrote
it. To keep an output private, put it in a folder that only you can enter.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
from pathlib import Path
from typing import Iterator, Optional

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "OutputPathError",
    "atomic_directory",
    "atomic_file",
    "check_directory_target",
    "check_file_target",
    "file_kind",
    "staging_name",
    "sweep_stale",
]

#: Permissions of every file written through this module: owner read/write, everyone else read.
FILE_MODE = 0o644
#: Permissions of every folder made through this module: owner full access, everyone else read/enter.
DIR_MODE = 0o755
#: The longest file name (bytes) most file systems take; temporary names are kept within it.
NAME_MAX = 255


class OutputPathError(ValueError):
    """An output path that cannot receive what is to be written; the message names it and what to do."""


def file_kind(mode: int) -> str:
    """What a ``stat`` mode says a path is: ``"a regular file"``, ``"a named pipe (FIFO)"``, ...."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISLNK, "a symbolic link"))
    return next((name for test, name in kinds if test(mode)), "a special file")


# --------------------------------------------------------------------------- checks


def check_file_target(target: os.PathLike | str) -> Path:
    """Raise :class:`OutputPathError` unless a file can be written at ``target``; return where it goes.

    The folder it goes into must exist and be writable; ``target`` must not be a folder, nor a named
    pipe, a device or a socket (a rename would replace the special file with a plain one). A symbolic
    link is written through: the returned path is the file it points to (which may not exist yet).
    """
    given = Path(target)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    via = f" (where the link {str(given)!r} points)" if target != given else ""
    try:
        info = os.stat(target)
    except OSError:
        info = None  # absent (or not examinable: the folder checks below say why)
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputPathError(f"{str(target)!r}{via} is a folder; give the path of a file to write (a new name "
                              "inside it, for instance)")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise OutputPathError(f"{str(target)!r}{via} is {file_kind(info.st_mode)}, not a regular file; a file "
                              "written there would replace it: give the path of a regular file")
    parent = target.parent
    if not parent.exists():
        raise OutputPathError(f"cannot write {str(target)!r}: the folder {str(parent)!r} does not exist; "
                              "create it first or choose another path")
    _check_writable_folder(parent, target)
    return target


def check_directory_target(target: os.PathLike | str, *, force: bool = False) -> Path:
    """Raise :class:`OutputPathError` unless ``target`` can become an output folder; return where it goes.

    ``target`` may be absent (its missing parent folders are made) or an empty folder; a non-empty
    folder only with ``force``. The nearest existing folder above it must be writable. A folder that a
    rename cannot replace is refused here, before any work: the file system's root, a mount point, and
    the folder the process runs in or one above it (``.``, ``x/..``). The returned path has links and
    ``..`` resolved: a link to a folder is written through.
    """
    given = Path(target)
    target = Path(os.path.realpath(given))
    shown = repr(str(given)) if str(given) == str(target) else f"{str(given)!r} ({str(target)!r})"
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"output {shown} exists and is not a directory; choose another path")
    if target == Path(target.anchor):
        raise OutputPathError(f"output {shown} is the root of the file system; give a new folder inside it")
    here = Path(os.path.realpath(os.getcwd()))
    if target == here or target in here.parents:
        raise OutputPathError(
            f"output {shown} is the folder this command runs in{'' if target == here else ' or one above it'}; "
            "the output folder is replaced as a whole, so give a new folder (e.g. exported/)"
        )
    if target.is_dir() and os.path.ismount(target):
        raise OutputPathError(f"output {shown} is a mount point, which cannot be replaced; give a new folder "
                              "inside it")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutputPathError(
            f"output directory {shown} exists and is not empty; pass --force to replace it "
            "or choose another directory"
        )
    existing = next((folder for folder in target.parents if folder.exists()), Path(target.anchor))
    _check_writable_folder(existing, target)
    return target


def _check_writable_folder(folder: Path, target: Path) -> None:
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {str(target)!r}: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {str(target)!r}: the folder {str(folder)!r} is not writable "
                              "for this user; choose another path")


# --------------------------------------------------------------------------- temporary names

#: Bytes a temporary name adds around the target's name: ".", ".<token>", ".partial", a suffix of up to
#: :data:`_SUFFIX_MAX` bytes. The name part is the same for every kind of temporary output of one target.
_SUFFIX_MAX = 32
_TOKEN_LENGTH = 8 + 1 + 10 + 1 + 8
_RESERVED = 1 + 1 + _TOKEN_LENGTH + len(".partial") + _SUFFIX_MAX
_STAGING = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{10})-[0-9a-f]{8}\.(?P<kind>partial|old)"
                      r"(?P<suffix>.*)", re.DOTALL)


def _machine() -> str:
    """8 hex digits naming this machine and process namespace (two containers may share a host name)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


_MACHINE = _machine()


def _name_part(name: str) -> str:
    """``name`` as temporary names carry it: cut, with a hash of the whole, where it would not fit."""
    encoded = os.fsencode(name)
    budget = NAME_MAX - _RESERVED
    if len(encoded) <= budget:
        return name
    return os.fsdecode(encoded[:budget - 9]) + "~" + hashlib.sha256(encoded).hexdigest()[:8]


def staging_name(target_name: str, kind: str = "partial", suffix: str = "") -> str:
    """A fresh temporary name for output to ``target_name`` of this process: ``kind`` is ``partial`` (being
    written) or ``old`` (a previous output moved aside); ``suffix`` (such as ``.png``) ends it when short
    enough. The name fits :data:`NAME_MAX` bytes whatever the target's name."""
    if len(os.fsencode(suffix)) > _SUFFIX_MAX:
        suffix = ""
    token = f"{_MACHINE}-{os.getpid():010d}-{secrets.token_hex(4)}"
    return f".{_name_part(target_name)}.{token}.{kind}{suffix}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (True where that cannot be told safely)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    return True


def sweep_stale(target: os.PathLike | str, *, every: bool = False) -> list[Path]:
    """Remove the temporary output that dead processes left for ``target``; return what was removed.

    Without ``every``, only temporary names of this machine whose process no longer runs are removed;
    with ``every`` (for a caller that holds a lock every writer of ``target`` takes), all of them, and
    those of the earlier naming (``.<target>.<12 hex>.partial<suffix>``) too. A previous output moved
    aside (``.old``) by a process that died before it put the new one in place is moved back when
    ``target`` is missing. Errors are ignored: what cannot be removed stays.
    """
    target = Path(target)
    name = _name_part(target.name)
    legacy = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{12}}\.partial{re.escape(target.suffix)}")
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        found = _STAGING.fullmatch(entry.name)
        if found and found["name"] == name:
            dead = found["host"] == _MACHINE and not _alive(int(found["pid"]))
            if not (every or dead):
                continue
            if found["kind"] == "old" and not os.path.lexists(target):
                with contextlib.suppress(OSError):
                    os.replace(entry.path, target)
                continue
        elif not (every and legacy.fullmatch(entry.name)):
            continue
        _remove(Path(entry.path))
        removed.append(Path(entry.path))
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _fresh(folder: Path, target_name: str, kind: str, suffix: str, make) -> Path:
    """``make(path)`` at a fresh temporary name in ``folder``, trying again should the name be taken."""
    for _ in range(100):
        path = folder / staging_name(target_name, kind, suffix)
        try:
            make(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder))


# --------------------------------------------------------------------------- writers


@contextlib.contextmanager
def atomic_file(target: os.PathLike | str, *, mode: Optional[int] = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write to; on success it becomes ``target``.

    The temporary name ends with ``target``'s suffix, so writers that pick a format from the suffix
    (``savefig``) pick the right one. On leaving the block the file gets ``mode`` (``None``: what any new
    file of the process gets, 0o666 less its umask), is flushed to disk and renamed over ``target`` in one
    step, and the rename is flushed to disk too; on any error (or interrupt) it is removed and an existing
    ``target`` is left as it was. Raises :class:`OutputPathError` first when ``target`` cannot be written
    (see :func:`check_file_target`; a link is written through). Temporary files that killed writers left
    for ``target`` are removed first (:func:`sweep_stale`). ::

        with atomic_file(checkpoint_path) as path:
            torch.save(state, path)
    """
    target = check_file_target(target)
    sweep_stale(target)
    # Exclusive create (never someone else's file); 0o666 lets the kernel apply the umask, with no need to read it.
    staging = _fresh(target.parent, target.name, "partial", target.suffix,
                     lambda path: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))
    try:
        yield staging
        if mode is not None:
            os.chmod(staging, mode)
        _flush_to_disk(staging)
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    _flush_folder(target.parent)


@contextlib.contextmanager
def atomic_directory(
    target: os.PathLike | str, *, force: bool = False, dir_mode: int = DIR_MODE, file_mode: int = FILE_MODE
) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it becomes ``target``.

    ``target`` may be absent or an empty folder; a non-empty one is replaced only with ``force``
    (and only once everything was written). On success every folder and file inside gets
    ``dir_mode`` / ``file_mode`` (and so do parent folders made for ``target``) before the swap. On
    any error the temporary folder and any parent folders made for it are removed, and an existing
    ``target`` is left as it was. Raises :class:`OutputPathError` first when ``target`` cannot
    receive the output (see :func:`check_directory_target`). Temporary folders that killed writers
    left for ``target`` are removed first (:func:`sweep_stale`).
    """
    target = check_directory_target(target, force=force)
    made = _make_parents(target.parent, dir_mode)
    try:
        sweep_stale(target)
        staging = _fresh(target.parent, target.name, "partial", "", os.mkdir)
    except BaseException:
        _remove_made(made)
        raise
    try:
        yield staging
        _finish_tree(staging, dir_mode, file_mode)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_made(made)
        raise


def _flush_to_disk(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _flush_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the platform allows it (not on Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _finish_tree(root: Path, dir_mode: int, file_mode: int) -> None:
    """Give ``root`` and everything below it their modes and flush the files to disk."""
    os.chmod(root, dir_mode)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), dir_mode)
        for name in files:
            path = Path(folder, name)
            os.chmod(path, file_mode)
            _flush_to_disk(path)


def _make_parents(parent: Path, mode: int) -> list[Path]:
    """Create ``parent`` and its missing ancestors with ``mode``; return those made, deepest first."""
    missing = []
    for folder in (parent, *parent.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except BaseException:
            _remove_made([f for f in missing if f.exists()])
            raise
        os.chmod(folder, mode)
    return missing


def _remove_made(made: list[Path]) -> None:
    for folder in made:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    # An existing folder (empty, or replaced with force) is moved aside first, so that the swap
    # is two renames and the old output comes back if the second one fails (or, should this process be
    # killed in between, at the next write of the target: sweep_stale).
    backup = target.parent / staging_name(target.name, "old")
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)
