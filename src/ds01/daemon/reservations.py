"""Reservations in ds01d: made, listed and cancelled through the API, honoured at placement,
announced and enforced by the lifecycle loop. The decisions are ``ds01.core.reservations``'.

- **Made** (``create``) under the allocation lock (two requests never take the same slot),
  against the reservations in the store, the inventory and the caller's limits
  (``reservations:`` in resource-limits.yaml); ``reservation.create`` is logged, a refusal
  as ``denied`` with the reason. ``--from`` is the server's local time. Admins may reserve
  for maintenance (no holder).
- **Listed** (``listing``): the caller's own and maintenance windows, or everyone's
  (``all``); ended ones are dropped from the store a week after their end.
- **Cancelled** (``cancel``) by the holder or an admin: ``reservation.cancel``. Before its
  start (or less than a second after) a reservation is dropped: its row is deleted at once
  (``StateStore.drop_reservation``; the event keeps the record), so create-and-cancel
  loops leave nothing behind for later reads of the store; in force, its end is cut
  to that moment, to the second (``StateStore.cut_reservation``): what
  it kept until then still counts (the week's GPU-hours), and it ends through the end rule
  below, as any other. An ended one cannot be cancelled (its cost would be erased).
- **Honoured at placement** (``allocate_honouring``, the one call of ``Creation.admit`` and
  ``Reacquire``): during a reservation its holder is first placed on the reserved devices,
  on top of their quota; otherwise the devices ``core.reservations.blocked_devices`` names
  are kept out, with the new container's runtime limit as its end (none when an exemption
  covers the owner). The GPU queue plans each waiting request without the devices blocked
  for it (``core.reservations.with_blocked``, by its expected hold), so a queued request
  lands on a reserved device only when it is the holder's or would be done by the start.
- **Enforced** (``ReservationWatch``, one step of each lifecycle pass): ``reservation.start``
  and ``reservation.end`` when a phase changes (the phase is stored, so a restart announces
  nothing twice); the owners of containers still on a device ``warning_minutes`` before its
  reservation starts are warned (``lifecycle.warn``, kind ``reservation``; once per
  container and reservation, the warnings kept in the state store so that a restart does
  not warn again), and at the start those containers are
  stopped (``cleanup.reservation``) and their devices given back, as are a stopped
  container's. Before and at a reservation's end the same for its holder's containers on
  top of their quota (``core.reservations.overstays``: warned with kind
  ``reservation_end``, stopped at the end unless they fit within ``gpu_limit`` then, and
  stopped ones on its devices give them back first, so that their next start goes through
  quota); a reservation cancelled while in force has its end cut to the cancel.
  A container whose runtime limit stops it before a start is not warned
  (``Occupant.ends_by``, from the lifecycle's clocks).
- **Slots** (the same step): from the lead time the slices made on demand over a slot's
  place count as the reservation's (``core.reservations.slot_places``): their containers
  are warned and stopped as above. After the stops, at the start, the free slices over the
  place are destroyed at once and the slot's slice is made there
  (``core.reservations.clear_slots``), else wherever there is room.
- **Repaired** (the same step): a device a reservation keeps that the inventory no longer
  has (a MIG layout changed) is re-mapped to an equivalent free one
  (``core.reservations.repair``, ``reservation.remap``), else the reservation is reported
  once as affected (``reservation.affected``, ds01d's log) and listed with
  ``missing_devices``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from fractions import Fraction
from typing import Any, Final, Protocol, TypeVar

from ds01.config.resolve import resolve_reservation_limits
from ds01.core.lifecycle import ContainerClock, runtime_limit_hours, runtime_stop
from ds01.core.mig_on_demand import CreateSlice, GpuView, KeepOut, in_the_way
from ds01.core.reservations import (
    MAINTENANCE,
    SLOT_PREFIX,
    DrainWarn,
    EndWarn,
    Occupant,
    Reservation,
    ReservationLimits,
    ReservationRequest,
    admit,
    blocked_devices,
    clear_slots,
    drain,
    format_moment,
    holder_view,
    is_slot,
    next_change,
    overstays,
    phase,
    repair,
    slot_keep_out,
    slot_places,
)
from ds01.daemon import schemas as api
from ds01.daemon.access import resource_of
from ds01.daemon.context import DaemonContext
from ds01.daemon.identity import Caller
from ds01.errors import Ds01Error, InvalidInput, NoCapacity, NotFound, QuotaExceeded
from ds01.model import labels as L
from ds01.model.device import Device, Inventory
from ds01.model.quota import GpuQuota
from ds01.model.text import plain
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser
from ds01.runtime.store import ReservationRecord, WarningKind

log = logging.getLogger(__name__)

#: What ``--from`` accepts: minutes, or seconds too.
START_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")

#: How long an ended reservation stays listed before the store forgets it.
KEEP_ENDED = timedelta(days=7)
#: How far ahead the dashboard's week view looks.
WEEK = timedelta(days=7)

_ID_LENGTH = 8

#: The GPUs with MIG on demand as the planner sees them (``MigOnDemand.views``).
Views = Callable[[Inventory], Sequence[GpuView]]


class SliceDestroy(Enum):
    """What became of a free slice made on demand over a slot's place, destroyed at the
    slot's start (``SlotSlices.destroy_for_reservation``)."""

    DESTROYED = "destroyed"  # it went: its place is clear
    GONE = "gone"  # it was not there (destroyed for another slot it lay over): clear too
    REFUSED = "refused"  # the backend refused (a process runs on it; logged): it stays


