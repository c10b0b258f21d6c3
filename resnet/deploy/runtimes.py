"""Run an exported ONNX model with ONNX Runtime or OpenVINO behind one small interface.

:func:`load_onnx_model` returns an :class:`OnnxModel`: call it with a float32 NCHW batch (a torch
tensor, preprocessed as :mod:`resnet.data.preprocessing` defines) and it returns float32 logits (a torch
tensor), like the PyTorch model in eval mode. Its :attr:`~OnnxModel.class_names` come from the
export's metadata (``metadata_props`` of the ONNX file, written by :func:`resnet.cli.export.export_onnx`):
ImageNet's names for a 1000-class model, the ``class_names`` entry where an export has one.

A file that is not one of this repository's exports (no ``arch``/``output`` metadata) still runs
when its interface fits, with a warning: one float32 input of shape (N, 3, S, S) and one float32
output of shape (N, classes); a 1000-class output gets ImageNet's names. When the interface does not
fit, :class:`RuntimeModelError` says which input or output is wrong and how.

Runtimes (:data:`RUNTIMES`): ``onnxruntime`` (a requirement of this package's ONNX features) and
``openvino`` (optional: ``pip install openvino``). Session settings are the fastest measured on a
2-core AMD EPYC (Zen 5, AVX512-VNNI/BF16), see ``benchmarks/README.md``:

* ONNX Runtime: all graph optimisations (``ORT_ENABLE_ALL``: conv+activation/add fusion, NCHWc
  blocked layouts on x86), sequential execution, ``threads`` intra-op threads (default: the threads
  torch uses, one per physical core), one inter-op thread.
* OpenVINO: the ``LATENCY`` performance hint (one stream using every thread, which is what one
  synchronous caller needs), ``INFERENCE_NUM_THREADS`` = ``threads``, and an explicit inference
  precision: ``precision="fp32"`` (the default: the same numbers on every CPU) or ``"bf16"``
  (OpenVINO converts the fp32 graph to bfloat16 where the CPU has native BF16). An INT8 (QDQ) model
  runs its quantized operators in INT8 under either.

What a runtime makes of a file is kept between runs (:func:`runtime_cache_folder`), in
``<torch.hub.get_dir()>/nvidia_convnets_runtimes`` unless ``cache_dir`` says otherwise: ONNX Runtime's optimized
graph (``SessionOptions.optimized_model_filepath``, loaded again without re-optimising) and OpenVINO's compiled
blob (its ``CACHE_DIR``). A folder belongs to one file, runtime version, CPU and settings, and is emptied when the
file changes (its size or modification time, then its SHA-256, differ from what the folder records).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import secrets
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
import torch

from resnet.weights.cache import file_sha256

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "OnnxModel",
    "RuntimeModelError",
    "RuntimeUnavailableError",
    "default_cache_dir",
    "load_onnx_model",
    "read_onnx_metadata",
    "runtime_cache_folder",
]

#: Runtimes that :func:`load_onnx_model` can use.
RUNTIMES = ("onnxruntime", "openvino")
#: Inference precisions: ``fp32`` everywhere; ``bf16`` (OpenVINO only) where the CPU computes it natively.
PRECISIONS = ("fp32", "bf16")

_INSTALL = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install openvino"}


#: The largest ONNX file read: 2 GiB, protobuf's limit for one message (larger models keep their weights in
#: external data files beside the model).
MAX_ONNX_BYTES = 2 << 30
#: The most classes a model may declare (ImageNet-21k has 21,843): a head of 2**28 classes would otherwise
#: make a list of 2**28 names before anything runs.
MAX_CLASSES = 1 << 20
#: The largest batch size baked into a graph that is run: a batch of B is run in padded slices of B images
#: (616 MB for 1024 images of 224 x 224).
MAX_FIXED_BATCH = 1024
#: The largest image side an input may declare (an (N, 3, S, S) input; 224 for NVIDIA's weights).
MAX_IMAGE_SIDE = 4096


class RuntimeModelError(ValueError):
    """The file cannot be run as an image classifier; the message names the file and what is wrong.

    ``str(error)`` words any advice for the Python API, ``error.describe("cli")`` for the command line.
    """

    def __init__(self, message: str, cli_message: Optional[str] = None) -> None:
        super().__init__(message)
        self.cli_message = cli_message

    def describe(self, audience: str = "python") -> str:
        """The message worded for ``audience``: ``"python"`` (the default) or ``"cli"``."""
        return self.cli_message if audience == "cli" and self.cli_message is not None else str(self)


class RuntimeUnavailableError(ImportError):
    """The runtime asked for is not installed; the message names the ``pip install`` that adds it."""


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime`` (one of :data:`RUNTIMES`) can be imported here."""
    try:
        _import_runtime(runtime)
    except RuntimeUnavailableError:
        return False
    return True


