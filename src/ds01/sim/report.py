"""Metrics of a simulated run, per group and overall, as a table or JSON.

Definitions (hours are trace hours; a job's *size* ``G`` is the least GPU-equivalents its
request counts for; a job's *busy time* ``b`` is how long it computes):

- **wait**: start minus submission, over the jobs that started; mean and 95th percentile
  (nearest rank). Jobs that never started are counted in ``not_started`` instead.
- **span**: from the first submission to the last release.
- **utilisation**: busy GPU-equivalent-hours (placement's GPU-equivalents times busy time,
  summed) over capacity GPU-equivalent-hours (the allocatable devices times the span).
  A group's utilisation is its part of that whole.
- **idle GPU-hours**: GPU-equivalent-hours allocated but not computing: idle tails (as the
  runtime limit and idle reclaim cut them) and holds after stop.
- **reclaimed GPU-hours**: GPU-equivalent-hours of idle tails that idle reclaim cut off
  (what the owners would otherwise have held idle until they stopped their containers).
- **service share** of a user: ``sum(G * b) / sum(G * (w + b))`` over their jobs, ``w``
  being the wait, waits in the queue again after a reclaim included (for a job that never
  started: until the end of the span, with nothing served). 1 when none of their jobs
  waited; 0.5 when their jobs waited, in total, as long as they computed. A user whose
  jobs all have no busy time and no wait has share 1.
- **Jain's fairness index** over users' service shares ``x``: ``(sum x)^2 / (n * sum x^2)``;
  1 when every user got the same share, down to ``1/n`` when one user got everything.
- **borrowed jobs**: jobs placed above their user's ``gpu_limit``; **re-queued GPU-hours**:
  the GPU-equivalent-hours of work that jobs stopped with work left (reclaimed) had left
  and computed after waiting in the queue again; **lost GPU-hours**: work never computed
  (stopped and never started again).

:func:`compare_borrowing` sets a replay with borrowing against the same replay without:
utilisation of both, and the median wait of the *within-quota* jobs (those that did not
borrow in the replay with borrowing) in both, the same jobs on both sides.

:func:`compare_reservations` sets a replay with GPU reservations against the same replay
without: how many were admitted and refused, the **kept rate** (the share of the admitted
reservations that began within the replay whose devices were free of others' jobs at their
start, before the drain), and the **displaced work**: jobs the drains stopped (and the
GPU-hours of work they had left, queued again), holders' jobs stopped at a reservation's
end because without it they were over quota (their work queued again too), and jobs
*delayed*: started later than
without reservations (by more than a minute), with the hours of delay summed; the mean
wait and utilisation of both replays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ds01.sim.engine import JobOutcome, SimulationResult

PERCENTILE = 95
ALL_GROUPS = "all"


def nearest_rank_percentile(values: Sequence[float], percent: float) -> float | None:
    """The ``percent``-th percentile by nearest rank; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index of ``values`` (>= 0); ``None`` when there are none, 1 when all
    are 0."""
    if not values:
        return None
    squares = sum(v * v for v in values)
    if squares == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * squares)


def service_share(outcomes: Iterable[JobOutcome], end_hours: float) -> float:
    """One user's service share (module docstring); ``end_hours`` ends the span."""
    served = demanded = 0.0
    for outcome in outcomes:
        size = float(outcome.least_gpu_equivalents)
        wait = outcome.wait_hours
        if wait is None:
            demanded += size * (max(0.0, end_hours - outcome.job.submit_hours) + outcome.busy_hours)
            continue
        served += size * outcome.busy_hours
        demanded += size * (wait + outcome.requeue_wait_hours + outcome.busy_hours)
    return served / demanded if demanded > 0 else 1.0


@dataclass(frozen=True)
class Metrics:
    """The metrics of one group of jobs (units in the names; see the module docstring)."""

    jobs: int
    not_started: int
    mean_wait_hours: float | None
    p95_wait_hours: float | None
    busy_gpu_hours: float
    idle_gpu_hours: float
    reclaimed_gpu_hours: float
    utilisation: float
    jain_index: float | None
    borrowed_jobs: int = 0
    lost_gpu_hours: float = 0.0
    requeued_gpu_hours: float = 0.0


