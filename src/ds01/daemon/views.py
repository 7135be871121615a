"""``Views``: the read-only answers about containers and devices (``container-list``,
``gpu-status``, ``check-limits``), and the functions that shape them.

State: none. Locks: none taken or needed (a listing is a snapshot; nothing is decided on
it). Calls: the context (``records()``, store, backend, status), ``Access`` for whom a
request is about, ``LimitsEnforcement.usage_of``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from fractions import Fraction
from typing import TYPE_CHECKING

from ds01.config.resolve import is_admin, resolve_reservation_limits
from ds01.core.allocation import AllocationState, Holding, equivalents_to_float
from ds01.core.gpu_use import UnmanagedUse
from ds01.daemon import disk, reservations
from ds01.daemon import schemas as api
from ds01.daemon.context import DaemonContext
from ds01.daemon.identity import Caller
from ds01.daemon.networks import network_name
from ds01.daemon.slurm_limits import slurm_sources, yaml_lines
from ds01.model import labels as L
from ds01.model.device import Device, Inventory
from ds01.runtime.docker import ContainerRecord, PortBinding
from ds01.runtime.store import OomState

if TYPE_CHECKING:
    from ds01.daemon.access import Access
    from ds01.daemon.limits_enforcement import LimitsEnforcement


def published_port(binding: PortBinding) -> api.PublishedPort:
    return api.PublishedPort(
        container_port=binding.container_port,
        host_ip=binding.host_ip,
        host_port=binding.host_port,
    )


def jupyter_port_of(labels: dict[str, str]) -> int | None:
    """The container port an image's JupyterLab listens on (``ds01.jupyter.port``), if any."""
    return L.jupyter_port_of(labels)


def jupyter_url(record: ContainerRecord) -> str | None:
    """The URL, token included, of a running container's JupyterLab (on 127.0.0.1)."""
    port, token = jupyter_port_of(record.labels), record.labels.get(L.JUPYTER_TOKEN)
    if port is None or not token or record.status != "running":
        return None
    for binding in record.ports:
        if binding.container_port == port and binding.host_port is not None:
            return f"http://{binding.host_ip}:{binding.host_port}/lab?token={token}"
    return None


def address_of(record: ContainerRecord) -> str | None:
    """A running container's IPv4 address on its owner's network, if it has one there."""
    if record.status != "running":
        return None
    return dict(record.addresses).get(network_name(record.uid))


def container_info(record: ContainerRecord, oom: OomState | None = None) -> api.ContainerInfo:
    info = api.ContainerInfo(
        name=record.name,
        docker_name=record.docker_name,
        user=record.user,
        status=record.status,
        image=record.image,
        gpus=list(record.gpus),
        gpu_equivalents=equivalents_to_float(record.gpu_equivalents),
        created_at=record.created_at,
        borrowed=L.borrowed_of(record.labels),
        runtime_hours=L.runtime_hours_of(record.labels),
        hub_server=L.hub_server_of(record.labels),
        ports=[published_port(p) for p in record.ports],
        address=address_of(record),
        jupyter_url=jupyter_url(record),
        exit_code=record.exit_code,
    )
    if oom is None or not oom.oom_kills:
        return info
    return info.model_copy(
        update={
            "oom_kills": oom.oom_kills,
            "last_oom": oom.last_oom,
            "last_oom_limit": oom.last_limit,
        }
    )


def with_lifecycle(
    info: api.ContainerInfo, status: api.LifecycleStatus | None
) -> api.ContainerInfo:
    """``info`` with the lifecycle loop's last word on it: idle time, stop time, why, and
    when a declared runtime ends."""
    if status is None or status.status != info.status:
        return info
    declared = info.runtime_hours is not None
    return info.model_copy(
        update={
            "idle_minutes": status.idle_minutes,
            "stop_at": status.stop_at,
            "runtime_ends_at": status.runtime_stop_at if declared else None,
            "stop_reason": status.reason,
            "exempt_until": status.exempt_until,
        }
    )


def allocation_state(records: list[ContainerRecord]) -> AllocationState:
    return AllocationState(
        holdings=tuple(
            Holding(
                container=r.docker_name,
                name=r.name,
                user=r.user,
                devices=r.gpus,
                gpu_equivalents=r.gpu_equivalents,
                status=r.status,
                borrowed=L.borrowed_of(r.labels),
            )
            for r in records
            if r.gpus
        )
    )


