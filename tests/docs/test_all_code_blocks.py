"""Every code block of the docs is checked.

- Every ```python block of every docs page runs, page by page in order in one namespace per page,
  and a block followed by an output block (an unlabelled fence, optionally after a line
  "Output:") prints exactly that. A page that another test in tests/docs names (as "page.md")
  is left to that test; blocks that cannot run in a unit test are listed in ``NOT_RUN`` with the
  reason, and are still compiled and have their imports run.
- Every command the docs and the README show, in code blocks or inline code, names only what
  exists: ``jiio`` subcommands and their options (and option values where the option has
  choices) are checked against the CLI's own parser (``jiio_tasks.cli.build_parser``);
  ``./dev`` subcommands against ``./dev``; ``python -m MODULE`` and ``python SCRIPT.py --flag``
  against the module or script.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# (page, a line of the block) -> why it is not run here
NOT_RUN = {
    ("distributed.md", "with launched(\"cpu\") as env:"):
        "a full adversarial training run (tests/tasks/adversarial/test_adv_distributed*.py run the trainer)",
}


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    before: str  # the prose between the previous fence and this one


def fenced_blocks(text: str) -> list[Block]:
    blocks, pos = [], 0
    for m in re.finditer(r"^(?P<indent>[ ]{0,3})```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ ]*$",
                         text, flags=re.S | re.M):
        blocks.append(Block(m.group("lang"), m.group("code"), text.count("\n", 0, m.start()) + 1,
                            text[pos:m.start()]))
        pos = m.end()
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def python_pages() -> list[str]:
    return [p.name for p in pages() if any(b.lang == "python" for b in fenced_blocks(p.read_text("utf8")))]


def dedicated_test(page: str) -> str | None:
    """The other tests/docs test that runs this page's code (it names the page), if any."""
    for test in sorted(Path(__file__).parent.glob("test_*.py")):
        if test.name != Path(__file__).name and re.search(rf"[\"']{re.escape(page)}[\"']", test.read_text("utf8")):
            return test.name
    return None


def test_the_pages_left_to_other_tests_are_the_known_ones() -> None:
    left = {page: dedicated_test(page) for page in python_pages() if dedicated_test(page)}
    assert {"custom-problem.md", "zoo.md", "training-loop.md"} <= set(left), left


def _not_run(page: str, code: str) -> str | None:
    for (p, line), why in NOT_RUN.items():
        if p == page and line in code:
            return why
    return None


