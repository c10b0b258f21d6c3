"""Inference fast path: the public entry module (``from resnet.fast import optimize_for_inference``).

The model's arithmetic is unchanged; only where and in what number format it happens changes:

* :func:`fold_batchnorm` merges every ``Conv2d -> BatchNorm2d`` pair (stem, the three convs of each
  bottleneck and the ``downsample`` shortcut) into one convolution with a bias, using the BN running
  statistics. In float32 the logits stay within 1e-4 of the unfolded model. The result is a plain
  ``nn.Module`` tree (BN layers become ``nn.Identity``), so it still traces, scripts and exports.
* :func:`optimize_for_inference` returns an :class:`InferenceModel`: a module that takes the usual
  float32 NCHW batch and returns float32 logits, and inside runs the folded model in the fastest layout
  the device offers, in float32 unless asked otherwise: channels-last everywhere; on CPU, ReLU and
  residual adds fused into the oneDNN convolutions; ``dtype="auto"`` for bfloat16 on CPUs with native
  BF16 instructions and float16 on CUDA; optionally compiled with ``torch.compile`` and/or replayed as
  CUDA graphs.
* the model's own eval path (:mod:`resnet.fast.eval_path`) is the same folding and fusion plugged into
  :class:`resnet.models.resnet.ResNet` (:func:`resnet.models.resnet.set_inference_accelerator`): in eval mode under
  ``no_grad`` an unmodified float32 CPU model computes its logits that way, with weights folded once and
  kept beside the model while they are current (:func:`forget_folded` drops them); anything it does not
  reproduce exactly (a replaced module, a hook, a parametrization ...) runs the model's own modules.
  :func:`eval_features` gives its pooled features.

Where each idea lives: :mod:`resnet.fast.folding` (BatchNorm folding), :mod:`resnet.fast.onednn` (the fused oneDNN
kernels, their one-time check :func:`fused_kernels_work` and the ``RESNET_FUSED_KERNELS=0`` switch),
:mod:`resnet.fast.devices` (CPU capabilities, :func:`resolve_dtype`), :mod:`resnet.fast.trunk` (the fused trunk
and micro-batching), :mod:`resnet.fast.eval_path` (the model's own eval path: its guard and folded weights) and
:mod:`resnet.fast.inference` (:func:`optimize_for_inference`). The model (:mod:`resnet.models.resnet`)
imports none of them.

Accuracy of each variant (measured on the parity fixtures and the sample photos, see
``tests/test_fastpath.py`` and ``benchmarks/README.md``): every float32 variant stays within 1e-4 of
the reference logits; bfloat16 / float16 keep the top-1 class and the top-5 set of the float32 model
on those inputs, with a logit error bounded by :data:`REDUCED_PRECISION_TOLERANCE`.
"""

from __future__ import annotations

from resnet.fast.devices import cpu_supports_bf16, resolve_dtype
from resnet.fast.eval_path import EVAL_BUFFER_SETS, EVAL_MIN_BATCH, eval_features, forget_folded, fusable
from resnet.fast.folding import fold_batchnorm, fold_conv_bn
from resnet.fast.inference import REDUCED_PRECISION_TOLERANCE, InferenceModel, optimize_for_inference
from resnet.fast.onednn import fused_kernels_work
from resnet.fast.trunk import CPU_MICRO_BATCH

__all__ = [
    "CPU_MICRO_BATCH",
    "EVAL_BUFFER_SETS",
    "EVAL_MIN_BATCH",
    "REDUCED_PRECISION_TOLERANCE",
    "InferenceModel",
    "cpu_supports_bf16",
    "eval_features",
    "forget_folded",
    "fold_batchnorm",
    "fold_conv_bn",
    "fused_kernels_work",
    "fusable",
    "optimize_for_inference",
    "resolve_dtype",
]
