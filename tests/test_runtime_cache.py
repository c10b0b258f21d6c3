"""ONNX Runtime and OpenVINO keep what they make of a file between runs (``load_onnx_model(cache_dir=...)``):
the optimized graph / compiled blob is reused by the next load, gives the same logits as a fresh one, and is
made again when the file changes. Expected logits come from the runtime without a cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import REPO_ROOT  # noqa: E402
from test_runtimes import RUNTIMES, _with_external_weights, tiny_classifier  # noqa: E402

from resnet.deploy import runtimes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*has no export metadata of this repository")
from resnet.deploy.runtimes import CACHE_RECORD_NAME, ORT_OPTIMIZED_NAME, default_cache_dir, load_onnx_model  # noqa: E402


def batch() -> torch.Tensor:
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_second_load_reuses_the_optimized_model_with_the_same_logits(tmp_path: Path, runtime: str) -> None:
    path = tiny_classifier(tmp_path / "tiny.onnx")
    cache = tmp_path / "cache"
    plain = load_onnx_model(path, runtime, cache_dir=False)
    assert plain.cache is None
    first = load_onnx_model(path, runtime, cache_dir=cache)
    assert first.cache is not None and first.cache.parent == cache
    made = sorted(p.name for p in first.cache.iterdir())
    assert CACHE_RECORD_NAME in made and len(made) >= 2, made  # the record and what the runtime wrote
    if runtime == "onnxruntime":
        assert ORT_OPTIMIZED_NAME in made
    stamps = {p.name: p.stat().st_mtime_ns for p in first.cache.iterdir()}
    second = load_onnx_model(path, runtime, cache_dir=cache)
    assert second.cache == first.cache
    assert {p.name: p.stat().st_mtime_ns for p in second.cache.iterdir()} == stamps, "reused, nothing rewritten"
    x = batch()
    assert torch.allclose(second(x), plain(x), rtol=1e-5, atol=1e-5)
    assert torch.allclose(first(x), plain(x), rtol=1e-5, atol=1e-5)


def test_onnx_runtime_loads_the_cached_graph_without_optimising_it_again(tmp_path: Path, monkeypatch) -> None:
    import onnxruntime

    path = tiny_classifier(tmp_path / "tiny.onnx")
    load_onnx_model(path, cache_dir=tmp_path / "cache")
    opened: list[tuple[str, object]] = []
    real = onnxruntime.InferenceSession

    def session(model, options=None, **kwargs):
        opened.append((Path(model).name, options.graph_optimization_level))
        return real(model, options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    load_onnx_model(path, cache_dir=tmp_path / "cache")
    assert opened == [(ORT_OPTIMIZED_NAME, onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)]


def test_a_changed_file_empties_its_folder_and_a_touched_one_keeps_it(tmp_path: Path) -> None:
    path = tiny_classifier(tmp_path / "tiny.onnx", classes=10)
    cache = tmp_path / "cache"
    folder = load_onnx_model(path, cache_dir=cache).cache
    optimized = folder / ORT_OPTIMIZED_NAME
    before = optimized.stat().st_mtime_ns
    # The same bytes, a new modification time: hashed, found the same, kept.
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_onnx_model(path, cache_dir=cache).cache == folder
    assert optimized.stat().st_mtime_ns == before
    record = json.loads((folder / CACHE_RECORD_NAME).read_text())
    assert record["mtime_ns"] == path.stat().st_mtime_ns
    # Another model under the same name: the old graph is not used (it has 10 classes, this one 7).
    tiny_classifier(path, classes=7)
    model = load_onnx_model(path, cache_dir=cache)
    assert model.cache == folder
    assert model(batch()).shape == (3, 7)
    assert json.loads((folder / CACHE_RECORD_NAME).read_text())["sha256"] != record["sha256"]


def test_a_damaged_cached_graph_is_made_again(tmp_path: Path) -> None:
    path = tiny_classifier(tmp_path / "tiny.onnx")
    folder = load_onnx_model(path, cache_dir=tmp_path / "cache").cache
    (folder / ORT_OPTIMIZED_NAME).write_bytes(b"not onnx")
    model = load_onnx_model(path, cache_dir=tmp_path / "cache")
    expected = load_onnx_model(path, cache_dir=False)(batch())
    assert torch.allclose(model(batch()), expected, rtol=1e-5, atol=1e-5)
    assert (folder / ORT_OPTIMIZED_NAME).read_bytes()[:8] != b"not onnx"


def test_an_unwritable_cache_runs_without_one(tmp_path: Path) -> None:
    path = tiny_classifier(tmp_path / "tiny.onnx")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model = load_onnx_model(path, cache_dir=blocker / "cache")
    assert model.cache is None
    assert model(batch()).shape == (3, 10)


def test_external_data_is_not_cached_and_the_default_is_in_the_hub_folder(tmp_path: Path) -> None:
    path = _with_external_weights(tmp_path / "ext", "w.bin")
    assert load_onnx_model(path, cache_dir=tmp_path / "cache").cache is None
    assert default_cache_dir() == Path(torch.hub.get_dir()) / "nvidia_convnets_runtimes"
    folder = load_onnx_model(tiny_classifier(tmp_path / "tiny.onnx")).cache
    assert folder is not None and folder.parent == default_cache_dir()


def test_settings_and_runtime_versions_get_folders_of_their_own(tmp_path: Path, monkeypatch) -> None:
    path = tiny_classifier(tmp_path / "tiny.onnx")
    cache = tmp_path / "cache"
    one = load_onnx_model(path, threads=1, cache_dir=cache).cache
    two = load_onnx_model(path, threads=2, cache_dir=cache).cache
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")
    other_version = load_onnx_model(path, threads=1, cache_dir=cache).cache
    assert len({one, two, other_version}) == 3
    assert np.isfinite(load_onnx_model(path, cache_dir=cache)(batch()).numpy()).all()
    assert runtimes.runtime_cache_folder(tmp_path / "missing.onnx", cache, {}) is None


@pytest.mark.slow  # a fresh process that imports torch and OpenVINO
def test_ctrl_c_after_an_openvino_cache_stops_the_process_cleanly(tmp_path: Path) -> None:
    """OpenVINO's compile of a file with a CACHE_DIR left the thread an alternate signal stack that it freed
    afterwards, so the next Ctrl+C was a segmentation fault (it took down a whole test run); the loader gives the
    thread its own stack back."""
    path = tiny_classifier(tmp_path / "tiny.onnx")
    code = (
        "import gc, signal, sys\n"
        "from resnet.deploy.runtimes import load_onnx_model\n"
        f"model = load_onnx_model({str(path)!r}, 'openvino', cache_dir={str(tmp_path / 'cache')!r})\n"
        f"model = load_onnx_model({str(path)!r}, 'openvino', cache_dir={str(tmp_path / 'cache')!r})\n"
        "del model\n"
        "gc.collect()\n"
        "try:\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped by Ctrl+C')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "stopped by Ctrl+C", (done.returncode, done.stderr[-2000:])