class SlotSlices(Protocol):
    """What the lifecycle step asks of the slices made on demand for the slots of
    reservations (``MigOnDemand``); every call under the allocation lock."""

    def views(self, inventory: Inventory, held: Iterable[str]) -> list[GpuView]:
        """The GPUs with MIG on demand, ``held`` the devices containers hold."""
        ...

    def make_at(self, create: CreateSlice, inventory: Inventory) -> Device:
        """Make the slice of a slot at its own place (raises ``Ds01Error``)."""
        ...

    def make_for_reservation(
        self, profile: str, inventory: Inventory, held: Iterable[str]
    ) -> Device | None:
        """Make a slice of ``profile`` wherever there is room; ``None``: none."""
        ...

    def destroy_for_reservation(self, uuid: str, inventory: Inventory) -> SliceDestroy:
        """Destroy a free slice made on demand over a slot's place, if ``inventory`` has it."""
        ...


#: What a placement decision returns (a ``Placement``, a ``BorrowDecision``).
_Decision = TypeVar("_Decision")


def parse_start(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM[:SS]`` in the server's local time, as an aware datetime.

    Raises:
        InvalidInput: not such a time, or a wall-clock time the server's zone skips (the
            gap of a change to summer time): it is refused, never silently moved."""
    for fmt in START_FORMATS:
        try:
            wall = datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        try:
            moment = wall.astimezone()
        except (OverflowError, OSError, ValueError):
            break  # beyond what the clock can say: not a time
        if moment.replace(tzinfo=None) != wall:
            raise InvalidInput(
                f"--from {text[:40]!r} does not exist in the server's local time (the clocks "
                "skip it, e.g. when they go forward for summer time); pick a time outside "
                "that gap."
            )
        return moment
    raise InvalidInput(
        f'--from {text[:40]!r} is not a time: write it as "YYYY-MM-DD HH:MM" (the server\'s '
        'local time), e.g. "2026-12-10 09:00".'
    )


def _local(reservation: Reservation) -> Reservation:
    """``reservation`` with its times in the server's zone (what messages show)."""
    return replace(
        reservation, start=reservation.start.astimezone(), end=reservation.end.astimezone()
    )


def kept(ctx: DaemonContext) -> list[Reservation]:
    """The reservations in the store that were not cancelled, in the server's zone."""
    return [_local(r.reservation()) for r in ctx.store.reservations()]


def limits_of(ctx: DaemonContext, user: UnixUser) -> ReservationLimits:
    """``user``'s reservation limits (``ds01.config.resolve.resolve_reservation_limits``)."""
    limits = ctx.config().limits
    return ReservationLimits.of(
        resolve_reservation_limits(limits, user.name, user.groups).to_dict(),
        limits.reservations.min_minutes,
    )


def info(
    record: ReservationRecord, now: datetime, inventory: Inventory | None = None
) -> api.ReservationInfo:
    """``record`` as the API shows it, its phase at ``now``."""
    r = _local(record.reservation())
    labels = inventory.by_uuid() if inventory is not None else {}
    return api.ReservationInfo(
        id=r.id,
        holder=r.holder,
        devices=list(r.devices),
        device_labels=[_label(u, r, labels, inventory) for u in r.devices],
        gpu_equivalents=round(float(r.gpu_equivalents), 4),
        start=r.start.isoformat(timespec="seconds"),
        end=r.end.isoformat(timespec="seconds"),
        note=r.note,
        created_by=r.created_by,
        created_at=record.created_at,
        phase="cancelled" if record.phase == "cancelled" else phase(r, now),
        missing_devices=[
            u for u in r.devices if u not in labels and not (is_slot(u) and r.start > now)
        ]
        if inventory is not None
        else [],
    )


def _label(
    uuid_: str, r: Reservation, labels: dict[str, Device], inventory: Inventory | None
) -> str:
    """A device as ``gpu-status`` names it; a slot as its GPU and profile, to be made."""
    if uuid_ in labels:
        return labels[uuid_].label
    if inventory is None or not is_slot(uuid_):
        return uuid_
    gpus = [g for g in inventory.gpus if uuid_.startswith(f"{SLOT_PREFIX}{g.uuid}-")]
    return f"{gpus[0].index}:{r.profile} (made at the start)" if gpus else uuid_