@pytest.mark.parametrize("page", [p for p in python_pages() if dedicated_test(p) is None])
def test_page_code_runs_and_prints_its_stated_output(page: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything a block writes lands here
    torch.set_num_threads(1)
    blocks = fenced_blocks((DOCS / page).read_text("utf8"))
    namespace: dict[str, object] = {"__name__": f"docs_{page}"}
    ran = 0
    for i, block in enumerate(blocks):
        if block.lang != "python":
            continue
        code = compile(block.code, f"docs/{page}:{block.line}", "exec")
        if _not_run(page, block.code):
            imports = [n for n in ast.parse(block.code).body if isinstance(n, (ast.Import, ast.ImportFrom))]
            exec(compile(ast.Module(body=imports, type_ignores=[]), f"docs/{page}:{block.line}", "exec"), {})
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
        ran += 1
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        if nxt is not None and nxt.lang == "" and nxt.before.strip() in ("", "Output:"):
            assert out.getvalue().strip() == nxt.code.strip(), f"docs/{page}:{block.line} printed other output"
    assert ran or any(_not_run(page, b.code) for b in blocks)


def test_home_page_figure_and_numbers_come_from_the_results() -> None:
    text = (DOCS / "index.md").read_text("utf8")
    figure = re.search(r"!\[[^]]*\]\((img/[^)]+\.png)\)", text)
    assert figure and (DOCS / figure.group(1)).is_file()
    results = ROOT / "benchmarks" / "results"
    faces = json.loads((results / "inversion-cpu.json").read_text("utf8"))
    core = json.loads((results / "core_inversion-cpu.json").read_text("utf8"))["jiio"]["Anderson-II"]
    for ratio in (faces["ratio_median"], core["ratio_median"]):
        assert f"{ratio:.1f}×" in text, f"home page should quote the measured {ratio:.1f}×"


def test_home_page_figure_script_draws_from_the_results(tmp_path: Path) -> None:
    import runpy

    script = runpy.run_path(str(ROOT / "benchmarks" / "plot_cost_vs_time.py"), run_name="plot_cost_vs_time")
    out = script["plot"](ROOT / "benchmarks" / "results", tmp_path / "figure.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- commands --------------------------------------------------------------------------------

def _code_texts(path: Path) -> Iterator[str]:
    """Every code block (fenced or indented) and inline code span of a Markdown file."""
    text = path.read_text("utf8")
    for block in fenced_blocks(text):
        if block.lang != "python":
            yield block.code
    prose = re.sub(r"^[ ]{0,3}```.*?^[ ]{0,3}```[ ]*$", "", text, flags=re.S | re.M)
    indented: list[str] = []
    previous = ""
    for line in prose.splitlines():
        if line.startswith("    ") and (indented or not previous.strip()):
            indented.append(line[4:])
        elif indented and not line.strip():
            indented.append("")
        else:
            if indented:
                yield "\n".join(indented)
            indented = []
        previous = line
    if indented:
        yield "\n".join(indented)
    for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", prose):
        yield " ".join(span.split())


def _commands(text: str) -> Iterator[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        line = line.strip().removeprefix("$ ")
        if "#" in line:
            line = line[: line.index("#")].rstrip() if not line.startswith("#") else ""
        if line:
            yield line


def all_commands() -> list[tuple[str, str]]:
    found = []
    for path in [*pages(), ROOT / "README.md"]:
        for text in _code_texts(path):
            for command in _commands(text):
                found.append((path.name, command))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def _check_jiio(parser: argparse.ArgumentParser, tokens: list[str], where: str) -> None:
    subs = _subparsers(parser)
    if subs and tokens and not tokens[0].startswith("-"):
        names = tokens[0].strip("[]").split("|")
        if names == ["..."] or re.fullmatch(r"<[^>]*>|[A-Z_]+", tokens[0]):
            return  # a placeholder: nothing more to check
        for name in names:
            assert name in subs, f"{where}: no subcommand {name!r} (has {sorted(subs)})"
            _check_jiio(subs[name], tokens[1:], where)
        return
    options = _options(parser)
    for i, token in enumerate(tokens):
        flag = token.strip("[]").split("=")[0]
        if not flag.startswith("-") or flag in ("-", "--") or not re.match(r"^--?[a-zA-Z]", flag):
            continue
        assert flag in options, f"{where}: no option {flag} (has {sorted(o for o in options if o.startswith('--'))})"
        action = options[flag]
        if action.choices is None or action.nargs == 0 or i + 1 >= len(tokens) or "=" in token:
            continue
        value = tokens[i + 1].strip("[]")
        if value.startswith("-") or value == "..." or value.upper() == value:
            continue  # a placeholder such as DIR, N, or nothing
        for choice in value.split("|"):
            assert choice in [str(c) for c in action.choices], f"{where}: {flag} has no value {choice!r}"


def _dev_subcommands() -> set[str]:
    script = (ROOT / "dev").read_text("utf8")
    cases = script[script.index('case "$cmd" in'):script.index("esac")]
    return {name for m in re.finditer(r"^\s+([\w|-]+)\)", cases, flags=re.M) for name in m.group(1).split("|")}


def test_every_command_in_the_docs_exists() -> None:
    from jiio_tasks.cli import build_parser

    parser = build_parser()
    dev = _dev_subcommands()
    checked = {"jiio": 0, "dev": 0, "python": 0}
    for page, command in all_commands():
        where = f"{page}: `{command}`"
        try:
            tokens = shlex.split(command)
        except ValueError:
            tokens = command.split()
        for i, token in enumerate(tokens):
            if token in ("jiio", ".venv/bin/jiio", "$(which jiio)", "jiio_tasks.cli") and (
                    i == 0 or tokens[i - 1] in ("-m",) or token != "jiio"):
                if token == "jiio_tasks.cli" and (i == 0 or tokens[i - 1] != "-m"):
                    continue
                _check_jiio(parser, tokens[i + 1:], where)
                checked["jiio"] += 1
                break
            if token == "./dev" and i + 1 < len(tokens):
                assert tokens[i + 1] in dev, f"{where}: ./dev has no subcommand {tokens[i + 1]!r}"
                checked["dev"] += 1
                break
            if token in ("python", "python3", ".venv/bin/python") and i + 1 < len(tokens):
                _check_python(tokens[i + 1:], where)
                checked["python"] += 1
                break
    assert checked["jiio"] >= 20 and checked["dev"] >= 2 and checked["python"] >= 3, checked


def _check_python(tokens: list[str], where: str) -> None:
    if tokens[0] == "-m":
        module = tokens[1]
        if module.split(".")[0] in ("jiio_core", "jiio_zoo", "jiio_tasks", "benchmarks"):
            assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
        return
    script = tokens[0]
    if not script.endswith(".py"):
        return
    candidates = [ROOT / script, ROOT / "benchmarks" / script]
    path = next((c for c in candidates if c.is_file()), None)
    assert path is not None, f"{where}: no script {script}"
    # the script's options: its own add_argument calls and those of the helpers it imports
    sources = path.read_text("utf8") + (ROOT / "benchmarks" / "_common.py").read_text("utf8")
    for token in tokens[1:]:
        flag = token.strip("[]").split("=")[0]
        if re.match(r"^--[a-z]", flag):
            assert f'"{flag}"' in sources, f"{where}: {script} has no option {flag}"
