"""Replaying a trace through the real queue on a virtual clock (discrete events).

Each job of the trace is submitted at its time, waits in the queue until
:func:`ds01.core.scheduler.plan` starts it, computes, idles, is stopped and finally releases
its devices. These events change what the scheduler sees, and a pass of :func:`plan` runs
after each instant at which any happened (when requests are waiting):

- *submit*: the job joins the queue;
- *stop*: its idle tail is over: its owner stops it (the end of the trace's idle tail), the
  runtime limit does (``max_runtime_hours``), or idle reclaim does (below); its devices stay
  held for the user's ``gpu_hold_after_stop_minutes``;
- *release*: the hold is over; its devices are free;
- *check*: idle reclaim looks at a running job (the reference's hourly checks, or ds01's
  next due idle stop).

Idle reclaim (``reclaim``, see :mod:`ds01.sim.reclaim`): with ``ds01``, after every instant
the lifecycle's :func:`~ds01.core.lifecycle.decide` gives each running job's idle stop under
the demand the pass left (:attr:`~ds01.core.scheduler.Plan.waiting_for_devices`), exact to
the instant, and the job is stopped when that time comes (demand changes only at events, so
asking again at each instant is exact); with ``none`` nothing is reclaimed; with
``reference`` the reference's hourly check runs, its "high demand" being at least 80 % of
the capacity allocated. The runtime limit is the same exact limit under all three.

The end of the busy part changes nothing that the daemon could see, so it is no event.

Borrowing (``borrowing``, a :class:`~ds01.config.borrowing.BorrowingConfig` with
``enabled``): after each pass, the requests the pass held for their quota (status
``quota``) are offered in queue order the idle devices that no request waiting for devices
could use, through :func:`ds01.core.borrowing.allocate_borrowing` (with the plan's
``waiting_requests``), as a create with ``--borrow`` would be (on GPUs with MIG on
demand, over the inventory with the slice that would serve it, made if it is picked, as
ds01d plans a create's slice); a job placed so is *borrowed*. After each pass with a head
(a request within quota that cannot be placed), :func:`~ds01.core.borrowing.choose_reclaim` and
:func:`~ds01.core.borrowing.reclaim_steps` warn the borrowed jobs it needs and stop them
``reclaim_grace_minutes`` later (a *reclaim* event; another comes when a borrowed job
reaches ``min_runtime_minutes``). A reclaimed job's devices are free at once, and what it
had not computed yet joins the queue again at that instant, as its owner would start it
again (``container-start`` queues it): it waits, within or above the quota as any request,
and computes the rest once started (``requeued``, ``requeued_hours``,
``requeue_wait_hours``); its idle tail comes after its last part. Work still left when
nothing else can happen is ``lost_hours``.

GPU reservations (``reservations``, :class:`~ds01.sim.trace.TraceReservation`): each is
asked for at its ``made_hours`` and admitted or refused by
:func:`ds01.core.reservations.admit` against those admitted before, with its holder's
limits (``reservations:``); then, as in ds01d, through ``ds01.core.reservations``' pure
functions: before each pass the requests of holders whose reservation is in force start on
their reserved devices, on top of their quota (:func:`~ds01.core.reservations.reserved_starts`),
and each waiting request is planned, borrows and reclaims without the devices
:func:`~ds01.core.reservations.blocked_devices` keeps from *it* (by its expected hold:
:func:`~ds01.core.reservations.with_blocked`); after each
instant, :func:`~ds01.core.reservations.drain` stops the jobs on a device whose reservation
has begun and is not their owner's (a running one queues the work it has left again, as
above); a borrowed job on its owner's reservation in force is never reclaimed
(:func:`~ds01.core.borrowing.reserved_by_holder`). A ``--mig`` reservation that no
instance serves may keep a *slot* on a GPU with MIG on demand (``admit`` is given the
dynamic GPUs, as ds01d gives them); at its start the replay makes the slice where
:func:`~ds01.core.mig_on_demand.where_to_create` puts it, or, with no room left, re-maps
the slot by :func:`~ds01.core.reservations.repair` (a free instance of the profile, or
nothing), and a slice a reservation keeps is not destroyed before its end. At a
reservation's start the replay notes whether its devices were there and free of others'
jobs (*kept*) before the drain.

MIG on demand (``dynamic``: the GPUs named, each with its placement table and baseline):
before each pass the inventory gets a planned slice for each waiting MIG request that one
would serve (:func:`ds01.core.mig_on_demand.plan_what_fits`, as ds01d's dispatcher does,
never over a reservation's slot the request could still hold at its start); a
start on a planned slice makes it; a released slice made on demand is destroyed at once
(keep time 0) and a GPU left without one gets its baseline back.

The scheduler is told only what the daemon would know: a running container is expected to
free its devices ``max_runtime_hours`` plus the hold after it started (unknown without a
runtime limit), a stopped one exactly when its hold ends, and a waiting job is expected to
hold devices for ``max_runtime_hours`` plus the hold. With ``declared_runtime``, each job
says how long it computes (``container-create --runtime-hours``: what it has left, rounded up to
the hour): that is its runtime limit, so it is expected to end by then, and it is stopped at
it (its idle tail cut there). Limits and the lifecycle policy come
from ``resource-limits.yaml`` with the job's group as the user's only group. A hold of
``null`` (GPUs kept until the container is removed) counts as no hold: the trace cannot say
when the user would remove it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from fractions import Fraction
from typing import TYPE_CHECKING

from ds01.config.borrowing import BorrowingConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.policies import LifecyclePolicy
from ds01.config.resolve import resolve_limits, resolve_policy, resolve_reservation_limits
from ds01.config.scheduler import SchedulerConfig
from ds01.core.allocation import AllocationState, Placement, free_devices, least_gpu_equivalents
from ds01.core.borrowing import (
    HoldingFacts,
    allocate_borrowing,
    choose_reclaim,
    reclaim_steps,
    reserved_by_holder,
    stop_due,
    wanted_by,
)
from ds01.core.lifecycle import ContainerClock, LimitsForContainer, decide, runtime_limit_hours
from ds01.core.mig_on_demand import (
    PLANNED_PREFIX,
    GpuView,
    KeepOut,
    NoRoom,
    baseline_creates,
    gpu_view,
    plan_profiles,
    plan_what_fits,
    planned_device,
    where_to_create,
    with_planned,
)
from ds01.core.reservations import (
    Occupant,
    ReservationLimits,
    ReservationRequest,
    admit,
    blocked_devices,
    clear_slots,
    drain,
    is_slot,
    out_of_slots,
    overstays,
    repair,
    reserved_starts,
    slot_keep_out,
    slot_places,
    with_blocked,
)
from ds01.core.reservations import Reservation as GpuReservation
from ds01.core.scheduler import (
    PendingRequest,
    Plan,
    Reservation,
    UsageInterval,
    decayed_usage,
    plan,
)
from ds01.errors import InvalidInput, NoCapacity, NotFound, QuotaExceeded
from ds01.model.device import Device, Inventory
from ds01.model.mig_placement import MigPlacementTable
from ds01.model.quota import GpuQuota
from ds01.sim.reclaim import (
    REFERENCE_CHECK_PERIOD_HOURS,
    REFERENCE_HIGH_DEMAND_FRACTION,
    ReferenceIdleState,
    reference_check,
    reference_first_check,
)
from ds01.sim.trace import TraceJob, TraceReservation

if TYPE_CHECKING:
    from ds01.sim.names import ReclaimName

#: The virtual clock's hour 0 (a Monday, 00:00 UTC); only relative times matter.
EPOCH = datetime(2026, 1, 5, tzinfo=timezone.utc)
MINUTES_PER_HOUR = 60.0
_HOUR = timedelta(hours=1)
#: A datetime's resolution (one microsecond), in hours: idle stops computed through
#: datetimes that land this close to the owner's stop are the owner's stop.
_INSTANT_HOURS = 1e-6 / 3600


#: The trace's own period is whole weeks from hour 0 (the lab traces are one week).
WEEK_HOURS = 168.0


def at(hours: float) -> datetime:
    """The virtual instant ``hours`` after :data:`EPOCH`."""
    return EPOCH + timedelta(hours=hours)


def hours_of(moment: datetime) -> float:
    """Trace hours from :data:`EPOCH` to ``moment`` (the inverse of :func:`at`)."""
    return (moment - EPOCH) / _HOUR


@dataclass(frozen=True)
class UserSetup:
    """What the simulation needs of one user's resolved limits and lifecycle policy.

    Attributes:
        quota: GPU limits.
        priority: queue priority (0..1000).
        max_runtime_hours: hours after which a container is stopped; ``None`` = never.
        idle_timeout_hours: idle hours after which a container is stopped; ``None`` = never.
        hold_hours: hours a stopped container keeps its devices (0 for ``null``).
        policy: the user's lifecycle policy (grace, shrink under demand).
    """

    quota: GpuQuota
    priority: int
    max_runtime_hours: float | None
    idle_timeout_hours: float | None
    hold_hours: float
    policy: LifecyclePolicy

    def busy_hours(self, job: TraceJob) -> float:
        """Hours ``job`` computes: its duration, cut at ``max_runtime_hours``."""
        if self.max_runtime_hours is None:
            return job.duration_hours
        return min(job.duration_hours, self.max_runtime_hours)

    def held_tail_hours(self, job: TraceJob) -> float:
        """Hours ``job`` stays allocated and idle when nothing reclaims idle containers: its
        idle tail, cut at what ``max_runtime_hours`` leaves."""
        if self.max_runtime_hours is None:
            return job.idle_tail_hours
        return min(job.idle_tail_hours, self.max_runtime_hours - self.busy_hours(job))

    @property
    def expected_hold_hours(self) -> float | None:
        """Hours a container may hold devices from its start, as the daemon can bound it."""
        return self.hold_for(None)

    def hold_for(self, declared: float | None) -> float | None:
        """Hours a container with the runtime ``declared`` for it (``None``: none) may hold
        devices from its start: its runtime limit plus the hold."""
        limit = runtime_limit_hours(self.max_runtime_hours, declared)
        return None if limit is None else limit + self.hold_hours

    def idle_stop_hours(
        self, start_hours: float, busy_until_hours: float, now_hours: float, demand: bool
    ) -> float | None:
        """When ds01's lifecycle stops a job that computes from ``start_hours`` until
        ``busy_until_hours`` for idleness if ``demand`` stays as it is at ``now_hours``
        (:func:`~ds01.core.lifecycle.decide` on the clock the lifecycle has once the job
        stopped computing); ``None`` = never."""
        clock = ContainerClock(run_started_at=at(start_hours), active_at=at(busy_until_hours))
        limits = LimitsForContainer(self.idle_timeout_hours, max_runtime_hours=None)
        decision = decide(clock, at(now_hours), self.policy, limits, demand=demand, exemption=None)
        return None if decision.idle_stop_at is None else hours_of(decision.idle_stop_at)


def user_setups(jobs: Sequence[TraceJob], config: ResourceLimitsConfig) -> dict[str, UserSetup]:
    """Each user's setup, their limits resolved with their trace group as only group.

    A trace group that ``config`` defines stands for its ``unix_group``; any other group
    name is taken as a Unix group (so its users get the defaults, or their ``users:`` entry).
    """
    setups: dict[str, UserSetup] = {}
    for job in jobs:
        if job.user in setups:
            continue
        group = job.group
        unix_groups = [config.unix_group_of(group) if group in config.groups else group]
        limits = resolve_limits(config, job.user, unix_groups)
        hold = limits.gpu_hold_after_stop_minutes
        setups[job.user] = UserSetup(
            quota=limits.gpu_quota(),
            priority=limits.priority,
            max_runtime_hours=limits.max_runtime_hours,
            idle_timeout_hours=limits.idle_timeout_hours,
            hold_hours=0.0 if hold is None else hold / MINUTES_PER_HOUR,
            policy=resolve_policy(config, job.user, unix_groups),
        )
    return setups


@dataclass(frozen=True)
class DynamicGpu:
    """A GPU that makes MIG slices on demand in the replay: its placement table and the
    baseline instances it keeps."""

    table: MigPlacementTable
    baseline: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one job.

    Attributes:
        id: its queue id (``job-<line>``).
        job: the trace line.
        least_gpu_equivalents: the least its request counts for on the inventory.
        busy_hours: hours it computes (or would have, had it started).
        start_hours: when it started, in trace hours; ``None`` = never.
        gpu_equivalents: what its placement counted for (0 if it never started).
        idle_hours: hours it held devices without computing: the idle tail up to its stop
            and the hold after the stop (0 if it never started).
        reclaimed_hours: hours of its idle tail that idle reclaim cut off (0 if it never
            started, or ran to its owner's stop or its runtime limit).
        borrowed: placed above its user's ``gpu_limit`` (borrowing), at least once.
        lost_hours: hours it would still have computed, stopped and never started again
            (``busy_hours`` is what it computed).
        requeued: how many times it was stopped with work left (a reclaim) and queued again.
        requeued_hours: the work left at those stops, summed.
        requeue_wait_hours: how long it waited in the queue again after them.
        displaced: how many times a reservation stopped it (or took its held devices back).
        displaced_hours: the work it had left at those stops.
        end_hours: when its devices were released for the last time, once they were.
    """

    id: str
    job: TraceJob
    least_gpu_equivalents: Fraction
    busy_hours: float
    start_hours: float | None = None
    gpu_equivalents: Fraction = Fraction(0)
    idle_hours: float = 0.0
    reclaimed_hours: float = 0.0
    borrowed: bool = False
    lost_hours: float = 0.0
    requeued: int = 0
    requeued_hours: float = 0.0
    requeue_wait_hours: float = 0.0
    displaced: int = 0
    displaced_hours: float = 0.0
    end_hours: float | None = None
    overstayed: int = 0

    @property
    def started(self) -> bool:
        return self.start_hours is not None

    @property
    def wait_hours(self) -> float | None:
        """Hours from submission to start; ``None`` if it never started."""
        return None if self.start_hours is None else self.start_hours - self.job.submit_hours

    @property
    def release_hours(self) -> float | None:
        """When its devices were released, in trace hours; ``None`` if it never started."""
        if self.start_hours is None:
            return None
        if self.end_hours is not None:
            return self.end_hours
        return self.start_hours + self.busy_hours + self.idle_hours