def _import_runtime(runtime: str) -> Any:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    try:
        if runtime == "openvino":
            import openvino

            return openvino
        import onnxruntime

        return onnxruntime
    except ImportError as error:
        other = next(r for r in RUNTIMES if r != runtime)
        raise RuntimeUnavailableError(
            f"the {runtime} runtime is not installed ({error}); install it with '{_INSTALL[runtime]}', "
            f"or use the {other} runtime"
        ) from None


def read_onnx_metadata(path: os.PathLike | str) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file as a dict; JSON values are decoded, others stay text.

    Raises:
        RuntimeModelError: the file does not exist or is not an ONNX model.
    """
    return _load_proto(Path(path))[1]


def _load_proto(path: Path) -> tuple[Any, dict[str, Any]]:
    try:
        import onnx
    except ImportError as error:
        raise RuntimeUnavailableError(
            f"reading ONNX files needs the onnx package, not installed here ({error}); install it with "
            "'pip install onnx'"
        ) from None

    from resnet.io.filetypes import looks_like_onnx, looks_like_torch_checkpoint, not_a_regular_file, read_head

    what = not_a_regular_file(path)
    if what is not None:
        raise RuntimeModelError(f"ONNX model {str(path)!r} is {what}, not a file; give the path of the .onnx file")
    if not path.is_file():
        raise RuntimeModelError(f"ONNX model {str(path)!r} does not exist; check the path")
    # The first bytes say what the file is before anything reads it whole.
    try:
        head = read_head(path)
    except OSError as error:
        raise RuntimeModelError(f"cannot read ONNX model {str(path)!r}: {error.strerror or error}") from None
    if looks_like_torch_checkpoint(head):
        start = f"{str(path)!r} is a PyTorch checkpoint, not an ONNX model"
        raise RuntimeModelError(
            f"{start}: load it with the hub entrypoints (pretrained=False, pretrained_from_file=PATH), or export it "
            "to ONNX first",
            cli_message=f"{start}: give it as --weights FILE, or export it with 'python -m resnet export --weights "
            "FILE --format onnx' first",
        )
    if not looks_like_onnx(head):
        raise RuntimeModelError(f"{str(path)!r} is not an ONNX model (its first bytes are not those of an ONNX "
                                "model file); check the path")
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise RuntimeModelError(f"{str(path)!r} ({size:,} bytes) is larger than an ONNX model file can be "
                                f"({MAX_ONNX_BYTES:,} bytes, protobuf's limit); it is not a usable ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise RuntimeModelError(f"{str(path)!r} is not an ONNX model ({type(error).__name__}: {error})") from None
    _check_external_data(proto, path)
    metadata: dict[str, Any] = {}
    for entry in proto.metadata_props:
        try:
            metadata[entry.key] = json.loads(entry.value)
        except ValueError:
            metadata[entry.key] = entry.value
    return proto, metadata


def _all_tensors(proto: Any) -> Any:
    """Every TensorProto of a model: initializers, sparse initializers and node attributes, in subgraphs and
    functions too (each may keep its data in an external file)."""

    def graph_tensors(graph: Any) -> Any:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: Any) -> Any:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            for sparse in attribute.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attribute.HasField("g"):
                yield from graph_tensors(attribute.g)
            for graph in attribute.graphs:
                yield from graph_tensors(graph)

    yield from graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from node_tensors(node)
    for info in proto.training_info:
        for graph in (info.initialization, info.algorithm):
            yield from graph_tensors(graph)


def _check_external_data(proto: Any, path: Path) -> None:
    """Refuse a model whose tensors keep their data in a file outside its folder, before a runtime reads it.

    A tensor's external data ``location`` must be a relative path that, with symbolic links resolved, names a
    regular file inside the model's folder, and its ``offset`` / ``length`` must lie within that file: not an
    absolute path, ``..``, a link out of the folder, a device or ``/proc``.

    Raises:
        RuntimeModelError: naming the tensor and its location.
    """
    import onnx

    from resnet.io.filetypes import not_a_regular_file

    folder = path.parent
    root = folder.resolve()
    for tensor in _all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        start = f"{str(path)!r}: tensor {tensor.name!r} keeps its data in {location!r}"
        problem = None
        target = folder / location
        if not location or "\0" in location:
            problem = "which is not a file name"
        elif os.path.isabs(location) or location.startswith(("/", "\\")) \
                or ".." in location.replace("\\", "/").split("/"):
            problem = "outside the model's folder (an absolute path or one through '..')"
        else:
            resolved = target.resolve()
            if resolved != root and root not in resolved.parents:
                problem = f"which leads outside the model's folder (to {str(resolved)!r})"
            elif not target.exists():
                problem = "which does not exist beside the model"
            elif not_a_regular_file(target) is not None:
                problem = f"which is {not_a_regular_file(target)}, not a file"
        if problem is None:
            size = target.stat().st_size
            try:
                offset, length = int(entries.get("offset", 0)), int(entries.get("length", size))
            except ValueError:
                offset, length = -1, -1
            if offset < 0 or length < 0 or offset + length > size:
                problem = (f"at offset {entries.get('offset', 0)}, length {entries.get('length', '(the rest)')}, "
                           f"beyond the file's {size:,} bytes")
        if problem is not None:
            raise RuntimeModelError(f"{start}, {problem}; an ONNX model's external data must be files in its own "
                                    "folder, and this one is refused before any runtime reads it")


def _dims(value: Any) -> list[Any]:
    """Shape of a graph input/output: ints for fixed axes, names (or None) for dynamic ones."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _interface(proto: Any, path: Path) -> tuple[str, str, Optional[int], Optional[int], Optional[int]]:
    """(input name, output name, fixed batch, classes, image side), each ``None`` where the graph leaves it
    dynamic; RuntimeModelError when the interface does not fit."""
    import onnx

    from resnet.data.preprocessing import MIN_IMAGE_SIZE

    want = f"(N, 3, S, S), S from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIDE:,} (224 for NVIDIA's weights)"

    initializers = {init.name for init in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    outputs = list(proto.graph.output)
    where = f"{str(path)!r}"
    if len(inputs) != 1:
        raise RuntimeModelError(
            f"{where} has {len(inputs)} inputs ({', '.join(v.name for v in inputs) or 'none'}); an image "
            f"classifier here takes one float32 input of shape {want}"
        )
    if len(outputs) != 1:
        named = [v for v in outputs if v.name == "logits"]
        if len(named) != 1:
            raise RuntimeModelError(
                f"{where} has {len(outputs)} outputs ({', '.join(v.name for v in outputs) or 'none'}); "
                "expected one float32 output of shape (N, classes), or one named 'logits'"
            )
        outputs = named
    (graph_input,), (graph_output,) = inputs, outputs
    float32 = onnx.TensorProto.FLOAT
    in_dims, out_dims = _dims(graph_input), _dims(graph_output)
    in_type = graph_input.type.tensor_type.elem_type
    sides = {d for d in in_dims[2:] if isinstance(d, int)}  # fixed sides; dynamic ones are names or None
    channels_fit = len(in_dims) == 4 and (not isinstance(in_dims[1], int) or in_dims[1] == 3)
    sides_fit = len(sides) <= 1 and all(MIN_IMAGE_SIZE <= d <= MAX_IMAGE_SIDE for d in sides)
    if in_type != float32 or not channels_fit or not sides_fit:
        raise RuntimeModelError(
            f"{where}: input {graph_input.name!r} is {onnx.TensorProto.DataType.Name(in_type).lower()} of shape "
            f"{_show(in_dims)}, but the images are float32 of shape {want}: NCHW RGB, normalised as "
            "resnet.data.preprocessing says"
        )
    side = next(iter(sides), None)
    out_type = graph_output.type.tensor_type.elem_type
    if out_type != float32 or len(out_dims) != 2:
        raise RuntimeModelError(
            f"{where}: output {graph_output.name!r} is {onnx.TensorProto.DataType.Name(out_type).lower()} of shape "
            f"{_show(out_dims)}; expected float32 logits of shape (N, classes)"
        )
    batch = in_dims[0] if isinstance(in_dims[0], int) and in_dims[0] > 0 else None
    classes = out_dims[1] if isinstance(out_dims[1], int) and out_dims[1] > 0 else None
    if batch is not None and batch > MAX_FIXED_BATCH:
        raise RuntimeModelError(
            f"{where}: input {graph_input.name!r} declares a fixed batch of {batch:,} images; at most "
            f"{MAX_FIXED_BATCH:,} are run (each call runs whole batches of that size): export it with a dynamic "
            "or smaller batch axis"
        )
    _check_class_count(classes, f"{where}: output {graph_output.name!r}")
    return graph_input.name, graph_output.name, batch, classes, side


def _metadata_side(metadata: dict[str, Any]) -> Optional[int]:
    """The image side the export's metadata states (``input.shape`` (batch, 3, S, S)), or ``None``."""
    from resnet.data.preprocessing import MIN_IMAGE_SIZE

    shape = metadata.get("input", {}).get("shape") if isinstance(metadata.get("input"), dict) else None
    if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[2], int) and shape[2] == shape[3] \
            and not isinstance(shape[2], bool) and MIN_IMAGE_SIZE <= shape[2] <= MAX_IMAGE_SIDE:
        return shape[2]
    return None


