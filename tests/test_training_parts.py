"""The parts below ``train`` and ``evaluate``: recipe, schedule, split, class matching, batches, run files,
class names of the weights. Peers: torch's own schedulers and SGD, the shipped class-name JSON, ImageNet's
published class order."""

from __future__ import annotations

import errno
import json
import os
import warnings

import pytest
import torch

from support import REPO_ROOT, standin_state_dict
from train_support import peer_schedule, write_images

import resnet.training.run_files as run_files
from resnet import devices, recipe
from resnet.models.builder import create_model
from resnet.data.folders import load_training_data, match_classes, stratified_split
from resnet.data.loading import EpochBatches, ImageDataset, collate, make_loader, ordered_batches, sample_seed
from resnet.data.folders import DataFolderError
from resnet.training.recipe import PrecisionError
from resnet.data.synsets import imagenet_class_names, imagenet_wnids

# --------------------------------------------------------------------------- class names


def test_synsets_are_imagenet_order_and_match_the_shipped_names() -> None:
    names = json.loads((REPO_ROOT / "tests" / "fixtures" / "LOC_synset_mapping.json").read_text())
    assert imagenet_class_names() == names
    wnids = imagenet_wnids()
    # ImageNet's class index is the position of the WordNet id in sorted order.
    assert len(set(wnids)) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"


@pytest.mark.slow
def test_the_model_carries_its_class_names(tmp_path, ngc_file) -> None:
    assert create_model("resnet50", pretrained_from_file=ngc_file("resnet50")).classes == imagenet_class_names()
    assert create_model("resnet50").classes == imagenet_class_names()
    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:7].clone(), state["fc.bias"][:7].clone()
    torch.save(state, tmp_path / "seven.pth")
    seven = create_model("resnet50", pretrained_from_file=tmp_path / "seven.pth")
    assert seven.fc.out_features == 7 and seven.classes is None  # no num_classes: the file's head
    names = ["a", "b", "c", "d", "e", "f", "g"]
    torch.save(run_files.model_file(state, arch="resnet50", classes=names, image_size=224), tmp_path / "model.pth")
    named = create_model("resnet50", pretrained_from_file=tmp_path / "model.pth")
    assert named.classes == names and torch.equal(named.fc.weight, state["fc.weight"])
    with pytest.warns(UserWarning, match="freshly initialised"):
        fresh = create_model("resnet50", pretrained_from_file=tmp_path / "model.pth", num_classes=3)
    assert fresh.classes is None and fresh.fc.out_features == 3


# --------------------------------------------------------------------------- recipe


