"""The queue's pure core: decayed usage, ordering, and one scheduling pass (plan)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ds01.config.gpu_config import GpuConfig, mig_profile_memory_mib, mig_profile_slices
from ds01.config.scheduler import SchedulerConfig
from ds01.core.allocation import (
    AllocationState,
    GpuRequest,
    Holding,
    allocate,
    free_devices,
    least_gpu_equivalents,
)
from ds01.core.scheduler import (
    STARTING_STATUSES,
    PendingRequest,
    Plan,
    Reservation,
    UsageInterval,
    UsageTotals,
    decayed_usage,
    order,
    plan,
    score,
)
from ds01.errors import NoCapacity, QuotaExceeded
from ds01.gpu.simulated import SimulatedBackend
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.quota import GpuQuota

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
A100 = "NVIDIA A100-SXM4-40GB"
FAIR = SchedulerConfig()
FCFS = SchedulerConfig.first_come_first_served()
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def hours_ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


def later(hours: float) -> datetime:
    return NOW + timedelta(hours=hours)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def gpu_uuid(index: int) -> str:
    return f"GPU-{index:08d}-0000-0000-0000-000000000000"


def whole(index: int) -> Device:
    return Device(gpu_uuid(index), "gpu", index, gpu_uuid(index), A100, 40960)


def mig_instances(index: int, profiles: Sequence[str]) -> list[Device]:
    return [
        Device(
            uuid=f"MIG-{index:08d}-{n:04d}-0000-0000-000000000000",
            kind="mig",
            gpu_index=index,
            gpu_uuid=gpu_uuid(index),
            model=A100,
            memory_mib=mig_profile_memory_mib(profile),
            profile=profile,
            slices=mig_profile_slices(profile),
            instance_id=n + 1,
        )
        for n, profile in enumerate(profiles)
    ]


def make_inventory(
    whole_gpus: int, layouts: Sequence[Sequence[str]] = (), reserved: Sequence[str] = ()
) -> Inventory:
    gpus = [PhysicalGpu(i, gpu_uuid(i), A100, 40960) for i in range(whole_gpus)]
    devices = [whole(i) for i in range(whole_gpus)]
    for offset, layout in enumerate(layouts):
        index = whole_gpus + offset
        gpus.append(PhysicalGpu(index, gpu_uuid(index), A100, 40960, mig_enabled=True))
        devices.extend(mig_instances(index, layout))
    return Inventory("simulated", tuple(gpus), tuple(devices), reserved=frozenset(reserved))


@pytest.fixture
def default_inventory() -> Inventory:
    """ds01's embedded default: GPUs 0-2 whole, GPU 3 split 3g.20gb + 2g.10gb + 2x 1g.5gb."""
    return SimulatedBackend(GpuConfig()).inventory()


def pending(
    id: str,
    user: str = "alice",
    *,
    group: str = "lab",
    gpus: int = 0,
    mig: tuple[str, ...] = (),
    priority: int = 50,
    waited_hours: float = 0.0,
    runtime_hours: float | None = None,
    quota: GpuQuota | None = None,
    containers: tuple[str, ...] = (),
) -> PendingRequest:
    return PendingRequest(
        id=id,
        user=user,
        group=group,
        request=GpuRequest(whole_gpus=gpus, mig_profiles=mig),
        quota=quota or GpuQuota(),
        priority=priority,
        submitted_at=hours_ago(waited_hours),
        expected_runtime_hours=runtime_hours,
        user_containers=containers,
    )


def holding(container: str, user: str, devices: Sequence[Device]) -> Holding:
    return Holding(
        container=container,
        name=container,
        user=user,
        devices=tuple(d.uuid for d in devices),
        gpu_equivalents=sum((d.gpu_equivalents for d in devices), Fraction(0)),
    )


def positions(ranked: Sequence[Any]) -> dict[str, int]:
    return {entry.request.id: entry.position for entry in ranked}


def statuses(result: Plan) -> dict[str, str]:
    return {entry.request.id: entry.status for entry in result.ranked}


# --------------------------------------------------------------------------------------------
# Decayed usage
# --------------------------------------------------------------------------------------------


def test_decayed_usage_is_the_exact_integral() -> None:
    # One GPU for the last 10 hours, half-life 5 h: integral of 2^(-a/5) over a in [0, 10].
    interval = UsageInterval("alice", "lab", Fraction(1), hours_ago(10), NOW)
    exact = 5 / math.log(2) * (1 - 2**-2)
    steps = 100_000
    numeric = sum(2 ** (-((i + 0.5) * 10 / steps) / 5) * 10 / steps for i in range(steps))
    assert interval.decayed_gpu_hours(NOW, 5) == pytest.approx(exact, rel=1e-12)
    assert exact == pytest.approx(numeric, rel=1e-9)


