"""Reclaiming borrowed containers for a request within quota: the queue's last step.

After each plan, the queue dispatcher (``ds01.daemon.dispatcher``) calls
:meth:`BorrowReclaim.run` with the plan's head, if any: the first request within quota
that cannot be placed. ``ds01.core.borrowing.choose_reclaim`` picks the borrowed
containers whose devices it needs (newest first, never before ``min_runtime_minutes``
from when its borrowed devices were placed unless warned already, never a reserved one,
never one of an owner no longer above ``gpu_limit``, only as many as needed) and
``reclaim_steps`` says what is due:

- a chosen container not warned yet: its owner is told on their terminals and a
  ``container.reclaim_warning`` event records when it will be stopped;
- a chosen container warned ``reclaim_grace_minutes`` ago: it is stopped (never removed:
  its filesystem is kept), its devices go back to the pool at once (``gpu.release``), and
  ``container.reclaim`` records it; the next queue pass places the waiting request. The
  owner may start it again: the start re-queues as any start whose devices were released;
- a warned container no longer needed (the request started elsewhere, was cancelled, or
  nobody within quota waits any more): ``container.reclaim_cancelled``, the owner is told.

State: the warnings (container id → when warned), in the state store (``warnings``, kind
``reclaim``): a restarted ds01d neither warns again nor starts the grace again, and a
rename (its Docker name changes, its id does not) never starts the grace again either; a
warning is forgotten when its container is stopped, no longer needed, or gone.
Locks: ``run`` is called under the allocation lock (it decides and frees devices).
Calls: the context (records, runtime, store, events, configuration) and
``ContainerOps.stop_by_daemon``.

The reservation hook: a borrowed container on a device of its owner's reservation in force
is never reclaimed (``core.borrowing.reserved_by_holder`` over the stored reservations).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final

from ds01.core.borrowing import (
    GpuLimits,
    HoldingFacts,
    ReclaimChoice,
    choose_reclaim,
    nothing_reserved,
    reclaim_steps,
    reserved_by_holder,
    stop_due,
)
from ds01.core.event_query import parse_ts
from ds01.core.scheduler import PendingRequest
from ds01.daemon.access import resource_of
from ds01.daemon.context import DaemonContext
from ds01.daemon.queue_desk import release_devices
from ds01.daemon.reservations import kept
from ds01.daemon.views import allocation_state
from ds01.errors import Ds01Error
from ds01.model import labels as L
from ds01.model.device import Inventory
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser, user_by_uid

log = logging.getLogger(__name__)

#: The kind of the stored warnings (``StateStore.warnings``).
WARNING_KIND: Final = "reclaim"

#: ``ContainerOps.stop_by_daemon``: stop a container for the daemon, with the reason.
StopByDaemon = Callable[[ContainerRecord, str], None]


class BorrowReclaim:
    """Warns, then stops, the borrowed containers a request within quota needs (see the
    module docstring for the contract)."""

    def __init__(self, context: DaemonContext, stop: StopByDaemon) -> None:
        self.context = context
        self._stop_container = stop

    def run(
        self,
        head: PendingRequest | None,
        inventory: Inventory,
        records: list[ContainerRecord],
        now: datetime,
    ) -> bool:
        """Under the allocation lock: one reclaim step for ``head``; ``True`` when devices
        were freed (the queue should plan again)."""
        policy = self.context.config().limits.borrowing
        by_name = {r.docker_name: r for r in records}
        warned = self._warned(records)
        if not policy.enabled and not warned:
            return False
        state = allocation_state(records)
        borrowed = [r for r in records if r.gpus and L.borrowed_of(r.labels)]
        if not borrowed:
            head = None
        placed_at = _placed_at(borrowed, now) if head is not None else {}
        reserved = reserved_by_holder(kept(self.context), now) if head is not None else None
        limits = self._gpu_limits(borrowed) if head is not None else {}
        facts = HoldingFacts(
            placed_at,
            is_reserved=reserved or nothing_reserved,
            reclaiming=warned,
            limits=limits,
        )
        choice = choose_reclaim(head, inventory, state, now, policy, facts)
        steps = reclaim_steps(choice, warned, now, policy)
        for container in steps.cancel:
            self._cancel(by_name[container], choice)
        for container in steps.warn:
            self._warn(by_name[container], choice, now)
        freed = False
        for container in steps.stop:
            freed = self._stop(by_name[container], choice, now) or freed
        return freed

    def _gpu_limits(self, borrowed: list[ContainerRecord]) -> GpuLimits:
        """The ``gpu_limit`` of each owner of a borrowed container; an owner without an
        account is left out (counted as above quota)."""
        return self.context.gpu_limits(borrowed, _owner)

    def _warned(self, records: list[ContainerRecord]) -> dict[str, datetime]:
        """The stored warnings of the containers in ``records``, by their Docker names now
        (``choose_reclaim`` speaks of those); those of containers gone are forgotten."""
        store = self.context.store
        stored = store.warnings(WARNING_KIND)
        by_id = {r.id: r for r in records}
        gone = [c for c in stored if c not in by_id]
        if gone:
            store.forget_warnings(WARNING_KIND, gone)
        return {
            by_id[c].docker_name: datetime.fromisoformat(t) for c, t in stored.items() if c in by_id
        }

    def _warn(self, record: ContainerRecord, choice: ReclaimChoice, now: datetime) -> None:
        policy = self.context.config().limits.borrowing
        self.context.store.add_warning(WARNING_KIND, record.id, now.isoformat())
        stop_at = stop_due(now, policy).isoformat(timespec="seconds")
        self.context.notify_user(  # first: whoever sees the event finds the owner told
            record.uid,
            f"ds01: your borrowed container {record.name!r} will be stopped at {stop_at} "
            f"(its files are kept): {choice.reason} `container-start {record.name}` queues it "
            "again afterwards.",
        )
        self.context.events.emit(
            "container.reclaim_warning",
            user="ds01d",
            resource=resource_of(record),
            details={"stop_at": stop_at, "for_request": choice.for_request,
                     "reason": choice.reason, "borrowed": True},
        )  # fmt: skip

    def _cancel(self, record: ContainerRecord, choice: ReclaimChoice) -> None:
        self.context.store.forget_warnings(WARNING_KIND, [record.id])
        self.context.events.emit(
            "container.reclaim_cancelled",
            user="ds01d",
            resource=resource_of(record),
            details={"reason": choice.reason},
        )
        self.context.notify_user(
            record.uid, f"ds01: your borrowed container {record.name!r} is no longer needed "
            "elsewhere: it keeps running.",
        )  # fmt: skip

    def _stop(self, record: ContainerRecord, choice: ReclaimChoice, now: datetime) -> bool:
        ctx = self.context
        reason = f"reclaimed: borrowed above quota. {choice.reason}"
        try:
            if record.status == "running":
                self._stop_container(record, reason)
            release_devices(ctx, record, now, "reclaimed")
        except Ds01Error as exc:
            log.error("could not reclaim %s: %s", record.docker_name, exc.message)
            return False
        ctx.store.forget_warnings(WARNING_KIND, [record.id])
        ctx.events.emit(
            "container.reclaim",
            user="ds01d",
            resource=resource_of(record),
            details={"for_request": choice.for_request, "reason": choice.reason,
                     "borrowed": True},
        )  # fmt: skip
        ctx.notify_user(
            record.uid,
            f"ds01: your borrowed container {record.name!r} was stopped (files kept): "
            f"{choice.reason} `container-start {record.name}` queues it again.",
        )
        return True


def _placed_at(borrowed: list[ContainerRecord], now: datetime) -> Mapping[str, datetime | None]:
    """When each running borrowed container's devices were placed (``None``: not running).

    That is its ``ds01.created_at``: a borrowed container is created when its devices are
    placed, and re-created when it gets devices again after they were released
    (``daemon.reacquire``), so a restart in between does not make it younger. Unreadable:
    ``now``, fresh, never reclaimed early."""
    placed: dict[str, datetime | None] = {}
    for record in borrowed:
        if record.status != "running":
            placed[record.docker_name] = None
            continue
        created = parse_ts(record.created_at)
        if created is None:
            log.warning("creation time of %s unreadable: %r", record.docker_name,
                        record.created_at)  # fmt: skip
        placed[record.docker_name] = created or now
    return placed


def _owner(record: ContainerRecord) -> UnixUser | None:
    """The account of ``record``'s owner; ``None`` (logged) when it has none."""
    try:
        return user_by_uid(record.uid)
    except Ds01Error as exc:
        log.warning("owner of %s unknown: %s", record.docker_name, exc.message)
        return None


__all__ = ["BorrowReclaim"]
