"""Test helpers: stand-in NGC checkpoints built by the fixture recipe, and a loopback HTTP server.

Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import torch

# The stand-in recipe (the parity fixtures' too) is the library's: benchmarks and tests make the same weights.
from resnet.weights.standin import standin_state_dict_of, standin_value  # noqa: F401  (also this module's names)

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ngc"
IMAGES = REPO_ROOT / "examples" / "images"
#: The sample photos that ship with the repository, in name order.
PHOTOS = sorted(p for p in IMAGES.iterdir() if p.suffix in {".png", ".jpg"})
ARCH_NAMES = ("resnet50", "resnext101-32x4d", "se-resnext101-32x4d")


def load_schema(arch: str) -> dict:
    """``{"arch", "keys": [[name, shape], ...], "prefix"}`` of the NGC file, in file order."""
    return json.loads((FIXTURES / f"{arch}.schema.json").read_text())


def load_expected(arch: str) -> dict:
    """The reference's logits for the recipe's weights and input batch."""
    return torch.load(FIXTURES / f"{arch}.expected.pt", weights_only=True)


def load_live(arch: str) -> dict:
    """An EfficientNet's live fixture: the recipe's seeds, BatchNorm running stats and the reference's logits
    (fixtures/ngc/README.md)."""
    return torch.load(FIXTURES / f"{arch}.live.pt", weights_only=True)


def standin_state_dict(arch: str, *, live: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """The deterministic stand-in for NVIDIA's NGC checkpoint of ``arch`` (how: fixtures/ngc/README.md).

    ``live``: the live recipe of the EfficientNet fixtures, the same entries (seeds from ``<arch>.live.pt``)
    with the fixture's BatchNorm running stats in place of the generated ones. Names carry the fixture's
    ``key_prefix`` (``module.`` in some sets).
    """
    source = load_live(arch) if live else load_expected(arch)
    seed_base, prefix = source["seed_base"], source.get("key_prefix", "")
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict(
        (prefix + name, standin_value(name, shape, seed_base + i))
        for i, (name, shape) in enumerate(load_schema(arch)["keys"]))
    if live:
        state.update((prefix + name, value) for name, value in source["bn_stats"].items())
    return state


def load_standin_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` (any architecture) with the stand-in recipe's values in every parameter and buffer."""
    model.load_state_dict(standin_state_dict_of(model, seed))
    return model


def parity_input(arch: str, size: int = 224, *, live: bool = False) -> torch.Tensor:
    """The (2, 3, size, size) input batch the reference logits were computed for (224, or 380 for the
    ``logits_380`` of the B4 EfficientNets)."""
    seed = (load_live(arch) if live else load_expected(arch))["input_seed"]
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def eval_path_can_tell_context() -> bool:
    """Whether this torch has every API the model's eval fast path asks "is anything unusual going on?"
    (``torch.compiler.is_compiling`` comes with torch 2.3): without one, eval calls run the layers."""
    from resnet import eval_path

    return not eval_path._being_transformed()


def onednn_has_bfloat16_convolutions() -> Optional[bool]:
    """Whether oneDNN runs bfloat16 convolutions on this CPU (AVX-512 BW/VL/DQ, AVX-NE-CONVERT or AMX: not an
    AVX2-only CPU, where bfloat16 paths run unfused), as torch itself reports it; ``None`` where this torch
    cannot say. Tests expect a fused bfloat16 path only where it is ``True``."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def skip_unless_torchrun_exits_cleanly() -> None:
    """Skip a test that runs torchrun jobs on a torch whose gloo jobs can hang at exit (see
    :data:`resnet.training.distributed.CLEAN_EXIT_TORCH`): such a hang would hold the suite for minutes."""
    import pytest

    from resnet.training.distributed import CLEAN_EXIT_TORCH, torch_release

    if torch_release(torch.__version__) < CLEAN_EXIT_TORCH:
        pytest.skip(f"torchrun jobs can hang at exit on torch {torch.__version__} (pytorch/pytorch#75097); "
                    f"they run on torch {'.'.join(map(str, CLEAN_EXIT_TORCH))} and later")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra: str) -> dict:
    """The environment of a ``python -m resnet`` child process: this checkout importable, charts without a
    display, plus ``extra``."""
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), MPLBACKEND="Agg", **extra)


def run_resnet(*args: object, timeout: float = 300, umask: int = -1, env: Optional[dict] = None
               ) -> subprocess.CompletedProcess:
    """``python -m resnet ARGS`` in a child process (the end-to-end runs; most tests use conftest's ``cli``)."""
    return subprocess.run([sys.executable, "-m", "resnet", *map(str, args)], cwd=REPO_ROOT,
                          env=child_env() if env is None else env, capture_output=True, text=True, timeout=timeout,
                          umask=umask)


# --------------------------------------------------------------------------- loopback HTTP server

@dataclass
class Route:
    """What the server answers for one path.

    ``body`` is sent with ``status``; ``truncate_to`` sends only that many bytes while
    announcing the full ``Content-Length`` and then closes; ``delay`` sleeps before answering
    (a server that never answers); ``location`` makes a redirect.
    """

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    truncate_to: Optional[int] = None
    delay: float = 0.0
    location: Optional[str] = None
    headers: dict = field(default_factory=dict)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


class LoopbackHTTP:
    """Serves ``handler`` on 127.0.0.1 (a free port) from a daemon thread while used as a context manager."""

    def __init__(self, handler: type) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        # shutdown() waits for the serving loop to look at its flag: every 20 ms, not socketserver's 0.5 s (half a
        # second at the end of every test with a server).
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def address(self) -> str:
        """``host:port``."""
        return "%s:%d" % self.httpd.server_address[:2]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class LoopbackServer(LoopbackHTTP):
    """A threaded HTTP server on 127.0.0.1 with routes set by the test; counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Union[Route, Callable[[], Route]]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                route = server.routes.get(path)
                if callable(route):
                    route = route()
                if route is None:
                    route = Route(b"not found", status=404, content_type="text/plain")
                if route.delay:
                    time.sleep(route.delay)
                try:
                    self.send_response(route.status)
                    if route.location is not None:
                        self.send_header("Location", route.location)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(route.body)))
                    for key, value in route.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    body = route.body if route.truncate_to is None else route.body[: route.truncate_to]
                    self.wfile.write(body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if route.truncate_to is not None:
                    self.close_connection = True

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    def url(self, path: str) -> str:
        return self.base_url + path


def assert_top_k_agrees(indices, logits, tolerance: float) -> None:
    """Assert that ``indices`` (most likely first), found by another computation, are a top-k of ``logits``.

    Two computations of the same model agree only within ``tolerance`` (max abs logit difference), so
    classes whose logits are closer than that may swap places. Each class in ``indices`` must reach
    the k-th largest logit less ``tolerance``, and each must be ranked no higher than the one before it
    by more than ``tolerance``. Where the margins exceed the tolerance this is exact equality with
    ``logits``' top-k, in order.
    """
    logits = torch.as_tensor(logits, dtype=torch.float64).flatten()
    indices = [int(i) for i in indices]
    expected = logits.topk(len(indices)).indices.tolist()
    chosen = logits[indices]
    assert len(set(indices)) == len(indices), indices
    assert bool((chosen >= logits[expected[-1]] - tolerance).all()), (indices, expected)
    assert bool((chosen[1:] <= chosen[:-1] + tolerance).all()), (indices, expected)
