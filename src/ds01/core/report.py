"""Usage reports: GPU-hours allocated and used, containers, idle reclaims, queue waits,
energy and CO₂, per user and per group over a window (``ds01 admin report``). Pure.

Sources, each clipped to the window ``[start, end)``:

- **GPU-hours allocated**: the usage ledger (``Holding``): intervals during which a container
  held devices, with their GPU-equivalents; an interval still open counts up to ``now``.
- **GPU-hours measured / used**: the lifecycle loop's GPU activity (``Activity``), per
  container and hour: *measured* is the GPU-equivalent time during which the devices held
  reported a utilisation, *used* the same time weighted by that utilisation (a GPU busy
  50 % of an hour is half a GPU-hour used). Devices that report no utilisation (MIG
  instances under NVML) count as allocated, not measured; ``utilization_percent`` is
  used / measured. An hour that the window cuts is counted pro rata (the current hour
  over the part of it that has passed).
- **Containers created, idle reclaims, runtime stops, queue waits**: audit events
  (``container.create``, ``cleanup.idle``, ``cleanup.runtime``, ``queue.start`` with its
  ``waited_seconds``), successful ones only, attributed to the container's owner (the
  uid in ``container/<name>._.<uid>`` when ds01d acted for them).
- **Reservations made, reservation stops**: ``reservation.create`` events, for the
  reservation's holder (maintenance windows for the admin who made them), and
  ``cleanup.reservation`` (a container stopped because its device was reserved, or, at a
  reservation's end, its holder's over quota without it), for the container's owner.
- **Borrowed GPU-hours, reclaims**: the part of the GPU-hours allocated held by containers
  placed above their owner's ``gpu_limit`` (borrowed, ``ds01.core.borrowing``; the usage
  ledger marks them), and ``container.reclaim`` events (a borrowed container stopped for
  a request within quota), for the container's owner.
- **GPU use outside ds01**: ``gpu.unmanaged_use`` events (a process on a GPU outside
  ds01's allocation, ``ds01.core.gpu_use``), each counted once, for the owner of the ds01
  container it ran in, else for the process's user.
- **Energy and CO₂**: the energy ledger (``Energy``), records pro-rated by their overlap
  with the window; CO₂ = kWh x the grid intensity (g/kWh). ``None`` when not recorded.

A user's row carries one group (the group of their latest holding, else the one the caller
resolves for them); group rows sum the rows of their users, and the total sums everything.

The lifecycle loop turns one observation into activity with :func:`activity_sample`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

from ds01.core.energy import JOULES_PER_KWH
from ds01.core.event_query import DAEMON_USER, container_uid, parse_ts
from ds01.core.gpu_use import UNMANAGED_USE_ACTION

HOUR = timedelta(hours=1)
#: A report's window when ``--from`` is not given: this many days before its end.
DEFAULT_WINDOW_DAYS = 30
#: Name of a user's group when nothing says which it is.
NO_GROUP = "-"
#: Name of the row that sums everything.
TOTAL = "total"

#: Events counted, by action.
CREATED = "container.create"
IDLE_RECLAIM = "cleanup.idle"
RUNTIME_STOP = "cleanup.runtime"
QUEUE_START = "queue.start"
RESERVED = "reservation.create"
RESERVATION_STOP = "cleanup.reservation"
BORROW_RECLAIM = "container.reclaim"
COUNTED = (
    CREATED, IDLE_RECLAIM, RUNTIME_STOP, QUEUE_START, UNMANAGED_USE_ACTION, RESERVED,
    RESERVATION_STOP, BORROW_RECLAIM,
)


# -- what the lifecycle loop records --------------------------------------------------------


def hour_start(moment: datetime) -> datetime:
    """The start of ``moment``'s UTC hour."""
    utc = moment.astimezone(timezone.utc)
    return utc.replace(minute=0, second=0, microsecond=0)


def max_sample_gap(interval_seconds: float) -> float:
    """Longest time between two lifecycle samples that counts as measured: three passes,
    at least a minute. A longer gap (ds01d was down) is left unmeasured, not guessed."""
    return max(3 * interval_seconds, 60.0)


