"""Classification metrics of a labelled image set: top-1, top-5, per-class accuracy, confusion matrix.

:func:`measure` runs any model-like callable (a float32 NCHW batch in, logits out) over a loader of
:class:`resnet.data.loading.Batch` es and returns :class:`Metrics`, summed over the ranks of a ``torchrun`` job,
so several processes give the numbers of one. ``train`` uses it for validation after every epoch,
``evaluate`` for its report.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Optional

import torch

from resnet.training.distributed import Processes

#: A model-like callable: float32 (N, 3, H, W) batch -> (N, num_classes) logits.
Predict = Callable[[torch.Tensor], torch.Tensor]


class Metrics:
    """Counts of one pass over labelled images: call :meth:`update` per batch, then :meth:`finish`.

    Attributes (after :meth:`finish`):
        confusion: (num_classes, num_classes) int64 counts, row = true class, column = predicted.
        top5_hits: images whose true class is among the 5 highest logits (all classes when fewer than 5).
        loss_sum: sum of the per-image losses given to :meth:`update` (0 when none were given).
        failures: ``(path, message)`` of every image that could not be decoded.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._labels: list[torch.Tensor] = []
        self._predicted: list[torch.Tensor] = []
        self.top5_hits = 0
        self.loss_sum = 0.0
        self.failures: list[tuple[str, str]] = []
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: Optional[torch.Tensor] = None) -> None:
        """Count one batch of ``logits`` against the true ``labels``."""
        labels = labels.to(logits.device)
        k = min(5, self.num_classes)
        top = logits.topk(k, dim=1).indices
        self.top5_hits += int((top == labels[:, None]).any(dim=1).sum())
        self._labels.append(labels.cpu())
        self._predicted.append(top[:, 0].cpu())
        if loss_sum is not None:
            self.loss_sum += float(loss_sum)

    def finish(self, processes: Optional[Processes] = None) -> "Metrics":
        """Build the confusion matrix and sum every count over the ranks of ``processes``."""
        c = self.num_classes
        if self._labels:
            pairs = torch.cat(self._labels) * c + torch.cat(self._predicted)
            self.confusion += torch.bincount(pairs, minlength=c * c).view(c, c)
        self._labels, self._predicted = [], []
        if processes is not None and processes.distributed:
            self.confusion = processes.all_reduce(self.confusion)
            totals = processes.all_reduce(torch.tensor([self.top5_hits, self.loss_sum], dtype=torch.float64))
            self.top5_hits, self.loss_sum = int(totals[0]), float(totals[1])
            self.failures = [f for part in processes.gather_objects(self.failures) for f in part]
        return self

    @property
    def count(self) -> int:
        """Images measured."""
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        """Top-1 accuracy in percent (0 for no images)."""
        return 100.0 * int(self.confusion.trace()) / max(1, self.count)

    @property
    def top5(self) -> float:
        """Top-5 accuracy in percent (0 for no images)."""
        return 100.0 * self.top5_hits / max(1, self.count)

    @property
    def loss(self) -> float:
        """Mean loss per image."""
        return self.loss_sum / max(1, self.count)

    def per_class(self) -> dict[int, tuple[int, int]]:
        """``class index -> (correct, images)`` for every class that has images."""
        totals = self.confusion.sum(dim=1)
        correct = self.confusion.diagonal()
        return {i: (int(correct[i]), int(totals[i])) for i in torch.nonzero(totals).flatten().tolist()}

    def lowest(self, n: int) -> list[tuple[int, float, int, int]]:
        """The ``n`` classes with the lowest accuracy: ``(class index, percent, correct, images)``."""
        rows = [(i, 100.0 * ok / total, ok, total) for i, (ok, total) in self.per_class().items()]
        return sorted(rows, key=lambda r: (r[1], -r[3], r[0]))[:n]


def measure(
    predict: Predict,
    batches: Iterable,
    num_classes: int,
    *,
    device: torch.device,
    loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    processes: Optional[Processes] = None,
    progress: bool = False,
    total: Optional[int] = None,
    description: str = "evaluate",
) -> tuple[Metrics, float]:
    """Run ``predict`` over ``batches`` (:class:`resnet.data.loading.Batch` es) under ``torch.no_grad``.

    ``loss_fn(logits, labels)`` returns the summed loss of a batch. Returns the finished metrics (summed
    over ``processes``) and the seconds this rank spent. ``total``: images, for the progress bar.
    """
    metrics = Metrics(num_classes)
    bar = torch.hub.tqdm(total=total, disable=not progress, unit="img", file=sys.stderr, desc=description,
                         dynamic_ncols=True)
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            metrics.failures.extend(batch.failures)
            if len(batch):
                logits = predict(batch.images.to(device, non_blocking=True)).float()
                labels = batch.labels.to(logits.device, non_blocking=True)
                metrics.update(logits, labels, loss_fn(logits, labels) if loss_fn is not None else None)
            bar.update(len(batch) + len(batch.failures))
    bar.close()
    seconds = time.perf_counter() - start
    return metrics.finish(processes), seconds
