"""``python -m resnet COMMAND``: the command-line front end of the model family.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import importlib
import re
import sys

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


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m resnet`` with ``argv`` (default: the command line); returns the exit status."""
    parser = ArgumentParser(prog="python -m resnet", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(subparsers.add_parser(name, help=help_text, description=plain_text(module.__doc__)))
    # Parsed in two steps so that an unknown option is reported by its command's parser: with the closest
    # option of that command and its own --help.
    args, extras = parser.parse_known_args(argv)
    if extras:
        subparsers.choices[args.command].unrecognized(extras)
    return run_command(modules[args.command].run, args)


if __name__ == "__main__":
    sys.exit(main())
