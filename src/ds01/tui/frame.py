"""The dashboard's frame model: an overview and a view state in, tables of text out.

An *overview* is the JSON of ``GET /v1/overview`` (``ds01.daemon.schemas.Overview``) as
plain dicts. ``build_frame`` turns it and a ``View`` (the sort column, the user filter)
into a ``Frame``: a title, the usage figures, and five ``Table``s (devices, containers,
queue, users, and the week's reservations per device) of text cells with a key per row.
The textual app shows frames in its widgets; ``render_text`` prints one as plain text
(``ds01-dashboard --once``). Nothing here does I/O or imports textual or pydantic, so it is
tested on its own and ``--once`` starts fast.

The view: ``s`` cycles the containers' sort column (``SORTS``); the user filter keeps the
containers, queue entries and user rows of one user (exact name). Devices and the
machine's totals are never filtered: they are the machine.

A Slurm cluster's overview (a login node's, ``ds01.core.slurm_view.cluster_overview``) is
shown in the same five tables by ``ds01.tui.cluster_frame``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ds01.cli.dashboard import SORT_NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    Overview = Mapping[str, Any]
    Row = Mapping[str, Any]

#: A running container idle for at least this long shows as idle, not active.
IDLE_AFTER_MINUTES = 1.0
#: Days the reservations' week view shows, from today.
WEEK_DAYS = 7
#: Order of the STATE column when sorted by it.
_STATE_ORDER = {"active": 0, "idle": 1, "created": 2, "paused": 3, "restarting": 4, "stopped": 5}


def activity(container: Row) -> str:
    """``active`` or ``idle`` for a running container (the lifecycle loop's idle time),
    else its status (``created``, ``stopped``, …)."""
    status = str(container.get("status") or "")
    if status != "running":
        return status
    idle = container.get("idle_minutes")
    return "idle" if idle is not None and idle >= IDLE_AFTER_MINUTES else "active"


def _last(value: Any) -> tuple[bool, Any]:
    """A sort key that puts ``None`` after every value."""
    return (value is None, value)


def _minus(value: float | None) -> float | None:
    return None if value is None else -value


class _Value:
    """A small value object: its fields are its ``__slots__``; equal when they are equal.

    Not a dataclass: ``dataclasses`` costs ``--once`` about 10 ms of imports (``inspect``),
    a fifth of its time. Treat instances as immutable.
    """

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Value)
            and type(other) is type(self)
            and (self._fields() == other._fields())
        )

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Sort(_Value):
    """A sort column of the containers' table."""

    __slots__ = ("key", "name")

    def __init__(self, name: str, key: Callable[[Row], Any]) -> None:
        self.name = name
        self.key = key


_SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "user": lambda c: (c["user"], c["name"]),
    "name": lambda c: (c["name"], c["user"]),
    "state": lambda c: (_STATE_ORDER.get(activity(c), 9), c["user"], c["name"]),
    "gpu-eq": lambda c: (-c["gpu_equivalents"], c["user"], c["name"]),
    "gpu%": lambda c: (_last(_minus(c.get("gpu_utilization_percent"))), c["user"], c["name"]),
    "idle": lambda c: (_last(_minus(c.get("idle_minutes"))), c["user"], c["name"]),
    "cleanup": lambda c: (_last(c.get("stop_at")), c["user"], c["name"]),
}
#: The containers' sort columns, in the order ``s`` cycles through them (the names are
#: ``ds01.cli.dashboard.SORT_NAMES``, which the command's ``--sort`` offers without
#: importing this).
#: Numbers sort biggest first, the time to cleanup soonest first, ``None`` always last.
SORTS: tuple[Sort, ...] = tuple(Sort(name, _SORT_KEYS[name]) for name in SORT_NAMES)


