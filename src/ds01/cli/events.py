"""``ds01 events``: the audit log's events that concern you (admins: anyone's).

A client of ``GET /v1/events`` (``ds01.daemon.events_view``): filters by user (admins),
action, container and time; ``--follow`` long-polls for new events with ``after_seq`` until
Ctrl-C; ``--json`` prints one JSON object a line (JSON Lines), also when following.

Imported at every start of the CLI (the command table), so standard library only at module
level; ``ds01.core.event_query`` parses the times when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from ds01.cli import render
from ds01.cli.client import Ds01Client
from ds01.cli.command import Command
from ds01.errors import InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Events shown when nothing else is asked: the newest ones.
DEFAULT_LIMIT = 50
#: Events shown before following new ones, like ``tail -f``.
FOLLOW_BACKLOG = 10
#: Seconds one long poll of ``--follow`` may block in the daemon.
POLL_SECONDS = 30
#: Width of the DETAILS column on a terminal (``--wide`` and pipes: no limit).
DETAILS_WIDTH = 60


def parse_time(text: str, option: str) -> str:
    """``--since``/``--until`` as ISO 8601 UTC; local time when no offset is given."""
    from datetime import datetime, timezone

    from ds01.core.event_query import parse_when

    try:
        moment = parse_when(text, datetime.now(timezone.utc), tz=None)  # local time
    except ValueError as exc:
        raise InvalidInput(f"{option}: {exc}") from None
    return moment.isoformat()


def _limit(text: str) -> int:
    if not (text.isdigit() and 1 <= int(text) <= 10_000):
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 10000, got {text!r}")
    return int(text)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--action",
        "-a",
        dest="actions",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only these actions: container.create, container (every container.*), *.denied "
        "(repeatable, or comma-separated)",
    )
    p.add_argument("--container", "-c", metavar="NAME", help="only events about container NAME")
    p.add_argument(
        "--since", metavar="WHEN", help="from WHEN: 2h, 3d, 2026-11-28, 2026-11-28T14:00"
    )
    p.add_argument("--until", metavar="WHEN", help="before WHEN (same forms)")
    p.add_argument(
        "--limit",
        "-n",
        type=_limit,
        metavar="N",
        help=f"the newest N events [{DEFAULT_LIMIT}; {FOLLOW_BACKLOG} with --follow]",
    )
    p.add_argument(
        "--follow", "-f", action="store_true", help="keep showing new events until Ctrl-C"
    )
    p.add_argument("--user", metavar="USER", help="USER's events (admins only)")
    p.add_argument(
        "--wide",
        "-w",
        action="store_true",
        help=f"all details (else cut at {DETAILS_WIDTH} on a terminal)",
    )
    p.add_argument("--json", action="store_true", help="print JSON Lines instead of a table")


def _query(args: argparse.Namespace) -> dict[str, Any]:
    actions = [a.strip() for text in args.actions for a in text.split(",") if a.strip()]
    return {
        "user": args.user,
        "action": ",".join(actions) or None,
        "container": args.container,
        "since": parse_time(args.since, "--since") if args.since else None,
        "until": parse_time(args.until, "--until") if args.until else None,
    }


def _when(ts: str) -> str:
    """An event's time in the local zone, to the second."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return ts


def _details(details: dict[str, Any], width: int | None) -> str:
    """``key=value`` pairs through ``visible``, cut at ``width`` characters (``None``: whole)."""
    import json  # not at the CLI's start-up: only listing events needs it

    from ds01.model.text import visible

    text = visible(
        " ".join(
            f"{key}={json.dumps(value) if not isinstance(value, str) else value}"
            for key, value in details.items()
            if value not in (None, "", [], {})
        )
    )
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def _resource(resource: str) -> str:
    """``container/thesis._.1001`` → ``container/thesis`` for the caller's own containers
    (other users' keep their Docker name)."""
    own = f"._.{os.getuid()}"
    return resource.removesuffix(own) if resource.startswith("container/") else resource


def _print(events: list[dict[str, Any]], as_json: bool, header: bool, width: int | None) -> None:
    if as_json:
        import json

        for event in events:
            render.echo(json.dumps(event, separators=(",", ":"), sort_keys=True))
    elif events:
        rows = [
            [
                _when(e["ts"]),
                e["user"],
                e["action"],
                _resource(e["resource"]),
                e["outcome"],
                _details(e.get("details") or {}, width),
            ]
            for e in events
        ]
        if header:
            render.table(["TIME", "USER", "ACTION", "RESOURCE", "OUTCOME", "DETAILS"], rows)
        else:  # following: no header, no alignment with earlier lines
            from ds01.model.text import visible

            for row in rows:
                render.echo("  ".join(visible(cell) for cell in row).rstrip())
    sys.stdout.flush()


def _run(args: argparse.Namespace) -> None:
    if args.follow and args.until:
        raise InvalidInput("--follow shows events as they happen; it cannot end --until a time.")
    client = Ds01Client()
    query = _query(args)
    limit = args.limit or (FOLLOW_BACKLOG if args.follow else DEFAULT_LIMIT)
    page = client.request("GET", "/v1/events", query={**query, "limit": limit})
    width = None if args.wide or not sys.stdout.isatty() else DETAILS_WIDTH
    _print(page["events"], args.json, header=True, width=width)
    if not args.follow:
        if not page["events"] and not args.json:
            render.echo("No events match.")
        return
    last = page["last_seq"] or 0
    try:
        while True:
            page = client.request(
                "GET",
                "/v1/events",
                query={**query, "after_seq": last, "wait": POLL_SECONDS, "limit": 1000},
            )
            _print(page["events"], args.json, header=False, width=width)
            if page["last_seq"] is not None:
                last = page["last_seq"]
    except KeyboardInterrupt:
        raise SystemExit(0) from None


EVENT_COMMANDS: tuple[Command, ...] = (
    Command(
        ("events",),
        None,
        "What ds01 recorded about you: your actions and what ds01d did to your containers.",
        "Show the audit log's events that concern you (admins: everyone's, or --user's),\n"
        "newest last, filtered by action, container and time; --follow shows new ones.\n"
        "A search ds01d refuses as too long: narrow it with --since and --action.\n\n"
        "examples:\n"
        "  ds01 events --since 2h\n"
        "  ds01 events --action container --container thesis\n"
        "  ds01 events --follow --json",
        _configure,
        _run,
    ),
)

__all__ = ["EVENT_COMMANDS", "parse_time"]
