"""The audit log writer: hash chain, restart, rotation and retention, file mode and owner,
redaction, and failures that never reach the caller (``ds01.events.log``).

Time is injected (``Clock``), so rotation is tested by moving the clock, not by waiting.
Disk faults are simulated by a log path under a regular file, or by making ``os.write``
fail for the log file only.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import itertools
import json
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import skip_or_fail
from ds01.events import log as log_module
from ds01.events.chain import GENESIS, encode, rotated_files
from ds01.events.log import ROTATION_RETRY, EventLog
from ds01.events.redact import REDACTED
from ds01.events.verify import verify

START = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
WEEK = timedelta(days=7)


class Clock:
    """A settable clock for ``EventLog(clock=…)``."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def live(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


def emit(log: EventLog, count: int, **details: Any) -> None:
    for i in range(count):
        log.emit("test.event", user="alice", resource=f"r/{i}", details={"i": i, **details})


def raw_lines(path: Path) -> list[bytes]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        data: bytes = stream.read()
    return data.splitlines()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw_lines(path)]


def all_records(live: Path) -> list[dict[str, Any]]:
    """Every event of the chain: rotated files, oldest first, then the live file."""
    files = [*rotated_files(live), live] if live.exists() else rotated_files(live)
    return [record for path in files for record in records(path)]


def assert_intact(live: Path) -> None:
    report = verify(live.parent)
    assert report.ok, [str(p) for p in report.problems]


# -- the chain ----------------------------------------------------------------------------


def test_each_line_carries_seq_and_the_hash_of_the_line_before(live: Path, clock: Clock) -> None:
    emit(EventLog(live, clock=clock), 50)
    lines = raw_lines(live)
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 51))
    assert json.loads(lines[0])["prev"] == GENESIS
    for before, line in itertools.pairwise(lines):
        assert json.loads(line)["prev"] == hashlib.sha256(before).hexdigest()
    # Canonical: anyone can re-encode a line to the same bytes.
    assert all(encode(json.loads(line)) == line for line in lines)
    assert_intact(live)


def test_a_new_event_log_continues_the_chain(live: Path, clock: Clock) -> None:
    emit(EventLog(live, clock=clock), 3)
    emit(EventLog(live, clock=clock), 2)
    assert [r["seq"] for r in records(live)] == [1, 2, 3, 4, 5]
    assert_intact(live)


def test_a_damaged_last_line_is_kept_reported_and_chained_after(live: Path, clock: Clock) -> None:
    emit(EventLog(live, clock=clock), 3)
    with live.open("ab") as stream:
        stream.write(b'{"action":"cut sh')  # a crash in the middle of a write
    log = EventLog(live, clock=clock)
    log.emit("after", user="bob", resource="r")
    lines = raw_lines(live)
    assert lines[3] == b'{"action":"cut sh'  # untouched, on a line of its own
    after = [json.loads(line) for line in lines[4:]]
    assert [(r["action"], r["seq"]) for r in after] == [("audit.tail_damaged", 5), ("after", 6)]
    assert after[0]["prev"] == hashlib.sha256(lines[3]).hexdigest()
    (problem,) = verify(live.parent).problems
    assert (problem.file, problem.line, problem.kind) == (str(live), 4, "corrupt")


def test_lines_from_before_the_chain_are_kept_and_chained_after(live: Path, clock: Clock) -> None:
    old = [
        {"ts": "2025-12-31T09:00:00.000+00:00", "user": "a", "action": "x", "resource": "r"},
        {"ts": "2025-12-31T10:00:00.000+00:00", "user": "b", "action": "y", "resource": "r"},
    ]
    live.write_bytes(b"".join(encode(r) + b"\n" for r in old))
    emit(EventLog(live, clock=clock), 2)
    lines = raw_lines(live)
    assert json.loads(lines[2])["seq"] == 1
    assert json.loads(lines[2])["prev"] == hashlib.sha256(lines[1]).hexdigest()
    report = verify(live.parent)
    assert report.ok and (report.events, report.legacy_events) == (4, 2)


# -- rotation and retention ---------------------------------------------------------------


def test_rotation_compresses_the_week_and_continues_the_chain(live: Path, clock: Clock) -> None:
    log = EventLog(live, clock=clock)
    emit(log, 3)
    clock.advance(WEEK - timedelta(seconds=1))
    emit(log, 1)
    assert rotated_files(live) == []
    clock.advance(timedelta(seconds=1))
    emit(log, 1)
    (rotated,) = rotated_files(live)
    assert rotated.name == "events-20260101-000000000001.jsonl.gz"
    assert [r["seq"] for r in records(rotated)] == [1, 2, 3, 4]
    (first_live,) = records(live)
    assert first_live["seq"] == 5
    assert first_live["prev"] == hashlib.sha256(raw_lines(rotated)[-1]).hexdigest()
    assert not [p for p in live.parent.iterdir() if p.name.endswith(".tmp")]
    clock.advance(WEEK)
    emit(log, 2)
    assert len(rotated_files(live)) == 2
    assert [r["seq"] for r in all_records(live)] == list(range(1, 8))
    report = verify(live.parent)
    assert report.ok and len(report.files) == 3 and report.first_seq == 1


