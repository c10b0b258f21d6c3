"""Stand-in weights: deterministic values in the ranges of a trained network, for work without NVIDIA's
checkpoints (the tests, the benchmarks, a machine with no network).

Every parameter and buffer of a state dict gets a value from its name, shape and a seed (the recipe the parity
fixtures of this repository were computed with, so that the same stand-in is made in NVIDIA's code and here):
weights of two or more dimensions ``randn * sqrt(1 / fan_in)``, so activations keep their scale through the
network; BatchNorm scales in [0.5, 1) and running variances in [0.75, 1.25); biases, shifts and means
``randn * 0.01``; ``num_batches_tracked`` 0. The classes are then not tied, which agreement checks need; speed does
not depend on the values.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

__all__ = ["standin_state_dict_of", "standin_value"]


def standin_value(name: str, shape: list[int], seed: int) -> torch.Tensor:
    """The stand-in value of the state-dict entry ``name`` of ``shape``, drawn from ``seed`` (see the module text)."""
    g = torch.Generator().manual_seed(seed)
    if name.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.int64)
    if name.endswith("running_var"):
        return torch.rand(shape, generator=g) * 0.5 + 0.75
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) * math.sqrt(1.0 / math.prod(shape[1:]))
    if name.endswith("weight"):
        return 0.5 + torch.rand(shape, generator=g) * 0.5
    return torch.randn(shape, generator=g) * 0.01


def standin_state_dict_of(model: nn.Module, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """A state dict for ``model`` (any architecture) with the stand-in value of every entry, entry ``i`` (in
    ``state_dict()`` order) drawn from ``seed + i``."""
    return OrderedDict((name, standin_value(name, list(t.shape), seed + i))
                       for i, (name, t) in enumerate(model.state_dict().items()))
