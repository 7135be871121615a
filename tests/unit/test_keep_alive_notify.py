"""The keep-alive cap of the lifecycle's pure core (``ds01.core.lifecycle``) and its policy key.

However often ``/workspace/.keep-alive`` is touched, it defers an idle stop by at most
``keep_alive_max_hours`` (counted from when the stop would have come without it), the
clock it is counted from survives a restart of the daemon, the warnings come once each
and name the cap; ``null`` means no cap and 0 that the file is ignored.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import parse_config
from ds01.config.policies import LifecyclePolicy, policy_permissiveness
from ds01.config.resolve import resolve_policy
from ds01.core.lifecycle import ContainerClock, LimitsForContainer, Sample, decide
from lifecycle_sim import Loop, simulate

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
POLICY = LifecyclePolicy()  # grace 30 min, idle warnings at 0.8 and 0.95, cap 24 h
LIMITS = LimitsForContainer(idle_timeout_hours=4, max_runtime_hours=None)
MINUTE = timedelta(minutes=1)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def run(
    until_hours: float,
    *,
    touch_every: timedelta | None,
    interval: timedelta = timedelta(minutes=5),
    busy_until_hours: float = 0.0,
    policy: LifecyclePolicy = POLICY,
    limits: LimitsForContainer = LIMITS,
    restart_at_hours: float | None = None,
) -> Loop:
    """Sample every ``interval``; the container computes until ``busy_until_hours``, then is
    idle while its keep-alive file is touched every ``touch_every`` (``None``: never). With
    ``restart_at_hours`` the clock goes through its database row there, as across a restart
    of the daemon."""
    cpu = 0.0
    touched: datetime | None = None

    def sample_at(now: datetime) -> Sample:
        nonlocal cpu, touched
        if now <= at(busy_until_hours):
            cpu += interval.total_seconds()
        if touch_every is not None:
            while touched is None or touched + touch_every <= now:
                touched = START if touched is None else touched + touch_every
        return Sample(now, cpu_seconds=cpu, keep_alive_at=touched)

    restart_at = None if restart_at_hours is None else at(restart_at_hours)
    return simulate(
        START, interval, at(until_hours), sample_at, policy=policy, limits=limits,
        restart_at=restart_at,
    )


def test_a_keep_alive_touched_in_a_loop_defers_the_stop_by_the_cap_only() -> None:
    loop = run(100, touch_every=timedelta(minutes=1), busy_until_hours=2, interval=MINUTE)
    # Idle from 2 h; the stop would have come at 6 h; the keep-alive defers it 24 h more.
    assert loop.stopped_at == at(2 + 4 + 24)
    assert loop.stop is not None and "keep_alive_max_hours" in loop.stop[1].reason
    # Each warning once, although the file was touched at every pass.
    assert [w.level for _, w in loop.warnings] == [1, 2]
    assert [when for when, _ in loop.warnings] == [at(30 - 0.2 * 4), at(30 - 0.05 * 4)]


def test_the_cap_is_kept_across_a_restart_of_the_daemon() -> None:
    kept = run(100, touch_every=timedelta(minutes=1), busy_until_hours=2, restart_at_hours=15)
    assert kept.stopped_at == at(30)
    assert [w.level for _, w in kept.warnings] == [1, 2]


def test_no_cap_keeps_it_while_touched_and_zero_ignores_the_file() -> None:
    no_cap = POLICY.model_copy(update={"keep_alive_max_hours": None})
    assert run(100, touch_every=timedelta(minutes=1), policy=no_cap).stop is None
    ignored = POLICY.model_copy(update={"keep_alive_max_hours": 0.0})
    assert run(100, touch_every=timedelta(minutes=1), policy=ignored).stopped_at == at(4)


def test_real_activity_starts_a_new_cap() -> None:
    # Busy until 20 h: the keep-alive counted before did not use up the cap of later.
    loop = run(100, touch_every=timedelta(minutes=1), busy_until_hours=20)
    assert loop.stopped_at == at(20 + 4 + 24)


def test_the_warning_and_the_list_name_the_cap_while_the_file_defers_the_stop() -> None:
    clock = ContainerClock(run_started_at=START, active_at=at(2), sample_keep_alive_at=at(3))
    decision = decide(clock, at(3), POLICY, LIMITS, demand=False, exemption=None)
    assert decision.keep_alive_until == at(2 + 24 + 4)
    assert "keep_alive_max_hours" in decision.reason and "24 h" in decision.reason
    quiet = ContainerClock(run_started_at=START, active_at=at(2))
    plain = decide(quiet, at(3), POLICY, LIMITS, demand=False, exemption=None)
    assert plain.keep_alive_until is None and "keep_alive" not in plain.reason


@PROPERTY_SETTINGS
@given(
    active=st.floats(min_value=0, max_value=50),
    touches=st.lists(st.floats(min_value=-10, max_value=200), max_size=12),
    timeout=st.floats(min_value=0.25, max_value=72),
    cap=st.one_of(st.none(), st.floats(min_value=0, max_value=48)),
    now=st.floats(min_value=0, max_value=200),
)
def test_no_touch_defers_the_stop_past_the_cap(
    active: float, touches: list[float], timeout: float, cap: float | None, now: float
) -> None:
    policy = POLICY.model_copy(update={"keep_alive_max_hours": cap})
    limits = LimitsForContainer(idle_timeout_hours=timeout, max_runtime_hours=None)
    grace_end = at(POLICY.idle_grace_minutes / 60)
    without = max(at(active + timeout), grace_end)
    for touched in touches:
        clock = ContainerClock(
            run_started_at=START, active_at=at(active), sample_keep_alive_at=at(touched)
        )
        decision = decide(clock, at(now), policy, limits, demand=False, exemption=None)
        assert decision.idle_stop_at is not None
        assert decision.idle_stop_at >= without - timedelta(microseconds=1)
        if cap is not None:
            latest = max(at(active + timeout + cap), grace_end)
            assert decision.idle_stop_at <= latest + timedelta(microseconds=1)
            if decision.keep_alive_until is not None:
                assert decision.idle_stop_at <= decision.keep_alive_until


@PROPERTY_SETTINGS
@given(
    busy_until=st.floats(min_value=0, max_value=10),
    touch_minutes=st.integers(min_value=1, max_value=180),  # more often than 0.8 of 4 h
    cap=st.floats(min_value=0.5, max_value=30),
)
def test_any_touch_loop_is_stopped_by_the_cap_and_warned_once_per_level(
    busy_until: float, touch_minutes: int, cap: float
) -> None:
    policy = POLICY.model_copy(update={"keep_alive_max_hours": cap})
    loop = run(
        busy_until + 4 + cap + 1,
        touch_every=timedelta(minutes=touch_minutes),
        busy_until_hours=busy_until,
        policy=policy,
    )
    assert loop.stopped_at is not None
    assert loop.stopped_at <= at(busy_until + 4 + cap) + timedelta(minutes=5)
    # No warning before the cap is reached, then each level once.
    levels = [w.level for _, w in loop.warnings]
    assert levels == sorted(set(levels)) and len(levels) <= len(POLICY.idle_warning_fractions)


# -- the policy key -----------------------------------------------------------------------------


def limits_of(text: str) -> ResourceLimitsConfig:
    return parse_config(textwrap.dedent(text).lstrip("\n"), "resource-limits", "limits.yaml")


def test_keep_alive_max_hours_null_means_no_cap_and_wins_among_groups() -> None:
    config = limits_of(
        """
        groups:
          students: {}
          phd: {}
        policies:
          keep_alive_max_hours: 12
          groups:
            students: {keep_alive_max_hours: 2}
            phd: {keep_alive_max_hours: null}
        """
    )
    assert resolve_policy(config, "nobody", []).keep_alive_max_hours == 12.0
    assert resolve_policy(config, "sam", ["students"]).keep_alive_max_hours == 2.0
    assert resolve_policy(config, "bo", ["students", "phd"]).keep_alive_max_hours is None
    assert LifecyclePolicy().keep_alive_max_hours == 24.0
    ranked = max((1.0, None, 48.0), key=lambda v: policy_permissiveness("keep_alive_max_hours", v))
    assert ranked is None
