"""``ds01 admin report`` on a Slurm cluster's login node (``DS01_CLUSTER=slurm``). Pure.

The report covers every node, from Slurm's own data (read as the caller, by
``ds01.runtime.slurm``), never from a ds01d:

- **now**, from ``scontrol show node -d`` and ``squeue`` (``ds01.core.slurm_view``): each
  node's GPUs, held and free, with the containers that hold them; each user's containers,
  running and pending; the pending ones in Slurm's order with its reason;
- **over the window** ``[start, end)``, from Slurm's accounting (``sacct --allocations``):
  each user's jobs that ran in it and their GPU-hours, a job's GPUs (``AllocTRES``'
  ``gres/gpu``) times the part of its run (``Start`` to ``End``, or to ``now`` while it
  runs) inside the window. Every job counts, container or not: a GPU a job held was used
  (``sacct`` keeps no comment unless ``AccountingStoreFlags=job_comment``);
- **the ends in the window**, from the same records (``END_COLUMNS``): a job whose
  ``AdminComment`` the node's ds01d wrote (``ds01.core.slurm_job.job_note``) when the kernel
  killed in its container for memory (an OOM kill) or before it stopped the container for a
  rule (an idle, runtime or other stop); and a job Slurm ended ``OUT_OF_MEMORY`` (an OOM in
  one of its steps, which Slurm sees; not in the container, whose cgroup is no step's).

What the login node cannot know is said in the report's notes (``LOGIN_NODE_NOTES``):
energy, GPU utilisation and the devices each container holds are measured by each node's
ds01d and are in Prometheus, not in Slurm's accounting.

The timestamps are read as ``sacct`` writes them with ``SLURM_TIME_FORMAT=%s``: seconds
since the epoch, ``Unknown`` (or ``None``) where there is none (a job that never started;
the end of one that runs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ds01.core.slurm_job import JobNote, noted
from ds01.core.slurm_view import (
    ClusterContainer,
    NodeGpus,
    node_holders,
    pending,
    user_counts,
)

#: ``sacct --format``: one allocation per line, ``--parsable2`` (fields split by ``|``, never
#: escaped). Only fields Slurm sets, and ds01d's note: no ``JobName`` nor ``Comment``, which
#: a job's owner writes, ``|`` and newlines included, and which would shift the fields or
#: add a line of their own (a job of root's, OOM-killed, holding 8 GPUs). The
#: ``AdminComment`` last (only a Slurm administrator writes it, ds01d one line at a time):
#: the one field that may hold a ``|``.
SACCT_FIELDS = (
    "JobIDRaw", "User", "Account", "State", "Start", "End", "AllocTRES", "AdminComment",
)  # fmt: skip
SACCT_FORMAT = ",".join(SACCT_FIELDS)
SACCT_SEPARATOR = "|"
#: ``SLURM_TIME_FORMAT`` for ``sacct``: timestamps as seconds since the epoch (strftime's
#: ``%s``), so that no time zone is guessed.
SACCT_TIME_FORMAT = "%s"
#: Slurm's state of a job its memory limit killed in (22.05: a step's cgroup saw an OOM kill).
OUT_OF_MEMORY = "OUT_OF_MEMORY"
#: The counts of jobs' ends per user, in the report's column order, and the notes of ds01d
#: (``ds01.core.slurm_job.job_note``) each counts; ``oom_kills`` also counts the jobs Slurm
#: ended ``OUT_OF_MEMORY``.
END_COLUMNS: tuple[tuple[str, frozenset[JobNote]], ...] = (
    ("oom_kills", frozenset({"oom_kill"})),
    ("idle_stops", frozenset({"stop_idle"})),
    ("runtime_stops", frozenset({"stop_runtime"})),
    ("other_stops", frozenset({"stop_reservation", "stop_reclaim", "stop_disk"})),
)
#: What the report on a login node says it cannot show, and where it is.
LOGIN_NODE_NOTES = (
    "Not from the login node: energy and CO2, GPU utilisation, and which device each "
    "container holds. Each node's ds01d measures them and exports them to Prometheus "
    "(ds01_energy_kwh_total, ds01_device_utilization_percent, ds01_device_holder per "
    "ds01_node: the Grafana dashboard ds01 · Cluster); `ds01 admin report` on a node shows "
    "that node's.",
    "OOM kills, idle, runtime and other stops: jobs whose AdminComment the node's ds01d set "
    "(ds01:oom_kill, ds01:stop_idle, …) when the kernel killed in their container for "
    "memory or before it stopped the container, and jobs Slurm ended OUT_OF_MEMORY; counted "
    "by the job's end in the window, the last note of a job only.",
)

_TRES_GPU_RE = re.compile(r"(?:^|,)gres/gpu=(\d+)(?:,|$)")


@dataclass(frozen=True)
class AccountedJob:
    """One job (an allocation) as ``sacct`` records it."""

    job: int
    user: str
    account: str
    state: str  # Slurm's: COMPLETED, RUNNING, CANCELLED by 1001, PENDING…
    start: datetime | None  # None: it never started
    end: datetime | None  # None: it has not ended
    gpus: int
    note: JobNote | None = None  # what ds01d noted in its AdminComment

    @property
    def out_of_memory(self) -> bool:
        """Whether Slurm's memory limit killed in it (the job's ``--mem``)."""
        return self.state == OUT_OF_MEMORY

    def ended_in(self, lo: datetime, hi: datetime) -> bool:
        """Whether it ended inside ``[lo, hi)``."""
        return self.end is not None and lo <= self.end < hi

    def gpu_seconds(self, lo: datetime, hi: datetime, now: datetime) -> float:
        """Its GPUs times the seconds of its run inside ``[lo, hi)``, up to ``now``."""
        if self.start is None or self.gpus <= 0:
            return 0.0
        stop = min(self.end or now, now, hi)
        return self.gpus * max(0.0, (stop - max(self.start, lo)).total_seconds())

    def ran_in(self, lo: datetime, hi: datetime, now: datetime) -> bool:
        """Whether it ran at some moment of ``[lo, hi)`` (up to ``now``); a job cancelled as
        it started (``End`` = ``Start``) never ran."""
        if self.start is None or (self.end is not None and self.end <= self.start):
            return False
        return self.start < min(hi, now) and (self.end is None or self.end > lo)


def tres_gpus(text: str) -> int:
    """The GPUs of an ``AllocTRES`` text (``billing=1,cpu=1,gres/gpu=3,mem=128M,node=1``):
    its untyped ``gres/gpu`` (typed ones, ``gres/gpu:a100=2``, are part of it); 0 without."""
    found = _TRES_GPU_RE.search(text)
    return int(found.group(1)) if found else 0


def _epoch(text: str) -> datetime | None:
    text = text.strip()
    if not text.isdigit() or int(text) == 0:
        return None
    return datetime.fromtimestamp(int(text), tz=timezone.utc)


def parse_accounting(text: str) -> list[AccountedJob]:
    """``sacct --noheader --parsable2 --allocations --format SACCT_FORMAT`` with
    ``SLURM_TIME_FORMAT=SACCT_TIME_FORMAT``: its jobs, in its order; malformed lines (and
    job arrays' ``123_4`` ids, which ``JobIDRaw`` never writes) are left out. The last
    field, ``AdminComment``, keeps any ``|`` it holds."""
    jobs: list[AccountedJob] = []
    for line in text.splitlines():
        cells = line.strip().split(SACCT_SEPARATOR, len(SACCT_FIELDS) - 1)
        if len(cells) != len(SACCT_FIELDS) or not cells[0].isdigit():
            continue
        job, user, account, state, start, end, tres, comment = cells
        jobs.append(
            AccountedJob(
                job=int(job),
                user=user,
                account=account,
                state=state,
                start=_epoch(start),
                end=_epoch(end),
                gpus=tres_gpus(tres),
                note=noted(comment),
            )
        )
    return jobs


def end_column(job: AccountedJob) -> str | None:
    """The column of ``END_COLUMNS`` a job's end counts in, or ``None`` (an end of no
    interest: it completed, failed, was cancelled or timed out). ds01d's note wins over the
    state the stopped container left."""
    for column, notes in END_COLUMNS:
        if job.note in notes:
            return column
    return "oom_kills" if job.out_of_memory else None


@dataclass(frozen=True)
class UserUsage:
    """One user's row: containers now, jobs and GPU-hours over the window, and the ends of
    their jobs in it (``ends``: ``END_COLUMNS`` → count)."""

    user: str
    running: int
    pending: int
    gpus_held: int
    jobs: int
    gpu_hours: float
    ends: Mapping[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "user": self.user,
            "containers_running": self.running,
            "containers_pending": self.pending,
            "gpus_held": self.gpus_held,
            "jobs": self.jobs,
            "gpu_hours": self.gpu_hours,
            **{column: self.ends.get(column, 0) for column, _ in END_COLUMNS},
        }


def _usage(
    containers: Sequence[ClusterContainer],
    jobs: Sequence[AccountedJob],
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[UserUsage]:
    """Every user with a container now or a job in the window: the most GPU-hours first."""
    now_counts = {u.user: u for u in user_counts(containers)}
    seconds: dict[str, float] = {}
    ran: dict[str, int] = {}
    ends: dict[str, dict[str, int]] = {}
    for job in jobs:
        if job.ran_in(start, end, now):
            ran[job.user] = ran.get(job.user, 0) + 1
            seconds[job.user] = seconds.get(job.user, 0.0) + job.gpu_seconds(start, end, now)
        column = end_column(job) if job.ended_in(start, end) else None
        if column is not None:
            tally = ends.setdefault(job.user, {})
            tally[column] = tally.get(column, 0) + 1
    rows = []
    for user in sorted(set(now_counts) | set(ran) | set(ends)):
        counted = now_counts.get(user)
        rows.append(
            UserUsage(
                user=user,
                running=counted.running if counted else 0,
                pending=counted.pending if counted else 0,
                gpus_held=counted.gpus if counted else 0,
                jobs=ran.get(user, 0),
                gpu_hours=round(seconds.get(user, 0.0) / 3600, 4) + 0.0,
                ends=ends.get(user, {}),
            )
        )
    return sorted(rows, key=lambda r: (-r.gpu_hours, r.user))


def _total(nodes: Sequence[NodeGpus], users: Sequence[UserUsage]) -> dict[str, object]:
    gpus = sum(n.total for n in nodes)
    used = sum(n.used for n in nodes)
    return {
        "nodes": len(nodes),
        "gpus": gpus,
        "used": used,
        "free": sum(max(0, n.total - n.used) for n in nodes),
        "containers_running": sum(u.running for u in users),
        "containers_pending": sum(u.pending for u in users),
        "jobs": sum(u.jobs for u in users),
        "gpu_hours": round(sum(u.gpu_hours for u in users), 4) + 0.0,
        **{column: sum(u.ends.get(column, 0) for u in users) for column, _ in END_COLUMNS},
    }


def build_cluster_report(
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    nodes: Sequence[NodeGpus],
    containers: Sequence[ClusterContainer],
    jobs: Sequence[AccountedJob],
    notes: Sequence[str] = (),
) -> dict[str, object]:
    """The cluster's report (aware datetimes; see the module docstring), as JSON-ready
    data: ``{"cluster": "slurm", "start", "end", "generated_at", "nodes", "users",
    "pending", "total", "notes"}``. ``nodes``' rows are ``gpu-status``'s with
    ``holders`` (``[{"user", "name", "slurm_job", "gpus"}]``) and ``other_gpus``;
    ``pending``'s are ``ds01 queue``'s.

    Raises:
        ValueError: the window is empty or inverted.
    """
    if not start < end:
        raise ValueError(f"the report's start ({start}) must be before its end ({end})")
    users = _usage(containers, jobs, start, end, now)
    return {
        "cluster": "slurm",
        "start": start.isoformat(timespec="seconds"),
        "end": end.isoformat(timespec="seconds"),
        "generated_at": now.isoformat(timespec="seconds"),
        "nodes": [n.as_json() for n in node_holders(nodes, containers)],
        "users": [u.as_json() for u in users],
        "pending": [c.as_json() for c in pending(list(containers))],
        "total": _total(nodes, users),
        "notes": [*notes, *LOGIN_NODE_NOTES],
    }


__all__ = [
    "END_COLUMNS",
    "LOGIN_NODE_NOTES",
    "OUT_OF_MEMORY",
    "SACCT_FORMAT",
    "SACCT_TIME_FORMAT",
    "AccountedJob",
    "UserUsage",
    "build_cluster_report",
    "end_column",
    "parse_accounting",
    "tres_gpus",
]
