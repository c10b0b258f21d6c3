"""The README's commands are the ones CI and the tests use: no drift."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT, Route

README = (REPO_ROOT / "README.md").read_text()
CI = (REPO_ROOT / ".ci" / "run").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_readme_opens_with_two_commands_main_job_and_tests() -> None:
    main_job, tests = bash_blocks()[:2]
    assert main_job.strip() == "pip install -r requirements.txt && python -m resnet classify examples/images"
    assert tests.strip() == "pip install -r requirements-test.txt && python -m pytest -q"
    assert (REPO_ROOT / "examples" / "images").is_dir()


def test_ci_runs_the_readme_install_and_test_command() -> None:
    install, test = bash_blocks()[1].strip().split(" && ")
    ci_lines = [line.strip() for line in CI.splitlines()]
    assert f"python -m {install}" in ci_lines or install in ci_lines
    assert test in ci_lines


def test_requirements_cover_hubconf_dependencies() -> None:
    """Every module torch.hub checks before loading (hubconf.dependencies) is installed by requirements.txt."""
    import ast

    tree = ast.parse((REPO_ROOT / "hubconf.py").read_text())
    dependencies = next(
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["dependencies"]
    )
    assert "torch" in dependencies and "PIL" in dependencies
    distributions = {"PIL": "pillow"}  # import name -> name on PyPI, where they differ
    requirements = (REPO_ROOT / "requirements.txt").read_text().lower()
    for module in dependencies:
        name = distributions.get(module, module).lower()
        assert re.search(rf"^{re.escape(name)}\b", requirements, re.M), f"{module} ({name}) not in requirements.txt"


# --------------------------------------------------------------------------- the Python snippets, as written

#: First line of a snippet that cannot run here, followed by the reason (GitHub, a running server).
NOT_RUN = "# Not run by the tests:"
#: Web addresses the snippets use, served from the loopback server by the same photo.
SNIPPET_URLS = {"http://images.cocodataset.org/test-stuff2017/000000024309.jpg": "rocket.jpg"}

# Installed in the snippet's interpreter (sitecustomize): the URLs above go to the loopback server, and
# any other connection beyond 127.0.0.1 fails, as in the rest of the suite.
SITECUSTOMIZE = r'''
import json, os, socket

_MAP = json.loads(os.environ["README_URL_MAP"])
_connect = socket.socket.connect


def _loopback_only(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
        raise OSError(f"README snippet tried to reach {address!r}")
    return _connect(sock, address)


socket.socket.connect = _loopback_only

import requests.adapters  # noqa: E402

_send = requests.adapters.HTTPAdapter.send


def _send_mapped(self, request, **kwargs):
    request.url = _MAP.get(request.url, request.url)
    return _send(self, request, **kwargs)


requests.adapters.HTTPAdapter.send = _send_mapped
'''


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def runnable_blocks() -> list[str]:
    return [block for block in python_blocks() if not block.startswith(NOT_RUN)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ngc_file) -> Path:
    """A copy of the repository with what the README's snippets expect beside it: NVIDIA's weights in the
    torch hub cache (the stand-in), a fine-tuned ``runs/pets/model.pth`` and a labelled folder ``DATA``."""
    import torch

    from resnet.checkpointing import model_file
    from support import PHOTOS, standin_state_dict

    root = tmp_path_factory.mktemp("readme") / "repository"
    shutil.copytree(REPO_ROOT, root, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache"))
    checkpoints = root.parent / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copyfile(ngc_file("resnet50"), checkpoints / "nvidia_resnet50_200821.pth.tar")
    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:2].clone(), state["fc.bias"][:2].clone()
    (root / "runs" / "pets").mkdir(parents=True)
    torch.save(model_file(state, arch="resnet50", classes=["cat", "dog"], image_size=224),
               root / "runs" / "pets" / "model.pth")
    for wnid, photo in (("n02123045", PHOTOS[1]), ("n04266014", PHOTOS[3])):  # tabby, space shuttle
        (root / "DATA" / wnid).mkdir(parents=True)
        shutil.copyfile(photo, root / "DATA" / wnid / photo.name)
    (root.parent / "site").mkdir()
    (root.parent / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return root


def test_snippets_that_are_not_run_say_why() -> None:
    skipped = [block for block in python_blocks() if block.startswith(NOT_RUN)]
    assert 1 <= len(skipped) <= 4, skipped
    assert all(len(block.splitlines()[0]) > len(NOT_RUN) + 10 for block in skipped)
    assert len(runnable_blocks()) >= 5


@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_python_snippet_runs_as_written(index: int, workspace: Path, server) -> None:
    """Each snippet runs unchanged in a fresh interpreter, from the root of a copy of the repository."""
    block = runnable_blocks()[index]
    photos = REPO_ROOT / "examples" / "images"
    for url, name in SNIPPET_URLS.items():
        path = "/" + url.split("/", 3)[3]
        server.routes[path] = Route((photos / name).read_bytes(), content_type="image/jpeg")
    url_map = {url: server.url("/" + url.split("/", 3)[3]) for url in SNIPPET_URLS}
    env = dict(os.environ, TORCH_HOME=str(workspace.parent / "torch_home"), MPLBACKEND="Agg",
               PYTHONPATH=str(workspace.parent / "site"), README_URL_MAP=json.dumps(url_map))
    env.pop("CONVNETS_WEIGHTS_MIRROR", None)
    result = subprocess.run([sys.executable, "-c", block], cwd=workspace, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"README snippet failed:\n{block}\n--- stderr ---\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
