"""``--help`` from the kept pages (``ds01.cli.kept_pages``): the same pages argparse makes
from the live parsers, printed without loading argparse or the command table, and made by
argparse wherever they were not kept for."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ds01.cli import entry, kept_pages
from ds01.cli import main as cli_main
from ds01.daemon import main as daemon_main

#: Commands of each kind: the command list, the daemon, a page that wraps below 112
#: columns, and the first and last hyphenated commands of the table.
SAMPLE = ["ds01", "ds01d", "container-create", "container-list", "user-setup"]


def test_the_kept_pages_are_the_live_parsers() -> None:
    kept = Path(kept_pages.__file__).read_text()
    assert kept == entry.pages_module(), (
        "ds01's commands changed: run `make help-page` and commit src/ds01/cli/kept_pages.py"
    )


def test_every_hyphenated_command_has_a_kept_page() -> None:
    aliases = {c.alias for c in cli_main.COMMANDS if c.alias}
    assert set(kept_pages.PAGES) == {"ds01", "ds01d", *aliases}


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


def _through_argparse(prog: str) -> Callable[[], None]:
    if prog == "ds01":
        return lambda: cli_main.main()
    if prog == "ds01d":
        return lambda: daemon_main.main()
    return lambda: cli_main.run_alias(prog)


def _kept_or_argparse(prog: str) -> Callable[[], None]:
    if prog == "ds01":
        return entry.main
    if prog == "ds01d":
        return entry.ds01d
    return lambda: entry.run_alias(prog)


@pytest.mark.parametrize("prog", SAMPLE)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_what_argparse_prints_at_every_width(
    prog: str, flag: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wide_from = kept_pages.PAGES[prog][1]
    for columns in sorted({40, 79, 80, 81, 90, wide_from - 1, wide_from, 200}):
        monkeypatch.setenv("COLUMNS", str(columns))
        expected = _printed([prog, flag], _through_argparse(prog), capsys)
        assert expected.startswith(f"usage: {prog} ")
        assert _printed([prog, flag], _kept_or_argparse(prog), capsys) == expected, columns


def test_a_page_is_kept_only_for_the_widths_and_python_it_was_made_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    narrow, wide_from, wide = kept_pages.PAGES["container-create"]
    assert wide_from > entry.NARROW_COLUMNS + 1
    assert entry.kept_page("container-create", entry.NARROW_COLUMNS) == narrow
    assert entry.kept_page("container-create", wide_from) == wide
    assert entry.kept_page("container-create", 500) == wide
    assert entry.kept_page("container-create", wide_from - 1) is None
    assert entry.kept_page("container-create", entry.NARROW_COLUMNS + 1) is None
    assert entry.kept_page("no-such-command", entry.NARROW_COLUMNS) is None
    monkeypatch.setattr(kept_pages, "PYTHON", (3, 0))
    assert entry.kept_page("container-create", entry.NARROW_COLUMNS) is None


@pytest.mark.parametrize(
    ("prog", "call"),
    [
        ("ds01", "entry.main()"),
        ("ds01d", "entry.ds01d()"),
        ("container-list", "entry.run_alias('container-list')"),
    ],
)
def test_a_kept_page_loads_neither_argparse_nor_the_command_table(prog: str, call: str) -> None:
    code = (
        "import sys\n"
        f"sys.argv = [{prog!r}, '--help']\n"
        "from ds01.cli import entry\n"
        f"{call}\n"
        "print(sorted({'argparse', 're', 'ds01.cli.main', 'ds01.daemon.main'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    page, _, loaded = result.stdout.rpartition("\n[")
    assert page + "\n" == kept_pages.PAGES[prog][0]
    assert ast.literal_eval("[" + loaded) == []
