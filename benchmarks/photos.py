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
