"""The cluster as a login node sees it, in cluster mode (``cluster: slurm``). Pure.

A login node needs no ds01d of its own, and no node's ds01d listens on the network: Slurm's
own data is the source. A container is a Slurm job (``ds01.core.slurm_job``), known by its
job: named after the container and carrying the comment ``JOB_COMMENT`` (``sbatch_options``). So:

- ``container-list``: the user's containers across the cluster are their jobs
  (``squeue --format SQUEUE_FORMAT``, run as the user): the node, the job's state and, while
  it pends, Slurm's reason in ds01's words (``REASONS``);
- ``ds01 queue``: the pending ones;
- ``gpu-status``: each node's GPUs, used and total, from ``scontrol show node -d``;
- the dashboard and ``ds01 admin report``: each node with the containers that hold its GPUs
  (``node_holders``) and each user's containers (``user_counts``), from the same two answers;
- ``container-open``: a step of the container's job (``srun --jobid JOB --overlap --pty``)
  runs ``container-open`` on the job's node, against that node's ds01d (``open_argv``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ds01.core.slurm_job import JOB_COMMENT, RUNNING
from ds01.errors import Conflict, NotFound
from ds01.paths import ENV_CLUSTER

#: ``DS01_CLUSTER`` in a step of a container's job: the node's own ds01d answers there.
NOT_A_CLUSTER = "none"
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
_NODE_FIELD_RE = re.compile(r"(\w+)=(\S*)")


@dataclass(frozen=True)
class ClusterContainer:
    """One container of the cluster: its job as ``squeue`` lists it."""

    name: str
    user: str
    slurm_job: int
    state: str  # Slurm's: RUNNING, PENDING, COMPLETING…
    node: str  # "" while it pends
    reason: str  # Slurm's, "None" while it runs
    gpus: int  # devices asked for (each node it runs on)
    elapsed: str  # squeue's %M: 0:00, 1:02:03, 1-02:03:04

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


@dataclass(frozen=True)
class NodeGpus:
    """One node's GPUs as Slurm counts them."""

    node: str
    state: str  # Slurm's node state: IDLE, MIXED, ALLOCATED, DOWN…
    total: int
    used: int

    def as_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "state": self.state,
            "gpus": self.total,
            "used": self.used,
            "free": max(0, self.total - self.used),
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


def pending(containers: list[ClusterContainer]) -> list[ClusterContainer]:
    """The containers whose job waits, in the order Slurm listed them."""
    return [c for c in containers if c.state == PENDING]


def running_container(containers: Sequence[ClusterContainer], name: str) -> ClusterContainer:
    """The caller's container ``name`` among ``containers`` (their jobs), if it runs.

    Raises:
        NotFound: no job of theirs is that container.
        Conflict: its job waits (the message says why) or ends.
    """
    found = [c for c in containers if c.name == name]
    if not found:
        raise NotFound(f"No container {name!r} of yours runs or waits in the cluster.")
    running = [c for c in found if c.state == RUNNING]
    if running:
        return running[0]
    waiting = found[0]
    if waiting.state == PENDING:
        raise Conflict(
            f"{name!r} (Slurm job {waiting.slurm_job}) is pending ({waiting.reason}): "
            f"{waiting.reason_text}. It opens once it runs."
        )
    raise Conflict(f"{name!r} (Slurm job {waiting.slurm_job}) is {waiting.status}.")


def open_argv(
    container: ClusterContainer, interpreter: str, program: Sequence[str]
) -> list[str]:
    """``srun``'s command line that opens a terminal in ``container`` on its node: a step of
    its job (``--overlap``: beside the step that waits on the container; ``--pty``: a
    terminal) that runs ``interpreter -m ds01.cli container open NAME [-- PROGRAM]`` there,
    as the caller, against that node's ds01d (``DS01_SOCKET`` and its ``%n``, as the job's
    own step finds it). ``DS01_CLUSTER`` is ``NOT_A_CLUSTER`` there, or it would run ``srun``
again; set by ``env`` in the step, as Slurm 22.05's ``--export=ALL,NAME=VALUE`` keeps the
caller's value of a variable it already has."""
    command = [
        "env",
        f"{ENV_CLUSTER}={NOT_A_CLUSTER}",
        *(interpreter, "-m", "ds01.cli", "container", "open", container.name),
    ]
    if program:
        command += ["--", *program]
    return [
        "srun",
        f"--jobid={container.slurm_job}",
        "--overlap",
        "--pty",
        "--quiet",
        *command,
    ]


