"""Deployment: ONNX / TorchScript / pt2 exporters (:mod:`~resnet.deploy.exporters`, :mod:`~resnet.deploy.pt2`),
INT8 quantization (:mod:`~resnet.deploy.quantize`), Triton model repositories (:mod:`~resnet.deploy.triton`) and
running exported models with ONNX Runtime or OpenVINO (:mod:`~resnet.deploy.runtimes`)."""
