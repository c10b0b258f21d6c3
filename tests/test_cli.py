"""``python -m resnet classify`` against torchvision as the peer: in this process through the real dispatcher
(conftest's ``cli``), and end to end in a subprocess (the slow tier)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from support import PHOTOS, REPO_ROOT, Route, assert_top_k_agrees, run_resnet

FILE = "nvidia_resnet50_200821.pth.tar"


#: Max abs logit difference between the CLI's fast path and the peer (float32).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def peer_logits(peer_resnet50) -> dict[str, torch.Tensor]:
    """Logits of each photo from torchvision's resnet50 and transforms (the peer), by file name."""
    from torchvision import transforms

    pipeline = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
         transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    )
    batch = torch.stack([pipeline(Image.open(p).convert("RGB")) for p in PHOTOS])
    with torch.no_grad():
        logits = peer_resnet50(batch)
    return {p.name: row for p, row in zip(PHOTOS, logits)}


@pytest.fixture
def classify(cli):
    """``classify(ARGS)``: ``python -m resnet classify ARGS`` in this process; ``.returncode``, ``.stdout``,
    ``.stderr``."""
    return lambda *args: cli("classify", *args)


def parse_json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_json_output_for_files_matches_torchvision(seeded_cache, peer_logits) -> None:
    """End to end: a child process, as a user runs it."""
    from processing_utils import get_imgnet_classes

    classes = get_imgnet_classes()
    result = run_resnet("classify", *PHOTOS, "--json", "--quiet", timeout=180)
    assert result.returncode == 0, result.stderr
    records = parse_json_lines(result.stdout)
    assert [Path(r["input"]).name for r in records] == [p.name for p in PHOTOS]
    for record in records:
        top = record["top"]
        logits = peer_logits[Path(record["input"]).name]
        assert_top_k_agrees([t["index"] for t in top], logits, TOLERANCE)
        probabilities = [t["probability"] for t in top]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
        # The peer's probabilities, to the 6 decimals printed (logits within TOLERANCE move them far less).
        peer = logits.softmax(0)[[t["index"] for t in top]].tolist()
        assert max(abs(a - b) for a, b in zip(probabilities, peer)) <= 1e-6, (probabilities, peer)
        assert [t["class"] for t in top] == [classes[t["index"]] for t in top]


