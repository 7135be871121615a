"""Replaying a trace through the real queue on a virtual clock (discrete events).

Each job of the trace is submitted at its time, waits in the queue until
:func:`ds01.core.scheduler.plan` starts it, computes, idles, is stopped and finally releases
its devices. Only three kinds of event change what the scheduler sees, and a pass of
:func:`plan` runs after each instant at which any happened (when requests are waiting):

- *submit*: the job joins the queue;
- *stop*: its idle tail is over (its owner stops it, or the lifecycle does at the user's
  ``idle_timeout_hours`` or ``max_runtime_hours``); its devices stay held for the user's
  ``gpu_hold_after_stop_minutes``;
- *release*: the hold is over; its devices are free.

The end of the busy part changes nothing that the daemon could see, so it is no event.

The scheduler is told only what the daemon would know: a running container is expected to
free its devices ``max_runtime_hours`` plus the hold after it started (unknown without a
runtime limit), a stopped one exactly when its hold ends, and a waiting job is expected to
hold devices for ``max_runtime_hours`` plus the hold. Limits come from
``resource-limits.yaml`` with the job's group as the user's only group. A hold of ``null``
(GPUs kept until the container is removed) counts as no hold: the trace cannot say when the
user would remove it.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from fractions import Fraction

from ds01.config.limits import ResourceLimitsConfig
from ds01.config.resolve import resolve_limits
from ds01.config.scheduler import SchedulerConfig
from ds01.core.allocation import (
    AllocationState,
    GpuQuota,
    Holding,
    free_devices,
    least_gpu_equivalents,
)
from ds01.core.scheduler import (
    PendingRequest,
    Reservation,
    UsageInterval,
    decayed_usage,
    plan,
)
from ds01.gpu.device import Inventory
from ds01.sim.trace import TraceJob

#: The virtual clock's hour 0 (a Monday, 00:00 UTC); only relative times matter.
EPOCH = datetime(2026, 1, 5, tzinfo=timezone.utc)
MINUTES_PER_HOUR = 60.0


def at(hours: float) -> datetime:
    """The virtual instant ``hours`` after :data:`EPOCH`."""
    return EPOCH + timedelta(hours=hours)


@dataclass(frozen=True)
class UserSetup:
    """What the simulation needs of one user's resolved limits.

    Attributes:
        quota: GPU limits.
        priority: queue priority (0..1000).
        max_runtime_hours: hours after which a container is stopped; ``None`` = never.
        idle_timeout_hours: idle hours after which a container is stopped; ``None`` = never.
        hold_hours: hours a stopped container keeps its devices (0 for ``null``).
    """

    quota: GpuQuota
    priority: int
    max_runtime_hours: float | None
    idle_timeout_hours: float | None
    hold_hours: float

    def busy_hours(self, job: TraceJob) -> float:
        """Hours ``job`` computes: its duration, cut at ``max_runtime_hours``."""
        if self.max_runtime_hours is None:
            return job.duration_hours
        return min(job.duration_hours, self.max_runtime_hours)

    def idle_tail_hours(self, job: TraceJob) -> float:
        """Hours ``job`` stays allocated and idle before it is stopped.

        Its idle tail, cut at ``idle_timeout_hours`` and at what ``max_runtime_hours`` leaves.
        """
        tail = job.idle_tail_hours
        if self.idle_timeout_hours is not None:
            tail = min(tail, self.idle_timeout_hours)
        if self.max_runtime_hours is not None:
            tail = min(tail, self.max_runtime_hours - self.busy_hours(job))
        return tail

    @property
    def expected_hold_hours(self) -> float | None:
        """Hours a container may hold devices from its start, as the daemon can bound it."""
        if self.max_runtime_hours is None:
            return None
        return self.max_runtime_hours + self.hold_hours


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
        unix_group = config.unix_group_of(group) if group in config.groups else group
        limits = resolve_limits(config, job.user, [unix_group])
        hold = limits.gpu_hold_after_stop_minutes
        setups[job.user] = UserSetup(
            quota=limits.gpu_quota(),
            priority=limits.priority,
            max_runtime_hours=limits.max_runtime_hours,
            idle_timeout_hours=limits.idle_timeout_hours,
            hold_hours=0.0 if hold is None else hold / MINUTES_PER_HOUR,
        )
    return setups


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
        idle_hours: hours it held devices without computing: the idle tail and the hold
            after the stop (0 if it never started).
    """

    id: str
    job: TraceJob
    least_gpu_equivalents: Fraction
    busy_hours: float
    start_hours: float | None = None
    gpu_equivalents: Fraction = Fraction(0)
    idle_hours: float = 0.0

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
        return self.start_hours + self.busy_hours + self.idle_hours


