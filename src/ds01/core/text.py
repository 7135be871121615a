"""Bounded text: what ds01 shows or logs of a value somebody else typed. Pure, standard library.

A user can send a name, path or image reference of any length (up to the API's body limit).
Messages that quote such input, and audit events that record it, show at most a bounded
prefix, visibly marked as cut, so that a flood of long inputs cannot fill a terminal, a
response or the log:

    >>> clip("a" * 4000, 40)
    'aaaaaaaaaaaa...[cut: 4000 chars in all]'

:func:`clip` never returns more than ``max_chars`` characters, leaves text that fits
unchanged, and is idempotent (clipping a clipped text changes nothing).
"""

from __future__ import annotations

#: How many characters of an input messages quote (:func:`shown`).
SHOWN_INPUT_CHARS = 80

#: The mark that ends a cut text; ``{total}`` is the length of the whole text.
CUT_MARK = "...[cut: {total} chars in all]"


def clip(text: str, max_chars: int) -> str:
    """``text`` if it has at most ``max_chars`` characters, else a prefix of it followed by
    :data:`CUT_MARK`, ``max_chars`` characters in all (only the mark's tail if even the mark
    does not fit).

    Raises:
        ValueError: ``max_chars`` is negative.
    """
    if max_chars < 0:
        raise ValueError(f"max_chars must be 0 or more, got {max_chars}")
    if len(text) <= max_chars:
        return text
    mark = CUT_MARK.format(total=len(text))
    keep = max_chars - len(mark)
    if keep <= 0:
        return mark[len(mark) - max_chars :] if max_chars else ""
    return text[:keep] + mark


def shown(value: object, max_chars: int = SHOWN_INPUT_CHARS) -> str:
    """``value`` quoted for a message (``repr`` of a string), its text clipped to
    ``max_chars`` characters: how every message quotes what a user sent."""
    text = value if isinstance(value, str) else str(value)
    return repr(clip(text, max_chars))
