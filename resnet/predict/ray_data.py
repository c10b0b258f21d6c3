"""Classification as a Ray Data pipeline: list, decode in CPU tasks, classify in an actor pool, write Parquet.

:class:`Classifier` is the piece for Ray users: a callable class for ``Dataset.map_batches`` that loads the
model once per actor and classifies batches of images (``ray.data.read_images``), of paths or URIs, or of the
pixels :func:`decode_batch` cropped::

    ds = ray.data.read_images("s3://bucket/photos", include_paths=True, mode="RGB")
    results = ds.map_batches(Classifier, fn_constructor_kwargs={"top_k": 5}, concurrency=4, batch_size=32)

(``concurrency=N`` is ``compute=ray.data.ActorPoolStrategy(size=N)`` in Ray 2.51 and later.)

:func:`classify_with_ray` is ``python -m resnet classify --engine ray``: the inputs not yet in the results
dataset are decoded by CPU tasks (bad inputs become error rows), classified by an actor pool that holds the
model, and written by :class:`ResultsDatasink` as whole Parquet parts (:mod:`resnet.predict.results`), so a
rerun resumes. Ray retries the work of an actor that dies; a write task that Ray runs again writes its part
under the same name, so no row is ever written twice.

Ray and pyarrow are optional: ``pip install -r requirements-ray.txt``.
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from resnet.data.batch import failure_message
from resnet.data.decode import Decode, check_aspect_ratio, check_decode, to_rgb
from resnet.data.images import DEFAULT_TIMEOUT, load_for_resize
from resnet.data.preprocessing import (
    CROP_SIZE, DataConfig, ImageSize, build_crop_transform, data_config, pixels_to_tensor,
)
from resnet.io.download import Timeout
from resnet.predict.engine import top_classes
from resnet.predict.model import load_for_inference
from resnet.predict.results import (
    COLUMNS, DEFAULT_PART_ROWS, INSTALL_HINT, MissingDependencyError, open_location, part_name, read_done,
    read_results, require_pyarrow, run_id, schema, sweep_stale_parts, write_part,
)
from resnet.predict.sources import is_filesystem_uri, read_filesystem_image

try:
    import ray
    import ray.data
    from ray.data import Datasink
except ImportError as _error:  # pragma: no cover - the message is what a user without Ray sees
    raise MissingDependencyError(
        f"the Ray engine needs Ray Data, which is not installed ({_error}); install it with: {INSTALL_HINT}"
    ) from None

#: Columns that :class:`Classifier` reads an input's name from, in this order, when no image is in the batch.
INPUT_COLUMNS = ("input", "path", "uri", "url")
#: Threads that load inputs in one decoding task or actor (URLs and object stores wait on the network).
LOAD_THREADS = 4


def crop_pixels(image: Image.Image, image_size: ImageSize = CROP_SIZE) -> np.ndarray:
    """The (S, S, 3) uint8 RGB pixels of ``image`` resized (to 256/224 of ``image_size``, or as a
    :class:`~resnet.data.preprocessing.DataConfig` says) and centre-cropped to S, the geometric half of the
    CLI's preprocessing (:func:`resnet.data.preprocessing.build_crop_transform`).

    Raises:
        ImageLoadError: the image is more elongated than the preprocessing takes.
    """
    check_aspect_ratio(image, "the image", None)
    return np.asarray(_crop(image_size)(to_rgb(image)), dtype=np.uint8)


_CROPS: dict[DataConfig, Callable] = {}


def _crop(image_size: ImageSize) -> Callable:
    config = data_config(image_size)
    if config not in _CROPS:
        _CROPS[config] = build_crop_transform(config)
    return _CROPS[config]


def load_pixels(uri: str, image_size: ImageSize = CROP_SIZE, timeout: Timeout = DEFAULT_TIMEOUT,
                decode: Decode = "exact") -> np.ndarray:
    """Load ``uri`` (a path, a URL, a ``file://`` URI or a pyarrow URI such as ``s3://bucket/cat.jpg``) and
    :func:`crop_pixels` it; ``decode`` as :func:`resnet.data.images.load_input` takes it (the same pixels as the
    single-process command).

    Raises:
        ImageLoadError: it cannot be loaded (the message names it).
    """
    check_decode(decode)
    resize_to = data_config(image_size) if decode == "reduced" else None
    if is_filesystem_uri(uri):
        image = read_filesystem_image(uri, resize_to=resize_to)
    else:
        image = load_for_resize(uri, resize_to, timeout=timeout)
    return crop_pixels(image, image_size)


def _load_all(uris: Sequence[str], image_size: ImageSize, timeout: Timeout,
              decode: Decode = "exact") -> tuple[np.ndarray, list[Optional[str]]]:
    """Pixels of every input (zeros where it failed) and the error of each (None where it loaded)."""
    side = data_config(image_size).image_size
    pixels = np.zeros((len(uris), side, side, 3), dtype=np.uint8)
    errors: list[Optional[str]] = [None] * len(uris)

    def one(index: int) -> None:
        try:
            pixels[index] = load_pixels(uris[index], image_size, timeout, decode)
        except Exception as error:  # one bad input becomes an error row, never a failed batch
            errors[index] = failure_message(uris[index], error)

    if len(uris) > 1:
        with ThreadPoolExecutor(max_workers=min(LOAD_THREADS, len(uris)), thread_name_prefix="load") as pool:
            list(pool.map(one, range(len(uris))))
    elif uris:
        one(0)
    return pixels, errors


def decode_batch(batch: dict[str, np.ndarray], *, image_size: ImageSize = CROP_SIZE, timeout: Timeout = DEFAULT_TIMEOUT,
                 column: str = "input", decode: Decode = "exact") -> dict[str, np.ndarray]:
    """A ``map_batches`` function for CPU tasks: the inputs named in ``column`` in, and out the same column,
    ``pixels`` ((N, S, S, 3) uint8, :func:`crop_pixels`; zeros for an input that failed) and ``error`` (the
    message, or None). Inputs load in a few threads (downloads overlap); ``decode`` as :func:`load_pixels`."""
    uris = [str(uri) for uri in batch[column]]
    pixels, errors = _load_all(uris, image_size, timeout, decode)
    return {column: np.array(uris, dtype=object), "pixels": pixels, "error": np.array(errors, dtype=object)}


class Classifier:
    """A callable class for ``ray.data.Dataset.map_batches``: each actor loads the model once, then classifies
    the batches it is given.

    A batch may hold (checked in this order):

    - ``pixels``: (N, S, S, 3) uint8 images already resized and cropped (what :func:`decode_batch` gives), with
      an optional ``error`` column for the rows that failed to load;
    - ``image``: decoded RGB images of any size, as ``ray.data.read_images(..., mode="RGB")`` gives them;
      each is resized and cropped here as the command line does;
    - else the inputs' names in ``input_column`` (default: the first of ``input``, ``path``, ``uri``, ``url``
      present): paths, URLs or pyarrow URIs, loaded here. One that fails becomes an error row.

    It returns a ``pyarrow.Table``: the batch's other one-dimensional columns (``path`` of ``read_images(...,
    include_paths=True)``, say), then ``top_index``, ``top_class``, ``top_probability`` (the ``top_k`` classes,
    most probable first; empty lists on an error row) and ``error`` (None when classified). The top classes
    are those of ``python -m resnet classify`` for the same image and model.

    Constructor arguments (``fn_constructor_kwargs``): the model as :func:`resnet.predict.model.load_for_inference`
    takes it (``arch``, ``weights``, ``mirror``, ``onnx``, ``runtime``, ``precision``, ``device``,
    ``image_size``, ``threads``), ``top_k`` (default 5), ``timeout`` for URLs, ``decode`` for the inputs it loads
    (:func:`load_pixels`; default ``"exact"``) and ``input_column``. Weights files
    and ONNX files must be readable where the actors run; NVIDIA's weights are fetched into each node's hub cache.
    """

    def __init__(self, arch: str = "resnet50", *, weights: Optional[str] = None, mirror: Optional[str] = None,
                 onnx: Optional[str] = None, runtime: Optional[str] = None, precision: str = "fp32",
                 device: str = "auto", image_size: Optional[ImageSize] = None, threads: Optional[int] = None,
                 top_k: int = 5, timeout: Timeout = DEFAULT_TIMEOUT, input_column: Optional[str] = None,
                 decode: Decode = "exact") -> None:
        check_decode(decode)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        setup = load_for_inference(arch=arch, weights=weights, mirror=mirror, onnx=onnx, runtime=runtime,
                                   precision=precision, device=device, image_size=image_size, threads=threads)
        self.model, self.classes, self.device = setup.model, setup.classes, setup.device
        self.image_size = setup.image_size
        self.top_k = min(top_k, len(self.classes))
        self.timeout = timeout
        self.decode = decode
        self.input_column = input_column

    def __call__(self, batch: dict[str, Any]) -> Any:
        pixels, errors, used = self._pixels(batch)
        tops: list[list[tuple[int, str, float]]] = [[] for _ in errors]
        good = [i for i, error in enumerate(errors) if error is None]
        if good:
            rows = pixels if len(good) == len(errors) else pixels[good]
            if not rows.flags.writeable:  # Ray hands out read-only views of its object store
                rows = rows.copy()
            with torch.inference_mode():
                logits = self.model(pixels_to_tensor(rows).to(self.device))
            for i, top in zip(good, top_classes(logits, self.classes, self.top_k)):
                tops[i] = top
        return self._table(batch, used, tops, errors)

    def _pixels(self, batch: dict[str, Any]) -> tuple[np.ndarray, list[Optional[str]], set[str]]:
        """The batch's cropped pixels, each row's error, and the columns they were made from."""
        if "pixels" in batch:
            pixels = np.asarray(batch["pixels"])
            errors = [None if e is None or e != e else str(e) for e in batch["error"]] if "error" in batch \
                else [None] * len(pixels)
            return pixels, errors, {"pixels", "error"}
        if "image" in batch:
            images = batch["image"]
            side = data_config(self.image_size).image_size
            pixels = np.zeros((len(images), side, side, 3), dtype=np.uint8)
            errors: list[Optional[str]] = [None] * len(images)
            for i, array in enumerate(images):
                try:
                    pixels[i] = crop_pixels(Image.fromarray(np.asarray(array)), self.image_size)
                except Exception as error:  # one bad image becomes an error row
                    errors[i] = f"image {i} of the batch: {type(error).__name__}: {error}"
            return pixels, errors, {"image"}
        column = self.input_column or next((name for name in INPUT_COLUMNS if name in batch), None)
        if column is None or column not in batch:
            raise KeyError(f"Classifier: the batch has no image column ('pixels', 'image') and no input column "
                           f"({self.input_column or ', '.join(INPUT_COLUMNS)}); its columns: {', '.join(batch)}")
        pixels, errors = _load_all([str(uri) for uri in batch[column]], self.image_size, self.timeout,
                                   self.decode)
        return pixels, errors, set()

    def _table(self, batch: dict[str, Any], used: set[str], tops: list, errors: list[Optional[str]]) -> Any:
        pa = require_pyarrow()
        columns: dict[str, Any] = {}
        for name, values in batch.items():
            if name in used or name in COLUMNS[1:]:
                continue
            array = np.asarray(values) if not isinstance(values, list) else values
            if isinstance(array, np.ndarray) and array.ndim != 1:
                continue  # images and other arrays: the results do not carry them
            columns[name] = pa.array(list(array) if isinstance(array, np.ndarray) and array.dtype == object
                                     else array)
        types = schema()
        columns["top_index"] = pa.array([[i for i, _, _ in top] for top in tops], types.field("top_index").type)
        columns["top_class"] = pa.array([[c for _, c, _ in top] for top in tops], types.field("top_class").type)
        columns["top_probability"] = pa.array([[p for _, _, p in top] for top in tops],
                                              types.field("top_probability").type)
        columns["error"] = pa.array(errors, pa.string())
        return pa.table(columns)


class ResultsDatasink(Datasink):
    """Writes a Ray dataset of results (:data:`resnet.predict.results.COLUMNS`) as Parquet parts of at least
    ``part_rows`` rows (Ray bundles its blocks so), each part whole or absent.

    Part names carry the run and the write task's number: a task that Ray runs again (its worker died) writes
    the same name, so a row is never written twice. After the write, :attr:`rows` and :attr:`failed` count
    what was written.
    """

    def __init__(self, location: str, *, part_rows: int = DEFAULT_PART_ROWS, run: Optional[str] = None) -> None:
        self.location = location
        self.part_rows = part_rows
        self.run = run or run_id()
        self.rows = 0
        self.failed = 0

    @property
    def min_rows_per_write(self) -> Optional[int]:
        return self.part_rows

    def on_write_start(self, *args: Any, **kwargs: Any) -> None:
        sweep_stale_parts(open_location(self.location, create=True))

    def write(self, blocks: Any, ctx: Any) -> tuple[int, int]:
        pa = require_pyarrow()
        from ray.data.block import BlockAccessor

        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        tables = [table.select(list(COLUMNS)).cast(schema()) for table in tables if table.num_rows]
        if not tables:
            return 0, 0
        table = pa.concat_tables(tables)
        write_part(open_location(self.location), part_name(self.run, f"t{ctx.task_idx:05d}", 0), table)
        return table.num_rows, table.num_rows - table.column("error").null_count

    def on_write_complete(self, write_result: Any) -> None:
        returns = getattr(write_result, "write_returns", write_result)
        self.rows = sum(rows for rows, _ in returns)
        self.failed = sum(failed for _, failed in returns)


# --------------------------------------------------------------------------- the command's pipeline


@dataclass
class RayJob:
    """What :func:`classify_with_ray` did. ``listed``: distinct inputs asked for; ``present``: those already in
    the dataset before; ``written``/``failed_now``: rows written by this run and how many are errors;
    ``failed``: error rows among all the inputs asked for, earlier runs included; ``missing``: inputs asked for
    that are not in the dataset afterwards (none unless the job failed); ``duplicated``: inputs with more than
    one row."""

    listed: int
    present: int
    written: int = 0
    failed_now: int = 0
    failed: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)


def start_ray(address: Optional[str] = None, *, quiet: bool = False, num_cpus: Optional[int] = None) -> bool:
    """Connect to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``), shipping this
    package to its workers, or start a Ray of this machine alone (``num_cpus``: default all), listening on
    127.0.0.1 only, without dashboard or usage report (unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` or
    ``RAY_USAGE_STATS_ENABLED`` say otherwise). Without ``address``, ``RAY_ADDRESS`` names the cluster where it
    is set (as in a job of ``ray job submit``). Nothing happens when Ray is already initialised. Returns whether
    this started a Ray of this machine.

    A cluster with token authentication (Ray's default for ``ray start``) needs ``RAY_AUTH_MODE=token`` and its
    token (``~/.ray/auth_token`` or ``RAY_AUTH_TOKEN``) in this process's environment, as any Ray driver does."""
    if ray.is_initialized():
        return False
    import logging

    address = address or os.environ.get("RAY_ADDRESS") or None

    options: dict[str, Any] = {"logging_level": logging.WARNING if quiet else logging.INFO,
                               "include_dashboard": False}
    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options.update(_node_ip_address="127.0.0.1", num_cpus=num_cpus)
        with _single_machine():
            ray.init(**options)
        return True
    else:
        options.pop("include_dashboard")
        host = address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            options["_node_ip_address"] = "127.0.0.1"
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        options["runtime_env"] = {"py_modules": [package]}
    ray.init(address=address, **options)
    return False


@contextlib.contextmanager
def _single_machine() -> Iterator[None]:
    """Ray's single-machine mode while a local Ray starts: its servers listen on 127.0.0.1 only. By default Ray
    replaces 127.0.0.1 with the machine's network address and listens on every interface, even for a Ray that
    no other machine joins. The mode is Ray's ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which its processes read
    at start (they inherit it) and this one read at ``import ray`` (so it is set here for the start too)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    before = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if before is not None:
        constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() in ("1", "true")
    try:
        yield
    finally:
        if before is not None:
            constants.ENABLE_RAY_CLUSTER = before


def cluster_resources() -> dict[str, float]:
    """The cluster's total resources (``CPU``, ``GPU``...)."""
    return dict(ray.cluster_resources())


def classify_with_ray(
    uris: Sequence[str],
    output: str,
    *,
    classifier: dict[str, Any],
    batch_size: int = 32,
    actors: int = 1,
    actor_cpus: float = 1,
    actor_gpus: float = 0,
    decode_cpus: float = 1,
    decode_tasks: Optional[int] = None,
    image_size: ImageSize = CROP_SIZE,
    decode: Decode = "exact",
    timeout: Timeout = DEFAULT_TIMEOUT,
    part_rows: int = DEFAULT_PART_ROWS,
    progress: bool = True,
) -> RayJob:
    """Classify the ``uris`` not yet in the results dataset ``output`` on the Ray cluster (:func:`start_ray`
    first), writing their rows there; then check the dataset: every input once.

    ``classifier``: :class:`Classifier`'s constructor arguments. ``actors`` actors hold the model, each
    reserving ``actor_cpus`` CPUs and ``actor_gpus`` GPUs; decoding tasks reserve ``decode_cpus`` each
    (at most ``decode_tasks`` at once; default: as Ray sees fit) and crop to ``image_size``, decoding JPEGs as
    ``decode`` says (:func:`load_pixels`).
    """
    require_pyarrow()
    done = read_done(output)
    wanted = list(dict.fromkeys(str(uri) for uri in uris))  # one row per input, given twice or not
    pending = [uri for uri in wanted if uri not in done]
    job = RayJob(listed=len(wanted), present=len(wanted) - len(pending))
    if pending:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        blocks = min(len(pending), max(1, math.ceil(len(pending) / batch_size)), 100_000)
        items = ray.data.from_items([{"input": uri} for uri in pending], override_num_blocks=blocks)
        decoding: dict[str, Any] = {}
        if decode_tasks:
            decoding["compute"] = ray.data.TaskPoolStrategy(size=decode_tasks)
        decoded = items.map_batches(decode_batch, batch_size=batch_size, num_cpus=decode_cpus,
                                    fn_kwargs={"image_size": image_size, "timeout": timeout, "column": "input",
                                               "decode": decode},
                                    **decoding)
        remote: dict[str, Any] = {"num_cpus": actor_cpus}
        if actor_gpus:
            remote["num_gpus"] = actor_gpus
        results = decoded.map_batches(Classifier, fn_constructor_kwargs=classifier, batch_size=batch_size,
                                      compute=ray.data.ActorPoolStrategy(size=actors), **remote)
        sink = ResultsDatasink(output, part_rows=part_rows)
        results.write_datasink(sink)
        job.written, job.failed_now = sink.rows, sink.failed
    table = read_results(output, ["input", "error"])
    names = table.column("input").to_pylist()
    errors = table.column("error").is_null().to_pylist()
    counts: dict[str, int] = {}
    ok: dict[str, bool] = {}
    for name, fine in zip(names, errors):
        counts[name] = counts.get(name, 0) + 1
        ok[name] = fine
    job.missing = [uri for uri in wanted if uri not in counts]
    job.duplicated = [uri for uri in wanted if counts.get(uri, 0) > 1]
    job.failed = sum(1 for uri in wanted if uri in ok and not ok[uri])
    return job
