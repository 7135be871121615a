"""``GET /v1/admin/report``: the figures of ``ds01 admin report`` (admins only).

Gathers the window's audit events (``ds01.daemon.events_view``), the usage ledger, the GPU
activity the lifecycle loop records and the energy ledger from the state store, and hands
them to ``ds01.core.report.build_report``; the CLI renders the answer (Markdown, CSV, JSON
or HTML with a chart).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from ds01.core import report as core
from ds01.core.event_query import DAEMON_USER, EventQuery, container_uid, parse_ts, query_time
from ds01.daemon import events_view
from ds01.daemon import schemas as api
from ds01.daemon.creation import DEFAULT_SLICE_GROUP
from ds01.daemon.dispatcher import USAGE_HALF_LIVES_KEPT
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.errors import Ds01Error, InvalidInput, SystemFault
from ds01.events import chain
from ds01.model.units import format_duration
from ds01.runtime.identity import user_by_name, user_by_uid

log = logging.getLogger(__name__)

#: Events the report counts.
ACTIONS = core.COUNTED

def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _holdings(service: Ds01Service) -> list[core.Holding]:
    holdings = []
    for row in service.store.usage():
        try:
            holdings.append(
                core.Holding(
                    user=row.user,
                    group=row.group,
                    gpu_equivalents=float(Fraction(row.gpu_equivalents)),
                    start=datetime.fromisoformat(row.start),
                    end=datetime.fromisoformat(row.end) if row.end else None,
                    borrowed=row.borrowed,
                )
            )
        except (ValueError, ZeroDivisionError):
            log.warning("report: ignoring a malformed usage row of %s", row.container_id)
    return holdings


def _activity(service: Ds01Service, start: str, end: str) -> list[core.Activity]:
    return [
        core.Activity(
            user=row.user,
            group=row.group,
            hour=datetime.fromisoformat(row.hour),
            measured_gpu_seconds=row.measured_gpu_seconds,
            busy_gpu_seconds=row.busy_gpu_seconds,
        )
        for row in service.store.gpu_activity_between(start, end)
    ]


def _energy(service: Ds01Service, start: str, end: str) -> list[core.Energy] | None:
    between = getattr(service.store, "energy_between", None)
    if between is None:
        return None
    return [
        core.Energy(
            user=row.user,
            group=row.group,
            start=datetime.fromisoformat(row.start),
            end=datetime.fromisoformat(row.end),
            joules=float(row.joules),
        )
        for row in between(start, end)
    ]


def _grid_intensity(service: Ds01Service) -> float | None:
    energy = getattr(service.config().gpus, "energy", None)
    value = getattr(energy, "grid_intensity_g_per_kwh", None)
    return float(value) if isinstance(value, (int, float)) else None


def _uid_names(events: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    names: dict[int, str] = {}
    for event in events:
        uid = container_uid(event.get("resource"))
        if uid is None or uid in names:
            continue
        try:
            names[uid] = user_by_uid(uid).name
        except Ds01Error:
            continue  # an account that is gone: its containers' events count for nobody
    return names


def _user_groups(service: Ds01Service, users: Iterable[str]) -> dict[str, str]:
    """Each user's group as a new container of theirs would get it."""
    groups = {}
    for user in users:
        try:
            limits = service.limits_for(user_by_name(user))
        except Ds01Error:
            continue
        groups[user] = limits.groups[0] if limits.groups else DEFAULT_SLICE_GROUP
    return groups


def _log_start(service: Ds01Service) -> datetime | None:
    """When the oldest event still in the audit log was written."""
    try:
        files = chain.chain_files(service.events.path)
        head = chain.first_line(files[0]) if files else None
    except (OSError, EOFError):
        return None
    fields = chain.chain_fields(head) if head else None
    return parse_ts(fields.ts) if fields else None


def _notes(
    service: Ds01Service, start: datetime, now: datetime, energy_recorded: bool
) -> list[str]:
    config = service.config().limits
    interval = config.policies.lifecycle_interval_seconds
    notes = [
        "GPU-hours allocated: the usage ledger's holdings (GPU-equivalents x time held), "
        "clipped to the window.",
        "GPU-hours used: the devices' utilisation as the lifecycle loop read it every "
        f"{interval:g} s, weighted by GPU-equivalents; measured: the part of the allocated "
        "time with a reading (MIG instances under NVML report none).",
    ]
    kept = timedelta(hours=USAGE_HALF_LIVES_KEPT * config.scheduler.usage_half_life_hours)
    if start < now - kept:
        notes.append(
            f"The usage ledger keeps holdings for {format_duration(kept.total_seconds())} "
            f"(from {_iso(now - kept)}): GPU-hours before then are missing."
        )
    log_start = _log_start(service)
    if log_start is not None and start < log_start:
        notes.append(
            f"The audit log begins at {_iso(log_start)}: containers, reclaims and queue "
            "waits before then are not counted."
        )
    if not energy_recorded:
        notes.append("Energy is not recorded by this ds01d.")
    return notes


def report(service: Ds01Service, caller: Caller, query: Mapping[str, str]) -> api.UsageReport:
    """The answer of ``GET /v1/admin/report?from=&to=`` (ISO 8601; default: the last 30
    days up to now)."""
    if not caller.is_admin:
        raise service.deny(caller, "report", "Only admins may see usage reports.")
    now = service.now()
    end = query_time(query, "to") or now
    start = query_time(query, "from") or end - timedelta(days=core.DEFAULT_WINDOW_DAYS)
    if not start < end:
        raise InvalidInput(f"The report's start ({_iso(start)}) must be before its end.")
    selection = EventQuery(actions=ACTIONS, since=start, until=end)
    try:
        events, _ = events_view.select(service.events.path, selection, limit=2**62)
    except (OSError, EOFError) as exc:
        raise SystemFault(f"Cannot read the event log {service.events.path}: {exc}") from exc
    uid_names = _uid_names(events)
    users = {str(e["user"]) for e in events if e.get("user") not in (None, DAEMON_USER)}
    users |= set(uid_names.values())
    energy = _energy(service, _iso(start), _iso(end))
    built = core.build_report(
        start=start,
        end=end,
        now=now,
        events=events,
        holdings=_holdings(service),
        activity=_activity(service, _iso(start), _iso(end)),
        energy=energy,
        co2_g_per_kwh=_grid_intensity(service),
        uid_names=uid_names,
        user_groups=_user_groups(service, users),
        notes=_notes(service, start, now, energy is not None),
    )
    return api.UsageReport.model_validate(built.to_dict())


__all__ = ["report"]
