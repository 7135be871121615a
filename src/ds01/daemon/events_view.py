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

What one request may cost (the socket is open to every local user): the files are streamed
(the live file backwards in chunks, a rotated file forwards, keeping only the events the
answer can still use), a user's request reads at most ``MAX_SCAN_LINES`` lines of the log
before it is refused with a hint to narrow it (``--since``, ``--action``), and the scans that
reach the history (a rotated file, or more than ``HISTORY_SCAN_AFTER_LINES`` lines) run at
most ``MAX_HISTORY_SCANS_PER_USER`` per user and ``MAX_HISTORY_SCANS`` in all; a further one
is refused at once (``Throttled``/``ServerBusy``, exit code 3). An admin's scans have no line
bound and are counted but never refused.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ds01.core.event_query import EventQuery, parse_ts, query_time
from ds01.daemon import schemas as api
from ds01.daemon.holds import Holds
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.errors import InvalidInput, NotFound, ServerBusy, SystemFault, Throttled
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
#: Lines of the log one user's request may read (about 2 s of ds01d's time: one rotated file of
#: 64 MiB holds some 200 000 lines, so a listing that reaches it still answers). Admins: no bound.
MAX_SCAN_LINES = 250_000
#: A scan becomes a history scan, counted below, once it opens a rotated file or has read
#: this many lines (a listing of recent events or a follower's poll reads far fewer).
HISTORY_SCAN_AFTER_LINES = 10_000
#: History scans running at once: per user, and in all (a user's 8 workers reading the
#: whole history at once took 47 s and 1.3 GB).
MAX_HISTORY_SCANS_PER_USER = 2
MAX_HISTORY_SCANS = 4


class HistoryScans:
    """How many history scans run at once, per uid and in all (``Holds``). Thread-safe."""

    def __init__(
        self, per_user: int = MAX_HISTORY_SCANS_PER_USER, total: int = MAX_HISTORY_SCANS
    ) -> None:
        self.per_user = per_user
        self.total = total
        self._holds: Holds[int] = Holds()

    def enter(self, uid: int, *, admin: bool) -> Callable[[], None]:
        """Count one more scan of ``uid`` and return what ends it; refuse it (``Throttled``
        for the user's own share, ``ServerBusy`` for everyone's) unless ``admin``, which is
        never refused."""
        return self._holds.take(uid, None if admin else self._refusal)

    def _refusal(self, mine: int, in_all: int) -> Exception | None:
        if mine >= self.per_user:
            return Throttled(
                f"You already have {mine} searches of the audit log's history running, the "
                f"most one user may at once. Wait for one to end, or narrow this one with "
                "--since (how far back to look)."
            )
        if in_all >= self.total:
            return ServerBusy(
                f"ds01d is running {self.total} searches of the audit log's history, the "
                "most it runs at once. Try again in a moment, or narrow the search with "
                "--since (how far back to look)."
            )
        return None

    def running(self) -> int:
        return self._holds.count()


#: The daemon's history scans (every request of ``GET /v1/events``).
HISTORY_SCANS = HistoryScans()


@dataclass
class ScanCost:
    """What one request's scan has read, and what it may: counts the lines and refuses
    (``Throttled``) past ``max_lines``; enters ``scans`` once it becomes a history scan.
    ``close()`` (always, at the end) leaves it again. Without ``scans``, nothing is counted
    there (a tool reading the log, a test)."""

    uid: int = 0
    admin: bool = True
    max_lines: int | None = None
    scans: HistoryScans | None = None
    lines: int = 0
    #: Ends this scan's count in ``scans`` (``None``: not counted there).
    ended: Callable[[], None] | None = None

    def line(self) -> None:
        """One more line read."""
        self.lines += 1
        if self.lines == HISTORY_SCAN_AFTER_LINES:
            self.history()
        if self.max_lines is not None and self.lines > self.max_lines:
            raise Throttled(
                f"This search read {self.max_lines:,} lines of the audit log without finding "
                "all it asks for, the most one request may read. Narrow it: --since (e.g. "
                "--since 2d) says how far back to look, --action which kinds of events; or "
                "ask an admin, who can read it all."
            )

    def history(self) -> None:
        """The scan reaches the history (a rotated file, or many lines)."""
        if self.ended is None and self.scans is not None:
            self.ended = self.scans.enter(self.uid, admin=self.admin)

    def close(self) -> None:
        if self.ended is not None:
            self.ended()
        self.ended = None


def _event(raw: bytes) -> dict[str, Any] | None:
    """The event on line ``raw``; ``None`` for a line that is not one."""
    if not raw.strip():
        return None
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    if isinstance(event, dict) and isinstance(event.get("action"), str):
        return event
    return None


@dataclass(frozen=True)
class _Scan:
    """What the newest-first scan looks for, so that a rotated file (read forwards) keeps
    only the events the scan can use: ``stops`` ends it, ``matches`` selects; ``keep`` is
    how many matches may be needed, the newest ones (``oldest=False``) or the oldest ones
    after the stop (``oldest=True``, paging forward from ``after_seq``)."""

    stops: Callable[[dict[str, Any]], bool]
    matches: Callable[[dict[str, Any]], bool]
    keep: int
    oldest: bool


