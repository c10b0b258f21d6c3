"""The checkpoint cache under faults: a folder in the way, no permission, a full disk, killed and
concurrent downloads, damaged files and the SHA-256 checks (recorded, tabled, or given as sha256=)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import filelock
import pytest
import torch

import resnet.weights.cache
from resnet import (
    CHECKPOINTS,
    CorruptCheckpointError,
    HashMismatchError,
    WeightsCacheError,
    create_model,
)
from support import REPO_ROOT, Route, load_expected, parity_input

FILE = "nvidia_resnet50_200821.pth.tar"
PATH = f"/w/{FILE}"


def hub_load(entry: str = "nvidia_resnet50", **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(REPO_ROOT), entry, source="local", **kwargs)


def listing(hub_dir: Path) -> list[str]:
    folder = hub_dir / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_reference(model: torch.nn.Module) -> None:
    with torch.no_grad():
        assert (model.eval()(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4


@pytest.fixture
def body(ngc_file) -> bytes:
    return ngc_file("resnet50").read_bytes()


@pytest.fixture
def mirror(server, body) -> str:
    """The loopback server with the stand-in NGC file at /w/<file>; returns the mirror URL."""
    server.routes[PATH] = Route(body)
    return server.url("/w")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- faults of the cache itself


def test_directory_at_the_checkpoint_path(hub_dir, server, mirror) -> None:
    (hub_dir / "checkpoints" / FILE).mkdir(parents=True)
    with pytest.raises(WeightsCacheError) as info:
        hub_load(mirror=mirror, progress=False)
    message = str(info.value)
    assert f"{hub_dir / 'checkpoints' / FILE} in the torch hub cache: a directory is where the checkpoint" in message
    assert f"rm -r {hub_dir / 'checkpoints' / FILE}" in message and "TORCH_HOME" in message
    assert server.hits == {}  # refused before any download


def test_torch_home_naming_a_file(tmp_path, monkeypatch, server, mirror) -> None:
    not_a_folder = tmp_path / "torch_home_file"
    not_a_folder.write_text("")
    monkeypatch.setenv("TORCH_HOME", str(not_a_folder))
    with pytest.raises(WeightsCacheError) as info:
        hub_load(mirror=mirror, progress=False)
    message = str(info.value)
    assert f"{not_a_folder} is a file, not a folder" in message
    assert f"point TORCH_HOME at a folder (it is {str(not_a_folder)!r})" in message
    assert "pretrained=False, pretrained_from_file=PATH" in message
    assert "--weights FILE" in info.value.describe("cli") and "pretrained_from_file" not in info.value.describe("cli")
    assert server.hits == {}


def test_file_where_the_checkpoint_folder_belongs(hub_dir, server, mirror) -> None:
    hub_dir.mkdir(parents=True)
    (hub_dir / "checkpoints").write_text("")
    with pytest.raises(WeightsCacheError) as info:
        hub_load(mirror=mirror, progress=False)
    assert (f"cannot create the cache folder {hub_dir / 'checkpoints'}: {hub_dir / 'checkpoints'} is a file, not a "
            f"folder. Fix: remove or rename {hub_dir / 'checkpoints'}") in str(info.value)
    assert server.hits == {}


@pytest.mark.slow
def test_unreadable_cached_file(hub_dir, mirror, monkeypatch) -> None:
    hub_load(mirror=mirror, progress=False)
    cached = hub_dir / "checkpoints" / FILE

    def denied(path, mode="r", *args, **kwargs):  # what the kernel says to a user without read permission
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(resnet.weights.cache, "open", denied, raising=False)
    with pytest.raises(WeightsCacheError, match=rf"cannot read {cached} in the torch hub cache: permission denied") \
            as info:
        hub_load(mirror=mirror, progress=False)
    assert f"make the file readable (chmod a+r {cached})" in str(info.value)
    assert listing(hub_dir) == [FILE, FILE + ".sha256"]  # an unreadable file is not a damaged one


@pytest.mark.slow
def test_read_only_cache_folder(hub_dir, mirror, ngc_file, monkeypatch) -> None:
    """No permission to write: a message naming the folder; a file already there still loads."""
    folder = hub_dir / "checkpoints"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions: refuse writes there as the kernel would
            real_open = open

            def denied(path, mode="r", *args, **kwargs):
                if any(c in mode for c in "wax+") and Path(path).parent == folder:
                    raise PermissionError(errno.EACCES, "Permission denied", str(path))
                return real_open(path, mode, *args, **kwargs)

            monkeypatch.setattr(resnet.weights.cache, "open", denied, raising=False)
        with pytest.raises(WeightsCacheError) as info:
            hub_load(mirror=mirror, progress=False)
        message = str(info.value)
        assert f"cannot write {folder / FILE} in the torch hub cache: permission denied" in message
        assert "make the folder writable or point TORCH_HOME at a writable folder" in message
        folder.chmod(0o755)
        shutil.copyfile(ngc_file("resnet50"), folder / FILE)
        folder.chmod(0o555)
        assert_reference(hub_load(mirror=mirror, progress=False))  # reading needs no write
    finally:
        folder.chmod(0o755)
    assert listing(hub_dir) == [FILE]


@pytest.mark.slow
def test_full_disk_leaves_nothing_and_releases_the_lock(hub_dir, mirror, monkeypatch) -> None:
    real_open = open

    class FillsUp:
        def __init__(self, file) -> None:
            self.file, self.written = file, 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    def full_disk(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return FillsUp(file) if "w" in mode else file

    with monkeypatch.context() as patch:
        patch.setattr(resnet.weights.cache, "open", full_disk, raising=False)
        with pytest.raises(WeightsCacheError) as info:
            hub_load(mirror=mirror, progress=False)
    message = str(info.value)
    assert f"cannot write {hub_dir / 'checkpoints' / FILE} in the torch hub cache: no space left" in message
    assert "free some space" in message and "TORCH_HOME" in message
    assert listing(hub_dir) == []
    assert_reference(hub_load(mirror=mirror, progress=False))  # space freed: the same call works


# --------------------------------------------------------------------------- killed and concurrent downloads


@pytest.mark.slow
def test_partials_of_killed_downloads_are_removed_on_the_next_download(hub_dir, mirror) -> None:
    folder = hub_dir / "checkpoints"
    folder.mkdir(parents=True)
    dead = [f".{FILE}.{uuid.uuid4().hex}.partial", f".{FILE}.sha256.{uuid.uuid4().hex}.partial"]
    other_checkpoint = f".nvidia_resnext101-32x4d_200821.pth.tar.{uuid.uuid4().hex}.partial"
    for name in [*dead, other_checkpoint]:
        (folder / name).write_bytes(b"left by a killed download")
    hub_load(mirror=mirror, progress=False)
    # Another checkpoint's partial belongs to a download this one holds no lock for: it stays.
    assert listing(hub_dir) == sorted([FILE, FILE + ".sha256", other_checkpoint])


def wait_for(condition, what: str, limit: float = 240.0) -> None:
    """Poll ``condition`` until true; ``limit`` only ends a test that has already failed."""
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_live_download_of_another_process_is_waited_for_not_removed(hub_dir, server, mirror, ngc_file, capsys) -> None:
    """While another process holds the lock, its partial file is left alone; its finished file is used."""
    folder, locks = hub_dir / "checkpoints", hub_dir / ".locks"
    folder.mkdir(parents=True)
    locks.mkdir()
    other = filelock.FileLock(str(locks / f"{FILE}.lock"))
    other.acquire()
    live = folder / f".{FILE}.{uuid.uuid4().hex}.partial"
    live.write_bytes(b"being written")
    outcome: dict = {}

    def load() -> None:
        try:
            outcome["model"] = hub_load(mirror=mirror, progress=True)
        except BaseException as error:  # reported by the assertions below
            outcome["error"] = error

    thread = threading.Thread(target=load)
    thread.start()
    seen = []
    try:
        wait_for(lambda: seen.append(capsys.readouterr().err) or "Waiting for another process" in "".join(seen),
                 "the loader to wait for the lock")
        assert f"downloading {FILE} (lock {locks / (FILE + '.lock')})" in "".join(seen)
        assert live.exists()
        # The other process finishes: its file and recorded hash go into place, its partial goes.
        shutil.copyfile(ngc_file("resnet50"), live)
        (folder / (FILE + ".sha256")).write_text(f"{sha(live.read_bytes())}  {FILE}\n")
        os.replace(live, folder / FILE)
    finally:
        other.release()
        thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    assert_reference(outcome["model"])
    assert server.hits == {}  # loaded the other process's file, downloaded nothing


CHILD = """
import sys
sys.path.insert(0, {repo!r})
from resnet import create_model
model = create_model("resnet50", pretrained=True, mirror={mirror!r}, progress=True)
print("loaded", float(model.fc.bias.double().sum()))
"""


@pytest.mark.slow
def test_processes_starting_together_download_once(hub_dir, server, body) -> None:
    """Four processes with an empty cache: one downloads, three wait for it and load its file."""
    release = threading.Event()

    def gated() -> Route:
        release.wait(300)  # hold the first download until the others are seen waiting
        return Route(body)

    server.routes[PATH] = gated
    code = CHILD.format(repo=str(REPO_ROOT), mirror=server.url("/w"))
    children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(4)]
    streams = {child.pid: {"out": [], "err": []} for child in children}

    def drain(child: subprocess.Popen, name: str) -> None:
        for line in getattr(child, "std" + name):
            streams[child.pid][name].append(line)

    readers = [threading.Thread(target=drain, args=(c, n), daemon=True) for c in children for n in ("out", "err")]
    for reader in readers:
        reader.start()

    def waiting() -> int:
        return sum(any("Waiting for another process" in line for line in s["err"]) for s in streams.values())

    try:
        wait_for(lambda: waiting() == 3 or server.hits.get(PATH, 0) > 1 or any(c.poll() is not None for c in children),
                 "three processes to wait for the fourth")
    finally:
        release.set()
        for child in children:
            child.wait(300)
        for reader in readers:
            reader.join(60)
    for child in children:
        assert child.returncode == 0, "".join(streams[child.pid]["err"])[-2000:]
    assert server.hits == {PATH: 1}
    assert waiting() == 3
    sums = {s["out"][-1] for s in streams.values()}
    assert len(sums) == 1 and sums.pop().startswith("loaded")
    assert listing(hub_dir) == [FILE, FILE + ".sha256"]


# --------------------------------------------------------------------------- integrity


def flip_a_weight_byte(path: Path) -> None:
    """Change one byte in the middle of the file (tensor data): torch.load would still read it."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_damaged_cached_file_is_caught_by_its_recorded_hash(hub_dir, server, mirror) -> None:
    hub_load(mirror=mirror, progress=False)
    cached = hub_dir / "checkpoints" / FILE
    flip_a_weight_byte(cached)
    with pytest.raises(HashMismatchError) as info:
        hub_load(mirror=mirror, progress=False)
    assert isinstance(info.value, CorruptCheckpointError)
    message = str(info.value)
    assert f"The cached checkpoint {cached} is damaged: it has SHA-256 " in message
    assert f"(from {FILE}.sha256, written when it was downloaded)" in message
    assert "removed from the cache; run the same call again" in message
    assert "run the same command again" in info.value.describe("cli")
    assert listing(hub_dir) == []
    assert_reference(hub_load(mirror=mirror, progress=False))  # fetched again
    assert server.hits == {PATH: 2}


