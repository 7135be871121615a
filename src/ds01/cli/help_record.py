"""The source of ``ds01.cli.kept_pages``: every ``--help`` page of ds01's commands recorded
from the live parsers as a template that ``ds01.cli.entry`` fills in for any terminal width
without argparse (``make help-page`` runs ``python -m ds01.cli.help_record``).

A form is a command line that ends in ``--help``: ``ds01``, ``ds01 NOUN``, ``ds01 NOUN
VERB`` (and deeper, where a command has verbs of its own, as ``ds01 admin slurm sync``),
``ds01d`` and each hyphenated command with its own verbs. Its page is made by running that
command line, exactly as a user's, while argparse's three width-dependent steps are
replaced by markers that record their input instead of wrapping it:

- a help text's lines (``HelpFormatter._split_lines``): ``("w", text, indent)``, the text
  wrapped at ``width - indent`` and each further line indented by ``indent``;
- a description or epilog that argparse fills (``HelpFormatter._fill_text``; the raw
  formatters' are kept as they are): ``("f", text, indent)``, ``textwrap.fill`` of the text
  at ``width - indent`` with every line indented by ``indent`` (inside that width, as
  argparse fills it);
- the usage (``HelpFormatter._format_usage``): ``("u", prefix, prog, usage, opt_parts,
  pos_parts, indent)``, the one line and the parts argparse would lay out when it does not
  fit.

Everything else on a page does not depend on the width from ``min_columns`` on, where
argparse neither narrows the column of help texts nor widens a text to its minimum of 11;
below it ``ds01.cli.entry`` leaves the page to argparse.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
from collections.abc import Iterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ds01.cli.entry import Segment, Template

#: The width pages are recorded at: wider than any of their lines, so that nothing wraps.
_RECORD_COLUMNS = 1000
#: argparse's narrowest text (``max(width - indent, 11)``).
_MIN_TEXT = 11
#: argparse narrows the column of help texts below ``max_help_position + 20`` (its
#: ``max(width - 20, ...)``).
_HELP_COLUMN_ROOM = 20
#: The marker a recorded step leaves on the page: its index among the recorded segments.
_MARKER = re.compile("\x00([0-9]+)\x00")
#: argparse's own split of a usage into parts it may wrap between (Python 3.11).
_USAGE_PART = re.compile(r"\(.*?\)+(?=\s|$)|\[.*?\]+(?=\s|$)|\S+")
_WHITESPACE = re.compile(r"\s+", re.ASCII)


class _Recorder:
    """argparse's width-dependent formatter steps, replaced while one page is made."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.min_width = 0

    def _mark(self, segment: Segment, needs: int) -> str:
        self.segments.append(segment)
        self.min_width = max(self.min_width, needs)
        return f"\x00{len(self.segments) - 1}\x00"

    def split_lines(self, formatter: argparse.HelpFormatter, text: str, width: int) -> list[str]:
        indent = formatter._width - width
        collapsed = _WHITESPACE.sub(" ", text).strip()
        room = max(formatter._max_help_position + _HELP_COLUMN_ROOM, indent + _MIN_TEXT)
        return [self._mark(("w", collapsed, indent), room)]

    def fill_text(
        self, formatter: argparse.HelpFormatter, text: str, width: int, indent: str
    ) -> str:
        offset = formatter._width - width
        assert indent == " " * offset  # argparse indents by its current indent, its offset
        collapsed = _WHITESPACE.sub(" ", text).strip()
        return self._mark(("f", collapsed, offset), offset + _MIN_TEXT)

    def format_usage(
        self,
        formatter: argparse.HelpFormatter,
        usage: str | None,
        actions: list[argparse.Action],
        groups: list[argparse._MutuallyExclusiveGroup],
        prefix: str | None,
    ) -> str:
        line = _LIVE_FORMAT_USAGE(formatter, usage, actions, groups, prefix)
        if usage is not None or not actions:
            return line  # argparse wraps neither a given usage nor a bare prog
        prefix = "usage: " if prefix is None else prefix
        optionals = [a for a in actions if a.option_strings]
        positionals = [a for a in actions if not a.option_strings]
        parts = formatter._format_actions_usage
        indent = formatter._current_indent
        segment = (
            "u",
            prefix,
            formatter._prog,
            line[len(prefix) : -2],
            tuple(_USAGE_PART.findall(parts(optionals, groups))),
            tuple(_USAGE_PART.findall(parts(positionals, groups))),
            indent,
        )
        return f"{prefix}{self._mark(segment, indent)}\n\n"


_LIVE_SPLIT_LINES = argparse.HelpFormatter._split_lines
_LIVE_FILL_TEXT = argparse.HelpFormatter._fill_text
_LIVE_FORMAT_USAGE = argparse.HelpFormatter._format_usage


