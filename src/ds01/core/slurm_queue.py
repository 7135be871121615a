"""Slurm's pending queue as metrics, for the login node's exporter
(``ds01 admin slurm exporter``). Pure.

In cluster mode ds01's own GPU queue stays empty: Slurm queues the containers' jobs. The
login node's exporter reads them with one ``squeue`` per scrape (``PENDING_FORMAT``, every
user's pending jobs that Slurm lets the caller see, times as seconds since the epoch) and
exports the queue under ds01's queue metric names (``ds01.metrics.slurm_queue``):

- ``ds01_queue_length{user, reason}``: the containers' jobs pending, per user and Slurm's
  reason (``squeue %r``: ``Resources``, ``Priority``, ``QOSMaxGRESPerUser``…);
- ``ds01_queue_oldest_wait_seconds``: how long the oldest of them has waited since its
  submission (0 when none waits).

Only containers' jobs count (comment ``JOB_COMMENT``, as ``ds01 queue`` lists them); other
jobs are Slurm's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ds01.core.slurm_job import JOB_COMMENT
from ds01.core.slurm_view import FIELD_SEPARATOR

#: ``squeue --states=PENDING --format``: the job, its user, Slurm's reason, its submit time
#: (``%V``: seconds since the epoch with ``SLURM_TIME_FORMAT=%s``) and its comment (last: a
#: comment may hold the separator).
PENDING_FIELDS = ("%i", "%u", "%r", "%V", "%k")
PENDING_FORMAT = FIELD_SEPARATOR.join(PENDING_FIELDS)
#: ``SLURM_TIME_FORMAT`` for that ``squeue``.
PENDING_TIME_FORMAT = "%s"


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


def parse_pending(text: str) -> list[PendingJob]:
    """``squeue --noheader --states=PENDING --format PENDING_FORMAT``'s answer (with
    ``SLURM_TIME_FORMAT=PENDING_TIME_FORMAT``): the containers' jobs, in its order; other
    jobs, lines that are no job and jobs with no submit time are left out."""
    found: list[PendingJob] = []
    for line in text.splitlines():
        cells = line.strip().split(FIELD_SEPARATOR, len(PENDING_FIELDS) - 1)
        if len(cells) != len(PENDING_FIELDS) or not cells[0].isdigit():
            continue
        job, user, reason, submitted, comment = cells
        if comment != JOB_COMMENT or not submitted.isdigit():
            continue
        found.append(PendingJob(int(job), user, reason, float(submitted)))
    return found


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
    "PENDING_FORMAT",
    "PENDING_TIME_FORMAT",
    "PendingJob",
    "QueueMetrics",
    "parse_pending",
    "queue_metrics",
]
