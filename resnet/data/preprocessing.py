"""Preprocessing constants for the NVIDIA ConvNets weights, defined once.

Every part of the repository that turns an image into model input (the hub
processing utils, the batch loader, the command-line classifier, the exporters
and the Triton client example) takes its numbers from here, so preprocessing
cannot drift away from what the weights were trained with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # imported by build_transform's callers; the constants are read without torch (--help)
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


def resized_size(width: int, height: int, resize_to: int) -> tuple[int, int]:
    """The (width, height) that torchvision's ``Resize(resize_to)`` gives an image of ``width`` x ``height``:
    the shorter side becomes ``resize_to``, the longer one is scaled in proportion and rounded down."""
    if width <= height:
        return resize_to, int(resize_to * height / width)
    return int(resize_to * width / height), resize_to


def build_transform(image_size: int = CROP_SIZE) -> Callable[[object], torch.Tensor]:
    """Return the torchvision pipeline that maps an RGB PIL image to a (3, image_size, image_size) tensor.

    Resize(256) (bilinear) -> CenterCrop(224) -> ToTensor() -> Normalize(MEAN, STD): the same
    operations, in the same order and with the same constants, as NVIDIA's
    ``prepare_input_from_uri``. Another ``image_size`` scales the resize in proportion
    (:func:`resize_size`), as validation does for a model trained at that size.
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(resize_size(image_size), interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


def to_model_input(image: object, image_size: int = CROP_SIZE) -> "torch.Tensor":
    """``build_transform(image_size)(image)`` for an RGB PIL image, computed the same way without importing
    torchvision (its import, with ``torch._dynamo``, costs a command-line run more than a second): Pillow's bilinear
    resize to torchvision's size, its centre-crop box, then the same tensor operations. The result is equal to
    torchvision's bit for bit (``tests/test_preprocessing_peer.py`` compares them).
    """
    import numpy as np
    import torch
    from PIL import Image

    target = resized_size(*image.size, resize_size(image_size))
    if target != image.size:
        image = image.resize(target, Image.Resampling.BILINEAR)
    width, height = image.size  # both at least image_size: resize_size(image_size) >= image_size
    top, left = int(round((height - image_size) / 2.0)), int(round((width - image_size) / 2.0))
    image = image.crop((left, top, left + image_size, top + image_size))
    pixels = torch.from_numpy(np.array(image, np.uint8, copy=True)).view(image_size, image_size, 3)
    tensor = pixels.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)
    mean = torch.as_tensor(MEAN, dtype=tensor.dtype).view(-1, 1, 1)
    std = torch.as_tensor(STD, dtype=tensor.dtype).view(-1, 1, 1)
    return tensor.sub_(mean).div_(std)


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