@contextlib.contextmanager
def _recording(recorder: _Recorder) -> Iterator[None]:
    """argparse's formatters with ``recorder``'s steps, and wide enough that nothing wraps."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(_RECORD_COLUMNS)
    hooks = {
        "_split_lines": recorder.split_lines,
        "_fill_text": recorder.fill_text,
        "_format_usage": recorder.format_usage,
    }
    for name, hook in hooks.items():
        setattr(argparse.HelpFormatter, name, lambda self, *a, _hook=hook: _hook(self, *a))
    try:
        yield
    finally:
        argparse.HelpFormatter._split_lines = _LIVE_SPLIT_LINES  # type: ignore[method-assign]
        argparse.HelpFormatter._fill_text = _LIVE_FILL_TEXT  # type: ignore[method-assign]
        argparse.HelpFormatter._format_usage = _LIVE_FORMAT_USAGE  # type: ignore[method-assign]
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def forms() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Every form whose page is kept, as its command line without ``--help``: ``ds01`` and
    every path of verbs under it, ``ds01d``, and each hyphenated command with its verbs;
    each to the form whose page it prints (itself, or for a verb that is a command's first
    positional argument, as ``ds01 reservations cancel``, the command's)."""
    from ds01.cli.main import COMMANDS, build_parser, command_parser

    found: dict[tuple[str, ...], tuple[str, ...]] = {("ds01d",): ("ds01d",)}
    roots: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = [(("ds01",), build_parser())]
    roots += [((c.alias,), command_parser(c.alias, c)) for c in COMMANDS if c.alias]
    for words, parser in roots:
        _add_forms(found, words, parser)
    return found


def _add_forms(
    found: dict[tuple[str, ...], tuple[str, ...]],
    words: tuple[str, ...],
    parser: argparse.ArgumentParser,
) -> None:
    found[words] = words
    positionals = [a for a in parser._actions if not a.option_strings]
    if not positionals:
        return
    first = positionals[0]
    if isinstance(first, argparse._SubParsersAction):
        seen: set[int] = set()
        for name in list(first.choices):
            sub = first.choices[name]
            if id(sub) not in seen:  # an alias of a verb shows the same page
                seen.add(id(sub))
                _add_forms(found, (*words, name), sub)
    elif first.choices is not None:
        for choice in first.choices:
            found.setdefault((*words, str(choice)), words)


def live_page(form: tuple[str, ...], columns: int | None = None) -> str:
    """``FORM --help`` as ``ds01.cli.main`` (``ds01.daemon.main``) prints it, for a terminal
    ``columns`` wide (None: the current ``$COLUMNS``)."""
    saved = os.environ.get("COLUMNS")
    if columns is not None:
        os.environ["COLUMNS"] = str(columns)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            _run(form)
    finally:
        if columns is not None and saved is None:
            del os.environ["COLUMNS"]
        elif columns is not None:
            os.environ["COLUMNS"] = str(saved)
    return out.getvalue()


def _run(form: tuple[str, ...]) -> None:
    from ds01.cli.main import main, run_alias
    from ds01.daemon.main import main as daemon

    argv = [*form[1:], "--help"]
    if form[0] == "ds01":
        main(argv)
    elif form[0] == "ds01d":
        daemon(argv)
    else:
        run_alias(form[0], argv)


def template(form: tuple[str, ...]) -> Template:
    """``form``'s page as the smallest terminal width it holds for and its segments."""
    recorder = _Recorder()
    with _recording(recorder):
        page = live_page(form)
    segments: list[Segment] = []
    for index, piece in enumerate(_MARKER.split(page)):
        if index % 2:
            segments.append(recorder.segments[int(piece)])
        elif piece:
            segments.append(piece)
    return recorder.min_width + 2, tuple(segments)


def _kept(form: tuple[str, ...], page: tuple[str, ...]) -> Template | str:
    """What ``kept_pages.PAGES`` holds for ``form``: its template, or the form whose page
    it prints."""
    return template(form) if form == page else " ".join(page)


def pages_module() -> str:
    """The source of ``ds01.cli.kept_pages`` for the live parsers and this Python."""
    lines = [
        "# ruff: noqa: E501",
        '"""The ``--help`` page of every form of ds01\'s commands, kept as templates that',
        "``ds01.cli.entry`` fills in for the terminal's width without argparse or the command",
        "table: per command line (its words without ``--help``), the narrowest terminal the",
        "template holds for and its segments (``ds01.cli.help_record``), or the command line",
        "whose page it prints. Generated by ``make help-page`` from the live parsers; do not",
        'edit."""',
        "",
        "from __future__ import annotations",
        "",
        "TYPE_CHECKING = False",
        "if TYPE_CHECKING:",
        "    from ds01.cli.entry import Template",
        "",
        f"PYTHON = {tuple(sys.version_info[:2])!r}",
        "PAGES: dict[str, Template | str] = {",
        *(f"    {' '.join(form)!r}: {_kept(form, page)!r}," for form, page in forms().items()),
        "}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(pages_module())
