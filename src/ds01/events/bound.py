"""Bound every value an audit event records, so that no input can make a line large.

Users choose much of what an event records: names, paths, image references, URL paths,
whole request fields. :class:`ds01.events.log.Event` passes its fields through this module,
so no caller can forget it; the log writer never sees an unbounded value. Standard library
only, pure.

What :func:`bound_json` does to a JSON-like value (defaults in :data:`DEFAULT_BOUNDS`):

- a string longer than ``string_chars`` keeps its start and ends in the cut mark of
  ``ds01.model.text`` (``...[cut: 4000 chars in all]``); dict keys likewise at ``key_chars``;
- a list or dict with more than ``items`` entries keeps the first ``items - 1`` and ends in
  one marker entry: the string ``"[37 more items cut]"`` in a list, the key ``"..."`` with
  ``"[37 more keys cut]"`` in a dict;
- a list or dict nested deeper than ``depth`` becomes a string such as
  ``"[dict of 3 keys: nested too deep]"``;
- once the whole value has used ``total_chars`` characters of JSON (each string counted as
  encoded, ASCII-escaped), every further string is cut to ``FLOOR_CHARS`` and every further
  list or dict ends in its marker;
- tuples become lists, other mappings dicts; numbers, booleans and ``None`` stay as they
  are (an integer wider than 64 bits becomes a short string); anything else becomes its
  ``str``, bounded like a string.

Contracts (property-tested): a value within the bounds comes back equal; the result is
bounded (its JSON encoding stays below :func:`encoded_limit`); and bounding is idempotent,
so a bounded value passes a second time unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ds01.model.text import clip

#: Characters a string keeps, at least, after the budget is used up (room for the cut mark).
FLOOR_CHARS = 40
#: What each string, number, list or dict costs besides its text (quotes, commas, colons).
NODE_COST = 4
#: Key of the marker entry of a dict whose further keys were cut.
CUT_KEY = "..."
#: The widest integer kept as a number.
MAX_INT_BITS = 64


@dataclass(frozen=True)
class Bounds:
    """Limits of one bounded value (see the module docstring). Every limit is positive."""

    string_chars: int = 512
    key_chars: int = 64
    items: int = 32
    depth: int = 4
    total_chars: int = 8192

    def __post_init__(self) -> None:
        for name in ("string_chars", "key_chars", "items", "depth", "total_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more, got {getattr(self, name)}")
        if self.string_chars < FLOOR_CHARS or self.key_chars < FLOOR_CHARS:
            raise ValueError(f"string_chars and key_chars must be {FLOOR_CHARS} or more")


#: The bounds of an event's ``details``.
DEFAULT_BOUNDS = Bounds()
#: Characters kept of an event's ``user`` and ``action``.
NAME_CHARS = 64
#: Characters kept of an event's ``resource``.
RESOURCE_CHARS = 256


def encoded_limit(bounds: Bounds = DEFAULT_BOUNDS) -> int:
    """An upper bound of the JSON size (ASCII-escaped) of anything :func:`bound_json`
    returns: the budget, one string that may overshoot it (each character escaped as at
    most 12 bytes), and what each open level may add after the budget is used up."""
    per_string = 12 * bounds.string_chars + NODE_COST
    tail = (bounds.depth + 1) * 2 * (12 * max(FLOOR_CHARS, bounds.key_chars) + 2 * NODE_COST)
    return bounds.total_chars + per_string + tail


def bound_json(value: Any, bounds: Bounds = DEFAULT_BOUNDS) -> Any:
    """``value`` bounded as the module docstring says. The argument is never modified."""
    return _Bounder(bounds).value(value, 0)


def bound_details(details: Mapping[Any, Any], bounds: Bounds = DEFAULT_BOUNDS) -> dict[str, Any]:
    """An event's ``details`` bounded (a dict, whose own entries count as depth 1)."""
    result = _Bounder(bounds).mapping(details, 0)
    assert isinstance(result, dict)  # depth 0 is never too deep
    return result


def bound_text(text: str, max_chars: int) -> str:
    """One of an event's top-level strings (``user``, ``action``, ``resource``) bounded."""
    return clip(text, max_chars)


def encoded_chars(text: str) -> int:
    """The length of ``text`` as a JSON string with non-ASCII escaped, quotes included."""
    if text.isascii() and text.isprintable():
        return len(text) + 2 + text.count('"') + text.count("\\")
    return len(json.dumps(text, ensure_ascii=True))


class _Bounder:
    """One traversal: the budget left is shared by everything it visits, in order."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.left = bounds.total_chars

    def value(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.string(value, self.bounds.string_chars)
        if value is None or isinstance(value, (bool, float)):
            self.left -= NODE_COST + len(repr(value))
            return value
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                return self.string(f"[integer of {value.bit_length()} bits]", FLOOR_CHARS)
            self.left -= NODE_COST + len(str(value))
            return value
        if isinstance(value, Mapping):
            return self.mapping(value, depth)
        if isinstance(value, (list, tuple)):
            return self.sequence(value, depth)
        return self.string(str(value), self.bounds.string_chars)

    def string(self, text: str, limit: int) -> str:
        """``text`` clipped to ``limit`` characters, and further to what the budget allows
        (never below ``FLOOR_CHARS``); its encoded size is charged to the budget."""
        out, size = self._fit(text, limit)
        self.left -= NODE_COST + size
        return out

    def _fit(self, text: str, limit: int) -> tuple[str, int]:
        """What :meth:`string` returns, and its encoded size, without charging it."""
        room = max(self.left - NODE_COST, FLOOR_CHARS)
        allowance = min(limit, room)
        out = clip(text, allowance)
        size = encoded_chars(out)
        while size > room and allowance > FLOOR_CHARS:  # escapes made it larger
            allowance = max(FLOOR_CHARS, allowance // 2)
            out = clip(out, allowance)
            size = encoded_chars(out)
        return out, size

    def _cut_here(self, position: int, count: int) -> bool:
        """Whether the entries from ``position`` on are replaced by one marker: more than
        one is left, and the count limit or the budget is reached."""
        return count - position > 1 and (position >= self.bounds.items - 1 or self.left <= 0)

    def sequence(self, items: list[Any] | tuple[Any, ...], depth: int) -> Any:
        if depth >= self.bounds.depth:
            return self.string(f"[list of {len(items)} items: nested too deep]", FLOOR_CHARS)
        self.left -= NODE_COST
        out: list[Any] = []
        for position, item in enumerate(items):
            if self._cut_here(position, len(items)):
                out.append(self.string(f"[{len(items) - position} more items cut]", FLOOR_CHARS))
                break
            out.append(self.value(item, depth + 1))
        return out

    def mapping(self, mapping: Mapping[Any, Any], depth: int) -> Any:
        if depth >= self.bounds.depth:
            return self.string(f"[dict of {len(mapping)} keys: nested too deep]", FLOOR_CHARS)
        self.left -= NODE_COST
        out: dict[str, Any] = {}
        count = len(mapping)
        for position, (key, item) in enumerate(mapping.items()):
            if self._cut_here(position, count):
                marker = f"[{count - position} more keys cut]"
                out[self.string(CUT_KEY, FLOOR_CHARS)] = self.string(marker, FLOOR_CHARS)
                break
            name, size = self._fit(key if isinstance(key, str) else str(key), self.bounds.key_chars)
            if name in out:
                continue  # two long keys with one start (or 1 and "1"): the first one stays
            self.left -= NODE_COST + size
            out[name] = self.value(item, depth + 1)
        return out
