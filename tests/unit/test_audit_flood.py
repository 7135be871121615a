"""The audit log under a flood: every logged value bounded (``ds01.events.bound``), repeated
refusals of a user counted instead of written (``ds01.events.throttle``) with nothing lost,
and rotation by size as well as age, the chain verifying across files (``ds01.events.log``).

Time is injected, so windows end by moving the clock, not by waiting.
"""

from __future__ import annotations

import gzip
import json
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.events.bound import (
    DEFAULT_BOUNDS,
    FLOOR_CHARS,
    NAME_CHARS,
    RESOURCE_CHARS,
    Bounds,
    bound_details,
    bound_json,
    encoded_limit,
)
from ds01.events.chain import encode, rotated_files
from ds01.events.log import EventLog
from ds01.events.throttle import SUPPRESSED_ACTION, RefusalThrottle
from ds01.events.verify import verify
from ds01.model.text import CUT_MARK, clip, shown

START = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

# -- clip and shown ------------------------------------------------------------------------------


@given(st.text(max_size=300), st.integers(min_value=0, max_value=200))
def test_clip_is_bounded_marked_and_idempotent(text: str, limit: int) -> None:
    out = clip(text, limit)
    assert len(out) <= limit
    assert clip(out, limit) == out
    if len(text) <= limit:
        assert out == text
    elif limit >= len(CUT_MARK.format(total=len(text))) + 1:
        assert out.endswith(CUT_MARK.format(total=len(text)))
        assert text.startswith(out[: -len(CUT_MARK.format(total=len(text)))])


def test_a_4000_character_path_is_shown_as_a_short_marked_prefix() -> None:
    path = "/home/bob/" + "a" * 4000
    text = shown(path)
    assert len(text) <= 82  # the quotes of repr, and at most 80 characters
    assert text.startswith("'/home/bob/aaa") and "4010 chars in all" in text


# -- bounding a JSON-like value -----------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=700)
)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=40)
    | st.dictionaries(st.text(max_size=90), children, max_size=40),
    max_leaves=400,
)
_small_bounds = st.builds(
    Bounds,
    string_chars=st.integers(FLOOR_CHARS, 200),
    key_chars=st.integers(FLOOR_CHARS, 80),
    items=st.integers(1, 10),
    depth=st.integers(1, 5),
    total_chars=st.integers(1, 2000),
)


@settings(max_examples=300, deadline=None)
@given(_json, _small_bounds)
def test_bounded_values_stay_below_the_limit_and_bounding_is_idempotent(
    value: Any, bounds: Bounds
) -> None:
    out = bound_json(value, bounds)
    assert len(encode({"v": out})) <= encoded_limit(bounds) + 8
    assert bound_json(out, bounds) == out


#: Values a little over the small bounds below (more items, longer strings, deeper): what
#: bounding them gives is as varied as from ``_json``, at a quarter of the drawing time.
_json_over_small = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=8)
    | st.dictionaries(st.text(max_size=90), children, max_size=8),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(_json_over_small)
def test_values_within_the_default_bounds_pass_unchanged(value: Any) -> None:
    small = bound_json(value, Bounds(string_chars=40, key_chars=40, items=4, depth=2))
    assert bound_json(small) == json.loads(json.dumps(small)) == small


def test_every_kind_of_cut_is_marked_visibly() -> None:
    details = {
        "path": "/p" * 3000,
        "list": list(range(100)),
        "keys": {f"k{i}": i for i in range(100)},
        "deep": {"a": {"b": {"c": {"d": 1}}}},
        "k" * 200: "long key",
        "huge": 10**40,
    }
    out = bound_details(details)
    assert out["path"].endswith("...[cut: 6000 chars in all]") and len(out["path"]) == 512
    assert out["list"][-1] == "[69 more items cut]" and len(out["list"]) == 32
    assert out["keys"]["..."] == "[69 more keys cut]" and len(out["keys"]) == 32
    assert out["deep"]["a"]["b"] == {"c": "[dict of 1 keys: nested too deep]"}
    (long_key,) = [k for k in out if k.startswith("kkk")]
    assert len(long_key) == 64 and long_key.endswith("...[cut: 200 chars in all]")
    assert out["huge"] == "[integer of 133 bits]"


def test_a_flood_of_large_values_stays_within_the_total() -> None:
    details = {f"field{i}": ["\u00e9" * 600 for _ in range(50)] for i in range(50)}
    line = encode({"details": bound_details(details)})
    assert len(line) <= encoded_limit(DEFAULT_BOUNDS) + 20
    assert len(line) < 32 * 1024


