"""``python -m resnet COMMAND``: the command-line front end of the model family.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Callable

from resnet.cli.options import ArgumentParser, run_command

#: command -> (module, one-line help)
COMMANDS = {
    "classify": ("resnet.cli.classify", "classify image files, folders and URLs"),
    "export": ("resnet.cli.export", "export TorchScript / ONNX models and Triton model repositories"),
    "train": ("resnet.cli.train", "fine-tune a model on a folder of labelled images (NVIDIA's recipe, torchrun)"),
    "evaluate": ("resnet.cli.evaluate", "measure top-1 / top-5 accuracy on a folder of labelled images"),
}


DESCRIPTION = (
    "Classify images and export models of NVIDIA's ResNet-50 v1.5 family. "
    "'python -m resnet COMMAND --help' lists the options of a command. "
    "Exit status: 0 done, 1 some inputs failed, 2 nothing could run (bad arguments, no weights)."
)


def plain_text(doc: str | None) -> str | None:
    """A docstring as ``--help`` shows it: reStructuredText's ``literal`` and :role:`name` marks removed."""
    if doc is None:
        return None
    return re.sub(r"(?::[a-z]+:)?`{1,2}([^`]+)`{1,2}", r"\1", doc)


class CommandParsers(dict):
    """``name -> parser`` of the commands, each parser filled by its module's ``add_arguments`` when first looked
    up: argparse looks up only the command given, so ``python -m resnet --help`` imports no command module and
    ``python -m resnet classify ...`` only ``resnet.cli.classify`` (none of them imports torch before ``run``).
    Iterating over it (``dict(parsers)``, ``.items()``) fills every parser."""

    def __init__(self, fill: Callable[[str, argparse.ArgumentParser], None]) -> None:
        super().__init__()
        self._fill = fill
        self._filled: set[str] = set()

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        parser = super().__getitem__(name)
        if name not in self._filled:
            self._filled.add(name)
            self._fill(name, parser)
        return parser

    def __iter__(self):  # dict(self) and dict.update(self) then read each parser through __getitem__
        return iter(list(super().keys()))

    def values(self):  # type: ignore[override]
        return [self[name] for name in self]

    def items(self):  # type: ignore[override]
        return [(name, self[name]) for name in self]

    def get(self, name, default=None):  # type: ignore[override]
        return self[name] if name in self else default


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m resnet`` with ``argv`` (default: the command line); returns the exit status."""
    parser = ArgumentParser(prog="python -m resnet", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def fill(name: str, command_parser: argparse.ArgumentParser) -> None:
        module = importlib.import_module(COMMANDS[name][0])
        command_parser.description = plain_text(module.__doc__)
        module.add_arguments(command_parser)

    parsers = CommandParsers(fill)
    subparsers._name_parser_map = subparsers.choices = parsers
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text)
    # Parsed in two steps so that an unknown option is reported by its command's parser: with the closest
    # option of that command and its own --help.
    args, extras = parser.parse_known_args(argv)
    if extras:
        parsers[args.command].unrecognized(extras)
    return run_command(importlib.import_module(COMMANDS[args.command][0]).run, args)


if __name__ == "__main__":
    sys.exit(main())