def test_running_usage_counts_up_to_now_and_future_usage_not_at_all() -> None:
    running = UsageInterval("alice", "lab", Fraction(3, 7), hours_ago(2))
    closed = UsageInterval("alice", "lab", Fraction(3, 7), hours_ago(2), NOW)
    assert running.decayed_gpu_hours(NOW, 168) == closed.decayed_gpu_hours(NOW, 168)
    assert UsageInterval("bob", "lab", Fraction(1), later(1)).decayed_gpu_hours(NOW, 1) == 0
    beyond = UsageInterval("bob", "lab", Fraction(1), hours_ago(1), later(5))
    assert beyond.decayed_gpu_hours(NOW, 10) == UsageInterval(
        "bob", "lab", Fraction(1), hours_ago(1), NOW
    ).decayed_gpu_hours(NOW, 10)


def test_decayed_usage_groups_and_counts_users() -> None:
    totals = decayed_usage(
        [
            UsageInterval("alice", "phd", Fraction(1), hours_ago(3), hours_ago(1)),
            UsageInterval("bob", "phd", Fraction(2), hours_ago(3), hours_ago(1)),
            UsageInterval("carol", "msc", Fraction(1), hours_ago(3), hours_ago(1)),
            UsageInterval("dave", "msc", Fraction(0), hours_ago(3), hours_ago(1)),
        ],
        NOW,
        half_life_hours=1e9,  # no decay to speak of
    )
    assert totals.by_user == pytest.approx({"alice": 2.0, "bob": 4.0, "carol": 2.0})
    assert totals.by_group == pytest.approx({"phd": 6.0, "msc": 2.0})
    assert totals.users_by_group == {"phd": 2, "msc": 1}


def test_invalid_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        UsageInterval("alice", "lab", Fraction(1), NOW, hours_ago(1))
    with pytest.raises(ValueError, match="negative"):
        UsageInterval("alice", "lab", Fraction(-1), hours_ago(1))
    with pytest.raises(ValueError, match="half_life_hours"):
        decayed_usage([], NOW, 0)


@st.composite
def closed_intervals(draw: st.DrawFn) -> list[UsageInterval]:
    """Intervals that all end at or before NOW."""
    intervals = []
    for _ in range(draw(st.integers(0, 8))):
        start = draw(st.floats(0.1, 500))
        length = draw(st.floats(0.01, 1)) * start
        user = draw(st.integers(0, 3))
        intervals.append(
            UsageInterval(
                f"u{user}",
                f"g{user % 2}",
                draw(st.sampled_from([Fraction(1), Fraction(2), Fraction(3, 7)])),
                hours_ago(start),
                hours_ago(start - length),
            )
        )
    return intervals


@PROPERTY_SETTINGS
@given(intervals=closed_intervals(), half_life=st.floats(1, 1000))
def test_usage_halves_after_one_half_life(intervals: list[UsageInterval], half_life: float) -> None:
    before = decayed_usage(intervals, NOW, half_life)
    after = decayed_usage(intervals, later(half_life), half_life)
    assert set(after.by_user) == set(before.by_user)
    for user, amount in before.by_user.items():
        assert after.by_user[user] == pytest.approx(amount / 2, rel=1e-9)
    for group, amount in before.by_group.items():
        assert after.by_group[group] == pytest.approx(amount / 2, rel=1e-9)


@PROPERTY_SETTINGS
@given(
    start=st.floats(0.01, 1000),
    length=st.floats(0.001, 1),
    cut=st.floats(0.001, 0.999),
    half_life=st.floats(0.5, 1000),
    eq=st.sampled_from([Fraction(1), Fraction(3, 7), Fraction(4)]),
)
def test_usage_is_additive_over_split_intervals(
    start: float, length: float, cut: float, half_life: float, eq: Fraction
) -> None:
    begin, end = hours_ago(start), hours_ago(start * (1 - length))
    middle = begin + (end - begin) * cut
    whole_interval = UsageInterval("alice", "lab", eq, begin, end)
    halves = [
        UsageInterval("alice", "lab", eq, begin, middle),
        UsageInterval("alice", "lab", eq, middle, end),
    ]
    assert decayed_usage(halves, NOW, half_life).by_user.get("alice", 0.0) == pytest.approx(
        whole_interval.decayed_gpu_hours(NOW, half_life), rel=1e-9, abs=1e-300
    )


def test_fairshare_factor() -> None:
    nobody = UsageTotals()
    assert nobody.fairshare_factor("alice", "lab") == 1.0
    totals = UsageTotals(
        by_user={"alice": 10.0, "bob": 30.0},
        by_group={"lab": 40.0},
        users_by_group={"lab": 2},
    )
    # mean user 20: alice 0.5, bob 1.5; the group uses 20 per member: 1.0.
    assert totals.fairshare_factor("alice", "lab") == pytest.approx(2**-0.75)
    assert totals.fairshare_factor("bob", "lab") == pytest.approx(2**-1.25)
    assert totals.fairshare_factor("carol", "lab") == pytest.approx(2**-0.5)
    assert totals.fairshare_factor("carol", "other") == 1.0


