"""The ``ds01`` command, its noun groups (``ds01 container create …``) and the hyphenated
commands (``container-create …``), which are the same commands under another name.

Every command is a thin client of ds01d: it sends one request over the unix socket and
renders the answer. Start-up time is part of the user experience and of the performance
budget (``container-list`` ≤ 3 x ``docker ps``), so this module imports only the standard
library's ``argparse``, ``json`` and ``socket``: no click (≈35 ms to import), no pydantic, no
docker-py, no ``typing`` at run time. ``ds01 config check`` imports the config models lazily.

A command is a ``Command``: its place in the tree, its help, a function that adds its
arguments to a parser and a function that runs it. ``COMMANDS`` is the one table both the
``ds01`` tree and the hyphenated entry points are built from.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys

from ds01 import __version__
from ds01.cli import cluster_views, dashboard, render, tiers
from ds01.cli.admin import ADMIN_COMMANDS
from ds01.cli.batch import JOB_COMMANDS
from ds01.cli.client import ApiError, Ds01Client
from ds01.cli.command import Command as Command  # re-exported: the table's entries
from ds01.cli.events import EVENT_COMMANDS
from ds01.cli.images import IMAGE_COMMANDS
from ds01.cli.jupyter import show_jupyter
from ds01.cli.parsing import (
    ArgumentParser,
    EveryUse,
    LazySubParsers,
    UsageError,
    gpu_count,
    positive_number,
)
from ds01.cli.report import REPORT_COMMANDS
from ds01.cli.reservations import RESERVATION_COMMANDS
from ds01.cli.slurm import SLURM_COMMANDS
from ds01.errors import Ds01Error
from ds01.exitcodes import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from ds01.config.images import ImagesConfig

EXIT_CODES_EPILOG = (
    "Exit codes: 0 ok, 1 error, 2 usage, 3 quota or capacity, 4 not found, 5 permission."
)


def _lazy(module: str, function: str) -> Callable[[Any], None]:
    """``module.function``, imported only when called: the commands that need heavy modules
    (the simulator, project files, the dashboard) cost nothing at start-up."""

    def call(value: Any) -> None:
        getattr(importlib.import_module(module), function)(value)

    return call


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _user_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="USER", help="act on USER's containers (admins only)")


def _runtime_cell(row: dict[str, Any]) -> str:
    """``4h`` for a container with a declared runtime (``--runtime-hours``), ``-`` otherwise."""
    hours = row.get("runtime_hours")
    return "-" if hours is None else f"{hours:g}h"


def _port(text: str) -> dict[str, int | None]:
    """``CONTAINER`` or ``HOST:CONTAINER`` → the API's port request."""
    host, _, container = text.rpartition(":")
    if not container.isdigit() or (host and not host.isdigit()):
        raise argparse.ArgumentTypeError(
            f"expected PORT or HOSTPORT:PORT (numbers; always on 127.0.0.1), got {text!r}"
        )
    return {"container_port": int(container), "host_port": int(host) if host else None}


def _stop_cells(row: dict[str, Any]) -> list[Any]:
    """The IDLE and STOP AT cells of a container (``-`` when the loop has not seen it)."""
    idle = row.get("idle_minutes")
    stop_at = row.get("stop_at")
    return [
        render.duration(idle * 60) if idle is not None else None,
        stop_at.replace("T", " ")[:16] if stop_at else None,
    ]


def _disk_cell(row: dict[str, Any]) -> str:
    """``"41.2M/20G"``: the disk a container holds (``?`` until measured) of its limit."""
    from ds01.core.disk import human_bytes

    used = row.get("disk_bytes")
    limit = row.get("disk_limit_bytes")
    text = "?" if used is None else human_bytes(used)
    return text if not limit else f"{text}/{human_bytes(limit)}"


def _echo_reservation_limits(limits: dict[str, Any]) -> None:
    """One line: what `ds01 reserve` allows this user (nothing from an older ds01d)."""
    if not limits:
        return

    def shown(key: str, unit: str) -> str:
        value = limits.get(key)
        return "unlimited" if value is None else f"{render.number(value)}{unit}"

    render.echo(
        f"Reservations (`ds01 reserve`): {shown('max_reservations', '')} not yet ended, "
        f"{shown('max_gpus', ' GPU-equivalents')} at once, "
        f"{render.number(limits['min_minutes'])} min to {shown('max_hours', ' h')} each, "
        f"up to {shown('max_days_ahead', ' days')} ahead, "
        f"{shown('gpu_hours_per_week', ' GPU-hours')} a week."
    )


def _echo_disk_use(result: dict[str, Any]) -> None:
    """check-limits' disk line: the use of each container and the total, and the mode."""
    from ds01.core.disk import human_bytes

    usage = result.get("aggregate_usage") or {}
    by_container = usage.get("disk_by_container") or {}
    total = usage.get("disk_bytes")
    each = ", ".join(f"{name} {human_bytes(n)}" for name, n in sorted(by_container.items()))
    total_text = "not measured yet" if total is None else human_bytes(total)
    total_limit = render.limit_value(result["aggregate"].get("disk_limit"))
    per_container = render.limit_value(result["limits"].get("disk_limit"))
    render.echo(
        f"Disk: {total_text} in all (total limit {total_limit}; per container "
        f"{per_container}" + (f": {each}" if each else "") + ")."
    )
    if usage.get("disk_mode"):
        render.echo(f"  Disk limits are {usage['disk_mode']}.")


def _ports_text(ports: list[dict[str, Any]]) -> str:
    """``127.0.0.1:49153->8888`` for each published port (host side unknown while stopped)."""
    return ",".join(f"{p['host_ip']}:{p['host_port'] or '?'}->{p['container_port']}" for p in ports)


# -- containers -----------------------------------------------------------------------------


def _configure_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("name_arg", metavar="NAME", nargs="?", help="container name, e.g. thesis")
    p.add_argument("--name", dest="name_opt", metavar="NAME", help="the name, as an option")
    p.add_argument("--image", "-i", required=True, help="image name from `image-list`")
    gpus = p.add_mutually_exclusive_group()
    gpus.add_argument("--gpus", "-g", type=gpu_count, default=0, help="number of whole GPUs")
    gpus.add_argument(
        "--mig",
        action=EveryUse,
        default=[],
        metavar="PROFILE",
        help="a MIG slice, e.g. 3g.20gb (one per container)",
    )
    p.add_argument("--cpus", type=positive_number, help="CPU cores [default: your limit]")
    p.add_argument("--memory", "-m", metavar="SIZE", help="memory, e.g. 16G [your limit]")
    p.add_argument("--shm-size", metavar="SIZE", help="/dev/shm size [your limit]")
    p.add_argument(
        "--disk", metavar="SIZE", help="disk for files outside /workspace, e.g. 20G [your limit]"
    )
    p.add_argument("--workspace", "-w", metavar="DIR", help="host dir for /workspace")
    p.add_argument("--data", "-d", metavar="DIR", help="host dir for /data")
    p.add_argument(
        "--port",
        "-p",
        dest="ports",
        type=_port,
        action="append",
        default=[],
        metavar="[HOST:]PORT",
        help="publish PORT on 127.0.0.1 only (repeatable)",
    )
    p.add_argument("--start", action="store_true", help="start it right away")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="fail (exit 3) when no devices are free, instead of waiting in the GPU queue",
    )
    p.add_argument(
        "--borrow",
        action="store_true",
        help="over your GPU quota: borrow idle devices above it, if the server allows; a "
        "borrowed container is stopped (files kept) when someone within quota needs them",
    )
    p.add_argument(
        "--runtime-hours",
        type=positive_number,
        metavar="HOURS",
        help="how long it will run (at most your max_runtime_hours): it is stopped then; a "
        "short runtime may start on a GPU reserved from later",
    )
    _json_flag(p)