def metrics(outcomes: Sequence[JobOutcome], capacity_gpu_hours: float, end_hours: float) -> Metrics:
    """Metrics of ``outcomes``, against ``capacity_gpu_hours`` (capacity times span)."""
    waits = [o.wait_hours for o in outcomes if o.wait_hours is not None]
    busy = sum(float(o.gpu_equivalents) * o.busy_hours for o in outcomes if o.started)
    by_user: dict[str, list[JobOutcome]] = {}
    for outcome in outcomes:
        by_user.setdefault(outcome.job.user, []).append(outcome)
    shares = [service_share(jobs, end_hours) for jobs in by_user.values()]
    return Metrics(
        jobs=len(outcomes),
        not_started=len(outcomes) - len(waits),
        mean_wait_hours=sum(waits) / len(waits) if waits else None,
        p95_wait_hours=nearest_rank_percentile(waits, PERCENTILE),
        busy_gpu_hours=busy,
        idle_gpu_hours=sum(float(o.gpu_equivalents) * o.idle_hours for o in outcomes),
        reclaimed_gpu_hours=sum(float(o.gpu_equivalents) * o.reclaimed_hours for o in outcomes),
        utilisation=busy / capacity_gpu_hours if capacity_gpu_hours > 0 else 0.0,
        jain_index=jain_index(shares),
        borrowed_jobs=sum(1 for o in outcomes if o.borrowed),
        lost_gpu_hours=sum(float(o.gpu_equivalents) * o.lost_hours for o in outcomes),
        requeued_gpu_hours=sum(float(o.gpu_equivalents) * o.requeued_hours for o in outcomes),
    )


@dataclass(frozen=True)
class PolicyReport:
    """One run (a queue policy and a reclaim policy), summarised.

    Attributes:
        policy: the queue policy's name.
        span_hours: first submission to last release.
        capacity_gpu_equivalents: allocatable devices together.
        groups: metrics per trace group (sorted by name), then ``"all"``.
        reclaim: the reclaim policy's name.
        mig: ``layout`` (fixed MIG instances) or ``on-demand``.
    """

    policy: str
    span_hours: float
    capacity_gpu_equivalents: float
    groups: Mapping[str, Metrics]
    reclaim: str = "ds01"
    mig: str = "layout"
    borrowing: bool = False
    reservations: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "reclaim": self.reclaim,
            "mig": self.mig,
            "borrowing": self.borrowing,
            "reservations": self.reservations,
            "span_hours": self.span_hours,
            "capacity_gpu_equivalents": self.capacity_gpu_equivalents,
            "groups": {name: asdict(m) for name, m in self.groups.items()},
        }


def summarize(result: SimulationResult) -> PolicyReport:
    """Metrics per group and overall for one run."""
    outcomes = result.outcomes
    first_submit = min((o.job.submit_hours for o in outcomes), default=0.0)
    span = max(0.0, result.end_hours - first_submit)
    capacity = float(result.capacity_gpu_equivalents)
    by_group: dict[str, list[JobOutcome]] = {}
    for outcome in outcomes:
        by_group.setdefault(outcome.job.group, []).append(outcome)
    groups = {
        name: metrics(by_group[name], capacity * span, result.end_hours)
        for name in sorted(by_group)
    }
    groups[ALL_GROUPS] = metrics(outcomes, capacity * span, result.end_hours)
    return PolicyReport(
        result.policy, span, capacity, groups, result.reclaim, result.mig, result.borrowing,
        result.reservations is not None,
    )  # fmt: skip


def _median(values: Sequence[float]) -> float | None:
    return nearest_rank_percentile(values, 50)


