"""Bad input on the weights path: clear errors, bounded waits, no random weights, no poisoned cache."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import os
import pickle
import re
import shutil
import threading
import time
import warnings
from collections import OrderedDict

import pytest
import torch

import resnet
import resnet.weights.cache
import resnet.weights.reading
from resnet import (
    CHECKPOINTS,
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    WeightsDownloadError,
)
from support import REPO_ROOT, Route, free_port, load_expected, parity_input, standin_state_dict

FILE = "nvidia_resnet50_200821.pth.tar"


def hub_load(entry: str, **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(REPO_ROOT), entry, source="local", **kwargs)


def cache_listing(hub_dir) -> list[str]:
    folder = hub_dir / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_missing_file_is_file_not_found_naming_it(tmp_path) -> None:
    missing = tmp_path / "no-such-weights.pth"
    with pytest.raises(FileNotFoundError, match="no-such-weights.pth"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=str(missing))
    with pytest.raises(FileNotFoundError, match="directory"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=str(tmp_path))


@pytest.mark.slow
def test_wrong_architecture_names_file_keys_and_the_right_entrypoint(ngc_file) -> None:
    path = ngc_file("resnext101-32x4d")
    with pytest.raises(CheckpointMismatchError) as info:
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    message = str(info.value)
    assert str(path) in message
    assert "does not fit resnet50" in message
    assert "wrong shape: layer1.0.conv1.weight: file [128, 64, 1, 1], model [64, 64, 1, 1]" in message
    assert "unexpected: layer3.6." in message
    assert "nvidia_resnext101_32x4d" in message


@pytest.mark.slow
def test_se_checkpoint_into_plain_resnext_lists_unexpected_squeeze_keys(ngc_file) -> None:
    with pytest.raises(CheckpointMismatchError, match=r"unexpected: layer1\.0\.squeeze\.squeeze\.weight") as info:
        hub_load("nvidia_resnext101_32x4d", pretrained=False, pretrained_from_file=ngc_file("se-resnext101-32x4d"))
    assert "nvidia_se_resnext101_32x4d" in str(info.value)


@pytest.mark.slow
def test_wrong_head_size_suggests_num_classes(tmp_path) -> None:
    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:7].clone(), state["fc.bias"][:7].clone()
    path = tmp_path / "seven.pth"
    torch.save(state, path)
    # Without num_classes the file's 7 classes are used; an explicit 1000 that does not fit says what does.
    with pytest.raises(CheckpointMismatchError, match="num_classes=7"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path, num_classes=1000)


def test_not_a_state_dict_is_refused(tmp_path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointMismatchError, match="list.pth.*state dict"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)


def test_pretrained_together_with_file_is_an_error(ngc_file) -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        hub_load("nvidia_resnet50", pretrained=True, pretrained_from_file=ngc_file("resnet50"))


def test_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="pretrainedd"):
        hub_load("nvidia_resnet50", pretrainedd=False)


def test_unsafe_pickle_is_refused_without_running_it(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "extra": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    assert str(path) in str(info.value) and "posix.system" in str(info.value)
    assert not marker.exists()


@pytest.mark.skipif(not hasattr(torch.serialization, "safe_globals"),
                    reason="this torch has no torch.serialization.safe_globals (torch 2.5) to allow numpy scalars; "
                           "test_torch_without_safe_globals_loads_the_cache_and_keeps_it checks the refusal")
@pytest.mark.slow
def test_training_checkpoint_with_numpy_scalar_metadata_loads(tmp_path) -> None:
    import numpy as np

    checkpoint = {"epoch": 250, "best_prec1": np.float64(78.6), "state_dict": standin_state_dict("resnet50")}
    path = tmp_path / "train.pth"
    torch.save(checkpoint, path)
    model = hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path).eval()
    with torch.no_grad():
        assert (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4


def test_torch_load_s_typed_storage_warning_is_silenced_and_no_other(ngc_file, monkeypatch) -> None:
    """torch 2.1's torch.load warns "TypedStorage is deprecated" about itself: that warning never reaches the user
    (the CLI's one-line errors); any other warning still does. The old torch is faked here."""
    real, path = torch.load, ngc_file("resnet50")

    def load_of_torch_2_1(*args, **kwargs):
        warnings.warn("TypedStorage is deprecated. It will be removed in the future and UntypedStorage will be the "
                      "only storage class.", UserWarning, stacklevel=2)
        warnings.warn("some other warning", UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load_of_torch_2_1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = resnet.weights.reading.read_checkpoint(path)
    assert "fc.weight" in state
    assert [str(w.message) for w in caught] == ["some other warning"]


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint\n"], ids=["empty", "text"])
def test_unreadable_local_file_is_reported_and_kept(tmp_path, content) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match="bad.pth"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    assert path.exists()  # a user's own file is never deleted


@pytest.mark.slow
def test_truncated_download_leaves_nothing_and_next_call_succeeds(server, hub_dir, ngc_file) -> None:
    body = ngc_file("resnet50").read_bytes()
    server.routes[f"/w/{FILE}"] = Route(body, truncate_to=len(body) // 2)
    with pytest.raises(WeightsDownloadError, match="cut short|failed") as info:
        hub_load("nvidia_resnet50", mirror=server.url("/w"), progress=False)
    assert server.url(f"/w/{FILE}") in str(info.value)
    assert "pretrained_from_file" in str(info.value)  # says what to do offline
    assert cache_listing(hub_dir) == []
    server.routes[f"/w/{FILE}"] = Route(body)
    hub_load("nvidia_resnet50", mirror=server.url("/w"), progress=False)
    assert cache_listing(hub_dir) == [FILE, FILE + ".sha256"]
    assert (hub_dir / "checkpoints" / (FILE + ".sha256")).read_text() == f"{hashlib.sha256(body).hexdigest()}  {FILE}\n"


@pytest.mark.slow
def test_corrupt_download_is_removed_from_cache_and_redownloaded(server, hub_dir, ngc_file) -> None:
    body = ngc_file("resnet50").read_bytes()
    # A server that sends half a file with a matching Content-Length: the download "succeeds".
    server.routes[f"/w/{FILE}"] = Route(body[: len(body) // 2])
    with pytest.raises(CorruptCheckpointError) as info:
        hub_load("nvidia_resnet50", mirror=server.url("/w"), progress=False)
    cached = hub_dir / "checkpoints" / FILE
    assert str(cached) in str(info.value) and "removed" in str(info.value)
    assert cache_listing(hub_dir) == []
    server.routes[f"/w/{FILE}"] = Route(body)
    model = hub_load("nvidia_resnet50", mirror=server.url("/w"), progress=False).eval()
    with torch.no_grad():
        assert (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4


def test_corrupt_file_dropped_into_cache_is_removed(hub_dir, ngc_file) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    data = ngc_file("resnet50").read_bytes()
    (hub_dir / "checkpoints" / FILE).write_bytes(data[:1000])
    with pytest.raises(CorruptCheckpointError, match="run the same call again"):
        hub_load("nvidia_resnet50")
    assert cache_listing(hub_dir) == []


def seed_cache(hub_dir, ngc_file):
    """The stand-in NGC file in the torch hub cache, as a finished download leaves it."""
    (hub_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    cached = hub_dir / "checkpoints" / FILE
    shutil.copyfile(ngc_file("resnet50"), cached)
    return cached


@pytest.mark.parametrize(
    "error",
    [AttributeError("module 'torch.serialization' has no attribute 'x'"), ImportError("no module named x"),
     MemoryError(), PermissionError(13, "Permission denied"), TypeError("load() got an unexpected keyword")],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.slow
def test_environment_errors_never_delete_the_cached_download(hub_dir, ngc_file, monkeypatch, error) -> None:
    """Only a damaged file counts as corruption: an error of this torch / machine keeps the 98 MB download."""
    cached = seed_cache(hub_dir, ngc_file)
    before = cached.read_bytes()

    def failing_load(*args, **kwargs):
        raise error

    with monkeypatch.context() as patch:
        patch.setattr(torch, "load", failing_load)
        with pytest.raises(type(error)):
            hub_load("nvidia_resnet50")
    assert cached.read_bytes() == before
    # The same file loads once the environment is fixed.
    model = hub_load("nvidia_resnet50").eval()
    with torch.no_grad():
        assert (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4


@pytest.mark.slow
def test_torch_without_safe_globals_loads_the_cache_and_keeps_it(hub_dir, ngc_file, tmp_path, monkeypatch) -> None:
    """torch 2.1-2.4 have no torch.serialization.safe_globals: the NGC file loads, nothing is deleted."""
    import numpy as np

    monkeypatch.delattr(torch.serialization, "safe_globals", raising=False)
    cached = seed_cache(hub_dir, ngc_file)
    model = hub_load("nvidia_resnet50").eval()
    with torch.no_grad():
        assert (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4
    assert cached.exists()
    # Without the allowlist, numpy scalars in a user's training checkpoint are refused, never "corrupt".
    path = tmp_path / "train.pth"
    torch.save({"epoch": 1, "best_prec1": np.float64(78.6), "state_dict": standin_state_dict("resnet50")}, path)
    with pytest.raises(UnsafeCheckpointError, match="train.pth") as info:
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    assert "numpy" in str(info.value) and "torch 2.5 and later load the numpy scalars" in str(info.value)
    assert "Re-running" not in str(info.value)  # torch's advice to drop weights_only is not passed on
    assert path.exists()


@pytest.mark.parametrize("from_env", [False, True], ids=["mirror_argument", "mirror_variable"])
@pytest.mark.parametrize("status", [404, 500])
@pytest.mark.slow
def test_http_error_from_a_mirror_is_clear(server, hub_dir, monkeypatch, status, from_env) -> None:
    """The message names the URL and the status, says what the mirror lacks, and never suggests
    setting the mirror variable (the mirror is already set)."""
    server.routes[f"/w/{FILE}"] = Route(b"nope", status=status, content_type="text/plain")
    if from_env:
        monkeypatch.setenv("CONVNETS_WEIGHTS_MIRROR", server.url("/w"))
    with pytest.raises(WeightsDownloadError, match=f"HTTP {status}") as info:
        hub_load("nvidia_resnet50", progress=False, **({} if from_env else {"mirror": server.url("/w")}))
    message = str(info.value)
    assert f"/w/{FILE}" in message and f"mirror {server.url('/w')}" in message
    assert "CONVNETS_WEIGHTS_MIRROR=" not in message and "mirror=URL" not in message
    assert ("does not have " + FILE in message) == (status == 404)
    assert ("(set by CONVNETS_WEIGHTS_MIRROR)" in message) == from_env
    assert "unset CONVNETS_WEIGHTS_MIRROR" in message if from_env else "leave out mirror=" in message
    assert "pretrained=False, pretrained_from_file=PATH" in message
    assert cache_listing(hub_dir) == []


def test_unreachable_mirror_fails_at_once_without_waiting_for_a_timeout(hub_dir, monkeypatch) -> None:
    # With timeouts far above the bound below, passing it means no timeout was waited for.
    monkeypatch.setattr(resnet.weights.cache, "CONNECT_TIMEOUT", 600.0)
    monkeypatch.setattr(resnet.weights.cache, "READ_TIMEOUT", 600.0)
    port = free_port()
    start = time.monotonic()
    with pytest.raises(WeightsDownloadError, match=f"127.0.0.1:{port}") as info:
        hub_load("nvidia_resnet50", mirror=f"http://127.0.0.1:{port}/w", progress=False)
    assert time.monotonic() - start < 120
    assert "Connection refused" in str(info.value)
    assert cache_listing(hub_dir) == []


@pytest.mark.slow
def test_server_that_never_answers_times_out(server, hub_dir, monkeypatch) -> None:
    monkeypatch.setattr(resnet.weights.cache, "READ_TIMEOUT", 0.5)
    answered = threading.Event()
    release = threading.Event()

    def late() -> Route:
        release.wait(120)  # answers only when the test is over (or after 120 s, to fail the test)
        answered.set()
        return Route(b"late")

    server.routes[f"/w/{FILE}"] = late
    try:
        with pytest.raises(WeightsDownloadError, match=r"timed out: the server did not answer within 0.5 s \(read"):
            hub_load("nvidia_resnet50", mirror=server.url("/w"), progress=False)
        assert not answered.is_set()
    finally:
        release.set()
    assert cache_listing(hub_dir) == []


@pytest.mark.slow
def test_wrong_file_in_cache_is_reported_not_deleted(hub_dir, ngc_file) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(ngc_file("resnext101-32x4d"), hub_dir / "checkpoints" / FILE)
    with pytest.raises(CheckpointMismatchError, match=FILE):
        hub_load("nvidia_resnet50")
    assert cache_listing(hub_dir) == [FILE]


def test_no_weights_and_no_network_never_returns_random_weights(hub_dir) -> None:
    port = free_port()
    with pytest.raises(WeightsDownloadError) as info:
        hub_load("nvidia_resnet50", mirror=f"http://127.0.0.1:{port}", progress=False)
    message = str(info.value)
    assert str(hub_dir / "checkpoints" / FILE) in message and "pretrained_from_file" in message


@pytest.mark.slow
def test_partial_entry_ordering_is_irrelevant(tmp_path) -> None:
    shuffled = OrderedDict(reversed(list(standin_state_dict("resnet50").items())))
    path = tmp_path / "reversed.pth"
    torch.save(shuffled, path)
    model = hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path).eval()
    with torch.no_grad():
        assert (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4


# --------------------------------------------------------------------------- dtypes and values of the weights

KEY = "layer2.1.conv2.weight"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.slow
def test_floating_weights_of_other_dtypes_load_as_float32_with_integer_counters(tmp_path, dtype) -> None:
    """A blanket ``.to(dtype)`` also casts num_batches_tracked; it comes back an int64 counter."""
    state = standin_state_dict("resnet50")
    for key in state:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(250)
    converted = OrderedDict((k, v.to(dtype)) for k, v in state.items())
    path = tmp_path / f"{dtype}.pth"
    torch.save(converted, path)
    model = hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    loaded = model.state_dict()
    assert {k for k in loaded if loaded[k].dtype == torch.int64} == {k for k in state if "num_batches" in k}
    for key, value in loaded.items():
        if key.endswith("num_batches_tracked"):
            assert value.item() == 250
        else:
            assert value.dtype == torch.float32 and torch.equal(value, converted[key].float()), key


@pytest.mark.parametrize(
    "make, kind",
    [(lambda v: v.to(torch.int32), "a torch.int32 tensor where the model has torch.float32 weights"),
     (lambda v: v > 0, "a torch.bool tensor"),
     (lambda v: v.to(torch.complex64), "a complex tensor"),
     (lambda v: v.to_sparse(), "a sparse tensor"),
     (lambda v: torch.quantize_per_tensor(v, 0.01, 0, torch.qint8), "a quantized tensor")],
    ids=["int32", "bool", "complex", "sparse", "quantized"],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's notes on loading sparse and quantized tensors
@pytest.mark.slow
def test_weights_that_are_not_real_floating_point_are_refused_at_load(tmp_path, make, kind) -> None:
    state = standin_state_dict("resnet50")
    state[KEY] = make(state[KEY])
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    if not weights_only_reads(make(torch.ones(2))):  # torch 2.1-2.3's weights_only refuses quantized tensors
        with pytest.raises(UnsafeCheckpointError, match=re.escape(repr(str(path)))):
            hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
        return
    with pytest.raises(CheckpointMismatchError) as info:
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    assert f"{str(path)!r}: entry {KEY!r} is {kind}" in str(info.value)


def weights_only_reads(tensor: torch.Tensor) -> bool:
    """Whether this torch's ``torch.load(weights_only=True)`` reads a file holding ``tensor``."""
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError:
        return False
    return True


@pytest.mark.slow
def test_bool_counter_is_refused() -> None:
    state = standin_state_dict("resnet50")
    state["bn1.num_batches_tracked"] = torch.tensor(True)
    with pytest.raises(CheckpointMismatchError, match="'bn1.num_batches_tracked' is a torch.bool tensor"):
        resnet.weights.reading.fit_state_dict(state, resnet.ResNet("resnet50").state_dict(), "file", "resnet50")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.slow
def test_non_finite_weights_are_refused_naming_the_entry(tmp_path, bad) -> None:
    state = standin_state_dict("resnet50")
    state[KEY][3, 1, 0, 2] = bad
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=rf"entry {KEY!r} holds 1 NaN or infinite values \(of 147,456\)"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)


@pytest.mark.slow
def test_finite_weights_whose_sum_overflows_are_accepted() -> None:
    state = standin_state_dict("resnet50")
    state[KEY].fill_(3e38)  # each value finite, their float32 sum is not
    fitted = resnet.weights.reading.fit_state_dict(state, resnet.ResNet("resnet50").state_dict(), "file", "resnet50")
    assert torch.equal(fitted[KEY], state[KEY])


@pytest.mark.slow
def test_float64_weights_beyond_float32_range_are_refused(tmp_path) -> None:
    state = standin_state_dict("resnet50")
    state = OrderedDict((k, v.double() if v.is_floating_point() else v) for k, v in state.items())
    state["fc.bias"][7] = 1e300
    path = tmp_path / "huge.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="entry 'fc.bias' holds 1 NaN or infinite"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)


@pytest.mark.slow
def test_nan_counter_in_a_float16_file_is_refused(tmp_path) -> None:
    state = OrderedDict((k, v.half()) for k, v in standin_state_dict("resnet50").items())
    state["layer1.0.bn1.num_batches_tracked"] = torch.tensor(float("nan"), dtype=torch.float16)
    path = tmp_path / "half.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="'layer1.0.bn1.num_batches_tracked' holds 1 NaN"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "damage", [lambda data: b"<html><body>503 Service Unavailable</body></html>", lambda data: data[: len(data) // 2]],
    ids=["error_page", "half_file"],
)
def test_corrupt_cache_message_is_whole_and_never_advises_weights_only_false(hub_dir, ngc_file, damage) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / FILE).write_bytes(damage(ngc_file("resnet50").read_bytes()))
    with pytest.raises(CorruptCheckpointError) as info:
        hub_load("nvidia_resnet50")
    message = str(info.value)
    for torch_advice in ("weights_only", "file an issue", "https://", "Re-running"):
        assert torch_advice not in message
    # torch's reason, in whole sentences, inside the parentheses; then ours.
    assert re.search(r"not a checkpoint at all \((UnpicklingError|RuntimeError|BadZipFile): [^()]+[.\w]\)\. "
                     r"The damaged file was removed from the cache; run the same call again to download it afresh\.$",
                     message), message


def test_unknown_keyword_lists_every_accepted_name_and_hints_at_the_right_one() -> None:
    import resnet.hub

    accepted = list(inspect.signature(resnet.hub.nvidia_resnet50).parameters)
    with pytest.raises(TypeError) as info:
        hub_load("nvidia_resnet50", weights="IMAGENET1K_V1")
    message = str(info.value)
    listed = message.split("it accepts ", 1)[1].split(".", 1)[0].split(", ")
    assert listed == accepted and listed[:3] == ["pretrained", "pretrained_from_file", "state_dict_key_map_fn"]
    assert "unexpected keyword argument 'weights'" in message
    assert "pass pretrained=True for NVIDIA's ImageNet weights, or pretrained=False, pretrained_from_file=PATH" \
        in message
    with pytest.raises(TypeError, match=r"'pretrainedd'.*Did you mean 'pretrained'\?"):
        hub_load("nvidia_resnet50", pretrainedd=False)


@pytest.mark.slow
def test_no_network_message_gives_advice_that_works(hub_dir, ngc_file, monkeypatch) -> None:
    """NGC unreachable and no mirror: the advice names pretrained=False with the file, and following it works."""
    ngc = CHECKPOINTS["resnet50"]
    monkeypatch.setitem(CHECKPOINTS, "resnet50", dataclasses.replace(ngc, url=f"http://127.0.0.1:{free_port()}/m/{FILE}"))
    with pytest.raises(WeightsDownloadError) as info:
        hub_load("nvidia_resnet50", progress=False)
    message = str(info.value)
    assert "Connection refused" in message and str(hub_dir / "checkpoints" / FILE) in message
    assert "pass pretrained=False, pretrained_from_file=PATH, or set CONVNETS_WEIGHTS_MIRROR=URL (or mirror=URL)" \
        in message
    cli = info.value.describe("cli")
    assert "pass --weights FILE, or pass --mirror URL (or set CONVNETS_WEIGHTS_MIRROR=URL)" in cli
    assert "pretrained" not in cli and cli.splitlines()[0] == message.splitlines()[0]
    model = hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=ngc_file("resnet50")).eval()
    with torch.no_grad():
        assert (model(parity_input("resnet50")) - load_expected("resnet50")["logits"]).abs().max() <= 1e-4


# --------------------------------------------------------------------------- truncated files of every kind


def _small_checkpoints() -> dict[str, bytes]:
    """Each kind of checkpoint this repository reads, small (about 10 KB), as torch.save writes it."""
    import numpy as np

    from resnet.training.run_files import model_file

    state = OrderedDict((f"layer{i}.weight", torch.randn(8, 16, generator=torch.Generator().manual_seed(i)))
                        for i in range(12))
    state["bn.num_batches_tracked"] = torch.tensor(5)
    kinds = {
        "ngc_flat": (state, {}),
        "training_checkpoint": ({"state_dict": state, "epoch": 90, "best_prec1": np.float64(78.6),
                                 "arch": "resnet50"}, {}),
        "model_pth": (model_file(state, arch="resnet50", classes=["cat", "dog"], image_size=128,
                                 metrics={"top1": 50.0}), {}),
        "legacy_flat": (state, {"_use_new_zipfile_serialization": False}),
        "legacy_training_checkpoint": ({"state_dict": state, "epoch": 3}, {"_use_new_zipfile_serialization": False}),
    }
    out = {}
    for name, (obj, options) in kinds.items():
        buffer = io.BytesIO()
        torch.save(obj, buffer, **options)
        out[name] = buffer.getvalue()
    return out


def _truncation_points(size: int) -> list[int]:
    # Every offset near the start (headers, pickle opcodes), near the end (zip central directory) and
    # around 4 KiB (where torch's zip reader failed with a bare OSError), and a stride through the rest.
    points = set(range(0, min(size, 128))) | set(range(max(0, size - 128), size))
    points |= set(range(4064, 4128)) | set(range(0, size, 53))
    return sorted(points)


@pytest.mark.skipif(not hasattr(torch.serialization, "safe_globals"), reason="numpy scalars need torch 2.5")
@pytest.mark.parametrize("kind", ["ngc_flat", "training_checkpoint", "model_pth", "legacy_flat",
                                  "legacy_training_checkpoint"])
@pytest.mark.slow
def test_every_truncation_of_every_checkpoint_kind_is_a_named_corrupt_checkpoint(tmp_path, kind) -> None:
    data = _small_checkpoints()[kind]
    assert len(data) > 4200
    path = tmp_path / f"cut-{kind}.pth"
    path.write_bytes(data)
    assert resnet.weights.reading.read_checkpoint(path)  # whole, it loads
    failures = []
    for size in _truncation_points(len(data)):
        path.write_bytes(data[:size])
        try:
            resnet.weights.reading.read_checkpoint(path)
            failures.append((size, "loaded"))
        except CorruptCheckpointError as error:
            if str(path) not in str(error) or "truncated" not in str(error):
                failures.append((size, str(error)))
        except Exception as error:  # a raw OSError, or a truncated name taken for an unsafe global
            failures.append((size, f"{type(error).__name__}: {error}"))
    assert failures == [], failures[:5]


def test_truncated_zip_checkpoint_is_named_by_the_hub_and_the_cli(tmp_path, ngc_file, capsys) -> None:
    from resnet.__main__ import main

    data = _small_checkpoints()["ngc_flat"]
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) - 100])  # past 4 KiB, central directory gone: was "OSError: [Errno 22]"
    with pytest.raises(CorruptCheckpointError, match="cut.pth.*is cut short"):
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    assert path.exists()  # a user's own file is kept
    assert main(["classify", str(REPO_ROOT / "examples" / "images"), "--weights", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_truncated_download_in_the_cache_is_still_removed(hub_dir, ngc_file) -> None:
    """A zip cut short is a damaged file (DAMAGED_FILE_ERRORS' rule): the cache entry goes, the next call downloads."""
    cached = seed_cache(hub_dir, ngc_file)
    cached.write_bytes(cached.read_bytes()[:-5000])
    with pytest.raises(CorruptCheckpointError, match="removed from the cache"):
        hub_load("nvidia_resnet50")
    assert cache_listing(hub_dir) == []


# --------------------------------------------------------------------------- files of another kind


@pytest.mark.slow
def test_an_onnx_file_given_as_weights_points_at_onnx(tmp_path, capsys) -> None:
    from test_runtimes import tiny_classifier

    from resnet.__main__ import main

    path = tiny_classifier(tmp_path / "model.onnx", classes=1000)
    with pytest.raises(CorruptCheckpointError) as info:
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    assert "is an ONNX model, not a PyTorch checkpoint" in str(info.value) and "truncated" not in str(info.value)
    assert "load_onnx_model" in str(info.value)
    assert main(["classify", str(REPO_ROOT / "examples" / "images"), "--weights", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "give it as --onnx FILE" in err and "pretrained" not in err, err


@pytest.mark.parametrize("kind", ["directory", "fifo", "devnull"])
def test_a_path_that_is_not_a_regular_file_is_named_for_what_it_is(tmp_path, kind, capsys) -> None:
    from resnet.__main__ import main

    if kind == "directory":
        path, what = tmp_path, "is a directory"
    elif kind == "fifo":
        path, what = tmp_path / "pipe", "is a named pipe (FIFO)"
        os.mkfifo(path)  # nothing writes into it: reading it would hang
    else:
        path, what = "/dev/null", "is a character device"
    with pytest.raises(FileNotFoundError) as info:
        hub_load("nvidia_resnet50", pretrained=False, pretrained_from_file=path)
    assert f"{str(path)!r} {what}, not a file" in str(info.value) and "does not exist" not in str(info.value)
    assert main(["classify", str(REPO_ROOT / "examples" / "images"), "--weights", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{what}, not a file; give the path of the checkpoint file as --weights FILE" in err, err


@pytest.mark.parametrize("given", ["model.pth", "path", 1, None], ids=["str", "pathlib", "int", "none"])
def test_a_positional_non_bool_pretrained_is_refused_with_a_hint(tmp_path, ngc_file, server, given) -> None:
    """torch.hub.load(repo, 'nvidia_resnet50', 'model.pth') passed the file as pretrained, which loaded NVIDIA's
    weights (a download here, from a mirror that would serve them)."""
    server.routes[f"/w/{FILE}"] = Route(ngc_file("resnet50").read_bytes())
    value = {"model.pth": str(tmp_path / "model.pth"), "path": tmp_path / "model.pth"}.get(given, given)
    with pytest.raises(TypeError) as info:
        torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", value, source="local", mirror=server.url("/w"),
                       progress=False)
    message = str(info.value)
    assert "pretrained must be True or False" in message
    if given in ("model.pth", "path"):
        assert f"pass pretrained=False, pretrained_from_file={str(value)!r}" in message
    assert server.hits == {}  # nothing was downloaded
