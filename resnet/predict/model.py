"""The model a batch job runs: a PyTorch model on its fast path, or an exported ONNX model on a runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from resnet.data.preprocessing import CROP_SIZE
from resnet.fast import optimize_for_inference
from resnet.fast.devices import resolve_device


@dataclass
class InferenceSetup:
    """What classifying needs: ``model`` maps (N, 3, S, S) float32 on ``device`` to (N, C) logits; ``classes`` names
    the C outputs; ``image_size`` is S."""

    model: Callable[[torch.Tensor], torch.Tensor]
    classes: list[str]
    image_size: int
    device: torch.device


def load_for_inference(
    *,
    arch: str = "resnet50",
    weights: Optional[str] = None,
    mirror: Optional[str] = None,
    onnx: Optional[str] = None,
    runtime: Optional[str] = None,
    precision: str = "fp32",
    device: str = "auto",
    image_size: Optional[int] = None,
    threads: Optional[int] = None,
    progress: bool = False,
) -> InferenceSetup:
    """Build the model as ``python -m resnet classify`` does.

    PyTorch: ``arch`` with ``weights`` (a local checkpoint or a ``model.pth`` of ``train``), else NVIDIA's NGC
    weights through the hub cache (``mirror``: a base URL serving them), on :func:`resnet.fast.optimize_for_inference`
    in ``precision`` (``fp32``, ``bf16``, ``fp16``, ``auto``) on ``device`` (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``); ``image_size`` defaults to the size the model was trained at. ONNX: the file ``onnx`` on
    ``runtime`` (``onnxruntime``, ``openvino``) at the runtime ``precision`` (``fp32``, or ``bf16`` on OpenVINO),
    on the CPU, with the class names and image size of the file. ``threads``: intra-op threads (default:
    torch's).

    Raises:
        resnet.weights.WeightsError: the weights cannot be had or do not fit ``arch``.
        resnet.deploy.runtimes.RuntimeModelError / RuntimeUnavailableError: the ONNX file or its runtime.
        resnet.fast.devices.DeviceError: the device does not exist here.
        ValueError: an ``image_size`` that an ONNX file does not take.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    if onnx:
        from resnet.deploy.runtimes import load_onnx_model

        exported = load_onnx_model(onnx, runtime or "onnxruntime", threads=threads,
                                   precision="fp32" if precision in ("auto", "fp32") else precision)
        if image_size is not None and image_size != exported.image_size:
            raise ValueError(f"the exported model {onnx} takes {exported.image_size}x{exported.image_size} images, "
                             f"not {image_size}")
        return InferenceSetup(exported, list(exported.class_names), exported.image_size, torch.device("cpu"))
    from resnet.models.builder import create_model

    place = resolve_device(device)
    model = create_model(arch, pretrained=weights is None, pretrained_from_file=weights, mirror=mirror,
                         progress=progress)
    classes = model.classes or [f"class {i}" for i in range(model.fc.out_features)]
    size = image_size or model.image_size or CROP_SIZE
    fast = optimize_for_inference(model.to(place), device=place, dtype=precision)
    return InferenceSetup(fast, list(classes), size, place)