def _event_details(r: Reservation) -> dict[str, object]:
    return {
        "holder": r.holder,
        "devices": list(r.devices),
        "start": r.start.isoformat(timespec="seconds"),
        "end": r.end.isoformat(timespec="seconds"),
        **({"note": r.note} if r.note else {}),
    }


def _remapped(
    ctx: DaemonContext,
    r: Reservation,
    devices: Sequence[str],
    replaced: Mapping[str, str],
    **more: object,
) -> None:
    """The ``reservation.remap`` event: ``r`` now holds ``devices``, each of ``replaced``'s
    keys replaced by its value; ``more`` details after those."""
    ctx.events.emit(
        "reservation.remap",
        user="ds01d",
        resource=f"reservation/{r.id}",
        details={
            **_event_details(replace(r, devices=tuple(devices))),
            "replaced": dict(replaced),
            **more,
        },
    )


# ------------------------------------------------------------------------------------------
# The API
# ------------------------------------------------------------------------------------------


def create(
    ctx: DaemonContext,
    caller: Caller,
    request: api.ReservationRequest,
    views: Views | None = None,
) -> api.ReservationInfo:
    """Reserve what ``request`` asks for the caller (or for maintenance), or refuse with why
    (``views``: the GPUs with MIG on demand, where a ``--mig`` reservation may keep a slot):
    ``NoCapacity`` (a conflict: the slot in the way and the next free one), ``QuotaExceeded``
    (a limit), ``InvalidInput``, ``PermissionDenied`` (maintenance by a non-admin)."""
    resource = "reservation/new"
    if request.maintenance and not caller.is_admin:
        raise ctx.deny(caller, resource, "Only admins may reserve GPUs for maintenance.")
    try:
        start, end = window_of(request.start, request.hours)
        wanted = ReservationRequest(
            holder=None if request.maintenance else caller.name,
            start=start,
            end=end,
            whole_gpus=request.gpus or 0,
            mig_profile=request.mig,
        )
    except InvalidInput as refused:
        ctx.log_refusal(caller, "reservation.create", resource, refused)
        raise
    with ctx.allocation_lock:
        now, inventory = ctx.now(), ctx.backend.inventory()
        try:
            made = admit(
                wanted,
                kept(ctx),
                inventory,
                limits_of(ctx, caller.user),
                now,
                new_id=uuid.uuid4().hex[:_ID_LENGTH],
                note=plain(request.note).strip(),  # shown on others' terminals
                created_by=caller.name,
                views=views(inventory) if views is not None and request.mig else (),
            )
        except (NoCapacity, QuotaExceeded, NotFound, InvalidInput) as refused:
            ctx.log_refusal(caller, "reservation.create", resource, refused, **refused.details)
            raise
        # Stored as upcoming even when it starts now: the lifecycle step announces the start.
        record = ReservationRecord.of(made, now.isoformat(timespec="seconds"), "upcoming")
        ctx.store.add_reservation(record)
    ctx.events.emit(
        "reservation.create",
        user=caller.name,
        resource=f"reservation/{made.id}",
        details=_event_details(made),
    )
    ctx.queue_changed()
    ctx.reservations_changed()
    return info(record, now, inventory)


def window_of(start_text: str, hours: float) -> tuple[datetime, datetime]:
    """The window ``--from start_text --hours hours`` asks for (:func:`parse_start`);
    ``InvalidInput`` when its end is past what a date can be (year 9999)."""
    start = parse_start(start_text)
    try:
        return start, start + timedelta(hours=hours)
    except OverflowError:
        raise InvalidInput(
            f"--from {format_moment(start)} plus {hours:g} hours is past any date ds01 keeps."
        ) from None


def listing(ctx: DaemonContext, caller: Caller, *, everyone: bool) -> list[api.ReservationInfo]:
    """Reservations not ended: the caller's own and maintenance windows, or all (``everyone``)."""
    now, inventory = ctx.now(), ctx.backend.inventory()
    rows = [r for r in ctx.store.reservations() if datetime.fromisoformat(r.end) > now]
    if not everyone:
        rows = [r for r in rows if r.holder in (caller.name, None)]
    return [info(r, now, inventory) for r in rows]


def week(ctx: DaemonContext, now: datetime, inventory: Inventory) -> list[api.ReservationInfo]:
    """Everyone's reservations not ended that start within ``WEEK`` of ``now``."""
    horizon = now + WEEK
    return [
        info(r, now, inventory)
        for r in ctx.store.reservations()
        if datetime.fromisoformat(r.end) > now and datetime.fromisoformat(r.start) < horizon
    ]


