"""The suite's temporary files: a passed test's ``tmp_path`` is removed when it ends (the training and export tests
write about 180 MB each; kept, one run of the suite left 17 GB behind and filled a CI disk), a failed test's
stays for inspection. Checked with this repository's own pytest settings, read from pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
SETTINGS = ("tmp_path_retention_policy", "tmp_path_retention_count")


def test_a_passed_tests_folder_is_removed_and_a_failed_ones_kept(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    options = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]
    pytester.makeini("[pytest]\n" + "".join(f"{name} = {options[name]}\n" for name in SETTINGS if name in options))
    pytester.makepyfile(
        """
        def test_passes(tmp_path):
            (tmp_path / "weights.pth").write_bytes(bytes(1000))

        def test_fails(tmp_path):
            (tmp_path / "weights.pth").write_bytes(bytes(1000))
            assert False
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    left = sorted(path.parent.name for path in (pytester.path.parent / "basetemp").rglob("weights.pth"))
    assert left == ["test_fails0"]
