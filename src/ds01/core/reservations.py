"""GPU reservations as pure decisions: functions of (state, time), no I/O.

A *reservation* keeps devices (whole GPUs or MIG instances, by UUID) for one user, its
*holder*, over ``[start, end)``; a reservation without a holder is an admin's maintenance
window, which keeps the devices for nobody. ds01d stores reservations, calls these
functions and acts on their answers.

**Admission** (:func:`admit`): a new reservation is placed on devices of the requested kind
that no other reservation holds at any moment of its window (a MIG profile no such instance
offers: a *slot* on a GPU with MIG on demand, below) (so two reservations never
overlap on a device, and no reservation lists a device twice), then checked against the
holder's :class:`ReservationLimits`: how long, how far ahead, how many at once, how many
GPU-equivalents at once (by default the holder's ``gpu_limit``) and how many GPU-hours in
the calendar week of its start. A window that does not fit is refused with the
reservations in the way named and the earliest start at which the same request fits
(:func:`next_free_start`: fits are only won back at the end of some reservation, so that is
where it looks). Maintenance reservations skip the limits.

**Placement at time t** (:func:`blocked_devices`): a device is kept from a new container of
user ``u`` that may hold it until ``ends_by`` when some reservation on it, not ``u``'s,

- is in force at ``t`` (only its holder's containers may use it), or
- starts before ``ends_by`` (``None``: no runtime limit, so every later reservation), i.e.
  the container could still hold the device at the start. A container whose runtime limit
  ends in time may *backfill* the device until then.

The GPU queue plans each waiting request with its own blocked devices
(:func:`with_blocked`, by its expected hold), never with those of the others.

During its window the holder's containers may use the reserved devices on top of their
quota (:func:`held_now`, :func:`holder_view`): a create or start is placed there first, and
so is a queued request, before the queue's plan (:func:`reserved_starts`).

**Draining** (:func:`drain`): a container that holds a reserved device and is not its
holder's (for maintenance: anyone's) is warned once when the start is ``lead`` away and
stopped at the start, with the reason; a stopped container still holding such a device
gives it back then.

**The end of a window** (:func:`overstays`): a holder's container placed on the reserved
devices on top of their quota must not keep them for free once the window ends. From
``end - lead`` its owner is warned, and at the end it is stopped (its devices given back),
with the reason, unless the holder's containers then fit within their ``gpu_limit`` (plus
what their reservations still in force add): it then simply stays, counted in their quota.
The candidates are the holder's containers on the ended reservation's devices: first the
stopped ones, which give those devices back (as at a start, :func:`drain`: their next start
is placed within quota, so a stop just before the end and a start just after keep
nothing), then the running ones started before the end, newest first; as few as bring the
holder back within quota. Such a container never becomes a borrowed one (that is fixed at
creation, in its labels). A cancel of a reservation in force cuts its end to that moment
(ds01d), so it ends by this same rule.

**Slots on GPUs with MIG on demand** (``dynamic`` in ``mig_layout``): a ``--mig``
reservation that no existing instance serves may keep a slice such a GPU could make: a
*slot* (``MIG-slot-<GPU UUID>-<memory slice>``, :func:`slot_uuid`), placed by the
fragment-least rule (``core.mig_on_demand.where_to_create``) beside the GPU's baseline
instances and the instances and slots of the reservations overlapping its window (slices
made on demand for containers come and go, and are not counted). At the start ds01d makes
the slice (of the reservation's ``profile``) and the reservation keeps it instead; until
then nobody can hold a slot. Before the start, a slot is kept as a
reserved device is (the backfill rule above, for each request by its runtime limit): a
request that could still run at the start gets no new slice on the slot's place
(:func:`slot_keep_out`) and no instance that overlaps it (:func:`out_of_slots`), so the
slice can be made at the start whenever runtime limits hold. Instances made on demand
that overlap a slot's place anyway (made before the reservation was asked for, or for a
request whose runtime limit did not keep it out) count as the reservation's place from
``start - lead`` (:func:`slot_places`): their containers are drained as from a reserved
device (:func:`drain`), and at the start the free ones are destroyed and the slot's slice
is made at its place once nothing else is there (:func:`clear_slots`). A slot still there
after that (a baseline instance or a holder's container over its place) is made wherever
the fragment-least rule finds room, else repaired like a device that is gone (below).

**Devices that are gone** (:func:`repair`): a change of a GPU's MIG layout (or of its MIG
mode) removes instances, and with them devices a reservation keeps. Each such device is
re-mapped to an equivalent one (an instance of the reservation's MIG profile, or a whole
GPU) that no other reservation keeps during its window and the admin did not reserve;
what cannot be re-mapped is reported as *missing*: the reservation keeps nothing there,
and ds01d says so rather than pointing at nothing.

**Phases** (:func:`phase`): ``upcoming``, ``active``, ``ended``; ds01d emits
``reservation.start`` and ``reservation.end`` when the stored phase is behind.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, Literal

from ds01.config.reservations import DEFAULT_MAX_RESERVATIONS, DEFAULT_MIN_MINUTES
from ds01.core.allocation import AllocationState, allocate, format_equivalents
from ds01.core.mig_on_demand import (
    CreateSlice,
    GpuView,
    KeepOut,
    Slice,
    in_the_way,
    planned_device,
    where_to_create,
)
from ds01.core.mig_placement import free_starts
from ds01.core.scheduler import PendingRequest, Start
from ds01.errors import InvalidInput, NoCapacity, NotFound, QuotaExceeded
from ds01.model.device import Device, Inventory
from ds01.model.quota import GpuQuota

Phase = Literal["upcoming", "active", "ended"]

#: Limits when the configuration says nothing (the GPU-equivalents default to gpu_limit).
DEFAULT_MAX_HOURS = 8.0
DEFAULT_MAX_DAYS_AHEAD = 14.0

#: A start this far in the past is still "now" (``--from`` has minute resolution).
START_TOLERANCE = timedelta(minutes=1)

#: A refusal for a conflict names at most this many reservations in the way (and counts
#: the others): one long list helps nobody, and building it costs the allocation lock.
MAX_NAMED_CONFLICTS = 3

MAINTENANCE = "maintenance"


def format_moment(moment: datetime) -> str:
    """``YYYY-MM-DD HH:MM`` in ``moment``'s own time zone (ds01d passes the server's)."""
    return moment.strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Reservation:
    """Devices kept for ``holder`` (``None``: maintenance, for nobody) over ``[start, end)``.

    Times are timezone-aware. ``devices`` are UUIDs, each once; ``gpu_equivalents`` is what
    they count for (a whole GPU 1, a MIG instance its share); ``profile`` is the MIG profile
    a ``--mig`` reservation asked for (``None``: whole GPUs, or not known).
    """

    id: str
    holder: str | None
    devices: tuple[str, ...]
    start: datetime
    end: datetime
    gpu_equivalents: Fraction = Fraction(0)
    note: str = ""
    created_by: str = ""
    profile: str | None = None

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError(f"reservation {self.id!r} has no device")
        if len(set(self.devices)) != len(self.devices):
            raise ValueError(f"reservation {self.id!r} lists a device twice: {self.devices}")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError(f"reservation {self.id!r}: times must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"reservation {self.id!r} ends before it starts")

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600

    @property
    def gpu_hours(self) -> Fraction:
        """GPU-equivalents times hours, exact (:func:`gpu_hours`)."""
        return gpu_hours(self.gpu_equivalents, self.end - self.start)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end

    def in_force(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def is_for(self, user: str) -> bool:
        """Whether ``user``'s containers may use the devices in the window."""
        return self.holder is not None and self.holder == user

    def describe(self) -> str:
        """``"2026-12-10 09:00-17:00 (alice)"``; the end's date only when it differs."""
        same_day = self.start.date() == self.end.astimezone(self.start.tzinfo).date()
        end = self.end.astimezone(self.start.tzinfo)
        end_text = end.strftime("%H:%M") if same_day else format_moment(end)
        return f"{format_moment(self.start)}-{end_text} ({self.holder or MAINTENANCE})"


