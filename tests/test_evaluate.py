"""``python -m resnet evaluate`` against torchvision's resnet50 holding the same weights (the peer)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from support import PHOTOS, standin_state_dict
from train_support import deny, main, torchrun, write_images

import resnet.training.run_files as run_files
from resnet.training.evaluation import Predictor, evaluate_folder
from resnet.data.synsets import imagenet_class_names, imagenet_wnids

FRUIT = ["apple", "banana", "cherry"]


def peer_logits(state_dict: dict, paths: list[Path]) -> torch.Tensor:
    """torchvision's resnet50 and transforms (Resize 256, CenterCrop 224, ImageNet mean/std)."""
    from torchvision import transforms
    from torchvision.models import resnet50

    peer = resnet50(num_classes=state_dict["fc.weight"].shape[0])
    peer.load_state_dict(state_dict)
    pipeline = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                   transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    batch = torch.stack([pipeline(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return peer.eval()(batch)


@pytest.fixture(scope="module")
def peer_top5() -> dict[str, list[int]]:
    logits = peer_logits(standin_state_dict("resnet50"), PHOTOS)
    return {p.name: row for p, row in zip(PHOTOS, logits.topk(5, dim=1).indices.tolist())}


@pytest.fixture(scope="module")
def fruit_model(tmp_path_factory) -> tuple[Path, dict]:
    """A 3-class model.pth as ``train`` writes it (the stand-in backbone, the first 3 rows of its head)."""
    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:3].clone(), state["fc.bias"][:3].clone()
    path = tmp_path_factory.mktemp("fruit") / "model.pth"
    torch.save(run_files.model_file(state, arch="resnet50", classes=FRUIT, image_size=224), path)
    return path, state


def place(data: Path, folder: str, photo: Path) -> None:
    (data / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(photo, data / folder / photo.name)


def evaluate_json(capsys, *args) -> tuple[int, dict]:
    status = main("evaluate", *args, "--json", "--workers", "0", "--quiet")
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_imagenet_folders_by_wordnet_id_and_class_name(seeded_cache, peer_top5, tmp_path, capsys) -> None:
    """NVIDIA's weights (from the hub cache) on a folder holding 3 or 4 of the 1000 classes."""
    wnids, names = imagenet_wnids(), imagenet_class_names()
    first, second, third, fourth = PHOTOS
    data = tmp_path / "val"
    place(data, wnids[peer_top5[first.name][0]], first)  # the peer's top-1: a top-1 hit
    place(data, wnids[peer_top5[fourth.name][0]], fourth)
    place(data, names[peer_top5[second.name][2]], second)  # its 3rd class by full name: a top-5 hit only
    outside = next(i for i in range(1000) if i not in peer_top5[third.name]
                   and [n.split(",")[0] for n in names].count(names[i].split(",")[0]) == 1)
    place(data, names[outside].split(",")[0].upper(), third)  # by first name, any case: a miss
    status, report = evaluate_json(capsys, data)
    assert status == 0
    assert (report["images"], report["top1"], report["top5"], report["unreadable"]) == (4, 50.0, 75.0, [])
    rows = {row["folder"]: row for row in report["per_class"]}
    assert rows[names[outside].split(",")[0].upper()]["index"] == outside
    assert rows[names[peer_top5[second.name][2]]]["top1"] == 0.0


@pytest.mark.slow
def test_fine_tuned_model_matches_folders_to_its_class_names(fruit_model, tmp_path, capsys) -> None:
    path, state = fruit_model
    predicted = peer_logits(state, PHOTOS).argmax(1).tolist()
    data = tmp_path / "fruit"
    truth = [predicted[0], (predicted[1] + 1) % 3, predicted[2], (predicted[3] + 2) % 3]
    for photo, label in zip(PHOTOS, truth):
        place(data, FRUIT[label], photo)
    expected = 100.0 * sum(p == t for p, t in zip(predicted, truth)) / 4
    confusion = tmp_path / "confusion.png"
    assert main("evaluate", data, "--weights", path, "--workers", "0", "--quiet", "--confusion", confusion) == 0
    out = capsys.readouterr().out
    assert f"top-1 {expected:.2f}%  top-5 100.00%" in out and "4 images in" in out and "images/s" in out
    assert "lowest top-1 per class" in out
    with Image.open(confusion) as image:
        assert image.format == "PNG" and image.width > 200
    # Any model-like callable plugs in: torchvision's resnet50 gives the same report.
    from torchvision.models import resnet50

    peer = resnet50(num_classes=3)
    peer.load_state_dict(state)
    report = evaluate_folder(Predictor(peer.eval(), FRUIT, 3, "torchvision"), data)
    assert report.metrics.top1 == expected and report.metrics.count == 4


@pytest.mark.slow
def test_weights_without_class_names_take_the_folders_in_sorted_order(fruit_model, tmp_path, capsys) -> None:
    _, state = fruit_model
    torch.save(state, tmp_path / "plain.pth")  # a bare state dict: no names
    data = tmp_path / "data"
    for photo, folder in zip(PHOTOS, ["a", "b", "c", "c"]):
        place(data, folder, photo)
    status, report = evaluate_json(capsys, data, "--weights", tmp_path / "plain.pth")
    predicted = peer_logits(state, PHOTOS).argmax(1).tolist()
    assert status == 0 and report["top1"] == 100.0 * sum(p == t for p, t in zip(predicted, [0, 1, 2, 2])) / 4
    (data / "d").mkdir()
    place(data, "d", PHOTOS[0])
    assert main("evaluate", data, "--weights", tmp_path / "plain.pth", "--workers", "0", "--quiet") == 2
    assert "no class names, and DATA has 4 class folders for 3 outputs" in capsys.readouterr().err


@pytest.mark.slow
def test_folders_that_match_no_class_are_an_error(fruit_model, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    place(data, "apple", PHOTOS[0])
    place(data, "kiwi", PHOTOS[1])
    assert main("evaluate", data, "--weights", fruit_model[0], "--workers", "0", "--quiet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "match no class of the model: 'kiwi'" in err[0] and "'apple', 'banana'" in err[0]
    assert main("evaluate", tmp_path / "missing", "--weights", fruit_model[0]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_unreadable_files_are_counted_listed_and_left_out(fruit_model, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    for photo, folder in zip(PHOTOS, FRUIT):
        place(data, folder, photo)
    (data / "banana" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    status = main("evaluate", data, "--weights", fruit_model[0], "--json", "--workers", "1", "--quiet")
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert status == 1 and report["images"] == 3
    assert [Path(u["path"]).name for u in report["unreadable"]] == ["broken.jpg"]
    assert "broken.jpg" in captured.err


@pytest.mark.slow
def test_two_processes_report_the_numbers_of_one(fruit_model, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    for photo, folder in zip(PHOTOS, ["apple", "banana", "cherry", "apple"]):
        place(data, folder, photo)
    write_images(data / "cherry", (200, 30, 30), 1, seed=0)  # 5 images: uneven shards
    args = ["evaluate", data, "--weights", fruit_model[0], "--json", "--workers", "0", "--quiet"]
    assert main(*args) == 0
    single = json.loads(capsys.readouterr().out)
    result = torchrun(2, *args, "--distributed")
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.strip().splitlines()  # rank 0 alone reports
    double = json.loads(line)
    for key in ("images_per_second", "seconds"):
        single.pop(key), double.pop(key)
    assert double == single and single["images"] == 5


def test_distributed_without_torchrun_is_a_clear_error(fruit_model, tmp_path, monkeypatch, capsys) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    place(tmp_path / "data", "apple", PHOTOS[0])
    assert main("evaluate", tmp_path / "data", "--weights", fruit_model[0], "--distributed") == 2
    assert "--distributed needs torchrun" in capsys.readouterr().err


# --------------------------------------------------------------------------- the search of DATA, the chart


def fruit_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for photo, folder in zip(PHOTOS, FRUIT):
        place(data, folder, photo)
    return data


@pytest.mark.slow
def test_folders_that_cannot_be_read_are_named_and_make_exit_status_1(fruit_model, tmp_path, capsys,
                                                                       monkeypatch) -> None:
    data = fruit_data(tmp_path)
    place(data, "apple/more", PHOTOS[3])
    deny(monkeypatch, "scandir", data / "apple" / "more")
    deny(monkeypatch, "scandir", data / "cherry")
    status = main("evaluate", data, "--weights", fruit_model[0], "--json", "--workers", "0", "--quiet")
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert status == 1 and report["images"] == 2 and report["unreadable"] == []
    for folder in (data / "apple" / "more", data / "cherry"):
        assert f"warning: cannot read the folder '{folder}' (Permission denied); the images in it are left out" in err


@pytest.mark.slow
def test_a_244_byte_confusion_name_is_written(fruit_model, tmp_path, capsys) -> None:
    chart = tmp_path / ("c" * 240 + ".png")  # a valid file name: 244 bytes of the 255 allowed
    assert main("evaluate", fruit_data(tmp_path), "--weights", fruit_model[0], "--confusion", chart, "--workers",
                "0", "--quiet") == 0
    assert "top-1" in capsys.readouterr().out
    with Image.open(chart) as image:
        assert image.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", chart.name])


@pytest.mark.slow
def test_a_chart_that_cannot_be_written_comes_after_the_report(fruit_model, tmp_path, capsys, monkeypatch) -> None:
    class FullDisk:
        def __init__(self, path):
            self.file = open(path, "wb")

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(run_files, "_open_temp", FullDisk)
    chart = tmp_path / "confusion.png"
    status = main("evaluate", fruit_data(tmp_path), "--weights", fruit_model[0], "--confusion", chart, "--workers",
                  "0", "--quiet")
    out, err = capsys.readouterr()
    assert status == 1 and "top-1" in out  # the whole evaluation is reported
    assert err.strip().splitlines() == [
        f"error: the report above is complete, but the confusion matrix could not be written to --confusion "
        f"'{chart}': No space left on device"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no partial chart


@pytest.mark.slow
def test_confusion_targets_that_are_not_regular_files(fruit_model, tmp_path, capsys) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for target, kind in ((fifo, "a named pipe (FIFO)"), (os.devnull, "a character device")):
        with pytest.raises(SystemExit) as refused:  # checked with the arguments, before any work
            main("evaluate", tmp_path / "data", "--weights", fruit_model[0], "--confusion", target)
        err = capsys.readouterr().err.strip().splitlines()
        assert refused.value.code == 2 and len(err) == 1 and f"is {kind}, not a regular file" in err[0], err
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    # A link to a regular file is written through: the link stays, the file it points to is the chart.
    (tmp_path / "charts").mkdir()
    (tmp_path / "charts" / "latest.png").write_bytes(b"old")
    (tmp_path / "latest.png").symlink_to(tmp_path / "charts" / "latest.png")
    assert main("evaluate", fruit_data(tmp_path), "--weights", fruit_model[0], "--confusion",
                tmp_path / "latest.png", "--workers", "0", "--quiet") == 0
    assert (tmp_path / "latest.png").is_symlink()
    with Image.open(tmp_path / "charts" / "latest.png") as image:
        assert image.format == "PNG"
