"""What a container uses now, read from Docker's answers: pure functions, standard library.

``container-stats`` asks Docker once per running container (``GET /containers/{id}/stats``
with ``stream=false``: Docker samples twice, a second apart, so ``precpu_stats`` holds the
first sample) and for a container's processes (``GET /containers/{id}/top``). These
functions turn those answers into the figures ds01 shows, computed exactly as ``docker
stats`` computes them, so the two agree. A figure Docker does not give is ``None`` ("not
known"), never 0.

``container-logs --tail`` is bounded here too (:func:`parse_tail`), so that the CLI and
ds01d refuse the same values with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The most lines ``container-logs --tail`` asks for; more reads the whole log ("all"),
#: which Docker bounds anyway (two rotated files of 10 MiB each).
MAX_TAIL_LINES = 100_000
#: The ``--tail`` value that means the whole log.
ALL_LINES = "all"

#: ``ps`` columns asked of the host for ``top`` (``ps -o …``); the command comes last, as
#: it may contain spaces (Docker gives every word after the last title to it).
TOP_PS_ARGS = "-o pid,user,pcpu,rss,args"


def parse_tail(text: str) -> int | None:
    """``--tail``'s value: a number of lines from 0 to :data:`MAX_TAIL_LINES`, or ``all``
    (``None``: the whole log).

    Raises:
        ValueError: anything else, saying what is accepted.
    """
    if text.strip().lower() == ALL_LINES:
        return None
    if text.isascii() and text.isdigit() and int(text) <= MAX_TAIL_LINES:
        return int(text)
    raise ValueError(
        f"tail must be a number of lines from 0 to {MAX_TAIL_LINES} or {ALL_LINES!r}, "
        f"got {text[:40]!r}."
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def cpu_percent(stats: Mapping[str, Any]) -> float | None:
    """CPU use between Docker's two samples, in percent of one core (a container busy on two
    cores reads 200), as ``docker stats`` computes it: the container's CPU time delta over
    the host's, times the number of online CPUs.

    ``None`` when the answer lacks the earlier sample (a stopped container, a one-shot
    read) or the host's counter did not move.
    """
    now, before = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    used = _number((now.get("cpu_usage") or {}).get("total_usage"))
    used_before = _number((before.get("cpu_usage") or {}).get("total_usage"))
    system = _number(now.get("system_cpu_usage"))
    system_before = _number(before.get("system_cpu_usage"))
    if used is None or used_before is None or system is None or system_before is None:
        return None
    cpu_delta, system_delta = used - used_before, system - system_before
    if system_delta <= 0 or cpu_delta < 0:  # a restart between the samples resets counters
        return None
    online = _number(now.get("online_cpus")) or len(
        (now.get("cpu_usage") or {}).get("percpu_usage") or ()
    )
    if not online:
        return None
    return cpu_delta / system_delta * online * 100.0


def memory_used_bytes(stats: Mapping[str, Any]) -> int | None:
    """Memory in use, as ``docker stats`` shows it: the cgroup's usage less the page cache
    the kernel may drop at once (``total_inactive_file`` on cgroup v1, ``inactive_file`` on
    v2). ``None`` when Docker gives no usage (a stopped container)."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if not isinstance(usage, int) or isinstance(usage, bool):
        return None
    detail = memory.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):
        cache = detail.get(key)
        if isinstance(cache, int) and 0 <= cache < usage:
            return int(usage - cache)
    return usage


def pids(stats: Mapping[str, Any]) -> int | None:
    """Processes (and threads) in the container's cgroup now; ``None`` when not reported."""
    current = (stats.get("pids_stats") or {}).get("current")
    return current if isinstance(current, int) and not isinstance(current, bool) else None


@dataclass(frozen=True)
class ProcessRow:
    """One process of a container as the host's ``ps`` sees it (:data:`TOP_PS_ARGS`).

    ``host_pid`` is the host's process id (not the one inside the container);
    ``cpu_percent`` is ``ps``'s average over the process's life; ``None``: not reported.
    """

    host_pid: int
    user: str
    cpu_percent: float | None
    memory_bytes: int | None
    command: str


def processes(top: Mapping[str, Any]) -> list[ProcessRow]:
    """Docker's ``top`` answer (``Titles`` and ``Processes``, from :data:`TOP_PS_ARGS`) as
    rows; a row without a readable PID is left out."""
    titles: Sequence[str] = top.get("Titles") or ()
    column = {title.upper(): i for i, title in enumerate(titles)}

    def cell(row: Sequence[str], title: str) -> str | None:
        i = column.get(title)
        return str(row[i]) if i is not None and i < len(row) else None

    rows = []
    for row in top.get("Processes") or ():
        pid = cell(row, "PID") or ""
        if not pid.isdigit():
            continue
        cpu, rss = cell(row, "%CPU"), cell(row, "RSS")
        rows.append(
            ProcessRow(
                host_pid=int(pid),
                user=cell(row, "USER") or "",
                cpu_percent=_float(cpu),
                memory_bytes=int(rss) * 1024 if rss and rss.isdigit() else None,  # ps: KiB
                command=cell(row, "COMMAND") or cell(row, "CMD") or "",
            )
        )
    return rows


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


__all__ = [
    "ALL_LINES",
    "MAX_TAIL_LINES",
    "TOP_PS_ARGS",
    "ProcessRow",
    "cpu_percent",
    "memory_used_bytes",
    "parse_tail",
    "pids",
    "processes",
]
