"""A cluster's containers as ``squeue`` lists them, for a login node's views. Pure.

A container is a Slurm job named after it and carrying the comment ``JOB_COMMENT``
(``ds01.core.slurm_job.sbatch_options``); ``squeue --noheader --format SQUEUE_FORMAT``, run
as the user, lists them with their node, state and, while they wait, Slurm's reason, which
``REASONS`` says in ds01's words. ``parse_containers`` reads that answer.

Light on purpose: ``container-list`` on a login node is budgeted against a bare ``squeue``
(at most 3 x), and a Python command's start-up is most of its time. So this module imports
``re`` alone (which every console script has loaded already): no ``dataclasses`` (it loads
``inspect``, about 6 ms) and no ``typing``; ``ClusterContainer`` is a plain class.
``ds01.core.slurm_view`` builds the other views (nodes, holders, ``container-open``) on it.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: The comment of every container's job (``sbatch --comment``): how a login node tells a
#: container's job from other jobs.
JOB_COMMENT = "ds01-container"
#: Slurm's state of a job that waits.
PENDING = "PENDING"
#: ``squeue --format``: one job per line, fields split by ``FIELD_SEPARATOR`` (a character
#: no container name, user, node list or reason holds). ``%b``: the GRES it asked for per
#: node; ``%M``: how long it has run; ``%k``: its comment.
FIELD_SEPARATOR = "|"
SQUEUE_FIELDS = ("%i", "%j", "%T", "%N", "%r", "%b", "%M", "%u", "%k")
SQUEUE_FORMAT = FIELD_SEPARATOR.join(SQUEUE_FIELDS)

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


def parse_containers(text: str) -> list[ClusterContainer]:
    """``squeue --noheader --format SQUEUE_FORMAT``'s answer: the jobs that are containers
    (comment ``JOB_COMMENT``), in squeue's order; other jobs and malformed lines are left
    out."""
    found: list[ClusterContainer] = []
    for line in text.splitlines():
        cells = line.strip().split(FIELD_SEPARATOR)
        if len(cells) != len(SQUEUE_FIELDS) or not cells[0].isdigit():
            continue
        job, name, state, node, reason, gres, elapsed, user, comment = cells
        if comment != JOB_COMMENT:
            continue
        found.append(
            ClusterContainer(
                name=name,
                user=user,
                slurm_job=int(job),
                state=state,
                node=node if state != PENDING else "",
                reason=reason,
                gpus=gres_gpus(gres),
                elapsed=elapsed,
            )
        )
    return found


def pending(containers: Sequence[ClusterContainer]) -> list[ClusterContainer]:
    """The containers whose job waits, in the order Slurm listed them."""
    return [c for c in containers if c.state == PENDING]