# --------------------------------------------------------------------------------------------
# Score and order
# --------------------------------------------------------------------------------------------


def test_score_parts_follow_the_documented_formula() -> None:
    policy = SchedulerConfig(priority_weight=2, fairshare_weight=3, age_weight_per_hour=0.5)
    usage = UsageTotals(by_user={"alice": 5.0}, by_group={"lab": 5.0}, users_by_group={"lab": 1})
    parts = score(pending("r", priority=80, waited_hours=4), usage, NOW, policy)
    assert parts.priority == pytest.approx(2 * 80 / 100)
    assert parts.fairshare_factor == pytest.approx(0.5)
    assert parts.fairshare == pytest.approx(1.5)
    assert (parts.waited_hours, parts.age) == (4.0, 2.0)
    assert parts.total == pytest.approx(1.6 + 1.5 + 2.0)
    future = score(pending("r", waited_hours=-1), usage, NOW, policy)
    assert future.waited_hours == 0 and future.age == 0


def test_ties_go_to_the_earlier_submission_then_the_smaller_id() -> None:
    queue = [
        pending("b", waited_hours=1),
        pending("c", waited_hours=2),
        pending("a", waited_hours=1),
    ]
    ranked = order(queue, UsageTotals(), NOW, SchedulerConfig(age_weight_per_hour=1e-12))
    assert [r.request.id for r in ranked] == ["c", "a", "b"]
    assert [r.position for r in ranked] == [1, 2, 3]


def test_fcfs_is_arrival_order_whatever_the_priority_and_usage() -> None:
    usage = UsageTotals(by_user={"hog": 1e6}, by_group={"lab": 1e6}, users_by_group={"lab": 1})
    queue = [
        pending("late-vip", "vip", priority=1000, waited_hours=1),
        pending("early-hog", "hog", priority=0, waited_hours=3),
        pending("middle", "bob", waited_hours=2),
    ]
    assert [r.request.id for r in order(queue, usage, NOW, FCFS)] == [
        "early-hog",
        "middle",
        "late-vip",
    ]


policies = st.builds(
    SchedulerConfig,
    priority_weight=st.floats(0, 10),
    fairshare_weight=st.floats(0, 10),
    age_weight_per_hour=st.floats(0.001, 10),
    usage_half_life_hours=st.floats(1, 1000),
)
others = st.lists(
    st.builds(
        lambda n, user, priority, waited: pending(
            f"other{n}", f"u{user}", group=f"g{user % 2}", priority=priority, waited_hours=waited
        ),
        n=st.integers(0, 10**6),
        user=st.integers(0, 4),
        priority=st.integers(0, 1000),
        waited=st.floats(0, 100),
    ),
    max_size=6,
    unique_by=lambda r: r.id,
)


@PROPERTY_SETTINGS
@given(
    policy=policies,
    background=closed_intervals(),
    shared=closed_intervals(),
    priorities=st.lists(st.integers(0, 1000), min_size=2, max_size=2, unique=True),
    waited=st.floats(0, 100),
    crowd=others,
)
def test_higher_priority_goes_first_at_equal_usage_and_age(
    policy: SchedulerConfig,
    background: list[UsageInterval],
    shared: list[UsageInterval],
    priorities: list[int],
    waited: float,
    crowd: list[PendingRequest],
) -> None:
    assume(policy.priority_weight > 0)
    high, low = max(priorities), min(priorities)
    # x and y have exactly the same recent usage, in the same group.
    usage = background + [
        replace(interval, user=user, group="same") for interval in shared for user in ("x", "y")
    ]
    totals = decayed_usage(usage, NOW, policy.usage_half_life_hours)
    queue = [
        *crowd,
        pending("low", "x", group="same", priority=low, waited_hours=waited),
        pending("high", "y", group="same", priority=high, waited_hours=waited),
    ]
    ranked = positions(order(queue, totals, NOW, policy))
    assert ranked["high"] < ranked["low"]


