"""Every option of every ``python -m resnet`` command refuses a nonsense value the same way: exit 2 and
one ``error:`` line naming the option, never a traceback, before any model is built or file is read.

The options are read from the parsers themselves, so an option added later is covered without editing
this file; the few whose value is free text (a path, a name, a URL checked later) are listed, and the
test fails if one of them stops accepting text or a typed option starts accepting anything.
"""

from __future__ import annotations

import argparse

import pytest

from resnet.__main__ import COMMANDS, main

#: Options whose value is any text at parse time (paths and names, checked when the command runs).
FREE_TEXT = {
    "classify": {"--weights", "--plot", "--onnx", "--json-output", "--input-list", "--output", "--ray-address"},
    "export": {"--weights", "--output", "--triton", "--calibration"},
    "train": {"--weights", "--output", "--resume"},
    "evaluate": {"--weights", "--onnx", "--json-output", "--predictions", "--confusion"},
}
#: Options whose value is a checked name, which "nan" is (but "%nonsense%" is not).
NAMES = {("export", "--model-name")}
#: What each command needs besides the option under test (positionals, required options), so that only
#: the option under test is wrong; an option of the same exclusive group is left out.
REQUIRED = {
    "classify": ["x.jpg"],
    "export": ["--pretrained", "--output", "out"],
    "train": ["data", "--output", "run"],
    "evaluate": ["data"],
}
#: Text that is no value of any typed option; "nan" passes float() but is no number a user means.
NONSENSE = ("%nonsense%", "nan")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    """The command parsers exactly as ``python -m resnet`` builds them (its ``main`` is stopped before
    it parses anything)."""
    found: dict[str, argparse.ArgumentParser] = {}

    class Built(Exception):
        pass

    def capture(self, *args, **kwargs):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.update(action.choices)
        raise Built()

    original = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = capture
    try:
        main(["classify"])
    except Built:
        pass
    finally:
        argparse.ArgumentParser.parse_known_args = original
    return found


def _valued_options() -> list[tuple[str, str]]:
    options = []
    for command, parser in _subparsers().items():
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                options.append((command, max(action.option_strings, key=len)))
    return sorted(options)


VALUED = _valued_options()


def test_every_command_is_covered() -> None:
    assert {command for command, _ in VALUED} == set(COMMANDS)
    assert set(FREE_TEXT) == set(COMMANDS) == set(REQUIRED)


def _parse(command: str, argv: list[str], capsys) -> tuple[object, str]:
    """Parse ``argv`` (an option, maybe its value) with what else the command needs: (namespace or exit
    status, stderr)."""
    parser = _subparsers()[command]
    parser.prog = f"python -m resnet {command}"
    option = argv[0]
    rivals = {option}
    for group in parser._mutually_exclusive_groups:
        strings = [s for action in group._group_actions for s in action.option_strings]
        if option in strings:
            rivals.update(strings)
    required, base = list(REQUIRED[command]), []
    while required:
        item = required.pop(0)
        if item.startswith("-"):
            takes_value = required and not required[0].startswith("-") and item != "--pretrained"
            value = [required.pop(0)] if takes_value else []
            if item not in rivals:
                base += [item, *value]
        else:
            base.append(item)
    try:
        result = parser.parse_args([*base, *argv])
    except SystemExit as stop:
        return stop.code, capsys.readouterr().err.strip()
    return result, ""


@pytest.mark.parametrize("nonsense", NONSENSE)
@pytest.mark.parametrize("command, option", VALUED, ids=[f"{c} {o}" for c, o in VALUED])
def test_a_nonsense_value_is_one_line_exit_2(command: str, option: str, nonsense: str, capsys) -> None:
    outcome, err = _parse(command, [option, nonsense], capsys)
    if option in FREE_TEXT[command] or (nonsense == "nan" and (command, option) in NAMES):
        assert isinstance(outcome, argparse.Namespace), f"{command} {option} takes {nonsense!r} at parse time: {err}"
        return
    assert outcome == 2, f"{command} {option} {nonsense} was accepted"
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert option in err or nonsense in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command, option", VALUED, ids=[f"{c} {o}" for c, o in VALUED])
def test_a_missing_value_is_one_line_exit_2(command: str, option: str, capsys) -> None:
    outcome, err = _parse(command, [option], capsys)
    assert outcome == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and option in err, err


@pytest.mark.parametrize("command, option", [("classify", "--plot"), ("evaluate", "--confusion")])
def test_a_picture_path_that_cannot_be_written_is_refused_before_any_work(command: str, option: str, capsys) -> None:
    """A chart drawn after a long run must not fail only then: its folder is checked as the options are read."""
    outcome, err = _parse(command, [option, "/nonexistent_dir/x.png"], capsys)
    assert outcome == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"error: argument {option}: ") and "does not exist" in err, err