#: Seconds one long poll of a queued request may block in the daemon.
QUEUE_POLL_SECONDS = 30


def _wait_in_queue(client: Ds01Client, entry: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Follow a queued request until it starts; return its container's info.

    Ctrl-C leaves it queued (exit 130). A failed or cancelled request raises ``ApiError``.
    """
    path = f"/v1/queue/{entry['id']}"
    entry = client.request("GET", path)  # the dispatcher has placed it by now
    if not quiet:
        render.echo(
            f"No {entry['request']} free now. Queued as {entry['id']}: {_position(entry)}, "
            f"estimated start {entry.get('estimated_start') or 'unknown'}."
        )
        render.echo(
            "Waiting… (Ctrl-C leaves the request queued; `ds01 queue` shows it; "
            "--no-wait fails instead)"
        )
    shown = entry.get("position")
    try:
        while entry["state"] == "waiting":
            entry = client.request("GET", path, query={"wait": QUEUE_POLL_SECONDS})
            if not quiet and entry["state"] == "waiting" and entry.get("position") != shown:
                shown = entry.get("position")
                render.echo(f"  now {_position(entry)}")
    except KeyboardInterrupt:
        render.echo(
            f"\nLeft in the queue as {entry['id']}: it starts by itself when its turn comes. "
            f"`ds01 queue` shows it; `ds01 queue cancel {entry['id']}` withdraws it.",
            err=True,
        )
        raise
    if entry["state"] != "started":
        raise ApiError(
            f"The queued request {entry['id']} {entry['state']}: {entry.get('message') or '-'}",
            exit_code=int(ExitCode.ERROR),
            kind=str(entry["state"]),
            details={},
        )
    containers = client.request("GET", "/v1/containers")
    info = next((c for c in containers if c["name"] == entry["container"]), None)
    if info is None:
        raise ApiError(
            f"The queued request {entry['id']} started, but container "
            f"{entry['container']!r} is gone already.",
            exit_code=int(ExitCode.NOT_FOUND),
            kind="not_found",
            details={},
        )
    info["waited_seconds"] = entry["waited_seconds"]
    return dict(info)


def _position(entry: dict[str, Any]) -> str:
    if entry.get("status") in ("starting", "backfilling"):
        return "starting now"
    if entry.get("position") is None:
        return "position not known yet"
    return f"position {entry['position']} of {entry['queue_length']}"


def _run_create(args: argparse.Namespace) -> bool:
    """Create (and start) a container; ``True`` when it was submitted as a Slurm job instead
    (cluster mode: it starts later, on the node Slurm picks)."""
    if args.name_arg and args.name_opt and args.name_arg != args.name_opt:
        raise UsageError("Give the name once: as NAME or with --name.")
    name = args.name_arg or args.name_opt
    if not name:
        raise UsageError("Missing the container name (NAME or --name).")
    body = {
        "name": name,
        "image": args.image,
        "gpus": args.gpus,
        "mig": args.mig,
        "cpus": args.cpus,
        "memory": args.memory,
        "shm_size": args.shm_size,
        "disk": args.disk,
        "workspace": os.path.abspath(args.workspace) if args.workspace else None,
        "data": os.path.abspath(args.data) if args.data else None,
        "ports": args.ports,
        "queue": not args.no_wait,
        "borrow": args.borrow,
        "runtime_hours": args.runtime_hours,
    }
    client = Ds01Client()
    try:
        # One request for both (ds01d starts it too, and says so if only the start failed);
        # a queued one starts when its turn comes.
        status, info = client.call(
            "POST", "/v1/containers", body={**body, "start": True} if args.start else body
        )
    except ApiError as exc:
        if exc.error_kind != "slurm_job_required":
            raise
        _submit_job(args, body, exc.details["sbatch"])
        return True
    queued = status == 202
    if queued:
        info = _wait_in_queue(client, info, quiet=args.json)
    if render.emitted_json(args.json, info):
        return False
    devices = ", ".join(info["gpus"]) or "no GPU"
    equivalents = render.number(info["gpu_equivalents"])
    if queued:
        waited = info["waited_seconds"]
        render.ok(
            f"Started {info['name']} on {devices} ({equivalents} GPU-eq) after "
            f"{render.duration(waited)} in the queue."
        )
        return False
    verb = "Created and started" if args.start else "Created"
    render.ok(f"{verb} {info['name']} ({info['image']}) with {devices} ({equivalents} GPU-eq).")
    if info["ports"] and args.start:
        render.echo(f"  Ports: {_ports_text(info['ports'])}")
    if info.get("jupyter_url") and args.start:
        show_jupyter(info["name"], info["jupyter_url"])
    elif info.get("jupyter_url"):
        render.echo(f"  JupyterLab: {info['jupyter_url']}")
    if not args.start:
        render.echo(f"  Start it: container-start {info['name']}")
    return False


def _run_create_command(args: argparse.Namespace) -> None:
    _run_create(args)


def _submit_job(args: argparse.Namespace, body: dict[str, Any], options: list[str]) -> None:
    """Cluster mode: the create as a Slurm job of the user's (``ds01.cli.cluster``)."""
    from ds01.cli import cluster

    job = cluster.submit(body, options)
    name = body["name"]
    if render.emitted_json(args.json, {"name": name, "slurm_job": job, "sbatch": options}):
        return
    render.ok(f"Submitted {name} as Slurm job {job}: it starts on the node Slurm picks.")
    render.echo(f"  Follow it: squeue -n {name}   (PENDING: waiting, with Slurm's reason)")


def _configure_deploy(p: argparse.ArgumentParser) -> None:
    _configure_create(p)
    p.add_argument("--background", "-b", action="store_true", help="do not open a terminal in it")


def _run_deploy(args: argparse.Namespace) -> None:
    args.start = True
    if _run_create(args):
        return  # a Slurm job: no container to open yet
    name = args.name_arg or args.name_opt
    if args.background or args.json:
        if not args.json:
            render.echo(f"  Open a terminal in it: container-open {name}")
        return
    from ds01.cli import terminal

    code = terminal.run(name, [], None)
    render.echo(f"Left {name}; it keeps running. Back in: container-open {name}")
    raise SystemExit(code)


def _lifecycle(verb: str, method: str, action: str | None, past: str) -> Command:
    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME", help="container name")
        if verb == "remove":
            p.add_argument("--force", "-f", action="store_true", help="remove even if running")
        if verb == "start":
            p.add_argument(
                "--no-wait",
                action="store_true",
                help="fail (exit 3) if its GPUs were released and none are free, "
                "instead of waiting in the GPU queue",
            )
            p.add_argument(
                "--borrow",
                action="store_true",
                help="if its GPUs were released and you are over your GPU quota: borrow idle "
                "devices above it, if the server allows",
            )
        _user_flag(p)
        _json_flag(p)

    def run(args: argparse.Namespace) -> None:
        query = {
            "user": args.user,
            "force": getattr(args, "force", False),
            "queue": verb == "start" and not args.no_wait,
            "borrow": verb == "start" and args.borrow,
        }
        path = Ds01Client.container_path(args.name, action)
        client = Ds01Client()
        status, info = client.call(method, path, query=query)
        if status == 202:  # its devices were released and none are free: it waits
            info = _wait_in_queue(client, info, quiet=args.json)
        if args.json:
            render.emit_json(info)
        else:
            if info.get("already"):
                state = "running" if verb == "start" else "not running"
                render.ok(f"{info['name']} was {state} already; nothing to do.")
            else:
                render.ok(f"{past} {info['name']}.")
            if verb == "start" and info.get("ports"):
                render.echo(f"  Ports: {_ports_text(info['ports'])}")
            if verb == "start" and info.get("jupyter_url"):
                show_jupyter(info["name"], info["jupyter_url"])

    return Command(
        ("container", verb),
        f"container-{verb}",
        f"{verb.capitalize()} a container.",
        f"{verb.capitalize()} container NAME (yours; admins: USER's with --user).",
        configure,
        run,
    )


def _all_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all", "-a", dest="all_users", action="store_true", help="every user (admins)"
    )


