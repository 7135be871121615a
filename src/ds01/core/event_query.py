"""Which audit events a query selects: ``ds01 events`` and ``GET /v1/events`` (pure).

An event is one line of the audit log as a mapping (``ts``, ``user``, ``action``,
``resource``, ``details``, ``outcome``, ``seq``; see ``ds01.events.log``).

Ownership
    An event *belongs to* a user when they did it (``user`` is their name), or when ds01d
    did it (``user`` is ``ds01d``) to one of their containers (``resource`` is
    ``container/<name>._.<their uid>``): the daemon's starts of queued requests, releases
    of devices, stops for idleness. A user sees the events that belong to them; admins see
    every event, or those of one user with ``--user``.

Filters
    ``actions``: patterns, any of which may match: an exact action (``container.create``),
    a prefix (``container`` or ``container.*``: every ``container.…`` action) or a shell
    pattern (``*.denied``, ``cleanup.*``). ``container``: a container name as its owner sees
    it (``thesis``), matched against the resource and the ``details.container`` of queue
    and image events, or a Docker name (``thesis._.1001``) matched exactly. ``since`` and
    ``until``: times, ``since`` included, ``until`` excluded.

Times (:func:`parse_when`)
    ISO 8601 dates and times (``2026-11-28``, ``2026-11-28T14:00``, with or without an
    offset; without one, the given time zone), ``now``, ``today``, ``yesterday``, and
    relative forms meaning "that long ago": ``90s``, ``30m``, ``2h``, ``3d``, ``1w``
    (also ``2 hours``, ``3days``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from ds01.errors import InvalidInput
from ds01.model.labels import CONTAINER_NAME_SEPARATOR
from ds01.model.text import shown

#: ``user`` of the events ds01d writes on its own account (the audit log's own included).
DAEMON_USER = "ds01d"

_RELATIVE_RE = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|"
    r"d|days?|w|wk|wks|weeks?)\s*(?:ago)?\s*$",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: datetime, tz: tzinfo | None = timezone.utc) -> datetime:
    """``text`` as an aware UTC datetime (see the module docstring for the forms).

    Args:
        text: what the user typed.
        now: the current time (aware).
        tz: the zone of times given without an offset and of ``today``; ``None``: the
            system's local time (daylight saving time included).

    Raises:
        ValueError: ``text`` is none of the accepted forms; the message lists them.
    """
    word = text.strip().lower()
    if word == "now":
        return now.astimezone(timezone.utc)
    if word in ("today", "yesterday"):
        day = (now.astimezone(tz) if tz is not None else now.astimezone()).date()
        if word == "yesterday":
            day -= timedelta(days=1)
        midnight = _in_zone(datetime(day.year, day.month, day.day), tz)
        return midnight.astimezone(timezone.utc)
    match = _RELATIVE_RE.match(word)
    if match:
        amount = float(match.group(1))
        unit = match.group(2)[0].lower()
        return (now - timedelta(seconds=amount * _UNIT_SECONDS[unit])).astimezone(timezone.utc)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid time {shown(text)}: give an ISO date or time (2026-11-28, "
            "2026-11-28T14:00, 2026-11-28T14:00+01:00), now, today, yesterday, or how long "
            "ago (90s, 30m, 2h, 3d, 1w)"
        ) from None
    if moment.tzinfo is None:
        moment = _in_zone(moment, tz)
    return moment.astimezone(timezone.utc)


def _in_zone(naive: datetime, tz: tzinfo | None) -> datetime:
    """A naive time as a time of ``tz`` (``None``: the system's local time)."""
    return naive.replace(tzinfo=tz) if tz is not None else naive.astimezone()


def parse_ts(value: object) -> datetime | None:
    """An event's ``ts`` as an aware datetime, ``None`` if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def query_time(query: Mapping[str, str], key: str) -> datetime | None:
    """The ISO 8601 time a request gives as ``key``, in UTC; ``None`` when it gives none.

    Raises:
        InvalidInput: the value is not an ISO 8601 time.
    """
    text = query.get(key, "")
    if not text:
        return None
    moment = parse_ts(text)
    if moment is None:
        raise InvalidInput(f"{key} must be an ISO 8601 time, got {text[:40]!r}.")
    return moment.astimezone(timezone.utc)  # the ledgers compare times as UTC text


def container_uid(resource: object) -> int | None:
    """The uid in ``container/<name>._.<uid>``, ``None`` for any other resource."""
    if not isinstance(resource, str) or not resource.startswith("container/"):
        return None
    _, separator, uid = resource.rpartition(CONTAINER_NAME_SEPARATOR)
    return int(uid) if separator and uid.isdigit() else None


def belongs_to(event: Mapping[str, Any], user: str, uid: int | None) -> bool:
    """Whether ``event`` is ``user``'s: done by them, or by ds01d to a container of theirs."""
    actor = event.get("user")
    if actor == user:
        return True
    return actor == DAEMON_USER and uid is not None and container_uid(event.get("resource")) == uid


def action_matches(action: object, patterns: Iterable[str]) -> bool:
    """Whether ``action`` matches any of ``patterns`` (exact, prefix or shell pattern)."""
    if not isinstance(action, str):
        return False
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            if fnmatch.fnmatchcase(action, pattern):
                return True
        elif action == pattern or action.startswith(pattern.rstrip(".") + "."):
            return True
    return False


def container_matches(event: Mapping[str, Any], container: str) -> bool:
    """Whether ``event`` is about ``container`` (a user's name for it, or a Docker name)."""
    resource = event.get("resource")
    details = event.get("details")
    if CONTAINER_NAME_SEPARATOR in container:
        return resource == f"container/{container}"
    if isinstance(resource, str) and resource.startswith("container/"):
        name = resource[len("container/") :].partition(CONTAINER_NAME_SEPARATOR)[0]
        if name == container:
            return True
    return isinstance(details, Mapping) and details.get("container") == container


@dataclass(frozen=True)
class EventQuery:
    """What to select (see the module docstring).

    Attributes:
        owner: ``(user, uid)``: only events that belong to that user (``uid`` ``None``: only
            those they did); ``None``: every user's.
        actions: action patterns, any may match; empty: every action.
        container: only events about this container.
        since: only events at or after this time.
        until: only events before this time.
    """

    owner: tuple[str, int | None] | None = None
    actions: tuple[str, ...] = ()
    container: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, event: Mapping[str, Any]) -> bool:
        if self.owner is not None and not belongs_to(event, *self.owner):
            return False
        if self.actions and not action_matches(event.get("action"), self.actions):
            return False
        if self.container is not None and not container_matches(event, self.container):
            return False
        if self.since is not None or self.until is not None:
            ts = parse_ts(event.get("ts"))
            if ts is None:
                return False
            if self.since is not None and ts < self.since:
                return False
            if self.until is not None and ts >= self.until:
                return False
        return True


__all__ = [
    "DAEMON_USER",
    "EventQuery",
    "action_matches",
    "belongs_to",
    "container_matches",
    "container_uid",
    "parse_ts",
    "parse_when",
]
