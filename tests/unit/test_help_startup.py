"""A page of ``--help`` starts as quickly as the command itself: it loads no module that a
help page does not need.

``dataclasses`` (which loads ``inspect`` and ``ast``) and ``typing`` cost a help page about
as much as the rest of ds01's start-up; the client's ``socket``, ``json`` and
``urllib.parse`` are needed only to talk to ds01d (the client module itself is light).
Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

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
    """``ds01 --help`` builds every command's parser."""
    code = (
        "import contextlib, io, sys\n"
        "from ds01.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(" + repr(HEAVY) + ")))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert ast.literal_eval(result.stdout.strip()) == [], result.stdout
