"""Class names read from files: printable on one line wherever they are shown or written, and a list that does
not fit the head is left out with a warning (resnet.data.names)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from support import PHOTOS, REPO_ROOT, standin_state_dict
from train_support import main

import resnet.training.run_files as run_files
from resnet.data.names import printable_name

#: Names a hostile model.pth or ONNX export may hold: a terminal escape (clear the screen, colour), a forged
#: result line, a right-to-left override, a non-UTF-8 folder name as Python decodes it (a lone surrogate).
HOSTILE = ["\x1b[2J\x1b[31mred", "cat\n  99.9%  dog", "caf\udce9 \u202egnp.exe"]
ESCAPED = ["\\x1b[2J\\x1b[31mred", "cat\\n  99.9%  dog", "caf\\udce9 \\u202egnp.exe"]


def hub_load(**kwargs) -> torch.nn.Module:
    return torch.hub.load(str(REPO_ROOT), "nvidia_resnet50", source="local", pretrained=False, **kwargs)


def three_class_file(folder: Path, classes, name: str = "model.pth") -> Path:
    """A model.pth as ``train`` writes it: the stand-in backbone and the first 3 rows of its head."""
    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:3].clone(), state["fc.bias"][:3].clone()
    path = folder / name
    contents = run_files.model_file(state, arch="resnet50", classes=[], image_size=224)
    contents["classes"] = classes  # as stored, whatever it is
    torch.save(contents, path)
    return path


def test_printable_names_are_unchanged_and_others_escaped() -> None:
    for name in ("tench, Tinca tinca", "crème brûlée", "日本語", "שלום", "👨\u200d👩\u200d👧", "a\\nb", "50% $x$"):
        assert printable_name(name) == name
    assert [printable_name(n) for n in HOSTILE] == ESCAPED
    for name in HOSTILE + ["\u2028", "\x85", "\x7f", "\t", "\r"]:
        escaped = printable_name(name)
        assert escaped.isprintable() and len(escaped.splitlines()) == 1, escaped
        escaped.encode("utf-8")


@pytest.mark.slow
def test_a_model_pth_with_unprintable_names_loads_them_escaped(tmp_path) -> None:
    path = three_class_file(tmp_path, HOSTILE)
    with pytest.warns(UserWarning, match=r"class name\(s\) 0 .*1 .*2 .* shown escaped"):
        model = hub_load(pretrained_from_file=path)
    assert model.classes == ESCAPED


@pytest.mark.parametrize("stored, problem", [
    ([f"n{i}" for i in range(10**5)], "100,000 names for the model's 3 outputs"),
    (["a", 2, None], "2 entries that are not strings (the first: entry 1, of type int)"),
    ("abc", "a str, not a list of names"),
], ids=["a-million-names", "non-strings", "a-string"])
@pytest.mark.slow
def test_stored_names_that_do_not_fit_the_head_are_left_out_with_a_warning(tmp_path, stored, problem, capsys) -> None:
    path = three_class_file(tmp_path, stored)
    with pytest.warns(UserWarning, match=re.escape(problem)):
        model = hub_load(pretrained_from_file=path)
    assert model.classes is None
    if not isinstance(stored, str):
        return
    # The command line says so once, as a warning line, and names the classes by number.
    assert main("classify", PHOTOS[0], "--weights", path, "--top-k", "3", "--quiet") == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and problem in warnings[0] and str(path) in warnings[0], captured.err
    assert "  class 0" in captured.out or "  class 1" in captured.out or "  class 2" in captured.out


@pytest.mark.slow
def test_classify_prints_one_escaped_line_per_class(tmp_path, capsys) -> None:
    path = three_class_file(tmp_path, HOSTILE)
    photo = tmp_path / "a\nfake.png"  # a file name may forge lines too
    shutil.copy(PHOTOS[0], photo)
    assert main("classify", photo, "--weights", path, "--top-k", "3", "--quiet") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 4 and "\x1b" not in out and "\u202e" not in out, lines
    assert lines[0] == printable_name(str(photo))
    assert sorted(line.split("%  ", 1)[1] for line in lines[1:]) == sorted(ESCAPED)


@pytest.mark.slow
def test_evaluate_text_json_and_chart_show_escaped_names(tmp_path, capsys) -> None:
    path = three_class_file(tmp_path, HOSTILE)
    data = tmp_path / "data"
    for name, photo in zip(["\x1b[2J\x1b[31mred", "cat\n  99.9%  dog"], PHOTOS):  # folders named as the classes
        (data / name).mkdir(parents=True)
        shutil.copy(photo, data / name / photo.name)
    chart = tmp_path / "confusion.png"
    assert main("evaluate", data, "--weights", path, "--quiet", "--confusion", chart) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\n  99.9%  dog" not in out, out
    assert ESCAPED[0] in out and ESCAPED[1] in out
    assert chart.stat().st_size > 0
    assert main("evaluate", data, "--weights", path, "--quiet", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(row["class"] for row in report["per_class"]) == sorted(ESCAPED[:2])


@pytest.mark.slow
def test_confusion_chart_takes_dollar_signs_as_text() -> None:
    from resnet.training.plots import confusion_png

    confusion = torch.tensor([[3, 1], [0, 2]])
    assert confusion_png(confusion, ["x^2$ $", "$\\frac{1}$"]).startswith(b"\x89PNG")


def test_triton_labels_are_never_split_or_undecodable(tmp_path) -> None:
    from resnet.deploy.exporters import ExportError
    from resnet.deploy.triton import write_triton_model

    def write(path: Path) -> None:
        path.write_bytes(b"model")

    for raw in (["a", "b\nc"], ["a", "caf\udce9"], ["a", "b\rc"]):
        with pytest.raises(ExportError, match="cannot write labels.txt"):
            write_triton_model(tmp_path / "refused", "m", "pytorch", write, num_classes=2, class_names=raw)
        assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").rglob("*.pt"))
    folder = write_triton_model(tmp_path / "repo", "m", "pytorch", write, num_classes=3, class_names=ESCAPED)
    assert (folder / "labels.txt").read_text(encoding="utf-8").splitlines() == ESCAPED


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.slow
def test_export_of_unprintable_names_writes_them_escaped(tmp_path, capsys) -> None:
    """A non-UTF-8 name made export fail at the end, writing labels.txt; a newline split a label in two."""
    path = three_class_file(tmp_path, HOSTILE)
    repo = tmp_path / "repo"
    assert main("export", "--weights", path, "--triton", repo, "--backend", "pytorch", "--quiet") == 0
    assert (repo / "resnet50_libtorch" / "labels.txt").read_text(encoding="utf-8").splitlines() == ESCAPED
    metadata = {"metadata.json": ""}
    torch.jit.load(str(repo / "resnet50_libtorch" / "1" / "model.pt"), _extra_files=metadata)
    assert json.loads(metadata["metadata.json"])["class_names"] == ESCAPED
    assert "shown escaped" in capsys.readouterr().err