def test_rotation_period_is_configurable(live: Path, clock: Clock) -> None:
    log = EventLog(live, clock=clock, rotate_after_days=1)
    for _ in range(3):
        emit(log, 2)
        clock.advance(timedelta(days=1))
    assert len(rotated_files(live)) == 2
    assert_intact(live)


def test_retention_deletes_the_oldest_files_and_the_rest_still_verifies(
    live: Path, clock: Clock
) -> None:
    log = EventLog(live, clock=clock, keep_files=2)
    for _ in range(6):
        emit(log, 3)
        clock.advance(WEEK)
    emit(log, 1)
    kept = rotated_files(live)
    assert [records(path)[0]["seq"] for path in kept] == [13, 16]
    report = verify(live.parent)
    assert report.ok, [str(p) for p in report.problems]
    assert report.first_seq == 13 and "retention" in report.chain_start


def test_after_a_rotation_a_restart_continues_from_the_rotated_file(
    live: Path, clock: Clock
) -> None:
    log = EventLog(live, clock=clock)
    emit(log, 2)
    clock.advance(WEEK)
    emit(log, 1)
    live.unlink()  # as if ds01d stopped right after a rotation
    emit(EventLog(live, clock=clock), 1)
    assert [r["seq"] for r in all_records(live)] == [1, 2, 3]
    assert_intact(live)


def test_a_rotation_cut_short_by_a_crash_is_finished_at_start(live: Path, clock: Clock) -> None:
    emit(EventLog(live, clock=clock), 3)
    copy = live.with_name("events-20260101-000000000001.jsonl.gz")
    copy.write_bytes(gzip.compress(live.read_bytes()))  # renamed into place, live not removed
    emit(EventLog(live, clock=clock), 1)
    assert [r["seq"] for r in records(live)] == [4]
    assert_intact(live)


