"""Photos made from the sample photos (examples/images) for calibration and held-out checks.

Used by the benchmark and by the INT8 tests (which import it from here): random crops, mirroring,
colour and brightness changes of the four sample photos, deterministic for a seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

#: The sample photos that ship with the repository, in name order.
PHOTOS = sorted(p for p in (Path(__file__).resolve().parent.parent / "examples" / "images").iterdir()
                if p.suffix in {".png", ".jpg"})


def jittered_photos(folder: Path, count: int, seed: int) -> list[Path]:
    """Write ``count`` JPEG photos made from the sample photos into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    made = []
    for i in range(count):
        with Image.open(PHOTOS[i % len(PHOTOS)]) as source:
            image = source.convert("RGB")
        w, h = image.size
        scale = rng.uniform(0.4, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        image = image.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.5))
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        path = folder / f"{seed}-{i:03d}.jpg"
        image.save(path, quality=90)
        made.append(path)
    return made


def sized_photos(folder: Path, count: int, size: tuple[int, int], *, fmt: str = "JPEG", quality: int = 90,
                 seed: int = 0, grain: int = 0, distinct: int = 8) -> list[Path]:
    """Write ``count`` images of exactly ``size`` (width, height) made from the sample photos into ``folder``.

    Each is a random crop of a sample photo in the proportion of ``size`` (70-100% of the largest such crop,
    mirrored half the time), resized with a bicubic filter, with uniform noise of +-``grain`` levels per channel
    when ``grain`` is given (a 12 MP upscale of a 600-pixel photo is otherwise smoother, so smaller and faster to
    decode, than a camera's photo), then saved as ``fmt`` (``"JPEG"`` at ``quality``, or ``"PNG"``). The first
    ``distinct`` are made; the rest are copies of them (decoding costs the same; making 12 MP images does not).
    Deterministic for a seed; returns the paths in name order.
    """
    import shutil

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    width, height = size
    suffix = ".png" if fmt.upper() == "PNG" else ".jpg"
    made: list[Path] = []
    for i in range(count):
        path = folder / f"{i:04d}{suffix}"
        if i >= distinct:
            shutil.copyfile(made[i % distinct], path)
            made.append(path)
            continue
        with Image.open(PHOTOS[i % len(PHOTOS)]) as source:
            image = source.convert("RGB")
        w, h = image.size
        cw, ch = (w, round(w * height / width)) if w * height <= h * width else (round(h * width / height), h)
        scale = rng.uniform(0.7, 1.0)
        cw, ch = max(1, int(cw * scale)), max(1, int(ch * scale))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        image = image.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        if grain:
            pixels = np.asarray(image, dtype=np.int16) + noise.integers(-grain, grain + 1, (height, width, 3),
                                                                         dtype=np.int16)
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        if suffix == ".png":
            image.save(path)
        else:
            image.save(path, quality=quality)
        made.append(path)
    return made