def _metadata_data_config(metadata: dict[str, Any], side: int):
    """How to prepare images of ``side`` for the export: the resize and interpolation its metadata's
    ``preprocessing`` states (an EfficientNet's bicubic resize to 412 for 380), where they are valid and for that
    side; else the ResNets' (256/224 of the side, bilinear)."""
    from resnet.data.preprocessing import DataConfig, data_config

    stated = metadata.get("preprocessing")
    if isinstance(stated, dict) and stated.get("center_crop") == side:
        try:
            return DataConfig(side, stated.get("resize"), stated.get("interpolation"))
        except ValueError:
            pass
    return data_config(side)


def _check_class_count(classes: Optional[int], what: str) -> None:
    if classes is not None and classes > MAX_CLASSES:
        raise RuntimeModelError(f"{what} declares {classes:,} classes, more than the {MAX_CLASSES:,} an image "
                                "classifier here may have; the file is damaged or not a classifier")


def _show(dims: Sequence[Any]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _metadata_classes(metadata: dict[str, Any]) -> Optional[int]:
    """The number of classes the export's metadata states (``output.shape[1]``), or ``None``."""
    output = metadata.get("output")
    shape = output.get("shape") if isinstance(output, dict) else None
    if isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int):
        return shape[1]
    return None


def _class_names(metadata: dict[str, Any], classes: Optional[int], path: Path, ours: bool) -> Optional[list[str]]:
    """The class names the file's metadata gives (made printable, :mod:`resnet.data.names`), ImageNet's for a
    1000-class model, else ``None``. Names that do not fit the output are left out with a warning."""
    from resnet.data.names import load_class_names

    stored = metadata.get("class_names")
    if isinstance(stored, list):
        _check_class_count(len(stored), f"{str(path)!r}: the metadata's class_names")
    names = load_class_names(stored, classes, f"{str(path)!r}")
    if names is not None:
        return names
    if classes in (None, 1000):
        from resnet.data.synsets import imagenet_class_names

        if not ours:
            warnings.warn(
                f"{str(path)!r} has no export metadata of this repository (arch, output); it is run as an "
                "ImageNet classifier with ImageNet's 1000 class names",
                UserWarning,
                stacklevel=4,
            )
        return imagenet_class_names()
    if not ours:
        warnings.warn(
            f"{str(path)!r} has no export metadata of this repository and {classes} classes; "
            "its classes are named by number",
            UserWarning,
            stacklevel=4,
        )
    return None


