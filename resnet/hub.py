"""The model entrypoints that ``hubconf.py`` exposes, with NVIDIA's signature.

Each entrypoint is ``(pretrained=True, pretrained_from_file=None,
state_dict_key_map_fn=None, *, ...)``; the keyword-only arguments are NVIDIA's
architecture options (the ResNets' ``num_classes``, ``last_bn_0_init``, ``conv_init``, ``trt``, ``fused_se``;
the EfficientNets' ``EffNetParams``) plus this repository's additions (``progress``, ``mirror``, ``sha256``,
``channels_last``, and for the ResNets ``fast_inference``). Any other keyword is a ``TypeError`` naming it.
``nvidia_efficientnet(type=..., pretrained=True, **kwargs)`` builds any of NVIDIA's EfficientNet arch keys.
Docstrings are generated from the checkpoint table so that ``torch.hub.help`` always shows the
current facts.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Optional

from resnet.models.builder import create_model
from resnet.models.efficientnet import EFFICIENTNET_ARCHS, PARAM_NAMES, EfficientNet
from resnet.models.efficientnet_builder import create_efficientnet_model
from resnet.models.family import EFFICIENTNETS_WITH_WEIGHTS, canonical_model_arch
from resnet.models.resnet import ARCHS, ResNet
from resnet.weights.catalogue import CHECKPOINTS, MIRROR_ENV
from resnet.weights.reading import KeyMapFn, PathLike

#: The end of every model entrypoint's docstring: NVIDIA's documented example with the entrypoint's name.
_EXAMPLE = """Example:
    model = torch.hub.load(REPO, '{entry}', pretrained=True).eval()
    utils = torch.hub.load(REPO, 'nvidia_convnets_processing_utils')
    with torch.no_grad():
        probs = model(utils.prepare_input_from_uri('cat.jpg')).softmax(dim=1)
    utils.pick_n_best(probs, n=5)
"""

_DOC = """{title} image classifier ({params:,} parameters), NVIDIA's ConvNets model for ImageNet.

Returns a ``torch.nn.Module`` on the CPU, float32, in training mode (call ``.eval()``
for inference), mapping a normalised (N, 3, 224, 224) batch to (N, num_classes) raw
logits; apply softmax for probabilities. ``model.classes`` names the outputs: ImageNet's
1000 classes, the names stored in a fine-tuned model.pth, or None for a fresh head; ``model.image_size``
is the image side a model.pth was trained at (None otherwise: 224). Preprocess images with
``nvidia_convnets_processing_utils().prepare_input_from_uri``.

Weights (pretrained=True): NVIDIA's AMP-trained ImageNet checkpoint {file} from NGC,
{accuracy}. Downloaded once into <torch hub dir>/checkpoints/ (TORCH_HOME moves it).
Offline: drop the file into that folder, pass pretrained=False with
pretrained_from_file=PATH, or set {mirror_env}=URL (or mirror=URL) to a server with the file.

Args:
    pretrained: use NVIDIA's NGC weights (default True); True or False only (a file name here is refused:
        give it as pretrained_from_file).
    pretrained_from_file: a local checkpoint to load instead (with pretrained=False): an NGC
        file, a training checkpoint {{'state_dict': ...}}, keys with a 'module.' prefix,
        NVIDIA's 'layers.N' naming, or a torchvision-layout state dict. Loaded with
        torch.load(weights_only=True).
    state_dict_key_map_fn: function applied to every checkpoint key before loading.
    num_classes: classifier outputs; by default the file's (a model.pth written by
        'python -m resnet train' builds with its classes), else 1000. With weights and another
        value, the backbone loads and the new head starts fresh, with a warning (fine-tuning).
    last_bn_0_init: start each block's last BatchNorm at zero (training from scratch).
    conv_init: 'fan_in' or 'fan_out', the Kaiming mode for convolutions.
    trt: squeeze-excitation as 1x1 convolutions (TensorRT-friendly; SE models only).
    fused_se: fuse SE scaling and the residual add into one op (SE models only).
    progress: show a progress bar while downloading (keyword only).
    mirror: base URL serving checkpoint files by name, used instead of NGC (keyword only).
    sha256: the expected SHA-256 of the weights file, 64 hex digits as `sha256sum FILE` prints them:
        with pretrained_from_file, that file; with pretrained=True, NVIDIA's file (a download that
        differs is not kept). A mismatch raises HashMismatchError. Without it, each download's hash
        is recorded beside the cached file and every later load is verified against it (keyword only).
    channels_last: store 4-D weights channels-last (for training with channels-last batches);
        the default False keeps ordinary contiguous tensors, what torch's utilities (pruning,
        parametrizations ...) expect. Same outputs either way (keyword only).
    fast_inference: in eval mode under torch.no_grad() / inference_mode(), compute float32 CPU
        batches with BatchNorm folded into the convolutions and ReLU / residual adds fused into
        them: same logits within 1e-4, faster. Only while the model is exactly as built: any
        replaced module, hook, parametrization, pruning or module left in train() makes the
        model's own modules run. The folded weights (one copy of the conv weights, and one
        packed for oneDNN) are kept on the model, refolded when a parameter or buffer changes,
        freed with it. False: the modules always run; also settable later as
        model.fast_inference (keyword only).

