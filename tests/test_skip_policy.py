"""The strict-skip check of CI (tests/skip_policy.py, on with RESNET_STRICT_SKIPS=1): small test files run by
pytest in this process; a skip off the allow-list fails the run and is listed, allowed ones do not."""

from __future__ import annotations

import pytest

from skip_policy import ENV, allowed

CONFTEST = "from skip_policy import pytest_configure  # noqa: F401\n"

TESTS = """
import pytest

def test_passes():
    pass

@pytest.mark.skipif(True, reason="needs a CUDA device")
def test_on_a_gpu():
    pass

def test_opt_in():
    pytest.skip("AOTInductor compile of ResNet-50 takes minutes: set RESNET_TEST_AOTI_RESNET50=1 to run it")
"""


@pytest.fixture(autouse=True)
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner runs load no installed plugins (they are what makes a run take seconds, and none is needed)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def strict(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    monkeypatch.setenv(ENV, "1")
    return pytester


def test_allowed_skips_pass(strict: pytest.Pytester) -> None:
    strict.makepyfile(test_allowed=TESTS)
    result = strict.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == 0
    assert "not on the allow-list" not in result.stdout.str()


def test_a_skip_off_the_list_fails_the_run_and_is_named(strict: pytest.Pytester) -> None:
    strict.makepyfile(test_allowed=TESTS, test_broken="""
import pytest

def test_export():
    pytest.skip("could not import 'onnx': No module named 'onnx'")
""")
    result = strict.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*skips not on the allow-list (RESNET_STRICT_SKIPS=1)*",
        "test_broken.py::test_export: could not import 'onnx': No module named 'onnx'",
        "1 unexpected skip(s) fail this run; allowed: *",
    ])


def test_a_module_skipped_at_import_fails_the_run(strict: pytest.Pytester) -> None:
    """``pytest.importorskip`` of a broken required package at module level: the whole file is one skip."""
    strict.makepyfile(test_allowed=TESTS, test_module="""
import pytest

pytest.importorskip("a_package_that_is_not_installed")

def test_never_collected():
    pass
""")
    result = strict.runpytest("-rs", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["test_module.py: could not import 'a_package_that_is_not_installed'*"])


def test_without_the_variable_skips_are_only_reported(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_broken="""
import pytest

def test_export():
    pytest.skip("onnxruntime is broken")
""")
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    assert result.ret == 0


def test_xfail_is_not_a_skip(strict: pytest.Pytester) -> None:
    strict.makepyfile(test_xfail="""
import pytest

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known():
    assert False
""")
    assert strict.runpytest("-p", "no:cacheprovider").ret == 0


@pytest.mark.parametrize("reason", [
    "needs a CUDA device",
    "checks the message of a machine without CUDA",
    "tritonclient[http] cannot be imported: No module named 'tritonclient'",
    "this tritonclient wheel has no model_config_pb2.py",
    "AOTInductor compile of ResNet-50 takes minutes: set RESNET_TEST_AOTI_RESNET50=1 to run it",
    "RESNET_SKIP_COMPILE_TESTS is set",
    "runs as root, where folder permissions are not enforced (the variants above always run)",
    "no named pipes on this platform",
    "no /proc mount point here",
    "no /dev/zero here",
])
def test_reasons_of_this_suite_that_are_allowed(reason: str) -> None:
    assert allowed(reason)


@pytest.mark.parametrize("reason", [
    "could not import 'onnx': No module named 'onnx'",
    "could not import 'onnxruntime': DLL load failed",
    "could not import 'matplotlib': No module named 'matplotlib'",
    "openvino is not installed (pip install openvino)",
    "no working oneDNN fused kernels in this torch (or RESNET_FUSED_KERNELS=0)",
    "this torch has no AOTInductor package API",
    "urllib3 < 2.2, below requirements.txt",
    "the dynamo ONNX exporter needs onnxscript and torch.onnx.export(dynamo=, dynamic_shapes=)",
])
def test_reasons_that_would_hide_breakage_are_not(reason: str) -> None:
    assert not allowed(reason)


def test_ci_turns_the_check_on_and_prints_skip_reasons() -> None:
    from support import REPO_ROOT

    lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert f"export {ENV}=1" in lines
    (pytest_line,) = [line for line in lines if line.startswith("python -m pytest")]
    assert "-rs" in pytest_line.split() and pytest_line.split().count("-m") == 1  # every tier, skip reasons shown
    assert "lint-imports" in lines


# --------------------------------------------------------------------------- RESNET_TOUCH_REPORT=1 (touch_report.py)


def test_touch_report_lists_the_modules_whose_code_did_not_run(pytester: pytest.Pytester, monkeypatch) -> None:
    """A run that calls one function of one module: that module is touched, the others are listed."""
    from resnet.atomic import file_kind

    import touch_report

    touched = file_kind.__module__  # wherever the package keeps it
    monkeypatch.setenv(touch_report.ENV, "1")
    pytester.makeconftest("from touch_report import pytest_configure  # noqa: F401\n")
    pytester.makepyfile(test_one_call="""
import stat
from resnet.atomic import file_kind

def test_call():
    assert isinstance(file_kind(stat.S_IFREG), str)
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 0
    out = result.stdout.str()
    modules = touch_report.package_modules()
    assert f" of {len(modules)} modules of resnet and processing_utils had a function called" in out
    listed = {line.split("not touched: ", 1)[1].strip() for line in out.splitlines() if "not touched: " in line}
    assert touched not in listed and touched in modules.values()
    assert len(listed) >= len(modules) // 2  # nothing else was called (re-export modules count once imported)
