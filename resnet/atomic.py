"""Output that is either complete or absent: atomic files and folders, with explicit permissions.

Whatever a command writes (an export folder, a checkpoint, a chart) is written beside its target
under a temporary name and renamed into place only once complete. An error or an interrupt leaves
no partial output behind, and a file or folder that was already there stays as it was until the
new one replaces it in one rename.

Permissions are set explicitly rather than taken from the process umask (reading the umask means
changing it, which races with other threads): files get :data:`FILE_MODE` (``rw-r--r--``) and
folders :data:`DIR_MODE` (``rwxr-xr-x``), so that the output can be read by other accounts, such as
a Triton server container running as its own user, whatever the umask of the process that wrote
it. To keep an output private, put it in a folder that only you can enter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
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
]

#: Permissions of every file written through this module: owner read/write, everyone else read.
FILE_MODE = 0o644
#: Permissions of every folder made through this module: owner full access, everyone else read/enter.
DIR_MODE = 0o755


class OutputPathError(ValueError):
    """An output path that cannot receive what is to be written; the message names it and what to do."""


# --------------------------------------------------------------------------- checks


def check_file_target(target: os.PathLike | str) -> Path:
    """Raise :class:`OutputPathError` unless a file can be written at ``target``; return it as a Path.

    The folder it goes into must exist and be writable, and ``target`` must not be a folder.
    """
    target = Path(target)
    if target.is_dir():
        raise OutputPathError(f"{str(target)!r} is a folder; give the path of a file to write (a new name "
                              "inside it, for instance)")
    parent = target.parent
    if not parent.exists():
        raise OutputPathError(f"cannot write {str(target)!r}: the folder {str(parent)!r} does not exist; "
                              "create it first or choose another path")
    _check_writable_folder(parent, target)
    return target


def check_directory_target(target: os.PathLike | str, *, force: bool = False) -> Path:
    """Raise :class:`OutputPathError` unless ``target`` can become an output folder; return it as a Path.

    ``target`` may be absent (its missing parent folders are made) or an empty folder; a non-empty
    folder only with ``force``. The nearest existing folder above it must be writable.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"output {str(target)!r} exists and is not a directory; choose another path")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutputPathError(
            f"output directory {str(target)!r} exists and is not empty; pass --force to replace it "
            "or choose another directory"
        )
    existing = next((folder for folder in target.absolute().parents if folder.exists()), Path(target.anchor))
    _check_writable_folder(existing, target)
    return target


def _check_writable_folder(folder: Path, target: Path) -> None:
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {str(target)!r}: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {str(target)!r}: the folder {str(folder)!r} is not writable "
                              "for this user; choose another path")


# --------------------------------------------------------------------------- writers


@contextlib.contextmanager
def atomic_file(target: os.PathLike | str, *, mode: Optional[int] = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write to; on success it becomes ``target``.

    The temporary name ends with ``target``'s suffix, so writers that pick a format from the suffix
    (``savefig``) pick the right one. On leaving the block the file gets ``mode`` (``None``: what any new
    file of the process gets, 0o666 less its umask), is flushed to disk and renamed over ``target`` in one
    step, and the rename is flushed to disk too; on any error (or interrupt) it is removed and an existing
    ``target`` is left as it was. Raises :class:`OutputPathError` first when ``target`` cannot be written
    (see :func:`check_file_target`). ::

        with atomic_file(checkpoint_path) as path:
            torch.save(state, path)
    """
    target = check_file_target(target)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial{target.suffix}")
    # Exclusive create (never someone else's file); 0o666 lets the kernel apply the umask, with no need to read it.
    os.close(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
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
    receive the output (see :func:`check_directory_target`).
    """
    target = check_directory_target(target, force=force)
    made = _make_parents(target.parent, dir_mode)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
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
    # is two renames and the old output comes back if the second one fails.
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    backup.rmdir()
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)