class OnnxModel:
    """An ONNX model running on :attr:`runtime`; call it with a float32 (N, 3, S, S) torch tensor
    (S = :attr:`image_size`).

    Attributes:
        path: the ONNX file.
        runtime: ``onnxruntime`` or ``openvino``.
        precision: ``fp32`` or ``bf16`` (OpenVINO's inference precision for the float parts).
        threads: intra-op threads.
        metadata: the export's metadata (empty for a file from elsewhere).
        class_names: one name per output class (``class 0``, ``class 1`` ... where the file names none).
        classes: the class names the file's metadata gives (ImageNet's for a 1000-class model), or ``None``
            where it gives none: as ``model.classes`` of the PyTorch models.
        quantized: whether the graph holds INT8 (QDQ) operators.
        input_name, output_name: the graph's interface.
        fixed_batch: the batch size baked into the graph, or ``None`` when the batch axis is dynamic
            (a fixed-batch model is run in slices of that size).
        image_size: the side S of the (N, 3, S, S) images it takes: the graph's, else the export's metadata's,
            else 224.
        data_config: how images become its input (:class:`resnet.data.preprocessing.DataConfig`): the resize and
            interpolation of the export's metadata (the model's own: bicubic for an EfficientNet), else the
            ResNets' at :attr:`image_size`.
        cache: the folder where the runtime keeps its optimized model of this file between runs
            (:func:`runtime_cache_folder`), or ``None``.
    """

    def __init__(self, path: Path, runtime: str, proto: Any, metadata: dict[str, Any], *,
                 threads: int, precision: str, cache: Optional[Path] = None) -> None:
        self.path = path
        self.runtime = runtime
        self.precision = precision
        self.threads = threads
        self.metadata = metadata
        self.input_name, self.output_name, self.fixed_batch, classes, side = _interface(proto, path)
        self.image_size: int = side or _metadata_side(metadata) or 224
        self.data_config = _metadata_data_config(metadata, self.image_size)
        ours = "arch" in metadata and "output" in metadata
        if classes is None:  # a dynamic class axis: the metadata may say
            classes = _metadata_classes(metadata)
            _check_class_count(classes, f"{str(path)!r}: the metadata's output shape")
        self.classes = _class_names(metadata, classes, path, ours)
        self.class_names = self.classes or [f"class {i}" for i in range(classes or 0)]
        self.quantized = any(node.op_type in ("QuantizeLinear", "QLinearConv") for node in proto.graph.node)
        self.cache = cache
        self._run = _make_runner(runtime, path, self.input_name, self.output_name, threads=threads,
                                 precision=precision, cache=cache)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes), float32 on the CPU, for the float32 (N, 3, S, S) ``batch`` (S = image_size)."""
        want = (3, self.image_size, self.image_size)
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or tuple(batch.shape[1:]) != want:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"{self.path.name}: expected a float32 batch of shape (N, {', '.join(map(str, want))}), "
                             f"got {shape}")
        x = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        try:
            if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
                out = self._run(x)
            else:
                out = np.concatenate([self._run_padded(part) for part in np.split(
                    x, range(self.fixed_batch, x.shape[0], self.fixed_batch))]) if len(x) else np.empty((0, 0))
            logits = torch.from_numpy(np.array(out, dtype=np.float32, copy=True))
        except MemoryError:
            raise RuntimeModelError(f"{self.runtime} ran out of memory running {str(self.path)!r} on a batch of "
                                    f"{x.shape[0]} images") from None
        except Exception as error:  # the runtime's own errors: a graph that fails on real input
            text = str(error).strip().splitlines()
            raise RuntimeModelError(f"{self.runtime} failed running {str(self.path)!r} on a batch of {x.shape[0]} "
                                    f"images: {text[0] if text else type(error).__name__}") from None
        if logits.dim() != 2 or logits.shape[0] != batch.shape[0] or logits.shape[1] != self.num_classes:
            raise RuntimeModelError(
                f"{str(self.path)!r} returned an output of shape {tuple(logits.shape)} for a batch of "
                f"{batch.shape[0]}; expected ({batch.shape[0]}, {self.num_classes})"
            )
        return logits

    def _run_padded(self, part: np.ndarray) -> np.ndarray:
        size = part.shape[0]
        if size < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - size, *part.shape[1:]), dtype=part.dtype)
            return self._run(np.concatenate([part, pad]))[:size]
        return self._run(part)

    forward = __call__

    def __repr__(self) -> str:
        return (f"OnnxModel({str(self.path)!r}, runtime={self.runtime!r}, precision={self.precision!r}, "
                f"threads={self.threads}, classes={self.num_classes}, quantized={self.quantized})")


def _make_runner(runtime: str, path: Path, input_name: str, output_name: str, *, threads: int, precision: str,
                 cache: Optional[Path] = None):
    module = _import_runtime(runtime)
    if runtime == "onnxruntime":
        session = _ort_session(module, path, threads, cache)

        def run(x: np.ndarray) -> np.ndarray:
            return session.run([output_name], {input_name: x})[0]

        return run

    import openvino.properties.hint as hints

    core = module.Core()
    config = {
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        "INFERENCE_NUM_THREADS": threads,
        hints.inference_precision: module.Type.bf16 if precision == "bf16" else module.Type.f32,
    }
    try:
        with keeping_signal_stack():
            if cache is not None:
                # From the file's path, so that a compiled blob in the cache is used without reading the model.
                compiled = core.compile_model(str(path), "CPU", {**config, "CACHE_DIR": str(cache)})
            else:
                compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as error:
        raise RuntimeModelError(f"OpenVINO cannot load {str(path)!r}: {error}") from None
    request = compiled.create_infer_request()
    output = compiled.output(output_name) if len(compiled.outputs) > 1 else compiled.output(0)

    def run(x: np.ndarray) -> np.ndarray:
        # The result tensor is reused by the next call: __call__ copies it.
        return request.infer({input_name: x}, share_inputs=True, share_outputs=True)[output]

    return run


class _SignalStack(ctypes.Structure):
    """POSIX ``stack_t``: a thread's alternate signal stack."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _signal_stack() -> tuple[Any, Optional[_SignalStack]]:
    """libc and the calling thread's alternate signal stack, or (None, None) where they cannot be read."""
    if not sys.platform.startswith("linux"):
        return None, None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = _SignalStack()
        if libc.sigaltstack(None, ctypes.byref(current)) != 0:
            return None, None
    except (OSError, AttributeError):
        return None, None
    return libc, current