def unmanaged_process(use: UnmanagedUse, viewer: Caller | None = None) -> api.UnmanagedProcess:
    """A process outside ds01's allocation as ``viewer`` may see it: a ds01 container's
    name only to its owner and admins (``viewer`` ``None``: the full view)."""
    if use.reason == "other-container" and use.container_id:
        container: str | None = use.container_id[:12]
    elif _private(viewer, use.container_user or ""):
        container = None
    else:
        container = use.container
    return api.UnmanagedProcess(pid=use.pid, user=use.user, container=container, reason=use.reason)


def _private(viewer: Caller | None, owner: str) -> bool:
    return viewer is not None and not viewer.is_admin and viewer.name != owner


def device_status(
    device: Device,
    inventory: Inventory,
    holding: Holding | None,
    viewer: Caller | None = None,
    unmanaged: Iterable[UnmanagedUse] = (),
    *,
    on_demand: bool = False,
) -> api.DeviceStatus:
    """One device as ``gpu-status`` shows it to ``viewer``, with its holder (``None``: free)
    and the processes of ``unmanaged`` on it. ``on_demand``: a MIG slice ds01d made on
    demand.

    Everyone sees who holds a device; the container's name only its owner and admins (a
    name can tell what someone works on). ``viewer`` ``None``: the full view.
    """
    holder = None
    if holding is not None:
        private = _private(viewer, holding.user)
        holder = api.Holder(
            user=holding.user,
            container=None if private else holding.name,
            borrowed=holding.borrowed,
        )
    return api.DeviceStatus(
        uuid=device.uuid,
        kind=device.kind,
        profile=device.profile,
        gpu_index=device.gpu_index,
        model=device.model,
        memory_mib=device.memory_mib,
        gpu_equivalents=equivalents_to_float(device.gpu_equivalents),
        reserved=device.uuid in inventory.reserved,
        holder=holder,
        unmanaged=[
            unmanaged_process(u, viewer) for u in unmanaged if u.device_uuid == device.uuid
        ],
        on_demand=on_demand,
    )


def allocated_equivalents(inventory: Inventory, held: dict[str, Holding]) -> Fraction:
    """GPU-equivalents of the inventory's devices that ``held`` (UUID → holder) holds."""
    return sum((d.gpu_equivalents for d in inventory.devices if d.uuid in held), start=Fraction(0))


def unusable_gpus(
    inventory: Inventory, dynamic: Collection[int | str] = ()
) -> list[api.UnusableGpu]:
    """GPUs with MIG mode on and no instance: present, but nothing can run on them. A GPU in
    ``dynamic`` (MIG on demand, by index or UUID) is not: slices are made for it."""
    return [
        api.UnusableGpu(
            index=g.index,
            uuid=g.uuid,
            model=g.model,
            reason="MIG mode is on but no MIG instance exists",
        )
        for g in inventory.unusable_gpus()
        if g.index not in dynamic and g.uuid not in dynamic
    ]


def queue_demand(context: DaemonContext) -> Fraction:
    """GPU-equivalents the waiting requests need at least, as of the last queue pass:
    the hint for the lifecycle loop that others wait (0 before the first pass)."""
    plan = context.status.queue_plan
    return plan.demand_gpu_equivalents if plan is not None else Fraction(0)


def users_waiting_for_devices(context: DaemonContext) -> frozenset[str]:
    """The users whose requests, at the last queue pass, waited for devices (not for
    their own quota): other users' idle containers are then reclaimed sooner."""
    plan = context.status.queue_plan
    return frozenset() if plan is None else plan.users_waiting_for_devices


