"""``GET /v1/overview``: everything ``ds01-dashboard`` shows, in one answer.

One request per dashboard refresh, built from one look at each source: one Docker list
call (``Ds01Service.records``), one GPU inventory and one telemetry call for every device,
one read of the queue, the reservations, the OOM counters and the lifecycle loop's last
pass. Never one call per container.

What a caller sees:

- everyone: every device with its telemetry, the machine's totals (devices and
  GPU-equivalents allocated, containers, queue length and demand), and the reservations of
  the coming week (``ds01 reservations --all`` shows them to everyone too);
- an admin (``scope: all``): every container, queue entry and user's usage, and the holder
  container of every device;
- a user (``scope: own``): their own containers, queue entries and usage; a device another
  user holds shows that user's name only, not the container's name (nor its image, idle
  time or anything else about it).
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

from ds01.core.allocation import equivalents_to_float
from ds01.daemon import queue_view, reservations
from ds01.daemon import schemas as api
from ds01.daemon.identity import Caller
from ds01.daemon.sampler import gpu_figures
from ds01.daemon.service import Ds01Service
from ds01.daemon.views import (
    allocated_equivalents,
    allocation_state,
    device_status,
    queue_demand,
    unusable_gpus,
)
from ds01.errors import Ds01Error
from ds01.gpu.backend import device_telemetry
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser, user_by_name


def overview(service: Ds01Service, caller: Caller) -> api.Overview:
    """The dashboard's view for ``caller`` (see the module docstring)."""
    now = service.now()
    records = service.records()  # the one Docker call
    backend = service.backend
    inventory = backend.inventory()
    telemetry = device_telemetry(backend, [d.uuid for d in inventory.devices])
    held = allocation_state(records).held()
    everyone = caller.is_admin
    queued = service.store.queued()
    for_queue = service.status.queue_reserved
    unmanaged = service.status.unmanaged_gpu_use

    on_demand = set(service.store.on_demand_slices())
    devices = []
    for device in inventory.devices:
        status = device_status(
            device,
            inventory,
            held.get(device.uuid),
            caller,
            unmanaged,
            on_demand=device.uuid in on_demand,
        )
        reading = telemetry.get(device.uuid)
        devices.append(
            api.OverviewDevice(
                **status.model_dump(),
                label=device.label,
                held_for_queue=status.holder is None and device.uuid in for_queue,
                utilization_percent=reading.gpu_util_percent if reading else None,
                memory_used_mib=reading.memory_used_mib if reading else None,
                process_count=reading.process_count if reading else None,
            )
        )

    visible = records if everyone else [r for r in records if r.uid == caller.uid]
    by_name = {r.docker_name: r for r in visible}
    containers = []
    for info in service.views.container_infos(visible):
        record = by_name[info.docker_name]
        utilization, memory, _ = (
            gpu_figures(record.gpus, telemetry) if record.status == "running" else (None,) * 3
        )
        containers.append(
            api.OverviewContainer.model_construct(
                **dict(info), gpu_utilization_percent=utilization, gpu_memory_used_mib=memory
            )
        )

    mine = queued if everyone else [q for q in queued if q.uid == caller.uid]
    return api.Overview(
        at=now.isoformat(timespec="seconds"),
        user=caller.name,
        is_admin=caller.is_admin,
        scope="all" if everyone else "own",
        backend=inventory.backend,
        message=inventory.message,
        totals=api.OverviewTotals(
            devices=len(inventory.devices),
            devices_allocated=sum(1 for d in inventory.devices if d.uuid in held),
            gpu_equivalents=equivalents_to_float(inventory.total_gpu_equivalents),
            gpu_equivalents_allocated=equivalents_to_float(allocated_equivalents(inventory, held)),
            containers=len(records),
            containers_running=sum(1 for r in records if r.status == "running"),
            queued_requests=len(queued),
            queued_gpu_equivalents=equivalents_to_float(queue_demand(service)),
        ),
        devices=devices,
        unusable=unusable_gpus(inventory, service.config().gpus.dynamic_mig()),
        containers=containers,
        queue=queue_view.in_order(service, mine, now),
        users=_users(service, caller, visible, Counter(q.user for q in mine)),
        reservations=reservations.week(service, now, inventory),
    )


def _users(
    service: Ds01Service,
    caller: Caller,
    records: list[ContainerRecord],
    queued: Counter[str],
) -> list[api.OverviewUser]:
    """Usage against quota of the caller (a user), or of everyone with a container or a
    queued request (an admin)."""
    by_user: dict[str, list[ContainerRecord]] = {}
    for record in records:
        by_user.setdefault(record.user, []).append(record)
    names = {caller.name} if not caller.is_admin else set(by_user) | set(queued)
    rows = []
    for name in sorted(names):
        mine = by_user.get(name, [])
        subject: UnixUser | None
        try:
            subject = caller.user if name == caller.name else user_by_name(name)
        except Ds01Error:
            subject = None  # the account is gone; its containers still count
        if subject is not None:
            usage, memory = service.enforcement.usage_of(subject, mine)
            limits = service.limits_for(subject)
            total = service.aggregate_for(subject).memory_limit_bytes
            gpu_limit, max_containers = limits.gpu_limit, limits.max_containers
            equivalents, memory_now, committed = (
                usage.gpu_equivalents,
                memory.memory_bytes,
                memory.memory_committed_bytes,
            )
        else:
            held = sum((r.gpu_equivalents for r in mine), start=Fraction(0))
            equivalents, memory_now, committed = equivalents_to_float(held), None, None
            gpu_limit = max_containers = total = None
        rows.append(
            api.OverviewUser(
                user=name,
                gpu_equivalents=equivalents,
                gpu_limit=gpu_limit,
                containers=len(mine),
                max_containers=max_containers,
                running=sum(1 for r in mine if r.status == "running"),
                queued=queued.get(name, 0),
                memory_bytes=memory_now,
                memory_committed_bytes=committed,
                memory_limit_bytes=total,
            )
        )
    return rows


__all__ = ["overview"]
