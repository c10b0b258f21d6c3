"""Bad input to ``python -m resnet train``: one ``error:`` line naming the problem, exit status 2, nothing written."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

from train_support import FAST, deny, main, make_dataset, write_images

from resnet.io.atomic import staging_name
from resnet.training.run_files import LOCK


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


# --------------------------------------------------------------------------- the DATA folder


def test_a_class_folder_that_cannot_be_read_is_named_as_such(tmp_path, capsys, monkeypatch) -> None:
    data = make_dataset(tmp_path / "data", per_class=2)
    deny(monkeypatch, "scandir", data / "green")
    line = run_train(tmp_path, capsys, data, *FAST)
    assert "class folder(s) 'green'" in line and "cannot be read (Permission denied)" in line
    assert "hold no images" not in line


def test_a_data_folder_that_cannot_be_read_is_named_as_such(tmp_path, capsys, monkeypatch) -> None:
    data = make_dataset(tmp_path / "data", per_class=2)
    deny(monkeypatch, "scandir", data)
    line = run_train(tmp_path, capsys, data, *FAST)
    assert f"cannot read the DATA folder '{data}': Permission denied" in line


# --------------------------------------------------------------------------- the RUN folder, checked before any work


def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the training reads DATA (the first work of a run)."""
    import resnet.training.trainer

    monkeypatch.setattr(resnet.training.trainer, "load_training_data",
                        lambda *a, **k: pytest.fail("DATA was read before RUN was found unusable"))


def test_output_that_is_a_file(tmp_path, capsys, monkeypatch) -> None:
    data = make_dataset(tmp_path / "data", per_class=2)
    (tmp_path / "run").write_text("my notes")
    no_work(monkeypatch)
    assert main("train", data, "--output", tmp_path / "run", "--weights", tmp_path / "w.pth", *FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--output '{tmp_path / 'run'}': is a file, not a folder" in err[0], err
    assert (tmp_path / "run").read_text() == "my notes"


def test_output_inside_a_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch) -> None:
    data = make_dataset(tmp_path / "data", per_class=2)
    (tmp_path / "runs").mkdir()
    run = tmp_path / "runs" / "new" / "pets"
    deny(monkeypatch, "mkdir", run)  # runs/new can be made, but nothing in it
    no_work(monkeypatch)
    assert main("train", data, "--output", run, "--weights", tmp_path / "w.pth", *FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot make the folder '{run}' (Permission denied)" in err[0]
    assert list((tmp_path / "runs").iterdir()) == []  # runs/new, made for it, is removed again


def test_a_run_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch) -> None:
    data = make_dataset(tmp_path / "data", per_class=2)
    run = tmp_path / "run"
    run.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # a read-only folder: no file can be made in it
        if flags & os.O_CREAT and os.fspath(path).startswith(str(run) + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    no_work(monkeypatch)
    assert main("train", data, "--output", run, "--weights", tmp_path / "w.pth", *FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write into this folder (Permission denied)" in err[0] and str(run) in err[0]
    assert list(run.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="runs as root, where folder permissions are not enforced (the variants above always run)")
def test_read_only_folders_with_real_permissions(tmp_path, capsys, monkeypatch) -> None:
    data = make_dataset(tmp_path / "data", per_class=2)
    no_work(monkeypatch)
    for run in (tmp_path / "ro", tmp_path / "ro" / "new"):
        (tmp_path / "ro").mkdir(exist_ok=True)
        (tmp_path / "ro").chmod(0o555)
        try:
            assert main("train", data, "--output", run, "--weights", tmp_path / "w.pth", *FAST) == 2
        finally:
            (tmp_path / "ro").chmod(0o755)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Permission denied" in err[0]


def test_what_a_killed_trainer_left_is_swept_at_the_next_start(tmp_path, capsys) -> None:
    """A trainer killed while writing (SIGKILL, power cut) leaves temporary files beside the run's files; the
    next trainer of RUN, holding its lock, removes them, and they no longer make RUN look like a run."""
    data = make_dataset(tmp_path / "data", per_class=2)
    run = tmp_path / "run"
    run.mkdir()
    left = [".checkpoint.pth.tar.0123456789ab.partial.tar",  # the naming of earlier versions
            ".model.pth.0badc0de-0000000001-0123abcd.partial.pth",  # another machine's, or a dead pid's
            staging_name("log.jsonl", "partial", ".jsonl")]  # even this process's: only one process has the lock
    for name in left:
        (run / name).write_bytes(b"x" * 1000)
    (run / "notes.txt").write_text("mine")
    # The start goes on past RUN and DATA to the weights (which fail here, quickly: no such file), so RUN was usable.
    assert main("train", data, "--output", run, "--weights", tmp_path / "w.pth", *FAST) == 2
    err = capsys.readouterr().err
    assert "w.pth' does not exist" in err and "--weights FILE" in err
    assert sorted(p.name for p in run.iterdir()) == [LOCK, "notes.txt"]


# --------------------------------------------------------------------------- runs that cannot train


@pytest.mark.slow
def test_data_where_no_image_can_be_read(tmp_path, capsys, ngc_file) -> None:
    data = tmp_path / "data"
    for name in ("cats", "dogs"):
        (data / name).mkdir(parents=True)
        for i in range(3):
            (data / name / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG at all")
    run = tmp_path / "run"
    status = main("train", data, "--output", run, "--weights", ngc_file("resnet50"), "--batch-size", "2",
                  "--freeze-backbone", "--val-split", "0", *FAST)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note: ")]
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: none of the 6 training images") and ".jpg" in err[0]  # the first named
    assert "nothing was trained" in err[0]
    assert not run.exists()  # made for the run, removed with nothing in it


# --------------------------------------------------------------------------- --resume on a checkpoint that is not right


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, ngc_file) -> tuple[list, Path]:
    """(the train arguments without --output, RUN) of a finished 1-epoch run (6 images to train, 3 held out)."""
    root = tmp_path_factory.mktemp("one_epoch")
    data = make_dataset(root / "data", per_class=3)
    args = ["train", data, "--weights", ngc_file("resnet50"), "--batch-size", "3", "--freeze-backbone", *FAST]
    assert main(*args, "--output", root / "run", "--epochs", "1") == 0
    return args, root / "run"


def run_copy(one_epoch, tmp_path: Path, change=None) -> Path:
    """A copy of the run, its checkpoint changed by ``change(checkpoint)``."""
    _, run = one_epoch
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if change is not None:
        checkpoint = torch.load(copy / "checkpoint.pth.tar", weights_only=True)
        change(checkpoint)
        torch.save(checkpoint, copy / "checkpoint.pth.tar")
    return copy


def files_of(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.name != LOCK}


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("options"), "it has no 'options' entry"),
    (lambda c: c.pop("optimizer"), "it has no 'optimizer' entry"),
    (lambda c: c.pop("rng"), "it has no 'rng' entry"),
    (lambda c: c.update(epoch="x"), "its 'epoch' entry is 'x' (str), not a whole number of at least 0"),
    (lambda c: c.update(history=5), "its 'history' entry is 5 (int), not a list of epoch records"),
    (lambda c: c.update(step=-5), "its 'step' entry is -5 (int), not a whole number of at least 0"),
    (lambda c: c.update(step=10**9), "its 'step' entry is 1000000000, but an epoch of this run has 2 steps"),
    (lambda c: c.update(best={"epoch": "x"}), "its 'best' entry is {'epoch': 'x'} (dict), not an epoch record"),
    (lambda c: c["options"].pop("lr"), "its 'options' entry lacks 'lr'"),
    (lambda c: c["optimizer"].update(param_groups=[]), "its 'optimizer' entry does not fit this run (ValueError"),
    (lambda c: c["rng"].update(torch=torch.zeros(10, dtype=torch.uint8)),
     "its 'rng' entry is not a random generator state"),
], ids=["no-options", "no-optimizer", "no-rng", "epoch-x", "history-5", "step-negative", "step-huge", "best",
        "option-missing", "optimizer-groups", "rng-size"])
