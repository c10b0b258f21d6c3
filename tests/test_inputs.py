"""Command-line inputs turned into images (``resnet.data.inputs``): folders, URLs, file:// URIs,
and every input that cannot be examined reported instead of a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from support import PHOTOS

from resnet.data.inputs import IMAGE_SUFFIXES, expand_inputs, scan_images, scan_warnings

#: The warning about the album's notes.txt.
OTHER_FILES = ("1 file(s) left out for their type (1 .txt; images are .bmp .gif .jpeg .jpg .pgm .png .ppm .tif .tiff "
               ".webp): '{album}/notes.txt'; convert photos of another format (such as .heic) to .jpg to use them")


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """album/{b.png, A.JPG, notes.txt, nested/c.jpeg, nested/deeper/d.webp, linked.png -> b.png,
    elsewhere -> a folder outside holding e.png (links to folders are followed once)}."""
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
                           ("A.JPG", "b.png", "elsewhere/e.png", "linked.png", "nested/c.jpeg", "nested/deeper/d.webp")]
    assert result.uris == [url, *expected_from_album, single, str(album / "missing.jpg")]
    # The file left out for its type is counted and named, once.
    assert result.warnings == [OTHER_FILES.format(album=album)]


def test_file_uris_of_folders_and_files(album) -> None:
    photo_uri = (album / "b.png").as_uri()
    result = expand_inputs([album.as_uri(), photo_uri, "file://fileserver/share/x.jpg"])
    assert result.uris[:6] == expand_inputs([str(album)]).uris
    assert result.uris[6:] == [photo_uri, "file://fileserver/share/x.jpg"]  # kept: the loader reports the host


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
    assert len(result.uris) == 6
    about_empty = [w for w in result.warnings if "no image files" in w]
    assert len(about_empty) == 1 and str(empty) in about_empty[0]


def test_a_sub_folder_that_cannot_be_read_is_named_in_a_warning(album, monkeypatch) -> None:
    deny(monkeypatch, "scandir", album / "nested")
    result = expand_inputs([str(album)])
    assert result.uris == [f"{album}/{name}" for name in ("A.JPG", "b.png", "elsewhere/e.png", "linked.png")]
    assert result.warnings == [f"cannot read the folder '{album}/nested' (Permission denied); the images in it are "
                               "left out", OTHER_FILES.format(album=album)]


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
    assert result.uris == [f"{album}/{name}" for name in ("A.JPG", "b.png", "elsewhere/e.png", "linked.png")]
    assert len(result.warnings) == 2 and str(album / "nested") in result.warnings[0]


@pytest.mark.slow
def test_classify_gives_every_input_a_record_or_a_warning(seeded_cache, cli, tmp_path) -> None:
    long_name = str(tmp_path / ("x" * 300 + ".jpg"))
    empty = tmp_path / "empty"
    empty.mkdir()
    other_host = "file://fileserver/share/cat.jpg"
    plot = tmp_path / "chart.png"
    result = cli("classify", long_name, empty, other_host, "--json", "--quiet", "--plot", plot)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # inputs failed; nothing crashed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == [long_name, other_host]
    assert "too long" in records[0]["error"] and "fileserver" in records[1]["error"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any(str(empty) in line and "no image files" in line for line in warnings), result.stderr
    assert any("--plot" in line and str(plot) in line and "not written" in line for line in warnings), result.stderr
    assert not plot.exists()


# --------------------------------------------------------------------------- one search rule for every command


def finishes(function, seconds: float = 30.0):
    """``function()``'s result, failing the test when it runs longer than ``seconds`` (a search that loops)."""
    box: list = []
    worker = threading.Thread(target=lambda: box.append(function()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the search did not end within {seconds} s (links followed in a loop)"
    return box[0]


@pytest.fixture
def looped(tmp_path: Path) -> Path:
    """DATA/{a,b}/0..2.png with every kind of link that turns a folder walk into a loop or mislabels images:
    a/loop -> ., a/again -> . (two loops: a walk that follows links never ends), a/up -> .. (DATA), a/sib ->
    ../b (another class), b/back -> ../a; and b/extra -> a folder outside DATA holding x.png."""
    data = tmp_path / "DATA"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(3):
            shutil.copy(PHOTOS[0], data / name / f"{i}.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(PHOTOS[1], outside / "x.png")
    for link, to in (("a/loop", "."), ("a/again", "."), ("a/up", ".."), ("a/sib", "../b"), ("b/back", "../a"),
                     ("b/extra", str(outside))):
        (data / link).symlink_to(to, target_is_directory=True)
    return data


def test_every_command_searches_a_looped_folder_once_and_fast(looped) -> None:
    from resnet.data.folders import scan_folder
    from resnet.deploy.quantize import find_images

    everything = [f"{looped}/{name}" for name in ("a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png", "b/2.png",
                                                  "b/extra/x.png")]
    classify = finishes(lambda: expand_inputs([str(looped)]))  # classify's folders
    assert classify.uris == everything
    assert any("link(s) to folders searched already" in w for w in classify.warnings), classify.warnings
    assert [str(p) for p in finishes(lambda: find_images(looped))] == everything  # export --int8 --calibration
    labelled = finishes(lambda: scan_folder(looped))  # train and evaluate: each image once, under its own class
    assert labelled.classes == ["a", "b"]
    assert labelled.samples == [(path, 0) for path in everything[:3]] + [(path, 1) for path in everything[3:]]
    assert sorted(os.path.relpath(p, looped) for p in labelled.scan.repeated) == [
        "a/again", "a/loop", "a/sib", "a/up", "b/back"]
    assert any("5 link(s) to folders searched already" in w and "'" in w for w in labelled.warnings())


def test_hidden_names_are_left_out_and_other_files_counted_by_type(tmp_path) -> None:
    for name in ("IMG_1.heic", "IMG_2.HEIC", "notes.txt", "photo.jpg", ".hidden.jpg", "._photo.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "copy.jpg").write_bytes(b"x")
    scan = scan_images(tmp_path)
    assert scan.images == [str(tmp_path / "photo.jpg")]
    assert [Path(p).name for p in scan.other_files] == ["IMG_1.heic", "IMG_2.HEIC", "notes.txt"]
    [message] = scan_warnings(scan, str(tmp_path))
    assert message.startswith("3 file(s) left out for their type (2 .heic, 1 .txt; images are .bmp")
    assert "'IMG_1.heic', 'IMG_2.HEIC', 'notes.txt'" in message