@pytest.mark.slow
def test_text_output_for_a_folder_recursively(classify, seeded_cache, tmp_path, peer_logits) -> None:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(PHOTOS[0], folder / PHOTOS[0].name)
    shutil.copy(PHOTOS[1], folder / "nested" / PHOTOS[1].name)
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    result = classify(str(folder), "-k", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Sorted walk: photos/astronaut.png before photos/nested/...
    assert len(lines) == 8
    assert lines[0] == str(folder / PHOTOS[0].name) and lines[4] == str(folder / "nested" / PHOTOS[1].name)
    assert all(line.startswith("  ") and "%" in line for i, line in enumerate(lines) if i % 4)
    # Each block names the peer's top 3 classes, most likely first.
    from processing_utils import get_imgnet_classes

    index_of = {name: i for i, name in enumerate(get_imgnet_classes())}
    for block, photo in ((lines[1:4], PHOTOS[0]), (lines[5:8], PHOTOS[1])):
        names = [line.split("%", 1)[1].strip() for line in block]
        assert_top_k_agrees([index_of[name] for name in names], peer_logits[photo.name], TOLERANCE)


@pytest.mark.slow
def test_loopback_urls(classify, seeded_cache, server, peer_logits) -> None:
    for photo in PHOTOS:
        server.routes[f"/img/{photo.name}"] = Route(photo.read_bytes(), content_type="image/png")
    urls = [server.url(f"/img/{p.name}") for p in PHOTOS]
    result = classify(*urls, "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    records = parse_json_lines(result.stdout)
    assert [r["input"] for r in records] == urls
    for record, photo in zip(records, PHOTOS):
        assert_top_k_agrees([t["index"] for t in record["top"]], peer_logits[photo.name], TOLERANCE)


@pytest.mark.slow
def test_corrupt_file_among_good_ones_is_reported_and_skipped(classify, seeded_cache, tmp_path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(PHOTOS[0].read_bytes()[:500] if PHOTOS[0].suffix == ".jpg" else b"\xff\xd8\xff garbage")
    missing = tmp_path / "missing.png"
    result = classify(str(PHOTOS[0]), str(broken), str(missing), str(PHOTOS[1]), "--json", "--quiet")
    assert result.returncode == 1
    records = parse_json_lines(result.stdout)
    assert [r["input"] for r in records] == [str(PHOTOS[0]), str(broken), str(missing), str(PHOTOS[1])]
    assert "top" in records[0] and "top" in records[3]
    assert "broken.jpg" in records[1]["error"] and "missing.png" in records[2]["error"]
    text = classify(str(PHOTOS[0]), str(broken), "--quiet")
    assert text.returncode == 1 and "broken.jpg" in text.stderr and "1 of 2 inputs failed" in text.stderr


@pytest.mark.slow
def test_plot_writes_a_png(classify, seeded_cache, tmp_path) -> None:
    out = tmp_path / "predictions.png"
    result = classify(*map(str, PHOTOS[:2]), "--plot", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200


@pytest.mark.slow
def test_local_weights_file(classify, tmp_path, ngc_file, peer_logits) -> None:
    result = classify(str(PHOTOS[0]), "--weights", str(ngc_file("resnet50")), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    top = parse_json_lines(result.stdout)[0]["top"]
    assert_top_k_agrees([t["index"] for t in top], peer_logits[PHOTOS[0].name], TOLERANCE)


def test_no_network_and_no_weights_says_how_to_supply_them(classify, hub_dir, unused_port, monkeypatch) -> None:
    monkeypatch.setenv("CONVNETS_WEIGHTS_MIRROR", f"http://127.0.0.1:{unused_port}")
    result = classify(str(PHOTOS[0]), "--quiet")
    assert result.returncode == 2
    assert str(hub_dir / "checkpoints" / FILE) in result.stderr
    assert "--weights" in result.stderr and "Traceback" not in result.stderr


def test_bad_arguments_exit_2(classify, seeded_cache, tmp_path) -> None:
    assert classify(str(PHOTOS[0]), "--top-k", "0").returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    result = classify(str(empty))
    assert result.returncode == 2 and "no images" in result.stderr
    assert classify(str(PHOTOS[0]), "--arch", "resnet18").returncode == 2


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--workers", "0"], "--workers"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "-1"], "--timeout"),
        (["--timeout", "nan"], "--timeout"),
        (["--batch-size", "0"], "--batch-size"),
        (["--top-k", "1001"], "--top-k"),
        (["--device", "gpu"], "--device"),
        (["--device", "mps"], "--device"),
        (["--device", "cuda:x"], "--device"),
        (["--arch", "resnet18"], "resnet18"),
        (["--dtype", "int8"], "--dtype"),
        (["--mirror", "mirror.example/models"], "--mirror"),
        (["--mirror", "ftp://mirror.example/models"], "--mirror"),
        (["--plot", "/nonexistent_dir/x.png"], "/nonexistent_dir' does not exist"),
        (["--plot", str(PHOTOS[0].parent)], "is a folder"),
        (["--plot", str(PHOTOS[0] / "x.png")], "is a file, not a folder"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_work(argv, fragment, capsys, monkeypatch) -> None:
    """Refused at parse time, in-process through the real dispatcher: exit 2, one line, no model built."""
    from resnet import classify
    from resnet.__main__ import main

    monkeypatch.setattr(classify, "load_model", lambda *a, **k: pytest.fail("model built despite a bad option"))
    with pytest.raises(SystemExit) as info:
        main(["classify", str(PHOTOS[0]), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_cuda_is_exit_2_with_a_message(capsys) -> None:
    from resnet.__main__ import main

    assert main(["classify", str(PHOTOS[0]), "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--device cpu" in err and len(err.splitlines()) == 1


def test_underscore_arch_spellings_are_accepted(tmp_path, ngc_file) -> None:
    """The spelling of the hub entrypoints and timm (resnext101_32x4d) names the same architecture."""
    from resnet import classify
    from resnet.cli.options import ArgumentParser

    parser = ArgumentParser(prog="classify")
    classify.add_arguments(parser)
    for spelling in ("resnext101_32x4d", "ResNeXt101-32x4d", "resnext101-32x4d"):
        assert parser.parse_args(["x.jpg", "--arch", spelling]).arch == "resnext101-32x4d"
    assert parser.parse_args(["x.jpg", "--arch", "se_resnext101_32x4d"]).arch == "se-resnext101-32x4d"


def test_plot_into_a_folder_this_user_cannot_write_is_refused(tmp_path, capsys, monkeypatch) -> None:
    from resnet import classify
    from resnet.__main__ import main

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))
    monkeypatch.setattr(classify, "load_model", lambda *a, **k: pytest.fail("model built despite a bad --plot"))
    with pytest.raises(SystemExit) as info:
        main(["classify", str(PHOTOS[0]), "--plot", str(locked / "x.png")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--plot" in err and "not writable" in err and str(locked) in err, err


@pytest.mark.slow
def test_plot_says_what_it_leaves_out_and_writes_all_or_nothing(tmp_path, capsys, monkeypatch) -> None:
    from processing_utils import display
    from resnet.cli.classify import PLOT_LIMIT, Outcome, plot
    from resnet.cli.options import CommandError

    folder = tmp_path / "plots"
    folder.mkdir()
    top = [(0, "tench, Tinca tinca", 0.6), (1, "goldfish, Carassius auratus", 0.3)]
    many = [Outcome(str(PHOTOS[i % len(PHOTOS)]), top=top) for i in range(PLOT_LIMIT + 1)]
    out = folder / "predictions.png"
    plot([*many, Outcome("broken.jpg", error="broken.jpg: not an image")], str(out))
    err = capsys.readouterr().err
    assert err.startswith("warning: --plot: ") and str(out) in err
    assert f"first {PLOT_LIMIT} of the {PLOT_LIMIT + 1} classified images" in err
    with Image.open(out) as image:
        assert image.format == "PNG"

    nothing = folder / "none.png"
    plot([Outcome("broken.jpg", error="broken.jpg: not an image")], str(nothing))
    err = capsys.readouterr().err
    assert "none.png" in err and "was not written" in err and "no image was classified" in err
    assert not nothing.exists()

    def crash(uris, results, *, output, timeout):
        Path(output).write_bytes(b"half a PNG")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(display, "show_predictions", crash)
    with pytest.raises(CommandError, match="No space left") as info:
        plot(many[:1], str(out))
    assert info.value.status == 1
    with Image.open(out) as image:  # the earlier chart is untouched, no partial file beside it
        assert image.format == "PNG"
    assert sorted(p.name for p in folder.iterdir()) == ["predictions.png"]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_torchrun_without_distributed_is_refused_before_any_work(rank, capsys, monkeypatch) -> None:
    """Several torchrun processes without --distributed would each print every result: exit 2, rank 0 says why."""
    from resnet import classify
    from resnet.__main__ import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(classify, "load_model", lambda *a, **k: pytest.fail("model built under torchrun"))
    assert main(["classify", str(PHOTOS[0]), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    if rank == "0":
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and "--distributed" in err, err
    else:
        assert err == ""


def test_one_torchrun_process_without_distributed_runs(capsys, monkeypatch) -> None:
    from resnet import classify
    from resnet.__main__ import main
    from resnet.cli.options import CommandError

    def reached(*args, **kwargs):
        raise CommandError("the model loader was reached")

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(classify, "load_model", reached)
    assert main(["classify", str(PHOTOS[0]), "--quiet"]) == 2
    assert "the model loader was reached" in capsys.readouterr().err


def test_progress_bar_counts_images_and_ends_its_line(capsys) -> None:
    """The bar (tqdm) shows done/total images and ends with a newline, so the next message starts on its own line."""
    from resnet.cli.classify import classify

    class Uniform(torch.nn.Module):  # the bar, not the model, is under test here
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 1000)

    uris = [str(PHOTOS[i % len(PHOTOS)]) for i in range(9)] + [str(REPO_ROOT / "missing.png")]
    outcomes = classify(uris, Uniform(), [str(i) for i in range(1000)], top_k=1, batch_size=4,
                        device=torch.device("cpu"), workers=2, progress=True)
    assert [o.error is None for o in outcomes] == [True] * 9 + [False]
    err = capsys.readouterr().err
    assert "10/10" in err and "img" in err, err
    assert err.endswith("\n"), repr(err[-80:])


@pytest.mark.parametrize("command", [[], ["classify"], ["export"]])
def test_help_is_plain_text(command, capsys) -> None:
    from resnet.__main__ import main

    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m resnet") and "`" not in out, out



def test_timeout_keeps_the_connect_read_pair_and_an_optional_deadline() -> None:
    """The README's "5 s connect, 30 s per read" holds on the command line; a deadline can be added."""
    from resnet import classify
    from resnet.cli.options import ArgumentParser

    parser = ArgumentParser(prog="classify")
    classify.add_arguments(parser)
    assert parser.parse_args(["x.jpg"]).timeout == (5.0, 30.0)
    assert parser.parse_args(["x.jpg", "--timeout", "2,7,60"]).timeout == (2.0, 7.0, 60.0)
    assert parser.parse_args(["x.jpg", "--timeout", "12"]).timeout == 12.0


@pytest.mark.slow
def test_output_cut_short_by_its_reader_ends_quietly() -> None:
    """``python -m resnet ... | head``: the reader goes away mid-output; the command stops without a traceback.
    Any command's output goes through the same dispatcher, so a command printing many lines stands in."""
    script = (
        "import sys; from resnet.cli.options import run_command\n"
        "def run(args):\n"
        "    for i in range(200000):\n"
        "        print('line', i)\n"
        "    return 0\n"
        "sys.exit(run_command(run, None))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().startswith("line 0")
    child.stdout.close()  # what head does after its lines
    err = child.stderr.read()
    assert child.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
