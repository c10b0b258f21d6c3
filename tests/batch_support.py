"""Helpers of the batch-classification tests: a folder of photos and damaged files, running the command, comparing
results row by row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from PIL import Image

from support import PHOTOS, REPO_ROOT

#: The damaged files of :func:`make_photos`, by name.
DAMAGED = ("damaged-empty.png", "damaged-text.jpg", "damaged-truncated.jpg")


def make_photos(folder: Path, count: int = 40) -> list[str]:
    """``count`` photos cut from the sample photos (crops of different places and sizes, JPEG and PNG) in
    ``folder``, plus the :data:`DAMAGED` files; returns the photos' paths in the order a folder search lists
    them (sorted), damaged files included."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(path).convert("RGB") for path in PHOTOS]
    for i in range(count):
        image = sources[i % len(sources)]
        width, height = image.size
        side = min(width, height) * (50 + 5 * (i % 9)) // 100
        left = (width - side) * ((i * 7) % 11) // 10
        top = (height - side) * ((i * 3) % 7) // 6
        crop = image.crop((left, top, left + side, top + side * (3 + i % 2) // 3)).resize((96 + 8 * (i % 5), 80))
        suffix = ".jpg" if i % 2 else ".png"
        crop.save(folder / f"photo-{i:03d}{suffix}")
    (folder / DAMAGED[0]).write_bytes(b"")
    (folder / DAMAGED[1]).write_text("not an image, a text file\n")
    jpeg = (folder / "photo-001.jpg").read_bytes()
    (folder / DAMAGED[2]).write_bytes(jpeg[: len(jpeg) // 3])
    return sorted(str(path) for path in folder.iterdir())


def run_classify(*args: str, cwd: Path = REPO_ROOT, timeout: float = 600,
                 env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """``python -m resnet classify ARGS`` in a subprocess (the repository importable, one compute thread)."""
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MPLBACKEND="Agg", RAY_USAGE_STATS_ENABLED="0")
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "resnet", "classify", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def json_rows(stdout: str) -> dict[str, dict]:
    """The ``--json`` lines of the command, by input."""
    rows = {}
    for line in stdout.splitlines():
        if line.strip():
            record = json.loads(line)
            rows[record["input"]] = record
    return rows


def dataset_rows(location: str) -> list[dict]:
    """Every row of the results dataset at ``location`` (pyarrow reading it as a dataset, hidden files skipped)."""
    import pyarrow.dataset as ds

    from resnet.predict.results import open_location

    where = open_location(location)
    return ds.dataset(where.path, filesystem=where.filesystem, format="parquet").to_table().to_pylist()


def assert_same_result(row: dict, record: dict, tolerance: float = 1e-5) -> None:
    """A dataset ``row`` says what the ``--json`` ``record`` of the same input says: the same error, or the same
    top classes with probabilities within ``tolerance`` (near-tied classes, closer than it, may swap places)."""
    assert row["input"] == record["input"]
    if "error" in record:
        assert row["error"] == record["error"] and row["top_index"] == [], (row, record)
        return
    assert row["error"] is None, row
    expected = [(top["index"], top["probability"]) for top in record["top"]]
    assert len(row["top_index"]) == len(expected)
    by_index = dict(expected)
    last = expected[-1][1]
    for position, (index, probability) in enumerate(zip(row["top_index"], row["top_probability"])):
        assert abs(probability - expected[position][1]) <= tolerance, (row, record)
        if index != expected[position][0]:  # a swap of near-ties, or a tie at the k-th place
            assert abs(by_index.get(index, last) - probability) <= tolerance, (row, record)
    names = {top["index"]: top["class"] for top in record["top"]}
    assert all(names.get(index, name) == name for index, name in zip(row["top_index"], row["top_class"])), row