def cancel(ctx: DaemonContext, caller: Caller, reservation_id: str) -> api.ReservationInfo:
    """Cancel a reservation (its holder, or an admin); ``NotFound`` for an unknown id."""
    resource = f"reservation/{reservation_id[:64]}"
    found = next((r for r in ctx.store.reservations() if r.id == reservation_id), None)
    if found is None:
        raise NotFound(
            f"No reservation {reservation_id[:64]!r}. `ds01 reservations --all` lists them."
        )
    if found.holder != caller.name and not caller.is_admin:
        holder = found.holder or MAINTENANCE
        raise ctx.deny(caller, resource, f"Reservation {found.id} is {holder}'s, not yours.")
    with ctx.allocation_lock:  # admission reads the same rows
        # Read again under the lock: a cancel just before may have cut it already.
        found = next((r for r in ctx.store.reservations() if r.id == reservation_id), None)
        if found is None:
            raise NotFound(f"Reservation {reservation_id[:64]} was cancelled already.")
        now = ctx.now()
        r = _local(found.reservation())
        if r.end <= now:
            raise InvalidInput(
                f"Reservation {found.id} has ended already; there is nothing to cancel."
            )
        end = now.astimezone().replace(microsecond=0)  # the store keeps whole seconds
        if r.start < end:
            if not ctx.store.cut_reservation(found.id, end.isoformat(timespec="seconds")):
                raise NotFound(f"Reservation {found.id} was cancelled already.")
            shown = replace(found, end=end.isoformat(timespec="seconds"))
        elif ctx.store.drop_reservation(found.id):  # nothing kept yet: the row goes
            shown = replace(found, phase="cancelled")
        else:
            raise NotFound(f"Reservation {found.id} was cancelled already.")
    ctx.events.emit(
        "reservation.cancel",
        user=caller.name,
        resource=resource,
        details={**_event_details(r), **({"cut_to": shown.end} if shown.end != found.end else {})},
    )
    ctx.queue_changed()
    ctx.reservations_changed()  # a cut end is due at once
    gone = info(shown, now)
    return gone if shown.phase == "cancelled" else gone.model_copy(update={"phase": "ended"})


def on_device(
    reservations: list[Reservation], uuid_: str, now: datetime
) -> list[api.DeviceReservation]:
    """The reservation in force on device ``uuid_`` at ``now``, if any, then the next one."""
    mine = sorted(
        (r for r in reservations if uuid_ in r.devices and r.end > now), key=lambda r: r.start
    )
    return [
        api.DeviceReservation(
            id=r.id,
            holder=r.holder,
            start=r.start.isoformat(timespec="seconds"),
            end=r.end.isoformat(timespec="seconds"),
            active=r.in_force(now),
        )
        for r in mine[:2]
    ]


# ------------------------------------------------------------------------------------------
# Placement
# ------------------------------------------------------------------------------------------


def runtime_end(
    ctx: DaemonContext, owner: UnixUser, name: str, declared: float | None, now: datetime
) -> datetime | None:
    """When a container ``name`` of ``owner`` started now must have stopped at the latest:
    its runtime limit (``declared`` by its owner, else their ``max_runtime_hours``:
    ``core.lifecycle.runtime_limit_hours``), ``None`` without one or under an exemption."""
    max_hours = ctx.limits_for(owner).max_runtime_hours
    if runtime_limit_hours(max_hours, declared) is None:  # no exemption to read
        return None
    exemptions = [r.exemption() for r in ctx.store.exemptions()]
    run = ContainerClock(run_started_at=now, active_at=now)
    return runtime_stop(run, max_hours, declared, exemptions, owner.name, name, now)


def slots_in_the_way(
    ctx: DaemonContext,
    owner: UnixUser,
    name: str,
    declared: float | None,
    views: Callable[[], Sequence[GpuView]],
) -> tuple[KeepOut, frozenset[str]]:
    """For a new container ``name`` of ``owner`` (``declared``: its runtime, if any): the
    places of the reservations' slots it could still hold at their start, where no slice is
    made for it, and the instances of ``views()`` (the GPUs with MIG on demand, asked for
    only when there are such slots) over them, which it is not given
    (``core.reservations.slot_keep_out``; empty without such slots)."""
    reservations = kept(ctx)
    if not any(is_slot(u) for r in reservations for u in r.devices):
        return {}, frozenset()
    now = ctx.now()
    ends_by = runtime_end(ctx, owner, name, declared, now)
    keep_out = slot_keep_out(reservations, blocked_devices(reservations, owner.name, now, ends_by))
    return keep_out, in_the_way(views(), keep_out) if keep_out else frozenset()


