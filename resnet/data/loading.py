"""Decoding and batching labelled images for ``train`` and ``evaluate`` (torch DataLoader).

Images are decoded by :func:`processing_utils.load_image` (RGB conversion, EXIF orientation, a clear error
naming the file); a file that cannot be decoded becomes a *failure* of its batch, which the command counts
and lists, never an exception in a DataLoader worker.

Which images a rank sees, in which order, and how each one is augmented are functions of the seed, the
epoch and the image's index alone (:class:`EpochBatches`, :func:`sample_seed`), so a run gives the same
batches with any number of loader workers, after ``--resume`` from the middle of an epoch, and across
ranks of a ``torchrun`` job.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from resnet.data.decode import ResizeTo
from resnet.data.batch import default_workers, prefetch  # noqa: F401  (default_workers: also this module's name)



def sample_seed(*keys: int) -> int:
    """A seed drawn from non-negative integer ``keys`` (seed, epoch, image ...): distinct keys give
    unrelated seeds (numpy's SeedSequence mixing), the same keys the same seed in any process."""
    import numpy as np

    # int() first: numpy < 2 promotes uint64 >> (a Python int) to float64, which cannot be shifted.
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]) >> 1


@dataclass
class Sample:
    """One decoded image (``tensor``), or the reason it could not be decoded (``error``)."""

    tensor: Optional[torch.Tensor]
    label: int
    path: str
    error: Optional[str] = None


class ImageDataset(Dataset):
    """``(path, label)`` pairs decoded with :func:`processing_utils.load_image` and ``transform``.

    Items are indexed by ``(epoch, index)`` keys (or a plain index, epoch 0). With ``seed`` set, the
    transform's random draws are seeded by :func:`sample_seed`, so augmentation does not depend on the
    worker or process that decodes the image. A file that fails to decode gives a :class:`Sample` with
    ``error`` set. With ``resize_to`` (what ``transform`` resizes to first: a side, or a data config's resize and
    interpolation), a JPEG much larger than that is decoded at reduced scale and comes to ``transform`` already at
    that size (:func:`resnet.data.decode.decode_image`); only for a transform that starts with that ``Resize``.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable, seed: Optional[int] = None, *,
                 resize_to: Optional[ResizeTo] = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed
        self.resize_to = resize_to

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key) -> Sample:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path, label = self.samples[index]
        from resnet.data.images import load_for_resize

        try:
            image = load_for_resize(path, self.resize_to)
            if self.seed is None:
                return Sample(self.transform(image), label, path)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, index))
                return Sample(self.transform(image), label, path)
        except Exception as error:  # any undecodable file is skipped and reported, never fatal
            message = str(error) if path in str(error) else f"{path!r}: {error}"
            return Sample(None, label, path, message)


@dataclass
class Batch:
    """A collated batch: the images that decoded, their labels, and ``(path, message)`` of those that did not."""

    images: torch.Tensor
    labels: torch.Tensor
    failures: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.labels)

    def pin_memory(self) -> "Batch":
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.failures)


def collate(samples: list[Sample]) -> Batch:
    """Stack the decoded samples; keep the failures aside."""
    good = [s for s in samples if s.tensor is not None]
    failures = [(s.path, s.error or "could not be decoded") for s in samples if s.tensor is None]
    images = torch.stack([s.tensor for s in good]) if good else torch.empty(0)
    return Batch(images, torch.tensor([s.label for s in good], dtype=torch.long), failures)


class EpochBatches:
    """The training batches of ``(epoch, index)`` keys one rank loads in the current epoch.

    A permutation drawn from ``seed + epoch``, sharded over the ranks as
    ``torch.utils.data.DistributedSampler`` does (rank r takes every world-th index from r, the shards padded
    to one length), so the union of the ranks' k-th batches is the k-th batch of one process with the global
    batch size. Every image is used: the last batch of an epoch holds what is left, fewer images, unless
    that is fewer than ``least`` (BatchNorm in training mode needs 2 images per process), in which case
    those images join the batch before it. Every rank has the same batch sizes. :meth:`set_epoch` chooses
    the epoch and the batch to start from.
    """

    def __init__(self, size: int, batch_size: int, *, rank: int = 0, world: int = 1, seed: int = 0,
                 least: int = 1) -> None:
        self.size, self.batch_size, self.rank, self.world, self.seed = size, batch_size, rank, world, seed
        self.least = least
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def batches(self) -> list[list[tuple[int, int]]]:
        """All of this epoch's batches from :attr:`start` on."""
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(self.size), num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=self.seed)
        sampler.set_epoch(self.epoch)
        keys = [(self.epoch, i) for i in sampler]
        batches = [keys[i:i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < self.least:
            last = batches.pop()
            batches[-1].extend(last)
        return batches[self.start:]

    def steps_per_epoch(self) -> int:
        """Batches in a whole epoch."""
        return len(self.sizes())

    def sizes(self) -> list[int]:
        """Images per batch and rank in a whole epoch (the last batch may hold fewer, or a few more)."""
        per_rank = -(-self.size // self.world)
        sizes = [self.batch_size] * (per_rank // self.batch_size)
        if per_rank % self.batch_size:
            sizes.append(per_rank % self.batch_size)
        if len(sizes) > 1 and sizes[-1] < self.least:
            last = sizes.pop()
            sizes[-1] += last
        return sizes

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def _ignore_sigint(_worker: int) -> None:
    # Ctrl+C reaches the whole process group; the main process saves a checkpoint and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: ImageDataset, batches: EpochBatches, *, workers: int, pin_memory: bool = False) -> DataLoader:
    """The training DataLoader over ``batches`` of ``dataset``: ``workers`` processes (0: this one) decode a
    batch each.

    Workers persist across epochs (:meth:`EpochBatches.set_epoch` takes effect at the next iteration) and
    ignore SIGINT, which the main process handles.
    """
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
        persistent_workers=workers > 0, worker_init_fn=_ignore_sigint if workers > 0 else None,
    )


def ordered_batches(dataset: ImageDataset, indices: Sequence[int], batch_size: int, *, workers: int) -> Iterator[Batch]:
    """Batches of ``batch_size`` of ``dataset[indices]``, in order (evaluation, validation).

    ``workers`` threads decode one image at a time, whichever comes next, up to two batches ahead of the
    consumer (:func:`resnet.data.batch.prefetch`, the decoder ``classify`` uses too): decoding is parallel
    from the first batch on, also for a folder smaller than a batch, and overlaps the model's work (Pillow
    and torch release the GIL; on a CPU this is faster than loader processes, which compete with the model's
    threads). 0 decodes in this thread.
    """
    if workers == 0:
        yield from _chunks((dataset[i] for i in indices), batch_size)
        return
    samples = prefetch(dataset.__getitem__, indices, workers=workers, ahead=2 * batch_size, name="decode")
    try:
        yield from _chunks(samples, batch_size)
    finally:
        samples.close()


def _chunks(samples: Iterable[Sample], size: int) -> Iterator[Batch]:
    chunk: list[Sample] = []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == size:
            yield collate(chunk)
            chunk = []
    if chunk:
        yield collate(chunk)
