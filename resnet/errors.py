"""The base of the errors the library raises when it cannot do what it was asked.

Each layer raises its own subclass (:class:`resnet.data.folders.DataFolderError`,
:class:`resnet.training.run_files.RunFolderError`, ...) with a message that names the input and says what to do.
Python callers catch them like any exception; the command line (:mod:`resnet.cli`) is the only place that turns
them into an exit status and an ``error:`` line. Errors of the weights (:class:`resnet.weights.WeightsError`) and
of images (:class:`resnet.data.errors.ImageLoadError`) have their own bases, older than this one.
"""

from __future__ import annotations


class ConvNetsError(Exception):
    """A request the library cannot carry out as asked; the message names the input and the remedy.

    Attributes:
        partial: part of the work was done and delivered before the failure (results printed, a report shown),
            so a caller may want to treat it as a partial failure rather than a refusal.
    """

    def __init__(self, message: str, *, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


def cli_text(message: object) -> str:
    """A warning's or error's message in command-line words (``--weights`` rather than ``pretrained_from_file=``),
    where it has them (a ``describe(audience)`` method), else its text."""
    describe = getattr(message, "describe", None)
    return describe("cli") if callable(describe) else str(message)