@contextlib.contextmanager
def keeping_signal_stack():
    """Run the block, then give the calling thread back the alternate signal stack it had before.

    OpenVINO's ``compile_model`` of a file path with a ``CACHE_DIR`` (openvino 2026.4 on Linux) leaves the calling
    thread an alternate signal stack in memory it frees later. Python runs its signal handlers on that stack, so
    the next Ctrl+C (or any signal with a handler) crashed the process with a segmentation fault instead of
    stopping it (``tests/test_runtime_cache.py``). Elsewhere than Linux, nothing is done.
    """
    libc, before = _signal_stack()
    try:
        yield
    finally:
        if libc is not None and before is not None:
            after = _SignalStack()
            if libc.sigaltstack(None, ctypes.byref(after)) == 0 and \
                    (after.ss_sp, after.ss_flags, after.ss_size) != (before.ss_sp, before.ss_flags, before.ss_size):
                libc.sigaltstack(ctypes.byref(before), None)


#: ONNX Runtime's optimized graph of a file, in its cache folder.
ORT_OPTIMIZED_NAME = "optimized.onnx"
#: The record of the file a cache folder belongs to.
CACHE_RECORD_NAME = "source.json"


def _ort_options(module: Any, threads: int, level: Any) -> Any:
    options = module.SessionOptions()
    options.graph_optimization_level = level
    options.execution_mode = module.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def _ort_session(module: Any, path: Path, threads: int, cache: Optional[Path]) -> Any:
    """An ONNX Runtime session of ``path``: from the optimized graph in ``cache`` when there is one (no graph
    optimisation then), else optimising ``path`` and keeping the result there for the next run."""
    levels = module.GraphOptimizationLevel
    providers = ["CPUExecutionProvider"]
    if cache is not None:
        optimized = cache / ORT_OPTIMIZED_NAME
        if optimized.is_file():
            try:
                return module.InferenceSession(str(optimized), _ort_options(module, threads, levels.ORT_DISABLE_ALL),
                                               providers=providers)
            except Exception:  # a damaged cache file: made again below
                optimized.unlink(missing_ok=True)
    options = _ort_options(module, threads, levels.ORT_ENABLE_ALL)
    partial = None
    if cache is not None:
        # Written under a name of its own, then renamed: another process never reads a half-written graph.
        partial = cache / f".{ORT_OPTIMIZED_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        options.optimized_model_filepath = str(partial)
        # ONNX Runtime warns on stderr that the saved graph is for this CPU: the cache folder is keyed on it.
        options.log_severity_level = 3
    try:
        session = module.InferenceSession(str(path), options, providers=providers)
    except Exception as error:
        raise RuntimeModelError(f"ONNX Runtime cannot load {str(path)!r}: {error}") from None
    finally:
        if partial is not None:
            try:
                if partial.is_file():
                    os.replace(partial, cache / ORT_OPTIMIZED_NAME)
            except OSError:  # the cache is a convenience: a folder that cannot be written costs nothing else
                partial.unlink(missing_ok=True)
    return session


