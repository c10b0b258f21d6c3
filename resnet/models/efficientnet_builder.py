"""NVIDIA's EfficientNet checkpoints into :class:`resnet.models.efficientnet.EfficientNet`, in every layout users hold.

- NGC files: a flat ``name -> tensor`` mapping with the stages named ``layer1`` .. ``layer7`` (the naming of
  NVIDIA's code when the files were written); here they become ``layers.0`` .. ``layers.6``.
- NVIDIA's current naming (``layers.K.``), as its training code and ``state_dict()`` write it.
- A ``module.`` (DistributedDataParallel) or ``_orig_mod.`` (``torch.compile``) prefix, stripped.
- Squeeze-excitation weights 2-D (``nn.Linear``) or 4-D (1x1 convolutions, ``trt=True``), reshaped to
  whatever the model holds.
- NVIDIA's training checkpoints ``{"state_dict": ..., "state_dict_ema": ..., "optimizer": ...}``: the
  ``state_dict`` entry, or with ``ema=True`` the exponential-moving-average weights.

Reading (``torch.load(weights_only=True)``), prefix stripping and the checks against the model (keys,
shapes, dtypes, finite values) are :mod:`resnet.weights.reading`'s, shared with the ResNets; this module adds
EfficientNet's names. NVIDIA's own ``pretrained_from_file`` cannot read its NGC files (``KeyError:
'layer1.block0.se'``); here every layout loads the same way, from a file or from NGC alike.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from resnet.models.sources import class_names, locate_weights, read_weights, stored_image_size
from resnet.weights.catalogue import Checkpoint
from resnet.models.efficientnet import EFFICIENTNET_ARCHS, EfficientNet, check_params, get_efficientnet_arch
from resnet.data.synsets import NUM_IMAGENET_CLASSES
from resnet.weights.reading import (
    CheckpointMismatchError,
    KeyMapFn,
    PathLike,
    WeightsError,
    extract_state_dict,
    fit_state_dict,
    read_checkpoint,
)

__all__ = [
    "SQUEEZE_EXCITATION",
    "create_efficientnet",
    "create_efficientnet_model",
    "efficientnet_from_checkpoint",
    "efficientnet_stage_names",
    "efficientnet_state_dict",
    "fit_efficientnet_state_dict",
    "ngc_checkpoint",
]

#: Where squeeze-excitation weights are in an EfficientNet's names (``layers.K.blockJ.se.{squeeze,expand}``).
SQUEEZE_EXCITATION = (".se.",)
#: Prefix of the classifier's entries, left out when a new head replaces it.
HEAD = "classifier.fc."

_NGC_STAGE = re.compile(r"^layer([1-9]\d*)\.")


def efficientnet_stage_names(key: str) -> str:
    """A key in the model's stage naming: the NGC files' ``layerN.`` (from 1) becomes ``layers.{N-1}.``;
    ``layers.K.`` and every other key are left as they are."""
    return _NGC_STAGE.sub(lambda m: f"layers.{int(m.group(1)) - 1}.", key)


def efficientnet_state_dict(
    obj: Any, source: str, key_map_fn: Optional[KeyMapFn] = None, *, ema: bool = False
) -> dict[str, torch.Tensor]:
    """The state dict in ``obj`` (a checkpoint as read from ``source``) with the model's key names.

    ``obj`` is a flat mapping of names to tensors or a training checkpoint; of a training checkpoint the
    ``state_dict`` entry is taken (as NVIDIA's ``checkpoint2model.py`` does), or with ``ema=True`` the
    ``state_dict_ema`` entry NVIDIA's ``main.py`` writes when training with ``--use-ema``.
    ``key_map_fn`` is applied to every raw key first (NVIDIA's ``state_dict_key_map_fn``).

    Raises:
        CheckpointMismatchError: ``obj`` holds no state dict (or, with ``ema=True``, no EMA weights), or an
            entry that is not a tensor; the message names ``source``.
    """
    if ema:
        weights = obj.get("state_dict_ema") if isinstance(obj, Mapping) else None
        if not isinstance(weights, Mapping) or not weights:
            raise CheckpointMismatchError(
                f"{source} holds no EMA weights (a 'state_dict_ema' entry, written by NVIDIA's training with "
                "--use-ema): load its plain weights with ema=False"
            )
        obj = weights
    return extract_state_dict(obj, source, key_map_fn, stage_names=efficientnet_stage_names)


def fit_efficientnet_state_dict(
    state: dict[str, torch.Tensor], model: EfficientNet, source: str, *, new_head: bool = False
) -> dict[str, torch.Tensor]:
    """Check ``state`` (from :func:`efficientnet_state_dict`) against ``model`` and return what
    ``model.load_state_dict(..., assign=True)`` takes: squeeze-excitation weights in the model's 2-D or 4-D
    form, every tensor in the model's dtype. ``new_head`` leaves the classifier's entries out.

    Raises:
        CheckpointMismatchError: the message names ``source`` and the model, lists the first missing,
            unexpected and wrongly shaped entries, and names the architecture (or class count) the file
            does fit, where one does.
    """
    target = f"{model.arch.name} (num_classes={model.num_classes})"
    try:
        return fit_state_dict(
            state, model.state_dict(), source, target,
            skip_prefixes=(HEAD,) if new_head else (), squeeze_excitation=SQUEEZE_EXCITATION,
        )
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f"{error}{_hint(state, model)}") from None


def ngc_checkpoint(arch: str) -> Checkpoint:
    """NVIDIA's NGC checkpoint of ``arch`` (any spelling :func:`resnet.models.efficientnet.get_efficientnet_arch`
    accepts).

    Raises:
        WeightsError: NVIDIA published no weights for ``arch`` (B1-B3, B5-B7); the message lists the archs
            that have them and says how to build ``arch`` without.
        ValueError: ``arch`` is no EfficientNet.
    """
    config = get_efficientnet_arch(arch)
    if config.checkpoint is None:
        published = ", ".join(a.name for a in EFFICIENTNET_ARCHS.values() if a.checkpoint is not None)
        raise WeightsError(
            f"NVIDIA published no pretrained weights for {config.name} (only for {published}); build it with "
            "pretrained=False to train it, or load your own weights with pretrained_from_file=PATH",
            cli_message=f"NVIDIA published no pretrained weights for {config.name} (only for {published}); "
            "train it, or pass your own weights with --weights FILE",
        )
    return config.checkpoint


def create_efficientnet(
    arch: str,
    *,
    pretrained_from_file: Optional[PathLike] = None,
    state_dict_key_map_fn: Optional[KeyMapFn] = None,
    ema: bool = False,
    num_classes: Optional[int] = None,
    **params: Any,
) -> EfficientNet:
    """Build ``arch`` with random weights, or with the weights of a checkpoint file.

    ``params`` are NVIDIA's ``EffNetParams`` (``dropout``, ``activation``, ``conv_init``, ``bn_momentum``,
    ``bn_epsilon``, ``survival_prob``, ``trt``; ``quantized=False``). With ``pretrained_from_file`` the
    model is built on the ``meta`` device and the file's tensors are assigned into it (no random
    initialisation that would be overwritten); any layout of :mod:`resnet.models.efficientnet_builder` loads,
    ``state_dict_key_map_fn`` renames raw keys first, and ``ema=True`` takes a training checkpoint's
    EMA weights. ``num_classes=None`` takes the file's class count (1000 without a file); a different
    count keeps the file's backbone and gives the model a fresh classifier, with a warning.
    ``model.classes`` holds the file's class names (a ``classes`` entry with one name per output),
    ImageNet's for 1000 outputs, else ``None``. The model is returned on the CPU, float32, in
    training mode, like NVIDIA's entrypoints.

    Raises:
        TypeError: a keyword that is no parameter (the message lists the accepted ones).
        ValueError: an unknown arch or a value no model can be built with.
        FileNotFoundError: ``pretrained_from_file`` does not exist.
        resnet.weights.reading.WeightsError: the file is unreadable, unsafe, or does not fit (subclasses of
            :mod:`resnet.weights.reading`; the message names the file and what does not match).
    """
    params = check_params(params)
    config = get_efficientnet_arch(arch)
    if pretrained_from_file is None:
        if ema:
            raise ValueError("ema=True selects the EMA weights of a training checkpoint: pass pretrained_from_file")
        model = EfficientNet(config, NUM_IMAGENET_CLASSES if num_classes is None else num_classes, **params)
        model.classes = class_names(model.num_classes, None)
        return model

    path = Path(pretrained_from_file)
    return efficientnet_from_checkpoint(
        config.name, read_checkpoint(path), repr(str(path)),
        key_map_fn=state_dict_key_map_fn, ema=ema, num_classes=num_classes, **params,
    )


def create_efficientnet_model(
    arch: str,
    *,
    pretrained: bool = False,
    pretrained_from_file: Optional[PathLike] = None,
    state_dict_key_map_fn: Optional[KeyMapFn] = None,
    num_classes: Optional[int] = None,
    progress: bool = True,
    mirror: Optional[str] = None,
    sha256: Optional[str] = None,
    channels_last: bool = False,
    ema: bool = False,
    **params: Any,
) -> EfficientNet:
    """Build ``arch`` with NVIDIA's NGC weights (``pretrained=True``), a file's (``pretrained_from_file``) or random
    ones: :func:`resnet.models.builder.create_model` for an EfficientNet.

    ``pretrained=True`` takes NVIDIA's file from the torch hub cache, downloading it first if needed, through the
    machinery the ResNets use (:mod:`resnet.weights.cache`: ``mirror`` or ``$CONVNETS_WEIGHTS_MIRROR``, a lock
    shared by processes downloading together, the SHA-256 recorded at download and checked at every load,
    ``sha256``). Any layout of this module loads, from NGC or a file alike. ``params`` are NVIDIA's
    ``EffNetParams`` (:func:`create_efficientnet`); ``channels_last`` stores 4-D weights channels-last. The model
    is returned on the CPU, float32, in training mode, with ``classes`` and ``image_size`` (the training size a
    ``model.pth`` records, else ``None``: the arch's own).

    Raises:
        TypeError: a keyword that is no parameter, or ``pretrained`` that is not a bool.
        ValueError: an unknown or QAT arch (the message points at ``export --int8``), a value no model can be
            built with, ``pretrained=True`` with a file.
        resnet.weights.reading.WeightsError: NVIDIA published no weights for ``arch`` (with ``pretrained=True``);
            the download, the cache or the file failed (the message names it and what to do).
    """
    params = check_params(params)
    config = get_efficientnet_arch(arch)
    if pretrained is True:
        ngc_checkpoint(config.name)  # no weights published: a clear error before anything else
    weights = locate_weights(config.name, pretrained=pretrained, pretrained_from_file=pretrained_from_file,
                             sha256=sha256, mirror=mirror, progress=progress)
    if weights is None:
        if ema:
            raise ValueError("ema=True selects the EMA weights of a training checkpoint: pass pretrained_from_file")
        model = EfficientNet(config, NUM_IMAGENET_CLASSES if num_classes is None else num_classes, **params)
        model.classes = class_names(model.num_classes, None)
    else:
        model = efficientnet_from_checkpoint(
            config.name, read_weights(weights), weights.source,
            key_map_fn=state_dict_key_map_fn, ema=ema, num_classes=num_classes, **params,
        )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def efficientnet_from_checkpoint(
    arch: str,
    checkpoint: Any,
    source: str = "the checkpoint",
    *,
    key_map_fn: Optional[KeyMapFn] = None,
    ema: bool = False,
    num_classes: Optional[int] = None,
    **params: Any,
) -> EfficientNet:
    """Build ``arch`` with the weights of ``checkpoint``, a checkpoint already in memory (as
    :func:`resnet.weights.reading.read_checkpoint` returns it: a state dict in any layout, or a training
    checkpoint). ``source`` names it in error messages. Everything else is as in
    :func:`create_efficientnet`, which reads a file and calls this.
    """
    params = check_params(params)
    config = get_efficientnet_arch(arch)
    state = efficientnet_state_dict(checkpoint, source, key_map_fn, ema=ema)
    head = state.get(HEAD + "weight")
    file_classes = head.shape[0] if head is not None and head.dim() == 2 else None
    if num_classes is None:
        num_classes = file_classes or NUM_IMAGENET_CLASSES
    new_head = file_classes is not None and file_classes != num_classes and num_classes != NUM_IMAGENET_CLASSES

    with torch.device("meta"):
        model = EfficientNet(config, num_classes, **params)
    fitted = fit_efficientnet_state_dict(state, model, source, new_head=new_head)
    model.load_state_dict(fitted, strict=not new_head, assign=True)
    if new_head:
        model.classifier.fc.to_empty(device="cpu")
        model.classifier.fc.reset_parameters()
        warnings.warn(
            f"{source} has a {file_classes}-class head but num_classes={num_classes}: the backbone was loaded "
            "and the new classifier head (classifier.fc) is freshly initialised; train it before use.",
            stacklevel=2,
        )
    stored = checkpoint.get("classes") if isinstance(checkpoint, Mapping) and not new_head else None
    model.classes = class_names(num_classes, stored, source)
    model.image_size = stored_image_size(checkpoint.get("image_size") if isinstance(checkpoint, Mapping) else None,
                                         source)
    return model


def _hint(state: dict[str, torch.Tensor], model: EfficientNet) -> str:
    """Name the class count or the architecture the checkpoint does fit, where there is one."""
    head = state.get(HEAD + "weight")
    if head is not None and head.dim() == 2 and head.shape[0] != model.num_classes:
        return f"\nThe file has a {head.shape[0]}-class head: pass num_classes={head.shape[0]}."
    # Only archs with the file's stem width and block count can fit: build just those (on the meta device).
    blocks = {tuple(key.split(".")[:3]) for key in state if key.startswith("layers.")}
    stem = state.get("stem.conv.weight")
    for name, config in EFFICIENTNET_ARCHS.items():
        if name == model.arch.name or len(blocks) != config.num_blocks:
            continue
        if stem is None or stem.dim() != 4 or stem.shape[0] != config.stem_channels:
            continue
        with torch.device("meta"):
            expected = EfficientNet(name, model.num_classes).state_dict()
        try:
            fit_state_dict(state, expected, "", name, squeeze_excitation=SQUEEZE_EXCITATION)
        except CheckpointMismatchError:
            continue
        return f"\nIt is an {name} checkpoint: load it as arch {name!r}."
    return "\nCheck that the file was saved from an EfficientNet of this architecture."
