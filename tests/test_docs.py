"""The README and docs/ stay true to the code: every `tzc-data` / `tzc-train` command in a code block
names a real subcommand and real options, every relative link and anchor lands, and every `make`
target the README names is in the Makefile.

Each command is one test (its id names the file and line), checked against the subcommand's own
``--help``, run in-process."""

from __future__ import annotations

import os
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("tzc-data", "tzc-train")
TRAIN_SUBCOMMANDS = ("sample", "eval", "export", "notebook", "plan")


# ------------------------------------------------------------------------------------------ reading pages
def fenced(text: str) -> list[tuple[int, str, bool]]:
    """(line number, line, inside a fenced code block) for every line; fence lines count as inside."""
    out, fence = [], None
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is None and marker:
            fence = marker.group(1)
            out.append((number, line, True))
        elif fence is not None and stripped.startswith(fence) and not stripped[len(fence):].strip():
            fence = None
            out.append((number, line, True))
        else:
            out.append((number, line, fence is not None))
    return out


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {' '.join(self.words)}"


def commands_in(path: Path) -> list[Command]:
    """Every line of a code block that starts with a tzc program (after an optional ``$ ``), with
    backslash continuations joined and `` #`` comments cut."""
    lines = fenced(path.read_text())
    found, k = [], 0
    while k < len(lines):
        number, line, inside = lines[k]
        k += 1
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:].lstrip()
        if not inside or text.split(" ", 1)[0] not in PROGRAMS:
            continue
        while text.endswith("\\") and k < len(lines) and lines[k][2]:
            text = text[:-1] + " " + lines[k][1].strip()
            k += 1
        text = re.split(r"\s#", text, maxsplit=1)[0]
        try:
            words = tuple(shlex.split(text))
        except ValueError:
            words = tuple(text.split())
        page = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
        found.append(Command(page, number, words))
    return found


def subcommand(command: Command) -> list[str]:
    """The argv whose ``--help`` lists the command's options: [SUBCOMMAND] or [] (tzc-train trains)."""
    program, rest = command.words[0], command.words[1:]
    if program == "tzc-train":
        return [rest[0]] if rest and rest[0] in TRAIN_SUBCOMMANDS else []
    return [rest[0]] if rest else []


def options_named(command: Command) -> list[str]:
    """The options a command names: ``--name`` (``--name=value`` too) and single-letter ``-x``."""
    named = []
    for word in command.words[1:]:
        match = re.fullmatch(r"(--[A-Za-z][\w-]*)(=.*)?|(-[A-Za-z])", word)
        if match:
            named.append(match.group(1) or match.group(3))
    return named


def help_options(help_text: str) -> set[str]:
    """The options a ``--help`` lists: the flags at the start of each entry under its option groups
    (``  -o OUTPUT, --output OUTPUT``, ``  --colour, --no-colour``)."""
    options = set()
    for line in help_text.split("\n"):
        if re.match(r"  -", line):
            invocation = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            options.update(re.findall(r"(?:^|, )(--?[A-Za-z][\w-]*)", invocation))
    return options


_HELP: dict[tuple[str, ...], str | None] = {}


def help_of(program: str, argv: list[str], capsys: pytest.CaptureFixture,
            monkeypatch: pytest.MonkeyPatch) -> str | None:
    """``PROGRAM [SUBCOMMAND] --help``'s text, run in-process (once per subcommand); None when the
    program refuses it (an unknown subcommand)."""
    key = (program, *argv)
    if key not in _HELP:
        if program == "tzc-data":
            from tzc_data.cli import main
        else:
            from tzc_train.cli import main
        # tzc-data's main picks Arrow's allocator through the environment: keep that out of other tests
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system"))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        out = capsys.readouterr().out
        _HELP[key] = out if exit_.value.code in (0, None) else None
    return _HELP[key]


def problems_with(command: Command, capsys, monkeypatch) -> list[str]:
    """What is wrong with a command: an unknown subcommand, options its --help does not list."""
    program = command.words[0]
    argv = subcommand(command)
    name = " ".join([program, *argv])
    text = help_of(program, argv, capsys, monkeypatch)
    if text is None:
        return [f"{program} has no subcommand {argv[0]!r}" if argv else f"{name} --help fails"]
    listed = help_options(text)
    return [f"{name} has no option {option}" for option in options_named(command) if option not in listed]


def is_not_a_command(command: Command) -> bool:
    """``tzc-data COMMAND …`` (a placeholder for any command), or a line the program printed
    (``tzc-data build: rows 0:10,000 of synthetic -> runs/demo``) in an example of its output."""
    return len(command.words) > 1 and (re.fullmatch(r"[A-Z_.…\[\]]+", command.words[1]) is not None
                                       or command.words[1].endswith(":"))


COMMANDS = [c for page in PAGES for c in commands_in(page) if not is_not_a_command(c)]


def test_the_pages_hold_commands():
    assert {c.page for c in COMMANDS} >= {"README.md", "docs/building.md", "docs/training.md"}
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.page}:{c.line}")
def test_every_command_parses(command, capsys, monkeypatch):
    problems = problems_with(command, capsys, monkeypatch)
    assert not problems, f"{command}\n  " + "\n  ".join(problems)