@dataclass(frozen=True)
class NodeHolders:
    """A node's GPUs and the running containers on it; ``other_gpus``: the GPUs its jobs
    hold that are no container of ds01's (or that the caller may not see, ``squeue``'s
    ``PrivateData``)."""

    gpus: NodeGpus
    holders: tuple[ClusterContainer, ...]

    @property
    def other_gpus(self) -> int:
        return max(0, self.gpus.used - sum(c.gpus for c in self.holders))

    def as_json(self) -> dict[str, object]:
        return {
            **self.gpus.as_json(),
            "holders": [
                {"user": c.user, "name": c.name, "slurm_job": c.slurm_job, "gpus": c.gpus}
                for c in self.holders
            ],
            "other_gpus": self.other_gpus,
        }


@dataclass(frozen=True)
class UserCount:
    """One user's containers in the cluster now: running, pending, and the GPUs held."""

    user: str
    running: int
    pending: int
    gpus: int

    def as_json(self) -> dict[str, object]:
        return {
            "user": self.user,
            "running": self.running,
            "pending": self.pending,
            "gpus": self.gpus,
        }


def node_holders(
    nodes: Sequence[NodeGpus], containers: Sequence[ClusterContainer]
) -> list[NodeHolders]:
    """Each node (in Slurm's order) with the running containers on it, in ``containers``'
    order. A container runs on one node (its job's ``--gres`` is per node)."""
    return [
        NodeHolders(
            node,
            tuple(c for c in containers if c.node == node.node and c.state == RUNNING),
        )
        for node in nodes
    ]


def user_counts(containers: Sequence[ClusterContainer]) -> list[UserCount]:
    """Each user's running and pending containers and the GPUs their running ones hold, by
    user name."""
    counts: dict[str, list[int]] = {}
    for c in containers:
        row = counts.setdefault(c.user, [0, 0, 0])
        if c.state == RUNNING:
            row[0] += 1
            row[2] += c.gpus
        elif c.state == PENDING:
            row[1] += 1
    return [UserCount(user, *row) for user, row in sorted(counts.items())]


def cluster_overview(
    nodes: Sequence[NodeGpus], containers: Sequence[ClusterContainer], user: str, at: str
) -> dict[str, object]:
    """The dashboard's overview of the cluster (``ds01.tui.frame`` shows it), seen by
    ``user`` at ``at`` (ISO 8601): ``{"cluster": "slurm", "user", "at", "nodes"
    (``NodeHolders``), "containers" (``container-list --all``'s rows), "pending"
    (``ds01 queue``'s), "users" (``UserCount``)}``."""
    return {
        "cluster": "slurm",
        "user": user,
        "at": at,
        "nodes": [n.as_json() for n in node_holders(nodes, containers)],
        "containers": [c.as_json() for c in containers],
        "pending": [c.as_json() for c in pending(list(containers))],
        "users": [u.as_json() for u in user_counts(containers)],
    }


def parse_nodes(text: str) -> list[NodeGpus]:
    """``scontrol show node -d``'s answer (Slurm 22.05): each node's ``Gres=`` (the GPUs it
    has) and ``GresUsed=`` (those its jobs hold), in Slurm's order."""
    nodes: list[NodeGpus] = []
    for record in re.split(r"\n(?=NodeName=)", text.strip()):
        fields = dict(_NODE_FIELD_RE.findall(record))
        if "NodeName" not in fields:
            continue
        nodes.append(
            NodeGpus(
                node=fields["NodeName"],
                state=fields.get("State", ""),
                total=gres_gpus(fields.get("Gres", "")),
                used=gres_gpus(fields.get("GresUsed", "")),
            )
        )
    return nodes


__all__ = [
    "FIELD_SEPARATOR",
    "JOB_COMMENT",
    "NOT_A_CLUSTER",
    "PENDING",
    "REASONS",
    "SQUEUE_FORMAT",
    "ClusterContainer",
    "NodeGpus",
    "NodeHolders",
    "UserCount",
    "cluster_overview",
    "explain_reason",
    "gres_gpus",
    "node_holders",
    "open_argv",
    "parse_containers",
    "parse_nodes",
    "pending",
    "running_container",
    "user_counts",
]