def test_a_failed_rotation_keeps_logging_and_is_retried_later(
    live: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    log = EventLog(live, clock=clock)
    emit(log, 2)
    clock.advance(WEEK)
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfileobj", no_space)
        emit(log, 1)
    assert rotated_files(live) == []
    assert [p.name for p in live.parent.iterdir()] == ["events.jsonl"]  # no temp file left
    assert "cannot rotate" in log.health()["last_error"]
    assert log.alarm is None  # events are still written
    clock.advance(ROTATION_RETRY)
    emit(log, 1)
    assert len(rotated_files(live)) == 1
    assert [r["seq"] for r in all_records(live)] == [1, 2, 3, 4]
    assert_intact(live)


# -- mode and owner -----------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_0640_even_if_they_existed_with_a_wider_mode(live: Path, clock: Clock) -> None:
    live.touch()
    live.chmod(0o666)
    log = EventLog(live, clock=clock)
    assert mode(live) == 0o640  # at start, before any event
    live.chmod(0o644)
    emit(log, 1)
    assert mode(live) == 0o640
    clock.advance(WEEK)
    emit(log, 1)
    assert [mode(path) for path in rotated_files(live)] == [0o640]


def test_files_belong_to_the_daemon_and_the_admin_group(live: Path, clock: Clock) -> None:
    if os.geteuid() != 0:
        skip_or_fail("giving a file to another group needs root")
    admin_gid = 4242  # need not exist
    log = EventLog(live, clock=clock, group_gid=admin_gid)
    emit(log, 1)
    clock.advance(WEEK)
    emit(log, 1)
    for path in [*rotated_files(live), live]:
        assert (path.stat().st_uid, path.stat().st_gid) == (os.geteuid(), admin_gid)


# -- redaction ----------------------------------------------------------------------------


def test_secrets_are_redacted_in_nested_objects_and_lists(live: Path, clock: Clock) -> None:
    log = EventLog(live, clock=clock)
    details = {
        "containers": [
            {"name": "a", "env": {"HF_TOKEN": "hf-secret-1"}},
            {"name": "b", "Authorization": "Bearer secret-2"},
        ],
        "args": [["x", {"db_password": "secret-3"}]],
        "env_vars": ["AWS_KEY=secret-4"],
        "container-env": "secret-5",
        "environment": {"A": "secret-6"},
        "envelope": "kept",
    }
    event = log.emit("container.create", user="alice", resource="r", details=details)
    assert event.details == {
        "containers": [{"name": "a", "env": REDACTED}, {"name": "b", "Authorization": REDACTED}],
        "args": [["x", {"db_password": REDACTED}]],
        "env_vars": REDACTED,
        "container-env": REDACTED,
        "environment": REDACTED,
        "envelope": "kept",
    }
    assert details["env_vars"] == ["AWS_KEY=secret-4"]  # the caller's data is not changed
    text = live.read_text()
    assert "secret" not in text and "kept" in text


# -- failures never reach the caller --------------------------------------------------------


@pytest.fixture
def failing_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Make ``os.write`` to files named ``events.jsonl`` fail as ``control`` says:
    ``{"error": errno, or None to write normally (at first), "partial": bytes to write
    before failing}``."""
    real_write = os.write
    control: dict[str, Any] = {"error": None, "partial": 0}

    def write(fd: int, data: Any) -> int:
        if control["error"] and os.readlink(f"/proc/self/fd/{fd}").endswith("events.jsonl"):
            if control["partial"]:
                written = real_write(fd, bytes(data[: control["partial"]]))
                control["partial"] = 0
                return written
            raise OSError(control["error"], os.strerror(control["error"]))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    yield control


def test_a_full_disk_raises_the_alarm_and_events_are_written_later_in_order(
    live: Path,
    clock: Clock,
    failing_writes: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = EventLog(live, clock=clock)
    emit(log, 1, phase="before")
    failing_writes["error"] = errno.ENOSPC
    with caplog.at_level(logging.ERROR, logger=log_module.__name__):
        emit(log, 3, phase="during")
    alarm = log.alarm
    assert alarm is not None
    assert "No space left on device" in alarm.message
    assert (alarm.failures, alarm.buffered, alarm.dropped) == (3, 3, 0)
    health = log.health()
    assert (health["writable"], health["buffered"]) == (False, 3)
    assert health["last_error_at"] == START.isoformat()
    assert [r.getMessage().count("No space") for r in caplog.records] == [1]  # logged once
    assert [r["details"]["phase"] for r in records(live)] == ["before"]

    failing_writes["error"] = None
    emit(log, 1, phase="after")
    assert log.alarm is None and log.health()["writable"] is True
    assert log.health()["buffered"] == 0
    phases = [(r["seq"], r["details"]["phase"]) for r in records(live)]
    assert phases == [(1, "before"), (2, "during"), (3, "during"), (4, "during"), (5, "after")]
    assert_intact(live)


def test_a_partial_write_is_undone(
    live: Path, clock: Clock, failing_writes: dict[str, Any]
) -> None:
    log = EventLog(live, clock=clock)
    emit(log, 1)
    failing_writes.update(error=errno.ENOSPC, partial=10)
    emit(log, 1)
    assert len(raw_lines(live)) == 1  # the 10 bytes were cut off again
    failing_writes["error"] = None
    emit(log, 1)
    assert [r["seq"] for r in records(live)] == [1, 2, 3]
    assert_intact(live)


def test_when_the_buffer_is_full_events_are_dropped_and_the_loss_is_logged(
    live: Path, clock: Clock, failing_writes: dict[str, Any]
) -> None:
    log = EventLog(live, clock=clock, buffer_limit=3)
    failing_writes["error"] = errno.ENOSPC
    emit(log, 5)
    health = log.health()
    assert (health["buffered"], health["dropped"], health["failures"]) == (3, 2, 5)
    failing_writes["error"] = None
    clock.advance(timedelta(minutes=1))
    log.emit("later", user="bob", resource="r")
    actions = [(r["seq"], r["action"]) for r in records(live)]
    assert actions == [
        (1, "test.event"),
        (2, "test.event"),
        (3, "test.event"),
        (4, "later"),
        (5, "audit.dropped"),
    ]
    assert records(live)[-1]["details"] == {
        "count": 2,
        "first_ts": "2026-01-01T12:00:00.000+00:00",
        "last_ts": "2026-01-01T12:00:00.000+00:00",
    }
    assert_intact(live)


def test_a_log_directory_that_cannot_exist_never_raises(tmp_path: Path, clock: Clock) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log directory should be")
    live = blocker / "events.jsonl"
    log = EventLog(live, clock=clock, buffer_limit=2)  # must not raise either
    emit(log, 3)
    health = log.health()
    assert (health["writable"], health["buffered"], health["dropped"]) == (False, 2, 1)
    assert health["next_seq"] is None  # the chain could not even be read
    assert "Not a directory" in health["last_error"]

    blocker.unlink()
    emit(log, 1)
    assert log.alarm is None
    actions = [(r["seq"], r["action"]) for r in records(live)]
    assert actions == [
        (1, "test.event"),
        (2, "test.event"),
        (3, "test.event"),
        (4, "audit.dropped"),
    ]
    assert_intact(live)


def test_a_removed_log_directory_raises_the_alarm(live: Path, clock: Clock) -> None:
    log = EventLog(live, clock=clock)
    emit(log, 1)
    live.unlink()
    live.parent.rmdir()
    emit(log, 1)
    assert log.alarm is not None and "No such file or directory" in log.alarm.message
    live.parent.mkdir()
    log.close()
    assert [r["seq"] for r in records(live)] == [2]
    report = verify(live.parent)  # the first event went with the directory
    assert report.ok and report.first_seq == 2


def test_concurrent_emits_keep_the_chain_intact(live: Path) -> None:
    log = EventLog(live)

    def write(n: int) -> None:
        for i in range(200):
            log.emit("t", user=f"u{n}", resource=f"r{i}", details={"pad": "x" * 500})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r["seq"] for r in records(live)] == list(range(1, 801))
    assert_intact(live)


@pytest.mark.parametrize(
    "kwargs", [{"rotate_after_days": 0}, {"keep_files": -1}, {"buffer_limit": 0}]
)
def test_limits_out_of_range_are_refused(live: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EventLog(live, **kwargs)