def test_the_command_check_can_fail(capsys, monkeypatch, tmp_path):
    """A bogus option, a prefix of a real one, and a bogus subcommand are each caught."""
    page = tmp_path / "page.md"
    page.write_text("```\n$ tzc-data build --range 0:10 --out x --no-such-option   # comment --ignored\n"
                    "tzc-data verify a b --tok\n"
                    "tzc-data frobnicate --range 0:1\n"
                    "tzc-train --data a --out b \\\n    --bogus 3\n"
                    "tzc-train eval --run r --data d --limit 4\n```\n"
                    "tzc-data build --outside-a-code-block\n")
    found = [problems_with(c, capsys, monkeypatch) for c in commands_in(page)]
    assert found == [["tzc-data build has no option --no-such-option"],
                     ["tzc-data verify has no option --tok"],
                     ["tzc-data has no subcommand 'frobnicate'"],
                     ["tzc-train has no option --bogus"],
                     []]


# ------------------------------------------------------------------------------------------ links
def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text: links become their text, lowercase, punctuation dropped
    (letters, digits, ``_``, ``-`` and spaces stay), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "_- ")
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for _, line, inside in fenced(path.read_text()):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if inside or not match:
            continue
        base = github_anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def links_in(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link outside code (fenced blocks and inline code spans)."""
    links = []
    for number, line, inside in fenced(path.read_text()):
        if inside:
            continue
        text = re.sub(r"`+[^`]*`+", "", line)
        links += [(number, target) for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)]
    return links


LINKS = [(page, number, target) for page in PAGES for number, target in links_in(page)
         if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_the_pages_hold_links():
    assert len(LINKS) > 20


@pytest.mark.parametrize("page,line,target", LINKS,
                         ids=[f"{p.relative_to(ROOT)}:{n}:{t}" for p, n, t in LINKS])
def test_every_link_lands(page, line, target):
    path, _, anchor = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    where = f"{page.relative_to(ROOT)}:{line}: {target}"
    assert destination.exists(), f"{where}: no such file"
    if anchor:
        assert destination.suffix == ".md", f"{where}: an anchor into a file that is not Markdown"
        assert anchor in anchors_of(destination), f"{where}: no heading with that anchor in {destination.name}"


def test_github_anchors():
    assert github_anchor("What `verify` proves") == "what-verify-proves"
    assert github_anchor("Training: `tzc-train`") == "training-tzc-train"
    assert github_anchor("6. Workers (`--workers N`: processes for the per-row stages)") == \
        "6-workers---workers-n-processes-for-the-per-row-stages"
    assert github_anchor("### `stats/records.parquet`".lstrip("# ")) == "statsrecordsparquet"
    assert github_anchor("The plan at the entry's scale") == "the-plan-at-the-entrys-scale"


# ------------------------------------------------------------------------------------------ make targets
def test_make_targets_named_in_the_readme_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = {t for line in makefile.split("\n") for t in
               (re.match(r"([\w.-]+(?:\s+[\w.-]+)*)\s*:(?!=)", line) or [None, ""])[1].split()}
    named = set()
    for page in PAGES:
        for _, line, inside in fenced(page.read_text()):
            code = [line] if inside else re.findall(r"`([^`]*)`", line)
            for span in code:
                named.update(re.findall(r"(?:^|\s)make\s+([a-z][\w-]*)", span))
    assert {"demo", "test"} <= named
    assert named <= targets, f"make targets named in the docs but not in the Makefile: {sorted(named - targets)}"


# ------------------------------------------------------------------------------------------ names of code
def code_paths(path: Path) -> list[tuple[int, str]]:
    """(line, path) of every repository path the page names: ``tzc_data/build/pack.py``, ``tools/…``."""
    return [(number, found.rstrip(".")) for number, line, _ in fenced(path.read_text())
            for found in re.findall(r"\b(?:tzc_data|tzc_train|tests|tools)/[\w./-]*", line)]


def dotted_names(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every dotted name of the packages the page names: ``tzc_data.text.format.parse``."""
    return [(number, found.rstrip(".")) for number, line, _ in fenced(path.read_text())
            for found in re.findall(r"\btzc_(?:data|train)(?:\.\w+)+", line)]


PATHS = [(page, number, name) for page in PAGES for number, name in code_paths(page)]
DOTTED = [(page, number, name) for page in PAGES for number, name in dotted_names(page)]


@pytest.mark.parametrize("page,line,name", PATHS, ids=[f"{p.relative_to(ROOT)}:{n}:{t}" for p, n, t in PATHS])
def test_every_path_named_exists(page, line, name):
    """From a stage's name in the docs to its file: a moved or renamed module fails here."""
    assert (ROOT / name).exists(), f"{page.relative_to(ROOT)}:{line}: {name} does not exist"


def _resolves(name: str) -> bool:
    """``name`` is a module of ours, or a name defined at the top level of one (read, not imported)."""
    import ast

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if not source.exists():
            continue
        rest = parts[cut:]
        if not rest:
            return True
        tree = ast.parse(source.read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        return rest[0] in defined
    return False


@pytest.mark.parametrize("page,line,name", DOTTED, ids=[f"{p.relative_to(ROOT)}:{n}:{t}" for p, n, t in DOTTED])
def test_every_dotted_name_resolves(page, line, name):
    assert _resolves(name), f"{page.relative_to(ROOT)}:{line}: {name} is no module or top-level name of ours"


def test_the_name_checks_can_fail():
    assert _resolves("tzc_data.build.pipeline.build") and _resolves("tzc_data.verify")
    assert not _resolves("tzc_data.pipeline") and not _resolves("tzc_data.build.pipeline.no_such_name")
    assert len(PATHS) > 5 and len(DOTTED) > 5