@dataclass(frozen=True)
class ReservationOutcome:
    """What became of one reservation of the replay.

    Attributes:
        asked: the line of the reservations file.
        reservation: what was admitted (``None``: refused).
        refusal: why it was refused (``ds01 reserve``'s message), else empty.
        kept: whether its devices were there (a slot's slice made) and free of others' jobs
            at its start, before the drain (``None``: refused, or it starts after the
            replay's last event).
        displaced: jobs its drain stopped (or whose held devices it took back).
    """

    asked: TraceReservation
    reservation: GpuReservation | None = None
    refusal: str = ""
    kept: bool | None = None
    displaced: int = 0


@dataclass(frozen=True)
class SimulationResult:
    """One replay of a trace under one queue policy and one reclaim policy.

    Attributes:
        policy: the queue policy's name (``fair``, ``fcfs``).
        outcomes: one per job, in trace order.
        capacity_gpu_equivalents: what the allocatable devices count for together.
        end_hours: the last release, or the last submission if that is later.
        reclaim: how idle containers were reclaimed (:data:`~ds01.sim.reclaim.RECLAIMS`).
        mig: ``layout`` (fixed MIG instances) or ``on-demand`` (slices made on demand on
            some GPU).
        borrowing: whether jobs could borrow above their quota.
        reservations: one per reservation replayed, in the order they were asked for.
        borrowable_gpu_hours: GPU-equivalent-hours free while a request waited only for its
            owner's quota, counting only the free devices that no request waiting within
            quota could use (``ds01.core.borrowing.wanted_by``, borrowing's own rule): what
            borrowing could have used at most (after any borrowing, what it left unused).
        declared_runtime: whether each job declared its runtime (busy time left, rounded up
            to the hour) as its runtime limit.
        window_hours: the trace's own period ``[0, W]`` (:func:`trace_window_hours`).
        busy_gpu_hours_in_window: busy GPU-equivalent-hours inside it (work computed
            after ``W`` is left out).
    """

    policy: str
    outcomes: tuple[JobOutcome, ...]
    capacity_gpu_equivalents: Fraction
    end_hours: float
    reclaim: ReclaimName = "ds01"
    mig: str = "layout"
    borrowing: bool = False
    reservations: tuple[ReservationOutcome, ...] | None = None
    borrowable_gpu_hours: float = 0.0
    declared_runtime: bool = False
    window_hours: float = WEEK_HOURS
    busy_gpu_hours_in_window: float = 0.0

    @property
    def window_utilisation(self) -> float:
        """Busy GPU-equivalent-hours inside the trace's own period over its capacity there."""
        capacity = float(self.capacity_gpu_equivalents) * self.window_hours
        return self.busy_gpu_hours_in_window / capacity if capacity > 0 else 0.0