@pytest.mark.slow
def test_resume_checks_the_whole_checkpoint(one_epoch, tmp_path, capsys, change, message) -> None:
    run = run_copy(one_epoch, tmp_path, change)
    before = files_of(run)
    capsys.readouterr()
    assert main(*one_epoch[0], "--output", run, "--epochs", "2", "--resume") == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note: ")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"error: --resume: '{run / 'checkpoint.pth.tar'}' is not a usable training checkpoint")
    assert message in err[0]
    assert files_of(run) == before  # nothing written


@pytest.mark.slow
def test_resuming_a_checkpoint_copied_alone_writes_model_pth(one_epoch, tmp_path, capsys) -> None:
    args, run = one_epoch
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "checkpoint.pth.tar", alone)
    assert main(*args, "--output", alone, "--epochs", "1", "--resume") == 0  # finished: nothing to train
    out, err = capsys.readouterr()
    assert f"note: {alone / 'model.pth'} was missing; written from the checkpoint" in err and "finished" in out
    written, original = (torch.load(path / "model.pth", weights_only=True) for path in (alone, run))
    assert written["metrics"] == original["metrics"] and written["classes"] == original["classes"]
    assert all(torch.equal(value, original["state_dict"][key]) for key, value in written["state_dict"].items())


@pytest.mark.slow
def test_resuming_without_the_best_epochs_weights_says_so(one_epoch, tmp_path, capsys) -> None:
    """A checkpoint of epoch 2 whose best epoch was 1 (with a top-1 no later epoch can beat), copied alone."""
    def best_was_epoch_1(checkpoint: dict) -> None:
        first = dict(checkpoint["history"][0], top1=100.0, val_loss=0.0)
        checkpoint["history"] = [first, dict(first, epoch=2, top1=50.0, val_loss=1.0)]
        checkpoint.update(epoch=2, best={k: first[k] for k in ("epoch", "train_loss", "val_loss", "top1", "top5")})
        checkpoint["options"]["epochs"] = 2

    run = run_copy(one_epoch, tmp_path, best_was_epoch_1)
    (run / "model.pth").unlink()
    assert main(*one_epoch[0], "--output", run, "--epochs", "3", "--resume") == 0
    out, err = capsys.readouterr()
    assert "model.pth is missing, and the checkpoint holds epoch 2, not the best one so far (1)" in err
    assert "holds epoch" not in out and "done: the run's best epoch is 1, but its weights were not in" in out
    assert not (run / "model.pth").exists()
