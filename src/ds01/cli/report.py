"""``ds01 admin report``: usage per user and group over a window, as Markdown, CSV, JSON or
HTML.

ds01d aggregates (``GET /v1/admin/report``, ``ds01.core.report``); this module renders. On a
Slurm cluster's login node (``DS01_CLUSTER=slurm``) the report covers the whole cluster
instead, built here from Slurm's answers (``ds01.core.slurm_report``): nodes, users' containers
and jobs, pending jobs, GPU-hours from ``sacct``; Markdown, CSV or JSON. The
Markdown and HTML forms carry a chart of GPU-hours per user, allocated against used (PNG,
drawn with matplotlib's Agg backend, imported only then): HTML embeds it (base64), Markdown
written to ``--output FILE`` references it as the PNG next to it (``FILE`` with the suffix
``.png``).

Imported at every start of the CLI (the command table), so standard library only at module
level.
"""

from __future__ import annotations

import argparse
import re
import sys

from ds01.cli import cluster_views, render
from ds01.cli.client import Ds01Client
from ds01.cli.command import Command
from ds01.cli.parsing import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

FORMATS = ("md", "csv", "json", "html")
#: Users shown in the chart, the biggest first (the tables list everyone).
CHART_USERS = 25
CSV_COLUMNS = (
    "kind",
    "name",
    "group",
    "gpu_hours_allocated",
    "gpu_hours_measured",
    "gpu_hours_used",
    "utilization_percent",
    "containers_created",
    "idle_reclaims",
    "runtime_stops",
    "queue_waits",
    "queue_wait_mean_seconds",
    "queue_wait_max_seconds",
    "energy_kwh",
    "co2_kg",
    "unmanaged_gpu_uses",
    "reservations",
    "reservation_stops",
    "gpu_hours_borrowed",
    "borrow_reclaims",
)
_TABLE_HEADERS = (
    "GPU-h allocated",
    "GPU-h measured",
    "GPU-h used",
    "Util. %",
    "Containers",
    "Idle reclaims",
    "Runtime stops",
    "Queue waits",
    "Mean wait",
    "Max wait",
    "Energy kWh",
    "CO2 kg",
    "GPU use outside ds01",
    "Reservations",
    "Reservation stops",
    "GPU-h borrowed",
    "Borrow reclaims",
)


# -- rendering (pure functions of the daemon's answer) ------------------------------------------


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"
    return str(value)


def _wait(seconds: float | None) -> str:
    return "-" if seconds is None else render.duration(seconds)


def _cells(row: dict[str, Any]) -> list[str]:
    waits = row["queue_waits"]
    return [
        _value(row["gpu_hours_allocated"]),
        _value(row["gpu_hours_measured"]),
        _value(row["gpu_hours_used"]),
        _value(row["utilization_percent"]),
        _value(row["containers_created"]),
        _value(row["idle_reclaims"]),
        _value(row["runtime_stops"]),
        _value(waits["count"]),
        _wait(waits["mean_seconds"]),
        _wait(waits["max_seconds"]),
        _value(row["energy_kwh"]),
        _value(row["co2_kg"]),
        _value(row.get("unmanaged_gpu_uses", 0)),
        _value(row.get("reservations", 0)),
        _value(row.get("reservation_stops", 0)),
        _value(row.get("gpu_hours_borrowed", 0.0)),
        _value(row.get("borrow_reclaims", 0)),
    ]


def _window(report: dict[str, Any]) -> str:
    def when(ts: str) -> str:
        return ts.replace("T", " ").replace("+00:00", " UTC")

    return f"{when(report['start'])} to {when(report['end'])}"


