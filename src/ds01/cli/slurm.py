"""``ds01 admin slurm sync|gres|exporter``: ds01's configuration compiled into a Slurm
cluster's, and the login node's exporter of Slurm's queue.

Offline admin tools, like ``ds01 admin setup``: they run where the admin runs them (sync on
any host whose ``sacctmgr`` reaches slurmdbd, gres on each GPU node), read the configuration
files themselves and never ask ds01d. So they write no event in ds01's audit log: a cluster's
head node need not run ds01d, and what sync changes lands in slurmdbd, which authorises it
(the caller's munge identity must be a Slurm administrator) and records it itself
(``sacctmgr show transaction``). ``exporter`` serves Slurm's pending queue to Prometheus
(``ds01.metrics.slurm_queue``) until it is stopped.

Imported at every start of the CLI (the command table), so standard library only at module
level.
"""

from __future__ import annotations

import argparse

from ds01.cli import render
from ds01.cli.command import Command
from ds01.cli.parsing import add_json_flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ds01.config.loader import Ds01Config


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=("sync", "gres", "exporter"),
        help="sync: resource-limits.yaml into Slurm's accounting; gres: this node's GRES "
        "lines; exporter: serve Slurm's pending queue to Prometheus",
    )
    p.add_argument(
        "--config-dir", metavar="DIR", help="ds01's configuration [$DS01_CONFIG_DIR or /etc/ds01]"
    )
    p.add_argument("--dry-run", action="store_true", help="sync: change nothing; show the diff")
    p.add_argument(
        "--node",
        metavar="NAME",
        help="gres: the node's Slurm name [this host's short name]",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="gres: write gres.conf to FILE (atomically) instead of printing it",
    )
    add_json_flag(p)
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="exporter: where to serve /metrics [127.0.0.1:9102]",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="exporter: allow a non-loopback --listen (the metrics name users; no login)",
    )


def _config(args: argparse.Namespace) -> Ds01Config:
    from pathlib import Path

    from ds01.config.loader import load_config
    from ds01.paths import config_dir

    return load_config(Path(config_dir(args.config_dir)))


def _run(args: argparse.Namespace) -> None:
    from ds01.errors import InvalidInput

    if args.action != "exporter" and (args.listen or args.allow_remote):
        raise InvalidInput("--listen and --allow-remote go with `exporter`.")
    if args.action == "exporter":
        if args.node or args.output or args.dry_run or args.json or args.config_dir:
            raise InvalidInput("`exporter` takes --listen and --allow-remote only.")
        _exporter(args)
    elif args.action == "sync":
        if args.node or args.output:
            raise InvalidInput("--node and --output go with `gres`.")
        _sync(args)
    else:
        if args.dry_run:
            raise InvalidInput(
                "--dry-run goes with `sync`; `gres` changes nothing unless --output."
            )
        _gres(args)


def _sync(args: argparse.Namespace) -> None:
    from ds01.core import slurm_sync
    from ds01.runtime import slurm

    limits = _config(args).limits
    groups = [limits.unix_group_of(g) for g in limits.groups]
    users = slurm_sync.candidate_users(limits, slurm.unix_group_members(groups))
    desired = slurm_sync.desired_accounting(
        limits, {user: slurm.unix_groups_of(user) for user in users}
    )
    changes = slurm_sync.diff(desired, slurm.read_accounting())
    if not args.dry_run:
        slurm.apply_changes(changes)
    if args.json:
        render.emit_json(
            {
                "dry_run": args.dry_run,
                "changes": [c.to_dict() for c in changes],
                "desired": desired.to_dict(),
            }
        )
        return
    if not changes:
        render.ok("Slurm's accounting already matches resource-limits.yaml: nothing to do.")
        return
    verb = "Would run" if args.dry_run else "Ran"
    for change in changes:
        render.echo(f"  {verb}: {change.describe()}")
    if args.dry_run:
        render.echo(f"Dry run: nothing changed ({len(changes)} change(s) to make).")
    else:
        render.ok(f"Slurm's accounting matches resource-limits.yaml ({len(changes)} change(s)).")


