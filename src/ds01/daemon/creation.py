"""``Creation``: a container made from a request, atomically with its devices.

A create is prepared outside the lock (validation, image, resources, directories:
``prepare_create``), then, under the allocation lock, admitted (devices, name, totals:
``admit``) and made (``create_admitted``): choosing devices and creating the container that
holds them is one atomic step. A request within quota that finds no free devices is
queued when it asks to (``QueueDesk``).

A create intent is recorded before ``docker create`` and removed once the client is told
(``confirm_create``): a crash in between rolls the container back at the next start
(``StartupReconciler``); a create whose undo failed because Docker stopped answering is
undone once Docker is back (``settle_failed_creates``).

State: the request ids whose undo waits for Docker. Locks: see ``ds01.daemon.context``;
each method says whether it runs under the allocation lock or takes it. Calls: the
context and its ``Gatekeepers``, which a start shares (``ContainerOps``): ``Access``
(refusals), ``LimitsEnforcement`` (totals), ``Launcher`` (directories, host ports),
``QueueDesk`` (queueing).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass, replace

from ds01.config.loader import Ds01Config
from ds01.config.resolve import ResolvedAggregate, ResolvedLimits
from ds01.core.allocation import (
    GpuRequest,
    Placement,
    check_mig_profiles_exist,
    equivalents_to_float,
)
from ds01.core.borrowing import BorrowDecision, allocate_borrowing
from ds01.core.container_resources import (
    ResourceAsk,
    ResourceCeilings,
    Resources,
    requested_ports,
    resources_for,
    stop_signal,
)
from ds01.core.docker_create import RunOptions
from ds01.core.lifecycle import declared_runtime
from ds01.daemon import schemas as api
from ds01.daemon import slurm_jobs
from ds01.daemon.access import Access, devices_details
from ds01.daemon.context import DaemonContext
from ds01.daemon.identity import Caller
from ds01.daemon.launch import (
    CONTAINER_DATA,
    CONTAINER_WORKSPACE,
    Launcher,
    owned_directory,
    workspace_of,
)
from ds01.daemon.limits_enforcement import LimitsEnforcement, cgroup_parent
from ds01.daemon.mig_on_demand import MigOnDemand
from ds01.daemon.prepared import Created, PreparedCreate, Queued, ResolvedImage
from ds01.daemon.queue_desk import QueueDesk
from ds01.daemon.reservations import allocate_honouring
from ds01.daemon.views import allocation_state, jupyter_port_of
from ds01.errors import (
    Conflict,
    Ds01Error,
    InvalidInput,
    NoCapacity,
    NotFound,
    PermissionDenied,
    PolicyError,
    PortInUse,
    StorageFault,
)
from ds01.model import labels as L
from ds01.model.device import Device, Inventory
from ds01.model.names import validate_container_name, validate_image_reference
from ds01.model.suggest import did_you_mean
from ds01.model.text import shown
from ds01.model.units import format_bytes
from ds01.runtime.cgroups import user_slice_path
from ds01.runtime.docker import (
    PUBLISH_HOST_IP,
    ROTATING_LOG_DRIVERS,
    ContainerRecord,
    ContainerSpec,
)
from ds01.runtime.host_gpu import device_group_gid
from ds01.runtime.identity import UnixUser
from ds01.runtime.store import CreateIntent

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class GpuExposure:
    """How a container's devices reach it: its GPU variables, the devices Docker asks the
    NVIDIA Container Toolkit for (a ``DeviceRequest`` by UUID), and stand-in device nodes."""

    environment: dict[str, str]
    gpu_uuids: tuple[str, ...] = ()
    device_nodes: tuple[str, ...] = ()


def gpu_exposure(backend: str, devices: tuple[Device, ...]) -> GpuExposure:
    """The GPU part of a container's spec under GPU backend ``backend``.

    ``DS01_GPUS`` names the devices ds01 allocated (UUIDs, comma-separated; empty for none)
    under every backend. With ``nvml`` the devices are real: ``NVIDIA_VISIBLE_DEVICES`` and
    ``CUDA_VISIBLE_DEVICES`` name them, and Docker asks the toolkit for them by UUID. With
    the simulated backend they do not exist, so both variables say ``void`` and no made-up
    UUID reaches a real runtime: on a host whose Docker default runtime is ``nvidia``, the
    runtime reads ``NVIDIA_VISIBLE_DEVICES`` and would fail the start on a device it cannot
    find. Simulated GPUs reach the container only as their stand-in device nodes, where
    ``gpu-config.yaml`` gives them. Without devices both variables say ``void`` under every
    backend, which also overrides an image's own ``ENV NVIDIA_VISIBLE_DEVICES=all``.
    """
    uuids = tuple(d.uuid for d in devices)
    listed = ",".join(uuids)
    real = backend == "nvml"
    visible = (listed if real else "") or L.NO_GPU_DEVICES
    environment = {
        "NVIDIA_VISIBLE_DEVICES": visible,
        "CUDA_VISIBLE_DEVICES": visible,
        L.GPUS_ENV: listed,
    }
    if real:
        return GpuExposure(environment, gpu_uuids=uuids)
    return GpuExposure(environment, device_nodes=device_nodes(devices))


def device_nodes(devices: tuple[Device, ...]) -> tuple[str, ...]:
    """``--device`` entries for simulated GPUs that have a stand-in device node."""
    nodes: dict[str, str] = {}
    for device in devices:
        if device.device_node:
            nodes[device.device_node] = f"/dev/nvidia{device.gpu_index}"
    return tuple(f"{host}:{inside}:rwm" for host, inside in sorted(nodes.items()))


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

    def __init__(self, context: DaemonContext, gates: Gatekeepers) -> None:
        self.context = context
        self.gates = gates
        self._failed_creates: set[str] = set()  # request ids whose undo waits for Docker

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
        ``run``: a Docker API create's own settings (such a create never queues).
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
        if self._failed_creates:  # Docker answers again, or this create fails like them
            self.settle_failed_creates()
        ctx = self.context
        with ctx.allocation_lock:
            records = ctx.records()
            inventory = ctx.backend.inventory()
            try:
                decision, inventory = self._admit_on_demand(prepared, records, inventory)
            except NoCapacity as exc:
                if not request.queue:
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
            info = self.create_admitted(
                prepared, decision.placement, inventory, request_id, intent=True
            )
        return Created(info=info, request_id=request_id)

    def _create_in_job(
        self, caller: Caller, request: api.CreateContainerRequest, prepared: PreparedCreate
    ) -> Created:
        """Cluster mode (``ds01.daemon.slurm_jobs``): without a job, the job's ``sbatch``
        options (``SlurmJobRequired``); in the caller's job, the container on exactly the
        devices Slurm gave it here. ds01's own GPU quotas and queue are Slurm's there (``ds01
        admin slurm sync`` compiled them), so nothing is placed or queued by ds01d."""
        ctx = self.context
        job_id = request.slurm_job
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
                info = self.create_admitted(
                    prepared, placement, inventory, request_id, intent=True
                )
        except PolicyError as exc:
            self.gates.access.refused(caller, resource, exc)
            raise
        return Created(info=info, request_id=request_id)

    def prepare_create(
        self, owner: UnixUser, request: api.CreateContainerRequest
    ) -> PreparedCreate:
        """Everything about a create that needs no lock: validation, image, resources, mounts.

        Raises:
            PolicyError: the request is invalid or not allowed (the caller logs the refusal).
        """
        ctx = self.context
        name = validate_container_name(request.name)
        image = self._resolve_image(ctx.config(), request.image, owner.name)
        ports = requested_ports([(p.container_port, p.host_port) for p in request.ports])
        jupyter_port = image.jupyter_port
        if request.hub is not None and jupyter_port is None:
            raise InvalidInput(
                f"Image {shown(request.image)} has no JupyterLab (no {L.JUPYTER_PORT} label): "
                "a JupyterHub server needs one."
            )
        if jupyter_port is not None and jupyter_port not in (c for c, _ in ports):
            ports += ((jupyter_port, None),)  # on 127.0.0.1, a free port Docker picks
        limits = ctx.limits_for(owner)
        aggregate = ctx.aggregate_for(owner)
        resources = container_resources(limits, request, ctx.engine.cpus, aggregate)
        workspace = workspace_of(owner, request.workspace)
        data = owned_directory(owner, request.data, "--data") if request.data else None
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
        planned = self.gates.mig.planned_for(profiles, inventory, held)
        if not self.gates.mig.can_make(profiles, inventory):
            check_mig_profiles_exist(prepared.gpu_request, planned)
        decision = self.admit(prepared, records, planned)
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
    ) -> api.ContainerInfo:
        """Under the allocation lock: create the container ``admit`` found devices for.

        ``intent``: record a create intent (a client waits for the answer; see ``create``).
        A queued request passes ``False``: its queue id as ``request_id`` plays that role.
        ``actor``: who the events name as the doer (default: the owner).
        """
        owner = prepared.owner
        resource = f"container/{prepared.docker_name}"
        doer = actor or owner.name
        prepared = self._with_host_ports(prepared, doer)
        spec = self._spec(prepared, placement, inventory, request_id)
        self.gates.enforcement.enforce(
            owner.name, user_slice_path(prepared.group, owner.name), prepared.aggregate
        )
        try:
            self._make(prepared, spec, request_id, intent=intent)
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
        return created_info(prepared, placement, spec.labels[L.CREATED_AT])

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
    ) -> None:
        """Under the allocation lock: the intent (if asked), then the container in Docker on
        the owner's network with the owner's account; undone if any step fails."""
        ctx, owner = self.context, prepared.owner
        if intent:
            record = CreateIntent(
                request_id, prepared.docker_name, owner.name, spec.labels[L.CREATED_AT]
            )
            try:
                ctx.store.add_intent(record)
            except Ds01Error:  # e.g. a full disk: nothing exists yet but staging paths
                ctx.staging.unstage(prepared.docker_name)
                raise
        try:
            network = ctx.networks.ensure(owner.uid)  # guarded before anything is on it
            container_id = ctx.runtime.create(
                replace(
                    spec,
                    network=network,
                    network_aliases=(prepared.name, *(prepared.run or RunOptions()).aliases),
                )
            )
            ctx.ledger.refresh(container_id)  # the next decision sees its devices
            ctx.accounts.write(
                prepared.docker_name, prepared.image_id, owner, home=CONTAINER_WORKSPACE
            )
        except Ds01Error:
            self._undo_create(prepared.docker_name, request_id)
            raise

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

    # -- the intent ---------------------------------------------------------------------------

    def confirm_create(self, request_id: str, docker_name: str) -> None:
        """The client is being told about the create: from now on it is permanent.

        If the intent cannot be removed (a full disk), the create is undone instead and the
        error raised: the client is told it failed, so the container must not stay.
        """
        try:
            self.context.store.remove_intent(request_id)
        except StorageFault as exc:
            self._undo_create(docker_name, request_id)
            self.context.events.emit(
                "container.create",
                user="ds01d",
                resource=f"container/{docker_name}",
                details={"error": exc.message},
                outcome="rolled_back",
            )
            raise

    def _undo_create(self, docker_name: str, request_id: str) -> None:
        """After a failed ``docker create``: remove what Docker may have made anyway.

        If Docker cannot be asked, the intent stays for ``settle_failed_creates`` once
        Docker is back (or the start-up reconcile at the next start).
        """
        try:
            self.roll_back(docker_name, request_id)
        except Ds01Error:
            log.warning(
                "could not undo the failed create of %s; undone when Docker is back", docker_name
            )
            self._failed_creates.add(request_id)
            return
        try:
            self.context.store.remove_intent(request_id)
        except StorageFault:  # the container is gone; the next start drops the intent
            log.warning("the create intent of %s stays until there is room", docker_name)

    def roll_back(self, docker_name: str, request_id: str) -> bool:
        """Remove the container a create with ``request_id`` made, if any, and its bind
        staging; ``True`` if there was one. Raises ``Ds01Error`` if Docker cannot be asked."""
        ctx = self.context
        record = ctx.runtime.find_managed(docker_name)
        made = record is not None and record.request_id == request_id
        if made and record is not None:
            ctx.runtime.remove(docker_name, force=True, missing_ok=True)
            ctx.ledger.forget(record.id)
        if record is None or made:
            ctx.staging.unstage(docker_name)
        return made

    def rolled_back(self, intent: CreateIntent, reason: str) -> None:
        """The audit event of a half-made container removed for its create ``intent``."""
        self.context.events.emit(
            "container.create",
            user=intent.user,
            resource=f"container/{intent.docker_name}",
            details={"reason": reason},
            outcome="rolled_back",
        )

    def settle_failed_creates(self) -> list[str]:
        """Takes the allocation lock. Undo the creates whose undo failed because Docker
        could not be asked (their intents stayed): what Docker made of them is removed and
        the intents dropped, as the start-up reconcile does, without a restart. Call it when
        Docker is back. Returns the Docker names removed; Docker still away leaves the rest
        for next time.
        """
        ctx = self.context
        removed: list[str] = []
        with ctx.allocation_lock:
            for intent in ctx.store.intents():
                if intent.request_id not in self._failed_creates:
                    continue  # a create in progress: its own request settles it
                try:
                    made = self.roll_back(intent.docker_name, intent.request_id)
                except Ds01Error as exc:
                    log.warning("failed creates stay pending: %s", exc.message)
                    break
                if made:
                    removed.append(intent.docker_name)
                    self.rolled_back(intent, "Docker stopped answering during the create")
                ctx.store.remove_intent(intent.request_id)
                self._failed_creates.discard(intent.request_id)
        if removed:
            log.warning("removed %d half-made container(s): %s", len(removed), ", ".join(removed))
        return removed

    # -- what Docker is asked -----------------------------------------------------------------

    def _resolve_image(self, config: Ds01Config, wanted: str, user: str) -> ResolvedImage:
        """The image a request names: its reference, framework, local image and Jupyter port.

        Allowed: a registry entry (by name or reference), a reference matching an ``allow``
        pattern, or an image labelled as built for ``user`` (``ds01.image.owner``).
        """
        entry = config.images.find(wanted)
        if entry is not None:
            ref, framework = entry.image, entry.framework
        else:
            ref, framework = validate_image_reference(wanted), "-"
        image = self.context.runtime.local_image(ref)
        allowed = (
            entry is not None
            or config.images.allows_reference(ref)
            or (image is not None and image.owner() == user)
        )
        if not allowed:
            # The same answer whether the image exists or belongs to someone else: the
            # suggestions come from the registry alone.
            hint = did_you_mean(wanted, (e.name for e in config.images.entries))
            if hint or not any(mark in wanted for mark in "/:@"):
                raise NotFound(
                    f"There is no image {shown(wanted)} in the image registry or among your "
                    f"own images.{hint} `image-list` shows the images you can use."
                )
            raise PermissionDenied(
                f"Image {shown(wanted)} is not in the image registry, not one of your own "
                "images, and local references like it are not allowed here. `image-list` "
                "shows the images you can use."
            )
        if image is None:
            raise NotFound(
                f"Image {shown(ref)} is not present on this machine. `image-list` shows the "
                "images "
                "that are; ask an admin to pull or build it."
            )
        jupyter_port = (entry.jupyter_port if entry else None) or jupyter_port_of(image.labels)
        return ResolvedImage(ref, framework, image, jupyter_port)

    def _labels(
        self, prepared: PreparedCreate, placement: Placement, request_id: str
    ) -> dict[str, str]:
        owner, resources, uuids = prepared.owner, prepared.resources, placement.uuids
        return L.ContainerLabels(
            user=owner.name,
            uid=owner.uid,
            group=prepared.group,
            name=prepared.name,
            gpus=uuids,
            gpu_equivalents=placement.gpu_equivalents,
            created_at=self.context.now().isoformat(timespec="seconds"),
            interface=prepared.interface,
            image=prepared.requested_image,
            request_id=request_id,
            slurm_job=prepared.slurm_job,
            slurm_node=prepared.slurm_node,
            slurm_cgroup=prepared.slurm_cgroup,
            memory_bytes=resources.memory_bytes,
            cpus=resources.cpus,
            disk_bytes=resources.disk_bytes,
            ports=prepared.ports,
            kept_image=prepared.kept_image,
            jupyter_port=prepared.jupyter_port,
            jupyter_token=prepared.jupyter_token,
            workspace=str(prepared.workspace),
            data=str(prepared.data) if prepared.data else None,
            framework=prepared.framework,
            visible_devices=",".join(uuids) or L.NO_GPU_DEVICES,
            borrowed=prepared.borrowed,
            runtime_hours=prepared.runtime_hours,
        ).as_dict()

    def _spec(
        self, prepared: PreparedCreate, placement: Placement, inventory: Inventory, request_id: str
    ) -> ContainerSpec:
        ctx = self.context
        owner, resources, data = prepared.owner, prepared.resources, prepared.data
        gpus = gpu_exposure(inventory.backend, placement.devices)
        # Docker binds the staging paths; ``launch`` mounts the owner's directories there.
        inside = [CONTAINER_WORKSPACE] + ([CONTAINER_DATA] if data else [])
        mounts = [
            (str(ctx.staging.prepare(prepared.docker_name, path.strip("/"))), path)
            for path in inside
        ]
        token = prepared.jupyter_token
        run = prepared.run or RunOptions()
        return ContainerSpec(
            docker_name=prepared.docker_name,
            image=prepared.image_ref,
            user=f"{owner.uid}:{owner.gid}",
            hostname=prepared.name,
            # ds01's labels and variables win over the client's (which name none of them).
            labels={**dict(run.labels), **self._labels(prepared, placement, request_id)},
            environment={
                **dict(run.env),
                **gpus.environment,
                "HOME": CONTAINER_WORKSPACE,
                "USER": owner.name,
                "DS01_CONTAINER": prepared.name,
                **({L.JUPYTER_TOKEN_ENV: token} if token else {}),
                **dict(prepared.hub_environment),
            },
            mounts=tuple(mounts),
            volumes=run.volumes,
            # A Slurm job's container lives in the job's cgroup: Slurm's limits hold it.
            cgroup_parent=prepared.slurm_cgroup
            or cgroup_parent(prepared.group, owner.name, ctx.engine.cgroup_driver),
            cpus=resources.cpus,
            memory_bytes=resources.memory_bytes,
            shm_size_bytes=resources.shm_size_bytes,
            pids_limit=resources.pids_limit,
            storage_size_bytes=resources.disk_bytes
            if ctx.status.storage.mode == "enforced"
            else None,
            rotating_log_driver=ctx.engine.logging_driver
            if ctx.engine.logging_driver in ROTATING_LOG_DRIVERS
            else None,
            gpu_uuids=gpus.gpu_uuids,
            device_nodes=gpus.device_nodes,
            stop_signal=stop_signal(prepared.image_command),
            ports=prepared.ports,
            working_dir=run.working_dir or CONTAINER_WORKSPACE,
            command=hub_command(prepared.jupyter_port) if prepared.hub_environment else run.command,
            entrypoint=run.entrypoint,
            # ds01's own creates keep a terminal open on the image's command.
            tty=run.tty if prepared.run is not None else True,
            stdin_open=run.stdin_open if prepared.run is not None else True,
            extra={
                **device_group(gpus.gpu_uuids),
                **({"auto_remove": True} if run.auto_remove else {}),
            },
        )


def hub_command(port: int | None) -> tuple[str, ...]:
    """The command of a JupyterHub single-user server listening on the image's JupyterLab
    ``port`` (published on the host's 127.0.0.1, where the hub reaches it)."""
    return ("jupyterhub-singleuser", "--ip=0.0.0.0", f"--port={port}")


def device_group(gpu_uuids: tuple[str, ...]) -> dict[str, list[str]]:
    """Docker's ``group_add`` for a container given GPUs through the NVIDIA toolkit: the
    device group, so that its user (not root) opens the device nodes the toolkit puts in
    it once ``ds01 admin setup`` made them 0660 root:ds01-gpu. No GPUs or no group: none."""
    gid = device_group_gid() if gpu_uuids else None
    return {"group_add": [str(gid)]} if gid is not None else {}


__all__ = [
    "DEFAULT_SLICE_GROUP",
    "Creation",
    "GpuExposure",
    "container_resources",
    "created_info",
    "device_nodes",
    "gpu_exposure",
]