def gpu_hours(equivalents: Fraction, span: timedelta) -> Fraction:
    """``equivalents`` kept over ``span``, in GPU-hours, exact to the microsecond (never
    rounded down: a reservation shorter than a second still costs what it keeps)."""
    return equivalents * Fraction(span // timedelta(microseconds=1), 3600 * 10**6)


def phase(reservation: Reservation, now: datetime) -> Phase:
    if now < reservation.start:
        return "upcoming"
    return "active" if now < reservation.end else "ended"


def next_change(
    reservations: Iterable[Reservation], now: datetime, lead: timedelta
) -> datetime | None:
    """The first instant after ``now`` at which a reservation asks ds01d to act: its
    warnings are due (``start - lead``, ``end - lead``), it starts (the drain, a slot's
    slice made) or it ends; ``None`` when none is ahead. ds01d runs its lifecycle pass then
    rather than up to a whole interval later."""
    moments = (
        moment
        for r in reservations
        for moment in (r.start - lead, r.start, r.end - lead, r.end)
        if moment > now
    )
    return min(moments, default=None)


@dataclass(frozen=True)
class ReservationLimits:
    """A user's reservation limits; ``None`` = unlimited.

    Attributes:
        max_gpus: GPU-equivalents the user may have reserved at any one moment.
        max_hours: the longest reservation.
        min_minutes: the shortest reservation (server-wide, never ``None``).
        max_days_ahead: how far ahead of now a reservation may start.
        max_reservations: reservations not yet ended, this one included.
        gpu_hours_per_week: GPU-hours of the reservations starting in one calendar week
            (Monday 00:00 in the server's time), this one included.
    """

    max_gpus: Fraction | None = None
    max_hours: float | None = DEFAULT_MAX_HOURS
    max_days_ahead: float | None = DEFAULT_MAX_DAYS_AHEAD
    max_reservations: int | None = DEFAULT_MAX_RESERVATIONS
    gpu_hours_per_week: float | None = None
    min_minutes: float = DEFAULT_MIN_MINUTES

    @classmethod
    def of(cls, values: Mapping[str, Any], min_minutes: float) -> ReservationLimits:
        """The limits from resolved values by key (``ResolvedReservationLimits.to_dict``)
        and the server's ``min_minutes``."""
        max_gpus = values["max_gpus"]
        return cls(
            min_minutes=min_minutes,
            max_gpus=None if max_gpus is None else Fraction(str(max_gpus)),
            max_hours=values["max_hours"],
            max_days_ahead=values["max_days_ahead"],
            max_reservations=values["max_reservations"],
            gpu_hours_per_week=values["gpu_hours_per_week"],
        )


@dataclass(frozen=True)
class ReservationRequest:
    """What ``ds01 reserve`` asks for: ``whole_gpus`` GPUs, or one MIG instance of
    ``mig_profile``, for ``holder`` (``None``: maintenance) over ``[start, end)``."""

    holder: str | None
    start: datetime
    end: datetime
    whole_gpus: int = 0
    mig_profile: str | None = None

    def __post_init__(self) -> None:
        if (self.whole_gpus > 0) == (self.mig_profile is not None):
            raise InvalidInput("Reserve either --gpus N or --mig PROFILE (one of them).")
        if self.whole_gpus < 0:
            raise InvalidInput("--gpus must be at least 1.")
        if self.end <= self.start:
            raise InvalidInput("A reservation must last more than 0 hours (--hours).")

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def describe(self) -> str:
        if self.mig_profile is not None:
            return f"a MIG {self.mig_profile} instance"
        return "1 GPU" if self.whole_gpus == 1 else f"{self.whole_gpus} GPUs"

    def at(self, start: datetime) -> ReservationRequest:
        """The same request moved to begin at ``start``."""
        return ReservationRequest(
            self.holder, start, start + self.duration, self.whole_gpus, self.mig_profile
        )


# ------------------------------------------------------------------------------------------
# Where a reservation fits
# ------------------------------------------------------------------------------------------


def _candidates(request: ReservationRequest, inventory: Inventory) -> list[Device]:
    """The devices of the kind asked for, admin-reserved ones left out, in a stable order."""
    if request.mig_profile is not None:
        matching = [
            d for d in inventory.devices if d.kind == "mig" and d.profile == request.mig_profile
        ]
    else:
        matching = [d for d in inventory.devices if d.kind == "gpu"]
    usable = [d for d in matching if d.uuid not in inventory.reserved]
    return sorted(usable, key=lambda d: (d.gpu_index, d.instance_id or 0, d.uuid))


def _in_window(
    reservations: Iterable[Reservation], start: datetime, end: datetime
) -> list[Reservation]:
    return [r for r in reservations if r.overlaps(start, end)]


SLOT_PREFIX = "MIG-slot-"
"""UUID prefix of a slot: a slice a GPU with MIG on demand makes at the reservation's start."""


def slot_uuid(create: CreateSlice) -> str:
    """The stand-in UUID of a slot, unique per GPU and memory slice."""
    return f"{SLOT_PREFIX}{create.gpu_uuid}-{create.start}"


def is_slot(uuid: str) -> bool:
    return uuid.startswith(SLOT_PREFIX)


def _slot_start(uuid: str) -> int:
    return int(uuid.rsplit("-", 1)[1])


def _slot_gpu(uuid: str) -> str:
    return uuid[len(SLOT_PREFIX) :].rsplit("-", 1)[0]


def slot_keep_out(
    reservations: Iterable[Reservation], blocked: Collection[str]
) -> dict[str, tuple[Slice, ...]]:
    """Per GPU UUID, the places of the slots among ``blocked`` (a request's blocked devices,
    :func:`blocked_devices`' rule): a new slice made for that request must stay out of them
    (``core.mig_on_demand``'s ``keep_out``), so that the reservation's slice can be made at
    its start whenever runtime limits hold, as a reserved device is free then."""
    out: dict[str, list[Slice]] = {}
    for r in reservations:
        for u in r.devices:
            if is_slot(u) and u in blocked:
                piece = Slice(u, r.profile or "", _slot_start(u), held=True, on_demand=True)
                out.setdefault(_slot_gpu(u), []).append(piece)
    return {gpu: tuple(pieces) for gpu, pieces in out.items()}


def _slot_views(views: Sequence[GpuView], in_window: Sequence[Reservation]) -> list[GpuView]:
    """``views`` as a reservation over a window sees them: the baseline instances, the
    instances the reservations ``in_window`` keep, and their slots (module docstring)."""
    kept = {u for r in in_window for u in r.devices}
    out = []
    for view in views:
        prefix = f"{SLOT_PREFIX}{view.gpu.uuid}-"
        slots = tuple(
            Slice(u, r.profile or "", _slot_start(u), held=True, on_demand=True)
            for r in in_window
            for u in r.devices
            if u.startswith(prefix)
        )
        there = tuple(s for s in view.slices if not s.on_demand or s.uuid in kept)
        out.append(replace(view, slices=there + slots))
    return out


def _slot(
    request: ReservationRequest, views: Sequence[GpuView], in_window: Sequence[Reservation]
) -> Device | None:
    """A slot for ``request``'s MIG profile on a GPU of ``views``, or ``None``."""
    if request.mig_profile is None or not views:
        return None
    where = where_to_create(_slot_views(views, in_window), request.mig_profile)
    if not isinstance(where, CreateSlice):
        return None
    gpu = next(v.gpu for v in views if v.gpu.uuid == where.gpu_uuid)
    return replace(planned_device(where, gpu), uuid=slot_uuid(where))


def fit(
    request: ReservationRequest,
    inventory: Inventory,
    existing: Sequence[Reservation],
    views: Sequence[GpuView] = (),
) -> tuple[Device, ...] | None:
    """The devices ``request`` would get over its window (lowest GPU first), or ``None``;
    a MIG profile no free instance serves gets a slot on one of ``views`` (the GPUs with
    MIG on demand), if one has room."""
    return _fit_among(request, inventory, _in_window(existing, request.start, request.end), views)


def _fit_among(
    request: ReservationRequest,
    inventory: Inventory,
    in_window: Sequence[Reservation],
    views: Sequence[GpuView],
) -> tuple[Device, ...] | None:
    """:func:`fit`, ``in_window`` being the reservations that overlap the request's window."""
    taken = {u for r in in_window for u in r.devices}
    free = [d for d in _candidates(request, inventory) if d.uuid not in taken]
    count = 1 if request.mig_profile is not None else request.whole_gpus
    if len(free) >= count:
        return tuple(free[:count])
    slot = _slot(request, views, in_window)
    return None if slot is None else (slot,)


def next_free_start(
    request: ReservationRequest,
    inventory: Inventory,
    existing: Sequence[Reservation],
    horizon: datetime | None = None,
    views: Sequence[GpuView] = (),
) -> datetime | None:
    """The earliest start, at or after ``request.start`` and not after ``horizon``, at which
    ``request`` (same length, same devices asked) fits; ``None`` when there is none."""
    if len(_candidates(request, inventory)) < max(request.whole_gpus, 1) and not _offered(
        request, views
    ):
        return None
    windows = _Windows(existing)
    ends = sorted({r.end for r in existing if r.end > request.start})
    for start in (request.start, *ends):
        if horizon is not None and start > horizon:
            return None
        moved = request.at(start)
        if _fit_among(moved, inventory, windows.overlapping(start, moved.end), views) is not None:
            return start
    return None  # unreachable: after the last end everything is free


class _Windows:
    """Reservations by start, so that those overlapping a window are found by bisection
    rather than by a scan of all (:func:`next_free_start` asks once per candidate start)."""

    def __init__(self, reservations: Iterable[Reservation]) -> None:
        self._by_start = sorted(reservations, key=lambda r: r.start)
        self._starts = [r.start for r in self._by_start]
        self._longest = max((r.end - r.start for r in self._by_start), default=timedelta(0))

    def overlapping(self, start: datetime, end: datetime) -> list[Reservation]:
        """The reservations overlapping ``[start, end)``: only one that starts after
        ``start - longest`` can still be in force at ``start``."""
        first = bisect_left(self._starts, start - self._longest)
        last = bisect_left(self._starts, end)
        return [r for r in self._by_start[first:last] if r.end > start]


def _offered(request: ReservationRequest, views: Sequence[GpuView]) -> bool:
    """Whether a GPU with MIG on demand offers ``request``'s MIG profile."""
    profile = request.mig_profile
    return profile is not None and any(v.table.shape(profile) is not None for v in views)


def _check_kind_exists(
    request: ReservationRequest, inventory: Inventory, views: Sequence[GpuView]
) -> None:
    candidates = _candidates(request, inventory)
    if request.mig_profile is not None and not candidates and not _offered(request, views):
        profiles = sorted({d.profile for d in inventory.devices if d.profile})
        raise NotFound(
            f"There is no MIG instance of profile {request.mig_profile} to reserve on this "
            f"server. Profiles here: {', '.join(profiles) or 'none'}.",
            details={"requested": request.mig_profile, "available": profiles},
        )
    count = 1 if request.mig_profile is not None else request.whole_gpus
    if len(candidates) < count and not _offered(request, views):
        raise NoCapacity(
            f"This server has {len(candidates)} GPUs that can be reserved; you asked for {count}.",
            details={"requested": count, "available": len(candidates)},
        )


def _refuse_conflict(
    request: ReservationRequest,
    inventory: Inventory,
    existing: Sequence[Reservation],
    horizon: datetime | None,
    views: Sequence[GpuView],
) -> NoCapacity:
    kinds = {d.uuid for d in _candidates(request, inventory)}
    conflicts = [
        r for r in _in_window(existing, request.start, request.end) if kinds.intersection(r.devices)
    ]
    conflicts.sort(key=lambda r: (r.start, r.id))
    shown, more = conflicts[:MAX_NAMED_CONFLICTS], len(conflicts) - MAX_NAMED_CONFLICTS
    labels = {d.uuid: d.label for d in inventory.devices}
    named = "; ".join(
        f"GPU {', '.join(labels.get(u, u) for u in r.devices if u in kinds)} is reserved "
        f"{r.describe()}"
        for r in shown
    ) + (f"; and {more} more" if more > 0 else "")
    nxt = next_free_start(request, inventory, existing, horizon, views)
    suggestion = (
        f"The next free slot for {request.describe()} and {_hours_text(request.duration)} "
        f"starts {format_moment(nxt)}."
        if nxt is not None
        else "No free slot for it within how far ahead you may reserve."
    )
    return NoCapacity(
        f"Cannot reserve {request.describe()} from {format_moment(request.start)} for "
        f"{_hours_text(request.duration)}: {named}. {suggestion}",
        details={
            "conflicts": [
                {
                    "id": r.id,
                    "holder": r.holder,
                    "start": r.start.isoformat(),
                    "end": r.end.isoformat(),
                    "devices": list(r.devices),
                }
                for r in shown
            ],
            "conflicts_total": len(conflicts),
            "next_free": nxt.isoformat() if nxt is not None else None,
        },
    )


def _hours_text(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


# ------------------------------------------------------------------------------------------
# Limits
# ------------------------------------------------------------------------------------------


def _week_start(moment: datetime) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=moment.weekday())


def _check_length_and_lead(
    request: ReservationRequest, limits: ReservationLimits, now: datetime
) -> None:
    if request.duration < timedelta(minutes=limits.min_minutes):
        raise QuotaExceeded(
            f"A reservation lasts at least {limits.min_minutes:g} minutes; you asked for "
            f"{request.duration.total_seconds() / 60:g}.",
            details={"limit": "min_minutes", "min_minutes": limits.min_minutes},
        )
    if limits.max_hours is not None and request.duration > timedelta(hours=limits.max_hours):
        raise QuotaExceeded(
            f"A reservation may last at most {limits.max_hours:g} hours; you asked for "
            f"{_hours_text(request.duration)}.",
            details={"limit": "max_hours", "max_hours": limits.max_hours},
        )
    if limits.max_days_ahead is None:
        return
    latest = now.astimezone(request.start.tzinfo) + timedelta(days=limits.max_days_ahead)
    if request.start > latest:
        raise QuotaExceeded(
            f"A reservation may start at most {limits.max_days_ahead:g} days ahead "
            f"(by {format_moment(latest)}).",
            details={"limit": "max_days_ahead", "max_days_ahead": limits.max_days_ahead},
        )


def _most_at_once(overlapping: Sequence[Reservation], request: ReservationRequest) -> Fraction:
    """The most GPU-equivalents ``overlapping`` keep at one moment of ``request``'s window
    (a sum only changes where one of them starts)."""
    moments = [request.start, *(r.start for r in overlapping if r.start > request.start)]
    return max(
        sum((r.gpu_equivalents for r in overlapping if r.in_force(t)), Fraction(0))
        for t in moments
    )


def _check_counts(
    request: ReservationRequest,
    equivalents: Fraction,
    mine: Sequence[Reservation],
    limits: ReservationLimits,
    now: datetime,
) -> None:
    """``mine``: the holder's reservations, ended ones included (a week's GPU-hours count
    what was kept, also by a reservation cut short by a cancel)."""
    pending = [r for r in mine if r.end > now]
    if limits.max_reservations is not None and len(pending) + 1 > limits.max_reservations:
        raise QuotaExceeded(
            f"You may have at most {limits.max_reservations} reservations not yet ended; you "
            f"have {len(pending)}. `ds01 reservations cancel ID` frees one.",
            details={"limit": "max_reservations", "max_reservations": limits.max_reservations},
        )
    at_once = equivalents + _most_at_once(_in_window(pending, request.start, request.end), request)
    if limits.max_gpus is not None and at_once > limits.max_gpus:
        raise QuotaExceeded(
            f"You may have at most {format_equivalents(limits.max_gpus)} GPU-equivalents "
            f"reserved at once; with this reservation you would have "
            f"{format_equivalents(at_once)} during its window.",
            details={"limit": "max_gpus", "max_gpus": float(limits.max_gpus)},
        )
    if limits.gpu_hours_per_week is not None:
        week = _week_start(request.start)
        week_end = week + timedelta(days=7)
        hours = gpu_hours(equivalents, request.duration)
        hours += sum((r.gpu_hours for r in mine if week <= r.start < week_end), Fraction(0))
        if hours > Fraction(str(limits.gpu_hours_per_week)):
            raise QuotaExceeded(
                f"You may reserve at most {limits.gpu_hours_per_week:g} GPU-hours in a week; "
                f"the week of {format_moment(week)} would have {float(hours):g}.",
                details={
                    "limit": "gpu_hours_per_week",
                    "gpu_hours_per_week": limits.gpu_hours_per_week,
                },
            )


# ------------------------------------------------------------------------------------------
# Admission
# ------------------------------------------------------------------------------------------


def admit(
    request: ReservationRequest,
    existing: Sequence[Reservation],
    inventory: Inventory,
    limits: ReservationLimits,
    now: datetime,
    *,
    new_id: str,
    note: str = "",
    created_by: str = "",
    views: Sequence[GpuView] = (),
) -> Reservation:
    """The reservation ``request`` becomes, or why not.

    ``existing`` are the reservations on the server (ended ones count only towards the
    GPU-hours of their week);
    ``limits`` are the holder's (ignored for maintenance); ``views``: the GPUs with MIG on
    demand, for a slot (module docstring).

    Raises:
        InvalidInput: the start is in the past.
        NotFound: no MIG instance of that profile exists.
        QuotaExceeded: a limit, ``min_minutes`` included (message and ``details["limit"]``
            say which).
        NoCapacity: the window conflicts; the message names the reservations in the way
            (at most :data:`MAX_NAMED_CONFLICTS`, ``details["conflicts"]``, all counted in
            ``details["conflicts_total"]``) and the next free slot (``details["next_free"]``).
    """
    if request.start < now - START_TOLERANCE:
        raise InvalidInput(
            f"The start {format_moment(request.start)} is in the past; "
            f"it is {format_moment(now.astimezone(request.start.tzinfo))} now."
        )
    live = [r for r in existing if r.end > now]
    _check_kind_exists(request, inventory, views)
    horizon: datetime | None = None
    if request.holder is not None:
        _check_length_and_lead(request, limits, now)
        if limits.max_days_ahead is not None:
            horizon = now + timedelta(days=limits.max_days_ahead)
    devices = fit(request, inventory, live, views)
    if devices is None:
        raise _refuse_conflict(request, inventory, live, horizon, views)
    equivalents = sum((d.gpu_equivalents for d in devices), Fraction(0))
    if request.holder is not None:
        mine = [r for r in existing if r.holder == request.holder]
        _check_counts(request, equivalents, mine, limits, now)
    return Reservation(
        id=new_id,
        holder=request.holder,
        devices=tuple(d.uuid for d in devices),
        start=request.start,
        end=request.end,
        gpu_equivalents=equivalents,
        note=note,
        created_by=created_by,
        profile=request.mig_profile,
    )


# ------------------------------------------------------------------------------------------
# What a reservation forbids or allows at time t
# ------------------------------------------------------------------------------------------


def blocked_devices(
    reservations: Iterable[Reservation],
    user: str,
    now: datetime,
    ends_by: datetime | None,
) -> frozenset[str]:
    """Devices a new container of ``user`` that may hold its devices until ``ends_by``
    (``None``: no limit) may not be placed on at ``now`` (module docstring)."""
    blocked: set[str] = set()
    for r in reservations:
        if r.end <= now or r.is_for(user):
            continue
        if r.start <= now or ends_by is None or ends_by > r.start:
            blocked.update(r.devices)
    return frozenset(blocked)


def with_blocked(
    pending: Iterable[PendingRequest], reservations: Sequence[Reservation], now: datetime
) -> list[PendingRequest]:
    """``pending`` with each request's own ``blocked`` devices at ``now``: those
    :func:`blocked_devices` keeps from a container of its user that holds its devices for
    its ``expected_runtime_hours`` (``None``: unknown, so until every later reservation).

    The GPU queue plans each request with its own: a device reserved from ``S`` is kept
    from a request only if it could still hold it at ``S`` and is not the holder's, so a
    long request waiting does not keep short ones off the device (``core.scheduler``)."""
    if not reservations:
        return list(pending)
    out: list[PendingRequest] = []
    for request in pending:
        hours = request.expected_runtime_hours
        ends_by = None if hours is None else now + timedelta(hours=hours)
        blocked = blocked_devices(reservations, request.user, now, ends_by)
        out.append(replace(request, blocked=request.blocked | blocked))
    return out


def out_of_slots(
    pending: Sequence[PendingRequest],
    reservations: Sequence[Reservation],
    views: Sequence[GpuView],
) -> tuple[list[PendingRequest], list[KeepOut]]:
    """For requests already given their ``blocked`` devices (:func:`with_blocked`): each
    with the instances in the way of the slots it is kept from blocked too (``in_the_way``
    of ``views``, the GPUs with MIG on demand), and, in the same order, the places its new
    slices must stay out of (:func:`slot_keep_out`)."""
    requests: list[PendingRequest] = []
    keep_outs: list[KeepOut] = []
    for request in pending:
        keep_out = slot_keep_out(reservations, request.blocked)
        if keep_out:
            request = replace(request, blocked=request.blocked | in_the_way(views, keep_out))
        requests.append(request)
        keep_outs.append(keep_out)
    return requests, keep_outs


def held_now(reservations: Iterable[Reservation], user: str, now: datetime) -> tuple[str, ...]:
    """The devices reserved for ``user`` at ``now``: theirs on top of their quota."""
    return tuple(u for r in reservations if r.is_for(user) and r.in_force(now) for u in r.devices)


def holder_view(
    reservations: Iterable[Reservation],
    user: str,
    inventory: Inventory,
    quota: GpuQuota,
    now: datetime,
) -> tuple[Inventory, GpuQuota] | None:
    """Where ``user`` is placed first during their reservations in force at ``now``: the
    inventory with every other device held back, and ``quota`` with ``gpu_limit`` raised by
    the reserved devices' GPU-equivalents (theirs on top of their quota); ``None`` when no
    reservation of theirs is in force."""
    own = set(held_now(reservations, user, now))
    if not own:
        return None
    by_uuid = inventory.by_uuid()
    extra = sum((by_uuid[u].gpu_equivalents for u in own if u in by_uuid), Fraction(0))
    others = {d.uuid for d in inventory.devices} - own
    bonus = quota if quota.gpu_limit is None else replace(quota, gpu_limit=quota.gpu_limit + extra)
    return replace(inventory, reserved=inventory.reserved | others), bonus


def reserved_starts(
    pending: Sequence[PendingRequest],
    reservations: Sequence[Reservation],
    inventory: Inventory,
    state: AllocationState,
    now: datetime,
) -> list[Start]:
    """The queued requests that start at ``now`` on their owners' reserved devices
    (:func:`holder_view`), before the queue's plan: a holder's request does not wait for
    its turn on devices nobody else may use. Each owner's requests are taken in the order
    they were submitted; every start counts against the next (devices, quota,
    ``max_containers``)."""
    starts: list[Start] = []
    started: dict[str, list[str]] = {}
    for request in sorted(pending, key=lambda p: (p.submitted_at, p.id)):
        view = holder_view(reservations, request.user, inventory, request.quota, now)
        if view is None:
            continue
        mine = (*request.user_containers, *started.get(request.user, ()))
        try:
            placement = allocate(request.request, request.user, view[1], view[0], state, mine)
        except (NoCapacity, QuotaExceeded):
            continue
        starts.append(Start(request, placement))
        started.setdefault(request.user, []).append(request.id)
        state = state.with_holding(placement.holding(request.id, request.user))
    return starts


def protected(
    reservations: Iterable[Reservation], user: str, devices: Iterable[str], now: datetime
) -> bool:
    """Whether a container of ``user`` holding ``devices`` is on a device of one of
    ``user``'s reservations in force at ``now``: its holder's, so never reclaimed."""
    return not set(held_now(reservations, user, now)).isdisjoint(devices)


# ------------------------------------------------------------------------------------------
# Draining reserved devices
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Occupant:
    """A container holding devices: its id, owner, devices and whether it runs."""

    container: str
    user: str
    devices: tuple[str, ...]
    running: bool = True
    #: What it holds counts for (its owner's quota), whether it was placed as borrowed,
    #: and when its current run started (``None``: unknown); :func:`overstays` reads them.
    equivalents: Fraction = Fraction(0)
    borrowed: bool = False
    started_at: datetime | None = None
    #: When its runtime limit stops it (``None``: no limit, or not known): a container
    #: that is stopped by then is not warned for a reservation starting later (:func:`drain`).
    ends_by: datetime | None = None


@dataclass(frozen=True)
class DrainWarn:
    """Warn ``container``'s owner: ``reservation`` starts at ``at`` and it will be stopped."""

    container: str
    reservation: Reservation
    at: datetime

    @property
    def key(self) -> tuple[str, str]:
        return (self.reservation.id, self.container)


@dataclass(frozen=True)
class DrainStop:
    """Stop ``container`` (``running``) or take back its devices (stopped): ``reservation``
    is in force on a device it holds."""

    container: str
    reservation: Reservation
    running: bool

    @property
    def reason(self) -> str:
        r = self.reservation
        who = f"reserved for {r.holder}" if r.holder else "reserved for maintenance"
        return f"its GPU is {who} {r.describe()} (reservation {r.id})"


def slot_places(
    reservations: Sequence[Reservation],
    views: Sequence[GpuView],
    now: datetime,
    lead: timedelta,
) -> list[Reservation]:
    """``reservations`` as :func:`drain` sees them at ``now``: a reservation with slots whose
    start is at most ``lead`` away (or in force) also keeps the instances made on demand on
    ``views`` (the GPUs with MIG on demand) that overlap a slot's place (module docstring:
    containers there are drained as from a reserved device, and the slices destroyed once
    free, :func:`clear_slots`). An instance that a reservation overlapping its window keeps
    is never counted, nor one counted for another reservation first, so no device is kept
    twice at once. The others are returned unchanged."""
    by_gpu = {v.gpu.uuid: v for v in views}
    counted: dict[str, Reservation] = {}
    out: list[Reservation] = []
    for r in reservations:
        slots = [u for u in r.devices if is_slot(u)]
        if not slots or r.end <= now or r.start - lead > now or r.profile is None:
            out.append(r)
            continue
        others = {u for o in reservations if o.id != r.id and o.overlaps(r.start, r.end)
                  for u in o.devices}  # fmt: skip
        extra: list[str] = []
        for slot in slots:
            view = by_gpu.get(_slot_gpu(slot))
            if view is None:
                continue
            place = Slice(slot, r.profile, _slot_start(slot), held=True, on_demand=True)
            demand = {s.uuid for s in view.slices if s.on_demand}
            for uuid in sorted(in_the_way([view], {view.gpu.uuid: (place,)}) & demand):
                taken = counted.get(uuid)
                if uuid in others or uuid in r.devices or uuid in extra:
                    continue
                if taken is not None and taken.overlaps(r.start, r.end):
                    continue
                extra.append(uuid)
                counted[uuid] = r
        out.append(replace(r, devices=(*r.devices, *extra)) if extra else r)
    return out


@dataclass(frozen=True)
class SlotStep:
    """At its reservation's start, what to do for one slot: destroy ``destroy`` (free
    instances made on demand over its place), then make ``make`` (the slot's slice, at its
    place); ``make`` is ``None`` while something else is still there (a held instance, a
    baseline one, one another reservation keeps)."""

    reservation: Reservation
    slot: str
    destroy: tuple[str, ...]
    make: CreateSlice | None


def clear_slots(
    reservations: Iterable[Reservation], views: Sequence[GpuView], now: datetime
) -> list[SlotStep]:
    """For each slot of a reservation in force at ``now`` (its slice not made yet) on one of
    ``views``: the free instances made on demand over its place, to destroy at once, and the
    slice to make there once nothing else is in the way (module docstring). A held instance
    is never destroyed (:func:`drain` stops its container first); nor is a baseline one, or
    one a reservation keeps."""
    every = list(reservations)
    by_gpu = {v.gpu.uuid: v for v in views}
    steps: list[SlotStep] = []
    for r in every:
        if not r.in_force(now) or r.profile is None:
            continue
        kept_by = {u for o in every if o.id != r.id and o.overlaps(r.start, r.end)
                   for u in o.devices}  # fmt: skip
        for slot in (u for u in r.devices if is_slot(u)):
            view = by_gpu.get(_slot_gpu(slot))
            if view is None:
                continue
            start = _slot_start(slot)
            place = Slice(slot, r.profile, start, held=True, on_demand=True)
            over = in_the_way([view], {view.gpu.uuid: (place,)})
            pieces = [s for s in view.slices if s.uuid in over]
            free = tuple(
                s.uuid
                for s in pieces
                if s.on_demand and not s.held and s.uuid not in kept_by and s.uuid not in r.devices
            )
            rest = [s for s in view.slices if s.uuid not in free]
            beside = replace(view, slices=tuple(rest)).placed()
            fits = not [s for s in pieces if s.uuid not in free] and start in free_starts(
                view.table, r.profile, beside
            )
            make = CreateSlice(view.gpu.index, view.gpu.uuid, r.profile, start) if fits else None
            steps.append(SlotStep(r, slot, free, make))
    return steps


def drain(
    reservations: Iterable[Reservation],
    occupants: Iterable[Occupant],
    now: datetime,
    lead: timedelta,
    warned: Callable[[tuple[str, str]], bool] = lambda key: False,
) -> tuple[list[DrainWarn], list[DrainStop]]:
    """The warnings due (not ``warned`` yet) and the stops due at ``now``.

    A running container on a device of a reservation not its owner's is warned from
    ``start - lead`` and stopped from ``start`` until the end; a stopped one that still
    holds such a device gives it back from ``start``. One container gets one stop however
    many reservations it is in the way of. A container whose runtime limit stops it by the
    start (``ends_by``) is left alone before it: no warning, as it will be gone (should it
    still hold the device at the start, it is stopped as the others are).
    """
    live = [r for r in reservations if r.end > now and r.start - lead <= now]
    warns: list[DrainWarn] = []
    stops: list[DrainStop] = []
    for occupant in occupants:
        held = set(occupant.devices)
        in_way = [r for r in live if held.intersection(r.devices) and not r.is_for(occupant.user)]
        starting = next((r for r in in_way if r.start <= now), None)
        if starting is not None:
            stops.append(DrainStop(occupant.container, starting, occupant.running))
            continue
        if occupant.running:
            warns.extend(
                DrainWarn(occupant.container, r, r.start)
                for r in in_way
                if not warned((r.id, occupant.container))
                and (occupant.ends_by is None or occupant.ends_by > r.start)
            )
    return warns, stops


@dataclass(frozen=True)
class EndWarn:
    """Warn ``container``'s owner: ``reservation`` ends at its end, and the container will be
    stopped then unless it fits within their quota."""

    container: str
    reservation: Reservation

    @property
    def key(self) -> tuple[str, str]:
        return (self.reservation.id, self.container)


@dataclass(frozen=True)
class EndStop:
    """Stop ``container`` (``running``; else it only gives its devices back) and give its
    devices back: ``reservation``, its owner's, has ended and without it they hold more
    than their ``gpu_limit``."""

    container: str
    reservation: Reservation
    running: bool = True

    @property
    def reason(self) -> str:
        r = self.reservation
        return (
            f"reservation {r.id} ({r.describe()}) has ended and without it your containers "
            "hold more than your gpu_limit"
        )


def _over_quota_at(
    user: str,
    reservations: Sequence[Reservation],
    occupants: Sequence[Occupant],
    limit: Fraction,
    at: datetime,
) -> list[tuple[Occupant, Reservation]]:
    """``user``'s containers to stop (or, stopped, to give their devices back) at ``at``,
    each with the ended reservation whose devices it holds (module docstring): the stopped
    ones first, then the running ones newest first; empty when they fit."""
    mine = [o for o in occupants if o.user == user and not o.borrowed and o.devices]
    in_force = [r for r in reservations if r.is_for(user) and r.in_force(at)]
    allowed = limit + sum((r.gpu_equivalents for r in in_force), Fraction(0))
    total = sum((o.equivalents for o in mine), Fraction(0))
    if total <= allowed:
        return []
    still_kept = {u for r in in_force for u in r.devices}
    ended = sorted(
        (r for r in reservations if r.is_for(user) and r.end <= at),
        key=lambda r: r.end,
        reverse=True,
    )
    candidates: list[tuple[Occupant, Reservation]] = []
    for o in mine:
        if still_kept.intersection(o.devices):
            continue
        placed_on = next(
            (
                r
                for r in ended
                if not set(r.devices).isdisjoint(o.devices)
                and (not o.running or o.started_at is None or o.started_at < r.end)
            ),
            None,
        )
        if placed_on is not None:
            candidates.append((o, placed_on))
    oldest = datetime.min.replace(tzinfo=at.tzinfo)
    candidates.sort(
        key=lambda c: (not c[0].running, c[0].started_at or oldest, c[0].container),
        reverse=True,
    )
    chosen: list[tuple[Occupant, Reservation]] = []
    for occupant, reservation in candidates:
        if total <= allowed:
            break
        chosen.append((occupant, reservation))
        total -= occupant.equivalents
    return chosen


def overstays(
    reservations: Iterable[Reservation],
    occupants: Iterable[Occupant],
    limits: Mapping[str, Fraction | None],
    now: datetime,
    lead: timedelta,
    warned: Callable[[tuple[str, str]], bool] = lambda key: False,
) -> tuple[list[EndWarn], list[EndStop]]:
    """The end-of-window warnings due (not ``warned`` yet) and stops due at ``now``
    (module docstring). ``limits``: each holder's ``gpu_limit`` (missing or ``None``:
    unlimited, so nothing of theirs is ever stopped here)."""
    every = list(reservations)
    held = [r for r in every if r.holder is not None and r.end - lead <= now]
    everyone = list(occupants)
    warns: list[EndWarn] = []
    stops: list[EndStop] = []
    for user in sorted({r.holder for r in held if r.holder is not None}):
        limit = limits.get(user)
        if limit is None:
            continue
        for occupant, reservation in _over_quota_at(user, every, everyone, limit, now):
            stops.append(EndStop(occupant.container, reservation, occupant.running))
        for end in sorted({r.end for r in held if r.holder == user and r.end > now}):
            warns.extend(
                EndWarn(occupant.container, reservation)
                for occupant, reservation in _over_quota_at(user, every, everyone, limit, end)
                if reservation.end == end
                and occupant.running
                and not warned((reservation.id, occupant.container))
            )
    return warns, stops


@dataclass(frozen=True)
class Repair:
    """What became of a reservation whose devices were not all there: ``devices`` now
    (each one replaced by its ``replaced`` equivalent), ``missing`` those with none."""

    reservation: Reservation
    devices: tuple[str, ...]
    replaced: tuple[tuple[str, str], ...]
    missing: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.replaced)


