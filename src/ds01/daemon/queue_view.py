"""The GPU queue as the API shows it: requests with their place in the last pass's plan.

Each answer reads the plan once and takes every position, length, status and estimate from
it (``ds01.core.scheduler.line_places``), so one answer never mixes two passes.
"""

from __future__ import annotations

import time
from datetime import datetime

from ds01.core.allocation import describe_gpus
from ds01.core.scheduler import LinePlace, line_places
from ds01.daemon import schemas as api
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.errors import Conflict, NotFound
from ds01.runtime.store import QueuedRequest


class _Snapshot:
    """The dispatcher's last plan, read once, and the place in its line of every request
    waiting now: everything one answer shows comes from this one plan (a pass may publish
    another while the answer is made)."""

    def __init__(self, service: Ds01Service, queued: list[QueuedRequest] | None = None) -> None:
        """``queued``: the waiting requests as the caller has just read them (``None``: read
        them now), so that what is listed and what has a place come from one read."""
        self.plan = service.status.queue_plan
        self.places: dict[str, LinePlace] = {}
        if self.plan is not None:
            waiting_now = service.store.queued() if queued is None else queued
            self.places = line_places(self.plan, {e.id for e in waiting_now})

    def describe(
        self, entry: QueuedRequest, now: datetime, *, with_score: bool
    ) -> api.QueueEntryInfo:
        """``entry`` for the API, with its position, status and score in the plan."""
        submitted = datetime.fromisoformat(entry.submitted_at)
        end = datetime.fromisoformat(entry.ended_at) if entry.ended_at else now
        info = api.QueueEntryInfo(
            id=entry.id,
            user=entry.user,
            container=entry.container,
            kind=entry.kind,
            request=describe_gpus(entry.whole_gpus, entry.mig_profiles),
            state=entry.state,
            submitted_at=entry.submitted_at,
            ended_at=entry.ended_at,
            message=entry.message,
            devices=[d for d in entry.devices.split(",") if d],
            waited_seconds=round(max((end - submitted).total_seconds(), 0.0), 1),
        )
        place = self.places.get(entry.id)
        if entry.state != "waiting" or place is None:
            return info  # finished, or joined after the last pass
        ranked = place.entry
        update: dict[str, object] = {
            "position": place.position,
            "queue_length": place.queue_length,
            "status": ranked.status,
            "reason": ranked.reason,
        }
        reservation = self.plan.reservation if self.plan is not None else None
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

    def rank(self, entry_id: str) -> int:
        """Where a request comes in the plan's order (those not in it last)."""
        place = self.places.get(entry_id)
        return place.entry.position if place is not None else 10**9


def describe(
    service: Ds01Service, entry: QueuedRequest, now: datetime, *, with_score: bool
) -> api.QueueEntryInfo:
    """``entry`` for the API, with its position, status and score in the last plan."""
    return _Snapshot(service).describe(entry, now, with_score=with_score)


def waiting(service: Ds01Service, caller: Caller, *, all_users: bool) -> list[api.QueueEntryInfo]:
    """Waiting requests in queue order: the caller's own, or (admins, ``all_users``) all."""
    if all_users and not caller.is_admin:
        raise service.deny(caller, "queue/*", "Only admins may see every user's requests.")
    queued = service.store.queued()
    entries = [e for e in queued if all_users or e.uid == caller.uid]
    return in_order(service, entries, service.now(), queued=queued)


def in_order(
    service: Ds01Service,
    entries: list[QueuedRequest],
    now: datetime,
    *,
    queued: list[QueuedRequest] | None = None,
) -> list[api.QueueEntryInfo]:
    """``entries`` described with their scores, in queue order (the plan's, then age), all
    from one snapshot of the plan (``queued``: every waiting request, if already read)."""
    snapshot = _Snapshot(service, queued)
    ordered = sorted(entries, key=lambda e: (snapshot.rank(e.id), e.submitted_at))
    return [snapshot.describe(e, now, with_score=True) for e in ordered]


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
