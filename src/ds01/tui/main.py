"""``ds01-dashboard``: the machine at a glance, live (textual), or one frame as text.

The live view asks ds01d for ``GET /v1/overview`` every ``--interval`` seconds (2) in a
worker thread, so the screen never waits for the daemon. ``--once`` prints one frame as
plain text and exits (for scripts and tests); ``--json`` prints the overview itself.

On a Slurm cluster's login node (``DS01_CLUSTER=slurm``) the overview is the cluster's,
read from Slurm as the user (``scontrol show node -d``, ``squeue``), as ``gpu-status`` and
``ds01 queue`` read it there (``cluster_fetcher``); no ds01d is asked.

Start-up: this module imports only the standard library's ``argparse`` and ``sys`` (and its
arguments, from ``ds01.cli.dashboard``);
the client and the frame model are imported when a frame is fetched, textual (half a
second of imports) only for the live view. So ``--help`` is as quick as any ds01 command.
"""

from __future__ import annotations

import argparse
import sys
import time

from ds01.cli.dashboard import DESCRIPTION as DESCRIPTION
from ds01.cli.dashboard import configure as configure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: Seconds to wait for ds01d's answer before a refresh counts as failed.
REQUEST_TIMEOUT_S = 15.0


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``ds01-dashboard``, help tiers included."""
    from ds01.cli.main import COMMANDS, command_parser

    command = next(c for c in COMMANDS if c.alias == "ds01-dashboard")
    return command_parser("ds01-dashboard", command)


def cluster_fetcher() -> Callable[[], Any]:
    """A function that reads the cluster's overview from Slurm, as the calling user
    (``ds01.core.slurm_view.cluster_overview``): every node, every container Slurm lets
    them see."""
    import getpass
    from datetime import datetime, timezone

    from ds01.core.slurm_view import cluster_overview, parse_containers, parse_nodes
    from ds01.runtime.slurm import cluster_containers, show_nodes

    user = getpass.getuser()

    def fetch() -> Any:
        nodes = parse_nodes(show_nodes())
        containers = parse_containers(cluster_containers(), time.time())
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cluster_overview(nodes, containers, user, at)

    return fetch


def fetcher(timeout: float = REQUEST_TIMEOUT_S) -> Callable[[], Any]:
    """A function that asks ds01d for the overview (``$DS01_SOCKET`` or the default); on a
    Slurm cluster's login node, one that reads the cluster's from Slurm."""
    from ds01.cli import cluster_views
    from ds01.cli.client import Ds01Client

    if cluster_views.enabled():
        return cluster_fetcher()

    client = Ds01Client(timeout=timeout)
    return lambda: client.request("GET", "/v1/overview")


def _ascii_only(stream: Any) -> bool:
    """Whether ``stream`` cannot take the usage bar's block characters."""
    try:
        "█░".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return True
    return False


def print_once(fetch: Callable[[], Any], args: argparse.Namespace) -> None:
    overview = fetch()
    if args.json:
        import json

        sys.stdout.write(json.dumps(overview, indent=2) + "\n")
        return
    from ds01.tui.frame import View, build_frame, render_text

    frame = build_frame(overview, View(sort=args.sort, user=args.user))
    sys.stdout.write(render_text(frame, ascii_only=_ascii_only(sys.stdout)))


def run_live(fetch: Callable[[], Any], args: argparse.Namespace) -> None:
    from ds01.tui.app import DashboardApp
    from ds01.tui.frame import View

    DashboardApp(fetch, interval=args.interval, view=View(sort=args.sort, user=args.user)).run()


def run(args: argparse.Namespace) -> None:
    """Show the dashboard: one frame (``--once``, ``--json``) or the live view."""
    from ds01.errors import InvalidInput

    once = args.once or args.json
    if not once and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InvalidInput("The live view needs a terminal; use --once (text) or --json.")
    if once:
        print_once(fetcher(), args)
    else:
        run_live(fetcher(), args)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ds01-dashboard`` (errors, exit codes and help tiers as every ds01
    command has them)."""
    from ds01.cli.main import run_alias

    run_alias("ds01-dashboard", argv, run=run)


__all__ = ["build_parser", "cluster_fetcher", "configure", "fetcher", "main", "print_once", "run"]
