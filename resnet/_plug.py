"""The eval fast path is plugged into the model whenever the model's module is imported, by any path.

``import resnet`` imports neither torch nor the model (``python -m resnet --help`` is immediate); it installs
the finder below, which lets :mod:`resnet.models.resnet` load as usual and then imports
:mod:`resnet.fast.eval_path`, whose import plugs it in
(:func:`resnet.models.resnet.set_inference_accelerator`). So ``import resnet; resnet.ResNet(...)``,
``from resnet.models.resnet import ResNet``, the hub entrypoints and the builders all give a model with its
fast path, as when ``import resnet`` imported everything, and the model itself still never imports the fast
path. When the model is imported by the fast path's own modules (``resnet.fast`` is being imported), nothing
is done here: ``resnet.fast`` imports ``eval_path`` itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Optional, Sequence

#: The model's module, and the module whose import plugs the fast path into it.
MODEL_MODULE = "resnet.models.resnet"
FAST_PATH_MODULE = "resnet.fast.eval_path"


class PlugFastPath(importlib.abc.MetaPathFinder):
    """Finds :data:`MODEL_MODULE` as the path finder does, with a loader that plugs the fast path in after it."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != MODEL_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenPlug(spec.loader)
        return spec


class _ThenPlug(importlib.abc.Loader):
    """The model module's own loader, then the fast path's import."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        if "resnet.fast" not in sys.modules:  # otherwise resnet.fast is importing (or has imported) eval_path
            importlib.import_module(FAST_PATH_MODULE)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename ... as the file's loader answers them
        return getattr(self.loader, name)


def install() -> None:
    """Plug the fast path into the model at its import from now on (once per interpreter; at once if the model
    module is already imported)."""
    if not any(isinstance(finder, PlugFastPath) for finder in sys.meta_path):
        sys.meta_path.insert(0, PlugFastPath())
    if MODEL_MODULE in sys.modules and "resnet.fast" not in sys.modules:
        importlib.import_module(FAST_PATH_MODULE)
