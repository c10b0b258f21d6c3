"""The model's own eval fast path: speed of the documented call, memory, and the guard's per-call cost.

    python benchmarks/eval_path.py                          # this checkout
    python benchmarks/eval_path.py --before /tmp/old-tree   # and another checkout of the repository, same run

``--before`` takes a checkout of another version (``git worktree add /tmp/old-tree dd34b48``, or
``git archive dd34b48 | tar -x -C /tmp/old-tree``). Each checkout runs in its own worker process that loads the
hub model from that checkout as the documented example does (``torch.hub.load(..., source="local")``, a stand-in
for NVIDIA's weights, eval mode, ``torch.no_grad()``); the parent asks the workers for one timed call at a time,
in turns, so that load from other processes on the machine hits every variant alike. Figures are medians.

Sections:

* speed: batch 4 and batch 1 (224x224), the default (``fast_inference=True``) and ``fast_inference=False``,
  each batch size on its own model (the first call, which folds and packs the weights, is not timed);
* memory: a fresh worker per checkout; resident memory (RSS, from /proc) after loading, after 8 threads have
  called the one model concurrently (batch 4, 3 calls each), after ``del model; gc.collect()``, and after
  ``malloc_trim(0)`` (glibc keeps freed memory of its thread arenas until then: RSS that ``malloc_trim``
  returns was free, not held by the model);
* guard: microseconds per call of this checkout's ``resnet.fast.eval_path.decide`` (everything the eval path checks
  on a call, the cached folded weights found current) and of its parts. On a machine busy with other work,
  anything that runs on both cores (the input's sum, each convolution) waits for the other core's turn:
  compare figures from quiet runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- worker side


def _load(tree: Path, weights: Path):
    import torch

    sys.path.insert(0, str(tree))
    with contextlib.redirect_stderr(io.StringIO()):
        model = torch.hub.load(str(tree), "nvidia_resnet50", pretrained=False, pretrained_from_file=str(weights),
                               source="local")
    return model.eval()


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(tree: Path, weights: Path) -> None:
    """Answer ``{"variant", "batch"}`` requests on stdin with the seconds of one call, one JSON line each."""
    import torch

    # One model per batch size, as a program that calls with one batch size has: the eval path packs its weights
    # for the input size it sees repeatedly (sizes that alternate on one model run on unpacked weights).
    models = {n: _load(tree, weights) for n in (1, 4)}
    inputs = {n: torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(n)) for n in (1, 4)}
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        model = models[request["batch"]]
        model.fast_inference = request["variant"] == "fast"
        x = inputs[request["batch"]]
        with torch.no_grad():
            start = time.perf_counter()
            model(x)
            seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds}), flush=True)


def memory(tree: Path, weights: Path, threads: int) -> None:
    """Print one JSON line: RSS (MB) at each step of the memory section."""
    import torch

    held = [_load(tree, weights)]  # the only reference, dropped below
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    result = {"loaded": _rss_mb()}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.no_grad():
                for _ in range(3):
                    held[0](x)
        except BaseException as error:  # reported in the output
            errors.append(error)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    gc.collect()
    result["after_threads"] = _rss_mb()
    held.clear()
    gc.collect()
    result["after_del"] = _rss_mb()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    result["after_trim"] = _rss_mb()
    result["errors"] = [repr(e) for e in errors]
    print(json.dumps(result), flush=True)


def guard(tree: Path, weights: Path, repeats: int) -> None:
    """Print one JSON line: median microseconds of ``decide`` (batch 1 and 4) and of its parts."""
    import torch

    model = _load(tree, weights)
    from resnet import eval_path, onednn

    def median_us(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e6 * statistics.median(times)

    out = {}
    with torch.no_grad():
        for n in (1, 4):
            x = torch.randn(n, 3, 224, 224)
            model(x)  # folds once
            assert eval_path.decide(model, x) is not None, "the guard lets the documented call through"
            out[f"decide_batch{n}_us"] = median_us(lambda: eval_path.decide(model, x))
            out[f"finite_batch{n}_us"] = median_us(lambda: eval_path._all_finite(x))
        snapshot = eval_path.folded_state(model).snapshot
        out["snapshot_compare_us"] = median_us(lambda: snapshot.compare(model))
        out["context_us"] = median_us(lambda: (
            eval_path._being_transformed(), eval_path._autocast_enabled(), eval_path._hooks_anywhere(),
            onednn.fused_kernels_work(), eval_path._in_trace_check()))
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------- parent side


class Worker:
    def __init__(self, label: str, tree: Path, weights: Path) -> None:
        self.label = label
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(tree), "--weights", str(weights)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tree,
        )
        self.info = json.loads(self.process.stdout.readline())

    def call(self, variant: str, batch: int) -> float:
        self.process.stdin.write(json.dumps({"variant": variant, "batch": batch}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["seconds"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def one_shot(mode: str, tree: Path, weights: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, __file__, mode, str(tree), "--weights", str(weights), *extra],
                          capture_output=True, text=True, cwd=tree, timeout=1800, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni") if f in flags]
                return " ".join(isa)
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout of the repository to measure in the same run")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per variant (default 7)")
    parser.add_argument("--threads", type=int, default=8, help="threads of the memory section (default 8)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--guard", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.weights)
    if args.memory:
        return memory(args.memory, args.weights, args.threads)
    if args.guard:
        return guard(args.guard, args.weights, args.repeats)

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(REPO))
    from standin import standin_checkpoint

    trees = [("after (this checkout)", REPO)] + ([("before (" + str(args.before) + ")", args.before)]
                                                  if args.before else [])
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "resnet50-standin.pth"
        torch.save(standin_checkpoint("resnet50"), weights)
        print(f"CPU: {cpu_name()} ({os.cpu_count()} cores; {cpu_flags()}), torch {torch.__version__}, "
              f"load average {os.getloadavg()[0]:.1f} at start")

        workers = [Worker(label, tree, weights) for label, tree in trees]
        rows = [(w, variant, batch) for batch in (4, 1) for w in workers for variant in ("fast", "plain")]
        times: dict[tuple, list[float]] = {row: [] for row in rows}
        for w, variant, batch in rows:  # warm-up: the first call folds (and packs) the weights
            w.call(variant, batch)
        for _ in range(args.repeats):
            for row in rows:
                times[row].append(row[0].call(row[1], row[2]))
        for w in workers:
            w.close()
        print(f"\nThe documented call (hub model, eval, no_grad, 224x224), median of {args.repeats}, interleaved:")
        for batch in (4, 1):
            for w in workers:
                fast = statistics.median(times[(w, "fast", batch)])
                plain = statistics.median(times[(w, "plain", batch)])
                print(f"  batch {batch}  {w.label:40}  fast_inference=True {1000 * fast:8.1f} ms   "
                      f"fast_inference=False {1000 * plain:8.1f} ms   speed-up {plain / fast:4.2f}x")
        if len(workers) == 2:
            for batch in (4, 1):
                after, before = (statistics.median(times[(w, "fast", batch)]) for w in workers)
                print(f"  batch {batch}: default call after / before = {after / before:.2f} (lower is faster)")

        if not args.skip_memory:
            print(f"\nMemory (RSS, MB): {args.threads} threads call one model concurrently (batch 4, 3 calls each)")
            for label, tree in trees:
                m = one_shot("--memory", tree, weights, "--threads", str(args.threads))
                print(f"  {label:40}  loaded {m['loaded']:7.0f}   after threads {m['after_threads']:7.0f}   "
                      f"after del+gc {m['after_del']:7.0f}   after malloc_trim {m['after_trim']:7.0f}"
                      + (f"   errors: {m['errors']}" if m["errors"] else ""))

        g = one_shot("--guard", REPO, weights, "--repeats", str(max(200, args.repeats)))
        print(f"\nGuard (this checkout), median per call: decide() {g['decide_batch1_us']:.0f} us at batch 1, "
              f"{g['decide_batch4_us']:.0f} us at batch 4. Its parts: the model's snapshot comparison "
              f"{g['snapshot_compare_us']:.0f} us, the call's context {g['context_us']:.0f} us, the input's "
              f"finiteness (one sum) {g['finite_batch1_us']:.0f} / {g['finite_batch4_us']:.0f} us at batch 1 / 4")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
