"""The data config bound to the weights: each arch's evaluation size, resize and interpolation, used by default.

Expected pipelines are NVIDIA's as the spec records them (configs.yml: image_size 224 for B0, 380 for B4,
bicubic for every EfficientNet; dataloaders.py: resize to image_size + 32, centre crop), written here with
torchvision's transforms directly, not with the repository's own builder.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from support import PHOTOS
from torchvision import transforms

from resnet.data.preprocessing import DEFAULT_DATA_CONFIG, DataConfig, build_train_transform, build_transform, \
    data_config
from resnet.models.family import arch_data_config, get_head, model_data_config, set_head

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: NVIDIA's evaluation preprocessing per arch (spec section 6): (crop, resize, interpolation).
NVIDIA_EVAL = {
    "efficientnet-b0": (224, 256, "bicubic"),
    "efficientnet-widese-b0": (224, 256, "bicubic"),
    "efficientnet-b4": (380, 412, "bicubic"),
    "efficientnet-widese-b4": (380, 412, "bicubic"),
    "resnet50": (224, 256, "bilinear"),
    "se-resnext101-32x4d": (224, 256, "bilinear"),
}
MODES = {"bilinear": transforms.InterpolationMode.BILINEAR, "bicubic": transforms.InterpolationMode.BICUBIC}


def nvidia_val_pipeline(crop: int, resize: int, interpolation: str):
    return transforms.Compose([transforms.Resize(resize, interpolation=MODES[interpolation]),
                               transforms.CenterCrop(crop), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(PHOTOS[1]).convert("RGB")


@pytest.mark.parametrize("arch", NVIDIA_EVAL)
def test_each_arch_carries_nvidias_evaluation_preprocessing(arch, photo) -> None:
    crop, resize, interpolation = NVIDIA_EVAL[arch]
    config = arch_data_config(arch)
    assert (config.image_size, config.resize_size, config.interpolation) == (crop, resize, interpolation)
    got = build_transform(config)(photo)
    assert got.shape == (3, crop, crop)
    assert torch.equal(got, nvidia_val_pipeline(crop, resize, interpolation)(photo))


def test_bicubic_is_not_bilinear(photo) -> None:
    """The interpolation reaches the pixels (a pipeline that ignored it would pass the test above for ResNets)."""
    bicubic = build_transform(arch_data_config("efficientnet-b0"))(photo)
    bilinear = build_transform(224)(photo)
    assert (bicubic - bilinear).abs().max() > 0.05


def test_an_int_is_the_resnet_pipeline_scaled_as_before() -> None:
    assert data_config(224) == DEFAULT_DATA_CONFIG == DataConfig(224, 256, "bilinear")
    assert data_config(64) == DataConfig(64, 73, "bilinear")  # round(64 * 256 / 224)
    assert arch_data_config("efficientnet-b4").at(224) == DataConfig(224, 243, "bicubic")  # round(224 * 412 / 380)
    with pytest.raises(ValueError, match="interpolation"):
        DataConfig(224, 256, "nearest")
    with pytest.raises(ValueError, match="image_size"):
        data_config(0)


def test_training_crop_uses_the_arch_interpolation(photo) -> None:
    config = arch_data_config("efficientnet-b0").at(64)
    crop = build_train_transform(config).transforms[0]
    assert isinstance(crop, transforms.RandomResizedCrop)
    assert crop.size == (64, 64) and crop.interpolation == transforms.InterpolationMode.BICUBIC
    assert build_train_transform(64).transforms[0].interpolation == transforms.InterpolationMode.BILINEAR


def test_a_model_takes_its_arch_config_its_trained_size_or_the_one_asked_for() -> None:
    from resnet.models.builder import create_model

    with torch.device("meta"):
        b4 = create_model("efficientnet-b4")
        resnet = create_model("resnet50")
    assert model_data_config(b4) == DataConfig(380, 412, "bicubic")
    assert model_data_config(resnet) == DataConfig(224, 256, "bilinear")
    b4.image_size = 128  # what a model.pth of 'train' records
    assert model_data_config(b4) == DataConfig(128, 139, "bicubic")
    assert model_data_config(b4, 300) == DataConfig(300, 325, "bicubic")  # --image-size wins


def test_batches_and_preprocess_at_follow_the_config(photo) -> None:
    from resnet.data.batch import iter_batches
    from resnet.data.images import preprocess, preprocess_at

    config = arch_data_config("efficientnet-b4")
    expected = nvidia_val_pipeline(380, 412, "bicubic")(photo)
    assert torch.equal(preprocess_at(photo, config), expected)
    assert torch.equal(preprocess_at(photo, DEFAULT_DATA_CONFIG), preprocess(photo))
    (batch,) = list(iter_batches([PHOTOS[1]], 4, num_workers=1, image_size=config))
    assert batch.tensor.shape == (1, 3, 380, 380)
    assert torch.allclose(batch.tensor[0], expected, atol=1e-6)


def test_prepare_input_from_uri_stays_nvidias_for_every_arch() -> None:
    """NVIDIA's hub utils give 224, bilinear (Resize(256)) whatever the model: so do ours."""
    from processing_utils import prepare_input_from_uri

    image = Image.open(PHOTOS[0]).convert("RGB")
    assert torch.allclose(prepare_input_from_uri(str(PHOTOS[0]))[0], nvidia_val_pipeline(224, 256, "bilinear")(image),
                          atol=1e-6)


def test_the_head_is_found_and_replaced_by_name() -> None:
    from resnet.models.builder import create_model

    with torch.device("meta"):
        effnet = create_model("efficientnet-widese-b0", num_classes=5)
        resnet = create_model("resnet50", num_classes=5)
    assert get_head(effnet) is effnet.classifier.fc and get_head(resnet) is resnet.fc
    old = set_head(effnet, torch.nn.Identity())
    assert isinstance(effnet.classifier.fc, torch.nn.Identity) and old.out_features == 5
    set_head(effnet, old)
    assert get_head(effnet) is old
