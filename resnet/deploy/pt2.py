"""``torch.export`` files: an ExportedProgram (``.pt2``) and an AOTInductor package, loadable without this repository.

TorchScript is deprecated in torch 2.14 in favour of ``torch.export``; these are its successors:

* :func:`export_program` writes ``torch.export.save`` of the model (dynamic batch axis). A user loads
  it with plain torch: ``torch.export.load(path).module()`` is an ``nn.Module`` that takes ``input``
  (N, 3, 224, 224) float32 and returns the float32 logits; the export's metadata is stored in the
  archive (``torch.export.load(path, extra_files={"metadata.json": ""})`` fills it in).
* :func:`compile_package` compiles an ExportedProgram ahead of time with AOTInductor
  (``torch._inductor.aoti_compile_and_package``) into a package of native code for one device (CPU,
  or CUDA where present). ``torch._inductor.aoti_load_package(path)`` loads it (no Python model code
  involved) and is called like the model; its ``get_metadata()`` holds the export's metadata (text
  values) under the ``export.`` prefix. The package runs only on the machine kind it was compiled
  for (same CPU instruction set / GPU architecture, same torch version).

AOTInductor is a private torch API (``torch._inductor``): it is feature-detected, and
:class:`Pt2Error` says which torch version is needed when it is absent. Compiling ResNet-50 takes
minutes on 2 CPU cores (measured: see ``benchmarks/README.md``); the ExportedProgram takes seconds.

TorchScript stays in ``python -m resnet export`` for Triton's libtorch backend, which loads
TorchScript only.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from resnet.deploy.exporters import first_line

__all__ = [
    "METADATA_FILE",
    "Pt2Error",
    "aoti_available",
    "compile_package",
    "export_program",
    "load_metadata",
    "make_program",
    "program_available",
]

#: Name of the metadata entry in the ExportedProgram archive (``extra_files``).
METADATA_FILE = "metadata.json"
#: Prefix of the export's metadata keys in an AOTInductor package's ``get_metadata()``.
PACKAGE_METADATA_PREFIX = "export."
#: Largest batch the dynamic batch axis admits.
MAX_BATCH = 65536
#: Example batch used to export: 2, since torch.export would specialise a batch of 1.
_EXAMPLE_BATCH = 2


class Pt2Error(RuntimeError):
    """A ``torch.export`` / AOTInductor export could not be made; the message says what to do."""


def aoti_available() -> bool:
    """Whether this torch has AOTInductor's package API (``torch._inductor.aoti_compile_and_package``, torch 2.6+)."""
    try:
        import torch._inductor as inductor
    except ImportError:  # pragma: no cover - every torch this package supports has torch._inductor
        return False
    return callable(getattr(inductor, "aoti_compile_and_package", None)) and callable(
        getattr(inductor, "aoti_load_package", None)
    )