{example}"""


def _entrypoint(arch: str, name: str) -> Callable[..., ResNet]:
    def entrypoint(
        pretrained: bool = True,
        pretrained_from_file: Optional[PathLike] = None,
        state_dict_key_map_fn: Optional[KeyMapFn] = None,
        **options: Any,
    ) -> ResNet:
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise TypeError(_unknown_keyword(name, unknown[0], names))
        return create_model(
            arch,
            pretrained=pretrained,
            pretrained_from_file=pretrained_from_file,
            state_dict_key_map_fn=state_dict_key_map_fn,
            **options,
        )

    # Show NVIDIA's three positional parameters followed by create_model's keyword-only options;
    # any other keyword is a TypeError that names it and lists them all.
    own = list(inspect.signature(entrypoint).parameters.values())[:3]
    options = [
        p for p in inspect.signature(create_model).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in {q.name for q in own}
    ]
    entrypoint.__signature__ = inspect.Signature(own + options, return_annotation=ResNet)  # type: ignore[attr-defined]
    accepted = {p.name for p in options}
    names = [p.name for p in own + options]
    checkpoint = CHECKPOINTS[arch]
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = _DOC.format(
        title=ARCHS[arch].title,
        params=ARCHS[arch].num_params,
        file=checkpoint.file_name,
        accuracy=checkpoint.accuracy_text(),
        mirror_env=MIRROR_ENV,
        entry=name,
        example=_EXAMPLE.format(entry=name),
    )
    return entrypoint


def _unknown_keyword(entry: str, keyword: str, accepted: list[str]) -> str:
    """The TypeError message for ``entry(keyword=...)``: every accepted name, and a hint where one helps."""
    message = f"{entry}() got an unexpected keyword argument {keyword!r}; it accepts {', '.join(accepted)}"
    if keyword == "weights":
        return (
            f"{message}. torchvision's weights= has no counterpart here: pass pretrained=True for NVIDIA's "
            "ImageNet weights, or pretrained=False, pretrained_from_file=PATH for a checkpoint file"
        )
    close = difflib.get_close_matches(keyword, accepted, n=1)
    return f"{message}. Did you mean {close[0]!r}?" if close else message


_EFFICIENTNET_DOC = """{title} image classifier ({params:,} parameters), NVIDIA's ConvNets model for ImageNet.

Returns a ``torch.nn.Module`` on the CPU, float32, in training mode (call ``.eval()``
for inference), mapping a normalised (N, 3, H, W) batch to (N, num_classes) raw logits; apply
softmax for probabilities. NVIDIA evaluates it at {size}x{size}: resize the shorter side to {resize}
({interpolation}), centre-crop {size} (``python -m resnet classify / evaluate --arch {arch}`` do that).
``nvidia_convnets_processing_utils().prepare_input_from_uri`` gives 224x224 (bilinear) for every arch, as
NVIDIA's utils do. ``model.classes`` names the outputs: ImageNet's 1000 classes, the names stored in a
fine-tuned model.pth, or None for a fresh head; ``model.image_size`` is the image side a model.pth was
trained at (None otherwise: {size}).

Weights (pretrained=True): NVIDIA's AMP-trained ImageNet checkpoint {file} from NGC,
{accuracy}. Downloaded once into <torch hub dir>/checkpoints/ (TORCH_HOME moves it).
Offline: drop the file into that folder, pass pretrained=False with
pretrained_from_file=PATH, or set {mirror_env}=URL (or mirror=URL) to a server with the file.

