"""What the exporters offer, as data without torch: the graph's input and output names, the ONNX exporters and
preferred opset, the INT8 calibration methods and counts, the Triton backends. The modules that do the work
(:mod:`~resnet.deploy.exporters`, :mod:`~resnet.deploy.quantize`, :mod:`~resnet.deploy.triton`) hold the same
names; ``python -m resnet export --help`` reads them here before anything heavy is imported."""

from __future__ import annotations

#: Name of the single model input.
INPUT_NAME = "input"
#: Name of the single model output.
OUTPUT_NAME = "logits"
#: ONNX opset written by default where torch can write it: the default of torch 2.14's exporter and
#: the highest its TorchScript-based exporter supports; ONNX Runtime reads it from 1.17 on.
PREFERRED_OPSET = 20
#: ONNX exporters of torch: ``dynamo`` (torch.export based, needs onnxscript and torch 2.5; torch's default),
#: ``torchscript`` (the older tracing exporter; deprecated by torch but needs nothing else).
ONNX_EXPORTERS = ("auto", "dynamo", "torchscript")

#: How INT8 calibration measures activation ranges (``resnet.deploy.quantize`` says why minmax is the default).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: The default method: the observed range of each activation (see :mod:`resnet.deploy.quantize` for why).
DEFAULT_CALIBRATION_METHOD = "minmax"
#: Images used when not told otherwise: enough to see the activation ranges of varied photos, about
#: a minute of calibration on 2 CPU cores.
DEFAULT_CALIBRATION_IMAGES = 256
#: Fewer readable calibration images than this give a warning: the measured activation ranges of a
#: handful of images need not cover the photos the model will see.
MIN_CALIBRATION_IMAGES = 32

#: ``max_batch_size`` of the Triton model configs by default.
DEFAULT_MAX_BATCH_SIZE = 256
#: Triton backend -> (model folder suffix, platform, model file name in the version folder).
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("onnx", "onnxruntime_onnx", "model.onnx"),
    "pytorch": ("libtorch", "pytorch_libtorch", "model.pt"),
}
