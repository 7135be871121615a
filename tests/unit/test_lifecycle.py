"""The lifecycle's pure core: activity, the per-container clock, stop and warning decisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds01.config.policies import LifecyclePolicy
from ds01.core.lifecycle import (
    CLOCK_COLUMNS,
    CLOCK_STEP,
    ContainerClock,
    Exemption,
    LimitsForContainer,
    PassMark,
    Sample,
    Signal,
    Stop,
    Warn,
    activity,
    cleanup_created,
    cleanup_stopped,
    clock_jump,
    covering_exemption,
    decide,
    declared_runtime,
    observe,
    rebased,
    runtime_limit_hours,
    runtime_stop,
    stopped,
    stopped_removal_at,
    warned,
)
from ds01.errors import QuotaExceeded
from ds01.exitcodes import ExitCode
from ds01.model import labels as L
from ds01.model.units import format_duration
from lifecycle_sim import Loop, simulate

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
POLICY = LifecyclePolicy()  # grace 30 min, warnings at 0.8 and 0.95 (idle), 0.75 and 0.9
LIMITS = LimitsForContainer(idle_timeout_hours=4, max_runtime_hours=48)
MINUTE = timedelta(minutes=1)
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


# --------------------------------------------------------------------------------------------
# A lifecycle loop on a virtual clock
# --------------------------------------------------------------------------------------------


def busy_seconds(busy: Sequence[tuple[float, float]], since: datetime, until: datetime) -> float:
    """Seconds of ``busy`` (intervals in hours from START) within [since, until]."""
    total = 0.0
    for begin, end in busy:
        overlap = min(until, at(end)) - max(since, at(begin))
        total += max(0.0, overlap.total_seconds())
    return total


def run_loop(
    interval: timedelta,
    until_hours: float,
    *,
    busy: Sequence[tuple[float, float]] = (),
    policy: LifecyclePolicy = POLICY,
    limits: LimitsForContainer = LIMITS,
    demand: bool = False,
    keep_alive_at: datetime | None = None,
    wall_jumps: Sequence[tuple[datetime, timedelta]] = (),
) -> Loop:
    """Sample every ``interval`` from START; the container computes on one CPU during ``busy``
    (intervals in hours from START) and is otherwise idle."""
    cpu = 0.0

    def sample_at(now: datetime) -> Sample:
        nonlocal cpu
        cpu += busy_seconds(busy, now - interval, now)
        return Sample(now, cpu_seconds=cpu, keep_alive_at=keep_alive_at)

    return simulate(
        START,
        interval,
        at(until_hours),
        sample_at,
        policy=policy,
        limits=limits,
        demand=demand,
        wall_jumps=wall_jumps,
    )


# --------------------------------------------------------------------------------------------
# Idle stops are exact times
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [1, 7, 25, 60, 180])
def test_idle_stop_comes_exactly_after_the_timeout_not_after_n_loops(minutes: int) -> None:
    interval = timedelta(minutes=minutes)
    loop = run_loop(interval, 12)
    assert loop.stop is not None and loop.last is not None
    stopped_at, stop = loop.stop
    assert loop.last.stop_at == at(4)  # the due time does not depend on the interval,
    assert at(4) <= stopped_at < at(4) + interval  # the first pass at or after it stops
    assert stop.kind == "idle"
    idle = format_duration((stopped_at - START).total_seconds())
    assert stop.reason == f"Idle for {idle}, the limit is 4 h 00 min."


def test_idle_time_counts_from_the_last_active_interval() -> None:
    loop = run_loop(timedelta(minutes=10), 12, busy=[(0, 1.95)])
    assert loop.clock is not None
    assert loop.clock.active_at == at(2)  # the interval (1h50, 2h] was active
    assert loop.stopped_at == at(6)


@settings(PROPERTY_SETTINGS)
@given(
    interval_minutes=st.integers(min_value=1, max_value=150),
    busy_until=st.floats(min_value=0, max_value=6),
)
def test_the_stop_time_never_depends_on_the_loop_interval(
    interval_minutes: int, busy_until: float
) -> None:
    interval = timedelta(minutes=interval_minutes)
    loop = run_loop(interval, 20, busy=[(0, busy_until)])
    assert loop.clock is not None and loop.last is not None and loop.stopped_at is not None
    # The container was last seen active at the end of the interval in which it stopped
    # computing (if that interval was busy enough), and is stopped exactly T after that.
    due = max(loop.clock.active_at + timedelta(hours=4), START + timedelta(minutes=30))
    assert loop.last.stop_at == due
    assert at(busy_until + 4) - interval <= due <= at(busy_until + 4) + interval
    assert due <= loop.stopped_at < due + interval


def test_no_idle_decision_during_the_grace_period() -> None:
    short = LimitsForContainer(idle_timeout_hours=0.25, max_runtime_hours=None)
    loop = run_loop(MINUTE, 2, limits=short)
    assert loop.stopped_at == START + timedelta(minutes=30)  # due at 15 min, grace until 30
    assert loop.warnings == []  # the warnings at 12 and 14 min fell within the grace period
    none = LifecyclePolicy(idle_grace_minutes=0)
    assert run_loop(MINUTE, 2, limits=short, policy=none).stopped_at == at(0.25)


def test_a_container_without_idle_timeout_is_never_stopped_for_idleness() -> None:
    never = LimitsForContainer(idle_timeout_hours=None, max_runtime_hours=None)
    loop = run_loop(timedelta(minutes=30), 72, limits=never)
    assert loop.stop is None and loop.warnings == []
    assert loop.last is not None and loop.last.stop_at is None
    assert loop.last.effective_idle_timeout is None
    assert loop.last.reason == (
        "Idle 72 h 00 min (never stopped for idleness); ran 72 h 00 min (no runtime limit); "
        "no stop planned."
    )


# --------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------


def test_warnings_come_at_the_configured_fractions() -> None:
    loop = run_loop(MINUTE, 12)
    assert [(when, w.kind, w.level, w.fraction, w.stop_at) for when, w in loop.warnings] == [
        (at(0.8 * 4), "idle", 1, 0.8, at(4)),
        (at(0.95 * 4), "idle", 2, 0.95, at(4)),
    ]
    assert loop.stopped_at == at(4)
    custom = LifecyclePolicy(idle_warning_fractions=(0.25, 0.5, 0.75))
    loop = run_loop(MINUTE, 12, policy=custom)
    assert [when for when, _ in loop.warnings] == [at(1), at(2), at(3)]
    assert run_loop(MINUTE, 12, policy=LifecyclePolicy(idle_warning_fractions=())).warnings == []


def test_only_the_highest_level_is_sent_when_several_come_due_at_once() -> None:
    loop = run_loop(timedelta(hours=3.9), 12)
    assert [(when, w.level) for when, w in loop.warnings] == [(at(3.9), 2)]
    assert loop.stopped_at == at(7.8)


def test_activity_re_arms_the_idle_warnings() -> None:
    loop = run_loop(MINUTE, 12, busy=[(3.5, 3.6)])  # warned at 3.2 h, then busy again
    assert [(when, w.level) for when, w in loop.warnings] == [
        (at(3.2), 1),
        (at(3.6 + 3.2), 1),
        (at(3.6 + 3.8), 2),
    ]
    assert loop.stopped_at == at(7.6)


def test_runtime_warnings_and_stop_over_a_busy_run() -> None:
    limits = LimitsForContainer(idle_timeout_hours=1, max_runtime_hours=10)
    loop = run_loop(MINUTE, 24, busy=[(0, 24)], limits=limits)
    assert [(when, w.kind, w.level) for when, w in loop.warnings] == [
        (at(7.5), "runtime", 1),
        (at(9), "runtime", 2),
    ]
    assert loop.stop is not None
    assert loop.stop[0] == at(10)
    assert loop.stop[1] == Stop(
        "runtime", "Ran 10 h 00 min over its runs, the limit is 10 h 00 min."
    )


# --------------------------------------------------------------------------------------------
# Jumps of the wall clock
# --------------------------------------------------------------------------------------------

JUMPS = [timedelta(hours=49), timedelta(hours=1), -timedelta(hours=1), -timedelta(hours=49)]


def outcome(loop: Loop) -> tuple[object, ...]:
    """What a loop did, on the monotonic timeline: warnings (when, kind, level) and the stop."""
    warnings = [(when, w.kind, w.level) for when, w in loop.warnings]
    return warnings, loop.stop and (loop.stop[0], loop.stop[1].kind)


@pytest.mark.parametrize("jump", JUMPS, ids=lambda j: f"{j.total_seconds() / 3600:+g}h")
def test_a_jump_of_the_wall_clock_neither_stops_nor_spares_a_container(jump: timedelta) -> None:
    # Busy for 6 h, then idle: stopped 4 h later, warned before. The jump comes while it is
    # busy (a +49 h jump used to make it idle for 49 h and stop it at once).
    steady = run_loop(MINUTE, 12, busy=[(0, 6)])
    jumped = run_loop(MINUTE, 12, busy=[(0, 6)], wall_jumps=[(at(3), jump)])
    assert steady.stopped_at == at(10)
    assert outcome(jumped) == outcome(steady)
    assert jumped.jumps == [jump]
    # While it is idle, the jump adds no idleness nor takes any away.
    idle_jump = run_loop(MINUTE, 12, busy=[(0, 6)], wall_jumps=[(at(8), jump)])
    assert outcome(idle_jump) == outcome(steady)


@pytest.mark.parametrize("jump", JUMPS, ids=lambda j: f"{j.total_seconds() / 3600:+g}h")
def test_runtime_is_the_time_that_passed_whatever_the_wall_clock_did(jump: timedelta) -> None:
    limits = LimitsForContainer(idle_timeout_hours=1, max_runtime_hours=10)
    steady = run_loop(MINUTE, 24, busy=[(0, 24)], limits=limits)
    jumped = run_loop(MINUTE, 24, busy=[(0, 24)], limits=limits, wall_jumps=[(at(5), jump)])
    assert outcome(jumped) == outcome(steady)
    assert jumped.stopped_at == at(10)
    assert jumped.last is not None and jumped.last.runtime == timedelta(hours=10)


@pytest.mark.parametrize("jump", JUMPS, ids=lambda j: f"{j.total_seconds() / 3600:+g}h")
def test_a_keep_alive_touch_before_a_jump_keeps_its_effect(jump: timedelta) -> None:
    steady = run_loop(MINUTE, 12, keep_alive_at=at(1))
    jumped = run_loop(MINUTE, 12, keep_alive_at=at(1), wall_jumps=[(at(2), jump)])
    assert steady.stopped_at == at(5)
    assert outcome(jumped) == outcome(steady)


@settings(PROPERTY_SETTINGS)
@given(
    jumps=st.lists(
        st.tuples(
            # The minute of the jump: after the first pass (a jump before the loop ever
            # looked is the wall time it finds); its size: a step, not noise.
            st.integers(min_value=11, max_value=11 * 60),
            st.integers(min_value=-100 * 3600, max_value=100 * 3600).filter(
                lambda seconds: abs(seconds) >= CLOCK_STEP.total_seconds()
            ),
        ),
        max_size=4,
    ),
    busy_until=st.floats(min_value=0, max_value=8),
    restart=st.integers(min_value=1, max_value=12 * 60),
)
def test_no_sequence_of_jumps_changes_what_the_loop_does(
    jumps: list[tuple[int, int]], busy_until: float, restart: int
) -> None:
    interval = 10 * MINUTE
    limits = LimitsForContainer(idle_timeout_hours=2, max_runtime_hours=9)
    busy = [(0.0, busy_until)]
    wall_jumps = [(START + m * MINUTE, timedelta(seconds=s)) for m, s in jumps]
    steady = run_loop(interval, 12, busy=busy, limits=limits)
    jumped = simulate_with(interval, busy, limits, wall_jumps, restart_at=START + restart * MINUTE)
    assert outcome(jumped) == outcome(steady)


def simulate_with(
    interval: timedelta,
    busy: Sequence[tuple[float, float]],
    limits: LimitsForContainer,
    wall_jumps: Sequence[tuple[datetime, timedelta]],
    restart_at: datetime,
) -> Loop:
    """``run_loop`` with a restart of the daemon (the clock through its row) at ``restart_at``."""
    cpu = 0.0

    def sample_at(now: datetime) -> Sample:
        nonlocal cpu
        cpu += busy_seconds(busy, now - interval, now)
        return Sample(now, cpu_seconds=cpu)

    return simulate(
        START,
        interval,
        at(12),
        sample_at,
        policy=POLICY,
        limits=limits,
        restart_at=restart_at,
        wall_jumps=wall_jumps,
    )


def test_a_jump_is_wall_time_minus_monotonic_time_within_one_boot() -> None:
    before = PassMark(START, 100.0, "boot-1")
    assert clock_jump(None, before) == timedelta(0)
    assert clock_jump(before, PassMark(at(49), 160.0, "boot-1")) == timedelta(
        hours=49, seconds=-60
    )
    assert clock_jump(before, PassMark(START, 3700.0, "boot-1")) == -timedelta(hours=1)
    # Reading two clocks one after the other is no jump; another or an unknown boot, no
    # comparison.
    noise = CLOCK_STEP - timedelta(milliseconds=1)
    assert clock_jump(before, PassMark(START + MINUTE + noise, 160.0, "boot-1")) == timedelta(0)
    assert clock_jump(before, PassMark(at(49), 160.0, "boot-2")) == timedelta(0)
    assert clock_jump(PassMark(START, 100.0, ""), PassMark(at(49), 160.0, "")) == timedelta(0)


def test_rebased_moves_the_timeline_and_keeps_what_was_read() -> None:
    clock = observe(
        None,
        Sample(at(1), cpu_seconds=5.0, keep_alive_at=at(0.5)),
        running_since=START,
        policy=POLICY,
    )
    moved = rebased(clock, timedelta(hours=49))
    assert moved.run_started_at == at(49) and moved.active_at == clock.active_at + timedelta(
        hours=49
    )
    assert (moved.sample_at, moved.sample_keep_alive_at) == (at(50), at(49.5))
    assert (moved.docker_started_at, moved.keep_alive_file_at) == (START, at(0.5))
    # The same run goes on: Docker's StartedAt is recognised, the touch read again is known.
    later = observe(
        moved,
        Sample(at(50) + MINUTE, cpu_seconds=5.0, keep_alive_at=at(0.5)),
        running_since=START,
        policy=POLICY,
    )
    assert later.run_started_at == at(49) and later.sample_keep_alive_at == at(49.5)
    assert later.runtime(at(51)) == timedelta(hours=2)


def test_a_run_first_seen_after_the_wall_clock_went_back_counts_from_that_sample() -> None:
    # Docker noted the start at 10:00; the first sample reads 09:00 (the clock went back an
    # hour): the run counts from the sample, never from a start ahead of the clock.
    clock = observe(None, Sample(START, cpu_seconds=1.0), running_since=at(1), policy=POLICY)
    assert (clock.run_started_at, clock.active_at, clock.sample_at) == (START, START, START)
    assert clock.docker_started_at == at(1)
    later = observe(clock, Sample(at(0.5), cpu_seconds=1.0), running_since=at(1), policy=POLICY)
    assert later.active_at == START and later.runtime(at(0.5)) == timedelta(hours=0.5)


def test_a_stop_noted_before_the_last_sample_counts_at_the_sample() -> None:
    # Docker's FinishedAt predates a forward jump the clock was moved by.
    clock = observe(None, Sample(at(2), cpu_seconds=1.0), running_since=START, policy=POLICY)
    ended = stopped(rebased(clock, timedelta(hours=49)), at(2.5))
    assert ended.runtime(at(100)) == timedelta(hours=2)
    assert ended.ended_at == at(51)


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------

SIGNALS: tuple[Signal, ...] = ("cpu", "network", "gpu", "sessions")


def sample_after(previous: Sample, minutes: float, active: Signal | None) -> Sample:
    """The next sample, ``minutes`` later, with only ``active`` above its threshold."""
    seconds = minutes * 60
    return Sample(
        at=previous.at + timedelta(minutes=minutes),
        cpu_seconds=previous.cpu_seconds + (seconds * 0.5 if active == "cpu" else seconds * 0.01),
        network_bytes=(previous.network_bytes or 0)
        + int(seconds * (1e6 if active == "network" else 100)),
        gpu_utilization_percent=60.0 if active == "gpu" else 1.0,
        gpu_memory_used_mib=20_000,  # a model held in memory: not activity by itself
        gpu_processes=1,
        sessions=1 if active == "sessions" else 0,
    )


@settings(PROPERTY_SETTINGS)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from((*SIGNALS, None)), st.floats(min_value=0.5, max_value=120)),
        min_size=1,
        max_size=40,
    )
)
def test_any_single_active_signal_resets_idleness(
    steps: list[tuple[Signal | None, float]],
) -> None:
    first = Sample(START, cpu_seconds=0.0, network_bytes=0, gpu_utilization_percent=0.0)
    clock = observe(None, first, running_since=START - MINUTE / 2, policy=POLICY)
    previous = first
    for signal, minutes in steps:
        current = sample_after(previous, minutes, signal)
        seen = activity(previous, current, POLICY)
        assert seen.active_signals == (() if signal is None else (signal,))
        before = clock
        clock = observe(clock, current, running_since=START - MINUTE / 2, policy=POLICY)
        if signal is None:
            assert clock.active_at == before.active_at
        else:
            assert clock.active_at == current.at
            now = decide(clock, current.at, POLICY, LIMITS, demand=False, exemption=None)
            assert now.idle_for == timedelta(0)
            assert clock.idle_warning_level == 0
        previous = current


def test_rates_and_unknown_signals() -> None:
    first = Sample(START, cpu_seconds=100.0, network_bytes=5_000)
    assert activity(None, first, POLICY).unknown_signals == ("cpu", "network", "gpu")
    later = Sample(START + MINUTE, cpu_seconds=103.0, network_bytes=5_000 + 60 * 10240)
    seen = activity(first, later, POLICY)
    assert seen.reading("cpu").value == pytest.approx(5.0)  # 3 CPU-seconds in 60 s: 5 %
    assert seen.active_signals == ("cpu", "network")  # both exactly at their threshold
    assert seen.reading("cpu").describe() == "cpu 5 % of one CPU (active at >= 5)"
    restarted = Sample(START + 2 * MINUTE, cpu_seconds=1.0, network_bytes=None)
    seen = activity(later, restarted, POLICY)
    assert not seen.active
    assert seen.reading("cpu").note == "the counter went backwards (restarted)"
    assert seen.reading("network").note == "counter not available"
    same_time = activity(later, replace(later, cpu_seconds=200.0), POLICY)
    assert same_time.reading("cpu").note == "no time elapsed" and not same_time.active


@pytest.mark.parametrize(
    ("utilization", "memory", "processes", "active", "unit"),
    [
        (50.0, 100, 1, True, "%"),  # whole GPU busy
        (0.0, 30_000, 1, False, "%"),  # whole GPU holding a model, computing nothing
        (None, 30_000, 2, None, "MiB"),  # MIG with processes: cannot tell, others decide
        (None, 30_000, 0, False, "MiB"),  # MIG, no compute process
        (None, 100, 1, False, "MiB"),  # MIG, a process holding next to nothing
        (None, None, None, None, "MiB"),  # no GPU figures at all
    ],
)
def test_the_gpu_signal(
    utilization: float | None,
    memory: int | None,
    processes: int | None,
    active: bool | None,
    unit: str,
) -> None:
    current = Sample(
        START,
        cpu_seconds=0.0,
        gpu_utilization_percent=utilization,
        gpu_memory_used_mib=memory,
        gpu_processes=processes,
    )
    reading = activity(None, current, POLICY).reading("gpu")
    assert (reading.active, reading.unit) == (active, unit)


def test_a_mig_container_is_idle_when_its_cpu_is() -> None:
    started = START - MINUTE / 2
    mig = Sample(START, cpu_seconds=0.0, gpu_memory_used_mib=4000, gpu_processes=1)
    clock = observe(None, mig, running_since=started, policy=POLICY)
    later = replace(mig, at=START + timedelta(minutes=5), cpu_seconds=1.0)  # 0.3 %
    seen = activity(mig, later, POLICY)
    assert not seen.active and seen.unknown_signals == ("network", "gpu")
    assert observe(clock, later, running_since=started, policy=POLICY).active_at == started


def test_a_run_first_seen_long_after_its_start_counts_as_active_then() -> None:
    # Three days after the start, 20 CPU-minutes in all: idle on average, but ds01 did not
    # see when; it counts from the first sample, not from the start.
    first = Sample(at(72), cpu_seconds=1200.0)
    clock = observe(None, first, running_since=START, policy=POLICY)
    assert clock.active_at == at(72)
    idle_only = LimitsForContainer(idle_timeout_hours=4, max_runtime_hours=None)
    decision = decide(clock, at(72), POLICY, idle_only, demand=False, exemption=None)
    assert decision.actions == () and decision.stop_at == at(76)
    # Within two loop intervals, the first sample is measured against the start.
    early = observe(None, Sample(at(1 / 30), cpu_seconds=1.0), running_since=START, policy=POLICY)
    assert early.active_at == START


def test_stale_samples_are_ignored() -> None:
    first = Sample(START + MINUTE, cpu_seconds=10.0)
    clock = observe(None, first, running_since=START, policy=POLICY)
    for stale in (first, replace(first, at=START), replace(first, at=START - MINUTE)):
        assert observe(clock, stale, running_since=START, policy=POLICY) == clock


# --------------------------------------------------------------------------------------------
# Keep-alive, demand, exemptions
# --------------------------------------------------------------------------------------------


def test_a_keep_alive_touch_counts_as_activity_at_its_time() -> None:
    loop = run_loop(MINUTE, 12, keep_alive_at=at(1))
    assert loop.stopped_at == at(5)
    assert [when for when, _ in loop.warnings] == [at(1 + 3.2), at(1 + 3.8)]


def test_a_keep_alive_touch_defers_the_stop_by_at_most_its_maximum() -> None:
    two_days = LimitsForContainer(idle_timeout_hours=48, max_runtime_hours=None)
    loop = run_loop(timedelta(minutes=6), 100, keep_alive_at=at(30), limits=two_days)
    # Not 30 + 48: the stop due at 48 h is deferred by 24 h at most.
    assert loop.stopped_at == at(48 + 24)
    assert [when for when, _ in loop.warnings] == [at(72 - 0.2 * 48), at(72 - 0.05 * 48)]


def test_a_keep_alive_file_dated_in_the_future_or_disabled_is_ignored() -> None:
    assert run_loop(MINUTE, 12, keep_alive_at=at(1000)).stopped_at == at(4)
    ignored = LifecyclePolicy(keep_alive_max_hours=0)
    assert run_loop(MINUTE, 12, keep_alive_at=at(1), policy=ignored).stopped_at == at(4)


@settings(PROPERTY_SETTINGS)
@given(
    touched=st.floats(min_value=-30, max_value=60),
    timeout=st.floats(min_value=0.5, max_value=72),
    now=st.floats(min_value=0, max_value=60),
)
def test_the_keep_alive_bound_holds_for_any_touch(
    touched: float, timeout: float, now: float
) -> None:
    clock = ContainerClock(run_started_at=START, active_at=START, sample_keep_alive_at=at(touched))
    limits = LimitsForContainer(idle_timeout_hours=timeout, max_runtime_hours=None)
    decision = decide(clock, at(now), POLICY, limits, demand=False, exemption=None)
    assert decision.idle_stop_at is not None
    without = max(at(timeout), at(0.5))
    assert decision.idle_stop_at >= without - MINUTE / 60_000
    if at(touched) <= at(now):  # a touch in the future does nothing
        bound = without + timedelta(hours=POLICY.keep_alive_max_hours or 0)
        assert decision.idle_stop_at <= bound + MINUTE / 60_000
    else:
        assert decision.idle_stop_at == without


def test_the_idle_timeout_shrinks_while_others_wait() -> None:
    loop = run_loop(MINUTE, 12, demand=True)
    assert loop.stopped_at == at(2)
    assert loop.last is not None
    assert loop.last.effective_idle_timeout == timedelta(hours=2)
    assert loop.stop is not None
    assert (
        loop.stop[1].reason
        == "Idle for 2 h 00 min, the limit is 2 h 00 min while others wait for GPUs."
    )
    clock = ContainerClock(run_started_at=START, active_at=START)
    quiet = decide(clock, at(3), POLICY, LIMITS, demand=False, exemption=None)
    busy = decide(clock, at(3), POLICY, LIMITS, demand=True, exemption=None)
    assert quiet.idle_stop_at == at(4) and not any(isinstance(a, Stop) for a in quiet.actions)
    assert busy.idle_stop_at == at(2) and busy.actions == (
        Stop("idle", "Idle for 3 h 00 min, the limit is 2 h 00 min while others wait for GPUs."),
    )
    no_shrink = LifecyclePolicy(demand_idle_factor=1)
    assert run_loop(MINUTE, 12, demand=True, policy=no_shrink).stopped_at == at(4)


def test_an_exemption_suppresses_every_action_and_says_why() -> None:
    clock = ContainerClock(run_started_at=START, active_at=START)
    exemption = Exemption("alice", None, at(10), "thesis deadline")
    decision = decide(clock, at(6), POLICY, LIMITS, demand=True, exemption=exemption)
    assert (decision.actions, decision.stop_at, decision.exemption) == ((), None, exemption)
    assert decision.idle_for == timedelta(hours=6)
    assert decision.reason == (
        "Idle 6 h 00 min of 2 h 00 min (shortened while others wait for GPUs); "
        "ran 6 h 00 min of 48 h 00 min; "
        "exempt from idle and runtime stops until 2026-03-02T19:00+00:00: thesis deadline."
    )
    expired = decide(clock, at(11), POLICY, LIMITS, demand=False, exemption=exemption)
    assert expired.actions and expired.exemption is None


def test_the_longest_exemption_covering_a_container_applies() -> None:
    everything = Exemption("alice", None, at(5), "all")
    thesis = Exemption("alice", "thesis", at(8), "one")
    forever = Exemption("bob", None, None, "bob")
    exemptions = [everything, thesis, forever]
    assert covering_exemption(exemptions, "alice", "thesis", at(1)) == thesis
    assert covering_exemption(exemptions, "alice", "notebook", at(1)) == everything
    assert covering_exemption(exemptions, "alice", "notebook", at(6)) is None
    assert covering_exemption(exemptions, "bob", "x", at(10_000)) == forever


def test_the_runtime_stop_is_the_runs_limit_unless_an_exemption_covers_it() -> None:
    clock = ContainerClock(run_started_at=START, active_at=START)
    thesis = [Exemption("alice", "thesis", at(5), "deadline")]
    assert runtime_stop(clock, 48, 2, thesis, "alice", "notebook", at(1)) == at(2)
    assert runtime_stop(clock, 48, None, thesis, "alice", "notebook", at(1)) == at(48)
    assert runtime_stop(clock, 48, 2, thesis, "alice", "thesis", at(1)) is None
    assert runtime_stop(clock, 48, 2, thesis, "alice", "thesis", at(6)) == at(2)
    assert runtime_stop(None, 48, 2, [], "alice", "notebook", at(1)) is None
    assert runtime_stop(clock, None, None, [], "alice", "notebook", at(1)) is None
    assert runtime_stop(stopped(clock, at(3)), 48, 2, [], "alice", "notebook", at(4)) is None


# --------------------------------------------------------------------------------------------
# Runtime across runs, and the clock's persistence
# --------------------------------------------------------------------------------------------


@settings(PROPERTY_SETTINGS)
@given(
    runs=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=600),  # minutes stopped before the run
            st.integers(min_value=1, max_value=600),  # minutes it runs
            st.booleans(),  # whether the loop saw it stop (else it sees only the new start)
            st.booleans(),  # whether the daemon restarts (clock re-read) during the run
        ),
        min_size=1,
        max_size=8,
    )
)
def test_runtime_across_any_start_stop_sequence_is_the_sum_of_the_runs(
    runs: list[tuple[int, int, bool, bool]],
) -> None:
    clock: ContainerClock | None = None
    moment, expected = START, 0.0
    for gap, length, seen_stopping, restarts in runs:
        run_start = moment + timedelta(minutes=gap)
        run_end = run_start + timedelta(minutes=length)
        now, cpu = run_start, 0.0
        while now < run_end:  # a sample every 13 minutes, the last one at the end of the run
            now = min(now + 13 * MINUTE, run_end)
            cpu += 30.0
            sample = Sample(now, cpu_seconds=cpu)
            clock = observe(clock, sample, running_since=run_start, policy=POLICY)
            if restarts:
                clock = ContainerClock.from_row(clock.to_row())
        assert clock is not None
        assert clock.runtime(run_end) == timedelta(seconds=expected) + (run_end - run_start)
        if seen_stopping:
            clock = stopped(clock, run_end)
        expected += length * 60
        moment = run_end
    assert clock is not None
    if clock.running:
        clock = stopped(clock, moment)
    assert clock.runtime(moment + timedelta(hours=5)).total_seconds() == expected


def test_a_new_run_restarts_idle_time_and_keeps_the_runtime() -> None:
    loop = run_loop(MINUTE, 3, busy=[(0, 3)])  # three busy hours, seen at every minute
    assert loop.clock is not None
    clock = stopped(loop.clock, at(3.5))  # stopped half an hour after the last sample
    restart = at(10)
    clock = observe(clock, Sample(restart, cpu_seconds=0.0), running_since=restart, policy=POLICY)
    assert (clock.run_started_at, clock.active_at) == (restart, restart)
    assert clock.runtime(restart + timedelta(hours=1)) == timedelta(hours=3.5 + 1)
    limits = LimitsForContainer(idle_timeout_hours=None, max_runtime_hours=5)
    decision = decide(clock, restart, POLICY, limits, demand=False, exemption=None)
    assert decision.runtime_stop_at == restart + timedelta(hours=1.5)
    # Past the limit, the next start is stopped at once.
    spent = replace(clock, runtime_seconds_before=6 * 3600.0)
    decision = decide(spent, restart, POLICY, limits, demand=False, exemption=None)
    assert decision.runtime_stop_at == restart
    assert [type(a) for a in decision.actions] == [Stop]


def test_a_stopped_container_gets_no_decision() -> None:
    clock = stopped(ContainerClock(run_started_at=START, active_at=START), at(2))
    decision = decide(clock, at(100), POLICY, LIMITS, demand=True, exemption=None)
    assert (decision.actions, decision.stop_at, decision.runtime) == ((), None, timedelta(hours=2))
    assert decision.reason == "Not running (ran 2 h 00 min in all)."
    assert stopped(clock, at(50)) == clock


def test_the_clock_round_trips_through_a_flat_row() -> None:
    clock = ContainerClock(
        run_started_at=START,
        active_at=at(1),
        runtime_seconds_before=12.5,
        idle_warning_level=1,
        runtime_warning_level=2,
        sample_at=at(2),
        sample_cpu_seconds=3.5,
        sample_network_bytes=1 << 40,
        sample_gpu_utilization_percent=None,
        sample_gpu_memory_used_mib=4000,
        sample_gpu_processes=2,
        sample_sessions=1,
        sample_keep_alive_at=at(-1),
    )
    row = clock.to_row()
    assert tuple(row) == CLOCK_COLUMNS
    assert all(isinstance(v, (str, int, float)) or v is None for v in row.values())
    assert row["active_at"] == "2026-03-02T10:00:00+00:00"
    assert ContainerClock.from_row(row) == clock
    assert ContainerClock.from_row({"run_started_at": None, "active_at": row["active_at"]}) == (
        ContainerClock(run_started_at=None, active_at=at(1))
    )


def test_warned_records_the_level() -> None:
    clock = ContainerClock(run_started_at=START, active_at=START)
    clock = warned(clock, Warn("runtime", 2, 0.9, at(48)))
    clock = warned(clock, Warn("runtime", 1, 0.75, at(48)))
    assert (clock.runtime_warning_level, clock.idle_warning_level) == (2, 0)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout_hours must be positive"):
        LimitsForContainer(idle_timeout_hours=0, max_runtime_hours=None)


# --------------------------------------------------------------------------------------------
# Cleanup
# --------------------------------------------------------------------------------------------


def test_cleanup_of_unstarted_and_stopped_containers() -> None:
    assert not cleanup_created(START, START + timedelta(minutes=29), POLICY)
    assert cleanup_created(START, START + timedelta(minutes=30), POLICY)
    assert stopped_removal_at(START, POLICY) == at(168)
    assert not cleanup_stopped(START, at(167.9), POLICY)
    assert cleanup_stopped(START, at(168), POLICY)
    keep = LifecyclePolicy(container_hold_after_stop_hours=None)
    assert stopped_removal_at(START, keep) is None
    assert not cleanup_stopped(START, at(1e5), keep)


# --------------------------------------------------------------------------------------------
# A runtime declared for one container (container-create --runtime-hours)
# --------------------------------------------------------------------------------------------


def test_a_declared_runtime_is_the_containers_limit_and_never_more_than_the_max() -> None:
    assert runtime_limit_hours(72.0, None) == 72.0
    assert runtime_limit_hours(72.0, 4.0) == 4.0
    assert runtime_limit_hours(None, 4.0) == 4.0
    assert runtime_limit_hours(None, None) is None
    assert runtime_limit_hours(3.0, 4.0) == 3.0  # the max lowered since: the max wins
    assert declared_runtime(72.0, 4.0) == 4.0
    assert declared_runtime(None, 400.0) == 400.0
    assert declared_runtime(72.0, None) is None
    with pytest.raises(QuotaExceeded) as refused:
        declared_runtime(72.0, 80.0)
    assert refused.value.exit_code == ExitCode.QUOTA
    assert "max_runtime_hours (72 hours)" in refused.value.message


def test_a_declared_runtime_stops_a_busy_container_at_it() -> None:
    limits = LimitsForContainer(idle_timeout_hours=None, max_runtime_hours=72)
    declared = replace(limits, max_runtime_hours=runtime_limit_hours(72, 2))
    loop = run_loop(MINUTE, 6, busy=[(0, 6)], limits=declared)
    assert loop.stop is not None and loop.stop[0] == at(2)
    assert run_loop(MINUTE, 6, busy=[(0, 6)], limits=limits).stop is None


def test_the_runtime_label_round_trips_and_reads_junk_as_none() -> None:
    assert L.runtime_hours_of({L.RUNTIME_HOURS: "4"}) == 4.0
    for junk in ("", "x", "-1", "0", "inf", "nan"):
        assert L.runtime_hours_of({L.RUNTIME_HOURS: junk}) is None
    assert L.runtime_hours_of({}) is None
