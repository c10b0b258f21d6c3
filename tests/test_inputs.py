"""Command-line inputs turned into images (``processing_utils.inputs``): folders, URLs, file:// URIs,
and every input that cannot be examined reported instead of a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import PHOTOS, REPO_ROOT

from processing_utils.inputs import IMAGE_SUFFIXES, expand_inputs

CHECKPOINT = "nvidia_resnet50_200821.pth.tar"


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """album/{b.png, A.JPG, notes.txt, nested/c.jpeg, nested/deeper/d.webp, linked.png -> b.png,
    elsewhere -> a folder outside (links to folders are not followed)}."""
    root = tmp_path / "album"
    (root / "nested" / "deeper").mkdir(parents=True)
    for name in ("b.png", "A.JPG", "nested/c.jpeg", "nested/deeper/d.webp"):
        shutil.copy(PHOTOS[0], root / name)
    (root / "notes.txt").write_text("not an image")
    (root / "linked.png").symlink_to(root / "b.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(PHOTOS[1], outside / "e.png")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    return root


def deny(monkeypatch: pytest.MonkeyPatch, function: str, denied: Path) -> None:
    """Make ``os.<function>`` raise PermissionError for ``denied``, as for a folder without permission
    (this machine may run as root, where permissions are not enforced)."""
    real = getattr(os, function)

    def guarded(target=".", *args, **kwargs):
        if os.fspath(target) == str(denied):
            raise PermissionError(errno.EACCES, "Permission denied", str(denied))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, function, guarded)


def test_folders_expand_in_place_recursively_and_sorted(album) -> None:
    url = "http://127.0.0.1:9/cat.jpg"
    single = str(PHOTOS[2])
    result = expand_inputs([url, str(album), single, str(album / "missing.jpg")])
    expected_from_album = [f"{album}/{name}" for name in
                           ("A.JPG", "b.png", "linked.png", "nested/c.jpeg", "nested/deeper/d.webp")]
    assert result.uris == [url, *expected_from_album, single, str(album / "missing.jpg")]
    assert result.warnings == []


def test_file_uris_of_folders_and_files(album) -> None:
    photo_uri = (album / "b.png").as_uri()
    result = expand_inputs([album.as_uri(), photo_uri, "file://fileserver/share/x.jpg"])
    assert result.uris[:5] == expand_inputs([str(album)]).uris
    assert result.uris[5:] == [photo_uri, "file://fileserver/share/x.jpg"]  # kept: the loader reports the host


def test_every_folder_suffix_is_an_image_suffix_of_any_case(tmp_path) -> None:
    for i, suffix in enumerate(sorted(IMAGE_SUFFIXES)):
        (tmp_path / f"{i}{suffix.upper() if i % 2 else suffix}").write_bytes(b"x")
    (tmp_path / "z.txt").write_bytes(b"x")
    assert len(expand_inputs([str(tmp_path)]).uris) == len(IMAGE_SUFFIXES)
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".bmp"} <= IMAGE_SUFFIXES


def test_paths_that_cannot_be_examined_are_kept_for_the_loader(tmp_path, monkeypatch) -> None:
    long_name = str(tmp_path / ("x" * 300))
    locked = tmp_path / "locked" / "photo.jpg"
    deny(monkeypatch, "stat", locked)
    result = expand_inputs([long_name, str(locked), "", "a\0b"])
    assert result.uris == [long_name, str(locked), "", "a\0b"]
    assert result.warnings == []


def test_a_folder_without_images_is_named_in_a_warning(tmp_path, album) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no pictures here")
    result = expand_inputs([str(empty), str(album)])
    assert len(result.uris) == 5
    assert len(result.warnings) == 1 and str(empty) in result.warnings[0] and "no image files" in result.warnings[0]


def test_a_sub_folder_that_cannot_be_read_is_named_in_a_warning(album, monkeypatch) -> None:
    deny(monkeypatch, "scandir", album / "nested")
    result = expand_inputs([str(album)])
    assert result.uris == [f"{album}/{name}" for name in ("A.JPG", "b.png", "linked.png")]
    assert len(result.warnings) == 1
    assert str(album / "nested") in result.warnings[0] and "Permission denied" in result.warnings[0]


def test_a_top_folder_that_cannot_be_read_gets_one_warning(album, monkeypatch) -> None:
    deny(monkeypatch, "scandir", album)
    result = expand_inputs([str(album)])
    assert result.uris == []
    assert len(result.warnings) == 1 and str(album) in result.warnings[0] and "cannot read" in result.warnings[0]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="runs as root, where folder permissions are not enforced (the monkeypatched "
                           "variant above always runs)")
def test_a_sub_folder_without_permission_is_named_in_a_warning(album) -> None:
    (album / "nested").chmod(0)
    try:
        result = expand_inputs([str(album)])
    finally:
        (album / "nested").chmod(0o755)
    assert result.uris == [f"{album}/{name}" for name in ("A.JPG", "b.png", "linked.png")]
    assert len(result.warnings) == 1 and str(album / "nested") in result.warnings[0]


def test_classify_gives_every_input_a_record_or_a_warning(hub_dir, ngc_file, tmp_path) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(ngc_file("resnet50"), hub_dir / "checkpoints" / CHECKPOINT)
    long_name = str(tmp_path / ("x" * 300 + ".jpg"))
    empty = tmp_path / "empty"
    empty.mkdir()
    other_host = "file://fileserver/share/cat.jpg"
    plot = tmp_path / "chart.png"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "resnet", "classify", long_name, str(empty), other_host, "--json", "--quiet",
         "--plot", str(plot)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # inputs failed; nothing crashed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == [long_name, other_host]
    assert "too long" in records[0]["error"] and "fileserver" in records[1]["error"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any(str(empty) in line and "no image files" in line for line in warnings), result.stderr
    assert any("--plot" in line and str(plot) in line and "not written" in line for line in warnings), result.stderr
    assert not plot.exists()
