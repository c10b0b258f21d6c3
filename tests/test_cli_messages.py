"""What the command line says: command-line words in every message (never the hub's argument names), and a
mistyped option answered with the closest one and the command's own --help."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from support import PHOTOS, Route, standin_state_dict
from train_support import main

#: Words of the Python API that mean nothing on the command line.
HUB_WORDS = ("pretrained_from_file", "pretrained=", "num_classes=", "entrypoint", "'nvidia_resne", "mirror=",
             "state_dict_key_map_fn", "sha256=")


def run(capsys, *args) -> tuple[int, str]:
    try:
        status = main(*args)
    except SystemExit as exit:  # argparse
        status = exit.code
    return status, capsys.readouterr().err


def weights_cases(tmp_path, ngc_file, server) -> list[tuple[list[str], str]]:
    """(extra arguments, what the message must say) for each way the weights can be wrong."""
    unsafe = tmp_path / "unsafe.pth"

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, unsafe)
    seven = standin_state_dict("resnet50")
    seven["fc.weight"], seven["fc.bias"] = seven["fc.weight"][:7].clone(), seven["fc.bias"][:7].clone()
    torch.save(seven, tmp_path / "seven.pth")
    (tmp_path / "bad.pth").write_bytes(b"PK\x03\x04" + bytes(5000))
    server.routes["/w/nvidia_resnet50_200821.pth.tar"] = Route(b"gone", status=404)
    return [
        (["--weights", str(tmp_path / "missing.pth")],
         "does not exist; give the path of the checkpoint file as --weights"),
        (["--weights", str(tmp_path)], "is a directory, not a file"),
        (["--weights", str(tmp_path / "bad.pth")], "is not a readable PyTorch checkpoint"),
        (["--weights", str(unsafe)], "with --weights"),
        (["--weights", str(ngc_file("resnext101-32x4d"))], "It is a resnext101-32x4d checkpoint: pass --arch "
                                                             "resnext101-32x4d."),
        (["--arch", "resnext101-32x4d", "--weights", str(ngc_file("resnet50"))], "It is a resnet50 checkpoint: "
                                                                                 "pass --arch resnet50."),
        (["--mirror", server.url("/w")], "--mirror"),
    ]


@pytest.mark.parametrize("command", ["classify", "evaluate", "export"])
@pytest.mark.slow
def test_weights_errors_use_command_line_words(command, tmp_path, ngc_file, server, capsys) -> None:
    data = tmp_path / "data"
    (data / "tench").mkdir(parents=True)
    target = {"classify": [str(PHOTOS[0])], "evaluate": [str(data)], "export": []}[command]
    extra = {"export": ["--output", str(tmp_path / "out"), "--format", "torchscript"]}.get(command, [])
    files = tmp_path / "files"
    files.mkdir()
    for arguments, expected in weights_cases(files, ngc_file, server):
        if command == "export" and "--weights" not in arguments:
            arguments = [*arguments, "--pretrained"]
        status, err = run(capsys, command, *target, *arguments, *extra, "--quiet")
        lines = err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), (arguments, err)
        assert expected in lines[0], (arguments, lines[0])
        leaked = [word for word in HUB_WORDS if word in lines[0]]
        assert leaked == [], (arguments, leaked, lines[0])


def test_the_new_head_warning_has_a_command_line_wording(ngc_file) -> None:
    from resnet.models.builder import create_model
    from resnet.cli.options import cli_text

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_model("resnet50", pretrained_from_file=ngc_file("resnet50"), num_classes=3)
    (warning,) = [w for w in caught if "class head" in str(w.message)]
    assert "num_classes=3" in str(warning.message)  # the Python API's words for Python users
    cli = cli_text(warning.message)
    assert "1000-class head and the model 3 classes" in cli and not [w for w in HUB_WORDS if w in cli], cli


@pytest.mark.parametrize("argv, expected", [
    (["classify", "x.jpg", "--topk", "3"], "unrecognized arguments: --topk 3; did you mean --top-k? "
                                           "('python -m resnet classify --help' lists the options)"),
    (["evaluate", "data", "--weigths=m.pth"], "did you mean --weights? ('python -m resnet evaluate --help'"),
    (["train", "data", "-o", "run", "--batchsize", "8"], "did you mean --batch-size? ('python -m resnet train --help'"),
    (["export", "--pretrained", "--output", "out", "--format", "onx"], "invalid choice: 'onx' (choose from "
                                                                      "'torchscript', 'onnx', 'pt2', 'both'); did you "
                                                                      "mean onnx? ('python -m resnet export --help'"),
    (["clasify", "x.jpg"], "did you mean classify? ('python -m resnet --help' lists the options)"),
], ids=["classify", "evaluate", "train", "export-choice", "command"])
def test_a_mistyped_option_names_the_closest_one_and_the_commands_help(argv, expected, capsys) -> None:
    status, err = run(capsys, *argv)
    assert status == 2 and err.count("\n") == 1 and expected in err, err


def test_an_option_like_no_other_gets_no_guess(capsys) -> None:
    status, err = run(capsys, "train", "data", "-o", "run", "--frobnicate")
    assert status == 2 and "unrecognized arguments: --frobnicate ('python -m resnet train --help'" in err, err


@pytest.mark.parametrize("option", ["--weights", "--onnx"])
def test_a_file_this_user_cannot_read_is_one_line(option, tmp_path, monkeypatch, capsys) -> None:
    """The tests run as root, who reads every file: the refusal of a file without read permission is faked."""
    import resnet.io.filetypes

    def refuse(path, size=4096):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(resnet.io.filetypes, "read_head", refuse)
    path = tmp_path / "locked.bin"
    path.write_bytes(b"x")
    status, err = run(capsys, "classify", str(PHOTOS[0]), option, str(path), "--quiet")
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "cannot read" in lines[0] and "Permission denied" in lines[0], err
    assert str(path) in lines[0]
