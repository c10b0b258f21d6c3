"""Which modules of ``resnet/`` and ``processing_utils/`` a run exercised: with ``RESNET_TOUCH_REPORT=1`` the run
records every module that had a function of its own called while the tests ran (importing it does not count) and
lists, at the end, the modules that had none. Used to check that the fast tier (``-m "not slow"``) still touches
every module; off by default (the profile hook slows a run down).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

ENV = "RESNET_TOUCH_REPORT"
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("resnet", "processing_utils")


def has_functions(path: Path) -> bool:
    """Whether the module at ``path`` defines a function or class (code a test can call, beyond its import)."""
    code = compile(path.read_text(), str(path), "exec")
    return any(hasattr(const, "co_code") for const in code.co_consts)


def package_modules() -> dict[str, str]:
    """File path -> dotted module name of every module of :data:`PACKAGES` (subpackages included)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[str(path)] = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return modules


class TouchReport:
    """Records, through ``sys.setprofile``, which of :func:`package_modules` had a function called."""

    def __init__(self) -> None:
        self.modules = package_modules()
        self.touched: set[str] = set()
        #: Modules with nothing to call (constants, re-exports): importing them is all a test can do.
        self.import_only = {path for path in self.modules if not has_functions(Path(path))}

    def _profile(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename in self.modules and code.co_name != "<module>":
                self.touched.add(code.co_filename)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        # A run inside a run (pytester) hands the outer run's hooks back when it ends.
        self._previous = (sys.getprofile(), getattr(threading, "_profile_hook", None))
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)

    def pytest_sessionfinish(self) -> None:
        previous, previous_threads = getattr(self, "_previous", (None, None))
        sys.setprofile(previous)
        threading.setprofile(previous_threads)  # type: ignore[arg-type]

    def untouched(self) -> list[str]:
        imported = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
        return sorted(name for path, name in self.modules.items()
                      if path not in self.touched and not (path in self.import_only and path in imported))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        untouched = self.untouched()
        terminalreporter.section(f"modules no test ran ({ENV}=1)", sep="=")
        terminalreporter.line(f"{len(self.modules) - len(untouched)} of {len(self.modules)} modules of "
                              f"{' and '.join(PACKAGES)} had a function called")
        for name in untouched:
            terminalreporter.line(f"not touched: {name}")


def pytest_configure(config: pytest.Config) -> None:
    """Registers :class:`TouchReport` when ``RESNET_TOUCH_REPORT=1``."""
    if os.environ.get(ENV, "") == "1":
        config.pluginmanager.register(TouchReport(), "resnet-touch-report")
