"""A stand-in for NVIDIA's NGC checkpoints, so that the benchmarks download nothing.

Deterministic weights in the layout of the NGC file (this repository's key names, which are also torchvision's),
with the value ranges of a trained network (:mod:`resnet.weights.standin`, the recipe the tests use too):
activations keep their scale through the layers and the classes are not tied, which the agreement columns (max
logit difference, top-1 and top-5 against the peer) need; speed does not depend on the values.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


def standin_checkpoint(arch: str = "resnet50", seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """The state dict of ``arch`` with deterministic trained-looking weights (see the module text)."""
    from resnet.models.builder import create_model
    from resnet.weights.standin import standin_state_dict_of

    return standin_state_dict_of(create_model(arch, channels_last=False, fast_inference=False), seed)
