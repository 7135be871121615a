"""The dashboard's frame of a Slurm cluster, on a login node (``DS01_CLUSTER=slurm``).

The overview is ``ds01.core.slurm_view.cluster_overview``'s (the same rows as
``gpu-status``, ``container-list --all`` and ``ds01 queue`` there): ``build_frame`` hands it
here. The frame has the single server's five tables, filled with what Slurm knows:

- *devices*: the nodes, each with its GPUs held and free and the containers that hold them;
- *containers*: every container (job) Slurm lets the user see, with its node and job;
- *queue*: the pending ones, in Slurm's order, with its reason in ds01's words;
- *users*: each user's containers running and pending, and the GPUs they hold;
- *reservations*: none here (Slurm's own: ``scontrol show reservation``).

The view's sort (``s``) applies where a cluster has the column (user, name, state, gpu-eq:
the GPUs); the other columns sort by user. The user filter keeps one user's rows. Pure, as
``ds01.tui.frame``.
"""

from __future__ import annotations

from ds01.tui.frame import Frame, Table, TableRow, Usage, View

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ds01.tui.frame import Overview, Row

#: The overview's ``cluster`` value that makes it a cluster's.
SLURM = "slurm"
#: Order of the STATE column when sorted by it.
_STATE_ORDER = {"running": 0, "completing": 1, "pending": 2}
_SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "user": lambda c: (c["user"], c["name"]),
    "name": lambda c: (c["name"], c["user"]),
    "state": lambda c: (_STATE_ORDER.get(c["status"], 9), c["user"], c["name"]),
    "gpu-eq": lambda c: (-c["gpus"], c["user"], c["name"]),
}
#: Sort by this where the cluster has no such column.
_DEFAULT_SORT = "user"


def is_cluster(overview: Overview) -> bool:
    """Whether ``overview`` is a cluster's (``cluster_overview``'s), not a ds01d's."""
    return overview.get("cluster") == SLURM


def _sort(view: View) -> str:
    return view.sort if view.sort in _SORT_KEYS else _DEFAULT_SORT


def _mine(rows: Sequence[Row], user: str | None) -> list[Row]:
    return list(rows) if user is None else [r for r in rows if r.get("user") == user]


def _holders(node: Row) -> str:
    held = [f"{h['user']}/{h['name']} ({h['gpus']})" for h in node.get("holders", [])]
    if node.get("other_gpus"):
        held.append(f"other jobs ({node['other_gpus']})")
    return ", ".join(held) or "-"


def _node_rows(nodes: Sequence[Row]) -> tuple[TableRow, ...]:
    return tuple(
        TableRow(
            n["node"],
            (n["node"], n["state"], str(n["gpus"]), str(n["used"]), str(n["free"]), _holders(n)),
        )
        for n in nodes
    )


def _container_rows(containers: Sequence[Row]) -> tuple[TableRow, ...]:
    return tuple(
        TableRow(
            str(c["slurm_job"]),
            (
                c["user"],
                c["name"],
                c["status"] + (f" ({c['reason']})" if c.get("reason") else ""),
                c.get("node") or "-",
                str(c["slurm_job"]),
                str(c["gpus"]),
                c["elapsed"],
            ),
        )
        for c in containers
    )


def _pending_rows(waiting: Sequence[Row]) -> tuple[TableRow, ...]:
    return tuple(
        TableRow(
            str(c["slurm_job"]),
            (
                str(position),
                c["user"],
                c["name"],
                str(c["gpus"]),
                c["reason"] or "-",
                c.get("reason_text") or "-",
            ),
        )
        for position, c in enumerate(waiting, start=1)
    )


def _user_rows(users: Sequence[Row]) -> tuple[TableRow, ...]:
    return tuple(
        TableRow(u["user"], (u["user"], str(u["running"]), str(u["pending"]), str(u["gpus"])))
        for u in users
    )


def _usage(nodes: Sequence[Row]) -> Usage:
    held = sum(int(n["used"]) for n in nodes)
    total = sum(int(n["gpus"]) for n in nodes)
    return Usage(
        devices_allocated=held,
        devices=total,
        gpu_equivalents_allocated=float(held),
        gpu_equivalents=float(total),
    )


def _title(overview: Overview) -> str:
    at = (overview.get("at") or "").replace("T", " ").replace("+00:00", " UTC")
    return f"ds01 dashboard: the Slurm cluster, seen by {overview.get('user', '?')}, {at}"


def _summary(nodes: Sequence[Row], containers: Sequence[Row], waiting: Sequence[Row]) -> str:
    running = sum(1 for c in containers if c["status"] == "running")
    return (
        f"{len(nodes)} nodes; {len(containers)} containers in the cluster, {running} running; "
        f"Slurm's queue: {len(waiting)} pending"
    )


def build_cluster_frame(overview: Overview, view: View) -> Frame:
    """The frame of a cluster's ``overview`` seen through ``view`` (module docstring)."""
    nodes = overview.get("nodes", [])
    sort = _sort(view)
    containers = sorted(_mine(overview.get("containers", []), view.user), key=_SORT_KEYS[sort])
    waiting = _mine(overview.get("pending", []), view.user)
    whose = "every user's" if view.user is None else f"{view.user}'s"
    return Frame(
        title=_title(overview),
        usage=_usage(nodes),
        summary=_summary(nodes, overview.get("containers", []), overview.get("pending", [])),
        notes=(
            "From Slurm (scontrol, squeue) on this login node: what Slurm lets you see. "
            "A container's details: container-list, squeue -j JOB.",
        ),
        view=view,
        devices=Table(
            "Nodes (Slurm)",
            ("NODE", "STATE", "GPUS", "USED", "FREE", "HELD BY"),
            _node_rows(nodes),
            "No nodes.",
        ),
        containers=Table(
            f"Containers, {whose}: {len(containers)}, sorted by {sort}",
            ("USER", "NAME", "STATE", "NODE", "JOB", "GPUS", "TIME"),
            _container_rows(containers),
            "No containers." if view.user is None else f"No containers of {view.user}.",
        ),
        queue=Table(
            f"Slurm's queue: {whose} pending containers, in its order",
            ("POS", "USER", "CONTAINER", "GPUS", "REASON", "MEANING"),
            _pending_rows(waiting),
            "Nothing pending.",
        ),
        users=Table(
            "Containers per user",
            ("USER", "RUNNING", "PENDING", "GPUS"),
            _user_rows(_mine(overview.get("users", []), view.user)),
            "No containers." if view.user is None else f"No containers of {view.user}.",
        ),
        reservations=Table(
            "Reservations",
            ("RESERVATION",),
            (),
            "Slurm's own on a cluster: scontrol show reservation.",
        ),
    )


def cluster_detail(overview: Overview, key: str) -> list[tuple[str, str]] | None:
    """Container ``key`` (its Slurm job's id) for the detail screen, as (label, text)
    pairs; ``None`` when the overview has no such container."""
    c = next((c for c in overview.get("containers", []) if str(c["slurm_job"]) == key), None)
    if c is None:
        return None
    return [
        ("Name", c["name"]),
        ("Owner", c["user"]),
        ("Slurm job", str(c["slurm_job"])),
        ("State", f"{c['status']} ({c['slurm_state']})"),
        ("Node", c.get("node") or "-"),
        ("GPUs", str(c["gpus"])),
        ("Time", c["elapsed"]),
        ("Why it waits", f"{c['reason']}: {c['reason_text']}" if c.get("reason") else "-"),
    ]


__all__ = ["SLURM", "build_cluster_frame", "cluster_detail", "is_cluster"]
