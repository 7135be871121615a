"""The GPU queue's imperative shell: a thread of ds01d that starts queued requests.

Each *pass* (``GpuDispatcher.run_pass``) runs under the service's allocation lock:

1. **Adopt** requests whose container exists already (its ``ds01.request_id`` is the
   request's id): ds01d died after creating it and before recording the start. They are
   marked started, never created twice.
2. **Release** the devices of containers stopped for longer than their owner's
   ``gpu_hold_after_stop_minutes`` (``gpu.release`` event): from then on they hold none.
3. **Ledger**: a usage row is opened for every container that holds devices and closed for
   every one that no longer does, whatever the path (create, remove, release, a crash).
4. **Reserved starts**: a waiting request whose owner has a GPU reservation in force starts
   on the reserved devices when they fit it, on top of the owner's quota, before the plan
   (``ds01.core.reservations.reserved_starts``): nobody else may use those devices, so it
   waits for no one.
5. **Plan** with ``ds01.core.scheduler.plan`` over the waiting requests, the decayed usage
   and the ``scheduler:`` policy, keeping the head's reservation for the next pass. The
   inventory it plans over has a planned MIG slice for each waiting MIG request that a GPU
   with MIG on demand could make (``MigOnDemand.planned_for_queue``); each request is
   planned without the devices GPU reservations keep from it
   (``ds01.core.reservations.with_blocked``), which stay open to the others, and gets no
   planned slice on (nor an instance over) the place of a reservation's slot it could still
   hold at the slot's start (``ds01.core.reservations.out_of_slots``).
6. **Start** what the plan says, in its order: a planned slice is made first, then a queued
   create is created and started as its owner, and ``queue.start`` records how long it
   waited. A create whose client holds its connection for the answer (the Docker API
   door's, ``ds01.daemon.held_creates``) is created with the client's run options and left
   created for its client to start, as ``docker create`` leaves it; one that nobody holds
   any more (ds01d restarted while it waited) is cancelled before the plan, never made.
   A request a hub queued for its owner (``QueuedRequest.via``) is dispatched
   inside ``acting_via`` of that hub: every event of its start, adoption or failure names
   the hub as ``details.via``, as the events of the request that queued it did.
7. **Reclaim** MIG slices made on demand that nobody has held for the keep time, and give
   dynamic GPUs their baseline back (``MigOnDemand.reclaim``).
8. **Reclaim borrowed devices** for the plan's head, a request within quota that cannot be
   placed: warn, then stop after the grace, the borrowed containers it needs
   (``ds01.daemon.reclaim.BorrowReclaim``); freed devices make the next pass at once.

A pass runs every ``interval_seconds`` and at once whenever the service signals a change
(``DaemonContext.queue_changed``: a request joined or left, a container stopped or was
removed): the service's ``queue_condition`` is the ``PeriodicPass`` wake hook. Clients
waiting on a request are woken by the same condition.

When ds01d stops (``request_stop``), a start under way finishes and no other begins: the
requests not started stay queued for the next ds01d.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction

from ds01.config.resolve import ResolvedLimits
from ds01.core.allocation import GpuRequest, Placement
from ds01.core.lifecycle import runtime_limit_hours, runtime_stop
from ds01.core.mig_on_demand import KeepOut
from ds01.core.reservations import out_of_slots, reserved_starts, with_blocked
from ds01.core.scheduler import (
    PendingRequest,
    Reservation,
    UsageInterval,
    decayed_usage,
    plan,
)
from ds01.daemon import schemas as api
from ds01.daemon.access import resource_of
from ds01.daemon.held_creates import held_by_client
from ds01.daemon.identity import Caller
from ds01.daemon.periodic import PeriodicPass
from ds01.daemon.prepared import PreparedCreate
from ds01.daemon.reclaim import BorrowReclaim
from ds01.daemon.reservations import kept
from ds01.daemon.service import Ds01Service
from ds01.daemon.views import allocation_state
from ds01.errors import Ds01Error, InvalidInput, NotFound, PolicyError, QuotaExceeded
from ds01.events.log import acting_via, utc_now
from ds01.model.device import Inventory
from ds01.model.labels import borrowed_of, container_name, runtime_hours_of
from ds01.model.units import format_duration
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser, user_by_uid
from ds01.runtime.store import QueuedRequest, UsageRecord

log = logging.getLogger(__name__)

#: Seconds between two passes when nothing signals a change.
DEFAULT_INTERVAL_SECONDS = 5.0
#: Finished requests are kept this long for ``ds01 queue`` and waiting clients.
KEEP_FINISHED = timedelta(days=7)
#: Usage older than this many half-lives weighs less than 0.1 % and is dropped.
USAGE_HALF_LIVES_KEPT = 10


@dataclass(frozen=True)
class _Waiting:
    """A waiting request with what the pass resolved for its owner."""

    entry: QueuedRequest
    owner: UnixUser
    pending: PendingRequest


class GpuDispatcher(PeriodicPass):
    """Starts queued requests when their turn comes (see the module docstring).

    Args:
        service: the daemon's service (its lock, Docker, state store and events).
        clock: the current UTC time.
        interval_seconds: time between passes when nothing changes.
    """

    thread_name = "ds01-dispatcher"
    work_name = "queue pass"
    check_name = "queue"
    consequence = "queued requests do not start and devices held after a stop are not released"

    def __init__(
        self,
        service: Ds01Service,
        *,
        clock: Callable[[], datetime] = utc_now,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self.service = service
        self._interval_seconds = interval_seconds
        self._clock = clock
        self._reservation: Reservation | None = None
        self._reclaim = BorrowReclaim(
            service,
            lambda record, reason: service.containers.stop_by_daemon(
                record, reason=reason, cause="reclaim"
            ),
        )
        super().__init__(wake=service.queue_condition)

    def interval_seconds(self) -> float:
        return self._interval_seconds

    # -- one pass ------------------------------------------------------------------------------

    def run_pass(self) -> list[str]:
        """Adopt, release, keep the ledger, plan and start; return the ids started."""
        service = self.service
        started: list[str] = []
        with service.allocation_lock:
            now = self._clock()
            records = service.records()
            self._adopt(records, now)
            if self._release_expired(records, now):
                records = service.records()
            self._keep_ledger(records, now)
            waiting = self._resolve_waiting(records)
            tried, on_reserved = self._start_reserved(waiting, records, now)
            if tried:  # started, or failed (tried again at the next pass, not twice in one)
                started.extend(on_reserved)
                records = service.records()
                waiting = [w for w in waiting if w.entry.id not in tried]
            held = allocation_state(records).held()
            inventory = service.backend.inventory()
            # Reserved devices: each request is planned without those blocked for it, and
            # gets no MIG slice made on a slot it could still hold at the slot's start.
            reservations = kept(service)
            keep_outs: list[KeepOut] = []
            if reservations:
                pending = with_blocked([w.pending for w in waiting], reservations, now)
                views = service.mig_on_demand.views(inventory, held)
                pending, keep_outs = out_of_slots(pending, reservations, views)
                waiting = [replace(w, pending=p) for w, p in zip(waiting, pending, strict=True)]
            inventory = service.mig_on_demand.planned_for_queue(
                [w.pending.request.mig_profiles for w in waiting], inventory, held, keep_outs
            )
            config = service.config()
            policy = config.limits.scheduler
            usage = decayed_usage(self._usage_intervals(), now, policy.usage_half_life_hours)
            result = plan(
                [w.pending for w in waiting],
                inventory,
                allocation_state(records),
                now,
                usage,
                policy,
                expected_ends=self._expected_ends(records, now),
                previous=self._reservation,
            )
            self._reservation = result.reservation
            service.status.publish_queue_pass(result)
            by_id = {w.entry.id: w for w in waiting}
            for start in result.starts:
                if self.stopping:
                    break  # ds01d stops: the rest stay queued
                item = by_id[start.request.id]
                with acting_via(item.entry.via):
                    begun = self._start(item, start.placement, inventory, records, now)
                if begun:
                    started.append(item.entry.id)
                    records = service.records()
            freed = service.mig_on_demand.reclaim(records, now)
            head = None if result.reservation is None else by_id.get(result.reservation.request_id)
            reclaimed = self._reclaim.run(
                None if head is None else head.pending, inventory, records, now
            )
        if started or freed or reclaimed:
            service.queue_changed()
        return started

    def _start_reserved(
        self, waiting: list[_Waiting], records: list[ContainerRecord], now: datetime
    ) -> tuple[set[str], list[str]]:
        """Start the waiting requests that fit on their owners' reservations in force, on
        top of their quota (``core.reservations.reserved_starts``): the ids of those
        tried, and of those started."""
        reservations = kept(self.service)
        if not reservations or not waiting:
            return set(), []
        inventory = self.service.backend.inventory()
        starts = reserved_starts(
            [w.pending for w in waiting], reservations, inventory, allocation_state(records), now
        )
        by_id = {w.entry.id: w for w in waiting}
        tried: set[str] = set()
        started: list[str] = []
        for start in starts:
            if self.stopping:
                break
            item = by_id[start.request.id]
            tried.add(item.entry.id)
            with acting_via(item.entry.via):
                if self._start(item, start.placement, inventory, records, now):
                    started.append(item.entry.id)
                    records = self.service.records()
        return tried, started

    def _adopt(self, records: list[ContainerRecord], now: datetime) -> None:
        by_request = {r.request_id: r for r in records if r.request_id}
        for entry in self.service.store.queued():
            record = by_request.get(entry.id)
            if record is None:
                continue
            with acting_via(entry.via):
                self._adopt_one(entry, record, now)

    def _adopt_one(self, entry: QueuedRequest, record: ContainerRecord, now: datetime) -> None:
        """Start (if need be) and mark started a queued request's container made already
        (a held create's stays created: only its client, gone with the old ds01d, would
        start it)."""
        if record.status != "running" and not held_by_client(entry):
            try:
                owner = user_by_uid(record.uid)
                self.service.launcher.launch(
                    Caller(user=owner, pid=0, is_admin=False), owner, record
                )
            except Ds01Error as exc:
                log.error("queued %s created but not started: %s", entry.id, exc.message)
        self._finish_started(entry, record.gpus, now)

    def _release_expired(self, records: list[ContainerRecord], now: datetime) -> bool:
        """Release the devices of containers stopped longer than their owner's hold."""
        released_any = False
        for record in records:
            if record.status != "stopped" or not record.gpus:
                continue
            since = self.service.containers.stopped_since(record) or now
            try:
                hold = self.service.limits_for(user_by_uid(record.uid)).gpu_hold_after_stop_minutes
            except NotFound:
                hold = 0.0  # the owner is gone: nobody will start it again
            if hold is None or now - since < timedelta(minutes=hold):
                continue
            self.service.queue_desk.release_devices(record, now, held_minutes=hold)
            released_any = True
        return released_any

    def _keep_ledger(self, records: list[ContainerRecord], now: datetime) -> None:
        """One open usage row per container holding devices, none for the others.

        A container's first row starts when it was created; a later one (its devices were
        released, then acquired again in place) now, at the pass that finds it holding
        again: the while it held nothing is nobody's usage.
        """
        store = self.service.store
        holding = {r.id: r for r in records if r.gpus}
        rows = store.usage()
        open_rows = {u.container_id for u in rows if u.end is None}
        had_rows = {u.container_id for u in rows}
        stamp = now.isoformat(timespec="seconds")
        for container_id in open_rows - set(holding):
            store.close_usage(container_id, stamp)
        for container_id in set(holding) - open_rows:
            r = holding[container_id]
            start = stamp if container_id in had_rows else (r.created_at or stamp)
            store.open_usage(
                UsageRecord(
                    container_id,
                    r.user,
                    r.group,
                    str(r.gpu_equivalents),
                    start,
                    borrowed=borrowed_of(r.labels),
                )
            )
        half_life = timedelta(hours=self.service.config().limits.scheduler.usage_half_life_hours)
        store.forget_usage((now - USAGE_HALF_LIVES_KEPT * half_life).isoformat())
        store.forget_finished_queued((now - KEEP_FINISHED).isoformat())

    def _expected_ends(
        self, records: list[ContainerRecord], now: datetime
    ) -> dict[str, datetime | None]:
        """When each container holding devices is expected to free them, for the head's
        estimated start: a running one at its runtime stop (enforced by the lifecycle loop)
        plus the hold after stop, a stopped one when its hold ends; ``None`` (unknown)
        without a runtime limit or a hold, or while an exemption covers it."""
        service = self.service
        clocks = service.store.lifecycle_clocks()
        exemptions = [r.exemption() for r in service.store.exemptions()]
        limits_of: dict[int, ResolvedLimits | None] = {}
        ends: dict[str, datetime | None] = {}
        for record in records:
            if not record.gpus:
                continue
            if record.uid not in limits_of:
                try:
                    limits_of[record.uid] = service.limits_for(user_by_uid(record.uid))
                except Ds01Error:
                    limits_of[record.uid] = None
            limits = limits_of[record.uid]
            hold = None if limits is None else limits.gpu_hold_after_stop_minutes
            end: datetime | None = None
            if limits is None or hold is None:
                end = None
            elif record.status == "stopped":
                since = service.containers.stopped_since(record)
                end = since + timedelta(minutes=hold) if since else None
            else:
                stop = runtime_stop(
                    clocks.get(record.id),
                    limits.max_runtime_hours,
                    runtime_hours_of(record.labels),
                    exemptions,
                    record.user,
                    record.name,
                    now,
                )
                if stop is not None:
                    end = stop + timedelta(minutes=hold)
            ends[record.docker_name] = end
        return ends

    def _usage_intervals(self) -> list[UsageInterval]:
        intervals = []
        for row in self.service.store.usage():
            try:
                intervals.append(
                    UsageInterval(
                        user=row.user,
                        group=row.group,
                        gpu_equivalents=Fraction(row.gpu_equivalents),
                        start=datetime.fromisoformat(row.start),
                        end=datetime.fromisoformat(row.end) if row.end else None,
                    )
                )
            except ValueError:
                log.warning("ignoring a malformed usage row of %s", row.container_id)
        return intervals

    def _resolve_waiting(self, records: list[ContainerRecord]) -> list[_Waiting]:
        """The waiting requests with their owners and limits, each owner resolved once per
        pass (NSS and the limits are the costly part: one lookup per user, not per request)."""
        waiting = []
        owners: dict[int, tuple[UnixUser, ResolvedLimits] | Ds01Error] = {}
        names_of: dict[int, list[str]] = {}
        for record in records:
            names_of.setdefault(record.uid, []).append(record.name)
        for entry in self.service.store.queued():
            if self.service.queue_desk.held.orphaned(entry):
                self._drop_orphan(entry)
                continue
            if entry.uid not in owners:
                try:
                    owner = user_by_uid(entry.uid)
                    owners[entry.uid] = (owner, self.service.limits_for(owner))
                except Ds01Error as exc:
                    owners[entry.uid] = exc
            resolved = owners[entry.uid]
            if isinstance(resolved, Ds01Error):
                self._fail(entry, f"its owner cannot be resolved any more: {resolved.message}")
                continue
            owner, limits = resolved
            try:
                request = GpuRequest(whole_gpus=entry.whole_gpus, mig_profiles=entry.mig_profiles)
            except InvalidInput as exc:  # queued before a rule applied (two MIG instances)
                self._fail(entry, exc.message)
                continue
            mine = tuple(n for n in names_of.get(entry.uid, ()) if n != entry.container)
            group = limits.groups[0] if limits.groups else entry.group
            pending = PendingRequest(
                id=entry.id,
                user=entry.user,
                group=group,
                request=request,
                quota=limits.gpu_quota(),
                priority=int(limits.priority or 0),
                submitted_at=datetime.fromisoformat(entry.submitted_at),
                expected_runtime_hours=_held_hours(
                    runtime_limit_hours(limits.max_runtime_hours, _declared_of(entry, records)),
                    limits.gpu_hold_after_stop_minutes,
                ),
                user_containers=mine,
            )
            waiting.append(_Waiting(entry, owner, pending))
        return waiting

    def _start(
        self,
        item: _Waiting,
        placement: Placement,
        inventory: Inventory,
        records: list[ContainerRecord],
        now: datetime,
    ) -> bool:
        """Create and start one queued request on ``placement``; ``False`` if it cannot."""
        service, entry = self.service, item.entry
        if entry.kind == "start":
            return self._start_released(item, placement, inventory, now)
        held = service.queue_desk.held.get(entry.id)
        try:
            request = api.CreateContainerRequest.model_validate_json(entry.request_json)
            prepared: PreparedCreate = service.creation.prepare_create(item.owner, request)
            if held is not None:  # the Docker client's own settings, as a direct create's
                prepared = replace(prepared, run=held.run)
            mine = [r for r in records if r.uid == entry.uid]
            if any(r.docker_name == prepared.docker_name for r in records):
                raise PolicyError(
                    f"a container named {entry.container!r} exists already; remove it or "
                    "queue the request under another name"
                )
            service.creation.check_memory_total(prepared, mine)
        except QuotaExceeded as exc:
            log.info("queued %s waits for memory: %s", entry.id, exc.message)
            return False  # it waits: the user's memory total may have room later
        except Ds01Error as exc:
            self._fail(entry, exc.message)
            return False
        try:  # a planned MIG slice is made now, right before it is taken
            placement, inventory = service.mig_on_demand.materialize(placement, inventory, "ds01d")
            # A held create's intent stays open until its client is answered (as a direct
            # create's): a crash before that rolls it back at the next start.
            made = service.creation.create_admitted(
                prepared, placement, inventory, entry.id, intent=held is not None, actor="ds01d"
            )
            info = made.info
            if held is not None:  # its client starts it (``docker run``), or not (``create``)
                held.made = made
                self._finish_started(entry, tuple(info.gpus), now, started=False)
                held.wake()
                return True
            record = made.record or service.runtime.find_managed(prepared.docker_name)
            if record is None:
                raise NotFound(f"{prepared.name} vanished right after its create.")
            service.launcher.launch(
                Caller(user=item.owner, pid=0, is_admin=False), item.owner, record
            )
        except Ds01Error as exc:
            self._fail(entry, exc.message)
            return False
        service.events.emit(
            "container.start", user="ds01d", resource=f"container/{info.docker_name}"
        )
        self._finish_started(entry, tuple(info.gpus), now)
        return True

    def _start_released(
        self, item: _Waiting, placement: Placement, inventory: Inventory, now: datetime
    ) -> bool:
        service, entry = self.service, item.entry
        record = service.runtime.find_managed(container_name(entry.container, entry.uid))
        if record is None:
            self._fail(entry, "the container is gone")
            return False
        owner_caller = Caller(user=item.owner, pid=0, is_admin=False)
        try:
            if record.id in service.store.released():
                service.launcher.check_mounts(owner_caller, item.owner, record)
                placement, inventory = service.mig_on_demand.materialize(
                    placement, inventory, "ds01d"
                )
                record = service.reacquire.reacquire_admitted(
                    item.owner, record, placement, inventory, actor="ds01d"
                )
            service.launcher.launch(owner_caller, item.owner, record)
        except Ds01Error as exc:
            self._fail(entry, exc.message)
            return False
        service.events.emit("container.start", user="ds01d", resource=resource_of(record))
        self._finish_started(entry, record.gpus, now)
        return True

    def _finish_started(
        self, entry: QueuedRequest, devices: tuple[str, ...], now: datetime, *, started: bool = True
    ) -> None:
        """The request's turn came: mark it ``started`` and say so. ``started=False``: its
        container was only created (a held create's: its client is answered instead of
        its owner's terminals, and starts it itself)."""
        stamp = now.isoformat(timespec="seconds")
        if not self.service.store.finish_queued(
            entry.id, "started", stamp, devices=",".join(devices)
        ):
            return
        waited = (now - datetime.fromisoformat(entry.submitted_at)).total_seconds()
        self.service.events.emit(
            "queue.start",
            user=entry.user,
            resource=f"queue/{entry.id}",
            details={
                "container": entry.container,
                "devices": list(devices),
                "waited_seconds": round(max(waited, 0.0), 1),
            }
            | ({} if started else {"started": False}),
        )
        if not started:
            return
        self.service.notify_user(
            entry.uid,
            f"ds01: your queued container {entry.container!r} started on "
            f"{', '.join(devices) or 'no GPU'} after {format_duration(waited)}.",
        )

    def _drop_orphan(self, entry: QueuedRequest) -> None:
        """Cancel a held create that nobody holds any more (``HeldCreates.orphaned``)."""
        why = (
            "its Docker client's connection ended (ds01d restarted while it waited), so "
            "nothing was created"
        )
        stamp = self._clock().isoformat(timespec="seconds")
        if not self.service.store.finish_queued(entry.id, "cancelled", stamp, message=why):
            return
        with acting_via(entry.via):
            self.service.events.emit(
                "queue.cancel",
                user="ds01d",
                resource=f"queue/{entry.id}",
                details={"container": entry.container, "owner": entry.user, "reason": why},
            )

    def _fail(self, entry: QueuedRequest, why: str) -> None:
        stamp = self._clock().isoformat(timespec="seconds")
        if not self.service.store.finish_queued(entry.id, "failed", stamp, message=why):
            return
        self.service.queue_desk.held.wake(entry.id)  # its client is told why
        with acting_via(entry.via):
            self.service.events.emit(
                "queue.fail",
                user=entry.user,
                resource=f"queue/{entry.id}",
                details={"container": entry.container, "error": why},
                outcome="failure",
            )
        self.service.notify_user(
            entry.uid, f"ds01: your queued container {entry.container!r} could not start: {why}"
        )


def _declared_of(entry: QueuedRequest, records: list[ContainerRecord]) -> float | None:
    """The runtime declared for a queued request's container (``--runtime-hours``): in its create
    request, or on the stopped container a start needs devices for; ``None`` if none."""
    if entry.kind == "create":
        try:
            return api.CreateContainerRequest.model_validate_json(entry.request_json).runtime_hours
        except ValueError:  # unreadable: the start fails it with the reason
            return None
    for record in records:
        if record.uid == entry.uid and record.name == entry.container:
            return runtime_hours_of(record.labels)
    return None


def _held_hours(max_runtime_hours: float | None, hold_minutes: float | None) -> float | None:
    """How long a request's devices stay taken once it starts: its runtime limit plus the
    hold after its stop (``None``: unknown, no limit)."""
    if max_runtime_hours is None or hold_minutes is None:
        return None
    return max_runtime_hours + hold_minutes / 60


__all__ = ["DEFAULT_INTERVAL_SECONDS", "GpuDispatcher"]