class View(_Value):
    """What the user chose to see: the containers' sort column and a user filter."""

    __slots__ = ("sort", "user")

    def __init__(self, sort: str = "user", user: str | None = None) -> None:
        self.sort = sort
        self.user = user

    def next_sort(self) -> View:
        """The view sorted by the next column of ``SORTS`` (after the last: the first)."""
        index = SORT_NAMES.index(self.sort) if self.sort in SORT_NAMES else -1
        return View(SORT_NAMES[(index + 1) % len(SORT_NAMES)], self.user)

    def filtered(self, user: str | None) -> View:
        """The view showing only ``user``'s rows (``None`` or blank: everyone's)."""
        return View(self.sort, (user or "").strip() or None)


class TableRow(_Value):
    __slots__ = ("cells", "key")

    def __init__(self, key: str, cells: tuple[str, ...]) -> None:
        self.key = key
        self.cells = cells


class Table(_Value):
    """A titled table of text cells; ``empty`` is what to say when it has no rows."""

    __slots__ = ("columns", "empty", "rows", "title")

    def __init__(
        self, title: str, columns: tuple[str, ...], rows: tuple[TableRow, ...], empty: str
    ) -> None:
        self.title = title
        self.columns = columns
        self.rows = rows
        self.empty = empty


class Usage(_Value):
    """The machine's allocation: devices and GPU-equivalents, allocated of total."""

    __slots__ = ("devices", "devices_allocated", "gpu_equivalents", "gpu_equivalents_allocated")

    def __init__(
        self,
        devices_allocated: int,
        devices: int,
        gpu_equivalents_allocated: float,
        gpu_equivalents: float,
    ) -> None:
        self.devices_allocated = devices_allocated
        self.devices = devices
        self.gpu_equivalents_allocated = gpu_equivalents_allocated
        self.gpu_equivalents = gpu_equivalents

    @property
    def fraction(self) -> float:
        """Share of the GPU-equivalents allocated, 0..1 (0 with no devices)."""
        if self.gpu_equivalents <= 0:
            return 0.0
        return min(max(self.gpu_equivalents_allocated / self.gpu_equivalents, 0.0), 1.0)


class Frame(_Value):
    """One screenful: the title, the usage figures, the machine-wide summary, notes (the
    backend's message, unusable GPUs, what a user's view leaves out), the view it was
    built through, and the five tables."""

    __slots__ = (
        "containers",
        "devices",
        "notes",
        "queue",
        "reservations",
        "summary",
        "title",
        "usage",
        "users",
        "view",
    )  # fmt: skip

    def __init__(
        self,
        title: str,
        usage: Usage,
        summary: str,
        notes: tuple[str, ...],
        view: View,
        devices: Table,
        containers: Table,
        queue: Table,
        users: Table,
        reservations: Table,
    ) -> None:
        self.title = title
        self.usage = usage
        self.summary = summary
        self.notes = notes
        self.view = view
        self.devices = devices
        self.containers = containers
        self.queue = queue
        self.users = users
        self.reservations = reservations

    @property
    def tables(self) -> tuple[Table, Table, Table, Table, Table]:
        """Devices, containers, queue, users, reservations: the order they are shown in."""
        return (self.devices, self.containers, self.queue, self.users, self.reservations)


# -- formatting -----------------------------------------------------------------------------


def number(value: float | None) -> str:
    """At most two decimals, no trailing zeros (``4``, ``2.5``, ``0.43``); ``-`` for None."""
    if value is None:
        return "-"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def size(n: int | float | None) -> str:
    """Bytes for people, to one decimal: ``512M``, ``1.5G``, ``40G``; ``-`` for None."""
    if n is None:
        return "-"
    for suffix, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + suffix
    return f"{n:.0f}B"


def mib(n: int | None) -> str:
    return "-" if n is None else size(n * 1024**2)


