"""A cluster's containers as ``squeue --json`` lists them, for a login node's views. Pure.

A container is a Slurm job named after it and carrying the comment ``JOB_COMMENT``
(``ds01.core.slurm_job.sbatch_options``); ``squeue --json``, run as the user, lists every job
Slurm lets them see with its node, state and, while it waits, Slurm's reason, which
``REASONS`` says in ds01's words. ``parse_containers`` reads that answer.

JSON, not ``squeue --format``'s text: a job's name and comment are its owner's, and the text
prints them raw, so a ``|`` or a newline in them shifted the fields or added a line of its
own (another user's container, a pending job of root's). ``read_jobs`` checks each job's
fields that ds01 reads and refuses an answer where a container's job lacks one (another
job's odd record is left out). Slurm 22.05 ignores every filter with ``--json`` (``--me``,
``--name``, ``--states``): the callers' filters are applied here. The order is ds01's:
pending first, then by priority, highest first (squeue's own within a partition).

Light on purpose: ``container-list`` on a login node is budgeted against a bare ``squeue``
(at most 3 x), and a Python command's start-up is most of its time. So this module imports
``json`` alone (no ``dataclasses``: it loads ``inspect``, about 6 ms; no ``typing``);
``ClusterContainer`` is a plain class. ``ds01.core.slurm_view`` builds the other views (nodes,
holders, ``container-open``) on it.
"""

from __future__ import annotations

import json
import re

from ds01.model.text import plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

#: The comment of every container's job (``sbatch --comment``): how a login node tells a
#: container's job from other jobs.
JOB_COMMENT = "ds01-container"
#: Slurm's state of a job that waits.
PENDING = "PENDING"
#: States of a job that has ended (``scontrol``'s and ``squeue --json``'s names):
#: ``ds01 job run --wait`` stops there; the views leave them out, as ``squeue`` does unless
#: asked (``squeue --json`` lists them while slurmctld keeps them, ``MinJobAge``).
ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)

#: The fields of a job in ``squeue --json`` (Slurm 22.05, ``openapi/v0.0.38``) that ds01
#: reads (``SqueueJob``'s attributes), and their JSON types. ``tres_per_node``: the GRES it
#: asked for per node (``gres:gpu:3``); ``nodes``: where it runs (empty while it pends);
#: times in seconds since the epoch (0: none yet).
JOB_FIELDS = {
    "job_id": int,
    "name": str,
    "user_id": int,
    "user_name": str,
    "job_state": str,
    "state_reason": str,
    "nodes": str,
    "tres_per_node": str,
    "comment": str,
    "priority": int,
    "submit_time": int,
    "start_time": int,
}

#: Slurm's pending reasons (22.05, ``squeue %r``) in ds01's words (docs/cluster.md's table).
REASONS = {
    "Resources": "no node has the GPUs (or CPUs, memory) free now; it starts when a job ends",
    "Priority": "others are ahead (fair share and your group's priority)",
    "QOSMaxGRESPerUser": "your running containers already hold your gpu_limit",
    "QOSMaxJobsPerUserLimit": "you run max_containers containers already",
    "QOSMaxWallDurationPerJobLimit": "it asks for more time than max_runtime_hours",
    "Dependency": "it waits for another job",
    "BeginTime": "it starts later, at its begin time",
    "ReqNodeNotAvail": "the node it needs is down or reserved",
    "JobHeldUser": "held by you (scontrol release JOB)",
    "JobHeldAdmin": "held by an administrator",
}

_GRES_COUNT_RE = re.compile(r"gpu(?::[^:(,\s]+)?:(\d+)")


class ClusterContainer:
    """One container of the cluster: its job as ``squeue`` lists it. Not to be changed once
    made; equal when every field is."""

    __slots__ = ("elapsed", "gpus", "name", "node", "reason", "slurm_job", "state", "user")

    def __init__(
        self,
        *,
        name: str,
        user: str,
        slurm_job: int,
        state: str,  # Slurm's: RUNNING, PENDING, COMPLETING…
        node: str,  # "" while it pends
        reason: str,  # Slurm's, "None" while it runs
        gpus: int,  # devices asked for (each node it runs on)
        elapsed: str,  # squeue's %M: 0:00, 1:02:03, 1-02:03:04
    ) -> None:
        self.name = name
        self.user = user
        self.slurm_job = slurm_job
        self.state = state
        self.node = node
        self.reason = reason
        self.gpus = gpus
        self.elapsed = elapsed

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, field) for field in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClusterContainer):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{field}={getattr(self, field)!r}" for field in self.__slots__)
        return f"ClusterContainer({fields})"

    @property
    def status(self) -> str:
        """The state in ds01's words: ``running``, ``pending``, ``completing``…"""
        return self.state.lower()

    @property
    def reason_text(self) -> str:
        """Why it waits, in ds01's words; ``""`` when it does not wait."""
        if self.state != PENDING:
            return ""
        return explain_reason(self.reason)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "user": self.user,
            "status": self.status,
            "slurm_job": self.slurm_job,
            "slurm_state": self.state,
            "node": self.node or None,
            "gpus": self.gpus,
            "elapsed": self.elapsed,
            "reason": self.reason if self.state == PENDING else None,
            "reason_text": self.reason_text or None,
        }


