"""``daemon.outage``: an outage is logged once when it starts and once when it ends, and
the waits between tries double up to their maximum."""

from __future__ import annotations

import logging

import pytest

from ds01.daemon.outage import Outage


def test_an_outage_is_logged_once_and_its_waits_grow(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    backs: list[float] = []
    outage = Outage(
        "Docker's events (test)", on_back=lambda: backs.append(now[0]), monotonic=lambda: now[0]
    )
    caplog.set_level(logging.DEBUG, logger="ds01.daemon.outage")
    outage.worked()  # nothing was lost: nothing to say
    waits = []
    for _ in range(10):
        waits.append(outage.failed("Docker is not running"))
        now[0] += waits[-1]
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    outage.worked()
    outage.worked()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "Docker's events (test) unavailable: Docker is not running (logged again when back)",
        "Docker's events (test) back after 2 min",
    ]
    assert backs == [now[0]] and not outage.ongoing
    assert outage.failed("again") == 0.5  # a new outage starts from the first wait
