"""Shared fixtures: isolated torch hub directory, no network beyond 127.0.0.1, stand-in weights, loopback server."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # photos.py, shared with tests
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import REPO_ROOT, LoopbackServer, standin_state_dict  # noqa: E402

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty torch hub directory (TORCH_HOME) and no mirror from the environment."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("CONVNETS_WEIGHTS_MIRROR", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home / "hub"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test fails if anything in its process looks up or connects to anything but 127.0.0.1 / ::1."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock: socket.socket, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach {address!r}; tests stay on 127.0.0.1")

    def connect(self, address):
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return real_connect_ex(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # no DNS query for another host leaves the machine either
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"test tried to look up {host!r}; tests stay on 127.0.0.1")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="session")
def ngc_file(tmp_path_factory: pytest.TempPathFactory):
    """``ngc_file(arch)`` -> path of the stand-in NGC checkpoint, built once per session."""
    cache: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("ngc")

    def get(arch: str) -> Path:
        if arch not in cache:
            path = root / f"{arch}.pth.tar"
            torch.save(standin_state_dict(arch), path)
            cache[arch] = path
        return cache[arch]

    return get


@pytest.fixture
def server():
    """A loopback HTTP server on 127.0.0.1; set ``server.routes[path] = Route(...)``."""
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
