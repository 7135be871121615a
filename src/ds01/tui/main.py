"""``ds01-dashboard``: the machine at a glance, live (textual), or one frame as text.

The live view asks ds01d for ``GET /v1/overview`` every ``--interval`` seconds (2) in a
worker thread, so the screen never waits for the daemon. ``--once`` prints one frame as
plain text and exits (for scripts and tests); ``--json`` prints the overview itself.

Start-up: this module imports only the standard library's ``argparse``, ``os`` and ``sys``;
the client and the frame model are imported when a frame is fetched, textual (half a
second of imports) only for the live view. So ``--help`` is as quick as any ds01 command.
"""

from __future__ import annotations

import argparse
import sys

from ds01.tui import SORT_NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: Seconds to wait for ds01d's answer before a refresh counts as failed.
REQUEST_TIMEOUT_S = 15.0

#: ``--help``'s text (keys, views and more examples: ``--info``, in ``ds01.cli.help_texts``).
DESCRIPTION = """\
The machine at a glance, live: GPU allocation, every device with its holder, your
containers with their idle time and time to cleanup, the GPU queue, usage against quota.
Keys: s sort, u filter by user, enter details, r refresh, q quit.

examples:
  ds01-dashboard
  ds01-dashboard --once --sort cleanup"""


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0.2 to 3600 seconds: {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``ds01-dashboard`` (its entry in ``ds01.cli.main.COMMANDS``)."""
    parser.add_argument("--once", action="store_true", help="print one frame as text and exit")
    parser.add_argument(
        "--json", action="store_true", help="print the overview as JSON and exit (implies --once)"
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes of the live view [2]",
    )
    parser.add_argument(
        "--sort", choices=SORT_NAMES, default=SORT_NAMES[0], help="sort the containers by"
    )
    parser.add_argument("--user", metavar="USER", help="show only USER's containers and usage")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``ds01-dashboard``, help tiers included."""
    from ds01.cli.main import COMMANDS, command_parser

    command = next(c for c in COMMANDS if c.alias == "ds01-dashboard")
    return command_parser("ds01-dashboard", command)


def fetcher(timeout: float = REQUEST_TIMEOUT_S) -> Callable[[], Any]:
    """A function that asks ds01d for the overview (``$DS01_SOCKET`` or the default)."""
    from ds01.cli.client import Ds01Client

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

    run_alias("ds01-dashboard", argv)


__all__ = ["build_parser", "configure", "fetcher", "main", "print_once", "run"]
