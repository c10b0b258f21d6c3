"""torch.hub entrypoints for NVIDIA's ResNet-50 v1.5, ResNeXt-101 32x4d, SE-ResNeXt-101 32x4d and EfficientNets.

    model = torch.hub.load(REPO, "nvidia_resnet50", pretrained=True)
    model = torch.hub.load(REPO, "nvidia_efficientnet_b0", pretrained=True)
    utils = torch.hub.load(REPO, "nvidia_convnets_processing_utils")

The builders live in ``resnet/`` and ``processing_utils/``; this file only names them.
"""

dependencies = ["torch", "torchvision", "PIL", "numpy", "requests", "validators", "filelock", "tqdm"]


def _import_own(names: tuple, attributes: dict) -> dict:
    """``{attribute: object}`` from this repository's packages, leaving a user's modules of the same names alone.

    A user's own ``resnet`` or ``processing_utils`` module (already imported, or on their path) is set aside
    while this repository's packages are imported and is what ``import resnet`` gives them afterwards; this
    repository's submodules stay registered under their full names (``resnet.models.resnet``, ...), so its code and
    pickled models keep working.
    """
    import importlib
    import importlib.machinery
    import os
    import sys

    root = os.path.dirname(os.path.abspath(__file__))

    def ours(module) -> bool:
        return os.path.abspath(getattr(module, "__file__", None) or "").startswith(root + os.sep)

    def family(name: str) -> list:
        return [key for key in list(sys.modules) if key == name or key.startswith(name + ".")]

    aside = {key: sys.modules.pop(key) for name in names for key in family(name) if not ours(sys.modules[key])}
    try:
        return {attribute: getattr(importlib.import_module(module), attribute)
                for attribute, module in attributes.items()}
    finally:
        elsewhere = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
        for name in names:
            if name in aside or importlib.machinery.PathFinder.find_spec(name, elsewhere) is not None:
                sys.modules.pop(name, None)  # the user's module of this name comes first for them
        sys.modules.update(aside)


_own = _import_own(
    ("resnet", "processing_utils"),
    {
        "nvidia_resnet50": "resnet.hub",
        "nvidia_resnext101_32x4d": "resnet.hub",
        "nvidia_se_resnext101_32x4d": "resnet.hub",
        "nvidia_resneXt": "resnet.hub",
        "nvidia_efficientnet_b0": "resnet.hub",
        "nvidia_efficientnet_b4": "resnet.hub",
        "nvidia_efficientnet_widese_b0": "resnet.hub",
        "nvidia_efficientnet_widese_b4": "resnet.hub",
        "nvidia_efficientnet": "resnet.hub",
        "nvidia_convnets_processing_utils": "processing_utils",
    },
)
nvidia_resnet50 = _own["nvidia_resnet50"]
nvidia_resnext101_32x4d = _own["nvidia_resnext101_32x4d"]
nvidia_se_resnext101_32x4d = _own["nvidia_se_resnext101_32x4d"]
#: NVIDIA's legacy name for ResNeXt-101 32x4d.
nvidia_resneXt = _own["nvidia_resneXt"]
nvidia_efficientnet_b0 = _own["nvidia_efficientnet_b0"]
nvidia_efficientnet_b4 = _own["nvidia_efficientnet_b4"]
nvidia_efficientnet_widese_b0 = _own["nvidia_efficientnet_widese_b0"]
nvidia_efficientnet_widese_b4 = _own["nvidia_efficientnet_widese_b4"]
#: Any of NVIDIA's EfficientNet arch keys: nvidia_efficientnet(type="efficientnet-widese-b4", pretrained=True).
nvidia_efficientnet = _own["nvidia_efficientnet"]
nvidia_convnets_processing_utils = _own["nvidia_convnets_processing_utils"]
