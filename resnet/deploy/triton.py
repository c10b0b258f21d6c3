"""Triton Inference Server model repositories: one model folder per backend, with config.pbtxt and labels.

``write_triton_repository(model, root, model_name="resnet50")`` writes ::

    resnet50_onnx/config.pbtxt       ONNX Runtime backend
    resnet50_onnx/labels.txt         class names, for Triton's classification extension
    resnet50_onnx/1/model.onnx
    resnet50_libtorch/config.pbtxt   PyTorch (libtorch) backend: TorchScript, the only format it loads
    resnet50_libtorch/labels.txt
    resnet50_libtorch/1/model.pt

and :func:`write_triton_model` one such folder for a model file made elsewhere (``python -m resnet
export --triton DIR --int8`` adds ``resnet50_int8_onnx``, the INT8 model on the ONNX Runtime backend).
The configs describe the interface of :mod:`resnet.deploy.exporters` (input ``input`` FP32 [3, S, S], S = 224 unless
the model was trained at another size,
output ``logits`` FP32 [classes], Triton's own batch axis) with dynamic batching on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torch import nn

from resnet.deploy.exporters import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    export_onnx,
    export_torchscript,
)
from resnet.data.names import check_label_names
# max_batch_size by default and backend -> (folder suffix, platform, model file) are data (also this module's names).
from resnet.deploy.choices import BACKENDS, DEFAULT_MAX_BATCH_SIZE  # noqa: F401
from resnet.data.preprocessing import CROP_SIZE

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_BATCH_SIZE",
    "LABELS_FILE",
    "TRITON_VERSION",
    "triton_config",
    "model_file",
    "model_folder_name",
    "write_triton_model",
    "write_triton_repository",
]

#: The model version folder written into a Triton repository.
TRITON_VERSION = "1"
#: Class-name file written beside config.pbtxt for 1000-class (ImageNet) models.
LABELS_FILE = "labels.txt"


def triton_config(
    name: str,
    backend: str,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    num_classes: int = 1000,
    label_filename: Optional[str] = None,
    max_queue_delay_microseconds: int = 100,
    image_size: int = CROP_SIZE,
) -> str:
    """Text of a Triton ``config.pbtxt`` (ModelConfig in protobuf text format) for an exported model.

    ``backend`` is ``onnxruntime`` or ``pytorch``. The batch axis is Triton's (``max_batch_size``),
    so ``dims`` leave it out: input ``[3, image_size, image_size]``, output ``[num_classes]``, both TYPE_FP32.
    Dynamic batching is on.
    """
    if backend not in BACKENDS:
        raise ExportError(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be at least 1, not {max_batch_size}")
    _, platform, filename = BACKENDS[backend]
    dims_in = ", ".join(str(d) for d in (3, image_size, image_size))
    label = f'\n    label_filename: "{label_filename}"' if label_filename else ""
    return f"""\
name: "{name}"
backend: "{backend}"
platform: "{platform}"
default_model_filename: "{filename}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ {dims_in} ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {num_classes} ]{label}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {max_queue_delay_microseconds}
}}
"""


def model_folder_name(model_name: str, backend: str) -> str:
    """The folder of ``model_name``'s model for ``backend`` in a repository: ``<model_name>_onnx`` / ``_libtorch``."""
    return f"{model_name}_{BACKENDS[backend][0]}"


def model_file(root: os.PathLike | str, model_name: str, backend: str) -> Path:
    """Where :func:`write_triton_repository` puts the model file of ``backend``: ``root/<folder>/1/model.onnx`` ..."""
    return Path(root) / model_folder_name(model_name, backend) / TRITON_VERSION / BACKENDS[backend][2]


def write_triton_model(
    root: os.PathLike | str,
    name: str,
    backend: str,
    write_model: Callable[[Path], object],
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    num_classes: int = 1000,
    class_names: Optional[Sequence[str]] = None,
    image_size: int = CROP_SIZE,
) -> Path:
    """Write the model folder ``root/name`` for Triton's ``backend``; return it.

    ``write_model(path)`` writes the model file at ``path`` (``name/1/model.onnx`` or ``name/1/model.pt``);
    ``config.pbtxt`` follows, and ``labels.txt`` when ``class_names`` are given (one per class, UTF-8). Names
    that a line-by-line reader would read back otherwise (a line break, another unprintable character) are
    refused with :class:`ExportError` before anything is written.
    """
    if backend not in BACKENDS:
        raise ExportError(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if class_names is not None and len(class_names) != num_classes:
        raise ExportError(f"{len(class_names)} class names given for a {num_classes}-class model")
    problem = check_label_names(class_names) if class_names is not None else None
    if problem is not None:  # Triton reads labels.txt line by line: such a name would become other labels
        raise ExportError(f"cannot write {LABELS_FILE} for Triton: {problem}; make the names printable first "
                          "(resnet.data.names.printable_name)")
    folder = Path(root) / name
    (folder / TRITON_VERSION).mkdir(parents=True)
    write_model(folder / TRITON_VERSION / BACKENDS[backend][2])
    label_filename = None
    if class_names is not None:
        (folder / LABELS_FILE).write_text("\n".join(class_names) + "\n", encoding="utf-8")
        label_filename = LABELS_FILE
    config = triton_config(name, backend, max_batch_size=max_batch_size, num_classes=num_classes,
                           label_filename=label_filename, image_size=image_size)
    (folder / "config.pbtxt").write_text(config, encoding="utf-8")
    return folder


def write_triton_repository(
    model: nn.Module,
    root: os.PathLike | str,
    *,
    model_name: str,
    backends: Sequence[str] = ("onnxruntime", "pytorch"),
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    num_classes: int = 1000,
    opset: int = DEFAULT_OPSET,
    onnx_exporter: str = "auto",
    metadata: Optional[dict[str, Any]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> list[Path]:
    """Write a Triton model repository for ``model`` (prepared by :func:`prepare_for_export`) into ``root``.

    One model folder per backend, ``<model_name>_onnx`` (ONNX Runtime) and ``<model_name>_libtorch``
    (PyTorch), each with ``config.pbtxt``, ``1/model.onnx`` or ``1/model.pt`` and, when
    ``class_names`` is given, ``labels.txt`` for Triton's classification extension. ``root`` must
    exist (the CLI makes it atomically); returns the model folders. The configs' input is
    ``[3, S, S]`` with S the prepared model's ``image_size``.
    """
    image_size = getattr(model, "image_size", CROP_SIZE)
    writers: dict[str, Callable[[Path], object]] = {
        "onnxruntime": lambda path: export_onnx(model, path, opset=opset, exporter=onnx_exporter, metadata=metadata),
        "pytorch": lambda path: export_torchscript(model, path, metadata=metadata),
    }
    folders = []
    for backend in backends:
        if backend not in BACKENDS:
            raise ExportError(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        folders.append(write_triton_model(
            root, model_folder_name(model_name, backend), backend, writers[backend],
            max_batch_size=max_batch_size, num_classes=num_classes, class_names=class_names,
            image_size=image_size,
        ))
    return folders
