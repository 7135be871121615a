"""``ds01 reserve`` and ``ds01 reservations``: GPUs kept for you at a known time.

ds01d decides (``ds01.daemon.reservations``, ``ds01.core.reservations``); this module sends
the request and renders the answer: a table, JSON, or an iCalendar feed (``--ics``, made
with the ``icalendar`` library, imported only then).

Imported at every start of the CLI (the command table), so standard library only at module
level.
"""

from __future__ import annotations

import argparse
import sys

from ds01.cli import render
from ds01.cli.client import Ds01Client
from ds01.cli.command import Command
from ds01.cli.parsing import UsageError, positive_number

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The calendar's product id (RFC 5545 PRODID).
ICS_PRODID = "-//ds01//GPU reservations//EN"


def _gpu_count(text: str) -> int:
    if not text.isdigit() or int(text) > 64:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 64, got {text!r}")
    return int(text)


def _shown(moment: str) -> str:
    """``2026-12-10T09:00:00+01:00`` as ``2026-12-10 09:00`` (the server's time)."""
    return moment[:16].replace("T", " ")


def _holder(row: dict[str, Any]) -> str:
    return row["holder"] or "(maintenance)"


def configure_reserve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpus", type=_gpu_count, metavar="N", help="whole GPUs")
    p.add_argument("--mig", metavar="PROFILE", help="one MIG instance, e.g. 3g.20gb")
    p.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar='"YYYY-MM-DD HH:MM"',
        help="when it starts, the server's local time",
    )
    p.add_argument("--hours", type=positive_number, required=True, metavar="H", help="how long")
    p.add_argument("--note", default="", metavar="TEXT", help="what for (everyone sees it)")
    p.add_argument(
        "--maintenance", action="store_true", help="admins: keep the devices for nobody"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a sentence")


def run_reserve(args: argparse.Namespace) -> None:
    if bool(args.gpus) == bool(args.mig):
        raise UsageError("Reserve either --gpus N or --mig PROFILE (one of them).")
    body = {
        "gpus": args.gpus or None,
        "mig": args.mig,
        "start": args.start,
        "hours": args.hours,
        "note": args.note,
        "maintenance": args.maintenance,
    }
    made = Ds01Client().request("POST", "/v1/reservations", body=body)
    if render.emitted_json(args.json, made):
        return
    devices = ", ".join(made["device_labels"])
    render.ok(
        f"Reserved GPU {devices} for {_holder(made)} from {_shown(made['start'])} to "
        f"{_shown(made['end'])} (reservation {made['id']}; "
        f"`ds01 reservations cancel {made['id']}` to give it back)."
    )


def configure_reservations(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("list", "cancel"), default="list")
    p.add_argument("reservation_id", nargs="?", metavar="ID", help="the reservation to cancel")
    p.add_argument(
        "--all", action="store_true", dest="all_users", help="everyone's, not only yours"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--ics", action="store_true", help="print an iCalendar (.ics) feed")


def run_reservations(args: argparse.Namespace) -> None:
    client = Ds01Client()
    if args.action == "cancel":
        if not args.reservation_id:
            raise UsageError("Which one? `ds01 reservations cancel ID` (IDs: `ds01 reservations`).")
        gone = client.request("DELETE", f"/v1/reservations/{args.reservation_id}")
        if render.emitted_json(args.json, gone):
            return
        if gone["phase"] == "ended":  # it was in force: cut short, what it kept still counts
            render.ok(
                f"Ended reservation {gone['id']} now ({_shown(gone['start'])} to "
                f"{_shown(gone['end'])}); the time it was in force counts towards your limits."
            )
        else:
            render.ok(f"Cancelled reservation {gone['id']} ({_shown(gone['start'])}).")
        return
    if args.reservation_id:
        raise UsageError("`ds01 reservations` lists; to cancel: `ds01 reservations cancel ID`.")
    rows = client.request("GET", "/v1/reservations", query={"all": args.all_users})
    if args.ics:
        sys.stdout.buffer.write(ics_feed(rows))
        return
    if render.emitted_json(args.json, rows):
        return
    if not rows:
        render.echo("No reservations." if args.all_users else "You have no reservations.")
        return
    render.table(
        ["ID", "HOLDER", "GPUS", "FROM", "TO", "STATUS", "NOTE"],
        [
            [
                r["id"],
                _holder(r),
                ", ".join(r["device_labels"]),
                _shown(r["start"]),
                _shown(r["end"]),
                _status(r),
                r["note"],
            ]
            for r in rows
        ],
    )


def _status(row: dict[str, Any]) -> str:
    """The phase, and ``affected`` when some of its devices are gone."""
    missing = row.get("missing_devices") or []
    return f"{row['phase']}, affected: {len(missing)} device(s) gone" if missing else row["phase"]


def ics_feed(rows: list[dict[str, Any]]) -> bytes:
    """The reservations ``rows`` (as the API gives them) as an iCalendar feed: one event each,
    its UID the reservation's id, its summary the holder and devices."""
    from datetime import datetime

    import icalendar

    calendar = icalendar.Calendar()
    calendar.add("prodid", ICS_PRODID)
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", "GPU reservations")
    for row in rows:
        event = icalendar.Event()
        event.add("uid", f"{row['id']}@ds01")
        event.add("dtstamp", datetime.fromisoformat(row["created_at"]))
        event.add("dtstart", datetime.fromisoformat(row["start"]))
        event.add("dtend", datetime.fromisoformat(row["end"]))
        devices = ", ".join(row["device_labels"])
        note = f": {row['note']}" if row["note"] else ""
        event.add("summary", f"GPU {devices} - {_holder(row)}{note}")
        event.add(
            "description",
            f"Reservation {row['id']} by {row['created_by']}. Devices: "
            + ", ".join(row["devices"]),
        )
        calendar.add_component(event)
    return bytes(calendar.to_ical())


RESERVATION_COMMANDS = (
    Command(
        ("reserve",),
        None,
        "Reserve GPUs (or a MIG slice) for a known time.",
        "Reserve whole GPUs or one MIG instance for yourself from a time, for some hours.\n"
        "A conflict (exit 3) names the reservation in the way and the next free slot.\n\n"
        "examples:\n"
        '  ds01 reserve --gpus 2 --from "2026-12-10 09:00" --hours 8 --note "course"\n'
        '  ds01 reserve --mig 3g.20gb --from "2026-12-11 14:00" --hours 3',
        configure_reserve,
        run_reserve,
    ),
    Command(
        ("reservations",),
        None,
        "Your GPU reservations (--all: everyone's); cancel one.",
        "List reservations not yet ended (yours and maintenance windows; --all: everyone's),\n"
        "as a table, JSON or an iCalendar feed (--ics), or cancel one.\n\n"
        "examples:\n"
        "  ds01 reservations --all\n"
        "  ds01 reservations --all --ics > gpus.ics\n"
        "  ds01 reservations cancel 3f2a9c1b",
        configure_reservations,
        run_reservations,
    ),
)

__all__ = ["RESERVATION_COMMANDS", "ics_feed"]
