"""``GET /v1/events``: the audit log, read back for ``ds01 events``.

The files are the ones ``ds01.events.log`` writes (the live ``events.jsonl`` and its
rotated, compressed predecessors). They are read newest first (the live file backwards,
then each rotated file) and the scan stops as soon as it has what was asked for: the newest
``limit`` matching events, or everything after ``after_seq``, or nothing older than
``since``. A listing of recent events therefore reads only the end of the live file, and a
follower (``after_seq``) only the lines written since its last call.

Who sees what (``ds01.core.event_query``): a user, the events that belong to them (theirs,
and ds01d's actions on their containers); an admin, everyone's, or one user's with
``user=``. A user asking for someone else's events is refused (``auth.denied``).

``wait=SECONDS`` (with ``after_seq``) long-polls: when nothing matches yet, the answer waits
up to that long for a matching event to be written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ds01.core.event_query import EventQuery, parse_ts, query_time
from ds01.daemon import schemas as api
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.errors import InvalidInput, NotFound, SystemFault
from ds01.events import chain
from ds01.events.log import lines_backwards
from ds01.runtime.identity import user_by_name

#: Events in one answer unless ``limit`` says otherwise, and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
#: Longest long poll, in seconds.
MAX_WAIT_SECONDS = 60.0
#: How often a long poll looks for new lines.
POLL_SECONDS = 0.2
#: Scans started over when a file vanished under them (a rotation).
_ATTEMPTS = 3


def _newest_first(live: Path) -> Iterator[dict[str, Any]]:
    """Every event of the log, newest first; lines that are not events are skipped."""
    files = chain.chain_files(live) if live.parent.exists() else []
    for path in reversed(files):
        if path.name.endswith(chain.ROTATED_SUFFIX):
            lines: Iterator[bytes] | list[bytes] = list(chain.iter_lines(path))[::-1]
        else:
            lines = lines_backwards(path)
        for raw in lines:
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("action"), str):
                yield event


def _seq(event: dict[str, Any]) -> int | None:
    seq = event.get("seq")
    return seq if type(seq) is int else None


def select(
    live: Path, query: EventQuery, *, after_seq: int | None = None, limit: int = DEFAULT_LIMIT
) -> tuple[list[dict[str, Any]], int | None]:
    """The events ``query`` selects, oldest first, and the ``last_seq`` to continue from.

    Without ``after_seq``: the newest ``limit`` matching events. With it: the oldest
    ``limit`` matching events numbered after it. ``last_seq`` is the newest event looked at
    (or the last one returned, when ``limit`` cut a page short), so that asking again with
    ``after_seq=last_seq`` returns only what is new.

    Raises:
        OSError: the log cannot be read.
    """
    for attempt in range(_ATTEMPTS):
        try:
            return _select(live, query, after_seq, limit)
        except FileNotFoundError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _select(
    live: Path, query: EventQuery, after_seq: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    matched: list[dict[str, Any]] = []
    newest: int | None = None
    for event in _newest_first(live):
        seq = _seq(event)
        if newest is None and seq is not None:
            newest = seq
        if after_seq is not None and (seq is None or seq <= after_seq):
            break
        if query.since is not None:
            ts = parse_ts(event.get("ts"))
            if ts is not None and ts < query.since:
                break
        if query.matches(event):
            matched.append(event)
            if after_seq is None and len(matched) >= limit:
                break
    matched.reverse()
    if after_seq is None:
        return matched, newest
    if len(matched) > limit:
        matched = matched[:limit]
        return matched, _seq(matched[-1])
    return matched, newest if newest is not None else after_seq


def _record(event: dict[str, Any]) -> api.EventRecord:
    """An event as the API returns it; odd fields (a hand-edited line) become strings."""
    details = event.get("details")
    return api.EventRecord(
        seq=_seq(event),
        ts=str(event.get("ts", "")),
        user=str(event.get("user", "")),
        action=str(event.get("action", "")),
        resource=str(event.get("resource", "")),
        details=details if isinstance(details, dict) else {},
        outcome=str(event.get("outcome", "")),
    )


def _stamp(live: Path) -> tuple[int, int] | None:
    try:
        st = live.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size


def _int(query: dict[str, str], key: str, default: int | None, high: int) -> int | None:
    text = query.get(key, "")
    if text == "":
        return default
    if not (text.isascii() and text.isdigit() and int(text) <= high):
        raise InvalidInput(f"{key} must be a whole number from 0 to {high}.")
    return int(text)


def _wait(query: dict[str, str]) -> float:
    text = query.get("wait", "0") or "0"
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"wait must be a number of seconds, got {text[:20]!r}.") from None
    if not 0 <= value <= MAX_WAIT_SECONDS:
        raise InvalidInput(f"wait must be from 0 to {MAX_WAIT_SECONDS:g} seconds.")
    return value


def _owner(service: Ds01Service, caller: Caller, user: str | None) -> tuple[str, int | None] | None:
    if user is None or user == "":
        return None if caller.is_admin else (caller.name, caller.uid)
    if user == caller.name:
        return caller.name, caller.uid
    if not caller.is_admin:
        raise service.deny(
            caller, f"events/{user[:64]}", f"Only admins may read another user's events ({user})."
        )
    try:
        return user, user_by_name(user).uid
    except NotFound:
        return user, None  # an account that is gone: the events it did


def listing(service: Ds01Service, caller: Caller, query: dict[str, str]) -> api.EventsPage:
    """The answer of ``GET /v1/events`` (its query keys: ``server.EVENTS_QUERY``)."""
    actions = tuple(a.strip() for a in query.get("action", "").split(",") if a.strip())
    container = query.get("container") or None
    if container is not None and (len(container) > 200 or "/" in container):
        raise InvalidInput(f"Invalid container name {container[:40]!r}.")
    selection = EventQuery(
        owner=_owner(service, caller, query.get("user")),
        actions=actions,
        container=container,
        since=query_time(query, "since"),
        until=query_time(query, "until"),
    )
    after_seq = _int(query, "after_seq", None, 2**62)
    limit = _int(query, "limit", DEFAULT_LIMIT, MAX_LIMIT) or DEFAULT_LIMIT
    wait = _wait(query)
    live = service.events.path
    deadline = time.monotonic() + wait
    while True:
        stamp = _stamp(live)
        try:
            events, last = select(live, selection, after_seq=after_seq, limit=limit)
        except (OSError, EOFError) as exc:
            raise SystemFault(f"Cannot read the event log {live}: {exc}") from exc
        if events or after_seq is None or time.monotonic() >= deadline:
            return api.EventsPage(events=[_record(e) for e in events], last_seq=last)
        after_seq = last if last is not None else after_seq
        while time.monotonic() < deadline and _stamp(live) == stamp:
            time.sleep(POLL_SECONDS)


__all__ = ["listing", "select"]
