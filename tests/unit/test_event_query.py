"""``ds01 events``: which events a query selects (``ds01.core.event_query``), the times it
accepts, and the daemon's reading of a real, rotated audit log (``ds01.daemon.events_view``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ds01.core.event_query import (
    EventQuery,
    action_matches,
    belongs_to,
    container_matches,
    container_uid,
    parse_when,
)
from ds01.daemon.events_view import HistoryScans, ScanCost, select
from ds01.errors import ServerBusy, Throttled
from ds01.events.log import EventLog

NOW = datetime(2026, 11, 28, 15, 30, tzinfo=timezone.utc)
CET = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("3d", NOW - timedelta(days=3)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2 hours ago", NOW - timedelta(hours=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("now", NOW),
        ("today", datetime(2026, 11, 28, tzinfo=timezone.utc)),
        ("yesterday", datetime(2026, 11, 27, tzinfo=timezone.utc)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=timezone.utc)),
        ("2026-11-01T14:00", datetime(2026, 11, 1, 14, tzinfo=timezone.utc)),
        ("2026-11-01T14:00+01:00", datetime(2026, 11, 1, 13, tzinfo=timezone.utc)),
    ],
)
def test_times_iso_and_relative(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


def test_times_without_an_offset_are_in_the_given_zone() -> None:
    assert parse_when("2026-11-01T14:00", NOW, CET) == datetime(
        2026, 11, 1, 13, tzinfo=timezone.utc
    )
    assert parse_when("today", NOW, CET) == datetime(2026, 11, 27, 23, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["", "soon", "2x", "-2h", "2026-13-01", "h"])
def test_bad_times_say_which_forms_work(text: str) -> None:
    with pytest.raises(ValueError, match="ISO date"):
        parse_when(text, NOW)


def event(user: str, action: str, resource: str, **details: Any) -> dict[str, Any]:
    return {"ts": NOW.isoformat(), "user": user, "action": action, "resource": resource,
            "details": details, "outcome": "success"}  # fmt: skip


def test_an_event_belongs_to_its_doer_and_to_the_owner_of_a_container_ds01d_acted_on() -> None:
    assert container_uid("container/thesis._.1001") == 1001
    assert container_uid("queue/abc") is None and container_uid("container/x") is None
    assert belongs_to(event("alice", "container.stop", "container/t._.1002"), "alice", 1001)
    assert belongs_to(event("ds01d", "gpu.release", "container/t._.1001"), "alice", 1001)
    assert not belongs_to(event("ds01d", "gpu.release", "container/t._.1002"), "alice", 1001)
    # bob acting on alice's container is bob's event, not alice's
    assert not belongs_to(event("bob", "auth.denied", "container/t._.1001"), "alice", 1001)
    assert not belongs_to(event("ds01d", "config.reload", "config/etc"), "alice", 1001)
    assert not belongs_to(event("ds01d", "gpu.release", "container/t._.1001"), "alice", None)


def test_action_patterns() -> None:
    assert action_matches("container.create", ["container.create"])
    assert action_matches("container.create", ["container"])
    assert action_matches("container.create", ["container.*"])
    assert action_matches("auth.denied", ["queue", "*.denied"])
    assert not action_matches("containers.x", ["container"])
    assert not action_matches("container.create", ["container.start"])
    assert not action_matches(None, ["*"])


def test_container_filter() -> None:
    mine = event("alice", "container.stop", "container/thesis._.1001")
    queued = event("alice", "queue.join", "queue/ab12", container="thesis")
    other = event("alice", "container.stop", "container/thesis2._.1001")
    assert container_matches(mine, "thesis") and container_matches(queued, "thesis")
    assert not container_matches(other, "thesis")
    assert container_matches(mine, "thesis._.1001")
    assert not container_matches(mine, "thesis._.1002")
    assert not container_matches(queued, "thesis._.1001")


def test_query_with_every_filter() -> None:
    query = EventQuery(
        owner=("alice", 1001),
        actions=("container",),
        container="thesis",
        since=NOW - timedelta(minutes=1),
        until=NOW + timedelta(minutes=1),
    )
    assert query.matches(event("alice", "container.create", "container/thesis._.1001"))
    assert query.matches(event("ds01d", "container.start", "container/thesis._.1001"))
    assert not query.matches(event("bob", "container.create", "container/thesis._.1002"))
    assert not query.matches(event("alice", "gpu.allocate", "container/thesis._.1001"))
    late = event("alice", "container.create", "container/thesis._.1001")
    late["ts"] = (NOW + timedelta(minutes=1)).isoformat()  # until is excluded
    assert not query.matches(late)
    assert not query.matches({**late, "ts": "not a time"})


# -- reading the log ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def write_log(tmp_path: Path) -> Path:
    """Two users' events over three weeks: rotated twice (two .gz files), then the live file."""
    clock = Clock()
    log = EventLog(tmp_path / "events.jsonl", clock, rotate_after_days=7)
    for day in range(21):
        clock.now = datetime(2026, 11, 1 + day, 12, tzinfo=timezone.utc)
        user, uid = ("alice", 1001) if day % 2 == 0 else ("bob", 1002)
        log.emit("container.create", user=user, resource=f"container/d{day}._.{uid}")
        log.emit("gpu.release", user="ds01d", resource=f"container/d{day}._.{uid}")
    log.close()
    assert len(list(tmp_path.glob("events-*.jsonl.gz"))) == 2
    return tmp_path / "events.jsonl"