def default_cache_dir() -> Path:
    """Where runtimes keep what they make of a file between runs: ``<torch.hub.get_dir()>/nvidia_convnets_runtimes``
    (``~/.cache/torch/hub/...``; honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "nvidia_convnets_runtimes"


def _runtime_settings(runtime: str, threads: int, precision: str) -> dict[str, Any]:
    """What a runtime's optimized model depends on besides the file: its version, the CPU, the settings."""
    if runtime == "onnxruntime":
        import onnxruntime

        version = onnxruntime.__version__
    else:
        import openvino

        version = openvino.get_version()
    return {"runtime": runtime, "version": version, "machine": platform.machine(),
            "cpu": torch.backends.cpu.get_cpu_capability(), "threads": threads, "precision": precision}


def runtime_cache_folder(path: Path, cache_dir: Path, settings: dict[str, Any]) -> Optional[Path]:
    """The folder of ``cache_dir`` for the file ``path`` run with ``settings`` (JSON values), made if missing and
    emptied when the file changed since it was filled; ``None`` when it cannot be made or written.

    The folder is named by the file's resolved path and ``settings``; its ``source.json`` records the file's size,
    modification time and SHA-256. The same size and time: the folder is current (nothing is read). Otherwise the
    file is hashed: the same content (a copy, a ``touch``) keeps the folder, other content empties it.
    """
    try:
        info = path.stat()
        key = json.dumps({"file": str(path.resolve()), **settings}, sort_keys=True)
        folder = cache_dir / hashlib.sha256(key.encode()).hexdigest()[:32]
        record_path = folder / CACHE_RECORD_NAME
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and record.get("size") == info.st_size and record.get(
                "mtime_ns") == info.st_mtime_ns:
            return folder
        digest = file_sha256(path)
        if not (isinstance(record, dict) and record.get("size") == info.st_size and record.get("sha256") == digest):
            shutil.rmtree(folder, ignore_errors=True)  # made for another content of the file
        folder.mkdir(parents=True, exist_ok=True)
        record = {"file": str(path.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": digest,
                  **settings}
        partial = folder / f".{CACHE_RECORD_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, record_path)
        return folder
    except OSError:  # an unwritable cache: run without one
        return None


def _has_external_data(proto: Any) -> bool:
    import onnx

    return any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in _all_tensors(proto))


