"""``classify --engine ray`` against the plain command, and the memory of ``--output`` runs as inputs grow.

Nothing is downloaded: the stand-in NGC checkpoint (``standin.py``) goes into a temporary ``TORCH_HOME``. Every
run is a fresh ``python -m resnet classify`` process, timed from start to exit (model load and, for Ray, starting
a local Ray included); its peak resident memory is the process's own (``ru_maxrss`` of ``wait4``), and for Ray
the driver's (the workers are Ray's processes).

1. Throughput: the same folders of photos (``photos.py``: crops of the sample photos), ``--output`` to a fresh
   folder, the plain command and ``--engine ray`` (a local Ray of this machine's CPUs) taking turns, at two
   folder sizes; the time per image is the difference of the two sizes' times over the difference of their
   image counts, which leaves out what every run pays once (imports, model load, Ray's start).
2. Memory: ``--output`` runs (with ``--json-too``, also ``--json`` to /dev/null) over N and 10N tiny PNG inputs
   at ``--image-size 32`` (the model's cost per image is then smaller, and the run measures the pipeline).

    python benchmarks/ray_engine.py                     # 64 and 256 photos; 2,000 and 20,000 small inputs
    python benchmarks/ray_engine.py --no-throughput --small 500 5000    # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from photos import jittered_photos  # noqa: E402
from standin import standin_checkpoint  # noqa: E402


def run(args: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds, peak resident MiB, exit status) of ``python -m resnet classify ARGS``."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "resnet", "classify", *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode(errors="replace")
    if process.returncode not in (0, 1):
        raise SystemExit(f"classify {' '.join(args)} failed ({process.returncode}):\n{error[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, process.returncode


def tiny_inputs(folder: Path, count: int) -> Path:
    """``count`` distinct small PNG files (40 x 32 pixels) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (40, 32), ((i * 37) % 256, (i * 11) % 256, (i * 5) % 256)).save(folder / f"{i:06d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, nargs=2, default=(64, 256), metavar=("SMALL", "LARGE"))
    parser.add_argument("--small", type=int, nargs=2, default=(2000, 20000), metavar=("N", "M"))
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json-too", action="store_true", help="also the memory of --json runs (printing)")
    parser.add_argument("--image-size", type=int, default=32, help="of the memory runs (default 32)")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        home = work / "torch_home"
        (home / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(standin_checkpoint("resnet50"), home / "hub" / "checkpoints" / "nvidia_resnet50_200821.pth.tar")
        env = dict(os.environ, PYTHONPATH=str(REPO), TORCH_HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"Python {platform.python_version()}")
        if not options.no_throughput:
            folders = {}
            for count in options.photos:
                folders[count] = work / f"photos-{count}"
                jittered_photos(folders[count], count, seed=count)
            times: dict[tuple[str, int], float] = {}
            for count in options.photos:
                for engine in ("local", "ray"):
                    out = work / f"out-{engine}-{count}"
                    seconds, peak, status = run([str(folders[count]), "--output", str(out), "--quiet", "--engine",
                                                 engine, "--device", "cpu"], env)
                    times[engine, count] = seconds
                    print(f"{engine:5s} {count:4d} photos: {seconds:6.1f} s, {count / seconds:5.1f} img/s end to "
                          f"end, driver peak {peak:6.0f} MiB, exit {status}", flush=True)
                    shutil.rmtree(out)
            small, large = options.photos
            per_image = {engine: (times[engine, large] - times[engine, small]) / (large - small)
                         for engine in ("local", "ray")}
            for engine in ("local", "ray"):
                print(f"{engine:5s} marginal: {1 / per_image[engine]:5.1f} img/s "
                      f"({1000 * per_image[engine]:.0f} ms per image)")
            print(f"ray / local: {times['ray', large] / times['local', large]:.2f}x end to end at {large} photos, "
                  f"{per_image['ray'] / per_image['local']:.2f}x per image (marginal)")
        if not options.no_memory:
            for count in options.small:
                folder = tiny_inputs(work / f"tiny-{count}", count)
                common = [str(folder), "--quiet", "--device", "cpu", "--image-size", str(options.image_size),
                          "--batch-size", "64"]
                out = work / f"out-tiny-{count}"
                seconds, peak, status = run([*common, "--output", str(out)], env)
                print(f"--output  {count:6d} inputs: {seconds:6.1f} s, peak {peak:6.0f} MiB, exit {status}",
                      flush=True)
                shutil.rmtree(out)
                if options.json_too:
                    seconds, peak, status = run([*common, "--json"], env)
                    print(f"--json    {count:6d} inputs: {seconds:6.1f} s, peak {peak:6.0f} MiB, exit {status}",
                          flush=True)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