class Views:
    """Read-only answers (see the module docstring for the contract)."""

    def __init__(self, context: DaemonContext, access: Access, limits: LimitsEnforcement) -> None:
        self.context = context
        self.access = access
        self.enforcement = limits

    def list_containers(
        self, caller: Caller, *, all_users: bool = False, user: str | None = None
    ) -> list[api.ContainerInfo]:
        return self.container_infos(self.visible_records(caller, all_users=all_users, user=user))

    def visible_records(
        self, caller: Caller, *, all_users: bool = False, user: str | None = None
    ) -> list[ContainerRecord]:
        """The containers a listing by ``caller`` covers: their own; USER's or everyone's
        (``all_users``) for admins only (a refusal is logged)."""
        if all_users and not caller.is_admin:
            raise self.context.deny(
                caller, "containers/*", "Only admins may list every user's containers."
            )
        records = self.context.records()
        if not all_users:
            subject = self.access.subject(caller, user)
            records = [r for r in records if r.uid == subject.uid]
        return records

    def container_infos(self, records: list[ContainerRecord]) -> list[api.ContainerInfo]:
        """``records`` as ``container-list`` shows them, by user and name: with their OOM
        kills and the lifecycle loop's last word (idle time, stop time, why)."""
        ooms = self.context.store.oom_states()
        status = self.context.status
        lifecycle, usage = status.lifecycle_status, status.disk_usage
        return [
            disk.with_disk(
                with_lifecycle(container_info(r, ooms.get(r.id)), lifecycle.get(r.id)), r, usage
            )
            for r in sorted(records, key=lambda r: (r.user, r.name))
        ]

    def gpu_status(self, caller: Caller) -> api.GpuStatusResponse:
        ctx = self.context
        inventory = ctx.backend.inventory()
        held = allocation_state(ctx.records()).held()
        unmanaged = ctx.status.unmanaged_gpu_use
        on_demand = set(ctx.store.on_demand_slices())
        kept, now = reservations.kept(ctx), ctx.now()
        return api.GpuStatusResponse(
            backend=inventory.backend,
            message=inventory.message,
            devices=[
                device_status(
                    d, inventory, held.get(d.uuid), caller, unmanaged, on_demand=d.uuid in on_demand
                ).model_copy(update={"reservations": reservations.on_device(kept, d.uuid, now)})
                for d in inventory.devices
            ],
            unusable=unusable_gpus(inventory, ctx.config().gpus.dynamic_mig()),
            total_gpu_equivalents=equivalents_to_float(inventory.total_gpu_equivalents),
            allocated_gpu_equivalents=equivalents_to_float(allocated_equivalents(inventory, held)),
            queued_requests=len(ctx.store.queued()),
            queued_gpu_equivalents=equivalents_to_float(queue_demand(ctx)),
        )

    def limits(
        self, caller: Caller, *, user: str | None = None, explain: bool = False
    ) -> api.LimitsResponse:
        ctx = self.context
        subject = self.access.subject(caller, user)
        resolved = ctx.limits_for(subject)
        aggregate = ctx.aggregate_for(subject)
        mine = [r for r in ctx.records() if r.uid == subject.uid]
        usage, aggregate_usage = self.enforcement.usage_of(subject, mine)
        aggregate_usage = disk.with_disk_usage(aggregate_usage, mine, ctx.status)
        explained = {**resolved.explain()}
        if explain:
            lines = yaml_lines(ctx, {k: v["source"] for k, v in explained.items()})
            in_slurm = slurm_sources(ctx, subject.name, subject.groups)
            for key, entry in explained.items():
                entry.update(line=lines.get(key), slurm=in_slurm.get(key))
        explained.update({f"aggregate.{k}": v for k, v in aggregate.explain().items()})
        booking = resolve_reservation_limits(ctx.config().limits, subject.name, subject.groups)
        explained.update({f"reservations.{k}": v for k, v in booking.explain().items()})
        return api.LimitsResponse(
            user=subject.name,
            groups=list(resolved.groups),
            is_admin=is_admin(ctx.config().limits, subject.groups, subject.uid),
            limits=resolved.to_dict(),
            usage=usage,
            explain={
                key: api.ResolvedEntry(**entry) for key, entry in explained.items()
            }
            if explain
            else None,
            aggregate=aggregate.to_dict(),
            aggregate_usage=aggregate_usage,
            host_cpus=ctx.engine.cpus,
            reservations={
                **booking.to_dict(),
                "min_minutes": ctx.config().limits.reservations.min_minutes,
            },
        )


__all__ = [
    "Views",
    "allocated_equivalents",
    "allocation_state",
    "container_info",
    "device_status",
    "jupyter_port_of",
    "jupyter_url",
    "published_port",
    "queue_demand",
    "unusable_gpus",
    "users_waiting_for_devices",
    "with_lifecycle",
]
