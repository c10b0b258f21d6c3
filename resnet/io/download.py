"""HTTP downloads with every wait bounded: the one place this repository fetches a URL.

Both downloads go through :func:`open_stream`: the checkpoint download of :mod:`resnet.weights.cache`
(streamed into a file) and URL images of :mod:`resnet.data.images` (into memory). It sends the
request with ``requests`` and reads the body with urllib3's ``read1`` (one socket read per call, so
the clock is checked however slowly the server sends; urllib3 < 2.2 has no ``read1``, and the body
is then read :data:`OLD_URLLIB3_PIECE` bytes at a time). The :class:`Limits` are:

- ``connect``: seconds to open the connection, TLS handshake included;
- ``read``: seconds of silence allowed before the answer and between two pieces of the body;
- ``deadline``: seconds for the whole download, counted from the request. A server that trickles a
  byte a second never trips the read timeout; the deadline stops it (at most one read timeout late);
- ``min_rate`` / ``rate_window``: the slowest pace accepted, averaged over each window; a long
  download that must not be cut at a fixed time (a checkpoint on a slow link) uses this instead;
- ``max_bytes``: the largest body accepted, whether or not the server announces its size.

``Content-Encoding: gzip`` (or deflate) bodies are decoded. Completeness compares like with like: the
bytes received on the wire against ``Content-Length``, which counts the encoded bytes; ``max_bytes``
bounds the decoded bytes the caller receives.

``requests`` and ``urllib3`` are imported on first use: they add about 0.1 s to every start-up.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Optional, Union

if TYPE_CHECKING:  # pragma: no cover - typing only
    import requests

#: Seconds for a download, as the public ``timeout=`` arguments take them: one number (connect and
#: read), ``(connect, read)``, or ``(connect, read, deadline)`` where ``deadline`` bounds the whole
#: download. Without a third element the caller's default deadline applies (or the read timeout,
#: if that is longer).
Timeout = Union[float, tuple[float, float], tuple[float, float, float]]

#: What went wrong, for callers that word their own advice (see :class:`DownloadError`).
FailureKind = Literal[
    "status", "connect-timeout", "read-timeout", "deadline", "too-slow", "too-large", "incomplete",
    "redirects", "unsupported-url", "connection",
]

#: Bytes read at a time with urllib3 older than 2.2, which has no ``read1``: a server sending one byte
#: a second then holds a download up to 2.3 hours past its deadline (urllib3 >= 2.2: one read timeout).
OLD_URLLIB3_PIECE = 8192

_TIMEOUT_VALUE = re.compile(r"timeout=([0-9.]+)")
_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-f]+>: ")


class DownloadError(Exception):
    """A download failed; ``str()`` is ``could not download URL: <detail>``.

    Attributes:
        url: the address as requested.
        kind: a :data:`FailureKind`, for callers that add their own advice.
        detail: what happened, naming the limit that fired (``"no connection within 5 s (connect
            timeout, which includes the TLS handshake)"``, ``"HTTP 404 Not Found"``...).
        status: the HTTP status for ``kind == "status"``, else None.
        size: bytes received (or announced, for ``too-large`` before the body) when it matters.
    """

    def __init__(
        self, url: str, kind: FailureKind, detail: str, *, status: Optional[int] = None, size: int = 0
    ) -> None:
        super().__init__(f"could not download {url}: {detail}")
        self.url, self.kind, self.detail, self.status, self.size = url, kind, detail, status, size


@dataclass(frozen=True)
class Limits:
    """The bounds of one download (seconds, bytes per second, bytes); None means unbounded."""

    connect: float
    read: float
    deadline: Optional[float] = None
    min_rate: Optional[float] = None
    rate_window: float = 120.0
    max_bytes: Optional[int] = None

    @classmethod
    def from_timeout(cls, timeout: Timeout, *, default_deadline: float, **limits: object) -> "Limits":
        """Limits from a public ``timeout=`` value (see :data:`Timeout`), checked first.

        The deadline is the third element when given, else ``default_deadline`` or the read timeout,
        whichever is longer (so ``timeout=600`` still waits 600 s for a read). ``limits`` sets the
        other fields.
        """
        check_timeout(timeout)
        if isinstance(timeout, tuple):
            connect, read = float(timeout[0]), float(timeout[1])
            deadline = float(timeout[2]) if len(timeout) == 3 else max(default_deadline, read)
        else:
            connect = read = float(timeout)
            deadline = max(default_deadline, read)
        return replace(cls(connect, read, deadline), **limits)


def check_timeout(timeout: object, default: Optional[Timeout] = None) -> None:
    """Raise ``ValueError`` unless ``timeout`` is a valid :data:`Timeout` (positive seconds)."""
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    shape_ok = len(values) in (2, 3) if isinstance(timeout, tuple) else True
    if not shape_ok or not all(_positive_number(v) for v in values):
        hint = f"; the default is {default!r}" if default is not None else ""
        raise ValueError(
            "timeout must be positive seconds: one number, (connect, read) or (connect, read, deadline), "
            f"got {timeout!r}{hint}"
        )


def parse_timeout(text: str) -> Timeout:
    """A :data:`Timeout` from command-line text: ``"30"``, ``"5,30"`` or ``"5,30,180"``.

    Raises:
        ValueError: naming the text and the accepted forms.
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        numbers = tuple(float(part) for part in parts)
    except ValueError:
        numbers = ()
    timeout: Timeout = numbers[0] if len(numbers) == 1 else numbers  # type: ignore[assignment]
    try:
        check_timeout(timeout)
    except ValueError:
        raise ValueError(
            f"invalid timeout {text!r}: give positive seconds as SECONDS (connect and read), CONNECT,READ "
            "or CONNECT,READ,DEADLINE (e.g. 5,30,180)"
        ) from None
    return timeout


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and value < float("inf")


