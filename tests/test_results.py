"""``classify --output``: results streamed to a Parquet dataset in whole parts, resumed after a kill; the engine's
stream and the in-order printing of a torchrun job, a chunk at a time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# The fixtures photos and torch_home (a folder of photos and damaged files, a hub cache with stand-in weights) are
# conftest's.
from batch_support import DAMAGED, assert_same_result, dataset_rows, json_rows, run_classify
from support import REPO_ROOT

pa = pytest.importorskip("pyarrow")





@pytest.fixture(scope="module")
def reference(photos, torch_home) -> dict[str, dict]:
    """What the single-process command prints with --json for the folder and a missing file, by input."""
    result = run_classify(str(photos), str(photos / "missing.jpg"), "--json", "--quiet", "--device", "cpu",
                          env={"TORCH_HOME": str(torch_home)})
    assert result.returncode == 1, result.stderr  # the damaged files and the missing one
    rows = json_rows(result.stdout)
    assert len(rows) == 44 and sum("error" in row for row in rows.values()) == len(DAMAGED) + 1
    return rows


# --------------------------------------------------------------------------- the writer


def outcome(name: str, error=None):
    from resnet.predict.engine import Outcome

    return Outcome(name, error=error) if error else Outcome(name, top=[(3, "three", 0.5), (1, "one", 0.25)])


def test_writer_writes_whole_parts_of_part_rows_and_reads_back(tmp_path) -> None:
    from resnet.predict.results import ResultWriter, read_done, read_results, schema

    with ResultWriter(str(tmp_path / "out"), part_rows=3) as writer:
        for i in range(7):
            writer.add(outcome(f"img{i}.jpg", error="img3.jpg: broken" if i == 3 else None))
        assert len(writer.parts) == 2  # 6 rows written, 1 held
    assert writer.rows_written == 7 and writer.failed == 1 and len(writer.parts) == 3
    files = sorted(os.listdir(tmp_path / "out"))
    assert len(files) == 3 and all(name.startswith("part-") and name.endswith("-r00000-00000%d.parquet" % i)
                                   for i, name in enumerate(files))
    table = read_results(str(tmp_path / "out"))
    assert table.schema.equals(schema())
    rows = table.to_pylist()
    assert [row["input"] for row in rows] == [f"img{i}.jpg" for i in range(7)]
    assert rows[0]["top_index"] == [3, 1] and rows[0]["top_class"] == ["three", "one"]
    assert rows[0]["top_probability"] == [0.5, 0.25] and rows[0]["error"] is None
    assert rows[3]["error"] == "img3.jpg: broken" and rows[3]["top_index"] == []
    assert read_done(str(tmp_path / "out")) == {f"img{i}.jpg": i == 3 for i in range(7)}


def test_a_part_that_fails_to_write_leaves_nothing_and_the_rest_stays(tmp_path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from resnet.predict.results import ResultsError, ResultWriter, read_done

    writer = ResultWriter(str(tmp_path / "out"), part_rows=2)
    for i in range(2):
        writer.add(outcome(f"a{i}.jpg"))
    real = pq.write_table

    def half_then_fail(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    writer.add(outcome("b0.jpg"))
    with pytest.raises(ResultsError, match="No space left"):
        writer.add(outcome("b1.jpg"))
    monkeypatch.setattr(pq, "write_table", real)
    assert len(os.listdir(tmp_path / "out")) == 1  # the first part; no trace of the failed one
    assert read_done(str(tmp_path / "out")) == {"a0.jpg": False, "a1.jpg": False}


def test_temporary_parts_of_killed_writers_are_swept_and_never_read(tmp_path) -> None:
    from resnet.io.atomic import staging_name
    from resnet.predict.results import ResultWriter, read_done

    folder = tmp_path / "out"
    folder.mkdir()
    target = "part-20260101T000000-abcdef-r00000-000000.parquet"
    mine = staging_name(target, "partial", ".parquet")  # this process: alive, kept
    dead = mine.replace(f"-{os.getpid():010d}-", "-0999999999-")  # no such process: swept
    for name in (mine, dead):
        (folder / name).write_bytes(b"PAR1 partial")
    assert read_done(str(folder)) == {}  # hidden: never read as results
    ResultWriter(str(folder)).close()
    assert sorted(os.listdir(folder)) == [mine]


def test_a_location_that_is_a_file_is_refused(tmp_path) -> None:
    from resnet.predict.results import ResultsError, ResultWriter

    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="is a file"):
        ResultWriter(str(tmp_path / "file"))


# --------------------------------------------------------------------------- the engine and the gathering


def test_the_stream_yields_in_input_order_batch_by_batch(tmp_path) -> None:
    """Failures and a repeated input keep their places; the first results come while most inputs are unread."""
    from resnet.predict.engine import classify_stream
    from support import PHOTOS

    class Mean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)

    inputs = [str(PHOTOS[i % 4]) for i in range(30)]
    inputs[5] = inputs[6] = str(tmp_path / "missing.jpg")
    inputs[9] = inputs[8]
    read = []

    def lazily():
        for uri in inputs:
            read.append(uri)
            yield uri

    stream = classify_stream(lazily(), Mean(), ["bright", "dark"], top_k=1, batch_size=2, device=torch.device("cpu"),
                             workers=2)
    first = next(stream)
    assert first.input == inputs[0] and len(read) <= 8  # this batch, the next, and a few in flight
    rest = list(stream)
    assert [o.input for o in [first, *rest]] == inputs
    assert [o.error is not None for o in [first, *rest]] == [i in (5, 6) for i in range(30)]


class Gatherer:
    """Stands in for rank 0 of a job: each exchange takes the next ``len(value)`` results of every other rank."""

    def __init__(self, world: int, shares: list[list]) -> None:
        self.rank, self.world, self.shares, self.sizes = 0, world, [iter(s) for s in shares], []

    def gather_objects(self, value: list) -> list[list]:
        import itertools

        self.sizes.append(len(value))
        return [value] + [list(itertools.islice(share, len(value) or 1)) for share in self.shares]


@pytest.mark.parametrize("total", [1, 7, 12, 13, 50])
def test_ranks_results_come_out_in_input_order_a_chunk_at_a_time(total) -> None:
    from resnet.cli.classify import _in_order

    world, chunk = 3, 4
    inputs = list(range(total))
    processes = Gatherer(world, [inputs[r::world] for r in range(1, world)])
    printed = list(_in_order(inputs[0::world], processes, total, chunk=chunk))
    assert printed == inputs
    assert all(size <= chunk for size in processes.sizes)
    assert len(processes.sizes) == -(-(-(-total // world)) // chunk)  # every rank takes part in each exchange


# --------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_output_rows_match_the_printed_results_and_a_rerun_adds_nothing(photos, reference, torch_home,
                                                                       tmp_path) -> None:
    out = tmp_path / "results"
    env = {"TORCH_HOME": str(torch_home)}
    args = [str(photos), str(photos / "missing.jpg"), "--output", str(out), "--quiet", "--device", "cpu"]
    first = run_classify(*args, "--part-rows", "16", env=env)
    assert first.returncode == 1, first.stderr
    assert first.stdout == ""
    assert "44 results written" in first.stderr and "4 of 44 inputs failed" in first.stderr
    rows = dataset_rows(str(out))
    assert len(rows) == 44 and len(os.listdir(out)) == 3
    for row in rows:
        assert_same_result(row, reference[row["input"]])
    again = run_classify(*args, env=env)
    assert again.returncode == 1 and "0 results written" in again.stderr and "44 of 44" in again.stderr
    assert len(dataset_rows(str(out))) == 44


@pytest.mark.slow
def test_resume_after_the_process_is_killed(photos, reference, torch_home, tmp_path) -> None:
    """SIGKILL mid-run leaves whole parts only; the rerun classifies what is missing; every input once."""
    out = tmp_path / "results"
    args = [sys.executable, "-m", "resnet", "classify", str(photos), str(photos / "missing.jpg"), "--output",
            str(out), "--part-rows", "4", "--batch-size", "2", "--quiet", "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TORCH_HOME=str(torch_home))
    process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if len([n for n in os.listdir(out) if n.startswith("part-")] if out.exists() else []) >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    before = dataset_rows(str(out))
    assert 8 <= len(before) < 44 and len(before) % 4 == 0  # whole parts only
    rerun = run_classify(*args[4:], env={"TORCH_HOME": str(torch_home)})
    assert rerun.returncode == 1, rerun.stderr
    assert f"{44 - len(before)} results written" in rerun.stderr, rerun.stderr
    assert f"({len(before)} of 44 inputs were there already)" in rerun.stderr
    rows = dataset_rows(str(out))
    assert sorted(row["input"] for row in rows) == sorted(reference)  # each input exactly once
    for row in rows:
        assert_same_result(row, reference[row["input"]])


@pytest.mark.parametrize("argv, fragment", [
    (["--engine", "ray"], "add --output DIR"),
    (["--output", "OUT", "--json"], "--json show results that --output writes"),
    (["--ray-address", "auto"], "--ray-address apply to --engine ray"),
    (["--engine", "ray", "--output", "OUT", "--distributed"], "pick one"),
    (["s3://bucket/cat.jpg"], "are read by --engine ray"),
])
def test_options_that_do_not_go_together_are_refused_before_any_work(argv, fragment, capsys, monkeypatch,
                                                                       tmp_path) -> None:
    from resnet.__main__ import main
    from resnet.cli import classify

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(classify, "load_model", lambda *a, **k: pytest.fail("the model loader was reached"))
    inputs = [] if argv[0].startswith("s3://") else [str(REPO_ROOT / "examples" / "images")]
    assert main(["classify", *inputs, *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.startswith("error: "), err


def test_without_pyarrow_the_message_says_what_to_install(capsys, monkeypatch, tmp_path) -> None:
    from resnet.__main__ import main

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["classify", str(REPO_ROOT / "examples" / "images"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs pyarrow" in err and "pip install -r requirements-ray.txt" in err, err
    assert not (tmp_path / "o").exists()


def test_without_ray_the_message_says_what_to_install(capsys, monkeypatch, tmp_path) -> None:
    from resnet.__main__ import main

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "resnet.predict.ray_data", raising=False)
    import resnet.predict

    # An earlier import leaves the submodule as the package's attribute, which `from resnet.predict import
    # ray_data` would return without importing it again.
    monkeypatch.delattr(resnet.predict, "ray_data", raising=False)
    assert main(["classify", str(REPO_ROOT / "examples" / "images"), "--engine", "ray",
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs Ray Data" in err and "pip install -r requirements-ray.txt" in err, err


@pytest.mark.slow
def test_two_ranks_write_their_own_parts(photos, reference, torch_home, tmp_path) -> None:
    """torchrun --distributed --output: each rank its own part files, no gathering; every input once."""
    from support import skip_unless_torchrun_exits_cleanly
    from test_distributed import free_port

    skip_unless_torchrun_exits_cleanly()
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TORCH_HOME=str(torch_home), OMP_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="lo")
    job = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "resnet", "classify", str(photos),
         str(photos / "missing.jpg"), "--output", str(out), "--part-rows", "8", "--quiet", "--device", "cpu",
         "--distributed"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert job.returncode != 0 and "44 results written" in job.stderr, job.stderr
    tags = {name.split("-")[3] for name in os.listdir(out)}
    assert tags == {"r00000", "r00001"}
    rows = dataset_rows(str(out))
    assert sorted(row["input"] for row in rows) == sorted(reference)
    for row in rows:
        assert_same_result(row, reference[row["input"]])
    shutil.rmtree(out)
