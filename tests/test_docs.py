"""The README and the pages of docs/ say what the code does: no drift.

- Every ```python block runs as written, in a fresh interpreter, from the root of a copy of the repository
  (stand-in NVIDIA weights in a temporary torch hub cache, the URLs served from a loopback server); a
  ``# prints: X`` comment is a line the block must print. A block that cannot run here opens with
  ``# Not run by the tests:`` and the reason.
- Every ``python -m resnet ...`` and ``torchrun ... -m resnet ...`` line of any other code block, and every
  such inline code span, is parsed by the real argument parsers (torchrun's own included), without running
  the command.
- A ``$ python -m resnet ...`` line of a console block is run in-process, and the lines shown below it must
  be what it prints (``...`` stands for any text in a line, or for any lines when alone on its line);
  ``$ echo $?`` and a number give its exit status.
- Every relative link leads to a file that exists and, with ``#anchor``, to a heading of that file.
- The README is a front door: short, the two commands CI runs, the developer's fast loop, links to docs/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

import pytest

from support import PHOTOS, REPO_ROOT, Route

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
CI = (REPO_ROOT / ".ci" / "run").read_text()
#: The pages checked here: the README first, then docs/ in name order.
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def page_name(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


# --------------------------------------------------------------------------- reading the pages

FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    """A fenced code block: its page, the line of its opening fence, its language tag and its text."""

    page: Path
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{page_name(self.page)}:{self.line}"


@lru_cache(maxsize=None)
def page_text(path: Path) -> str:
    return path.read_text()


@lru_cache(maxsize=None)
def blocks_of(path: Path) -> tuple[Block, ...]:
    text = page_text(path)
    return tuple(Block(path, text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2))
                 for match in FENCE.finditer(text))


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks_of(page)]


def prose_of(path: Path) -> str:
    """The page without its code blocks (each replaced by as many empty lines, so line numbers hold)."""
    return FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), page_text(path))


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# --------------------------------------------------------------------------- the Python blocks

#: First line of a block that cannot run here, followed by the reason (GitHub, a running server).
NOT_RUN = "# Not run by the tests:"
#: A comment saying what the line before it prints: ``print(x)  # prints: 2``.
PRINTS = re.compile(r"#\s*prints:\s?(.*)$")
#: Web addresses the blocks use, served from the loopback server by the sample photos (NVIDIA's example's four
#: COCO photos).
SNIPPET_URLS = {
    "http://images.cocodataset.org/test-stuff2017/000000024309.jpg": "rocket.jpg",
    "http://images.cocodataset.org/test-stuff2017/000000028117.jpg": "chelsea.png",
    "http://images.cocodataset.org/test-stuff2017/000000006149.jpg": "coffee.png",
    "http://images.cocodataset.org/test-stuff2017/000000004954.jpg": "astronaut.png",
}

# Installed in the block's interpreter (sitecustomize): the URLs above go to the loopback server, and any other
# connection beyond 127.0.0.1 fails, as in the rest of the suite.
SITECUSTOMIZE = r'''
import json, os, socket

_MAP = json.loads(os.environ["README_URL_MAP"])
_connect = socket.socket.connect


def _loopback_only(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
        raise OSError(f"documentation snippet tried to reach {address!r}")
    return _connect(sock, address)


socket.socket.connect = _loopback_only

import requests.adapters  # noqa: E402

_send = requests.adapters.HTTPAdapter.send


def _send_mapped(self, request, **kwargs):
    request.url = _MAP.get(request.url, request.url)
    return _send(self, request, **kwargs)


requests.adapters.HTTPAdapter.send = _send_mapped
'''


def python_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.lang == "python"]


def runnable_blocks() -> list[Block]:
    return [block for block in python_blocks() if not block.text.startswith(NOT_RUN)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ngc_file) -> Path:
    """A copy of the repository with what the pages' examples expect beside it: NVIDIA's weights in the torch
    hub cache (the stand-ins of ResNet-50 and EfficientNet-B0), a fine-tuned ``runs/pets/model.pth`` (classes cat
    and dog) and a labelled folder ``DATA`` (a tabby and a space shuttle, in folders named by WordNet id)."""
    import torch

    from resnet.training.run_files import model_file
    from support import standin_state_dict

    root = tmp_path_factory.mktemp("docs") / "repository"
    shutil.copytree(REPO_ROOT, root, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache"))
    checkpoints = root.parent / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copyfile(ngc_file("resnet50"), checkpoints / "nvidia_resnet50_200821.pth.tar")
    torch.save(standin_state_dict("efficientnet-b0", live=True), checkpoints / "nvidia_efficientnet-b0_210412.pth")
    state = standin_state_dict("resnet50")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:2].clone(), state["fc.bias"][:2].clone()
    (root / "runs" / "pets").mkdir(parents=True)
    torch.save(model_file(state, arch="resnet50", classes=["cat", "dog"], image_size=224),
               root / "runs" / "pets" / "model.pth")
    for wnid, photo in (("n02123045", PHOTOS[1]), ("n04266014", PHOTOS[3])):  # tabby, space shuttle
        (root / "DATA" / wnid).mkdir(parents=True)
        shutil.copyfile(photo, root / "DATA" / wnid / photo.name)
    (root.parent / "site").mkdir()
    (root.parent / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return root


def test_blocks_that_are_not_run_say_why() -> None:
    skipped = [block for block in python_blocks() if block.text.startswith(NOT_RUN)]
    assert 1 <= len(skipped) <= 4, [block.id for block in skipped]
    assert all(len(block.text.splitlines()[0]) > len(NOT_RUN) + 10 for block in skipped)
    assert len(runnable_blocks()) >= 7


def test_every_fence_is_a_block() -> None:
    """No code block escapes the checks: every fence line is the start or end of a block found."""
    for page in PAGES:
        fences = [line for line in page_text(page).splitlines() if line.lstrip().startswith("```")]
        assert len(fences) == 2 * len(blocks_of(page)), page_name(page)


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda block: block.id)
@pytest.mark.slow
def test_python_block_runs_as_written(block: Block, workspace: Path, server) -> None:
    """The block runs unchanged in a fresh interpreter, from the root of a copy of the repository, and prints
    what its ``# prints:`` comments say."""
    photos = REPO_ROOT / "examples" / "images"
    url_map = {}
    for url, name in SNIPPET_URLS.items():
        path = "/" + url.split("/", 3)[3]
        content_type = "image/jpeg" if name.endswith(".jpg") else "image/png"
        server.routes[path] = Route((photos / name).read_bytes(), content_type=content_type)
        url_map[url] = server.url(path)
    env = dict(os.environ, TORCH_HOME=str(workspace.parent / "torch_home"), MPLBACKEND="Agg",
               PYTHONPATH=str(workspace.parent / "site"), README_URL_MAP=json.dumps(url_map))
    env.pop("CONVNETS_WEIGHTS_MIRROR", None)
    result = subprocess.run([sys.executable, "-c", block.text], cwd=workspace, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{block.id} failed:\n{block.text}\n--- stderr ---\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    expected = [match.group(1) for line in block.text.splitlines() for match in [PRINTS.search(line)] if match]
    assert contains_in_order(result.stdout.splitlines(), expected), (
        f"{block.id} should print {expected}, printed:\n{result.stdout[-3000:]}")


def contains_in_order(lines: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` are lines of ``lines`` in this order (``...`` in one stands for any text)."""
    position = 0
    for pattern in wanted:
        while position < len(lines) and not line_matches(pattern, lines[position]):
            position += 1
        if position == len(lines):
            return False
        position += 1
    return True


# --------------------------------------------------------------------------- command lines

#: Where a command of this repository starts in a shell line.
COMMAND = re.compile(r"(?:^|[\s;&|(])(?:python3?\s+-m\s+resnet|torchrun)(?=\s|$)")
#: Tags of blocks that hold output only (a log): they may show no command.
OUTPUT_TAGS = {"text"}


@dataclass
class CommandLine:
    """One command line of a page, as a shell would read it, and the output the page shows below it."""

    page: Path
    line: int
    text: str
    shown: list[str] = field(default_factory=list)
    status: Optional[int] = None  # the exit status a following ``$ echo $?`` shows

    @property
    def id(self) -> str:
        return f"{page_name(self.page)}:{self.line}"


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """The block's lines with backslash continuations joined, each with its line number in the page."""
    joined: list[tuple[int, str]] = []
    pending: Optional[tuple[int, str]] = None
    for number, line in enumerate(block.text.splitlines(), start=block.line + 1):
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.strip()
        if line.endswith("\\"):
            pending = (number, line[:-1].rstrip())
            continue
        pending = None
        joined.append((number, line))
    if pending is not None:
        joined.append(pending)
    return joined


def is_transcript(block: Block) -> bool:
    return any(line.startswith("$ ") for line in block.text.splitlines())


def block_command_lines(block: Block) -> list[CommandLine]:
    """The repository's command lines of a block; in a transcript (``$`` prompts), with the output shown."""
    if block.lang == "python" or block.lang in OUTPUT_TAGS:
        return []
    found: list[CommandLine] = []
    current: Optional[CommandLine] = None
    transcript = is_transcript(block)
    lines = logical_lines(block)
    for index, (number, line) in enumerate(lines):
        if transcript and not line.startswith("$ "):
            if current is not None:
                current.shown.append(line)
            continue
        text = line[2:] if transcript else line
        if transcript and text.strip() == "echo $?":
            assert current is not None, f"{page_name(block.page)}:{number}: 'echo $?' follows no command"
            following = lines[index + 1][1].strip() if index + 1 < len(lines) else ""
            assert following.isdigit(), f"{page_name(block.page)}:{number}: 'echo $?' shows no status"
            current.status = int(following)
            current = None
            continue
        if COMMAND.search(text):
            current = CommandLine(block.page, number, text)
            found.append(current)
        else:
            assert not transcript, f"{page_name(block.page)}:{number}: a transcript runs only python -m resnet"
            current = None
    return found


#: An inline code span.
SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def span_command_lines(page: Path) -> list[CommandLine]:
    """Inline code spans that are whole command lines (``python -m resnet evaluate FOLDER``). A span with
    ``...`` is a template, and ``torchrun``, ``python -m resnet`` and ``python -m resnet NAME`` are names (the
    last checked by :func:`test_inline_command_names_exist`)."""
    prose = prose_of(page)
    found = []
    for match in SPAN.finditer(prose):
        text = " ".join(match.group(1).split())
        words = text.split()
        name = words == ["torchrun"] or (words[:3] == ["python", "-m", "resnet"] and len(words) <= 4
                                         and not words[-1].startswith("-"))
        if COMMAND.match(text) and "..." not in text and not name:
            found.append(CommandLine(page, line_of(prose, match.start()), text))
    return found


def command_lines() -> list[CommandLine]:
    return [line for page in PAGES for block in blocks_of(page) for line in block_command_lines(block)]


def inline_command_lines() -> list[CommandLine]:
    return [line for page in PAGES for line in span_command_lines(page)]


def shell_words(text: str) -> list[str]:
    """The words of the command in a shell line: comments, other commands of the line (``&&``, ``|``, ``;``),
    redirections and leading ``NAME=value`` assignments left out."""
    words = shlex.split(text)
    for position, word in enumerate(words):
        if word.startswith("#"):
            words = words[:position]
            break
    commands, current = [], []
    for word in words:
        if word in ("&&", "||", "|", ";"):
            commands.append(current)
            current = []
        else:
            current.append(word)
    commands.append(current)
    ours = [command for command in commands if COMMAND.search(" ".join(command))]
    assert len(ours) == 1, f"expected one command of the repository in {text!r}"
    kept, skip_next = [], False
    for word in ours[0]:
        if skip_next:
            skip_next = False
            continue
        redirection = re.match(r"^\d*(?:>>?|<)(.*)$", word)
        if redirection:
            skip_next = redirection.group(1) == ""
            continue
        kept.append(word)
    while kept and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", kept[0]):
        kept.pop(0)
    return kept


@dataclass
class Parsed:
    """What parsing one command line gave: the namespace of ``python -m resnet``, or the error printed."""

    args: Optional[argparse.Namespace]
    error: str
    torchrun: Optional[argparse.Namespace] = None


def parse_resnet(argv: list[str]) -> Parsed:
    """Parse ``python -m resnet ARGV`` with the real parsers, without running the command: the front end's
    ``run_command`` (which calls the command's ``run``) is replaced by a recorder while ``main`` runs."""
    from resnet.__main__ import main

    entry = main.__globals__
    assert "run_command" in entry, "python -m resnet's main no longer calls run_command: update parse_resnet"
    recorded: list[argparse.Namespace] = []

    def record(run, args: argparse.Namespace) -> int:
        recorded.append(args)
        return 0

    output = io.StringIO()
    saved = entry["run_command"]
    entry["run_command"] = record
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            try:
                main(argv)
            except SystemExit as exit:
                if exit.code in (0, None):  # --help
                    return Parsed(argparse.Namespace(help=True), "")
    finally:
        entry["run_command"] = saved
    if recorded:
        return Parsed(recorded[0], "")
    return Parsed(None, output.getvalue().strip())


def parse_command_line(text: str) -> Parsed:
    """Parse a shell line that runs ``python -m resnet`` directly or under ``torchrun``."""
    words = shell_words(text)
    if words[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        output = io.StringIO()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            try:
                launch = get_args_parser().parse_args(words[1:])
            except SystemExit:
                return Parsed(None, f"torchrun refuses it: {output.getvalue().strip()}")
        if not (launch.module and launch.training_script == "resnet"):
            return Parsed(None, f"torchrun does not run '-m resnet' here: {launch.training_script!r}")
        parsed = parse_resnet(list(launch.training_script_args))
        parsed.torchrun = launch
        return parsed
    assert words[:3] in (["python", "-m", "resnet"], ["python3", "-m", "resnet"]), words
    return parse_resnet(words[3:])


def test_the_pages_hold_command_lines() -> None:
    """The search finds what the pages show: 19 lines sat in untagged blocks that nothing checked before."""
    lines = command_lines()
    pages = {line.page for line in lines if line.page != README}
    assert len(pages) >= 3, pages
    assert len(lines) >= 30, len(lines)
    assert sum(1 for line in lines if line.text.lstrip().startswith("torchrun")) >= 3
    assert len(inline_command_lines()) >= 10


def test_output_blocks_show_no_command() -> None:
    for block in all_blocks():
        if block.lang in OUTPUT_TAGS:
            assert not any(COMMAND.match(line) or line.startswith("$ ") for line in block.text.splitlines()), block.id


@pytest.mark.parametrize("command", command_lines() + inline_command_lines(), ids=lambda command: command.id)
def test_command_line_parses(command: CommandLine) -> None:
    """The real parsers accept the line; a line whose page shows it refused must be refused with that line."""
    parsed = parse_command_line(command.text)
    if parsed.args is None:
        assert any(line_matches(shown, parsed.error) for shown in command.shown), (
            f"{command.id}: {command.text!r} does not parse:\n{parsed.error}")
        return
    refusals = [shown for shown in command.shown if shown.startswith("error: argument")]
    assert not refusals, f"{command.id}: the page shows {refusals[0]!r}, but the line parses"
    launch = parsed.torchrun
    if launch is not None and launch.nproc_per_node not in ("1",) and hasattr(parsed.args, "distributed"):
        # Under torchrun with several processes, classify and evaluate refuse to start without --distributed.
        assert parsed.args.distributed, f"{command.id}: {command.text!r} needs --distributed under torchrun"


def test_inline_command_names_exist() -> None:
    """``python -m resnet NAME`` in the prose names a command that exists."""
    from resnet.__main__ import COMMANDS

    for page in PAGES:
        prose = prose_of(page)
        for match in SPAN.finditer(prose):
            words = match.group(1).split()
            if words[:3] == ["python", "-m", "resnet"] and len(words) == 4 and not words[3].startswith("-"):
                assert words[3] in COMMANDS, f"{page_name(page)}:{line_of(prose, match.start())}: {match.group(1)}"


# --------------------------------------------------------------------------- outputs the pages show

def line_matches(pattern: str, line: str) -> bool:
    """``pattern`` is ``line``, where ``...`` in the pattern stands for any text."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("...")), line, re.S) is not None


def lines_match(pattern: list[str], lines: list[str]) -> bool:
    """Every line of ``pattern`` matches its line of ``lines``; a pattern line ``...`` alone matches any number
    of lines (none included)."""
    if not pattern:
        return not lines
    if pattern[0].strip() == "...":
        return any(lines_match(pattern[1:], lines[skip:]) for skip in range(len(lines) + 1))
    return bool(lines) and line_matches(pattern[0], lines[0]) and lines_match(pattern[1:], lines[1:])


#: A progress bar's segment of a line (tqdm redraws it after a carriage return).
PROGRESS = re.compile(r"\|\s*\d+/\d+ \[")


def printed_lines(text: str) -> list[str]:
    """What a terminal would keep of ``text``: lines, progress bars left out."""
    kept = []
    for line in text.splitlines():
        segments = [segment for segment in line.split("\r") if segment and not PROGRESS.search(segment)]
        if segments:
            kept.append(segments[-1])
    return kept


def transcripts() -> list[CommandLine]:
    return [command for page in PAGES for block in blocks_of(page) if is_transcript(block)
            for command in block_command_lines(block)]


def test_there_are_transcripts_on_several_pages() -> None:
    assert len({command.page for command in transcripts()}) >= 3
    assert sum(1 for command in transcripts() if command.status is not None) >= 4


@pytest.mark.parametrize("command", transcripts(), ids=lambda command: command.id)
@pytest.mark.slow
def test_transcript_output_is_what_the_command_prints(command: CommandLine, workspace: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the command in-process in the workspace (stand-in weights) and compare with the page."""
    import torch

    from resnet.__main__ import main

    words = shell_words(command.text)
    assert words[:3] == ["python", "-m", "resnet"], f"{command.id}: a transcript runs python -m resnet"
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("TORCH_HOME", str(workspace.parent / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    output = io.StringIO()
    monkeypatch.setattr(sys, "stdout", output)
    monkeypatch.setattr(sys, "stderr", output)
    try:
        status = main(words[3:])
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 1
    monkeypatch.undo()
    printed = printed_lines(output.getvalue())
    assert lines_match(command.shown, printed), (
        f"{command.id}: {command.text!r}\n--- the page shows ---\n" + "\n".join(command.shown)
        + "\n--- the command printed ---\n" + "\n".join(printed))
    if command.status is not None:
        assert status == command.status, f"{command.id}: exit status {status}, the page shows {command.status}"


# --------------------------------------------------------------------------- links

#: A markdown link or image: ``[text](target)``.
LINK = re.compile(r"!?\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation other than ``-`` and ``_`` dropped, spaces
    to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in prose_of(path).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            anchor = github_anchor(heading.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def relative_links() -> list[tuple[Path, int, str]]:
    links = []
    for page in PAGES:
        prose = SPAN.sub(lambda match: " " * len(match.group(0)) if "](" not in match.group(0) else match.group(0),
                         prose_of(page))
        for match in LINK.finditer(prose):
            target = match.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # not http:, https:, mailto:
                links.append((page, line_of(prose, match.start()), target))
    return links


def test_there_are_links_between_the_pages() -> None:
    targets = {(page, target.split("#")[0]) for page, _, target in relative_links()}
    assert len(relative_links()) >= 40
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert (DOCS / "README.md", page.name) in targets, f"docs/README.md does not link {page.name}"
            assert (README, f"docs/{page.name}") in targets, f"README.md does not link {page.name}"


@pytest.mark.parametrize("link", relative_links(), ids=lambda link: f"{page_name(link[0])}:{link[1]}")
def test_relative_link_resolves(link: tuple[Path, int, str]) -> None:
    page, line, target = link
    path_part, _, anchor = target.partition("#")
    destination = (page.parent / path_part).resolve() if path_part else page
    where = f"{page_name(page)}:{line}: {target}"
    assert destination == REPO_ROOT or REPO_ROOT in destination.parents, f"{where} leaves the repository"
    assert destination.exists(), f"{where}: no such file"
    if anchor:
        assert destination.suffix == ".md", f"{where}: an anchor into a file that is not markdown"
        headings = sorted(anchors_of(destination))
        assert anchor in headings, f"{where}: no such heading (headings: {headings})"


# --------------------------------------------------------------------------- the README as a front door

def bash_blocks() -> list[str]:
    return [block.text for block in blocks_of(README) if block.lang == "bash"]


def test_readme_is_a_front_door() -> None:
    lines = page_text(README).splitlines()
    assert len(lines) <= 150, len(lines)
    assert "docs/README.md" in page_text(README)
    assert 'python -m pytest -m "not slow"' in [text.strip() for text in bash_blocks()]


def test_readme_opens_with_two_commands_main_job_and_tests() -> None:
    main_job, tests = bash_blocks()[:2]
    assert main_job.strip() == "pip install -r requirements.txt && python -m resnet classify examples/images"
    assert tests.strip() == "pip install -r requirements-test.txt && python -m pytest -q"
    assert (REPO_ROOT / "examples" / "images").is_dir()


def test_ci_runs_the_readme_install_and_test_command() -> None:
    install, test = bash_blocks()[1].strip().split(" && ")
    ci_lines = [line.strip() for line in CI.splitlines()]
    assert f"python -m {install}" in ci_lines or install in ci_lines
    assert any(line == test or line.startswith(test + " ") for line in ci_lines), (test, ci_lines)


def test_requirements_cover_hubconf_dependencies() -> None:
    """Every module torch.hub checks before loading (hubconf.dependencies) is installed by requirements.txt."""
    import ast

    tree = ast.parse((REPO_ROOT / "hubconf.py").read_text())
    dependencies = next(
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["dependencies"]
    )
    assert "torch" in dependencies and "PIL" in dependencies
    distributions = {"PIL": "pillow"}  # import name -> name on PyPI, where they differ
    requirements = (REPO_ROOT / "requirements.txt").read_text().lower()
    for module in dependencies:
        name = distributions.get(module, module).lower()
        assert re.search(rf"^{re.escape(name)}\b", requirements, re.M), f"{module} ({name}) not in requirements.txt"
