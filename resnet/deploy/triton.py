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
the model was trained at another size (380 for the EfficientNet-B4s),
output ``logits`` FP32 [classes], Triton's own batch axis) with dynamic batching on, and the model's preprocessing as
Triton model ``parameters`` (string values, as Triton's ModelParameter holds them; Triton passes them to clients in
the model's config and its backends ignore keys they do not know)::

    parameters { key: "arch" value { string_value: "efficientnet-b0" } }
    parameters { key: "image_size" value { string_value: "224" } }       # centre crop S, the input's side
    parameters { key: "resize_size" value { string_value: "256" } }      # shorter side resized to this first
    parameters { key: "interpolation" value { string_value: "bicubic" } }

:func:`served_data_config` reads them back from the config a client gets from the server (``GET
/v2/models/<name>/config``, tritonclient's ``get_model_config``), as ``examples/triton_client.py`` does; for a
repository written before they were (no such parameters) it takes the input's side with the ResNets' proportion.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

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
from resnet.data.preprocessing import CROP_SIZE, DEFAULT_DATA_CONFIG, DataConfig, ImageSize, data_config
from resnet.models.family import model_data_config

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_BATCH_SIZE",
    "ARCH_PARAMETER",
    "LABELS_FILE",
    "PREPROCESSING_PARAMETERS",
    "TRITON_VERSION",
    "triton_config",
    "model_file",
    "model_folder_name",
    "served_data_config",
    "triton_parameters",
    "write_triton_model",
    "write_triton_repository",
]

#: The model version folder written into a Triton repository.
TRITON_VERSION = "1"
#: Class-name file written beside config.pbtxt for 1000-class (ImageNet) models.
LABELS_FILE = "labels.txt"
#: config.pbtxt parameters holding the model's preprocessing (:class:`resnet.data.preprocessing.DataConfig`'s fields).
PREPROCESSING_PARAMETERS = ("image_size", "resize_size", "interpolation")
#: config.pbtxt parameter naming the architecture (``resnet50``, ``efficientnet-b0``, ...).
ARCH_PARAMETER = "arch"


def triton_parameters(image_size: ImageSize = CROP_SIZE, arch: Optional[str] = None) -> dict[str, str]:
    """The ``parameters`` of a config: the preprocessing of ``image_size`` (a side, prepared as the ResNets are,
    or a model's whole :class:`~resnet.data.preprocessing.DataConfig`) and ``arch`` when given, as strings."""
    config = data_config(image_size)
    parameters = {ARCH_PARAMETER: arch} if arch else {}
    parameters.update(image_size=str(config.image_size), resize_size=str(config.resize_size),
                      interpolation=config.interpolation)
    return parameters


def served_data_config(model_config: Mapping[str, Any]) -> DataConfig:
    """How to prepare images for a served model, from its config as Triton serves it: the JSON of its ModelConfig
    (``GET /v2/models/<name>/config``; tritonclient.http's ``get_model_config(name)`` returns it as a dict).

    The ``parameters`` :func:`write_triton_model` writes give it (an EfficientNet's bicubic resize, a fine-tuned
    model's size); a config without them (a repository written before they were) gives the input's side ``S``
    of ``dims: [3, S, S]`` with the ResNets' preprocessing scaled to it (resize 256/224 of S, bilinear).

    Raises:
        ValueError: the parameters are there but incomplete or not a valid preprocessing, or there are none and
            the input is not ``[3, S, S]``.
    """
    parameters = model_config.get("parameters") or {}
    found = {key: parameters[key].get("string_value") for key in PREPROCESSING_PARAMETERS if key in parameters}
    name = model_config.get("name", "the model")
    if found:
        missing = [key for key in PREPROCESSING_PARAMETERS if not found.get(key)]
        if missing:
            raise ValueError(f"{name}'s config has preprocessing parameters but not {', '.join(missing)}")
        try:
            return DataConfig(int(found["image_size"]), int(found["resize_size"]), found["interpolation"])
        except ValueError as error:
            raise ValueError(f"{name}'s config parameters are not a preprocessing: {error}") from None
    inputs = model_config.get("input") or []
    dims = [int(d) for d in inputs[0].get("dims", [])] if len(inputs) == 1 else []
    if len(dims) != 3 or dims[0] != 3 or dims[1] != dims[2] or dims[1] < 1:
        raise ValueError(f"{name}'s config has no preprocessing parameters and its input is not [3, S, S]: "
                         f"{[i.get('dims') for i in inputs]}")
    return DEFAULT_DATA_CONFIG.at(dims[1])


def _text(value: str) -> str:
    """``value`` as a protobuf text-format string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def triton_config(
    name: str,
    backend: str,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    num_classes: int = 1000,
    label_filename: Optional[str] = None,
    max_queue_delay_microseconds: int = 100,
    image_size: ImageSize = CROP_SIZE,
    arch: Optional[str] = None,
) -> str:
    """Text of a Triton ``config.pbtxt`` (ModelConfig in protobuf text format) for an exported model.

    ``backend`` is ``onnxruntime`` or ``pytorch``. The batch axis is Triton's (``max_batch_size``),
    so ``dims`` leave it out: input ``[3, S, S]``, output ``[num_classes]``, both TYPE_FP32.
    Dynamic batching is on. ``image_size`` is S (prepared as the ResNets are: resize 256/224 of S, bilinear) or the
    model's whole :class:`~resnet.data.preprocessing.DataConfig`; it is written as the ``parameters`` of
    :func:`triton_parameters`, with ``arch`` when given.
    """
    if backend not in BACKENDS:
        raise ExportError(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be at least 1, not {max_batch_size}")
    _, platform, filename = BACKENDS[backend]
    side = data_config(image_size).image_size
    dims_in = ", ".join(str(d) for d in (3, side, side))
    label = f'\n    label_filename: "{label_filename}"' if label_filename else ""
    parameters = "".join(f"parameters {{ key: {_text(key)} value {{ string_value: {_text(value)} }} }}\n"
                         for key, value in triton_parameters(image_size, arch).items())
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
{parameters}"""


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
    image_size: ImageSize = CROP_SIZE,
    arch: Optional[str] = None,
) -> Path:
    """Write the model folder ``root/name`` for Triton's ``backend``; return it.

    ``write_model(path)`` writes the model file at ``path`` (``name/1/model.onnx`` or ``name/1/model.pt``);
    ``config.pbtxt`` follows (:func:`triton_config`: ``image_size``, a side or the model's
    :class:`~resnet.data.preprocessing.DataConfig`, and ``arch`` become its parameters), and ``labels.txt`` when
    ``class_names`` are given (one per class, UTF-8). Names
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
                           label_filename=label_filename, image_size=image_size, arch=arch)
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
    image_size: Optional[ImageSize] = None,
    arch: Optional[str] = None,
) -> list[Path]:
    """Write a Triton model repository for ``model`` (prepared by :func:`prepare_for_export`) into ``root``.

    One model folder per backend, ``<model_name>_onnx`` (ONNX Runtime) and ``<model_name>_libtorch``
    (PyTorch), each with ``config.pbtxt``, ``1/model.onnx`` or ``1/model.pt`` and, when
    ``class_names`` is given, ``labels.txt`` for Triton's classification extension. ``root`` must
    exist (the CLI makes it atomically); returns the model folders. The configs' input is
    ``[3, S, S]`` with S the prepared model's ``image_size``; their parameters hold the preprocessing
    (``image_size``: the model's :class:`~resnet.data.preprocessing.DataConfig`; default: its architecture's at S)
    and ``arch`` (default: ``metadata``'s).
    """
    if image_size is None:
        image_size = model_data_config(getattr(model, "model", model), getattr(model, "image_size", None))
    if arch is None and metadata is not None:
        arch = metadata.get("arch")
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
            image_size=image_size, arch=arch,
        ))
    return folders
