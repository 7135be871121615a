"""``--help`` from the kept pages (``ds01.cli.kept_pages``): for every form of every command
and every terminal width from the template's narrowest, the page argparse makes from the
live parsers, printed without loading argparse or the command table; made by argparse
wherever no template holds."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ds01.cli import entry, help_record, kept_pages
from ds01.tui import entry as tui_entry

#: Every form's command line (without ``--help``) and the form whose page it prints.
FORMS = help_record.forms()
#: Widths every form is checked at, besides its narrowest and the one below: argparse's
#: default without a terminal (80), either side of it, common terminals, and one so wide
#: that nothing wraps.
WIDTHS = (60, 79, 80, 81, 100, 120, 200, 1000)


def _template(words: tuple[str, ...]) -> entry.Template:
    kept = kept_pages.PAGES[" ".join(words)]
    return kept_pages.PAGES[kept] if isinstance(kept, str) else kept  # type: ignore[return-value]


def test_the_kept_pages_are_the_live_parsers() -> None:
    kept = Path(kept_pages.__file__).read_text()
    assert kept == help_record.pages_module(), (
        "ds01's commands changed: run `make help-page` and commit src/ds01/cli/kept_pages.py"
    )


def test_every_command_and_verb_has_a_kept_page() -> None:
    from ds01.cli.main import COMMANDS

    kept = set(kept_pages.PAGES)
    assert {"ds01", "ds01d"} <= kept
    assert {c.alias for c in COMMANDS if c.alias} <= kept
    assert {" ".join(("ds01", *c.path)) for c in COMMANDS} <= kept
    assert {"ds01 container", "ds01 admin slurm sync", "ds01 reservations cancel"} <= kept


@pytest.mark.parametrize("words", sorted(FORMS), ids=" ".join)
def test_a_kept_page_is_argparse_s_at_every_width(words: tuple[str, ...]) -> None:
    """The page filled in for each width is the one argparse prints for the same command
    line: a parser changed without ``make help-page``, or a step of argparse's that the
    template does not follow, fails here."""
    min_columns = _template(words)[0]
    assert min_columns <= 60
    for columns in sorted({min_columns, min_columns + 1, *WIDTHS}):
        expected = help_record.live_page(words, columns)
        assert expected.startswith(f"usage: {' '.join(FORMS[words])}")
        assert entry.kept_page(words, columns) == expected, columns
    assert entry.kept_page(words, min_columns - 1) is None


def test_a_page_is_kept_only_for_its_command_line_and_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert entry.kept_page(["container-create"], 80) is not None
    assert entry.kept_page(["container-create", "thesis"], 80) is None
    assert entry.kept_page(["ds01", "container", "creat"], 80) is None
    assert entry.kept_page(["no-such-command"], 80) is None
    monkeypatch.setattr(kept_pages, "PYTHON", (3, 0))
    assert entry.kept_page(["container-create"], 80) is None


def _printed(argv: list[str], run: Callable[[], None], capsys: pytest.CaptureFixture[str]) -> str:
    old = sys.argv
    sys.argv = argv
    try:
        try:
            run()
        except SystemExit as exc:
            assert exc.code in (0, None)
    finally:
        sys.argv = old
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "run"),
    [
        (["ds01", "container", "create", "-h"], entry.main),
        (["ds01", "admin", "slurm", "sync", "--help"], entry.main),
        (["ds01d", "--help"], entry.ds01d),
        (["container-list", "--help"], lambda: entry.run_alias("container-list")),
        (["ds01-dashboard", "--help"], tui_entry.main),
    ],
)
def test_the_entry_points_print_the_page_of_their_command_line(
    argv: list[str],
    run: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = tuple(argv[:-1])
    for columns in (40, 80, 97):  # 40: below every template, argparse makes it
        monkeypatch.setenv("COLUMNS", str(columns))
        expected = help_record.live_page(words, columns)
        assert _printed(argv, run, capsys) == expected, columns


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (["ds01", "--help"], "entry.main()"),
        (["ds01", "container", "create", "--help"], "entry.main()"),
        (["ds01d", "-h"], "entry.ds01d()"),
        (["container-list", "--help"], "entry.run_alias('container-list')"),
        (["ds01-dashboard", "--help"], "__import__('ds01.tui.entry').tui.entry.main()"),
    ],
)
@pytest.mark.parametrize("columns", ["80", "133"])
def test_a_kept_page_loads_neither_argparse_nor_the_command_table(
    argv: list[str], call: str, columns: str
) -> None:
    code = (
        "import re, sys\n"  # re: every console script imports it
        f"sys.argv = {argv!r}\n"
        "from ds01.cli import entry\n"
        f"{call}\n"
        "print(sorted({'argparse', 'ds01.cli.main', 'ds01.daemon.main', 'ds01.tui.main'}"
        " & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": columns},
    )
    page, _, loaded = result.stdout.rpartition("\n[")
    assert page + "\n" == entry.kept_page(argv[:-1], int(columns))
    assert ast.literal_eval("[" + loaded) == []
