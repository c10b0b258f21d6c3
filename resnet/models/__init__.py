"""Architectures as plain PyTorch modules: the configurable ResNet (:mod:`~resnet.models.resnet`) and EfficientNet
(:mod:`~resnet.models.efficientnet`), and the builders that give them weights (:mod:`~resnet.models.builder`,
:mod:`~resnet.models.efficientnet_builder`). The fast path plugs into the ResNet from above; the models never
import it."""
