"""``Reacquire``: devices again for a container whose devices were released.

A container stopped for longer than its owner's ``gpu_hold_after_stop_minutes`` gives its
devices back (``QueueDesk.release_devices``). When it starts again it gets its own devices
if they are all free (nothing to change), or else is re-created on other devices from a
commit of its filesystem, with the same name, mounts and limits, so that nothing in it is
lost. A re-creation a crash interrupted is settled at the next start
(``StartupReconciler``). A container gets devices again within its owner's quota, or
borrowed above it (``ds01.core.borrowing``) when the start asks to borrow (``--borrow``,
``borrow: auto``, or it was borrowed before: ``ds01.borrowed``, e.g. one reclaimed).
Whether it is borrowed is decided anew: one placed within quota is not (it counts against
``gpu_limit``), one placed above it is (it counts against the cap), and its label says so.
Only a container neither borrowed before nor now gets its own devices back as it is; any
other is re-created with the label of how it is placed now, even on its own devices,
since labels are the record of what counts where, and a borrowed one's fresh
``ds01.created_at`` is when its devices were placed, from which the reclaim's minimum
runtime counts (``core.borrowing.in_place``). Re-created, a container made through the
Docker API door also keeps its terminal settings, aliases and named volumes.

State: none of its own. Locks: every method runs under the allocation lock
(``ds01.daemon.context``). Calls: the context, ``Creation.create_admitted`` (the new
container), ``launch.owned_directory`` (its directories checked again).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ds01.core.allocation import GpuRequest, Placement
from ds01.core.borrowing import allocate_borrowing, in_place
from ds01.core.container_resources import Resources
from ds01.core.docker_create import RunOptions
from ds01.daemon.access import devices_details, resource_of
from ds01.daemon.context import DaemonContext
from ds01.daemon.creation import Creation
from ds01.daemon.launch import CONTAINER_DATA, CONTAINER_WORKSPACE, owned_directory
from ds01.daemon.limits_enforcement import label_cpus, label_size
from ds01.daemon.prepared import PreparedCreate
from ds01.daemon.queue_desk import released_request
from ds01.daemon.reservations import allocate_honouring
from ds01.daemon.views import allocation_state, jupyter_port_of
from ds01.errors import Ds01Error, NotFound
from ds01.model import labels as L
from ds01.model.device import Inventory
from ds01.model.labels import requested_ports
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser


class Reacquire:
    """Gives released containers devices again (see the module docstring for the contract)."""

    def __init__(self, context: DaemonContext, creation: Creation) -> None:
        self.context = context
        self.creation = creation

    def reacquire_now(
        self, owner: UnixUser, record: ContainerRecord, *, borrow: bool = False
    ) -> ContainerRecord:
        """Under the allocation lock: devices for a released container, or ``NoCapacity``
        (``borrow``: the start asks to borrow above quota; module docstring)."""
        ctx = self.context
        inventory = ctx.backend.inventory()
        records = ctx.records()
        reserved = ctx.status.queue_reserved
        if reserved:
            inventory = replace(inventory, reserved=inventory.reserved | reserved)
        limits = ctx.limits_for(owner)
        plan = ctx.status.queue_plan
        decision = allocate_honouring(
            ctx,
            owner,
            record.name,
            L.runtime_hours_of(record.labels),
            limits.gpu_quota(),
            inventory,
            lambda devices, quota: allocate_borrowing(
                released_request(record, devices),
                owner.name,
                quota,
                devices,
                allocation_state(records),
                [r.name for r in records if r.uid == record.uid and r.id != record.id],
                policy=ctx.config().limits.borrowing,
                borrow=borrow or limits.borrow == "auto" or L.borrowed_of(record.labels),
                waiting=() if plan is None else plan.waiting_requests,
            ),
        )
        return self.reacquire_admitted(
            owner, record, decision.placement, inventory, actor=owner.name,
            borrowed=decision.borrowed,
        )  # fmt: skip

    def reacquire_admitted(
        self,
        owner: UnixUser,
        record: ContainerRecord,
        placement: Placement,
        inventory: Inventory,
        *,
        actor: str,
        borrowed: bool = False,
    ) -> ContainerRecord:
        """Under the allocation lock: give a released container ``placement``'s devices
        (its own again as it is when ``core.borrowing.in_place`` allows; else it is
        re-created on the new ones). ``borrowed``: placed above quota; the re-created
        container is labelled borrowed exactly when it is."""
        ctx, runtime = self.context, self.context.runtime
        free_again = in_place(
            L.gpus_of(record.labels),
            labelled=L.borrowed_of(record.labels),
            borrowed=borrowed,
            state=allocation_state(ctx.records()),
            reserved=inventory.reserved,
        )
        if free_again:  # ``record`` is Docker's, with the devices its labels name
            ctx.store.unrelease([record.id])
            fresh = record
        else:  # re-created from a commit of its filesystem, so that nothing in it is lost
            attrs = runtime.inspect(record.docker_name)
            repository = f"{L.KEPT_REPOSITORY_PREFIX}{record.uid}-{record.name.lower()}"
            # The commit's image passes its labels on to the new container: a borrowed label
            # is emptied there, so that only the new container's own labels say how it is
            # placed now.
            emptied = {L.BORROWED: ""} if L.borrowed_of(record.labels) else None
            tag = str(int(time.time()))
            kept = runtime.commit(record.docker_name, repository, tag, labels=emptied)
            prepared = self._prepared_from(owner, record, attrs, kept, borrowed=borrowed)
            replaced = record.docker_name + L.REPLACED_SUFFIX
            runtime.rename(record.docker_name, replaced)
            ctx.ledger.refresh(record.id)
            try:
                self.creation.create_admitted(
                    prepared, placement, inventory, record.request_id, intent=False, actor=actor
                )
            except Ds01Error:
                runtime.rename(replaced, record.docker_name)
                ctx.ledger.refresh(record.id)
                runtime.remove_image(kept)
                raise
            runtime.remove(replaced, force=True, missing_ok=True)
            ctx.ledger.forget(record.id)
            ctx.store.unrelease([record.id])
            previous_kept = record.labels.get(L.KEPT_IMAGE)
            if previous_kept:
                runtime.remove_image(previous_kept)
            created = runtime.find_managed(record.docker_name)
            if created is None:
                raise NotFound(f"{record.name} vanished while it was being re-created.")
            fresh = created
        ctx.events.emit(
            "gpu.allocate",
            user=actor,
            resource=resource_of(record),
            details=devices_details(
                fresh.gpus,
                fresh.gpu_equivalents,
                reason=_reacquired_reason(free_again, L.gpus_of(record.labels), fresh.gpus),
            ),
        )
        return fresh

    def _prepared_from(
        self,
        owner: UnixUser,
        record: ContainerRecord,
        attrs: dict[str, Any],
        image: str,
        *,
        borrowed: bool,
    ) -> PreparedCreate:
        """A create of ``record`` again, from ``image`` (its commit), as it was made, but
        ``borrowed`` or not as it is placed now."""
        host, config = attrs.get("HostConfig") or {}, attrs.get("Config") or {}
        mounts = {m.get("Destination"): m.get("Source") for m in attrs.get("Mounts") or []}
        limits = self.context.limits_for(owner)
        # The owner's directories, as the labels record them (Docker's sources are staging).
        work_source = record.labels.get(L.AIME_WORK_MOUNT) or mounts.get(CONTAINER_WORKSPACE)
        docker_root = self.context.engine.data_root
        workspace = owned_directory(owner, str(work_source), "workspace", docker_root)
        data_label = record.labels.get(L.AIME_DATA_MOUNT)
        data_source = mounts.get(CONTAINER_DATA) if data_label is None else data_label
        if data_source == "-":
            data_source = None
        data = (
            owned_directory(owner, str(data_source), "--data", docker_root) if data_source else None
        )
        return PreparedCreate(
            owner=owner,
            name=record.name,
            docker_name=record.docker_name,
            group=record.group,
            gpu_request=GpuRequest(),
            quota=limits.gpu_quota(),
            priority=int(limits.priority or 0),
            image_ref=image,
            requested_image=record.image,
            framework=record.labels.get(L.AIME_FRAMEWORK, "-"),
            image_command=tuple(config.get("Entrypoint") or ()) + tuple(config.get("Cmd") or ()),
            resources=Resources(
                cpus=label_cpus(record),
                memory_bytes=label_size(record, L.MEMORY_BYTES),
                shm_size_bytes=int(host.get("ShmSize") or 0) or None,
                pids_limit=int(host.get("PidsLimit") or 0) or None,
                disk_bytes=label_size(record, L.DISK_BYTES),
            ),
            aggregate=self.context.aggregate_for(owner),
            workspace=workspace,
            data=data,
            ports=requested_ports(record.labels),
            interface=record.labels.get(L.INTERFACE, "cli"),
            kept_image=image,
            jupyter_port=jupyter_port_of(record.labels),
            jupyter_token=record.labels.get(L.JUPYTER_TOKEN) or None,
            run=(
                kept_run_options(record, attrs)
                if record.labels.get(L.INTERFACE) == "docker"
                else None
            ),
            borrowed=borrowed,
            runtime_hours=L.runtime_hours_of(record.labels),
            hub_server=L.hub_server_of(record.labels),
        )


def kept_run_options(record: ContainerRecord, attrs: dict[str, Any]) -> RunOptions:
    """What a container made through the Docker API door keeps across a re-creation beyond
    its commit (which holds its command, environment and labels): its terminal settings,
    working directory, extra network aliases and named volumes."""
    config = attrs.get("Config") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    ours = {record.name, str(attrs.get("Id", ""))[:12]}
    aliases = tuple(
        dict.fromkeys(
            alias
            for endpoint in networks.values()
            for alias in (endpoint or {}).get("Aliases") or ()
            if alias not in ours
        )
    )
    return RunOptions(
        tty=bool(config.get("Tty")),
        stdin_open=bool(config.get("OpenStdin")),
        working_dir=config.get("WorkingDir") or None,
        aliases=aliases,
        volumes=tuple(
            (str(m.get("Name")), str(m.get("Destination")))
            for m in attrs.get("Mounts") or ()
            if m.get("Type") == "volume"
        ),
    )


def _reacquired_reason(as_it_was: bool, old: Sequence[str], new: Sequence[str]) -> str:
    """The ``gpu.allocate`` event's reason for a container given devices again."""
    if as_it_was:
        return "same devices again"
    if sorted(old) == sorted(new):  # its placement changed how it counts (borrowed or not)
        return "re-created on the same devices"
    return "re-created on other devices"


__all__ = ["Reacquire", "kept_run_options"]