@pytest.mark.slow
def test_unreadable_hash_record_counts_as_damage(hub_dir, server, mirror) -> None:
    hub_load(mirror=mirror, progress=False)
    (hub_dir / "checkpoints" / (FILE + ".sha256")).write_text("not a digest\n")
    with pytest.raises(HashMismatchError, match="its recorded hash is unreadable"):
        hub_load(mirror=mirror, progress=False)
    assert listing(hub_dir) == []


@pytest.mark.slow
def test_file_dropped_into_the_cache_by_hand_loads_without_a_record(hub_dir, ngc_file) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copyfile(ngc_file("resnet50"), hub_dir / "checkpoints" / FILE)
    assert_reference(hub_load())
    assert listing(hub_dir) == [FILE]  # loading writes nothing


def with_table_hash(monkeypatch, digest: str) -> None:
    monkeypatch.setitem(CHECKPOINTS, "resnet50", dataclasses.replace(CHECKPOINTS["resnet50"], sha256=digest))


@pytest.mark.slow
def test_known_hash_in_the_checkpoint_table_is_verified(hub_dir, server, mirror, body, monkeypatch) -> None:
    with_table_hash(monkeypatch, "0" * 64)
    with pytest.raises(HashMismatchError) as info:
        hub_load(mirror=mirror, progress=False)
    assert f"has SHA-256 {sha(body)}, not the {'0' * 64} of the checkpoint table" in str(info.value)
    assert "was not kept" in str(info.value)
    assert listing(hub_dir) == []
    with_table_hash(monkeypatch, sha(body))
    assert_reference(hub_load(mirror=mirror, progress=False))
    # The table's hash also guards the cached file, whatever its record says.
    (hub_dir / "checkpoints" / (FILE + ".sha256")).unlink()
    flip_a_weight_byte(hub_dir / "checkpoints" / FILE)
    with pytest.raises(HashMismatchError, match="from the checkpoint table"):
        hub_load(mirror=mirror, progress=False)
    assert listing(hub_dir) == []


