"""Terminal output: aligned tables, JSON, colour only on a TTY (``NO_COLOR`` respected)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click


def use_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def style(text: str, **kwargs: Any) -> str:
    return click.style(text, **kwargs) if use_colour() else text


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under headers, columns padded to their widest cell."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    click.echo(style(line, bold=True))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def ok(message: str) -> None:
    click.echo(style("✓ ", fg="green") + message)


def error(message: str) -> None:
    click.echo(style("Error: ", fg="red", bold=True) + message, err=True)


def limit_value(value: Any) -> str:
    """How a resolved limit reads: ``None`` means unlimited."""
    return "unlimited" if value is None else _cell(value)