def _rotated_newest_first(path: Path, scan: _Scan, cost: ScanCost) -> list[dict[str, Any]]:
    """What the newest-first scan of the rotated file ``path`` would look at, newest first,
    without the events it would pass over: the newest numbered event (``last_seq``), the
    matches after the newest stopping event (at most ``scan.keep``), then that event.
    The file is streamed forwards; what is kept is bounded by ``scan.keep``."""
    found: deque[dict[str, Any]] = deque(maxlen=None if scan.oldest else scan.keep)
    newest: dict[str, Any] | None = None  # the newest numbered event after the last stop
    stop: dict[str, Any] | None = None
    for raw in chain.iter_lines(path):
        cost.line()
        event = _event(raw)
        if event is None:
            continue
        numbered = _seq(event) is not None
        if scan.stops(event):
            found.clear()
            stop, newest = event, (event if numbered else None)
            continue
        if numbered:
            newest = event
        if scan.matches(event) and not (scan.oldest and len(found) >= scan.keep):
            found.append(event)
    ordered = list(reversed(found))
    if newest is not None and newest is not stop and all(e is not newest for e in found):
        ordered.insert(0, newest)
    if stop is not None:
        ordered.append(stop)
    return ordered


def _newest_first(live: Path, scan: _Scan, cost: ScanCost) -> Iterator[dict[str, Any]]:
    """The events of the log newest first, as far as ``scan`` needs them; lines that are
    not events are skipped. A rotated file yields only what ``scan`` can use of it."""
    files = chain.chain_files(live) if live.parent.exists() else []
    for path in reversed(files):
        if path.name.endswith(chain.ROTATED_SUFFIX):
            cost.history()
            yield from _rotated_newest_first(path, scan, cost)
            continue
        for raw in lines_backwards(path):
            cost.line()
            event = _event(raw)
            if event is not None:
                yield event


def _seq(event: dict[str, Any]) -> int | None:
    seq = event.get("seq")
    return seq if type(seq) is int else None


def select(
    live: Path,
    query: EventQuery,
    *,
    after_seq: int | None = None,
    limit: int = DEFAULT_LIMIT,
    cost: ScanCost | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """The events ``query`` selects, oldest first, and the ``last_seq`` to continue from.

    Without ``after_seq``: the newest ``limit`` matching events. With it: the oldest
    ``limit`` matching events numbered after it. ``last_seq`` is the newest event looked at
    (or the last one returned, when ``limit`` cut a page short), so that asking again with
    ``after_seq=last_seq`` returns only what is new. ``cost`` bounds and counts what the
    scan reads (see ``ScanCost``); it is closed at the end.

    Raises:
        OSError: the log cannot be read.
        Throttled, ServerBusy: ``cost`` refused the scan.
    """
    cost = cost if cost is not None else ScanCost()
    try:
        for attempt in range(_ATTEMPTS):
            try:
                return _select(live, query, after_seq, limit, cost)
            except FileNotFoundError:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")
    finally:
        cost.close()


def _stops(query: EventQuery, after_seq: int | None) -> Callable[[dict[str, Any]], bool]:
    """Whether an event ends the newest-first scan: numbered ``after_seq`` or before, or
    older than ``query.since``."""

    def stops(event: dict[str, Any]) -> bool:
        if after_seq is not None:
            seq = _seq(event)
            if seq is None or seq <= after_seq:
                return True
        if query.since is not None:
            ts = parse_ts(event.get("ts"))
            if ts is not None and ts < query.since:
                return True
        return False

    return stops


def _select(
    live: Path, query: EventQuery, after_seq: int | None, limit: int, cost: ScanCost
) -> tuple[list[dict[str, Any]], int | None]:
    paging = after_seq is not None
    # Paging forward keeps the oldest limit + 1 matches (newest first, the deque drops the
    # newer ones); a listing stops at the limit.
    matched: deque[dict[str, Any]] = deque(maxlen=limit + 1 if paging else None)
    newest: int | None = None
    stops = _stops(query, after_seq)
    scan = _Scan(stops=stops, matches=query.matches, keep=limit + 1, oldest=paging)
    for event in _newest_first(live, scan, cost):
        seq = _seq(event)
        if newest is None and seq is not None:
            newest = seq
        if stops(event):
            break
        if query.matches(event):
            matched.append(event)
            if not paging and len(matched) >= limit:
                break
    events = list(reversed(matched))
    if not paging:
        return events, newest
    if len(events) > limit:
        events = events[:limit]
        return events, _seq(events[-1])
    return events, newest if newest is not None else after_seq


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
        cost = ScanCost(
            uid=caller.uid,
            admin=caller.is_admin,
            max_lines=None if caller.is_admin else MAX_SCAN_LINES,
            scans=HISTORY_SCANS,
        )
        try:
            events, last = select(live, selection, after_seq=after_seq, limit=limit, cost=cost)
        except (OSError, EOFError) as exc:
            raise SystemFault(f"Cannot read the event log {live}: {exc}") from exc
        if events or after_seq is None or time.monotonic() >= deadline:
            return api.EventsPage(events=[_record(e) for e in events], last_seq=last)
        after_seq = last if last is not None else after_seq
        while time.monotonic() < deadline and _stamp(live) == stamp:
            time.sleep(POLL_SECONDS)


__all__ = ["HISTORY_SCANS", "HistoryScans", "ScanCost", "listing", "select"]
