"""Bad input to ``python -m resnet train``: one ``error:`` line naming the problem, exit status 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from train_support import FAST, main, make_dataset, write_images


def run_train(tmp_path: Path, capsys, data: Path, *options: str) -> str:
    """Train into tmp_path/run; assert exit status 2 with one error line and no RUN folder; return the line."""
    run = tmp_path / "run"
    status = main("train", data, "--output", run, "--weights", tmp_path / "unused.pth", *options)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not run.exists()
    return err[0]


def test_data_that_does_not_exist(tmp_path, capsys) -> None:
    line = run_train(tmp_path, capsys, tmp_path / "nowhere", *FAST)
    assert "nowhere" in line and "does not exist" in line and "sub-folder of images per class" in line


def test_data_that_is_a_file(tmp_path, capsys) -> None:
    (tmp_path / "photo.png").write_bytes(b"")
    assert "photo.png' is a file, not a folder" in run_train(tmp_path, capsys, tmp_path / "photo.png", *FAST)


def test_empty_data(tmp_path, capsys) -> None:
    (tmp_path / "data" / ".ipynb_checkpoints").mkdir(parents=True)  # hidden folders are not classes
    assert "holds no class folders" in run_train(tmp_path, capsys, tmp_path / "data", *FAST)


def test_one_class_only(tmp_path, capsys) -> None:
    write_images(tmp_path / "data" / "cats", (200, 100, 50), 3, seed=0)
    line = run_train(tmp_path, capsys, tmp_path / "data", *FAST)
    assert "single class folder, 'cats'" in line and "at least two classes" in line


def test_a_class_folder_without_images(tmp_path, capsys) -> None:
    data = make_dataset(tmp_path / "data", per_class=2)
    (data / "zebras").mkdir()
    (data / "zebras" / "readme.txt").write_text("no images here")
    line = run_train(tmp_path, capsys, data, *FAST)
    assert "'zebras'" in line and "hold no images" in line


def test_resume_without_a_checkpoint(tmp_path, capsys) -> None:
    data = make_dataset(tmp_path / "data", per_class=2)
    line = run_train(tmp_path, capsys, data, "--resume", *FAST)
    assert "--resume: there is no checkpoint at" in line and "checkpoint.pth.tar" in line


@pytest.mark.parametrize("options, message", [
    (["--precision", "fp16", "--image-size", "32", "--workers", "0"], "--precision fp16 needs a CUDA device"),
    (["--resume", "--force", *FAST], "give one of them"),
    (["--from-scratch", *FAST], "--from-scratch and --weights exclude each other"),
    (["--batch-size", "1", *FAST], "--batch-size 1 cannot train BatchNorm"),
    (["--image-size", "16"], "argument --image-size: must be at least 32, not 16"),
    (["--val-split", "1"], "argument --val-split: must be in [0, 1), not 1"),
    (["--epochs", "0"], "argument --epochs: must be at least 1, not 0"),
    (["--workers", "-1"], "argument --workers: must be at least 0, not -1"),
    (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
])
def test_bad_options(tmp_path, capsys, options, message) -> None:
    data = make_dataset(tmp_path / "data", per_class=12)  # 33 to train: more than the default batch
    with pytest.raises(SystemExit) as exit_info:  # argparse errors leave through SystemExit
        status = main("train", data, "--output", tmp_path / "run", "--weights", tmp_path / "w.pth", *options)
        raise SystemExit(status)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()