def _configure_list(p: argparse.ArgumentParser) -> None:
    _all_flag(p)
    _user_flag(p)
    _json_flag(p)


def _run_list(args: argparse.Namespace) -> None:
    if cluster_views.enabled():
        cluster_views.run_list(args)
        return
    query = {"all": args.all_users, "user": args.user}
    rows = Ds01Client().request("GET", "/v1/containers", query=query)
    if render.emitted_json(args.json, rows):
        return
    if not rows:
        render.echo("No containers. Create one with `container-create NAME --image IMAGE`.")
        return
    headers = ["NAME", "STATUS", "IMAGE", "GPU-EQ", "GPUS"]
    if args.all_users:
        headers.insert(0, "USER")
    with_ports = any(r.get("ports") for r in rows)
    if with_ports:
        headers.append("PORTS")
    with_stops = any(r.get("stop_at") for r in rows)
    if with_stops:
        headers += ["IDLE", "STOP AT"]
    with_disk = any(r.get("disk_limit_bytes") for r in rows)
    if with_disk:
        headers.append("DISK")
    with_runtime = any(r.get("runtime_hours") for r in rows)
    if with_runtime:
        headers.append("RUNTIME")

    def status(r: dict[str, Any]) -> str:
        # Processes the kernel killed for lack of memory: "running (2 OOM kills)".
        kills = r.get("oom_kills") or 0
        shown = f"{r['status']}, borrowed" if r.get("borrowed") else str(r["status"])
        if not kills:
            return shown
        return f"{shown} ({kills} OOM kill{'s' if kills > 1 else ''})"

    render.table(
        headers,
        [
            ([r["user"]] if args.all_users else [])
            + [r["name"], status(r), r["image"], r["gpu_equivalents"], r["gpus"]]
            + ([_ports_text(r.get("ports") or [])] if with_ports else [])
            + (_stop_cells(r) if with_stops else [])
            + ([_disk_cell(r)] if with_disk else [])
            + ([_runtime_cell(r)] if with_runtime else [])
            for r in rows
        ],
    )
    for r in rows:
        if r.get("stop_at") or r.get("exempt_until"):
            render.echo(f"{r['name']}: {r['stop_reason']}")
    for r in rows:
        if r.get("jupyter_url"):
            render.echo(f"{r['name']}: JupyterLab at {r['jupyter_url']}")
    if any(r.get("oom_kills") for r in rows):
        render.echo(
            "OOM kill: the kernel killed a process for lack of memory (`--json` shows when and "
            "which limit: the container's own or your total)."
        )


# -- what a container prints and uses ------------------------------------------------------------


def _tail_lines(text: str) -> str:
    """``--tail``: checked here as ds01d checks it, so a bad value is a usage error (2)."""
    from ds01.cli.validators import log_tail

    try:
        return log_tail(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _configure_logs(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="your container")
    p.add_argument(
        "--follow", "-f", action="store_true",
        help="keep showing what it prints until it stops or Ctrl-C",
    )  # fmt: skip
    p.add_argument(
        "--tail", "-n", type=_tail_lines, default="all", metavar="N",
        help="only the last N lines (0 to 100000) [all]",
    )  # fmt: skip
    _user_flag(p)


def _run_logs(args: argparse.Namespace) -> None:
    r"""The container's output as it printed it, piped (``docker logs`` users expect the
    bytes); on a terminal its escape sequences and control characters shown as escapes
    (``\x1b``), never acted on: the program printing them may be anybody's (an admin's
    ``--user``, a web service logging what it was sent). Carriage returns are kept in one's
    own containers' output (progress bars redraw their line), shown as ``\x0d`` in another
    user's (they could hide what a line said before)."""
    from ds01.model.text import VisibleStream

    query = {"tail": args.tail, "follow": args.follow, "user": args.user}
    chunks = Ds01Client().stream("GET", Ds01Client.container_path(args.name, "logs"), query=query)
    out = sys.stdout.buffer
    shown = VisibleStream(returns=args.user is None) if sys.stdout.isatty() else None

    def write(chunk: bytes, final: bool = False) -> None:
        text = chunk if shown is None else shown.feed(chunk, final=final).encode()
        out.write(text)
        out.flush()  # as it comes: someone is watching

    try:
        for chunk in chunks:
            write(chunk)
        write(b"", final=True)
    except KeyboardInterrupt:  # the usual way to stop following: not an error
        raise SystemExit(int(ExitCode.OK)) from None
    finally:
        chunks.close()


def _configure_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name", metavar="NAME", nargs="?",
        help="one container, with its processes [all of yours]",
    )  # fmt: skip
    _user_flag(p)
    _json_flag(p)


