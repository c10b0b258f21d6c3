"""The README's commands are the ones CI and the tests use: no drift."""

from __future__ import annotations

import re

from support import REPO_ROOT

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
