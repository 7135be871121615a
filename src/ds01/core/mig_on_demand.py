"""MIG slices on demand: where to make a slice for a request, which to destroy, the baseline.

A GPU with ``dynamic`` in ``mig_layout`` has MIG on and instances that ds01d makes when a
request asks for a profile no free instance offers, and destroys once nobody has held them
for ``mig_on_demand_keep_seconds``. Everything here is pure: the daemon passes the GPUs as
:class:`GpuView` (their instances, where each sits, which are held and which were made on
demand) and carries out what comes back.

Rules:

- **use before make**: a free instance of exactly the asked profile, on any GPU, is used;
  a slice is made only when there is none;
- **never touch a slice in use**: a new slice goes beside every instance of its GPU (held
  or not), at a start the placement table allows (``ds01.core.mig_placement``);
- **fragment least**: among the GPUs and starts where the slice fits, the one chosen
  (1) loses the fewest compute slices of the largest profile that could still be made on
  its GPU (``largest_makeable`` before minus after: a 1g beside a 3g costs less than a 1g
  that splits an empty GPU, which would lose its 7g), then (2) removes the fewest
  possible placements of all profiles (``free_starts``), then (3) leaves its GPU the fewest
  free compute slices (packs busy GPUs, keeps idle ones whole), then the lowest GPU index
  and start;
- **reservations' slots**: a new slice for a request stays out of the places that
  ``keep_out`` names (``ds01.core.reservations.slot_keep_out``: the slots of the
  reservations that keep their devices from the request, which a slice could still hold
  when the reservation's slice is made at its start);
- **destroy**: a slice made on demand that nobody holds is destroyed once it has been free
  for the keep time; the admin's baseline instances are never destroyed;
- **baseline**: instances on a dynamic GPU that ds01d did not record as made on demand are
  the admin's; those beyond the baseline (by profile) are *adopted* as made on demand (a
  crash between creating a slice and recording it leaves such an instance: it is then
  destroyed like any other once free). A GPU with no slice made on demand left gets the
  baseline instances it lacks, where they fit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ds01.config.gpu_config import mig_profile_device, mig_profile_slices
from ds01.core.mig_placement import NoFit, PlacedInstance, free_starts, place
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.mig_placement import MigPlacementTable


@dataclass(frozen=True)
class Slice:
    """One MIG instance of a dynamic GPU.

    Attributes:
        uuid: ``MIG-…`` (a planned slice's: :func:`planned_uuid`).
        profile: ``1g.5gb``.
        start: the memory slice it begins at.
        held: a container holds it (or it is planned for one).
        on_demand: ds01d made it on demand (or adopted it); destroyed once free.
    """

    uuid: str
    profile: str
    start: int
    held: bool
    on_demand: bool


@dataclass(frozen=True)
class GpuView:
    """A dynamic GPU as the planner sees it: its placement table, its baseline, its slices."""

    gpu: PhysicalGpu
    table: MigPlacementTable
    baseline: tuple[str, ...]
    slices: tuple[Slice, ...]

    def placed(self) -> list[PlacedInstance]:
        return [_placed(self.table, s) for s in self.slices]

    def with_slice(self, new: Slice) -> GpuView:
        return replace(self, slices=(*self.slices, new))


@dataclass(frozen=True)
class CreateSlice:
    """Make an instance of ``profile`` on GPU ``gpu_index`` at memory slice ``start``."""

    gpu_index: int
    gpu_uuid: str
    profile: str
    start: int

    def describe(self) -> str:
        return f"{self.profile} on GPU {self.gpu_index} at memory slice {self.start}"


@dataclass(frozen=True)
class NoRoom:
    """No free instance of the profile, and no dynamic GPU has a place for one."""

    reason: str


def _placed(table: MigPlacementTable, piece: Slice) -> PlacedInstance:
    shape = table.shape(piece.profile)
    size = shape.size if shape is not None else 1
    return PlacedInstance(piece.profile, piece.start, size)


def gpu_view(
    gpu: PhysicalGpu,
    table: MigPlacementTable,
    baseline: Sequence[str],
    devices: Iterable[Device],
    held: Iterable[str],
    on_demand: Iterable[str],
) -> GpuView | None:
    """``gpu``'s view from the inventory's devices; ``None`` when it cannot be planned on
    (MIG off, or instances whose places are not known and do not fit the table).

    Instances the backend gives no start are placed as :func:`place` would (lowest starts,
    largest first), as the driver does.
    """
    if not gpu.mig_enabled:
        return None
    held_set, demand_set = set(held), set(on_demand)
    mine = [d for d in devices if d.kind == "mig" and d.gpu_uuid == gpu.uuid]
    known = [d for d in mine if d.start is not None]
    fixed = [
        PlacedInstance(d.profile or "", d.start, _size(table, d.profile))
        for d in known
        if d.start is not None
    ]
    unknown = [d for d in mine if d.start is None]
    rest = place(table, [d.profile or "" for d in unknown], fixed)
    if isinstance(rest, NoFit):
        return None
    starts = {d.uuid: d.start for d in known}
    pool = list(rest)
    for device in unknown:
        found = next(p for p in pool if p.profile == device.profile)
        pool.remove(found)
        starts[device.uuid] = found.start
    slices = tuple(
        Slice(
            uuid=d.uuid,
            profile=d.profile or "",
            start=starts[d.uuid] or 0,
            held=d.uuid in held_set,
            on_demand=d.uuid in demand_set,
        )
        for d in mine
    )
    return GpuView(gpu=gpu, table=table, baseline=tuple(baseline), slices=slices)


def _size(table: MigPlacementTable, profile: str | None) -> int:
    shape = table.shape(profile or "")
    return shape.size if shape is not None else 1


def largest_makeable(table: MigPlacementTable, occupied: Sequence[PlacedInstance]) -> int:
    """Compute slices of the largest profile that could still be made beside ``occupied``
    (0: none)."""
    used = sum(_slices(p.profile) for p in occupied)
    return max(
        (
            shape.compute_slices
            for shape in table.profiles
            if used + shape.compute_slices <= table.compute_slices
            and free_starts(table, shape.name, occupied)
        ),
        default=0,
    )


def _slices(profile: str) -> int:
    try:
        return mig_profile_slices(profile)
    except ValueError:
        return 0


def _placements_left(table: MigPlacementTable, occupied: Sequence[PlacedInstance]) -> int:
    return sum(len(free_starts(table, shape.name, occupied)) for shape in table.profiles)


def _candidates(view: GpuView, profile: str) -> list[tuple[tuple[int, ...], CreateSlice]]:
    """Every place ``profile`` fits on ``view``'s GPU, each with its fragmentation key."""
    table, occupied = view.table, view.placed()
    shape = table.shape(profile)
    if shape is None:
        return []
    used = sum(_slices(p.profile) for p in occupied)
    if used + shape.compute_slices > min(table.compute_slices, view.gpu.total_slices):
        return []
    before = largest_makeable(table, occupied)
    placements_before = _placements_left(table, occupied)
    found: list[tuple[tuple[int, ...], CreateSlice]] = []
    for start in free_starts(table, profile, occupied):
        after = [*occupied, PlacedInstance(profile, start, shape.size)]
        key = (
            before - largest_makeable(table, after),
            placements_before - _placements_left(table, after),
            table.compute_slices - used - shape.compute_slices,
            view.gpu.index,
            start,
        )
        found.append((key, CreateSlice(view.gpu.index, view.gpu.uuid, profile, start)))
    return found


def where_to_create(views: Sequence[GpuView], profile: str) -> CreateSlice | NoRoom:
    """The place for a new ``profile`` slice among ``views`` by the fragment-least rule (see
    the module docstring), or why there is none."""
    candidates = [c for view in views for c in _candidates(view, profile)]
    if candidates:
        return min(candidates, key=lambda c: c[0])[1]
    if not views:
        return NoRoom("no GPU has MIG on demand (`dynamic` in mig_layout)")
    offered = [v for v in views if v.table.shape(profile) is not None]
    if not offered:
        return NoRoom(f"no GPU with MIG on demand offers the profile {profile}")
    beside = "; ".join(
        f"GPU {v.gpu.index} has " + (", ".join(p.describe() for p in v.placed()) or "nothing")
        for v in offered
    )
    return NoRoom(f"no place for a {profile} slice beside the instances there ({beside})")


def free_exact(inventory: Inventory, held: Iterable[str], profile: str) -> list[Device]:
    """The free (not held, not reserved) instances of exactly ``profile``, lowest GPU first."""
    taken = set(held) | set(inventory.reserved)
    return sorted(
        (
            d
            for d in inventory.devices
            if d.kind == "mig" and d.profile == profile and d.uuid not in taken
        ),
        key=lambda d: (d.gpu_index, d.start if d.start is not None else 0, d.uuid),
    )


@dataclass(frozen=True)
class _Planning:
    """What a planning walk has taken and made so far."""

    taken: frozenset[str]
    views: tuple[GpuView, ...]
    creates: tuple[CreateSlice, ...] = ()


#: Per GPU UUID, places a new slice must stay out of (a reservation's slots that the
#: request could still hold at their start: ``ds01.core.reservations.slot_keep_out``).
KeepOut = Mapping[str, Sequence[Slice]]


def _beside(views: Sequence[GpuView], keep_out: KeepOut) -> tuple[GpuView, ...]:
    """``views`` with the places of ``keep_out`` taken, as if instances sat there."""
    return tuple(
        replace(v, slices=(*v.slices, *keep_out[v.gpu.uuid])) if v.gpu.uuid in keep_out else v
        for v in views
    )


def in_the_way(views: Sequence[GpuView], keep_out: KeepOut) -> frozenset[str]:
    """The instances of ``views`` whose memory slices overlap a place of ``keep_out``: a
    request kept out of those places may not be given them either (a free slice made on
    demand for someone else, say)."""
    found: set[str] = set()
    for view in views:
        places = [set(_placed(view.table, s).slices) for s in keep_out.get(view.gpu.uuid, ())]
        for piece in view.slices:
            mine = set(_placed(view.table, piece).slices)
            if any(mine & place for place in places):
                found.add(piece.uuid)
    return frozenset(found)


def _plan_one(
    inventory: Inventory, state: _Planning, profiles: Sequence[str], keep_out: KeepOut
) -> _Planning | NoRoom:
    """``state`` after serving ``profiles``: each takes a free instance of exactly its
    profile first, else a new slice beside those there and those already planned, outside
    ``keep_out``."""
    for profile in profiles:
        spare = free_exact(inventory, state.taken, profile)
        if spare:
            state = replace(state, taken=state.taken | {spare[0].uuid})
            continue
        where = where_to_create(_beside(state.views, keep_out), profile)
        if isinstance(where, NoRoom):
            return where
        new = Slice(planned_uuid(where), profile, where.start, held=True, on_demand=True)
        state = _Planning(
            taken=state.taken,
            views=tuple(
                v.with_slice(new) if v.gpu.uuid == where.gpu_uuid else v for v in state.views
            ),
            creates=(*state.creates, where),
        )
    return state


def plan_profiles(
    inventory: Inventory,
    held: Iterable[str],
    views: Sequence[GpuView],
    profiles: Sequence[str],
    keep_out: KeepOut | None = None,
) -> tuple[CreateSlice, ...] | NoRoom:
    """The slices to make so that every profile of ``profiles`` (one request) finds a free
    instance of exactly its profile; ``()`` when free ones serve it all, ``NoRoom`` for the
    first profile with neither a free instance nor a place for a new one. No new slice goes
    where ``keep_out`` says."""
    state = _Planning(frozenset(held), tuple(views))
    planned = _plan_one(inventory, state, profiles, keep_out or {})
    return planned if isinstance(planned, NoRoom) else planned.creates


def plan_what_fits(
    inventory: Inventory,
    held: Iterable[str],
    views: Sequence[GpuView],
    requests: Sequence[Sequence[str]],
    keep_out: Sequence[KeepOut] = (),
) -> tuple[CreateSlice, ...]:
    """For waiting requests in queue order: the slices that would serve each request that
    they can, each request planned beside the earlier ones' instances and slices (a request
    that does not fit is passed over, so a smaller one behind it may still get a slice).
    ``keep_out``: each request's places to stay out of, in the same order (none when
    missing); they keep out only that request's slices."""
    state = _Planning(frozenset(held), tuple(views))
    for i, profiles in enumerate(requests):
        planned = _plan_one(inventory, state, profiles, keep_out[i] if i < len(keep_out) else {})
        if not isinstance(planned, NoRoom):
            state = planned
    return state.creates


PLANNED_PREFIX = "MIG-planned-"
"""UUID prefix of a slice that is planned, not yet made (never handed to Docker)."""


def planned_uuid(create: CreateSlice) -> str:
    """The stand-in UUID of a planned slice, unique per GPU and start."""
    return f"{PLANNED_PREFIX}{create.gpu_uuid}-{create.start}"


def planned_device(create: CreateSlice, gpu: PhysicalGpu) -> Device:
    """The device a planned slice will be, for deciding before it is made."""
    return mig_profile_device(gpu, create.profile, planned_uuid(create), start=create.start)


def with_planned(inventory: Inventory, creates: Sequence[CreateSlice]) -> Inventory:
    """``inventory`` with the planned slices as devices (their GPUs must be in it)."""
    gpus = {g.uuid: g for g in inventory.gpus}
    added = tuple(planned_device(c, gpus[c.gpu_uuid]) for c in creates)
    return replace(inventory, devices=(*inventory.devices, *added))


def adopt(view: GpuView) -> tuple[str, ...]:
    """The instances of ``view`` to record as made on demand: those not so recorded beyond
    the baseline (by profile; the baseline keeps the lowest starts). See the module rules."""
    wanted = Counter(view.baseline)
    adopted = []
    for piece in sorted((s for s in view.slices if not s.on_demand), key=lambda s: s.start):
        if wanted[piece.profile] > 0:
            wanted[piece.profile] -= 1
        else:
            adopted.append(piece.uuid)
    return tuple(adopted)


def to_destroy(
    views: Sequence[GpuView],
    free_since: Mapping[str, datetime],
    now: datetime,
    keep: timedelta,
) -> tuple[Slice, ...]:
    """The slices made on demand that nobody holds and that have been free since at least
    ``keep`` before ``now`` (``free_since``: UUID → when it was first seen free; a slice
    not in it was not seen free yet). Never a held slice, never a baseline one."""
    return tuple(
        s
        for v in views
        for s in v.slices
        if s.on_demand and not s.held and s.uuid in free_since and now - free_since[s.uuid] >= keep
    )


def baseline_creates(view: GpuView) -> tuple[CreateSlice, ...]:
    """The baseline instances ``view``'s GPU lacks, placed beside what is there, once it has
    no slice made on demand left; none while it has, or where they do not fit."""
    if any(s.on_demand for s in view.slices):
        return ()
    missing = Counter(view.baseline) - Counter(s.profile for s in view.slices)
    if not missing:
        return ()
    placed = place(view.table, list(missing.elements()), view.placed())
    if isinstance(placed, NoFit):
        return ()
    return tuple(CreateSlice(view.gpu.index, view.gpu.uuid, p.profile, p.start) for p in placed)


__all__ = [
    "PLANNED_PREFIX",
    "CreateSlice",
    "GpuView",
    "KeepOut",
    "NoRoom",
    "Slice",
    "adopt",
    "baseline_creates",
    "free_exact",
    "gpu_view",
    "in_the_way",
    "largest_makeable",
    "plan_profiles",
    "plan_what_fits",
    "planned_device",
    "planned_uuid",
    "to_destroy",
    "where_to_create",
    "with_planned",
]
