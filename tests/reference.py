"""Independent expectations for the processing utils, the documented example and the notebook.

NVIDIA's preprocessing and ``pick_n_best`` written out with torchvision, numpy and the spec's
literal constants, the label file read directly (its SHA-256 checked against the spec), and
torchvision's resnet50 with the stand-in weights as the peer model. Nothing here calls the
code under test.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from support import REPO_ROOT, standin_state_dict

LABELS_FILE = REPO_ROOT / "tests" / "fixtures" / "LOC_synset_mapping.json"
#: SHA-256 of NVIDIA's LOC_synset_mapping.json (spec §4).
LABELS_SHA256 = "1b152e31463c5116205bff54e19de56657fa787fa8eccea59738aba060d03a63"
#: How far apart this repository's model and torchvision's may put one logit (float32 paths).
LOGIT_TOLERANCE = 1e-4


@functools.lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    data = LABELS_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == LABELS_SHA256, f"{LABELS_FILE} is not NVIDIA's label file"
    return tuple(json.loads(data))


def reference_names() -> np.ndarray:
    """The 1000 class names, read from the label file (checked to be NVIDIA's)."""
    return np.array(_names())


def reference_pipeline(image: Image.Image) -> torch.Tensor:
    """NVIDIA's prepare_input_from_uri after Image.open (spec §4), constants written out: (1, 3, 224, 224)."""
    img = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])(image)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return img.float().unsqueeze(0).sub_(mean).div_(std)


def reference_batch(paths: Sequence[Path]) -> torch.Tensor:
    """:func:`reference_pipeline` of each image file, concatenated."""
    return torch.cat([reference_pipeline(Image.open(path)) for path in paths])


def reference_pick_n_best(predictions: torch.Tensor, n: int) -> tuple[list, list[str]]:
    """NVIDIA's pick_n_best, returning (results, printed lines) instead of printing."""
    predictions = predictions.float().cpu().numpy()
    top_n = np.argsort(-1 * predictions, axis=-1)[:, :n]
    names = reference_names()
    results, lines = [], []
    for idx, case in enumerate(top_n):
        r = []
        for c, v in zip(names[case], predictions[idx, case]):
            r.append((f"{c}", f"{100*v:.1f}%"))
        lines.append(f"sample {idx}: {r}")
        results.append(r)
    return results, lines


@functools.lru_cache(maxsize=1)
def peer_model() -> torch.nn.Module:
    """torchvision's resnet50 with the stand-in NGC weights, in eval mode (built once; callers leave it as it is)."""
    from torchvision.models import resnet50

    peer = resnet50()
    peer.load_state_dict(standin_state_dict("resnet50"))
    for parameter in peer.parameters():
        parameter.requires_grad_(False)
    return peer.eval()


def peer_probabilities(batch: torch.Tensor, arch: str = "resnet50") -> torch.Tensor:
    """Softmax of torchvision's resnet50 with the stand-in NGC weights on ``batch`` (the peer model)."""
    assert arch == "resnet50", "torchvision has no peer for the other architectures"
    peer = peer_model()
    assert not peer.training, "the shared peer was put in training mode"
    with torch.no_grad():
        return torch.softmax(peer(batch), dim=1)


def assert_top_classes_agree(
    printed: Sequence[tuple[str, str]], probabilities: torch.Tensor, tolerance: float = LOGIT_TOLERANCE
) -> None:
    """``printed`` (pick_n_best's ``(name, "84.7%")`` pairs for one image) are the top classes of
    ``probabilities`` (the peer's softmax row of 1000), most likely first, with their percentages.

    Near-ties are left open: two classes whose peer log-probabilities (their logits less the
    row's log-sum-exp) lie within ``tolerance`` may come in either order, and the last place may
    go to either of two such classes.
    """
    log_p = probabilities.double().log()
    names = reference_names()
    chosen: list[int] = []
    for name, percent in printed:
        candidates = [int(i) for i in np.flatnonzero(names == name) if i not in chosen]
        value = float(percent.rstrip("%"))
        # One decimal printed: within 0.05 points, and a thousandth of a point between the two models.
        peer_percents = {i: 100 * probabilities[i].item() for i in candidates}
        matches = [i for i, peer_percent in peer_percents.items() if abs(peer_percent - value) <= 0.051]
        assert matches, f"{name!r} printed as {percent}; the peer gives {list(peer_percents.values())}"
        chosen.append(max(matches, key=lambda i: log_p[i].item()))
    last = log_p.sort(descending=True).values[len(printed) - 1].item()
    must = {int(i) for i in torch.nonzero(log_p > last + tolerance).flatten()}
    assert must <= set(chosen), f"classes {sorted(must - set(chosen))} of the peer's top {len(printed)} are missing"
    assert all(log_p[i].item() >= last - tolerance for i in chosen), f"{printed} holds a class outside the peer's top"
    for a, b in zip(chosen, chosen[1:]):
        assert log_p[a].item() >= log_p[b].item() - tolerance, f"{str(names[a])!r} ranked above {str(names[b])!r}"
