"""torch.hub entrypoints for NVIDIA's ResNet-50 v1.5, ResNeXt-101 32x4d and SE-ResNeXt-101 32x4d.

    model = torch.hub.load(REPO, "nvidia_resnet50", pretrained=True)
    utils = torch.hub.load(REPO, "nvidia_convnets_processing_utils")

The builders live in ``resnet/`` and ``processing_utils/``; this file only names them.
"""

dependencies = ["torch", "torchvision", "PIL", "numpy", "requests", "validators"]

from processing_utils import nvidia_convnets_processing_utils  # noqa: E402,F401
from resnet.hub import (  # noqa: E402,F401
    nvidia_resneXt,
    nvidia_resnet50,
    nvidia_resnext101_32x4d,
    nvidia_se_resnext101_32x4d,
)