def _rows(report: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    users = [[r["name"], r["group"] or "-", *_cells(r)] for r in report["users"]]
    groups = [[r["name"], *_cells(r)] for r in report["groups"]]
    groups.append(["**total**", *_cells(report["total"])])
    return users, groups


_BACKTICKS = re.compile("`+")


def _md_text(text: str) -> str:
    """``text`` that somebody else wrote (a Slurm job's name) as a Markdown code span, whose
    fence is longer than any run of backticks in it: a report an admin publishes shows it
    as written, never as a link (not even an address GitHub would link by itself), an image,
    HTML or a character reference (``&#x202E;``)."""
    if not text:
        return ""
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def to_markdown(report: dict[str, Any], chart: str | None) -> str:
    """The report as Markdown; ``chart``: the chart's file name next to it, if any."""
    users, groups = _rows(report)
    lines = [
        "# ds01 usage report",
        "",
        f"Window: {_window(report)} (generated {report['generated_at']}).",
        "",
    ]
    if chart:
        lines += [f"![GPU-hours per user: allocated and used]({chart})", ""]
    else:
        lines += ["(The chart is written next to the report with `--output FILE`.)", ""]
    lines += ["## Per user", ""]
    lines += _md_table(["User", "Group", *_TABLE_HEADERS], users) if users else ["No usage."]
    lines += ["", "## Per group", ""]
    lines += _md_table(["Group", *_TABLE_HEADERS], groups)
    lines += ["", "## Notes", ""]
    lines += [f"- {note}" for note in report["notes"]]
    intensity = report.get("co2_g_per_kwh")
    if intensity is not None:
        lines.append(f"- CO2 at a grid intensity of {_value(float(intensity))} g/kWh.")
    return "\n".join(lines) + "\n"


def to_csv(report: dict[str, Any]) -> str:
    """One line per user, group and the total (column ``kind``)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = [("user", r) for r in report["users"]] + [("group", r) for r in report["groups"]]
    rows.append(("total", report["total"]))
    for kind, r in rows:
        waits = r["queue_waits"]
        writer.writerow(
            [kind, r["name"], r["group"] or ""]
            + ["" if r[key] is None else r[key] for key in CSV_COLUMNS[3:10]]
            + [
                waits["count"],
                "" if waits["mean_seconds"] is None else waits["mean_seconds"],
                "" if waits["max_seconds"] is None else waits["max_seconds"],
                "" if r["energy_kwh"] is None else r["energy_kwh"],
                "" if r["co2_kg"] is None else r["co2_kg"],
                r.get("unmanaged_gpu_uses", 0),
                r.get("reservations", 0),
                r.get("reservation_stops", 0),
                r.get("gpu_hours_borrowed", 0.0),
                r.get("borrow_reclaims", 0),
            ]
        )
    return out.getvalue()


def to_html(report: dict[str, Any], png: bytes) -> str:
    """A self-contained HTML page with the chart embedded (base64)."""
    import base64
    from html import escape

    users, groups = _rows(report)

    def table(headers: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c.strip('*'))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    chart = base64.b64encode(png).decode("ascii")
    notes = "".join(f"<li>{escape(n)}</li>" for n in report["notes"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ds01 usage report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead {{ background: #eee; }}
</style></head><body>
<h1>ds01 usage report</h1>
<p>Window: {escape(_window(report))} (generated {escape(report["generated_at"])}).</p>
<img alt="GPU-hours per user: allocated and used" src="data:image/png;base64,{chart}">
<h2>Per user</h2>
{table(["User", "Group", *_TABLE_HEADERS], users) if users else "<p>No usage.</p>"}
<h2>Per group</h2>
{table(["Group", *_TABLE_HEADERS], groups)}
<h2>Notes</h2>
<ul>{notes}</ul>
</body></html>
"""


# -- the cluster's report (a login node) -----------------------------------------------------

#: The cluster report's CSV: one line per user (the ends' columns are
#: ``ds01.core.slurm_report.END_COLUMNS``, in that order).
CLUSTER_CSV_COLUMNS = (
    "user",
    "containers_running",
    "containers_pending",
    "gpus_held",
    "jobs",
    "gpu_hours",
    "oom_kills",
    "idle_stops",
    "runtime_stops",
    "other_stops",
)


def _holders(node: dict[str, Any]) -> str:
    held = [f"{h['user']}/{_md_text(h['name'])} ({h['gpus']})" for h in node["holders"]]
    if node["other_gpus"]:
        held.append(f"other jobs ({node['other_gpus']})")
    return ", ".join(held) or "-"


def to_cluster_markdown(report: dict[str, Any]) -> str:
    """The cluster's report (``ds01.core.slurm_report.build_cluster_report``) as Markdown."""
    total = report["total"]
    lines = [
        "# ds01 cluster report",
        "",
        f"Window: {_window(report)} (generated {report['generated_at']}).",
        "",
        f"{total['nodes']} nodes, {total['gpus']} GPUs: {total['used']} held, "
        f"{total['free']} free; {total['containers_running']} containers running, "
        f"{total['containers_pending']} pending; {total['jobs']} jobs and "
        f"{_value(float(total['gpu_hours']))} GPU-hours in the window; "
        f"{total['oom_kills']} OOM kills, {total['idle_stops']} idle stops, "
        f"{total['runtime_stops']} runtime stops, {total['other_stops']} other stops.",
        "",
        "## Nodes",
        "",
    ]
    nodes = [
        [n["node"], n["state"], str(n["gpus"]), str(n["used"]), str(n["free"]), _holders(n)]
        for n in report["nodes"]
    ]
    lines += _md_table(["Node", "State", "GPUs", "Held", "Free", "Held by"], nodes)
    lines += ["", "## Per user", ""]
    users = [
        [u["user"], *(_value(u[key]) for key in CLUSTER_CSV_COLUMNS[1:])] for u in report["users"]
    ]
    headers = ["User", "Running", "Pending", "GPUs held", "Jobs", "GPU-h", "OOM kills"]
    headers += ["Idle stops", "Runtime stops", "Other stops"]
    lines += _md_table(headers, users) if users else ["No usage."]
    lines += ["", "## Pending (Slurm's order)", ""]
    waiting = [
        [
            str(c["slurm_job"]),
            c["user"],
            _md_text(c["name"]),
            str(c["gpus"]),
            c["reason"],
            c["reason_text"],
        ]
        for c in report["pending"]
    ]
    headers = ["Job", "User", "Container", "GPUs", "Reason", "Meaning"]
    lines += _md_table(headers, waiting) if waiting else ["Nothing pending."]
    lines += ["", "## Notes", ""]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def to_cluster_csv(report: dict[str, Any]) -> str:
    """The cluster's report: one line per user (``CLUSTER_CSV_COLUMNS``)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CLUSTER_CSV_COLUMNS)
    for row in report["users"]:
        writer.writerow([row[key] for key in CLUSTER_CSV_COLUMNS])
    return out.getvalue()


def cluster_report(start: str | None, end: str | None) -> dict[str, Any]:
    """The cluster's report over ``[start, end)`` (ISO 8601; default: the last
    ``DEFAULT_WINDOW_DAYS`` days), from Slurm's answers to the caller."""
    from datetime import datetime, timedelta, timezone

    from ds01.core.report import DEFAULT_WINDOW_DAYS
    from ds01.core.slurm_report import build_cluster_report, parse_accounting
    from ds01.core.slurm_view import parse_containers, parse_nodes
    from ds01.errors import InvalidInput
    from ds01.runtime.slurm import accounted_jobs, cluster_containers, show_nodes

    # Not cut to whole seconds: sacct's End is, and a job that ended in this very second
    # ended before now, inside a window that ends now.
    now = datetime.now(timezone.utc)
    stop = datetime.fromisoformat(end) if end else now
    begin = datetime.fromisoformat(start) if start else stop - timedelta(days=DEFAULT_WINDOW_DAYS)
    if not begin < stop:
        raise InvalidInput(f"--from ({begin}) must be before --to ({stop}).")
    return build_cluster_report(
        start=begin,
        end=stop,
        now=now,
        nodes=parse_nodes(show_nodes()),
        containers=parse_containers(cluster_containers(), now.timestamp()),
        jobs=parse_accounting(accounted_jobs(begin, stop)),
        notes=(
            "From Slurm (scontrol, squeue, sacct), as the caller may see it: with Slurm's "
            "PrivateData, a user sees their own jobs only.",
            "GPU-hours: each job's GPUs (AllocTRES gres/gpu) times its run inside the window, "
            "every job counted, container or not.",
        ),
    )