def _run_stats(args: argparse.Namespace) -> None:
    client = Ds01Client()
    query = {"user": args.user}
    if args.name:
        rows = [client.request("GET", Ds01Client.container_path(args.name, "stats"), query=query)]
    else:
        rows = client.request("GET", "/v1/stats", query=query)
    if render.emitted_json(args.json, rows[0] if args.name else rows):
        return
    if not rows:
        render.echo("No containers. Create one with `container-create NAME --image IMAGE`.")
        return
    from ds01.core.disk import human_bytes

    def size(n: int | None) -> str | None:
        return None if n is None else human_bytes(n)

    def memory(r: dict[str, Any]) -> str | None:
        used, limit = size(r["memory_bytes"]), size(r["memory_limit_bytes"])
        return used if used is None or limit is None else f"{used}/{limit}"

    def gpu_use(g: dict[str, Any]) -> str:
        """``35%/2G`` for a device: utilisation and memory in use, ``-`` where not known."""
        busy = g["utilization_percent"]
        used = size(g["memory_used_bytes"])
        return f"{'-' if busy is None else render.number(busy) + '%'}/{used or '-'}"

    render.table(
        ["NAME", "STATUS", "CPU %", "MEMORY", "PIDS", "GPU USE/MEMORY"],
        [
            [
                r["name"],
                r["status"],
                r["cpu_percent"],
                memory(r),
                r["pids"],
                ",".join(gpu_use(g) for g in r["gpus"]) or None,
            ]
            for r in rows
        ],
    )
    if not args.name:
        return
    row = rows[0]
    if row["gpus"]:
        render.echo()
        render.table(
            ["GPU", "USE %", "MEMORY USED"],
            [
                [g["uuid"], g["utilization_percent"], size(g["memory_used_bytes"])]
                for g in row["gpus"]
            ],
        )
    if row["processes"]:
        render.echo()
        render.table(
            ["HOST PID", "USER", "CPU %", "MEMORY", "COMMAND"],
            [
                [p["host_pid"], p["user"], p["cpu_percent"], size(p["memory_bytes"]), p["command"]]
                for p in row["processes"]
            ],
        )


# -- the GPU queue ------------------------------------------------------------------------------


def _configure_queue(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("list", "cancel"), default="list")
    p.add_argument("request_id", nargs="?", metavar="ID", help="the request to cancel")
    _all_flag(p)
    p.add_argument("--explain", action="store_true", help="show each request's score, part by part")
    _json_flag(p)


def _run_queue(args: argparse.Namespace) -> None:
    if cluster_views.enabled():
        cluster_views.run_queue(args)
        return
    client = Ds01Client()
    if args.action == "cancel":
        if not args.request_id:
            raise UsageError("Which request? `ds01 queue cancel ID` (IDs: `ds01 queue`).")
        entry = client.request("DELETE", f"/v1/queue/{args.request_id}")
        if args.json:
            render.emit_json(entry)
        else:
            render.ok(f"Cancelled {entry['id']} ({entry['container']}, {entry['request']}).")
        return
    if args.request_id:
        raise UsageError("`ds01 queue` lists; to cancel: `ds01 queue cancel ID`.")
    rows = client.request("GET", "/v1/queue", query={"all": args.all_users})
    if render.emitted_json(args.json, rows):
        return
    if not rows:
        render.echo("The GPU queue is empty." if args.all_users else "You have nothing queued.")
        return
    headers = ["POS", "ID", "USER", "CONTAINER", "REQUEST", "WAITED", "STATUS"]
    table = [
        [
            r["position"],
            r["id"],
            r["user"],
            r["container"],
            r["request"],
            render.duration(r["waited_seconds"]),
            r["status"],
        ]
        for r in rows
    ]
    if args.explain:
        headers += ["SCORE", "PRIORITY", "FAIRSHARE", "AGE"]
        for row, r in zip(table, rows, strict=True):
            score = r.get("score") or {}
            row += [score.get(k) for k in ("total", "priority", "fairshare", "age")]
    render.table(headers, table)
    if args.explain:
        for r in rows:
            render.echo(f"{r['id']}: {r.get('reason') or '-'}")
        render.echo("score = priority + fair share (1 = no recent GPU use) + age; highest first.")


# -- GPUs, limits, images, config -------------------------------------------------------------


def _run_gpu_status(args: argparse.Namespace) -> None:
    if cluster_views.enabled():
        cluster_views.run_gpu_status(args)
        return
    status = Ds01Client().request("GET", "/v1/gpus")
    if render.emitted_json(args.json, status["devices"]):
        return
    if status["message"]:
        render.echo(status["message"])

    def holder(d: dict[str, Any]) -> str:
        if d["reserved"]:
            return "reserved"
        if not d["holder"]:
            return "free"
        container = d["holder"]["container"]  # another user's: not shown
        who = f"{d['holder']['user']}/{container}" if container else d["holder"]["user"]
        return f"{who} (borrowed)" if d["holder"].get("borrowed") else who

    def profile(d: dict[str, Any]) -> str | None:
        return f"{d['profile']} (on demand)" if d.get("on_demand") else d["profile"]

    def reservation(d: dict[str, Any]) -> str:
        """The reservation in force (``now:``) or the next one, ``-`` for none."""
        kept = d.get("reservations") or ()
        if not kept:
            return "-"
        r = kept[0]
        when = "now" if r["active"] else r["start"][:16].replace("T", " ")
        return f"{when}: {r['holder'] or 'maintenance'} until {r['end'][:16].replace('T', ' ')}"

    render.table(
        ["GPU", "KIND", "PROFILE", "GPU-EQ", "UUID", "HOLDER", "RESERVATION"],
        [
            [
                d["gpu_index"], d["kind"], profile(d), d["gpu_equivalents"], d["uuid"], holder(d),
                reservation(d),
            ]
            for d in status["devices"]
        ],
    )  # fmt: skip
    for gpu in status["unusable"]:
        render.echo(f"GPU {gpu['index']} ({gpu['uuid']}): unusable, {gpu['reason']}.")
    for d in status["devices"]:
        for p in d.get("unmanaged") or ():
            render.warn(f"Outside ds01 on GPU {d['gpu_index']} ({d['uuid']}): {_unmanaged(p)}.")
    render.echo(
        f"Allocated {render.number(status['allocated_gpu_equivalents'])} of "
        f"{render.number(status['total_gpu_equivalents'])} GPU-equivalents "
        f"({status['backend']} backend)."
    )
    if status.get("queued_requests"):
        render.echo(
            f"Queued: {status['queued_requests']} request(s) waiting for at least "
            f"{render.number(status['queued_gpu_equivalents'])} GPU-equivalents "
            "(`ds01 queue`)."
        )


