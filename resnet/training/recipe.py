"""NVIDIA's training recipe for the family, scaled to the batch: optimizer, schedule, loss, mixup, precision.

* SGD with momentum 0.875, learning rate 0.256 per 256 images of the global batch, weight decay
  3.0517578125e-05 (1/32768) on convolution and linear weights only: BatchNorm parameters and biases
  are not decayed.
* Learning rate per step: linear warm-up from ``lr / warmup_steps`` to ``lr`` over the warm-up epochs,
  then a half cosine down to 0 at the last step (:class:`WarmupCosine`).
* Cross-entropy with label smoothing 0.1; optional mixup (a Beta(alpha, alpha) blend of each image with
  another of its batch, the loss blended the same way).
* Mixed precision on the device's fast type (:func:`resolve_precision`): float16 autocast with a gradient
  scaler on CUDA, bfloat16 autocast on CPUs with native BF16, float32 elsewhere.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
from torch import nn

from resnet.fast.devices import PRECISIONS as DEVICE_PRECISIONS
from resnet.fast.devices import precision_name, resolve_dtype  # noqa: F401  (precision_name: the one namer)
from resnet.errors import ConvNetsError
from resnet.training.hyperparameters import (  # noqa: F401  (also this module's names)
    LABEL_SMOOTHING,
    LR_PER_256,
    MOMENTUM,
    WEIGHT_DECAY,
)
#: ``--precision`` names (:data:`resnet.fast.devices.PRECISIONS`) and their autocast dtypes (``None``: no autocast).
PRECISIONS = {name: None if dtype == torch.float32 else dtype for name, dtype in DEVICE_PRECISIONS.items()}


def scaled_lr(global_batch: int, lr_per_256: float = LR_PER_256) -> float:
    """The learning rate of a global batch: ``lr_per_256 * global_batch / 256``."""
    return lr_per_256 * global_batch / 256


def parameter_groups(model: nn.Module, weight_decay: float = WEIGHT_DECAY) -> list[dict]:
    """Trainable parameters in two groups: weights of convolutions and linear layers (decayed), and
    BatchNorm parameters and biases (every 0-D or 1-D tensor; not decayed)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, *, momentum: float = MOMENTUM,
                   weight_decay: float = WEIGHT_DECAY) -> torch.optim.SGD:
    """SGD with momentum over :func:`parameter_groups`."""
    groups = [g for g in parameter_groups(model, weight_decay) if g["params"]]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


class WarmupCosine:
    """Learning rate of each optimizer step: linear warm-up, then cosine decay to 0.

    Step s (0-based) of ``total_steps``: ``lr * (s + 1) / warmup_steps`` while ``s < warmup_steps``, then
    ``lr * 0.5 * (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps)))``. A function of the
    step alone, so ``--resume`` needs only the step count, and a run extended with a larger ``--epochs``
    continues on the cosine of the new length (its rate at the resumed step is what a run started with that
    length would have there).
    """

    def __init__(self, lr: float, warmup_steps: int, total_steps: int) -> None:
        self.lr, self.warmup_steps, self.total_steps = lr, warmup_steps, max(1, total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict:
        return {"lr": self.lr, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def loss_function(smoothing: float = LABEL_SMOOTHING) -> nn.CrossEntropyLoss:
    """Cross-entropy with label smoothing, summed over the batch (callers divide by the global count)."""
    return nn.CrossEntropyLoss(label_smoothing=smoothing, reduction="sum")


def mixup(images: torch.Tensor, labels: torch.Tensor, alpha: float, generator: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Blend each image with another of the batch: ``(mixed, labels, partner labels, weight of labels)``.

    The weight is drawn from Beta(alpha, alpha) and the partners by a permutation, both from ``generator``.
    The loss is ``weight * loss(labels) + (1 - weight) * loss(partner labels)``.
    """
    import numpy as np

    weight = float(np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator))).beta(alpha, alpha))
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    mixed = images.mul(weight).add_(images[order], alpha=1.0 - weight)
    return mixed, labels, labels[order], weight


class PrecisionError(ConvNetsError):
    """A compute precision the device cannot train or evaluate in."""


def resolve_precision(name: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``--precision name`` on ``device`` (``None``: float32, no autocast).

    ``auto``: float16 on CUDA, bfloat16 on a CPU with native BF16 (:func:`resnet.fast.devices.cpu_supports_bf16`),
    float32 elsewhere.

    Raises:
        PrecisionError: float16 asked for on a CPU.
    """
    dtype = resolve_dtype(name, device)
    if dtype == torch.float16 and device.type != "cuda":
        raise PrecisionError("--precision fp16 needs a CUDA device; on a CPU use bf16 (native on CPUs with "
                             "AVX512-BF16 or AMX) or fp32")
    return None if dtype == torch.float32 else dtype


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type, or nothing for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(enabled: bool):
    """A gradient scaler for float16 on CUDA (disabled: a no-op with the same interface).

    ``torch.amp.GradScaler`` where this torch has it (2.3+), else ``torch.cuda.amp.GradScaler``.
    """
    scaler_class = getattr(torch.amp, "GradScaler", None)
    if scaler_class is None:
        return torch.cuda.amp.GradScaler(enabled=enabled)
    return scaler_class("cuda", enabled=enabled)
