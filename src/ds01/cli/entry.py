"""The entry points of ``ds01``, ``ds01d`` and the hyphenated commands, and the terminal
width every help page is made for.

A ``--help`` page made by argparse costs the interpreter, ``argparse`` (with ``enum`` and
``gettext``), the command table and a parser: about twice a Go binary's whole ``--help``.
So the ``--help`` page of every form (``ds01``, ``ds01 NOUN``, ``ds01 NOUN VERB`` and
deeper, ``ds01d``, each hyphenated command and its verbs) is also kept in
``ds01.cli.kept_pages``, as a template recorded from the live parsers (``make help-page``,
which runs ``python -m ds01.cli.help_record``; ``tests/unit/test_kept_pages.py`` fails when
they no longer match), and filled in here for the terminal's width as argparse would, with
``textwrap`` where a line must wrap. Where no template holds (another Python version, a
terminal narrower than the template's ``min_columns``, any other command line) the command
goes through ``ds01.cli.main`` (``ds01.daemon.main``) as before.

Standard library only: ``os`` and ``sys``, and ``textwrap`` (which needs only ``re``, loaded
by every console script already) for a help text wider than the terminal.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TypeAlias

    #: A piece of a kept page: its text, or a width-dependent step ("w", "f", "u") and what
    #: argparse gave it (``ds01.cli.help_record``).
    Segment: TypeAlias = "str | tuple[Any, ...]"
    #: A kept page: the narrowest terminal it holds for, and its segments.
    Template: TypeAlias = "tuple[int, tuple[Segment, ...]]"

#: The last word of a command line that asks for its help page.
HELP_FLAGS = ("--help", "-h")
#: argparse's width is the terminal's less this margin.
_MARGIN = 2


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


def kept_page(words: Sequence[str], columns: int) -> str | None:
    """The ``--help`` page of the command line ``words`` (``ds01 container create``) for a
    terminal ``columns`` wide, or None where argparse must make it (no page kept for these
    words, a terminal narrower than its template, another Python version)."""
    from ds01.cli import kept_pages

    kept = kept_pages.PAGES.get(" ".join(words))
    if isinstance(kept, str):  # a verb that is the command's own argument: its page
        kept = kept_pages.PAGES[kept]
    if not isinstance(kept, tuple) or tuple(sys.version_info[:2]) != kept_pages.PYTHON:
        return None
    min_columns, segments = kept
    if columns < min_columns:
        return None
    width = columns - _MARGIN
    return "".join(s if isinstance(s, str) else _filled(s, width) for s in segments)


def _filled(segment: tuple[Any, ...], width: int) -> str:
    """One width-dependent step of argparse's ``HelpFormatter`` (Python 3.11) for a page
    ``width`` wide: a help text's lines, a filled text, or the usage."""
    kind = segment[0]
    if kind == "w":  # _format_action: the help's lines, the later ones under the first
        text, indent = segment[1], int(segment[2])
        return ("\n" + " " * indent).join(_wrapped(text, width - indent))
    if kind == "f":  # _fill_text
        _, text, indent = segment
        margin = " " * indent
        return "\n".join(margin + line for line in _wrapped(text, width - 2 * indent))
    _, prefix, prog, usage, opt_parts, pos_parts, indent = segment
    return _usage(prefix, prog, usage, opt_parts, pos_parts, width - indent)


def _wrapped(text: str, width: int) -> list[str]:
    """``textwrap.wrap(text, width)`` of a text whose whitespace argparse made single spaces;
    a text that fits is its one line (all that wrap would do), without loading textwrap."""
    if len(text) <= width:
        return [text] if text else []
    import textwrap

    return textwrap.wrap(text, width)


def _usage(
    prefix: str,
    prog: str,
    usage: str,
    opt_parts: Sequence[str],
    pos_parts: Sequence[str],
    text_width: int,
) -> str:
    """argparse's usage (``HelpFormatter._format_usage``): ``usage`` where it fits, else its
    options' and positionals' parts laid out in lines ``text_width`` wide."""
    if len(prefix) + len(usage) <= text_width:
        return usage

    def lines_of(parts: Sequence[str], indent: str, first: str | None = None) -> list[str]:
        lines: list[str] = []
        line: list[str] = []
        line_len = len(indent) - 1 if first is None else len(first) - 1
        for part in parts:
            if line_len + 1 + len(part) > text_width and line:
                lines.append(indent + " ".join(line))
                line = []
                line_len = len(indent) - 1
            line.append(part)
            line_len += len(part) + 1
        if line:
            lines.append(indent + " ".join(line))
        if first is not None:
            lines[0] = lines[0][len(indent) :]
        return lines

    if len(prefix) + len(prog) <= 0.75 * text_width:
        indent = " " * (len(prefix) + len(prog) + 1)
        if opt_parts:
            lines = lines_of([prog, *opt_parts], indent, prefix)
            lines.extend(lines_of(pos_parts, indent))
        elif pos_parts:
            lines = lines_of([prog, *pos_parts], indent, prefix)
        else:
            lines = [prog]
    else:
        indent = " " * len(prefix)
        lines = lines_of([*opt_parts, *pos_parts], indent)
        if len(lines) > 1:
            lines = [*lines_of(opt_parts, indent), *lines_of(pos_parts, indent)]
        lines = [prog, *lines]
    return "\n".join(lines)


def printed_kept_help(prog: str) -> bool:
    """Print the kept page of ``prog`` and the words after it if the command line ends in
    ``--help`` (``-h``) and a page is kept for it and this terminal; whether it did."""
    argv = sys.argv[1:]
    if not argv or argv[-1] not in HELP_FLAGS:
        return False
    page = kept_page([prog, *argv[:-1]], terminal_columns())
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