@dataclass(frozen=True)
class BorrowingComparison:
    """A replay with borrowing against the same replay without (module docstring).

    Attributes:
        utilisation_without, utilisation_with: GPU UTIL of all jobs.
        within_quota_median_wait_without, within_quota_median_wait_with: median wait (hours,
            nearest rank) of the jobs that did not borrow, over those that started in both.
        borrowed_jobs: jobs that borrowed; reclaimed_jobs: those of them reclaimed.
        requeued_gpu_hours: the work the reclaimed ones had left, queued again.
        lost_gpu_hours: work of the reclaimed ones never computed.
        borrowable_gpu_hours: in the replay without borrowing, the GPU-hours free while
            work over quota waited, on devices no request waiting within quota could use:
            the most borrowing could have used.
        week_utilisation_without, week_utilisation_with: busy GPU-hours inside the trace's
            own period over the capacity there (``SimulationResult.window_utilisation``):
            unlike GPU UTIL it does not depend on when the replay ends, only on how much
            work is done while the trace's work arrives.
    """

    utilisation_without: float
    utilisation_with: float
    within_quota_median_wait_without: float | None
    within_quota_median_wait_with: float | None
    borrowed_jobs: int
    reclaimed_jobs: int
    requeued_gpu_hours: float
    lost_gpu_hours: float
    borrowable_gpu_hours: float = 0.0
    week_utilisation_without: float = 0.0
    week_utilisation_with: float = 0.0

    @property
    def utilisation_ratio(self) -> float | None:
        """With over without; ``None`` when nothing was busy without."""
        if self.utilisation_without <= 0:
            return None
        return self.utilisation_with / self.utilisation_without

    @property
    def week_utilisation_ratio(self) -> float | None:
        """The same for the utilisation within the trace's own period."""
        if self.week_utilisation_without <= 0:
            return None
        return self.week_utilisation_with / self.week_utilisation_without


def compare_borrowing(without: SimulationResult, with_: SimulationResult) -> BorrowingComparison:
    """``with_`` (borrowing) against ``without`` (module docstring); both replay one trace."""
    within = [
        (plain, borrowing)
        for plain, borrowing in zip(without.outcomes, with_.outcomes, strict=True)
        if not borrowing.borrowed and plain.started and borrowing.started
    ]
    reclaimed = [o for o in with_.outcomes if o.borrowed and o.requeued_hours + o.lost_hours > 0]
    return BorrowingComparison(
        utilisation_without=summarize(without).groups[ALL_GROUPS].utilisation,
        utilisation_with=summarize(with_).groups[ALL_GROUPS].utilisation,
        within_quota_median_wait_without=_median([p.wait_hours or 0.0 for p, _ in within]),
        within_quota_median_wait_with=_median([b.wait_hours or 0.0 for _, b in within]),
        borrowed_jobs=sum(1 for o in with_.outcomes if o.borrowed),
        reclaimed_jobs=len(reclaimed),
        requeued_gpu_hours=sum(float(o.gpu_equivalents) * o.requeued_hours for o in reclaimed),
        lost_gpu_hours=sum(float(o.gpu_equivalents) * o.lost_hours for o in reclaimed),
        borrowable_gpu_hours=without.borrowable_gpu_hours,
        week_utilisation_without=without.window_utilisation,
        week_utilisation_with=with_.window_utilisation,
    )


#: A start later than this (hours) without reservations than with counts as delayed.
DELAY_TOLERANCE_HOURS = 1 / 60


@dataclass(frozen=True)
class ReservationComparison:
    """A replay with GPU reservations against the same replay without (module docstring).

    Attributes:
        admitted, refused: reservations admitted and refused.
        started: admitted reservations whose start the replay reached.
        kept: of those, the ones whose devices were free at their start.
        stopped_jobs: jobs a drain stopped; stopped_gpu_hours: the work they had left.
        delayed_jobs: jobs started later than without reservations; delay_hours: by how
            much, summed.
        ended_jobs: holders' jobs stopped at a reservation's end, over quota without it.
        mean_wait_without, mean_wait_with: mean wait of all jobs that started.
        utilisation_without, utilisation_with: GPU UTIL of all jobs.
    """

    admitted: int
    refused: int
    started: int
    kept: int
    stopped_jobs: int
    stopped_gpu_hours: float
    delayed_jobs: int
    delay_hours: float
    mean_wait_without: float | None
    mean_wait_with: float | None
    utilisation_without: float
    utilisation_with: float
    ended_jobs: int = 0

    @property
    def kept_rate(self) -> float | None:
        """kept / started; ``None`` when no reservation started."""
        return self.kept / self.started if self.started else None


