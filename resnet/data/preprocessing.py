"""Preprocessing constants for the NVIDIA ConvNets weights, defined once.

Every part of the repository that turns an image into model input (the hub
processing utils, the batch loader, the command-line classifier, the exporters
and the Triton client example) takes its numbers from here, so preprocessing
cannot drift away from what the weights were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

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
#: Resampling filters of the resize, by the names NVIDIA's configs use.
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic")


@dataclass(frozen=True)
class DataConfig:
    """How images become a model's input: resize the shorter side to ``resize_size`` with ``interpolation``,
    centre-crop ``image_size``, scale to 0..1, normalise by :data:`MEAN` / :data:`STD`.

    It belongs to the weights: NVIDIA's ResNets are evaluated at 224 after a bilinear resize to 256 (the default,
    also what NVIDIA's hub utils do for every model), its EfficientNets at their own size after a bicubic resize
    to that size + 32 (:attr:`resnet.models.efficientnet.EfficientNetArch.data_config`). :meth:`at` gives the
    config for another image size (a model fine-tuned at that size, or ``--image-size``).
    """

    image_size: int = CROP_SIZE
    resize_size: int = RESIZE_SIZE
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("image_size", "resize_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.resize_size < self.image_size:
            raise ValueError(f"resize_size {self.resize_size} is smaller than the crop {self.image_size}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {self.interpolation!r}")

    def at(self, image_size: int) -> "DataConfig":
        """This config for ``image_size`` instead: the resize scaled in proportion (ResNet at 224: 256; at 64: 73),
        the same interpolation."""
        if image_size == self.image_size:
            return self
        return DataConfig(image_size, round(image_size * self.resize_size / self.image_size), self.interpolation)

    def describe(self) -> str:
        """``224x224`` for the ResNets' preprocessing at that size, else with the resize: ``380x380 (resize 412,
        bicubic)``."""
        side = f"{self.image_size}x{self.image_size}"
        return side if self == DEFAULT_DATA_CONFIG.at(self.image_size) else \
            f"{side} (resize {self.resize_size}, {self.interpolation})"


#: NVIDIA's ResNet preprocessing (and that of ``prepare_input_from_uri`` for every model): 224, resize 256, bilinear.
DEFAULT_DATA_CONFIG = DataConfig()

#: An image side (the ResNets' preprocessing scaled to it: :meth:`DataConfig.at`) or a whole :class:`DataConfig`.
ImageSize = Union[int, DataConfig]


def data_config(image_size: ImageSize = CROP_SIZE) -> DataConfig:
    """``image_size`` as a :class:`DataConfig`: a config stays as it is; a side is the ResNets' preprocessing at
    that size (``data_config(224)`` is 224 / 256 / bilinear).

    Raises:
        ValueError: neither a positive integer nor a :class:`DataConfig`.
    """
    if isinstance(image_size, DataConfig):
        return image_size
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer or a DataConfig, got {image_size!r}")
    return DEFAULT_DATA_CONFIG.at(image_size)


def resize_size(image_size: int = CROP_SIZE) -> int:
    """Shorter side to resize to before a centre crop of ``image_size``: 256 for 224, scaled in proportion."""
    return round(image_size * RESIZE_SIZE / CROP_SIZE)


def _mode(interpolation: str):
    from torchvision import transforms

    return {"bilinear": transforms.InterpolationMode.BILINEAR,
            "bicubic": transforms.InterpolationMode.BICUBIC}[interpolation]


def resized_size(width: int, height: int, resize_to: int) -> tuple[int, int]:
    """The (width, height) that torchvision's ``Resize(resize_to)`` gives an image of ``width`` x ``height``:
    the shorter side becomes ``resize_to``, the longer one is scaled in proportion and rounded down."""
    if width <= height:
        return resize_to, int(resize_to * height / width)
    return int(resize_to * width / height), resize_to


def build_transform(image_size: ImageSize = CROP_SIZE) -> Callable[[object], torch.Tensor]:
    """Return the torchvision pipeline that maps an RGB PIL image to a (3, image_size, image_size) tensor.

    Resize(256) (bilinear) -> CenterCrop(224) -> ToTensor() -> Normalize(MEAN, STD): the same
    operations, in the same order and with the same constants, as NVIDIA's
    ``prepare_input_from_uri``. Another ``image_size`` scales the resize in proportion
    (:func:`resize_size`), as validation does for a model trained at that size. A :class:`DataConfig` gives
    the sizes and the interpolation (an EfficientNet's: bicubic, resize 256 / crop 224 for B0, 412 / 380 for B4).
    It is :func:`build_crop_transform` followed by :func:`pixels_to_tensor`.
    """
    from torchvision import transforms

    return transforms.Compose(
        [*build_crop_transform(image_size).transforms, transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )


def build_crop_transform(image_size: ImageSize = CROP_SIZE):
    """The geometric half of :func:`build_transform`: Resize (the config's size and interpolation) ->
    CenterCrop, RGB PIL image in, RGB PIL image out (a ``transforms.Compose``).

    Where images are decoded in one process and classified in another (Ray), the cropped 8-bit pixels travel,
    a quarter of the float tensor's bytes, and :func:`pixels_to_tensor` finishes the job there with the same
    result as :func:`build_transform`.
    """
    from torchvision import transforms

    config = data_config(image_size)
    return transforms.Compose(
        [
            transforms.Resize(config.resize_size, interpolation=_mode(config.interpolation)),
            transforms.CenterCrop(config.image_size),
        ]
    )


def pixels_to_tensor(pixels) -> torch.Tensor:
    """The rest of :func:`build_transform` for a whole batch: ToTensor() -> Normalize(MEAN, STD) of an
    (N, H, W, 3) uint8 array (or tensor) of RGB pixels, giving the (N, 3, H, W) float32 model input, the values
    :func:`build_transform` gives image by image."""
    import torch
    from torchvision.transforms import functional

    batch = torch.as_tensor(pixels)
    if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected an (N, H, W, 3) uint8 batch of RGB pixels, got {batch.dtype} {tuple(batch.shape)}")
    return functional.normalize(batch.permute(0, 3, 1, 2).to(torch.float32).div(255), MEAN, STD)


def _numpy_types() -> dict:
    import numpy as np
    import torch

    return {torch.float32: np.float32, torch.float64: np.float64}


def to_model_input(image: object, image_size: ImageSize = CROP_SIZE) -> "torch.Tensor":
    """``build_transform(image_size)(image)`` for an RGB PIL image, computed the same way without importing
    torchvision (its import, with ``torch._dynamo``, costs a command-line run more than a second): Pillow's resize
    (the config's interpolation) to torchvision's size, its centre-crop box, then the same tensor operations. The
    result is equal to torchvision's bit for bit (``tests/test_preprocessing_peer.py`` compares them).
    """
    import numpy as np
    import torch
    from PIL import Image

    config = data_config(image_size)
    image_size = config.image_size
    target = resized_size(*image.size, config.resize_size)
    if target != image.size:
        resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[config.interpolation]
        image = image.resize(target, resample)
    width, height = image.size  # both at least image_size: the resize is at least the crop
    top, left = int(round((height - image_size) / 2.0)), int(round((width - image_size) / 2.0))
    image = image.crop((left, top, left + image_size, top + image_size))
    dtype = torch.get_default_dtype()
    numpy_types = _numpy_types()
    if dtype not in numpy_types:  # a user's float16/bfloat16 default: torch's own operations, in that type
        pixels = torch.from_numpy(np.array(image, np.uint8, copy=True)).view(image_size, image_size, 3)
        tensor = pixels.permute((2, 0, 1)).contiguous().to(dtype=dtype).div(255)
        return tensor.sub_(torch.as_tensor(MEAN, dtype=dtype).view(-1, 1, 1)).div_(
            torch.as_tensor(STD, dtype=dtype).view(-1, 1, 1))
    # The same IEEE operations in numpy, which runs them on the calling thread: this runs in the decoding threads
    # while the model computes, and torch's element-wise operations would each start a parallel region of the
    # model's thread count there (on 2 quiet cores, twice the CPU time of the image's whole preparation, spent
    # waiting; more on a loaded machine).
    kind = numpy_types[dtype]
    pixels = np.asarray(image, np.uint8).reshape(image_size, image_size, 3)
    tensor = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=kind)
    tensor /= kind(255)
    tensor -= np.asarray(MEAN, kind).reshape(3, 1, 1)
    tensor /= np.asarray(STD, kind).reshape(3, 1, 1)
    return torch.from_numpy(tensor)


def model_input_transform(image_size: ImageSize = CROP_SIZE) -> Callable[[object], "torch.Tensor"]:
    """:func:`build_transform` as :func:`to_model_input` computes it (equal bit for bit, without torchvision, each
    image prepared on the calling thread): the transform of evaluation and validation, whose decoding threads
    work while the model computes. A picklable callable (a ``functools.partial``)."""
    import functools

    return functools.partial(to_model_input, image_size=data_config(image_size))


def build_train_transform(image_size: ImageSize = CROP_SIZE) -> Callable[[object], torch.Tensor]:
    """Return the training augmentation of NVIDIA's recipe for an RGB PIL image.

    RandomResizedCrop(image_size) (scale 0.08-1, aspect 3/4-4/3, bilinear) -> RandomHorizontalFlip ->
    ToTensor() -> Normalize(MEAN, STD). The random draws come from torch's global generator, so a
    caller that seeds it per image gets the same crops in any process. A :class:`DataConfig` gives the size
    and the interpolation of the crop's resize (bicubic for the EfficientNets, as NVIDIA's configs train them).
    """
    from torchvision import transforms

    config = data_config(image_size)
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(config.image_size, interpolation=_mode(config.interpolation)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
