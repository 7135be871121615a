"""Reading what a client sent: JSON that may be malformed or nested without end."""

from __future__ import annotations

import json


def json_value(text: str | bytes) -> object:
    """``text`` as JSON. ``ValueError`` for anything that is not JSON, nesting too deep for
    the parser included: Python's decoder raises ``RecursionError`` there (a body of
    50,000 ``[`` does it), which must read as bad input, never end the thread that reads
    it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


__all__ = ["json_value"]
