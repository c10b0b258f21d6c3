"""Build a model of the family, optionally with pretrained weights.

With weights, the model is constructed on the ``meta`` device and the checkpoint's
tensors are assigned into it, so no time is spent on a random initialisation that
would be overwritten at once.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import torch

from resnet.weights.cache import check_file_hash, discard, fetch_checkpoint, normalise_sha256, removal_note
from resnet.models.resnet import ARCHS, ConvInit, ResNet, get_arch, init_module
from resnet.data.names import load_class_names
from resnet.data.preprocessing import MIN_IMAGE_SIZE
from resnet.data.synsets import NUM_IMAGENET_CLASSES, imagenet_class_names
from resnet.weights.reading import (
    Audience,
    CheckpointMismatchError,
    CorruptCheckpointError,
    KeyMapFn,
    PathLike,
    extract_state_dict,
    fit_state_dict,
    read_checkpoint,
    WeightsWarning,
)


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
) -> ResNet:
    """Build ``arch`` (a name in :data:`resnet.models.resnet.ARCHS`), with weights when asked.

    ``pretrained=True`` takes NVIDIA's NGC checkpoint from the torch hub cache,
    downloading it first if needed (from ``mirror`` or ``$CONVNETS_WEIGHTS_MIRROR`` when set);
    ``pretrained_from_file`` loads a local checkpoint instead. The two are exclusive.
    ``sha256`` (64 hex digits) is the expected SHA-256 of that file: a file that differs is refused
    with :class:`resnet.weights.reading.HashMismatchError` (a download that differs is not kept).
    The model is returned on the CPU, float32, in training mode, like NVIDIA's entrypoints;
    its parameters are ordinary contiguous tensors unless ``channels_last`` asks for the channels-last
    memory format of 4-D weights (faster for training with channels-last inputs; torch utilities such as
    pruning expect the default); with ``fast_inference`` its eval-mode, no-grad calls take the eval fast path
    when it computes exactly what the modules do (:attr:`resnet.models.resnet.ResNet.fast_inference`).
    ``num_classes=None`` takes the number of classes of the weights file (1000 without one).
    The model's ``classes`` attribute holds its class names: those stored in the file (a ``model.pth``
    written by ``python -m resnet train``), ImageNet's for a 1000-class model, else ``None``; its
    ``image_size`` the side of the images it was trained at where the file records it (a ``model.pth``),
    else ``None`` (NVIDIA's weights: 224).
    See :mod:`resnet.hub` for the meaning of every argument.
    """
    get_arch(arch)
    if not isinstance(pretrained, bool):
        # torch.hub.load(repo, entry, "model.pth") passes the file as ``pretrained``, whose truth would load
        # NVIDIA's weights instead of it.
        hint = (f"to load the file {str(pretrained)!r}, pass pretrained=False, pretrained_from_file={str(pretrained)!r}"
                if isinstance(pretrained, (str, os.PathLike)) else
                "pass pretrained=True for NVIDIA's weights, or pretrained=False with pretrained_from_file=PATH")
        raise TypeError(f"pretrained must be True or False, not the {type(pretrained).__name__} {pretrained!r}; {hint}")
    if pretrained and pretrained_from_file is not None:
        raise ValueError(
            "pretrained=True and pretrained_from_file are mutually exclusive: pass "
            "pretrained=False, pretrained_from_file=PATH to load a local file, or leave out "
            "pretrained_from_file to use NVIDIA's NGC weights"
        )
    sha256 = normalise_sha256(sha256)
    if sha256 is not None and not pretrained and pretrained_from_file is None:
        raise ValueError(
            "sha256 is the expected hash of the weights file: pass it with pretrained=True (NVIDIA's file) "
            "or with pretrained_from_file=PATH"
        )
    arch_kwargs = dict(
        num_classes=num_classes, last_bn_0_init=last_bn_0_init, conv_init=conv_init, trt=trt, fused_se=fused_se,
        fast_inference=fast_inference,
    )
    if pretrained:
        path = fetch_checkpoint(arch, mirror=mirror, progress=progress, sha256=sha256)
        model = _load_pretrained(arch, path, True, state_dict_key_map_fn, arch_kwargs)
    elif pretrained_from_file is not None:
        path = Path(pretrained_from_file)
        if sha256 is not None and path.is_file():
            check_file_hash(path, sha256)
        model = _load_pretrained(arch, path, False, state_dict_key_map_fn, arch_kwargs)
    else:
        arch_kwargs["num_classes"] = NUM_IMAGENET_CLASSES if num_classes is None else num_classes
        model = ResNet(arch, **arch_kwargs)
        model.classes = _class_names(model.num_classes, None)
        model.image_size = None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _load_pretrained(
    arch: str, path: Path, in_cache: bool, key_map_fn: Optional[KeyMapFn], arch_kwargs: dict
) -> ResNet:
    try:
        obj = read_checkpoint(path)
    except CorruptCheckpointError as error:
        if not in_cache:
            raise
        # A damaged cache entry would fail every later call: remove it so the next one downloads afresh.
        problem = discard(path)
        raise CorruptCheckpointError(
            f"{error}. {removal_note(problem, path, 'python')}",
            cli_message=f"{error.describe('cli')}. {removal_note(problem, path, 'cli')}",
        ) from error
    source = repr(str(path))
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
    model.classes = _class_names(num_classes, stored, source)
    model.image_size = _image_size(obj.get("image_size") if isinstance(obj, dict) else None, source)
    return model


def _image_size(stored: object, source: str) -> Optional[int]:
    """The training image size a file records (``model.pth``), or None; a value that cannot be one is left out
    with a warning."""
    if stored is None:
        return None
    if isinstance(stored, int) and not isinstance(stored, bool) and MIN_IMAGE_SIZE <= stored <= 4096:
        return stored
    warnings.warn(f"{source}: the stored image_size {stored!r} is not an image side from {MIN_IMAGE_SIZE} to 4096; "
                  "it is not used (224 is)", UserWarning, stacklevel=3)
    return None


def _class_names(num_classes: int, stored: object, source: str = "") -> Optional[list[str]]:
    """The file's class names when it stores one per output (made printable, :mod:`resnet.data.names`), ImageNet's
    for 1000 outputs, else None. Stored names that do not fit the head are left out with a warning."""
    names = load_class_names(stored, num_classes, source)
    if names is not None:
        return names
    return imagenet_class_names() if num_classes == NUM_IMAGENET_CLASSES else None


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
