"""Exemptions from idle and runtime limits: admins grant them, the lifecycle loop honours
them, ``container-list`` shows them.

An exemption covers all of a user's containers, or one container of theirs by name, until
its expiry; expired ones are ignored and dropped by the lifecycle loop.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from ds01.daemon import schemas as api
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.errors import NotFound
from ds01.model.names import validate_container_name
from ds01.runtime.identity import user_by_name
from ds01.runtime.store import ExemptionRecord


def info(record: ExemptionRecord) -> api.ExemptionInfo:
    return api.ExemptionInfo(
        id=record.id,
        user=record.user,
        container=record.container,
        until=record.until,
        reason=record.reason,
        created_by=record.created_by,
        created_at=record.created_at,
    )


def _require_admin(service: Ds01Service, caller: Caller, resource: str) -> None:
    if not caller.is_admin:
        raise service.deny(caller, resource, "Only admins may manage exemptions.")


def grant(service: Ds01Service, caller: Caller, request: api.ExemptionRequest) -> api.ExemptionInfo:
    """Exempt ``request.user``'s containers (or one of them) for ``request.hours``."""
    _require_admin(service, caller, f"exemption/{request.user[:64]}")
    owner = user_by_name(request.user)  # NotFound for an unknown user
    container = validate_container_name(request.container) if request.container else None
    now = service.now()
    record = ExemptionRecord(
        id=uuid.uuid4().hex[:12],
        user=owner.name,
        container=container,
        until=(now + timedelta(hours=request.hours)).isoformat(timespec="seconds"),
        reason=request.reason.strip(),
        created_by=caller.name,
        created_at=now.isoformat(timespec="seconds"),
    )
    service.store.add_exemption(record)
    service.events.emit(
        "lifecycle.exempt",
        user=caller.name,
        resource=f"exemption/{record.id}",
        details={
            "owner": record.user,
            "container": record.container,
            "until": record.until,
            "reason": record.reason,
        },
    )
    return info(record)


def listing(service: Ds01Service, caller: Caller) -> list[api.ExemptionInfo]:
    """Every exemption still in force (admins)."""
    _require_admin(service, caller, "exemption/*")
    return [info(r) for r in active(service.store.exemptions(), service.now())]


def revoke(service: Ds01Service, caller: Caller, exemption_id: str) -> api.ExemptionInfo:
    _require_admin(service, caller, f"exemption/{exemption_id[:64]}")
    found = next((r for r in service.store.exemptions() if r.id == exemption_id), None)
    if found is None or not service.store.remove_exemption(found.id):
        raise NotFound(f"No exemption {exemption_id[:64]!r}. `ds01 admin exemptions` lists them.")
    service.events.emit(
        "lifecycle.unexempt",
        user=caller.name,
        resource=f"exemption/{found.id}",
        details={"owner": found.user, "container": found.container},
    )
    return info(found)


def active(records: list[ExemptionRecord], now: datetime) -> list[ExemptionRecord]:
    """The exemptions not expired at ``now``."""
    return [r for r in records if datetime.fromisoformat(r.until) > now]


__all__ = ["active", "grant", "info", "listing", "revoke"]
