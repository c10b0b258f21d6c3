"""Hostile and odd local inputs: image bombs, pipes and devices, link loops, over-long names.

Each is refused with an ``ImageLoadError`` that names the input and says what it is, before it
costs memory or blocks. The files are built here, in tmp_path.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image

from reference import reference_pipeline
from support import IMAGES

import processing_utils
import resnet.data.decode
from processing_utils import ImageLoadError, ImageNotFoundError, load_batch, load_image, prepare_input_from_uri


def _png_chunk(kind: bytes, data: bytes, declared: int | None = None) -> bytes:
    length = len(data) if declared is None else declared
    return struct.pack(">I", length) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_declaring(tmp_path: Path, kind: bytes, declared: int, sparse_size: int) -> Path:
    """An 8x8 PNG whose ``kind`` chunk declares ``declared`` bytes; the file is sparse, ``sparse_size``
    bytes long, so it takes a few KB on disk while Pillow would read the whole chunk."""
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
    path = tmp_path / f"declares_{kind.decode()}.png"
    with open(path, "wb") as file:
        file.write(header + struct.pack(">I", declared) + kind + b"x" * 4000)
        file.truncate(sparse_size)
    return path


# --------------------------------------------------------------------------- image bombs


@pytest.mark.parametrize("size", [(1, 30000), (8000, 1), (2100, 100)], ids=["1x30000", "8000x1", "21_to_1"])
def test_elongated_images_are_refused_from_the_header(tmp_path, monkeypatch, size) -> None:
    path = tmp_path / "strip.png"
    Image.new("L", size).save(path)
    assert path.stat().st_size < 10_000  # a few hundred bytes that would decode to gigabytes
    from PIL import ImageFile

    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    with pytest.raises(ImageLoadError) as info:
        prepare_input_from_uri(str(path))
    message = str(info.value)
    assert str(path) in message and "20:1" in message and f"{size[0]}x{size[1]}" in message
    assert decoded == []  # refused from the header, before decoding


def test_the_aspect_bound_is_twenty_to_one_and_a_panorama_passes(tmp_path) -> None:
    assert resnet.data.decode.MAX_ASPECT_RATIO == 20
    path = tmp_path / "panorama.jpg"
    Image.open(IMAGES / "coffee.png").convert("RGB").resize((2000, 100)).save(path)  # exactly 20:1
    with Image.open(path) as image:
        expected = reference_pipeline(image)
    assert (prepare_input_from_uri(path) - expected).abs().max().item() <= 1e-6


def test_preprocess_refuses_an_elongated_pil_image() -> None:
    with pytest.raises(ImageLoadError, match="7,680,000"):
        processing_utils.preprocess(Image.new("RGB", (30000, 1)))


def test_a_png_declaring_a_huge_chunk_is_refused_before_pillow_reads_it(tmp_path, monkeypatch) -> None:
    path = _png_declaring(tmp_path, b"tEXt", declared=100 * 1024 * 1024, sparse_size=101 * 1024 * 1024)
    from PIL import ImageFile

    reads = []
    real_safe_read = ImageFile._safe_read
    monkeypatch.setattr(ImageFile, "_safe_read", lambda fp, size: reads.append(size) or real_safe_read(fp, size))
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert str(path) in str(info.value) and "'tEXt' chunk declares 104,857,600 bytes" in str(info.value)
    assert max(reads, default=0) < 1024 * 1024


def test_a_file_over_the_size_bound_is_refused_without_reading_it(tmp_path) -> None:
    limit = resnet.data.decode.MAX_IMAGE_BYTES
    path = _png_declaring(tmp_path, b"tEXt", declared=2**31, sparse_size=limit + 1)
    with pytest.raises(ImageLoadError, match="too large") as info:
        load_image(path)
    assert str(path) in str(info.value) and f"{limit:,}" in str(info.value)


def test_a_pixel_data_chunk_of_any_length_is_left_to_pillow(tmp_path) -> None:
    # Pillow streams IDAT in small blocks; a long one is no reason to refuse, a broken one is damaged.
    path = _png_declaring(tmp_path, b"IDAT", declared=20 * 1024 * 1024, sparse_size=21 * 1024 * 1024)
    with pytest.raises(ImageLoadError, match="damaged or truncated"):
        load_image(path)


# --------------------------------------------------------------------------- not regular files


def _load_in_thread(target: str, unblock=None) -> BaseException | None:
    """load_image(target) in a daemon thread; fails the test if it has not returned within 60 s
    (after calling ``unblock`` to release the thread)."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            load_image(target)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(60)
    if not outcome and unblock is not None:
        unblock()
    assert outcome, f"load_image({target!r}) blocked"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_fifo_is_not_a_regular_file_and_is_never_opened(tmp_path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)

    def unblock() -> None:  # a reader stuck in open() or read() gets end-of-file
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    error = _load_in_thread(str(fifo), unblock)
    assert isinstance(error, ImageLoadError)
    assert str(fifo) in str(error) and "not a regular file" in str(error) and "pipe" in str(error)
    assert "empty" not in str(error)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_devices_are_not_regular_files(device) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    error = _load_in_thread(device)
    assert isinstance(error, ImageLoadError)
    assert device in str(error) and "not a regular file" in str(error) and "character device" in str(error)


