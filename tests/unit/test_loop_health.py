"""The loops' fault tracker (``ds01.daemon.health``) and the doctor's verdict on a loop:
a fault is logged once, repeats are counted, the recovery is logged once, and a loop
whose passes fail or stall is reported, on injected clocks."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from ds01.daemon.doctor import STALL_INTERVALS, STALL_MARGIN_SECONDS, check_loop
from ds01.daemon.health import MAX_DISTINCT_FAULTS, LoopRegistry, PassTracker
from ds01.errors import DockerUnavailable, PolicyError, StorageFault

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=timezone.utc)
LOGGER = "ds01.test.loop"


class Clocks:
    """A monotonic and a wall clock that move together."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds - 1000.0)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


def tracker(clocks: Clocks, interval: float = 5.0) -> PassTracker:
    return PassTracker(
        "queue",
        "queue pass",
        "queued requests do not start",
        interval=lambda: interval,
        logger=logging.getLogger(LOGGER),
        monotonic=clocks.monotonic,
        wall=clocks.wall,
    )


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def full_disk() -> StorageFault:
    return StorageFault("ds01d cannot write its files: the file system of /var/lib/ds01 is full.")


def test_a_repeated_fault_is_logged_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clocks = Clocks()
    loop = tracker(clocks)
    loop.succeeded()
    for _ in range(300):  # ten minutes of failing every two seconds
        clocks.advance(2)
        loop.failed(full_disk())

    [fault] = records(caplog)
    assert fault.levelno == logging.ERROR
    assert "queue pass failed" in fault.getMessage() and "is full" in fault.getMessage()
    assert fault.exc_info is None  # an expected fault needs no traceback

    clocks.advance(2)
    loop.succeeded()
    loop.succeeded()
    _, recovered = records(caplog)
    assert recovered.levelno == logging.INFO
    message = recovered.getMessage()
    assert "recovered after 300 failed attempt(s) since 2026-12-06 10:00:02 UTC" in message
    assert "is full" in message

    clocks.advance(2)
    loop.failed(full_disk())  # a new outage is logged again
    assert len(records(caplog)) == 3


def test_an_unexpected_exception_gets_its_traceback_only_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    loop = tracker(Clocks())
    for _ in range(5):
        try:
            raise sqlite3.OperationalError("disk I/O error")
        except sqlite3.OperationalError as exc:
            loop.failed(exc)
    [line] = records(caplog)
    assert line.levelno == logging.ERROR and line.exc_info is not None
    assert "OperationalError: disk I/O error" in line.getMessage()


def test_each_distinct_fault_is_logged_once_up_to_a_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    loop = tracker(Clocks())
    loop.failed(DockerUnavailable("Docker does not answer."))
    loop.failed(full_disk())
    loop.failed(DockerUnavailable("Docker does not answer."))
    loop.failed(PolicyError("the owner is gone"))
    levels = [r.levelno for r in records(caplog)]
    # The outage's first fault as itself, another reason in it as "still failing, now".
    assert levels == [logging.ERROR, logging.INFO, logging.INFO]
    for n in range(3 * MAX_DISTINCT_FAULTS):
        loop.failed(StorageFault(f"fault number {n}"))
    assert len(records(caplog)) == MAX_DISTINCT_FAULTS
    assert loop.health().failures == 4 + 3 * MAX_DISTINCT_FAULTS


def test_health_keeps_the_last_success_and_the_current_fault() -> None:
    clocks = Clocks()
    loop = tracker(clocks, interval=5)
    registry = LoopRegistry()
    registry.add(loop)
    clocks.advance(3)
    [young] = registry.health()
    assert young.since_success_seconds is None and young.running_seconds == 3
    assert young.fault is None and young.failures == 0

    loop.succeeded()
    clocks.advance(4)
    loop.failed(full_disk())
    clocks.advance(4)
    loop.failed(full_disk())
    [failing] = registry.health()
    assert failing.since_success_seconds == 8
    assert failing.failures == 2 and failing.fault == full_disk().message
    assert failing.fault_since == T0 + timedelta(seconds=7)
    assert failing.interval_seconds == 5 and registry.checks() == {"queue"}

    loop.succeeded()
    [healthy] = registry.health()
    assert healthy.fault is None and healthy.failures == 0 and healthy.since_success_seconds == 0


def test_the_doctor_reports_a_failing_loop_at_once_and_a_stalled_one_later() -> None:
    clocks = Clocks()
    loop = tracker(clocks, interval=5)
    clocks.advance(10)
    assert check_loop(loop.health()).level == "ok"  # young, nothing finished yet

    loop.succeeded()
    clocks.advance(2)
    healthy = check_loop(loop.health())
    assert healthy.level == "ok" and healthy.check == "queue"
    assert "succeeded 2 s ago" in healthy.message

    loop.failed(full_disk())
    failing = check_loop(loop.health())
    assert failing.level == "warning"
    assert "queue pass fails" in failing.message and "is full" in failing.message
    assert "queued requests do not start" in failing.message
    assert "1 failed in a row since 10:00:12 UTC" in failing.message

    clocks.advance(STALL_INTERVALS * 5 + STALL_MARGIN_SECONDS + 1)
    stalled = check_loop(loop.health())
    assert stalled.level == "warning" and "stalled" in stalled.message
    assert "is full" in stalled.message

    loop.succeeded()
    assert check_loop(loop.health()).level == "ok"


def test_a_loop_that_never_finishes_a_pass_is_stalled() -> None:
    clocks = Clocks()
    loop = tracker(clocks, interval=60)
    clocks.advance(STALL_INTERVALS * 60 + STALL_MARGIN_SECONDS + 1)
    finding = check_loop(loop.health())
    assert finding.level == "warning" and "stalled" in finding.message
    assert "may be hung" in finding.message


def test_an_outage_is_logged_once_its_waits_grow_and_on_back_runs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    backs: list[float] = []
    tracker = PassTracker(
        "oom-events",
        "Docker's events (test)",
        "kills may go unreported",
        interval=lambda: 1.0,
        logger=logging.getLogger("ds01.test.outage"),
        on_back=lambda: backs.append(now[0]),
        monotonic=lambda: now[0],
    )
    caplog.set_level(logging.DEBUG, logger="ds01.test.outage")
    tracker.succeeded()  # nothing was lost: nothing to say
    waits = []
    for _ in range(10):
        waits.append(tracker.failed("Docker is not running"))
        now[0] += waits[-1]
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    tracker.succeeded()
    tracker.succeeded()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("Docker's events (test) failed (repeats are not logged")
    assert said[1].startswith("Docker's events (test) recovered after 10 failed attempt(s)")
    assert backs == [now[0]]
    assert tracker.failed("again") == 0.5  # a new outage starts from the first wait


def test_a_loop_whose_wait_cannot_be_computed_waits_its_interval_and_goes_on() -> None:
    import threading

    from ds01.daemon.periodic import PeriodicPass

    class Loop(PeriodicPass):
        def __init__(self) -> None:
            super().__init__()
            self.passes = 0
            self.second = threading.Event()

        def run_pass(self) -> None:
            self.passes += 1
            if self.passes == 2:
                self.second.set()

        def interval_seconds(self) -> float:
            return 0.01

        def wait_seconds(self) -> float:
            raise sqlite3.OperationalError("database is locked")

    loop = Loop()
    loop.start()
    try:
        assert loop.second.wait(5), "the loop stopped after its first pass"
    finally:
        assert loop.stop()
