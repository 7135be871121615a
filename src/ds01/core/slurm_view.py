"""The cluster as a login node sees it, in cluster mode (``cluster: slurm``). Pure.

A login node needs no ds01d of its own, and no node's ds01d listens on the network: Slurm's
own data is the source. A container is a Slurm job (``ds01.core.slurm_job``), known by its
job: named after the container and carrying the comment ``JOB_COMMENT`` (``sbatch_options``). So:

- ``container-list``: the user's containers across the cluster are their jobs
  (``squeue``, run as the user): the node, the job's state and, while
  it pends, Slurm's reason in ds01's words (``REASONS``); read by ``ds01.core.slurm_squeue``
  (light, for the login node's start-up) and named here too;
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

from ds01.core.slurm_job import RUNNING
from ds01.core.slurm_squeue import (
    JOB_COMMENT,
    PENDING,
    REASONS,
    ClusterContainer,
    explain_reason,
    gres_gpus,
    parse_containers,
    pending,
)
from ds01.errors import Conflict, NotFound
from ds01.paths import ENV_CLUSTER

#: ``DS01_CLUSTER`` in a step of a container's job: the node's own ds01d answers there.
NOT_A_CLUSTER = "none"
_NODE_FIELD_RE = re.compile(r"(\w+)=(\S*)")


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
    "JOB_COMMENT",
    "NOT_A_CLUSTER",
    "PENDING",
    "REASONS",
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
