"""Build a model of the family, optionally with pretrained weights.

With weights, the model is constructed on the ``meta`` device and the checkpoint's
tensors are assigned into it, so no time is spent on a random initialisation that
would be overwritten at once.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Union

import torch

from resnet.data.synsets import NUM_IMAGENET_CLASSES
from resnet.models.efficientnet import PARAM_NAMES, EfficientNet
from resnet.models.family import canonical_model_arch, is_efficientnet
from resnet.models.resnet import ARCHS, ConvInit, ResNet, init_module
from resnet.models.sources import WeightsFile, class_names, locate_weights, read_weights, stored_image_size
from resnet.weights.reading import (
    Audience,
    CheckpointMismatchError,
    KeyMapFn,
    PathLike,
    WeightsWarning,
    extract_state_dict,
    fit_state_dict,
)


#: NVIDIA's EffNetParams that a ResNet has no counterpart of.
_EFFICIENTNET_ONLY = tuple(name for name in PARAM_NAMES if name not in ("num_classes", "conv_init", "trt"))


def create_model(
    arch: str,
    *,
    pretrained: bool = False,
    pretrained_from_file: Optional[PathLike] = None,
    state_dict_key_map_fn: Optional[KeyMapFn] = None,
    num_classes: Optional[int] = None,
    last_bn_0_init: bool = False,
    conv_init: ConvInit = "fan_in",
    trt: bool = False,
    fused_se: bool = True,
    progress: bool = True,
    mirror: Optional[str] = None,
    sha256: Optional[str] = None,
    channels_last: bool = False,
    fast_inference: bool = True,
    **params: Any,
) -> Union[ResNet, EfficientNet]:
    """Build ``arch`` (a ResNet of :data:`resnet.models.resnet.ARCHS` or an EfficientNet of
    :data:`resnet.models.efficientnet.EFFICIENTNET_ARCHS`; :func:`canonical_model_arch` spellings), with weights
    when asked.

    ``pretrained=True`` takes NVIDIA's NGC checkpoint from the torch hub cache,
    downloading it first if needed (from ``mirror`` or ``$CONVNETS_WEIGHTS_MIRROR`` when set);
    ``pretrained_from_file`` loads a local checkpoint instead. The two are exclusive.
    ``sha256`` (64 hex digits) is the expected SHA-256 of that file: a file that differs is refused
    with :class:`resnet.weights.reading.HashMismatchError` (a download that differs is not kept).
    The model is returned on the CPU, float32, in training mode, like NVIDIA's entrypoints;
    its parameters are ordinary contiguous tensors unless ``channels_last`` asks for the channels-last
    memory format of 4-D weights (faster for training with channels-last inputs; torch utilities such as
    pruning expect the default); with ``fast_inference`` a ResNet's eval-mode, no-grad calls take the eval fast path
    when it computes exactly what the modules do (:attr:`resnet.models.resnet.ResNet.fast_inference`; an
    EfficientNet always runs its modules).
    ``num_classes=None`` takes the number of classes of the weights file (1000 without one).
    The model's ``classes`` attribute holds its class names: those stored in the file (a ``model.pth``
    written by ``python -m resnet train``), ImageNet's for a 1000-class model, else ``None``; its
    ``image_size`` the side of the images it was trained at where the file records it (a ``model.pth``),
    else ``None`` (the architecture's own: :func:`resnet.models.family.model_data_config`).

    An EfficientNet takes NVIDIA's ``EffNetParams`` as ``params`` (``dropout``, ``activation``, ``bn_momentum``,
    ``bn_epsilon``, ``survival_prob``; ``conv_init`` and ``trt`` are the named ones) and no ResNet-only option
    (``last_bn_0_init``, ``fused_se``): :func:`resnet.models.efficientnet_builder.create_efficientnet_model`.
    See :mod:`resnet.hub` for the meaning of every argument.

    Raises:
        TypeError: a keyword that ``arch``'s family does not take (the message lists the accepted ones).
        ValueError: an unknown ``arch`` or a value no model can be built with.
    """
    if is_efficientnet(arch):
        from resnet.models.efficientnet_builder import create_efficientnet_model

        resnet_only = [name for name, value, default in (
            ("last_bn_0_init", last_bn_0_init, False), ("fused_se", fused_se, True)) if value != default]
        if resnet_only:
            raise TypeError(f"{', '.join(resnet_only)} applies to the ResNets, not to {canonical_model_arch(arch)}")
        return create_efficientnet_model(
            arch, pretrained=pretrained, pretrained_from_file=pretrained_from_file,
            state_dict_key_map_fn=state_dict_key_map_fn, num_classes=num_classes, conv_init=conv_init, trt=trt,
            progress=progress, mirror=mirror, sha256=sha256, channels_last=channels_last, **params,
        )
    arch = canonical_model_arch(arch)
    if params:
        raise TypeError(
            f"unexpected keyword argument{'s' if len(params) > 1 else ''} {', '.join(map(repr, sorted(params)))} "
            f"for {arch}; EfficientNet parameters ({', '.join(_EFFICIENTNET_ONLY)}) apply to the EfficientNets only"
        )
    weights = locate_weights(arch, pretrained=pretrained, pretrained_from_file=pretrained_from_file, sha256=sha256,
                             mirror=mirror, progress=progress)
    arch_kwargs = dict(
        num_classes=num_classes, last_bn_0_init=last_bn_0_init, conv_init=conv_init, trt=trt, fused_se=fused_se,
        fast_inference=fast_inference,
    )
    if weights is not None:
        model = _load_pretrained(arch, weights, state_dict_key_map_fn, arch_kwargs)
    else:
        arch_kwargs["num_classes"] = NUM_IMAGENET_CLASSES if num_classes is None else num_classes
        model = ResNet(arch, **arch_kwargs)
        model.classes = class_names(model.num_classes, None)
        model.image_size = None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _load_pretrained(arch: str, weights: WeightsFile, key_map_fn: Optional[KeyMapFn], arch_kwargs: dict) -> ResNet:
    obj = read_weights(weights)
    source = weights.source
    state = extract_state_dict(obj, source, key_map_fn)
    file_classes = state["fc.weight"].shape[0] if "fc.weight" in state else None
    num_classes = arch_kwargs["num_classes"]
    if num_classes is None:
        num_classes = file_classes or NUM_IMAGENET_CLASSES
        arch_kwargs = {**arch_kwargs, "num_classes": num_classes}
    new_head = num_classes != 1000 and file_classes is not None and file_classes != num_classes

    with torch.device("meta"):
        model = ResNet(arch, **arch_kwargs)
    target = f"{arch} with {num_classes} classes"
    try:
        fitted = fit_state_dict(
            state, model.state_dict(), source, target, skip_prefixes=("fc.",) if new_head else ()
        )
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(
            f"{error}{_hint(state, arch, num_classes, 'python')}",
            cli_message=f"{error}{_hint(state, arch, num_classes, 'cli')}",
        ) from None
    model.load_state_dict(fitted, strict=not new_head, assign=True)
    if new_head:
        model.fc.to_empty(device="cpu")
        init_module(model.fc)
        rest = ("the backbone was loaded and the new classifier head (fc) is freshly initialised; train it "
                "before use.")
        warnings.warn(WeightsWarning(
            f"{source} has a {file_classes}-class head but num_classes={num_classes}: {rest}",
            cli_message=f"{source} has a {file_classes}-class head and the model {num_classes} classes: {rest}",
        ), stacklevel=3)
    stored = obj.get("classes") if isinstance(obj, dict) and not new_head else None
    model.classes = class_names(num_classes, stored, source)
    model.image_size = stored_image_size(obj.get("image_size") if isinstance(obj, dict) else None, source)
    return model


def _hint(state: dict[str, torch.Tensor], arch: str, num_classes: int, audience: Audience = "python") -> str:
    """Name the architecture (or class count) the checkpoint does fit, when there is one, in the words of
    ``audience``: hub arguments (``"python"``) or command-line options (``"cli"``)."""
    if "fc.weight" in state and state["fc.weight"].shape[0] != num_classes:
        classes = state["fc.weight"].shape[0]
        if audience == "cli":
            return (f"\nThe file has a {classes}-class head, and the command needs {num_classes} classes: give a "
                    f"checkpoint of {num_classes} classes as --weights.")
        return f"\nThe file has a {classes}-class head: pass num_classes={classes}."
    for other in ARCHS:
        if other == arch:
            continue
        with torch.device("meta"):
            expected = ResNet(other, num_classes=num_classes).state_dict()
        try:
            fit_state_dict(state, expected, "", other)
        except CheckpointMismatchError:
            continue
        if audience == "cli":
            return f"\nIt is a {other} checkpoint: pass --arch {other}."
        entry = "nvidia_" + other.replace("-", "_")
        return f"\nIt is a {other} checkpoint: load it with the {entry!r} entrypoint (arch {other!r})."
    return "\nCheck that the file was saved from this architecture."
