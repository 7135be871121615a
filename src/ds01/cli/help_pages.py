"""The pages of ``--help``, ``--info`` and ``--concepts``.

A page is built from two sources: the command's parser (usage and every option, so the
reference cannot drift from the code) and its entry in ``ds01.cli.help_texts``. It is shown
with rich on a terminal, and as plain text when the output is not a terminal, ``NO_COLOR``
is set or ``TERM=dumb``. Imported only when a tier is asked for.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from ds01.cli.help_texts import CONCEPTS, HELP, CommandHelp
from ds01.cli.tiers import TIER_OPTIONS

TYPE_CHECKING = False  # typing itself costs --help a few milliseconds
if TYPE_CHECKING:
    from typing import TextIO

    from ds01.cli.main import Command

#: Pages are wrapped at the terminal's width, but no wider than this: long lines are hard
#: to read.
MAX_WIDTH = 100

EXIT_CODES = """\
- `0` ok
- `1` error: something failed (ds01d out of reach, Docker, a file in the way)
- `2` usage: a bad name, option or value
- `3` quota or capacity: over your limits, or no device free (with `--no-wait`)
- `4` not found: no such container, image or request
- `5` permission: not yours, or not allowed"""


class Page:
    """A titled page of sections; each section is a heading and a Markdown body."""

    __slots__ = ("sections", "title")

    def __init__(self, title: str, sections: tuple[tuple[str, str], ...]) -> None:
        self.title = title
        self.sections = sections


def command_of(parser: argparse.ArgumentParser) -> Command:
    command: Command = parser.get_default("command")
    return command


def help_key(command: Command) -> str:
    """The key of ``command`` in ``help_texts.HELP``: its path, words joined by a space."""
    return " ".join(command.path)


def entry_of(parser: argparse.ArgumentParser) -> CommandHelp | None:
    return HELP.get(help_key(command_of(parser)))


# -- --help ------------------------------------------------------------------------------------


def brief_help(parser: argparse.ArgumentParser) -> str:
    """argparse's help of ``parser``, without the options the registry calls ``more``."""
    entry = entry_of(parser)
    hidden = set(entry.more) if entry else set()
    saved = [a for a in parser._actions if hidden.intersection(a.option_strings)]
    helps = [a.help for a in saved]
    for action in saved:
        action.help = argparse.SUPPRESS
    try:
        text = parser.format_help()
    finally:
        for action, help_text in zip(saved, helps, strict=True):
            action.help = help_text
    return text


# -- --info ------------------------------------------------------------------------------------


def info_page(parser: argparse.ArgumentParser) -> Page:
    command = command_of(parser)
    entry = entry_of(parser)
    usage = parser.format_usage().strip()
    sections: list[tuple[str, str]] = [
        ("Usage", f"```\n{usage}\n```"),
        ("What it does", entry.info if entry else command.description),
        ("Options", options_text(parser)),
    ]
    if entry and entry.examples:
        sections.append(("Examples", examples_text(entry.examples)))
    sections.append(("Exit codes", EXIT_CODES))
    more = [f"`{parser.prog} --help` for the short version"]
    if entry:
        titles = "; ".join(CONCEPTS[key].title for key in entry.concepts)
        more += [
            f"`{parser.prog} --concepts` for the ideas behind it ({titles})",
            f"`{parser.prog} --guided` to be asked for each value, step by step",
        ]
    sections.append(("See also", "\n".join(f"- {line}" for line in more)))
    return Page(f"{parser.prog}: {command.summary}", tuple(sections))


def options_text(parser: argparse.ArgumentParser) -> str:
    """Every argument of ``parser`` (but the help tiers) as a Markdown list."""
    lines = []
    for action in parser._actions:
        if TIER_OPTIONS.intersection(action.option_strings):
            continue
        lines.append(f"- {_invocation(action)}: {_describe(action, parser.prog)}")
    for group in parser._mutually_exclusive_groups:
        names = " and ".join(f"`{a.option_strings[0]}`" for a in group._group_actions)
        lines.append(f"- {names}: one or the other, not both.")
    return "\n".join(lines) or "None."


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{_metavar(action)}`"
    if action.nargs == 0:
        return ", ".join(f"`{o}`" for o in action.option_strings)
    return ", ".join(f"`{o} {_metavar(action)}`" for o in action.option_strings)


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _describe(action: argparse.Action, prog: str) -> str:
    text = action.help if action.help and action.help != argparse.SUPPRESS else ""
    if "%(" in text:
        text = text % {**vars(action), "prog": prog}
    notes = []
    choices = [str(c) for c in action.choices or ()]
    # A metavar of its own hides the choices; say them unless the help text does.
    if choices and isinstance(action.metavar, str) and not all(c in text for c in choices):
        notes.append("one of " + ", ".join(choices))
    if action.required:
        notes.append("required")
    default = action.default
    if (
        default not in (None, False, [], "", argparse.SUPPRESS)
        and "default" not in text
        and f"[{default}]" not in text
        and action.nargs != 0
    ):
        notes.append(f"default: {default}")
    if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
        notes.append("repeatable")
    text = text or "(no description)"
    return f"{text} ({'; '.join(notes)})" if notes else text


def examples_text(examples: tuple[tuple[str, str], ...]) -> str:
    """A code block: each command line below a comment that says what it does."""
    rows: list[str] = []
    for line, what in examples:
        rows += [*([""] if rows else []), *([f"# {what}"] if what else []), line]
    return "```\n" + "\n".join(rows) + "\n```"


# -- --concepts --------------------------------------------------------------------------------


def concepts_page(parser: argparse.ArgumentParser) -> Page:
    entry = entry_of(parser)
    if entry is None:
        return Page(
            f"{parser.prog}: the ideas behind it",
            (("No concepts page", f"`{parser.prog} --info` has the full reference."),),
        )
    return Page(
        f"{parser.prog}: the ideas behind it",
        tuple((CONCEPTS[key].title, CONCEPTS[key].text) for key in entry.concepts),
    )


# -- showing a page ----------------------------------------------------------------------------


def use_rich(stream: TextIO) -> bool:
    """Whether to render with rich: on a terminal that wants colour and formatting."""
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM", "") != "dumb"


def show(page: Page, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if use_rich(stream):
        try:
            _show_rich(page, stream)
            return
        except ImportError:  # a broken install: the plain page still helps
            pass
    stream.write(plain_text(page))


def plain_text(page: Page) -> str:
    """The page as plain text: headings in capitals, code indented, Markdown emphasis gone."""
    out = [page.title, "=" * min(len(page.title), MAX_WIDTH)]
    for heading, body in page.sections:
        out += ["", heading.upper(), *_plain_body(body)]
    return "\n".join(out) + "\n"


def _plain_body(body: str) -> list[str]:
    lines, in_code = [], False
    for line in body.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        lines.append(f"    {line}".rstrip() if in_code else _BOLD.sub(r"\1", line))
    return lines


_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _show_rich(page: Page, stream: TextIO) -> None:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.padding import Padding
    from rich.text import Text

    console = Console(file=stream, highlight=False)
    console.width = min(console.width, MAX_WIDTH)
    console.print(Text(page.title, style="bold"))
    for heading, body in page.sections:
        console.print()
        console.print(Text(heading.upper(), style="bold cyan"))
        console.print(Padding(Markdown(body, code_theme="ansi_dark"), (0, 0, 0, 2)))


__all__: list[str] = [
    "Page",
    "brief_help",
    "concepts_page",
    "info_page",
    "plain_text",
    "show",
]
