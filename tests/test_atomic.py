"""resnet.atomic: output written completely or not at all, with modes other users can read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from resnet.atomic import (
    DIR_MODE,
    FILE_MODE,
    OutputPathError,
    atomic_directory,
    atomic_file,
    check_directory_target,
    check_file_target,
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