@PROPERTY_SETTINGS
@given(
    policy=policies,
    background=closed_intervals(),
    light_hours=st.floats(0, 50),
    extra_hours=st.floats(1, 50),
    ago=st.floats(0, 100),
    priority=st.integers(0, 1000),
    waited=st.floats(0, 100),
    crowd=others,
)
def test_a_heavy_recent_user_goes_behind_a_light_one_at_equal_priority_and_age(
    policy: SchedulerConfig,
    background: list[UsageInterval],
    light_hours: float,
    extra_hours: float,
    ago: float,
    priority: int,
    waited: float,
    crowd: list[PendingRequest],
) -> None:
    assume(policy.fairshare_weight > 0.01)
    start = hours_ago(ago + light_hours + extra_hours)
    usage = [
        *background,
        UsageInterval("light", "lab", Fraction(1), start, start + timedelta(hours=light_hours)),
        UsageInterval(
            "heavy", "lab", Fraction(1), start, start + timedelta(hours=light_hours + extra_hours)
        ),
    ]
    totals = decayed_usage(usage, NOW, policy.usage_half_life_hours)
    heavy = pending("heavy", "heavy", priority=priority, waited_hours=waited)
    light = pending("light", "light", priority=priority, waited_hours=waited)
    assert score(light, totals, NOW, policy).total >= score(heavy, totals, NOW, policy).total
    # Usage decayed to next to nothing can round to the same factor; otherwise it orders.
    difference = totals.relative_user_usage("heavy") - totals.relative_user_usage("light")
    assume(difference > 1e-9)
    ranked = positions(order([*crowd, heavy, light], totals, NOW, policy))
    assert ranked["light"] < ranked["heavy"]


@PROPERTY_SETTINGS
@given(
    policy=policies,
    usage=closed_intervals(),
    waited_past_horizon=st.floats(1 / 60, 1000),
    newcomers=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 1000), st.floats(0.001, 1)),
        min_size=1,
        max_size=8,
    ),
)
def test_waiting_long_enough_reaches_the_head_whatever_is_submitted_later(
    policy: SchedulerConfig,
    usage: list[UsageInterval],
    waited_past_horizon: float,
    newcomers: list[tuple[int, int, float]],
) -> None:
    """Once a request has waited longer than the overtaking horizon, nothing submitted
    after that can rank ahead of it, whatever its priority or its user's usage."""
    horizon = policy.overtaking_horizon_hours()
    # The old request has the worst priority and the heaviest user.
    usage = [*usage, UsageInterval("u0", "g0", Fraction(64), hours_ago(10), NOW)]
    totals = decayed_usage(usage, NOW, policy.usage_half_life_hours)
    old = pending("old", "u0", group="g0", priority=0, waited_hours=horizon + waited_past_horizon)
    queue = [old] + [
        # Submitted after the horizon had passed for the old request, and not after NOW.
        pending(
            f"new{n}",
            f"u{user}",
            group=f"g{user % 2}",
            priority=priority,
            waited_hours=waited_past_horizon * (1 - fraction),
        )
        for n, (user, priority, fraction) in enumerate(newcomers)
    ]
    assert order(queue, totals, NOW, policy)[0].request.id == "old"


def test_overtaking_horizon_at_the_defaults() -> None:
    assert FAIR.overtaking_horizon_hours() == pytest.approx((1000 / 100 + 1) / 0.1)


# --------------------------------------------------------------------------------------------
# plan(): examples on the default inventory
# --------------------------------------------------------------------------------------------


def test_everything_that_fits_starts_in_score_order(default_inventory: Inventory) -> None:
    queue = [
        pending("a", "alice", gpus=1, waited_hours=2),
        pending("b", "bob", mig=("3g.20gb",), waited_hours=1),
    ]
    result = plan(queue, default_inventory, AllocationState(), NOW, UsageTotals(), FAIR)
    assert [s.request.id for s in result.starts] == ["a", "b"]
    assert statuses(result) == {"a": "starting", "b": "starting"}
    assert result.reservation is None
    assert result.demand_gpu_equivalents == 0
    assert not result.waiting_for_devices
    assert result.entry("a").reason.startswith("Starts now on whole GPU 0")


def easy_setup(inventory: Inventory) -> tuple[AllocationState, dict[str, datetime | None]]:
    """GPUs 0 and 1 held: GPU 0 until in 2 hours, GPU 1 until in 5 hours."""
    gpus = [d for d in inventory.devices if d.kind == "gpu"]
    state = AllocationState((holding("x", "xavier", gpus[:1]), holding("y", "yann", gpus[1:2])))
    return state, {"x": later(2), "y": later(5)}


