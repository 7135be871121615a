"""Workload traces for ``ds01 simulate``: a CSV file, one job a line.

Columns (header required, any order)::

    submit_hours,user,group,gpus,mig,duration_hours,idle_tail_hours
    0.25,alice,students,0,1g.5gb,1.5,0
    1.0,pat,phd,2,,20,3.5

- ``submit_hours``: when the job is submitted, in hours from the start of the trace (>= 0).
- ``user``, ``group``: who submits it and their config group (a user has one group).
- ``gpus``: whole GPUs (0..64); ``mig``: one MIG profile (``3g.20gb``) or empty. A job asks
  for one kind, never both, and for at least one device; like a container, it gets at most
  one MIG instance (``3g.20gb+1g.5gb`` is refused with the reason).
- ``duration_hours``: how long the job computes once started (>= 0).
- ``idle_tail_hours``: how long its container then stays allocated doing nothing (a
  forgotten notebook) before its owner stops it (>= 0).

Blank lines and lines starting with ``#`` are skipped; a quoted field may not span lines.
Every problem is reported as ``InvalidInput`` naming the file and line.

GPU reservations to replay with a trace (``ds01 simulate --reservations FILE``) are a CSV
file of the same kind, one reservation a line::

    made_hours,start_hours,hours,user,gpus,mig
    9,38,3,prof1,2,
    42,54,2,,1,

- ``made_hours``: when it is asked for (``ds01 reserve``), in trace hours (>= 0);
- ``start_hours``, ``hours``: its window (``hours`` > 0);
- ``user``: its holder, empty for an admin's maintenance window (for nobody);
- ``gpus`` or ``mig``: whole GPUs, or one MIG instance of a profile.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ds01.core.allocation import GpuRequest
from ds01.errors import InvalidInput

RESERVATION_COLUMNS = ("made_hours", "start_hours", "hours", "user", "gpus", "mig")
TRACE_COLUMNS = (
    "submit_hours",
    "user",
    "group",
    "gpus",
    "mig",
    "duration_hours",
    "idle_tail_hours",
)
MAX_WHOLE_GPUS = 64
_NAME_RE = re.compile(r"[^\s:/,]+")


@dataclass(frozen=True)
class TraceJob:
    """One job of a trace.

    Attributes:
        line: its line in the trace file (1-based).
        submit_hours: hours from the start of the trace to its submission.
        user: who submits it.
        group: the user's config group.
        request: the GPUs it asks for.
        duration_hours: hours it computes once started.
        idle_tail_hours: hours its container then stays allocated and idle.
    """

    line: int
    submit_hours: float
    user: str
    group: str
    request: GpuRequest
    duration_hours: float
    idle_tail_hours: float


@dataclass(frozen=True)
class TraceReservation:
    """One reservation to replay: asked for at ``made_hours`` by (and for) ``holder``
    (``None``: maintenance), ``whole_gpus`` GPUs or one ``mig_profile`` instance over
    ``[start_hours, start_hours + hours)``."""

    line: int
    made_hours: float
    start_hours: float
    hours: float
    holder: str | None
    whole_gpus: int = 0
    mig_profile: str | None = None


class _LineError(ValueError):
    """A problem on the line being parsed (the caller adds file and line)."""


def _non_negative_hours(row: dict[str, str], column: str) -> float:
    text = row[column].strip()
    try:
        value = float(text)
    except ValueError:
        raise _LineError(f"{column} must be a number of hours, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _LineError(f"{column} must be a finite number >= 0, got {text!r}")
    return value


def _name(row: dict[str, str], column: str) -> str:
    text = row[column].strip()
    if not _NAME_RE.fullmatch(text):
        raise _LineError(f"{column} must be a name without spaces, ':', '/' or ',', got {text!r}")
    return text


def _request(row: dict[str, str]) -> GpuRequest:
    gpus_text, mig_text = row["gpus"].strip() or "0", row["mig"].strip()
    if not gpus_text.isdigit() or int(gpus_text) > MAX_WHOLE_GPUS:
        raise _LineError(f"gpus must be a whole number 0..{MAX_WHOLE_GPUS}, got {gpus_text!r}")
    profiles = tuple(p.strip() for p in mig_text.split("+")) if mig_text else ()
    try:
        request = GpuRequest(whole_gpus=int(gpus_text), mig_profiles=profiles)
    except InvalidInput as exc:
        raise _LineError(exc.message) from None
    if request.is_empty:
        raise _LineError("the job asks for no GPU: give gpus > 0 or a mig profile")
    return request


def _header(
    fields: list[str], source: str, line: int, expected: tuple[str, ...] = TRACE_COLUMNS
) -> list[str]:
    columns = [f.strip() for f in fields]
    unknown = [c for c in columns if c not in expected]
    missing = [c for c in expected if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    problems = [
        *(f"unknown column {c!r}" for c in unknown),
        *(f"missing column {c!r}" for c in missing),
        *(f"column {c!r} appears twice" for c in repeated),
    ]
    if problems:
        raise InvalidInput(
            f"{source}:{line}: {'; '.join(problems)} (expected: {','.join(expected)})",
            details={"file": source, "line": line},
        )
    return columns


def _rows(
    text: str, source: str, expected: tuple[str, ...], what: str = "trace"
) -> Iterator[tuple[int, Callable[[], dict[str, str]]]]:
    """(line number, a function giving the row by column) for each line after the header;
    the function raises ``_LineError`` for a wrong number of fields."""
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise InvalidInput(f"{source}: the {what} is empty (no header, no line)")
    (header_line, header_text), *rows = lines
    columns = _header(next(csv.reader([header_text])), source, header_line, expected)
    for number, line in rows:
        fields = next(csv.reader([line]))

        def row(fields: list[str] = fields) -> dict[str, str]:
            if len(fields) != len(columns):
                raise _LineError(f"expected {len(columns)} fields, found {len(fields)}")
            return dict(zip(columns, fields, strict=True))

        yield number, row


def parse_trace(text: str, source: str) -> tuple[TraceJob, ...]:
    """The jobs of a trace, in submission order (file order among equal times).

    ``source`` names the trace in error messages.

    Raises:
        InvalidInput: a missing or unknown column, a bad value, a user listed under two
            groups, or no job at all; the message starts with ``source:line:``.
    """
    jobs: list[TraceJob] = []
    group_of: dict[str, tuple[str, int]] = {}
    for number, read_row in _rows(text, source, TRACE_COLUMNS):
        try:
            row = read_row()
            job = TraceJob(
                line=number,
                submit_hours=_non_negative_hours(row, "submit_hours"),
                user=_name(row, "user"),
                group=_name(row, "group"),
                request=_request(row),
                duration_hours=_non_negative_hours(row, "duration_hours"),
                idle_tail_hours=_non_negative_hours(row, "idle_tail_hours"),
            )
            first_group, first_line = group_of.setdefault(job.user, (job.group, number))
            if first_group != job.group:
                raise _LineError(
                    f"user {job.user!r} is in group {job.group!r} here and in group "
                    f"{first_group!r} on line {first_line}; a user has one group"
                )
        except _LineError as problem:
            raise InvalidInput(
                f"{source}:{number}: {problem}", details={"file": source, "line": number}
            ) from None
        jobs.append(job)
    if not jobs:
        raise InvalidInput(f"{source}: the trace has a header but no job")
    return tuple(sorted(jobs, key=lambda job: (job.submit_hours, job.line)))


def _reservation(number: int, row: dict[str, str]) -> TraceReservation:
    request = _request(row)
    if request.whole_gpus and request.mig_profiles:
        raise _LineError("a reservation is for whole GPUs or one MIG instance, not both")
    hours = _non_negative_hours(row, "hours")
    if hours <= 0:
        raise _LineError(f"hours must be more than 0, got {row['hours'].strip()!r}")
    holder = row["user"].strip()
    return TraceReservation(
        line=number,
        made_hours=_non_negative_hours(row, "made_hours"),
        start_hours=_non_negative_hours(row, "start_hours"),
        hours=hours,
        holder=_name(row, "user") if holder else None,
        whole_gpus=request.whole_gpus,
        mig_profile=request.mig_profiles[0] if request.mig_profiles else None,
    )


def parse_reservations(text: str, source: str) -> tuple[TraceReservation, ...]:
    """The reservations of a file (module docstring), in the order they are asked for
    (file order among equal times).

    Raises:
        InvalidInput: a missing or unknown column or a bad value; the message starts with
            ``source:line:``.
    """
    made: list[TraceReservation] = []
    for number, read_row in _rows(text, source, RESERVATION_COLUMNS, "reservations file"):
        try:
            made.append(_reservation(number, read_row()))
        except _LineError as problem:
            raise InvalidInput(
                f"{source}:{number}: {problem}", details={"file": source, "line": number}
            ) from None
    return tuple(sorted(made, key=lambda r: (r.made_hours, r.line)))


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInput(f"{path}: cannot read the {what}: {reason or exc}") from None


def read_trace(path: Path) -> tuple[TraceJob, ...]:
    """:func:`parse_trace` of the file at ``path``.

    Raises:
        InvalidInput: the file cannot be read, is not UTF-8, or is not a valid trace.
    """
    return parse_trace(_read(path, "trace"), str(path))


def read_reservations(path: Path) -> tuple[TraceReservation, ...]:
    """:func:`parse_reservations` of the file at ``path`` (``InvalidInput`` as there, or
    when it cannot be read)."""
    return parse_reservations(_read(path, "reservations"), str(path))


__all__ = [
    "MAX_WHOLE_GPUS",
    "RESERVATION_COLUMNS",
    "TRACE_COLUMNS",
    "TraceJob",
    "TraceReservation",
    "parse_reservations",
    "parse_trace",
    "read_reservations",
    "read_trace",
]
