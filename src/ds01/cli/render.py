"""Terminal output: aligned tables, JSON, colour only on a TTY (``NO_COLOR`` respected).

``json`` is imported when JSON is written: most output is tables, and ``--help`` neither.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

_ANSI = {"bold": "1", "red": "31", "green": "32", "yellow": "33", "dim": "2"}


def use_colour(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(stream.isatty()) and "NO_COLOR" not in os.environ


def style(text: str, *effects: str, stream: Any = None) -> str:
    if not effects or not use_colour(stream):
        return text
    codes = ";".join(_ANSI[e] for e in effects)
    return f"\033[{codes}m{text}\033[0m"


def echo(text: str = "", *, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout)


def progress(text: str) -> None:
    """Show ``text`` in place of the last progress line (a terminal only: elsewhere, such as
    a log file, every update would be a line of its own); ``""`` clears it."""
    if sys.stdout.isatty():
        sys.stdout.write(f"\r\033[K{text}")
        sys.stdout.flush()


def emit_json(value: Any) -> None:
    import json

    echo(json.dumps(value, indent=2))


def emitted_json(wanted: bool, value: Any) -> bool:
    """Print ``value`` as JSON if ``--json`` was given (``wanted``); whether it did, so that
    the command prints nothing else."""
    if wanted:
        emit_json(value)
    return wanted


def emit_json_error(message: str, exit_code: int, kind: str, details: Any) -> None:
    """An error as scripts read it under ``--json``: one JSON object on stderr."""
    import json

    error = {"error": message, "exit_code": exit_code, "kind": kind, "details": details or {}}
    echo(json.dumps(error, indent=2), err=True)


def fail(message: str, exit_code: int, kind: str, details: Any, as_json: bool) -> NoReturn:
    """Say what went wrong on stderr, in words or (under ``--json``) as one JSON object
    (``emit_json_error``); then exit with ``exit_code``."""
    if as_json:
        emit_json_error(message, exit_code, kind, details)
    else:
        error(message)
    raise SystemExit(exit_code)


def reader_gone() -> NoReturn:
    """The reader of standard output went away (``container-list | head``): stop quietly
    (exit 0), like other tools, with nothing more written to the closed pipe."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under headers, columns padded to their widest cell (``_cell``'s text)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    echo(style(line, "bold"))
    for row in cells:
        echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    """A table cell's text. Text comes through ``visible``: a value somebody else sent (a
    name in an audit event, a note) cannot drive the reader's terminal or forge a row."""
    from ds01.model.text import visible  # not at start-up: --help prints no table

    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, (list, tuple)):
        return visible(",".join(str(v) for v in value)) or "-"
    return visible(str(value))


def number(value: float) -> str:
    """At most two decimals, no trailing zeros: ``4``, ``2.5``, ``0.43``."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def duration(seconds: float) -> str:
    """A duration for people (``ds01.model.units.format_duration``, imported only when used:
    the CLI starts without ``ds01.core``)."""
    from ds01.model.units import format_duration

    return format_duration(seconds)


def ok(message: str) -> None:
    echo(style("✓ ", "green") + message)


def warn(message: str) -> None:
    echo(style("Warning: ", "yellow", "bold", stream=sys.stderr) + message, err=True)


def error(message: str) -> None:
    echo(style("Error: ", "red", "bold", stream=sys.stderr) + message, err=True)


def limit_value(value: Any) -> str:
    """How a resolved limit reads: ``None`` means unlimited."""
    return "unlimited" if value is None else _cell(value)