# -- the throttle -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["alice", "bob"]),
            st.sampled_from(["auth.denied", "container.create", "container.start"]),
            st.floats(min_value=0, max_value=30),
        ),
        max_size=300,
    ),
    st.integers(1, 5),
    st.integers(1, 8),
)
def test_every_refusal_is_written_or_counted_in_exactly_one_summary(
    refusals: list[tuple[str, str, float]], per_action: int, per_user: int
) -> None:
    throttle = RefusalThrottle(window_seconds=10, per_action=per_action, per_user=per_user)
    now = START
    written: dict[tuple[str, str], int] = {}
    counted: dict[tuple[str, str], int] = {}

    def collect(summaries: Any) -> None:
        for summary in summaries:
            assert summary.total == sum(summary.counts.values()) > 0
            for action, count in summary.counts.items():
                key = (summary.user, action)
                counted[key] = counted.get(key, 0) + count

    for user, action, gap in refusals:
        now += timedelta(seconds=gap)
        collect(throttle.due(now))
        if throttle.admit(user, action, now):
            written[(user, action)] = written.get((user, action), 0) + 1
    collect(throttle.drain())
    sent: dict[tuple[str, str], int] = {}
    for user, action, _ in refusals:
        sent[(user, action)] = sent.get((user, action), 0) + 1
    for key, count in sent.items():
        assert written.get(key, 0) + counted.get(key, 0) == count
    assert throttle.drain() == []


def test_a_burst_writes_the_limits_then_counts_until_the_window_ends() -> None:
    throttle = RefusalThrottle(window_seconds=60, per_action=10, per_user=30)
    admitted = [throttle.admit("bob", "container.create", START) for _ in range(500)]
    assert admitted.count(True) == 10
    # Other actions still get through, up to the user's total.
    others = [throttle.admit("bob", f"action.{i}", START) for i in range(40)]
    assert others.count(True) == 20
    assert throttle.admit("alice", "container.create", START)  # another user: unaffected
    assert throttle.due(START + timedelta(seconds=59)) == []
    assert throttle.next_due() == START + timedelta(seconds=60)
    (summary,) = throttle.due(START + timedelta(seconds=60))
    assert summary.user == "bob" and summary.counts["container.create"] == 490
    assert summary.total == 490 + 20
    # A new window: bob's refusals are written again.
    assert throttle.admit("bob", "container.create", START + timedelta(seconds=61))


def test_a_user_refused_now_and_then_never_loses_an_event() -> None:
    throttle = RefusalThrottle(window_seconds=60, per_action=2, per_user=2)
    now = START
    for _ in range(20):
        assert throttle.due(now) == []
        assert throttle.admit("carol", "auth.denied", now)
        now += timedelta(seconds=61)
    assert throttle.drain() == []


@pytest.mark.parametrize(
    "kwargs", [{"window_seconds": 0}, {"per_action": 0}, {"per_user": 0}]
)
def test_throttle_limits_out_of_range_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RefusalThrottle(**kwargs)


# -- the event log ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def lines(path: Path) -> list[dict[str, Any]]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as stream:
        return [json.loads(line) for line in stream.read().splitlines()]


def all_events(live: Path) -> list[dict[str, Any]]:
    files = [*rotated_files(live), *([live] if live.exists() else [])]
    return [event for path in files for event in lines(path)]


def refuse(log: EventLog, count: int, user: str = "bob", action: str = "container.create") -> None:
    for _ in range(count):
        log.emit(
            action,
            user=user,
            resource="container/x",
            details={"reason": "--workspace '" + "/a" * 2000 + "' does not exist."},
            outcome="denied",
        )


def test_every_field_of_an_event_is_bounded_in_the_file(tmp_path: Path) -> None:
    live = tmp_path / "events.jsonl"
    log = EventLog(live, clock=Clock(), summary_timer=False)
    log.emit(
        "a" * 500,
        user="u" * 500,
        resource="api/GET /" + "x" * 70_000,
        details={"path": "/" + "p" * 4000, "items": ["i" * 100] * 10_000},
        outcome="denied",
    )
    raw = live.read_bytes()
    assert len(raw) < 16 * 1024
    (event,) = lines(live)
    assert len(event["user"]) == NAME_CHARS and len(event["action"]) == NAME_CHARS
    assert len(event["resource"]) == RESOURCE_CHARS
    assert "[cut: 70009 chars in all]" in event["resource"]
    assert event["details"]["path"].endswith("...[cut: 4001 chars in all]")
    assert verify(tmp_path).ok


