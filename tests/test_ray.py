"""``classify --engine ray`` and :class:`resnet.predict.ray_data.Classifier` on a Ray of 2 CPUs on 127.0.0.1.

One Ray cluster (``ray start --head --block``, no dashboard, no usage report) serves the module; its processes
do not see this repository on their path, so the command's shipping of the package to the workers is tested
too. Results are compared row by row with the single-process command's ``--json`` output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# The fixtures photos and torch_home (a folder of photos and damaged files, a hub cache with stand-in weights) are
# conftest's.
from batch_support import DAMAGED, assert_same_result, dataset_rows, json_rows, run_classify
from support import REPO_ROOT

pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")

#: The environment of the test cluster and its drivers: Ray's single-machine mode (its servers listen on
#: 127.0.0.1 only), no usage report, no authentication token (nothing but this machine reaches it).
CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}




@pytest.fixture(scope="module")
def reference(photos, torch_home) -> dict[str, dict]:
    """The single-process command's --json results for the folder and a missing file, by input."""
    result = run_classify(str(photos), str(photos / "missing.jpg"), "--json", "--quiet", "--device", "cpu",
                          env={"TORCH_HOME": str(torch_home), **CLUSTER_ENV})
    assert result.returncode == 1, result.stderr
    rows = json_rows(result.stdout)
    assert len(rows) == 44 and sum("error" in row for row in rows.values()) == len(DAMAGED) + 1
    return rows


HEAD = """
import sys, time, ray
ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes it
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, torch_home) -> str:
    """The address of a Ray of 2 CPUs listening on 127.0.0.1 only, kept by a process that the tests' drivers
    join as they would join any cluster; stopped (its own processes only) at the end."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(CLUSTER_ENV, TORCH_HOME=str(torch_home))
    temp = tmp_path_factory.mktemp("ray")
    head = subprocess.Popen([sys.executable, "-c", HEAD], cwd=temp, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = head.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), (address, head.poll())
        yield address
    finally:
        head.stdin.close()  # ray.shutdown() at exit stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def ray_args(photos: Path, out: Path, cluster: str, *extra: str) -> list[str]:
    return [str(photos), str(photos / "missing.jpg"), "--engine", "ray", "--ray-address", cluster,
            "--output", str(out), "--quiet", *extra]


def assert_every_input_once(out: Path, reference: dict[str, dict]) -> None:
    rows = dataset_rows(str(out))
    assert sorted(row["input"] for row in rows) == sorted(reference)
    for row in rows:
        assert_same_result(row, reference[row["input"]])


@pytest.mark.slow
def test_ray_engine_gives_the_single_process_results_row_by_row(photos, reference, cluster, torch_home,
                                                               tmp_path) -> None:
    out = tmp_path / "results"
    result = run_classify(*ray_args(photos, out, cluster, "--batch-size", "8", "--part-rows", "16"),
                          env={"TORCH_HOME": str(torch_home), **CLUSTER_ENV})
    assert result.returncode == 1, result.stderr[-3000:]  # the damaged files and the missing one
    assert "44 results written" in result.stderr and "4 of 44 inputs failed" in result.stderr
    assert_every_input_once(out, reference)
    again = run_classify(*ray_args(photos, out, cluster), env={"TORCH_HOME": str(torch_home), **CLUSTER_ENV})
    assert again.returncode == 1 and "0 results written" in again.stderr and "44 of 44" in again.stderr


def classifier_processes() -> list[int]:
    """Process ids of the Ray actors that hold a Classifier (Ray names the process after its actor)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::") and b"Classifier" in command:
                found.append(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc here: the test finds the actor's process through it")
def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(photos, reference, cluster, torch_home,
                                                            tmp_path) -> None:
    out = tmp_path / "results"
    killed: list[tuple[int, int]] = []  # (pid, parts written when it was killed)
    stop = threading.Event()

    def kill_one_actor() -> None:
        while not stop.is_set():
            parts = [n for n in os.listdir(out) if n.startswith("part-")] if out.exists() else []
            actors = classifier_processes()
            if parts and actors:
                os.kill(actors[0], signal.SIGKILL)
                killed.append((actors[0], len(parts)))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    try:
        result = run_classify(*ray_args(photos, out, cluster, "--batch-size", "2", "--part-rows", "2"),
                              env={"TORCH_HOME": str(torch_home), **CLUSTER_ENV})
    finally:
        stop.set()
        killer.join()
    assert killed, "no actor was killed"
    parts = len([n for n in os.listdir(out) if n.startswith("part-")])
    assert killed[0][1] < parts, "the actor was killed after the last part was written"
    assert result.returncode == 1, result.stderr[-3000:]
    assert_every_input_once(out, reference)


API_SCRIPT = """
import json, sys
import ray
from resnet.predict.ray_data import Classifier, start_ray

cluster, paths, damaged = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
start_ray(cluster, quiet=True)
pool = ray.data.ActorPoolStrategy(size=1)
images = ray.data.read_images(paths, include_paths=True, mode="RGB")
from_images = images.map_batches(Classifier, fn_constructor_kwargs={"top_k": 5, "threads": 1}, compute=pool,
                                 batch_size=8).take_all()
names = ray.data.from_items([{"path": p} for p in [*paths[:5], damaged]])
from_paths = names.map_batches(Classifier, fn_constructor_kwargs={"top_k": 5, "threads": 1}, concurrency=1,
                               batch_size=4).take_all()
