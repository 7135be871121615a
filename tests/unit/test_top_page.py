"""``ds01 --help`` from the kept page (``ds01.cli.top_page``): the same page argparse makes
from the live parser, printed without loading argparse or the command table, and made by
argparse wherever it was not kept for."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ds01.cli import entry, top_page


def test_the_kept_page_is_the_live_parsers() -> None:
    kept = Path(top_page.__file__).read_text()
    assert kept == entry.page_module(), (
        "ds01's command table changed: run `python -m ds01.cli.entry > "
        "src/ds01/cli/top_page.py` (with PYTHONPATH=src) and commit the result"
    )


def _printed(argv: list[str], run: object, capsys: pytest.CaptureFixture[str]) -> str:
    old = sys.argv
    sys.argv = ["ds01", *argv]
    try:
        try:
            run()  # type: ignore[operator]
        except SystemExit as exc:
            assert exc.code in (0, None)
    finally:
        sys.argv = old
    return capsys.readouterr().out


@pytest.mark.parametrize("columns", [40, 79, 80, 81, 90, top_page.WIDE_FROM - 1,
                                     top_page.WIDE_FROM, 200])  # fmt: skip
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_ds01_help_prints_what_argparse_prints(
    columns: int, flag: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ds01.cli.main import main as through_argparse

    monkeypatch.setenv("COLUMNS", str(columns))
    expected = _printed([flag], through_argparse, capsys)
    assert expected.startswith("usage: ds01 ")
    assert _printed([flag], entry.main, capsys) == expected


def test_the_page_is_kept_only_for_the_widths_and_python_it_was_made_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert entry.kept_page(entry.NARROW_COLUMNS) == top_page.NARROW
    assert entry.kept_page(top_page.WIDE_FROM) == entry.kept_page(500) == top_page.WIDE
    assert entry.kept_page(top_page.WIDE_FROM - 1) is None
    assert entry.kept_page(entry.NARROW_COLUMNS + 1) is None
    monkeypatch.setattr(top_page, "PYTHON", (3, 0))
    assert entry.kept_page(entry.NARROW_COLUMNS) is None


def test_the_kept_page_loads_neither_argparse_nor_the_command_table() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['ds01', '--help']\n"
        "from ds01.cli.entry import main\n"
        "main()\n"
        "print(sorted({'argparse', 're', 'ds01.cli.main'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    page, _, loaded = result.stdout.rpartition("\n[")
    assert page + "\n" == top_page.NARROW
    assert ast.literal_eval("[" + loaded) == []
