"""Defaults and choices of image loading that the command line shows before anything heavy is imported.

Nothing here imports torch, numpy or Pillow, so that ``python -m resnet classify --help`` and its argument
errors are immediate. Each name is also its user module's (``resnet.data.images.DEFAULT_TIMEOUT``,
``resnet.data.decode.DECODE_MODES``, ``resnet.data.batch.default_workers``, ``resnet.data.display.PLOT_LIMIT``).
"""

from __future__ import annotations

import os
from typing import Literal

#: Default (connect, read) timeout in seconds: connecting to the server, then each wait for more
#: bytes. A server that accepts the connection and never answers fails after the read timeout.
#: ``timeout=`` also takes one number, or (connect, read, deadline) (see ``resnet.io.download.Timeout``).
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
#: Seconds a URL download may take in all, unless ``timeout`` has a third element: a server that
#: sends a byte every few seconds never trips the read timeout, and is stopped by this.
DEFAULT_DEADLINE: float = 180.0

#: How an image is decoded: every pixel (``"exact"``), or a large JPEG at reduced scale (``"reduced"``;
#: :func:`resnet.data.decode.decode_image`).
Decode = Literal["exact", "reduced"]
#: The names :data:`Decode` takes.
DECODE_MODES: tuple[str, ...] = ("exact", "reduced")

#: Most decoding threads by default, whatever the number of CPUs.
MAX_DEFAULT_WORKERS: int = 8

#: Images drawn by ``save_predictions_chart`` (``show_predictions``, ``classify --plot``) at most by default,
#: one row each.
PLOT_LIMIT: int = 16


def default_workers() -> int:
    """Decoding threads (or loader processes) when none are asked for: the CPU count, at most
    :data:`MAX_DEFAULT_WORKERS`. The model's own threads are one per physical core (torch's default): the
    decoding threads work while it runs, and on 2 cores they cost no measurable CPU time beyond their
    decoding (docs/performance.md)."""
    return min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)


def check_decode(decode: object) -> None:
    """Refuse a ``decode`` that is not one of :data:`DECODE_MODES` (``ValueError``)."""
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(map(repr, DECODE_MODES))}, got {decode!r}")