@pytest.mark.slow
def test_weight_decay_skips_batchnorm_and_biases_as_sgd_applies_it() -> None:
    model = create_model("resnet50", num_classes=4)
    optimizer = recipe.make_optimizer(model, lr=0.1)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == recipe.WEIGHT_DECAY and plain["weight_decay"] == 0.0
    assert optimizer.defaults["momentum"] == 0.875
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    biases = {id(m.bias) for m in model.modules() if getattr(m, "bias", None) is not None}
    assert {id(p) for p in plain["params"]} == bn | biases
    # One step with zero gradients: SGD shrinks the decayed weights by lr * wd and leaves the rest.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    shrink = 1 - 0.1 * recipe.WEIGHT_DECAY
    assert torch.allclose(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"] * shrink)
    assert torch.equal(after["layer1.0.bn1.weight"], before["layer1.0.bn1.weight"])
    assert torch.equal(after["fc.bias"], before["fc.bias"])


@pytest.mark.parametrize("warmup, total", [(3, 9), (5, 40), (1, 6)])
def test_warmup_cosine_is_torchs_linear_then_cosine_schedule(warmup, total) -> None:
    ours = recipe.WarmupCosine(0.256, warmup, total)
    assert [ours(s) for s in range(total)] == pytest.approx(peer_schedule(0.256, warmup, total), rel=1e-9)


def test_learning_rate_follows_the_global_batch() -> None:
    assert recipe.scaled_lr(256) == pytest.approx(0.256)
    assert recipe.scaled_lr(2 * 16) == recipe.scaled_lr(32) == pytest.approx(0.032)


def test_precision_auto_follows_the_device_and_the_cpu_flags(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(devices, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))  # e.g. Zen 4/5
    assert recipe.resolve_precision("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(devices, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))  # no native BF16
    assert recipe.resolve_precision("auto", cpu) is None
    assert recipe.resolve_precision("auto", cuda) == torch.float16
    assert recipe.resolve_precision("bf16", cpu) == torch.bfloat16 and recipe.resolve_precision("fp32", cuda) is None
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA device"):
        recipe.resolve_precision("fp16", cpu)


def test_grad_scaler_falls_back_to_torch_cuda_amp(monkeypatch) -> None:
    current = recipe.grad_scaler(enabled=False)
    assert isinstance(current, getattr(torch.amp, "GradScaler", torch.cuda.amp.GradScaler))
    monkeypatch.delattr(torch.amp, "GradScaler", raising=False)  # torch < 2.3 has none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch deprecates the old name
        legacy = recipe.grad_scaler(enabled=False)
    assert isinstance(legacy, torch.cuda.amp.GradScaler)
    assert legacy.state_dict() == current.state_dict() == {}
    loss = torch.tensor(2.0, requires_grad=True)
    assert legacy.scale(loss) is loss  # disabled: a no-op with the same interface


def test_mixup_blends_images_and_labels_with_one_weight() -> None:
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).reshape(4, 3, 2, 2)
    labels = torch.tensor([0, 1, 2, 3])
    mixed, a, b, weight = recipe.mixup(images, labels, 0.2, torch.Generator().manual_seed(0))
    order = [int(labels.tolist().index(x)) for x in b]
    assert 0.0 <= weight <= 1.0 and torch.equal(a, labels)
    assert torch.allclose(mixed, weight * images + (1 - weight) * images[order])
    again = recipe.mixup(images, labels, 0.2, torch.Generator().manual_seed(0))
    assert again[3] == weight and torch.equal(again[2], b)


# --------------------------------------------------------------------------- folders and batches


def test_split_is_stratified_seeded_and_keeps_every_class_in_training() -> None:
    labels = [0] * 20 + [1] * 10 + [2] * 1 + [3] * 2
    train, held = stratified_split(labels, 0.1, seed=0)
    assert sorted(train + held) == list(range(len(labels))) and not set(train) & set(held)
    held_per_class = [sum(labels[i] == c for i in held) for c in range(4)]
    assert held_per_class == [2, 1, 0, 1]  # 10% (at least one), never a class's only image
    assert stratified_split(labels, 0.1, seed=0) == (train, held)
    assert stratified_split(labels, 0.1, seed=1) != (train, held)
    assert stratified_split(labels, 0.0, seed=0) == (list(range(len(labels))), [])


def test_folders_match_by_name_wordnet_id_and_first_synonym() -> None:
    names = imagenet_class_names()
    assert match_classes(["n01440764", "goldfish", "tiger shark, Galeocerdo cuvieri", "Hammerhead"], names,
                         where="DATA") == [0, 1, 3, 4]
    with pytest.raises(DataFolderError, match="'crane'.*match several classes"):
        match_classes(["crane"], names, where="DATA")  # the bird (134) and the machine (517)
    with pytest.raises(DataFolderError, match=r"match no class of the model: 'kittens'.*WordNet ids"):
        match_classes(["n01440764", "kittens"], names, where="DATA")
    assert match_classes(["b", "a"], ["a", "b"], where="DATA") == [1, 0]
    with pytest.raises(DataFolderError, match="'n01440764'.*knows 2 classes: 'a', 'b'"):
        match_classes(["n01440764"], ["a", "b"], where="DATA")  # WordNet ids only for ImageNet's classes


def test_ranks_share_each_global_batch_like_one_process() -> None:
    one = EpochBatches(24, 6, seed=3)
    ranks = [EpochBatches(24, 3, rank=r, world=2, seed=3) for r in range(2)]
    for epoch in (0, 1):
        for batches in (one, *ranks):
            batches.set_epoch(epoch)
        for k, batch in enumerate(one.batches()):
            assert sorted(batch) == sorted(ranks[0].batches()[k] + ranks[1].batches()[k])
    whole = one.batches()
    one.set_epoch(1, start=2)  # resuming after 2 steps of epoch 1
    assert one.batches() == whole[2:] and len(whole) == one.steps_per_epoch() == 4


@pytest.mark.slow
def test_undecodable_files_become_failures_not_worker_errors(tmp_path) -> None:
    good = write_images(tmp_path / "a", (10, 200, 10), 3, seed=0)
    bad = tmp_path / "a" / "bad.png"
    bad.write_bytes(b"not an image")
    from resnet.data.preprocessing import build_transform

    dataset = ImageDataset([(str(p), 0) for p in [*good, bad]], build_transform(32))
    for batches in (make_loader(dataset, EpochBatches(4, 4), workers=1), ordered_batches(dataset, range(4), 4,
                                                                                          workers=1)):
        (batch,) = list(batches)
        assert batch.images.shape == (3, 3, 32, 32) and batch.labels.tolist() == [0, 0, 0]
        assert len(batch.failures) == 1 and batch.failures[0][0] == str(bad) and "bad.png" in batch.failures[0][1]
    assert len(collate([dataset[3]])) == 0


class _SigintState(ImageDataset):
    """Reports, from the process that decodes, whether Ctrl+C is ignored there."""

    def __getitem__(self, key):
        import signal

        from resnet.data.loading import Sample

        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        return Sample(torch.tensor([float(ignored)]), os.getpid(), "")


def test_loader_processes_leave_ctrl_c_to_the_training_process() -> None:
    """A terminal's Ctrl+C reaches every process of the group: the loader processes must not die of it
    while the training process writes its checkpoint."""
    (batch,) = list(make_loader(_SigintState([("", 0)] * 2, None), EpochBatches(2, 2), workers=1))
    assert batch.images.flatten().tolist() == [1.0, 1.0] and os.getpid() not in batch.labels.tolist()


def test_ordered_batches_keep_the_order_with_any_number_of_workers(tmp_path) -> None:
    from resnet.data.preprocessing import build_transform

    paths = write_images(tmp_path / "a", (10, 10, 200), 7, seed=1, size=32)
    dataset = ImageDataset([(str(p), i) for i, p in enumerate(paths)], build_transform(32))
    for workers in (0, 2):
        batches = list(ordered_batches(dataset, range(1, 7, 2), 2, workers=workers))
        assert [b.labels.tolist() for b in batches] == [[1, 3], [5]]


def test_sample_seeds_are_reproducible_distinct_non_negative_int64() -> None:
    """Python ints in [0, 2**63) (a torch.Generator seed), the same for the same keys, on numpy 1.x and 2.x."""
    seeds = {sample_seed(5, epoch, image) for epoch in range(3) for image in range(50)}
    assert len(seeds) == 150 and all(type(seed) is int and 0 <= seed < 2**63 for seed in seeds)
    assert sample_seed(5, 1, 7) == sample_seed(5, 1, 7) != sample_seed(5, 7, 1)
    torch.Generator().manual_seed(max(seeds))


def test_augmentation_depends_on_seed_epoch_and_image_only(tmp_path) -> None:
    from resnet.data.preprocessing import build_train_transform

    paths = write_images(tmp_path / "a", (200, 10, 10), 2, seed=0, size=64)
    dataset = ImageDataset([(str(p), 0) for p in paths], build_train_transform(32), seed=5)
    first = dataset[(0, 1)].tensor
    torch.manual_seed(123)  # the global generator's state does not matter
    assert torch.equal(dataset[(0, 1)].tensor, first)
    assert not torch.equal(dataset[(1, 1)].tensor, first)


def test_training_data_checks(tmp_path) -> None:
    write_images(tmp_path / "one" / "cats", (1, 2, 3), 2, seed=0)
    with pytest.raises(DataFolderError, match="single class folder, 'cats'"):
        load_training_data(tmp_path / "one", val_split=0.1, seed=0, global_batch=1)
    write_images(tmp_path / "tv" / "train" / "cats", (1, 2, 3), 2, seed=0)
    write_images(tmp_path / "tv" / "train" / "dogs", (1, 2, 3), 2, seed=0)
    write_images(tmp_path / "tv" / "val" / "cows", (1, 2, 3), 1, seed=0)
    with pytest.raises(DataFolderError, match="DATA/val has class folder.*'cows'"):
        load_training_data(tmp_path / "tv", val_split=0.1, seed=0, global_batch=1)


# --------------------------------------------------------------------------- run files


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch) -> None:
    target = tmp_path / "checkpoint.pth.tar"
    run_files.save({"epoch": 1, "w": torch.ones(3)}, target)

    def full_disk(file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match="No space left"):
        run_files.atomic_write(target, full_disk)
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError):
        run_files.save({"epoch": 2}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1 and len(list(tmp_path.iterdir())) == 1


def test_run_files_follow_the_umask(tmp_path) -> None:
    old = os.umask(0o077)
    try:
        run_files.write_bytes(tmp_path / "log.jsonl", b"{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "log.jsonl").stat().st_mode & 0o777 == 0o600


def test_differences_name_the_options() -> None:
    stored = {"lr": 0.256, "arch": "resnet50", "epochs": 2}
    assert run_files.differences(stored, {"lr": 0.1, "arch": "resnet50", "epochs": 2}) == ["--lr 0.1 (the run: 0.256)"]
    assert run_files.differences(stored, {**stored, "epochs": 5}, ignore=run_files.RESUMABLE_CHANGES) == []


@pytest.mark.parametrize("size, batch, world, least, sizes", [
    (60, 32, 1, 2, [32, 28]),  # the README's few dozen photos: 28 were never trained on
    (33, 32, 1, 2, [33]),  # a last batch of one image: BatchNorm cannot train on it, it joins the batch before
    (33, 32, 1, 1, [32, 1]),  # frozen BatchNorm: a batch of one is fine
    (20, 32, 1, 2, [20]),  # fewer images than a batch
    (19, 3, 2, 2, [3, 3, 4]),  # two processes: 10 each (one padded), the same sizes on both
])
def test_every_image_is_in_a_batch_of_every_epoch(size, batch, world, least, sizes) -> None:
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            batches = EpochBatches(size, batch, rank=rank, world=world, seed=5, least=least)
            batches.set_epoch(epoch)
            assert [len(b) for b in batches.batches()] == sizes == batches.sizes()
            assert batches.steps_per_epoch() == len(sizes)
            seen += [index for b in batches.batches() for _, index in b]
        assert sorted(set(seen)) == list(range(size))  # DistributedSampler pads with repeats, never drops
    resumed = EpochBatches(size, batch, world=world, seed=5, least=least)
    resumed.set_epoch(1, start=len(sizes) - 1)
    assert [len(b) for b in resumed.batches()] == sizes[-1:]


# --------------------------------------------------------------------------- charts


def _history(best_epoch: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "top1": 50.0 + e, "top5": 90.0,
             "best": e <= best_epoch} for e in (1, 2, 3)]


@pytest.mark.parametrize("classes, lines", [(3, ["top-1"]), (5, ["top-1"]), (10, ["top-1", "top-5"])])
@pytest.mark.slow
def test_curves_show_top5_only_above_five_classes_and_mark_the_best_epoch(classes, lines) -> None:
    from resnet.training.plots import curves_figure

    loss_axes, accuracy_axes = curves_figure(_history(best_epoch=2), classes).axes[:2]
    labels = [line.get_label() for line in accuracy_axes.get_lines()]
    assert labels == [*lines, "best (epoch 2)"]
    (marker,) = [line for line in loss_axes.get_lines() if line.get_label() == "best (epoch 2)"]
    assert list(marker.get_xdata()) == [2, 2]


def test_confusion_matrix_has_an_other_column_only_when_something_is_predicted_outside() -> None:
    from resnet.training.plots import confusion_figure

    inside = torch.tensor([[3, 1], [0, 2]])
    axes = confusion_figure(inside, ["cat", "dog"]).axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["cat", "dog"]
    # A 3-class model evaluated on 2 class folders: predictions of the third class go to "other".
    outside = torch.tensor([[3, 0, 1], [0, 2, 0], [0, 0, 0]])
    axes = confusion_figure(outside, ["cat", "dog", "cow"]).axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["cat", "dog", "other"]