@dataclass(frozen=True)
class SimulationResult:
    """One replay of a trace under one policy.

    Attributes:
        policy: the policy's name (``fair``, ``fcfs``).
        outcomes: one per job, in trace order.
        capacity_gpu_equivalents: what the allocatable devices count for together.
        end_hours: the last release, or the last submission if that is later.
    """

    policy: str
    outcomes: tuple[JobOutcome, ...]
    capacity_gpu_equivalents: Fraction
    end_hours: float


class _Event(IntEnum):
    """Kinds of event; at the same instant, releases go first so submissions find the
    freed devices."""

    RELEASE = 0
    STOP = 1
    SUBMIT = 2


def job_id(job: TraceJob) -> str:
    """The queue id of ``job``: ``job-<line>``, unique within a trace."""
    return f"job-{job.line}"


def simulate(
    jobs: Sequence[TraceJob],
    inventory: Inventory,
    config: ResourceLimitsConfig,
    policy: SchedulerConfig,
    policy_name: str,
) -> SimulationResult:
    """Replay ``jobs`` on ``inventory`` under ``policy`` (see the module docstring).

    Deterministic: the same inputs give the same result.
    """
    setups = user_setups(jobs, config)
    outcomes = {
        job_id(job): JobOutcome(
            id=job_id(job),
            job=job,
            least_gpu_equivalents=least_gpu_equivalents(job.request, inventory),
            busy_hours=setups[job.user].busy_hours(job),
        )
        for job in jobs
    }
    by_id = {job_id(job): job for job in jobs}
    events: list[tuple[float, _Event, str]] = [
        (job.submit_hours, _Event.SUBMIT, job_id(job)) for job in jobs
    ]
    heapq.heapify(events)
    pending: dict[str, PendingRequest] = {}
    state = AllocationState()
    expected_ends: dict[str, datetime | None] = {}
    usage: dict[str, UsageInterval] = {}
    reservation: Reservation | None = None
    last_event = 0.0

    while events:
        hours = events[0][0]
        now = at(hours)
        while events and events[0][0] == hours:
            _, kind, key = heapq.heappop(events)
            job = by_id[key]
            setup = setups[job.user]
            if kind is _Event.SUBMIT:
                pending[key] = PendingRequest(
                    id=key,
                    user=job.user,
                    group=job.group,
                    request=job.request,
                    quota=setup.quota,
                    priority=setup.priority,
                    submitted_at=now,
                    expected_runtime_hours=setup.expected_hold_hours,
                )
            elif kind is _Event.STOP:
                expected_ends[key] = now + timedelta(hours=setup.hold_hours)
                heapq.heappush(events, (hours + setup.hold_hours, _Event.RELEASE, key))
            else:
                state = state.without(key)
                del expected_ends[key]
                usage[key] = replace(usage[key], end=now)
        last_event = hours
        if not pending:
            continue
        containers: dict[str, tuple[str, ...]] = {}
        for holding in state.holdings:
            containers[holding.user] = (*containers.get(holding.user, ()), holding.container)
        waiting = [
            replace(request, user_containers=containers.get(request.user, ()))
            for request in pending.values()
        ]
        totals = decayed_usage(usage.values(), now, policy.usage_half_life_hours)
        decision = plan(waiting, inventory, state, now, totals, policy, expected_ends, reservation)
        reservation = decision.reservation
        for request, placement in decision.starts:
            key = request.id
            job, setup = by_id[key], setups[request.user]
            del pending[key]
            busy, tail = setup.busy_hours(job), setup.idle_tail_hours(job)
            outcomes[key] = replace(
                outcomes[key],
                start_hours=hours,
                gpu_equivalents=placement.gpu_equivalents,
                idle_hours=tail + setup.hold_hours,
            )
            state = state.with_holding(
                Holding(
                    container=key,
                    name=key,
                    user=request.user,
                    devices=placement.uuids,
                    gpu_equivalents=placement.gpu_equivalents,
                )
            )
            hold = setup.expected_hold_hours
            expected_ends[key] = None if hold is None else now + timedelta(hours=hold)
            usage[key] = UsageInterval(request.user, request.group, placement.gpu_equivalents, now)
            heapq.heappush(events, (hours + busy + tail, _Event.STOP, key))

    capacity = sum(
        (d.gpu_equivalents for d in free_devices(inventory, AllocationState())), Fraction(0)
    )
    return SimulationResult(
        policy=policy_name,
        outcomes=tuple(outcomes[job_id(job)] for job in jobs),
        capacity_gpu_equivalents=capacity,
        end_hours=last_event,
    )


__all__ = [
    "EPOCH",
    "JobOutcome",
    "SimulationResult",
    "UserSetup",
    "at",
    "job_id",
    "simulate",
    "user_setups",
]
