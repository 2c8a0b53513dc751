"""Every option of every ``jiio`` subcommand has help text, and every ``--help`` works."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterator

import pytest

from jiio_tasks.cli import build_parser, main

# (command path, option) pairs deliberately hidden from --help with argparse.SUPPRESS.
HIDDEN: set[tuple[str, str]] = set()


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def _commands() -> list[tuple[str, ...]]:
    """Every command path: ``()``, each verb and each ``verb family`` subcommand."""
    return [path for path, _ in _walk(build_parser())]


def _name(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


def test_every_option_has_help() -> None:
    missing: list[str] = []
    hidden: set[tuple[str, str]] = set()
    checked = 0
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            checked += 1
            where = (" ".join(path), _name(action))
            if action.help == argparse.SUPPRESS:
                hidden.add(where)
            elif not isinstance(action.help, str) or not action.help.strip():
                missing.append(" ".join(where))
    assert not missing, f"options without help: {missing}"
    assert hidden == HIDDEN
    assert checked > 100  # every family registered its subcommands


def test_subcommands_have_help() -> None:
    """Each verb's subcommand list shows a one-line help for every family."""
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {c.dest for c in action._choices_actions if c.help}
                assert described == set(action.choices), f"{' '.join(path)}: {set(action.choices) - described}"


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "jiio")
def test_help_exits_zero(path: tuple[str, ...]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    text = out.getvalue()
    assert text.startswith("usage: jiio " + " ".join(path))
    assert "%(" not in text  # every %(default)s / %(choices)s was expanded
