"""NVIDIA's documented example (spec §5), pasted verbatim, runs against this repository offline.

The photos come from a loopback server, the weights are the stand-in NGC checkpoint placed in
a temporary hub cache, and matplotlib draws on the Agg backend. Two ways of naming the repo:

- ``'NVIDIA/DeepLearningExamples:torchhub'`` exactly as users write it, with this repository
  standing in torch.hub's cache folder for that name (the drop-in case; no line changed);
- this repository's path with ``source='local'``, the spec's form for a clone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import torch
from PIL import Image

from reference import assert_top_classes_agree, peer_probabilities, reference_batch, reference_pick_n_best
from support import PHOTOS, REPO_ROOT, Route

GITHUB_NAME = "NVIDIA/DeepLearningExamples:torchhub"

# Spec §5, verbatim.
DOCUMENTED_EXAMPLE = """\
resnet50 = torch.hub.load(REPO, 'nvidia_resnet50', pretrained=True)
utils = torch.hub.load(REPO, 'nvidia_convnets_processing_utils')
resnet50.eval().to(device)
uris = [...]                      # four image URLs
batch = torch.cat([utils.prepare_input_from_uri(uri) for uri in uris]).to(device)
with torch.no_grad():
    output = torch.nn.functional.softmax(resnet50(batch), dim=1)
results = utils.pick_n_best(predictions=output, n=5)
for uri, result in zip(uris, results):
    img = Image.open(requests.get(uri, stream=True).raw)
    img.thumbnail((256, 256), Image.LANCZOS)
    plt.imshow(img); plt.show(); print(result)
"""


@pytest.fixture
def offline_setup(seeded_cache: Path, server) -> list[str]:
    """Stand-in weights in the hub cache and the four photos on the loopback server; returns the URLs."""
    urls = []
    for photo in PHOTOS:
        content_type = "image/jpeg" if photo.suffix == ".jpg" else "image/png"
        server.routes[f"/images/{photo.name}"] = Route(photo.read_bytes(), content_type=content_type)
        urls.append(server.url(f"/images/{photo.name}"))
    return urls


def run_example(source: str, repo: str, urls: list[str]) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert source.count("uris = [...]") == 1
    source = source.replace("uris = [...]", f"uris = {urls!r}")
    namespace = {
        "torch": torch, "Image": Image, "requests": requests, "plt": plt,
        "REPO": repo, "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    try:
        exec(compile(source, "documented_example", "exec"), namespace)
    finally:
        plt.close("all")
    return namespace


@pytest.fixture(scope="module")
def peer_output() -> torch.Tensor:
    """Softmax of torchvision's resnet50 with the stand-in weights on NVIDIA's preprocessing (the peer)."""
    return peer_probabilities(reference_batch(PHOTOS))


def check_run(namespace: dict, stdout: str, expected: torch.Tensor) -> None:
    lines = stdout.splitlines()
    printed = [line for line in lines if line.startswith("sample ")]
    assert [line.split(":")[0] for line in printed] == [f"sample {i}" for i in range(len(PHOTOS))]
    assert all(line.startswith(f"sample {i}: [('") for i, line in enumerate(printed))
    # The batch is NVIDIA's preprocessing, the output is the peer model's, the lines NVIDIA's format.
    assert (namespace["batch"].cpu() - reference_batch(PHOTOS)).abs().max().item() <= 1e-6
    output = namespace["output"].cpu()
    assert output.shape == (len(PHOTOS), 1000)
    assert torch.allclose(output, expected, rtol=1e-4, atol=1e-7)
    assert printed == reference_pick_n_best(output, 5)[1]
    for pairs, peer_row in zip(namespace["results"], expected):  # the peer's top 5, near-ties left open
        assert_top_classes_agree(pairs, peer_row)
    # ... and each `print(result)` of the loop shows the same pairs.
    assert [line for line in lines if line.startswith("[(")] == [str(r) for r in namespace["results"]]


@pytest.mark.filterwarnings("ignore:.*non-interactive.*:UserWarning")
@pytest.mark.slow
def test_documented_example_with_nvidias_repo_name(offline_setup, hub_dir, peer_output, capsys) -> None:
    # torch.hub keeps downloaded repositories as <hub dir>/<owner>_<name>_<ref>; put ours there.
    (hub_dir / "NVIDIA_DeepLearningExamples_torchhub").symlink_to(REPO_ROOT, target_is_directory=True)
    namespace = run_example(DOCUMENTED_EXAMPLE, GITHUB_NAME, offline_setup)
    out = capsys.readouterr().out
    check_run(namespace, out, peer_output)
    print(out)  # shown with pytest -s: the example's output


@pytest.mark.filterwarnings("ignore:.*non-interactive.*:UserWarning")
@pytest.mark.slow
def test_documented_example_from_a_local_clone(offline_setup, peer_output, capsys) -> None:
    source = DOCUMENTED_EXAMPLE.replace("pretrained=True)", "pretrained=True, source='local')").replace(
        "'nvidia_convnets_processing_utils')", "'nvidia_convnets_processing_utils', source='local')"
    )
    assert source.count("source='local'") == 2
    namespace = run_example(source, str(REPO_ROOT), offline_setup)
    check_run(namespace, capsys.readouterr().out, peer_output)
