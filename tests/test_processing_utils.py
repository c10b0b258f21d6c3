"""``nvidia_convnets_processing_utils``: NVIDIA's behaviour (spec §4), its fixes, the batch loader
and the display helper, all offline (photos served from 127.0.0.1).

Expected tensors come from NVIDIA's pipeline written out with torchvision and the spec's
literal constants (``reference.py``), never from the code under test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from reference import LABELS_FILE, LABELS_SHA256, reference_pick_n_best, reference_pipeline
from support import IMAGES, PHOTOS, REPO_ROOT, Route, free_port

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg"}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def utils():
    return torch.hub.load(str(REPO_ROOT), "nvidia_convnets_processing_utils", source="local")


@pytest.fixture
def photo_server(server):
    """The loopback server with every photo at /img/<name>; returns {name: url}."""
    urls = {}
    for photo in PHOTOS:
        server.routes[f"/img/{photo.name}"] = Route(photo.read_bytes(), content_type=CONTENT_TYPES[photo.suffix])
        urls[photo.name] = server.url(f"/img/{photo.name}")
    return urls


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    assert (actual - expected).abs().max().item() <= 1e-6


# --------------------------------------------------------------------------- entrypoint


def test_entrypoint_returns_nvidias_methods_and_more(utils) -> None:
    for name in ("prepare_input_from_uri", "pick_n_best", "get_imgnet_classes",
                 "load_batch", "iter_batches", "show_predictions", "load_image", "preprocess"):
        assert callable(getattr(utils, name)), name
    # What torch.hub.help shows: the docstring of hubconf's entrypoint.
    spec = importlib.util.spec_from_file_location("hubconf_for_utils_test", REPO_ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    doc = hubconf.nvidia_convnets_processing_utils.__doc__
    for word in ("Returns", "prepare_input_from_uri", "pick_n_best", "get_imgnet_classes", "load_batch",
                 "iter_batches", "show_predictions", "Example", "softmax"):
        assert word in doc, word


def test_preprocessing_constants_are_not_redefined() -> None:
    import resnet.data.images
    import resnet.data.preprocessing

    assert resnet.data.images.build_transform is resnet.data.preprocessing.build_transform
    for source in (REPO_ROOT / "processing_utils").glob("*.py"):
        text = source.read_text()
        for literal in ("0.485", "0.229", "transforms.Resize", "transforms.CenterCrop", "transforms.Normalize"):
            assert literal not in text, f"{source.name} defines {literal!r}; use resnet.data.preprocessing"


# --------------------------------------------------------------------------- prepare_input_from_uri


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_path_input_equals_reference(utils, photo: Path) -> None:
    expected = reference_pipeline(Image.open(photo))
    assert_close(utils.prepare_input_from_uri(str(photo)), expected)
    assert_close(utils.prepare_input_from_uri(photo), expected)  # pathlib.Path too


def _file_named(tmp_path: Path, name: "str | bytes") -> Path:
    """A copy of the first photo under ``name`` (bytes: a name that is not UTF-8)."""
    target = os.path.join(os.fsencode(tmp_path), name) if isinstance(name, bytes) else tmp_path / name
    with open(target, "wb") as file:
        file.write(PHOTOS[0].read_bytes())
    return Path(os.fsdecode(target))


@pytest.mark.parametrize("name", ["photo.png", "a b ä #1 ?% 100%.png", b"caf\xe9.png"],
                         ids=["plain", "needs_percent_encoding", "not_utf8"])
def test_file_uris_load_as_their_paths(utils, tmp_path, name) -> None:
    from processing_utils import file_uri_to_path, is_url, load_batch

    path = _file_named(tmp_path, name)
    expected = reference_pipeline(Image.open(PHOTOS[0]))
    uri = path.as_uri()  # what pathlib, browsers and notebooks write for a local file
    assert file_uri_to_path(uri) == str(path) and not is_url(uri)
    assert_close(utils.prepare_input_from_uri(uri), expected)
    assert_close(utils.prepare_input_from_uri(uri.replace("file://", "file://localhost", 1)), expected)
    assert_close(utils.prepare_input_from_uri(uri.replace("file://", "FILE:", 1)), expected)  # file:/path
    result = load_batch([uri, str(tmp_path / "gone.png")])
    assert result.uris == [uri] and len(result.failures) == 1
    assert_close(result.tensor, expected)


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("file://fileserver/share/cat.jpg", "on the host 'fileserver'"),
        ("file:cat.jpg", "absolute path"),
        ("file:///photos/cat.jpg?size=2", "percent-encode"),
    ],
    ids=["other_host", "relative", "query"],
)
def test_file_uris_that_name_no_local_file_are_refused(utils, uri, expected) -> None:
    from processing_utils import ImageLoadError

    with pytest.raises(ImageLoadError, match=expected) as info:
        utils.prepare_input_from_uri(uri)
    assert uri in str(info.value)


def test_a_missing_file_uri_names_the_uri_and_the_path(utils, tmp_path) -> None:
    from processing_utils import ImageNotFoundError

    path = tmp_path / "no such.jpg"
    with pytest.raises(ImageNotFoundError) as info:
        utils.load_image(path.as_uri())
    assert str(path) in str(info.value) and path.as_uri() in str(info.value)


@pytest.mark.slow
def test_url_input_equals_reference(utils, photo_server) -> None:
    for photo in PHOTOS:
        uri = photo_server[photo.name]
        # Exactly NVIDIA's way of opening a URL.
        expected = reference_pipeline(Image.open(requests.get(uri, stream=True).raw))
        assert_close(utils.prepare_input_from_uri(uri), expected)


def test_localhost_url_is_fetched_although_validators_rejects_it(utils, photo_server, monkeypatch) -> None:
    import validators

    uri = photo_server[PHOTOS[0].name].replace("127.0.0.1", "localhost")
    # validators >= 0.21 rejects localhost URLs (0.20 accepts them): make it refuse every URL here.
    monkeypatch.setattr(validators, "url", lambda value, **kwargs: False)
    assert_close(utils.prepare_input_from_uri(uri), reference_pipeline(Image.open(PHOTOS[0])))


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def mode_files(tmp_path_factory) -> dict[str, Path]:
    """The photo saved in each non-RGB mode, written once for the module."""
    tmp = tmp_path_factory.mktemp("modes")
    rgb = Image.open(IMAGES / "chelsea.png").convert("RGB")
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return {
        "L": _save(rgb.convert("L"), tmp / "grey.png"),
        "LA": _save(rgb.convert("LA"), tmp / "grey_alpha.png"),
        "1": _save(rgb.convert("1"), tmp / "bilevel.png"),
        "P": _save(palette, tmp / "palette.png"),
        "P+transparency": _save(palette, tmp / "palette_transparent.png", transparency=0),
        "RGBA": _save(rgba, tmp / "rgba.png"),
        "CMYK": _save(rgb.convert("CMYK"), tmp / "cmyk.jpg", quality=95),
    }


@pytest.mark.parametrize("mode", ["L", "LA", "1", "P", "P+transparency", "RGBA", "CMYK"])
def test_non_rgb_images_are_converted_to_rgb(utils, mode_files, mode) -> None:
    path = mode_files[mode]
    with Image.open(path) as image:
        assert image.mode == mode.split("+")[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's advice about palette transparency
            expected = reference_pipeline(image.convert("RGB"))
    assert_close(utils.prepare_input_from_uri(str(path)), expected)


def test_16_bit_greyscale_is_scaled_not_clipped(utils, tmp_path) -> None:
    grey = Image.open(IMAGES / "coffee.png").convert("L")
    wide = (np.asarray(grey).astype(np.uint16) * 257).astype(np.uint16)  # same picture, 16-bit range
    path = tmp_path / "grey16.png"
    Image.fromarray(wide).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
        clipped = np.asarray(image.convert("RGB"))
    assert (clipped == 255).mean() > 0.9  # what a bare convert("RGB") would feed the model
    assert_close(utils.prepare_input_from_uri(path), reference_pipeline(grey.convert("RGB")))


def test_exif_orientation_is_applied(utils, tmp_path) -> None:
    upright = Image.open(IMAGES / "coffee.png").convert("RGB")  # 600x400, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    with Image.open(path) as stored:
        assert stored.size == (400, 600)
        expected = reference_pipeline(stored.transpose(Image.Transpose.ROTATE_270))
    assert utils.load_image(path).size == (600, 400)
    assert_close(utils.prepare_input_from_uri(str(path)), expected)


# --------------------------------------------------------------------------- bad input


def _bad_local(kind: str, tmp: Path) -> Path:
    if kind == "missing":
        return tmp / "no_such_photo.jpg"
    if kind == "directory":
        (tmp / "album").mkdir()
        return tmp / "album"
    if kind == "empty":
        return _write(tmp / "empty.jpg", b"")
    if kind == "text":
        return _write(tmp / "notes.png", b"these are not the pixels you are looking for\n" * 20)
    if kind == "truncated_jpeg":
        data = (IMAGES / "rocket.jpg").read_bytes()
        return _write(tmp / "truncated.jpg", data[: len(data) // 3])
    raise AssertionError(kind)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "truncated_jpeg"])
def test_bad_local_files_raise_errors_naming_the_path(utils, tmp_path, kind) -> None:
    from processing_utils import ImageLoadError

    path = _bad_local(kind, tmp_path)
    with pytest.raises(ImageLoadError) as info:
        utils.prepare_input_from_uri(str(path))
    assert str(path) in str(info.value)
    if kind == "missing":
        assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("limit", [10_000, 100_000], ids=["over_twice_the_limit", "just_over_the_limit"])
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_over_pillows_pixel_limit(utils, monkeypatch, limit) -> None:
    from processing_utils import ImageLoadError

    photo = IMAGES / "chelsea.png"  # 451 x 300 = 135,300 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageLoadError, match="MAX_IMAGE_PIXELS") as info:
        utils.prepare_input_from_uri(str(photo))
    assert str(photo) in str(info.value)


@pytest.mark.parametrize(
    "route, expected",
    [
        (None, "HTTP 404"),
        (Route(b"oops", status=500, content_type="text/plain"), "HTTP 500"),
        (Route(b"<html><body>a page about a cat</body></html>", content_type="text/html"), "text/html"),
        (Route(b"<html>lies</html>", content_type="image/png"), "not an image"),
        (Route(b"", content_type="image/png"), "empty"),
    ],
    ids=["404", "500", "html_page", "html_sent_as_png", "empty_body"],
)
def test_bad_http_answers_raise_errors_naming_the_url(utils, server, route, expected) -> None:
    from processing_utils import ImageLoadError

    if route is not None:
        server.routes["/photo.jpg"] = route
    uri = server.url("/photo.jpg")
    with pytest.raises(ImageLoadError, match=expected) as info:
        utils.prepare_input_from_uri(uri)
    assert uri in str(info.value)


def test_truncated_download(utils, server) -> None:
    from processing_utils import ImageLoadError

    body = PHOTOS[0].read_bytes()
    server.routes["/cut.png"] = Route(body, content_type="image/png", truncate_to=len(body) // 2)
    with pytest.raises(ImageLoadError) as info:
        utils.prepare_input_from_uri(server.url("/cut.png"))
    assert server.url("/cut.png") in str(info.value)


@pytest.mark.slow
def test_server_that_never_answers_times_out(utils, server) -> None:
    from processing_utils import ImageLoadError

    answered, release = threading.Event(), threading.Event()

    def late() -> Route:
        release.wait(120)  # answers only once the test is over (or after 120 s, which fails the test)
        answered.set()
        return Route(PHOTOS[0].read_bytes(), content_type="image/png")

    server.routes["/slow.png"] = late
    try:
        with pytest.raises(ImageLoadError, match=r"did not answer within 0.5 s \(read timeout\)") as info:
            utils.prepare_input_from_uri(server.url("/slow.png"), timeout=(1.0, 0.5))
        assert not answered.is_set()
    finally:
        release.set()
    assert server.url("/slow.png") in str(info.value)


def test_redirect_loop(utils, server) -> None:
    from processing_utils import ImageLoadError

    server.routes["/a"] = Route(status=302, location=server.url("/b"))
    server.routes["/b"] = Route(status=302, location=server.url("/a"))
    with pytest.raises(ImageLoadError, match="redirect") as info:
        utils.prepare_input_from_uri(server.url("/a"))
    assert server.url("/a") in str(info.value)


def test_redirect_to_an_image_is_followed(utils, photo_server, server) -> None:
    server.routes["/moved"] = Route(status=301, location=photo_server[PHOTOS[1].name])
    assert_close(utils.prepare_input_from_uri(server.url("/moved")), reference_pipeline(Image.open(PHOTOS[1])))


def test_connection_refused(utils) -> None:
    from processing_utils import ImageLoadError

    uri = f"http://127.0.0.1:{free_port()}/cat.jpg"
    with pytest.raises(ImageLoadError) as info:
        utils.prepare_input_from_uri(uri, timeout=2)
    assert uri in str(info.value)


def test_wrong_argument_types(utils) -> None:
    with pytest.raises(TypeError, match="int"):
        utils.prepare_input_from_uri(42)
    with pytest.raises(ValueError, match="timeout"):
        utils.prepare_input_from_uri(str(PHOTOS[0]), timeout=0)


def test_cuda_without_cuda_says_so_before_reading_anything(utils, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = str(tmp_path / "cat.jpg")
    with pytest.raises(RuntimeError, match="cuda=False") as info:
        utils.prepare_input_from_uri(missing, cuda=True)
    assert missing in str(info.value) and "CUDA is not available" in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_true_on_a_cuda_machine(utils) -> None:
    tensor = utils.prepare_input_from_uri(str(PHOTOS[0]), cuda=True)
    assert tensor.is_cuda
    assert_close(tensor.cpu(), reference_pipeline(Image.open(PHOTOS[0])))


# --------------------------------------------------------------------------- pick_n_best


def _probabilities(rows: int, seed: int = 0) -> torch.Tensor:
    logits = torch.randn(rows, 1000, generator=torch.Generator().manual_seed(seed)) * 4
    return torch.softmax(logits, dim=1)


@pytest.mark.parametrize("n", [1, 5, 1000])
def test_pick_n_best_prints_and_returns_what_nvidia_does(utils, capsys, n) -> None:
    probs = _probabilities(3)
    expected_results, expected_lines = reference_pick_n_best(probs, n)
    results = utils.pick_n_best(predictions=probs, n=n)
    assert results == expected_results
    assert capsys.readouterr().out.splitlines() == expected_lines
    assert all(type(name) is str and type(p) is str for row in results for name, p in row)


def test_pick_n_best_default_n_half_precision_and_a_single_row(utils, capsys) -> None:
    probs = _probabilities(2, seed=1)
    half = probs.half()
    assert utils.pick_n_best(half) == reference_pick_n_best(half, 5)[0]
    capsys.readouterr()
    results, lines = reference_pick_n_best(probs[1:2], 5)
    assert utils.pick_n_best(probs[1], n=5) == results
    assert capsys.readouterr().out.splitlines() == lines == [lines[0]]
    assert lines[0].startswith("sample 0: [('")


def test_pick_n_best_warns_when_softmax_was_forgotten(utils, capsys) -> None:
    logits = torch.randn(2, 1000, generator=torch.Generator().manual_seed(2)) * 3
    with pytest.warns(UserWarning, match="softmax"):
        utils.pick_n_best(logits, n=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        utils.pick_n_best(torch.softmax(logits, dim=1), n=3)
        utils.pick_n_best(torch.softmax(logits, dim=1).half(), n=3)


@pytest.mark.parametrize(
    "shape, n, error, match",
    [
        ((2, 10), 5, ValueError, r"\(2, 10\)"),
        ((1, 1000, 1), 5, ValueError, r"\(1, 1000, 1\)"),
        ((), 5, ValueError, r"\(\)"),
        ((2, 1000), 0, ValueError, "between 1 and 1000"),
        ((2, 1000), 1001, ValueError, "between 1 and 1000"),
        ((2, 1000), 2.5, TypeError, "integer"),
    ],
)
def test_pick_n_best_bad_arguments(utils, shape, n, error, match) -> None:
    with pytest.raises(error, match=match):
        utils.pick_n_best(torch.full(shape, 0.001), n=n)


# --------------------------------------------------------------------------- class names


def test_label_file_is_nvidias_and_offline(utils, tmp_path, monkeypatch, capsys) -> None:
    assert hashlib.sha256(LABELS_FILE.read_bytes()).hexdigest() == LABELS_SHA256
    monkeypatch.chdir(tmp_path)  # NVIDIA's version downloads into the working directory
    names = utils.get_imgnet_classes()
    assert isinstance(names, np.ndarray) and names.shape == (1000,)
    assert names.tolist() == json.loads(LABELS_FILE.read_text())
    assert names[0] == "tench, Tinca tinca"
    assert names[134] == names[517] == "crane"
    assert sum(name == "crane" for name in names) == 2
    utils.pick_n_best(_probabilities(1), n=2)
    assert list(tmp_path.iterdir()) == []
    names[0] = "changed by the caller"
    assert utils.get_imgnet_classes()[0] == "tench, Tinca tinca"


# --------------------------------------------------------------------------- load_batch / iter_batches


@pytest.fixture
def mixed_inputs(tmp_path, photo_server, server):
    """Good and bad inputs interleaved: (inputs, good inputs, bad inputs, expected batch)."""
    missing = str(tmp_path / "gone.jpg")
    text = str(_write(tmp_path / "readme.png", b"not an image"))
    lost = server.url("/img/lost.jpg")
    good = [str(PHOTOS[0]), photo_server[PHOTOS[1].name], PHOTOS[2], photo_server[PHOTOS[3].name]]
    inputs = [good[0], missing, good[1], text, good[2], lost, good[3]]
    expected = torch.cat([reference_pipeline(Image.open(p)) for p in PHOTOS])
    return inputs, good, [missing, text, lost], expected


@pytest.mark.parametrize("workers", [1, 4])
def test_load_batch_keeps_order_and_reports_failures(utils, mixed_inputs, workers) -> None:
    inputs, good, bad, expected = mixed_inputs
    result = utils.load_batch(inputs, num_workers=workers)
    assert result.uris == good
    assert_close(result.tensor, expected)
    assert [uri for uri, _ in result.failures] == bad
    for uri, message in result.failures:
        assert str(uri) in message
    assert "HTTP 404" in result.failures[2][1]


@pytest.mark.slow
def test_load_batch_decodes_in_parallel(utils, server) -> None:
    urls = []
    for i, photo in enumerate(PHOTOS):
        server.routes[f"/slow{i}"] = Route(photo.read_bytes(), content_type="image/png", delay=1.0)
        urls.append(server.url(f"/slow{i}"))
    start = time.monotonic()
    result = utils.load_batch(urls, num_workers=4)
    elapsed = time.monotonic() - start
    assert result.tensor.shape == (4, 3, 224, 224) and not result.failures
    assert elapsed < 3.0, f"4 inputs of 1 s each took {elapsed:.1f} s with 4 threads"


def test_load_batch_edge_cases(utils) -> None:
    empty = utils.load_batch([])
    assert empty.tensor.shape == (0, 3, 224, 224) and empty.tensor.dtype == torch.float32
    assert empty.uris == [] and empty.failures == []
    with pytest.raises(TypeError, match="single input"):
        utils.load_batch(str(PHOTOS[0]))
    with pytest.raises(ValueError, match="num_workers"):
        utils.load_batch([str(PHOTOS[0])], num_workers=0)


def test_iter_batches_streams_in_order_with_per_batch_failures(utils, mixed_inputs) -> None:
    inputs, good, bad, expected = mixed_inputs
    batches = list(utils.iter_batches(iter(inputs), 3, num_workers=2))  # any iterable, read lazily
    assert [len(b.uris) + len(b.failures) for b in batches] == [3, 3, 1]
    assert [b.uris for b in batches] == [[good[0], good[1]], [good[2]], [good[3]]]
    assert [[u for u, _ in b.failures] for b in batches] == [[bad[0]], [bad[1], bad[2]], []]
    assert_close(torch.cat([b.tensor for b in batches]), expected)


def test_iter_batches_threads_have_ended_once_it_is_exhausted(utils) -> None:
    def decoding_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("iter_batches")]

    assert decoding_threads() == []
    batches = list(utils.iter_batches([str(p) for p in PHOTOS] * 2, 3, num_workers=3))
    assert [len(b.uris) for b in batches] == [3, 3, 2]
    assert decoding_threads() == []  # joined, not left to wind down on their own


@pytest.mark.slow
def test_iter_batches_decodes_ahead_in_the_background(utils, server) -> None:
    server.routes["/slow.png"] = Route(PHOTOS[0].read_bytes(), content_type="image/png", delay=2.5)
    inputs = [str(PHOTOS[1]), str(PHOTOS[2]), server.url("/slow.png")]
    start = time.monotonic()
    stream = utils.iter_batches(inputs, 2, num_workers=2)
    first = next(stream)
    assert first.uris == inputs[:2] and time.monotonic() - start < 2.0  # did not wait for the slow one
    time.sleep(0.3)
    assert server.hits.get("/slow.png") == 1  # already being fetched while the caller works
    second = next(stream)
    assert second.uris == inputs[2:]
    assert time.monotonic() - start < 4.5
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.slow
def test_iter_batches_validates_eagerly_and_stops_early(utils, server) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        utils.iter_batches([str(PHOTOS[0])], 0)  # at the call, before any next()
    with pytest.raises(TypeError, match="single input"):
        utils.iter_batches(str(PHOTOS[0]), 2)
    server.routes["/slow.png"] = Route(PHOTOS[0].read_bytes(), content_type="image/png", delay=1.0)
    stream = utils.iter_batches([str(PHOTOS[0])] + [server.url("/slow.png")] * 20, 1, num_workers=1)
    assert next(stream).uris == [str(PHOTOS[0])]
    start = time.monotonic()
    stream.close()  # pending inputs are cancelled, not downloaded
    assert time.monotonic() - start < 0.5
    time.sleep(1.3)
    assert server.hits.get("/slow.png", 0) <= 2


# --------------------------------------------------------------------------- show_predictions


@pytest.mark.slow
def test_show_predictions_saves_a_png(utils, tmp_path, photo_server) -> None:
    import matplotlib

    matplotlib.use("Agg")
    probs = _probabilities(4, seed=3)
    results, _ = reference_pick_n_best(probs, 5)
    images = [str(PHOTOS[0]), photo_server[PHOTOS[1].name], Image.open(PHOTOS[2]),
              reference_pipeline(Image.open(PHOTOS[3]))]
    out = tmp_path / "predictions.png"
    figure = utils.show_predictions(images, results, output=out)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width >= 800 and png.height >= 4 * 200
    axes = figure.axes
    assert len(axes) == 8
    bar_labels = [t.get_text() for t in axes[1].get_yticklabels()]
    name = results[0][0][0]
    assert bar_labels[0] in (name, name[:37] + "...")
    assert [round(p.get_width(), 1) for p in axes[1].patches] == [float(p[:-1]) for _, p in results[0]]


def test_show_predictions_shows_without_output(utils, monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    returned = utils.show_predictions(
        [Image.open(PHOTOS[0])], [[("tabby, tabby cat", "84.7%"), ("tiger cat", "11.5%")]]
    )
    assert shown == [True]
    assert returned is None  # a Figure as the cell's value would be drawn a second time by Jupyter
    plt.close("all")


@pytest.mark.slow
def test_predictions_chart_says_what_it_left_out(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from resnet.data.display import save_predictions_chart

    results = [[("tench, Tinca tinca", "50.0%")], [("goldfish", "40.0%")], [("tiger shark", "30.0%")]]
    out = tmp_path / "chart.png"
    warnings = save_predictions_chart([str(p) for p in PHOTOS[:3]], results, out, limit=2)
    assert len(warnings) == 1 and str(out) in warnings[0] and "first 2 of the 3" in warnings[0]
    with Image.open(out) as png:
        assert 400 <= png.height <= 600  # two rows of 2.6 inches at 100 dpi, not three
    assert save_predictions_chart([str(p) for p in PHOTOS[:2]], results[:2], tmp_path / "two.png", limit=2) == []
    nothing = tmp_path / "nothing.png"
    warnings = save_predictions_chart([], [], nothing)
    assert len(warnings) == 1 and str(nothing) in warnings[0] and "not written" in warnings[0]
    assert not nothing.exists()


def test_show_predictions_bad_arguments(utils, tmp_path) -> None:
    with pytest.raises(ValueError, match="2 images but 1 results"):
        utils.show_predictions([str(PHOTOS[0]), str(PHOTOS[1])], [[("tench", "1.0%")]], output=tmp_path / "x.png")
    with pytest.raises(ValueError, match="pairs"):
        utils.show_predictions([str(PHOTOS[0])], [["tench"]], output=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
