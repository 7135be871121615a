"""MIG slices on demand: the pure planning of ``ds01.core.mig_on_demand``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.config.gpu_config import GpuConfig, mig_profile_memory_mib, mig_profile_slices
from ds01.core.mig import Layout, plan_mig
from ds01.core.mig_on_demand import (
    CreateSlice,
    GpuView,
    NoRoom,
    Slice,
    adopt,
    baseline_creates,
    gpu_view,
    in_the_way,
    plan_profiles,
    plan_what_fits,
    to_destroy,
    where_to_create,
    with_planned,
)
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.mig_placement import A100_40GB_TABLE

PROFILES = [p.name for p in A100_40GB_TABLE.profiles]


def gpu(index: int) -> PhysicalGpu:
    return PhysicalGpu(
        index=index,
        uuid=f"GPU-0000000{index}-0000",
        model="A100",
        memory_mib=40960,
        mig_enabled=True,
    )


def instance(g: PhysicalGpu, profile: str, start: int | None, n: int) -> Device:
    return Device(
        uuid=f"MIG-{g.index}-{n}",
        kind="mig",
        gpu_index=g.index,
        gpu_uuid=g.uuid,
        model=g.model,
        memory_mib=mig_profile_memory_mib(profile),
        profile=profile,
        slices=mig_profile_slices(profile),
        start=start,
    )


def view(
    index: int,
    pieces: list[tuple[str, int, bool, bool]],
    baseline: tuple[str, ...] = (),
) -> GpuView:
    """GPU ``index`` with (profile, start, held, on_demand) slices."""
    g = gpu(index)
    return GpuView(
        gpu=g,
        table=A100_40GB_TABLE,
        baseline=baseline,
        slices=tuple(
            Slice(f"MIG-{index}-{n}", p, start, held, demand)
            for n, (p, start, held, demand) in enumerate(pieces)
        ),
    )


def test_a_1g_goes_beside_a_3g_rather_than_splitting_an_empty_gpu() -> None:
    busy = view(0, [("3g.20gb", 0, True, True)])
    empty = view(1, [])

    where = where_to_create([empty, busy], "1g.5gb")

    assert isinstance(where, CreateSlice)
    assert (where.gpu_index, where.profile) == (0, "1g.5gb")
    # 4-7 stays able to hold a 2g next to it: the 1g goes to 6, not 4.
    assert where.start == 6


def test_on_an_empty_gpu_a_small_slice_keeps_the_4g_possible() -> None:
    where = where_to_create([view(0, [])], "1g.5gb")

    assert isinstance(where, CreateSlice)
    assert where.start >= 4


def test_two_3g_in_use_leave_no_room_and_the_reason_names_them() -> None:
    full = view(0, [("3g.20gb", 0, True, True), ("3g.20gb", 4, True, True)])

    where = where_to_create([full], "1g.5gb")

    assert isinstance(where, NoRoom)
    assert "3g.20gb (memory slices 0-3)" in where.reason


def test_a_free_slice_of_the_profile_is_used_before_one_is_made() -> None:
    g = gpu(0)
    inventory = Inventory("simulated", gpus=(g,), devices=(instance(g, "1g.5gb", 6, 0),))
    v = gpu_view(g, A100_40GB_TABLE, (), inventory.devices, held=(), on_demand=())
    assert v is not None

    assert plan_profiles(inventory, (), [v], ["1g.5gb"]) == ()
    # Held, it is not free: a new one is planned beside it.
    planned = plan_profiles(inventory, {"MIG-0-0"}, [v], ["1g.5gb"])
    assert isinstance(planned, tuple) and len(planned) == 1
    assert planned[0].start != 6


def test_waiting_requests_are_planned_beside_each_other_and_one_that_does_not_fit_is_passed() -> (
    None
):
    g = gpu(0)
    inventory = Inventory("simulated", gpus=(g,))
    v = gpu_view(g, A100_40GB_TABLE, (), (), held=(), on_demand=())
    assert v is not None

    creates = plan_what_fits(inventory, (), [v], [["4g.20gb"], ["4g.20gb"], ["3g.20gb"]])

    assert [(c.profile, c.start) for c in creates] == [("4g.20gb", 0), ("3g.20gb", 4)]
    planned = with_planned(inventory, creates)
    assert {d.profile for d in planned.devices} == {"4g.20gb", "3g.20gb"}


def test_instances_without_starts_are_placed_as_the_driver_places_them() -> None:
    g = gpu(0)
    devices = (instance(g, "3g.20gb", None, 0), instance(g, "3g.20gb", None, 1))

    v = gpu_view(g, A100_40GB_TABLE, (), devices, held=(), on_demand=())

    assert v is not None
    assert sorted(s.start for s in v.slices) == [0, 4]


def test_a_gpu_with_mig_off_is_not_planned_on() -> None:
    g = PhysicalGpu(index=0, uuid="GPU-00000000-0000", model="A100", memory_mib=40960)
    assert gpu_view(g, A100_40GB_TABLE, (), (), (), ()) is None


def test_free_on_demand_slices_go_after_the_keep_time_held_and_baseline_ones_never() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    v = view(
        0,
        [
            ("1g.5gb", 0, False, True),  # free long enough
            ("1g.5gb", 1, False, True),  # free, but not for long
            ("1g.5gb", 2, True, True),  # held
            ("3g.20gb", 4, False, False),  # the admin's
        ],
        baseline=("3g.20gb",),
    )
    since = {
        "MIG-0-0": now - timedelta(minutes=10),
        "MIG-0-1": now - timedelta(seconds=10),
        "MIG-0-2": now - timedelta(hours=1),
        "MIG-0-3": now - timedelta(hours=1),
    }

    gone = to_destroy([v], since, now, timedelta(minutes=5))

    assert [s.uuid for s in gone] == ["MIG-0-0"]


def test_instances_beyond_the_baseline_are_adopted_and_the_baseline_comes_back() -> None:
    crashed = view(0, [("3g.20gb", 0, False, False), ("1g.5gb", 6, False, False)], ("3g.20gb",))
    assert adopt(crashed) == ("MIG-0-1",)

    emptied = view(0, [], baseline=("3g.20gb", "2g.10gb"))
    creates = baseline_creates(emptied)
    assert sorted(c.profile for c in creates) == ["2g.10gb", "3g.20gb"]
    # Not while a slice made on demand is still there.
    assert baseline_creates(view(0, [("1g.5gb", 0, True, True)], ("3g.20gb",))) == ()


def test_dynamic_in_mig_layout_is_validated_and_planned() -> None:
    config = GpuConfig.model_validate(
        {"mig_layout": {0: "dynamic", 1: {"dynamic": ["3g.20gb"]}, 2: ["7g.40gb"]}}
    )
    dynamic = config.dynamic_mig()
    assert dynamic[0].baseline == ()
    assert dynamic[1].baseline == ("3g.20gb",)
    assert 2 not in dynamic
    for bad in ("dynamo", {"dynamic": ["9g.1gb"]}, {"dynamic": [], "x": 1}, {"dynamic": "3g"}):
        with pytest.raises(ValueError):
            GpuConfig.model_validate({"mig_layout": {0: bad}})

    layout = Layout.of(dynamic[1])
    g_on, g_off = gpu(0), PhysicalGpu(index=1, uuid="GPU-1", model="A100", memory_mib=40960)
    inventory = Inventory("simulated", gpus=(g_on, g_off))
    plans = plan_mig(inventory, {0: layout, 1: layout}, {})
    assert plans[0].status == "unchanged"
    assert plans[1].status == "apply"
    assert [s.action for s in plans[1].steps] == ["enable_mig", "create"]
    # A baseline that does not fit the GPU's placements is refused, MIG on or off.
    unfit = Layout.of(
        GpuConfig.model_validate(
            {"mig_layout": {0: {"dynamic": ["3g.20gb", "3g.20gb", "1g.5gb"]}}}
        ).dynamic_mig()[0]
    )
    tables = {0: A100_40GB_TABLE, 1: A100_40GB_TABLE}
    for plan in plan_mig(inventory, {0: unfit, 1: unfit}, {}, tables=tables):
        assert plan.status == "invalid" and "placement rules" in plan.reason


# -- properties --------------------------------------------------------------------------------

pieces = st.lists(st.tuples(st.sampled_from(PROFILES), st.booleans(), st.booleans()), max_size=6)


def _fitted(index: int, wanted: list[tuple[str, bool, bool]]) -> GpuView:
    """A GPU holding whichever of ``wanted`` fit, each where :func:`where_to_create` put it."""
    v = view(index, [])
    for n, (profile, held, demand) in enumerate(wanted):
        where = where_to_create([v], profile)
        if isinstance(where, CreateSlice):
            v = v.with_slice(Slice(f"MIG-{index}-{n}", profile, where.start, held, demand))
    return v


def _overlap_free(v: GpuView) -> bool:
    used = [s for p in v.placed() for s in p.slices]
    slices = sum(mig_profile_slices(s.profile) for s in v.slices)
    return len(used) == len(set(used)) and max(used, default=0) < 8 and slices <= 7


@settings(max_examples=150, deadline=None)
@given(st.lists(pieces, min_size=1, max_size=3), st.lists(st.sampled_from(PROFILES), max_size=5))
def test_planned_slices_never_overlap_and_never_move_a_slice(
    gpus: list[list[tuple[str, bool, bool]]], asked: list[str]
) -> None:
    views = [_fitted(i, wanted) for i, wanted in enumerate(gpus)]
    inventory = Inventory("simulated", gpus=tuple(v.gpu for v in views))
    held = {s.uuid for v in views for s in v.slices}

    creates = plan_what_fits(inventory, held, views, [[p] for p in asked])

    after = {v.gpu.uuid: v for v in views}
    for c in creates:
        before = after[c.gpu_uuid]
        after[c.gpu_uuid] = before.with_slice(
            Slice(f"new-{c.start}", c.profile, c.start, True, True)
        )
    for v in after.values():
        assert _overlap_free(v)
    # Every slice that was there is still there, where it was.
    for v in views:
        assert set(v.slices) <= set(after[v.gpu.uuid].slices)


@settings(max_examples=150, deadline=None)
@given(pieces, st.integers(min_value=0, max_value=600))
def test_a_held_or_baseline_slice_is_never_destroyed(
    wanted: list[tuple[str, bool, bool]], keep: int
) -> None:
    v = _fitted(0, wanted)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    since = {s.uuid: now - timedelta(seconds=300) for s in v.slices}

    gone = to_destroy([v], since, now, timedelta(seconds=keep))

    assert all(s.on_demand and not s.held for s in gone)
    free_on_demand = [s for s in v.slices if s.on_demand and not s.held]
    assert list(gone) == (free_on_demand if keep <= 300 else [])


def test_no_new_slice_and_no_instance_over_a_place_kept_out() -> None:
    # A reservation's 4g.20gb slot at memory slice 0 of an empty A100: a request kept from
    # it gets a 1g.5gb only at slice 4 or above, no 4g.20gb at all; another request, not
    # kept out, still gets the 4g.20gb. A free 1g.5gb at slice 2 is in the slot's way.
    g = gpu(0)
    inventory = Inventory("simulated", gpus=(g,))
    slot = Slice("MIG-slot-x-0", "4g.20gb", 0, held=True, on_demand=True)
    keep_out = {g.uuid: (slot,)}
    empty = view(0, [])
    planned = plan_profiles(inventory, set(), [empty], ["1g.5gb"], keep_out)
    assert not isinstance(planned, NoRoom)
    [small] = planned
    assert small.start >= 4
    assert isinstance(plan_profiles(inventory, set(), [empty], ["4g.20gb"], keep_out), NoRoom)
    assert plan_profiles(inventory, set(), [empty], ["4g.20gb"]) == (
        CreateSlice(0, g.uuid, "4g.20gb", 0),
    )
    # In the queue, each request with its own: the first is kept out, the second is not.
    creates = plan_what_fits(inventory, set(), [empty], [["4g.20gb"], ["4g.20gb"]], [keep_out])
    assert creates == (CreateSlice(0, g.uuid, "4g.20gb", 0),)
    beside = view(0, [("1g.5gb", 2, False, True), ("1g.5gb", 6, False, True)])
    assert in_the_way([beside], keep_out) == {"MIG-0-0"}
    assert in_the_way([beside], {}) == frozenset()
