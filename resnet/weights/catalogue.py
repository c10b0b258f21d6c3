"""Facts about NVIDIA's pretrained checkpoints on NGC, as data.

This table is the only place that knows where the weights live, what the files
are called and what accuracy NVIDIA published for them. Everything else (the hub
entrypoints, their docstrings, the CLI, the README's table) reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

#: Environment variable naming a mirror that serves the checkpoint files by file name.
MIRROR_ENV = "CONVNETS_WEIGHTS_MIRROR"


@dataclass(frozen=True)
class Checkpoint:
    """One pretrained checkpoint published by NVIDIA.

    Attributes:
        arch: architecture name in :data:`resnet.models.resnet.ARCHS` or
            :data:`resnet.models.efficientnet.EFFICIENTNET_ARCHS`.
        url: NGC download address.
        top1: NVIDIA's published ImageNet top-1 accuracy (%) for the AMP training recipe (not re-measured here).
        top5: NVIDIA's published top-5 accuracy (%), where published.
        accuracy_note: what the published figure refers to.
        sha256: SHA-256 of the file as NGC serves it, when known (lower-case hex). NVIDIA publishes
            none, so every entry is None today; once set, every download and every load of the
            cached file is verified against it. Until then the hash of each download is recorded
            beside the cached file (:mod:`resnet.weights.cache`) and later loads are verified against that.
    """

    arch: str
    url: str
    top1: float
    top5: Optional[float]
    accuracy_note: str
    sha256: Optional[str] = None

    @property
    def file_name(self) -> str:
        """Name of the file in the torch hub checkpoint cache (the last part of the URL)."""
        return self.url.rsplit("/", 1)[-1]

    def mirror_url(self, base: str) -> str:
        """Address of this file on a mirror that serves checkpoints by file name under ``base``."""
        return f"{base.rstrip('/')}/{self.file_name}"

    def accuracy_text(self) -> str:
        """One line such as ``top-1 78.60%, top-5 94.19% (NVIDIA, AMP, 250 epochs)``."""
        text = f"top-1 {self.top1:.2f}%"
        if self.top5 is not None:
            text += f", top-5 {self.top5:.2f}%"
        return f"{text} ({self.accuracy_note})"


_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia"

CHECKPOINTS: dict[str, Checkpoint] = {
    "resnet50": Checkpoint(
        arch="resnet50",
        url=f"{_NGC}/resnet50_pyt_amp/versions/20.06.0/files/nvidia_resnet50_200821.pth.tar",
        top1=78.60,
        top5=94.19,
        accuracy_note="published by NVIDIA for the AMP recipe, 250 epochs; FP32: 78.69 / 94.16",
    ),
    "resnext101-32x4d": Checkpoint(
        arch="resnext101-32x4d",
        url=f"{_NGC}/resnext101_32x4d_pyt_amp/versions/20.06.0/files/nvidia_resnext101-32x4d_200821.pth.tar",
        top1=80.43,
        top5=None,
        accuracy_note="published by NVIDIA for the AMP recipe",
    ),
    "se-resnext101-32x4d": Checkpoint(
        arch="se-resnext101-32x4d",
        url=f"{_NGC}/seresnext101_32x4d_pyt_amp/versions/20.06.0/files/nvidia_se-resnext101-32x4d_200821.pth.tar",
        top1=81.00,
        top5=None,
        accuracy_note="published by NVIDIA for the AMP recipe",
    ),
}


def _efficientnet(arch: str, folder: str, top1: float, top5: float, top1_32: float, top5_32: float) -> Checkpoint:
    return Checkpoint(
        arch=arch,
        url=f"{_NGC}/{folder}/versions/20.12.0/files/nvidia_{arch}_210412.pth",
        top1=top1,
        top5=top5,
        accuracy_note=(
            f"published by NVIDIA, ConvNets README validation results, AMP; 32-bit: {top1_32:.2f} / {top5_32:.2f}; "
            "not re-measured here"
        ),
    )


# NVIDIA's EfficientNets with NGC weights (B1-B3 and B5-B7 have none; the QAT files need NVIDIA's
# pytorch_quantization and are not served here). Accuracy: ConvNets/README.md "Validation accuracy results".
CHECKPOINTS.update({
    "efficientnet-b0": _efficientnet("efficientnet-b0", "efficientnet_b0_pyt_amp", 77.63, 93.82, 77.31, 93.76),
    "efficientnet-b4": _efficientnet("efficientnet-b4", "efficientnet_b4_pyt_amp", 82.98, 96.44, 82.92, 96.43),
    "efficientnet-widese-b0": _efficientnet(
        "efficientnet-widese-b0", "efficientnet_widese_b0_pyt_amp", 77.89, 94.00, 77.97, 94.05),
    "efficientnet-widese-b4": _efficientnet(
        "efficientnet-widese-b4", "efficientnet_widese_b4_pyt_amp", 83.28, 96.45, 83.30, 96.47),
})