def test_the_head_reserves_what_it_needs_and_short_jobs_backfill(
    default_inventory: Inventory,
) -> None:
    state, ends = easy_setup(default_inventory)
    gpu = {d.gpu_index: d.uuid for d in default_inventory.devices if d.kind == "gpu"}
    queue = [
        pending("big", "alice", gpus=2, waited_hours=5, quota=GpuQuota(gpu_limit=Fraction(2))),
        pending("short", "bob", gpus=1, waited_hours=4, runtime_hours=1.5),
        pending("long", "carol", gpus=1, waited_hours=3, runtime_hours=3),
        pending("slice", "dave", mig=("1g.5gb",), waited_hours=2),
    ]
    result = plan(queue, default_inventory, state, NOW, UsageTotals(), FAIR, ends)
    assert statuses(result) == {
        "big": "head",
        "short": "backfilling",  # ends before GPU 0 frees up: it delays nobody
        "long": "capacity",  # GPU 2 is taken by then
        "slice": "backfilling",  # MIG instances are no use to the head
    }
    reservation = result.reservation
    assert reservation is not None
    assert reservation.request_id == "big"
    assert reservation.planned_devices == (gpu[0], gpu[2])
    assert reservation.devices == ()  # GPU 2 went to "short" until in 1.5 hours
    assert reservation.estimated_start == reservation.promised_start == later(2)
    assert result.starts[0].placement.uuids == (gpu[2],)
    assert result.demand_gpu_equivalents == 3
    assert result.waiting_for_devices


def test_a_job_that_would_outlast_the_head_estimate_must_wait(
    default_inventory: Inventory,
) -> None:
    state, ends = easy_setup(default_inventory)
    queue = [
        pending("big", "alice", gpus=2, waited_hours=5, quota=GpuQuota(gpu_limit=Fraction(2))),
        pending("long", "carol", gpus=1, waited_hours=3, runtime_hours=3),
        pending("unknown", "erin", gpus=1, waited_hours=2),
    ]
    result = plan(queue, default_inventory, state, NOW, UsageTotals(), FAIR, ends)
    assert statuses(result) == {
        "big": "head",
        "long": "reserved_for_head",
        "unknown": "reserved_for_head",
    }
    assert "promised to start at 2026-03-02T14:00+00:00" in result.entry("long").reason
    assert result.starts == ()
    assert result.reservation is not None
    assert len(result.reservation.devices) == 1  # GPU 2, free now, held for the head

    # An hour of allowed delay lets the 3-hour job start (it ends at +3 h <= +2 h + 1 h).
    lenient = plan(
        queue,
        default_inventory,
        state,
        NOW,
        UsageTotals(),
        FAIR.model_copy(update={"backfill_max_delay_minutes": 60.0}),
        ends,
    )
    assert statuses(lenient)["long"] == "backfilling"
    assert lenient.reservation is not None
    assert lenient.reservation.estimated_start == later(3)
    assert lenient.reservation.promised_start == later(2)

    # Without a bound even a job of unknown length may use reserved devices.
    unbounded = FAIR.model_copy(update={"backfill_max_delay_minutes": None})
    result = plan(queue[::2], default_inventory, state, NOW, UsageTotals(), unbounded, ends)
    assert statuses(result)["unknown"] == "backfilling"
    assert result.reservation is not None and result.reservation.estimated_start is None


def test_the_promise_is_kept_over_passes(default_inventory: Inventory) -> None:
    state, ends = easy_setup(default_inventory)
    queue = [pending("big", "alice", gpus=2, waited_hours=5, quota=GpuQuota(gpu_limit=Fraction(2)))]
    earlier = Reservation("big", (), (), later(1), later(1))
    result = plan(queue, default_inventory, state, NOW, UsageTotals(), FAIR, ends, earlier)
    assert result.reservation is not None
    assert result.reservation.estimated_start == later(2)
    assert result.reservation.promised_start == later(1)
    other_head = replace(earlier, request_id="someone-else")
    result = plan(queue, default_inventory, state, NOW, UsageTotals(), FAIR, ends, other_head)
    assert result.reservation is not None and result.reservation.promised_start == later(2)


def test_without_backfill_everyone_waits_behind_the_head(default_inventory: Inventory) -> None:
    state, ends = easy_setup(default_inventory)
    queue = [
        pending("big", "alice", gpus=2, waited_hours=5, quota=GpuQuota(gpu_limit=Fraction(2))),
        pending("slice", "dave", mig=("1g.5gb",), waited_hours=2),
        pending("greedy", "erin", gpus=2, waited_hours=1),  # over the builtin-like quota
    ]
    quota_one = GpuQuota(gpu_limit=Fraction(1))
    queue[2] = replace(queue[2], quota=quota_one)
    result = plan(queue, default_inventory, state, NOW, UsageTotals(), FCFS, ends)
    assert statuses(result) == {"big": "head", "slice": "behind_head", "greedy": "quota"}
    assert result.starts == ()
    assert result.waiting_for_devices