def _gres(args: argparse.Namespace) -> None:
    import socket
    from pathlib import Path

    from ds01 import paths
    from ds01.core import slurm_gres
    from ds01.files import replace_file
    from ds01.gpu.backend import make_backend
    from ds01.runtime.slurm import read_mig_minors

    state_dir = Path(paths.pick(None, paths.ENV_STATE_DIR, paths.DEFAULT_STATE_DIR))
    node = args.node or socket.gethostname().split(".")[0]
    with make_backend(
        _config(args).gpus, simulated_mig_file=state_dir / paths.SIMULATED_MIG_FILE
    ) as backend:
        inventory = backend.inventory()
    minors = slurm_gres.parse_mig_minors(read_mig_minors())
    lines = slurm_gres.gres_lines(inventory, slurm_gres.mig_cap_files(inventory.devices, minors))
    text = slurm_gres.gres_conf(node, lines)
    if args.output:
        replace_file(Path(args.output), text)
    if args.json:
        render.emit_json(
            {
                "node": node,
                "node_line": slurm_gres.node_line(node, lines),
                "gres_conf": text,
                "devices": [line.to_dict() for line in lines],
                "output": args.output,
            }
        )
        return
    if not args.output:
        render.echo(text.rstrip("\n"))
    else:
        render.ok(f"Wrote {args.output} ({len(lines)} device(s)).")
    render.echo(f"# slurm.conf: {slurm_gres.node_line(node, lines)}")


def _exporter(args: argparse.Namespace) -> None:
    """Serve Slurm's queue on ``--listen`` until interrupted (SIGINT, SIGTERM)."""
    import signal
    import threading

    from ds01.errors import InvalidInput
    from ds01.metrics.exporter import MetricsExporter
    from ds01.metrics.listen import parse_listen
    from ds01.metrics.slurm_queue import DEFAULT_LISTEN, SlurmQueueCollector
    from ds01.runtime import slurm

    address = parse_listen(args.listen or DEFAULT_LISTEN, allow_remote=True)
    if address is None:
        raise InvalidInput("`exporter` needs an address to listen on (--listen HOST:PORT).")
    if not address.loopback and not args.allow_remote:
        raise InvalidInput(
            f"--listen {address} is not loopback: the metrics name users, without "
            "authentication. Add --allow-remote, and open the port to Prometheus only."
        )
    exporter = MetricsExporter(SlurmQueueCollector(slurm.cluster_containers))
    try:
        bound = exporter.start(address)
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {address}: {exc.strerror or exc}") from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    render.ok(f"Serving Slurm's pending queue on http://{bound}/metrics (Ctrl-C stops).")
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        exporter.stop()


SLURM_COMMANDS: tuple[Command, ...] = (
    Command(
        ("admin", "slurm"),
        None,
        "A Slurm cluster: resource-limits.yaml into its accounting; a node's GRES lines; "
        "the queue's exporter.",
        "`sync` turns resource-limits.yaml into Slurm's accounting (slurmdbd, through\n"
        "sacctmgr): each group an account (Organization=ds01), each user an association in\n"
        "their groups' accounts with one QOS holding their limits: priority -> Priority,\n"
        "gpu_limit -> MaxTRESPerUser=gres/gpu (devices, rounded up), max_containers ->\n"
        "MaxJobsPerUser, max_runtime_hours -> MaxWall. It changes only what ds01 owns\n"
        "(accounts of Organization ds01, QOS named ds01-*), shows each sacctmgr command, and\n"
        "a second run finds nothing to do; --dry-run changes nothing. Run it as a Slurm\n"
        "administrator; ds01d is not involved (see docs/cluster.md).\n"
        "`gres` prints this node's gres.conf from its ds01 GPU inventory (one line per device,\n"
        "its comment naming Slurm's index for it and its UUID; MIG slices as typed\n"
        "GRES gpu:<profile> with their nvidia-caps files, whole GPUs then as gpu:full) and\n"
        "the Gres= of its slurm.conf node line.\n"
        "`exporter` serves Slurm's pending queue (the containers' jobs) to Prometheus as\n"
        "ds01_queue_length{user,reason} and ds01_queue_oldest_wait_seconds, one squeue per\n"
        "scrape at most (cached 5 s); run it on a login node as a Slurm operator.\n\n"
        "examples:\n"
        "  ds01 admin slurm sync --dry-run\n"
        "  ds01 admin slurm sync --json\n"
        "  ds01 admin slurm gres --output /etc/slurm/gres.conf\n"
        "  ds01 admin slurm exporter --listen 10.0.0.2:9102 --allow-remote",
        _configure,
        _run,
    ),
)

__all__ = ["SLURM_COMMANDS"]