class Stream:
    """An open HTTP response: status and headers now, the body through :meth:`chunks`."""

    def __init__(self, url: str, response: "requests.Response", limits: Limits, started: float) -> None:
        self.url = url
        self.limits = limits
        self.status: int = response.status_code
        self.reason: str = response.reason or ""
        self.headers: Mapping[str, str] = response.headers
        self._response = response
        self._started = started

    @property
    def content_length(self) -> Optional[int]:
        """The size the server announced (bytes on the wire, encoded), or None."""
        announced = self.headers.get("Content-Length", "").strip()
        return int(announced) if announced.isdigit() else None

    @property
    def wire_bytes(self) -> int:
        """Bytes of the body received on the wire so far (encoded, as ``Content-Length`` counts them)."""
        return self._response.raw.tell()

    def status_error(self) -> DownloadError:
        """The error to raise for a status the caller does not accept."""
        text = f"HTTP {self.status} {self.reason}".rstrip()
        return DownloadError(self.url, "status", text, status=self.status)

    def chunks(self, size: int = 1 << 16) -> Iterator[bytes]:
        """The decoded body, in pieces of at most ``size`` bytes, within the limits.

        Raises:
            DownloadError: a read timeout, the deadline, a pace under ``min_rate``, more than
                ``max_bytes``, or a body shorter than announced (or cut by a dropped connection).
        """
        from urllib3.exceptions import DecodeError, HTTPError, ProtocolError, ReadTimeoutError

        limits, raw = self.limits, self._response.raw
        read = getattr(raw, "read1", None)  # urllib3 >= 2.2: at most one socket read per call
        if read is None:  # older urllib3: read(n) waits for n bytes, so the limits are checked every n bytes
            read, size = raw.read, min(size, OLD_URLLIB3_PIECE)
        announced = self.content_length
        if limits.max_bytes is not None and announced is not None and announced > limits.max_bytes:
            raise self._too_large(announced, "announced")
        received = 0
        window_start, window_wire = time.monotonic(), 0
        while True:
            try:
                chunk = read(size, decode_content=True)
            except ReadTimeoutError:
                raise DownloadError(
                    self.url, "read-timeout", f"the server sent nothing for {limits.read:g} s (read timeout)",
                    size=received,
                ) from None
            except ProtocolError:
                raise self._incomplete(raw.tell(), announced) from None
            except DecodeError as error:
                encoding = self.headers.get("Content-Encoding", "")
                raise DownloadError(
                    self.url, "connection", f"the body could not be decoded (Content-Encoding {encoding!r}: {error})",
                    size=received,
                ) from None
            except (HTTPError, OSError) as error:
                raise DownloadError(self.url, "connection", _describe(error), size=received) from None
            if not chunk:
                break
            received += len(chunk)
            if limits.max_bytes is not None and received > limits.max_bytes:
                raise self._too_large(received, "so far")
            now = time.monotonic()
            if limits.deadline is not None and now - self._started > limits.deadline:
                raise DownloadError(
                    self.url, "deadline",
                    f"not finished within {limits.deadline:g} s (the overall deadline; {received:,} bytes "
                    "received): the server is sending too slowly",
                    size=received,
                )
            if limits.min_rate is not None and now - window_start >= limits.rate_window:
                arrived = raw.tell() - window_wire
                if arrived < limits.min_rate * (now - window_start):
                    raise DownloadError(
                        self.url, "too-slow",
                        f"only {arrived:,} bytes arrived in {now - window_start:.0f} s, under the minimum of "
                        f"{limits.min_rate:,.0f} bytes/s ({received:,} bytes received in all)",
                        size=received,
                    )
                window_start, window_wire = now, raw.tell()
            yield chunk
        if announced is not None and raw.tell() < announced:
            raise self._incomplete(raw.tell(), announced)

    def _too_large(self, size: int, how: str) -> DownloadError:
        return DownloadError(
            self.url, "too-large", f"the body is over the limit of {self.limits.max_bytes:,} bytes ({size:,} {how})",
            size=size,
        )

    def _incomplete(self, wire: int, announced: Optional[int]) -> DownloadError:
        of = f" of {announced:,}" if announced is not None else ""
        return DownloadError(
            self.url, "incomplete", f"the connection closed after {wire:,}{of} bytes", size=wire,
        )