def activity_sample(
    gpu_equivalents: Fraction | float, utilizations: Sequence[float | None], seconds: float
) -> tuple[float, float] | None:
    """(measured, busy) GPU-equivalent seconds of a container over ``seconds``.

    ``utilizations``: one reading per device the container holds, in percent, ``None`` where
    the device reports none; the container's GPU-equivalents are shared equally among its
    devices. ``None`` when no device reports a utilisation or ``seconds`` is not positive.
    """
    readings = [min(max(u, 0.0), 100.0) for u in utilizations if u is not None]
    if not readings or seconds <= 0 or not utilizations:
        return None
    per_device = float(gpu_equivalents) / len(utilizations)
    measured = per_device * len(readings) * seconds
    busy = per_device * sum(r / 100.0 for r in readings) * seconds
    return measured, busy


# -- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holding:
    """A usage-ledger interval: ``user``'s container held ``gpu_equivalents`` from ``start``
    to ``end`` (``None``: still); ``borrowed``: above the owner's ``gpu_limit``."""

    user: str
    group: str
    gpu_equivalents: float
    start: datetime
    end: datetime | None = None
    borrowed: bool = False


@dataclass(frozen=True)
class Activity:
    """GPU activity of one container in the hour starting at ``hour`` (see the module
    docstring), in GPU-equivalent seconds."""

    user: str
    group: str
    hour: datetime
    measured_gpu_seconds: float
    busy_gpu_seconds: float


@dataclass(frozen=True)
class Energy:
    """Energy of devices ``user`` held over ``[start, end)``, in joules."""

    user: str
    group: str
    start: datetime
    end: datetime
    joules: float


# -- output -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueWaits:
    count: int
    mean_seconds: float | None
    max_seconds: float | None