# --------------------------------------------------------------------------- sha256= of the caller


@pytest.mark.slow
def test_sha256_of_a_users_file(tmp_path, ngc_file) -> None:
    path = tmp_path / "mine.pth"
    shutil.copyfile(ngc_file("resnet50"), path)
    digest = sha(path.read_bytes())
    assert_reference(hub_load(pretrained=False, pretrained_from_file=path, sha256=digest.upper()))
    with pytest.raises(HashMismatchError) as info:
        hub_load(pretrained=False, pretrained_from_file=path, sha256="f" * 64)
    assert f"{str(path)!r} has SHA-256 {digest}, not the {'f' * 64} given as sha256=" in str(info.value)
    assert path.read_bytes() == ngc_file("resnet50").read_bytes()  # a user's file is never touched
    for bad in ("abc", digest + "0", "g" * 64, 12):
        with pytest.raises(ValueError, match="sha256 must be the 64 hex digits"):
            hub_load(pretrained=False, pretrained_from_file=path, sha256=bad)
    with pytest.raises(ValueError, match="pass it with pretrained=True"):
        hub_load(pretrained=False, sha256=digest)


@pytest.mark.slow
def test_sha256_with_ngc_weights(hub_dir, server, mirror, body) -> None:
    with pytest.raises(HashMismatchError, match=r"not the 0{64} of sha256=: .* was not kept"):
        hub_load(mirror=mirror, progress=False, sha256="0" * 64)
    assert listing(hub_dir) == []
    assert_reference(hub_load(mirror=mirror, progress=False, sha256=sha(body)))
    # An intact cached file and a wrong expectation: the file stays, the message says which is right.
    with pytest.raises(HashMismatchError, match="it matches the hash recorded at download, so check the value passed"):
        hub_load(mirror=mirror, progress=False, sha256="0" * 64)
    assert listing(hub_dir) == [FILE, FILE + ".sha256"]
    assert_reference(create_model("resnet50", pretrained=True, sha256=sha(body)))
    assert server.hits == {PATH: 2}
