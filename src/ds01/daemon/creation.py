"""``Creation``: a container made from a request, atomically with its devices.

A create is prepared outside the lock (validation, image, resources, directories:
``prepare_create``), then, under the allocation lock, admitted (devices, name, totals:
``admit``) and made (``create_admitted``): choosing devices and creating the container that
holds them is one atomic step. A request within quota that finds no free devices is
queued when it asks to (``QueueDesk``).

A create intent is recorded before ``docker create`` and removed once the client is told:
``CreateIntents`` (``ds01.daemon.create_intents``) keeps them and rolls a failed create
back. What Docker is asked (the image a request names, the ``ContainerSpec`` with ds01's
labels) is ``CreateSpecs`` (``ds01.daemon.create_spec``).

State: none of its own (the intents' is ``CreateIntents``'s). Locks: see
``ds01.daemon.context``; each method says whether it runs under the allocation lock or
takes it. Calls: the context, ``CreateIntents`` (given, shared with the start-up
reconcile), its own ``CreateSpecs``, and its ``Gatekeepers``, which a start shares
(``ContainerOps``): ``Access`` (refusals), ``LimitsEnforcement`` (totals), ``Launcher``
(directories, host ports), ``QueueDesk`` (queueing), ``MigOnDemand`` (slices).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, replace

from ds01.config.resolve import ResolvedAggregate, ResolvedLimits
from ds01.core.allocation import (
    GpuRequest,
    Placement,
    check_mig_profiles_exist,
    equivalents_to_float,
    named_request,
)
from ds01.core.borrowing import BorrowDecision, allocate_borrowing
from ds01.core.container_resources import (
    ResourceAsk,
    ResourceCeilings,
    Resources,
    requested_ports,
    resources_for,
)
from ds01.core.docker_create import RunOptions
from ds01.core.lifecycle import declared_runtime
from ds01.daemon import schemas as api
from ds01.daemon import slurm_jobs
from ds01.daemon.access import Access, devices_details
from ds01.daemon.context import DaemonContext
from ds01.daemon.create_intents import CreateIntents
from ds01.daemon.create_spec import CreateSpecs, GpuExposure, device_nodes, gpu_exposure
from ds01.daemon.identity import Caller
from ds01.daemon.launch import (
    CONTAINER_WORKSPACE,
    Launcher,
    owned_directory,
    workspace_of,
)
from ds01.daemon.limits_enforcement import LimitsEnforcement
from ds01.daemon.mig_on_demand import MigOnDemand
from ds01.daemon.prepared import Created, Made, PreparedCreate, Queued
from ds01.daemon.queue_desk import QueueDesk
from ds01.daemon.reservations import allocate_honouring, slots_in_the_way
from ds01.daemon.views import allocation_state
from ds01.errors import (
    Conflict,
    Ds01Error,
    InvalidInput,
    NoCapacity,
    PermissionDenied,
    PolicyError,
    PortInUse,
)
from ds01.model import labels as L
from ds01.model.device import Inventory
from ds01.model.names import validate_container_name
from ds01.model.text import shown
from ds01.model.units import format_bytes
from ds01.runtime.cgroups import user_slice_path
from ds01.runtime.docker import (
    PUBLISH_HOST_IP,
    ContainerRecord,
    ContainerSpec,
)
from ds01.runtime.identity import UnixUser
from ds01.runtime.store import CreateIntent

DEFAULT_SLICE_GROUP = "users"  # cgroup slice group of users in no configured group
JUPYTER_TOKEN_BYTES = 24  # 48 hex digits: other users of the machine can reach 127.0.0.1


def container_resources(
    limits: ResolvedLimits,
    request: api.CreateContainerRequest,
    host_cpus: int,
    aggregate: ResolvedAggregate | None = None,
) -> Resources:
    """Per-container resources for ``request`` (``ds01.core.container_resources``)."""
    ask = ResourceAsk(request.cpus, request.memory, request.shm_size, request.disk)
    ceilings = ResourceCeilings(
        cpu_limit=limits.cpu_limit,
        memory_limit_bytes=limits.memory_limit_bytes,
        shm_size_bytes=limits.shm_size_bytes,
        disk_limit_bytes=limits.disk_limit_bytes,
        pids_limit=limits.pids_limit,
        total_cpus=aggregate.cpu_limit if aggregate is not None else None,
        total_memory_bytes=aggregate.memory_limit_bytes if aggregate is not None else None,
        total_disk_bytes=aggregate.disk_limit_bytes if aggregate is not None else None,
    )
    return resources_for(ask, ceilings, host_cpus)


def created_info(
    prepared: PreparedCreate, placement: Placement, created_at: str
) -> api.ContainerInfo:
    """What the client is told about a container just created."""
    return api.ContainerInfo(
        name=prepared.name,
        docker_name=prepared.docker_name,
        user=prepared.owner.name,
        status="created",
        image=prepared.requested_image,
        gpus=list(placement.uuids),
        gpu_equivalents=equivalents_to_float(placement.gpu_equivalents),
        created_at=created_at,
        borrowed=prepared.borrowed,
        runtime_hours=prepared.runtime_hours,
        hub_server=prepared.hub_server,
        ports=[
            api.PublishedPort(container_port=c, host_ip=PUBLISH_HOST_IP, host_port=h)
            for c, h in prepared.ports
        ],
    )


@dataclass(frozen=True)
class Gatekeepers:
    """The collaborators a create and a start both pass: ``Access`` (who may; refusals),
    ``LimitsEnforcement`` (totals), ``Launcher`` (directories, host ports, the start),
    ``QueueDesk`` (waiting when no devices are free) and ``MigOnDemand`` (MIG slices made
    for a request)."""

    access: Access
    enforcement: LimitsEnforcement
    launcher: Launcher
    queue: QueueDesk
    mig: MigOnDemand


class Creation:
    """Creates containers (see the module docstring for the contract)."""

    def __init__(
        self, context: DaemonContext, gates: Gatekeepers, intents: CreateIntents
    ) -> None:
        self.context = context
        self.gates = gates
        self.intents = intents
        self.specs = CreateSpecs(context)

    def create(
        self,
        caller: Caller,
        request: api.CreateContainerRequest,
        run: RunOptions | None = None,
    ) -> Created | Queued:
        """Takes the allocation lock: allocate devices and create the container, atomically;
        or queue the request.

        A request within quota that finds no free devices is queued when ``request.queue``
        is set (``Queued``); it starts by itself when its turn comes (``GpuDispatcher``).
        The create intent stays open when this returns ``Created``: the caller must call
        ``confirm_create(result.request_id, …)`` once the answer is ready to go to the client.
        Until then a crash rolls the container back at the next start.
        ``run``: a Docker API create's own settings (queued, it is held by its client with
        them: ``ds01.daemon.held_creates``).
        """
        try:
            if request.hub is not None and caller.via is None:
                raise PermissionDenied(
                    "Only a hub acting for you may create a JupyterHub server (hub)."
                )
            prepared = self.prepare_create(caller.user, request)
            if request.command is not None:
                run = slurm_jobs.batch_run(self.context, request.command)
            if run is not None:
                prepared = replace(prepared, run=run)
        except PolicyError as exc:
            self.gates.access.refused(caller, f"container/{request.name[:80]}", exc)
            raise
        if slurm_jobs.in_cluster_mode(self.context):
            return self._create_in_job(caller, request, prepared)
        resource = f"container/{prepared.docker_name}"
        request_id = uuid.uuid4().hex
        if self.intents.undo_waits:  # Docker answers again, or this create fails like them
            self.intents.settle_failed_creates()
        ctx = self.context
        with ctx.allocation_lock:
            records = ctx.records()
            inventory = ctx.backend.inventory()
            try:
                if request.devices:  # exactly these, or refused (never queued)
                    named = named_request(request.devices, inventory)
                    prepared = replace(prepared, gpu_request=named)
                decision, inventory = self._admit_on_demand(prepared, records, inventory)
            except NoCapacity as exc:
                if not request.queue or request.devices:
                    self.gates.access.refused(caller, resource, exc)
                    raise
                try:
                    return self.gates.queue.enqueue(
                        prepared, request, exc, records, via=caller.via
                    )
                except PolicyError as refusal:
                    self.gates.access.refused(caller, resource, refusal)
                    raise
            except PolicyError as exc:
                self.gates.access.refused(caller, resource, exc)
                raise
            prepared = replace(prepared, borrowed=decision.borrowed)
            made = self.create_admitted(
                prepared, decision.placement, inventory, request_id, intent=True
            )
        return Created(info=made.info, request_id=request_id, record=made.record)

    def _create_in_job(
        self, caller: Caller, request: api.CreateContainerRequest, prepared: PreparedCreate
    ) -> Created:
        """Cluster mode (``ds01.daemon.slurm_jobs``): without a job, the job's ``sbatch``
        options (``SlurmJobRequired``); in the caller's job, the container on exactly the
        devices Slurm gave it here. ds01's own GPU quotas and queue are Slurm's there (``ds01
        admin slurm sync`` compiled them), so nothing is placed or queued by ds01d."""
        ctx = self.context
        job_id = request.slurm_job
        if request.devices:
            raise InvalidInput("In cluster mode Slurm picks the devices: ask for a number.")
        if job_id is None:
            raise slurm_jobs.job_required(ctx, prepared)
        resource = f"container/{prepared.docker_name}"
        request_id = uuid.uuid4().hex
        try:
            uuids = slurm_jobs.devices_of_job(
                ctx, caller, job_id, request, ctx.backend.inventory()
            )
            prepared = replace(
                prepared,
                slurm_job=job_id,
                slurm_node=ctx.slurm_node,
                slurm_cgroup=slurm_jobs.caller_job_cgroup(ctx, caller, job_id),
            )
            with ctx.allocation_lock:
                records = ctx.records()
                if any(r.docker_name == prepared.docker_name for r in records):
                    raise Conflict(f"You already have a container named {prepared.name!r}.")
                inventory = ctx.backend.inventory()
                placement = slurm_jobs.job_placement(uuids, inventory, records)
                made = self.create_admitted(
                    prepared, placement, inventory, request_id, intent=True
                )
        except PolicyError as exc:
            self.gates.access.refused(caller, resource, exc)
            raise
        return Created(info=made.info, request_id=request_id, record=made.record)

    def prepare_create(
        self, owner: UnixUser, request: api.CreateContainerRequest
    ) -> PreparedCreate:
        """Everything about a create that needs no lock: validation, image, resources, mounts.

        Raises:
            PolicyError: the request is invalid or not allowed (the caller logs the refusal).
        """
        ctx = self.context
        name = validate_container_name(request.name)
        image = self.specs.resolve_image(ctx.config(), request.image, owner.name)
        ports = requested_ports([(p.container_port, p.host_port) for p in request.ports])
        jupyter_port = image.jupyter_port
        if request.hub is not None and jupyter_port is None:
            raise InvalidInput(
                f"Image {shown(request.image)} has no JupyterLab (no {L.JUPYTER_PORT} label): "
                "a JupyterHub server needs one."
            )
        if jupyter_port is not None and request.hub is None and jupyter_port not in dict(ports):
            # On 127.0.0.1, at a fixed port (``Launcher.with_host_ports``). Not a hub's server:
            # the hub reaches it at its address on the user's network, so no host port is
            # left for another local user to bind when it stops (docs/jupyterhub.md).
            ports += ((jupyter_port, None),)
        limits = ctx.limits_for(owner)
        aggregate = ctx.aggregate_for(owner)
        resources = container_resources(limits, request, ctx.engine.cpus, aggregate)
        docker_root = ctx.engine.data_root
        workspace = workspace_of(owner, request.workspace, docker_root)
        data = owned_directory(owner, request.data, "--data", docker_root) if request.data else None
        return PreparedCreate(
            owner=owner,
            name=name,
            docker_name=L.container_name(name, owner.uid),
            group=limits.groups[0] if limits.groups else DEFAULT_SLICE_GROUP,
            gpu_request=GpuRequest(whole_gpus=request.gpus, mig_profiles=tuple(request.mig)),
            quota=limits.gpu_quota(),
            priority=int(limits.priority or 0),
            image_ref=image.reference,
            requested_image=request.image,
            framework=image.framework,
            image_command=image.local.command,
            image_id=image.local.id,
            resources=resources,
            aggregate=aggregate,
            workspace=workspace,
            data=data,
            ports=ports,
            interface=request.interface,
            jupyter_port=jupyter_port,
            jupyter_token=None
            if jupyter_port is None or request.hub is not None  # the hub's login guards it
            else secrets.token_hex(JUPYTER_TOKEN_BYTES),
            hub_environment=tuple(sorted(request.hub.environment.items())) if request.hub else (),
            hub_server=request.hub.server_name if request.hub else None,
            borrow=request.borrow or limits.borrow == "auto",
            runtime_hours=declared_runtime(limits.max_runtime_hours, request.runtime_hours),
        )

    def admit(
        self, prepared: PreparedCreate, records: list[ContainerRecord], inventory: Inventory
    ) -> BorrowDecision:
        """Under the allocation lock: the devices for ``prepared``, and whether they are
        borrowed above its owner's ``gpu_limit`` (``ds01.core.borrowing``), or why not.

        Raises:
            Conflict: the owner already has a container of that name.
            QuotaExceeded: a GPU, container count or memory total limit (borrowing refused).
            NoCapacity: within quota, but no free devices fit.
        """
        if any(r.docker_name == prepared.docker_name for r in records):
            raise Conflict(
                f"You already have a container named {prepared.name!r}. Pick another name, or "
                f"remove it first with `container-remove {prepared.name}`."
            )
        mine = [r for r in records if r.uid == prepared.owner.uid]
        # Devices held for the head of the queue are not free for anyone else.
        reserved = self.context.status.queue_reserved
        if reserved:
            inventory = replace(inventory, reserved=inventory.reserved | reserved)
        plan = self.context.status.queue_plan
        decision = allocate_honouring(
            self.context,
            prepared.owner,
            prepared.name,
            prepared.runtime_hours,
            prepared.quota,
            inventory,
            lambda devices, quota: allocate_borrowing(
                prepared.gpu_request,
                prepared.owner.name,
                quota,
                devices,
                allocation_state(records),
                [r.name for r in mine],
                policy=self.context.config().limits.borrowing,
                borrow=prepared.borrow,
                waiting=() if plan is None else plan.waiting_requests,
            ),
        )
        self.check_memory_total(prepared, mine)
        self.gates.enforcement.check_disk_total(prepared.owner.uid, prepared.aggregate, mine)
        return decision

    def _admit_on_demand(
        self, prepared: PreparedCreate, records: list[ContainerRecord], inventory: Inventory
    ) -> tuple[BorrowDecision, Inventory]:
        """Under the allocation lock: ``admit`` over the inventory with the MIG slice a
        dynamic GPU could make for the request (``MigOnDemand.planned_for``); the slice is
        made only when the decision picks it. Returns the decision and the inventory it
        is on. Raises as ``admit``, and ``NotFound`` for a profile no instance can serve and no
        dynamic GPU can make."""
        held = set(allocation_state(records).held()) | self.context.status.queue_reserved
        profiles = prepared.gpu_request.mig_profiles
        # No slice on a reservation's slot it could still hold at the slot's start.
        keep_out, in_way = slots_in_the_way(
            self.context, prepared.owner, prepared.name, prepared.runtime_hours,
            lambda: self.gates.mig.views(inventory, held),
        )  # fmt: skip
        planned = self.gates.mig.planned_for(profiles, inventory, held, keep_out)
        if not self.gates.mig.can_make(profiles, inventory):
            check_mig_profiles_exist(prepared.gpu_request, planned)
        open_to_it = replace(planned, reserved=planned.reserved | in_way) if in_way else planned
        decision = self.admit(prepared, records, open_to_it)
        placement, made = self.gates.mig.materialize(
            decision.placement, planned, prepared.owner.name
        )
        return replace(decision, placement=placement), made

    def check_memory_total(self, prepared: PreparedCreate, mine: list[ContainerRecord]) -> None:
        """Refuse (``QuotaExceeded``) ``prepared`` if its memory does not fit in the owner's
        total next to ``mine``, the owner's containers."""
        self.gates.enforcement.check_memory_total(
            prepared.aggregate, None, prepared.resources.memory_bytes, mine
        )

    def create_admitted(
        self,
        prepared: PreparedCreate,
        placement: Placement,
        inventory: Inventory,
        request_id: str,
        *,
        intent: bool,
        actor: str | None = None,
    ) -> Made:
        """Under the allocation lock: create the container ``admit`` found devices for.

        ``intent``: record a create intent (a client waits for the answer; see ``create``).
        A queued request passes ``False``: its queue id as ``request_id`` plays that role.
        ``actor``: who the events name as the doer (default: the owner).
        """
        owner = prepared.owner
        resource = f"container/{prepared.docker_name}"
        doer = actor or owner.name
        prepared = self._with_host_ports(prepared, doer)
        spec = self.specs.spec(prepared, placement, inventory, request_id)
        self.gates.enforcement.enforce(
            owner.name, user_slice_path(prepared.group, owner.name), prepared.aggregate
        )
        try:
            record = self._make(prepared, spec, request_id, intent=intent)
        except Ds01Error as exc:
            self.context.events.emit(
                "container.create",
                user=doer,
                resource=resource,
                details={"error": exc.message},
                outcome="failure",
            )
            raise
        self._created_events(prepared, placement, doer)
        return Made(created_info(prepared, placement, spec.labels[L.CREATED_AT]), record)

    def _with_host_ports(self, prepared: PreparedCreate, doer: str) -> PreparedCreate:
        """Under the allocation lock: ``Launcher.with_host_ports``, a refusal logged."""
        try:
            return self.gates.launcher.with_host_ports(prepared)
        except PortInUse as exc:
            self.context.events.emit(
                "container.create",
                user=doer,
                resource=f"container/{prepared.docker_name}",
                details={"reason": exc.message, "kind": exc.kind, "port": exc.port},
                outcome="denied",
            )
            raise

    def _make(
        self, prepared: PreparedCreate, spec: ContainerSpec, request_id: str, *, intent: bool
    ) -> ContainerRecord | None:
        """Under the allocation lock: the intent (if asked), then the container in Docker on
        the owner's network with the owner's account; undone if any step fails. Returns the
        container as the ledger's look-up found it (``ContainerLedger.refresh``)."""
        ctx, owner = self.context, prepared.owner
        if intent:
            self.intents.record(
                CreateIntent(
                    request_id, prepared.docker_name, owner.name, spec.labels[L.CREATED_AT]
                )
            )
        try:
            network = ctx.networks.ensure(owner.uid)  # guarded before anything is on it
            container_id = ctx.runtime.create(
                replace(
                    spec,
                    network=network,
                    network_aliases=(prepared.name, *(prepared.run or RunOptions()).aliases),
                )
            )
            record = ctx.ledger.refresh(container_id)  # the next decision sees its devices
            ctx.accounts.write(
                prepared.docker_name, prepared.image_id, owner, home=CONTAINER_WORKSPACE
            )
        except Ds01Error:
            self.intents.undo_create(prepared.docker_name, request_id)
            raise
        return record

    def _created_events(self, prepared: PreparedCreate, placement: Placement, doer: str) -> None:
        events, resources = self.context.events, prepared.resources
        resource = f"container/{prepared.docker_name}"
        if placement.devices:
            events.emit(
                "gpu.allocate",
                user=doer,
                resource=resource,
                details=devices_details(placement.uuids, placement.gpu_equivalents),
            )
        events.emit(
            "container.create",
            user=doer,
            resource=resource,
            details={
                "image": prepared.image_ref,
                "gpus": list(placement.uuids),
                "cpus": resources.cpus,
                "memory": format_bytes(resources.memory_bytes) if resources.memory_bytes else None,
                "interface": prepared.interface,
            }
            | ({"borrowed": True} if prepared.borrowed else {}),
        )


__all__ = [
    "DEFAULT_SLICE_GROUP",
    "Creation",
    "GpuExposure",
    "container_resources",
    "created_info",
    "device_nodes",
    "gpu_exposure",
]
