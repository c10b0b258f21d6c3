"""The base of the errors the library raises when it cannot do what it was asked.

Each layer raises its own subclass (:class:`resnet.data.folders.DataFolderError`,
:class:`resnet.training.run_files.RunFolderError`, ...) with a message that names the input and says what to do.
Python callers catch them like any exception; the command line (:mod:`resnet.cli`) is the only place that turns
them into an exit status and an ``error:`` line. Errors of the weights (:class:`resnet.weights.WeightsError`) and
of images (:class:`resnet.data.errors.ImageLoadError`) have their own bases, older than this one.
"""

from __future__ import annotations

from typing import Literal, Optional

#: Who reads a message: a Python caller (``pretrained_from_file=``) or a command-line user (``--weights``).
Audience = Literal["python", "cli"]


class ConvNetsError(Exception):
    """A request the library cannot carry out as asked; the message names the input and the remedy.

    Attributes:
        partial: part of the work was done and delivered before the failure (results printed, a report shown),
            so a caller may want to treat it as a partial failure rather than a refusal.
    """

    def __init__(self, message: str, *, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


class TwoAudiences:
    """Mixin of an exception or warning worded twice: ``str()`` for Python callers, ``describe("cli")`` for the
    command line (where the remedy names an option instead of an argument)."""

    def __init__(self, message: str, cli_message: Optional[str] = None) -> None:
        super().__init__(message)  # type: ignore[call-arg]
        self.cli_message = cli_message

    def describe(self, audience: Audience = "python") -> str:
        """The message worded for ``audience``: ``"python"`` (the default) or ``"cli"``."""
        if audience == "cli" and self.cli_message is not None:
            return self.cli_message
        return str(self)


def cli_text(message: object) -> str:
    """A warning's or error's message in command-line words (``--weights`` rather than ``pretrained_from_file=``),
    where it has them (a ``describe(audience)`` method), else its text."""
    describe = getattr(message, "describe", None)
    return describe("cli") if callable(describe) else str(message)