def test_the_newest_matching_events_across_rotated_files(tmp_path: Path) -> None:
    live = write_log(tmp_path)
    events, last = select(live, EventQuery(), limit=3)
    assert [e["seq"] for e in events] == [40, 41, 42] and last == 42
    alice = EventQuery(owner=("alice", 1001), actions=("container.create",))
    events, last = select(live, alice, limit=100)
    assert [e["resource"] for e in events] == [f"container/d{d}._.1001" for d in range(0, 21, 2)]
    assert last == 42
    theirs = EventQuery(owner=("alice", 1001))
    events, _ = select(live, theirs, limit=100)
    assert {e["user"] for e in events} == {"alice", "ds01d"}
    assert all(e["resource"].endswith("._.1001") for e in events)


def test_since_stops_the_scan_and_after_seq_pages_forward(tmp_path: Path) -> None:
    live = write_log(tmp_path)
    since = EventQuery(since=datetime(2026, 11, 20, tzinfo=timezone.utc))
    events, _ = select(live, since, limit=100)
    assert [e["seq"] for e in events] == [39, 40, 41, 42]
    events, last = select(live, EventQuery(), after_seq=5, limit=3)
    assert [e["seq"] for e in events] == [6, 7, 8] and last == 8
    events, last = select(live, EventQuery(), after_seq=40, limit=100)
    assert [e["seq"] for e in events] == [41, 42] and last == 42
    # nothing matches after 40: last_seq still moves on, so a follower does not rescan
    events, last = select(live, EventQuery(actions=("nothing",)), after_seq=40, limit=100)
    assert events == [] and last == 42
    events, last = select(live, EventQuery(), after_seq=42, limit=100)
    assert events == [] and last == 42


def test_damaged_lines_and_an_empty_log(tmp_path: Path) -> None:
    live = tmp_path / "events.jsonl"
    assert select(live, EventQuery()) == ([], None)
    live.write_text(
        '{"seq": 1, "ts": "2026-11-01T00:00:00+00:00", "user": "a", "action": "x", '
        '"resource": "r", "details": {}, "outcome": "success"}\nnot json\n\n[1,2]\n'
    )
    events, last = select(live, EventQuery())
    assert [e["seq"] for e in events] == [1] and last == 1


# -- what one request may cost ------------------------------------------------------------------


def test_a_users_scan_is_bounded_in_lines_and_says_how_to_narrow_it(tmp_path: Path) -> None:
    live = write_log(tmp_path)
    nothing = EventQuery(owner=("alice", 1001), actions=("nothing",))
    scans = HistoryScans()
    with pytest.raises(Throttled, match="--since") as refused:
        select(live, nothing, limit=100, cost=ScanCost(1001, False, max_lines=20, scans=scans))
    assert refused.value.http_status == 429 and scans.running() == 0
    # narrowed to the live file's week, the same search answers within the bound
    recent = EventQuery(owner=("alice", 1001), since=datetime(2026, 11, 16, tzinfo=timezone.utc))
    events, last = select(live, recent, cost=ScanCost(1001, False, max_lines=20, scans=scans))
    assert len(events) == 6 and last == 42
    # an admin's scan has no bound; it reads every file and gives every event
    events, _ = select(live, EventQuery(), limit=1000, cost=ScanCost(0, True, scans=scans))
    assert [e["seq"] for e in events] == list(range(1, 43)) and scans.running() == 0


def test_history_scans_at_once_are_bounded_per_user_and_in_all(tmp_path: Path) -> None:
    live = write_log(tmp_path)
    scans = HistoryScans(per_user=1, total=2)
    alices = scans.enter(1001, admin=False)
    reaching_history = EventQuery(owner=("alice", 1001), actions=("nothing",))
    with pytest.raises(Throttled, match="You already have 1 searches") as mine:
        select(live, reaching_history, cost=ScanCost(1001, False, scans=scans))
    assert mine.value.http_status == 429
    # a listing of recent events does not reach the history: never refused
    events, _ = select(live, EventQuery(), limit=3, cost=ScanCost(1001, False, scans=scans))
    assert [e["seq"] for e in events] == [40, 41, 42]
    bobs = scans.enter(1002, admin=False)
    with pytest.raises(ServerBusy, match="ds01d is running 2 searches") as everyone:
        select(live, reaching_history, cost=ScanCost(1003, False, scans=scans))
    assert everyone.value.http_status == 503
    # an admin is counted but never refused; every scan leaves its place when it ends
    assert select(live, reaching_history, cost=ScanCost(0, True, scans=scans)) == ([], 42)
    alices()
    bobs()
    bobs()  # given back once only
    assert scans.running() == 0
    assert select(live, reaching_history, cost=ScanCost(1003, False, scans=scans)) == ([], 42)