def _unmanaged(process: dict[str, Any]) -> str:
    """A process outside ds01's allocation, for people."""
    who = f"pid {process['pid']} of {process['user'] or 'an unknown user'}"
    container = process["container"] or "(another user's)"
    where = {
        "host": "a host process, in no container",
        "not-held": f"in container {container}, which does not hold this device",
        "other-container": f"in container {container}, not made by ds01",
    }[process["reason"]]
    return f"{who}, {where}"


def _configure_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--explain", action="store_true", help="show where each value came from")
    _user_flag(p)
    _json_flag(p)


def _run_limits(args: argparse.Namespace) -> None:
    query = {"user": args.user, "explain": args.explain}
    result = Ds01Client().request("GET", "/v1/limits", query=query)
    if render.emitted_json(args.json, result):
        return
    render.echo(f"User {result['user']} (groups: {', '.join(result['groups']) or 'none'})")
    if args.explain:
        _explain_table(result["explain"])
    else:
        rows = [[k, _limit_shown(k, v, result)] for k, v in result["limits"].items()]
        render.table(["LIMIT", "VALUE"], rows)
    usage = result["usage"]
    holders = ", ".join(usage["gpu_containers"]) or "none"
    most = result["limits"].get("max_containers")
    of_most = "" if most is None else f" of {most}"
    render.echo(
        f"In use: {render.number(usage['gpu_equivalents'])} of "
        f"{render.limit_value(result['limits'].get('gpu_limit'))} GPU-equivalents "
        f"(held by: {holders}); {usage['containers']}{of_most} containers."
    )
    if usage.get("borrowed_gpu_equivalents"):
        render.echo(
            f"Borrowed above your quota: {render.number(usage['borrowed_gpu_equivalents'])} "
            "GPU-equivalents (stopped when someone within quota needs them)."
        )
    _echo_disk_use(result)
    _echo_reservation_limits(result.get("reservations") or {})


def _explain_table(explained: dict[str, dict[str, Any]]) -> None:
    """Each limit, its value and where it is set: the layer and the line of
    resource-limits.yaml, and on a Slurm cluster the QOS field that holds it there."""
    in_slurm = any(entry.get("slurm") for entry in explained.values())
    rows = []
    for key, entry in explained.items():
        where = entry["source"]
        if entry.get("line") is not None:
            where += f" (resource-limits.yaml:{entry['line']})"
        row = [key, render.limit_value(entry["value"]), where]
        rows.append([*row, entry.get("slurm") or "-"] if in_slurm else row)
    render.table(["LIMIT", "VALUE", "FROM", *(["IN SLURM"] if in_slurm else [])], rows)


def _limit_shown(key: str, value: Any, result: dict[str, Any]) -> str:
    """A limit's value, with what it comes to on this host where that is less."""
    host_cpus = result.get("host_cpus")
    if key == "cpu_limit" and host_cpus and value is not None and value > host_cpus:
        return f"{render.limit_value(value)} (this host has {host_cpus}: {host_cpus} in effect)"
    return render.limit_value(value)


def _configure_config_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="files to check")
    p.add_argument("--config-dir", help="directory to check [$DS01_CONFIG_DIR or /etc/ds01]")


def _daemon_directory(key: str, flag: str | None, env: str, default: str) -> tuple[str, str]:
    """The directory to check and why that one: the flag, the environment, else the one
    the running ds01d uses (it tells admins), else the default, said as such."""
    if flag:
        return flag, "from the command line"
    if os.environ.get(env):
        return os.environ[env], f"from ${env}"
    try:
        directories = Ds01Client().request("GET", "/v1/admin/directories")
    except Ds01Error:  # no daemon, or not an admin
        return default, "the default; ds01d did not say which it uses"
    return str(directories[key]), "the one ds01d uses"


