"""``ds01 dashboard``: the dashboard's arguments, and a hand-over to ``ds01-dashboard``.

The dashboard itself (``ds01.tui``) sits above the CLI: it takes its arguments and its help
tiers from here and its client from ``ds01.cli.client``. The CLI never imports it; ``ds01
dashboard ARGS`` replaces its own process with ``python -m ds01.tui ARGS``, the program that
``ds01-dashboard`` is. Standard library only, imported at the CLI's start-up.
"""

from __future__ import annotations

import argparse
import os
import sys

#: ``--help``'s text (keys, views and more examples: ``--info``, in ``ds01.cli.help_texts``).
DESCRIPTION = """\
The machine at a glance, live: GPU allocation, every device with its holder, your
containers with their idle time and time to cleanup, the GPU queue, usage against quota.
Keys: s sort, u filter by user, enter details, r refresh, q quit.
On a Slurm cluster's login node (DS01_CLUSTER=slurm): the whole cluster from Slurm
(nodes and who holds their GPUs, every container with its node, pending jobs with the reason).

examples:
  ds01-dashboard
  ds01-dashboard --once --sort cleanup"""

#: The containers' sort columns, in the order the ``s`` key cycles through them
#: (``ds01.tui.frame.SORTS`` has their keys).
SORT_NAMES = ("user", "name", "state", "gpu-eq", "gpu%", "idle", "cleanup")


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


def dashboard_argv(args: argparse.Namespace) -> list[str]:
    """The ``ds01-dashboard`` arguments that say what ``args`` (parsed by ``configure``) say."""
    argv = ["--once"] if args.once else []
    argv += ["--json"] if args.json else []
    argv += ["--interval", repr(args.interval), "--sort", args.sort]
    return argv + (["--user", args.user] if args.user else [])


def run(args: argparse.Namespace) -> None:
    """Become ``ds01-dashboard`` with the same arguments (this process ends here)."""
    sys.stdout.flush()
    python = sys.executable
    # Our own interpreter, our own package: no shell, no PATH lookup, and -I so that a
    # `ds01/` in the current directory (a checkout, say) is not what runs.
    os.execv(python, [python, "-I", "-m", "ds01.tui", *dashboard_argv(args)])  # noqa: S606


__all__ = ["DESCRIPTION", "SORT_NAMES", "configure", "dashboard_argv", "run"]