class _Event(IntEnum):
    """Kinds of event; at the same instant, releases go first so submissions find the
    freed devices, and an owner's stop comes before a check of the same job."""

    RELEASE = 0
    STOP = 1
    CHECK = 2
    SUBMIT = 3
    RECLAIM = 4
    RESERVE = 5
    RESERVATION_START = 6
    RESERVATION_END = 7


@dataclass(frozen=True)
class _Running:
    """A started job until its stop (trace hours).

    Attributes:
        start: when it started.
        busy_until: when it stops computing.
        held_until: when its owner or its runtime limit stops it.
        reference: the reference's idle state (``reference`` reclaim only).
        reference_at: when the reference checks it next (``reference`` reclaim only).
        next_check: the check already scheduled for it (``ds01`` reclaim), if any.

    A job queued again runs once more under the same key: an event scheduled for an
    earlier run (a stop at its ``held_until``, a check) is recognised by its time and
    ignored.
    """

    start: float
    busy_until: float
    held_until: float
    reference: ReferenceIdleState | None = None
    reference_at: float | None = None
    next_check: float | None = None


def trace_window_hours(jobs: Sequence[TraceJob]) -> float:
    """The trace's own period: ``[0, W]`` with ``W`` the whole weeks that hold every
    submission (168 h for a one-week trace)."""
    last = max((job.submit_hours for job in jobs), default=0.0)
    return WEEK_HOURS * max(1, math.ceil(last / WEEK_HOURS))


def _inside(start: float, end: float, window: float) -> float:
    """The hours of ``[start, end]`` inside ``[0, window]``."""
    return max(0.0, min(end, window) - max(start, 0.0))


def job_id(job: TraceJob) -> str:
    """The queue id of ``job``: ``job-<line>``, unique within a trace."""
    return f"job-{job.line}"


