"""Slurm's pending queue as metrics, for the login node's exporter
(``ds01 admin slurm exporter``). Pure.

In cluster mode ds01's own GPU queue stays empty: Slurm queues the containers' jobs. The
login node's exporter reads them with one ``squeue`` per scrape (every user's jobs that Slurm
lets the caller see, read by ``ds01.core.slurm_squeue.read_jobs``: a job's name or comment,
which its owner writes, cannot add a job or shift a field) and exports the queue under
ds01's queue metric names (``ds01.metrics.slurm_queue``):

- ``ds01_queue_length{user, reason}``: the containers' jobs pending, per user and Slurm's
  reason (``state_reason``: ``Resources``, ``Priority``, ``QOSMaxGRESPerUser``…);
- ``ds01_queue_oldest_wait_seconds``: how long the oldest of them has waited since its
  submission (0 when none waits).

Only containers' jobs count (comment ``JOB_COMMENT``, as ``ds01 queue`` lists them); other
jobs are Slurm's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ds01.core.slurm_squeue import JOB_COMMENT, PENDING, SqueueAnswer, read_jobs


@dataclass(frozen=True)
class PendingJob:
    """A container's job that waits: who, why, and since when (seconds since the epoch)."""

    job: int
    user: str
    reason: str
    submitted: float


@dataclass(frozen=True)
class QueueMetrics:
    """The queue's samples: (user, reason) → jobs, and the oldest wait in seconds."""

    lengths: dict[tuple[str, str], int]
    oldest_wait_seconds: float


def parse_pending(answer: SqueueAnswer) -> list[PendingJob]:
    """squeue's ``answer``: the containers' jobs that pend (with a submit time), in
    squeue's order; other jobs are left out.

    Raises:
        SlurmError: as ``ds01.core.slurm_squeue.read_jobs``.
    """
    return [
        PendingJob(job.job_id, job.user_name, job.state_reason, float(job.submit_time))
        for job in read_jobs(answer)
        if job.job_state == PENDING and job.comment == JOB_COMMENT and job.submit_time > 0
    ]


def queue_metrics(pending: Sequence[PendingJob], now: float) -> QueueMetrics:
    """The samples of ``pending`` at ``now`` (seconds since the epoch); a submit time in
    the future (clocks apart) counts as no wait."""
    lengths: dict[tuple[str, str], int] = {}
    for job in pending:
        key = (job.user, job.reason)
        lengths[key] = lengths.get(key, 0) + 1
    oldest = min((job.submitted for job in pending), default=None)
    return QueueMetrics(
        lengths=dict(sorted(lengths.items())),
        oldest_wait_seconds=0.0 if oldest is None else max(0.0, now - oldest),
    )


__all__ = [
    "PendingJob",
    "QueueMetrics",
    "parse_pending",
    "queue_metrics",
]
