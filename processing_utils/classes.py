"""ImageNet class names (shipped with the package) and NVIDIA's top-n report, ``pick_n_best``."""

from __future__ import annotations

import numbers
import warnings
from typing import Union

import numpy as np
import torch

from resnet.data.synsets import NUM_IMAGENET_CLASSES, SYNSETS_FILE, imagenet_class_names

#: The class list shipped in the package (one for the whole repository: :mod:`resnet.data.synsets`).
CLASSES_FILE: str = str(SYNSETS_FILE)
#: Number of ImageNet (ILSVRC-2012) classes the models predict (:data:`resnet.data.synsets.NUM_IMAGENET_CLASSES`).
NUM_CLASSES: int = NUM_IMAGENET_CLASSES

#: What pick_n_best returns: per row, a list of (class name, "84.7%") pairs, most likely first.
TopN = list[list[tuple[str, str]]]

# Softmax output sums to 1 up to rounding; half precision needs the loose row-sum tolerance.
_VALUE_TOLERANCE = 1e-4
_ROW_SUM_TOLERANCE = 1e-2


def get_imgnet_classes() -> np.ndarray:
    """The 1000 ImageNet class names in ILSVRC-2012 index order, as a numpy array of strings.

    Read from the class list shipped in the package (:mod:`resnet.data.synsets`; the names of NVIDIA's
    LOC_synset_mapping.json, in its order): no network, nothing written to the working directory. Entry i
    names output i of the models, e.g. ``[0] == "tench, Tinca tinca"``; "crane" appears twice (134, the bird;
    517, the machine).
    """
    return np.array(imagenet_class_names())


def pick_n_best(predictions: Union[torch.Tensor, np.ndarray], n: int = 5) -> TopN:
    """Print and return the ``n`` most likely classes of each row of ``predictions``.

    ``predictions`` are probabilities, shape (N, 1000) or a single row (1000,): apply
    ``torch.nn.functional.softmax(logits, dim=1)`` to the model's output first (a warning says
    so when rows do not look like probabilities). Prints one line per row, exactly as NVIDIA's
    ``pick_n_best``::

        sample 0: [('tabby, tabby cat', '84.7%'), ('tiger cat', '11.5%'), ...]

    and returns, per row, the list of ``(class name, percentage)`` pairs, most likely first,
    the percentage formatted as ``f"{100 * p:.1f}%"``.

    Raises:
        ValueError: ``predictions`` is not (N, 1000) or (1000,), or ``n`` is not in 1..1000.
        TypeError: ``n`` is not an integer, or ``predictions`` is not a tensor or array.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"pick_n_best: n must be an integer number of classes, got {type(n).__name__} {n!r}")
    if isinstance(predictions, np.ndarray):
        predictions = torch.from_numpy(predictions)
    if not isinstance(predictions, torch.Tensor):
        raise TypeError(
            f"pick_n_best expects the (N, {NUM_CLASSES}) tensor of probabilities, got {type(predictions).__name__}"
        )
    shape = tuple(predictions.shape)
    # NVIDIA's own steps: float32 on the CPU as numpy (detached, so tensors that need grad work too).
    scores = predictions.detach().float().cpu().numpy()
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.ndim != 2 or scores.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"pick_n_best expects predictions of shape (N, {NUM_CLASSES}) or ({NUM_CLASSES},), got {shape}; "
            f"pass the softmax of the model's (N, {NUM_CLASSES}) output"
        )
    if not 1 <= n <= NUM_CLASSES:
        raise ValueError(f"pick_n_best: n must be between 1 and {NUM_CLASSES} (the number of classes), got {n}")
    _warn_unless_probabilities(scores)

    top_n = np.argsort(-1 * scores, axis=-1)[:, :n]
    classes = get_imgnet_classes()
    results: TopN = []
    for idx, case in enumerate(top_n):
        row = [(f"{c}", f"{100 * v:.1f}%") for c, v in zip(classes[case], scores[idx, case])]
        print(f"sample {idx}: {row}")
        results.append(row)
    return results


def _warn_unless_probabilities(scores: np.ndarray) -> None:
    if scores.size == 0:
        return
    sums = scores.sum(axis=1, dtype=np.float64)
    finite = bool(np.isfinite(scores).all())
    if (
        finite
        and scores.min() >= -_VALUE_TOLERANCE
        and scores.max() <= 1 + _VALUE_TOLERANCE
        and np.abs(sums - 1).max() <= _ROW_SUM_TOLERANCE
    ):
        return
    detail = (
        "they contain NaN or infinity"
        if not finite
        else f"values range {scores.min():.3g}..{scores.max():.3g}, row sums {sums.min():.3g}..{sums.max():.3g}"
    )
    warnings.warn(
        f"pick_n_best: predictions do not look like probabilities ({detail}); apply "
        "torch.nn.functional.softmax(output, dim=1) to the model's logits first, or the "
        "percentages are meaningless",
        UserWarning,
        stacklevel=3,
    )
