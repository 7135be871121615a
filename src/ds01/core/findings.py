"""Findings of a check (``ds01 admin doctor``, ``ds01 admin gpu-check``) and the exit code
they give.

Levels: ``ok``; ``warning`` (ds01 works, but something weakens it); ``critical`` (a user can
bypass ds01, or ds01 cannot do its job). A set of findings exits 0 when every one is ok,
1 with warnings, 2 with anything critical.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "warning", "critical"]


@dataclass(frozen=True)
class Finding:
    """One check's word: its name, level, what it found and what to do (``hint``)."""

    check: str
    level: Level
    message: str
    hint: str = ""


def exit_code(findings: Iterable[Finding]) -> int:
    """0: all ok; 1: a warning; 2: anything critical."""
    levels = {f.level for f in findings}
    return 2 if "critical" in levels else 1 if "warning" in levels else 0


__all__ = ["Finding", "Level", "exit_code"]
