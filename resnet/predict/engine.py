"""The batch-classification engine: a stream of inputs in, a stream of results out, in input order.

Decoding runs in threads (:func:`resnet.data.batch.iter_batches`) while the model computes; results come out
batch by batch, so a caller that writes them as they come (a terminal, a Parquet file) holds one batch at a
time, whatever the number of inputs. The model is anything that maps a (N, 3, S, S) float32 batch to (N, C)
logits: a PyTorch module or an exported model of :mod:`resnet.deploy.runtimes`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Callable, Iterable, Iterator, Optional

import torch

from resnet.data.batch import iter_batches
from resnet.data.images import DEFAULT_TIMEOUT
from resnet.data.decode import Decode
from resnet.data.preprocessing import CROP_SIZE, ImageSize
from resnet.io.download import Timeout
from resnet.predict.results import Outcome  # noqa: F401  (also this module's name)


def top_classes(logits: torch.Tensor, classes: list[str], top_k: int) -> list[list[tuple[int, str, float]]]:
    """Per row of ``logits``: its ``top_k`` ``(class index, name, probability)``, most probable first
    (softmax in float32, whatever the logits' precision)."""
    probs = torch.softmax(logits.float(), dim=1)
    values, indices = probs.topk(top_k, dim=1)
    return [[(i, classes[i], v) for v, i in zip(vs, ix)] for vs, ix in zip(values.tolist(), indices.tolist())]


def classify_stream(
    uris: Iterable[str],
    model: Callable[[torch.Tensor], torch.Tensor],
    classes: list[str],
    *,
    top_k: int,
    batch_size: int,
    device: torch.device,
    workers: Optional[int] = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    image_size: ImageSize = CROP_SIZE,
    progress: Optional[Callable[[int], None]] = None,
    decode: Decode = "exact",
) -> Iterator[Outcome]:
    """Classify ``uris`` (read lazily) and yield one :class:`Outcome` per input, in input order.

    A batch's outcomes are yielded as soon as the model has run on it; decoding of the next inputs goes on in
    background threads meanwhile (at most two batches ahead). An input that does not load is an outcome with
    its ``error``; the same input given twice gets two outcomes. ``progress(n)`` is called with the number of
    inputs each batch covered. Images are cropped to ``image_size`` (the size the model was trained at) after
    resizing to 256/224 of it, or prepared as a :class:`resnet.data.preprocessing.DataConfig` says; ``decode``
    as :func:`resnet.data.batch.iter_batches` takes it. Closing the iterator early stops the decoding.
    """
    pending: deque[str] = deque()  # inputs handed to the decoders and not yet yielded, in input order

    def feed() -> Iterator[str]:
        for uri in uris:
            pending.append(uri)
            yield uri

    batches = iter_batches(feed(), batch_size, num_workers=workers, timeout=timeout, image_size=image_size,
                           decode=decode)
    # Closing the batches on the way out (an error, or the caller stopping early) leaves no decoding running.
    with contextlib.closing(batches), torch.inference_mode():
        for batch in batches:
            found: dict[str, list[Outcome]] = {}
            for uri, message in batch.failures:
                found.setdefault(uri, []).append(Outcome(uri, error=message))
            if len(batch.uris):
                tops = top_classes(model(batch.tensor.to(device)), classes, top_k)
                for uri, top in zip(batch.uris, tops):
                    found.setdefault(uri, []).append(Outcome(uri, top=top))
            covered = len(batch.uris) + len(batch.failures)
            # The batch holds the next ``covered`` inputs; the same input may be in it twice.
            for _ in range(covered):
                uri = pending.popleft()
                yield found[uri].pop(0)
            if progress is not None:
                progress(covered)


def classify(
    uris: list[str],
    model: Callable[[torch.Tensor], torch.Tensor],
    classes: list[str],
    *,
    top_k: int,
    batch_size: int,
    device: torch.device,
    workers: Optional[int] = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    image_size: ImageSize = CROP_SIZE,
    progress: Optional[Callable[[int], None]] = None,
    decode: Decode = "exact",
) -> list[Outcome]:
    """:func:`classify_stream` gathered into a list, in input order."""
    return list(classify_stream(uris, model, classes, top_k=top_k, batch_size=batch_size, device=device,
                                workers=workers, timeout=timeout, image_size=image_size, progress=progress,
                                decode=decode))
