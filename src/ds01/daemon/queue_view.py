"""The GPU queue as the API shows it: requests with their place in the last pass's plan."""

from __future__ import annotations

import time
from datetime import datetime

from ds01.core.allocation import GpuRequest
from ds01.daemon import schemas as api
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.daemon.state import QueuedRequest
from ds01.errors import Conflict, NotFound


def describe(
    service: Ds01Service, entry: QueuedRequest, now: datetime, *, with_score: bool
) -> api.QueueEntryInfo:
    """``entry`` for the API, with its position, status and score in the last plan."""
    submitted = datetime.fromisoformat(entry.submitted_at)
    end = datetime.fromisoformat(entry.ended_at) if entry.ended_at else now
    info = api.QueueEntryInfo(
        id=entry.id,
        user=entry.user,
        container=entry.container,
        kind=entry.kind,
        request=GpuRequest(whole_gpus=entry.whole_gpus, mig_profiles=entry.mig_profiles).describe(),
        state=entry.state,
        submitted_at=entry.submitted_at,
        ended_at=entry.ended_at,
        message=entry.message,
        devices=[d for d in entry.devices.split(",") if d],
        waited_seconds=round(max((end - submitted).total_seconds(), 0.0), 1),
    )
    plan = service.queue_plan
    if entry.state != "waiting" or plan is None:
        return info
    try:
        ranked = plan.entry(entry.id)
    except KeyError:
        return info  # joined after the last pass
    update: dict[str, object] = {
        "position": ranked.position,
        "queue_length": len(plan.ranked),
        "status": ranked.status,
        "reason": ranked.reason,
    }
    reservation = plan.reservation
    if (
        reservation is not None
        and reservation.request_id == entry.id
        and reservation.estimated_start is not None
    ):
        update["estimated_start"] = reservation.estimated_start.isoformat(timespec="minutes")
    if with_score:
        parts = ranked.parts
        update["score"] = api.ScoreInfo(
            total=round(parts.total, 4),
            priority=round(parts.priority, 4),
            fairshare=round(parts.fairshare, 4),
            age=round(parts.age, 4),
            fairshare_factor=round(parts.fairshare_factor, 4),
            waited_hours=round(parts.waited_hours, 3),
        )
    return info.model_copy(update=update)


def waiting(service: Ds01Service, caller: Caller, *, all_users: bool) -> list[api.QueueEntryInfo]:
    """Waiting requests in queue order: the caller's own, or (admins, ``all_users``) all."""
    if all_users and not caller.is_admin:
        raise service.deny(caller, "queue/*", "Only admins may see every user's requests.")
    entries = [e for e in service.store.queued() if all_users or e.uid == caller.uid]
    return in_order(service, entries, service.now())


def in_order(
    service: Ds01Service, entries: list[QueuedRequest], now: datetime
) -> list[api.QueueEntryInfo]:
    """``entries`` described with their scores, in queue order (position, then age)."""
    infos = [describe(service, e, now, with_score=True) for e in entries]
    return sorted(infos, key=lambda i: (i.position or 10**9, i.submitted_at))


def _owned(service: Ds01Service, caller: Caller, request_id: str, verb: str) -> QueuedRequest:
    entry = service.store.queued_by_id(request_id[:64])
    if entry is None:
        raise NotFound(f"No queued request {request_id[:64]!r}. `ds01 queue` lists yours.")
    if entry.uid != caller.uid and not caller.is_admin:
        raise service.deny(
            caller, f"queue/{entry.id}", f"Request {entry.id} is not yours; you may not {verb} it."
        )
    return entry


def wait_for(
    service: Ds01Service, caller: Caller, request_id: str, timeout_seconds: float
) -> api.QueueEntryInfo:
    """The request once it is no longer waiting, or as it is after ``timeout_seconds``."""
    entry = _owned(service, caller, request_id, "watch")
    condition = service.queue_condition
    deadline = time.monotonic() + max(0.0, min(timeout_seconds, 60.0))
    with condition:
        while entry.state == "waiting":
            left = deadline - time.monotonic()
            if left <= 0 or not condition.wait(left):
                break
            entry = service.store.queued_by_id(entry.id) or entry
    entry = service.store.queued_by_id(entry.id) or entry
    return describe(service, entry, service.now(), with_score=True)


def cancel(service: Ds01Service, caller: Caller, request_id: str) -> api.QueueEntryInfo:
    """Withdraw a waiting request (its owner or an admin)."""
    entry = _owned(service, caller, request_id, "cancel")
    now = service.now()
    if not service.store.finish_queued(
        entry.id,
        "cancelled",
        now.isoformat(timespec="seconds"),
        message=f"cancelled by {caller.name}",
    ):
        state = (service.store.queued_by_id(entry.id) or entry).state
        raise Conflict(
            f"Request {entry.id} is {state} already; only waiting ones can be cancelled."
        )
    service.events.emit(
        "queue.cancel",
        user=caller.name,
        resource=f"queue/{entry.id}",
        details={"container": entry.container, "owner": entry.user},
    )
    service.queue_changed()
    updated = service.store.queued_by_id(entry.id) or entry
    return describe(service, updated, now, with_score=False)


__all__ = ["cancel", "describe", "in_order", "wait_for", "waiting"]