def test_quota_and_unsatisfiable_requests_do_not_block(default_inventory: Inventory) -> None:
    queue = [
        pending("over", "alice", gpus=2, waited_hours=9, quota=GpuQuota(gpu_limit=Fraction(1))),
        pending("huge", "bob", gpus=4, waited_hours=8),  # 3 whole GPUs on this server
        pending("ok", "carol", gpus=3, waited_hours=1),
    ]
    result = plan(queue, default_inventory, AllocationState(), NOW, UsageTotals(), FAIR)
    assert statuses(result) == {"over": "quota", "huge": "unsatisfiable", "ok": "starting"}
    assert result.entry("over").reason.startswith("GPU quota exceeded")
    assert result.reservation is None
    assert result.demand_gpu_equivalents == 6
    assert not result.waiting_for_devices  # over quota or too big: freeing GPUs helps neither


def test_quotas_count_the_starts_of_the_same_pass(default_inventory: Inventory) -> None:
    quota = GpuQuota(gpu_limit=Fraction(1), max_containers=2)
    queue = [
        pending("one", "alice", mig=("3g.20gb",), waited_hours=4, quota=quota),
        pending("two", "alice", mig=("2g.10gb",), waited_hours=3, quota=quota, containers=("nb",)),
        pending("three", "alice", mig=("1g.5gb",), waited_hours=2, quota=quota, containers=("nb",)),
        pending("four", "alice", gpus=1, waited_hours=1, quota=quota),
    ]
    result = plan(queue, default_inventory, AllocationState(), NOW, UsageTotals(), FAIR)
    # one: 3/7 in 1 container; two: 5/7, nb + one + two = 3 > 2 containers: refused;
    # three: nb + one + three = 3 > 2: refused; four: 3/7 + 1 > 1: refused.
    assert statuses(result) == {
        "one": "starting",
        "two": "quota",
        "three": "quota",
        "four": "quota",
    }
    assert "Container limit reached" in result.entry("two").reason


def test_the_heads_own_user_cannot_backfill_into_the_quota_it_needs(
    default_inventory: Inventory,
) -> None:
    state, ends = easy_setup(default_inventory)
    quota = GpuQuota(gpu_limit=Fraction(2))
    queue = [
        pending("big", "alice", gpus=2, waited_hours=5, quota=quota),
        pending("slice", "alice", mig=("1g.5gb",), waited_hours=2, quota=quota),
    ]
    result = plan(queue, default_inventory, state, NOW, UsageTotals(), FAIR, ends)
    assert statuses(result) == {"big": "head", "slice": "reserved_for_head"}
    assert "quota that big, first in line, needs" in result.entry("slice").reason


def test_admin_reserved_devices_are_never_handed_out() -> None:
    inventory = make_inventory(2, reserved=[gpu_uuid(0)])
    queue = [pending("a", "alice", gpus=1, waited_hours=2), pending("b", "bob", gpus=1)]
    result = plan(queue, inventory, AllocationState(), NOW, UsageTotals(), FAIR)
    assert [s.placement.uuids for s in result.starts] == [(gpu_uuid(1),)]
    assert statuses(result) == {"a": "starting", "b": "head"}


def test_duplicate_ids_are_refused(default_inventory: Inventory) -> None:
    with pytest.raises(ValueError, match="unique"):
        plan(
            [pending("a"), pending("a", "bob")],
            default_inventory,
            AllocationState(),
            NOW,
            UsageTotals(),
            FAIR,
        )


def test_pending_requests_are_validated() -> None:
    with pytest.raises(ValueError, match="priority"):
        pending("a", priority=1001)
    with pytest.raises(ValueError, match="expected_runtime_hours"):
        pending("a", runtime_hours=-1)


# --------------------------------------------------------------------------------------------
# plan(): properties over random servers, holdings and queues
# --------------------------------------------------------------------------------------------

PROFILES = ("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")
LAYOUTS = (
    ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"),
    ("1g.5gb",) * 7,
    ("4g.20gb", "3g.20gb"),
    ("7g.40gb",),
    ("2g.10gb", "2g.10gb", "3g.20gb"),
)
LIMITS = (None, Fraction(1), Fraction(2), Fraction(3, 7), Fraction(4))
RUNTIMES = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 12.0)
mostly = st.sampled_from((True, True, True, False))
# Unlimited users half the time, so that servers fill up before limits bite.
quotas = st.one_of(
    st.just(GpuQuota()),
    st.builds(
        GpuQuota,
        gpu_limit=st.sampled_from(LIMITS),
        max_gpus_per_container=st.sampled_from((None, Fraction(1), Fraction(2))),
        allow_full_gpu=mostly,
        allow_mig=mostly,
        max_containers=st.sampled_from((None, 1, 2, 3)),
    ),
)
gpu_requests = st.one_of(
    st.builds(GpuRequest, whole_gpus=st.sampled_from((1, 1, 2, 3))),
    st.builds(GpuRequest, mig_profiles=st.sampled_from(PROFILES[:3]).map(lambda p: (p,))),
    st.builds(GpuRequest, mig_profiles=st.sampled_from(PROFILES).map(lambda p: (p,))),
)
scenario_policies = st.sampled_from(
    [
        FAIR,
        FCFS,
        FAIR.model_copy(update={"backfill_max_delay_minutes": 90.0}),
        FAIR.model_copy(update={"backfill_max_delay_minutes": None}),
        SchedulerConfig(priority_weight=0, fairshare_weight=5, age_weight_per_hour=0.01),
    ]
)