def load_onnx_model(
    path: os.PathLike | str,
    runtime: str = "onnxruntime",
    *,
    threads: Optional[int] = None,
    precision: str = "fp32",
    cache_dir: Union[os.PathLike, str, None, Literal[False]] = None,
) -> OnnxModel:
    """Open the ONNX file ``path`` on ``runtime`` (``onnxruntime`` or ``openvino``) for classification.

    ``threads``: intra-op threads (default ``torch.get_num_threads()``, one per physical core).
    ``precision``: ``fp32`` (default) or ``bf16`` (OpenVINO only: its bf16 inference precision hint,
    for CPUs with native BF16; the input and output stay float32).
    ``cache_dir``: where the runtime's optimized model is kept between runs (:func:`runtime_cache_folder`;
    default :func:`default_cache_dir`); ``False`` keeps nothing. A cache that cannot be written is skipped, and so
    is a model that keeps its weights in external data files.

    Raises:
        RuntimeUnavailableError: the runtime is not installed (the message names the pip command).
        RuntimeModelError: the file is missing, not ONNX, or its interface is not an image classifier's.
        ValueError: unknown ``runtime`` or ``precision``, ``threads`` below 1, or ``bf16`` on ONNX Runtime.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and runtime != "openvino":
        raise ValueError("precision='bf16' is OpenVINO's inference precision hint; use runtime='openvino'")
    if threads is None:
        threads = torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    _import_runtime(runtime)  # a missing runtime is reported before the file is read
    path = Path(path)
    proto, metadata = _load_proto(path)
    cache = None
    # A model with external data is not cached: its record would not see those files change.
    if cache_dir is not False and not _has_external_data(proto):
        cache = runtime_cache_folder(path, Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                                     _runtime_settings(runtime, threads, precision))
    return OnnxModel(path, runtime, proto, metadata, threads=threads, precision=precision, cache=cache)