@dataclass(frozen=True)
class ReportRow:
    """One user's, group's or the total's figures (field meanings: the module docstring)."""

    name: str
    group: str | None
    gpu_hours_allocated: float
    gpu_hours_measured: float
    gpu_hours_used: float
    utilization_percent: float | None
    containers_created: int
    idle_reclaims: int
    runtime_stops: int
    queue_waits: QueueWaits
    energy_kwh: float | None
    co2_kg: float | None
    unmanaged_gpu_uses: int = 0
    reservations: int = 0
    reservation_stops: int = 0
    gpu_hours_borrowed: float = 0.0
    borrow_reclaims: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON data: every field by its name, in declaration order."""
        return asdict(self)


@dataclass(frozen=True)
class Report:
    start: datetime
    end: datetime
    generated_at: datetime
    co2_g_per_kwh: float | None
    users: tuple[ReportRow, ...]
    groups: tuple[ReportRow, ...]
    total: ReportRow
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(timespec="seconds"),
            "end": self.end.isoformat(timespec="seconds"),
            "generated_at": self.generated_at.isoformat(timespec="seconds"),
            "co2_g_per_kwh": self.co2_g_per_kwh,
            "users": [row.to_dict() for row in self.users],
            "groups": [row.to_dict() for row in self.groups],
            "total": self.total.to_dict(),
            "notes": list(self.notes),
        }


@dataclass
class _Tally:
    allocated: float = 0.0  # GPU-equivalent seconds
    measured: float = 0.0
    busy: float = 0.0
    events: Counter[str] = field(default_factory=Counter)  # counted events by action
    waits: list[float] = field(default_factory=list)
    joules: float = 0.0
    borrowed: float = 0.0  # GPU-equivalent seconds, part of allocated

    def add(self, other: _Tally) -> None:
        self.allocated += other.allocated
        self.measured += other.measured
        self.busy += other.busy
        self.events.update(other.events)
        self.waits.extend(other.waits)
        self.joules += other.joules
        self.borrowed += other.borrowed


def _overlap(start: datetime, end: datetime, lo: datetime, hi: datetime) -> float:
    """Seconds of ``[start, end)`` inside ``[lo, hi)``."""
    return max(0.0, (min(end, hi) - max(start, lo)).total_seconds())


def _round(value: float, digits: int = 4) -> float:
    return round(value, digits) + 0.0  # + 0.0: no "-0.0"


def _owner(event: Mapping[str, Any], uid_names: Mapping[int, str]) -> str | None:
    """Whose an event is: the owner of the container it names, else whoever acted."""
    uid = container_uid(event.get("resource"))
    if uid is not None and uid in uid_names:
        return uid_names[uid]
    user = event.get("user")
    if not isinstance(user, str) or user == DAEMON_USER:
        return None
    return user


@dataclass
class _Window:
    """The per-user tallies of one report window ``[start, end)`` at ``now``, and each
    user's latest group (from the latest holding or energy record seen)."""

    start: datetime
    end: datetime
    now: datetime
    tallies: dict[str, _Tally] = field(default_factory=dict)
    latest: dict[str, tuple[datetime, str]] = field(default_factory=dict)

    def tally(self, user: str) -> _Tally:
        return self.tallies.setdefault(user, _Tally())

    def count_holdings(self, holdings: Iterable[Holding]) -> None:
        for holding in holdings:
            seconds = _overlap(holding.start, holding.end or self.now, self.start, self.end)
            if seconds <= 0:
                continue
            row = self.tally(holding.user)
            row.allocated += holding.gpu_equivalents * seconds
            if holding.borrowed:
                row.borrowed += holding.gpu_equivalents * seconds
            if holding.user not in self.latest or holding.start > self.latest[holding.user][0]:
                self.latest[holding.user] = (holding.start, holding.group)

    def count_activity(self, activity: Iterable[Activity]) -> None:
        for hour in activity:
            # Recorded over the hour, or up to now in the current hour.
            span_end = min(hour.hour + HOUR, max(self.now, hour.hour + timedelta(seconds=1)))
            span = (span_end - hour.hour).total_seconds()
            share = _overlap(hour.hour, span_end, self.start, self.end) / span
            if share <= 0:
                continue
            row = self.tally(hour.user)
            row.measured += hour.measured_gpu_seconds * share
            row.busy += hour.busy_gpu_seconds * share

    def count_events(
        self, events: Iterable[Mapping[str, Any]], uid_names: Mapping[int, str]
    ) -> None:
        for event in events:
            if event.get("outcome", "success") != "success":
                continue
            action = event.get("action")
            if action not in COUNTED:
                continue
            ts = parse_ts(event.get("ts"))
            if ts is None or not self.start <= ts < self.end:
                continue
            owner = _owner(event, uid_names)
            details = event.get("details")
            key = {UNMANAGED_USE_ACTION: "container_user", RESERVED: "holder"}.get(str(action))
            if key is not None and isinstance(details, Mapping):
                holder = details.get(key)
                owner = holder if isinstance(holder, str) else owner
            if owner is not None:
                _count_event(self.tally(owner), action, event)

    def count_energy(self, energy: Iterable[Energy]) -> None:
        for record in energy:
            length = (record.end - record.start).total_seconds()
            if length > 0:
                share = _overlap(record.start, record.end, self.start, self.end) / length
            else:
                share = 1.0 if self.start <= record.start < self.end else 0.0
            if share > 0:
                self.tally(record.user).joules += record.joules * share
                self.latest.setdefault(record.user, (record.start, record.group))

    def group_of(self, user: str, user_groups: Mapping[str, str]) -> str:
        if user in self.latest:
            return self.latest[user][1]
        return user_groups.get(user, NO_GROUP)


def _count_event(row: _Tally, action: str, event: Mapping[str, Any]) -> None:
    """Add one successful event of ``COUNTED`` to ``row``: a queue start as its wait, any
    other as one more of its action."""
    if action != QUEUE_START:
        row.events[action] += 1
        return
    details = event.get("details")
    waited = details.get("waited_seconds") if isinstance(details, Mapping) else None
    if isinstance(waited, (int, float)) and not isinstance(waited, bool):
        row.waits.append(float(waited))