def compare_reservations(
    without: SimulationResult, with_: SimulationResult
) -> ReservationComparison:
    """``with_`` (reservations) against ``without`` (module docstring); both replay one
    trace."""
    asked = with_.reservations or ()
    started = [r for r in asked if r.kept is not None]
    pairs = [
        (plain, booked)
        for plain, booked in zip(without.outcomes, with_.outcomes, strict=True)
        if plain.start_hours is not None and booked.start_hours is not None
    ]
    delays = [
        b.start_hours - p.start_hours
        for p, b in pairs
        if b.start_hours is not None
        and p.start_hours is not None
        and b.start_hours - p.start_hours > DELAY_TOLERANCE_HOURS
    ]
    plain, booked = summarize(without).groups[ALL_GROUPS], summarize(with_).groups[ALL_GROUPS]
    stopped = [o for o in with_.outcomes if o.displaced]
    return ReservationComparison(
        admitted=sum(1 for r in asked if r.reservation is not None),
        refused=sum(1 for r in asked if r.reservation is None),
        started=len(started),
        kept=sum(1 for r in started if r.kept),
        stopped_jobs=len(stopped),
        stopped_gpu_hours=sum(float(o.gpu_equivalents) * o.displaced_hours for o in stopped),
        delayed_jobs=len(delays),
        delay_hours=sum(delays),
        mean_wait_without=plain.mean_wait_hours,
        mean_wait_with=booked.mean_wait_hours,
        utilisation_without=plain.utilisation,
        utilisation_with=booked.utilisation,
        ended_jobs=sum(1 for o in with_.outcomes if o.overstayed),
    )


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_rows(reports: Sequence[PolicyReport]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the comparison table, one row per run and group."""
    headers = [
        "POLICY",
        "RECLAIM",
        "MIG",
        "GROUP",
        "JOBS",
        "NOT STARTED",
        "MEAN WAIT h",
        f"P{PERCENTILE} WAIT h",
        "GPU UTIL",
        "IDLE GPU-h",
        "RECLAIMED GPU-h",
        "JAIN",
    ]
    borrowing = any(report.borrowing for report in reports)
    reserving = any(report.reservations for report in reports)
    if borrowing:
        headers[3:3] = ["BORROW", "BORROWED"]
    if reserving:
        headers[3:3] = ["RESERVATIONS"]
    rows = [
        [
            report.policy,
            report.reclaim,
            report.mig,
            *(["on" if report.reservations else "off"] if reserving else []),
            *(["on" if report.borrowing else "off", str(m.borrowed_jobs)] if borrowing else []),
            name,
            str(m.jobs),
            str(m.not_started),
            _hours(m.mean_wait_hours),
            _hours(m.p95_wait_hours),
            f"{m.utilisation:.1%}",
            f"{m.idle_gpu_hours:.1f}",
            f"{m.reclaimed_gpu_hours:.1f}",
            "-" if m.jain_index is None else f"{m.jain_index:.3f}",
        ]
        for report in reports
        for name, m in report.groups.items()
    ]
    return headers, rows


__all__ = [
    "ALL_GROUPS",
    "BorrowingComparison",
    "Metrics",
    "PolicyReport",
    "ReservationComparison",
    "compare_borrowing",
    "compare_reservations",
    "jain_index",
    "metrics",
    "nearest_rank_percentile",
    "service_share",
    "summarize",
    "table_rows",
]