Args:
    pretrained: use NVIDIA's NGC weights (default True); True or False only.
    pretrained_from_file: a local checkpoint to load instead (with pretrained=False): an NGC file
        (stages named 'layerN.', which NVIDIA's own pretrained_from_file cannot read), NVIDIA's current
        'layers.K.' naming, keys with a 'module.' prefix, squeeze-excitation weights 2-D or 4-D, a training
        checkpoint {{'state_dict': ...}}, or a model.pth written by 'python -m resnet train'. Loaded with
        torch.load(weights_only=True).
    state_dict_key_map_fn: function applied to every checkpoint key before loading.
    dropout: dropout before the classifier, in training (NVIDIA's default for this arch: {dropout}).
    num_classes: classifier outputs; by default the file's, else 1000. With weights and another value,
        the backbone loads and the new head starts fresh, with a warning (fine-tuning).
    activation: 'silu' (default), 'relu', or 'onnx-silu' (SiLU written as x * sigmoid(x)).
    conv_init: 'fan_in' or 'fan_out', the Kaiming mode for convolutions.
    bn_momentum: BatchNorm momentum, PyTorch convention (NVIDIA's 0.01).
    bn_epsilon: BatchNorm epsilon (NVIDIA's 1e-3).
    survival_prob: stochastic-depth survival probability of the last block, in training (this arch's: {survival}).
    trt: squeeze-excitation as 1x1 convolutions (TensorRT-friendly; same outputs).
    quantized: NVIDIA's quantization-aware model; only False here (it needs NVIDIA's pytorch_quantization,
        a placeholder on PyPI): quantize an export instead, python -m resnet export --int8.
    progress: show a progress bar while downloading (keyword only).
    mirror: base URL serving checkpoint files by name, used instead of NGC (keyword only).
    sha256: the expected SHA-256 of the weights file (64 hex digits, as `sha256sum FILE` prints them); a
        mismatch raises HashMismatchError. Without it, each download's hash is recorded beside the cached
        file and every later load is verified against it (keyword only).
    channels_last: store 4-D weights channels-last (keyword only).

{example}"""

#: What an EfficientNet entrypoint takes after NVIDIA's three positional parameters: NVIDIA's EffNetParams
#: (``quantized`` only as False), then this repository's additions.
_EFFICIENTNET_OPTIONS = (*PARAM_NAMES, "quantized", "progress", "mirror", "sha256", "channels_last")


def _efficientnet_signature(return_annotation: Any) -> inspect.Signature:
    defaults = dict(num_classes=None, progress=True, mirror=None, sha256=None, channels_last=False, quantized=False,
                    activation="silu", conv_init="fan_in", bn_momentum=1 - 0.99, bn_epsilon=1e-3, trt=False)
    own = [
        inspect.Parameter("pretrained", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=True),
        inspect.Parameter("pretrained_from_file", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        inspect.Parameter("state_dict_key_map_fn", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(name))
               for name in _EFFICIENTNET_OPTIONS]
    return inspect.Signature(own + options, return_annotation=return_annotation)


def _efficientnet_entrypoint(arch: str, name: str) -> Callable[..., EfficientNet]:
    signature = _efficientnet_signature(EfficientNet)
    names = list(signature.parameters)

    def entrypoint(
        pretrained: bool = True,
        pretrained_from_file: Optional[PathLike] = None,
        state_dict_key_map_fn: Optional[KeyMapFn] = None,
        **options: Any,
    ) -> EfficientNet:
        return _build_efficientnet(arch, name, names, pretrained, pretrained_from_file, state_dict_key_map_fn,
                                   options)

    config = EFFICIENTNET_ARCHS[arch]
    checkpoint = CHECKPOINTS[arch]
    entrypoint.__signature__ = signature  # type: ignore[attr-defined]
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = _EFFICIENTNET_DOC.format(
        title=config.title, params=config.num_params, arch=arch, size=config.image_size,
        resize=config.resize_size, interpolation=config.interpolation,
        dropout=config.dropout, survival=config.survival_prob, file=checkpoint.file_name,
        accuracy=checkpoint.accuracy_text(), mirror_env=MIRROR_ENV, entry=name,
        example=_EXAMPLE.format(entry=name),
    )
    return entrypoint


def _build_efficientnet(arch: str, entry: str, names: list[str], pretrained: Any, pretrained_from_file: Any,
                        state_dict_key_map_fn: Any, options: dict) -> EfficientNet:
    unknown = sorted(set(options) - set(_EFFICIENTNET_OPTIONS))
    if unknown:
        raise TypeError(_unknown_keyword(entry, unknown[0], names))
    return create_efficientnet_model(
        arch, pretrained=pretrained, pretrained_from_file=pretrained_from_file,
        state_dict_key_map_fn=state_dict_key_map_fn, **options,
    )


def nvidia_efficientnet(
    type: str = "efficientnet-b0",  # noqa: A002 - NVIDIA's name
    pretrained: bool = True,
    pretrained_from_file: Optional[PathLike] = None,
    state_dict_key_map_fn: Optional[KeyMapFn] = None,
    **kwargs: Any,
) -> EfficientNet:
    """Any of NVIDIA's EfficientNets by its arch key, as NVIDIA's ``nvidia_efficientnet(type=..., pretrained=True,
    **kwargs)``.

    ``type``: ``efficientnet-b0`` .. ``efficientnet-b7`` or ``efficientnet-widese-b0`` .. ``-b7`` (underscores and
    any letter case accepted). NVIDIA's default ``'efficient-b0'`` (a misspelling NVIDIA's own lookup rejects with
    KeyError) is accepted as ``efficientnet-b0``, which is also the default here. NVIDIA published NGC weights
    for {with_weights} only: the others build with ``pretrained=False`` (random weights, or
    ``pretrained_from_file``), and ``pretrained=True`` is a WeightsError saying so. NVIDIA's
    quantization-aware models (``efficientnet-quant-b0`` / ``-b4``) need NVIDIA's ``pytorch_quantization``
    (a placeholder on PyPI): a ValueError that points at ``python -m resnet export --int8`` instead.

    Everything else is as in ``nvidia_efficientnet_b0`` (``torch.hub.help(REPO, 'nvidia_efficientnet_b0')``):
    ``kwargs`` are NVIDIA's EffNetParams (dropout, num_classes, activation, conv_init, bn_momentum, bn_epsilon,
    survival_prob, trt) and this repository's progress, mirror, sha256 and channels_last; any other keyword is a
    TypeError listing them.

    Example:
        model = torch.hub.load(REPO, 'nvidia_efficientnet', type='efficientnet-widese-b4', pretrained=True)
    """
    arch = canonical_model_arch(type)
    if arch not in EFFICIENTNET_ARCHS:
        raise ValueError(f"nvidia_efficientnet builds NVIDIA's EfficientNets, not {arch}; choose one of "
                         f"{', '.join(EFFICIENTNET_ARCHS)} (for {arch}: the {'nvidia_' + arch.replace('-', '_')!r} "
                         "entrypoint)")
    names = ["type", *_efficientnet_signature(EfficientNet).parameters]
    return _build_efficientnet(arch, "nvidia_efficientnet", names, pretrained, pretrained_from_file,
                               state_dict_key_map_fn, kwargs)


nvidia_efficientnet.__doc__ = (nvidia_efficientnet.__doc__ or "").replace(
    "{with_weights}", ", ".join(EFFICIENTNETS_WITH_WEIGHTS))


#: hub entrypoint name -> architecture name.
ENTRYPOINTS: dict[str, str] = {
    "nvidia_resnet50": "resnet50",
    "nvidia_resnext101_32x4d": "resnext101-32x4d",
    "nvidia_se_resnext101_32x4d": "se-resnext101-32x4d",
    "nvidia_efficientnet_b0": "efficientnet-b0",
    "nvidia_efficientnet_b4": "efficientnet-b4",
    "nvidia_efficientnet_widese_b0": "efficientnet-widese-b0",
    "nvidia_efficientnet_widese_b4": "efficientnet-widese-b4",
}
assert set(ENTRYPOINTS.values()) == set(ARCHS) | set(EFFICIENTNETS_WITH_WEIGHTS) == set(CHECKPOINTS)

nvidia_resnet50 = _entrypoint("resnet50", "nvidia_resnet50")
nvidia_resnext101_32x4d = _entrypoint("resnext101-32x4d", "nvidia_resnext101_32x4d")
nvidia_se_resnext101_32x4d = _entrypoint("se-resnext101-32x4d", "nvidia_se_resnext101_32x4d")
#: NVIDIA's legacy name for ResNeXt-101 32x4d.
nvidia_resneXt = _entrypoint("resnext101-32x4d", "nvidia_resneXt")
nvidia_efficientnet_b0 = _efficientnet_entrypoint("efficientnet-b0", "nvidia_efficientnet_b0")
nvidia_efficientnet_b4 = _efficientnet_entrypoint("efficientnet-b4", "nvidia_efficientnet_b4")
nvidia_efficientnet_widese_b0 = _efficientnet_entrypoint("efficientnet-widese-b0", "nvidia_efficientnet_widese_b0")
nvidia_efficientnet_widese_b4 = _efficientnet_entrypoint("efficientnet-widese-b4", "nvidia_efficientnet_widese_b4")
