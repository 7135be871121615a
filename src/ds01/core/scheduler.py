"""The GPU queue's decisions as pure functions: who is first, and who starts now.

Nothing here touches Docker, the database or the clock: ``now`` is always a parameter, and
every datetime passed in must be comparable with it (all timezone-aware, preferably UTC).
The daemon (and ``ds01 simulate``) calls :func:`plan` whenever something changes, starts
what it says, and keeps the reservation it returns for the next pass.

**Usage.** :func:`decayed_usage` turns the usage ledger (:class:`UsageInterval`: who held
how many GPU-equivalents from when to when) into GPU-equivalent-hours per user and group,
each instant of use weighted by ``2 ** (-age / half_life)``, integrated exactly.

**Order.** Each waiting request gets a score in points (:class:`ScoreParts`)::

    priority  = priority_weight     * priority / 100
    fairshare = fairshare_weight    * F                  F in [0, 1], see fairshare_factor
    age       = age_weight_per_hour * hours waited

Highest total first; ties go to the earlier submission, then the smaller id, so the order is
total and deterministic. The fair-share factor is Slurm's classic ``2 ** (-U / S)`` with
equal shares among the users who have any recent usage::

    r_user  = user's decayed usage / mean decayed usage of the users with usage
    r_group = (group's decayed usage / its users with usage) / the same mean
    F       = 2 ** (-(r_user + r_group) / 2)

So ``F`` is 1 for a user (and group) without recent usage, 0.5 for a user who used exactly
the average and whose group used the average per member, and falls towards 0 the more they
used. The group part counts usage *per member*, so a large group is not held back for its
size, but a light user of a group that uses a lot per head is held back a little. Within one
group, the heavier recent user always ranks behind the lighter one at equal priority and age.
The age term grows without bound: a request is never overtaken by one submitted more than
:meth:`SchedulerConfig.overtaking_horizon_hours` after it, so every request reaches the head
once the requests ranked ahead of it when that horizon passed have started.

**One pass** (:func:`plan`) walks the queue in score order against the current allocation
state, which it updates with every start, so that no device is handed out twice and the
quotas of later requests count the starts before them (``gpu_limit`` and ``max_containers``):

1. A request over its user's quota (:class:`~ds01.errors.QuotaExceeded` from
   :func:`~ds01.core.allocation.allocate`) waits with status ``quota``; it never starts
   and never blocks anyone. A request that could not be placed even on an empty server
   waits as ``unsatisfiable`` and blocks nobody either.
2. Until a head is found, every request that :func:`allocate` can place starts
   (``starting``), on its best-fit placement.
3. The first request within quota that cannot be placed becomes the *head* (EASY backfill:
   one reservation). Its *planned placement* is the best fit it would get once running
   containers end in the order of their expected ends (``expected_ends``; the starts of this
   pass end ``expected_runtime_hours`` after ``now``; an unknown end comes after every known
   one); the first moment that placement exists is its *estimated start*, ``None`` when it
   depends on an unknown end. The free devices of its planned placement are *reserved*
   for it, and as more of them free up in later passes they are reserved too, because each
   pass plans afresh.
4. With ``backfill`` off, every later request waits as ``behind_head``. With it on, a later
   request starts (``backfilling``) on free devices that are not reserved; it may also take
   reserved devices, but only when it is expected to end (``now + expected_runtime_hours``)
   no later than the head's *promised start* plus ``backfill_max_delay_minutes`` (unknown
   runtime or unknown start: never, unless the bound is ``null``). Otherwise it waits as
   ``reserved_for_head`` (it would fit on reserved devices) or ``capacity``. A later
   request of the head's own user also waits as ``reserved_for_head`` when, running, it
   would leave the head without the ``gpu_limit`` or ``max_containers`` room it needs.

A request's ``blocked`` devices are never placed for *it* (not now, not in its planned
placement), and stay free for every other request: each request is planned with its own
(GPU reservations keep a device only from the requests that could still hold it at the
reservation's start, ``ds01.core.reservations.with_blocked``). Whether a request is
``unsatisfiable`` is judged without them (a reservation ends); one that could not be placed
even on an empty server without them waits as ``capacity`` and, like an unsatisfiable one,
never becomes the head (it would hold devices for nothing and, with backfill off, stop the
whole queue).

The promised start is the head's estimated start, or, when the caller passes back the
previous pass's reservation for the same head, the earlier of the two: successive passes
therefore cannot push the head back by more than the bound in total, as long as running
containers end when they are expected to.

``demand_gpu_equivalents`` is the sum of the least GPU-equivalents of every request that
does not start in this pass (what the queue is waiting for); ``waiting_for_devices`` says
whether any of them waits for devices rather than for its quota (the lifecycle's demand).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Literal, NamedTuple, TypeAlias

from ds01.config.scheduler import MAX_PRIORITY, PRIORITY_POINTS_DIVISOR, SchedulerConfig
from ds01.core.allocation import (
    AllocationState,
    GpuRequest,
    Placement,
    allocate,
    describe_devices,
    least_gpu_equivalents,
)
from ds01.errors import NoCapacity, QuotaExceeded
from ds01.model.device import Inventory
from ds01.model.quota import GpuQuota

SECONDS_PER_HOUR = 3600.0

#: Why a request is where it is after a pass. ``starting`` and ``backfilling`` start now;
#: every other status waits.
QueueStatus = Literal[
    "starting",
    "backfilling",
    "head",
    "capacity",
    "reserved_for_head",
    "behind_head",
    "quota",
    "unsatisfiable",
]

#: The statuses of requests that start in the pass.
STARTING_STATUSES: frozenset[QueueStatus] = frozenset({"starting", "backfilling"})

#: The statuses of requests that wait for devices to free up (not for their quota, and not
#: for hardware the server does not have): the demand that shortens idle timeouts.
DEVICE_WAIT_STATUSES: frozenset[QueueStatus] = frozenset(
    {"head", "capacity", "reserved_for_head", "behind_head"}
)

#: When each running container is expected to free its devices, by Docker container name
#: (the :attr:`Holding.container`); ``None`` or a missing name means unknown.
ExpectedEnds: TypeAlias = Mapping[str, datetime | None]


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / SECONDS_PER_HOUR


# --------------------------------------------------------------------------------------------
# Usage with exponential decay
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageInterval:
    """One stretch of time during which a user held GPUs.

    Attributes:
        user: who held them.
        group: the config group the usage is charged to (the user's first group).
        gpu_equivalents: what the devices counted for (whole GPU = 1, 3g.20gb = 3/7).
        start: when the devices were allocated.
        end: when they were released; ``None`` while still held (counted up to ``now``).
    """

    user: str
    group: str
    gpu_equivalents: Fraction
    start: datetime
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.gpu_equivalents < 0:
            raise ValueError(f"usage of {self.user!r} has negative GPU-equivalents")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"usage of {self.user!r} ends ({self.end}) before it starts")

    def decayed_gpu_hours(self, now: datetime, half_life_hours: float) -> float:
        """GPU-equivalent-hours up to ``now``, each instant weighted ``2 ** (-age / h)``.

        Closed form of ``g * integral over [start, end] of 2 ** (-(now - t) / h) dt``, which
        is ``g * h / ln 2 * (2 ** (-(now - end) / h) - 2 ** (-(now - start) / h))``; the part
        of the interval after ``now`` does not count.
        """
        end = now if self.end is None else min(self.end, now)
        if end <= self.start or self.gpu_equivalents == 0:
            return 0.0
        decay_per_hour = math.log(2) / half_life_hours
        newest_weight = math.exp(-decay_per_hour * _hours(now - end))
        # newest - oldest weight, without cancellation for short intervals
        span_weight = -math.expm1(-decay_per_hour * _hours(end - self.start))
        return float(self.gpu_equivalents) * newest_weight * span_weight / decay_per_hour


@dataclass(frozen=True)
class UsageTotals:
    """Decayed usage at one instant, in GPU-equivalent-hours (treat the mappings as read-only).

    Attributes:
        by_user: per user; users without usage are absent.
        by_group: per group, the sum over its intervals.
        users_by_group: per group, how many distinct users have usage charged to it.
    """

    by_user: Mapping[str, float] = field(default_factory=dict)
    by_group: Mapping[str, float] = field(default_factory=dict)
    users_by_group: Mapping[str, int] = field(default_factory=dict)

    @property
    def mean_user_usage(self) -> float:
        """Mean decayed usage of the users with any usage (0 when nobody has any)."""
        return sum(self.by_user.values()) / len(self.by_user) if self.by_user else 0.0

    def relative_user_usage(self, user: str) -> float:
        """``user``'s usage over the mean user's (0 = none, 1 = average)."""
        mean = self.mean_user_usage
        return self.by_user.get(user, 0.0) / mean if mean > 0 else 0.0

    def relative_group_usage(self, group: str) -> float:
        """``group``'s usage per member with usage, over the mean user's (1 = average)."""
        mean, members = self.mean_user_usage, self.users_by_group.get(group, 0)
        if mean <= 0 or members == 0:
            return 0.0
        return self.by_group.get(group, 0.0) / members / mean

    def fairshare_factor(self, user: str, group: str) -> float:
        """``2 ** (-(r_user + r_group) / 2)`` in [0, 1]; 1 = no recent usage (module docstring)."""
        relative = (self.relative_user_usage(user) + self.relative_group_usage(group)) / 2
        return math.pow(2.0, -relative)


def decayed_usage(
    intervals: Iterable[UsageInterval], now: datetime, half_life_hours: float
) -> UsageTotals:
    """Sum every interval's decayed GPU-equivalent-hours per user and per group.

    ``half_life_hours`` is the age (hours) at which an hour of use counts half. Intervals,
    or parts of them, after ``now`` count nothing; a user or group whose intervals add up
    to 0 is left out.

    Raises:
        ValueError: ``half_life_hours`` is not positive.
    """
    if not half_life_hours > 0:
        raise ValueError(f"half_life_hours must be positive, got {half_life_hours}")
    by_user: dict[str, float] = {}
    by_group: dict[str, float] = {}
    users_of_group: dict[str, set[str]] = {}
    for interval in intervals:
        amount = interval.decayed_gpu_hours(now, half_life_hours)
        if amount <= 0:
            continue
        by_user[interval.user] = by_user.get(interval.user, 0.0) + amount
        by_group[interval.group] = by_group.get(interval.group, 0.0) + amount
        users_of_group.setdefault(interval.group, set()).add(interval.user)
    return UsageTotals(
        by_user=by_user,
        by_group=by_group,
        users_by_group={group: len(users) for group, users in users_of_group.items()},
    )


# --------------------------------------------------------------------------------------------
# Requests and their order
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingRequest:
    """One request waiting in the queue.

    Attributes:
        id: unique among the pending requests; also the container name under which
            :func:`plan` counts a start against later requests of the same pass.
        user: who asks.
        group: the config group its usage is charged to (fair share).
        request: the GPUs it asks for.
        quota: the user's resolved GPU limits.
        priority: the user's resolved ``priority`` (0..1000).
        submitted_at: when it joined the queue.
        expected_runtime_hours: hours from its start until its devices are free again
            (e.g. its ``max_runtime_hours`` plus the hold after stop); ``None`` = unknown.
        user_containers: names of the user's containers that count against
            ``max_containers`` for this request (as :func:`allocate` takes them).
        blocked: devices this request may not be placed on now, whatever else is free
            (e.g. those GPU reservations keep from it:
            ``ds01.core.reservations.with_blocked``); they count as free for every other
            request.
    """

    id: str
    user: str
    group: str
    request: GpuRequest
    quota: GpuQuota
    priority: int
    submitted_at: datetime
    expected_runtime_hours: float | None = None
    user_containers: tuple[str, ...] = ()
    blocked: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be 0..{MAX_PRIORITY}, got {self.priority}")
        runtime = self.expected_runtime_hours
        if runtime is not None and not (math.isfinite(runtime) and runtime >= 0):
            raise ValueError(f"expected_runtime_hours must be finite and >= 0, got {runtime}")

    def open_in(self, inventory: Inventory) -> Inventory:
        """``inventory`` as this request may be placed in it: its ``blocked`` devices held back."""
        if not self.blocked:
            return inventory
        return replace(inventory, reserved=inventory.reserved | self.blocked)


@dataclass(frozen=True)
class ScoreParts:
    """A request's score, part by part, in points (``ds01 queue --explain``).

    Attributes:
        priority: ``priority_weight * priority / 100``.
        fairshare: ``fairshare_weight * fairshare_factor``.
        age: ``age_weight_per_hour * waited_hours``.
        fairshare_factor: in [0, 1]; 1 = no recent usage.
        waited_hours: hours since submission (0 if submitted after ``now``).
    """

    priority: float
    fairshare: float
    age: float
    fairshare_factor: float
    waited_hours: float

    @property
    def total(self) -> float:
        """The score: higher goes first."""
        return self.priority + self.fairshare + self.age


def score(
    request: PendingRequest, usage: UsageTotals, now: datetime, policy: SchedulerConfig
) -> ScoreParts:
    """``request``'s score at ``now`` under ``policy`` (formula in the module docstring)."""
    factor = usage.fairshare_factor(request.user, request.group)
    waited = max(0.0, _hours(now - request.submitted_at))
    return ScoreParts(
        priority=policy.priority_weight * request.priority / PRIORITY_POINTS_DIVISOR,
        fairshare=policy.fairshare_weight * factor,
        age=policy.age_weight_per_hour * waited,
        fairshare_factor=factor,
        waited_hours=waited,
    )


@dataclass(frozen=True)
class Ranked:
    """A request with its score and its 1-based position in the queue."""

    request: PendingRequest
    parts: ScoreParts
    position: int


def order(
    pending: Iterable[PendingRequest],
    usage: UsageTotals,
    now: datetime,
    policy: SchedulerConfig,
) -> list[Ranked]:
    """The queue in score order: highest total first, then earliest ``submitted_at``, then id."""
    scored = [(request, score(request, usage, now, policy)) for request in pending]
    scored.sort(key=lambda item: (-item[1].total, item[0].submitted_at, item[0].id))
    return [
        Ranked(request, parts, position)
        for position, (request, parts) in enumerate(scored, start=1)
    ]


# --------------------------------------------------------------------------------------------
# One scheduling pass
# --------------------------------------------------------------------------------------------


class Start(NamedTuple):
    """A request to start now, on these devices."""

    request: PendingRequest
    placement: Placement


@dataclass(frozen=True)
class Reservation:
    """What the head of the queue holds.

    Attributes:
        request_id: the head's id.
        devices: UUIDs of free devices held for it now (no backfill took them).
        planned_devices: UUIDs of its whole planned placement (``devices`` plus those that
            running containers are expected to free).
        estimated_start: when its planned placement is expected to be free, counting the
            backfills of this pass; ``None`` = depends on a container of unknown end.
        promised_start: what backfill is measured against: the earliest estimate this
            head has had over consecutive passes (``None`` = unknown).
    """

    request_id: str
    devices: tuple[str, ...]
    planned_devices: tuple[str, ...]
    estimated_start: datetime | None
    promised_start: datetime | None


@dataclass(frozen=True)
class QueueEntry(Ranked):
    """A ranked request and what the pass decided for it.

    Attributes:
        status: see :data:`QueueStatus`.
        reason: one sentence for people (``ds01 queue --explain``).
    """

    status: QueueStatus
    reason: str

    @property
    def starts(self) -> bool:
        """Whether it starts in this pass."""
        return self.status in STARTING_STATUSES


@dataclass(frozen=True)
class Plan:
    """The outcome of one pass.

    Attributes:
        starts: what to start now, in this order; each placement was made against the
            state updated with the starts before it.
        reservation: the head's, or ``None`` when no request within quota is left waiting
            for capacity.
        ranked: every pending request in queue order, with its status.
        demand_gpu_equivalents: least GPU-equivalents of the requests that still wait.
    """

    starts: tuple[Start, ...]
    reservation: Reservation | None
    ranked: tuple[QueueEntry, ...]
    demand_gpu_equivalents: Fraction

    @property
    def waiting_for_devices(self) -> bool:
        """Whether some request waits for devices (:data:`DEVICE_WAIT_STATUSES`): the
        ``demand`` of :func:`ds01.core.lifecycle.decide`."""
        return bool(self.users_waiting_for_devices)

    @property
    def waiting_requests(self) -> tuple[PendingRequest, ...]:
        """The requests that wait for devices (within their owners' quota), in queue order:
        borrowing must not take a device any of them could use
        (:func:`ds01.core.borrowing.wanted_by`)."""
        return tuple(e.request for e in self.ranked if e.status in DEVICE_WAIT_STATUSES)

    @property
    def users_waiting_for_devices(self) -> frozenset[str]:
        """The users with a request that waits for devices: demand on the containers of
        everyone else (a user's own request does not shorten their own idle timeout)."""
        return frozenset(
            entry.request.user for entry in self.ranked if entry.status in DEVICE_WAIT_STATUSES
        )

    def entry(self, request_id: str) -> QueueEntry:
        """The queue entry of ``request_id``; ``KeyError`` if it was not pending."""
        for entry in self.ranked:
            if entry.request.id == request_id:
                return entry
        raise KeyError(request_id)


def _when(moment: datetime | None) -> str:
    return "an unknown time" if moment is None else moment.isoformat(timespec="minutes")


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def _satisfiable(pending: PendingRequest, inventory: Inventory) -> bool:
    """Whether ``pending`` could be placed if every device of the server were free."""
    try:
        allocate(pending.request, pending.user, pending.quota, inventory, AllocationState(), ())
    except (NoCapacity, QuotaExceeded):
        return False
    return True


def _release_steps(
    state: AllocationState, now: datetime, ends: Mapping[str, datetime | None]
) -> list[tuple[datetime | None, frozenset[str]]]:
    """Containers holding devices grouped by expected end, soonest first, unknown last.

    An expected end in the past (an overdue container) counts as ``now``.
    """
    known: dict[datetime, set[str]] = {}
    unknown: set[str] = set()
    for holding in state.holdings:
        if not holding.devices and not holding.gpu_equivalents:
            continue  # releasing it frees nothing
        end = ends.get(holding.container)
        if end is None:
            unknown.add(holding.container)
        else:
            known.setdefault(max(end, now), set()).add(holding.container)
    steps: list[tuple[datetime | None, frozenset[str]]] = [
        (moment, frozenset(names)) for moment, names in sorted(known.items())
    ]
    if unknown:
        steps.append((None, frozenset(unknown)))
    return steps


def _planned_placement(
    head: PendingRequest,
    containers: Sequence[str],
    inventory: Inventory,
    state: AllocationState,
    now: datetime,
    ends: Mapping[str, datetime | None],
) -> tuple[Placement, datetime | None]:
    """The head's best fit once enough running containers have ended, and when that is.

    Containers are released in the order of their expected ends; the earliest prefix after
    which :func:`allocate` places the head is found by bisection (releasing more never makes
    a placement impossible: there are only more free devices and less of the head's user's
    quota in use). The head must be satisfiable, so releasing everything always works.
    """
    steps = _release_steps(state, now, ends)

    def attempt(count: int) -> Placement | None:
        released: set[str] = set()
        for _, names in steps[:count]:
            released |= names
        remaining = AllocationState(tuple(h for h in state.holdings if h.container not in released))
        try:
            return _allocate(head, inventory, remaining, containers)
        except (NoCapacity, QuotaExceeded):
            return None

    best = attempt(len(steps)) if steps else None
    if best is None:  # not for a satisfiable head: with everything released it fits
        return Placement(), None
    low, high = 0, len(steps)  # invariant: attempt(low) fails, attempt(high) succeeds
    while high - low > 1:
        middle = (low + high) // 2
        placement = attempt(middle)
        if placement is None:
            low = middle
        else:
            high, best = middle, placement
    return best, steps[high - 1][0]


def _may_use_reserved(
    pending: PendingRequest, now: datetime, reservation: Reservation, policy: SchedulerConfig
) -> bool:
    """Whether ``pending`` may start on devices reserved for the head (module docstring)."""
    bound = policy.backfill_max_delay_minutes
    if bound is None:
        return True
    runtime = pending.expected_runtime_hours
    if runtime is None or reservation.promised_start is None:
        return False
    return now + timedelta(hours=runtime) <= reservation.promised_start + timedelta(minutes=bound)


def _end_of(pending: PendingRequest, now: datetime) -> datetime | None:
    runtime = pending.expected_runtime_hours
    return None if runtime is None else now + timedelta(hours=runtime)


@dataclass(frozen=True)
class _Head:
    """The head of the queue during a pass: its request, planned placement and reservation."""

    request: PendingRequest
    planned: Placement
    reservation: Reservation

    def short_of_quota(
        self,
        backfill: PendingRequest,
        placement: Placement,
        state: AllocationState,
        containers: Sequence[str],
    ) -> bool:
        """Whether starting ``backfill`` on ``placement`` would leave the head's user without
        the ``gpu_limit`` or ``max_containers`` room its planned placement needs."""
        if backfill.user != self.request.user:
            return False
        quota = self.request.quota
        in_use = state.user_gpu_equivalents(backfill.user) + placement.gpu_equivalents
        if quota.gpu_limit is not None and in_use + self.planned.gpu_equivalents > quota.gpu_limit:
            return True
        # The backfill and the head would both be new containers.
        return quota.max_containers is not None and len(containers) + 2 > quota.max_containers

    def after_backfill(self, placement: Placement, ends_at: datetime | None) -> _Head:
        """The head once a backfill took ``placement`` until ``ends_at`` (``None`` = unknown).

        Devices it took are no longer free, and the estimated start moves to its end when it
        took reserved ones.
        """
        reservation = self.reservation
        taken = set(placement.uuids)
        if not taken & set(reservation.planned_devices):
            return self
        estimate = reservation.estimated_start
        return replace(
            self,
            reservation=replace(
                reservation,
                devices=tuple(u for u in reservation.devices if u not in taken),
                estimated_start=None
                if estimate is None or ends_at is None
                else max(estimate, ends_at),
            ),
        )


def _make_head(
    request: PendingRequest,
    containers: Sequence[str],
    inventory: Inventory,
    state: AllocationState,
    now: datetime,
    ends: Mapping[str, datetime | None],
    previous: Reservation | None,
) -> _Head:
    """``request`` as the head: its planned placement, and the free devices of it reserved."""
    planned, estimate = _planned_placement(request, containers, inventory, state, now, ends)
    promise = estimate
    if previous is not None and previous.request_id == request.id:
        promise = _earliest(estimate, previous.promised_start)
    held = tuple(u for u in planned.uuids if state.holder_of(u) is None)
    return _Head(request, planned, Reservation(request.id, held, planned.uuids, estimate, promise))


def _quota_refusal(
    pending: PendingRequest,
    inventory: Inventory,
    state: AllocationState,
    containers: Sequence[str],
) -> QuotaExceeded | None:
    """The refusal if ``pending`` is over its user's quota now, else ``None``."""
    try:
        _allocate(pending, inventory, state, containers)
    except QuotaExceeded as refused:
        return refused
    except NoCapacity:
        pass
    return None


def _entry(ranked: Ranked, status: QueueStatus, reason: str) -> QueueEntry:
    return QueueEntry(ranked.request, ranked.parts, ranked.position, status, reason)


def _allocate(
    pending: PendingRequest,
    inventory: Inventory,
    state: AllocationState,
    containers: Sequence[str],
) -> Placement:
    """Where ``pending`` goes in ``inventory`` now, never on a device it is ``blocked`` from."""
    return allocate(
        pending.request, pending.user, pending.quota, pending.open_in(inventory), state, containers
    )


def _held_by_own(
    pending: PendingRequest, inventory: Inventory, state: AllocationState, containers: Sequence[str]
) -> str:
    """``" Its devices are held by your container thesis: …"`` when the request would be
    placed if the requester's own containers gave their devices back; ``""`` otherwise
    (a user is told what they can do themselves instead of waiting for others)."""
    own = [h for h in state.of_user(pending.user) if h.devices]
    if not own:
        return ""
    freed = state
    for holding in own:
        freed = freed.without(holding.container)
    try:
        placement = _allocate(pending, inventory, freed, containers)
    except (NoCapacity, QuotaExceeded):
        return ""
    needed = set(placement.uuids)
    blockers = sorted(h.name for h in own if needed & set(h.devices))
    if not blockers:
        return ""
    names = ", ".join(blockers)
    return (
        f" Its devices are held by your own container{'s' if len(blockers) > 1 else ''} "
        f"{names}: `container-retire {blockers[0]}` (or `container-remove`) frees them now."
    )


@dataclass
class _Pass:
    """One scheduling pass as it walks the ranked requests: who starts, who waits and why.

    ``current`` is ``state`` with the holdings of the requests started so far in the pass;
    ``without_reserved`` is the inventory with the head's reserved devices held back.
    """

    inventory: Inventory
    now: datetime
    policy: SchedulerConfig
    previous: Reservation | None
    ends: dict[str, datetime | None]
    current: AllocationState
    without_reserved: Inventory
    starts: list[Start] = field(default_factory=list)
    started_by_user: dict[str, list[str]] = field(default_factory=dict)
    entries: list[QueueEntry] = field(default_factory=list)
    head: _Head | None = None

    def consider(self, ranked: Ranked) -> None:
        """Start ``ranked`` now or record why it waits."""
        request = ranked.request
        containers = (*request.user_containers, *self.started_by_user.get(request.user, ()))
        if self.head is not None and not self.policy.backfill:
            self.entries.append(self._without_backfill(ranked, containers, self.head))
            return
        try:
            placement = _allocate(request, self.without_reserved, self.current, containers)
        except QuotaExceeded as refused:
            self.entries.append(_entry(ranked, "quota", refused.message))
            return
        except NoCapacity as refused:
            fitted = self._short_of_capacity(ranked, containers, refused)
            if isinstance(fitted, QueueEntry):
                self.entries.append(fitted)
                return
            placement = fitted
        self._place(ranked, containers, placement)

    def _without_backfill(
        self, ranked: Ranked, containers: Sequence[str], head: _Head
    ) -> QueueEntry:
        refused = _quota_refusal(ranked.request, self.inventory, self.current, containers)
        if refused is not None:
            return _entry(ranked, "quota", refused.message)
        return _entry(ranked, "behind_head", f"Waits behind {head.request.id} (backfill is off).")

    def _short_of_capacity(
        self, ranked: Ranked, containers: Sequence[str], refused: NoCapacity
    ) -> Placement | QueueEntry:
        """Where a request that does not fit beside the head's reserved devices may still go,
        or its entry: unsatisfiable, the new head, short of capacity, or reserved for the head."""
        request, inventory, current, now = ranked.request, self.inventory, self.current, self.now
        if not _satisfiable(request, inventory):
            reason = f"Cannot be placed even with every device free: {refused.message}"
            return _entry(ranked, "unsatisfiable", reason)
        if request.blocked and not _satisfiable(request, request.open_in(inventory)):
            reason = (
                "Waits for GPU reservations: it fits only on reserved devices that it could "
                "still hold when their reservation starts."
            )
            return _entry(ranked, "capacity", reason)
        head = self.head
        if head is None:
            head = self.head = _make_head(
                request, containers, inventory, current, now, self.ends, self.previous
            )
            held = head.reservation.devices
            self.without_reserved = replace(inventory, reserved=inventory.reserved | set(held))
            reason = (
                f"First in line for {request.request.describe()}: holds {len(held)} free "
                f"device(s), expected to start at {_when(head.reservation.estimated_start)}."
            ) + _held_by_own(request, inventory, current, containers)
            return _entry(ranked, "head", reason)
        # It does not fit beside the head's reserved devices: does it fit on them?
        try:
            placement = _allocate(request, inventory, current, containers)
        except NoCapacity as still_refused:
            own = _held_by_own(request, inventory, current, containers)
            return _entry(ranked, "capacity", still_refused.message + own)
        if not _may_use_reserved(request, now, head.reservation, self.policy):
            reason = (
                f"Fits only on devices reserved for {head.request.id}, which is "
                f"promised to start at {_when(head.reservation.promised_start)}; this "
                f"request is expected to hold them until {_when(_end_of(request, now))}."
            )
            return _entry(ranked, "reserved_for_head", reason)
        return placement

    def _place(self, ranked: Ranked, containers: Sequence[str], placement: Placement) -> None:
        """Start ``ranked`` on ``placement`` unless it would take quota the head needs."""
        request = ranked.request
        head = self.head
        if head is not None:
            if head.short_of_quota(request, placement, self.current, containers):
                reason = (
                    f"Would use the quota that {head.request.id}, first in line, needs "
                    f"({head.request.request.describe()})."
                )
                self.entries.append(_entry(ranked, "reserved_for_head", reason))
                return
            head = self.head = head.after_backfill(placement, _end_of(request, self.now))
        where = f"on {describe_devices(placement.devices)}" if placement.devices else "without GPU"
        if head is None:
            self.entries.append(_entry(ranked, "starting", f"Starts now {where}."))
        else:
            reason = f"Starts now {where}, ahead of {head.request.id}."
            self.entries.append(_entry(ranked, "backfilling", reason))
        self.starts.append(Start(request, placement))
        self.started_by_user.setdefault(request.user, []).append(request.id)
        self.ends[request.id] = _end_of(request, self.now)
        self.current = self.current.with_holding(placement.holding(request.id, request.user))


def plan(
    pending: Sequence[PendingRequest],
    inventory: Inventory,
    state: AllocationState,
    now: datetime,
    usage: UsageTotals,
    policy: SchedulerConfig,
    expected_ends: ExpectedEnds | None = None,
    previous: Reservation | None = None,
) -> Plan:
    """One scheduling pass over ``pending`` (the contract is in the module docstring).

    Args:
        pending: every waiting request (ids unique).
        inventory: the server's devices (admin-reserved ones are never handed out).
        state: who holds what now.
        now: the instant of the pass.
        usage: decayed usage at ``now`` (:func:`decayed_usage`).
        policy: weights and backfill settings.
        expected_ends: when each container of ``state`` is expected to free its devices.
        previous: the reservation returned by the previous pass, if any.

    Raises:
        ValueError: two pending requests share an id.
    """
    ids = [request.id for request in pending]
    if len(set(ids)) != len(ids):
        raise ValueError("pending requests must have unique ids")
    walk = _Pass(
        inventory=inventory,
        now=now,
        policy=policy,
        previous=previous,
        ends=dict(expected_ends or {}),
        current=state,
        without_reserved=inventory,
    )
    for ranked in order(pending, usage, now, policy):
        walk.consider(ranked)
    demand = sum(
        (least_gpu_equivalents(e.request.request, inventory) for e in walk.entries if not e.starts),
        Fraction(0),
    )
    reservation = None if walk.head is None else walk.head.reservation
    return Plan(tuple(walk.starts), reservation, tuple(walk.entries), demand)


# --------------------------------------------------------------------------------------------
# The line as users see it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinePlace:
    """Where one request stands in the line of one plan (``ds01 queue``).

    Attributes:
        entry: the request's entry in that plan (its status, reason and score).
        position: its 1-based place among the plan's requests that still wait and do not
            start in that pass; ``None`` for one that starts (it has left the line).
        queue_length: how many requests that line holds.
    """

    entry: QueueEntry
    position: int | None
    queue_length: int


def line_places(result: Plan, still_waiting: Collection[str]) -> dict[str, LinePlace]:
    """Each request of ``result`` that is still waiting, with its place in the line.

    Position, length and status all come from the one plan ``result``, so they agree with
    each other: the line is the plan's order, less the requests that start in that pass and
    those that are no longer waiting (``still_waiting``: the ids waiting now, started or
    cancelled ones being absent). So no request ahead of the ``head`` waits for devices:
    only requests held by their quota, or that no device here can satisfy, may stand ahead
    of it, and the head is first in line when there are none. A request that joined after
    the plan has no place in it (absent from the answer).
    """
    line = [e for e in result.ranked if e.request.id in still_waiting and not e.starts]
    places = {
        e.request.id: LinePlace(e, position, len(line)) for position, e in enumerate(line, 1)
    }
    for e in result.ranked:
        if e.starts and e.request.id in still_waiting:
            places[e.request.id] = LinePlace(e, None, len(line))
    return places


__all__ = [
    "DEVICE_WAIT_STATUSES",
    "STARTING_STATUSES",
    "ExpectedEnds",
    "LinePlace",
    "PendingRequest",
    "Plan",
    "QueueEntry",
    "QueueStatus",
    "Ranked",
    "Reservation",
    "ScoreParts",
    "Start",
    "UsageInterval",
    "UsageTotals",
    "decayed_usage",
    "line_places",
    "order",
    "plan",
    "score",
]
