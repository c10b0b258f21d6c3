"""Skips that cannot hide breakage: with ``RESNET_STRICT_SKIPS=1`` (set by ``.ci/run``) a run fails on a skip
whose reason is not on :data:`ALLOWED`, and lists those skips.

A skip is allowed only for what a CI machine may lack without anything being broken: a CUDA device, the
optional tritonclient wheel, a CPU feature, an opt-in environment variable, or a platform (root, Windows, no
/proc). A required test dependency that fails to import, a torch feature that went missing, or any other
reason fails the run, so a broken install cannot turn into a green run with tests gone.
"""

from __future__ import annotations

import os
import re

import pytest

#: The environment variable that turns the check on.
ENV = "RESNET_STRICT_SKIPS"

#: (what, pattern searched in the skip reason): the only reasons a strict run accepts.
ALLOWED: tuple[tuple[str, "re.Pattern[str]"], ...] = (
    ("no CUDA device or GPU", re.compile(r"\bCUDA\b|\bGPU\b")),
    ("tritonclient missing", re.compile(r"\btritonclient\b")),
    ("a CPU without the feature", re.compile(r"\b(AVX-?512\w*|AMX|AVX-NE-CONVERT)\b|on this CPU\b")),
    ("opt-in environment variable", re.compile(r"\bset [A-Z][A-Z0-9_]*=\S+ to run\b|^[A-Z][A-Z0-9_]* is set$")),
    ("platform", re.compile(r"\bruns as root\b|\bon Windows\b|\bon this platform\b|^no /proc\b|^no /dev/\w+ here$")),
)


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped test or module gave, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def allowed(reason: str) -> bool:
    """Whether ``reason`` is one a strict run accepts (:data:`ALLOWED`)."""
    return any(pattern.search(reason) for _, pattern in ALLOWED)


class StrictSkips:
    """Collects every skip of the run; fails the run and lists the skips whose reason is not allowed."""

    def __init__(self) -> None:
        self.unexpected: list[tuple[str, str]] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            if not allowed(reason):
                self.unexpected.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.unexpected:
            return
        terminalreporter.section(f"skips not on the allow-list ({ENV}=1)", sep="=", red=True, bold=True)
        for nodeid, reason in self.unexpected:
            terminalreporter.line(f"{nodeid}: {reason}")
        allowed_list = "; ".join(what for what, _ in ALLOWED)
        terminalreporter.line(f"{len(self.unexpected)} unexpected skip(s) fail this run; allowed: {allowed_list}")


def pytest_configure(config: pytest.Config) -> None:
    """Registers :class:`StrictSkips` when ``RESNET_STRICT_SKIPS=1``."""
    if os.environ.get(ENV, "") == "1":
        config.pluginmanager.register(StrictSkips(), "resnet-strict-skips")
