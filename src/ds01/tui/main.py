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
import os
import sys

from ds01.tui import SORT_NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: Seconds to wait for ds01d's answer before a refresh counts as failed.
REQUEST_TIMEOUT_S = 15.0

DESCRIPTION = """\
The machine at a glance: GPU allocation (devices and GPU-equivalents), every device with
its holder, utilisation and memory, containers with their idle time and time to cleanup,
the GPU queue, and usage against quota. Refreshes every 2 seconds.

Admins see everyone. A user sees every device (another user's device by that user's name
only) and their own containers, queue requests and usage.

Keys: s sort the containers (user, name, state, gpu-eq, gpu%, idle, cleanup),
u filter by user (empty: everyone), enter or d a container's details,
r refresh now, q quit.

Examples:
  ds01-dashboard                    live view
  ds01-dashboard --once             one frame as text
  ds01-dashboard --once --sort cleanup --user alice
  ds01-dashboard --json             the overview as JSON (GET /v1/overview)"""

EPILOG = "Exit codes: 0 ok, 1 error (ds01d unreachable), 2 usage, 5 permission."


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0.2 to 3600 seconds: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ds01-dashboard",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    return parser


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ds01-dashboard``."""
    parser = build_parser()
    args = parser.parse_args(argv)  # --help ends here, before any other import
    from ds01.cli.client import ApiError
    from ds01.errors import Ds01Error

    once = args.once or args.json
    if not once and not (sys.stdin.isatty() and sys.stdout.isatty()):
        parser.error("the live view needs a terminal; use --once (text) or --json")
    try:
        if once:
            print_once(fetcher(), args)
        else:
            run_live(fetcher(), args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except ApiError as exc:  # the daemon's refusal, with the exit code it chose
        sys.stderr.write(f"Error: {exc.message}\n")
        raise SystemExit(int(exc.code)) from None
    except Ds01Error as exc:
        sys.stderr.write(f"Error: {exc.message}\n")
        raise SystemExit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


__all__ = ["build_parser", "fetcher", "main", "print_once"]