def test_500_refusals_write_a_bounded_number_and_one_summary_with_the_count(
    tmp_path: Path,
) -> None:
    live = tmp_path / "events.jsonl"
    clock = Clock()
    log = EventLog(live, clock=clock, summary_timer=False)
    refuse(log, 500)
    assert len(lines(live)) == 10
    clock.now += timedelta(seconds=61)
    log.flush_due()
    events = lines(live)
    assert len(events) == 11
    summary = events[-1]
    assert summary["action"] == SUPPRESSED_ACTION and summary["user"] == "bob"
    assert summary["outcome"] == "denied" and summary["resource"] == "user/bob"
    assert summary["details"]["counts"] == {"container.create": 490}
    assert summary["details"]["suppressed"] == 490
    assert verify(tmp_path).ok


def test_the_summary_comes_before_the_next_window_and_at_close(tmp_path: Path) -> None:
    live = tmp_path / "events.jsonl"
    clock = Clock()
    log = EventLog(live, clock=clock, summary_timer=False)
    refuse(log, 15)
    clock.now += timedelta(seconds=61)
    refuse(log, 12)  # the first one of these sums up the last window first
    events = lines(live)
    assert [e["action"] for e in events[9:12]] == [
        "container.create",
        SUPPRESSED_ACTION,
        "container.create",
    ]
    assert events[10]["details"]["suppressed"] == 5
    log.close()
    last = lines(live)[-1]
    assert last["action"] == SUPPRESSED_ACTION and last["details"]["suppressed"] == 2
    assert sum(1 for e in lines(live) if e["action"] == "container.create") == 20


def test_the_timer_writes_the_summary_when_the_window_ends(tmp_path: Path) -> None:
    live = tmp_path / "events.jsonl"
    log = EventLog(live, refusal_window_seconds=0.2, summary_timer=True)
    refuse(log, 12)
    deadline = datetime.now(timezone.utc) + timedelta(seconds=10)
    while datetime.now(timezone.utc) < deadline:
        if any(e["action"] == SUPPRESSED_ACTION for e in lines(live)):
            break
    summary = [e for e in lines(live) if e["action"] == SUPPRESSED_ACTION]
    assert [s["details"]["suppressed"] for s in summary] == [2]
    log.close()


def test_successes_and_the_daemons_own_refusals_are_never_throttled(tmp_path: Path) -> None:
    live = tmp_path / "events.jsonl"
    log = EventLog(live, clock=Clock(), summary_timer=False)
    for _ in range(50):
        log.emit("container.list", user="bob", resource="r")
        log.emit("queue.fail", user="ds01d", resource="r", outcome="denied")
    assert len(lines(live)) == 100


def test_size_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    live = tmp_path / "events.jsonl"
    clock = Clock()
    log = EventLog(live, clock=clock, max_bytes=4096, keep_files=100, summary_timer=False)
    for i in range(100):
        log.emit("test.event", user="alice", resource=f"r/{i}", details={"pad": "x" * 200})
    files = rotated_files(live)
    assert len(files) >= 5
    assert all(len(gzip.decompress(f.read_bytes())) <= 4096 + 400 for f in files)
    assert [e["seq"] for e in all_events(live)] == list(range(1, 101))
    report = verify(tmp_path)
    assert report.ok, [str(p) for p in report.problems]
    assert report.first_seq == 1 and len(report.files) == len(files) + 1
    # A restart continues the same chain.
    EventLog(live, clock=clock, max_bytes=4096, keep_files=100).emit("x", user="u", resource="r")
    assert verify(tmp_path).ok and all_events(live)[-1]["seq"] == 101


def test_size_rotation_keeps_only_keep_files(tmp_path: Path) -> None:
    live = tmp_path / "events.jsonl"
    log = EventLog(live, clock=Clock(), max_bytes=2048, keep_files=2, summary_timer=False)
    for i in range(100):
        log.emit("test.event", user="alice", resource=f"r/{i}", details={"pad": "x" * 200})
    assert len(rotated_files(live)) == 2
    report = verify(tmp_path)
    assert report.ok and "retention" in report.chain_start


@pytest.mark.parametrize(
    "kwargs",
    [{"max_bytes": 0}, {"refusal_window_seconds": 0}, {"refusals_per_action": 0}],
)
def test_event_log_limits_out_of_range_are_refused(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EventLog(tmp_path / "events.jsonl", **kwargs)


def test_shown_never_returns_control_characters_unquoted() -> None:
    text = shown("a\nb" + string.ascii_letters * 10)
    assert "\n" not in text and text.startswith("'a\\nb")
