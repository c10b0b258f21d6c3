"""``python -m resnet train`` end to end on small generated image folders (CPU, a few seconds per run)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from support import PHOTOS, REPO_ROOT, standin_state_dict
from train_support import COLORS, FAST, deny, main, make_dataset, peer_schedule, subprocess_env, torchrun, write_images

import resnet.training.run_files as run_files
from resnet import recipe
from resnet.training.trainer import INTERRUPTED, Trainer


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def load_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pth.tar", weights_only=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ngc_file) -> tuple[Path, Path]:
    """(DATA, RUN): 2 epochs with a frozen backbone on DATA/train, validated on DATA/val."""
    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(root / "data", per_class=4, val_per_class=2)
    run = root / "run"
    assert main("train", data, "--output", run, "--weights", ngc_file("resnet50"), "--epochs", "2",
                "--batch-size", "4", "--freeze-backbone", *FAST) == 0
    return data, run


def torchvision_peer(state_dict: dict) -> torch.nn.Module:
    from torchvision.models import resnet50

    peer = resnet50(num_classes=state_dict["fc.weight"].shape[0])
    peer.load_state_dict(state_dict)
    return peer.eval()


def peer_predictions(model: torch.nn.Module, paths: list[Path], size: int) -> torch.Tensor:
    """Top-1 class of each image with torchvision's own transforms (resize 256/224 of size, crop size)."""
    from torchvision import transforms

    pipeline = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size),
                                   transforms.ToTensor(),
                                   transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    batch = torch.stack([pipeline(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return model(batch).argmax(1)


@pytest.mark.slow
def test_run_files_and_validation_accuracy_against_torchvision(trained) -> None:
    data, run = trained
    records = read_log(run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "val_loss", "top1", "top5", "lr", "images_per_second", "seconds"} <= set(records[0])
    assert all(r["images"] == 12 and r["unreadable"] == 0 for r in records)
    saved = torch.load(run / "model.pth", weights_only=True)
    assert saved["arch"] == "resnet50" and saved["classes"] == ["blue", "green", "red"]
    best = max(records, key=lambda r: (r["top1"], -r["val_loss"]))
    assert saved["metrics"]["epoch"] == best["epoch"] and saved["metrics"]["top1"] == best["top1"]
    # The logged top-1 of the best epoch is what torchvision's resnet50, holding model.pth's weights, scores
    # on DATA/val with torchvision's transforms.
    val = sorted((data / "val").rglob("*.png"))
    labels = torch.tensor([["blue", "green", "red"].index(p.parent.name) for p in val])
    predicted = peer_predictions(torchvision_peer(saved["state_dict"]), val, 32)
    assert 100.0 * (predicted == labels).float().mean().item() == pytest.approx(best["top1"])
    checkpoint = load_checkpoint(run)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 0 and checkpoint["options"]["freeze_backbone"]
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG" and image.width >= 400
    assert sorted(p.name for p in run.iterdir()) == sorted((*run_files.RUN_FILES, run_files.LOCK))  # no partial file


@pytest.mark.slow
def test_training_runs_on_channels_last_weights(trained) -> None:
    """The hub model's weights are contiguous by default; train asks for channels-last ones (its batches are
    channels-last), which the checkpoint keeps."""
    state = load_checkpoint(trained[1])["state_dict"]
    assert state["conv1.weight"].is_contiguous(memory_format=torch.channels_last)
    assert state["layer3.0.conv2.weight"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_frozen_backbone_changes_only_the_head(trained, ngc_file) -> None:
    _, run = trained
    saved = torch.load(run / "model.pth", weights_only=True)["state_dict"]
    reference = standin_state_dict("resnet50")
    for key, value in saved.items():
        if not key.startswith("fc."):
            assert torch.equal(value, reference[key]), key  # BatchNorm statistics included


@pytest.mark.slow
def test_hub_load_and_classify_use_the_stored_class_names(trained, capsys) -> None:
    data, run = trained
    model = torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", pretrained=False,
                           pretrained_from_file=str(run / "model.pth"), source="local")
    assert model.fc.out_features == 3 and model.classes == ["blue", "green", "red"]
    image = sorted((data / "val" / "red").iterdir())[0]
    assert main("classify", image, "--weights", run / "model.pth", "--json", "--quiet") == 0
    record = json.loads(capsys.readouterr().out)
    assert {t["class"] for t in record["top"]} == {"blue", "green", "red"}  # top-5 capped at 3 classes
    saved = torch.load(run / "model.pth", weights_only=True)["state_dict"]
    # classify crops at the size the model was trained at (FAST: 32), as model.pth records it.
    expected = peer_predictions(torchvision_peer(saved), [image], 32).item()
    assert record["top"][0]["class"] == ["blue", "green", "red"][expected]


def interrupt_after(monkeypatch, calls: int) -> None:
    """Ctrl+C (a real SIGINT to this process) right after the ``calls``-th optimizer step."""
    real = Trainer.train_step
    count = {"n": 0}

    def step(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] == calls:
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "train_step", step)


@pytest.mark.slow
def test_resume_from_mid_epoch_gives_the_uninterrupted_run(tmp_path, ngc_file, monkeypatch, capsys) -> None:
    data = make_dataset(tmp_path / "data", per_class=4)  # 9 to train, 3 held out: 3 steps per epoch

    def train(output: str, epochs: int, *more: str) -> int:
        return main("train", data, "--output", tmp_path / output, "--weights", ngc_file("resnet50"),
                    "--epochs", str(epochs), "--batch-size", "3", "--freeze-backbone", *FAST, *more)

    assert train("whole", 2) == 0
    interrupt_after(monkeypatch, 4)  # epoch 2, after its first step
    assert train("split", 2) == INTERRUPTED
    assert "--resume" in capsys.readouterr().err
    stopped = load_checkpoint(tmp_path / "split")
    assert (stopped["epoch"], stopped["step"]) == (1, 1)
    assert [r["epoch"] for r in read_log(tmp_path / "split")] == [1]
    monkeypatch.undo()
    assert train("split", 2, "--resume") == 0
    whole, split = read_log(tmp_path / "whole"), read_log(tmp_path / "split")
    keys = ("epoch", "train_loss", "val_loss", "top1", "top5", "lr", "images")
    assert [{k: r[k] for k in keys} for r in split] == [{k: r[k] for k in keys} for r in whole]
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for slot, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][slot]["momentum_buffer"])

    # A larger --epochs extends the finished run on the cosine of the new length.
    assert train("split", 3, "--resume") == 0
    extended = read_log(tmp_path / "split")
    assert [r["epoch"] for r in extended] == [1, 2, 3] and extended[:2] == split
    # Epoch 3's last step has the rate of a 3-epoch schedule there (9 steps, 3 of warm-up, lr 0.003).
    assert extended[2]["lr"] == pytest.approx(peer_schedule(0.003, 3, 9)[-1], rel=1e-9)
    assert train("split", 3, "--resume") == 0
    assert "finished" in capsys.readouterr().out and len(read_log(tmp_path / "split")) == 3


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_leaves_a_resumable_checkpoint(tmp_path, ngc_file) -> None:
    """A real Ctrl+C to the whole process group (DataLoader workers included), then --resume."""
    data = make_dataset(tmp_path / "data", per_class=7)  # 18 to train at batch 2: 9 steps per epoch
    run = tmp_path / "run"
    args = [sys.executable, "-m", "resnet", "train", str(data), "--output", str(run), "--weights",
            str(ngc_file("resnet50")), "--epochs", "2", "--batch-size", "2", "--freeze-backbone",
            "--image-size", "32", "--precision", "fp32", "--workers", "2"]
    child = subprocess.Popen(args, cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    seen = b""
    progress = re.compile(rb"epoch 1/2:\s+\d+%\|[^|]*\|\s+([1-4])/9")
    try:
        while not progress.search(seen):  # the progress bar shows 1 to 4 steps done
            chunk = child.stderr.read1(4096)
            assert chunk, f"training ended before the signal: {seen.decode(errors='replace')[-2000:]}"
            seen += chunk
        os.killpg(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
    err = seen + err
    assert child.returncode == INTERRUPTED, err.decode(errors="replace")[-3000:]
    assert b"--resume" in err and b"Traceback" not in err
    stopped = load_checkpoint(run)
    assert stopped["epoch"] == 0 and 1 <= stopped["step"] < 9
    assert not (run / "log.jsonl").read_text()  # no epoch finished
    assert main(*args[3:], "--resume", "--quiet") == 0  # python -m resnet train ... --resume
    assert [r["epoch"] for r in read_log(run)] == [1, 2] and load_checkpoint(run)["epoch"] == 2


class FillingDisk:
    """A file on a disk that fills after 1 MB."""

    def __init__(self, file):
        self.file, self.written = file, 0

    def write(self, data):
        self.written += len(data)
        if self.written > 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, ngc_file, monkeypatch, capsys) -> None:
    data = make_dataset(tmp_path / "data", per_class=3)
    run = tmp_path / "run"
    args = ["train", data, "--output", run, "--weights", ngc_file("resnet50"), "--batch-size", "3",
            "--freeze-backbone", *FAST]
    real_create = run_files._open_temp

    def create(path):
        file = real_create(path)
        return FillingDisk(file) if ".checkpoint.pth.tar" in path.name and (run / "checkpoint.pth.tar").exists() \
            else file

    monkeypatch.setattr(run_files, "_open_temp", create)
    assert main(*args, "--epochs", "2") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "checkpoint.pth.tar" in err and "--resume" in err
    assert err.splitlines()[-1].startswith("error: could not write") and "Traceback" not in err
    kept = load_checkpoint(run)
    assert kept["epoch"] == 1 and [r["epoch"] for r in read_log(run)] == [1]
    assert sorted(p.name for p in run.iterdir()) == sorted((*run_files.RUN_FILES, run_files.LOCK))  # no partial file
    monkeypatch.undo()
    assert main(*args, "--epochs", "2", "--resume") == 0
    assert [r["epoch"] for r in read_log(run)] == [1, 2]


@pytest.mark.slow
def test_undecodable_images_are_skipped_counted_and_listed(tmp_path, ngc_file, capsys) -> None:
    data = make_dataset(tmp_path / "data", per_class=4)
    broken = data / "red" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    truncated = data / "green" / "truncated.jpg"
    truncated.write_bytes(PHOTOS[0].read_bytes()[:300])
    run = tmp_path / "run"
    options = [o if o != "0" else "1" for o in FAST]  # decoded in a DataLoader worker process
    assert main("train", data, "--output", run, "--weights", ngc_file("resnet50"), "--epochs", "1",
                "--batch-size", "2", "--freeze-backbone", "--val-split", "0", *options) == 0
    out, err = capsys.readouterr()
    assert "2 unreadable files skipped" in out
    assert "broken.png" in err and "truncated.jpg" in err
    # 2 of 14 files is more than the share that a few bad files explain: said once, loudly.
    alerts = [line for line in err.splitlines() if "could not be read and are left out" in line]
    assert len(alerts) == 1 and alerts[0].startswith("warning: 2 of the 14 image files (14%, more than 10%)")
    record = read_log(run)[0]
    assert record["unreadable"] == 2 and sorted(Path(p).name for p in record["unreadable_files"]) == [
        "broken.png", "truncated.jpg"]
    assert record["images"] == 12  # 14 files, 7 steps of 2, the 2 broken ones skipped


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, ngc_file) -> None:
    """torchrun, 2 CPU processes (gloo on 127.0.0.1), batch 3 each, against 1 process with batch 6.

    With the backbone frozen (BatchNorm statistics frozen too) the two runs do the same arithmetic but
    for the order of floating-point sums: each process sums its 3 images' gradients and gloo adds the two
    partial sums, where one process sums 6 at once. float32 rounding (about 1e-7 relative per step) over
    6 steps stays far below the bounds: 1e-5 relative for the losses, 1e-6 absolute for the head's
    weights (which are about 1e-2 in size); the validation counts agree exactly.
    """
    data = make_dataset(tmp_path / "data", per_class=6, val_per_class=2)
    common = ["train", data, "--weights", ngc_file("resnet50"), "--epochs", "2", "--freeze-backbone", *FAST]
    assert main(*common, "--output", tmp_path / "one", "--batch-size", "6") == 0
    result = torchrun(2, *common, "--output", tmp_path / "two", "--batch-size", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
        assert (b["top1"], b["top5"], b["images"], b["lr"]) == (a["top1"], a["top5"], a["images"], a["lr"])
    head_one = torch.load(tmp_path / "one" / "model.pth", weights_only=True)["state_dict"]["fc.weight"]
    head_two = torch.load(tmp_path / "two" / "model.pth", weights_only=True)["state_dict"]["fc.weight"]
    assert (head_one - head_two).abs().max().item() < 1e-6
    assert load_checkpoint(tmp_path / "two")["options"]["world_size"] == 2
    assert result.stdout.count("epoch 1/2") == 1  # rank 0 alone reports


@pytest.mark.slow
def test_default_ngc_weights_from_the_cache_with_bf16_and_mixup(tmp_path, hub_dir, ngc_file, monkeypatch,
                                                                capsys) -> None:
    """NVIDIA's weights through the hub cache, as the entrypoints find them; explicit bf16 autocast (native or
    emulated: one tiny step), mixup, and BatchNorm trained."""
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(ngc_file("resnet50"), hub_dir / "checkpoints" / "nvidia_resnet50_200821.pth.tar")
    data = make_dataset(tmp_path / "data", classes=("blue", "red"), per_class=2)
    run = tmp_path / "run"
    autocasts, mixups = [], []

    class Autocast(torch.autocast):
        def __init__(self, device_type, dtype=None, *args, **kwargs):
            autocasts.append((device_type, dtype))
            super().__init__(device_type, dtype, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", Autocast)
    real_mixup = recipe.mixup
    monkeypatch.setattr(recipe, "mixup", lambda *a: mixups.append(a[2]) or real_mixup(*a))
    assert main("train", data, "--output", run, "--epochs", "1", "--batch-size", "4", "--val-split", "0",
                "--mixup", "0.2", "--image-size", "32", "--precision", "bf16", "--workers", "0", "--quiet") == 0
    out = capsys.readouterr().out
    assert "bf16 on cpu" in out and autocasts == [("cpu", torch.bfloat16)] and mixups == [0.2]
    record = read_log(run)[0]
    assert record["images"] == 4 and torch.isfinite(torch.tensor(record["train_loss"]))
    trained = torch.load(run / "model.pth", weights_only=True)["state_dict"]
    reference = standin_state_dict("resnet50")
    assert not torch.equal(trained["layer4.2.conv3.weight"], reference["layer4.2.conv3.weight"])
    assert not torch.equal(trained["bn1.running_mean"], reference["bn1.running_mean"])


def snapshot(run: Path) -> dict[str, tuple[int, int]]:
    """Size and time of the run's files (the lock file records each trainer that claims the folder)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(run.iterdir()) if p.name != run_files.LOCK}


@pytest.mark.slow
def test_an_existing_run_is_refused_without_resume(trained, ngc_file, capsys) -> None:
    data, run = trained
    before = snapshot(run)
    same = ["train", data, "--output", run, "--weights", ngc_file("resnet50"), "--epochs", "2", "--batch-size", "4",
            "--freeze-backbone", *FAST]
    assert main(*same) == 2
    assert "already holds a training run of the same arguments (2 of 2 epochs done)" in capsys.readouterr().err
    assert main(*same, "--lr", "0.1") == 2
    err = capsys.readouterr().err
    assert "started with other arguments: --lr 0.1 (the run: 0.256)" in err and "--force" in err
    assert snapshot(run) == before


@pytest.mark.slow
def test_resume_with_another_arch_or_class_list_is_refused(trained, ngc_file, tmp_path, capsys) -> None:
    data, run = trained
    before = snapshot(run)
    args = ["train", "--output", run, "--weights", ngc_file("resnet50"), "--epochs", "3", "--batch-size", "4",
            "--freeze-backbone", "--resume", *FAST]
    assert main(*args, data, "--arch", "resnext101_32x4d") == 2
    err = capsys.readouterr().err
    assert "is a run of other arguments: --arch resnext101-32x4d (the run: resnet50)" in err
    other = make_dataset(tmp_path / "other", classes=("blue", "green", "yellow"), per_class=4, val_per_class=2)
    assert main(*args, other) == 2
    err = capsys.readouterr().err
    assert "DATA's classes differ" in err and "missing: 'red'" in err and "not in the run: 'yellow'" in err
    assert main(*args, data, "--epochs", "1") == 2
    assert "has already trained 2 epochs" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.slow
def test_force_starts_over(trained, ngc_file, tmp_path) -> None:
    data, trained_run = trained
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main("train", data, "--output", run, "--weights", ngc_file("resnet50"), "--epochs", "1",
                "--batch-size", "4", "--freeze-backbone", "--lr", "0.1", "--force", *FAST) == 0
    assert [r["epoch"] for r in read_log(run)] == [1]
    assert load_checkpoint(run)["options"]["lr"] == 0.1


@pytest.mark.slow
def test_a_full_disk_before_the_first_checkpoint_does_not_advise_resume(tmp_path, ngc_file, monkeypatch,
                                                                        capsys) -> None:
    data = make_dataset(tmp_path / "data", per_class=3)
    run = tmp_path / "run"
    args = ["train", data, "--output", run, "--weights", ngc_file("resnet50"), "--batch-size", "3",
            "--freeze-backbone", *FAST]
    real_create = run_files._open_temp
    monkeypatch.setattr(run_files, "_open_temp", lambda path: FillingDisk(real_create(path))
                        if ".checkpoint.pth.tar" in path.name else real_create(path))
    assert main(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not write") and "No space left on device" in err
    assert "--resume" not in err and "nothing to resume" in err and "again with --force" in err
    assert sorted(p.name for p in run.iterdir()) == [run_files.LOCK, "model.pth"]  # no partial file
    # Started again without --force: refused before any work, saying why --resume cannot help.
    monkeypatch.undo()
    assert main(*args) == 2
    err = capsys.readouterr().err
    assert "holds files of a training run (model.pth) but no checkpoint.pth.tar, so it cannot be resumed" in err
    assert "--force" in err


@pytest.mark.slow
def test_a_second_trainer_of_the_same_run_is_refused_naming_the_first(tmp_path, ngc_file, monkeypatch,
                                                                      capsys) -> None:
    data = make_dataset(tmp_path / "data", per_class=3)
    args = ["train", data, "--output", tmp_path / "run", "--weights", ngc_file("resnet50"), "--epochs", "1",
            "--batch-size", "3", "--freeze-backbone", *FAST]
    second: dict = {}
    real = Trainer.train_step

    def step(self, *step_args, **kwargs):
        if not second:  # while the first trains, a second trainer starts on the same RUN
            second["status"] = None  # (once: should the second train, its steps do not start a third)
            second["status"] = main(*args)
            second["err"] = capsys.readouterr().err
        return real(self, *step_args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", step)
    assert main(*args) == 0
    errors = [line for line in second["err"].splitlines() if line.startswith("error:")]
    assert second["status"] == 2 and len(errors) == 1, second
    assert "another training process is writing this run" in errors[0]
    assert f"pid {os.getpid()} on {socket.gethostname()}" in errors[0]
    assert [r["epoch"] for r in read_log(tmp_path / "run")] == [1]


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.slow
def test_two_quick_ctrl_c_stop_at_once_with_one_line(tmp_path, ngc_file, monkeypatch, capsys, steps) -> None:
    """The first Ctrl+C asks for a checkpoint after the step, the second stops at once: one error line, the
    last checkpoint (if any) intact, no partial file, and no RUN folder when nothing was ever written."""
    data = make_dataset(tmp_path / "data", per_class=3)  # 6 to train at batch 3: 2 steps per epoch
    run = tmp_path / "run"
    real = Trainer.train_step
    count = {"n": 0}

    def step(self, *step_args, **kwargs):
        result = real(self, *step_args, **kwargs)
        count["n"] += 1
        if count["n"] == steps:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "train_step", step)
    assert main("train", data, "--output", run, "--weights", ngc_file("resnet50"), "--epochs", "2",
                "--batch-size", "3", "--freeze-backbone", *FAST) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1
    assert errors[0].startswith("error: interrupted again (a second Ctrl+C): stopped at once")
    if steps == 1:  # in the first epoch: nothing to resume, and nothing left
        assert "nothing to resume" in errors[0] and not run.exists()
    else:  # in the second: epoch 1's checkpoint stays, for --resume
        assert "--resume" in errors[0] and load_checkpoint(run)["epoch"] == 1
        assert sorted(p.name for p in run.iterdir()) == sorted((*run_files.RUN_FILES, run_files.LOCK))


@pytest.mark.slow
def test_data_search_problems_are_named_once(tmp_path, ngc_file, monkeypatch, capsys) -> None:
    """Link loops, a sub-folder that cannot be read and a photo of another format: each image is trained on
    once, and each problem is one warning line for the whole run."""
    data = make_dataset(tmp_path / "data", per_class=3)
    (data / "red" / "loop").symlink_to(".", target_is_directory=True)
    (data / "red" / "up").symlink_to("..", target_is_directory=True)
    (data / "blue" / "IMG_0001.heic").write_bytes(b"an iPhone photo")
    write_images(data / "green" / "later", COLORS["green"], 2, seed=9)
    deny(monkeypatch, "scandir", data / "green" / "later")
    assert main("train", data, "--output", tmp_path / "run", "--weights", ngc_file("resnet50"), "--epochs", "2",
                "--batch-size", "3", "--val-split", "0", "--freeze-backbone", *FAST) == 0
    out, err = capsys.readouterr()
    assert "on 9 images of 3 classes" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, warnings
    assert f"cannot read the folder '{data / 'green' / 'later'}' (Permission denied)" in warnings[0]
    assert "1 file(s) left out for their type (1 .heic;" in warnings[1] and "IMG_0001.heic" in warnings[1]
    assert "2 link(s) to folders searched already" in warnings[2] and "red/loop" in warnings[2]
@pytest.mark.parametrize("per_class, batch, freeze, trained, log", [
    (20, 32, True, 60, "batch 32, 2 steps per epoch, the last of 28 images"),
    (11, 32, False, 33, "batch 32, 1 step per epoch"),  # 32 + a lone image that BatchNorm could not train on
    (6, 32, True, 18, "batch 18 (--batch-size 32 capped by the 18 training images), 1 step per epoch"),
], ids=["last-batch-of-28", "last-batch-of-one", "batch-larger-than-the-data"])
@pytest.mark.slow
def test_every_image_is_trained_on(tmp_path, ngc_file, capsys, per_class, batch, freeze, trained, log) -> None:
    data = make_dataset(tmp_path / "data", per_class=per_class)
    run = tmp_path / "run"
    assert main("train", data, "--output", run, "--weights", ngc_file("resnet50"), "--epochs", "1",
                "--batch-size", str(batch), "--val-split", "0", *(["--freeze-backbone"] if freeze else []),
                *FAST) == 0
    out, err = capsys.readouterr()
    assert log in out, out
    assert read_log(run)[0]["images"] == trained
    assert "num_classes=" not in err  # the new head's note is worded for the command line


def _records(losses, top1s):
    return [{"epoch": i + 1, "train_loss": loss, "top1": top1} for i, (loss, top1) in enumerate(zip(losses, top1s))]


def test_divergence_and_chance_accuracy_are_warned_once() -> None:
    from resnet.training.trainer import training_warnings

    def warned(losses, top1s, classes=3):
        history = _records(losses, top1s)
        return [message for end in range(1, len(history) + 1) for message in training_warnings(history[:end], classes)]

    assert warned([1.1, 0.9, 0.7], [40.0, 60.0, 80.0]) == []  # learning
    diverging = warned([1.1, 0.5, 600.0, 9e5], [60.0, 70.0, 50.0, 50.0])
    assert len(diverging) == 1 and "train loss of epoch 3, 600, is 1,200 times its lowest before (0.5)" in diverging[0]
    first = warned([2e3], [None], classes=2)  # 2,885 times ln(2): diverging from the first epoch
    assert len(first) == 1 and "times that of a uniform guess (0.6931)" in first[0]
    nan = warned([1.0, float("nan"), float("nan")], [60.0, 50.0, 50.0], classes=2)
    assert len(nan) == 1 and "diverged: the train loss of epoch 2 is nan" in nan[0]
    chance = warned([1.1, 1.1, 1.1], [100 / 3, 20.0, 100 / 3])
    assert len(chance) == 1 and "stayed at chance level (33.33% for 3 classes) for 2 epochs" in chance[0]
    assert warned([1.1, 1.0, 0.9], [33.3, 40.0, 33.3]) == []  # once above chance, the model learns something
    assert warned([1.1, 1.0], [None, None]) == []  # no validation set: nothing to say about accuracy


@pytest.mark.slow
def test_a_run_at_chance_level_is_warned(tmp_path, ngc_file, capsys) -> None:
    """Every class folder holds the same pictures: the model cannot tell them apart, validation stays at chance."""
    from train_support import write_images

    data = tmp_path / "data"
    for name in ("blue", "green", "red"):
        write_images(data / name, (120, 120, 120), 4, seed=0)
    assert main("train", data, "--output", tmp_path / "run", "--weights", ngc_file("resnet50"), "--epochs", "2",
                "--batch-size", "4", "--val-split", "0.5", "--freeze-backbone", *FAST) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "chance level" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: validation top-1 has stayed at chance level"), err