def allocate_honouring(
    ctx: DaemonContext,
    owner: UnixUser,
    name: str,
    declared: float | None,
    quota: GpuQuota,
    inventory: Inventory,
    decide: Callable[[Inventory, GpuQuota], _Decision],
) -> _Decision:
    """Under the allocation lock: ``decide`` (an ``allocate`` or ``allocate_borrowing`` over
    the inventory and quota it is given) with the reservations honoured (module docstring):
    what the holder gets on their reserved devices on top of their quota is not borrowed.
    ``declared``: the runtime its owner declared for container ``name``, if any."""
    reservations = kept(ctx)
    if not reservations:
        return decide(inventory, quota)
    now = ctx.now()
    view = holder_view(reservations, owner.name, inventory, quota, now)
    if view is not None:
        try:
            return decide(*view)
        except (NoCapacity, QuotaExceeded):
            pass  # not on the reserved devices: within quota elsewhere, as anyone
    ends_by = runtime_end(ctx, owner, name, declared, now)
    blocked = blocked_devices(reservations, owner.name, now, ends_by)
    return decide(replace(inventory, reserved=inventory.reserved | blocked), quota)


def due_back(
    ctx: DaemonContext,
    owner: UnixUser,
    record: ContainerRecord,
    records: Sequence[ContainerRecord] | None = None,
) -> str | None:
    """Under the allocation lock, for ``record`` (stopped, holding devices) about to start:
    why it must first give its devices back, or ``None``. It must when the end rule
    (``core.reservations.overstays``) takes it now: its owner's reservation on them has
    ended and their containers hold more than their ``gpu_limit``. The lifecycle step does
    the same at the end; this closes the moments between an end and that step, so that a
    start never keeps reserved devices for free. ``records``: the containers now
    (default ``ctx.records()``)."""
    now = ctx.now()
    reservations = kept(ctx)
    ended = [r for r in reservations if r.holder == owner.name and r.end <= now]
    if not record.gpus or not any(set(r.devices) & set(record.gpus) for r in ended):
        return None
    everyone = ctx.records() if records is None else records
    mine = [c for c in everyone if c.uid == record.uid and c.gpus]
    occupants = [
        Occupant(c.id, c.user, c.gpus, c.status == "running", c.gpu_equivalents,
                 L.borrowed_of(c.labels))
        for c in mine
    ]  # fmt: skip
    limits = {owner.name: ctx.limits_for(owner).gpu_quota().gpu_limit}
    _, stops = overstays(reservations, occupants, limits, now, timedelta(0))
    return next((s.reason for s in stops if s.container == record.id), None)


# ------------------------------------------------------------------------------------------
# The lifecycle's step
# ------------------------------------------------------------------------------------------

#: The kinds of the stored warnings (``StateStore.warnings``): ``reservation_id/container_id``;
#: before a start (containers in the way) and before an end (a holder over quota).
WARNING_KIND: Final = "reservation"
END_WARNING_KIND: Final = "reservation_end"
#: Reservations found keeping a device that is gone (subject: the reservation's id).
AFFECTED_KIND: Final = "reservation_affected"


def _warning_key(subject: str) -> tuple[str, str]:
    reservation_id, _, container_id = subject.partition("/")
    return reservation_id, container_id


#: Tells the owner of a container a message (the lifecycle loop's ``_tell``).
Tell = Callable[[ContainerRecord, Any, str], None]


@dataclass(frozen=True)
class _Halt:
    """A stop of the step: for ``reservation`` (its id), with ``reason``; ``running``: the
    container runs (else only its devices are given back)."""

    reservation: str
    reason: str
    running: bool


def _make_slot(
    slices: SlotSlices,
    r: Reservation,
    profile: str,
    place: CreateSlice | None,
    inventory: Inventory,
    held: set[str],
) -> Device | None:
    """The slice of one slot of ``r`` (of ``profile``): at ``place`` when it is clear, else
    wherever there is room; ``None`` when none could be made (logged)."""
    try:
        if place is not None:
            return slices.make_at(place, inventory)
        return slices.make_for_reservation(profile, inventory, held)
    except Ds01Error as exc:
        log.error("could not make a %s slice for reservation %s: %s", profile, r.id, exc.message)
        return None


