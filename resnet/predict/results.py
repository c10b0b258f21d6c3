"""Classification results as a Parquet dataset: written part by part while running, read back to resume.

A results dataset is a folder (a local path, or a URI that pyarrow's file systems open: ``s3://bucket/run``,
``gs://...``, ``file:///...``) of Parquet part files, one row per input:

============== ========================= ============================================================
column         type                      value
============== ========================= ============================================================
``input``      string                    the input as listed (a path, a URL, a URI)
``top_index``  list<int32>               the top-k class indices, most probable first (empty on error)
``top_class``  list<string>              their class names
``top_probability`` list<float32>        their softmax probabilities
``error``      string (null when ok)     why the input could not be classified
============== ========================= ============================================================

Each part file is written whole or not at all: on a local disk it is written under a temporary hidden name and
renamed into place (:func:`resnet.io.atomic.atomic_file`); on an object store it is uploaded in one request,
and an object appears only once complete. Readers (pyarrow, Ray, pandas, DuckDB) skip hidden names (``.`` and
``_`` prefixes), so a crash or Ctrl+C leaves whole parts only, and :func:`read_done` tells a new run which
inputs are already there.

pyarrow is optional (``pip install -r requirements-ray.txt``); :func:`require_pyarrow` says so when missing.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from resnet.errors import ConvNetsError
from resnet.io.atomic import atomic_file, sweep_stale


@dataclass
class Outcome:
    """The result for one input: its top-k ``(class index, name, probability)`` or an error."""

    input: str
    top: list[tuple[int, str, float]] = field(default_factory=list)
    error: Optional[str] = None

    def as_json(self) -> dict:
        """``{"input", "top": [{"index", "class", "probability"}...]}``, or ``{"input", "error"}``."""
        if self.error is not None:
            return {"input": self.input, "error": self.error}
        return {
            "input": self.input,
            "top": [{"index": i, "class": name, "probability": round(p, 6)} for i, name, p in self.top],
        }


#: Rows per part file by default: what a crash can lose, and the most results held in memory before writing.
DEFAULT_PART_ROWS = 1000
#: The columns of a results dataset, in order.
COLUMNS = ("input", "top_index", "top_class", "top_probability", "error")
#: What to install for the Parquet output and the Ray engine.
INSTALL_HINT = "pip install -r requirements-ray.txt"


class ResultsError(ConvNetsError):
    """A results dataset that cannot be opened, read or written (the message names it and says why)."""


class MissingDependencyError(ConvNetsError):
    """An optional package (pyarrow, Ray) that the feature asked for is not installed."""


def require_pyarrow(feature: str = "Parquet results (--output)") -> Any:
    """The ``pyarrow`` module, with ``pyarrow.parquet``, ``pyarrow.dataset`` and ``pyarrow.fs`` imported.

    Raises:
        MissingDependencyError: pyarrow is not installed; the message names ``feature`` and the install command.
    """
    try:
        import pyarrow
        import pyarrow.dataset  # noqa: F401
        import pyarrow.fs  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"{feature} needs pyarrow, which is not installed ({error}); install it with: {INSTALL_HINT}"
        ) from None
    return pyarrow


def schema() -> Any:
    """The ``pyarrow.Schema`` of a results dataset (:data:`COLUMNS`)."""
    pa = require_pyarrow()
    return pa.schema([
        ("input", pa.string()),
        ("top_index", pa.list_(pa.int32())),
        ("top_class", pa.list_(pa.string())),
        ("top_probability", pa.list_(pa.float32())),
        ("error", pa.string()),
    ])


def outcomes_table(outcomes: Iterable[Outcome]) -> Any:
    """The results of ``outcomes`` as a ``pyarrow.Table`` of :func:`schema`, one row each, in order."""
    pa = require_pyarrow()
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for outcome in outcomes:
        columns["input"].append(str(outcome.input))
        columns["top_index"].append([i for i, _, _ in outcome.top])
        columns["top_class"].append([name for _, name, _ in outcome.top])
        columns["top_probability"].append([p for _, _, p in outcome.top])
        columns["error"].append(outcome.error)
    return pa.Table.from_pydict(columns, schema=schema())


def table_outcomes(table: Any) -> list[Outcome]:
    """The rows of a results table (:func:`schema`'s columns) as :class:`Outcome` objects, in order."""
    rows = table.select(list(COLUMNS)).to_pylist()
    return [Outcome(row["input"], top=list(zip(row["top_index"] or [], row["top_class"] or [],
                                               row["top_probability"] or [])), error=row["error"])
            for row in rows]


# --------------------------------------------------------------------------- where the dataset lives


@dataclass
class Location:
    """A results folder: its pyarrow ``filesystem`` and the ``path`` in it; ``local`` for a local disk (where
    ``path`` is an ordinary path)."""

    text: str
    filesystem: Any
    path: str
    local: bool

    def join(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(text: str) -> bool:
    """Whether ``text`` is a URI (``scheme://...``) rather than a local path."""
    return bool(_URI.match(text))


def open_location(text: str, *, create: bool = False) -> Location:
    """The results folder ``text`` (a local path or a URI pyarrow opens), made when ``create`` and missing.

    Raises:
        ResultsError: the URI's file system is unknown or cannot be reached (credentials, region), the path
            is a file, or the folder cannot be made.
        MissingDependencyError: pyarrow is missing.
    """
    pa = require_pyarrow()
    if is_uri(text) and not text.lower().startswith("file://"):
        try:
            filesystem, path = pa.fs.FileSystem.from_uri(text)
        except (pa.ArrowException, ValueError, OSError) as error:
            raise ResultsError(f"cannot open the results location {text!r}: {error}") from None
        location = Location(text, filesystem, path.rstrip("/"), local=False)
    else:
        if text.lower().startswith("file://"):
            filesystem, path = pa.fs.FileSystem.from_uri(text)
        else:
            path = os.path.abspath(text)
        location = Location(text, pa.fs.LocalFileSystem(), path, local=True)
    try:
        info = location.filesystem.get_file_info(location.path)
        if info.type == pa.fs.FileType.File:
            raise ResultsError(f"the results location {text!r} is a file; name a folder (new or of an earlier run)")
        if info.type == pa.fs.FileType.NotFound and create:
            location.filesystem.create_dir(location.path, recursive=True)
    except (pa.ArrowException, OSError) as error:
        raise ResultsError(f"cannot use the results location {text!r}: {error}") from None
    return location


def part_files(location: Location) -> list[str]:
    """The part files of the dataset (``*.parquet``, hidden names left out), sorted."""
    pa = require_pyarrow()
    selector = pa.fs.FileSelector(location.path, allow_not_found=True, recursive=False)
    try:
        infos = location.filesystem.get_file_info(selector)
    except (pa.ArrowException, OSError) as error:
        raise ResultsError(f"cannot list the results in {location.text!r}: {error}") from None
    return sorted(info.path for info in infos
                  if info.type == pa.fs.FileType.File and info.base_name.endswith(".parquet")
                  and not info.base_name.startswith((".", "_")))


def read_results(text: str, columns: Optional[list[str]] = None) -> Any:
    """The whole results dataset at ``text`` as one ``pyarrow.Table`` (empty when there is none yet).

    Raises:
        ResultsError: a part file cannot be read, or holds other columns (not a results dataset).
    """
    pa = require_pyarrow()
    location = open_location(text)
    wanted = list(columns or COLUMNS)
    tables = []
    for path in part_files(location):
        try:
            tables.append(pa.parquet.read_table(path, filesystem=location.filesystem, columns=wanted))
        except (pa.ArrowException, OSError) as error:
            raise ResultsError(f"cannot read the results part {path!r} in {text!r}: {error}; a results folder "
                               f"holds only the Parquet files that classify writes") from None
    if not tables:
        return schema().empty_table().select(wanted)
    return pa.concat_tables(tables)


def read_done(text: str) -> dict[str, bool]:
    """The inputs already in the results dataset at ``text``: input -> whether it failed (an error row).

    Only the ``input`` and ``error`` columns are read. Empty for a folder that does not exist yet.
    """
    table = read_results(text, ["input", "error"])
    failed = table.column("error").is_null().to_pylist()
    return {name: not ok for name, ok in zip(table.column("input").to_pylist(), failed)}


# --------------------------------------------------------------------------- writing


def run_id() -> str:
    """A name shared by the part files of one run: UTC time and 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def part_name(run: str, tag: str, number: int) -> str:
    """``part-<run>-<tag>-<number>.parquet``: ``tag`` names the writer (``r00003`` for rank 3 of a torchrun job,
    ``t00012`` for Ray's write task 12)."""
    return f"part-{run}-{tag}-{number:06d}.parquet"


_STAGED_PART = re.compile(r"^\.(part-.+\.parquet)\.[0-9a-f]{8}-\d{10}-[0-9a-f]{8}\.partial\.parquet$")


def sweep_stale_parts(location: Location) -> int:
    """Remove the temporary part files that killed writers of this machine left (a writer still running keeps
    its own); returns how many were removed. Nothing to do on an object store (an upload is whole or absent)."""
    if not location.local:
        return 0
    try:
        names = os.listdir(location.path)
    except OSError:
        return 0
    removed = 0
    for name in names:
        found = _STAGED_PART.match(name)
        if found:
            removed += len(sweep_stale(os.path.join(location.path, found.group(1))))
    return removed


def write_part(location: Location, name: str, table: Any) -> str:
    """Write ``table`` as the part file ``name`` of ``location``, whole or not at all; returns its path.

    Raises:
        ResultsError: the file cannot be written (the folder is gone, no space, no permission...).
    """
    pa = require_pyarrow()
    path = location.join(name)
    try:
        if location.local:
            with atomic_file(path) as staging:
                pa.parquet.write_table(table, str(staging))
        else:
            sink = pa.BufferOutputStream()
            pa.parquet.write_table(table, sink)
            data = sink.getvalue()
            with location.filesystem.open_output_stream(path) as stream:  # one upload, visible when complete
                stream.write(data)
    except (pa.ArrowException, OSError) as error:
        raise ResultsError(f"cannot write the results part {path!r}: {error}") from None
    return path


class ResultWriter:
    """Appends :class:`Outcome` rows to a results dataset, a whole part file every ``part_rows`` rows.

    At most ``part_rows`` rows are held in memory. :meth:`close` (or leaving a ``with`` block, on an error or
    Ctrl+C too) writes the rows held; a part is never written twice. ``tag`` tells the writers of one run
    apart (one per rank)::

        with ResultWriter("results/", part_rows=1000) as writer:
            for outcome in classify_stream(...):
                writer.add(outcome)
    """

    def __init__(self, location: str, *, tag: str = "r00000", part_rows: int = DEFAULT_PART_ROWS,
                 run: Optional[str] = None) -> None:
        if isinstance(part_rows, bool) or not isinstance(part_rows, int) or part_rows < 1:
            raise ValueError(f"part_rows must be a positive integer, got {part_rows!r}")
        self.location = open_location(location, create=True)
        sweep_stale_parts(self.location)
        self.tag = tag
        self.part_rows = part_rows
        self.run = run or run_id()
        self.rows_written = 0
        self.failed = 0
        self.parts: list[str] = []
        self._held: list[Outcome] = []
        self._closed = False

    def add(self, outcome: Outcome) -> None:
        """Hold one result; a part file is written once ``part_rows`` are held."""
        if self._closed:
            raise ValueError("this ResultWriter is closed")
        self._held.append(outcome)
        if len(self._held) >= self.part_rows:
            self.flush()

    def flush(self) -> None:
        """Write the rows held (if any) as one part file."""
        if not self._held:
            return
        held, self._held = self._held, []
        self.parts.append(write_part(self.location, part_name(self.run, self.tag, len(self.parts)),
                                     outcomes_table(held)))
        self.rows_written += len(held)
        self.failed += sum(o.error is not None for o in held)

    def close(self) -> None:
        """Write the rows held and refuse more."""
        if not self._closed:
            self._closed = True
            self.flush()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
            return
        # Interrupted: the rows held are finished results; keep them unless writing is what failed.
        if not isinstance(value, ResultsError):
            try:
                self.close()
            except ResultsError:
                pass
        self._closed = True
