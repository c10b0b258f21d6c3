"""Shared fixtures: isolated torch hub directory, no network beyond 127.0.0.1, stand-in weights and what is built
from them once per session (the model, its ONNX export, torchvision's peer), a seeded hub cache, a free port, the
command line run in-process, a loopback server; and the strict-skip check of CI (``skip_policy``)."""

from __future__ import annotations

import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # photos.py, shared with tests
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import skip_policy  # noqa: E402
import touch_report  # noqa: E402
from support import REPO_ROOT, LoopbackServer, free_port, standin_state_dict  # noqa: E402

pytest_plugins = ["pytester"]  # tests/test_skip_policy.py runs pytest on small test files


def pytest_configure(config: pytest.Config) -> None:
    skip_policy.pytest_configure(config)  # RESNET_STRICT_SKIPS=1 (CI): a skip off the allow-list fails the run
    touch_report.pytest_configure(config)  # RESNET_TOUCH_REPORT=1: list the modules no test ran

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def live_standin() -> Callable[[str], "dict[str, torch.Tensor]"]:
    """``live_standin(arch)``: the live stand-in of NVIDIA's NGC EfficientNet checkpoint for ``arch`` (NGC naming,
    2-D SE), built once per session; tests read it and do not change it."""
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def get(arch: str) -> "dict[str, torch.Tensor]":
        if arch not in cache:
            cache[arch] = standin_state_dict(arch, live=True)
        return cache[arch]

    return get


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


@pytest.fixture(scope="session")
def standin_resnet50(ngc_file) -> torch.nn.Module:
    """ResNet-50 with the stand-in NGC weights, eval mode, NCHW float32, built once per session.

    Shared: only for tests that leave it as it is (exporters copy it; a test that changes a model builds its own).
    """
    from resnet.builder import create_model

    return create_model("resnet50", pretrained_from_file=ngc_file("resnet50"), channels_last=False).eval()


@pytest.fixture(scope="session")
def standin_onnx(standin_resnet50, tmp_path_factory) -> Path:
    """The float32 ONNX file of :func:`standin_resnet50` (tracing exporter, the default opset), written once per
    session; read it, do not change it."""
    from resnet.exporters import export_metadata, export_onnx, prepare_for_export

    path = tmp_path_factory.mktemp("standin_onnx") / "resnet50.onnx"
    meta = export_metadata("resnet50", weights="stand-in")
    return export_onnx(prepare_for_export(standin_resnet50), path, exporter="torchscript", metadata=meta)


@pytest.fixture(scope="session")
def peer_resnet50() -> torch.nn.Module:
    """torchvision's resnet50 with the stand-in NGC weights, eval mode: the independent peer (call it under
    ``torch.no_grad()``; do not change it)."""
    from reference import peer_model

    return peer_model()


@pytest.fixture
def seeded_cache(hub_dir: Path, ngc_file) -> Path:
    """The test's hub directory with the stand-in resnet50 file where ``pretrained=True`` finds it."""
    from resnet.checkpoints import CHECKPOINTS

    (hub_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copy(ngc_file("resnet50"), hub_dir / "checkpoints" / CHECKPOINTS["resnet50"].file_name)
    return hub_dir


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (nothing answers a connection to it)."""
    return free_port()


@dataclass
class Ran:
    """What a command did: its exit status and what it printed (the fields of ``subprocess.CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., Ran]:
    """``cli("classify", PATH, ...)``: ``python -m resnet ARGS`` in this process through the real dispatcher
    (``resnet.__main__.main``), its exit status and output as a subprocess run would give them."""
    from resnet.__main__ import main

    def run(*args: object) -> Ran:
        capsys.readouterr()  # what the test printed before is not the command's
        try:
            status = main([str(a) for a in args])
        except SystemExit as exit:  # argparse's exits
            status = exit.code if isinstance(exit.code, int) else 1
        captured = capsys.readouterr()
        return Ran(status, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """A torch hub cache holding the stand-in NGC weights of ResNet-50, for the commands' subprocesses (the batch
    tests')."""
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(standin_state_dict("resnet50"), home / "hub" / "checkpoints" / "nvidia_resnet50_200821.pth.tar")
    return home


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of ``batch_support.make_photos``: 40 photos and damaged files (the batch tests')."""
    from batch_support import make_photos

    folder = tmp_path_factory.mktemp("batch") / "photos"
    make_photos(folder)
    return folder
