"""What ``ds01 reserve --from ... --hours ...`` may say: refused as invalid input, never an
internal error, never a time silently moved."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from ds01.daemon.reservations import parse_start, window_of
from ds01.errors import InvalidInput
from ds01.exitcodes import ExitCode


@pytest.fixture
def london() -> Iterator[None]:
    """The server's local time is Europe/London for the test (clocks go forward on
    2026-03-29 at 01:00, to 02:00)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/London"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_a_wall_clock_time_the_clocks_skip_is_refused(london: None) -> None:
    with pytest.raises(InvalidInput, match="does not exist in the server's local time"):
        parse_start("2026-03-29 01:30")
    assert parse_start("2026-03-29 02:30") == datetime.fromisoformat("2026-03-29T02:30+01:00")
    assert parse_start("2026-03-29 00:59:59") == datetime.fromisoformat("2026-03-29T00:59:59Z")
    # A time that comes twice (the clocks go back) is taken the first time.
    assert parse_start("2026-10-25 01:30") == datetime.fromisoformat("2026-10-25T01:30+01:00")


@pytest.mark.parametrize(
    ("start", "hours"), [("9999-12-31 23:00", 2.0), ("9999-12-31 23:59:59", 0.5)]
)
def test_a_window_past_the_last_date_is_invalid_input(start: str, hours: float) -> None:
    with pytest.raises(InvalidInput, match="past any date") as refused:
        window_of(start, hours)
    assert refused.value.exit_code == ExitCode.USAGE


def test_a_window_is_its_start_and_its_length() -> None:
    start, end = window_of(" 2026-12-10 09:00 ", 1.5)
    assert (end - start).total_seconds() == 5400
    with pytest.raises(InvalidInput, match="is not a time"):
        window_of("tomorrow", 1)
