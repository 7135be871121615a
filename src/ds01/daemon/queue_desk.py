"""``QueueDesk``: the queue side of a create or start that found no free devices.

A request within quota that finds no free devices joins the GPU queue when it asks to
(``queue=1``); the dispatcher (``ds01.daemon.dispatcher``) starts it when its turn comes.
A user may not have more waiting requests than ``max_queued`` nor more containers (made or
waiting) than ``max_containers`` (``ds01.core.queue_room``). A create of the Docker API
door's is held by its client while it waits (``held``: ``ds01.daemon.held_creates``).

State: the held creates (``held``); the queue itself is in the state store. Locks: every
method that joins or releases runs under the allocation lock (``ds01.daemon.context``): a
place in the queue and the free devices are decided together. Calls: the context (store,
events, backend, configuration, ``records()``, ``queue_changed``).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from ds01.config.resolve import resolve_policy
from ds01.core.allocation import GpuRequest
from ds01.core.docker_create import RunOptions
from ds01.core.queue_room import WaitingRequest, check_queue_room
from ds01.daemon import schemas as api
from ds01.daemon.access import devices_details, resource_of
from ds01.daemon.context import DaemonContext
from ds01.daemon.held_creates import DOOR_INTERFACE, HeldCreates
from ds01.daemon.prepared import PreparedCreate, Queued
from ds01.errors import Conflict, InvalidInput, NoCapacity
from ds01.model import labels as L
from ds01.model.device import Inventory
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser
from ds01.runtime.store import QueuedRequest, QueueKind


def release_devices(
    context: DaemonContext, record: ContainerRecord, now: datetime, reason: str
) -> None:
    """Under the allocation lock: ``record``'s devices go back to the pool at ``now`` (the
    store's release) and a ``gpu.release`` event by ds01d says so, with ``reason``.

    Raises:
        Ds01Error: the store could not record the release (then no event is written).
    """
    context.store.release(record.id, record.docker_name, now.isoformat(timespec="seconds"))
    context.events.emit(
        "gpu.release",
        user="ds01d",
        resource=resource_of(record),
        details=devices_details(record.gpus, record.gpu_equivalents, reason=reason),
    )


def released_request(record: ContainerRecord, inventory: Inventory) -> GpuRequest:
    """What a released container asks for again: as many whole GPUs, or the same MIG
    profile, as its labels record.

    Raises:
        InvalidInput: a device it held is gone, or it held several MIG instances (made
            before a container got at most one).
    """
    by_uuid = inventory.by_uuid()
    devices = [by_uuid.get(u) for u in record.labels.get(L.GPUS, "").split(",") if u]
    if any(d is None for d in devices):
        raise InvalidInput(
            f"{record.name} held devices that this machine no longer has (the MIG layout "
            "changed?). Re-create it: your files in /workspace are kept."
        )
    known = [d for d in devices if d is not None]
    try:
        return GpuRequest(
            whole_gpus=sum(1 for d in known if d.kind == "gpu"),
            mig_profiles=tuple(d.profile or "" for d in known if d.kind == "mig"),
        )
    except InvalidInput as exc:  # made before a container got at most one MIG instance
        raise InvalidInput(
            f"{record.name} held several MIG instances, which ds01 no longer gives one "
            f"container ({exc.message}) Re-create it: your files in /workspace are kept."
        ) from None


class QueueDesk:
    """Joins requests to the GPU queue and gives released devices back to the pool (see the
    module docstring for the contract)."""

    def __init__(self, context: DaemonContext) -> None:
        self.context = context
        self.held = HeldCreates()

    def enqueue(
        self,
        prepared: PreparedCreate,
        request: api.CreateContainerRequest,
        why: NoCapacity,
        records: list[ContainerRecord] | None = None,
        *,
        via: str | None = None,
    ) -> Queued:
        """Under the allocation lock: put a create that found no free devices in the queue,
        if the owner has room there (``records``: every managed container, listed under
        this lock, or ``None`` to list them; ``via``: the hub identity asking for the
        owner, kept with the request so that its dispatch names the hub too). A create of
        the Docker API door's is held (``held``) with its run options (``prepared.run``)."""
        waiting = self._queued_for(prepared.owner.uid, prepared.name)
        if waiting is not None:
            raise Conflict(
                f"A request for a container named {prepared.name!r} is already queued. "
                "`ds01 queue` shows it; `ds01 queue cancel ID` withdraws it."
            )
        listed = self.context.records() if records is None else records
        mine = [r.name for r in listed if r.uid == prepared.owner.uid]
        self._check_queue_room(prepared.owner, "create", mine)
        queued = self._join_queue(
            prepared.owner, "create", prepared.name, prepared.group, prepared.gpu_request,
            request.model_dump_json(), why, via,
        )  # fmt: skip
        if request.interface == DOOR_INTERFACE:  # its client waits for it on its connection
            self.held.hold(queued.entry.id, prepared.run or RunOptions())
        return queued

    def enqueue_start(
        self, owner: UnixUser, record: ContainerRecord, why: NoCapacity, *, via: str | None = None
    ) -> Queued:
        """Under the allocation lock: queue a released container until devices free up (a
        second start while it waits joins the same request; ``via`` as for ``enqueue``)."""
        waiting = self._queued_for(record.uid, record.name)
        if waiting is not None:
            return Queued(entry=waiting, reason=why.message)
        self._check_queue_room(owner, "start", [])
        request = released_request(record, self.context.backend.inventory())
        return self._join_queue(owner, "start", record.name, record.group, request, "", why, via)

    def release_devices(
        self,
        record: ContainerRecord,
        now: datetime,
        *,
        held_minutes: float,
        reason: str | None = None,
    ) -> None:
        """Under the allocation lock: a stopped container's devices go back to the pool
        (``reason``: why, when not the end of its hold after stop)."""
        why = reason or f"stopped for {held_minutes:g} min (gpu_hold_after_stop_minutes)"
        release_devices(self.context, record, now, why)

    def _queued_for(self, uid: int, container: str) -> QueuedRequest | None:
        """The waiting request of user ``uid`` for ``container``, if any."""
        waiting = self.context.store.waiting_of(uid)
        return next((q for q in waiting if q.container == container), None)

    def _check_queue_room(self, owner: UnixUser, kind: QueueKind, containers: list[str]) -> None:
        """Refuse (``QuotaExceeded``) one more waiting request of ``owner`` beyond
        ``max_containers`` (creates) or ``max_queued`` (see ``core.queue_room``)."""
        ctx = self.context
        limits = ctx.config().limits
        check_queue_room(
            kind,
            containers,
            [WaitingRequest(q.id, q.kind, q.container) for q in ctx.store.waiting_of(owner.uid)],
            max_containers=ctx.limits_for(owner).max_containers,
            max_queued=resolve_policy(limits, owner.name, owner.groups).max_queued,
        )

    def _join_queue(
        self,
        owner: UnixUser,
        kind: QueueKind,
        container: str,
        group: str,
        request: GpuRequest,
        request_json: str,
        why: NoCapacity,
        via: str | None,
    ) -> Queued:
        ctx = self.context
        entry = QueuedRequest(
            id=uuid.uuid4().hex[:12],
            user=owner.name,
            uid=owner.uid,
            group=group,
            kind=kind,
            container=container,
            request_json=request_json,
            whole_gpus=request.whole_gpus,
            mig=",".join(request.mig_profiles),
            submitted_at=ctx.now().isoformat(timespec="microseconds"),
            via=via,
        )
        ctx.store.add_queued(entry)
        ctx.events.emit(
            "queue.join",
            user=entry.user,
            resource=f"queue/{entry.id}",
            details={
                "container": container,
                "kind": kind,
                "request": request.describe(),
                "reason": why.message,
            },
        )
        ctx.queue_changed()
        return Queued(entry=entry, reason=why.message)


__all__ = ["QueueDesk", "released_request"]
