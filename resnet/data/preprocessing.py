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
#: Smallest input side the models take in training (the last stage then works on 1x1 feature maps).
MIN_IMAGE_SIZE: int = 32
#: Input shape of one image, channels first.
INPUT_SHAPE: tuple[int, int, int] = (3, CROP_SIZE, CROP_SIZE)


def resize_size(image_size: int = CROP_SIZE) -> int:
    """Shorter side to resize to before a centre crop of ``image_size``: 256 for 224, scaled in proportion."""
    return round(image_size * RESIZE_SIZE / CROP_SIZE)


def build_transform(image_size: int = CROP_SIZE) -> Callable[[object], torch.Tensor]:
    """Return the torchvision pipeline that maps an RGB PIL image to a (3, image_size, image_size) tensor.

    Resize(256) (bilinear) -> CenterCrop(224) -> ToTensor() -> Normalize(MEAN, STD): the same
    operations, in the same order and with the same constants, as NVIDIA's
    ``prepare_input_from_uri``. Another ``image_size`` scales the resize in proportion
    (:func:`resize_size`), as validation does for a model trained at that size. It is
    :func:`build_crop_transform` followed by :func:`pixels_to_tensor`.
    """
    from torchvision import transforms

    return transforms.Compose(
        [*build_crop_transform(image_size).transforms, transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )


def build_crop_transform(image_size: int = CROP_SIZE):
    """The geometric half of :func:`build_transform`: Resize(256/224 of ``image_size``) (bilinear) ->
    CenterCrop(``image_size``), RGB PIL image in, RGB PIL image out (a ``transforms.Compose``).

    Where images are decoded in one process and classified in another (Ray), the cropped 8-bit pixels travel,
    a quarter of the float tensor's bytes, and :func:`pixels_to_tensor` finishes the job there with the same
    result as :func:`build_transform`.
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(resize_size(image_size), interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(image_size),
        ]
    )


def pixels_to_tensor(pixels) -> torch.Tensor:
    """The rest of :func:`build_transform` for a whole batch: ToTensor() -> Normalize(MEAN, STD) of an
    (N, H, W, 3) uint8 array (or tensor) of RGB pixels, giving the (N, 3, H, W) float32 model input, the values
    :func:`build_transform` gives image by image."""
    from torchvision.transforms import functional

    batch = torch.as_tensor(pixels)
    if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected an (N, H, W, 3) uint8 batch of RGB pixels, got {batch.dtype} {tuple(batch.shape)}")
    return functional.normalize(batch.permute(0, 3, 1, 2).to(torch.float32).div(255), MEAN, STD)


def build_train_transform(image_size: int = CROP_SIZE) -> Callable[[object], torch.Tensor]:
    """Return the training augmentation of NVIDIA's recipe for an RGB PIL image.

    RandomResizedCrop(image_size) (scale 0.08-1, aspect 3/4-4/3, bilinear) -> RandomHorizontalFlip ->
    ToTensor() -> Normalize(MEAN, STD). The random draws come from torch's global generator, so a
    caller that seeds it per image gets the same crops in any process.
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