def _make_row(
    name: str, group: str | None, t: _Tally, metered: bool, co2_g_per_kwh: float | None
) -> ReportRow:
    kwh = t.joules / JOULES_PER_KWH if metered else None
    co2 = kwh * co2_g_per_kwh / 1000 if kwh is not None and co2_g_per_kwh is not None else None
    return ReportRow(
        name=name,
        group=group,
        gpu_hours_allocated=_round(t.allocated / 3600),
        gpu_hours_measured=_round(t.measured / 3600),
        gpu_hours_used=_round(t.busy / 3600),
        utilization_percent=_round(100 * t.busy / t.measured, 1) if t.measured > 0 else None,
        containers_created=t.events[CREATED],
        idle_reclaims=t.events[IDLE_RECLAIM],
        runtime_stops=t.events[RUNTIME_STOP],
        queue_waits=QueueWaits(
            count=len(t.waits),
            mean_seconds=_round(sum(t.waits) / len(t.waits), 1) if t.waits else None,
            max_seconds=_round(max(t.waits), 1) if t.waits else None,
        ),
        energy_kwh=_round(kwh) if kwh is not None else None,
        co2_kg=_round(co2) if co2 is not None else None,
        unmanaged_gpu_uses=t.events[UNMANAGED_USE_ACTION],
        reservations=t.events[RESERVED],
        reservation_stops=t.events[RESERVATION_STOP],
        gpu_hours_borrowed=_round(t.borrowed / 3600),
        borrow_reclaims=t.events[BORROW_RECLAIM],
    )


def _by_allocation(item: tuple[str, _Tally]) -> tuple[float, str]:
    return (-item[1].allocated, item[0])


def build_report(
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    events: Iterable[Mapping[str, Any]],
    holdings: Iterable[Holding],
    activity: Iterable[Activity],
    energy: Iterable[Energy] | None,
    co2_g_per_kwh: float | None,
    uid_names: Mapping[int, str],
    user_groups: Mapping[str, str],
    notes: Sequence[str] = (),
) -> Report:
    """The report over ``[start, end)`` (aware datetimes); see the module docstring.

    Args:
        now: the current time: open holdings count up to it, and nothing after it counts.
        events: audit events (mappings as in the log), any order, any time.
        holdings, activity, energy: the ledgers (``energy`` ``None``: not recorded).
        co2_g_per_kwh: grid intensity (``None``: CO₂ unknown).
        uid_names: uid → user name, to attribute ds01d's events to container owners.
        user_groups: group of users that have no holding in the window.
        notes: sentences added to the report's notes.

    Raises:
        ValueError: the window is empty or inverted.
    """
    if not start < end:
        raise ValueError(f"the report's start ({start}) must be before its end ({end})")
    window = _Window(start, end, now)
    window.count_holdings(holdings)
    window.count_activity(activity)
    window.count_events(events, uid_names)
    window.count_energy(energy or ())
    metered = energy is not None

    groups: dict[str, _Tally] = {}
    total = _Tally()
    for user, t in window.tallies.items():
        groups.setdefault(window.group_of(user, user_groups), _Tally()).add(t)
        total.add(t)
    users = sorted(window.tallies.items(), key=_by_allocation)
    return Report(
        start=start,
        end=end,
        generated_at=now,
        co2_g_per_kwh=co2_g_per_kwh,
        users=tuple(
            _make_row(u, window.group_of(u, user_groups), t, metered, co2_g_per_kwh)
            for u, t in users
        ),
        groups=tuple(
            _make_row(g, None, t, metered, co2_g_per_kwh)
            for g, t in sorted(groups.items(), key=_by_allocation)
        ),
        total=_make_row(TOTAL, None, total, metered, co2_g_per_kwh),
        notes=tuple(notes),
    )


__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "Activity",
    "Energy",
    "Holding",
    "QueueWaits",
    "Report",
    "ReportRow",
    "activity_sample",
    "build_report",
    "hour_start",
    "max_sample_gap",
]
