"""Borrowing above quota and reclaiming it (``ds01.core.borrowing``): examples and properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds01.config.borrowing import BORROWING_OFF, BorrowingConfig
from ds01.config.resolve import resolve_limits
from ds01.core.allocation import AllocationState, GpuRequest, Holding, allocate, could_take
from ds01.core.borrowing import (
    HoldingFacts,
    ReclaimChoice,
    allocate_borrowing,
    choose_reclaim,
    in_place,
    reclaim_steps,
)
from ds01.core.scheduler import PendingRequest, UsageInterval, decayed_usage
from ds01.errors import ConfigError, NoCapacity, QuotaExceeded
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.quota import GpuQuota
from support import limits_from

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
A100 = "NVIDIA A100-SXM4-40GB"
ON = BorrowingConfig(
    enabled=True, max_borrowed_gpus=2, min_runtime_minutes=30, reclaim_grace_minutes=5
)
ONE_GPU = GpuQuota(gpu_limit=Fraction(1))
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def uuid(index: int) -> str:
    return f"GPU-{index:08d}-0000-0000-0000-000000000000"


def inventory(count: int) -> Inventory:
    return Inventory(
        "simulated",
        tuple(PhysicalGpu(i, uuid(i), A100, 40960) for i in range(count)),
        tuple(Device(uuid(i), "gpu", i, uuid(i), A100, 40960) for i in range(count)),
    )


def held(container: str, user: str, gpus: list[int], *, borrowed: bool = False) -> Holding:
    return Holding(
        container=container,
        name=container,
        user=user,
        devices=tuple(uuid(i) for i in gpus),
        gpu_equivalents=Fraction(len(gpus)),
        borrowed=borrowed,
    )


def head(user: str = "bob", gpus: int = 1, quota: GpuQuota = ONE_GPU) -> PendingRequest:
    return PendingRequest(
        id="q1",
        user=user,
        group="lab",
        request=GpuRequest(whole_gpus=gpus),
        quota=quota,
        priority=50,
        submitted_at=NOW,
    )


def minutes_ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def borrow(
    state: AllocationState,
    gpus: int = 1,
    *,
    policy: BorrowingConfig = ON,
    ask: bool = True,
    waiting: bool = False,
    user: str = "alice",
) -> tuple[tuple[str, ...], bool]:
    decision = allocate_borrowing(
        GpuRequest(whole_gpus=gpus), user, ONE_GPU, inventory(4), state, (),
        policy=policy, borrow=ask, waiting=[head()] if waiting else [],
    )  # fmt: skip
    return decision.placement.uuids, decision.borrowed


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_borrowing_is_off_by_default_and_borrow_auto_resolves_per_group() -> None:
    assert limits_from("defaults: {}\n").borrowing == BORROWING_OFF
    assert not BORROWING_OFF.enabled
    config = limits_from(
        """
        groups:
          night: {members: [ann], borrow: auto}
        borrowing: {enabled: true, max_borrowed_gpus: 0.5, min_runtime_minutes: 0.05}
        """
    )
    assert config.borrowing.max_borrowed_equivalents == Fraction(1, 2)
    assert config.borrowing.min_runtime_minutes == 0.05
    assert resolve_limits(config, "ann", []).borrow == "auto"
    assert resolve_limits(config, "bob", []).borrow == "ask"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("borrowing:\n  enabled: yes-please\n", "limits.yaml:2: borrowing.enabled:"),
        ("borrowing:\n  max_borrowed_gpus: -1\n", "max_borrowed_gpus: must be at least 0"),
        ("borrowing:\n  reclaim_grace: 5\n", "Did you mean 'reclaim_grace_minutes'?"),
        ("defaults:\n  borrow: always\n", "defaults.borrow:"),
        ("defaults:\n  borrow: null\n", "defaults.borrow: cannot be null"),
    ],
)
def test_invalid_borrowing_settings_name_the_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        limits_from(text)
    assert message in caught.value.message


# --------------------------------------------------------------------------------------------
# Borrowing
# --------------------------------------------------------------------------------------------


def test_within_quota_is_never_borrowed() -> None:
    assert borrow(AllocationState()) == ((uuid(0),), False)


def test_above_quota_borrows_idle_devices_up_to_the_cap() -> None:
    state = AllocationState((held("a1", "alice", [0]),))
    devices, borrowed = borrow(state)
    assert (devices, borrowed) == ((uuid(1),), True)
    state = state.with_holding(held("a2", "alice", [1], borrowed=True))
    assert borrow(state) == ((uuid(2),), True)
    state = state.with_holding(held("a3", "alice", [2], borrowed=True))
    with pytest.raises(QuotaExceeded, match="max_borrowed_gpus"):
        borrow(state)
    # The quota counts only what is not borrowed; the cap only what is.
    assert state.user_gpu_equivalents("alice") == 1
    assert state.user_borrowed_equivalents("alice") == 2


@pytest.mark.parametrize(
    ("policy", "ask", "waiting", "why"),
    [
        (ON, False, False, "GPU quota"),
        (BORROWING_OFF, True, False, "borrowing is off"),
        (ON, True, True, "within quota wait"),
    ],
)
def test_borrowing_is_refused(policy: BorrowingConfig, ask: bool, waiting: bool, why: str) -> None:
    state = AllocationState((held("a1", "alice", [0]),))
    with pytest.raises(QuotaExceeded, match=why):
        borrow(state, policy=policy, ask=ask, waiting=waiting)


def test_borrowing_needs_an_idle_device_and_other_limits_still_hold() -> None:
    full = AllocationState((held("a1", "alice", [0]), held("b1", "bob", [1, 2, 3])))
    with pytest.raises(QuotaExceeded, match="no idle device"):
        borrow(full)
    with pytest.raises(QuotaExceeded, match="Per-container"):
        allocate_borrowing(
            GpuRequest(whole_gpus=2), "alice",
            GpuQuota(gpu_limit=Fraction(1), max_gpus_per_container=Fraction(1)),
            inventory(4), AllocationState(), (), policy=ON, borrow=True,
            waiting=(),
        )  # fmt: skip


def test_borrowed_use_counts_in_fair_share_usage() -> None:
    """The usage ledger records every container that holds devices, borrowed or not."""
    used = [UsageInterval("alice", "lab", Fraction(1), minutes_ago(600), None)]
    totals = decayed_usage(used, NOW, 168.0)
    assert totals.fairshare_factor("alice", "lab") < totals.fairshare_factor("bob", "lab")


# --------------------------------------------------------------------------------------------
# Reclaim
# --------------------------------------------------------------------------------------------


def test_reclaim_takes_the_newest_old_enough_borrowed_container_only() -> None:
    state = AllocationState(
        (
            held("mine", "alice", [0]),
            held("old", "alice", [1], borrowed=True),
            held("newer", "alice", [2], borrowed=True),
            held("fresh", "alice", [3], borrowed=True),
        )
    )
    starts = {"mine": minutes_ago(5), "old": minutes_ago(120), "newer": minutes_ago(60),
              "fresh": minutes_ago(10)}  # fmt: skip
    choice = choose_reclaim(head(), inventory(4), state, NOW, ON, HoldingFacts(starts))
    assert choice.containers == ("newer",)
    assert choice.for_request == "q1"
    two = choose_reclaim(
        head(gpus=2, quota=GpuQuota()), inventory(4), state, NOW, ON, HoldingFacts(starts)
    )
    assert two.containers == ("newer", "old")


def test_min_runtime_and_the_reservation_hook_protect_a_container() -> None:
    state = AllocationState(
        (held("mine", "alice", [0, 1, 2]), held("young", "alice", [3], borrowed=True))
    )
    young = {"young": minutes_ago(29)}
    assert (
        choose_reclaim(head(), inventory(4), state, NOW, ON, HoldingFacts(young)).containers == ()
    )
    grown = {"young": minutes_ago(30)}
    assert choose_reclaim(head(), inventory(4), state, NOW, ON, HoldingFacts(grown)).containers == (
        "young",
    )
    choice = choose_reclaim(
        head(),
        inventory(4),
        state,
        NOW,
        ON,
        HoldingFacts(grown, is_reserved=lambda h: h.name == "young"),
    )
    assert choice.containers == ()


def test_a_borrower_back_within_quota_is_not_reclaimed() -> None:
    # alice borrowed GPU 1 while GPU 2 was hers within quota; GPU 2's container has ended
    # (carol holds it now), so alice holds one GPU on a quota of one: she borrows nothing
    # any more, and bob waits for a GPU like anyone.
    carol = held("carol's", "carol", [0, 2])
    state = AllocationState((carol, held("borrowed", "alice", [1], borrowed=True)))
    starts = {"borrowed": minutes_ago(60)}
    limits = {"alice": Fraction(1)}
    choice = choose_reclaim(
        head(), inventory(3), state, NOW, ON, HoldingFacts(starts, limits=limits)
    )
    assert choice.containers == ()
    assert choice.for_request == "q1"
    # were GPU 2 still hers within quota, GPU 1 would be borrowed, and reclaimed
    both = AllocationState(
        (held("carol's", "carol", [0]), held("borrowed", "alice", [1], borrowed=True),
         held("mine", "alice", [2]))
    )  # fmt: skip
    taken = choose_reclaim(head(), inventory(3), both, NOW, ON, HoldingFacts(starts, limits=limits))
    assert taken.containers == ("borrowed",)
    # without the owners' limits, every owner counts as above quota
    assert choose_reclaim(
        head(), inventory(3), state, NOW, ON, HoldingFacts(starts)
    ).containers == ("borrowed",)


def test_reclaim_stops_taking_from_an_owner_once_within_quota() -> None:
    state = AllocationState(
        (
            held("older", "alice", [0], borrowed=True),
            held("newer", "alice", [1], borrowed=True),
        )
    )
    starts = {"older": minutes_ago(120), "newer": minutes_ago(60)}
    two = head(gpus=2, quota=GpuQuota())
    limits = {"alice": Fraction(1)}
    # taking "newer" leaves alice one GPU on a quota of one: "older" is hers to keep
    assert choose_reclaim(
        two, inventory(2), state, NOW, ON, HoldingFacts(starts, limits=limits)
    ) == (
        ReclaimChoice(
            for_request="q1",
            reason="Reclaiming borrowed containers would not make room for q1 now.",
        )
    )
    one = choose_reclaim(head(), inventory(2), state, NOW, ON, HoldingFacts(starts, limits=limits))
    assert one.containers == ("newer",)


def test_a_container_already_warned_is_kept_as_the_choice() -> None:
    state = AllocationState(
        (
            held("mine", "alice", [0, 1]),
            held("older", "alice", [2], borrowed=True),
            held("newer", "alice", [3], borrowed=True),
        )
    )
    starts = {"older": minutes_ago(120), "newer": minutes_ago(60)}
    choice = choose_reclaim(
        head(), inventory(4), state, NOW, ON, HoldingFacts(starts, reclaiming={"older"})
    )
    assert choice.containers == ("older",)


def test_a_warned_container_stays_eligible_whatever_its_age() -> None:
    # "young" was warned once old enough; were its age to drop below the minimum runtime
    # again, the warning would stand: dropping it would cancel the reclaim for good.
    state = AllocationState(
        (held("mine", "alice", [0, 1, 2]), held("young", "alice", [3], borrowed=True))
    )
    young = {"young": minutes_ago(5)}
    facts = HoldingFacts(young, reclaiming={"young"})
    choice = choose_reclaim(head(), inventory(4), state, NOW, ON, facts)
    assert choice.containers == ("young",)
    assert reclaim_steps(choice, {"young": minutes_ago(5)}, NOW, ON).stop == ("young",)
    # not warned: the minimum runtime still protects it
    assert (
        choose_reclaim(head(), inventory(4), state, NOW, ON, HoldingFacts(young)).containers == ()
    )


def test_a_released_container_is_re_created_unless_within_quota_before_and_after() -> None:
    state = AllocationState((held("other", "bob", [1]),))
    own = (uuid(0),)
    free = {"state": state, "reserved": ()}
    assert in_place(own, labelled=False, borrowed=False, **free)
    # its own device taken, or reserved: re-created on others
    assert not in_place((uuid(1),), labelled=False, borrowed=False, **free)
    assert not in_place(own, labelled=False, borrowed=False, state=state, reserved={uuid(0)})
    # borrowed before or now: re-created, with the label of how it is placed now (and a
    # borrowed one with the time its devices were placed)
    assert not in_place(own, labelled=True, borrowed=False, **free)
    assert not in_place(own, labelled=False, borrowed=True, **free)
    assert not in_place(own, labelled=True, borrowed=True, **free)


def test_restarting_released_borrowed_containers_stays_within_quota_and_cap() -> None:
    # gpu_limit 1, cap 1: alice borrowed A0..A3 one at a time, stopping each until its
    # device was released; each start now gets devices within quota or borrowed, and its
    # label says which (in_place: never kept as it is while labelled borrowed).
    cap_one = ON.model_copy(update={"max_borrowed_gpus": 1.0})
    labels = dict.fromkeys(["A0", "A1", "A2", "A3"], True)
    state = AllocationState()
    placed: list[bool] = []
    for name in ["A0", "A1", "A2", "A3", "C"]:
        labelled = labels.get(name, False)
        try:
            decision = allocate_borrowing(
                GpuRequest(whole_gpus=1), "alice", ONE_GPU, inventory(8), state,
                [h.container for h in state.holdings],
                policy=cap_one, borrow=labelled, waiting=[],
            )  # fmt: skip
        except QuotaExceeded:
            continue
        same = in_place((), labelled=labelled, borrowed=decision.borrowed, state=state, reserved=())
        label = labelled if same else decision.borrowed
        assert label == decision.borrowed
        devices = tuple(decision.placement.uuids)
        holding = Holding(name, name, "alice", devices, Fraction(len(devices)), borrowed=label)
        state = state.with_holding(holding)
        placed.append(decision.borrowed)
    assert placed == [False, True]  # A0 within quota, A1 borrowed; A2, A3 and C refused
    assert state.user_gpu_equivalents("alice") == 1
    assert state.user_borrowed_equivalents("alice") == 1


def test_reclaim_steps_warn_then_stop_after_the_grace_and_cancel_when_unneeded() -> None:
    choice = ReclaimChoice(containers=("b1",), for_request="q1")
    assert reclaim_steps(choice, {}, NOW, ON).warn == ("b1",)
    warned = {"b1": minutes_ago(4)}
    assert reclaim_steps(choice, warned, NOW, ON).stop == ()
    warned = {"b1": minutes_ago(5)}
    assert reclaim_steps(choice, warned, NOW, ON).stop == ("b1",)
    nobody = reclaim_steps(ReclaimChoice(), warned, NOW, ON)
    assert (nobody.warn, nobody.stop, nobody.cancel) == ((), (), ("b1",))


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@st.composite
def borrowed_worlds(
    draw: st.DrawFn,
) -> tuple[Inventory, AllocationState, dict[str, datetime | None], PendingRequest]:
    count = draw(st.integers(1, 8))
    owners = draw(st.lists(st.integers(-1, 5), min_size=count, max_size=count))
    holdings: list[Holding] = []
    starts: dict[str, datetime | None] = {}
    for container in range(6):
        gpus = [i for i, owner in enumerate(owners) if owner == container]
        if not gpus:
            continue
        name = f"c{container}"
        user = draw(st.sampled_from(["alice", "bob", "carol"]))
        holdings.append(held(name, user, gpus, borrowed=draw(st.booleans())))
        age = draw(st.one_of(st.none(), st.floats(0, 240)))
        starts[name] = None if age is None else minutes_ago(age)
    want = draw(st.integers(1, count))
    limit = draw(st.one_of(st.none(), st.integers(1, 8)))
    quota = GpuQuota(gpu_limit=None if limit is None else Fraction(limit))
    return inventory(count), AllocationState(tuple(holdings)), starts, head("dave", want, quota)


#: The owners' ``gpu_limit`` in the property below: missing (above quota), unlimited, or 0..3.
OWNER_LIMITS = st.dictionaries(
    st.sampled_from(["alice", "bob", "carol"]),
    st.one_of(st.none(), st.integers(0, 3).map(Fraction)),
)


@PROPERTY_SETTINGS
@given(borrowed_worlds(), OWNER_LIMITS, st.sets(st.sampled_from(["c0", "c1", "c2"])))
def test_reclaim_takes_only_old_enough_borrowed_devices_as_few_as_needed(
    world: tuple[Inventory, AllocationState, dict[str, datetime | None], PendingRequest],
    limits: dict[str, Fraction | None],
    warned: set[str],
) -> None:
    inv, state, starts, request = world
    facts = HoldingFacts(starts, limits=limits, reclaiming=warned)
    choice = choose_reclaim(request, inv, state, NOW, ON, facts)
    by_name = {h.container: h for h in state.holdings}
    assert len(set(choice.containers)) == len(choice.containers)
    left = {user: sum((h.gpu_equivalents for h in state.of_user(user)), Fraction(0))
            for user in {h.user for h in state.holdings}}  # fmt: skip
    for name in choice.containers:
        # never a within-quota container, never one younger than the minimum runtime
        # (counted from its placement) unless it was warned already
        assert by_name[name].borrowed
        placed = starts[name]
        old_enough = placed is None or NOW - placed >= timedelta(minutes=ON.min_runtime_minutes)
        assert old_enough or name in warned
        # never from an owner who, without those taken before, holds no more than their quota
        owner = by_name[name].user
        if owner in limits:
            limit = limits[owner]
            assert limit is not None and left[owner] > limit
        left[owner] -= by_name[name].gpu_equivalents
    if not choice.containers:
        return
    freed = state
    for name in choice.containers:
        freed = freed.without(name)
    placement = allocate(
        request.request, request.user, request.quota, inv, freed, request.user_containers
    )
    # no device twice: the head's devices are held by nobody that remains
    assert not any(freed.holder_of(u) for u in placement.uuids)
    freed.with_holding(placement.holding(request.id, request.user))
    for kept in choice.containers:  # each one chosen is needed
        rest = state
        for name in choice.containers:
            if name != kept:
                rest = rest.without(name)
        with pytest.raises((NoCapacity, QuotaExceeded)):
            allocate(request.request, request.user, request.quota, inv, rest, ())


@PROPERTY_SETTINGS
@given(borrowed_worlds(), st.dictionaries(st.sampled_from(["c0", "c1", "c2"]), st.floats(0, 60)))
def test_nothing_is_reclaimed_while_nobody_within_quota_waits(
    world: tuple[Inventory, AllocationState, dict[str, datetime | None], PendingRequest],
    warned_minutes: dict[str, float],
) -> None:
    inv, state, starts, _ = world
    choice = choose_reclaim(None, inv, state, NOW, ON, HoldingFacts(starts))
    assert choice.containers == ()
    warned = {name: minutes_ago(m) for name, m in warned_minutes.items()}
    steps = reclaim_steps(choice, warned, NOW, ON)
    assert steps.warn == steps.stop == ()
    assert set(steps.cancel) == set(warned)


@PROPERTY_SETTINGS
@given(
    borrowed_worlds(),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from([Fraction(0), Fraction(1), Fraction(2)]),
)
def test_a_placement_keeps_both_the_quota_and_the_cap_and_takes_only_free_devices(
    world: tuple[Inventory, AllocationState, dict[str, datetime | None], PendingRequest],
    gpus: int,
    waiting: bool,
    cap: Fraction,
) -> None:
    inv, state, _, request = world
    policy = BorrowingConfig(enabled=True, max_borrowed_gpus=float(cap))
    user = "alice"
    before_quota = state.user_gpu_equivalents(user)
    before_borrowed = state.user_borrowed_equivalents(user)
    try:
        decision = allocate_borrowing(
            GpuRequest(whole_gpus=gpus), user, request.quota, inv, state, (),
            policy=policy, borrow=True, waiting=[head()] if waiting else [],
        )  # fmt: skip
    except (NoCapacity, QuotaExceeded):
        return
    after = state.with_holding(
        decision.placement.holding("new", user, borrowed=decision.borrowed)
    )  # raises if a device were held twice
    limit = request.quota.gpu_limit
    if decision.borrowed:
        assert not waiting
        assert limit is not None and before_quota + gpus > limit
        assert after.user_borrowed_equivalents(user) <= max(cap, before_borrowed)
        assert after.user_gpu_equivalents(user) == before_quota
    else:
        assert limit is None or after.user_gpu_equivalents(user) <= max(limit, before_quota)


# --------------------------------------------------------------------------------------------
# Borrowing is held back only by waiting requests that could use the devices it takes
# --------------------------------------------------------------------------------------------


def mig_slice(index: int, instance: int) -> Device:
    return Device(
        f"MIG-{index}-{instance}", "mig", index, uuid(index), A100, 20480,
        profile="3g.20gb", slices=3, instance_id=instance,
    )  # fmt: skip


def test_a_waiting_mig_request_or_a_blocked_one_does_not_stop_borrowing_a_whole_gpu() -> None:
    gpus = inventory(2)
    inv = Inventory("simulated", gpus.gpus, (gpus.devices[0], mig_slice(1, 1)))
    # alice uses her quota; the MIG slice is busy, so a MIG request within quota waits.
    state = AllocationState((Holding("own", "own", "alice", (), Fraction(1)),))
    state = state.with_holding(Holding("slice", "slice", "carol", ("MIG-1-1",), Fraction(3, 7)))
    mig_wait = replace(head("bob"), request=GpuRequest(mig_profiles=("3g.20gb",)))
    gpu_wait = head("dave")
    blocked_wait = replace(gpu_wait, blocked=frozenset({uuid(0)}))

    def borrow_with(waiting: list[PendingRequest]) -> bool:
        try:
            return allocate_borrowing(
                GpuRequest(whole_gpus=1), "alice", ONE_GPU, inv, state, ("own",),
                policy=ON, borrow=True, waiting=waiting,
            ).borrowed  # fmt: skip
        except QuotaExceeded as refused:
            assert "wait for the devices it would take" in refused.message
            return False

    assert borrow_with([mig_wait])  # a MIG slice request cannot use a whole GPU
    assert borrow_with([blocked_wait])  # a reservation keeps GPU 0 from it
    assert not borrow_with([gpu_wait])  # it could use GPU 0: it goes first
    assert not borrow_with([mig_wait, gpu_wait])


@PROPERTY_SETTINGS
@given(borrowed_worlds(), st.integers(1, 2), st.lists(st.integers(0, 2), max_size=3))
def test_a_borrow_never_takes_a_device_a_waiting_request_could_use(
    world: tuple[Inventory, AllocationState, dict[str, datetime | None], PendingRequest],
    gpus: int,
    blocked: list[int],
) -> None:
    inv, state, _, request = world
    waiting = replace(request, blocked=frozenset(uuid(i) for i in blocked))
    try:
        decision = allocate_borrowing(
            GpuRequest(whole_gpus=gpus), "alice", ONE_GPU, inv, state, (),
            policy=ON, borrow=True, waiting=[waiting],
        )  # fmt: skip
    except (NoCapacity, QuotaExceeded):
        return
    if decision.borrowed:
        assert all(
            d.uuid in waiting.blocked or not could_take(waiting.request, d)
            for d in decision.placement.devices
        )