for row in [*from_images, *from_paths]:
    print(json.dumps({key: value if isinstance(value, (str, type(None))) else [v.item() if hasattr(v, "item") else v
                      for v in value] for key, value in row.items()}))
"""


@pytest.mark.slow
def test_the_classifier_over_read_images_and_over_paths(photos, reference, cluster, torch_home) -> None:
    """The Python API, in a driver of its own: ``map_batches(Classifier, ...)`` over ``ray.data.read_images`` and
    over a dataset of paths gives the command's top classes, and an error row for a damaged file."""
    import json

    good = sorted(str(p) for p in photos.iterdir() if p.name.startswith("photo-"))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TORCH_HOME=str(torch_home), **CLUSTER_ENV)
    result = subprocess.run([sys.executable, "-c", API_SCRIPT, cluster, json.dumps(good), str(photos / DAMAGED[1])],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    from_images, from_paths = rows[:len(good)], rows[len(good):]
    assert sorted(row["path"] for row in from_images) == good
    for row in rows:
        row["input"] = row.pop("path")
        assert_same_result(row, reference[row["input"]])
    # Ray Data keeps no order across batches unless told to: the damaged file's row is found by its input.
    damaged = [row for row in from_paths if row["input"] == str(photos / DAMAGED[1])]
    assert len(from_paths) == 6 and len(damaged) == 1
    assert damaged[0]["error"] == reference[str(photos / DAMAGED[1])]["error"]


@pytest.mark.slow
def test_a_killed_driver_resumes_without_duplicates(photos, reference, cluster, torch_home, tmp_path) -> None:
    """The command killed (SIGKILL) while Ray writes: the rerun completes the dataset, every input once."""
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TORCH_HOME=str(torch_home), **CLUSTER_ENV)
    args = ray_args(photos, out, cluster, "--batch-size", "2", "--part-rows", "2")
    driver = subprocess.Popen([sys.executable, "-m", "resnet", "classify", *args], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            if out.exists() and len([n for n in os.listdir(out) if n.startswith("part-")]) >= 2:
                break
            time.sleep(0.05)
        assert driver.poll() is None, "the run ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    time.sleep(2)  # Ray ends the job's workers once its driver is gone
    before = len(dataset_rows(str(out)))
    assert 0 < before < 44
    rerun = run_classify(*args, env={"TORCH_HOME": str(torch_home), **CLUSTER_ENV})
    assert rerun.returncode == 1, rerun.stderr[-3000:]
    assert_every_input_once(out, reference)


@pytest.fixture
def s3_server(monkeypatch):
    """A moto S3 server on 127.0.0.1 with a bucket, and the environment that points pyarrow and boto3 at it."""
    server_module = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket="photos")
    try:
        yield client, env
    finally:
        server.stop()


@pytest.mark.slow
def test_s3_inputs_and_output_on_a_local_ray(photos, reference, torch_home, s3_server) -> None:
    """``s3://`` in and out (a loopback S3 server): the Ray that the command starts itself reads the photos
    from the bucket and writes the results there."""
    client, env = s3_server
    names = sorted(p.name for p in photos.iterdir())[:12]  # photos and the damaged files, to keep it short
    for name in names:
        client.upload_file(str(photos / name), "photos", f"in/{name}")
    client.put_object(Bucket="photos", Key="in/.hidden.jpg", Body=b"left out")
    result = run_classify("s3://photos/in", "s3://photos/in/missing.jpg", "--engine", "ray", "--output",
                          "s3://photos/results", "--quiet", "--batch-size", "4",
                          env={"TORCH_HOME": str(torch_home), **CLUSTER_ENV, **env}, timeout=900)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "13 results written" in result.stderr, result.stderr[-3000:]
    rows = dataset_rows("s3://photos/results")
    assert sorted(row["input"] for row in rows) == sorted([f"s3://photos/in/{n}" for n in names]
                                                          + ["s3://photos/in/missing.jpg"])
    for row in rows:
        name = row["input"].rsplit("/", 1)[1]
        expected = reference.get(str(photos / name), {"input": str(photos / name), "error": row["error"]})
        if "error" in expected:
            assert row["error"] and row["top_index"] == [], row
        else:
            assert_same_result({**row, "input": expected["input"]}, expected)


def test_a_write_task_run_again_rewrites_its_own_part(tmp_path) -> None:
    """Ray runs a write task again when its worker dies: the same task writes the same part name, so its rows
    are in the dataset once, and a second task's part is its own."""
    import types

    import pyarrow as pa

    from resnet.predict.ray_data import ResultsDatasink
    from resnet.predict.results import read_results, schema

    def block(names):
        n = len(names)
        return pa.Table.from_pydict({"input": names, "top_index": [[1]] * n, "top_class": [["one"]] * n,
                                     "top_probability": [[0.5]] * n, "error": [None] * n}, schema=schema())

    sink = ResultsDatasink(str(tmp_path / "out"), part_rows=2)
    sink.on_write_start()
    first = types.SimpleNamespace(task_idx=0)
    assert sink.write([block(["a", "b"]), block(["c"])], first) == (3, 0)
    assert sink.write([block(["a", "b"]), block(["c"])], first) == (3, 0)  # the same task, run again
    assert sink.write([block(["d"])], types.SimpleNamespace(task_idx=1)) == (1, 0)
    assert sorted(read_results(str(tmp_path / "out")).column("input").to_pylist()) == ["a", "b", "c", "d"]
    assert len(os.listdir(tmp_path / "out")) == 2
