"""Reservations as pure decisions (ds01.core.reservations): admission, conflicts with the
next free slot, limits, what a reservation forbids at time t, and draining."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.config.reservations import DEFAULT_MAX_RESERVATIONS
from ds01.config.scheduler import SchedulerConfig
from ds01.core.allocation import AllocationState, GpuRequest, Holding
from ds01.core.mig_on_demand import (
    CreateSlice,
    GpuView,
    NoRoom,
    gpu_view,
    in_the_way,
    plan_profiles,
    planned_device,
)
from ds01.core.reservations import (
    MAX_NAMED_CONFLICTS,
    Occupant,
    Reservation,
    ReservationLimits,
    ReservationRequest,
    admit,
    blocked_devices,
    clear_slots,
    drain,
    fit,
    held_now,
    holder_view,
    is_slot,
    next_change,
    next_free_start,
    overstays,
    phase,
    protected,
    repair,
    reserved_starts,
    slot_keep_out,
    slot_places,
    with_blocked,
)
from ds01.core.scheduler import PendingRequest, UsageTotals, plan
from ds01.errors import InvalidInput, NoCapacity, NotFound, QuotaExceeded
from ds01.exitcodes import ExitCode
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.mig_placement import A100_40GB_TABLE
from ds01.model.quota import GpuQuota

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # a Monday
UNLIMITED = ReservationLimits(max_hours=None, max_days_ahead=None)


def gpu(index: int) -> Device:
    return Device(f"GPU-{index}", "gpu", index, f"GPU-{index}", "A100", 40960)


def mig(index: int, instance: int, profile: str = "3g.20gb", slices: int = 3) -> Device:
    return Device(
        f"MIG-{index}-{instance}", "mig", index, f"GPU-{index}", "A100", 20480,
        profile=profile, slices=slices, instance_id=instance,
    )  # fmt: skip


INVENTORY = Inventory("simulated", devices=(gpu(0), gpu(1), mig(2, 1), mig(2, 2)))


def at(hours: float) -> datetime:
    return NOW + timedelta(hours=hours)


def request(
    holder: str | None, start: float, hours: float, gpus: int = 1, profile: str | None = None
) -> ReservationRequest:
    return ReservationRequest(holder, at(start), at(start + hours), 0 if profile else gpus, profile)


def reserve(
    existing: list[Reservation], req: ReservationRequest, limits: ReservationLimits = UNLIMITED
) -> Reservation:
    made = admit(req, existing, INVENTORY, limits, NOW, new_id=f"r{len(existing)}")
    existing.append(made)
    return made


def admitted(
    asked: list[ReservationRequest], limits: ReservationLimits = UNLIMITED
) -> list[Reservation]:
    """The reservations of ``asked`` admitted in order under ``limits``, the refused ones
    left out."""
    existing: list[Reservation] = []
    for req in asked:
        with contextlib.suppress(NoCapacity, QuotaExceeded):
            reserve(existing, req, limits)
    return existing


def test_conflict_names_the_slot_and_the_next_free_start() -> None:
    existing: list[Reservation] = []
    reserve(existing, request("alice", 1, 4, gpus=2))
    with pytest.raises(NoCapacity) as refused:
        reserve(existing, request("bob", 3, 2, gpus=1))
    assert refused.value.exit_code == ExitCode.QUOTA
    message = refused.value.message
    assert "GPU 0, 1 is reserved 2026-12-07 09:00-13:00 (alice)" in message
    assert "next free slot for 1 GPU and 2 hours starts 2026-12-07 13:00" in message
    assert refused.value.details["next_free"] == at(5).isoformat()


def test_mig_reservations_use_instances_of_the_profile() -> None:
    existing: list[Reservation] = []
    first = reserve(existing, request("alice", 0, 2, profile="3g.20gb"))
    second = reserve(existing, request("bob", 0, 2, profile="3g.20gb"))
    assert {first.devices, second.devices} == {("MIG-2-1",), ("MIG-2-2",)}
    assert first.gpu_equivalents == Fraction(3, 7)
    with pytest.raises(NoCapacity):
        reserve(existing, request("carol", 1, 2, profile="3g.20gb"))
    with pytest.raises(NotFound):
        reserve(existing, request("carol", 1, 2, profile="7g.40gb"))


def test_default_limits_length_lead_and_gpus_at_once() -> None:
    limits = ReservationLimits(max_gpus=Fraction(1))
    with pytest.raises(QuotaExceeded, match="at most 8 hours"):
        reserve([], request("alice", 1, 9), limits)
    with pytest.raises(QuotaExceeded, match="at most 14 days ahead"):
        reserve([], request("alice", 15 * 24, 1), limits)
    existing: list[Reservation] = []
    reserve(existing, request("alice", 1, 2), limits)
    with pytest.raises(QuotaExceeded, match=r"at most 1\.0 GPU-equivalents reserved at once"):
        reserve(existing, request("alice", 2, 2), limits)
    reserve(existing, request("alice", 3, 2), limits)  # after the first one: fine
    two = ReservationLimits(max_gpus=Fraction(2))
    # One GPU 09-11 and one 11-13: a third from 10 to 12 makes two at any moment, not three.
    reserve(existing, request("alice", 2, 2), two)
    with pytest.raises(QuotaExceeded, match=r"you would have 2\.43"):
        reserve(existing, request("alice", 2, 1, profile="3g.20gb"), two)


def test_count_and_weekly_gpu_hours() -> None:
    limits = ReservationLimits(max_reservations=2, gpu_hours_per_week=6)
    existing: list[Reservation] = []
    reserve(existing, request("alice", 1, 4), limits)
    with pytest.raises(QuotaExceeded, match="GPU-hours in a week"):
        reserve(existing, request("alice", 6, 3), limits)
    reserve(existing, request("alice", 7 * 24, 4), limits)  # next week
    with pytest.raises(QuotaExceeded, match="at most 2 reservations"):
        reserve(existing, request("alice", 10, 1), limits)


def test_maintenance_skips_limits_and_blocks_everyone() -> None:
    existing: list[Reservation] = []
    made = reserve(existing, request(None, 1, 48, gpus=2), ReservationLimits(max_hours=1))
    assert made.holder is None
    assert blocked_devices(existing, "alice", at(2), at(3)) == {"GPU-0", "GPU-1"}


def test_past_start_is_refused() -> None:
    with pytest.raises(InvalidInput, match="in the past"):
        reserve([], request("alice", -1, 2))


def test_backfill_and_holder() -> None:
    r = Reservation("r", "alice", ("GPU-0",), at(2), at(4), Fraction(1))
    assert blocked_devices([r], "bob", NOW, at(1)) == frozenset()  # ends before the start
    assert blocked_devices([r], "bob", NOW, at(3)) == {"GPU-0"}
    assert blocked_devices([r], "bob", NOW, None) == {"GPU-0"}
    assert blocked_devices([r], "alice", at(3), None) == frozenset()
    assert blocked_devices([r], "bob", at(4), None) == frozenset()  # ended
    assert held_now([r], "alice", at(3)) == ("GPU-0",)
    assert held_now([r], "alice", NOW) == ()
    assert [phase(r, t) for t in (NOW, at(2), at(4))] == ["upcoming", "active", "ended"]


def test_drain_warns_at_the_lead_time_then_stops() -> None:
    r = Reservation("r", "alice", ("GPU-0",), at(2), at(4), Fraction(1))
    bob = Occupant("c1", "bob", ("GPU-0",))
    mine = Occupant("c2", "alice", ("GPU-0",))
    lead = timedelta(minutes=15)
    assert drain([r], [bob, mine], at(1.5), lead) == ([], [])
    warns, stops = drain([r], [bob, mine], at(1.8), lead)
    assert [w.container for w in warns] == ["c1"] and not stops
    assert drain([r], [bob], at(1.8), lead, warned=lambda key: True) == ([], [])
    warns, stops = drain([r], [bob, mine], at(2), lead)
    assert not warns and [s.container for s in stops] == ["c1"]
    assert "reserved for alice" in stops[0].reason and "reservation r" in stops[0].reason


def test_a_holder_over_quota_is_warned_before_the_end_then_stopped_at_it() -> None:
    r = Reservation("r", "alice", ("GPU-0", "GPU-1"), at(2), at(4), Fraction(2))
    lead = timedelta(minutes=15)
    old = Occupant("c1", "alice", ("GPU-0",), equivalents=Fraction(1), started_at=at(2.1))
    new = Occupant("c2", "alice", ("GPU-1",), equivalents=Fraction(1), started_at=at(2.5))
    limits = {"alice": Fraction(1)}
    assert overstays([r], [old, new], limits, at(3.5), lead) == ([], [])
    warns, stops = overstays([r], [old, new], limits, at(3.8), lead)
    assert [w.container for w in warns] == ["c2"] and not stops  # newest first, only one
    assert overstays([r], [old, new], limits, at(3.8), lead, lambda key: True) == ([], [])
    warns, stops = overstays([r], [old, new], limits, at(4), lead)
    assert not warns and [s.container for s in stops] == ["c2"]
    assert "reservation r" in stops[0].reason and "gpu_limit" in stops[0].reason
    # Within quota without the reservation: nothing; unlimited: nothing.
    assert overstays([r], [old], limits, at(4), lead) == ([], [])
    assert overstays([r], [old, new], {"alice": None}, at(4), lead) == ([], [])
    # Restarted after the end (placed within quota then), or borrowed: never taken here.
    later = replace(new, started_at=at(4.5))
    assert overstays([r], [later], {"alice": Fraction(0)}, at(5), lead) == ([], [])
    borrowed = replace(new, borrowed=True)
    assert overstays([r], [old, borrowed], limits, at(4), lead) == ([], [])


def test_a_following_reservation_of_the_holder_keeps_the_container() -> None:
    first = Reservation("r1", "alice", ("GPU-0",), at(2), at(4), Fraction(1))
    second = Reservation("r2", "alice", ("GPU-0",), at(4), at(6), Fraction(1))
    on_top = Occupant("c", "alice", ("GPU-0",), equivalents=Fraction(1), started_at=at(2))
    within = Occupant("w", "alice", ("GPU-1",), equivalents=Fraction(1), started_at=at(1))
    limits = {"alice": Fraction(1)}
    lead = timedelta(minutes=15)
    assert overstays([first, second], [on_top, within], limits, at(4), lead) == ([], [])
    _, stops = overstays([first, second], [on_top, within], limits, at(6), lead)
    assert [s.container for s in stops] == ["c"] and stops[0].reservation.id == "r2"


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------

USERS = ("alice", "bob", "carol")

requests = st.builds(
    lambda holder, start, hours, gpus, use_mig: ReservationRequest(
        holder,
        at(start),
        at(start + hours),
        0 if use_mig else gpus,
        "3g.20gb" if use_mig else None,
    ),
    st.sampled_from((*USERS, None)),
    st.integers(0, 48),
    st.integers(1, 8),
    st.integers(1, 2),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, max_size=12))
def test_admitted_reservations_never_share_a_device(asked: list[ReservationRequest]) -> None:
    existing = admitted(asked, ReservationLimits())
    for made in existing:
        assert len(set(made.devices)) == len(made.devices)
        for other in existing:
            if other is not made and other.overlaps(made.start, made.end):
                assert not set(other.devices) & set(made.devices)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, max_size=6), st.data())
def test_refusal_suggests_a_start_that_fits(
    asked: list[ReservationRequest], data: st.DataObject
) -> None:
    existing: list[Reservation] = []
    for req in asked:
        try:
            reserve(existing, req)
        except NoCapacity as refused:
            nxt = refused.details.get("next_free")
            if nxt is not None:
                moved = req.at(datetime.fromisoformat(str(nxt)))
                assert moved.start >= req.start
                reserve(existing, moved)  # fits where it was told it would


containers = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.integers(0, 60),  # placed at (hours from NOW)
        st.one_of(st.none(), st.integers(1, 12)),  # runtime limit (hours); None: none
        st.sampled_from(("GPU-0", "GPU-1")),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, max_size=6), containers)
def test_reserved_devices_are_free_at_the_start_when_runtime_limits_hold(
    asked: list[ReservationRequest],
    placed: list[tuple[str, int, int | None, str]],
) -> None:
    existing = admitted(asked)
    running: list[tuple[str, str, datetime, datetime | None]] = []  # user, device, from, until
    for user, hour, limit, device in sorted(placed, key=lambda p: p[1]):
        now = at(hour)
        until = None if limit is None else now + timedelta(hours=limit)
        busy = any(d == device and s <= now and (e is None or now < e) for _, d, s, e in running)
        if busy or device in blocked_devices(existing, user, now, until):
            continue
        running.append((user, device, now, until))
    for r in existing:
        for user, device, since, until in running:
            if device in r.devices and not r.is_for(user) and since <= r.start:
                assert until is not None and until <= r.start


occupants = st.lists(
    st.builds(
        Occupant,
        st.uuids().map(str),
        st.sampled_from(USERS),
        st.lists(st.sampled_from(("GPU-0", "GPU-1", "MIG-2-1")), max_size=2, unique=True).map(
            tuple
        ),
        st.booleans(),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, max_size=6), occupants, st.integers(0, 60))
def test_at_a_start_every_container_in_the_way_is_stopped_and_no_other(
    asked: list[ReservationRequest], present: list[Occupant], hour: int
) -> None:
    existing = admitted(asked)
    now = at(hour)
    warns, stops = drain(existing, present, now, timedelta(minutes=15))
    in_way = {
        o.container
        for o in present
        for r in existing
        if r.in_force(now) and set(o.devices) & set(r.devices) and not r.is_for(o.user)
    }
    assert {s.container for s in stops} == in_way
    assert len(stops) == len(in_way)  # one stop per container
    assert not {w.container for w in warns} & in_way


holder_containers = st.lists(
    st.builds(
        lambda n, devices, running, borrowed, started: Occupant(
            f"c{n}", "alice", devices, running, Fraction(len(devices)), borrowed, at(started)
        ),
        st.integers(0, 99),
        st.lists(
            st.sampled_from(("GPU-0", "GPU-1", "GPU-2")), min_size=1, max_size=2, unique=True
        ).map(tuple),
        st.booleans(),
        st.booleans(),
        st.integers(0, 12),
    ),
    max_size=6,
    unique_by=lambda o: o.container,
)


@settings(max_examples=200, deadline=None)
@given(holder_containers, st.integers(0, 3), st.integers(0, 14))
def test_at_the_end_the_holder_is_brought_within_quota_by_the_fewest_stops(
    present: list[Occupant], limit: int, hour: int
) -> None:
    r = Reservation("r", "alice", ("GPU-0", "GPU-1"), at(2), at(6), Fraction(2))
    now = at(hour)
    _, stops = overstays([r], present, {"alice": Fraction(limit)}, now, timedelta(0))
    stopped = {s.container for s in stops}
    by_id = {o.container: o for o in present}
    def candidate(o: Occupant) -> bool:
        """On the ended reservation's devices, not borrowed: stopped (its devices given
        back), or running since before the end."""
        placed = not o.running or (o.started_at is not None and o.started_at < r.end)
        return placed and not o.borrowed and bool(set(o.devices) & set(r.devices))

    for container in stopped:
        assert candidate(by_id[container]) and now >= r.end
        assert {s.running for s in stops if s.container == container} == {by_id[container].running}
    total = sum((o.equivalents for o in present if not o.borrowed), Fraction(0))
    left = total - sum((by_id[c].equivalents for c in stopped), Fraction(0))
    if total <= limit or now < r.end:
        assert not stopped
    elif left > limit:  # not enough: then every candidate was stopped
        assert stopped == {o.container for o in present if candidate(o)}
    if stopped:  # one stop fewer would not have been enough
        last = min(stopped, key=lambda c: (not by_id[c].running, by_id[c].started_at or now, c))
        assert left + by_id[last].equivalents > limit
    if any(by_id[c].running for c in stopped):  # a running one only when no stopped one is left
        assert all(by_id[c].container in stopped for c in by_id if candidate(by_id[c])
                   and not by_id[c].running)  # fmt: skip


# ------------------------------------------------------------------------------------------
# A holder's queued request during the reservation
# ------------------------------------------------------------------------------------------


def queued(id_: str, user: str, submitted: float, gpus: int = 1) -> PendingRequest:
    return PendingRequest(
        id=id_, user=user, group="lab", request=GpuRequest(whole_gpus=gpus),
        quota=GpuQuota(gpu_limit=Fraction(1)), priority=50, submitted_at=at(submitted),
    )  # fmt: skip


def test_a_holders_queued_request_starts_on_the_reserved_device_above_quota() -> None:
    r = Reservation("r", "alice", ("GPU-0",), at(2), at(4), Fraction(1))
    # alice uses her whole quota on GPU-1; bob waits too.
    state = AllocationState((Holding("thesis", "thesis", "alice", ("GPU-1",), Fraction(1)),))
    inventory = Inventory("simulated", devices=(gpu(0), gpu(1)))
    waiting = [queued("q2", "alice", 1.5), queued("q1", "bob", 1), queued("q3", "alice", 1.8)]
    # The queue's plan alone keeps alice's requests waiting for her quota.
    alone = plan(waiting, inventory, state, at(3), UsageTotals(), SchedulerConfig())
    assert {e.request.id: e.status for e in alone.ranked}["q2"] == "quota"
    # During the reservation her first request starts there; not before, and not bob's.
    starts = reserved_starts(waiting, [r], inventory, state, at(3))
    assert [(s.request.id, s.placement.uuids) for s in starts] == [("q2", ("GPU-0",))]
    assert reserved_starts(waiting, [r], inventory, state, at(1)) == []
    assert reserved_starts(waiting, [r], inventory, state, at(4)) == []


def test_holder_view_and_protection_hold_only_in_force_and_only_for_the_holder() -> None:
    r = Reservation("r", "alice", ("GPU-0",), at(2), at(4), Fraction(1))
    inventory = Inventory("simulated", devices=(gpu(0), gpu(1)))
    view = holder_view([r], "alice", inventory, GpuQuota(gpu_limit=Fraction(1)), at(2))
    assert view is not None
    assert view[0].reserved == {"GPU-1"} and view[1].gpu_limit == 2
    assert holder_view([r], "bob", inventory, GpuQuota(), at(2)) is None
    assert holder_view([r], "alice", inventory, GpuQuota(), NOW) is None
    assert protected([r], "alice", ("GPU-0",), at(3))
    assert not protected([r], "alice", ("GPU-1",), at(3))
    assert not protected([r], "bob", ("GPU-0",), at(3))
    assert not protected([r], "alice", ("GPU-0",), at(1))


# ------------------------------------------------------------------------------------------
# The queue plans each waiting request with its own blocked devices
# ------------------------------------------------------------------------------------------


def queued_for(id_: str, user: str, hours: float | None, gpus: int = 1) -> PendingRequest:
    return replace(queued(id_, user, 0, gpus), expected_runtime_hours=hours)


def test_a_long_waiting_request_does_not_keep_a_short_one_off_a_reserved_device() -> None:
    # GPU-0 is reserved for carol from 13:00; GPU-1 is busy. A 72-hour request waits first.
    r = Reservation("r", "carol", ("GPU-0",), at(5), at(13), Fraction(1))
    state = AllocationState((Holding("busy", "busy", "dave", ("GPU-1",), Fraction(1)),))
    inventory = Inventory("simulated", devices=(gpu(0), gpu(1)))
    waiting = with_blocked(
        [queued_for("phd", "alice", 72), queued_for("student", "bob", 4)], [r], NOW
    )
    assert [w.blocked for w in waiting] == [{"GPU-0"}, frozenset()]
    result = plan(waiting, inventory, state, NOW, UsageTotals(), SchedulerConfig())
    assert [(s.request.id, s.placement.uuids) for s in result.starts] == [("student", ("GPU-0",))]
    # With the old union of the blocked devices, the student's job waited too.
    union = replace(inventory, reserved=frozenset({"GPU-0"}))
    assert plan(waiting, union, state, NOW, UsageTotals(), SchedulerConfig()).starts == ()


plan_requests = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.one_of(st.none(), st.integers(1, 30)),  # expected hold (hours)
        st.integers(1, 2),  # whole GPUs
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, max_size=6), plan_requests, st.integers(0, 40))
def test_the_queue_never_places_a_request_that_could_still_run_at_a_reservations_start(
    asked: list[ReservationRequest],
    spec: list[tuple[str, int | None, int]],
    hour: int,
) -> None:
    existing = admitted(asked)
    now = at(hour)
    pending = [
        replace(
            queued_for(f"q{i}", user, hold, gpus), quota=GpuQuota(gpu_limit=Fraction(2))
        )
        for i, (user, hold, gpus) in enumerate(spec)
    ]
    result = plan(
        with_blocked(pending, existing, now), INVENTORY, AllocationState(), now,
        UsageTotals(), SchedulerConfig(),
    )  # fmt: skip
    given_out = [u for start in result.starts for u in start.placement.uuids]
    assert len(given_out) == len(set(given_out))  # no device twice
    for start in result.starts:
        hold = start.request.expected_runtime_hours
        ends = None if hold is None else now + timedelta(hours=hold)
        for r in existing:
            if r.end <= now or r.is_for(start.request.user):
                continue
            if set(start.placement.uuids) & set(r.devices):
                assert r.start > now and ends is not None and ends <= r.start


def test_a_request_that_fits_only_on_devices_reserved_from_before_its_end_is_not_the_head() -> (
    None
):
    # Both GPUs are reserved from 05:00: a 72-hour request cannot start before they end,
    # and must not hold the queue's head (with backfill off it would stop everyone).
    r = Reservation("r", "carol", ("GPU-0", "GPU-1"), at(5), at(13), Fraction(2))
    inventory = Inventory("simulated", devices=(gpu(0), gpu(1)))
    phd = replace(queued_for("phd", "alice", 72, gpus=2), quota=GpuQuota(gpu_limit=Fraction(2)))
    waiting = with_blocked([phd, queued_for("student", "bob", 4)], [r], NOW)
    no_backfill = SchedulerConfig.first_come_first_served()
    result = plan(waiting, inventory, AllocationState(), NOW, UsageTotals(), no_backfill)
    assert result.reservation is None
    assert {e.request.id: e.status for e in result.ranked} == {
        "phd": "capacity", "student": "starting",
    }  # fmt: skip


# ------------------------------------------------------------------------------------------
# Devices that are gone (a MIG layout changed)
# ------------------------------------------------------------------------------------------


def test_a_reserved_instance_that_is_gone_moves_to_an_equivalent_one_or_is_reported() -> None:
    mine = reserve([], request("alice", 2, 4, profile="3g.20gb"))
    assert mine.devices == ("MIG-2-1",) and mine.profile == "3g.20gb"
    other = reserve([mine], request("bob", 3, 4, profile="3g.20gb"))
    assert other.devices == ("MIG-2-2",)
    # GPU 2 is laid out again: its instances get new UUIDs, one 3g.20gb and a 2g.10gb.
    relaid = Inventory(
        "simulated",
        devices=(gpu(0), gpu(1), mig(2, 5), mig(2, 6, "2g.10gb", 2)),
    )
    first, second = repair([mine, other], relaid, at(0))
    assert (first.devices, first.replaced, first.missing) == (
        ("MIG-2-5",), (("MIG-2-1", "MIG-2-5"),), ()
    )
    assert second.devices == ("MIG-2-2",) and second.missing == ("MIG-2-2",)  # overlaps alice
    # Whole GPUs: a GPU gone (now in MIG mode) is replaced by a free whole GPU.
    whole = reserve([], request("carol", 2, 4))
    assert whole.devices == ("GPU-0",)
    fewer = Inventory("simulated", devices=(gpu(1), mig(2, 1)))
    (moved,) = repair([whole], fewer, at(0))
    assert moved.devices == ("GPU-1",) and not moved.missing
    assert repair([whole], INVENTORY, at(0)) == []  # all there: nothing to do
    assert repair([whole], fewer, at(7)) == []  # ended


@settings(max_examples=150, deadline=None)
@given(st.lists(requests, max_size=8), st.sets(st.sampled_from(
    ("GPU-0", "GPU-1", "MIG-2-1", "MIG-2-2")), max_size=3))  # fmt: skip
def test_repair_never_keeps_a_device_twice_and_only_moves_to_a_device_there(
    asked: list[ReservationRequest], removed: set[str]
) -> None:
    existing: list[Reservation] = []
    for req in asked:
        try:
            reserve(existing, req)
        except (NoCapacity, QuotaExceeded):
            continue
    extra = (gpu(4), mig(5, 1))  # a GPU and a 3g.20gb instance added by the new layout
    after = Inventory(
        "simulated", devices=(*(d for d in INVENTORY.devices if d.uuid not in removed), *extra)
    )
    fixed = {f.reservation.id: f for f in repair(existing, after, NOW)}
    present = after.by_uuid()
    now_kept = [replace(r, devices=fixed[r.id].devices) if r.id in fixed else r for r in existing]
    for r in now_kept:
        for other in now_kept:
            if other.id != r.id and r.overlaps(other.start, other.end):
                assert not set(r.devices) & set(other.devices)
    for f in fixed.values():
        for old, new in f.replaced:
            assert old in removed and new in present
            assert present[new].kind == ("mig" if f.reservation.profile else "gpu")
        assert set(f.missing) <= removed


# ------------------------------------------------------------------------------------------
# Slots on GPUs with MIG on demand
# ------------------------------------------------------------------------------------------


def test_a_dynamic_gpu_offers_slots_that_never_overlap_in_time() -> None:
    dynamic = PhysicalGpu(1, "GPU-1", "A100", 40960, mig_enabled=True, total_slices=7)
    inventory = Inventory("simulated", gpus=(dynamic,), devices=(gpu(0),))
    views = [gpu_view(dynamic, A100_40GB_TABLE, (), inventory.devices, (), ())]
    assert views[0] is not None
    existing: list[Reservation] = []

    def book(holder: str, start: float, hours: float) -> Reservation:
        req = request(holder, start, hours, profile="7g.40gb")
        made = admit(req, existing, inventory, UNLIMITED, NOW, new_id=f"s{len(existing)}",
                     views=views)  # fmt: skip
        existing.append(made)
        return made

    first = book("alice", 2, 2)
    [slot] = first.devices
    assert is_slot(slot) and slot.startswith("MIG-slot-GPU-1-") and first.gpu_equivalents == 1
    with pytest.raises(NoCapacity) as refused:
        book("bob", 3, 2)  # the GPU can make one 7g.40gb, and it is alice's then
    assert refused.value.details["next_free"] == at(4).isoformat()
    assert book("bob", 4, 2).devices == (slot,)  # the same slice, afterwards
    with pytest.raises(NotFound):  # neither an instance nor a dynamic GPU offers it
        admit(request("carol", 2, 1, profile="9g.99gb"), existing, inventory, UNLIMITED, NOW,
              new_id="x", views=views)  # fmt: skip
    # Before the start a slot is not gone; in force and not made, it is (no instance left).
    assert repair(existing, inventory, at(1)) == []
    [due] = repair(existing[:1], inventory, at(3))
    assert due.missing == (slot,)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")),
            st.integers(0, 12),
            st.integers(1, 4),
        ),
        max_size=10,
    )
)
def test_slots_of_overlapping_reservations_never_share_memory_slices(
    asked: list[tuple[str, int, int]],
) -> None:
    dynamic = PhysicalGpu(1, "GPU-1", "A100", 40960, mig_enabled=True, total_slices=7)
    inventory = Inventory("simulated", gpus=(dynamic,), devices=())
    views = [gpu_view(dynamic, A100_40GB_TABLE, (), (), (), ())]
    existing: list[Reservation] = []
    for n, (profile, start, hours) in enumerate(asked):
        try:
            made = admit(request(None, start, hours, profile=profile), existing, inventory,
                         UNLIMITED, NOW, new_id=f"s{n}", views=views)  # fmt: skip
        except NoCapacity:
            continue
        existing.append(made)

    def memory(r: Reservation) -> set[int]:
        [slot] = r.devices
        shape = A100_40GB_TABLE.shape(r.profile or "")
        assert is_slot(slot) and shape is not None
        first = int(slot.rsplit("-", 1)[1])
        return set(range(first, first + shape.size))

    for r in existing:
        for other in existing:
            if other.id != r.id and r.overlaps(other.start, other.end):
                assert not memory(r) & memory(other)


def test_next_change_is_the_next_warning_start_or_end_after_now() -> None:
    lead = timedelta(minutes=15)
    start = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    r = Reservation("r1", "bob", ("GPU-0",), start, start + timedelta(hours=2), Fraction(1))
    assert next_change([r], start - timedelta(hours=1), lead) == start - lead
    assert next_change([r], start - lead, lead) == start
    assert next_change([r], start, lead) == r.end - lead
    assert next_change([r], r.end - timedelta(minutes=1), lead) == r.end
    assert next_change([r], r.end, lead) is None
    later = replace(r, id="r2", start=start + timedelta(minutes=5))  # its warning comes first
    assert next_change([later, r], start - lead, lead) == later.start - lead


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")),
    st.lists(
        st.tuples(
            st.sampled_from(("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")),
            st.integers(0, 7),  # asked at this hour, before the slot's start at 8
            st.integers(1, 6),  # its runtime limit, in hours
        ),
        max_size=10,
    ),
)
def test_a_slots_place_is_free_at_its_start_whenever_runtime_limits_hold(
    profile: str, asked: list[tuple[str, int, int]]
) -> None:
    # bob's reservation keeps a slot from hour 8. Others' containers, each asked for at
    # its hour and planned outside the slots it is kept from, hold their slice until their
    # runtime limit: at 8, none of those left overlaps the slot's place.
    dynamic = PhysicalGpu(1, "GPU-1", "A100", 40960, mig_enabled=True, total_slices=7)
    empty = Inventory("simulated", gpus=(dynamic,), devices=())
    views = [gpu_view(dynamic, A100_40GB_TABLE, (), (), (), ())]
    booked = admit(request("bob", 8, 2, profile=profile), [], empty, UNLIMITED, NOW,
                   new_id="r1", views=[v for v in views if v is not None])  # fmt: skip
    [slot] = booked.devices
    assert is_slot(slot)
    made: list[tuple[Device, datetime]] = []
    for n, (wanted, hour, limit) in enumerate(asked):
        now = at(hour)
        current = tuple(d for d, end in made if end > now)
        view = gpu_view(dynamic, A100_40GB_TABLE, (), current, {d.uuid for d in current}, ())
        assert view is not None
        blocked = blocked_devices([booked], f"user{n}", now, now + timedelta(hours=limit))
        inventory = Inventory("simulated", gpus=(dynamic,), devices=current)
        planned = plan_profiles(inventory, (d.uuid for d in current), [view], [wanted],
                                slot_keep_out([booked], blocked))  # fmt: skip
        for create in () if isinstance(planned, NoRoom) else planned:
            device = replace(planned_device(create, dynamic), uuid=f"MIG-{n}")
            made.append((device, now + timedelta(hours=limit)))
    left = tuple(d for d, end in made if end > at(8))
    at_start = gpu_view(dynamic, A100_40GB_TABLE, (), left, {d.uuid for d in left}, ())
    assert at_start is not None
    assert in_the_way([at_start], slot_keep_out([booked], {slot})) == frozenset()


# ------------------------------------------------------------------------------------------
# Slices made before a slot's reservation: drained, destroyed, the slot's slice made
# ------------------------------------------------------------------------------------------

DYNAMIC = PhysicalGpu(1, "GPU-1", "A100", 40960, mig_enabled=True, total_slices=7)
LEAD = timedelta(minutes=15)


def planned_device_at(profile: str, start: int) -> Device:
    return planned_device(CreateSlice(1, "GPU-1", profile, start), DYNAMIC)


def memory_slices(device: Device) -> set[int]:
    shape = A100_40GB_TABLE.shape(device.profile or "")
    assert shape is not None and device.start is not None
    return set(range(device.start, device.start + shape.size))


def dynamic_view(devices: tuple[Device, ...], held: set[str]) -> list[GpuView]:
    view = gpu_view(DYNAMIC, A100_40GB_TABLE, (), devices, held, {d.uuid for d in devices})
    assert view is not None
    return [view]


def test_a_slice_made_before_a_slot_is_drained_destroyed_and_the_slot_made_there() -> None:
    # alice holds a 3g.20gb at memory slice 4, made on demand before bob reserved the
    # GPU's whole 7g.40gb from hour 8 (his slot covers every memory slice).
    old = replace(planned_device_at("3g.20gb", 4), uuid="MIG-old")
    empty: list[GpuView] = dynamic_view((), set())
    booked = admit(request("bob", 8, 2, profile="7g.40gb"), [], Inventory("simulated",
                   gpus=(DYNAMIC,)), UNLIMITED, NOW, new_id="r1", views=empty)  # fmt: skip
    [slot] = booked.devices
    views = dynamic_view((old,), {"MIG-old"})
    alice = Occupant("c-alice", "alice", ("MIG-old",), ends_by=None)
    short = Occupant("c-short", "carol", ("MIG-old",), ends_by=at(7.9))
    # Before the lead time nothing; from it the slice counts as bob's, alice is warned.
    assert slot_places([booked], views, at(7), LEAD) == [booked]
    [kept] = slot_places([booked], views, at(7.75), LEAD)
    assert kept.devices == (slot, "MIG-old")
    warns, stops = drain([kept], [alice, short], at(7.75), LEAD)
    assert [w.container for w in warns] == ["c-alice"] and stops == []
    # At the start she is stopped; held, the slice is neither destroyed nor built over.
    _, stops = drain(slot_places([booked], views, at(8), LEAD), [alice], at(8), LEAD)
    assert [s.container for s in stops] == ["c-alice"]
    [step] = clear_slots([booked], views, at(8))
    assert step.destroy == () and step.make is None
    # Freed: destroyed at once, and the slot's slice made at its own place.
    [step] = clear_slots([booked], dynamic_view((old,), set()), at(8))
    assert step.destroy == ("MIG-old",) and step.make is not None
    assert (step.make.profile, step.make.start) == ("7g.40gb", 0)
    # Before its start there is nothing to clear.
    assert clear_slots([booked], views, at(7.9)) == []


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")),
    st.lists(
        st.tuples(
            st.sampled_from(("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb")),
            st.one_of(st.none(), st.integers(1, 12)),  # its runtime limit ends at this hour
            st.sampled_from(("alice", "bob", "carol")),
        ),
        max_size=6,
    ),
)
def test_slices_made_before_a_slot_are_drained_and_its_slice_made_at_the_start(
    profile: str, before: list[tuple[str, int | None, str]]
) -> None:
    # Containers got slices on demand before bob reserved a slot from hour 8 (which does
    # not see them). From the lead time those over its place count as his reservation's:
    # no device twice; a container whose runtime limit ends by the start is never warned;
    # at the start every other one not bob's is stopped, the freed slices are destroyed,
    # and the slot's slice fits at its place beside what is left.
    devices: list[Device] = []
    occupants: list[Occupant] = []
    for n, (wanted, ends, user) in enumerate(before):
        inventory = Inventory("simulated", gpus=(DYNAMIC,), devices=tuple(devices))
        planned = plan_profiles(inventory, [d.uuid for d in devices],
                                dynamic_view(tuple(devices), {d.uuid for d in devices}),
                                [wanted])  # fmt: skip
        if isinstance(planned, NoRoom) or not planned:
            continue
        device = replace(planned_device(planned[0], DYNAMIC), uuid=f"MIG-{n}")
        devices.append(device)
        occupants.append(Occupant(f"c{n}", user, (device.uuid,),
                                  ends_by=None if ends is None else at(ends)))  # fmt: skip
    booked = admit(request("bob", 8, 2, profile=profile), [], Inventory("simulated",
                   gpus=(DYNAMIC,)), UNLIMITED, NOW, new_id="r1",
                   views=dynamic_view((), set()))  # fmt: skip
    [slot] = booked.devices
    held = {d.uuid for d in devices}
    views = dynamic_view(tuple(devices), held)
    over = in_the_way(views, slot_keep_out([booked], {slot}))
    [kept] = slot_places([booked], views, at(7.75), LEAD)
    assert len(set(kept.devices)) == len(kept.devices)
    assert set(kept.devices) == {slot} | over
    warns, stops = drain([kept], occupants, at(7.75), LEAD)
    assert stops == []
    assert {w.container for w in warns} == {
        o.container for o in occupants
        if o.user != "bob" and set(o.devices) & over and (o.ends_by is None or o.ends_by > at(8))
    }  # fmt: skip
    # At the start: the runtime limits held, so those ended are gone.
    left = [o for o in occupants if o.ends_by is None or o.ends_by > at(8)]
    there = tuple(d for d in devices if any(d.uuid in o.devices for o in left))
    views = dynamic_view(there, {d.uuid for d in there})
    _, stops = drain(slot_places([booked], views, at(8), LEAD), left, at(8), LEAD)
    stopped = {s.container for s in stops}
    assert stopped == {o.container for o in left if o.user != "bob" and set(o.devices) & over}
    still = {u for o in left if o.container not in stopped for u in o.devices}
    [step] = clear_slots([booked], dynamic_view(there, still), at(8))
    assert set(step.destroy) == over & {d.uuid for d in there} - still
    if not still & over:  # only bob's own containers can stand in the way
        assert step.make is not None and step.make.start == int(slot.rsplit("-", 1)[1])
        rest = [d for d in there if d.uuid not in step.destroy]
        made = memory_slices(planned_device(step.make, DYNAMIC))
        assert all(not made & memory_slices(d) for d in rest)  # no memory slice twice
    else:
        assert step.make is None


# ------------------------------------------------------------------------------------------
# Ways past the limits, closed
# ------------------------------------------------------------------------------------------


def test_a_stopped_holder_container_gives_the_reserved_devices_back_at_the_end() -> None:
    # Stopped just before the end to start again just after: at the end it gives the
    # devices back, so that its next start is placed within quota; it is never warned.
    r = Reservation("r", "alice", ("GPU-0", "GPU-1"), at(2), at(4), Fraction(2))
    parked = Occupant("c", "alice", ("GPU-0", "GPU-1"), running=False, equivalents=Fraction(2))
    limits = {"alice": Fraction(1)}
    lead = timedelta(minutes=15)
    assert overstays([r], [parked], limits, at(3.9), lead) == ([], [])
    warns, stops = overstays([r], [parked], limits, at(4), lead)
    assert not warns and [(s.container, s.running) for s in stops] == [("c", False)]
    # A stopped one goes first: the running one is then within quota and keeps running.
    running = Occupant("w", "alice", ("GPU-1",), equivalents=Fraction(1), started_at=at(2.5))
    parked = replace(parked, devices=("GPU-0",), equivalents=Fraction(1))
    warns, stops = overstays([r], [parked, running], limits, at(3.9), lead)
    assert not warns and not stops
    _, stops = overstays([r], [parked, running], limits, at(4), lead)
    assert [(s.container, s.running) for s in stops] == [("c", False)]


def test_a_cut_reservation_keeps_counting_towards_the_week() -> None:
    # 8 GPU-hours a week, one reservation at a time: a reservation cut short by a cancel
    # at 7h59 (ended) still counts, so another 8 hours from then is refused.
    limits = ReservationLimits(max_reservations=1, gpu_hours_per_week=8, min_minutes=1)
    first = admit(request("alice", 0, 8), [], INVENTORY, limits, NOW, new_id="r1")
    later = at(7) + timedelta(minutes=59)
    cut = replace(first, end=later)
    again = ReservationRequest("alice", later, later + timedelta(hours=8), 1)
    with pytest.raises(QuotaExceeded, match="GPU-hours in a week") as refused:
        admit(again, [cut], INVENTORY, limits, later, new_id="r2")
    assert refused.value.details["limit"] == "gpu_hours_per_week"
    # What is left of the week may still be reserved (one reservation at a time).
    rest = ReservationRequest("alice", later, later + timedelta(minutes=1), 1)
    assert admit(rest, [cut], INVENTORY, limits, later, new_id="r3").holder == "alice"


def test_a_reservation_lasts_at_least_the_minimum_and_costs_its_exact_hours() -> None:
    start = at(1)
    blink = ReservationRequest("alice", start, start + timedelta(seconds=0.9), 1)
    with pytest.raises(QuotaExceeded, match="at least 15 minutes") as refused:
        admit(blink, [], INVENTORY, ReservationLimits(), NOW, new_id="r")
    assert refused.value.exit_code == ExitCode.QUOTA
    assert refused.value.details["limit"] == "min_minutes"
    short = ReservationLimits(min_minutes=0.001)
    made = admit(blink, [], INVENTORY, short, NOW, new_id="r")
    assert made.gpu_hours == Fraction(9, 36000)  # never rounded down to nothing
    # Maintenance skips the limits, the minimum too.
    assert admit(replace(blink, holder=None), [], INVENTORY, ReservationLimits(), NOW,
                 new_id="m").holder is None  # fmt: skip
    weekly = ReservationLimits(min_minutes=0.001, gpu_hours_per_week=0.0001)
    with pytest.raises(QuotaExceeded, match="GPU-hours in a week"):
        admit(blink, [], INVENTORY, weekly, NOW, new_id="r")


def test_by_default_a_user_holds_a_finite_number_of_reservations() -> None:
    existing: list[Reservation] = []
    limits = ReservationLimits(max_gpus=Fraction(1))  # the builtin defaults otherwise
    for n in range(DEFAULT_MAX_RESERVATIONS):
        reserve(existing, request("alice", 8 * n, 8), limits)
    with pytest.raises(QuotaExceeded, match=f"at most {DEFAULT_MAX_RESERVATIONS} reservations"):
        reserve(existing, request("alice", 8 * DEFAULT_MAX_RESERVATIONS, 8), limits)


def test_a_refusal_names_at_most_three_conflicts() -> None:
    existing: list[Reservation] = []
    for n in range(5):
        reserve(existing, request("alice", 1 + n, 1, gpus=1))
    with pytest.raises(NoCapacity) as refused:
        reserve(existing, request("bob", 1, 5, gpus=2))
    message = refused.value.message
    assert message.count(" is reserved ") == MAX_NAMED_CONFLICTS == 3
    assert "and 2 more" in message
    details = refused.value.details
    assert len(details["conflicts"]) == 3 and details["conflicts_total"] == 5
    assert details["next_free"] == at(6).isoformat()


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, max_size=12), st.integers(0, 60), st.integers(1, 10))
def test_the_next_free_start_is_the_first_that_fits(
    asked: list[ReservationRequest], start: int, hours: int
) -> None:
    existing = admitted(asked)
    wanted = request("dave", start, hours, gpus=2)
    found = next_free_start(wanted, INVENTORY, existing)
    candidates = sorted({wanted.start, *(r.end for r in existing if r.end > wanted.start)})
    first = next(s for s in candidates if fit(wanted.at(s), INVENTORY, existing) is not None)
    assert found == first
