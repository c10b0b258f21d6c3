"""Import paths of modules that moved when the package was split into layers: each old name is the new module.

``import resnet.builder`` (or a model pickled when ``ResNet`` lived in ``resnet.model``) still works: the finder
below answers the old name with the module itself (``resnet.builder is resnet.models.builder``), so patching or
reading through either name is the same thing. New code imports the new names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Optional, Sequence

#: old module name -> the module that holds its code now
MOVED: dict[str, str] = {
    "resnet.atomic": "resnet.io.atomic",
    "resnet.download": "resnet.io.download",
    "resnet.filetypes": "resnet.io.filetypes",
    "resnet.preprocessing": "resnet.data.preprocessing",
    "resnet.synsets": "resnet.data.synsets",
    "resnet.names": "resnet.data.names",
    "resnet.folders": "resnet.data.folders",
    "resnet.loading": "resnet.data.loading",
    "resnet.model": "resnet.models.resnet",
    "resnet.efficientnet": "resnet.models.efficientnet",
    "resnet.builder": "resnet.models.builder",
    "resnet.efficientnet_weights": "resnet.models.efficientnet_builder",
    "resnet.checkpoints": "resnet.weights.catalogue",
    "resnet.cache": "resnet.weights.cache",
    "resnet.folding": "resnet.fast.folding",
    "resnet.onednn": "resnet.fast.onednn",
    "resnet.trunk": "resnet.fast.trunk",
    "resnet.eval_path": "resnet.fast.eval_path",
    "resnet.inference": "resnet.fast.inference",
    "resnet.devices": "resnet.fast.devices",
    "resnet.fastpath": "resnet.fast",
    "resnet.exporters": "resnet.deploy.exporters",
    "resnet.pt2": "resnet.deploy.pt2",
    "resnet.quantize": "resnet.deploy.quantize",
    "resnet.triton_repository": "resnet.deploy.triton",
    "resnet.runtimes": "resnet.deploy.runtimes",
    "resnet.recipe": "resnet.training.recipe",
    "resnet.metrics": "resnet.training.metrics",
    "resnet.plots": "resnet.training.plots",
    "resnet.distributed": "resnet.training.distributed",
    "resnet.checkpointing": "resnet.training.run_files",
    "resnet.evaluate": "resnet.cli.evaluate",
    "resnet.train": "resnet.cli.train",
    "resnet.options": "resnet.cli.options",
    "resnet.classify": "resnet.cli.classify",
    "resnet.export": "resnet.cli.export",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module names of ``moved`` (old name -> new name) and loads each as the module that took its
    place."""

    def __init__(self, moved: dict[str, str]) -> None:
        self.moved = moved

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in self.moved:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.moved[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was loaded under its new name."""


def install(moved: dict[str, str]) -> None:
    """Answer the old names of ``moved`` from now on (once per mapping and interpreter)."""
    if not any(isinstance(finder, MovedModules) and finder.moved is moved for finder in sys.meta_path):
        sys.meta_path.append(MovedModules(moved))
