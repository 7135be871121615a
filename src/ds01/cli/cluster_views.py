"""The whole cluster in ``container-list``, ``ds01 queue`` and ``gpu-status``, on a Slurm
cluster's login node (``DS01_CLUSTER=slurm``): from Slurm's own data, read as the user
(``squeue``, ``scontrol``), never from a ds01d (a login node need not run one, and no node's
ds01d listens on the network). ``ds01.core.slurm_squeue`` and ``ds01.core.slurm_view`` read
the answers. ``container-open`` runs itself on the container's node, in a step of its job
(``srun``).

``container-list`` there is budgeted against a bare ``squeue`` (at most 3 x), so its usual
command lines skip argparse and ds01's command table (``listed_without_parser``, called by
``ds01.cli.entry``), and this module imports little at start: ``ds01.cli.parsing`` (argparse)
only where a usage error is raised.
"""

from __future__ import annotations

import os
import sys
import time

from ds01 import paths
from ds01.cli import render
from ds01.errors import Ds01Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

#: The value of ``DS01_CLUSTER`` that turns the cluster views on.
SLURM = "slurm"
#: The options of the ``container-list`` command lines ``listed_without_parser`` answers
#: (``--json``, ``--all`` and ``-a``, in any order): with them, all its parser would do.
LIST_OPTIONS = frozenset({"--json", "--all", "-a"})


def enabled() -> bool:
    """Whether this host shows the cluster (``DS01_CLUSTER=slurm``)."""
    return os.environ.get(paths.ENV_CLUSTER, "") == SLURM


def run_list(args: argparse.Namespace) -> None:
    """``container-list``: the containers (jobs) of the caller, or of everyone with ``--all``,
    on every node."""
    if args.user:
        from ds01.cli.parsing import UsageError

        raise UsageError("On a Slurm cluster: `container-list --all` shows every user's.")
    list_containers(args.all_users, args.json)


def listed_without_parser(argv: Sequence[str]) -> bool:
    """``container-list ARGV`` on a login node, when ``ARGV`` holds only ``LIST_OPTIONS``:
    what ``run_list`` would show, and its errors as ``ds01.cli.main`` reports them, without
    argparse and the command table (a third of the command's time before). Whether it
    answered: not on a single server, nor for other command lines (``--help``, ``--user``,
    abbreviations, mistakes), which the parser handles as usual."""
    if not enabled() or not set(argv) <= LIST_OPTIONS:
        return False
    as_json = "--json" in argv
    try:
        list_containers("--all" in argv or "-a" in argv, as_json)
    except BrokenPipeError:
        render.reader_gone()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Ds01Error as exc:
        render.fail(exc.message, int(exc.exit_code), exc.kind, exc.details, as_json)
    return True


def list_containers(all_users: bool, as_json: bool) -> None:
    """The caller's containers (jobs) on every node, or everyone's that Slurm shows them
    (``all_users``): a table, with a line for each pending one's reason, or JSON."""
    from ds01.core.slurm_squeue import parse_containers
    from ds01.runtime.slurm import cluster_containers

    mine = None if all_users else os.getuid()
    found = parse_containers(cluster_containers(), time.time(), uid=mine)
    if render.emitted_json(as_json, [c.as_json() for c in found]):
        return
    if not found:
        render.echo("No containers. Create one with `container-create NAME --image IMAGE`.")
        return
    headers = ["NAME", "STATUS", "NODE", "JOB", "GPUS", "TIME"]
    if all_users:
        headers.insert(0, "USER")
    render.table(
        headers,
        [
            ([c.user] if all_users else [])
            + [c.name, c.status, c.node or "-", c.slurm_job, c.gpus, c.elapsed]
            for c in found
        ],
    )
    for c in found:
        if c.reason_text:
            render.echo(f"{c.name}: pending ({c.reason}): {c.reason_text}")


def run_queue(args: argparse.Namespace) -> None:
    """``ds01 queue``: the containers whose job waits, in Slurm's order, with its reason."""
    from ds01.cli.parsing import UsageError
    from ds01.core.slurm_squeue import parse_containers, pending
    from ds01.runtime.slurm import cluster_containers

    if args.action == "cancel" or args.request_id or args.explain:
        raise UsageError(
            "On a Slurm cluster Slurm holds the queue: cancel with `scancel -n NAME`; "
            "`sprio` explains the order."
        )
    mine = None if args.all_users else os.getuid()
    waiting = pending(parse_containers(cluster_containers(), time.time(), uid=mine))
    if render.emitted_json(args.json, [c.as_json() for c in waiting]):
        return
    if not waiting:
        render.echo("Nothing pending." if args.all_users else "You have nothing pending.")
        return
    render.table(
        ["POS", "JOB", "USER", "CONTAINER", "GPUS", "REASON"],
        [
            [position, c.slurm_job, c.user, c.name, c.gpus, c.reason]
            for position, c in enumerate(waiting, start=1)
        ],
    )
    for c in waiting:
        render.echo(f"{c.name}: {c.reason_text}")


def run_gpu_status(args: argparse.Namespace) -> None:
    """``gpu-status``: each node's GPUs, used and total, as Slurm counts them."""
    from ds01.core.slurm_view import parse_nodes
    from ds01.runtime.slurm import show_nodes

    nodes = parse_nodes(show_nodes())
    if render.emitted_json(args.json, [n.as_json() for n in nodes]):
        return
    render.table(
        ["NODE", "STATE", "GPUS", "USED", "FREE"],
        [[n.node, n.state, n.total, n.used, max(0, n.total - n.used)] for n in nodes],
    )


def run_open(name: str, program: list[str], user: str | None) -> None:
    """``container-open``: replaces this process with ``srun``, which runs ``container-open``
    in a step of the container's job, on its node, as the caller (Slurm's identity, munge's)."""
    from ds01.core.slurm_view import open_argv, parse_containers, running_container
    from ds01.errors import SlurmError
    from ds01.runtime.slurm import cluster_containers

    if user:
        from ds01.cli.parsing import UsageError

        raise UsageError("On a Slurm cluster, `container-open` opens your own containers.")
    found = parse_containers(cluster_containers(), time.time(), uid=os.getuid(), name=name)
    container = running_container(found, name)
    argv = open_argv(container, sys.executable, program)
    try:
        os.execvp(argv[0], argv)  # noqa: S606 (an argument list; srun gives the exit status)
    except OSError as exc:
        raise SlurmError(f"{argv[0]} could not run: {exc.strerror}") from None
