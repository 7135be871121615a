"""``MigOnDemand``: MIG slices made when requests need them and destroyed once free.

GPUs with ``dynamic`` in ``gpu-config.yaml``'s ``mig_layout`` (see
``ds01.config.gpu_config.DynamicMig``). The decisions are ``ds01.core.mig_on_demand``'s;
this carries them out through the GPU backend and records them in the state store.

- **A create** (``planned_for`` then ``materialize``): when a request asks for a MIG profile
  no free instance offers, the planner's slice is added to the inventory as a *planned*
  device, the ordinary decision (quotas, best fit) runs over it, and only if the decision
  picks it is the instance made (``gpu.mig_create``), recorded, and put in the placement in
  its stead. A request over quota therefore never makes a slice.
- **The queue** (``planned_for_queue``): the dispatcher plans over the inventory with a
  planned slice for each waiting MIG request that one would serve; a start on one makes it.
- **Release** (``reclaim``, each queue pass): a slice made on demand that nobody has held for
  ``mig_on_demand_keep_seconds`` is destroyed (``gpu.mig_destroy``). A destroy the driver
  refuses because a process runs on the slice (``DeviceInUse``) is logged once and tried
  again at the next pass; nobody's request fails for it. A GPU left with no slice made on
  demand gets its baseline instances back where they fit. A slice a reservation not yet
  ended keeps is never destroyed (``ds01 reserve --mig`` of a slice made on demand).
- **A reservation's slot** (``make_at``, ``destroy_for_reservation``): at the start of a
  ``--mig`` reservation that keeps a slot, the free slices made on demand over its place
  are destroyed at once (no keep time) and its slice is made there
  (``daemon.reservations.ReservationWatch``; ``make_for_reservation`` makes it wherever
  there is room when the place is not clear).
- **A crash** between making a slice and recording it leaves an instance the store does not
  know: ``reclaim`` adopts every such instance beyond the GPU's baseline as made on demand
  (the admin's baseline is never taken for one), so it is destroyed like the others once
  nobody holds it. A record whose instance is gone is dropped.

State: the UUIDs whose refused destroy was logged. Locks: every method runs *under the
allocation lock* (``ds01.daemon.context``): a slice is made or destroyed only while no
decision can take it. Calls: the context's backend, store, events and configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from ds01.core.allocation import Placement
from ds01.core.mig_on_demand import (
    PLANNED_PREFIX,
    CreateSlice,
    GpuView,
    KeepOut,
    NoRoom,
    adopt,
    baseline_creates,
    gpu_view,
    plan_profiles,
    plan_what_fits,
    to_destroy,
    where_to_create,
    with_planned,
)
from ds01.daemon.context import DaemonContext
from ds01.daemon.reservations import SliceDestroy, kept
from ds01.errors import DeviceInUse, SystemFault
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.labels import gpus_of
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.store import OnDemandSlice

log = logging.getLogger(__name__)


class MigOnDemand:
    """Makes and destroys MIG slices on dynamic GPUs (see the module docstring)."""

    def __init__(self, context: DaemonContext) -> None:
        self.context = context
        self._busy_logged: set[str] = set()

    # -- the plan -----------------------------------------------------------------------------

    def _dynamic_gpus(self, inventory: Inventory) -> list[tuple[PhysicalGpu, tuple[str, ...]]]:
        """The inventory's GPUs with MIG on demand, each with its baseline."""
        dynamic = self.context.config().gpus.dynamic_mig()
        found = []
        for gpu in inventory.gpus:
            layout = dynamic.get(gpu.index, dynamic.get(gpu.uuid))
            if layout is not None:
                found.append((gpu, layout.baseline))
        return found

    def views(self, inventory: Inventory, held: Iterable[str]) -> list[GpuView]:
        """The dynamic GPUs as the planner sees them (a GPU whose placements the backend
        cannot tell, or that has MIG off, is left out)."""
        held = set(held)
        recorded = set(self.context.store.on_demand_slices())
        views = []
        for gpu, baseline in self._dynamic_gpus(inventory):
            table = self.context.backend.mig_placements(gpu)
            view = None
            if table is not None:
                view = gpu_view(gpu, table, baseline, inventory.devices, held, recorded)
            if view is not None:
                views.append(view)
        return views

    def can_make(self, profiles: Sequence[str], inventory: Inventory) -> bool:
        """Whether a dynamic GPU offers every profile of ``profiles`` (so a request for them
        can wait for room even when no instance of them exists now)."""
        tables = [
            table
            for gpu, _ in self._dynamic_gpus(inventory)
            if (table := self.context.backend.mig_placements(gpu)) is not None
        ]
        return bool(profiles) and all(any(t.shape(p) is not None for t in tables) for p in profiles)

    def planned_for(
        self,
        profiles: Sequence[str],
        inventory: Inventory,
        held: Iterable[str],
        keep_out: KeepOut | None = None,
    ) -> Inventory:
        """Under the allocation lock: ``inventory`` with the slices that would serve
        ``profiles`` (one request) as planned devices, none where ``keep_out`` says;
        unchanged when free instances serve it, or when no dynamic GPU has room."""
        if not profiles:
            return inventory
        held = set(held)
        views = self.views(inventory, held)
        planned = plan_profiles(inventory, held, views, profiles, keep_out)
        if isinstance(planned, NoRoom) or not planned:
            return inventory
        return with_planned(inventory, planned)

    def planned_for_queue(
        self,
        requests: Sequence[Sequence[str]],
        inventory: Inventory,
        held: Iterable[str],
        keep_out: Sequence[KeepOut] = (),
    ) -> Inventory:
        """Under the allocation lock: ``inventory`` with a planned slice for each waiting
        MIG request (``requests``: their profiles, in queue order) that one would serve;
        ``keep_out``: each request's places to stay out of, in the same order."""
        if not any(requests):
            return inventory
        held = set(held)
        views = self.views(inventory, held)
        creates = plan_what_fits(inventory, held, views, requests, keep_out)
        return with_planned(inventory, creates) if creates else inventory

    def make_for_reservation(
        self, profile: str, inventory: Inventory, held: Iterable[str]
    ) -> Device | None:
        """Under the allocation lock: a new slice of ``profile`` where the fragment-least rule
        puts it on a dynamic GPU, for a reservation's slot at its start (recorded as made on
        demand: destroyed once free after the reservation); ``None`` when none has room.

        Raises:
            ds01.errors.SystemFault: the backend refused to make it.
        """
        views = self.views(inventory, held)
        where = where_to_create(views, profile)
        if isinstance(where, NoRoom):
            return None
        gpu = next(v.gpu for v in views if v.gpu.uuid == where.gpu_uuid)
        return self._create(gpu, where, "ds01d", on_demand=True)

    def make_at(self, create: CreateSlice, inventory: Inventory) -> Device:
        """Under the allocation lock: a reservation's slot made at its own place (``create``,
        from ``core.reservations.clear_slots``), recorded as made on demand.

        Raises:
            ds01.errors.SystemFault: the backend refused to make it.
        """
        gpu = next(g for g in inventory.gpus if g.uuid == create.gpu_uuid)
        return self._create(gpu, create, "ds01d", on_demand=True)

    def destroy_for_reservation(self, uuid: str, inventory: Inventory) -> SliceDestroy:
        """Under the allocation lock: destroy a free slice made on demand over a reservation's
        slot at its start, without waiting for the keep time. ``DESTROYED``; ``GONE`` when
        ``inventory`` (the backend's now) has no such slice; ``REFUSED`` when the backend
        refused (logged; tried again at the next pass)."""
        device = next((d for d in inventory.devices if d.uuid == uuid), None)
        gpu = next((g for g in inventory.gpus if device and g.uuid == device.gpu_uuid), None)
        if device is None or gpu is None:
            return SliceDestroy.GONE
        if self._destroy(gpu, uuid, device.profile or ""):
            return SliceDestroy.DESTROYED
        return SliceDestroy.REFUSED

    # -- making and destroying ----------------------------------------------------------------

    def materialize(
        self, placement: Placement, inventory: Inventory, actor: str
    ) -> tuple[Placement, Inventory]:
        """Under the allocation lock: make the planned devices of ``placement`` (a decision
        over ``planned_for``'s inventory) and return the placement on the real ones, with
        the backend's inventory now. Unchanged when it has none.

        Raises:
            ds01.errors.SystemFault: the backend refused to make one (those made before it
                are recorded and destroyed once free).
        """
        if not any(d.uuid.startswith(PLANNED_PREFIX) for d in placement.devices):
            return placement, inventory
        gpus = {g.uuid: g for g in inventory.gpus}
        devices = []
        for device in placement.devices:
            if device.uuid.startswith(PLANNED_PREFIX):
                create = CreateSlice(
                    device.gpu_index, device.gpu_uuid, device.profile or "", device.start or 0
                )
                device = self._create(gpus[device.gpu_uuid], create, actor, on_demand=True)
            devices.append(device)
        return Placement(tuple(devices)), self.context.backend.inventory()

    def _create(
        self, gpu: PhysicalGpu, create: CreateSlice, actor: str, *, on_demand: bool
    ) -> Device:
        ctx = self.context
        made = ctx.backend.create_mig_instance(gpu, create.profile, create.start)
        if on_demand:
            stamp = ctx.now().isoformat(timespec="seconds")
            ctx.store.add_on_demand_slice(
                OnDemandSlice(made.uuid, gpu.uuid, create.profile, create.start, stamp)
            )
        ctx.events.emit(
            "gpu.mig_create",
            user=actor,
            resource=f"gpu/{gpu.index}",
            details={
                "uuid": made.uuid,
                "profile": create.profile,
                "start": create.start,
                "on_demand": on_demand,
            },
        )
        log.info(
            "made MIG instance %s %s (%s)",
            create.describe(),
            made.uuid,
            "on demand" if on_demand else "baseline",
        )
        return made

    def reclaim(self, records: Iterable[ContainerRecord], now: datetime) -> bool:
        """Under the allocation lock: adopt unrecorded instances beyond the baseline, note
        which slices are free since when, destroy those free for the keep time, and give
        GPUs left with no slice made on demand their baseline back. ``True`` when a slice
        was destroyed (room a waiting request may fit in now).

        A slice that a container's labels name counts as held here even when the
        container's devices were released after its stop: it may start again and asks
        for its own devices first (another request may still take the slice meanwhile).
        So does a slice that a reservation not yet ended keeps: it is there at its start."""
        ctx = self.context
        held = {uuid for record in records for uuid in gpus_of(record.labels)}
        held |= {u for r in kept(ctx) if r.end > now for u in r.devices}
        inventory = ctx.backend.inventory()
        if not self._dynamic_gpus(inventory):
            return False
        self._settle_records(inventory, held)
        rows = ctx.store.on_demand_slices()
        free_since: dict[str, datetime] = {}
        stamp = now.isoformat(timespec="seconds")
        for uuid, row in rows.items():
            if uuid in held:
                if row.free_since is not None:
                    ctx.store.set_free_since(uuid, None)
            elif row.free_since is None:
                ctx.store.set_free_since(uuid, stamp)
                free_since[uuid] = now
            else:
                free_since[uuid] = datetime.fromisoformat(row.free_since)
        keep = timedelta(seconds=ctx.config().gpus.mig_on_demand_keep_seconds)
        views = self.views(inventory, held)
        gpus = {v.gpu.uuid: v.gpu for v in views}
        destroyed = False
        for piece in to_destroy(views, free_since, now, keep):
            gpu = next(v.gpu for v in views if any(s.uuid == piece.uuid for s in v.slices))
            destroyed |= self._destroy(gpu, piece.uuid, piece.profile)
        if destroyed:
            inventory = ctx.backend.inventory()
            views = self.views(inventory, held)
        for view in views:
            for create in baseline_creates(view):
                try:
                    self._create(gpus[create.gpu_uuid], create, "ds01d", on_demand=False)
                except SystemFault as exc:
                    log.error("could not restore the MIG baseline: %s", exc.message)
        return destroyed

    def _settle_records(self, inventory: Inventory, held: set[str]) -> None:
        """Adopt what a crash left unrecorded; drop records of instances that are gone."""
        ctx = self.context
        rows = ctx.store.on_demand_slices()
        present = {d.uuid for d in inventory.devices}
        gone = [uuid for uuid in rows if uuid not in present]
        if gone:
            ctx.store.forget_on_demand_slices(gone)
        stamp = ctx.now().isoformat(timespec="seconds")
        for view in self.views(inventory, held):
            for uuid in adopt(view):
                piece = next(s for s in view.slices if s.uuid == uuid)
                log.warning(
                    "GPU %d: MIG instance %s (%s) is beyond the baseline and unrecorded: "
                    "taken as made on demand",
                    view.gpu.index,
                    uuid,
                    piece.profile,
                )
                ctx.store.add_on_demand_slice(
                    OnDemandSlice(uuid, view.gpu.uuid, piece.profile, piece.start, stamp)
                )

    def _destroy(self, gpu: PhysicalGpu, uuid: str, profile: str) -> bool:
        """Destroy one free slice; ``False`` when the backend refused (logged once)."""
        ctx = self.context
        try:
            ctx.backend.destroy_mig_instance(gpu, uuid)
        except DeviceInUse as exc:
            if uuid not in self._busy_logged:
                self._busy_logged.add(uuid)
                log.warning("%s; tried again at the next queue pass", exc.message)
            return False
        except SystemFault as exc:
            log.error("could not destroy MIG instance %s: %s", uuid, exc.message)
            return False
        self._busy_logged.discard(uuid)
        ctx.store.forget_on_demand_slices([uuid])
        ctx.events.emit(
            "gpu.mig_destroy",
            user="ds01d",
            resource=f"gpu/{gpu.index}",
            details={"uuid": uuid, "profile": profile},
        )
        return True


__all__ = ["MigOnDemand"]