@st.composite
def scenarios(draw: st.DrawFn, crowded: bool = False) -> dict[str, Any]:
    """Keyword arguments of plan(): a random server, holdings, queue and policy.

    ``crowded``: whole GPUs mostly held until known times, and a request for all of them
    at the front of the queue, so that there is a head and backfill has work to do.
    """
    if crowded:
        inventory = make_inventory(
            draw(st.integers(2, 6)), draw(st.sampled_from([(), LAYOUTS[:1]]))
        )
        holds, end_hours = mostly, st.integers(1, 12) | st.none()
    else:
        inventory = make_inventory(
            draw(st.integers(1, 4)), draw(st.lists(st.sampled_from(LAYOUTS), max_size=2))
        )
        reserved = draw(st.sets(st.sampled_from([d.uuid for d in inventory.devices]), max_size=1))
        inventory = replace(inventory, reserved=frozenset(reserved))
        holds, end_hours = st.booleans(), st.none() | st.integers(0, 12) | st.integers(4, 12)
    users = [f"u{i}" for i in range(draw(st.integers(1, 4)))]
    quota_of = {user: draw(quotas) for user in users}
    holdings = []
    for n, device in enumerate(free_devices(inventory, AllocationState())):
        if draw(holds):
            holdings.append(holding(f"c{n}", draw(st.sampled_from(users)), [device]))
    state = AllocationState(tuple(holdings))
    ends = {
        h.container: draw(end_hours.map(lambda h: None if h is None else later(h)))
        for h in state.holdings
    }
    queue = []
    for n in range(draw(st.integers(1, 7))):
        user = draw(st.sampled_from(users))
        request = draw(gpu_requests)
        priority = draw(st.sampled_from((0, 50, 80, 100)))
        if crowded and n == 0:  # an unlimited user asks for every whole GPU, first in line
            user, priority = "vip", 1000
            request = GpuRequest(whole_gpus=sum(1 for d in inventory.devices if d.kind == "gpu"))
        queue.append(
            PendingRequest(
                id=f"r{n}",
                user=user,
                group=f"g{n % 2}",
                request=request,
                quota=quota_of.get(user, GpuQuota()),
                priority=priority,
                submitted_at=hours_ago(draw(st.integers(0, 20))),
                expected_runtime_hours=draw(st.none() | st.sampled_from(RUNTIMES)),
                user_containers=tuple(h.container for h in state.of_user(user)),
            )
        )
    policy = draw(scenario_policies)
    usage = decayed_usage(draw(closed_intervals()), NOW, policy.usage_half_life_hours)
    return {
        "pending": queue,
        "inventory": inventory,
        "state": state,
        "now": NOW,
        "usage": usage,
        "policy": policy,
        "expected_ends": ends,
    }


def state_after(scenario: dict[str, Any], result: Plan) -> AllocationState:
    state: AllocationState = scenario["state"]
    for request, placement in result.starts:
        state = state.with_holding(
            Holding(
                request.id, request.id, request.user, placement.uuids, placement.gpu_equivalents
            )
        )
    return state


@PROPERTY_SETTINGS
@given(scenario=st.one_of(scenarios(), scenarios(crowded=True)))
def test_plan_never_gives_a_device_twice_and_respects_every_quota(
    scenario: dict[str, Any],
) -> None:
    result = plan(**scenario)
    inventory, state = scenario["inventory"], scenario["state"]
    free = {d.uuid for d in free_devices(inventory, state)}
    given_out = [uuid for start in result.starts for uuid in start.placement.uuids]
    assert len(given_out) == len(set(given_out)), "a device was given twice"
    assert set(given_out) <= free, "a held, reserved or unusable device was given"
    after = state_after(scenario, result)  # with_holding refuses a device held twice
    queue: list[PendingRequest] = scenario["pending"]
    for user in {r.user for r in queue}:
        quota = next(r.quota for r in queue if r.user == user)
        started = [s for s in result.starts if s.request.user == user]
        if quota.gpu_limit is not None and started:
            assert after.user_gpu_equivalents(user) <= quota.gpu_limit
        if quota.max_containers is not None and started:
            assert len(state.of_user(user)) + len(started) <= quota.max_containers
        for start in started:
            if quota.max_gpus_per_container is not None:
                assert start.placement.gpu_equivalents <= quota.max_gpus_per_container
    # The queue is complete, numbered, and its statuses agree with the starts.
    assert sorted(e.request.id for e in result.ranked) == sorted(r.id for r in queue)
    assert [e.position for e in result.ranked] == list(range(1, len(queue) + 1))
    assert [s.request.id for s in result.starts] == [
        e.request.id for e in result.ranked if e.status in STARTING_STATUSES
    ]
    waiting = [e.request.request for e in result.ranked if not e.starts]
    assert result.demand_gpu_equivalents == sum(
        (least_gpu_equivalents(r, inventory) for r in waiting), Fraction(0)
    )


