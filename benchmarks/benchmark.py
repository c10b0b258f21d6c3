"""Speed of this repository's ResNet-50 against its peers, measured side by side in one process.

    python benchmarks/benchmark.py            # CPU, full (about 30-40 minutes on 2 cores; --no-e2e: 10-15)
    python benchmarks/benchmark.py --quick    # CPU, few repeats, no compile (about 9 minutes; --no-e2e: 3)
    python benchmarks/benchmark.py --device cuda [--quick]
    python benchmarks/benchmark.py --train    # CPU training step and evaluate vs classify only
    python benchmarks/benchmark.py --e2e-only # end to end by folder kind and runtime, start-up (about 20-25 minutes)

Every figure is the median of repeats in which the variants take turns (interleaved), so load from
other processes on the machine hits all of them alike; ratios are to the peer baseline in the same
run: torchvision's ``resnet50()`` in eval mode, NCHW float32, holding the same weights.

Nothing is downloaded: a stand-in for NVIDIA's NGC checkpoint (``standin.py`` beside this file: seeded
random weights with trained-network value ranges, same shapes and file layout as the real file) is written into a
temporary TORCH_HOME cache, and the hub model is loaded from it with ``torch.hub.load(...,
source="local")`` exactly as the documented example does.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from resnet.weights.catalogue import CHECKPOINTS  # noqa: E402
from resnet import eval_path  # noqa: E402
from resnet.fast import cpu_supports_bf16, fused_kernels_work, optimize_for_inference  # noqa: E402
from standin import standin_checkpoint  # noqa: E402  (benchmarks/, the script's own folder)

#: The sample photos that ship with the repository.
IMAGES = REPO / "examples" / "images"

#: Multiply-accumulates of one 224x224 ResNet-50 forward pass (NVIDIA's figure); 2 FLOP each.
GMAC_PER_IMAGE = 4.09
GFLOP_PER_IMAGE = 2 * GMAC_PER_IMAGE
#: NVIDIA's published ResNet-50 v1.5 inference throughput, V100 16GB, AMP, batch 256.
NVIDIA_V100_AMP_B256 = 3382.0
#: Dense FP16 tensor-core peaks (TFLOP/s) of GPUs we know, for the share-of-peak column.
GPU_FP16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "V100": 125.0, "L4": 121.0, "A10": 125.0}


# --------------------------------------------------------------------------- measurement


@dataclass
class Variant:
    name: str
    fn: Callable[[], object]
    max_repeats: Optional[int] = None  # slow variants stop taking turns after this many
    times: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def interleaved(variants: list[Variant], repeats: int, sync: Callable[[], None] = lambda: None,
                inner: int = 1, warmup: bool = True) -> None:
    """One untimed warm-up call each, then ``repeats`` rounds in which every variant runs once in turn.

    ``inner`` calls are timed together per sample (for fast GPU calls); the sample is their mean.
    """
    for v in variants if warmup else []:
        v.fn()
        sync()
    for _ in range(repeats):
        for v in variants:
            if v.max_repeats is not None and len(v.times) >= v.max_repeats:
                continue
            sync()
            start = time.perf_counter()
            for _ in range(inner):
                v.fn()
            sync()
            v.times.append((time.perf_counter() - start) / inner)


def cpu_peak_gflops(threads: int) -> tuple[float, str]:
    """Nominal fp32 peak of the cores torch uses: threads x MHz x 2 FMA pipes x 2 FLOP x vector lanes."""
    flags, mhz = set(), 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    isa = "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "SSE"
    peak = threads * mhz / 1000 * 2 * 2 * lanes
    return peak, f"{threads} cores x {mhz / 1000:.2f} GHz x 2 FMA x {lanes} fp32 lanes ({isa}) x 2"


# --------------------------------------------------------------------------- setup


def make_cache(home: Path) -> Path:
    """Write the stand-in resnet50 checkpoint where torch.hub's cache keeps the NGC file."""
    os.environ["TORCH_HOME"] = str(home)
    torch.hub._hub_dir = None  # re-read TORCH_HOME
    path = Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINTS["resnet50"].file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(standin_checkpoint("resnet50"), path)
    return path


def hub_model() -> torch.nn.Module:
    """The model exactly as the documented example gets it."""
    with contextlib.redirect_stderr(io.StringIO()):
        return torch.hub.load(str(REPO), "nvidia_resnet50", pretrained=True, source="local")


def torchvision_model(checkpoint: Path) -> torch.nn.Module:
    """The peer: torchvision's construct-then-load of the same file (same parameter names)."""
    import torchvision

    model = torchvision.models.resnet50()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model


