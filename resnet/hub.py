"""The model entrypoints that ``hubconf.py`` exposes, with NVIDIA's signature.

Each entrypoint is ``(pretrained=True, pretrained_from_file=None,
state_dict_key_map_fn=None, *, ...)``; the keyword-only arguments are NVIDIA's
architecture options plus this repository's additions (``progress``, ``mirror``, ``sha256``,
``channels_last``, ``fast_inference``). Any other keyword is a ``TypeError`` naming it. Docstrings are
generated from the checkpoint table so that ``torch.hub.help`` always shows the
current facts.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Optional

from resnet.models.builder import create_model
from resnet.weights.catalogue import CHECKPOINTS, MIRROR_ENV
from resnet.models.resnet import ARCHS, ResNet
from resnet.weights.reading import KeyMapFn, PathLike

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

Example:
    model = torch.hub.load(REPO, '{entry}', pretrained=True).eval()
    utils = torch.hub.load(REPO, 'nvidia_convnets_processing_utils')
    with torch.no_grad():
        probs = model(utils.prepare_input_from_uri('cat.jpg')).softmax(dim=1)
    utils.pick_n_best(probs, n=5)
"""


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


#: hub entrypoint name -> architecture name.
ENTRYPOINTS: dict[str, str] = {
    "nvidia_resnet50": "resnet50",
    "nvidia_resnext101_32x4d": "resnext101-32x4d",
    "nvidia_se_resnext101_32x4d": "se-resnext101-32x4d",
}
assert set(ENTRYPOINTS.values()) == set(ARCHS) == set(CHECKPOINTS)

nvidia_resnet50 = _entrypoint("resnet50", "nvidia_resnet50")
nvidia_resnext101_32x4d = _entrypoint("resnext101-32x4d", "nvidia_resnext101_32x4d")
nvidia_se_resnext101_32x4d = _entrypoint("se-resnext101-32x4d", "nvidia_se_resnext101_32x4d")
#: NVIDIA's legacy name for ResNeXt-101 32x4d.
nvidia_resneXt = _entrypoint("resnext101-32x4d", "nvidia_resneXt")