def program_available() -> bool:
    """Whether this torch's ``torch.export`` takes the dynamic batch axis used here (``torch.export.Dim`` and
    ``export(dynamic_shapes=)``, torch 2.2+; torch 2.1 has neither)."""
    export = getattr(torch, "export", None)
    if export is None or not callable(getattr(export, "Dim", None)):
        return False
    try:
        return "dynamic_shapes" in inspect.signature(export.export).parameters
    except (TypeError, ValueError):  # pragma: no cover - a signature Python cannot read
        return False


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def _atomic_target(path: Path) -> Path:
    """A temporary file name beside ``path`` (same folder, so the final rename is atomic), ending in ``.pt2``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.partial-", suffix=".pt2", dir=path.parent)
    os.close(handle)
    return Path(name)


def export_program(
    model: nn.Module,
    path: os.PathLike | str,
    *,
    metadata: Optional[dict[str, Any]] = None,
    device: str | torch.device = "cpu",
) -> tuple[Path, "torch.export.ExportedProgram"]:
    """Export ``model`` (as :func:`resnet.cli.export.prepare_for_export` returns it) with ``torch.export`` to ``path``.

    The program has one input (the batch, axis 0 dynamic from 1 to :data:`MAX_BATCH`) and returns the
    logits; ``metadata`` (the export's, JSON) is stored in the archive as ``metadata.json``. Returns
    the path and the ExportedProgram (for :func:`compile_package`).

    Raises:
        Pt2Error: ``torch.export`` failed (the first line of its error is quoted).
    """
    path = Path(path)
    program = make_program(model, device=device)
    staged = _atomic_target(path)
    try:
        torch.export.save(program, str(staged), extra_files={METADATA_FILE: json.dumps(metadata or {})})
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path, program


def make_program(model: nn.Module, *, device: str | torch.device = "cpu") -> "torch.export.ExportedProgram":
    """``torch.export`` of ``model`` on ``device`` (moved there, in eval mode) with a dynamic batch axis, unsaved.

    Raises:
        Pt2Error: this torch's ``torch.export`` has no dynamic axes (torch < 2.2), or ``torch.export`` failed (the
            first line of its error is quoted).
    """
    if not program_available():
        raise Pt2Error(
            f"an ExportedProgram with a dynamic batch axis needs torch 2.2 or newer with torch.export.Dim "
            f"(this is torch {torch.__version__}); upgrade torch"
        )
    device = torch.device(device)
    model = model.eval().to(device)
    side = getattr(model, "image_size", 224)  # an ExportModule says; a plain model takes 224
    example = torch.randn(_EXAMPLE_BATCH, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            return torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},))
    except Exception as error:
        raise Pt2Error(
            f"torch.export could not export the model: {type(error).__name__}: {first_line(error)}"
        ) from error


def compile_package(
    program: "torch.export.ExportedProgram",
    path: os.PathLike | str,
    *,
    metadata: Optional[dict[str, Any]] = None,
    freezing: bool = True,
) -> tuple[Path, float]:
    """Compile ``program`` with AOTInductor into the package ``path`` (``.pt2``); return it and the seconds taken.

    The device is the program's (export on CUDA for a CUDA package). ``freezing`` lets inductor treat
    the weights as constants: it folds BatchNorm, prepacks the convolution weights into the blocked
    layouts oneDNN prefers and fuses the epilogues (the fast CPU code). ``metadata`` is stored as text
    values under the ``export.`` prefix (``get_metadata()`` of the loaded package).

    Raises:
        Pt2Error: this torch has no AOTInductor package API (torch < 2.6), or compiling failed
            (AOTInductor needs a C++ compiler on the machine).
    """
    if not aoti_available():
        raise Pt2Error(
            f"AOTInductor packages need torch 2.6 or newer with torch._inductor.aoti_compile_and_package "
            f"(this is torch {torch.__version__}); upgrade torch, or export only the ExportedProgram"
        )
    import torch._inductor as inductor

    path = Path(path)
    text = {PACKAGE_METADATA_PREFIX + key: value if isinstance(value, str) else json.dumps(value)
            for key, value in (metadata or {}).items()}
    configs = {"aot_inductor.metadata": text, "freezing": freezing}
    staged = _atomic_target(path)
    start = time.perf_counter()
    try:
        staged.unlink()  # the packager writes the file itself
        with torch.no_grad():
            inductor.aoti_compile_and_package(program, package_path=str(staged), inductor_configs=configs)
        os.replace(staged, path)
    except Exception as error:
        raise Pt2Error(
            f"AOTInductor could not compile the model: {type(error).__name__}: {first_line(error)} "
            "(it needs a working C++ compiler; see torch's AOTInductor documentation)"
        ) from error
    finally:
        staged.unlink(missing_ok=True)
    return path, time.perf_counter() - start


def load_metadata(path: os.PathLike | str) -> dict[str, Any]:
    """The export metadata stored in an ExportedProgram archive written by :func:`export_program`."""
    extra = {METADATA_FILE: ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[METADATA_FILE] or "{}")