def _run_cluster(args: argparse.Namespace, query: dict[str, str | None]) -> str:
    """The cluster's report as text in ``args.format``."""
    import json

    if args.format == "html":
        raise UsageError("On a Slurm cluster the report is md, csv or json (--format).")
    report = cluster_report(query["from"], query["to"])
    if args.format == "json":
        return json.dumps(report, indent=2) + "\n"
    return to_cluster_csv(report) if args.format == "csv" else to_cluster_markdown(report)


def chart_png(report: dict[str, Any]) -> bytes:
    """Bars of GPU-hours per user, allocated next to used, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = report["users"][:CHART_USERS]
    names = [r["name"] for r in rows]
    allocated = [r["gpu_hours_allocated"] for r in rows]
    used = [r["gpu_hours_used"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 2), 4), dpi=100)
    try:
        positions = list(range(len(rows)))
        width = 0.4
        ax.bar([p - width / 2 for p in positions], allocated, width, label="allocated")
        ax.bar([p + width / 2 for p in positions], used, width, label="used")
        ax.set_xticks(positions)
        ax.set_xticklabels(names, rotation=45 if len(rows) > 8 else 0, ha="right")
        ax.set_ylabel("GPU-hours")
        ax.set_title(f"GPU-hours per user, {_window(report)}", fontsize=10)
        if rows:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "No GPU usage in this window", ha="center", transform=ax.transAxes)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out.getvalue()


# -- the command ----------------------------------------------------------------------------------


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from",
        dest="start",
        metavar="WHEN",
        help="start of the window: 2026-11-01, 30d, … [30 days before --to]",
    )
    p.add_argument("--to", dest="end", metavar="WHEN", help="end of the window, excluded [now]")
    p.add_argument("--format", choices=FORMATS, default="md", help="output format [md]")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help=(
            "write to FILE (Markdown: and the chart beside it, FILE with .png); each is "
            "replaced, a symbolic link in its place too, never written through [stdout]"
        ),
    )


def _write(path: Path, data: str | bytes) -> None:
    """Put ``data`` at ``path`` by a rename over it: a symbolic link someone planted under
    the name (the implied ``.png`` in a folder users can write) is replaced, never written
    through as root."""
    from ds01.files import replace_file

    replace_file(path, data)


def _run(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from ds01.cli.events import parse_time

    if args.json:
        args.format = "json"
    query = {
        "from": parse_time(args.start, "--from") if args.start else None,
        "to": parse_time(args.end, "--to") if args.end else None,
    }
    output = Path(args.output) if args.output else None
    if cluster_views.enabled():
        text = _run_cluster(args, query)
        if output is None:
            sys.stdout.write(text)
        else:
            _write(output, text)
            render.ok(f"Wrote {output}.")
        return
    report = Ds01Client().request("GET", "/v1/admin/report", query=query)
    png: Path | None = None
    if args.format == "json":
        text = json.dumps(report, indent=2) + "\n"
    elif args.format == "csv":
        text = to_csv(report)
    elif args.format == "html":
        text = to_html(report, chart_png(report))
    elif output is not None:
        png = output.with_suffix(".png")
        if png == output:
            png = output.with_name(output.name + ".png")
        _write(png, chart_png(report))
        text = to_markdown(report, png.name)
    else:
        text = to_markdown(report, None)
    if output is None:
        sys.stdout.write(text)
        return
    _write(output, text)
    render.ok(f"Wrote {output}" + (f" and {png}" if png else "") + ".")


REPORT_COMMANDS: tuple[Command, ...] = (
    Command(
        ("admin", "report"),
        None,
        "Usage per user and group: GPU-hours allocated and used, reclaims, waits, energy.",
        "Report usage per user and per group over a window (admins): GPU-hours allocated and\n"
        "used, containers created, idle reclaims, queue waits, energy and CO2, as Markdown,\n"
        "CSV, JSON or HTML; Markdown and HTML carry a chart of GPU-hours per user.\n"
        "On a Slurm cluster's login node (DS01_CLUSTER=slurm): the whole cluster from\n"
        "Slurm's data (each node's GPUs held and free, containers per user, pending jobs\n"
        "with Slurm's reason; per user from sacct: jobs, GPU-hours, OOM kills, idle and\n"
        "runtime stops), as Markdown, CSV or JSON; energy and utilisation are in\n"
        "Prometheus there.\n\n"
        "examples:\n"
        "  ds01 admin report --from 2026-11-01 --to 2026-12-01 --format html -o nov.html\n"
        "  ds01 admin report --from 7d --format md -o week.md   # and week.png\n"
        "  ds01 admin report --from 30d --format csv > usage.csv",
        _configure,
        _run,
    ),
)

__all__ = [
    "REPORT_COMMANDS",
    "chart_png",
    "cluster_report",
    "to_cluster_csv",
    "to_cluster_markdown",
    "to_csv",
    "to_html",
    "to_markdown",
]
