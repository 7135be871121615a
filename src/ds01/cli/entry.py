"""The entry points of ``ds01``, ``ds01d`` and the hyphenated commands, and the terminal
width every help page is made for.

A ``--help`` page made by argparse costs the interpreter, ``argparse`` (with ``re`` and
``enum``), the command table and a parser: about twice a Go binary's whole ``--help``. So
the ``--help`` pages of ``ds01``, ``ds01d`` and each hyphenated command are also kept as
text in ``ds01.cli.kept_pages``, generated from the live parsers (``make help-page``, which
runs ``python -m ds01.cli.entry``; ``tests/unit/test_kept_pages.py`` fails when they no
longer match), and printed without loading either, where a kept page is the page argparse
would make: the same Python version, and a width it was generated for. Any other command
line, or another width, goes through ``ds01.cli.main`` (``ds01.daemon.main``) as before.

Standard library only, and only ``os`` and ``sys``.
"""

from __future__ import annotations

import os
import sys

#: The command lines answered with a kept page.
HELP_ONLY = (["--help"], ["-h"])
#: The widths a page is kept for: argparse's default when standard output is no terminal
#: (80), and every width from the one on which the page stops changing.
NARROW_COLUMNS = 80


def terminal_columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it (``$COLUMNS``, then
    standard output's terminal, else 80), without importing ``shutil``: argparse would, and
    it costs a help page 2 ms."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def kept_page(prog: str, columns: int) -> str | None:
    """The ``--help`` page of ``prog`` (``ds01`` or a hyphenated command) kept for
    ``columns``, or None where argparse must make it (a width it was not generated for,
    another Python version, a command without one)."""
    from ds01.cli import kept_pages

    kept = kept_pages.PAGES.get(prog)
    if kept is None or tuple(sys.version_info[:2]) != kept_pages.PYTHON:
        return None
    narrow, wide_from, wide = kept
    if columns == NARROW_COLUMNS:
        return narrow
    if columns >= wide_from:
        return wide
    return None


def printed_kept_help(prog: str) -> bool:
    """Print ``prog``'s kept page if the command line asks only for ``--help`` and a page is
    kept for this terminal; whether it did."""
    if sys.argv[1:] not in HELP_ONLY:
        return False
    page = kept_page(prog, terminal_columns())
    if page is None:
        return False
    try:
        sys.stdout.write(page)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away, as ds01.cli.main takes it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return True


def main() -> None:
    """Entry point of ``ds01``."""
    if not printed_kept_help("ds01"):
        from ds01.cli.main import main as run

        run()


def ds01d() -> None:
    """Entry point of ``ds01d`` (its command line is ``ds01.daemon.main``'s)."""
    if not printed_kept_help("ds01d"):
        from ds01.daemon.main import main as run

        run()


def run_alias(alias: str) -> None:
    """Entry point of the hyphenated command ``alias`` (``ds01.cli.aliases``). A login
    node's ``container-list`` answers its usual command lines without argparse and the
    command table (``ds01.cli.cluster_views.listed_without_parser``)."""
    if printed_kept_help(alias):
        return
    if alias == "container-list":
        from ds01.cli.cluster_views import listed_without_parser

        if listed_without_parser(sys.argv[1:]):
            return
    from ds01.cli.main import run_alias as run

    run(alias)


def live_page(prog: str, columns: int) -> str:
    """``prog --help`` as argparse makes it for a terminal ``columns`` wide."""
    from ds01.cli.help_pages import brief_help
    from ds01.cli.main import COMMANDS, build_parser, command_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        if prog == "ds01":
            return build_parser().format_help()
        if prog == "ds01d":
            from ds01.daemon.main import build_parser as daemon_parser

            return daemon_parser().format_help()
        command = next(c for c in COMMANDS if c.alias == prog)
        return brief_help(command_parser(prog, command))
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def kept_progs() -> list[str]:
    """The commands whose page is kept: ``ds01``, ``ds01d`` and every hyphenated one."""
    from ds01.cli.main import COMMANDS

    return ["ds01", "ds01d", *(c.alias for c in COMMANDS if c.alias)]


#: Wider than any page line: the page argparse makes when nothing needs wrapping.
_UNWRAPPED_COLUMNS = 10_000


def _kept(prog: str) -> tuple[str, int, str]:
    """``prog``'s page at 80 columns, the width from which it stops changing, and the page
    at that width and wider."""
    wide = live_page(prog, _UNWRAPPED_COLUMNS)
    wide_from = max(len(line) for line in wide.splitlines())
    while wide_from > NARROW_COLUMNS and live_page(prog, wide_from - 1) == wide:
        wide_from -= 1
    while live_page(prog, wide_from) != wide:  # a line's length is not all argparse counts
        wide_from += 1
    return live_page(prog, NARROW_COLUMNS), wide_from, wide


def pages_module() -> str:
    """The source of ``ds01.cli.kept_pages`` for the live parsers and this Python."""
    lines = [
        "# ruff: noqa: E501",
        '"""The ``--help`` pages of ``ds01`` and of the hyphenated commands as argparse makes',
        "them, kept so that they need neither argparse nor the command table",
        "(``ds01.cli.entry``): per command, the page at 80 columns, the width from which the",
        "page stops changing, and the page at that width and wider. Generated by ``make",
        'help-page`` from the live parsers; do not edit."""',
        "",
        f"PYTHON = {tuple(sys.version_info[:2])!r}",
        "PAGES = {",
        *(f"    {prog!r}: {_kept(prog)!r}," for prog in kept_progs()),
        "}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(pages_module())