def sample_batch(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- printing


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    sys.stdout.flush()


def agreement(logits: torch.Tensor, reference: torch.Tensor) -> str:
    """max|diff| to the float32 reference, and how many rows keep top-1 and the top-5 set."""
    logits, reference = logits.float().cpu(), reference.float().cpu()
    diff = (logits - reference).abs().max().item()
    top1 = (logits.argmax(1) == reference.argmax(1)).sum().item()
    top5 = sum(set(a) == set(b) for a, b in zip(logits.topk(5).indices.tolist(), reference.topk(5).indices.tolist()))
    return f"{diff:.1e} {top1}/{len(logits)} {top5}/{len(logits)}"


# --------------------------------------------------------------------------- CPU sections


def cpu_models(checkpoint: Path, quick: bool, compile_variants: bool) -> list[tuple[str, torch.nn.Module, str]]:
    """(name, model, note) for every CPU variant."""
    baseline = torchvision_model(checkpoint).eval()
    documented = hub_model().eval()
    layered = copy.deepcopy(documented)
    layered.fast_inference = False
    native_bf16 = cpu_supports_bf16()
    models = [
        ("(a) torchvision resnet50, NCHW fp32 [baseline]", baseline, ""),
        ("(b) hub model, documented use (eval + no_grad: folded, fused)", documented, ""),
        ("(b') same model, fast_inference=False (layer by layer)", layered, ""),
        ("(c1) fast path fp32 (default: fold+CL+fused, slices of 8)",
         optimize_for_inference(documented, dtype="float32"), ""),
        ("(c2) fast path fp32: fold+CL+fused, whole batch",
         optimize_for_inference(documented, dtype="float32", micro_batch=None), ""),
        ("(c2') fast path fp32: fold+CL only, whole batch",
         optimize_for_inference(documented, dtype="float32", fuse=False, micro_batch=None), ""),
    ]
    if compile_variants:
        models.append(("(c3) fast path fp32 + torch.compile",
                       optimize_for_inference(documented, dtype="float32", compile=True), "compile"))
    if native_bf16 or not quick:
        note = "" if native_bf16 else "emulated: no native BF16 on this CPU"
        bf16 = optimize_for_inference(documented, dtype="bfloat16")
        models.append((f"(c4) fast path bf16: fold BN + CL{' + fused' if bf16.fused else ''}", bf16, note))
    if native_bf16 and compile_variants:
        models.append(("(c5) fast path bf16 + torch.compile",
                       optimize_for_inference(documented, dtype="bfloat16", compile=True), "compile"))
    auto = optimize_for_inference(documented, dtype="auto")  # what dtype="auto" picks here
    print(f"optimize_for_inference(model) here: {auto.extra_repr()} (native BF16: {native_bf16})")
    return models


def runs_fused(model: torch.nn.Module) -> str:
    """Whether a row's convolutions run as fused oneDNN kernels (conv + ReLU / residual add)."""
    if hasattr(model, "fused"):  # optimize_for_inference: decided once, after its probe
        return "yes" if model.fused else "no"
    if getattr(model, "fast_inference", False) and fused_kernels_work():
        return "eval path"  # the model's own eval path, when its guard lets the call through
    return "no"


def cpu_throughput(models, batch: int, repeats: int, peak: float, slow_cap: int, title: str) -> dict[str, float]:
    x = sample_batch(batch)
    variants: list[Variant] = []
    outputs: dict[str, torch.Tensor] = {}
    compile_times: dict[str, float] = {}
    fused = {name: runs_fused(model) for name, model, _ in models}
    for name, model, note in models:
        if note == "compile":
            start = time.perf_counter()
            with torch.no_grad():
                model(x)  # compiles for this shape
            compile_times[name] = time.perf_counter() - start

        def call(model=model, name=name):
            with torch.no_grad():
                outputs[name] = model(x)

        cap = slow_cap if note.startswith("emulated") else None
        variants.append(Variant(name, call, max_repeats=cap, note=note))
    interleaved(variants, repeats)
    base = variants[0]
    reference = outputs[base.name]
    rows = []
    result = {}
    for v in variants:
        ips = batch / v.median
        gflops = ips * GFLOP_PER_IMAGE
        result[v.name] = v.median
        rows.append([
            v.name + (f"  [{v.note}]" if v.note and v.note != "compile" else ""),
            f"{ips:.2f}", f"{base.median / v.median:.2f}x", f"{v.median * 1000:.0f}",
            f"{gflops:.0f}", f"{100 * gflops / peak:.0f}%" if peak else "n/a",
            agreement(outputs[v.name], reference), fused[v.name], str(len(v.times)),
        ])
    print_table(title, ["variant", "img/s", "vs (a)", "ms/batch", "GFLOP/s", "% peak",
                        "max|diff| top1 top5", "fused", "n"], rows)
    for name, seconds in compile_times.items():
        print(f"  compile time (first call, batch {batch}) of {name}: {seconds:.1f} s")
    return result


def cpu_latency(models, repeats: int, slow_cap: int) -> None:
    x = sample_batch(1)
    variants = []
    for name, model, note in models:
        def call(model=model):
            with torch.no_grad():
                model(x)

        variants.append(Variant(name, call, max_repeats=slow_cap if note.startswith("emulated") else None,
                                note=note))
    interleaved(variants, repeats)
    base = variants[0]
    rows = [[v.name + (f"  [{v.note}]" if v.note and v.note != "compile" else ""),
             f"{v.median * 1000:.1f}", f"{v.median / base.median:.2f}x", str(len(v.times))] for v in variants]
    print_table("CPU batch 1 latency (median)", ["variant", "ms", "latency vs (a)", "n"], rows)
    documented = next(model for name, model, _ in models if name.startswith("(b)"))
    print(f"  (b) folded its BatchNorms once, on its first eval call: {eval_fold_ms(documented, 3):.0f} ms "
          "(median of 3 refolds); later calls reuse them while the weights are unchanged")


def eval_fold_ms(model: torch.nn.Module, repeats: int) -> float:
    """Milliseconds the model's own eval path spends folding BN into the conv weights (once per weight change)."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            eval_path._fold_trunk(model)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def load_times(checkpoint: Path, repeats: int) -> None:
    import torchvision

    from resnet.models.builder import create_model

    def tv_construct():
        torchvision.models.resnet50()

    variants = [
        Variant("torchvision: resnet50() + load_state_dict(torch.load(file)) [peer]",
                lambda: torchvision_model(checkpoint)),
        Variant("ours: torch.hub.load(repo, 'nvidia_resnet50', pretrained=True)", hub_model),
        Variant("ours: create_model('resnet50', pretrained=True)",
                lambda: create_model("resnet50", pretrained=True, progress=False)),
        Variant("  for scale: torchvision resnet50() alone (random init)", tv_construct),
        Variant("  for scale: torch.load(file) alone", lambda: torch.load(checkpoint, weights_only=True)),
    ]
    interleaved(variants, repeats)
    base = variants[0]
    rows = [[v.name, f"{v.median * 1000:.0f}", f"{v.median / base.median:.2f}x"] for v in variants]
    print_table(f"Model load from a warm cache (median of {repeats})", ["path", "ms", "time vs peer"], rows)
    fresh_process_load_times(checkpoint, max(3, repeats // 2))


FRESH_LOAD = {
    "torchvision: resnet50() + load_state_dict(torch.load(file)) [peer]": (
        "import sys, time, torch, torchvision\n"
        "t = time.perf_counter()\n"
        "torchvision.models.resnet50().load_state_dict(torch.load(sys.argv[2], weights_only=True))\n"
        "print(time.perf_counter() - t)\n"
    ),
    "ours: torch.hub.load(repo, 'nvidia_resnet50', pretrained=True)": (
        "import sys, time, torch\n"
        "t = time.perf_counter()\n"
        "torch.hub.load(sys.argv[1], 'nvidia_resnet50', pretrained=True, source='local', progress=False)\n"
        "print(time.perf_counter() - t)\n"
    ),
}


STARTUP_IMPORTS = {
    "import torch": ("", "torch"),
    "import torchvision (torch already imported)": ("torch", "torchvision"),
    "  of which: import torch._dynamo (torch already imported)": ("torch", "torch._dynamo"),
}


def startup_times(repeats: int) -> None:
    """What every new Python process pays before it classifies anything: the imports, timed inside it."""
    times: dict[str, list[float]] = {name: [] for name in STARTUP_IMPORTS}
    code = ("import importlib, sys, time\n"
            "if sys.argv[1]: importlib.import_module(sys.argv[1])\n"
            "t = time.perf_counter(); importlib.import_module(sys.argv[2]); print(time.perf_counter() - t)\n")
    for _ in range(repeats):
        for name, (before, module) in STARTUP_IMPORTS.items():
            done = subprocess.run([sys.executable, "-c", code, before, module], capture_output=True, text=True,
                                  check=True)
            times[name].append(float(done.stdout.strip().splitlines()[-1]))
    rows = [[name, f"{statistics.median(t):.2f}"] for name, t in times.items()]
    print_table(f"Start-up imports in a fresh process (median of {repeats})", ["import", "s"], rows)


def fresh_process_load_times(checkpoint: Path, repeats: int) -> None:
    """The load call alone, timed inside a new Python process (after its imports), as a script sees it.

    In a long-lived process lazily imported modules are already loaded; a new process pays for them.
    """
    times: dict[str, list[float]] = {name: [] for name in FRESH_LOAD}
    for _ in range(repeats):
        for name, code in FRESH_LOAD.items():
            done = subprocess.run([sys.executable, "-c", code, str(REPO), str(checkpoint)], capture_output=True,
                                  text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            times[name].append(float(done.stdout.strip().splitlines()[-1]))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = next(iter(medians.values()))
    rows = [[name, f"{m * 1000:.0f}", f"{m / base:.2f}x"] for name, m in medians.items()]
    print_table(f"Model load in a fresh process, imports excluded (median of {repeats})",
                ["path", "ms", "time vs peer"], rows)


# --------------------------------------------------------------------------- end to end


EXAMPLE_BATCHED = """
import sys, torch
repo, folder = sys.argv[1], sys.argv[2]
uris = [str(p) for p in sorted(__import__('pathlib').Path(folder).iterdir())]
resnet50 = torch.hub.load(repo, 'nvidia_resnet50', pretrained=True, source='local')
utils = torch.hub.load(repo, 'nvidia_convnets_processing_utils', source='local')
resnet50.eval()
batch = torch.cat([utils.prepare_input_from_uri(uri) for uri in uris])
with torch.no_grad():
    output = torch.nn.functional.softmax(resnet50(batch), dim=1)
results = utils.pick_n_best(predictions=output, n=5)
"""

EXAMPLE_PER_IMAGE = """
import sys, torch
repo, folder = sys.argv[1], sys.argv[2]
uris = [str(p) for p in sorted(__import__('pathlib').Path(folder).iterdir())]
resnet50 = torch.hub.load(repo, 'nvidia_resnet50', pretrained=True, source='local')
utils = torch.hub.load(repo, 'nvidia_convnets_processing_utils', source='local')
resnet50.eval()
for uri in uris:
    batch = utils.prepare_input_from_uri(uri)
    with torch.no_grad():
        output = torch.nn.functional.softmax(resnet50(batch), dim=1)
    results = utils.pick_n_best(predictions=output, n=5)
"""


def end_to_end(n_images: int, repeats: int, fast_model: torch.nn.Module, documented: torch.nn.Module,
               quick: bool) -> None:
    try:
        import processing_utils  # noqa: F401
        from processing_utils import iter_batches, prepare_input_from_uri  # noqa: F401
        from resnet import classify  # noqa: F401
    except ImportError as error:
        print(f"\nEnd to end: skipped, the CLI / processing_utils are not available yet ({error})")
        return
    photos = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    folder = Path(tempfile.mkdtemp(prefix="bench_photos_"))
    try:
        for i in range(n_images):
            source = photos[i % len(photos)]
            shutil.copy(source, folder / f"{i:03d}{source.suffix}")
        env = dict(os.environ, PYTHONPATH=str(REPO))

        def run(args: list[str]) -> Callable[[], None]:
            def call():
                subprocess.run(args, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            return call

        py = sys.executable
        variants = [
            Variant("documented example, batched (cat of per-image prepare, one forward)",
                    run([py, "-c", EXAMPLE_BATCHED, str(REPO), str(folder)])),
            Variant("documented example, per-image loop (prepare + forward each)",
                    run([py, "-c", EXAMPLE_PER_IMAGE, str(REPO), str(folder)])),
            Variant("CLI: python -m resnet classify FOLDER --quiet",
                    run([py, "-m", "resnet", "classify", str(folder), "--quiet"])),
        ]
        interleaved(variants, repeats, warmup=not quick)
        base = variants[0]
        rows = [[v.name, f"{v.median:.1f}", f"{n_images / v.median:.2f}", f"{base.median / v.median:.2f}x"]
                for v in variants]
        loop = variants[1]
        rows[2].append(f"{loop.median / variants[2].median:.2f}x")
        rows[0].append("")
        rows[1].append("1.00x")
        print_table(f"End to end on {n_images} photos, fresh process each (start-up, model load, decode, "
                    f"inference; median of {repeats})",
                    ["pipeline", "s", "img/s", "vs batched", "vs per-image"], rows)
        startup_times(max(3, repeats))

        # In-process: does decoding overlap inference?
        from processing_utils import iter_batches
        from resnet.cli.classify import classify

        uris = [str(p) for p in sorted(folder.iterdir())]
        classes = [str(i) for i in range(1000)]
        batch = torch.cat([prepare_input_from_uri(u) for u in uris])

        def decode_only():
            for _ in iter_batches(uris, 32):
                pass

        def infer(model):
            def call():
                with torch.no_grad():
                    for chunk in batch.split(32):
                        model(chunk)
            return call

        def cli_classify(model):
            return lambda: classify(uris, model, classes, top_k=5, batch_size=32, device=torch.device("cpu"))

        inproc = [
            Variant("decode only (iter_batches, threads)", decode_only),
            Variant("inference only, hub model, batches of 32", infer(documented)),
            Variant("classify.classify(), hub model (decode overlapped)", cli_classify(documented)),
            Variant("inference only, fast path fp32", infer(fast_model)),
            Variant("classify.classify(), fast path fp32 model", cli_classify(fast_model)),
        ]
        interleaved(inproc, repeats, warmup=not quick)
        d, m, c, fm, fc = (v.median for v in inproc)
        rows = [[v.name, f"{v.median:.2f}", f"{n_images / v.median:.2f}"] for v in inproc]
        print_table(f"In process, {n_images} photos (median of {repeats})", ["stage", "s", "img/s"], rows)
        for label, model_s, total in (("hub model", m, c), ("fast path", fm, fc)):
            hidden = (d + model_s - total) / d if d else 0.0
            print(f"  decode/inference overlap ({label}): decode {d:.2f} s + model {model_s:.2f} s = "
                  f"{d + model_s:.2f} s sequential vs {total:.2f} s together -> {100 * hidden:.0f}% of decode hidden")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- end to end by folder kind and runtime


#: The folders of the by-runtime end-to-end section: label -> (size, format, JPEG quality, grain). Made from the
#: sample photos by :func:`photos.sized_photos`; the 12 MP photos get grain, so that they are about the size of a
#: camera's (2-3 MB) rather than a smooth upscale.
E2E_FOLDERS: dict[str, tuple[tuple[int, int], str, int, int]] = {
    "ImageNet-size JPEG 500x375 (quality 90)": ((500, 375), "JPEG", 90, 0),
    "12 MP JPEG 4032x3024 (quality 92)": ((4032, 3024), "JPEG", 92, 8),
    "PNG 500x375": ((500, 375), "PNG", 0, 0),
}
#: Targets of issue 21: the CLI's images/s (start-up excluded) over the same runtime's model-only images/s.
E2E_TARGETS = {"ImageNet-size JPEG 500x375 (quality 90)": 0.9, "12 MP JPEG 4032x3024 (quality 92)": 0.8}
#: One image, cached weights, fresh process, at most this many times ``python -c 'import torch, torchvision'``.
STARTUP_TARGET = 1.5
#: ``python -m resnet classify --help`` at most this many seconds.
HELP_TARGET_S = 0.3
#: timm's inference script's default DataLoader workers.
DATALOADER_WORKERS = 2
#: The command line's default batch size (``classify --batch-size``).
CLI_BATCH = 32


@dataclass
class E2ERuntime:
    """One runtime of the section: ``key`` is ``e2e_loops.py``'s ``--runtime``, ``cli`` classify's options."""

    key: str
    label: str
    cli: list[str]
    onnx: Optional[Path] = None
    skipped: str = ""


def cpu_description() -> str:
    """The CPU's name and whether it has the instruction sets these figures depend on (``/proc/cpuinfo``)."""
    name, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    sets = [("AVX2", ["avx2"]), ("AVX-512", ["avx512f"]), ("BF16", ["avx512_bf16", "amx_bf16"]),
            ("VNNI", ["avx512_vnni", "avx_vnni", "amx_int8"])]
    parts = []
    for label, names in sets:
        present = [n for n in names if n in flags]
        parts.append(f"{label} {'yes (' + ' '.join(present) + ')' if present else 'no'}")
    return (f"{name or 'unknown CPU'}, {os.cpu_count()} logical CPUs; {', '.join(parts)}; "
            f"native BF16 (resnet.fast.devices.cpu_supports_bf16): {cpu_supports_bf16()}")


def subprocess_call(args: list[str], env: dict[str, str]) -> Callable[[], None]:
    """A call that runs ``args`` in a fresh process from the repository root; a failure raises with its stderr."""
    def call() -> None:
        done = subprocess.run(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"exit status {done.returncode}: {' '.join(args)}\n{tail}")
    return call


def make_e2e_folders(work: Path, n_images: int) -> dict[str, tuple[Path, Path]]:
    """Per folder kind: the folder of ``n_images`` and a folder holding its first image only."""
    from photos import sized_photos

    folders = {}
    for i, (label, (size, fmt, quality, grain)) in enumerate(E2E_FOLDERS.items()):
        start = time.perf_counter()
        full = work / f"kind{i}"
        made = sized_photos(full, n_images, size, fmt=fmt, quality=quality or 90, seed=21 + i, grain=grain)
        one = work / f"kind{i}-one"
        one.mkdir()
        shutil.copyfile(made[0], one / made[0].name)
        mean = statistics.mean(p.stat().st_size for p in made) / 1e6
        print(f"folder {label}: {n_images} files, {mean:.2f} MB each on average "
              f"({min(n_images, 8)} distinct; made in {time.perf_counter() - start:.0f} s)")
        folders[label] = (full, one)
    return folders


def export_int8(work: Path, calibration_images: int, env: dict[str, str]) -> tuple[Optional[Path], str]:
    """The INT8 model as a user makes it: ``python -m resnet export --format onnx --int8``; (file, why not)."""
    from photos import jittered_photos

    calibration = work / "calibration"
    jittered_photos(calibration, calibration_images, seed=7)
    output = work / "export"
    args = [sys.executable, "-m", "resnet", "export", "--pretrained", "--format", "onnx", "--int8",
            "--calibration", str(calibration), "--calibration-images", str(calibration_images),
            "--output", str(output), "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return None, f"skipped: the INT8 export failed ({last})"
    print(f"INT8 model: python -m resnet export --pretrained --format onnx --int8 --calibration-images "
          f"{calibration_images} (photos made from the samples): {time.perf_counter() - start:.0f} s")
    return output / "resnet50-int8.onnx", ""


def e2e_runtimes(work: Path, calibration_images: int, env: dict[str, str]) -> list[E2ERuntime]:
    """torch fp32, torch bf16 (where native), the INT8 export on ONNX Runtime and on OpenVINO; skips say why."""
    from resnet.deploy.runtimes import runtime_available

    runtimes = [E2ERuntime("torch-fp32", "torch fp32", []),
                E2ERuntime("torch-bf16", "torch bf16", ["--precision", "bf16"],
                           skipped="" if cpu_supports_bf16() else "skipped: no native BF16")]
    int8, why = export_int8(work, calibration_images, env) if runtime_available("onnxruntime") else (
        None, "skipped: onnxruntime is not installed (the INT8 export needs it)")
    for key, label in (("onnxruntime", "ONNX Runtime INT8"), ("openvino", "OpenVINO INT8")):
        skipped = why or ("" if runtime_available(key) else f"skipped: {key} is not installed")
        runtimes.append(E2ERuntime(key, label, ["--onnx", str(int8), "--runtime", key], onnx=int8, skipped=skipped))
    return runtimes


def model_only_seconds(runtimes: list[E2ERuntime], x: torch.Tensor, repeats: int) -> dict[str, Variant]:
    """(c): the runtime object the command line runs, on prepared tensors, in batches of the CLI's size, in this
    process (same threads as the fresh processes); the runtimes take turns. Seconds for all of ``x``."""
    from resnet.deploy.runtimes import load_onnx_model

    documented = hub_model().eval()
    variants = []
    for runtime in runtimes:
        if runtime.key.startswith("torch"):
            model = optimize_for_inference(documented, dtype="bfloat16" if runtime.key == "torch-bf16" else "float32")
        else:
            model = load_onnx_model(runtime.onnx, runtime.key)

        def call(model=model) -> None:
            with torch.no_grad():
                for chunk in x.split(CLI_BATCH):
                    model(chunk)
        variants.append(Variant(runtime.label, call))
    interleaved(variants, repeats)
    for v in variants:
        v.fn = lambda: None  # the models go when this returns, before the fresh processes run
    return {v.name: v for v in variants}


def decoding_cpu_ms(folder: Path, repeats: int) -> float:
    """CPU milliseconds to prepare one image of ``folder`` as ``classify`` does by default (open, decode at reduced
    scale where it applies, orient, resize, crop, normalise), on this thread: the median over ``repeats`` passes
    of each pass's mean."""
    from resnet.data.images import load_input

    paths = sorted(folder.iterdir())
    passes = []
    for _ in range(repeats):
        start = time.thread_time()
        for path in paths:
            load_input(path, decode="reduced")
        passes.append((time.thread_time() - start) / len(paths) * 1000)
    return statistics.median(passes)


def ceiling(model_s: float, n: int, threads: int, decode_ms: float) -> float:
    """The e2e / model-only ratio to expect when decoding and the model share ``threads`` cores: the model's CPU
    time per image over that plus decoding's, counting the model's seconds per image on every core (an estimate:
    a runtime that leaves its cores idle part of the time lets decoding fill them, and beats it)."""
    model_cpu_ms = model_s / n * 1000 * threads
    return model_cpu_ms / (model_cpu_ms + decode_ms)


def e2e_section(n_images: int, repeats: int, *, calibration_images: int) -> None:
    """Issue 21: images/s of ``python -m resnet classify FOLDER`` in a fresh process per folder kind and runtime,
    beside the documented per-image loop, a DataLoader loop (timm's way) and the runtime's model-only speed;
    then the start-up: one image against ``import torch, torchvision`` and ``classify --help``."""
    import gc

    threads = torch.get_num_threads()
    print(f"\nEnd to end by folder kind and runtime. CPU: {cpu_description()}")
    print(f"torch {torch.__version__}, {threads} threads in this process and in each fresh process (the same "
          f"environment; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); CLI batch {CLI_BATCH}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as folder:
        work = Path(folder)
        folders = make_e2e_folders(work, n_images)
        runtimes = e2e_runtimes(work, calibration_images, env)
        active = [r for r in runtimes if not r.skipped]
        for r in runtimes:
            if r.skipped:
                print(f"{r.label}: {r.skipped}")

        from processing_utils import prepare_input_from_uri

        first_kind = next(iter(E2E_FOLDERS))
        x = torch.cat([prepare_input_from_uri(str(p)) for p in sorted(folders[first_kind][0].iterdir())])
        model_only = model_only_seconds(active, x, max(3, repeats))
        del x
        gc.collect()
        decode_ms = {kind: decoding_cpu_ms(full, max(3, repeats)) for kind, (full, _) in folders.items()}

        runs: dict[tuple[str, str, str], Variant] = {}
        for kind, (full, one) in folders.items():
            for r in active:
                loop = [py, str(REPO / "benchmarks" / "e2e_loops.py")]
                onnx = ["--onnx", str(r.onnx)] if r.onnx else []
                for what, args in (
                    ("cli", [py, "-m", "resnet", "classify", str(full), "--quiet", *r.cli]),
                    ("one", [py, "-m", "resnet", "classify", str(one), "--quiet", *r.cli]),
                    ("per-image", [*loop, "per-image", str(full), "--runtime", r.key, *onnx]),
                    ("dataloader", [*loop, "dataloader", str(full), "--runtime", r.key, *onnx,
                                    "--batch-size", str(CLI_BATCH), "--workers", str(DATALOADER_WORKERS)]),
                ):
                    runs[kind, r.label, what] = Variant(f"{kind} {r.label} {what}", subprocess_call(args, env))
        runs["", "", "import"] = Variant("import", subprocess_call([py, "-c", "import torch, torchvision"], env))
        runs["", "", "help"] = Variant("help", subprocess_call([py, "-m", "resnet", "classify", "--help"], env))
        # Untimed: one one-image run per runtime fills the runtimes' caches (ONNX Runtime's optimized graph,
        # OpenVINO's compiled blob) and the OS's file cache, as for a user's second run; the import and --help too.
        for r in active:
            runs[first_kind, r.label, "one"].fn()
        runs["", "", "import"].fn()
        runs["", "", "help"].fn()
        start = time.perf_counter()
        interleaved(list(runs.values()), repeats, warmup=False)
        print(f"fresh-process runs: {time.perf_counter() - start:.0f} s for {repeats} round(s) of {len(runs)}")

        def cell(value: Optional[float], digits: int = 2) -> str:
            return "" if value is None else f"{value:.{digits}f}"

        n = n_images
        ratios: dict[tuple[str, str], tuple[Optional[float], float, float]] = {}
        for kind in folders:
            print(f"\n{kind}: preparing one image as classify does (--decode reduced) takes {decode_ms[kind]:.1f} ms "
                  f"of CPU on one thread (median of {max(3, repeats)} passes)")
            rows = []
            for r in runtimes:
                if r.skipped:
                    rows.append([f"{r.label}: {r.skipped}", "", "", "", "", "", ""])
                    continue
                cli, one = runs[kind, r.label, "cli"], runs[kind, r.label, "one"]
                model_s = model_only[r.label].median
                model_ips = n / model_s
                excl = (n - 1) / (cli.median - one.median) if n > 1 and cli.median > one.median else None
                ratios[kind, r.label] = (excl / model_ips if excl else None, n / cli.median / model_ips)
                rows.append([f"{r.label}: python -m resnet classify FOLDER --quiet", f"{cli.median:.1f}",
                             f"{n / cli.median:.2f}", cell(excl), f"{n / cli.median / model_ips:.2f}",
                             cell(excl / model_ips if excl else None), str(len(cli.times))])
                rows.append([f"{r.label}:   the same, one image (start-up)", f"{one.median:.1f}", "", "", "", "",
                             str(len(one.times))])
                for what, name in (("per-image", "(a) documented per-image loop (prepare_input_from_uri + model)"),
                                   ("dataloader", f"(b) DataLoader loop, {DATALOADER_WORKERS} workers (timm's way)")):
                    v = runs[kind, r.label, what]
                    rows.append([f"{r.label}: {name}", f"{v.median:.1f}", f"{n / v.median:.2f}", "",
                                 f"{n / v.median / model_ips:.2f}", "", str(len(v.times))])
                rows.append([f"{r.label}: (c) model only, batches of {CLI_BATCH}, prepared tensors, in process",
                             f"{model_s:.1f}", f"{model_ips:.2f}", "", "1.00", "", str(len(model_only[r.label].times))])
                bound = ceiling(model_s, n, threads, decode_ms[kind])
                ratios[kind, r.label] = (*ratios[kind, r.label], bound)
                rows.append([f"{r.label}: (d) estimated ceiling: model CPU / (model + decoding CPU), {threads} cores",
                             "", "", cell(model_ips * bound), "", cell(bound), ""])
            print_table(f"End to end, {kind}: {n} images, each pipeline a fresh process timed from outside "
                        f"(median of {repeats}); 'excl. start-up' = (N - 1) / (s - s of the one-image run)",
                        ["pipeline", "s", "img/s", "img/s excl. start-up", "img/s / (c)", "excl. start-up / (c)",
                         "n"], rows)

        base = runs["", "", "import"]
        rows = [["python -c 'import torch, torchvision' [baseline]", f"{base.median:.2f}", "1.00x",
                 str(len(base.times))]]
        for r in active:
            v = runs[first_kind, r.label, "one"]
            rows.append([f"python -m resnet classify ONE_IMAGE --quiet, {r.label}, cached weights", f"{v.median:.2f}",
                         f"{v.median / base.median:.2f}x", str(len(v.times))])
        help_run = runs["", "", "help"]
        rows.append(["python -m resnet classify --help", f"{help_run.median:.2f}",
                     f"{help_run.median / base.median:.2f}x", str(len(help_run.times))])
        print_table(f"Start-up: fresh processes timed from outside ({first_kind}; median of {repeats})",
                    ["command", "s", "vs import", "n"], rows)
        startup_times(repeats)

        def verdict(ok: bool) -> str:
            return "met" if ok else "NOT met"

        print("\nTargets of issue 21 (on this run; the e2e ratios judged on images/s excluding start-up):")
        for kind, target in E2E_TARGETS.items():
            for r in runtimes:
                if r.skipped:
                    print(f"  {kind}, {r.label}: {r.skipped}")
                    continue
                excl, wall, bound = ratios[kind, r.label]
                judged = (verdict(excl >= target) if excl is not None else
                          "not judged: the N-image run was not slower than the one-image run (too few images?)")
                print(f"  {kind}, {r.label}: e2e / model-only {cell(excl) or 'n/a'} (target >= {target}): "
                      f"{judged}; start-up included {wall:.2f}; estimated ceiling on these cores {bound:.2f}"
                      + ("" if bound >= target else " (the target is out of reach here: decoding alone costs "
                         f"{decode_ms[kind]:.0f} ms of CPU per image)"))
        if active:
            fp32 = runs[first_kind, active[0].label, "one"].median
            print(f"  start-up, one image, {active[0].label}: {fp32:.2f} s = {fp32 / base.median:.2f}x the import "
                  f"(target <= {STARTUP_TARGET}x): {verdict(fp32 <= STARTUP_TARGET * base.median)}")
        print(f"  classify --help: {help_run.median:.2f} s (target <= {HELP_TARGET_S} s): "
              f"{verdict(help_run.median <= HELP_TARGET_S)}")


# --------------------------------------------------------------------------- training and evaluate


def training_steps(checkpoint: Path, batch: int, repeats: int) -> None:
    """Images/s of one training step (forward, backward, SGD) at ``batch``, 224x224, on the CPU.

    (a) torchvision's ``resnet50()`` as its reference script trains by default: NCHW, float32, SGD with
    momentum 0.9 and weight decay 1e-4, cross-entropy; (b) our training step as ``python -m resnet train``
    runs it with the default ``--precision auto`` (bfloat16 autocast on CPUs with native BF16, float32
    elsewhere), channels-last, NVIDIA's SGD (momentum 0.875, no decay on BatchNorm and biases), label
    smoothing; (c) the same in float32. Every variant starts from the same weights and trains its own copy.
    """
    import torchvision

    from resnet import recipe
    from resnet.models.builder import create_model

    device = torch.device("cpu")
    auto = recipe.resolve_precision("auto", device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=generator)
    labels = torch.randint(0, 1000, (batch,), generator=generator)

    def theirs() -> Callable[[], None]:
        model = torchvision.models.resnet50()
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step() -> None:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    def ours(dtype: Optional[torch.dtype]) -> Callable[[], None]:
        model = create_model("resnet50", pretrained_from_file=checkpoint, progress=False).train()
        optimizer = recipe.make_optimizer(model, recipe.scaled_lr(batch))
        loss_fn = recipe.loss_function()
        x = images.contiguous(memory_format=torch.channels_last)

        def step() -> None:
            with recipe.autocast(device, dtype):
                logits = model(x)
            loss = loss_fn(logits.float(), labels) / batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    variants = [
        Variant("(a) torchvision resnet50, NCHW fp32, SGD (reference script defaults) [baseline]", theirs()),
        Variant(f"(b) ours, default --precision auto ({recipe.precision_name(auto)}), channels-last", ours(auto)),
        Variant("(c) ours, fp32, channels-last", ours(None)),
    ]
    interleaved(variants, repeats)
    base = variants[0]
    rows = [[v.name, f"{batch / v.median:.2f}", f"{base.median / v.median:.2f}x", f"{v.median:.2f}", str(len(v.times))]
            for v in variants]
    print_table(f"CPU training step, batch {batch}, 224x224 (forward + backward + SGD; median of {repeats} "
                f"interleaved rounds; native BF16 {cpu_supports_bf16()})",
                ["variant", "img/s", "vs (a)", "s/step", "n"], rows)


def evaluate_vs_classify(n_images: int, repeats: int) -> None:
    """Fresh-process wall time of ``evaluate FOLDER`` against ``classify FOLDER`` on the same photos."""
    from resnet.data.synsets import imagenet_wnids

    photos = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    folder = Path(tempfile.mkdtemp(prefix="bench_labelled_"))
    try:
        for i in range(n_images):
            source = photos[i % len(photos)]
            # ImageNet's layout: a folder per class, named by WordNet id (which class does not matter here).
            target = folder / imagenet_wnids()[i % len(photos)] / f"{i:03d}{source.suffix}"
            target.parent.mkdir(exist_ok=True)
            shutil.copy(source, target)
        env = dict(os.environ, PYTHONPATH=str(REPO))

        def run(args: list[str]) -> Callable[[], None]:
            def call() -> None:
                subprocess.run([sys.executable, "-m", "resnet", *args, str(folder), "--quiet"], cwd=REPO, env=env,
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return call

        variants = [
            Variant("python -m resnet classify FOLDER [baseline]", run(["classify"])),
            Variant("python -m resnet evaluate FOLDER", run(["evaluate"])),
            Variant("python -m resnet evaluate FOLDER --workers 0 (decoding in the main thread)",
                    run(["evaluate", "--workers", "0"])),
        ]
        interleaved(variants, repeats, warmup=False)
        base = variants[0]
        rows = [[v.name, f"{v.median:.1f}", f"{n_images / v.median:.2f}", f"{base.median / v.median:.2f}x"]
                for v in variants]
        print_table(f"evaluate vs classify on {n_images} photos in {len(photos)} class folders, fresh process each "
                    f"(start-up and model load included; median of {repeats})",
                    ["command", "s", "img/s", "vs classify"], rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- CUDA


def cuda_section(checkpoint: Path, quick: bool, batches: list[int], compile_variants: bool) -> None:
    if not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here (torch.cuda.is_available() is False)")
        return
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in GPU_FP16_PEAK_TFLOPS.items() if k in name), None)
    print(f"GPU: {name}; fp16 tensor peak {peak or 'unknown'} TFLOP/s")
    baseline = torchvision_model(checkpoint).eval().to(device)
    documented = hub_model().eval().to(device)

    def amp(model):
        def call(x):
            with torch.autocast("cuda", dtype=torch.float16):
                return model(x)
        return call

    models: list[tuple[str, Callable]] = [
        ("(a) torchvision resnet50 NCHW fp32 [baseline]", baseline),
        ("(a') torchvision + AMP autocast (NVIDIA's AMP)", amp(baseline)),
        ("(b) hub model, documented use (fp32, channels_last)", documented),
        ("(b') hub model + AMP autocast", amp(documented)),
        ("(c1) fast path fp16 (fold BN, channels_last)",
         optimize_for_inference(documented, device=device, dtype="float16")),
        ("(c2) fast path fp16 + CUDA graphs",
         optimize_for_inference(documented, device=device, dtype="float16", cuda_graphs=True)),
    ]
    if compile_variants:
        models.append(("(c3) fast path fp16 + torch.compile (reduce-overhead)",
                       optimize_for_inference(documented, device=device, dtype="float16", compile=True,
                                              cuda_graphs=True)))
    sync = torch.cuda.synchronize
    best: dict[int, tuple[str, float]] = {}
    for batch in batches:
        x = sample_batch(batch).to(device)
        variants = []
        outputs = {}
        for vname, model in models:
            def call(model=model, vname=vname):
                with torch.no_grad():
                    outputs[vname] = model(x)
            variants.append(Variant(vname, call))
        # The first call of each variant (warm-up) captures graphs / compiles for this shape.
        inner = max(1, min(50, 2048 // batch))
        interleaved(variants, 3 if quick else 7, sync=sync, inner=inner)
        base = variants[0]
        reference = outputs[base.name]
        rows = []
        for v in variants:
            ips = batch / v.median
            tflops = ips * GFLOP_PER_IMAGE / 1000
            rows.append([v.name, f"{ips:.0f}", f"{base.median / v.median:.2f}x", f"{v.median * 1000:.2f}",
                         f"{100 * tflops / peak:.1f}%" if peak else "n/a",
                         f"{ips / NVIDIA_V100_AMP_B256:.2f}x", agreement(outputs[v.name], reference)])
            if batch not in best or ips > best[batch][1]:
                best[batch] = (v.name, ips)
        print_table(f"CUDA batch {batch} (median of {len(base.times)} samples of {inner} calls)",
                    ["variant", "img/s", "vs (a)", "ms/batch", "% fp16 peak", "vs V100 AMP b256",
                     "max|diff| top1 top5"], rows)
    print(f"\nNVIDIA's published ResNet-50 v1.5 inference: {NVIDIA_V100_AMP_B256:.0f} img/s (V100 16GB, AMP, "
          "batch 256). Best here per batch:")
    for batch, (vname, ips) in best.items():
        print(f"  batch {batch:3d}: {ips:8.0f} img/s  ({ips / NVIDIA_V100_AMP_B256:.2f}x NVIDIA V100)  {vname}")


# --------------------------------------------------------------------------- runtimes: peers, INT8, AOTInductor


@dataclass
class Row:
    """One path of the runtimes table: ``fn(x) -> logits``, its number format and whether it runs fused."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    fmt: str  # "fp32", "bf16" or "int8": the peak it is measured against
    fused: Callable[[int], str]  # batch size -> "yes" / "no" / what fuses it
    note: str = ""


def measured_peaks(repeats: int = 5) -> dict[str, tuple[float, str]]:
    """GFLOP/s (GOP/s for int8) of large oneDNN-backed kernels, timed now: the best of ``repeats`` calls.

    fp32 and bf16: a 1x1 convolution, channels-last (16 x 1024 x 28 x 28 input, 1024 outputs), as the
    bottleneck convolutions of ResNet-50 run; int8: the same convolution quantized (uint8 activations,
    int8 weights) on torch's oneDNN quantized engine.
    """
    peaks = {}
    x = torch.randn(16, 1024, 28, 28).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1024, 1024, 1, 1).contiguous(memory_format=torch.channels_last)
    flops = 2 * 16 * 28 * 28 * 1024 * 1024
    for fmt, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        xd, wd = x.to(dtype), w.to(dtype)
        best = float("inf")
        with torch.no_grad():
            torch.nn.functional.conv2d(xd, wd)
            for _ in range(repeats):
                start = time.perf_counter()
                torch.nn.functional.conv2d(xd, wd)
                best = min(best, time.perf_counter() - start)
        peaks[fmt] = (flops / best / 1e9, "1x1 conv 16x1024x28x28 -> 1024, channels-last (oneDNN)")
    if "onednn" in torch.backends.quantized.supported_engines:
        engine = torch.backends.quantized.engine
        torch.backends.quantized.engine = "onednn"
        try:
            conv = torch.ao.nn.quantized.Conv2d(1024, 1024, 1)
            conv.set_weight_bias(torch.quantize_per_tensor(w, 0.01, 0, torch.qint8), None)
            xq = torch.quantize_per_tensor(x.abs(), 0.02, 0, torch.quint8).contiguous(memory_format=torch.channels_last)
            best = float("inf")
            conv(xq)
            for _ in range(repeats):
                start = time.perf_counter()
                conv(xq)
                best = min(best, time.perf_counter() - start)
            peaks["int8"] = (flops / best / 1e9, "the same 1x1 conv quantized u8s8, oneDNN engine")
        finally:
            torch.backends.quantized.engine = engine
    return peaks


def photo_batch(folder: Path, n: int) -> torch.Tensor:
    """``n`` photos made from the sample photos, preprocessed: inputs whose top-1 means something."""
    from photos import jittered_photos
    from processing_utils import load_image, preprocess

    return torch.stack([preprocess(load_image(p)) for p in jittered_photos(folder, n, seed=123)])


def runtime_rows(checkpoint: Path, work: Path, *, quick: bool, aoti: bool,
                 calibration_images: int) -> list[Row]:
    """Every path of the issue's table that can run here; missing packages are reported and skipped."""
    from resnet.deploy.exporters import export_metadata, export_onnx, prepare_for_export

    baseline = torchvision_model(checkpoint).eval()
    documented = hub_model().eval()

    def torch_call(model):
        def call(x):
            with torch.no_grad():
                return model(x)
        return call

    native_bf16 = cpu_supports_bf16()
    bf16_note = "" if native_bf16 else "emulated: no native BF16 on this CPU"
    fp32_fast = optimize_for_inference(documented, dtype="float32")
    bf16_fast = optimize_for_inference(documented, dtype="bfloat16")
    fp32_plain = optimize_for_inference(documented, dtype="float32", prepack=False)
    bf16_plain = optimize_for_inference(documented, dtype="bfloat16", prepack=False)

    def fused(model):
        def says(batch: int) -> str:
            if not model.fused:
                return "no"
            return "yes, packed" if model.prepacked and batch >= model.micro_batch else "yes"
        return says

    rows = [
        Row("(a) torchvision resnet50, eager fp32 NCHW [baseline]", torch_call(baseline), "fp32", lambda b: "no"),
        Row("(b) ours, hub model as documented (fp32)", torch_call(documented), "fp32", lambda b: "yes, packed"),
        Row("(c1) ours, optimize_for_inference fp32", torch_call(fp32_fast), "fp32", fused(fp32_fast)),
        Row("(c1') the same, weights not packed (prepack=False)", torch_call(fp32_plain), "fp32", fused(fp32_plain)),
        Row("(c4) ours, optimize_for_inference bf16", torch_call(bf16_fast), "bf16", fused(bf16_fast), bf16_note),
        Row("(c4') the same, weights not packed (prepack=False)", torch_call(bf16_plain), "bf16", fused(bf16_plain),
            bf16_note),
    ]
    try:
        from resnet.deploy.runtimes import load_onnx_model, runtime_available
    except ImportError as error:  # pragma: no cover - the module ships with the repository
        print(f"runtimes: resnet.deploy.runtimes is not available ({error})")
        return rows
    have_ort, have_ov = runtime_available("onnxruntime"), runtime_available("openvino")
    if not have_ort:
        print("ONNX Runtime rows skipped: onnxruntime is not installed (pip install onnxruntime); "
              "the INT8 model needs it too")
    if not have_ov:
        print("OpenVINO rows skipped: openvino is not installed (pip install openvino)")
    runtime_fused = lambda b: "graph fusion (runtime)"  # noqa: E731
    if have_ort:
        fp32_onnx = work / "resnet50.onnx"
        start = time.perf_counter()
        export_onnx(prepare_for_export(documented), fp32_onnx, exporter="torchscript",
                    metadata=export_metadata("resnet50", weights="stand-in"))
        print(f"fp32 ONNX export: {time.perf_counter() - start:.0f} s")
        runtimes = [("ONNX Runtime", "onnxruntime")] + ([("OpenVINO", "openvino")] if have_ov else [])
        for label, runtime in runtimes:
            rows.append(Row(f"{label} fp32 (ONNX export)", load_onnx_model(fp32_onnx, runtime), "fp32", runtime_fused))
        if have_ov:
            rows.append(Row("OpenVINO bf16 precision hint (same ONNX)",
                            load_onnx_model(fp32_onnx, "openvino", precision="bf16"), "bf16", runtime_fused,
                            bf16_note))
        from resnet.deploy.quantize import load_calibration_set, quantize_onnx
        from photos import jittered_photos

        jittered_photos(work / "calibration", calibration_images, seed=7)
        calibration = load_calibration_set(work / "calibration", calibration_images, min_images=1)
        int8_onnx = work / "resnet50-int8.onnx"
        meta = quantize_onnx(fp32_onnx, int8_onnx, calibration)
        print(f"INT8 (ONNX Runtime static QDQ, {meta['calibration_method']}, {meta['calibration_images']} "
              f"calibration images): {meta['seconds']:.0f} s")
        for label, runtime in runtimes:
            rows.append(Row(f"{label} INT8 (QDQ, per-channel)", load_onnx_model(int8_onnx, runtime),
                            "int8", runtime_fused))
        if have_ov and native_bf16:
            rows.append(Row("OpenVINO INT8 + bf16 hint for the float parts", load_onnx_model(
                int8_onnx, "openvino", precision="bf16"), "int8", runtime_fused))
    if aoti:
        rows.extend(aoti_rows(documented, work))
    return rows


def aoti_rows(documented: torch.nn.Module, work: Path) -> list[Row]:
    """The AOTInductor package of the fp32 model (compile time printed), loaded as a user loads it."""
    from resnet.cli.export import export_metadata, prepare_for_export
    from resnet.deploy.pt2 import Pt2Error, aoti_available, compile_package, export_program

    if not aoti_available():
        print("AOTInductor row skipped: this torch has no torch._inductor.aoti_compile_and_package")
        return []
    meta = export_metadata("resnet50", weights="stand-in")
    try:
        _, program = export_program(prepare_for_export(documented), work / "resnet50.pt2", metadata=meta)
        package, seconds = compile_package(program, work / "resnet50-aoti.pt2", metadata=meta)
    except Pt2Error as error:
        print(f"AOTInductor row skipped: {error}")
        return []
    print(f"AOTInductor compile (fp32, freezing): {seconds:.0f} s")
    compiled = torch._inductor.aoti_load_package(str(package))

    def call(x):
        with torch.no_grad():
            return compiled(x)

    return [Row("AOTInductor package fp32 (resnet.deploy.pt2)", call, "fp32", lambda b: "inductor (frozen, fused)")]


def measure_rows(rows: list[Row], x: torch.Tensor, repeats: int, slow_cap: int) -> list[dict]:
    """Interleaved timing of every row on ``x``: seconds per call (median), logits, calls timed."""
    outputs: dict[str, torch.Tensor] = {}
    variants = []
    for row in rows:
        def call(row=row):
            outputs[row.name] = row.fn(x)
        variants.append(Variant(row.name, call, max_repeats=slow_cap if row.note.startswith("emulated") else None,
                                note=row.note))
    interleaved(variants, repeats)
    return [{"row": row, "seconds": v.median, "logits": outputs[row.name].float(), "n": len(v.times)}
            for row, v in zip(rows, variants)]


def agreement_cells(result: dict, reference: torch.Tensor) -> list[str]:
    """top-1 agreement with the baseline's fp32 logits and the largest logit difference."""
    logits = result["logits"]
    top1 = int((logits.argmax(1) == reference.argmax(1)).sum())
    return [f"{top1}/{len(logits)}", f"{(logits - reference).abs().max().item():.2g}"]


def int8_peak(work: Path, repeats: int = 5) -> Optional[tuple[float, str]]:
    """GOP/s of the 1x1 convolution of :func:`measured_peaks` as an INT8 QDQ ONNX model, on the faster runtime."""
    try:
        import onnx
        from onnx import TensorProto, helper

        from resnet.deploy.runtimes import RUNTIMES, runtime_available
    except ImportError:
        return None
    generator = torch.Generator().manual_seed(0)
    weight = torch.randint(-127, 128, (1024, 1024, 1, 1), generator=generator, dtype=torch.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
    ]
    inits = [
        helper.make_tensor("xs", TensorProto.FLOAT, [], [0.02]), helper.make_tensor("xz", TensorProto.UINT8, [], [0]),
        helper.make_tensor("w", TensorProto.INT8, [1024, 1024, 1, 1], weight.numpy().tobytes(), raw=True),
        helper.make_tensor("ws", TensorProto.FLOAT, [1024], [0.01] * 1024),
    ]
    shape = [16, 1024, 28, 28]
    graph = helper.make_graph(nodes, "int8_peak", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = work / "int8_peak.onnx"
    onnx.save(model, str(path))
    x = torch.rand(16, 1024, 28, 28, generator=generator).numpy()
    best: Optional[tuple[float, str]] = None
    for runtime in RUNTIMES:
        if not runtime_available(runtime):
            continue
        from resnet.deploy.runtimes import _make_runner

        run = _make_runner(runtime, path, "x", "y", threads=torch.get_num_threads(), precision="fp32")
        run(x)
        fastest = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run(x)
            fastest = min(fastest, time.perf_counter() - start)
        gops = 2 * 16 * 28 * 28 * 1024 * 1024 / fastest / 1e9
        if best is None or gops > best[0]:
            best = (gops, f"the same 1x1 conv as an INT8 QDQ model (u8 x s8), {runtime}")
    return best


def runtimes_section(checkpoint: Path, *, batch: int, repeats: int, quick: bool, aoti: bool,
                     calibration_images: int) -> None:
    """The table of issue 13: our paths against ONNX Runtime, OpenVINO, INT8 and AOTInductor, batch N and 1."""
    with tempfile.TemporaryDirectory(prefix="bench_runtimes_") as folder:
        work = Path(folder)
        rows = runtime_rows(checkpoint, work, quick=quick, aoti=aoti, calibration_images=calibration_images)
        x = photo_batch(work / "inputs", batch)
        peaks = measured_peaks()
        best_int8 = int8_peak(work)
        if best_int8 is not None and best_int8[0] > peaks.get("int8", (0.0, ""))[0]:
            peaks["int8"] = best_int8
        for fmt, (value, how) in peaks.items():
            print(f"measured {fmt} peak: {value:.0f} G{'OP' if fmt == 'int8' else 'FLOP'}/s ({how})")

        results = measure_rows(rows, x, repeats, slow_cap=2 if quick else 3)
        base = results[0]
        table = []
        for r in results:
            ips = batch / r["seconds"]
            achieved = ips * GFLOP_PER_IMAGE
            peak = peaks.get(r["row"].fmt, (0.0, ""))[0]
            table.append([r["row"].name + (f"  [{r['row'].note}]" if r["row"].note else ""), f"{ips:.1f}",
                          f"{base['seconds'] / r['seconds']:.2f}x", f"{r['seconds'] * 1000:.0f}", f"{achieved:.0f}",
                          f"{100 * achieved / peak:.0f}% {r['row'].fmt}" if peak else "n/a",
                          *agreement_cells(r, base["logits"]), r["row"].fused(batch), str(r["n"])])
        print_table(f"Runtimes, batch {batch}: {batch} photos, medians of {repeats} interleaved rounds",
                    ["path", "img/s", "vs (a)", "ms/batch", "GFLOP/s", "% peak (own format)", "top-1 = (a)",
                     "max|logit diff|", "fused", "n"], table)

        latency = measure_rows(rows, x[:1], 5 if quick else 15, slow_cap=3)
        base = latency[0]
        table = [[r["row"].name, f"{r['seconds'] * 1000:.1f}", f"{r['seconds'] / base['seconds']:.2f}x",
                  *agreement_cells(r, base["logits"]), r["row"].fused(1), str(r["n"])] for r in latency]
        print_table("Runtimes, batch 1 latency (median)",
                    ["path", "ms", "latency vs (a)", "top-1 = (a)", "max|logit diff|", "fused", "n"], table)


# --------------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="few repeats, no torch.compile (about 3 min on CPU)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds for batch-32 throughput")
    parser.add_argument("--batch", type=int, default=32, help="CPU throughput batch size (default 32)")
    parser.add_argument("--images", type=int, default=64, help="photos for the end-to-end comparison")
    parser.add_argument("--no-e2e", action="store_true",
                        help="skip both end-to-end sections (the documented example, and by folder kind and runtime)")
    parser.add_argument("--e2e-only", action="store_true",
                        help="only the end-to-end section by folder kind (500x375 JPEG, 12 MP JPEG, PNG) and runtime "
                        "(torch fp32, bf16 where native, ONNX Runtime / OpenVINO INT8) with its start-up table")
    parser.add_argument("--e2e-images", type=int, metavar="N",
                        help="images per folder of the by-runtime end-to-end section (default 64, 16 with --quick)")
    parser.add_argument("--e2e-repeats", type=int, metavar="N",
                        help="interleaved rounds of its fresh-process runs (default 3, 1 with --quick)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--peak-gflops", type=float, help="override the CPU's nominal fp32 peak")
    parser.add_argument("--runtimes", action="store_true",
                        help="only the runtimes table: ours vs ONNX Runtime, OpenVINO, INT8, AOTInductor (batch and 1)")
    parser.add_argument("--calibration-images", type=int, default=None,
                        help="INT8 calibration images of --runtimes and of the end-to-end section's export "
                        "(default 64, 16 for the latter with --quick)")
    parser.add_argument("--train", action="store_true",
                        help="only the training-step and evaluate-vs-classify sections (CPU)")
    parser.add_argument("--no-train-steps", action="store_true",
                        help="with --train: only the evaluate-vs-classify section")
    args = parser.parse_args(argv)
    if args.e2e_images is not None and args.e2e_images < 2:
        parser.error("--e2e-images must be at least 2 (start-up is measured on one image and subtracted)")
    if args.e2e_repeats is not None and args.e2e_repeats < 1:
        parser.error("--e2e-repeats must be at least 1")
    warnings.filterwarnings("ignore")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native BF16 {cpu_supports_bf16()}")
    args_given = argv if argv is not None else sys.argv[1:]
    print("command: python " + " ".join([os.path.relpath(__file__, REPO), *args_given]))
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_torch_home_") as home:
        checkpoint = make_cache(Path(home))
        e2e = dict(n_images=args.e2e_images or (16 if args.quick else 64),
                   repeats=args.e2e_repeats or (1 if args.quick else 3),
                   calibration_images=args.calibration_images or (16 if args.quick else 64))
        if args.e2e_only:
            e2e_section(**e2e)
        elif args.runtimes:
            runtimes_section(checkpoint, batch=args.batch, repeats=args.repeats or (3 if args.quick else 5),
                             quick=args.quick, aoti=not (args.quick or args.no_compile),
                             calibration_images=args.calibration_images or 64)
        elif args.train:
            if not args.no_train_steps:
                training_steps(checkpoint, args.batch, args.repeats or (2 if args.quick else 3))
            evaluate_vs_classify(args.images, 1 if args.quick else 3)
        elif args.device == "cuda":
            batches = [1, 32, 256] if args.quick else [1, 8, 32, 64, 128, 256]
            cuda_section(checkpoint, args.quick, batches, not (args.quick or args.no_compile))
        else:
            threads = torch.get_num_threads()
            peak, how = cpu_peak_gflops(threads)
            if args.peak_gflops:
                peak, how = args.peak_gflops, "given with --peak-gflops"
            print(f"nominal CPU fp32 peak: {peak:.0f} GFLOP/s = {how}; {GFLOP_PER_IMAGE:.2f} GFLOP per image")
            repeats = args.repeats or (2 if args.quick else 5)
            models = cpu_models(checkpoint, args.quick, not (args.quick or args.no_compile))
            cpu_throughput(models, args.batch, repeats, peak, slow_cap=2 if args.quick else 3,
                           title=f"CPU batch {args.batch} throughput (median of {repeats} interleaved rounds)")
            cpu_latency(models, 5 if args.quick else 15, slow_cap=3 if args.quick else 5)
            load_times(checkpoint, 5 if args.quick else 11)
            if not args.no_e2e:
                documented = next(m for n, m, _ in models if n.startswith("(b)"))
                fast = next(m for n, m, _ in models if n.startswith("(c1)"))
                end_to_end(args.images, 1 if args.quick else 3, fast, documented, args.quick)
                del models, documented, fast
                e2e_section(**e2e)
    print(f"\ntotal benchmark time {time.perf_counter() - wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