def explain_reason(reason: str) -> str:
    """Slurm's pending reason in ds01's words; an unknown one as Slurm says it."""
    return REASONS.get(reason, f"Slurm says {reason} (see `scontrol show job`)")


def gres_gpus(text: str) -> int:
    """The GPUs a GRES text counts: ``gres:gpu:3``, ``gpu:1g.10gb:1``,
    ``gpu:full:2(IDX:0-1),gpu:1g.10gb:1(IDX:2)`` → their sum; none without a ``gpu``."""
    return sum(int(count) for count in _GRES_COUNT_RE.findall(text))


class SqueueJob:
    """One job of ``squeue --json``: its ``JOB_FIELDS``, checked (``read_jobs``)."""

    __slots__ = tuple(JOB_FIELDS)

    job_id: int
    name: str
    user_id: int
    user_name: str
    job_state: str
    state_reason: str
    nodes: str
    tres_per_node: str
    comment: str
    priority: int
    submit_time: int
    start_time: int

    def __init__(self, job: object) -> None:
        """Raises ``SlurmError`` when ``job`` lacks one of ``JOB_FIELDS`` (of its type)."""
        why = _unreadable(job)
        if why is not None or not isinstance(job, dict):
            _refuse(why or "a job is no JSON object")
        for field in JOB_FIELDS:
            setattr(self, field, job[field])

    def squeue_order(self) -> tuple[bool, int, int]:
        """ds01's order: pending first, then the highest priority (module docstring)."""
        return (self.job_state != PENDING, -self.priority, self.job_id)


def read_jobs(text: str) -> list[SqueueJob]:
    """``squeue --json``'s jobs, in ds01's order (see the module docstring). A job that
    is no container's (its comment is not ``JOB_COMMENT``) and lacks one of ``JOB_FIELDS``
    is left out: another job's odd record does not take every user's views down.

    Raises:
        SlurmError: the answer is not Slurm's JSON, or a container's job lacks one of
            ``JOB_FIELDS``.
    """
    try:
        jobs = json.loads(text)["jobs"]
    except (ValueError, KeyError, TypeError):
        _refuse("it holds no list of jobs")
    if not isinstance(jobs, list):
        _refuse("it holds no list of jobs")
    readable = [
        job
        for job in jobs
        if _unreadable(job) is None or (isinstance(job, dict) and job.get("comment") == JOB_COMMENT)
    ]
    return sorted((SqueueJob(job) for job in readable), key=SqueueJob.squeue_order)


def _unreadable(job: object) -> str | None:
    """Why ``job`` cannot be read (not an object, or a field of ``JOB_FIELDS`` missing or
    of another type); ``None`` if it can."""
    if not isinstance(job, dict):
        return "a job is no JSON object"
    for field, kind in JOB_FIELDS.items():
        value = job.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"job {job.get('job_id')} has no {kind.__name__} {field!r}"
    return None


def _refuse(why: str) -> NoReturn:
    from ds01.errors import SlurmError  # only now: it loads typing

    raise SlurmError(f"Slurm's answer (squeue --json) could not be read: {why}.")


def elapsed_text(seconds: int) -> str:
    """A run time as ``squeue``'s ``%M`` writes it: ``0:00``, ``1:02:03``, ``1-02:03:04``."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def parse_containers(
    text: str, now: float, *, uid: int | None = None, name: str | None = None
) -> list[ClusterContainer]:
    """``squeue --json``'s answer at ``now`` (seconds since the epoch): the jobs that are
    containers (comment ``JOB_COMMENT``) and have not ended (``ENDED_STATES``), of user
    ``uid`` and named ``name`` where given, in
    ds01's order. A job's run time is ``now`` less its start (none while it pends). A
    name, which its owner wrote and other users' terminals show, comes without terminal
    escapes and control characters (``ds01.model.text.plain``; ``name`` is matched before).

    Raises:
        SlurmError: as ``read_jobs``.
    """
    found: list[ClusterContainer] = []
    for job in read_jobs(text):
        if job.comment != JOB_COMMENT or job.job_state in ENDED_STATES:
            continue
        if (uid is not None and job.user_id != uid) or (name is not None and job.name != name):
            continue
        running = job.job_state != PENDING and job.start_time > 0
        found.append(
            ClusterContainer(
                name=plain(job.name),  # its owner's: shown on others' terminals
                user=job.user_name,
                slurm_job=job.job_id,
                state=job.job_state,
                node=job.nodes if job.job_state != PENDING else "",
                reason=job.state_reason,
                gpus=gres_gpus(job.tres_per_node),
                elapsed=elapsed_text(int(now) - job.start_time if running else 0),
            )
        )
    return found


def pending(containers: Sequence[ClusterContainer]) -> list[ClusterContainer]:
    """The containers whose job waits, in the order Slurm listed them."""
    return [c for c in containers if c.state == PENDING]