@PROPERTY_SETTINGS
@given(scenario=st.one_of(scenarios(), scenarios(crowded=True)))
def test_quota_exceeded_requests_never_start_and_never_block(scenario: dict[str, Any]) -> None:
    result = plan(**scenario)
    started = {s.request.id for s in result.starts}
    for request in scenario["pending"]:
        try:
            allocate(
                request.request,
                request.user,
                request.quota,
                scenario["inventory"],
                scenario["state"],
                request.user_containers,
            )
        except QuotaExceeded:
            assert request.id not in started
        except NoCapacity:
            pass
    over_quota = {e.request.id for e in result.ranked if e.status == "quota"}
    rest = [r for r in scenario["pending"] if r.id not in over_quota]
    without = plan(**{**scenario, "pending": rest})
    assert without.starts == result.starts
    assert without.reservation == result.reservation


@PROPERTY_SETTINGS
@given(scenario=st.one_of(scenarios(), scenarios(crowded=True)))
def test_backfill_never_delays_the_head_beyond_the_bound(scenario: dict[str, Any]) -> None:
    result = plan(**scenario)
    reservation = result.reservation
    assume(reservation is not None)
    assert reservation is not None
    policy: SchedulerConfig = scenario["policy"]
    bound = policy.backfill_max_delay_minutes
    order_of = positions(result.ranked)
    head_position = order_of[reservation.request_id]
    # Requests ranked after the head get its devices only if they end in time (those
    # ranked before it started first: the head plans around them).
    for start in result.starts:
        if order_of[start.request.id] < head_position:
            continue
        if not set(start.placement.uuids) & set(reservation.planned_devices):
            continue
        if bound is not None:
            runtime = start.request.expected_runtime_hours
            assert runtime is not None and reservation.promised_start is not None
            deadline = reservation.promised_start + timedelta(minutes=bound)
            assert NOW + timedelta(hours=runtime) <= deadline
    # Planning the head again, with every start of the pass running, gives an estimate
    # within the bound of the one it was promised.
    if bound is None or reservation.promised_start is None:
        return
    head = next(r for r in scenario["pending"] if r.id == reservation.request_id)
    same_user = tuple(s.request.id for s in result.starts if s.request.user == head.user)
    head = replace(head, user_containers=(*head.user_containers, *same_user))
    ends = dict(scenario["expected_ends"])
    for request, _ in result.starts:
        runtime = request.expected_runtime_hours
        ends[request.id] = None if runtime is None else NOW + timedelta(hours=runtime)
    again = plan(
        **{
            **scenario,
            "pending": [head],
            "state": state_after(scenario, result),
            "expected_ends": ends,
        }
    )
    assert again.reservation is not None
    assert again.reservation.estimated_start is not None
    assert again.reservation.estimated_start <= reservation.promised_start + timedelta(
        minutes=bound
    )


@PROPERTY_SETTINGS
@given(scenario=st.one_of(scenarios(), scenarios(crowded=True)))
def test_plan_is_deterministic(scenario: dict[str, Any]) -> None:
    first = plan(**scenario)
    shuffled = plan(**{**scenario, "pending": list(reversed(scenario["pending"]))})
    assert shuffled == first


def test_a_request_blocked_by_its_own_users_container_says_which_and_is_no_demand_on_it() -> None:
    inventory = make_inventory(1)
    state = AllocationState((holding("thesis", "alice", [whole(0)]),))
    queue = [pending("more", "alice", gpus=1)]

    result = plan(queue, inventory, state, NOW, UsageTotals(), FAIR)

    (entry,) = result.ranked
    assert entry.status == "head"
    assert "held by your own container thesis" in entry.reason
    assert "`container-retire thesis`" in entry.reason
    assert result.users_waiting_for_devices == {"alice"}  # demand on others' containers only


def test_a_request_blocked_by_someone_elses_container_names_no_container() -> None:
    inventory = make_inventory(1)
    state = AllocationState((holding("thesis", "bob", [whole(0)]),))

    result = plan([pending("more", "alice", gpus=1)], inventory, state, NOW, UsageTotals(), FAIR)

    (entry,) = result.ranked
    assert "your own container" not in entry.reason and "thesis" not in entry.reason
    assert result.users_waiting_for_devices == {"alice"}
