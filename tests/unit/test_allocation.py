"""Allocation core: examples on the default inventory, and properties over random ones."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ds01.config.gpu_config import mig_profile_memory_mib, mig_profile_slices
from ds01.core.allocation import (
    AllocationState,
    GpuRequest,
    Holding,
    Placement,
    allocate,
    check_container_count,
    check_mig_profiles_exist,
    equivalents_to_float,
    format_equivalents,
    free_devices,
    named_request,
    place,
)
from ds01.core.reservations import Reservation, blocked_devices
from ds01.errors import InvalidInput, NoCapacity, NotFound, QuotaExceeded
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.quota import GpuQuota

A100 = "NVIDIA A100-SXM4-40GB"
UNLIMITED = GpuQuota()

# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def gpu_uuid(index: int) -> str:
    return f"GPU-{index:08d}-0000-0000-0000-000000000000"


def mig_uuid(gpu_index: int, instance: int) -> str:
    return f"MIG-{gpu_index:08d}-{instance:04d}-0000-0000-000000000000"


def physical(index: int, *, mig: bool = False, total_slices: int = 7) -> PhysicalGpu:
    return PhysicalGpu(
        index=index,
        uuid=gpu_uuid(index),
        model=A100,
        memory_mib=40960,
        mig_enabled=mig,
        total_slices=total_slices,
    )


def whole(index: int) -> Device:
    return Device(
        uuid=gpu_uuid(index),
        kind="gpu",
        gpu_index=index,
        gpu_uuid=gpu_uuid(index),
        model=A100,
        memory_mib=40960,
    )


def mig_instances(gpu_index: int, profiles: Sequence[str], total_slices: int = 7) -> list[Device]:
    return [
        Device(
            uuid=mig_uuid(gpu_index, n),
            kind="mig",
            gpu_index=gpu_index,
            gpu_uuid=gpu_uuid(gpu_index),
            model=A100,
            memory_mib=mig_profile_memory_mib(profile),
            profile=profile,
            slices=mig_profile_slices(profile),
            total_slices=total_slices,
            instance_id=n + 1,
        )
        for n, profile in enumerate(profiles)
    ]


def holding(
    name: str, user: str, devices: Sequence[Device] = (), status: str = "running"
) -> Holding:
    return Holding(
        container=f"{name}._.{1000 + sum(map(ord, user))}",
        name=name,
        user=user,
        devices=tuple(d.uuid for d in devices),
        gpu_equivalents=sum((d.gpu_equivalents for d in devices), Fraction(0)),
        status=status,
    )


def state_of(*holdings: Holding) -> AllocationState:
    state = AllocationState()
    for h in holdings:
        state = state.with_holding(h)
    return state


@pytest.fixture
def inventory() -> Inventory:
    """Three whole A100s and GPU 3 split 3g.20gb + 2g.10gb + 1g.5gb + 1g.5gb."""
    return Inventory(
        backend="simulated",
        gpus=(physical(0), physical(1), physical(2), physical(3, mig=True)),
        devices=(
            whole(0),
            whole(1),
            whole(2),
            *mig_instances(3, ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")),
        ),
    )


def by_profile(inventory: Inventory, profile: str) -> list[Device]:
    return [d for d in inventory.devices if d.profile == profile]


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(1), "1.0"),
        (Fraction(3, 7), "0.43"),
        (Fraction(5, 2), "2.5"),
        (Fraction(0), "0.0"),
        (Fraction(1, 8), "0.13"),
        (Fraction(7, 7), "1.0"),
        (Fraction(2, 7) + Fraction(1, 7) * 5, "1.0"),
        (Fraction(-1, 2), "-0.5"),
    ],
)
def test_format_equivalents(value: Fraction, text: str) -> None:
    assert format_equivalents(value) == text


def test_equivalents_to_float_rounds_to_four_decimals() -> None:
    assert equivalents_to_float(Fraction(3, 7)) == 0.4286
    assert equivalents_to_float(Fraction(1)) == 1.0


# --------------------------------------------------------------------------------------------
# Requests and quotas
# --------------------------------------------------------------------------------------------


def test_request_properties() -> None:
    assert GpuRequest().is_empty
    assert GpuRequest().device_count == 0
    assert GpuRequest().min_gpu_equivalents() == 0
    two = GpuRequest(whole_gpus=2)
    assert not two.is_empty and two.device_count == 2 and two.min_gpu_equivalents() == 2
    mig = GpuRequest(mig_profiles=("3g.20gb",))
    assert mig.device_count == 1
    assert mig.min_gpu_equivalents() == Fraction(3, 7)
    assert mig.min_gpu_equivalents(total_slices=8) == Fraction(3, 8)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"whole_gpus": -1}, "cannot be negative"),
        ({"whole_gpus": 1.5}, "whole number"),
        ({"whole_gpus": True}, "whole number"),
        ({"mig_profiles": ("3g.20GB",)}, "Unknown MIG profile '3g.20GB'"),
        ({"mig_profiles": ("8g.80gb",)}, "Unknown MIG profile"),
        ({"mig_profiles": ("",)}, "Unknown MIG profile"),
        ({"mig_profiles": (3,)}, "must be a string"),
        ({"mig_profiles": ["1g.5gb"]}, "tuple"),
        ({"whole_gpus": 1, "mig_profiles": ("1g.5gb",)}, "either whole GPUs or MIG instances"),
        ({"mig_profiles": ("1g.5gb", "1g.5gb")}, "one MIG instance, not 2"),
        ({"mig_profiles": ("3g.20gb", "2g.10gb", "1g.5gb")}, "one MIG instance, not 3"),
    ],
)
def test_request_validation(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment) as caught:
        GpuRequest(**kwargs)  # type: ignore[arg-type]
    assert caught.value.exit_code == 2


def test_a_second_mig_instance_is_refused_with_the_reason() -> None:
    """A CUDA process enumerates one MIG instance: a second would be charged and never used."""
    with pytest.raises(InvalidInput) as caught:
        GpuRequest(mig_profiles=("2g.10gb", "1g.5gb"))
    assert caught.value.message == (
        "A container gets one MIG instance, not 2 (2g.10gb, 1g.5gb): a CUDA process uses only "
        "one MIG instance; ask for a larger profile, or whole GPUs with --gpus."
    )
    assert caught.value.details == {"mig_profiles": ["2g.10gb", "1g.5gb"], "most": 1}
    assert GpuRequest(whole_gpus=3).device_count == 3  # whole GPUs may still be several


def test_quota_from_values_keeps_decimal_values_exact() -> None:
    quota = GpuQuota.from_values(gpu_limit=0.1, max_gpus_per_container=1.5, max_containers=3)
    assert quota.gpu_limit == Fraction(1, 10)
    assert quota.max_gpus_per_container == Fraction(3, 2)
    assert quota.max_containers == 3
    assert GpuQuota.from_values(gpu_limit=None).gpu_limit is None
    assert GpuQuota.from_values(gpu_limit=2).gpu_limit == Fraction(2)
    assert GpuQuota.from_values(gpu_limit=Fraction(3, 7)).gpu_limit == Fraction(3, 7)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gpu_limit": -1.0},
        {"max_gpus_per_container": -0.5},
        {"max_containers": -1},
        {"gpu_limit": float("nan")},
        {"gpu_limit": float("inf")},
    ],
)
def test_quota_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        GpuQuota.from_values(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


def test_state_indexes(inventory: Inventory) -> None:
    a = holding("thesis", "alice", [whole(0)])
    b = holding("nb", "alice", by_profile(inventory, "1g.5gb")[:1], status="exited")
    c = holding("big", "bob", [whole(1), whole(2)])
    state = state_of(a, b, c)
    assert state.held() == {gpu_uuid(0): a, mig_uuid(3, 2): b, gpu_uuid(1): c, gpu_uuid(2): c}
    assert state.holder_of(gpu_uuid(1)) == c
    assert state.holder_of(mig_uuid(3, 0)) is None
    assert state.of_user("alice") == (a, b)
    assert state.of_user("nobody") == ()
    assert state.user_gpu_equivalents("alice") == Fraction(8, 7)
    assert state.user_gpu_equivalents("bob") == 2
    assert state.user_gpu_equivalents("nobody") == 0


def test_held_returns_a_copy() -> None:
    state = state_of(holding("thesis", "alice", [whole(0)]))
    state.held().clear()
    assert state.holder_of(gpu_uuid(0)) is not None


def test_with_holding_replaces_same_container_and_refuses_double_holding() -> None:
    first = holding("thesis", "alice", [whole(0)])
    state = state_of(first)
    moved = holding("thesis", "alice", [whole(1)])
    assert state.with_holding(moved).holdings == (moved,)
    with pytest.raises(ValueError, match="already held by container 'thesis"):
        state.with_holding(holding("other", "bob", [whole(0)]))
    assert state.holdings == (first,)


def test_without_is_idempotent() -> None:
    state = state_of(holding("thesis", "alice", [whole(0)]))
    assert state.without("nope._.1") is state
    empty = state.without(state.holdings[0].container)
    assert empty.holdings == () and empty.held() == {}


def test_holding_rejects_duplicate_devices() -> None:
    with pytest.raises(ValueError, match="twice"):
        Holding("c._.1", "c", "alice", (gpu_uuid(0), gpu_uuid(0)), Fraction(2), "running")


def test_first_holder_wins_when_docker_was_changed_behind_our_back() -> None:
    a = holding("a", "alice", [whole(0)])
    b = holding("b", "bob", [whole(0)])
    assert AllocationState((a, b)).holder_of(gpu_uuid(0)) == a


# --------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------


def test_empty_request_places_nothing(inventory: Inventory) -> None:
    assert place(GpuRequest(), inventory, AllocationState()) == Placement()
    assert Placement().uuids == () and Placement().gpu_equivalents == 0


def test_whole_gpus_lowest_index_first(inventory: Inventory) -> None:
    state = AllocationState()
    placement = place(GpuRequest(whole_gpus=1), inventory, state)
    assert placement.uuids == (gpu_uuid(0),)
    assert placement.gpu_equivalents == 1
    state = state.with_holding(holding("a", "alice", placement.devices))
    assert place(GpuRequest(whole_gpus=2), inventory, state).uuids == (gpu_uuid(1), gpu_uuid(2))


def test_whole_gpus_order_numerically_not_as_strings() -> None:
    inventory = Inventory(
        backend="simulated",
        gpus=tuple(physical(i) for i in (10, 2)),
        devices=(whole(10), whole(2)),
    )
    assert place(GpuRequest(whole_gpus=1), inventory, AllocationState()).uuids == (gpu_uuid(2),)


def test_reserved_devices_are_never_placed(inventory: Inventory) -> None:
    reserved = Inventory(
        backend=inventory.backend,
        gpus=inventory.gpus,
        devices=inventory.devices,
        reserved=frozenset({gpu_uuid(0), mig_uuid(3, 2)}),
    )
    assert place(GpuRequest(whole_gpus=1), reserved, AllocationState()).uuids == (gpu_uuid(1),)
    assert place(GpuRequest(mig_profiles=("1g.5gb",)), reserved, AllocationState()).uuids == (
        mig_uuid(3, 3),
    )


def test_mig_best_fit_takes_the_smallest_sufficient_instance(inventory: Inventory) -> None:
    state = AllocationState()
    assert place(GpuRequest(mig_profiles=("2g.10gb",)), inventory, state).uuids == (mig_uuid(3, 1),)
    assert place(GpuRequest(mig_profiles=("1g.5gb",)), inventory, state).uuids == (mig_uuid(3, 2),)
    # With the 2g taken, a 2g request gets the 3g rather than failing.
    state = state.with_holding(holding("nb", "alice", [inventory.by_uuid()[mig_uuid(3, 1)]]))
    placement = place(GpuRequest(mig_profiles=("2g.10gb",)), inventory, state)
    assert placement.uuids == (mig_uuid(3, 0),)
    assert placement.gpu_equivalents == Fraction(3, 7)


def test_a_mig_profile_no_instance_here_can_serve_is_not_found_and_the_profiles_are_named(
    inventory: Inventory,
) -> None:
    check_mig_profiles_exist(GpuRequest(mig_profiles=("3g.20gb",)), inventory)
    check_mig_profiles_exist(GpuRequest(mig_profiles=("1g.10gb",)), inventory)  # a 2g serves it
    with pytest.raises(NotFound) as refused:
        check_mig_profiles_exist(GpuRequest(mig_profiles=("4g.20gb",)), inventory)
    assert "no MIG instance of profile 4g.20gb" in refused.value.message
    assert "MIG profiles here: 1g.5gb, 2g.10gb, 3g.20gb." in refused.value.message
    whole_only = Inventory(backend="simulated", gpus=(physical(0),), devices=(whole(0),))
    with pytest.raises(NotFound, match=r"no MIG instances\. Ask for a whole GPU"):
        check_mig_profiles_exist(GpuRequest(mig_profiles=("1g.5gb",)), whole_only)
    check_mig_profiles_exist(GpuRequest(whole_gpus=1), whole_only)


def test_mig_requests_one_after_another_never_get_an_instance_twice(
    inventory: Inventory,
) -> None:
    state, got = AllocationState(), []
    for number, profile in enumerate(("2g.10gb", "1g.5gb", "1g.5gb", "1g.5gb")):
        placement = place(GpuRequest(mig_profiles=(profile,)), inventory, state)
        state = state.with_holding(holding(f"c{number}", "alice", list(placement.devices)))
        got += placement.uuids
    # The 2g gets the 2g, the first two 1g.5gb the two 1g, the third 1g the 3g.
    assert got == [mig_uuid(3, 1), mig_uuid(3, 2), mig_uuid(3, 3), mig_uuid(3, 0)]
    assert state.user_gpu_equivalents("alice") == 1


def test_mig_memory_must_suffice() -> None:
    inventory = Inventory(
        backend="simulated",
        gpus=(physical(0, mig=True),),
        devices=tuple(mig_instances(0, ("1g.5gb", "2g.10gb"))),
    )
    # 1g.10gb needs 10 GB: the 1g.5gb has the slice but not the memory.
    placement = place(GpuRequest(mig_profiles=("1g.10gb",)), inventory, AllocationState())
    assert placement.uuids == (mig_uuid(0, 1),)


def test_mig_prefers_less_memory_among_equal_slices() -> None:
    inventory = Inventory(
        backend="simulated",
        gpus=(physical(0, mig=True),),
        devices=tuple(mig_instances(0, ("1g.10gb", "1g.5gb"))),
    )
    placement = place(GpuRequest(mig_profiles=("1g.5gb",)), inventory, AllocationState())
    assert placement.uuids == (mig_uuid(0, 1),)


def test_mig_exact_profile_matches_even_when_driver_reports_less_memory() -> None:
    reported_less = Device(
        uuid=mig_uuid(0, 0),
        kind="mig",
        gpu_index=0,
        gpu_uuid=gpu_uuid(0),
        model=A100,
        memory_mib=19968,
        profile="3g.20gb",
        slices=3,
        instance_id=1,
    )
    inventory = Inventory("nvml", gpus=(physical(0, mig=True),), devices=(reported_less,))
    placement = place(GpuRequest(mig_profiles=("3g.20gb",)), inventory, AllocationState())
    assert placement.uuids == (reported_less.uuid,)


def test_mig_packs_onto_the_gpu_with_fewest_free_slices() -> None:
    inventory = Inventory(
        backend="simulated",
        gpus=(physical(0, mig=True), physical(1, mig=True)),
        devices=(
            *mig_instances(0, ("1g.5gb",) * 7),
            *mig_instances(1, ("3g.20gb", "1g.5gb", "1g.5gb")),
        ),
    )
    # GPU 1 has 5 free slices, GPU 0 has 7: pack onto GPU 1 even though its index is higher.
    placement = place(GpuRequest(mig_profiles=("1g.5gb",)), inventory, AllocationState())
    assert placement.uuids == (mig_uuid(1, 1),)


def test_gpu_in_mig_mode_without_instances_is_unusable_not_free() -> None:
    # A backend that (wrongly) still lists the whole device of a GPU in MIG mode.
    inventory = Inventory(
        backend="simulated",
        gpus=(physical(0, mig=True), physical(1)),
        devices=(whole(0), whole(1)),
    )
    assert free_devices(inventory, AllocationState()) == (whole(1),)
    with pytest.raises(NoCapacity):
        place(GpuRequest(whole_gpus=2), inventory, AllocationState())


def test_whole_gpu_device_of_a_gpu_with_mig_instances_is_not_free() -> None:
    inventory = Inventory(
        backend="simulated",
        gpus=(physical(0),),
        devices=(whole(0), *mig_instances(0, ("7g.40gb",))),
    )
    assert [d.uuid for d in free_devices(inventory, AllocationState())] == [mig_uuid(0, 0)]


def test_server_without_gpus_says_why() -> None:
    no_driver = Inventory("nvml", message="no NVIDIA driver")
    with pytest.raises(NoCapacity, match=r"offers no GPUs \(no NVIDIA driver\); 1 whole GPU"):
        allocate(GpuRequest(whole_gpus=1), "alice", UNLIMITED, no_driver, AllocationState(), [])
    assert allocate(GpuRequest(), "alice", UNLIMITED, no_driver, AllocationState(), []) == (
        Placement()
    )


def test_no_capacity_message_says_what_is_free(inventory: Inventory) -> None:
    state = state_of(
        holding("a", "alice", [whole(0), whole(1), whole(2)]),
        holding("b", "bob", by_profile(inventory, "3g.20gb") + by_profile(inventory, "2g.10gb")),
        holding("c", "carol", by_profile(inventory, "1g.5gb")[:1]),
    )
    with pytest.raises(NoCapacity) as caught:
        place(GpuRequest(mig_profiles=("3g.20gb",)), inventory, state)
    assert caught.value.message.startswith(
        "No free 3g.20gb MIG instance: free now: 1g.5gb on GPU 3. "
    )
    assert caught.value.details == {"requested": "3g.20gb", "free": ["3:1g.5gb#4"]}

    with pytest.raises(NoCapacity, match=r"2 requested, 0 free\. Free now: 1g\.5gb on GPU 3\."):
        place(GpuRequest(whole_gpus=2), inventory, state)


def test_no_capacity_lists_whole_gpus_and_counts_instances(inventory: Inventory) -> None:
    state = state_of(holding("a", "alice", [whole(0), *by_profile(inventory, "3g.20gb")]))
    with pytest.raises(NoCapacity) as caught:
        place(GpuRequest(whole_gpus=3), inventory, state)
    assert "Free now: whole GPUs 1, 2; 2x 1g.5gb on GPU 3, 2g.10gb on GPU 3." in str(caught.value)


# --------------------------------------------------------------------------------------------
# The full decision
# --------------------------------------------------------------------------------------------


def test_container_count_message() -> None:
    quota = GpuQuota(max_containers=3)
    check_container_count(quota, ["a", "b"])
    with pytest.raises(QuotaExceeded) as caught:
        check_container_count(quota, ["a", "b", "c"])
    assert caught.value.message == (
        "Container limit reached: 3 of 3 containers (a, b, c). "
        "Remove one with `container-remove NAME`."
    )
    assert caught.value.details == {"limit": 3, "in_use": 3, "containers": ["a", "b", "c"]}
    assert caught.value.exit_code == 3
    with pytest.raises(QuotaExceeded, match="allow 0 containers"):
        check_container_count(GpuQuota(max_containers=0), [])
    check_container_count(UNLIMITED, ["x"] * 1000)


def test_allocate_counts_containers_even_without_gpus(inventory: Inventory) -> None:
    with pytest.raises(QuotaExceeded, match="Container limit reached"):
        allocate(
            GpuRequest(), "alice", GpuQuota(max_containers=1), inventory, AllocationState(), ["a"]
        )
    assert allocate(GpuRequest(), "alice", UNLIMITED, inventory, AllocationState(), []) == (
        Placement()
    )


def test_gpu_quota_reached_names_the_containers_holding_it(inventory: Inventory) -> None:
    state = state_of(holding("thesis", "alice", [whole(0)]), holding("x", "bob", [whole(1)]))
    quota = GpuQuota.from_values(gpu_limit=1.0)
    with pytest.raises(QuotaExceeded) as caught:
        allocate(GpuRequest(whole_gpus=1), "alice", quota, inventory, state, ["thesis"])
    assert caught.value.message == (
        "GPU quota reached: 1.0 of 1.0 GPU-equivalents in use by thesis. Stop or remove one "
        "with `container-stop NAME` / `container-remove NAME`, or ask for less."
    )
    assert caught.value.details == {
        "limit": 1.0,
        "in_use": 1.0,
        "requested": 1.0,
        "containers": ["thesis"],
    }


def test_gpu_quota_partially_used(inventory: Inventory) -> None:
    state = state_of(
        holding("thesis", "alice", by_profile(inventory, "3g.20gb")),
        holding("cpu-only", "alice"),
    )
    quota = GpuQuota.from_values(gpu_limit=1.0)
    with pytest.raises(QuotaExceeded) as caught:
        allocate(GpuRequest(whole_gpus=1), "alice", quota, inventory, state, ["thesis", "cpu"])
    assert caught.value.message.startswith(
        "GPU quota exceeded: this request needs 1.0 GPU-equivalents, 0.57 of 1.0 are left "
        "(0.43 in use by thesis)."
    )
    assert caught.value.details["containers"] == ["thesis"]
    # What is left still fits a smaller request, exactly: 3/7 + 1/7 + 1/7 + 2/7 == 1.
    small = by_profile(inventory, "1g.5gb")
    state = state_of(
        holding("thesis", "alice", by_profile(inventory, "3g.20gb")),
        holding("s1", "alice", small[:1]),
        holding("s2", "alice", small[1:]),
    )
    placement = allocate(
        GpuRequest(mig_profiles=("2g.10gb",)), "alice", quota, inventory, state, ["thesis"]
    )
    assert state.user_gpu_equivalents("alice") + placement.gpu_equivalents == 1


def test_quota_first_even_when_nothing_is_free(inventory: Inventory) -> None:
    everything = state_of(holding("all", "bob", inventory.devices))
    quota = GpuQuota.from_values(gpu_limit=0.5)
    with pytest.raises(QuotaExceeded, match=r"your limit is 0\.5"):
        allocate(GpuRequest(whole_gpus=1), "alice", quota, inventory, everything, [])
    with pytest.raises(NoCapacity):
        allocate(GpuRequest(mig_profiles=("1g.5gb",)), "alice", quota, inventory, everything, [])


def test_per_container_cap(inventory: Inventory) -> None:
    quota = GpuQuota.from_values(max_gpus_per_container=1.0)
    with pytest.raises(QuotaExceeded) as caught:
        allocate(GpuRequest(whole_gpus=2), "alice", quota, inventory, AllocationState(), [])
    assert caught.value.message == (
        "Per-container GPU limit: this request needs 2.0 GPU-equivalents, one container may "
        "have at most 1.0. Ask for less."
    )
    assert caught.value.details == {"limit": 1.0, "requested": 2.0}
    # The cap bounds one container, not the user's total.
    state = state_of(holding("one", "alice", [whole(0)]))
    assert allocate(GpuRequest(whole_gpus=1), "alice", quota, inventory, state, ["one"]).uuids == (
        gpu_uuid(1),
    )


@pytest.mark.parametrize(
    ("quota", "request_", "message"),
    [
        (
            GpuQuota(allow_full_gpu=False),
            GpuRequest(whole_gpus=1),
            "Your limits do not allow whole GPUs. Ask for a MIG instance instead.",
        ),
        (
            GpuQuota(allow_mig=False),
            GpuRequest(mig_profiles=("1g.5gb",)),
            "Your limits do not allow MIG instances. Ask for a whole GPU instead.",
        ),
        (
            GpuQuota(allow_full_gpu=False, allow_mig=False),
            GpuRequest(whole_gpus=1),
            "Your limits do not allow whole GPUs. Ask an admin.",
        ),
    ],
)
def test_gpu_kind_policy(
    inventory: Inventory, quota: GpuQuota, request_: GpuRequest, message: str
) -> None:
    with pytest.raises(QuotaExceeded) as caught:
        allocate(request_, "alice", quota, inventory, AllocationState(), [])
    assert caught.value.message == message


def test_larger_instance_that_would_break_the_quota_is_avoided() -> None:
    # GPU 0 (7 slices) is fuller, so plain best fit packs onto it: 2/7 GPU-equivalents.
    # GPU 1 has 8 slices: the same 2g there is 2/8, which is exactly what alice has left.
    inventory = Inventory(
        backend="simulated",
        gpus=(physical(0, mig=True), physical(1, mig=True, total_slices=8)),
        devices=(
            *mig_instances(0, ("2g.10gb",)),
            *mig_instances(1, ("2g.10gb", "2g.10gb"), total_slices=8),
        ),
    )
    request = GpuRequest(mig_profiles=("2g.10gb",))
    assert place(request, inventory, AllocationState()).uuids == (mig_uuid(0, 0),)
    quota = GpuQuota(gpu_limit=Fraction(1, 4))
    placement = allocate(request, "alice", quota, inventory, AllocationState(), [])
    assert placement.uuids == (mig_uuid(1, 0),)
    assert placement.gpu_equivalents == Fraction(1, 4)


def test_only_a_larger_instance_over_quota_is_no_capacity(inventory: Inventory) -> None:
    state = state_of(holding("x", "bob", by_profile(inventory, "2g.10gb")))
    quota = GpuQuota(gpu_limit=Fraction(2, 7))
    with pytest.raises(NoCapacity) as caught:
        allocate(GpuRequest(mig_profiles=("2g.10gb",)), "alice", quota, inventory, state, [])
    assert "No free 2g.10gb MIG instance fits within your remaining GPU quota of 0.29" in str(
        caught.value
    )
    assert caught.value.details["limit"] == 0.2857


def test_unlimited_user_gets_plain_best_fit(inventory: Inventory) -> None:
    request = GpuRequest(mig_profiles=("1g.10gb",))
    assert allocate(request, "alice", UNLIMITED, inventory, AllocationState(), []) == place(
        request, inventory, AllocationState()
    )


# --------------------------------------------------------------------------------------------
# Properties over random inventories, users, quotas and request/release sequences
# --------------------------------------------------------------------------------------------

# A100 profiles: each one satisfies every profile listed before it.
PROFILES = ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")
LIMITS: tuple[Fraction | None, ...] = (
    None,
    *map(Fraction, ("3", "2", "3/2", "1", "1/2", "2/7", "1/7", "0")),
)


@st.composite
def mig_layouts(draw: st.DrawFn) -> tuple[str, ...]:
    wanted = draw(st.lists(st.sampled_from(PROFILES), min_size=1, max_size=7))
    layout: list[str] = []
    for profile in wanted:
        if sum(map(mig_profile_slices, layout)) + mig_profile_slices(profile) <= 7:
            layout.append(profile)
    return tuple(layout)


@st.composite
def inventories(draw: st.DrawFn) -> Inventory:
    gpus: list[PhysicalGpu] = []
    devices: list[Device] = []
    for index in range(draw(st.integers(1, 5))):
        mode = draw(st.sampled_from(("whole", "mig", "mig-without-instances")))
        gpus.append(physical(index, mig=mode != "whole"))
        if mode == "whole":
            devices.append(whole(index))
        elif mode == "mig":
            devices.extend(mig_instances(index, draw(mig_layouts())))
        elif draw(st.booleans()):  # a backend that wrongly lists it as a whole device
            devices.append(whole(index))
    uuids = sorted(d.uuid for d in devices)
    reserved = draw(st.frozensets(st.sampled_from(uuids))) if uuids else frozenset()
    return Inventory("simulated", tuple(gpus), tuple(devices), reserved=reserved)


# Half the users are unlimited, so that sequences fill the inventory before limits bite.
quotas = st.one_of(
    st.just(UNLIMITED),
    st.builds(
        GpuQuota,
        gpu_limit=st.sampled_from(LIMITS),
        max_gpus_per_container=st.sampled_from(LIMITS),
        allow_full_gpu=st.booleans(),
        allow_mig=st.booleans(),
        max_containers=st.sampled_from((None, 4, 3, 2, 1, 0)),
    ),
)
requests = st.one_of(
    st.builds(GpuRequest, whole_gpus=st.integers(1, 3)),
    st.builds(GpuRequest, mig_profiles=st.sampled_from(PROFILES).map(lambda p: (p,))),
    st.just(GpuRequest()),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 3), requests),
        st.tuples(st.just("remove"), st.integers(0, 50), st.just(GpuRequest())),
    ),
    max_size=25,
)


def unusable_uuids(inventory: Inventory) -> set[str]:
    """Devices that must never be handed out: reserved, or whole devices of MIG-mode GPUs."""
    mig_mode = {g.uuid for g in inventory.gpus if g.mig_enabled}
    return set(inventory.reserved) | {
        d.uuid for d in inventory.devices if d.kind == "gpu" and d.gpu_uuid in mig_mode
    }


def check_invariants(
    state: AllocationState,
    inventory: Inventory,
    quota_of: dict[str, GpuQuota],
    containers: dict[str, str],
) -> None:
    by_uuid = inventory.by_uuid()
    held = [uuid for h in state.holdings for uuid in h.devices]
    assert len(held) == len(set(held)), "a device is held twice"
    assert not set(held) & unusable_uuids(inventory), "a reserved or unusable device was placed"
    for h in state.holdings:
        quota = quota_of[h.user]
        devices = [by_uuid[u] for u in h.devices]
        assert h.gpu_equivalents == sum((d.gpu_equivalents for d in devices), Fraction(0))
        if quota.max_gpus_per_container is not None:
            assert h.gpu_equivalents <= quota.max_gpus_per_container
        assert quota.allow_full_gpu or all(d.kind == "mig" for d in devices)
        assert quota.allow_mig or all(d.kind == "gpu" for d in devices)
    for user, quota in quota_of.items():
        if quota.gpu_limit is not None:
            assert state.user_gpu_equivalents(user) <= quota.gpu_limit
        if quota.max_containers is not None:
            assert sum(1 for u in containers.values() if u == user) <= quota.max_containers


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inventory=inventories(),
    user_quotas=st.lists(quotas, min_size=1, max_size=4),
    ops=operations,
)
def test_sequences_of_requests_and_releases_keep_every_invariant(
    inventory: Inventory, user_quotas: list[GpuQuota], ops: list[tuple[str, int, GpuRequest]]
) -> None:
    users = [f"user{i}" for i in range(len(user_quotas))]
    quota_of = dict(zip(users, user_quotas, strict=True))
    state = AllocationState()
    containers: dict[str, str] = {}  # Docker name -> user, including containers without GPUs
    for serial, (action, number, request) in enumerate(ops):
        if action == "remove":
            if containers:
                victim = list(containers)[number % len(containers)]
                del containers[victim]
                state = state.without(victim)
        else:
            user = users[number % len(users)]
            names = [c.split("._.")[0] for c, u in containers.items() if u == user]
            before = state.holdings
            args = (request, user, quota_of[user], inventory, state, names)
            try:
                placement = allocate(*args)
            except (QuotaExceeded, NoCapacity) as refused:
                event(f"refused: {refused.kind}")
                assert state.holdings == before
                # The same question gets the same answer.
                fresh = AllocationState(before)
                with pytest.raises(type(refused), match=f"^{re.escape(str(refused))}$"):
                    allocate(request, user, quota_of[user], inventory, fresh, names)
                continue
            # The same question gets the same answer, also from a freshly built state.
            fresh = AllocationState(before)
            assert allocate(request, user, quota_of[user], inventory, fresh, names) == placement
            assert len(placement.devices) == request.device_count
            event(f"placed: {'MIG' if request.mig_profiles else request.describe()}")
            assert placement.gpu_equivalents >= request.min_gpu_equivalents()
            container = f"c{serial}._.{1000 + number % len(users)}"
            containers[container] = user
            state = state.with_holding(
                Holding(
                    container=container,
                    name=f"c{serial}",
                    user=user,
                    devices=placement.uuids,
                    gpu_equivalents=placement.gpu_equivalents,
                    status="running",
                )
            )
        check_invariants(state, inventory, quota_of, containers)


def brute_force_cheapest(need: str, free: Sequence[Device]) -> Fraction | None:
    """The least GPU-equivalents of a free MIG instance that serves ``need``, or None."""
    serving = [
        d.gpu_equivalents
        for d in free
        if d.slices >= mig_profile_slices(need) and d.memory_mib >= mig_profile_memory_mib(need)
    ]
    return min(serving, default=None)


@settings(max_examples=200, deadline=None)
@given(
    layouts=st.lists(mig_layouts(), min_size=1, max_size=2),
    taken=st.sets(st.integers(0, 13)),
    need=st.sampled_from(PROFILES),
)
def test_mig_best_fit_is_complete_and_cheapest(
    layouts: list[tuple[str, ...]], taken: set[int], need: str
) -> None:
    devices = [d for i, layout in enumerate(layouts) for d in mig_instances(i, layout)]
    inventory = Inventory(
        "simulated", tuple(physical(i, mig=True) for i in range(len(layouts))), tuple(devices)
    )
    held = [d for i, d in enumerate(devices) if i in taken]
    state = state_of(holding("other", "bob", held))
    free = [d for d in devices if d not in held]
    cheapest = brute_force_cheapest(need, free)
    request = GpuRequest(mig_profiles=(need,))
    if cheapest is None:
        with pytest.raises(NoCapacity):
            place(request, inventory, state)
    else:
        placement = place(request, inventory, state)
        assert placement.gpu_equivalents == cheapest
        assert len(placement.uuids) == 1
        assert not set(placement.uuids) & {d.uuid for d in held}


@settings(max_examples=100, deadline=None)
@given(inventory=inventories(), request=requests)
def test_placement_is_deterministic_and_independent_of_holding_order(
    inventory: Inventory, request: GpuRequest
) -> None:
    usable = free_devices(inventory, AllocationState())
    holdings = tuple(holding(f"h{i}", f"u{i % 3}", [d]) for i, d in enumerate(usable[::2]))
    forward, backward = AllocationState(holdings), AllocationState(holdings[::-1])
    try:
        expected = place(request, inventory, forward)
    except NoCapacity:
        with pytest.raises(NoCapacity):
            place(request, inventory, backward)
        return
    assert place(request, inventory, backward) == expected


@settings(max_examples=200, deadline=None)
@given(inventory=inventories(), request=requests, held_every=st.integers(1, 4))
def test_a_tight_quota_is_never_broken_by_a_larger_instance(
    inventory: Inventory, request: GpuRequest, held_every: int
) -> None:
    usable = free_devices(inventory, AllocationState())
    state = AllocationState((holding("other", "bob", usable[::held_every]),))
    quota = GpuQuota(gpu_limit=request.min_gpu_equivalents())
    try:
        placement = allocate(request, "alice", quota, inventory, state, [])
    except NoCapacity:
        return
    assert placement.gpu_equivalents == request.min_gpu_equivalents()


# --------------------------------------------------------------------------------------------
# Devices named by the caller (docker run --gpus device=…)
# --------------------------------------------------------------------------------------------

NOON = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)
NOTHING_HELD = AllocationState()


def named(ids: Sequence[str], inventory: Inventory, state: AllocationState = NOTHING_HELD,
          quota: GpuQuota = UNLIMITED, user: str = "alice") -> Placement:  # fmt: skip
    """Allocate exactly the devices ``ids`` name for ``user``."""
    return allocate(named_request(ids, inventory), user, quota, inventory, state, [])


def test_a_free_named_gpu_is_placed_by_index_or_uuid(inventory: Inventory) -> None:
    assert named(["1"], inventory).uuids == (gpu_uuid(1),)
    assert named([gpu_uuid(2), "0"], inventory).uuids == (gpu_uuid(2), gpu_uuid(0))
    mig = by_profile(inventory, "2g.10gb")[0]
    placed = named([mig.uuid], inventory)
    assert placed.uuids == (mig.uuid,)
    assert placed.gpu_equivalents == Fraction(2, 7)


def test_a_named_gpu_held_by_another_is_refused_naming_the_holder(inventory: Inventory) -> None:
    state = state_of(holding("train", "bob", [whole(1)]))
    with pytest.raises(NoCapacity) as refused:
        named(["0", "1"], inventory, state)
    assert f"GPU 1 ({gpu_uuid(1)}) is held by a container of bob's" in refused.value.message
    assert "train" not in refused.value.message  # another user's container name is theirs
    mine = state_of(holding("train", "alice", [whole(1)]))
    with pytest.raises(NoCapacity, match="held by your container 'train'"):
        named(["1"], inventory, mine)


def test_a_named_gpu_a_reservation_keeps_for_another_is_refused(inventory: Inventory) -> None:
    kept = Reservation("r1", "bob", (gpu_uuid(2),), NOON, NOON + timedelta(hours=2), Fraction(1))
    for_alice = replace(inventory, reserved=blocked_devices([kept], "alice", NOON, None))
    with pytest.raises(NoCapacity, match=r"GPU 2 .* is kept for someone else"):
        named(["2"], for_alice)
    for_bob = replace(inventory, reserved=blocked_devices([kept], "bob", NOON, None))
    assert named(["2"], for_bob, user="bob").uuids == (gpu_uuid(2),)


def test_named_gpus_over_quota_are_refused(inventory: Inventory) -> None:
    with pytest.raises(QuotaExceeded, match=r"needs 2\.0 GPU-equivalents, your limit is 1\.0"):
        named(["0", "1"], inventory, quota=GpuQuota(gpu_limit=Fraction(1)))
    with pytest.raises(QuotaExceeded, match="Per-container GPU limit"):
        named(["0", "1"], inventory, quota=GpuQuota(max_gpus_per_container=Fraction(1)))
    with pytest.raises(QuotaExceeded, match="do not allow whole GPUs"):
        named(["0"], inventory, quota=GpuQuota(allow_full_gpu=False))
    three = by_profile(inventory, "3g.20gb")[0]  # 3/7 counts against the quota, not 1/7
    with pytest.raises(QuotaExceeded):
        named([three.uuid], inventory, quota=GpuQuota(gpu_limit=Fraction(2, 7)))


def test_mig_and_whole_gpus_mixed_or_two_mig_instances_are_refused(inventory: Inventory) -> None:
    one, other = by_profile(inventory, "1g.5gb")
    with pytest.raises(InvalidInput, match="either whole GPUs or MIG instances"):
        named_request(["0", one.uuid], inventory)
    with pytest.raises(InvalidInput, match="one MIG instance"):
        named_request([one.uuid, other.uuid], inventory)
    with pytest.raises(InvalidInput, match="GPU 3 is in MIG mode"):
        named_request(["3"], inventory)


def test_an_unknown_or_repeated_id_is_refused_with_the_ids_to_name(inventory: Inventory) -> None:
    with pytest.raises(NotFound) as unknown:
        named_request(["7"], inventory)
    assert "There is no device '7' here. Devices you can name: 0, 1, 2, MIG-" in (
        unknown.value.message
    )
    with pytest.raises(NotFound):
        named_request(["GPU-nobody"], inventory)
    with pytest.raises(InvalidInput, match="named twice"):
        named_request(["1", gpu_uuid(1)], inventory)
    for bad in ([], ["gpu0"], ["1;2"], ["1" * 4]):
        with pytest.raises(InvalidInput):
            named_request(bad, inventory)


@settings(max_examples=200, deadline=None)
@given(
    inventory=inventories(),
    picks=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    held_every=st.integers(1, 4),
)
def test_named_devices_are_placed_exactly_or_refused_never_twice(
    inventory: Inventory, picks: list[int], held_every: int
) -> None:
    """Whatever is named: exactly those devices, each once, none held, reserved or unusable;
    or a refusal, never a substitute."""
    if not inventory.devices:
        return
    ids = [inventory.devices[p % len(inventory.devices)].uuid for p in picks]
    usable = free_devices(inventory, AllocationState())
    state = AllocationState((holding("other", "bob", usable[::held_every]),))
    try:
        placement = named(ids, inventory, state)
    except (InvalidInput, NoCapacity):
        return
    assert placement.uuids == tuple(ids)
    assert len(set(placement.uuids)) == len(placement.uuids)
    assert not set(placement.uuids) & (set(state.held()) | unusable_uuids(inventory))
