"""The disk limits' pure decisions (``ds01.core.disk``): which storage drivers may cap a
container, warn-then-stop per container and per total, and refused starts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.core.disk import (
    DiskClock,
    DiskStop,
    DiskWarn,
    decide_disk,
    driver_can_enforce,
    human_bytes,
    start_refusal,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
GRACE = timedelta(minutes=10)
LIMIT = 20 * 1024**3


def step(
    clock: DiskClock, used: int | None, at: datetime, *, running: bool = True
) -> tuple[DiskClock, DiskWarn | DiskStop | None]:
    return decide_disk(
        clock,
        used,
        LIMIT,
        at,
        warning_fraction=0.9,
        grace=GRACE,
        running=running,
        scope="container",
    )


@pytest.mark.parametrize(
    ("driver", "backing", "capable"),
    [
        ("overlay2", "extfs", False),
        ("overlay2", "xfs", True),
        ("overlay2", None, False),
        ("devicemapper", None, True),
        ("btrfs", "btrfs", True),
        ("zfs", "zfs", True),
        ("vfs", "extfs", False),
        ("", None, False),
    ],
)
def test_which_drivers_may_cap_a_container(driver: str, backing: str | None, capable: bool) -> None:
    can, why = driver_can_enforce(driver, backing)
    assert can is capable
    assert driver in why
    if driver == "overlay2" and not capable:
        assert "xfs" in why and "pquota" in why


def test_under_the_warning_fraction_nothing_happens() -> None:
    clock, action = step(DiskClock(), int(LIMIT * 0.5), T0)
    assert (clock, action) == (DiskClock(), None)


def test_near_the_limit_one_warning_without_a_stop() -> None:
    clock, action = step(DiskClock(), int(LIMIT * 0.95), T0)
    assert action == DiskWarn("container", 1, int(LIMIT * 0.95), LIMIT, None)
    clock, again = step(clock, int(LIMIT * 0.96), T0 + timedelta(minutes=1))
    assert again is None
    assert clock.over_since is None


def test_over_the_limit_warned_with_the_stop_time_then_stopped_after_the_grace() -> None:
    clock, warn = step(DiskClock(), LIMIT + 1, T0)
    assert isinstance(warn, DiskWarn)
    assert (warn.level, warn.stop_at) == (2, T0 + GRACE)
    clock, nothing = step(clock, LIMIT + 2, T0 + GRACE - timedelta(seconds=1))
    assert nothing is None
    clock, stop = step(clock, LIMIT + 2, T0 + GRACE)
    assert isinstance(stop, DiskStop)
    assert "above its disk limit of 20G" in stop.reason


def test_deleting_files_in_the_grace_cancels_the_stop_and_rearms() -> None:
    clock, _ = step(DiskClock(), LIMIT * 2, T0)
    clock, action = step(clock, LIMIT // 10, T0 + GRACE / 2)
    assert (clock, action) == (DiskClock(), None)
    clock, warn = step(clock, LIMIT * 2, T0 + GRACE)  # over again: a new grace
    assert isinstance(warn, DiskWarn) and warn.stop_at == T0 + 2 * GRACE


def test_with_no_grace_the_first_pass_over_stops_without_a_warning() -> None:
    _, action = decide_disk(
        DiskClock(),
        LIMIT,
        LIMIT,
        T0,
        warning_fraction=0.9,
        grace=timedelta(0),
        running=True,
        scope="total",
    )
    assert isinstance(action, DiskStop) and action.scope == "total"
    assert "Your containers hold 20G" in action.reason


def test_a_stopped_container_is_neither_warned_nor_stopped_but_its_clock_runs() -> None:
    clock, action = step(DiskClock(), LIMIT * 2, T0, running=False)
    assert action is None and clock.over_since == T0
    _, action = step(clock, LIMIT * 2, T0 + GRACE, running=True)  # started again: at once
    assert isinstance(action, DiskStop)


def test_unmeasured_keeps_the_clock_and_no_limit_resets_it() -> None:
    clock = DiskClock(over_since=T0, warning_level=2)
    assert step(clock, None, T0 + GRACE) == (clock, None)
    reset = decide_disk(
        clock, LIMIT * 2, None, T0, warning_fraction=0.9, grace=GRACE, running=True, scope="total"
    )
    assert reset == (DiskClock(), None)


@given(
    st.lists(
        st.tuples(st.integers(0, 3 * LIMIT), st.integers(1, 600), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_a_stop_comes_only_after_the_grace_over_the_limit_and_a_warning_first(
    steps: list[tuple[int, int, bool]],
) -> None:
    """Whatever the measurements: a stop needs the use over the limit at the stop and
    continuously since ``over_since``, at least ``GRACE`` ago; each level warns at most once
    per episode; nothing acts while stopped."""
    clock, now = DiskClock(), T0
    warned_levels: list[int] = []
    over_from: datetime | None = None
    for used, seconds, running in steps:
        now += timedelta(seconds=seconds)
        if used < LIMIT:
            over_from = None
            warned_levels = [] if used < LIMIT * 0.9 else [w for w in warned_levels if w < 2]
        elif over_from is None:
            over_from = now
        clock, action = step(clock, used, now, running=running)
        if not running:
            assert action is None
        if isinstance(action, DiskStop):
            assert used >= LIMIT and over_from is not None and now - over_from >= GRACE
        if isinstance(action, DiskWarn):
            assert action.level not in warned_levels
            warned_levels.append(action.level)
            assert (action.level == 2) == (used >= LIMIT)


def test_starts_are_refused_over_the_container_limit_or_the_total() -> None:
    assert start_refusal("a", 10, 20, 10, 100) is None
    assert start_refusal("a", None, 20, None, 100) is None
    own = start_refusal("a", 20, 20, 20, None)
    assert own is not None and own.startswith("a cannot start: its own filesystem holds 20")
    assert "container-remove a" in own
    total = start_refusal("a", 1, 20, 100, 100)
    assert total is not None and "aggregate.disk_limit" in total


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0"), (980, "980"), (1024, "1K"), (43_200_000, "41.2M"), (20 * 1024**3, "20G")],
)
def test_sizes_for_people(n: int, text: str) -> None:
    assert human_bytes(n) == text
