"""A page of ``--help`` starts as quickly as the command itself: it loads no module that a
help page does not need, and ``ds01 …`` makes the parser of the one command it names.

``dataclasses`` (which loads ``inspect`` and ``ast``) and ``typing`` cost a help page about
as much as the rest of ds01's start-up; the client's ``socket``, ``json`` and
``urllib.parse`` are needed only to talk to ds01d (the client module itself is light).
Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import subprocess
import sys

import pytest

from ds01.cli.main import COMMANDS, build_parser
from ds01.cli.parsing import UsageError

#: What no ``--help`` page loads.
HEAVY = (
    "dataclasses",
    "inspect",
    "ast",
    "typing",
    "socket",
    "json",
    "urllib.parse",
    "rich",
    "ds01.daemon",
    "ds01.tui",
    "ds01.core",
)
#: What a command's own ``--help`` page does not load either: argparse would import shutil
#: for the terminal's width (``ds01.cli.tiers.terminal_columns`` finds it without).
HEAVY_FOR_A_COMMAND = (*HEAVY, "shutil")


def loaded_by_help(alias: str) -> list[str]:
    """The modules of ``HEAVY_FOR_A_COMMAND`` loaded once ``ALIAS --help`` printed its page."""
    code = (
        "import contextlib, io, sys\n"
        f"sys.argv = [{alias!r}, '--help']\n"
        "from ds01.cli.main import run_alias\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    run_alias({alias!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith(" + repr(HEAVY_FOR_A_COMMAND) + ")))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded: list[str] = ast.literal_eval(result.stdout.strip())
    return loaded


@pytest.mark.parametrize(
    "alias", ["container-list", "container-create", "image-build", "ds01-dashboard"]
)
def test_a_help_page_loads_nothing_heavy(alias: str) -> None:
    assert loaded_by_help(alias) == []


def test_the_whole_table_and_its_parsers_load_nothing_heavy() -> None:
    """``ds01 --bogus`` makes every command's parser (to find what was meant)."""
    code = (
        "import contextlib, io, sys\n"
        "from ds01.cli.main import main\n"
        "with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--bogus'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(" + repr(HEAVY) + ")))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert ast.literal_eval(result.stdout.strip()) == [], result.stdout


def _outcome(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[object, str, str]:
    """What parsing ``argv`` gives: the arguments, the exit, or the usage error; and what
    was printed."""
    out, err = io.StringIO(), io.StringIO()
    outcome: object
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parsed = vars(parser.parse_args(argv))
            command = parsed.pop("command")
            outcome = (command.path, sorted((k, repr(v)) for k, v in parsed.items()))
        except SystemExit as exc:
            outcome = exc.code
        except UsageError as exc:
            outcome = (exc.message, exc.usage)
    return outcome, out.getvalue(), err.getvalue()


def _command_lines() -> list[list[str]]:
    lines = [[], ["--help"], ["bogus"], ["--bogus"], ["container", "--bogus"], ["admin", "--gpus"]]
    for command in COMMANDS:
        path = list(command.path)
        lines += [
            [*path, "--help"],
            path,
            [*path, "--bogus"],
            [*path, "--jsn"],
            [path[0], "--help"],
            [path[0], "zzz"],
        ]
    return lines


def _every_parser_made(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` with every command under it made (as before a lazy tree existed)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _every_parser_made(sub)
    return parser


def test_the_lazy_tree_parses_every_command_line_as_the_whole_tree_does() -> None:
    """``ds01 …`` makes only the parsers a command line picks: help pages, usage errors and
    their "did you mean" stay those of the tree with every parser made."""
    whole = _every_parser_made(build_parser())  # parsing leaves a parser as it was
    for argv in _command_lines():
        assert _outcome(build_parser(), argv) == _outcome(whole, argv), argv


def test_a_command_line_makes_only_the_parsers_it_picks() -> None:
    parser = build_parser()
    _outcome(parser, ["container", "list", "--help"])
    nouns = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    made = [name for name in nouns.choices if not callable(dict.__getitem__(nouns.choices, name))]
    assert made == ["container"]