def _equivalents(reservation: Reservation, inventory: Inventory) -> list[Device]:
    """Devices that may stand in for one that is gone, lowest GPU first: an instance of the
    reservation's profile, or a whole GPU for a reservation of whole GPUs (the same count
    towards its GPU-equivalents on boards of one kind)."""
    profile = reservation.profile
    kind = ReservationRequest(
        None, reservation.start, reservation.end, 0 if profile else 1, profile
    )
    return _candidates(kind, inventory)


def repair(
    reservations: Sequence[Reservation], inventory: Inventory, now: datetime
) -> list[Repair]:
    """For each reservation not ended that keeps a device ``inventory`` lacks, in order of
    start: its devices with each missing one re-mapped where an equivalent is free of the
    other reservations overlapping its window (module docstring). Reservations whose
    devices are all there are left out. Never a device twice in one window."""
    present = {d.uuid for d in inventory.devices}
    kept_now = {r.id: r.devices for r in reservations}
    repairs: list[Repair] = []
    for r in sorted((r for r in reservations if r.end > now), key=lambda r: (r.start, r.id)):
        due = r.start <= now  # a slot is only due to exist from the start
        gone = [u for u in r.devices if u not in present and (due or not is_slot(u))]
        if not gone:
            continue
        others = [o for o in reservations if o.id != r.id and o.overlaps(r.start, r.end)]
        taken = {u for o in others for u in kept_now[o.id]} | set(r.devices)
        devices = list(r.devices)
        replaced: list[tuple[str, str]] = []
        missing: list[str] = []
        for uuid in gone:
            spare = next((d for d in _equivalents(r, inventory) if d.uuid not in taken), None)
            if spare is None:
                missing.append(uuid)
                continue
            devices[devices.index(uuid)] = spare.uuid
            taken.add(spare.uuid)
            replaced.append((uuid, spare.uuid))
        kept_now[r.id] = tuple(devices)
        repairs.append(Repair(r, tuple(devices), tuple(replaced), tuple(missing)))
    return repairs


__all__ = [
    "DEFAULT_MAX_DAYS_AHEAD",
    "DEFAULT_MAX_HOURS",
    "MAINTENANCE",
    "MAX_NAMED_CONFLICTS",
    "SLOT_PREFIX",
    "DrainStop",
    "DrainWarn",
    "EndStop",
    "EndWarn",
    "Occupant",
    "Phase",
    "Repair",
    "Reservation",
    "ReservationLimits",
    "ReservationRequest",
    "SlotStep",
    "admit",
    "blocked_devices",
    "clear_slots",
    "drain",
    "fit",
    "format_moment",
    "gpu_hours",
    "held_now",
    "holder_view",
    "is_slot",
    "next_change",
    "next_free_start",
    "out_of_slots",
    "overstays",
    "phase",
    "protected",
    "repair",
    "reserved_starts",
    "slot_keep_out",
    "slot_places",
    "slot_uuid",
    "with_blocked",
]