def test_a_file_swapped_for_a_pipe_after_the_check_is_still_refused(tmp_path, monkeypatch) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes((IMAGES / "chelsea.png").read_bytes())
    real_fstat = os.fstat

    def fstat_says_fifo(descriptor: int) -> os.stat_result:
        info = list(real_fstat(descriptor))
        info[0] = stat.S_IFIFO | 0o644
        return os.stat_result(info)

    monkeypatch.setattr(os, "fstat", fstat_says_fifo)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(path)


# --------------------------------------------------------------------------- paths that cannot be examined


def test_a_symlink_loop_is_named_as_such(tmp_path) -> None:
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(ImageLoadError) as info:
        load_image(loop)
    assert str(loop) in str(info.value) and "symbolic link loop" in str(info.value)
    assert not isinstance(info.value, FileNotFoundError) and "no such" not in str(info.value)


def test_a_dangling_symlink_names_its_target(tmp_path) -> None:
    link = tmp_path / "photo.jpg"
    link.symlink_to(tmp_path / "moved.jpg")
    with pytest.raises(ImageNotFoundError) as info:
        load_image(link)
    assert str(link) in str(info.value) and "moved.jpg" in str(info.value)


def test_an_over_long_name_is_named_as_such(tmp_path) -> None:
    path = tmp_path / ("x" * 300 + ".jpg")
    with pytest.raises(OSError) as raw:  # what the file system says
        os.stat(path)
    assert raw.value.errno == errno.ENAMETOOLONG
    with pytest.raises(ImageLoadError) as info:
        load_image(str(path))
    assert str(path) in str(info.value) and "ENAMETOOLONG" in str(info.value) and "255 bytes" in str(info.value)
    assert not isinstance(info.value, FileNotFoundError) and "no such" not in str(info.value)


def test_a_folder_that_cannot_be_entered_is_named_as_the_reason(tmp_path, monkeypatch) -> None:
    path = tmp_path / "locked" / "photo.jpg"
    real_stat = os.stat

    def stat_denied(target, *args, **kwargs):
        if os.fspath(target) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(target, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_denied)
    with pytest.raises(ImageLoadError, match="permission denied") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_the_batch_loader_reports_each_of_them(tmp_path) -> None:
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    long_name = str(tmp_path / ("y" * 300 + ".png"))
    strip = tmp_path / "strip.png"
    Image.new("L", (1, 30000)).save(strip)
    result = load_batch([str(IMAGES / "chelsea.png"), str(loop), long_name, str(strip), "/dev/zero"], num_workers=2)
    assert result.uris == [str(IMAGES / "chelsea.png")]
    reasons = dict(result.failures)
    assert "symbolic link loop" in reasons[str(loop)]
    assert "too long" in reasons[long_name]
    assert "20:1" in reasons[str(strip)]
    assert "not a regular file" in reasons["/dev/zero"]
