"""The one ordered prefetching decoder (:func:`resnet.data.batch.prefetch`) that ``classify`` (``iter_batches``)
and ``evaluate`` / validation (``ordered_batches``) share: order kept, work ahead of the caller, and the
default number of decoding threads."""

from __future__ import annotations

import os
import threading
import time

import pytest

from resnet.data import batch as batch_module
from resnet.data import loading
from resnet.data.batch import MAX_DEFAULT_WORKERS, default_workers, prefetch


def test_results_come_in_order_whatever_finishes_first() -> None:
    def slow_first(i: int) -> int:
        time.sleep(0.2 if i == 0 else 0.0)
        return i * i

    assert list(prefetch(slow_first, range(10), workers=4, ahead=4)) == [i * i for i in range(10)]


def test_the_threads_work_ahead_while_the_caller_holds_a_result() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        return i

    results = prefetch(work, range(100), workers=2, ahead=5)
    assert next(results) == 0
    time.sleep(0.3)  # the caller "runs the model"
    assert sorted(started) == list(range(6)), "five in flight beyond the one handed out, no more"
    results.close()


def test_an_error_reaches_the_caller_at_its_item_and_closing_cancels_the_rest() -> None:
    calls: list[int] = []

    def work(i: int) -> int:
        calls.append(i)
        if i == 3:
            raise OSError("item 3")
        time.sleep(0.05)
        return i

    results = prefetch(work, range(1000), workers=1, ahead=4)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(OSError, match="item 3"):
        next(results)
    time.sleep(0.2)
    assert max(calls) < 20, "the pending items were cancelled when the error closed the generator"


def test_default_workers_are_the_cpu_count_at_most_8(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, expected in ((1, 1), (2, 2), (8, 8), (64, MAX_DEFAULT_WORKERS), (None, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        assert default_workers() == expected
        assert batch_module._resolve_workers(None) == expected
    assert loading.default_workers is default_workers, "one default for classify and evaluate"

