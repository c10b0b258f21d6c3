"""The demo notebook executes offline against this repository (stand-in weights, loopback images,
a local path and a file:// URI), prints what the peer model predicts, and draws each chart once."""

from __future__ import annotations

import ast
import json
import nbformat
import pytest
import torch
from nbclient import NotebookClient

from reference import assert_top_classes_agree, peer_probabilities, reference_batch
from support import PHOTOS, REPO_ROOT, Route

NOTEBOOK = REPO_ROOT / "notebooks" / "resnet50_classification.ipynb"


def test_notebook_is_small_and_runs_the_documented_example() -> None:
    assert NOTEBOOK.stat().st_size < 200_000
    source = "\n".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells)
    for line in (
        'torch.hub.load(REPO, "nvidia_resnet50", pretrained=True',
        "utils.prepare_input_from_uri(uri) for uri in uris",
        "utils.pick_n_best(predictions=output, n=5)",
        "img.thumbnail((256, 256), Image.LANCZOS)",
        "img = utils.load_image(uri)",  # not requests.get: local paths and file:// URIs work too
    ):
        assert line in source
    assert "requests.get(" not in source


def _cell(notebook, text: str):
    (cell,) = [c for c in notebook.cells if c.cell_type == "code" and text in c.source]
    return cell


def _pictures(cell) -> int:
    return sum("image/png" in output.get("data", {}) for output in cell.outputs)


@pytest.mark.slow
def test_notebook_executes_offline(server, seeded_cache, monkeypatch) -> None:
    for photo in PHOTOS:
        content_type = "image/jpeg" if photo.suffix == ".jpg" else "image/png"
        server.routes[f"/{photo.name}"] = Route(photo.read_bytes(), content_type=content_type)
    # Two URLs, a plain path and a file:// URI: every form the notebook's cells must open.
    uris = [server.url(f"/{PHOTOS[0].name}"), str(PHOTOS[1]), PHOTOS[2].as_uri(), server.url(f"/{PHOTOS[3].name}")]
    monkeypatch.setenv("CONVNETS_HUB_REPO", str(REPO_ROOT))
    monkeypatch.setenv("CONVNETS_DEMO_URIS", " ".join(uris))
    # Jupyter's own inline backend, so that what the notebook displays can be counted.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # One cell added after the notebook's own (in memory only): the probabilities at full precision.
    notebook.cells.append(nbformat.v4.new_code_cell("import json; print('PROBABILITIES', json.dumps(output.tolist()))"))
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors

    # What pick_n_best printed: NVIDIA's lines, with the classes and probabilities of torchvision's
    # resnet50 on torchvision's preprocessing (near-ties between two classes left open).
    printed = "".join(o.get("text", "") for o in _cell(notebook, "utils.pick_n_best(").outputs)
    lines = [line for line in printed.splitlines() if line.startswith("sample ")]
    assert [line.split(":")[0] for line in lines] == [f"sample {i}" for i in range(len(PHOTOS))]
    results = [ast.literal_eval(line.split(": ", 1)[1]) for line in lines]
    peer = peer_probabilities(reference_batch(PHOTOS))
    for pairs, peer_row in zip(results, peer):
        assert len(pairs) == 5
        assert_top_classes_agree(pairs, peer_row)
    (probe,) = [o["text"] for o in notebook.cells[-1].outputs if "PROBABILITIES" in o.get("text", "")]
    output = torch.tensor(json.loads(probe.split("PROBABILITIES", 1)[1]))
    assert output.shape == (len(PHOTOS), 1000)
    assert torch.allclose(output, peer, rtol=1e-4, atol=1e-7), (output - peer).abs().max()

    # One thumbnail per image, each followed by its result; then exactly one chart.
    thumbnails = _cell(notebook, "img.thumbnail(")
    assert _pictures(thumbnails) == len(PHOTOS)
    shown = "".join(o.get("text", "") for o in thumbnails.outputs)
    assert [ast.literal_eval(line) for line in shown.splitlines() if line.startswith("[(")] == results
    chart = _cell(notebook, "utils.show_predictions(")
    assert _pictures(chart) == 1, [o.output_type for o in chart.outputs]