def _run_config_check(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ds01.config.images import ImagesConfig
    from ds01.config.loader import load_config, load_file
    from ds01.paths import DEFAULT_CONFIG_DIR, ENV_CONFIG_DIR

    if args.files:
        targets = [Path(f) for f in args.files]
    else:
        directory, why = _daemon_directory(
            "config_dir", args.config_dir, ENV_CONFIG_DIR, DEFAULT_CONFIG_DIR
        )
        render.echo(f"Checking {directory} ({why}).")
        targets = [Path(directory)]
    failed = False
    for target in targets:
        try:
            if target.is_dir():
                config = load_config(target)
                for kind, source in config.sources.items():
                    render.ok(f"{kind}: {source}")
                _check_registry_presence(config.images)
            elif target.exists():
                model = load_file(target)
                render.ok(f"{target}: valid")
                if isinstance(model, ImagesConfig):
                    _check_registry_presence(model)
            else:
                raise UsageError(f"{target}: no such file or directory")
        except Ds01Error as exc:
            render.error(exc.message)
            failed = True
    if failed:
        raise SystemExit(int(ExitCode.USAGE))


def _check_registry_presence(images: ImagesConfig) -> None:
    """Warn about each image of ``images.yaml`` (the starter first) that is not on this
    machine. Only ds01d may ask Docker, so it is asked (as the admin running this); without
    it, say that presence was not checked. Warnings only: the file stays valid."""
    from ds01.core.image_presence import missing_images
    from ds01.errors import DaemonUnavailable

    entries = [(e.name, e.image) for e in images.images]
    if not entries:
        return
    try:
        present = Ds01Client().request(
            "GET",
            "/v1/admin/images/present",
            query={"refs": ",".join(sorted({image for _, image in entries}))},
        )["present"]
    except DaemonUnavailable:
        render.warn(
            "images: whether the registry's images are on this machine was not checked: "
            "ds01d does not answer (`ds01 admin doctor` checks it once ds01d runs)."
        )
        return
    except ApiError as exc:
        render.warn(
            f"images: whether the registry's images are here was not checked: {exc.message}"
        )
        return
    missing = missing_images(entries, images.starter, lambda image: bool(present.get(image)))
    for image in missing:
        render.warn(f"{image.message} Fix: {image.hint}")
    if not missing:
        render.ok(f"images: all {len(entries)} images of images.yaml are on this machine")


def _configure_audit_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-dir", help="log directory [$DS01_LOG_DIR or /var/log/ds01]")
    _json_flag(p)


def _run_audit_verify(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ds01.errors import NotFound, PermissionDenied
    from ds01.events.verify import verify
    from ds01.paths import DEFAULT_LOG_DIR, ENV_LOG_DIR, EVENTS_FILE

    directory, why = _daemon_directory("log_dir", args.log_dir, ENV_LOG_DIR, DEFAULT_LOG_DIR)
    log_dir = Path(directory)
    if not args.json:
        render.echo(f"Verifying the event log in {log_dir} ({why}).")
    try:
        report = verify(log_dir)
    except FileNotFoundError:
        raise NotFound(f"No log directory {log_dir}: give it with --log-dir.") from None
    except PermissionError as exc:
        raise PermissionDenied(
            f"Cannot read {exc.filename or log_dir}: the event log is readable by root and "
            "the admin group only."
        ) from None
    if not report.files:
        raise NotFound(f"No event log in {log_dir} ({EVENTS_FILE}): give the right --log-dir.")
    if args.json:
        render.emit_json(report.to_dict())
    elif report.ok:
        render.ok(report.summary() + f" (starts at {report.chain_start}).")
    else:
        shown = 20
        for problem in report.problems[:shown]:
            render.echo(f"Tampered: {problem}")
        if len(report.problems) > shown:
            render.echo(f"… and {len(report.problems) - shown} more (--json lists them all).")
    if not report.ok:
        raise SystemExit(int(ExitCode.ERROR))


def _configure_exempt(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", metavar="USER", help="whose containers")
    p.add_argument("--container", "-c", metavar="NAME", help="only this container of theirs")
    p.add_argument("--hours", type=positive_number, required=True, help="for how long")
    p.add_argument("--reason", required=True, help="why (the user sees it)")
    _json_flag(p)


def _run_exempt(args: argparse.Namespace) -> None:
    body = {
        "user": args.user,
        "container": args.container,
        "hours": args.hours,
        "reason": args.reason,
    }
    granted = Ds01Client().request("POST", "/v1/admin/exemptions", body=body)
    if render.emitted_json(args.json, granted):
        return
    what = f"{granted['user']}'s {granted['container'] or 'containers'}"
    render.ok(
        f"Exempted {what} from idle and runtime limits until {granted['until']} ({granted['id']})."
    )


def _run_exemptions(args: argparse.Namespace) -> None:
    rows = Ds01Client().request("GET", "/v1/admin/exemptions")
    if render.emitted_json(args.json, rows):
        return
    if not rows:
        render.echo("No exemptions in force.")
        return
    render.table(
        ["ID", "USER", "CONTAINER", "UNTIL", "BY", "REASON"],
        [
            [
                r["id"],
                r["user"],
                r["container"] or "(all)",
                r["until"],
                r["created_by"],
                r["reason"],
            ]
            for r in rows
        ],
    )


def _configure_unexempt(p: argparse.ArgumentParser) -> None:
    p.add_argument("exemption_id", metavar="ID", help="from `ds01 admin exemptions`")
    _json_flag(p)


def _run_unexempt(args: argparse.Namespace) -> None:
    revoked = Ds01Client().request("DELETE", f"/v1/admin/exemptions/{args.exemption_id}")
    if args.json:
        render.emit_json(revoked)
    else:
        render.ok(f"Revoked exemption {revoked['id']} of {revoked['user']}.")


def _configure_maintenance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="change nothing; tell what and why")
    _json_flag(p)


def _run_maintenance(args: argparse.Namespace) -> None:
    report = Ds01Client().request("POST", "/v1/admin/maintenance", query={"dry_run": args.dry_run})
    if render.emitted_json(args.json, report):
        return
    verb = "Would do" if report["dry_run"] else "Done"
    acted = [c for c in report["containers"] if c["actions"]]
    for c in report["containers"]:
        render.echo(f"{c['user']}/{c['name']} ({c['status']}): {c['reason']}")
        for action in c["actions"]:
            render.echo(f"  {verb}: {action}")
    if not report["containers"]:
        render.echo("No containers to look at.")
    render.echo(f"{len(acted)} container(s) acted on{' (dry run)' if report['dry_run'] else ''}.")


def _configure_retire(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="your container")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument(
        "--keep-as", metavar="IMAGE", help="first keep what you installed in it as your IMAGE"
    )
    keep.add_argument("--discard", action="store_true", help="keep nothing but /workspace")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _user_flag(p)
    _json_flag(p)


def _run_retire(args: argparse.Namespace) -> None:
    keep_as = args.keep_as
    interactive = sys.stdin.isatty() and not args.json
    if keep_as is None and not args.discard:
        if not interactive:
            raise UsageError(
                "Say whether to keep what you installed: --keep-as IMAGE or --discard."
            )
        answer = (
            input(f"Keep what you installed in {args.name} as an image of yours? [y/N] ")
            .strip()
            .lower()
        )
        if answer in ("y", "yes"):
            keep_as = input(f"Image name [{args.name.lower()}]: ").strip() or args.name.lower()
    if not args.yes and not interactive:
        raise UsageError(
            f"container-retire removes {args.name}; without a terminal to confirm on, add --yes."
        )
    if not args.yes:
        answer = (
            input(f"Remove {args.name} now (its GPUs are freed; /workspace is kept)? [y/N] ")
            .strip()
            .lower()
        )
        if answer not in ("y", "yes"):
            render.echo("Nothing changed.")
            return
    body = {"keep_as": keep_as, "user": args.user}
    result = Ds01Client().request("POST", Ds01Client.container_path(args.name, "retire"), body=body)
    if render.emitted_json(args.json, result):
        return
    if result["kept_image"]:
        render.ok(f"Kept as {result['kept_image']}: `container-create NAME --image "
                  f"{result['kept_image']}` brings it back.")  # fmt: skip
    render.ok(f"Retired {result['container']['name']}; its devices are free.")


def _configure_open(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="your container (started first if stopped)")
    p.add_argument(
        "program", nargs=argparse.REMAINDER, metavar="-- COMMAND",
        help="what to run instead of a login shell",
    )  # fmt: skip
    _user_flag(p)


def _run_open(args: argparse.Namespace) -> None:
    from ds01.cli import terminal  # termios and tty only when used

    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if cluster_views.enabled():
        cluster_views.run_open(args.name, program, args.user)
    raise SystemExit(terminal.run(args.name, program, args.user))


def _run_whoami(args: argparse.Namespace) -> None:
    me = Ds01Client().request("GET", "/v1/whoami")
    if render.emitted_json(args.json, me):
        return
    role = "admin" if me["is_admin"] else "user"
    render.echo(f"{me['user']} (uid {me['uid']}, {role}; groups: {', '.join(me['groups'])})")


COMMANDS: tuple[Command, ...] = (
    Command(
        ("container", "create"),
        "container-create",
        "Allocate devices and create a container.",
        "Create container NAME from IMAGE (a name of `image-list`), with GPUs within your\n"
        "quota.\n\n"
        "examples:\n"
        "  container-create thesis --image IMAGE --gpus 1\n"
        "  container-create notebook --image IMAGE --mig 3g.20gb --start",
        _configure_create,
        _run_create_command,
    ),
    _lifecycle("start", "POST", "start", "Started"),
    Command(
        ("container", "deploy"),
        "container-deploy",
        "Create, start and open a container in one step.",
        "Create container NAME (waiting in the GPU queue if no device is free), start it and\n"
        "open a terminal in it (--background: none). IMAGE: a name of `image-list`.\n\n"
        "examples:\n"
        "  container-deploy thesis --image IMAGE --gpus 1\n"
        "  container-deploy notebook --image IMAGE --mig 3g.20gb --background",
        _configure_deploy,
        _run_deploy,
    ),
    Command(
        ("container", "retire"),
        "container-retire",
        "Remove a container for good, optionally keeping its packages.",
        "Retire container NAME: stop and remove it, freeing its GPUs at once; --keep-as IMAGE\n"
        "first keeps what you installed in it (packages, tools) as an image of yours.\n"
        "Your /workspace is never touched.\n\n"
        "examples:\n"
        "  container-retire thesis --keep-as thesis-env\n"
        "  container-retire scratch --discard --yes",
        _configure_retire,
        _run_retire,
    ),
    Command(
        ("container", "open"),
        "container-open",
        "A terminal in your container, as you.",
        "Open a terminal in your container NAME, as your own user, in /workspace (started\n"
        "first if it is stopped). Exit the shell (or the COMMAND ends) to leave; the exit\n"
        "status is the command's. Also as `container-attach`.\n\n"
        "examples:\n"
        "  container-open thesis\n"
        "  container-open thesis -- python train.py",
        _configure_open,
        _run_open,
    ),
    _lifecycle("stop", "POST", "stop", "Stopped"),
    _lifecycle("remove", "DELETE", None, "Removed"),
    Command(
        ("container", "list"),
        "container-list",
        "List your containers.",
        "List your containers with their status, image and GPU devices.",
        _configure_list,
        _run_list,
    ),
    Command(
        ("container", "logs"),
        "container-logs",
        "What a container printed: why it did not come up.",
        "Show what your container NAME printed (its programs' output and errors), all of it\n"
        "or the last N lines; --follow keeps showing new output until it stops or Ctrl-C.\n"
        "On a terminal, escape sequences and control characters show as escapes (\\x1b),\n"
        "never acted on (carriage returns too, in another user's output); piped, the bytes\n"
        "come as printed.\n\n"
        "examples:\n"
        "  container-logs notebook --tail 50\n"
        "  container-logs thesis -f",
        _configure_logs,
        _run_logs,
    ),
    Command(
        ("container", "stats"),
        "container-stats",
        "What your containers use now: CPU, memory, processes, GPUs.",
        "Show what your containers use now: CPU, memory, processes and their GPUs' use.\n"
        "With NAME: that container, with its processes.\n\n"
        "examples:\n"
        "  container-stats\n"
        "  container-stats thesis --json",
        _configure_stats,
        _run_stats,
    ),
    Command(
        ("queue",),
        None,
        "Your waiting GPU requests; cancel one.",
        "List your requests waiting for GPUs, in queue order (admins: --all for everyone's),\n"
        "or cancel one.\n\n"
        "examples:\n"
        "  ds01 queue --explain      # positions and each score's parts\n"
        "  ds01 queue cancel 3f2a9c1b7e40",
        _configure_queue,
        _run_queue,
    ),
    *RESERVATION_COMMANDS,
    *JOB_COMMANDS,
    Command(
        ("gpu", "status"),
        "gpu-status",
        "Every GPU device and who holds it.",
        "Show every GPU device (whole GPUs and MIG slices) and who holds it.",
        _json_flag,
        _run_gpu_status,
    ),
    Command(
        ("dashboard",),
        "ds01-dashboard",
        "The machine at a glance, live: GPUs, containers, queue, quota.",
        dashboard.DESCRIPTION,
        dashboard.configure,
        dashboard.run,
    ),
    Command(
        ("limits",),
        "check-limits",
        "Your resolved limits and current usage.",
        "Show your limits (user, then groups, then defaults) and what you use now.",
        _configure_limits,
        _run_limits,
    ),
    *IMAGE_COMMANDS,
    *EVENT_COMMANDS,
    Command(
        ("config", "check"),
        None,
        "Validate configuration files.",
        "Validate FILEs (or every file of the config directory) without applying them.",
        _configure_config_check,
        _run_config_check,
    ),
    Command(
        ("audit", "verify"),
        None,
        "Check the event log for edited, removed or reordered lines.",
        "Check the hash chain of the event log (events.jsonl and its rotated files) and name\n"
        "every edited, removed or reordered line. Reads the files directly: run it as root\n"
        "or as a member of the admin group. Exit code 1 if the log was tampered with.\n\n"
        "examples:\n"
        "  ds01 audit verify\n"
        "  ds01 audit verify --log-dir /var/log/ds01 --json",
        _configure_audit_verify,
        _run_audit_verify,
    ),
    *ADMIN_COMMANDS,
    *SLURM_COMMANDS,
    Command(
        ("maintenance", "run"),
        None,
        "One lifecycle pass now: idle and runtime stops, cleanup (admins).",
        "Run one pass of the lifecycle loop now, as ds01d does every lifecycle_interval_seconds:\n"
        "warn and stop idle or over-long containers, remove stale ones (admins). --dry-run\n"
        "changes nothing and tells what it would do and why, for every container.",
        _configure_maintenance,
        _run_maintenance,
    ),
    Command(
        ("admin", "exempt"),
        None,
        "Exempt a user's containers from idle and runtime limits, for a while.",
        "Exempt USER's containers (or one, with --container) from idle and runtime limits\n"
        "for --hours, with a reason the user sees (admins).\n\n"
        "examples:\n"
        "  ds01 admin exempt alice --hours 72 --reason 'thesis deadline'\n"
        "  ds01 admin exempt bob --container train --hours 12 --reason 'long eval run'",
        _configure_exempt,
        _run_exempt,
    ),
    *REPORT_COMMANDS,
    Command(
        ("admin", "exemptions"),
        None,
        "Exemptions in force.",
        "List the exemptions from idle and runtime limits in force (admins).",
        _json_flag,
        _run_exemptions,
    ),
    Command(
        ("admin", "unexempt"),
        None,
        "Revoke an exemption.",
        "Revoke exemption ID (admins).",
        _configure_unexempt,
        _run_unexempt,
    ),
    Command(
        ("whoami",),
        None,
        "Who ds01d sees you as.",
        "Show the user, groups and admin status ds01d derives from your connection.",
        _json_flag,
        _run_whoami,
    ),
    Command(
        ("simulate",),
        None,
        "Replay a workload trace through the GPU queue: fair share vs first come first served.",
        "Replay TRACE.csv (submit_hours,user,group,gpus,mig,duration_hours,idle_tail_hours)\n"
        "through the GPU queue on a virtual clock, under the scheduler: section of\n"
        "resource-limits.yaml and under strict first come first served, and compare waits,\n"
        "GPU utilisation, idle GPU-hours and fairness per group. Runs locally, no daemon.\n\n"
        "examples:\n"
        "  ds01 simulate examples/traces/lab-week.csv --config-dir examples/traces\n"
        "  ds01 simulate trace.csv --config-dir /etc/ds01 --policy fair --json",
        _lazy("ds01.sim.cli", "configure"),
        _lazy("ds01.sim.cli", "run"),
    ),
    Command(
        ("project", "init"),
        "project-init",
        "Scaffold a project: directories, Dockerfile, pyproject.toml, git.",
        "Create project NAME in ./NAME (or --dir DIR): directories, README.md, pyproject.toml\n"
        "with [tool.ds01], requirements.txt, .gitignore, git init, and a four-phase\n"
        "Dockerfile from an image of this site's registry. Never overwrites without --force.\n\n"
        "examples:\n"
        "  project-init thesis --type cv\n"
        "  project-init chatbot --type nlp --framework tensorflow --dir ~/workspace/chatbot",
        _lazy("ds01.cli.project", "configure"),
        _lazy("ds01.cli.project", "run"),
    ),
    Command(
        ("project", "launch"),
        "project-launch",
        "Build a project's image if needed and deploy it, the project at /workspace.",
        "Build the image named in DIR/pyproject.toml's [tool.ds01] (through ds01d, as\n"
        "image-build does) unless it exists, then deploy a container from it with DIR mounted\n"
        "at /workspace and the project's GPUs: created, started and opened.\n\n"
        "examples:\n"
        "  project-launch ~/workspace/thesis\n"
        "  project-launch . --mig 1g.10gb --background",
        _lazy("ds01.cli.project", "configure_launch"),
        _lazy("ds01.cli.project", "run_launch"),
    ),
    Command(
        ("user", "setup"),
        "user-setup",
        "Set up your account: workspace, SSH, VS Code and a JupyterLab to start with.",
        "Set up your account (safe to re-run): ~/workspace, SSH, files for your laptop,\n"
        "and a JupyterLab container on the smallest free GPU device; prints its URL.\n\n"
        "examples:\n"
        "  user-setup\n"
        "  user-setup --yes --add-ssh-key ~/laptop-key.pub --host gpu1.lab.example.org",
        _lazy("ds01.cli.user_setup", "configure"),
        _lazy("ds01.cli.user_setup", "run"),
    ),
)

GROUP_HELP = {
    "container": "create, start, stop, remove and list your containers; their output and use",
    "gpu": "GPU devices",
    "image": "container images",
    "config": "configuration (admins)",
    "admin": "administration (admins)",
    "maintenance": "the lifecycle loop on demand (admins)",
    "audit": "the tamper-evident event log (admins)",
    "project": "your projects: scaffold one, launch it",
    "user": "your account: set it up",
    "job": "batch work on a Slurm cluster: a command run to completion in a container",
}


def _parser(prog: str, description: str) -> ArgumentParser:
    return ArgumentParser(
        prog=prog,
        description=description,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=tiers.RawDescriptionFormatter,
    )


def _add(subparsers: LazySubParsers, name: str, command: Command) -> None:
    """Add ``command`` as ``name``, its parser made when a command line picks it."""
    subparsers.add_lazy(
        name,
        command.summary,
        functools.partial(_setup, command=command),
        description=command.description,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=tiers.HelpFormatter,
        add_help=False,
    )


def _setup(parser: argparse.ArgumentParser, command: Command) -> None:
    """The help tiers (``--help``, ``--info``, ``--concepts``, ``--guided``; texts in
    ``ds01.cli.help_texts``), then the command's own arguments."""
    tiers.add_flags(parser)
    command.configure(parser)
    parser.set_defaults(command=command)


def _setup_group(parser: ArgumentParser, commands: list[Command]) -> None:
    """The verbs of one command group (``ds01 container …``)."""
    verbs = parser.add_commands(metavar="VERB", required=True)
    for command in commands:
        _add(verbs, command.path[1], command)


def build_parser() -> ArgumentParser:
    """The whole ``ds01`` tree. A command's parser is made only when a command line picks
    it (``LazySubParsers``): making sixty would double the time of ``ds01 --help``."""
    root = _parser("ds01", "ds01: your share of this machine's GPUs, in containers.")
    root.add_argument("--version", action="version", version=f"ds01 {__version__}")
    nouns = root.add_commands(metavar="COMMAND", required=True)
    groups: dict[str, list[Command]] = {}
    for command in COMMANDS:
        if len(command.path) == 1:
            _add(nouns, command.path[0], command)
            continue
        noun = command.path[0]
        if noun not in groups:
            groups[noun] = []
            nouns.add_lazy(
                noun,
                GROUP_HELP[noun],
                functools.partial(_setup_group, commands=groups[noun]),
                description=GROUP_HELP[noun],
                formatter_class=tiers.GroupFormatter,
            )
        groups[noun].append(command)
    return root


def _execute(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    as_json = _wants_json(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)  # --guided runs the command from in here
        args.command.run(args)
    except BrokenPipeError:
        render.reader_gone()
    except ApiError as exc:
        _report(exc, exc.code, exc.error_kind, as_json)
    except UsageError as exc:
        if exc.usage and not as_json:
            render.echo(exc.usage.rstrip(), err=True)
        _report(exc, exc.exit_code, "usage", as_json)
    except Ds01Error as exc:
        _report(exc, exc.exit_code, getattr(exc, "kind", "error"), as_json)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for JSON (before a ``--`` that starts a program's own
    arguments, as in ``container-open NAME -- cmd --json``)."""
    own = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in own


def _report(error: Ds01Error, code: int, kind: str, as_json: bool) -> NoReturn:
    """Say what went wrong on stderr, in words or (under ``--json``) as one JSON object:
    ``{"error": MESSAGE, "exit_code": N, "kind": KIND, "details": {...}}``; then exit."""
    render.fail(error.message, int(code), kind, error.details, as_json)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ds01``."""
    _execute(build_parser(), argv)


def run_alias(
    alias: str,
    argv: list[str] | None = None,
    *,
    run: Callable[[argparse.Namespace], None] | None = None,
) -> None:
    """Entry point of a hyphenated command, e.g. ``container-create``; ``run`` does its work
    instead of the table's (``ds01-dashboard`` runs itself where ``ds01 dashboard`` execs)."""
    command = next(c for c in COMMANDS if c.alias == alias)
    if run is not None:
        path, summary, description = command.path, command.summary, command.description
        command = Command(path, alias, summary, description, command.configure, run)
    _execute(command_parser(alias, command), argv)


def command_parser(prog: str, command: Command) -> argparse.ArgumentParser:
    """A parser of ``command`` alone, named ``prog`` (as the hyphenated commands have)."""
    parser = ArgumentParser(
        prog=prog,
        description=command.description,
        epilog=EXIT_CODES_EPILOG,
        formatter_class=tiers.HelpFormatter,
        add_help=False,
    )
    _setup(parser, command)
    return parser
