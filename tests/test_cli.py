"""``python -m resnet classify`` end to end, in a subprocess, against torchvision as the peer."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from support import PHOTOS, REPO_ROOT, Route, standin_state_dict

FILE = "nvidia_resnet50_200821.pth.tar"


@pytest.fixture
def seeded_cache(hub_dir: Path, ngc_file) -> Path:
    (hub_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copy(ngc_file("resnet50"), hub_dir / "checkpoints" / FILE)
    return hub_dir


@pytest.fixture(scope="module")
def peer_top5() -> dict[str, list[int]]:
    """Top-5 class indices of each photo from torchvision's resnet50 and transforms (the peer)."""
    from torchvision import transforms
    from torchvision.models import resnet50

    peer = resnet50()
    peer.load_state_dict(standin_state_dict("resnet50"))
    peer.eval()
    pipeline = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
         transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    )
    batch = torch.stack([pipeline(Image.open(p).convert("RGB")) for p in PHOTOS])
    with torch.no_grad():
        top = peer(batch).softmax(1).topk(5, dim=1).indices.tolist()
    return {p.name: t for p, t in zip(PHOTOS, top)}


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "resnet", "classify", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def parse_json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_json_output_for_files_matches_torchvision(seeded_cache, peer_top5) -> None:
    result = run_cli(*map(str, PHOTOS), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    records = parse_json_lines(result.stdout)
    assert [Path(r["input"]).name for r in records] == [p.name for p in PHOTOS]
    for record in records:
        top = record["top"]
        assert [t["index"] for t in top] == peer_top5[Path(record["input"]).name]
        probabilities = [t["probability"] for t in top]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
        assert all(isinstance(t["class"], str) and t["class"] for t in top)


def test_text_output_for_a_folder_recursively(seeded_cache, tmp_path, peer_top5) -> None:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(PHOTOS[0], folder / PHOTOS[0].name)
    shutil.copy(PHOTOS[1], folder / "nested" / PHOTOS[1].name)
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    result = run_cli(str(folder), "-k", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Sorted walk: photos/astronaut.png before photos/nested/...
    assert len(lines) == 8
    assert lines[0] == str(folder / PHOTOS[0].name) and lines[4] == str(folder / "nested" / PHOTOS[1].name)
    assert all(line.startswith("  ") and "%" in line for i, line in enumerate(lines) if i % 4)


def test_loopback_urls(seeded_cache, server, peer_top5) -> None:
    for photo in PHOTOS:
        server.routes[f"/img/{photo.name}"] = Route(photo.read_bytes(), content_type="image/png")
    urls = [server.url(f"/img/{p.name}") for p in PHOTOS]
    result = run_cli(*urls, "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    records = parse_json_lines(result.stdout)
    assert [r["input"] for r in records] == urls
    assert [[t["index"] for t in r["top"]] for r in records] == [peer_top5[p.name] for p in PHOTOS]


def test_corrupt_file_among_good_ones_is_reported_and_skipped(seeded_cache, tmp_path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(PHOTOS[0].read_bytes()[:500] if PHOTOS[0].suffix == ".jpg" else b"\xff\xd8\xff garbage")
    missing = tmp_path / "missing.png"
    result = run_cli(str(PHOTOS[0]), str(broken), str(missing), str(PHOTOS[1]), "--json", "--quiet")
    assert result.returncode == 1
    records = parse_json_lines(result.stdout)
    assert [r["input"] for r in records] == [str(PHOTOS[0]), str(broken), str(missing), str(PHOTOS[1])]
    assert "top" in records[0] and "top" in records[3]
    assert "broken.jpg" in records[1]["error"] and "missing.png" in records[2]["error"]
    text = run_cli(str(PHOTOS[0]), str(broken), "--quiet")
    assert text.returncode == 1 and "broken.jpg" in text.stderr and "1 of 2 inputs failed" in text.stderr


def test_plot_writes_a_png(seeded_cache, tmp_path) -> None:
    out = tmp_path / "predictions.png"
    result = run_cli(*map(str, PHOTOS[:2]), "--plot", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200


def test_local_weights_file(tmp_path, ngc_file, peer_top5) -> None:
    result = run_cli(str(PHOTOS[0]), "--weights", str(ngc_file("resnet50")), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    assert [t["index"] for t in parse_json_lines(result.stdout)[0]["top"]] == peer_top5[PHOTOS[0].name]


def test_no_network_and_no_weights_says_how_to_supply_them(hub_dir, monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CONVNETS_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")
    result = run_cli(str(PHOTOS[0]), "--quiet")
    assert result.returncode == 2
    assert str(hub_dir / "checkpoints" / FILE) in result.stderr
    assert "--weights" in result.stderr and "Traceback" not in result.stderr


def test_bad_arguments_exit_2(seeded_cache, tmp_path) -> None:
    assert run_cli(str(PHOTOS[0]), "--top-k", "0").returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(str(empty))
    assert result.returncode == 2 and "no images" in result.stderr
    assert run_cli(str(PHOTOS[0]), "--arch", "resnet18").returncode == 2


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
    from resnet.options import ArgumentParser

    parser = ArgumentParser(prog="classify")
    classify.add_arguments(parser)
    for spelling in ("resnext101_32x4d", "ResNeXt101-32x4d", "resnext101-32x4d"):
        assert parser.parse_args(["x.jpg", "--arch", spelling]).arch == "resnext101-32x4d"
    assert parser.parse_args(["x.jpg", "--arch", "se_resnext101_32x4d"]).arch == "se-resnext101-32x4d"
