"""Many inputs at once: decode URLs and files in a thread pool, keep input order, report failures.

Pillow, requests and the tensor operations release the GIL, so threads decode in parallel.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import torch

from resnet.data.preprocessing import CROP_SIZE, ImageSize, data_config

from resnet.data.defaults import MAX_DEFAULT_WORKERS, default_workers  # noqa: F401  (also this module's names)
from resnet.data.errors import Uri
from resnet.data.images import DEFAULT_TIMEOUT, Decode, Timeout, _check_timeout, check_decode, load_input

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchResult:
    """The outcome of decoding a group of inputs.

    Attributes:
        tensor: (N, 3, 224, 224) float32 model input for the inputs that loaded, in input order
            (N may be 0); (N, 3, S, S) from :func:`iter_batches` with ``image_size=S``.
        uris: the inputs that loaded, in the same order as the rows of ``tensor``.
        failures: ``(input, message)`` for each input that did not load, in input order; the
            message names the input and says what went wrong.
    """

    tensor: torch.Tensor
    uris: list[Uri] = field(default_factory=list)
    failures: list[tuple[Uri, str]] = field(default_factory=list)


def load_batch(
    uris: Iterable[Uri], *, num_workers: Optional[int] = None, timeout: Timeout = DEFAULT_TIMEOUT,
    decode: Decode = "exact",
) -> BatchResult:
    """Load and preprocess every input (URLs and paths) in parallel into one batch.

    A bad input does not stop the others: it is left out of ``tensor`` and reported in
    ``failures`` with its message. ``num_workers`` threads decode (default: the number of
    CPUs); ``timeout`` applies to each URL as in :func:`load_image`. ``decode="reduced"`` decodes large JPEGs
    at reduced scale (:func:`resnet.data.images.load_input`).

    Example::

        result = load_batch(["cat.jpg", "https://example.com/dog.jpg"])
        probs = model(result.tensor).softmax(dim=1)
        for uri, message in result.failures:
            print("skipped", message)
    """
    items = _as_list(uris)
    workers = _resolve_workers(num_workers)
    _check_timeout(timeout)
    check_decode(decode)
    if not items:
        return _assemble([], [])
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="load_batch") as pool:
        outcomes = list(pool.map(lambda uri: _attempt(uri, timeout, CROP_SIZE, decode), items))
    return _assemble(items, outcomes)


def iter_batches(
    uris: Iterable[Uri],
    batch_size: int,
    *,
    num_workers: Optional[int] = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    image_size: ImageSize = CROP_SIZE,
    decode: Decode = "exact",
) -> Iterator[BatchResult]:
    """Stream the inputs as batches of ``batch_size`` consecutive inputs, in input order.

    While the caller works on one batch (runs the model), the next two batches' worth of
    inputs decode in background threads, so decoding overlaps inference. Each
    :class:`BatchResult` covers ``batch_size`` inputs (fewer at the end) and reports its own
    failures, so ``len(b.uris) + len(b.failures)`` inputs per batch. ``uris`` may be any
    iterable, read lazily. ``image_size`` is the side of the model's input (224; a model trained at another
    size takes that: resize to 256/224 of it, centre crop), or its whole
    :class:`resnet.data.preprocessing.DataConfig` (an EfficientNet's: its size, resize and interpolation).
    ``decode="reduced"`` decodes JPEGs much larger than the model needs at reduced scale, to the same crop box
    (:func:`resnet.data.images.load_input`); ``"exact"`` decodes every pixel.

    Once the iterator is exhausted its threads have ended. Closing it early (``close()``, a
    ``break`` out of a ``for`` loop over ``contextlib.closing(...)``) cancels the decoding not
    yet started and returns at once; an input already being decoded finishes in the background
    (a download in progress cannot be interrupted; ``timeout`` bounds it) and its thread ends.

    Example::

        for batch in iter_batches(paths, 32):
            with torch.no_grad():
                probs = model(batch.tensor).softmax(dim=1)
    """
    if isinstance(uris, (str, bytes, os.PathLike)):
        raise TypeError(f"iter_batches expects a list (or other iterable) of inputs, not the single input {uris!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    workers = _resolve_workers(num_workers)
    _check_timeout(timeout)
    config = data_config(image_size)  # checked now rather than at the first next(): the generator body runs lazily
    check_decode(decode)
    return _stream(iter(uris), batch_size, workers, timeout, config, decode)


def _stream(uris: Iterator[Uri], batch_size: int, workers: int, timeout: Timeout,
            image_size: ImageSize = CROP_SIZE, decode: Decode = "exact") -> Iterator[BatchResult]:
    def attempt(uri: Uri) -> tuple[Uri, tuple[Optional[torch.Tensor], Optional[str]]]:
        return uri, _attempt(uri, timeout, image_size, decode)

    # In flight while the caller works on a batch: the next two batches (at least one input per thread).
    outcomes = prefetch(attempt, uris, workers=workers, ahead=max(2 * batch_size, workers), name="iter_batches")
    try:
        while True:
            chunk = list(itertools.islice(outcomes, batch_size))
            if not chunk:
                return
            yield _assemble([uri for uri, _ in chunk], [outcome for _, outcome in chunk], image_size)
    finally:
        outcomes.close()


def prefetch(function: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int,
             name: str = "prefetch") -> Iterator[R]:
    """``function(item)`` for each of ``items``, in order, computed in ``workers`` threads up to ``ahead``
    items ahead of the caller: the one ordered prefetching decoder of ``classify`` (:func:`iter_batches`) and
    ``evaluate`` / validation (:func:`resnet.data.loading.ordered_batches`).

    ``items`` is read lazily, in the caller's thread. Each result is waited for only when the caller asks for
    it, and the next item is handed to a thread first, so that ``ahead`` items are always in flight: while the
    caller works (runs the model), the threads decode. An exception of ``function`` is raised to the caller
    at its item (catch it inside ``function`` to go on). Exhausted, the threads have ended; closed early
    (``close()``, an exception), the items not yet started are cancelled and the call returns at once, while
    an item in progress finishes in the background (a download: bounded by its timeout).
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    iterator = iter(items)
    pending: deque[Future] = deque(pool.submit(function, item) for item in itertools.islice(iterator, ahead))
    exhausted = False
    try:
        while pending:
            future = pending.popleft()
            pending.extend(pool.submit(function, item) for item in itertools.islice(iterator, 1))
            yield future.result()
        exhausted = True
    finally:
        for future in pending:
            future.cancel()
        # Exhausted: every thread is idle, and is joined here. Closed early: work in progress ends on its own.
        pool.shutdown(wait=exhausted, cancel_futures=True)


def _attempt(uri: Uri, timeout: Timeout, image_size: ImageSize = CROP_SIZE,
             decode: Decode = "exact") -> tuple[Optional[torch.Tensor], Optional[str]]:
    """(tensor, None) on success, (None, message) on any failure of this one input."""
    try:
        return load_input(uri, image_size=image_size, decode=decode, timeout=timeout), None
    except Exception as error:  # one bad input must not stop the batch; the message says which
        return None, failure_message(uri, error)


def failure_message(uri: Uri, error: BaseException) -> str:
    """What a result says about an input that failed with ``error``: its message, which names the input, or
    the input, the error's type and its message when it does not."""
    message = str(error)
    name = os.fspath(uri) if isinstance(uri, (str, os.PathLike)) else None
    if not (isinstance(name, str) and name in message):
        message = f"{uri!r}: {type(error).__name__}: {message}"
    return message


def _assemble(items: list[Uri], outcomes: list[tuple[Optional[torch.Tensor], Optional[str]]],
              image_size: ImageSize = CROP_SIZE) -> BatchResult:
    tensors: list[torch.Tensor] = []
    good: list[Uri] = []
    failures: list[tuple[Uri, str]] = []
    for uri, (tensor, message) in zip(items, outcomes):
        if tensor is None:
            failures.append((uri, message or "unknown error"))
        else:
            tensors.append(tensor)
            good.append(uri)
    side = data_config(image_size).image_size
    empty = (0, 3, side, side)
    stacked = torch.stack(tensors) if tensors else torch.empty(empty, dtype=torch.float32)
    return BatchResult(stacked, good, failures)


def _as_list(uris: Iterable[Uri]) -> list[Uri]:
    if isinstance(uris, (str, bytes, os.PathLike)):
        raise TypeError(f"load_batch expects a list of inputs, not the single input {uris!r}; wrap it in a list")
    return list(uris)


def _resolve_workers(num_workers: Optional[int]) -> int:
    if num_workers is None:
        return default_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer or None (one per CPU, at most "
                         f"{MAX_DEFAULT_WORKERS}), got {num_workers!r}")
    return num_workers