def _capacity(inventory: Inventory, dynamic: Mapping[str, DynamicGpu]) -> Fraction:
    """GPU-equivalents of the whole machine: the free devices of the GPUs with a fixed
    layout, and the compute slices of each GPU whose slices are made on demand."""
    return sum(
        (
            d.gpu_equivalents
            for d in free_devices(inventory, AllocationState())
            if d.gpu_uuid not in dynamic
        ),
        Fraction(0),
    ) + sum(
        (
            Fraction(d.table.compute_slices, g.total_slices)
            for g in inventory.gpus
            if (d := dynamic.get(g.uuid)) is not None
        ),
        Fraction(0),
    )


class _OnDemandSlices:
    """A replay's MIG slices made on demand: what the planner sees of the dynamic GPUs,
    slices made for a placement, and those destroyed at their release (baselines restored).

    A reservation's *slot* (a ``--mig`` reservation on a dynamic GPU that no instance
    served when it was admitted) gets its slice at the start (``make_slots``), and a slice
    made on demand that a reservation not ended keeps is never destroyed (ds01d does the
    same: ``MigOnDemand.make_for_reservation``, its reservations' repair).

    State (set by ``_Replay.__init__``; ``_Replay`` derives from this class): ``inventory``
    (replaced as slices come and go), ``dynamic``, ``on_demand`` (the UUIDs made on
    demand), ``made`` (a counter for their UUIDs); it reads ``state`` and ``instant`` (the
    replay's clock), and changes nothing else but ``bookings`` (the reservations admitted)
    in ``make_slots``.
    """

    inventory: Inventory
    dynamic: Mapping[str, DynamicGpu]
    on_demand: set[str]
    made: int
    state: AllocationState
    bookings: list[GpuReservation]
    instant: datetime

    def views(self, held: Iterable[str]) -> list[GpuView]:
        """The dynamic GPUs as the planner sees them now."""
        views = []
        for gpu in self.inventory.gpus:
            setup = self.dynamic.get(gpu.uuid)
            if setup is None:
                continue
            view = gpu_view(
                gpu, setup.table, setup.baseline, self.inventory.devices, held, self.on_demand
            )
            if view is not None:
                views.append(view)
        return views

    def _add(self, device: Device, *, on_demand: bool) -> Device:
        """``device`` (a planned one) made, under a UUID of its own."""
        self.made += 1
        made = replace(device, uuid=f"MIG-sim-{self.made}")
        self.inventory = replace(self.inventory, devices=(*self.inventory.devices, made))
        if on_demand:
            self.on_demand.add(made.uuid)
        return made

    def reserved_slices(self) -> set[str]:
        """The devices of the reservations not ended yet: a slice made on demand that one
        keeps is not destroyed before its end (as in ds01d)."""
        return {u for b in self.bookings if b.end > self.instant for u in b.devices}

    def make_slots(self, booked: GpuReservation, now: datetime) -> GpuReservation:
        """At ``booked``'s start, make the slice of each of its slots at its place once the
        free slices made on demand there are destroyed
        (:func:`~ds01.core.reservations.clear_slots`), else where the fragment-least rule
        puts it (:func:`~ds01.core.mig_on_demand.where_to_create`); then re-map what is left
        as ds01d does
        (:func:`~ds01.core.reservations.repair`: a free instance of the profile, or nothing);
        the reservation as it now stands."""
        devices = list(booked.devices)
        gpus = {g.uuid: g for g in self.inventory.gpus}
        steps = clear_slots(self.bookings, self.views(self.state.held()), now)
        places = {s.slot: s.make for s in steps if s.reservation.id == booked.id}
        self._drop({u for s in steps if s.reservation.id == booked.id for u in s.destroy})
        for i, uuid in enumerate(booked.devices):
            if not is_slot(uuid) or booked.profile is None:
                continue
            where = places.get(uuid) or where_to_create(
                self.views(self.state.held()), booked.profile
            )
            if not isinstance(where, NoRoom):
                made = self._add(planned_device(where, gpus[where.gpu_uuid]), on_demand=True)
                devices[i] = made.uuid
        kept = replace(booked, devices=tuple(devices))
        self.bookings = [kept if b.id == booked.id else b for b in self.bookings]
        for fixed in repair(self.bookings, self.inventory, now):
            if fixed.changed and fixed.reservation.id == booked.id:
                kept = replace(kept, devices=fixed.devices)
        self.bookings = [kept if b.id == booked.id else b for b in self.bookings]
        return kept

    def planned_for(self, request: PendingRequest) -> Inventory:
        """The inventory with the slices that would serve ``request`` alone as planned
        devices, outside the slots it is kept from (ds01d's ``MigOnDemand.planned_for``, as
        for a create); the inventory itself without dynamic GPUs or when none is needed."""
        profiles = request.request.mig_profiles
        if not self.dynamic or not profiles:
            return self.inventory
        held = self.state.held()
        keep_out = slot_keep_out(self.bookings, request.blocked)
        planned = plan_profiles(self.inventory, held, self.views(held), profiles, keep_out)
        if isinstance(planned, NoRoom):
            return self.inventory
        return with_planned(self.inventory, planned)

    def borrowable_slices(self, over: Sequence[PendingRequest], inventory: Inventory) -> Inventory:
        """``inventory`` with the slices that would be made on demand for the requests held
        for their quota (``over``, in queue order, each with its ``blocked`` devices), as
        a ``--borrow`` create plans its own (:meth:`planned_for`: a free instance of the
        profile first, no slice over a slot it is kept from), each beside the slices of
        those before it, so that no place is counted twice; unchanged without dynamic GPUs."""
        profiles = [r.request.mig_profiles for r in over]
        if not self.dynamic or not any(profiles):
            return inventory
        held = self.state.held()
        keep_outs = [slot_keep_out(self.bookings, r.blocked) for r in over]
        creates = plan_what_fits(inventory, held, self.views(held), profiles, keep_outs)
        return with_planned(inventory, creates)

    def materialize(self, placement: Placement) -> Placement:
        """``placement`` with its planned slices made."""
        return Placement(
            tuple(
                self._add(d, on_demand=True) if d.uuid.startswith(PLANNED_PREFIX) else d
                for d in placement.devices
            )
        )

    def _drop(self, gone: set[str]) -> None:
        """The slices ``gone`` destroyed (no baseline restored: a slot's slice comes next)."""
        self.on_demand -= gone
        kept = tuple(d for d in self.inventory.devices if d.uuid not in gone)
        self.inventory = replace(self.inventory, devices=kept)

    def destroy(self, released: Iterable[str]) -> None:
        """Destroy the released slices made on demand (not those a reservation not ended
        keeps); restore baselines where none is left."""
        gone = self.on_demand.intersection(released) - self.reserved_slices()
        if not gone:
            return
        self._drop(gone)
        gpus = {g.uuid: g for g in self.inventory.gpus}
        for view in self.views(self.state.held()):
            for create in baseline_creates(view):
                self._add(planned_device(create, gpus[create.gpu_uuid]), on_demand=False)


