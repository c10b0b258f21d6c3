"""The demo notebook executes offline against this repository (stand-in weights, loopback images)."""

from __future__ import annotations

import shutil

import nbformat
from nbclient import NotebookClient

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
    ):
        assert line in source


def test_notebook_executes_offline(server, hub_dir, ngc_file, monkeypatch) -> None:
    (hub_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(ngc_file("resnet50"), hub_dir / "checkpoints" / "nvidia_resnet50_200821.pth.tar")
    photos = PHOTOS
    for photo in photos:
        server.routes[f"/{photo.name}"] = Route(photo.read_bytes(), content_type="image/png")
    monkeypatch.setenv("CONVNETS_HUB_REPO", str(REPO_ROOT))
    monkeypatch.setenv("CONVNETS_DEMO_URIS", " ".join(server.url(f"/{p.name}") for p in photos))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    for i in range(len(photos)):
        assert f"sample {i}: [(" in outputs
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