@contextlib.contextmanager
def open_stream(url: str, limits: Limits, *, headers: Optional[Mapping[str, str]] = None) -> Iterator[Stream]:
    """Send ``GET url`` (redirects followed) and yield the :class:`Stream` once the headers are in.

    The status is not checked: compare ``stream.status`` and raise ``stream.status_error()``.
    The connection is closed when the block ends.

    Raises:
        DownloadError: connection refused, no answer within the timeouts, a redirect loop, a URL
            that is not http(s), a TLS error (and, from :meth:`Stream.chunks`, the body's failures).
    """
    import requests

    started = time.monotonic()
    try:
        response = requests.get(url, stream=True, timeout=(limits.connect, limits.read), headers=dict(headers or {}))
    except requests.exceptions.TooManyRedirects:
        raise DownloadError(url, "redirects", "too many redirects (the server redirects in a loop)") from None
    except requests.exceptions.ConnectTimeout:
        raise _connect_timeout(url, limits) from None
    except requests.exceptions.ReadTimeout as error:
        # urllib3 reports a TLS handshake that hangs (an https:// URL on a plain-HTTP port) as a read
        # timeout, though the connect timeout is the one that fired; its message names the value used.
        fired = _TIMEOUT_VALUE.search(str(error))
        if fired and float(fired.group(1)) == limits.connect != limits.read:
            raise _connect_timeout(url, limits) from None
        raise DownloadError(
            url, "read-timeout", f"the server did not answer within {limits.read:g} s (read timeout)"
        ) from None
    except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema):
        raise DownloadError(url, "unsupported-url", "only http:// and https:// URLs are supported") from None
    except requests.exceptions.RequestException as error:
        raise DownloadError(url, "connection", _describe(error)) from None
    with response:
        yield Stream(url, response, limits, started)


def _connect_timeout(url: str, limits: Limits) -> DownloadError:
    return DownloadError(
        url, "connect-timeout",
        f"no connection within {limits.connect:g} s (connect timeout, which includes the TLS handshake)",
    )


def _describe(error: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without object addresses."""
    reason: BaseException = error
    while True:
        inner = getattr(reason, "reason", None) or (reason.args[0] if reason.args else None)
        if not isinstance(inner, BaseException) or inner is reason:
            break
        reason = inner
    text = _OBJECT_REPR.sub("", str(reason)) or type(reason).__name__
    return f"{type(reason).__name__}: {text}"