def _open_to(
    inventory: Inventory,
    bookings: Sequence[GpuReservation],
    waiting: Sequence[PendingRequest],
    now: datetime,
) -> Inventory:
    """``inventory`` without the devices ``bookings`` keep from any of ``waiting`` (each
    expected to hold its devices for ``expected_runtime_hours``)."""
    blocked: set[str] = set()
    for request in waiting if bookings else ():
        hold = request.expected_runtime_hours
        ends_by = None if hold is None else now + timedelta(hours=hold)
        blocked |= blocked_devices(bookings, request.user, now, ends_by)
    if not blocked:
        return inventory
    return replace(inventory, reserved=inventory.reserved | blocked)


def _occupants(state: AllocationState, running: Mapping[str, _Running]) -> list[Occupant]:
    """Every holding of ``state`` as a reservation's drain sees it (``running``: the jobs
    that run, by key)."""
    return [
        Occupant(
            h.container, h.user, h.devices, h.container in running,
            h.gpu_equivalents, h.borrowed,
            at(running[h.container].start) if h.container in running else None,
        )
        for h in state.holdings
        if h.devices
    ]  # fmt: skip


class _Replay(_OnDemandSlices):
    """The state of one replay between events: the event heap, what waits, what runs, who
    holds what, and every job's outcome so far. ``run`` drives it to the end."""

    def __init__(
        self,
        jobs: Sequence[TraceJob],
        inventory: Inventory,
        config: ResourceLimitsConfig,
        policy: SchedulerConfig,
        reclaim: ReclaimName,
        dynamic: Mapping[str, DynamicGpu],
        borrowing: BorrowingConfig | None = None,
        reservations: Sequence[TraceReservation] | None = None,
        declared_runtime: bool = False,
    ) -> None:
        self.inventory = inventory
        self.declared_runtime = declared_runtime
        self.declared: dict[str, float] = {}  # job -> the runtime its owner declared
        self.config = config
        self.groups = {job.user: job.group for job in jobs}
        self.borrowing = borrowing if borrowing is not None and borrowing.enabled else None
        self.warned: dict[str, datetime] = {}
        self.policy = policy
        self.reclaim = reclaim
        self.dynamic = dynamic
        self.on_demand: set[str] = set()
        self.made = 0
        self.setups = user_setups(jobs, config)
        self.outcomes = {
            job_id(job): JobOutcome(
                id=job_id(job),
                job=job,
                least_gpu_equivalents=least_gpu_equivalents(job.request, inventory),
                busy_hours=self.setups[job.user].busy_hours(job),
            )
            for job in jobs
        }
        self.by_id = {job_id(job): job for job in jobs}
        self.capacity = _capacity(inventory, dynamic)
        self.events: list[tuple[float, _Event, str]] = [
            (job.submit_hours, _Event.SUBMIT, job_id(job)) for job in jobs
        ]
        #: Reservations by event key (``res-<line>``), in the order they are asked for, and
        #: those admitted.
        self.asked = {f"res-{r.line}": ReservationOutcome(r) for r in reservations or ()}
        self.bookings: list[GpuReservation] = []
        self.instant = EPOCH
        self.events += [(r.asked.made_hours, _Event.RESERVE, k) for k, r in self.asked.items()]
        heapq.heapify(self.events)
        self.pending: dict[str, PendingRequest] = {}
        self.running: dict[str, _Running] = {}
        self.state = AllocationState()
        self.expected_ends: dict[str, datetime | None] = {}
        self.usage: dict[str, UsageInterval] = {}
        self.reservation: Reservation | None = None
        self.last_event = 0.0
        #: Jobs stopped with work left: the hours left, queued again at their release.
        self.left: dict[str, float] = {}
        #: Jobs queued again: the hours they compute once started, and since when they wait.
        self.again: dict[str, tuple[float, float]] = {}
        #: When each stopped job's devices are released.
        self.release_at: dict[str, float] = {}
        #: GPU-equivalents free after the last pass while work over quota waited, on devices
        #: no request waiting within quota could use, and that integrated over time.
        self.borrowable = Fraction(0)
        self.borrowable_gpu_hours = 0.0
        #: The trace's own period, and the busy GPU-equivalent-hours inside it.
        self.window_hours = trace_window_hours(jobs)
        self.busy_in_window = 0.0

    def run(self) -> None:
        """Take every event in order; after each instant, schedule and check for idleness."""
        while self.events:
            hours = self.events[0][0]
            now = self.instant = at(hours)
            self.borrowable_gpu_hours += self.borrowable * (hours - self.last_event)
            while self.events and self.events[0][0] == hours:
                _, kind, key = heapq.heappop(self.events)
                self.handle(kind, key, hours, now)
            self.last_event = hours
            if self.bookings:
                self.drain(hours, now)
            self.borrowable = Fraction(0)
            demand = self.schedule(hours, now) if self.pending else False
            if self.reclaim == "ds01":
                self.check_ds01(hours, demand)

    def handle(self, kind: _Event, key: str, hours: float, now: datetime) -> None:
        """One event of job (or reservation) ``key`` at ``hours``."""
        if kind >= _Event.RESERVE:
            self.reservation_event(kind, key, hours, now)
        elif kind is _Event.SUBMIT:
            self.submit(key, now)
        elif kind is _Event.STOP:
            run = self.running.get(key)
            if run is not None and run.held_until == hours:
                self.stop(key, hours)
        elif kind is _Event.CHECK:
            run = self.running.get(key)
            if run is not None and run.reference is not None and run.reference_at == hours:
                self.check_reference(key, run, run.reference, hours)
        elif kind is _Event.RELEASE:
            self.release(key, hours, now)
        # RECLAIM: nothing but the pass that follows every instant

    def submit(self, key: str, now: datetime) -> None:
        """Job ``key`` joins the queue at ``now`` (again, when it was stopped with work left)."""
        job = self.by_id[key]
        setup = self.setups[job.user]
        if self.declared_runtime:  # what it has left to compute, rounded up to the hour
            again = self.again.get(key)
            left = setup.busy_hours(job) if again is None else again[0]
            self.declared[key] = max(1.0, math.ceil(left))
        self.pending[key] = PendingRequest(
            id=key,
            user=job.user,
            group=job.group,
            request=job.request,
            quota=setup.quota,
            priority=setup.priority,
            submitted_at=now,
            expected_runtime_hours=setup.hold_for(self.declared.get(key)),
        )

    def release(self, key: str, hours: float, now: datetime) -> None:
        """Job ``key``'s devices are free at ``now`` (nothing if they are already); one
        stopped with work left joins the queue again."""
        holder = next((h for h in self.state.holdings if h.container == key), None)
        if holder is None:
            return
        self.state = self.state.without(key)
        del self.expected_ends[key]
        self.release_at.pop(key, None)
        # The fair share keeps every part: the part that ends is kept under its own name.
        ended = replace(self.usage.pop(key), end=now)
        self.usage[f"{key}@{len(self.usage)}"] = ended
        self.outcomes[key] = replace(self.outcomes[key], end_hours=hours)
        self.destroy(holder.devices)
        left = self.left.pop(key, None)
        if left is not None:
            self.again[key] = (left, hours)
            self.submit(key, now)

    def schedule(self, hours: float, now: datetime) -> bool:
        """One scheduling pass; start what it places. Whether requests wait for devices."""
        containers: dict[str, tuple[str, ...]] = {}
        for holding in self.state.holdings:
            containers[holding.user] = (*containers.get(holding.user, ()), holding.container)
        waiting = [
            replace(request, user_containers=containers.get(request.user, ()))
            for request in self.pending.values()
        ]
        totals = decayed_usage(self.usage.values(), now, self.policy.usage_half_life_hours)
        if self.bookings:
            waiting = with_blocked(self.start_reserved(waiting, hours, now), self.bookings, now)
        inventory = self.inventory
        if self.dynamic:
            held = self.state.held()
            views = self.views(held)
            keep_outs: list[KeepOut] = []
            if self.bookings:  # slots are kept as reserved devices are
                waiting, keep_outs = out_of_slots(waiting, self.bookings, views)
            profiles = [r.request.mig_profiles for r in waiting]
            creates = plan_what_fits(inventory, held, views, profiles, keep_outs)
            inventory = with_planned(inventory, creates)
        decision = plan(
            waiting,
            inventory,
            self.state,
            now,
            totals,
            self.policy,
            self.expected_ends,
            self.reservation,
        )
        self.reservation = decision.reservation
        for request, placement in decision.starts:
            self.start(request, self.materialize(placement), hours, now)
        if self.borrowing is not None:
            self.borrow(decision, self.borrowing, hours, now)
            self.take_back(decision, self.borrowing, hours, now)
        over = [e.request for e in decision.ranked if e.status == "quota"]
        over = [r for r in over if r.id in self.pending]
        if over:
            # Borrowing's own rule: a free device counts when a request held for its quota
            # could take it and no request that waits for devices could (``wanted_by``);
            # with MIG on demand, so does a slice a ``--borrow`` create would make for one.
            opened = _open_to(self.inventory, self.bookings, list(self.pending.values()), now)
            free = free_devices(self.borrowable_slices(over, opened), self.state)
            wanted = decision.waiting_requests
            self.borrowable = sum(
                (
                    d.gpu_equivalents
                    for d in free
                    if wanted_by(over, (d,)) is not None and wanted_by(wanted, (d,)) is None
                ),
                Fraction(0),
            )
        return decision.waiting_for_devices

    # -- borrowing ----------------------------------------------------------------------------

    def _containers_of(self, user: str) -> tuple[str, ...]:
        return tuple(h.container for h in self.state.of_user(user))

    def borrow(self, decision: Plan, policy: BorrowingConfig, hours: float, now: datetime) -> None:
        """Place the requests held for their quota on idle devices, borrowed, in queue order,
        on devices no request waiting for devices could use (``allocate_borrowing``)."""
        for entry in decision.ranked:
            request = entry.request
            if entry.status != "quota" or request.id not in self.pending:
                continue
            try:
                placed = allocate_borrowing(
                    request.request, request.user, request.quota,
                    request.open_in(self.planned_for(request)), self.state,
                    self._containers_of(request.user), policy=policy, borrow=True,
                    waiting=decision.waiting_requests,
                )  # fmt: skip
            except (NoCapacity, QuotaExceeded):
                continue
            placement = self.materialize(placed.placement)
            self.start(request, placement, hours, now, borrowed=placed.borrowed)
            if placed.borrowed:  # it may be reclaimed once its minimum runtime is over
                protected = hours + policy.min_runtime_minutes / MINUTES_PER_HOUR
                heapq.heappush(self.events, (protected, _Event.RECLAIM, request.id))

    def take_back(
        self, decision: Plan, policy: BorrowingConfig, hours: float, now: datetime
    ) -> None:
        """Warn, then stop after the grace, the borrowed jobs the head of the queue needs."""
        head = None
        if decision.reservation is not None and decision.reservation.request_id in self.pending:
            head = decision.entry(decision.reservation.request_id).request  # with its blocked
            head = replace(head, user_containers=self._containers_of(head.user))
        started = {key: at(run.start) for key, run in self.running.items()}
        facts = HoldingFacts(
            {h.container: started.get(h.container) for h in self.state.holdings},
            is_reserved=reserved_by_holder(self.bookings, now),
            reclaiming=self.warned,
            limits=self.gpu_limits(),
        )
        choice = choose_reclaim(head, self.inventory, self.state, now, policy, facts)
        steps = reclaim_steps(choice, self.warned, now, policy)
        for key in steps.cancel:
            del self.warned[key]
        for key in steps.warn:
            self.warned[key] = now
            heapq.heappush(self.events, (hours_of(stop_due(now, policy)), _Event.RECLAIM, key))
        for key in steps.stop:
            del self.warned[key]
            self.take(key, hours)

    def gpu_limits(self) -> dict[str, Fraction | None]:
        """Each user's ``gpu_limit``."""
        return {user: setup.quota.gpu_limit for user, setup in self.setups.items()}

    def take(self, key: str, hours: float) -> None:
        """Stop job ``key`` at ``hours`` and free its devices at once; the work it has left
        joins the queue again at the release."""
        run = self.running.pop(key, None)
        outcome = self.outcomes[key]
        if run is not None:
            left = run.busy_until - min(hours, run.busy_until)
            cut = _inside(run.busy_until - left, run.busy_until, self.window_hours)
            self.busy_in_window -= float(outcome.gpu_equivalents) * cut
            self.outcomes[key] = replace(
                outcome,
                busy_hours=outcome.busy_hours - left,
                lost_hours=outcome.lost_hours + left,
                idle_hours=outcome.idle_hours + max(0.0, hours - run.busy_until),
            )
            if left > 0:
                self.left[key] = left
        else:  # stopped, in its hold: the hold ends now
            release = self.release_at.get(key, hours)
            self.outcomes[key] = replace(outcome, idle_hours=outcome.idle_hours - (release - hours))
        # A release at this very instant: the pass that follows it places the waiting request.
        heapq.heappush(self.events, (hours, _Event.RELEASE, key))

    # -- GPU reservations ---------------------------------------------------------------------

    def reservation_event(self, kind: _Event, key: str, hours: float, now: datetime) -> None:
        """A reservation is asked for (admitted or refused), starts (kept or not), or ends
        (nothing but the pass that follows). At the start, the jobs on slices made on demand
        over its slots' places are stopped and those slices freed at once, before the slots'
        slices are made (as ds01d does: ``core.reservations.slot_places``)."""
        outcome = self.asked[key]
        if kind is _Event.RESERVE:
            self.asked[key] = self.admit(key, outcome, now)
        elif kind is _Event.RESERVATION_START and outcome.reservation is not None:
            places = slot_places(self.bookings, self.views(self.state.held()), now, timedelta(0))
            placed = next(
                (p for p in places if p.id == outcome.reservation.id), outcome.reservation
            )
            in_way = [
                h for h in self.state.holdings
                if not placed.is_for(h.user) and set(h.devices) & set(placed.devices)
            ]  # fmt: skip
            if placed is not outcome.reservation:
                occupants = _occupants(self.state, self.running)
                for stop in self.displace([placed], hours, now, occupants):
                    self.release(stop, hours, now)  # its slices destroyed before the make
            booked = self.make_slots(outcome.reservation, now)
            present = {d.uuid for d in self.inventory.devices}
            missing = [u for u in booked.devices if u not in present]
            self.asked[key] = replace(  # displaced counted on it meanwhile
                self.asked[key], reservation=booked, kept=not in_way and not missing
            )
        elif kind is _Event.RESERVATION_END and outcome.reservation is not None:
            # Its slices made on demand are destroyed once free, as ds01d does.
            held = self.state.held()
            self.destroy(u for u in outcome.reservation.devices if u not in held)

    def admit(self, key: str, outcome: ReservationOutcome, now: datetime) -> ReservationOutcome:
        """``ds01 reserve`` at ``now``: the reservation admitted, or why not."""
        asked = outcome.asked
        request = ReservationRequest(
            asked.holder, at(asked.start_hours), at(asked.start_hours + asked.hours),
            asked.whole_gpus, asked.mig_profile,
        )  # fmt: skip
        limits = ReservationLimits()
        if asked.holder is not None:
            group = self.groups.get(asked.holder)
            unix_groups = (
                []
                if group is None
                else [self.config.unix_group_of(group) if group in self.config.groups else group]
            )
            resolved = resolve_reservation_limits(self.config, asked.holder, unix_groups)
            limits = ReservationLimits.of(resolved.to_dict(), self.config.reservations.min_minutes)
        try:
            views = self.views(self.state.held()) if asked.mig_profile else ()
            made = admit(
                request, self.bookings, self.inventory, limits, now, new_id=key, views=views
            )
        except (InvalidInput, NoCapacity, NotFound, QuotaExceeded) as refused:
            return replace(outcome, refusal=refused.message)
        self.bookings.append(made)
        heapq.heappush(self.events, (asked.start_hours, _Event.RESERVATION_START, key))
        heapq.heappush(self.events, (asked.start_hours + asked.hours, _Event.RESERVATION_END, key))
        return replace(outcome, reservation=made)

    def start_reserved(
        self, waiting: list[PendingRequest], hours: float, now: datetime
    ) -> list[PendingRequest]:
        """Start the waiting requests that fit on their owners' reservations in force;
        the requests still waiting."""
        starts = reserved_starts(waiting, self.bookings, self.inventory, self.state, now)
        for request, placement in starts:
            self.start(request, placement, hours, now)
        started = {request.id for request, _ in starts}
        return [r for r in waiting if r.id not in started]

    def displace(
        self,
        bookings: Sequence[GpuReservation],
        hours: float,
        now: datetime,
        occupants: Sequence[Occupant],
    ) -> list[str]:
        """Stop the jobs on devices of ``bookings`` in force that are not their owners'
        (``drain``), counted as displaced; the jobs stopped."""
        _, stops = drain(bookings, occupants, now, timedelta(0))
        for stop in stops:
            key = stop.container
            run = self.running.get(key)
            left = 0.0 if run is None else run.busy_until - min(hours, run.busy_until)
            outcome = self.outcomes[key]
            self.outcomes[key] = replace(
                outcome, displaced=outcome.displaced + 1,
                displaced_hours=outcome.displaced_hours + left,
            )  # fmt: skip
            self.take(key, hours)
            asked = self.asked[stop.reservation.id]
            self.asked[stop.reservation.id] = replace(asked, displaced=asked.displaced + 1)
        return [stop.container for stop in stops]

    def drain(self, hours: float, now: datetime) -> None:
        """Stop the jobs on devices of reservations in force that are not their owners',
        and, at a reservation's end, its holder's jobs placed there on top of their quota
        that do not fit within it (``overstays``); the work they have left is queued again."""
        occupants = _occupants(self.state, self.running)
        self.displace(self.bookings, hours, now, occupants)
        _, ends = overstays(self.bookings, occupants, self.gpu_limits(), now, timedelta(0))
        for end in ends:
            if end.container not in self.running:  # stopped by a drain in this instant
                continue
            outcome = self.outcomes[end.container]
            self.outcomes[end.container] = replace(outcome, overstayed=outcome.overstayed + 1)
            self.take(end.container, hours)

    def start(
        self,
        request: PendingRequest,
        placement: Placement,
        hours: float,
        now: datetime,
        *,
        borrowed: bool = False,
    ) -> None:
        """Start ``request`` on ``placement`` at ``hours``; schedule its stop and checks."""
        key = request.id
        job, setup = self.by_id[key], self.setups[request.user]
        del self.pending[key]
        outcome = self.outcomes[key]
        busy = setup.busy_hours(job)
        if key in self.again:  # the rest of a job stopped with work left
            busy, since = self.again.pop(key)
            outcome = replace(
                outcome,
                busy_hours=outcome.busy_hours + busy,
                lost_hours=outcome.lost_hours - busy,
                requeued=outcome.requeued + 1,
                requeued_hours=outcome.requeued_hours + busy,
                requeue_wait_hours=outcome.requeue_wait_hours + hours - since,
                borrowed=outcome.borrowed or borrowed,
            )
        else:
            outcome = replace(
                outcome,
                start_hours=hours,
                gpu_equivalents=placement.gpu_equivalents,
                borrowed=borrowed,
            )
        self.outcomes[key] = outcome
        tail = setup.held_tail_hours(job)
        limit = runtime_limit_hours(setup.max_runtime_hours, self.declared.get(key))
        if limit is not None:  # stopped at its own runtime limit (a declared one is shorter)
            tail = max(0.0, min(tail, limit - busy))
        run = _Running(
            start=hours,
            busy_until=hours + busy,
            held_until=hours + busy + tail,
        )
        inside = _inside(hours, run.busy_until, self.window_hours)
        self.busy_in_window += float(placement.gpu_equivalents) * inside
        self.state = self.state.with_holding(
            placement.holding(key, request.user, borrowed=borrowed)
        )
        hold = setup.hold_for(self.declared.get(key))
        self.expected_ends[key] = None if hold is None else now + timedelta(hours=hold)
        self.usage[key] = UsageInterval(request.user, request.group, placement.gpu_equivalents, now)
        heapq.heappush(self.events, (run.held_until, _Event.STOP, key))
        if self.reclaim == "reference":
            first = reference_first_check(hours)
            idle = ReferenceIdleState(last_activity_hours=hours)
            run = replace(run, reference=idle, reference_at=first)
            if first < run.held_until:
                heapq.heappush(self.events, (first, _Event.CHECK, key))
        self.running[key] = run

    def stop(self, key: str, hours: float) -> None:
        """Stop running job ``key`` at ``hours``; its devices are released after the hold."""
        run, setup = self.running.pop(key), self.setups[self.by_id[key].user]
        outcome = self.outcomes[key]
        self.outcomes[key] = replace(
            outcome,
            idle_hours=outcome.idle_hours + hours - run.busy_until + setup.hold_hours,
            reclaimed_hours=outcome.reclaimed_hours + run.held_until - hours,
        )
        self.expected_ends[key] = at(hours + setup.hold_hours)
        self.release_at[key] = hours + setup.hold_hours
        heapq.heappush(self.events, (hours + setup.hold_hours, _Event.RELEASE, key))

    def check_reference(
        self, key: str, run: _Running, idle: ReferenceIdleState, hours: float
    ) -> None:
        """One hourly check of the reference at ``hours``; the next one is scheduled."""
        allocated = sum((h.gpu_equivalents for h in self.state.holdings), Fraction(0))
        high_demand = allocated >= REFERENCE_HIGH_DEMAND_FRACTION * self.capacity
        timeout = self.setups[self.by_id[key].user].idle_timeout_hours
        checked, stops = reference_check(idle, hours, run.busy_until, timeout, high_demand)
        if stops:
            self.stop(key, hours)
            return
        following = hours + REFERENCE_CHECK_PERIOD_HOURS
        self.running[key] = replace(run, reference=checked, reference_at=following)
        if following < run.held_until:
            heapq.heappush(self.events, (following, _Event.CHECK, key))

    def check_ds01(self, hours: float, demand: bool) -> None:
        """Stop the jobs whose idle stop is due; schedule a check at the next due ones."""
        for key, run in list(self.running.items()):
            setup = self.setups[self.by_id[key].user]
            due = setup.idle_stop_hours(run.start, run.busy_until, hours, demand)
            if due is None or due >= run.held_until - _INSTANT_HOURS:
                continue  # its owner or its runtime limit stops it first
            if due <= hours:
                self.stop(key, hours)
            elif due != run.next_check:
                self.running[key] = replace(run, next_check=due)
                heapq.heappush(self.events, (due, _Event.CHECK, key))


