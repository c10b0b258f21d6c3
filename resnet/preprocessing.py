"""Preprocessing constants for the NVIDIA ConvNets weights, defined once.

Every part of the repository that turns an image into model input (the hub
processing utils, the batch loader, the command-line classifier, the exporters
and the Triton client example) takes its numbers from here, so preprocessing
cannot drift away from what the weights were trained with.
"""

from __future__ import annotations

from typing import Callable

import torch

#: Shorter image side after resizing (bilinear, as PIL does it).
RESIZE_SIZE: int = 256
#: Side of the square centre crop fed to the network.
CROP_SIZE: int = 224
#: Per-channel RGB mean of ImageNet, on the 0..1 scale.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Per-channel RGB standard deviation of ImageNet, on the 0..1 scale.
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Input shape of one image, channels first.
INPUT_SHAPE: tuple[int, int, int] = (3, CROP_SIZE, CROP_SIZE)


def build_transform() -> Callable[[object], torch.Tensor]:
    """Return the torchvision pipeline that maps an RGB PIL image to a (3, 224, 224) tensor.

    Resize(256) (bilinear) -> CenterCrop(224) -> ToTensor() -> Normalize(MEAN, STD): the same
    operations, in the same order and with the same constants, as NVIDIA's
    ``prepare_input_from_uri``.
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(RESIZE_SIZE, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(CROP_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
