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
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ds01.core.allocation import GpuRequest
from ds01.errors import InvalidInput

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


def _header(fields: list[str], source: str, line: int) -> list[str]:
    columns = [f.strip() for f in fields]
    unknown = [c for c in columns if c not in TRACE_COLUMNS]
    missing = [c for c in TRACE_COLUMNS if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    problems = [
        *(f"unknown column {c!r}" for c in unknown),
        *(f"missing column {c!r}" for c in missing),
        *(f"column {c!r} appears twice" for c in repeated),
    ]
    if problems:
        raise InvalidInput(
            f"{source}:{line}: {'; '.join(problems)} (expected: {','.join(TRACE_COLUMNS)})",
            details={"file": source, "line": line},
        )
    return columns


def parse_trace(text: str, source: str) -> tuple[TraceJob, ...]:
    """The jobs of a trace, in submission order (file order among equal times).

    ``source`` names the trace in error messages.

    Raises:
        InvalidInput: a missing or unknown column, a bad value, a user listed under two
            groups, or no job at all; the message starts with ``source:line:``.
    """
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise InvalidInput(f"{source}: the trace is empty (no header, no job)")
    (header_line, header_text), *rows = lines
    columns = _header(next(csv.reader([header_text])), source, header_line)
    jobs: list[TraceJob] = []
    group_of: dict[str, tuple[str, int]] = {}
    for number, line in rows:
        fields = next(csv.reader([line]))
        try:
            if len(fields) != len(columns):
                raise _LineError(f"expected {len(columns)} fields, found {len(fields)}")
            row = dict(zip(columns, fields, strict=True))
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


def read_trace(path: Path) -> tuple[TraceJob, ...]:
    """:func:`parse_trace` of the file at ``path``.

    Raises:
        InvalidInput: the file cannot be read, is not UTF-8, or is not a valid trace.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInput(f"{path}: cannot read the trace: {reason or exc}") from None
    return parse_trace(text, str(path))


__all__ = ["MAX_WHOLE_GPUS", "TRACE_COLUMNS", "TraceJob", "parse_trace", "read_trace"]
