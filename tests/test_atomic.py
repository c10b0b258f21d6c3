"""resnet.io.atomic: output written completely or not at all, with modes other users can read."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT

from resnet.io.atomic import (
    DIR_MODE,
    FILE_MODE,
    OutputPathError,
    atomic_directory,
    atomic_file,
    check_directory_target,
    check_file_target,
    staging_name,
    sweep_stale,
)


@pytest.fixture
def private_umask():
    """Run the test under umask 077, the most private setting a user may have."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_file_replaces_the_target_in_one_step(tmp_path: Path, private_umask) -> None:
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    with atomic_file(target) as staging:
        assert staging.parent == tmp_path and staging.name.endswith(".pth") and staging != target
        staging.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # replaced only at the end
    assert target.read_bytes() == b"new"
    assert mode(target) == FILE_MODE == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_atomic_file_takes_an_explicit_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret.pth"
    with atomic_file(target, mode=0o600) as staging:
        staging.write_bytes(b"x")
    assert mode(target) == 0o600


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    with pytest.raises(type(error)):
        with atomic_file(target) as staging:
            staging.write_bytes(b"half")
            raise error
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_file_targets_that_cannot_be_written(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(OutputPathError, match="does not exist"):
        check_file_target(tmp_path / "missing" / "x.png")
    with pytest.raises(OutputPathError, match="is a folder"):
        check_file_target(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_file_target(tmp_path / "file" / "x.png")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, how, **kw: Path(path) != tmp_path and real_access(path, how, **kw))
    with pytest.raises(OutputPathError, match="not writable"):
        check_file_target(tmp_path / "x.png")
    with pytest.raises(OutputPathError, match="not writable"):
        check_directory_target(tmp_path / "new" / "out")
    with pytest.raises(OutputPathError, match="not writable"):
        with atomic_file(tmp_path / "x.png"):
            pytest.fail("a file was started in a folder that cannot be written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_atomic_directory_sets_modes_whatever_the_umask(tmp_path: Path, private_umask) -> None:
    target = tmp_path / "made" / "for" / "it" / "out"
    with atomic_directory(target) as staging:
        (staging / "model" / "1").mkdir(parents=True)
        (staging / "model" / "1" / "model.onnx").write_bytes(b"onnx")
        (staging / "config.pbtxt").write_text("name: 'm'")
    folders = [tmp_path / "made", tmp_path / "made" / "for", target.parent, target, target / "model",
               target / "model" / "1"]
    assert [oct(mode(p)) for p in folders] == [oct(DIR_MODE)] * len(folders) == ["0o755"] * len(folders)
    files = [target / "config.pbtxt", target / "model" / "1" / "model.onnx"]
    assert [oct(mode(p)) for p in files] == [oct(FILE_MODE)] * 2 == ["0o644"] * 2


# --------------------------------------------------------------------------- special targets, long names


def test_special_files_are_refused_never_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "to-pipe.png"
    to_fifo.symlink_to(fifo)
    for target, kind in ((fifo, "a named pipe (FIFO)"), (to_fifo, "a named pipe (FIFO)"),
                         (Path(os.devnull), "a character device")):
        with pytest.raises(OutputPathError, match=re.escape(kind) + ", not a regular file"):
            with atomic_file(target) as staging:
                staging.write_bytes(b"never")
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and to_fifo.is_symlink()
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.png", "to-pipe.png"]  # nothing else was made


def test_a_link_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    (tmp_path / "charts").mkdir()
    real = tmp_path / "charts" / "confusion.png"
    real.write_bytes(b"old")
    link = tmp_path / "latest.png"
    link.symlink_to(real)
    dangling = tmp_path / "new.png"
    dangling.symlink_to(tmp_path / "charts" / "made.png")
    for target in (link, dangling):
        with atomic_file(target) as staging:
            assert staging.parent == tmp_path / "charts"  # beside the file the link points to
            staging.write_bytes(b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    assert dangling.is_symlink() and (tmp_path / "charts" / "made.png").read_bytes() == b"new"


def test_a_244_byte_file_name_can_be_written(tmp_path: Path) -> None:
    target = tmp_path / ("c" * 240 + ".png")  # a valid name: 244 bytes, the limit is 255
    names = []
    with atomic_file(target) as staging:
        names.append(staging.name)
        staging.write_bytes(b"png")
    with atomic_directory(tmp_path / ("d" * 250), force=True) as staging:
        names.append(staging.name)
    assert target.read_bytes() == b"png" and (tmp_path / ("d" * 250)).is_dir()
    assert all(len(os.fsencode(name)) <= 255 for name in names) and names[0].endswith(".png")
    # Two long names that differ only at their end get different temporary names.
    assert staging_name("x" * 250 + "1").split(".")[1] != staging_name("x" * 250 + "2").split(".")[1]


@pytest.mark.parametrize("given", [".", "x/..", "x/../.", "", "/", "/proc"])
def test_output_folders_a_rename_cannot_replace_are_refused_first(tmp_path: Path, monkeypatch, given: str) -> None:
    if given == "/proc" and not os.path.ismount("/proc"):
        pytest.skip("no /proc mount point here")
    work = tmp_path / "work"
    (work / "x").mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(OutputPathError, match="runs in|root of the file system|mount point"):
        check_directory_target(given or ".", force=True)
    assert (work / "x").is_dir()


def test_a_folder_link_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "old.txt").write_text("old")
    (tmp_path / "out").symlink_to(tmp_path / "real", target_is_directory=True)
    with atomic_directory(tmp_path / "out", force=True) as staging:
        (staging / "new.txt").write_text("new")
    assert (tmp_path / "out").is_symlink() and sorted(p.name for p in (tmp_path / "real").iterdir()) == ["new.txt"]


# --------------------------------------------------------------------------- what killed writers leave

#: A writer that loads resnet/io/atomic.py alone (no torch: it starts in a fraction of a second), starts a
#: temporary folder for argv[1] and a temporary file for argv[2], says so, and waits to be killed.
WRITER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("atomic", sys.argv[3])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
with atomic.atomic_directory(sys.argv[1]) as folder, atomic.atomic_file(sys.argv[2]) as file:
    (folder / "model.onnx").write_bytes(b"half an export")
    file.write_bytes(b"half a chart")
    print("writing", flush=True)
    time.sleep(600)
"""


def start_writer(tmp_path: Path, name: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / name), str(tmp_path / f"{name}.png"),
                              str(REPO_ROOT / "resnet" / "io" / "atomic.py")], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "writing\n"
    return child


def temporaries(tmp_path: Path, name: str) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}.") and ".partial" in p.name)


def test_what_a_killed_writer_left_is_swept_and_a_live_writers_output_kept(tmp_path: Path) -> None:
    killed, live = start_writer(tmp_path, "killed"), start_writer(tmp_path, "live")
    try:
        killed.kill()  # SIGKILL: no cleanup runs
        killed.wait(timeout=30)
        left = temporaries(tmp_path, "killed")
        assert len(left) == 2 and all(f"-{killed.pid:010d}-" in name for name in left)
        running = temporaries(tmp_path, "live")
        assert len(running) == 2
        # The next writes of the same targets remove the dead writer's folder and file, and only those.
        for name in ("killed", "live"):
            with atomic_directory(tmp_path / name) as staging:
                (staging / "model.onnx").write_bytes(b"whole")
            with atomic_file(tmp_path / f"{name}.png") as staging:
                staging.write_bytes(b"whole")
        assert temporaries(tmp_path, "killed") == []
        assert temporaries(tmp_path, "live") == running  # its writer still runs: untouched
    finally:
        for child in (killed, live):
            child.kill()
            child.wait(timeout=30)
    assert (tmp_path / "killed" / "model.onnx").read_bytes() == b"whole"


def test_an_output_moved_aside_by_a_killed_writer_comes_back(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # that process has ended
    target = tmp_path / "exported"
    backup = tmp_path / staging_name("exported", "old").replace(f"-{os.getpid():010d}-", f"-{dead_pid:010d}-")
    backup.mkdir()
    (backup / "model.onnx").write_bytes(b"the previous export")
    assert sweep_stale(target) == [] and (target / "model.onnx").read_bytes() == b"the previous export"
    assert not backup.exists()