def duration(seconds: float | None) -> str:
    """Compact: ``45s``, ``14m``, ``2h05m``, ``3d04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 24:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def time_to_cleanup(container: Row, at: datetime | None) -> str:
    """How long until the lifecycle loop stops it: ``in 1h20m``, ``due``, ``exempt``, ``-``."""
    if container.get("exempt_until"):
        return "exempt"
    stop_at = _when(container.get("stop_at"))
    if stop_at is None or at is None:
        return "-"
    left = (stop_at - at).total_seconds()
    return "due" if left <= 0 else f"in {duration(left)}"


def short_uuid(uuid: str) -> str:
    """``GPU-1a2b3c4d`` from ``GPU-1a2b3c4d-…``: enough to tell devices apart on a screen."""
    return uuid[:12]


def short_model(model: str) -> str:
    return model.removeprefix("NVIDIA ")


def quota(used: float | int | None, limit: float | int | None, fmt: Callable[[Any], str]) -> str:
    """``used/limit``; an absent limit reads as unlimited."""
    return f"{fmt(used)}/{'unl.' if limit is None else fmt(limit)}"


# -- the frame ------------------------------------------------------------------------------


def _device_rows(overview: Overview) -> tuple[TableRow, ...]:
    rows = []
    for d in overview.get("devices", []):
        holder = d.get("holder")
        if holder:
            who = (
                f"{holder['user']}/{holder['container']}"
                if holder.get("container")
                else (holder["user"])
            ) + (" (borrowed)" if holder.get("borrowed") else "")
        elif d.get("reserved"):
            who = "reserved"
        elif d.get("held_for_queue"):
            who = "free (kept for the queue)"
        else:
            who = "free"
        used = d.get("memory_used_mib")
        rows.append(
            TableRow(
                d["uuid"],
                (
                    str(d.get("label") or d["gpu_index"]),
                    short_uuid(d["uuid"]),
                    short_model(d["model"]),
                    number(d["gpu_equivalents"]),
                    who,
                    percent(d.get("utilization_percent")),
                    f"{mib(used)}/{mib(d['memory_mib'])}",
                ),
            )
        )
    return tuple(rows)


def _week_start(overview: Overview) -> datetime | None:
    """Today's midnight in the server's zone (the zone the reservations' times carry);
    ``None`` for an overview without its time."""
    at = _when(overview.get("at"))
    if at is None:
        return None
    kept = overview.get("reservations") or ()
    zone = datetime.fromisoformat(kept[0]["start"]).tzinfo if kept else at.tzinfo
    return at.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)


def _day_cell(kept: Sequence[Row], day: datetime) -> str:
    """Who has the device on ``day``, and when: ``alice 09-17``; ``-`` for nobody."""
    parts = []
    for r in kept:
        start, end = datetime.fromisoformat(r["start"]), datetime.fromisoformat(r["end"])
        if end <= day or start >= day + timedelta(days=1):
            continue
        begin = start.strftime("%H:%M") if start > day else "00:00"
        until = end.strftime("%H:%M") if end < day + timedelta(days=1) else "24:00"
        parts.append(f"{r['holder'] or 'maintenance'} {begin}-{until}")
    return ", ".join(parts) or "-"


def _week_columns(overview: Overview) -> tuple[str, ...]:
    first = _week_start(overview)
    if first is None:
        return ("GPU",)
    days = (first + timedelta(days=n) for n in range(WEEK_DAYS))
    return ("GPU", *(day.strftime("%a %d") for day in days))


def _week_rows(overview: Overview) -> tuple[TableRow, ...]:
    """One row per device with a reservation in the coming week: who has it on each day."""
    kept = overview.get("reservations") or ()
    first = _week_start(overview)
    if not kept or first is None:
        return ()
    days = [first + timedelta(days=n) for n in range(WEEK_DAYS)]
    labels = _labels(overview)
    rows = []
    for uuid in labels:
        mine = [r for r in kept if uuid in r.get("devices", ())]
        if mine:
            cells = (labels[uuid], *(_day_cell(mine, day) for day in days))
            rows.append(TableRow(uuid, cells))
    return tuple(rows)


def _labels(overview: Overview) -> dict[str, str]:
    return {d["uuid"]: str(d.get("label") or d["uuid"]) for d in overview.get("devices", [])}


def runtime_end(container: Row, at: datetime | None) -> str | None:
    """A declared runtime (``--runtime-hours``) and when it ends: ``4h run, ends in 1h20m``;
    ``None`` without one."""
    hours = container.get("runtime_hours")
    if hours is None:
        return None
    limit = f"{duration(hours * 3600)} run"
    ends = _when(container.get("runtime_ends_at"))
    if ends is None or at is None:
        return limit
    left = (ends - at).total_seconds()
    return f"{limit}, ends {'now' if left <= 0 else f'in {duration(left)}'}"


def _state_cell(container: Row, at: datetime | None = None) -> str:
    state = activity(container)
    if state == "idle":
        state = f"idle {duration(container['idle_minutes'] * 60)}"
    if container.get("borrowed"):
        state = f"{state}, borrowed"
    runtime = runtime_end(container, at) if container.get("status") == "running" else None
    if runtime is not None:
        state = f"{state}, {runtime}"
    kills = container.get("oom_kills") or 0
    return f"{state}, {kills} OOM" if kills else state


def _container_rows(
    containers: Sequence[Row], overview: Overview, own: bool
) -> tuple[TableRow, ...]:
    labels = _labels(overview)
    at = _when(overview.get("at"))
    rows = []
    for c in containers:
        cells = (
            *(() if own else (c["user"],)),
            c["name"],
            _state_cell(c, at),
            c["image"],
            ",".join(labels.get(u, short_uuid(u)) for u in c.get("gpus", [])) or "-",
            number(c["gpu_equivalents"]),
            percent(c.get("gpu_utilization_percent")),
            duration(c["idle_minutes"] * 60) if c.get("idle_minutes") is not None else "-",
            time_to_cleanup(c, at),
        )
        rows.append(TableRow(c["docker_name"], cells))
    return tuple(rows)


def _queue_rows(entries: Sequence[Row], own: bool) -> tuple[TableRow, ...]:
    rows = []
    for q in entries:
        estimated = q.get("estimated_start")
        cells = (
            "-" if q.get("position") is None else str(q["position"]),
            *(() if own else (q["user"],)),
            q["container"],
            q["request"],
            duration(q.get("waited_seconds")),
            q.get("status") or "-",
            estimated.replace("T", " ")[:16] if estimated else "-",
        )
        rows.append(TableRow(q["id"], cells))
    return tuple(rows)


def _user_rows(users: Sequence[Row]) -> tuple[TableRow, ...]:
    rows = []
    for u in users:
        memory = u.get("memory_bytes")
        if memory is None:
            memory = u.get("memory_committed_bytes")
        cells = (
            u["user"],
            quota(u["gpu_equivalents"], u.get("gpu_limit"), number),
            quota(u["containers"], u.get("max_containers"), str),
            str(u.get("running", 0)),
            quota(memory, u.get("memory_limit_bytes"), size),
            str(u.get("queued", 0)),
        )
        rows.append(TableRow(u["user"], cells))
    return tuple(rows)


def sort_containers(containers: Sequence[Row], sort: str) -> list[Row]:
    chosen = next((s for s in SORTS if s.name == sort), SORTS[0])
    return sorted(containers, key=chosen.key)


def _mine(rows: Sequence[Row], user: str | None) -> list[Row]:
    return list(rows) if user is None else [r for r in rows if r.get("user") == user]


def _whose(view: View, own: bool) -> tuple[str, str]:
    """How the container table and the queue name whose rows they show."""
    if view.user is not None:
        return f"Containers of {view.user}", f"requests of {view.user}"
    if own:
        return "Your containers", "your requests"
    return "Containers of every user", "every user's requests"


def _container_title(mine: str, containers: Sequence[Row], sort: str) -> str:
    states = [activity(c) for c in containers]
    running = states.count("active") + states.count("idle")
    return (
        f"{mine}: {len(containers)} ({running} running, "
        f"{states.count('idle')} idle), sorted by {sort}"
    )


def _summary(totals: Row) -> str:
    queued = totals.get("queued_requests", 0)
    return (
        f"{totals.get('containers', 0)} containers on the machine, "
        f"{totals.get('containers_running', 0)} running; GPU queue: {queued} waiting"
        + (
            f" for at least {number(totals.get('queued_gpu_equivalents'))} GPU-equivalents"
            if queued
            else ""
        )
    )


def _notes(overview: Overview, own: bool) -> tuple[str, ...]:
    notes = [overview["message"]] if overview.get("message") else []
    notes += [f"GPU {g['index']}: unusable, {g['reason']}." for g in overview.get("unusable", [])]
    if own:
        notes.append(
            "You see every device and your own containers; other users' devices show "
            "their user name only."
        )
    return tuple(notes)


def _title(overview: Overview) -> str:
    role = "admin, every user" if overview.get("is_admin") else "user"
    at = (overview.get("at") or "").replace("T", " ").replace("+00:00", " UTC")
    return f"ds01 dashboard: {overview.get('user', '?')} ({role}), {at}"


def _usage(totals: Row) -> Usage:
    return Usage(
        devices_allocated=int(totals.get("devices_allocated", 0)),
        devices=int(totals.get("devices", 0)),
        gpu_equivalents_allocated=float(totals.get("gpu_equivalents_allocated", 0.0)),
        gpu_equivalents=float(totals.get("gpu_equivalents", 0.0)),
    )


def build_frame(overview: Overview, view: View | None = None) -> Frame:
    """The frame of ``overview`` seen through ``view`` (default: sorted by user, no
    filter; see the module docstring); a Slurm cluster's overview has its own
    (``ds01.tui.cluster_frame``)."""
    view = view or View()
    from ds01.tui.cluster_frame import build_cluster_frame, is_cluster

    if is_cluster(overview):
        return build_cluster_frame(overview, view)
    own = overview.get("scope") != "all"
    totals = overview.get("totals", {})
    containers = sort_containers(_mine(overview.get("containers", []), view.user), view.sort)
    queue = _mine(overview.get("queue", []), view.user)
    users = _mine(overview.get("users", []), view.user)
    mine, whose = _whose(view, own)
    return Frame(
        title=_title(overview),
        usage=_usage(totals),
        summary=_summary(totals),
        notes=_notes(overview, own),
        view=view,
        devices=Table(
            f"Devices ({overview.get('backend', '?')} backend)",
            ("GPU", "UUID", "MODEL", "GPU-EQ", "HOLDER", "UTIL", "MEMORY"),
            _device_rows(overview),
            "No GPU devices.",
        ),
        containers=Table(
            _container_title(mine, containers, view.sort),
            (
                *(() if own else ("USER",)),
                "NAME",
                "STATE",
                "IMAGE",
                "GPUS",
                "GPU-EQ",
                "GPU%",
                "IDLE",
                "CLEANUP",
            ),
            _container_rows(containers, overview, own),
            "No containers." if view.user is None else f"No containers of {view.user}.",
        ),
        queue=Table(
            f"GPU queue: {whose}",
            (
                "POS",
                *(() if own else ("USER",)),
                "CONTAINER",
                "REQUEST",
                "WAITED",
                "STATUS",
                "EST. START",
            ),
            _queue_rows(queue, own),
            "Nothing waiting.",
        ),
        users=Table(
            "Usage against quota",
            ("USER", "GPU-EQ", "CONTAINERS", "RUNNING", "MEMORY", "QUEUED"),
            _user_rows(users),
            "No usage." if view.user is None else f"No usage of {view.user}.",
        ),
        reservations=Table(
            "Reservations this week (ds01 reservations --all)",
            _week_columns(overview),
            _week_rows(overview),
            "No reservations this week.",
        ),
    )


def usage_bar(usage: Usage, width: int = 30, *, full: str = "█", empty: str = "░") -> str:
    """``[█████░░░░░] 3/8 devices, 2.43/4 GPU-equivalents allocated``."""
    filled = round(usage.fraction * width)
    return (
        f"[{full * filled}{empty * (width - filled)}] "
        f"{usage.devices_allocated}/{usage.devices} devices, "
        f"{number(usage.gpu_equivalents_allocated)}/{number(usage.gpu_equivalents)} "
        "GPU-equivalents allocated"
    )


def container_detail(overview: Overview, key: str) -> list[tuple[str, str]] | None:
    """Every field of container ``key`` (its Docker name) for the detail screen, as
    (label, text) pairs; ``None`` when the overview has no such container."""
    from ds01.tui.cluster_frame import cluster_detail, is_cluster

    if is_cluster(overview):
        return cluster_detail(overview, key)
    container = next(
        (c for c in overview.get("containers", []) if c.get("docker_name") == key), None
    )
    if container is None:
        return None
    labels = _labels(overview)
    at = _when(overview.get("at"))
    ports = ", ".join(
        f"{p['host_ip']}:{p.get('host_port') or '?'} -> {p['container_port']}"
        for p in container.get("ports", [])
    )
    gpus = [f"{labels.get(u, '?')}  {u}" for u in container.get("gpus", [])]
    idle = container.get("idle_minutes")
    pairs = [
        ("Name", container["name"]),
        ("Owner", container["user"]),
        ("Docker name", container["docker_name"]),
        ("State", _state_cell(container, at)),
        ("Image", container["image"]),
        ("Created", container.get("created_at") or "-"),
        ("GPU-equivalents", number(container["gpu_equivalents"])),
        ("Devices", "\n".join(gpus) or "none"),
        ("GPU utilisation", percent(container.get("gpu_utilization_percent"))),
        ("GPU memory used", mib(container.get("gpu_memory_used_mib"))),
        ("Ports", ports or "none"),
        ("Idle for", duration(idle * 60) if idle is not None else "-"),
        ("Cleanup", time_to_cleanup(container, at)),
        ("Stop at", container.get("stop_at") or "-"),
        ("Runtime ends", container.get("runtime_ends_at") or "-"),
        ("Why", container.get("stop_reason") or "-"),
        ("Exempt until", container.get("exempt_until") or "-"),
        ("OOM kills", str(container.get("oom_kills") or 0)),
    ]
    if container.get("last_oom"):
        pairs.append(
            ("Last OOM kill", f"{container['last_oom']} ({container.get('last_oom_limit')})")
        )
    return pairs


# -- plain text (--once) ------------------------------------------------------------------------


def table_lines(table: Table) -> list[str]:
    """The table as aligned lines: its title, the header, the rows (or its ``empty`` text)."""
    lines = [table.title]
    if not table.rows:
        return [*lines, f"  {table.empty}"]
    widths = [len(c) for c in table.columns]
    for row in table.rows:
        for i, cell in enumerate(row.cells):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return ("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    return [*lines, line(table.columns), *(line(r.cells) for r in table.rows)]


def render_text(frame: Frame, *, ascii_only: bool = False) -> str:
    """The whole frame as plain text, no escape codes (``ds01-dashboard --once``)."""
    full, empty = ("#", ".") if ascii_only else ("█", "░")
    lines = [
        frame.title,
        "GPUs " + usage_bar(frame.usage, full=full, empty=empty),
        frame.summary,
        *frame.notes,
    ]
    if frame.view.user is not None:
        lines.append(f"Filter: user {frame.view.user}")
    for table in frame.tables:
        lines += ["", *table_lines(table)]
    return "\n".join(lines) + "\n"


__all__ = [
    "SORTS",
    "SORT_NAMES",
    "Frame",
    "Table",
    "TableRow",
    "Usage",
    "View",
    "activity",
    "build_frame",
    "container_detail",
    "render_text",
    "sort_containers",
    "table_lines",
    "usage_bar",
]
