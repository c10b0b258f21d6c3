"""The one fetch helper against hostile servers on 127.0.0.1: every wait bounded, every failure named.

Each server misbehaves in one way (trickles, never finishes, sends no length, compresses, hangs a
TLS handshake); the tests end on the client's own limits, set small through parameters, and the
servers stop when the test does. Nothing here asserts wall-clock time: where a limit fails to fire,
the server's own end (a capped trickle, a closed connection) produces a different error, and the
assertion on the error's wording fails.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import resnet.weights.cache
from processing_utils import ImageLoadError, load_image
from resnet import WeightsDownloadError
from resnet.io.download import DownloadError, Limits, check_timeout, open_stream, parse_timeout
from support import PHOTOS, REPO_ROOT, LoopbackHTTP, QuietHandler, load_expected, parity_input

FILE = "nvidia_resnet50_200821.pth.tar"
Behaviour = Callable[[QuietHandler], None]


class HostileServer(LoopbackHTTP):
    """A loopback server whose answer for each path is a function of the request handler."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.hits: dict[str, int] = {}
        self.stop = threading.Event()  # set when the test ends: every trickle stops
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                try:
                    server.behaviours[self.path](self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

        super().__init__(Handler)

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as srv:
        yield srv
        srv.stop.set()


def send_headers(handler: QuietHandler, headers: dict[str, str], status: int = 200) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.flush()


#: Seconds after which a trickling server gives up and closes the connection: a client whose limit
#: failed to fire then sees a cut body instead of hanging, and the test fails on the error's wording.
GIVE_UP = 30.0


def trickle(body: bytes, stop: threading.Event, *, piece: int = 1, every: float = 0.05,
            content_type: str = "image/png") -> Behaviour:
    """Announce ``body`` and send it ``piece`` bytes every ``every`` seconds until done, stopped or GIVE_UP."""

    def behave(handler: QuietHandler) -> None:
        send_headers(handler, {"Content-Type": content_type, "Content-Length": str(len(body))})
        give_up = time.monotonic() + GIVE_UP
        for start in range(0, len(body), piece):
            if stop.wait(min(every, max(0.0, give_up - time.monotonic()))) or time.monotonic() >= give_up:
                return
            handler.wfile.write(body[start:start + piece])
            handler.wfile.flush()

    return behave


def endless(stop: threading.Event, content_type: str = "application/octet-stream") -> Behaviour:
    """No Content-Length, and 64 KiB pieces as fast as the client takes them, until it hangs up."""

    def behave(handler: QuietHandler) -> None:
        send_headers(handler, {"Content-Type": content_type})
        piece = b"\0" * (1 << 16)
        sent = 0
        while not stop.is_set() and sent < 64 << 20:  # a cap far above the limits the tests set
            handler.wfile.write(piece)
            sent += len(piece)

    return behave


def gzipped(body: bytes, *, content_type: str, cut: bool = False) -> Behaviour:
    """``body`` with Content-Encoding: gzip; Content-Length counts the compressed bytes (as HTTP says)."""
    encoded = gzip.compress(body)

    def behave(handler: QuietHandler) -> None:
        send_headers(handler, {"Content-Type": content_type, "Content-Encoding": "gzip",
                               "Content-Length": str(len(encoded))})
        handler.wfile.write(encoded[: len(encoded) // 2] if cut else encoded)
        handler.close_connection = True

    return behave


def hub_load(entry: str, **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(REPO_ROOT), entry, source="local", **kwargs)


def cache_listing(hub_dir: Path) -> list[str]:
    folder = hub_dir / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- timeouts as an argument


def test_timeout_forms_and_their_deadline() -> None:
    assert Limits.from_timeout(7, default_deadline=180) == Limits(7, 7, 180)
    assert Limits.from_timeout((5, 30), default_deadline=180) == Limits(5, 30, 180)
    assert Limits.from_timeout((5, 30, 60), default_deadline=180) == Limits(5, 30, 60)
    # A read timeout longer than the default deadline is not cut short by it.
    assert Limits.from_timeout((5, 600), default_deadline=180).deadline == 600
    assert Limits.from_timeout((5, 30), default_deadline=180, max_bytes=10).max_bytes == 10
    for bad in (0, -1, True, "5", (5,), (5, 30, 60, 1), (5, 0), (5, 30, float("nan")), [5, 30], float("inf")):
        with pytest.raises(ValueError, match="timeout must be positive seconds"):
            check_timeout(bad)


def test_command_line_timeout_text() -> None:
    assert parse_timeout("30") == 30.0
    assert parse_timeout("5,30") == (5.0, 30.0)
    assert parse_timeout(" 5, 30 ,180") == (5.0, 30.0, 180.0)
    for bad in ("", "0", "-1", "x", "5,", "1,2,3,4", "5,inf"):
        with pytest.raises(ValueError, match="invalid timeout"):
            parse_timeout(bad)


# --------------------------------------------------------------------------- URL images


@pytest.mark.slow
def test_image_trickled_a_byte_at_a_time_stops_at_the_deadline(hostile) -> None:
    """A server that keeps every read under the read timeout is stopped by the overall deadline."""
    hostile.behaviours["/slow.png"] = trickle(PHOTOS[0].read_bytes(), hostile.stop)
    url = hostile.url("/slow.png")
    with pytest.raises(ImageLoadError, match=r"not finished within 1.5 s \(the overall deadline") as info:
        load_image(url, timeout=(5, 5, 1.5))
    assert url in str(info.value) and "longer deadline" in str(info.value)


@pytest.mark.slow
def test_image_deadline_defaults_with_a_pair_or_one_number(hostile, monkeypatch) -> None:
    import resnet.data.images

    monkeypatch.setattr(resnet.data.images, "DEFAULT_DEADLINE", 1.5)
    hostile.behaviours["/slow.png"] = trickle(PHOTOS[0].read_bytes(), hostile.stop)
    for timeout in ((5, 1), 1.0):  # the deadline is the default, being longer than these read timeouts
        with pytest.raises(ImageLoadError, match=r"within 1.5 s \(the overall deadline"):
            load_image(hostile.url("/slow.png"), timeout=timeout)


def test_image_without_content_length_is_bounded(hostile, monkeypatch) -> None:
    import resnet.data.images

    monkeypatch.setattr(resnet.data.images, "MAX_DOWNLOAD_BYTES", 1 << 20)
    hostile.behaviours["/huge.png"] = endless(hostile.stop, "image/png")
    with pytest.raises(ImageLoadError, match=r"too large to be a photo \(1,\d{3},\d{3} bytes so far, limit 1,048,576"):
        load_image(hostile.url("/huge.png"))


def test_gzip_encoded_image_is_decoded(hostile) -> None:
    photo = PHOTOS[1]
    hostile.behaviours["/z.png"] = gzipped(photo.read_bytes(), content_type="image/png")
    from PIL import Image

    with Image.open(photo) as expected:
        assert load_image(hostile.url("/z.png")).tobytes() == expected.convert("RGB").tobytes()


def test_cut_gzip_image_is_reported_cut(hostile) -> None:
    hostile.behaviours["/z.png"] = gzipped(PHOTOS[1].read_bytes(), content_type="image/png", cut=True)
    with pytest.raises(ImageLoadError, match=r"the connection closed after \d[\d,]* of [\d,]+ bytes; try again"):
        load_image(hostile.url("/z.png"))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never sends a byte (a TLS handshake there hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.slow
def test_redirect_to_https_on_a_plain_port_names_the_connect_timeout(hostile, silent_port) -> None:
    """The TLS handshake is bounded by the connect timeout; the message says so, not 'within <read> s'."""

    def redirect(handler: QuietHandler) -> None:
        send_headers(handler, {"Location": f"https://127.0.0.1:{silent_port}/cat.png", "Content-Length": "0"}, 302)

    hostile.behaviours["/moved"] = redirect
    with pytest.raises(ImageLoadError) as info:
        load_image(hostile.url("/moved"), timeout=(0.5, 60))
    message = str(info.value)
    assert "no connection within 0.5 s (connect timeout, which includes the TLS handshake)" in message
    assert "within 60" not in message


@pytest.mark.slow
def test_server_silent_after_headers_names_the_read_timeout(hostile) -> None:
    hostile.behaviours["/stuck.png"] = trickle(b"x" * 100, hostile.stop, every=120)
    with pytest.raises(ImageLoadError, match=r"the server sent nothing for 0.5 s \(read timeout\); try again later"):
        load_image(hostile.url("/stuck.png"), timeout=(5, 0.5))


def urllib3_has_read1() -> bool:
    from urllib3.response import HTTPResponse

    return "read1" in vars(HTTPResponse)


@pytest.mark.skipif(not urllib3_has_read1(), reason="urllib3 < 2.2, below requirements.txt")
def test_stream_reads_pieces_as_they_arrive(hostile) -> None:
    """read1 semantics: a slow sender's bytes reach the caller piece by piece, not at the end."""
    body = bytes(range(40))
    hostile.behaviours["/t"] = trickle(body, hostile.stop, piece=4, every=0.01)
    with open_stream(hostile.url("/t"), Limits(5, 5, 60)) as stream:
        pieces = list(stream.chunks(1 << 16))
    assert b"".join(pieces) == body and len(pieces) > 1


def test_direct_errors_carry_their_kind(hostile) -> None:
    hostile.behaviours["/missing"] = lambda h: send_headers(h, {"Content-Length": "0"}, 404)
    with open_stream(hostile.url("/missing"), Limits(5, 5)) as stream:
        error = stream.status_error()
    assert (error.kind, error.status) == ("status", 404)
    assert str(error) == f"could not download {hostile.url('/missing')}: HTTP 404 Not Found"
    with pytest.raises(DownloadError) as info:
        with open_stream("ftp://127.0.0.1/x", Limits(5, 5)):
            pass
    assert info.value.kind == "unsupported-url"


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture
def fast_limits(monkeypatch) -> None:
    """Checkpoint limits small enough for a test: 1 s windows at 10 kB/s, 1 MiB at most."""
    monkeypatch.setattr(resnet.weights.cache, "MIN_RATE", 10_000)
    monkeypatch.setattr(resnet.weights.cache, "RATE_WINDOW", 1.0)
    monkeypatch.setattr(resnet.weights.cache, "MAX_CHECKPOINT_BYTES", 1 << 20)


@pytest.mark.slow
def test_checkpoint_trickle_under_the_minimum_rate_stalls(hostile, hub_dir, fast_limits) -> None:
    hostile.behaviours[f"/w/{FILE}"] = trickle(b"x" * 100_000, hostile.stop, piece=100, every=0.05,
                                               content_type="application/octet-stream")
    with pytest.raises(WeightsDownloadError, match=r"stalled: only [\d,]+ bytes arrived in \d+ s, under the minimum"):
        hub_load("nvidia_resnet50", mirror=hostile.url("/w"), progress=False)
    assert cache_listing(hub_dir) == []


@pytest.mark.slow
def test_checkpoint_at_an_honest_pace_above_the_minimum_completes(hostile, hub_dir, ngc_file, monkeypatch) -> None:
    """Several rate windows pass while the file arrives; a pace above the minimum is never cut."""
    monkeypatch.setattr(resnet.weights.cache, "MIN_RATE", 10_000)
    monkeypatch.setattr(resnet.weights.cache, "RATE_WINDOW", 0.2)
    body = ngc_file("resnet50").read_bytes()
    hostile.behaviours[f"/w/{FILE}"] = trickle(body, hostile.stop, piece=len(body) // 20, every=0.05,
                                               content_type="application/octet-stream")
    model = hub_load("nvidia_resnet50", mirror=hostile.url("/w"), progress=False).eval()
    with torch.no_grad():
        assert (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4


def test_checkpoint_without_content_length_stops_past_the_bound(hostile, hub_dir, fast_limits) -> None:
    hostile.behaviours[f"/w/{FILE}"] = endless(hostile.stop)
    with pytest.raises(WeightsDownloadError, match=r"failed: the body is over the limit of 1,048,576 bytes"):
        hub_load("nvidia_resnet50", mirror=hostile.url("/w"), progress=False)
    assert cache_listing(hub_dir) == []  # nothing of the 1 MiB written is left behind


def test_checkpoint_announced_over_the_bound_is_refused_before_the_body(hostile, hub_dir, fast_limits) -> None:
    def huge(handler: QuietHandler) -> None:
        send_headers(handler, {"Content-Length": str(5 << 30)})
        hostile.stop.wait(60)  # sends no body: the client must refuse on the announcement alone

    hostile.behaviours[f"/w/{FILE}"] = huge
    with pytest.raises(WeightsDownloadError, match=r"over the limit of 1,048,576 bytes \(5,368,709,120 announced\)"):
        hub_load("nvidia_resnet50", mirror=hostile.url("/w"), progress=False)


@pytest.mark.slow
def test_gzip_encoded_checkpoint_is_accepted_and_stored_decoded(hostile, hub_dir, ngc_file) -> None:
    body = ngc_file("resnet50").read_bytes()
    hostile.behaviours[f"/w/{FILE}"] = gzipped(body, content_type="application/octet-stream")
    model = hub_load("nvidia_resnet50", mirror=hostile.url("/w"), progress=False).eval()
    cached = hub_dir / "checkpoints" / FILE
    assert cached.read_bytes() == body
    assert (hub_dir / "checkpoints" / (FILE + ".sha256")).read_text().split()[0] == hashlib.sha256(body).hexdigest()
    with torch.no_grad():
        assert (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4


@pytest.mark.slow
def test_cut_gzip_checkpoint_is_cut_short(hostile, hub_dir, ngc_file) -> None:
    hostile.behaviours[f"/w/{FILE}"] = gzipped(ngc_file("resnet50").read_bytes(),
                                               content_type="application/octet-stream", cut=True)
    with pytest.raises(WeightsDownloadError, match=r"was cut short: the connection closed after [\d,]+ of [\d,]+"):
        hub_load("nvidia_resnet50", mirror=hostile.url("/w"), progress=False)
    assert cache_listing(hub_dir) == []


@pytest.mark.slow
def test_urllib3_without_read1_still_downloads_and_keeps_the_deadline(hostile, monkeypatch) -> None:
    """urllib3 < 2.2 has no read1: pieces of OLD_URLLIB3_PIECE bytes, the limits checked between them."""
    from PIL import Image
    import urllib3.response

    for cls in (urllib3.response.HTTPResponse, getattr(urllib3.response, "BaseHTTPResponse", None)):
        if cls is not None and "read1" in vars(cls):  # urllib3 >= 2.2 declares it on both
            monkeypatch.delattr(cls, "read1")
    photo = PHOTOS[1]
    hostile.behaviours["/z.png"] = gzipped(photo.read_bytes(), content_type="image/png")
    with Image.open(photo) as expected:
        assert load_image(hostile.url("/z.png")).tobytes() == expected.convert("RGB").tobytes()
    # 2 kB/s: one 8 KiB piece arrives in about 4 s; a 64 KiB one would outlast the server (GIVE_UP).
    hostile.behaviours["/slow.png"] = trickle(PHOTOS[0].read_bytes(), hostile.stop, piece=100)
    with pytest.raises(ImageLoadError, match=r"not finished within 1.5 s \(the overall deadline"):
        load_image(hostile.url("/slow.png"), timeout=(5, 5, 1.5))
