"""The model input that ``preprocess`` / ``load_input`` / ``classify`` compute without torchvision
(:func:`resnet.data.preprocessing.to_model_input`) is torchvision's pipeline, bit for bit: the peer is
``build_transform`` (torchvision's Resize, CenterCrop, ToTensor, Normalize)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from resnet.data.images import load_image, preprocess, preprocess_at
from resnet.data.preprocessing import build_transform, to_model_input

from support import PHOTOS


@pytest.mark.parametrize("image_size", [224, 160, 288, 97])
def test_equal_to_torchvision_on_photos_of_many_shapes(image_size: int) -> None:
    peer = build_transform(image_size)
    for path in PHOTOS:
        photo = load_image(path)
        for size in [photo.size, (257, 4000), (4001, 256), (300, 301), (999, 333), (256, 256), (291, 292),
                     (image_size * 256 // 224, 1000)]:
            image = photo.resize(size, Image.Resampling.BILINEAR)
            assert torch.equal(to_model_input(image, image_size), peer(image)), (path.name, size, image_size)


def test_the_library_functions_use_it() -> None:
    photo = load_image(PHOTOS[0])
    assert torch.equal(preprocess(photo), build_transform()(photo))
    assert torch.equal(preprocess_at(photo, 160), build_transform(160)(photo))



@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_another_default_dtype_gives_torchvisions_tensor_of_that_type(dtype: torch.dtype) -> None:
    photo = load_image(PHOTOS[1])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        ours, peer = to_model_input(photo), build_transform()(photo)
    finally:
        torch.set_default_dtype(previous)
    assert ours.dtype == dtype and torch.equal(ours, peer)


def test_the_input_is_contiguous_and_prepared_without_torch_operations() -> None:
    """The decoding threads prepare images while the model computes: a torch element-wise operation there opens
    a parallel region of the model's thread count in each of them (twice the CPU time on 2 quiet cores, measured;
    docs/performance.md)."""
    from torch.profiler import ProfilerActivity, profile

    photo = load_image(PHOTOS[0])
    with profile(activities=[ProfilerActivity.CPU]) as run:
        tensor = to_model_input(photo)
    operations = {event.name for event in run.events() if event.name.startswith("aten::")}
    assert tensor.is_contiguous() and tensor.shape == (3, 224, 224)
    assert not operations & {"aten::div", "aten::div_", "aten::sub_", "aten::to", "aten::contiguous", "aten::copy_"}


@pytest.mark.parametrize("image_size", [224, 160, "efficientnet-b4"])
def test_the_transform_of_evaluation_is_torchvisions_and_pickles(image_size) -> None:
    import pickle

    from resnet.data.preprocessing import model_input_transform
    from resnet.models.efficientnet_archs import get_efficientnet_arch

    size = get_efficientnet_arch("efficientnet-b4").data_config if image_size == "efficientnet-b4" else image_size
    transform = pickle.loads(pickle.dumps(model_input_transform(size)))
    for path in PHOTOS:
        photo = load_image(path)
        assert torch.equal(transform(photo), build_transform(size)(photo)), (path.name, image_size)