@dataclass
class ReservationWatch:
    """Announces phases and drains reserved devices, once per lifecycle pass.

    ``stop`` stops a container for the daemon with a reason (``ContainerOps.stop_by_daemon``);
    ``release`` gives a stopped container's devices back, under the allocation lock
    (``QueueDesk.release_devices``); ``slices`` makes the slice of a slot at its start and
    destroys the slices over its place (``MigOnDemand``; ``None``: no slot is ever made,
    and no slice counts as a slot's place)."""

    ctx: DaemonContext
    stop: Callable[[ContainerRecord, str], None]
    release: Callable[[ContainerRecord, datetime, str], None]
    slices: SlotSlices | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def run(
        self,
        records: list[ContainerRecord],
        owners: dict[int, Any],
        now: datetime,
        dry_run: bool,
        tell: Tell,
    ) -> dict[str, list[str]]:
        """One step: what was done (or would be, with ``dry_run``) per container id.
        ``owners``: uid → the lifecycle loop's owner, ``None`` for owners it skips."""
        with self._lock:
            if not dry_run:
                self._announce(now)
            reservations = kept(self.ctx)
            lead = self._lead()
            placed = self._slot_places(reservations, records, now, lead)
            occupants = self._occupants(records, reservations, now, lead)
            occupants = self._with_ends(occupants, records, owners, placed, now, lead)
            live = {r.id for r in reservations if r.end > now}
            warned = self._warned(WARNING_KIND, live, records, forget=not dry_run)
            warns, stops = drain(placed, occupants, now, lead, warned.__contains__)
            end_warned = self._warned(END_WARNING_KIND, live, records, forget=not dry_run)
            limits = self._gpu_limits(records, owners, reservations)
            end_warns, end_stops = overstays(
                reservations, occupants, limits, now, lead, end_warned.__contains__
            )
            by_id = {r.id: r for r in records}
            done: dict[str, list[str]] = {}
            for warn in warns:
                record = by_id[warn.container]
                done.setdefault(record.id, []).append(
                    f"warn: reservation {warn.reservation.id} starts {format_moment(warn.at)}"
                )
                if not dry_run and owners.get(record.uid) is not None:
                    self._warn(record, owners[record.uid], warn, tell)
            for end_warn in end_warns:
                record = by_id[end_warn.container]
                done.setdefault(record.id, []).append(
                    f"warn: reservation {end_warn.reservation.id} ends "
                    f"{format_moment(end_warn.reservation.end)}"
                )
                if not dry_run and owners.get(record.uid) is not None:
                    self._warn_end(record, owners[record.uid], end_warn, tell)
            draining = {stop.container for stop in stops}
            halts = [(s.container, s.reservation.id, s.reason, s.running) for s in stops] + [
                (s.container, s.reservation.id, s.reason, s.running)
                for s in end_stops
                if s.container not in draining  # one stop per container
            ]
            for container, reservation_id, reason, running in halts:
                record = by_id[container]
                done.setdefault(record.id, []).append(f"stop: {reason}")
                if not dry_run:
                    halt = _Halt(reservation_id, reason, running)
                    self._stop(record, owners.get(record.uid), halt, now, tell)
            if not dry_run:  # after the stops: the slices they freed are destroyed at once
                self._make_slots(now)
                self._repair(now)
            return done

    def _slot_places(
        self,
        reservations: list[Reservation],
        records: list[ContainerRecord],
        now: datetime,
        lead: timedelta,
    ) -> list[Reservation]:
        """``reservations`` with the slices made on demand over their slots' places counted
        as theirs from the lead time (``core.reservations.slot_places``); the backend is
        asked for the GPUs with MIG on demand only while such a slot is that near."""
        near = any(
            is_slot(u) for r in reservations if r.start - lead <= now < r.end for u in r.devices
        )
        if not near or self.slices is None:
            return reservations
        held = {u for record in records for u in record.gpus}
        with self.ctx.allocation_lock:
            views = self.slices.views(self.ctx.backend.inventory(), held)
        return slot_places(reservations, views, now, lead)

    def _with_ends(
        self,
        occupants: list[Occupant],
        records: list[ContainerRecord],
        owners: dict[int, Any],
        reservations: list[Reservation],
        now: datetime,
        lead: timedelta,
    ) -> list[Occupant]:
        """``occupants`` with when their runtime limit stops them (``Occupant.ends_by``, read
        from the lifecycle's clocks), for the running ones on a device of a reservation
        whose start is at most ``lead`` away: one stopped by then is not warned
        (``core.reservations.drain``). No limit under an exemption."""
        soon = {u for r in reservations if now < r.start <= now + lead for u in r.devices}
        if not soon:
            return occupants
        by_id = {r.id: r for r in records}
        clocks = self.ctx.store.lifecycle_clocks()
        exemptions = [e.exemption() for e in self.ctx.store.exemptions()]
        out = []
        for occupant in occupants:
            record, owner = by_id[occupant.container], owners.get(by_id[occupant.container].uid)
            clock = clocks.get(occupant.container)
            if (
                occupant.running
                and soon.intersection(occupant.devices)
                and owner is not None
                and clock is not None
            ):
                ends_by = runtime_stop(
                    clock,
                    owner.limits.max_runtime_hours,
                    L.runtime_hours_of(record.labels),
                    exemptions,
                    record.user,
                    record.name,
                    now,
                )
                occupant = replace(occupant, ends_by=ends_by)
            out.append(occupant)
        return out

    def _occupants(
        self,
        records: list[ContainerRecord],
        reservations: list[Reservation],
        now: datetime,
        lead: timedelta,
    ) -> list[Occupant]:
        """``records`` holding devices as occupants; Docker is asked when one started only
        for a running container of a holder on the devices of their reservation that ends
        within ``lead`` or has ended (``core.reservations.overstays`` needs no other)."""
        ending = {
            (r.holder, u) for r in reservations if r.holder and r.end - lead <= now
            for u in r.devices
        }  # fmt: skip
        occupants = []
        for r in records:
            if not r.gpus:
                continue
            borrowed = L.borrowed_of(r.labels)
            started = None
            running = r.status == "running"
            if running and not borrowed and any((r.user, u) in ending for u in r.gpus):
                started = self._started_at(r, now)
            occupants.append(
                Occupant(r.id, r.user, r.gpus, running, r.gpu_equivalents, borrowed, started)
            )
        return occupants

    def _started_at(self, record: ContainerRecord, now: datetime) -> datetime:
        try:
            return self.ctx.runtime.started_at(record.docker_name) or now
        except Ds01Error as exc:  # unknown: as if started now, never stopped by mistake
            log.warning("start time of %s unknown: %s", record.docker_name, exc.message)
            return now

    def _gpu_limits(
        self,
        records: list[ContainerRecord],
        owners: dict[int, Any],
        reservations: list[Reservation],
    ) -> dict[str, Fraction | None]:
        """The ``gpu_limit`` of each holder with a container (the lifecycle's owners)."""
        holders = {r.holder for r in reservations if r.holder}

        def owner_of(record: ContainerRecord) -> UnixUser | None:
            owner = owners.get(record.uid)
            return None if owner is None else owner.user

        return self.ctx.gpu_limits([r for r in records if r.user in holders], owner_of)

    def _warned(
        self, kind: WarningKind, live: set[str], records: list[ContainerRecord], *, forget: bool
    ) -> set[tuple[str, str]]:
        """The stored warnings of ``kind`` (reservation id, container id) of ``live``
        reservations and ``records``; with ``forget``, the others (ended, gone) are dropped
        from the store."""
        store = self.ctx.store
        containers = {r.id for r in records}
        keys = {subject: _warning_key(subject) for subject in store.warnings(kind)}
        stale = [s for s, (rid, cid) in keys.items() if rid not in live or cid not in containers]
        if stale and forget:
            store.forget_warnings(kind, stale)
        return {key for s, key in keys.items() if s not in stale}

    def _announce(self, now: datetime) -> None:
        """``reservation.start`` / ``reservation.end`` for each phase the store is behind."""
        store, events = self.ctx.store, self.ctx.events
        for row in store.reservations():
            r = row.reservation()
            current = phase(r, now)
            if current == row.phase:
                continue
            steps = (
                ["active", "ended"] if row.phase == "upcoming" and current == "ended" else [current]
            )
            if not store.set_reservation_phase(r.id, current):
                continue
            for step in steps:
                events.emit(
                    "reservation.start" if step == "active" else "reservation.end",
                    user="ds01d",
                    resource=f"reservation/{r.id}",
                    details=_event_details(r),
                )
        store.forget_reservations((now - KEEP_ENDED).isoformat(timespec="seconds"))

    def _lead(self) -> timedelta:
        return timedelta(minutes=self.ctx.config().limits.reservations.warning_minutes)

    def next_change(self, now: datetime) -> datetime | None:
        """When a stored reservation next asks for a step (a warning, a start, an end:
        ``core.reservations.next_change``), so that the lifecycle pass runs then."""
        return next_change(kept(self.ctx), now, self._lead())

    def _make_slots(self, now: datetime) -> None:
        """At a reservation's start, for each of its slots: destroy the free slices made on
        demand over its place and make its slice there (``core.reservations.clear_slots``),
        else (something else is still there, or a slice there refused to be destroyed)
        wherever the fragment-least rule finds room;
        the reservation keeps the slice instead (``reservation.remap``, ``made``). A slot
        left is then repaired like a device that is gone. Under the allocation lock."""
        ctx, slices = self.ctx, self.slices
        due = [r for r in kept(ctx) if r.in_force(now) and any(is_slot(u) for u in r.devices)]
        if not due or slices is None:
            return
        with ctx.allocation_lock:
            held = {u for record in ctx.records() for u in record.gpus}
            inventory = ctx.backend.inventory()
            steps = clear_slots(kept(ctx), slices.views(inventory, held), now)
            places: dict[tuple[str, str], CreateSlice | None] = {}
            for step in steps:
                done = [slices.destroy_for_reservation(u, inventory) for u in step.destroy]
                if SliceDestroy.DESTROYED in done:
                    # Read again: a later step may list a slice just destroyed (one slice
                    # over two slots' places), which is then gone, not refused.
                    inventory = ctx.backend.inventory()
                clear = SliceDestroy.REFUSED not in done
                if not clear:  # still busy a moment: the place is not clear
                    log.info(
                        "reservation %s: a slice over the place of %s stays (busy); its slice "
                        "is made where there is room",
                        step.reservation.id,
                        step.slot,
                    )
                places[(step.reservation.id, step.slot)] = step.make if clear else None
            for r in due:
                made: dict[str, str] = {}
                profile = r.profile
                if profile is None:
                    continue
                for slot in (u for u in r.devices if is_slot(u)):
                    place = places.get((r.id, slot))
                    device = _make_slot(slices, r, profile, place, inventory, held)
                    if device is not None:
                        made[slot] = device.uuid
                        inventory = ctx.backend.inventory()
                devices = [made.get(u, u) for u in r.devices]
                if made and ctx.store.set_reservation_devices(r.id, devices):
                    _remapped(ctx, r, devices, made, made=True)

    def _repair(self, now: datetime) -> None:
        """Re-map the devices of reservations that are gone (``core.reservations.repair``):
        ``reservation.remap`` for each re-mapped one, ``reservation.affected`` (and ds01d's
        log) once for each that keeps a device with no equivalent; under the allocation
        lock, as admission reads the same devices."""
        ctx, store = self.ctx, self.ctx.store
        with ctx.allocation_lock:
            repairs = repair(kept(ctx), ctx.backend.inventory(), now)
            for fixed in repairs:
                if fixed.changed:
                    store.set_reservation_devices(fixed.reservation.id, fixed.devices)
        known = store.warnings(AFFECTED_KIND)
        affected = {f.reservation.id: f for f in repairs if f.missing}
        if stale := [rid for rid in known if rid not in affected]:
            store.forget_warnings(AFFECTED_KIND, stale)
        for fixed in repairs:
            r = fixed.reservation
            if fixed.changed:
                log.info("reservation %s re-mapped: %s", r.id, dict(fixed.replaced))
                _remapped(ctx, r, fixed.devices, dict(fixed.replaced))
            if fixed.missing and r.id not in known:
                log.warning(
                    "reservation %s keeps devices that are gone (a MIG layout changed?) and "
                    "have no free equivalent: %s",
                    r.id,
                    ", ".join(fixed.missing),
                )
                ctx.events.emit(
                    "reservation.affected",
                    user="ds01d",
                    resource=f"reservation/{r.id}",
                    details={**_event_details(r), "missing": list(fixed.missing)},
                    outcome="failure",
                )
                store.add_warning(AFFECTED_KIND, r.id, now.isoformat())

    def _warn(self, record: ContainerRecord, owner: Any, warn: DrainWarn, tell: Tell) -> None:
        r = warn.reservation
        who = f"reserved for {r.holder}" if r.holder else "reserved for maintenance"
        message = (
            f"ds01: your container {record.name!r} holds a GPU {who} from "
            f"{format_moment(warn.at)} (reservation {r.id}); it will be stopped then. "
            "Save your work; /workspace is kept."
        )
        self._warn_owner(record, owner, tell, message, "reservation", r.id, r.start)
        self.ctx.store.add_warning(WARNING_KIND, "/".join(warn.key), self.ctx.now().isoformat())

    def _warn_end(self, record: ContainerRecord, owner: Any, warn: EndWarn, tell: Tell) -> None:
        r = warn.reservation
        message = (
            f"ds01: your reservation {r.id} ends {format_moment(r.end)}; your container "
            f"{record.name!r} uses its GPU on top of your quota and will be stopped then "
            "unless your containers fit within your gpu_limit by then. Save your work; "
            "/workspace is kept."
        )
        self._warn_owner(record, owner, tell, message, "reservation_end", r.id, r.end)
        self.ctx.store.add_warning(END_WARNING_KIND, "/".join(warn.key), self.ctx.now().isoformat())

    def _warn_owner(
        self,
        record: ContainerRecord,
        owner: Any,
        tell: Tell,
        message: str,
        kind: str,
        reservation: str,
        stop_at: datetime,
    ) -> None:
        """A warning of kind ``kind``: the owner told first (whoever sees the event finds
        the notice there), then ``lifecycle.warn`` logged."""
        tell(record, owner, message)
        self.ctx.events.emit(
            "lifecycle.warn",
            user=record.user,
            resource=resource_of(record),
            details={"kind": kind, "reservation": reservation, "stop_at": stop_at.isoformat()},
        )

    def _stop(
        self, record: ContainerRecord, owner: Any, stop: _Halt, now: datetime, tell: Tell
    ) -> None:
        ctx = self.ctx
        try:
            if stop.running:
                self.stop(record, stop.reason)
            with ctx.allocation_lock:
                self.release(record, now, stop.reason)
        except Ds01Error as exc:
            log.error("could not drain %s for a reservation: %s", record.docker_name, exc.message)
            return
        if not stop.running:
            return
        ctx.events.emit(
            "cleanup.reservation",
            user=record.user,
            resource=resource_of(record),
            details={"reason": stop.reason, "reservation": stop.reservation},
        )
        if owner is not None:
            tell(
                record,
                owner,
                f"ds01: your container {record.name!r} was stopped: {stop.reason}. "
                f"/workspace is kept; `container-start {record.name}` once a GPU is free.",
            )


__all__ = [
    "ReservationWatch",
    "SliceDestroy",
    "allocate_honouring",
    "cancel",
    "create",
    "due_back",
    "info",
    "kept",
    "listing",
    "on_device",
    "parse_start",
    "week",
    "window_of",
]
