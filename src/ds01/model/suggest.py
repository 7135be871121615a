""""Did you mean …?": the closest of the names a user may use to one they mistyped. Pure.

    >>> did_you_mean("jupiter", ["busybox", "jupyter", "pytorch"])
    " Did you mean 'jupyter'?"
    >>> did_you_mean("tensorflow", ["busybox"])
    ''
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: How alike (0..1, difflib's ratio) a name must be to be suggested.
SIMILARITY_CUTOFF = 0.6
#: A typed word longer than this is not compared (a flood of long input costs nothing).
_LONGEST_COMPARED = 200


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``word`` (case-insensitive), or ``None`` when none is close."""
    if not word or len(word) > _LONGEST_COMPARED:
        return None
    by_folded = {c.casefold(): c for c in candidates if c}
    matches = difflib.get_close_matches(word.casefold(), by_folded, n=1, cutoff=SIMILARITY_CUTOFF)
    return by_folded[matches[0]] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A sentence to append to a refusal (with its leading space), or ``""``."""
    match = closest(word, candidates)
    return f" Did you mean {match!r}?" if match is not None else ""


__all__ = ["SIMILARITY_CUTOFF", "closest", "did_you_mean"]