def simulate(
    jobs: Sequence[TraceJob],
    inventory: Inventory,
    config: ResourceLimitsConfig,
    policy: SchedulerConfig,
    policy_name: str,
    reclaim: ReclaimName = "ds01",
    dynamic: Mapping[str, DynamicGpu] | None = None,
    borrowing: BorrowingConfig | None = None,
    reservations: Sequence[TraceReservation] | None = None,
    declared_runtime: bool = False,
) -> SimulationResult:
    """Replay ``jobs`` on ``inventory`` under ``policy`` and ``reclaim`` (module docstring).
    ``dynamic``: GPU UUID → its MIG-on-demand setup, for the GPUs that make slices on demand
    (their instances in ``inventory`` are the baseline's, or none). ``borrowing``: the
    policy under which jobs over quota borrow idle devices (``None`` or not ``enabled``:
    no borrowing). ``reservations``: GPU reservations asked for during the replay
    (``None``: none, and the result has no reservations). ``declared_runtime``: every job
    is created with the runtime it has left to compute rounded up to the hour
    (``container-create --runtime-hours``), its runtime limit instead of ``max_runtime_hours``.

    Deterministic: the same inputs give the same result.
    """
    replay = _Replay(
        jobs, inventory, config, policy, reclaim, dynamic or {}, borrowing, reservations,
        declared_runtime,
    )  # fmt: skip
    replay.run()
    return SimulationResult(
        policy=policy_name,
        outcomes=tuple(replay.outcomes[job_id(job)] for job in jobs),
        capacity_gpu_equivalents=replay.capacity,
        end_hours=replay.last_event,
        reclaim=reclaim,
        mig="on-demand" if dynamic else "layout",
        borrowing=replay.borrowing is not None,
        reservations=None if reservations is None else tuple(replay.asked.values()),
        borrowable_gpu_hours=replay.borrowable_gpu_hours,
        declared_runtime=declared_runtime,
        window_hours=replay.window_hours,
        busy_gpu_hours_in_window=replay.busy_in_window,
    )


__all__ = [
    "EPOCH",
    "DynamicGpu",
    "JobOutcome",
    "ReservationOutcome",
    "SimulationResult",
    "UserSetup",
    "at",
    "hours_of",
    "job_id",
    "simulate",
    "trace_window_hours",
    "user_setups",
]
