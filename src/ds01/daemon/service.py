"""The ds01d service: every decision the API exposes, behind one allocation lock.

``Ds01Service`` is the imperative shell around the pure core. It reads the configuration
(reloading it when a file changes, keeping the last good one when a new one is invalid),
asks Docker what exists (one list call), lets ``ds01.core.allocation`` decide, and then
creates and labels the container, all while holding ``_allocation_lock``: choosing devices
and creating the container that holds them is one atomic step (DESIGN.md §2.3).

Callers are always ``Caller`` objects built from kernel credentials; a user may act on their
own containers only, admins (root or the configured admin group) on everyone's.

Aggregate limits (a user's totals across all their containers, ``aggregate:`` in
``resource-limits.yaml``) are written on the user's cgroup parent right before a container
is created or started there, under the same lock; a changed configuration is written on the
live parents at once; an emptied parent is removed. Memory is also checked before a create
or start: the memory limits of the user's containers that are not stopped (one that has no
limit counts as the whole total) may not add up to more than the total. The kernel's limit
on the parent backs that check up.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import re
import secrets
import stat
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from ds01.config.loader import Ds01Config, load_config
from ds01.config.resolve import (
    ResolvedAggregate,
    ResolvedLimits,
    is_admin,
    resolve_aggregate,
    resolve_limits,
    resolve_policy,
)
from ds01.core.allocation import (
    AllocationState,
    GpuRequest,
    Holding,
    Placement,
    allocate,
    check_mig_profiles_exist,
    equivalents_to_float,
    format_equivalents,
)
from ds01.core.image_build import build_target
from ds01.core.lifecycle import covering_exemption
from ds01.core.ports import (
    PortClaim,
    choose_host_port,
    claimed_by_others,
    port_claims,
    port_in_use_message,
    port_taken_message,
)
from ds01.core.queue_room import WaitingRequest, check_queue_room
from ds01.core.scheduler import Plan
from ds01.daemon import disk
from ds01.daemon import schemas as api
from ds01.daemon.accounts import OwnerAccounts
from ds01.daemon.health import LoopRegistry
from ds01.daemon.identity import Caller
from ds01.daemon.networks import NETWORK_ACTION, UserNetworks, instance_id
from ds01.daemon.observed import ObservedContainers
from ds01.daemon.paths import DaemonPaths
from ds01.errors import (
    Conflict,
    Ds01Error,
    InvalidInput,
    NoCapacity,
    NotFound,
    PermissionDenied,
    PolicyError,
    PortInUse,
    QuotaExceeded,
    StorageFault,
)
from ds01.events.log import EventLog, utc_now
from ds01.gpu.backend import GpuBackend, make_backend
from ds01.model import labels as L
from ds01.model.device import Device, Inventory
from ds01.model.names import (
    validate_container_name,
    validate_image_reference,
)
from ds01.model.quota import GpuQuota
from ds01.model.suggest import did_you_mean
from ds01.model.text import SHOWN_INPUT_CHARS, clip, shown
from ds01.model.units import MIB, format_bytes, format_duration, parse_bytes
from ds01.paths import GPU_CONFIG_FILE, IMAGES_FILE, RESOURCE_LIMITS_FILE
from ds01.runtime.cgroups import (
    DEFAULT_ROOT,
    AggregateLimits,
    CgroupError,
    CgroupManager,
    slice_part,
    slice_unit,
    user_slice_path,
)
from ds01.runtime.docker import (
    PUBLISH_HOST_IP,
    ROTATING_LOG_DRIVERS,
    CgroupDriver,
    ContainerRecord,
    ContainerSpec,
    DockerRuntime,
    PortBinding,
)
from ds01.runtime.docker_images import LocalImage
from ds01.runtime.firewall import Firewall
from ds01.runtime.identity import PeerCredentials, UnixUser, user_by_name, user_by_uid
from ds01.runtime.notify import notify_terminals
from ds01.runtime.port_probe import port_is_free
from ds01.runtime.staging import STAGING_DIR, MountStaging
from ds01.runtime.store import CreateIntent, OomState, QueuedRequest, QueueKind, StateStore
from ds01.runtime.userfs import PathStep, UserIds, make_directory, open_directory

log = logging.getLogger(__name__)

CONTAINER_WORKSPACE = "/workspace"
CONTAINER_DATA = "/data"
DEFAULT_WORKSPACE_DIR = "workspace"  # under the user's home
DEFAULT_SLICE_GROUP = "users"  # cgroup slice group of users in no configured group
STOP_TIMEOUT_SECONDS = 10
MIN_MEMORY_BYTES = 6 * 1024 * 1024  # Docker's minimum memory limit
MAX_PATH_LENGTH = 4096
JUPYTER_TOKEN_BYTES = 24  # 48 hex digits: other users of the machine can reach 127.0.0.1
#: Host ports for JupyterLab, on 127.0.0.1: below Linux's ephemeral range (32768 and up), so
#: ports Docker or clients pick never take one.
JUPYTER_HOST_PORTS = range(20000, 30000)
DOCKER_ID_RE = re.compile(r"^[0-9a-f]{12,64}\Z")  # a Docker id or its (12+ digit) prefix
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh"})
AGGREGATE_ACTION = "resource.aggregate"
#: A configuration file changed less than this long ago (seconds) may still be being written:
#: it is read once it has been still that long, waiting at most the second value.
CONFIG_SETTLE_SECONDS = 0.5
CONFIG_SETTLE_MAX_SECONDS = 3.0
#: Each configuration file's (name, mtime, size): a change of any means a reload.
ConfigStamp = tuple[tuple[str, float, int], ...]
#: Docker's smallest memory limit; less room than this is no room.
DOCKER_MIN_MEMORY_BYTES = 6 * MIB
#: The user's directory behind each bind a container has, by its path in the container: the
#: label that records it (ds01d's own; Docker's bind source is the staging path).
BIND_LABELS = {CONTAINER_WORKSPACE: L.AIME_WORK_MOUNT, CONTAINER_DATA: L.AIME_DATA_MOUNT}


def cgroup_parent(group: str, user: str, driver: CgroupDriver) -> str:
    """The per-user cgroup parent, ``/ds01.slice/ds01-<group>.slice/ds01-<group>-<user>.slice``,
    as Docker's ``--cgroup-parent`` takes it for ``driver``."""
    path = user_slice_path(group, user)
    if driver == "systemd":
        return slice_unit(path)  # systemd expands the dashes into the same nesting
    return path


def record_parent(record: ContainerRecord) -> str:
    """The cgroup parent (a path below the cgroup root) a ds01 container was created under."""
    return user_slice_path(record.group, record.user)


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
        ports=[published_port(p) for p in record.ports],
        jupyter_url=jupyter_url(record),
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
    """``info`` with the lifecycle loop's last word on it: idle time, stop time, why."""
    if status is None or status.status != info.status:
        return info
    return info.model_copy(
        update={
            "idle_minutes": status.idle_minutes,
            "stop_at": status.stop_at,
            "stop_reason": status.reason,
            "exempt_until": status.exempt_until,
        }
    )


def label_size(record: ContainerRecord, key: str) -> int | None:
    """A byte count a ds01 label holds; ``None`` (unlimited) when empty, absent or invalid."""
    return L.size_of(record.labels, key)


def label_cpus(record: ContainerRecord) -> float | None:
    """The container's CPU limit from its label; ``None`` when unlimited or unknown."""
    return L.cpus_of(record.labels)


def aggregate_limits(aggregate: ResolvedAggregate) -> AggregateLimits:
    """What to write on the user's cgroup parent for these resolved totals."""
    return AggregateLimits(
        cpus=aggregate.cpu_limit,
        memory_bytes=aggregate.memory_limit_bytes,
        pids=aggregate.pids_limit,
    )


def _names(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def memory_total_refusal(
    total: int | None,
    container: str | None,
    asked: int | None,
    others: Sequence[tuple[str, int | None]],
) -> str | None:
    """Why a container's memory does not fit in the user's total, or ``None`` if it does.

    ``others`` are the user's other containers that hold memory (not stopped), with their
    memory limits in bytes; ``asked`` is the container's own (``None``: no limit). A
    container without a limit counts as the whole ``total``. ``container`` names the
    container being started, ``None`` for one being created.
    """
    if total is None:
        return None
    need = total if asked is None else asked
    committed = sum(total if size is None else size for _, size in others)
    if committed + need <= total:
        return None
    what = "this one" if container is None else container
    message = f"Memory total reached: your containers may use {format_bytes(total)} together; "
    if others:
        names = [name for name, _ in others]
        verb = "has" if len(names) == 1 else "have"
        message += f"{_names(names)} already {verb} {format_bytes(committed)}"
        unlimited = [name for name, size in others if size is None]
        if unlimited:
            message += f" ({_names(unlimited)}: no memory limit, which counts as all of it)"
        message += "; "
    message += (
        f"{what} asks for {format_bytes(need)}."
        if asked is not None
        else f"{what} has no memory limit, which counts as all of it."
    )
    room = (total - committed) // MIB * MIB
    if container is None and room >= DOCKER_MIN_MEMORY_BYTES:
        return message + f" Ask for --memory {format_bytes(room)} or less, or stop one."
    if container is None:
        return message + " Stop or remove one of them first (`container-stop NAME`)."
    return (
        message + " Stop one of the others first (`container-stop NAME`), or re-create "
        f"{container} with a smaller --memory."
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
            )
            for r in records
            if r.gpus
        )
    )


def device_status(
    device: Device, inventory: Inventory, holding: Holding | None, viewer: Caller | None = None
) -> api.DeviceStatus:
    """One device as ``gpu-status`` shows it to ``viewer``, with its holder (``None``: free).

    Everyone sees who holds a device; the container's name only its owner and admins (a
    name can tell what someone works on). ``viewer`` ``None``: the full view.
    """
    holder = None
    if holding is not None:
        private = viewer is not None and not viewer.is_admin and viewer.name != holding.user
        holder = api.Holder(user=holding.user, container=None if private else holding.name)
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
    )


def allocated_equivalents(inventory: Inventory, held: dict[str, Holding]) -> Fraction:
    """GPU-equivalents of the inventory's devices that ``held`` (UUID → holder) holds."""
    return sum((d.gpu_equivalents for d in inventory.devices if d.uuid in held), start=Fraction(0))


def unusable_gpus(inventory: Inventory) -> list[api.UnusableGpu]:
    """GPUs with MIG mode on and no instance: present, but nothing can run on them."""
    return [
        api.UnusableGpu(
            index=g.index,
            uuid=g.uuid,
            model=g.model,
            reason="MIG mode is on but no MIG instance exists",
        )
        for g in inventory.unusable_gpus()
    ]


@dataclass(frozen=True)
class Created:
    """A container just created, and the intent to confirm once the client is answered."""

    info: api.ContainerInfo
    request_id: str


@dataclass(frozen=True)
class _Resources:
    cpus: float | None
    memory_bytes: int | None
    shm_size_bytes: int | None
    pids_limit: int | None
    disk_bytes: int | None = None


@dataclass(frozen=True)
class Queued:
    """A create that found no free devices and now waits in the GPU queue."""

    entry: QueuedRequest
    reason: str  # why it could not start now


@dataclass(frozen=True)
class ResolvedImage:
    """An image a user may run, as a create uses it."""

    reference: str
    framework: str
    local: LocalImage
    jupyter_port: int | None  # from its registry entry or its ds01.jupyter.port label


@dataclass(frozen=True)
class PreparedCreate:
    """A validated create request with everything resolved that needs no lock."""

    owner: UnixUser
    name: str
    docker_name: str
    group: str  # the cgroup slice and fair-share group
    gpu_request: GpuRequest
    quota: GpuQuota
    priority: int
    image_ref: str
    requested_image: str
    framework: str
    image_command: tuple[str, ...]
    resources: _Resources
    aggregate: ResolvedAggregate
    workspace: Path
    data: Path | None
    ports: tuple[tuple[int, int | None], ...]
    interface: str
    kept_image: str | None = None  # set when re-created from a commit of its old self
    jupyter_port: int | None = None  # the container port its JupyterLab listens on
    jupyter_token: str | None = None
    image_id: str = ""  # the local image's id, when known (its account files are cached)


class Ds01Service:
    """Business logic of ds01d. Thread-safe; one instance per daemon.

    Args:
        paths: where configuration, state and logs live.
        runtime: the Docker adapter (injected).
        store: the SQLite state store.
        events: the event log.
        backend_factory: builds the GPU backend from ``gpu-config.yaml`` (injected so tests
            can pass a simulated backend with a telemetry file).
        clock: returns the current UTC time.
        cgroups: writes aggregate limits on users' cgroup parents (default: the host's
            ``/sys/fs/cgroup`` with the engine's cgroup driver).
        firewall: the host firewall that guards users' networks (default: ``iptables``).
    """

    def __init__(
        self,
        paths: DaemonPaths,
        runtime: DockerRuntime,
        store: StateStore,
        events: EventLog,
        backend_factory: Callable[[Ds01Config], GpuBackend] = lambda c: make_backend(c.gpus),
        clock: Callable[[], datetime] = utc_now,
        cgroups: CgroupManager | None = None,
        firewall: Firewall | None = None,
    ) -> None:
        self.paths = paths
        self.runtime = runtime
        self.store = store
        self.events = events
        self._clock = clock
        self._backend_factory = backend_factory
        self.allocation_lock = threading.Lock()
        # Notified whenever the queue or the devices held may have changed.
        self.queue_condition = threading.Condition()
        # Free devices the queue holds for its head, and the last plan (set by the
        # dispatcher after each pass).
        self.queue_reserved: frozenset[str] = frozenset()
        self.queue_plan: Plan | None = None
        # The lifecycle loop's last decisions, by container id (set after each pass), and
        # the pass itself for `ds01 maintenance run` (set when the loop exists).
        self.lifecycle_status: dict[str, api.LifecycleStatus] = {}
        self.lifecycle_pass: Callable[[bool], api.MaintenanceReport] | None = None
        self.lifecycle_last_pass: datetime | None = None  # when the last pass (not dry) ran
        # The containers as observers see them (set by ds01d's main; None: list every time).
        self.observed: ObservedContainers | None = None
        self.started_at = clock()  # `ds01 admin doctor` tells a young daemon from a stuck loop
        # The background loops' health, for `ds01 admin doctor` (ds01d's main adds them).
        self.loops = LoopRegistry()
        self._stopped_since: dict[str, datetime | None] = {}
        self._failed_creates: set[str] = set()  # request ids whose undo waits for Docker
        self._config_lock = threading.Lock()
        self._config_stamp = self._stamp()
        self._config = load_config(paths.config_dir)  # an invalid file stops the start here
        self._backend = backend_factory(self._config)
        self.engine = runtime.engine_info()
        self.cgroups = cgroups or CgroupManager(DEFAULT_ROOT, self.engine.cgroup_driver)
        # Disk limits: the host's mode (ds01d's main detects it) and each container's use
        # (set by the DiskMeter).
        self.storage = disk.UNDETECTED
        self.disk_usage: dict[str, disk.DiskUse] = {}
        # Bind sources, opened without following symlinks and mounted where only root reaches.
        self.staging = MountStaging(paths.state_dir / STAGING_DIR)
        self.accounts = OwnerAccounts(runtime)
        self.networks = UserNetworks(
            runtime, firewall or Firewall(), events, instance_id(paths.state_dir)
        )

    # -- configuration ------------------------------------------------------------------

    def _stamp(self) -> ConfigStamp:
        stamps = []
        for name in (RESOURCE_LIMITS_FILE, GPU_CONFIG_FILE, IMAGES_FILE):
            try:
                st = (self.paths.config_dir / name).stat()
                stamps.append((name, st.st_mtime, st.st_size))
            except FileNotFoundError:
                stamps.append((name, 0.0, -1))
        return tuple(stamps)

    def _settled(self, stamp: ConfigStamp) -> ConfigStamp:
        """``stamp`` once no configuration file has changed for ``CONFIG_SETTLE_SECONDS``
        (waiting at most ``CONFIG_SETTLE_MAX_SECONDS``): a file being rewritten in place is
        read when its writer is done, not half-way."""
        deadline = time.monotonic() + CONFIG_SETTLE_MAX_SECONDS
        while True:
            newest = max(mtime for _, mtime, _ in stamp)
            wait = newest + CONFIG_SETTLE_SECONDS - time.time()
            left = deadline - time.monotonic()
            if wait <= 0 or left <= 0:
                return stamp
            time.sleep(min(wait, left))
            stamp = self._stamp()

    def config(self) -> Ds01Config:
        """The current configuration; reloaded when a file changed and has settled (see
        ``_settled``), the last good one kept when the new one is invalid."""
        stamp = self._stamp()
        if stamp == self._config_stamp:
            return self._config
        with self._config_lock:
            stamp = self._settled(stamp)
            if stamp == self._config_stamp:
                return self._config
            self._config_stamp = stamp
            old_limits = self._config.limits
            try:
                new = load_config(self.paths.config_dir)
            except Ds01Error as exc:
                log.error("configuration rejected, keeping the last good one: %s", exc.message)
                self.events.emit(
                    "config.reload",
                    user="ds01d",
                    resource=f"config/{self.paths.config_dir}",
                    details={"error": exc.message},
                    outcome="failure",
                )
                return self._config
            if new.gpus != self._config.gpus:
                self._backend.close()
                self._backend = self._backend_factory(new)
            self._config = new
            if new.limits.admin_group != old_limits.admin_group:
                self.share_log_with_admins()
            self.events.emit(
                "config.reload", user="ds01d", resource=f"config/{self.paths.config_dir}"
            )
            if new.limits != old_limits:  # totals or group memberships may have changed
                self._apply_live_aggregates(new, "configuration changed")
            return new

    def share_log_with_admins(self) -> None:
        """Give the audit log's directory and files to the configured admin group.

        Owner root, group the admin group (mode 0640, directory 0750: see ``EventLog``);
        root only when that group does not exist. Called at start and when the admin
        group changes in the configuration.
        """
        try:
            gid: int | None = grp.getgrnam(self._config.limits.admin_group).gr_gid
        except KeyError:
            gid = None
        log_dir = self.events.path.parent
        try:
            os.chown(log_dir, 0, 0 if gid is None else gid)
            for entry in log_dir.iterdir():
                if entry.is_file() and not entry.is_symlink():
                    os.chown(entry, 0, 0 if gid is None else gid)
        except OSError as exc:
            log.error("cannot give the audit log to the admin group: %s", exc)
        self.events.group_gid = gid

    @property
    def backend(self) -> GpuBackend:
        self.config()
        return self._backend

    # -- identity -----------------------------------------------------------------------

    def caller(self, creds: PeerCredentials) -> Caller:
        user = user_by_uid(creds.uid)
        admin = is_admin(self.config().limits, user.groups, user.uid)
        return Caller(user=user, pid=creds.pid, is_admin=admin)

    def whoami(self, caller: Caller) -> api.WhoAmI:
        return api.WhoAmI(
            user=caller.name,
            uid=caller.uid,
            groups=list(caller.user.groups),
            is_admin=caller.is_admin,
        )

    def log_refusal(
        self, caller: Caller, action: str, resource: str, exc: Ds01Error, **details: object
    ) -> None:
        """Record a refused request: the one shape of every ``denied`` event."""
        self.events.emit(
            action,
            user=caller.name,
            resource=resource,
            details={"reason": exc.message, "kind": exc.kind, **details},
            outcome="denied",
        )

    def deny(
        self, caller: Caller, resource: str, message: str, **details: object
    ) -> PermissionDenied:
        refusal = PermissionDenied(message)
        self.log_refusal(caller, "auth.denied", resource, refusal, **details)
        return refusal

    def _subject(self, caller: Caller, user: str | None) -> UnixUser:
        """The user a request is about: the caller, or (admins only) someone else."""
        if user is None or user == caller.name:
            return caller.user
        if not caller.is_admin:
            raise self.deny(
                caller,
                f"user/{user}",
                f"Only admins may act for another user ({user}).",
            )
        return user_by_name(user)

    def limits_for(self, user: UnixUser) -> ResolvedLimits:
        return resolve_limits(self.config().limits, user.name, user.groups)

    def aggregate_for(self, user: UnixUser, config: Ds01Config | None = None) -> ResolvedAggregate:
        """``user``'s totals across all their containers (``config``: the current one)."""
        return resolve_aggregate((config or self.config()).limits, user.name, user.groups)

    # -- aggregate limits on cgroup parents -------------------------------------------------

    def _enforce(
        self, user: str, parent: str, aggregate: ResolvedAggregate, *, create: bool = True
    ) -> None:
        """Write ``aggregate`` on ``parent``. Fails closed when a total is set: the error
        is logged as an event and raised; with no total set, a failure is only logged.
        With ``create``, the parent is recorded as this instance's (it, or Docker for one of
        its containers, makes it now)."""
        if create:
            self.store.own_cgroup_parent(parent, self.now().isoformat())
        try:
            self.cgroups.apply(parent, aggregate_limits(aggregate), create=create)
        except CgroupError as exc:
            self.events.emit(
                AGGREGATE_ACTION,
                user=user,
                resource=f"cgroup{parent}",
                details={"limits": aggregate.to_dict(), "error": exc.message},
                outcome="failure",
            )
            if not aggregate.unlimited:
                raise
            log.warning("%s", exc.message)

    def _apply_live_aggregates(self, config: Ds01Config, reason: str) -> None:
        """Write each user's totals on every existing parent that holds their containers
        (derived from one list call), e.g. after a configuration change. Fails soft."""
        try:
            records = self.runtime.list_managed()
        except Ds01Error as exc:
            log.error("aggregate limits not updated: %s", exc.message)
            return
        parents = sorted({(r.user, record_parent(r)) for r in records if r.user})
        if not parents:
            return
        updated, failed = 0, []
        for name, parent in parents:
            try:
                aggregate = self.aggregate_for(user_by_name(name), config)
                self._enforce(name, parent, aggregate, create=False)
                updated += 1
            except Ds01Error as exc:
                log.error("aggregate limits of %s not updated: %s", name, exc.message)
                failed.append(name)
        self.events.emit(
            AGGREGATE_ACTION,
            user="ds01d",
            resource=f"config/{self.paths.config_dir}",
            details={"reason": reason, "updated": updated, "failed": failed},
            outcome="failure" if failed else "success",
        )

    def _remove_parent_if_unused(self, parent: str) -> None:
        """Remove ``parent`` (and its empty ancestors) if no container of ds01 uses it."""
        with self.allocation_lock:
            try:
                records = self.runtime.list_managed()
            except Ds01Error as exc:
                log.warning("cgroup %s left for the next start: %s", parent, exc.message)
                return
            if all(record_parent(r) != parent for r in records):
                self._remove_own_parent(parent)

    def _remove_own_parent(self, parent: str) -> bool:
        """Remove ``parent`` if it is empty and forget it once gone. Caller holds the
        allocation lock and has checked that no container uses it."""
        if parent not in self.store.owned_cgroup_parents():
            return False  # made by an admin or another ds01d on this engine: not ours to remove
        if not self.cgroups.remove_if_empty(parent):
            return False
        self.store.disown_cgroup_parent(parent)
        return True

    def reconcile_cgroups(self) -> list[str]:
        """At start: write the current totals on the parents that hold containers, and
        remove the empty parents of this instance that no container uses. Returns the
        parents removed."""
        self._apply_live_aggregates(self.config(), "ds01d started")
        removed = []
        with self.allocation_lock:
            in_use = {record_parent(r) for r in self.runtime.list_managed()}
            for parent in sorted(self.store.owned_cgroup_parents() - in_use):
                if self._remove_own_parent(parent):
                    removed.append(parent)
        return removed

    # -- reads ----------------------------------------------------------------------------

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
            raise self.deny(caller, "containers/*", "Only admins may list every user's containers.")
        records = self.records()
        if not all_users:
            subject = self._subject(caller, user)
            records = [r for r in records if r.uid == subject.uid]
        return records

    def container_infos(self, records: list[ContainerRecord]) -> list[api.ContainerInfo]:
        """``records`` as ``container-list`` shows them, by user and name: with their OOM
        kills and the lifecycle loop's last word (idle time, stop time, why)."""
        ooms = self.store.oom_states()
        status = self.lifecycle_status
        return [
            disk.with_disk(
                with_lifecycle(container_info(r, ooms.get(r.id)), status.get(r.id)),
                r,
                self.disk_usage,
            )
            for r in sorted(records, key=lambda r: (r.user, r.name))
        ]

    def gpu_status(self, caller: Caller) -> api.GpuStatusResponse:
        inventory = self.backend.inventory()
        held = allocation_state(self.records()).held()
        return api.GpuStatusResponse(
            backend=inventory.backend,
            message=inventory.message,
            devices=[
                device_status(d, inventory, held.get(d.uuid), caller) for d in inventory.devices
            ],
            unusable=unusable_gpus(inventory),
            total_gpu_equivalents=equivalents_to_float(inventory.total_gpu_equivalents),
            allocated_gpu_equivalents=equivalents_to_float(allocated_equivalents(inventory, held)),
            queued_requests=len(self.store.queued()),
            queued_gpu_equivalents=equivalents_to_float(self.queue_demand()),
        )

    def queue_demand(self) -> Fraction:
        """GPU-equivalents the waiting requests need at least, as of the last queue pass:
        the hint for the lifecycle loop that others wait (0 before the first pass)."""
        plan = self.queue_plan
        return plan.demand_gpu_equivalents if plan is not None else Fraction(0)

    def users_waiting_for_devices(self) -> frozenset[str]:
        """The users whose requests, at the last queue pass, waited for devices (not for
        their own quota): other users' idle containers are then reclaimed sooner."""
        plan = self.queue_plan
        return frozenset() if plan is None else plan.users_waiting_for_devices

    def limits(
        self, caller: Caller, *, user: str | None = None, explain: bool = False
    ) -> api.LimitsResponse:
        subject = self._subject(caller, user)
        resolved = self.limits_for(subject)
        aggregate = self.aggregate_for(subject)
        mine = [r for r in self.records() if r.uid == subject.uid]
        usage, aggregate_usage = self.usage_of(subject, mine)
        aggregate_usage = disk.with_disk_usage(aggregate_usage, mine, self)
        explained = {**resolved.explain()}
        explained.update({f"aggregate.{k}": v for k, v in aggregate.explain().items()})
        return api.LimitsResponse(
            user=subject.name,
            groups=list(resolved.groups),
            is_admin=is_admin(self.config().limits, subject.groups, subject.uid),
            limits=resolved.to_dict(),
            usage=usage,
            explain={
                key: api.ResolvedEntry(value=entry["value"], source=entry["source"])
                for key, entry in explained.items()
            }
            if explain
            else None,
            aggregate=aggregate.to_dict(),
            aggregate_usage=aggregate_usage,
            host_cpus=self.engine.cpus,
        )

    def usage_of(
        self, subject: UnixUser, mine: list[ContainerRecord]
    ) -> tuple[api.Usage, api.AggregateUsage]:
        """What ``subject`` uses through ``mine``, their containers: GPU-equivalents and
        containers against their quota, and memory (now, from the cgroup parents; and
        committed, the limits of the containers that are not stopped)."""
        in_use = allocation_state(mine).user_gpu_equivalents(subject.name)
        holding = [label_size(r, L.MEMORY_BYTES) for r in mine if r.status != "stopped"]
        usages = [self.cgroups.memory_usage(p) for p in {record_parent(r) for r in mine}]
        known_usages = [u for u in usages if u is not None]
        usage = api.Usage(
            gpu_equivalents=equivalents_to_float(in_use),
            containers=len(mine),
            gpu_containers=sorted(r.name for r in mine if r.gpus),
        )
        return usage, api.AggregateUsage(
            memory_bytes=sum(known_usages) if known_usages else None,
            memory_committed_bytes=None
            if None in holding
            else sum(size for size in holding if size is not None),
        )

    # -- container lifecycle ------------------------------------------------------------------

    def create(self, caller: Caller, request: api.CreateContainerRequest) -> Created | Queued:
        """Allocate devices and create the container, atomically; or queue the request.

        A request within quota that finds no free devices is queued when ``request.queue``
        is set (``Queued``); it starts by itself when its turn comes (``GpuDispatcher``).
        The create intent stays open when this returns ``Created``: the caller must call
        ``confirm_create(result.request_id, …)`` once the answer is ready to go to the client.
        Until then a crash rolls the container back at the next start.
        """
        try:
            prepared = self.prepare_create(caller.user, request)
        except PolicyError as exc:
            self._refused(caller, f"container/{request.name[:80]}", exc)
            raise
        resource = f"container/{prepared.docker_name}"
        request_id = uuid.uuid4().hex
        if self._failed_creates:  # Docker answers again, or this create fails like them
            self.settle_failed_creates()
        with self.allocation_lock:
            records = self.records()
            inventory = self.backend.inventory()
            try:
                check_mig_profiles_exist(prepared.gpu_request, inventory)
                placement = self.admit(prepared, records, inventory)
            except NoCapacity as exc:
                if not request.queue:
                    self._refused(caller, resource, exc)
                    raise
                try:
                    return self.enqueue(prepared, request, exc, records)
                except PolicyError as refusal:
                    self._refused(caller, resource, refusal)
                    raise
            except PolicyError as exc:
                self._refused(caller, resource, exc)
                raise
            info = self.create_admitted(prepared, placement, inventory, request_id, intent=True)
        return Created(info=info, request_id=request_id)

    def prepare_create(
        self, owner: UnixUser, request: api.CreateContainerRequest
    ) -> PreparedCreate:
        """Everything about a create that needs no lock: validation, image, resources, mounts.

        Raises:
            PolicyError: the request is invalid or not allowed (the caller logs the refusal).
        """
        config = self.config()
        name = validate_container_name(request.name)
        gpu_request = GpuRequest(whole_gpus=request.gpus, mig_profiles=tuple(request.mig))
        image = self._resolve_image(config, request.image, owner.name)
        ports = _requested_ports(request.ports)
        jupyter_port = image.jupyter_port
        if jupyter_port is not None and jupyter_port not in (c for c, _ in ports):
            ports += ((jupyter_port, None),)  # on 127.0.0.1, a free port Docker picks
        limits = self.limits_for(owner)
        aggregate = self.aggregate_for(owner)
        resources = _resources(limits, request, self.engine.cpus, aggregate)
        workspace = self._workspace(owner, request.workspace)
        data = self._owned_directory(owner, request.data, "--data") if request.data else None
        return PreparedCreate(
            owner=owner,
            name=name,
            docker_name=L.container_name(name, owner.uid),
            group=limits.groups[0] if limits.groups else DEFAULT_SLICE_GROUP,
            gpu_request=gpu_request,
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
            jupyter_token=None if jupyter_port is None else secrets.token_hex(JUPYTER_TOKEN_BYTES),
        )

    def admit(
        self, prepared: PreparedCreate, records: list[ContainerRecord], inventory: Inventory
    ) -> Placement:
        """Under the allocation lock: the devices for ``prepared``, or why not.

        Raises:
            Conflict: the owner already has a container of that name.
            QuotaExceeded: a GPU, container count or memory total limit.
            NoCapacity: within quota, but no free devices fit.
        """
        if any(r.docker_name == prepared.docker_name for r in records):
            raise Conflict(
                f"You already have a container named {prepared.name!r}. Pick another name, or "
                f"remove it first with `container-remove {prepared.name}`."
            )
        mine = [r for r in records if r.uid == prepared.owner.uid]
        # Devices held for the head of the queue are not free for anyone else.
        if self.queue_reserved:
            inventory = replace(inventory, reserved=inventory.reserved | self.queue_reserved)
        placement = allocate(
            prepared.gpu_request,
            prepared.owner.name,
            prepared.quota,
            inventory,
            allocation_state(records),
            [r.name for r in mine],
        )
        self._check_memory_total(prepared.aggregate, None, prepared.resources.memory_bytes, mine)
        total = prepared.aggregate.disk_limit_bytes
        over = disk.total_refusal(self, prepared.owner.uid, total, mine)
        if over is not None:
            raise QuotaExceeded(over)
        return placement

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
        owner, resources = prepared.owner, prepared.resources
        resource = f"container/{prepared.docker_name}"
        doer = actor or owner.name
        try:
            prepared = self._with_host_ports(prepared)
        except PortInUse as exc:
            self.events.emit(
                "container.create",
                user=doer,
                resource=resource,
                details={"reason": exc.message, "kind": exc.kind, "port": exc.port},
                outcome="denied",
            )
            raise
        spec = self._spec(prepared, placement, inventory, request_id)
        self._enforce(owner.name, user_slice_path(prepared.group, owner.name), prepared.aggregate)
        try:
            if intent:
                intent_record = CreateIntent(
                    request_id, prepared.docker_name, owner.name, spec.labels[L.CREATED_AT]
                )
                try:
                    self.store.add_intent(intent_record)
                except Ds01Error:  # e.g. a full disk: nothing exists yet but staging paths
                    self.staging.unstage(prepared.docker_name)
                    raise
            try:
                network = self.networks.ensure(owner.uid)  # guarded before anything is on it
                self.runtime.create(
                    replace(spec, network=network, network_aliases=(prepared.name,))
                )
                self.accounts.write(
                    prepared.docker_name, prepared.image_id, owner, home=CONTAINER_WORKSPACE
                )
            except Ds01Error:
                self._undo_create(prepared.docker_name, request_id)
                raise
        except Ds01Error as exc:
            self.events.emit(
                "container.create",
                user=doer,
                resource=resource,
                details={"error": exc.message},
                outcome="failure",
            )
            raise
        if placement.devices:
            self.events.emit(
                "gpu.allocate",
                user=doer,
                resource=resource,
                details={
                    "devices": list(placement.uuids),
                    "gpu_equivalents": equivalents_to_float(placement.gpu_equivalents),
                },
            )
        self.events.emit(
            "container.create",
            user=doer,
            resource=resource,
            details={
                "image": prepared.image_ref,
                "gpus": list(placement.uuids),
                "cpus": resources.cpus,
                "memory": format_bytes(resources.memory_bytes) if resources.memory_bytes else None,
                "interface": prepared.interface,
            },
        )
        return api.ContainerInfo(
            name=prepared.name,
            docker_name=prepared.docker_name,
            user=owner.name,
            status="created",
            image=prepared.requested_image,
            gpus=list(placement.uuids),
            gpu_equivalents=equivalents_to_float(placement.gpu_equivalents),
            created_at=spec.labels[L.CREATED_AT],
            ports=[
                api.PublishedPort(container_port=c, host_ip=PUBLISH_HOST_IP, host_port=h)
                for c, h in prepared.ports
            ],
        )

    def _with_host_ports(self, prepared: PreparedCreate) -> PreparedCreate:
        """Under the allocation lock: ``prepared`` with its host ports checked against every
        other container's claim (``ds01.core.ports``), and a fixed host port for its
        JupyterLab when it serves one.

        A fixed port (not Docker's pick at each start) keeps the URL, bookmarks and SSH
        tunnels valid across restarts: the lowest port of ``JUPYTER_HOST_PORTS`` that no ds01
        container claims (running or stopped) and nothing listens on.

        Raises:
            PortInUse: a host port asked for belongs to another container; or no port of
                ``JUPYTER_HOST_PORTS`` is free.
        """
        claims = self.port_claims(self.records())
        fixed = [h for _, h in prepared.ports if h is not None]
        taken = claimed_by_others(fixed, claims, prepared.docker_name)
        if taken:
            raise PortInUse(
                port_taken_message(taken[0].host_port, taken[0], prepared.owner.name),
                port=taken[0].host_port,
            )
        port = prepared.jupyter_port
        if port is None or dict(prepared.ports).get(port) is not None:
            return prepared
        chosen = choose_host_port(JUPYTER_HOST_PORTS, claims, port_is_free)
        if chosen is None:
            raise PortInUse(
                f"No free host port for JupyterLab in {JUPYTER_HOST_PORTS.start}-"
                f"{JUPYTER_HOST_PORTS.stop - 1}; ask an admin.",
                port=0,
            )
        ports = tuple((c, chosen if c == port else h) for c, h in prepared.ports)
        return replace(prepared, ports=ports)

    @staticmethod
    def port_claims(records: Sequence[ContainerRecord]) -> dict[int, PortClaim]:
        """Every host port a ds01 container publishes, running or stopped: its label's fixed
        ports and the ports Docker reports while it runs. A container's old self while it is
        re-created (``.replaced``) claims for the container it becomes."""
        return port_claims(
            PortClaim(b.host_port, r.docker_name.removesuffix(L.REPLACED_SUFFIX), r.user)
            for r in records
            for b in r.ports
            if b.host_port is not None
        )

    def enqueue(
        self,
        prepared: PreparedCreate,
        request: api.CreateContainerRequest,
        why: NoCapacity,
        records: list[ContainerRecord] | None = None,
    ) -> Queued:
        """Under the allocation lock: put a create that found no free devices in the queue,
        if the owner has room there (``check_queue_room``; ``records``: every managed
        container, listed under this lock, or ``None`` to list them)."""
        waiting = self._queued_for(prepared.owner.uid, prepared.name)
        if waiting is not None:
            raise Conflict(
                f"A request for a container named {prepared.name!r} is already queued. "
                "`ds01 queue` shows it; `ds01 queue cancel ID` withdraws it."
            )
        mine = [r.name for r in (self.records() if records is None else records)
                if r.uid == prepared.owner.uid]  # fmt: skip
        self._check_queue_room(prepared.owner, "create", mine)
        return self._join_queue(
            prepared.owner, "create", prepared.name, prepared.group, prepared.gpu_request,
            request.model_dump_json(), why,
        )  # fmt: skip

    def enqueue_start(self, owner: UnixUser, record: ContainerRecord, why: NoCapacity) -> Queued:
        """Under the allocation lock: queue a released container until devices free up (a
        second start while it waits joins the same request)."""
        waiting = self._queued_for(record.uid, record.name)
        if waiting is not None:
            return Queued(entry=waiting, reason=why.message)
        self._check_queue_room(owner, "start", [])
        request = self.released_request(record, self.backend.inventory())
        return self._join_queue(owner, "start", record.name, record.group, request, "", why)

    def _queued_for(self, uid: int, container: str) -> QueuedRequest | None:
        """The waiting request of user ``uid`` for ``container``, if any."""
        return next((q for q in self.store.waiting_of(uid) if q.container == container), None)

    def _check_queue_room(self, owner: UnixUser, kind: QueueKind, containers: list[str]) -> None:
        """Refuse (``QuotaExceeded``) one more waiting request of ``owner`` beyond
        ``max_containers`` (creates) or ``max_queued`` (see ``core.queue_room``)."""
        limits = self.config().limits
        check_queue_room(
            kind,
            containers,
            [WaitingRequest(q.id, q.kind, q.container) for q in self.store.waiting_of(owner.uid)],
            max_containers=self.limits_for(owner).max_containers,
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
    ) -> Queued:
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
            submitted_at=self._clock().isoformat(timespec="microseconds"),
        )
        self.store.add_queued(entry)
        self.events.emit(
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
        self.queue_changed()
        return Queued(entry=entry, reason=why.message)

    def now(self) -> datetime:
        """The service's clock (UTC)."""
        return self._clock()

    def check_memory_total(self, prepared: PreparedCreate, mine: list[ContainerRecord]) -> None:
        """Refuse (``QuotaExceeded``) ``prepared`` if its memory does not fit in the owner's
        total next to ``mine``, the owner's containers."""
        self._check_memory_total(prepared.aggregate, None, prepared.resources.memory_bytes, mine)

    def release_devices(
        self, record: ContainerRecord, now: datetime, *, held_minutes: float
    ) -> None:
        """Under the allocation lock: a stopped container's devices go back to the pool."""
        self.store.release(record.id, record.docker_name, now.isoformat(timespec="seconds"))
        self.events.emit(
            "gpu.release",
            user="ds01d",
            resource=_resource(record),
            details={
                "devices": list(record.gpus),
                "gpu_equivalents": equivalents_to_float(record.gpu_equivalents),
                "reason": f"stopped for {held_minutes:g} min (gpu_hold_after_stop_minutes)",
            },
        )

    def notify_user(self, uid: int, message: str) -> None:
        """Write ``message`` on the terminals where user ``uid`` is logged in and accepts
        messages (like ``write``: the terminal's group-write bit, ``mesg y``). Fails soft."""
        notify_terminals(uid, message)

    def queue_changed(self) -> None:
        """Wake the dispatcher and every client waiting on the queue."""
        with self.queue_condition:
            self.queue_condition.notify_all()

    def records(self) -> list[ContainerRecord]:
        """Every managed container; those whose devices were released hold none."""
        return self._without_released(self.runtime.list_managed())

    def observed_records(self) -> list[ContainerRecord]:
        """``records()`` for observers (metrics): the list ``observed`` keeps while Docker
        reports no change. Never for decisions: those list under the allocation lock."""
        if self.observed is None:
            return self.records()
        return self._without_released(self.observed.list_managed())

    def _without_released(self, records: list[ContainerRecord]) -> list[ContainerRecord]:
        released = self.store.released()
        if not released:
            return records
        return [
            replace(r, gpus=(), gpu_equivalents=Fraction(0)) if r.id in released else r
            for r in records
        ]

    def confirm_create(self, request_id: str, docker_name: str) -> None:
        """The client is being told about the create: from now on it is permanent.

        If the intent cannot be removed (a full disk), the create is undone instead and the
        error raised: the client is told it failed, so the container must not stay.
        """
        try:
            self.store.remove_intent(request_id)
        except StorageFault as exc:
            self._undo_create(docker_name, request_id)
            self.events.emit(
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
        Docker is back (or ``reconcile`` at the next start).
        """
        try:
            self._roll_back(docker_name, request_id)
        except Ds01Error:
            log.warning(
                "could not undo the failed create of %s; undone when Docker is back", docker_name
            )
            self._failed_creates.add(request_id)
            return
        try:
            self.store.remove_intent(request_id)
        except StorageFault:  # the container is gone; the next start drops the intent
            log.warning("the create intent of %s stays until there is room", docker_name)

    def _roll_back(self, docker_name: str, request_id: str) -> bool:
        """Remove the container a create with ``request_id`` made, if any, and its bind
        staging; ``True`` if there was one. Raises ``Ds01Error`` if Docker cannot be asked."""
        record = self.runtime.find_managed(docker_name)
        made = record is not None and record.request_id == request_id
        if made:
            self.runtime.remove(docker_name, force=True, missing_ok=True)
        if record is None or made:
            self.staging.unstage(docker_name)
        return made

    def settle_failed_creates(self) -> list[str]:
        """Undo the creates whose undo failed because Docker could not be asked (their
        intents stayed): what Docker made of them is removed and the intents dropped, as
        ``reconcile`` does at start, without a restart. Call it when Docker is back.
        Returns the Docker names removed; Docker still away leaves the rest for next time.
        """
        removed: list[str] = []
        with self.allocation_lock:
            for intent in self.store.intents():
                if intent.request_id not in self._failed_creates:
                    continue  # a create in progress: its own request settles it
                try:
                    made = self._roll_back(intent.docker_name, intent.request_id)
                except Ds01Error as exc:
                    log.warning("failed creates stay pending: %s", exc.message)
                    break
                if made:
                    removed.append(intent.docker_name)
                    self._rolled_back(intent, "Docker stopped answering during the create")
                self.store.remove_intent(intent.request_id)
                self._failed_creates.discard(intent.request_id)
        if removed:
            log.warning("removed %d half-made container(s): %s", len(removed), ", ".join(removed))
        return removed

    def start(
        self, caller: Caller, name: str, *, user: str | None = None, queue: bool = False
    ) -> api.ContainerInfo | Queued:
        """Start a container. One whose devices were released gets devices again first
        (``reacquire``); if none are free it is queued when ``queue`` is set."""
        record = self._target(caller, name, user, "start")
        if record.status == "running":
            return container_info(record).model_copy(update={"already": True})
        owner = caller.user if record.uid == caller.uid else user_by_name(record.user)
        if record.id in self.store.released():  # refuse before it gets devices again
            self.check_mounts(caller, owner, record)
        aggregate = self.aggregate_for(owner)
        with self.allocation_lock:
            if record.status != "running":
                try:
                    self._check_can_start(record, aggregate)
                    self._check_runtime_left(record, owner)
                    if record.id in self.store.released():
                        record = self._reacquire_now(owner, record)
                except NoCapacity as exc:
                    if not queue:
                        self.log_refusal(caller, "container.start", _resource(record), exc)
                        raise
                    try:
                        return self.enqueue_start(owner, record, exc)
                    except PolicyError as refusal:
                        self.log_refusal(caller, "container.start", _resource(record), refusal)
                        raise
                except PolicyError as exc:
                    self.log_refusal(caller, "container.start", _resource(record), exc)
                    raise
            # The parent may be gone (a reboot) or hold old limits: runc would make a bare one.
            self._enforce(record.user, record_parent(record), aggregate)
            self.launch(caller, owner, record)
        self.events.emit("container.start", user=caller.name, resource=_resource(record))
        if record.ports:  # Docker chose host ports only now
            record = self.runtime.find_managed(record.docker_name) or record
        return container_info(record).model_copy(update={"status": "running"})

    # -- devices back after a release --------------------------------------------------------

    def released_request(self, record: ContainerRecord, inventory: Inventory) -> GpuRequest:
        """What a released container asks for again: as many whole GPUs, or the same MIG
        profiles, as its labels record."""
        by_uuid = inventory.by_uuid()
        devices = [by_uuid.get(u) for u in record.labels.get(L.GPUS, "").split(",") if u]
        if any(d is None for d in devices):
            raise InvalidInput(
                f"{record.name} held devices that this machine no longer has (the MIG layout "
                "changed?). Re-create it: your files in /workspace are kept."
            )
        known = [d for d in devices if d is not None]
        return GpuRequest(
            whole_gpus=sum(1 for d in known if d.kind == "gpu"),
            mig_profiles=tuple(d.profile or "" for d in known if d.kind == "mig"),
        )

    def _reacquire_now(self, owner: UnixUser, record: ContainerRecord) -> ContainerRecord:
        """Under the allocation lock: devices for a released container, or ``NoCapacity``."""
        inventory = self.backend.inventory()
        records = self.records()
        if self.queue_reserved:
            inventory = replace(inventory, reserved=inventory.reserved | self.queue_reserved)
        limits = self.limits_for(owner)
        placement = allocate(
            self.released_request(record, inventory),
            owner.name,
            limits.gpu_quota(),
            inventory,
            allocation_state(records),
            [r.name for r in records if r.uid == record.uid and r.id != record.id],
        )
        return self.reacquire_admitted(owner, record, placement, inventory, actor=owner.name)

    def reacquire_admitted(
        self,
        owner: UnixUser,
        record: ContainerRecord,
        placement: Placement,
        inventory: Inventory,
        *,
        actor: str,
    ) -> ContainerRecord:
        """Under the allocation lock: give a released container ``placement``'s devices.

        Its own devices again if they are all free (nothing to change); otherwise the
        container is re-created on the new devices from a commit of its filesystem, with
        the same name, mounts and limits, so that nothing in it is lost.
        """
        old = tuple(u for u in record.labels.get(L.GPUS, "").split(",") if u)
        held = allocation_state(self.records()).held()
        free_again = all(u not in held and u not in inventory.reserved for u in old)
        if free_again:  # ``record`` is Docker's, with the devices its labels name
            self.store.unrelease([record.id])
            fresh = record
        else:
            fresh = self._recreate_on(owner, record, placement, inventory, actor)
        self.events.emit(
            "gpu.allocate",
            user=actor,
            resource=_resource(record),
            details={
                "devices": list(fresh.gpus),
                "gpu_equivalents": equivalents_to_float(fresh.gpu_equivalents),
                "reason": "same devices again" if free_again else "re-created on other devices",
            },
        )
        return fresh

    def _recreate_on(
        self,
        owner: UnixUser,
        record: ContainerRecord,
        placement: Placement,
        inventory: Inventory,
        actor: str,
    ) -> ContainerRecord:
        attrs = self.runtime.inspect(record.docker_name)
        repository = f"ds01-kept/{record.uid}-{record.name.lower()}"
        kept = self.runtime.commit(record.docker_name, repository, str(int(time.time())))
        prepared = self._prepared_from(owner, record, attrs, kept)
        replaced = record.docker_name + L.REPLACED_SUFFIX
        self.runtime.rename(record.docker_name, replaced)
        try:
            self.create_admitted(
                prepared, placement, inventory, record.request_id, intent=False, actor=actor
            )
        except Ds01Error:
            self.runtime.rename(replaced, record.docker_name)
            self.runtime.remove_image(kept)
            raise
        self.runtime.remove(replaced, force=True, missing_ok=True)
        self.store.unrelease([record.id])
        previous_kept = record.labels.get(L.KEPT_IMAGE)
        if previous_kept:
            self.runtime.remove_image(previous_kept)
        fresh = self.runtime.find_managed(record.docker_name)
        if fresh is None:
            raise NotFound(f"{record.name} vanished while it was being re-created.")
        return fresh

    def _prepared_from(
        self, owner: UnixUser, record: ContainerRecord, attrs: dict[str, Any], image: str
    ) -> PreparedCreate:
        """A create of ``record`` again, from ``image`` (its commit), as it was made."""
        host, config = attrs.get("HostConfig") or {}, attrs.get("Config") or {}
        mounts = {m.get("Destination"): m.get("Source") for m in attrs.get("Mounts") or []}
        limits = self.limits_for(owner)
        # The owner's directories, as the labels record them (Docker's sources are staging).
        work_source = record.labels.get(L.AIME_WORK_MOUNT) or mounts.get(CONTAINER_WORKSPACE)
        workspace = self._owned_directory(owner, str(work_source), "workspace")
        data_label = record.labels.get(L.AIME_DATA_MOUNT)
        data_source = mounts.get(CONTAINER_DATA) if data_label is None else data_label
        if data_source == "-":
            data_source = None
        data = self._owned_directory(owner, str(data_source), "--data") if data_source else None
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
            resources=_Resources(
                cpus=label_cpus(record),
                memory_bytes=label_size(record, L.MEMORY_BYTES),
                shm_size_bytes=int(host.get("ShmSize") or 0) or None,
                pids_limit=int(host.get("PidsLimit") or 0) or None,
                disk_bytes=label_size(record, L.DISK_BYTES),
            ),
            aggregate=self.aggregate_for(owner),
            workspace=workspace,
            data=data,
            ports=L.requested_ports(record.labels),
            interface=record.labels.get(L.INTERFACE, "cli"),
            kept_image=image,
            jupyter_port=jupyter_port_of(record.labels),
            jupyter_token=record.labels.get(L.JUPYTER_TOKEN) or None,
        )

    def target_to_read(
        self, caller: Caller, name: str, user: str | None, verb: str
    ) -> ContainerRecord:
        """The container a read-only request (``logs``, ``stats``) names: the caller's own
        (admins: USER's), found and refused exactly as for ``container-stop``; devices given
        back while it was stopped are not shown as held."""
        return self._without_released([self._target(caller, name, user, verb)])[0]

    def target_for_terminal(self, caller: Caller, name: str, user: str | None) -> ContainerRecord:
        """The container ``container-open`` may enter: the caller's own (admins: USER's)."""
        return self._target(caller, name, user, "open")

    def check_mounts(self, caller: Caller, owner: UnixUser, record: ContainerRecord) -> None:
        """Refuse (``PermissionDenied``, logged) to start ``record`` if a directory it binds
        is no longer the owner's own, with no symlink on its path. A check ahead of the lock;
        ``launch`` checks again on the very descriptor it mounts."""
        for fd, _, _ in self._bind_sources(caller, owner, record):
            if fd is not None:
                os.close(fd)

    def launch(self, caller: Caller, owner: UnixUser, record: ContainerRecord) -> None:
        """Under the allocation lock: start ``record`` in Docker (if it is not running).

        First the owner's network is guarded (and an older container moved onto it:
        ``onto_own_network``), its binds are staged again from descriptors (the directory
        checked is the directory mounted: ``ds01.runtime.staging``), then each fixed host
        port must be free on 127.0.0.1 (never a URL that leads to someone else's listener);
        a port Docker finds taken at the start itself is the same refusal. Every refusal is
        an event.

        Raises:
            PermissionDenied: a bind source is no longer the owner's own directory.
            PortInUse: a host port of the container is held by something else.
        """
        if record.status == "running":
            return
        self.onto_own_network(record)
        for fd, container, what in self._bind_sources(caller, owner, record):
            if fd is None:
                continue
            try:
                self.staging.stage(container, what, fd)
            finally:
                os.close(fd)
        for _, host_port in L.requested_ports(record.labels):
            if host_port is not None and not port_is_free(host_port):
                self._refuse_port(caller, record, host_port, self._port_holder(record, host_port))
        try:
            self.runtime.start(record.docker_name)
        except PortInUse as exc:
            self._refuse_port(caller, record, exc.port, "another program (Docker found it taken)")

    def _port_holder(self, record: ContainerRecord, port: int) -> str:
        """Who holds ``port``, as a refusal names it: a container of ds01 or something else."""
        for other in self.records():
            running = other.id != record.id and other.status == "running"
            if running and any(b.host_port == port for b in other.ports):
                return "another container"
        return "a process on this machine that is not a ds01 container"

    def _refuse_port(self, caller: Caller, record: ContainerRecord, port: int, holder: str) -> None:
        refusal = PortInUse(port_in_use_message(port, record.name, holder), port=port)
        self.log_refusal(caller, "container.start", _resource(record), refusal, port=port)
        raise refusal

    def _bind_sources(
        self, caller: Caller, owner: UnixUser, record: ContainerRecord
    ) -> list[tuple[int | None, str, str]]:
        """The binds of ``record``: for each staged one, a descriptor of the owner's directory
        (opened without following symlinks, checked on the descriptor; the caller closes it),
        the container and the bind's name in the staging tree. A bind made before staging
        existed is checked by its path and has no descriptor.

        Raises:
            PermissionDenied: (logged) a source is no longer the owner's own directory.
        """
        sources: list[tuple[int | None, str, str]] = []
        try:
            for mount in self.runtime.inspect(record.docker_name).get("Mounts") or ():
                if mount.get("Type") != "bind":
                    continue
                source, destination = str(mount.get("Source", "")), mount.get("Destination")
                staged = self.staging.owner_of(source)
                if staged is None:
                    self._check_legacy_bind(owner, record, source)
                    sources.append((None, "", ""))
                    continue
                label = BIND_LABELS.get(str(destination))
                path = record.labels.get(label, "") if label else ""
                if not path.startswith("/"):
                    raise PermissionDenied(f"its bind {destination} has no source ds01 made.")
                opened = self._open_owned(owner, path, str(destination))
                sources.append((opened, staged[0], staged[1]))
        except PolicyError as exc:
            for fd, _, _ in sources:
                if fd is not None:
                    os.close(fd)
            raise self.deny(
                caller, _resource(record), f"Not starting {record.name!r}: {exc.message}"
            ) from exc
        return sources

    def _check_legacy_bind(self, owner: UnixUser, record: ContainerRecord, source: str) -> None:
        """A bind Docker resolves by path (made before staging): still the owner's, and no
        symlink on the way. Docker resolves it once more; re-create such a container."""
        real = self._owned_directory(owner, source, "mount")
        if str(real) != source:
            raise PermissionDenied(
                f"its mount {source} now leads to {real}. Restore the directory, or "
                "re-create the container."
            )

    def _open_owned(self, owner: UnixUser, path: str, what: str) -> int:
        """A descriptor of ``path``, a directory of ``owner``'s with no symlink anywhere on its
        path (checked on the descriptor itself).

        Raises:
            PermissionDenied: a component is missing or a symlink, or the directory is not
                the owner's.
        """
        try:
            fd = open_directory(path)
        except PathStep as exc:
            why = "is a symbolic link or not a directory" if exc.errno in (
                errno.ELOOP, errno.ENOTDIR) else "is missing"  # fmt: skip
            raise PermissionDenied(
                f"{what} {path}: {exc.component} {why} now. Restore the directory, or "
                "re-create the container with another one."
            ) from exc
        except OSError as exc:
            raise PermissionDenied(f"{what} {path} cannot be opened: {exc}") from exc
        st = os.fstat(fd)
        if (
            path == "/"
            or not stat.S_ISDIR(st.st_mode)
            or (st.st_uid != owner.uid and owner.uid != 0)
        ):
            os.close(fd)
            raise PermissionDenied(
                f"{what} {path} is not a directory {owner.name} owns any more; only your own "
                "directories can be mounted."
            )
        return fd

    def _check_memory_total(
        self,
        aggregate: ResolvedAggregate,
        container: str | None,
        memory_bytes: int | None,
        records: Sequence[ContainerRecord],
    ) -> None:
        """Refuse (``QuotaExceeded``) a container whose memory limit does not fit in the
        user's total next to ``records``, the user's containers (those stopped, and
        ``container`` itself, are not counted)."""
        others = [
            (r.name, label_size(r, L.MEMORY_BYTES))
            for r in records
            if r.status != "stopped" and r.name != container
        ]
        problem = memory_total_refusal(
            aggregate.memory_limit_bytes, container, memory_bytes, others
        )
        if problem is not None:
            raise QuotaExceeded(problem)

    def _check_runtime_left(self, record: ContainerRecord, owner: UnixUser) -> None:
        """Refuse (``QuotaExceeded``) to start a container that used up ``max_runtime_hours``
        over its runs, unless an exemption covers it: it would be stopped again at once."""
        limit = self.limits_for(owner).max_runtime_hours
        clock = self.store.lifecycle_clocks().get(record.id) if limit is not None else None
        if limit is None or clock is None:
            return
        now = self._clock()
        ran = clock.runtime(now)
        if ran < timedelta(hours=limit):
            return
        exemptions = [r.exemption() for r in self.store.exemptions()]
        if covering_exemption(exemptions, record.user, record.name, now) is not None:
            return
        raise QuotaExceeded(
            f"{record.name} has used up its running time ({format_duration(ran.total_seconds())} "
            f"of {limit:g} h over its runs). Re-create it (`container-remove {record.name}`, then "
            "`container-create`; your /workspace is kept), or ask an admin for an exemption."
        )

    def _check_can_start(self, record: ContainerRecord, aggregate: ResolvedAggregate) -> None:
        """The checks of ``create`` that a total changed since then can make fail."""
        cpus, total_cpus = label_cpus(record), aggregate.cpu_limit
        # cgroup v1 refuses a container CPU quota above its parent's (v2 takes the lower).
        if (
            self.cgroups.version == "v1"
            and cpus is not None
            and total_cpus is not None
            and cpus > total_cpus
        ):
            raise QuotaExceeded(
                f"{record.name} has a limit of {cpus:g} CPUs, more than your CPU total of "
                f"{total_cpus:g} CPUs across all your containers, so it cannot start here. "
                f"Re-create it with --cpus {total_cpus:g} or less."
            )
        if aggregate.memory_limit_bytes is not None:
            mine = [r for r in self.runtime.list_managed() if r.uid == record.uid]
            memory = label_size(record, L.MEMORY_BYTES)
            self._check_memory_total(aggregate, record.name, memory, mine)
        over = disk.refuse_start(self, record, aggregate.disk_limit_bytes, self.records)
        if over is not None:
            raise QuotaExceeded(over)

    def stop(self, caller: Caller, name: str, *, user: str | None = None) -> api.ContainerInfo:
        record = self._target(caller, name, user, "stop")
        if record.status != "running":
            return container_info(record).model_copy(update={"status": "stopped", "already": True})
        self.runtime.stop(record.docker_name, timeout_seconds=STOP_TIMEOUT_SECONDS)
        self.events.emit("container.stop", user=caller.name, resource=_resource(record))
        self.queue_changed()
        return container_info(record).model_copy(update={"status": "stopped"})

    def remove(
        self, caller: Caller, name: str, *, user: str | None = None, force: bool = False
    ) -> api.ContainerInfo:
        record = self._target(caller, name, user, "remove")
        if record.status == "running" and not force:
            raise Conflict(
                f"Container {record.name!r} is running. Stop it first with "
                f"`container-stop {record.name}`, or remove it anyway with --force."
            )
        self._remove_record(record, caller.name, force=force, details={"force": force})
        return container_info(record).model_copy(update={"status": "removed"})

    def retire(self, caller: Caller, name: str, request: api.RetireRequest) -> api.RetireResult:
        """Remove a container for good, freeing its devices at once; with ``keep_as``, first
        keep its filesystem (what the user installed) as an image of the owner's."""
        record = self._target(caller, name, request.user, "retire")
        kept = None
        if request.keep_as:
            kept = self._keep_as_image(caller, record, request.keep_as)
        self._remove_record(
            record, caller.name, force=True, details={"retired": True, "kept_as": kept}
        )
        info = container_info(record).model_copy(update={"status": "removed"})
        return api.RetireResult(container=info, kept_image=kept)

    def _keep_as_image(self, caller: Caller, record: ContainerRecord, keep_as: str) -> str:
        """Commit ``record`` into its owner's namespace, labelled theirs, its ds01 labels
        emptied (an image claims nothing of a container's)."""
        name, _, tag = keep_as.partition(":")
        target = build_target(record.user, record.uid, name, tag or None)
        existing = self.runtime.local_image(target.reference)
        if self.config().images.registry_image(target.reference) or (
            existing is not None and existing.owner() != record.user
        ):
            raise self.deny(
                caller,
                _resource(record),
                f"{target.reference} is a registry image or not one of {record.user}'s; "
                "keep it under another name.",
            )
        # What the image serves (ds01.jupyter.port) stays; what was this container's goes.
        emptied = {
            k: ""
            for k in record.labels
            if k.startswith((L.PREFIX, L.AIME_MLC)) and k != L.JUPYTER_PORT
        }
        reference = self.runtime.commit(
            record.docker_name,
            target.repository,
            target.tag,
            labels={**emptied, L.IMAGE_OWNER: record.user},
        )
        self.events.emit(
            "image.keep",
            user=caller.name,
            resource=f"image/{reference}",
            details={"container": record.name, "owner": record.user},
        )
        return reference

    def remove_by_daemon(self, record: ContainerRecord, *, reason: str) -> None:
        """Remove a container for the lifecycle's cleanup (``cleanup.orphan``)."""
        self._remove_record(record, "ds01d", force=True, details={"reason": reason})
        self.events.emit(
            "cleanup.orphan",
            user=record.user,
            resource=_resource(record),
            details={"reason": reason},
        )

    def stop_by_daemon(self, record: ContainerRecord, *, reason: str) -> None:
        """Stop a container for the lifecycle loop (idle or runtime limit)."""
        self.runtime.stop(record.docker_name, timeout_seconds=STOP_TIMEOUT_SECONDS)
        self.events.emit(
            "container.stop", user="ds01d", resource=_resource(record), details={"reason": reason}
        )
        self.queue_changed()

    def _remove_record(
        self, record: ContainerRecord, actor: str, *, force: bool, details: dict[str, object]
    ) -> None:
        """Remove ``record`` with what it leaves: devices, kept image, empty cgroup parent."""
        # No lock needed: freeing devices can never make two containers share one.
        released = record.id in self.store.released()
        self.runtime.remove(record.docker_name, force=force)
        self.staging.unstage(record.docker_name)
        if record.labels.get(L.KEPT_IMAGE):
            self.runtime.remove_image(record.labels[L.KEPT_IMAGE])
        self.events.emit(
            "container.remove", user=actor, resource=_resource(record), details=details
        )
        if record.gpus and not released:
            self.events.emit(
                "gpu.release",
                user=actor,
                resource=_resource(record),
                details={
                    "devices": list(record.gpus),
                    "gpu_equivalents": equivalents_to_float(record.gpu_equivalents),
                },
            )
        self._remove_parent_if_unused(record_parent(record))
        self._release_network_if_unused(record.uid)
        self.store.unrelease([record.id])
        self._stopped_since.pop(record.id, None)
        self.queue_changed()

    def onto_own_network(self, record: ContainerRecord) -> None:
        """Before a start: the owner's network guarded (gone with a reboot, or never guarded
        by this ds01d), and a container made before per-user networks moved onto it."""
        network = self.networks.ensure(record.uid)
        if record.status != "running" and record.networks not in ((), (network,)):
            leave = tuple(n for n in record.networks if n != network)
            self.runtime.move_to_network(record.docker_name, network, (record.name,), leave)
            self.events.emit(
                NETWORK_ACTION,
                user="ds01d",
                resource=_resource(record),
                details={"action": "move", "network": network, "left": list(leave)},
            )

    def _release_network_if_unused(self, uid: int) -> None:
        """Remove user ``uid``'s network once their last container is gone. Fails soft."""
        with self.allocation_lock:
            try:
                in_use = {r.uid for r in self.runtime.list_managed()}
            except Ds01Error as exc:
                log.warning("network of uid %d left for the next start: %s", uid, exc.message)
                return
            self.networks.release_if_unused(uid, in_use)

    def stopped_since(self, record: ContainerRecord) -> datetime | None:
        """When a stopped container stopped (Docker's ``FinishedAt``), asked once per stop."""
        if record.status != "stopped":
            self._stopped_since.pop(record.id, None)
            return None
        if record.id not in self._stopped_since:
            try:
                self._stopped_since[record.id] = self.runtime.finished_at(record.docker_name)
            except Ds01Error:
                return None
        return self._stopped_since[record.id]

    # -- start-up reconciliation --------------------------------------------------------

    def _settle_replacements(self) -> None:
        """Finish or undo a re-creation on other devices that a crash interrupted: the old
        container is removed if the new one exists, else it gets its name back."""
        records = self.runtime.list_managed()
        names = {r.docker_name for r in records}
        for record in records:
            if not record.docker_name.endswith(L.REPLACED_SUFFIX):
                continue
            original = record.docker_name[: -len(L.REPLACED_SUFFIX)]
            if original in names:
                self.runtime.remove(record.docker_name, force=True, missing_ok=True)
            else:
                self.runtime.rename(record.docker_name, original)
            log.warning("settled the interrupted re-creation of %s", original)

    def _rolled_back(self, intent: CreateIntent, reason: str) -> None:
        """The audit event of a half-made container removed for its create ``intent``."""
        self.events.emit(
            "container.create",
            user=intent.user,
            resource=f"container/{intent.docker_name}",
            details={"reason": reason},
            outcome="rolled_back",
        )

    def reconcile(self, settle_seconds: float = 1.5) -> list[str]:
        """Remove containers whose create never finished; return their Docker names.

        An intent left in the store means ds01d died between recording the create and
        confirming it. Docker may still be finishing that create, so an intent whose
        container is not there yet is looked at again for ``settle_seconds``.
        """
        removed: list[str] = []
        self._settle_replacements()
        pending = self.store.intents()
        deadline = time.monotonic() + settle_seconds
        while pending:
            by_name = {r.docker_name: r for r in self.runtime.list_managed()}
            still: list[CreateIntent] = []
            for intent in pending:
                record = by_name.get(intent.docker_name)
                if record is not None and record.request_id == intent.request_id:
                    self.runtime.remove(record.docker_name, force=True, missing_ok=True)
                    removed.append(record.docker_name)
                    self._rolled_back(intent, "daemon stopped before the create completed")
                    self.store.remove_intent(intent.request_id)
                elif time.monotonic() < deadline:
                    still.append(intent)
                else:
                    self.store.remove_intent(intent.request_id)
            pending = still
            if pending:
                time.sleep(0.1)
        self.reconcile_staging()
        return removed

    def reconcile_staging(self) -> list[str]:
        """At start: unmount and remove the staging directories of containers that are gone
        (they are this instance's: the tree lies in its state directory). Returns them."""
        with self.allocation_lock:
            existing = {r.docker_name for r in self.runtime.list_managed()}
            gone = sorted(self.staging.staged() - existing)
            for container in gone:
                self.staging.unstage(container)
        if gone:
            log.info("removed the bind staging of %d removed container(s)", len(gone))
        return gone

    # -- helpers ----------------------------------------------------------------------------

    def _refused(self, caller: Caller, resource: str, exc: PolicyError) -> None:
        action = "auth.denied" if isinstance(exc, PermissionDenied) else "container.create"
        self.log_refusal(caller, action, resource, exc)

    def _target(self, caller: Caller, name: str, user: str | None, verb: str) -> ContainerRecord:
        """Find the container a request names and check the caller may act on it.

        ``name`` is the user's name for it, the Docker name ``{name}._.{uid}``, or a Docker
        id (or id prefix, 12+ hex digits). Every refusal is logged.
        """
        try:
            return self._find_target(caller, name, user, verb)
        except (InvalidInput, NotFound) as exc:
            self.log_refusal(caller, f"container.{verb}", f"container/{name[:80]}", exc)
            raise

    def _find_target(
        self, caller: Caller, name: str, user: str | None, verb: str
    ) -> ContainerRecord:
        if L.CONTAINER_NAME_SEPARATOR in name:
            docker_name = name
            base, _, uid_text = name.rpartition(L.CONTAINER_NAME_SEPARATOR)
            validate_container_name(base)
            if not (uid_text.isascii() and uid_text.isdigit()):
                raise InvalidInput(f"Invalid container reference {shown(name)}.")
            owner_uid = int(uid_text)
            if user is not None:
                raise InvalidInput("Give either a full container name or --user, not both.")
            record = self.runtime.find_managed(docker_name)
        elif DOCKER_ID_RE.match(name) and user is None:
            record = self.runtime.find_managed(L.container_name(name, caller.uid))
            if record is None:
                record = self.runtime.find_managed_by_id(name)
            owner_uid = record.uid if record is not None else caller.uid
            docker_name = record.docker_name if record is not None else name
        else:
            validate_container_name(name)
            owner_uid = self._subject(caller, user).uid
            docker_name = L.container_name(name, owner_uid)
            record = None
        if owner_uid != caller.uid and not caller.is_admin:
            raise self.deny(
                caller,
                f"container/{docker_name}",
                f"You may not {verb} {shown(name)}: it belongs to another user.",
                verb=verb,
            )
        record = record or self.runtime.find_managed(docker_name)
        if record is not None:
            return record
        raise NotFound(
            f"No container named {shown(name)}"
            + (f" for user {user}" if user else "")
            + ". `container-list` shows yours."
        )

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
        image = self.runtime.local_image(ref)
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

    def _workspace(self, user: UnixUser, requested: str | None) -> Path:
        if requested:
            return self._owned_directory(user, requested, "--workspace")
        path = user.home / DEFAULT_WORKSPACE_DIR
        if not os.path.lexists(path):
            make_user_directory(path, user)
        return self._owned_directory(user, str(path), "workspace")

    def _owned_directory(self, user: UnixUser, requested: str, what: str) -> Path:
        """Resolve a host directory (symlinks included) and check the user owns it."""
        if "\0" in requested or len(requested) > MAX_PATH_LENGTH:
            raise InvalidInput(f"{what} is not a usable path.")
        path = Path(requested)
        if not path.is_absolute():
            raise InvalidInput(f"{what} must be an absolute path, got {shown(requested)}.")
        try:
            real = path.resolve(strict=True)
            st = real.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise InvalidInput(f"{what} {shown(requested)} does not exist.") from exc
        except (OSError, ValueError) as exc:  # too long, a loop of symlinks, …
            raise InvalidInput(f"{what} {shown(requested)} cannot be used: {_why(exc)}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidInput(f"{what} {shown(requested)} is not a directory.")
        if real == Path("/") or (st.st_uid != user.uid and user.uid != 0):
            raise PermissionDenied(
                f"{what} {shown(requested)} (resolves to {shown(str(real))}) is not a "
                "directory you own; "
                "only your own directories can be mounted."
            )
        return real

    def _spec(
        self, prepared: PreparedCreate, placement: Placement, inventory: Inventory, request_id: str
    ) -> ContainerSpec:
        owner, resources, name = prepared.owner, prepared.resources, prepared.name
        workspace, data = prepared.workspace, prepared.data
        uuids = placement.uuids
        visible = ",".join(uuids) if uuids else "void"
        labels = L.ContainerLabels(
            user=owner.name,
            uid=owner.uid,
            group=prepared.group,
            name=name,
            gpus=uuids,
            gpu_equivalents=placement.gpu_equivalents,
            created_at=self._clock().isoformat(timespec="seconds"),
            interface=prepared.interface,
            image=prepared.requested_image,
            request_id=request_id,
            memory_bytes=resources.memory_bytes,
            cpus=resources.cpus,
            disk_bytes=resources.disk_bytes,
            ports=prepared.ports,
            kept_image=prepared.kept_image,
            jupyter_port=prepared.jupyter_port,
            jupyter_token=prepared.jupyter_token,
            workspace=str(workspace),
            data=str(data) if data else None,
            framework=prepared.framework,
            visible_devices=visible,
        ).as_dict()
        # Docker binds the staging paths; ``launch`` mounts the owner's directories there.
        binds = [(CONTAINER_WORKSPACE, workspace)] + ([(CONTAINER_DATA, data)] if data else [])
        mounts = [
            (str(self.staging.prepare(prepared.docker_name, inside.strip("/"))), inside)
            for inside, _ in binds
        ]
        through_toolkit = inventory.backend == "nvml"
        return ContainerSpec(
            docker_name=prepared.docker_name,
            image=prepared.image_ref,
            user=f"{owner.uid}:{owner.gid}",
            hostname=name,
            labels=labels,
            environment={
                "NVIDIA_VISIBLE_DEVICES": visible,
                "CUDA_VISIBLE_DEVICES": visible,
                "HOME": CONTAINER_WORKSPACE,
                "USER": owner.name,
                "DS01_CONTAINER": name,
                **({L.JUPYTER_TOKEN_ENV: prepared.jupyter_token} if prepared.jupyter_token else {}),
            },
            mounts=tuple(mounts),
            cgroup_parent=cgroup_parent(prepared.group, owner.name, self.engine.cgroup_driver),
            cpus=resources.cpus,
            memory_bytes=resources.memory_bytes,
            shm_size_bytes=resources.shm_size_bytes,
            pids_limit=resources.pids_limit,
            storage_size_bytes=resources.disk_bytes if self.storage.mode == "enforced" else None,
            rotating_log_driver=self.engine.logging_driver
            if self.engine.logging_driver in ROTATING_LOG_DRIVERS
            else None,
            gpu_uuids=uuids if through_toolkit else (),
            device_nodes=() if through_toolkit else _device_nodes(placement.devices),
            stop_signal=_stop_signal(prepared.image_command),
            ports=prepared.ports,
        )


def _requested_ports(requested: list[api.PortRequest]) -> tuple[tuple[int, int | None], ...]:
    """(container port, host port) pairs; each port at most once on either side."""
    container_ports = [p.container_port for p in requested]
    host_ports = [p.host_port for p in requested if p.host_port is not None]
    for ports, side in ((container_ports, "container"), (host_ports, "host")):
        repeated = sorted({p for p in ports if ports.count(p) > 1})
        if repeated:
            raise InvalidInput(f"{side.capitalize()} port {repeated[0]} is published twice.")
    return tuple((p.container_port, p.host_port) for p in requested)


def _stop_signal(command: tuple[str, ...]) -> str | None:
    """SIGHUP for images whose command is a bare shell: interactive shells ignore SIGTERM,
    so `container-stop` would otherwise wait for the kill timeout."""
    if len(command) == 1 and Path(command[0]).name in SHELLS:
        return "SIGHUP"
    return None


def _device_nodes(devices: tuple[Device, ...]) -> tuple[str, ...]:
    """``--device`` entries for simulated GPUs that have a stand-in device node."""
    nodes: dict[str, str] = {}
    for device in devices:
        if device.device_node:
            nodes[device.device_node] = f"/dev/nvidia{device.gpu_index}"
    return tuple(f"{host}:{inside}:rwm" for host, inside in sorted(nodes.items()))


def _resources(
    limits: ResolvedLimits,
    request: api.CreateContainerRequest,
    host_cpus: int,
    aggregate: ResolvedAggregate | None = None,
) -> _Resources:
    """Per-container resources: the request if within the quota, else a refusal (never trimmed).

    The CPU quota is a ceiling; on a host with fewer cores the default is all of them. The
    user's totals (``aggregate``) are ceilings too: a default never exceeds them, and a
    request for more CPUs than the total is refused (cgroup v1 cannot start a container whose
    CPU limit is above its parent's). Whether the memory fits next to the user's other
    containers is checked under the allocation lock.
    """

    def bounded(
        label: str, asked: float | None, limit: float | None, fmt: Callable[[float], str]
    ) -> float | None:
        if asked is None:
            return limit
        if limit is not None and asked > limit:
            raise QuotaExceeded(
                f"Requested {label} {fmt(asked)} is above your limit of {fmt(limit)} per "
                f"container. Ask for at most {fmt(limit)} (see `check-limits`)."
            )
        return asked

    def size(value: str | None, label: str) -> int | None:
        if value is None:
            return None
        try:
            parsed = parse_bytes(value)
        except ValueError as exc:
            raise InvalidInput(f"Invalid {label} {shown(value)}: {_why(exc)}") from exc
        if parsed < MIN_MEMORY_BYTES:  # 0 would mean "no limit" to Docker
            raise InvalidInput(f"{label} {shown(value)} is too small: at least 6M.")
        return parsed

    def as_bytes(x: float) -> str:
        return format_bytes(int(x))

    def as_cpus(x: float) -> str:
        return f"{x:g} CPUs"

    cpus = bounded("CPUs", request.cpus, limits.cpu_limit, as_cpus)
    if request.cpus is not None and request.cpus > host_cpus:
        raise NoCapacity(f"This machine has {host_cpus} CPUs; ask for at most {host_cpus}.")
    total_cpus = aggregate.cpu_limit if aggregate is not None else None
    if total_cpus is not None:
        if request.cpus is not None and request.cpus > total_cpus:
            raise QuotaExceeded(
                f"Requested {as_cpus(request.cpus)} is above your CPU total of "
                f"{as_cpus(total_cpus)} across all your containers. Ask for at most "
                f"{as_cpus(total_cpus)} (see `check-limits`)."
            )
        cpus = total_cpus if cpus is None else min(cpus, total_cpus)
    if cpus is not None:
        cpus = min(cpus, float(host_cpus))
    memory = bounded(
        "memory", size(request.memory, "--memory"), limits.memory_limit_bytes, as_bytes
    )
    total_memory = aggregate.memory_limit_bytes if aggregate is not None else None
    if request.memory is None and total_memory is not None:
        memory = total_memory if memory is None else min(memory, total_memory)
    shm = bounded(
        "shared memory", size(request.shm_size, "--shm-size"), limits.shm_size_bytes, as_bytes
    )
    disk_size = bounded("disk", size(request.disk, "--disk"), limits.disk_limit_bytes, as_bytes)
    total_disk = aggregate.disk_limit_bytes if aggregate is not None else None
    if total_disk is not None:
        if request.disk is not None and disk_size is not None and disk_size > total_disk:
            raise QuotaExceeded(
                f"Requested disk {as_bytes(disk_size)} is above your disk total of "
                f"{as_bytes(total_disk)} across all your containers. Ask for at most "
                f"{as_bytes(total_disk)} (see `check-limits`)."
            )
        disk_size = total_disk if disk_size is None else min(disk_size, total_disk)
    return _Resources(
        cpus=cpus,
        memory_bytes=int(memory) if memory is not None else None,
        shm_size_bytes=int(shm) if shm is not None else None,
        pids_limit=limits.pids_limit,
        disk_bytes=int(disk_size) if disk_size is not None else None,
    )


def make_user_directory(path: Path, user: UnixUser) -> None:
    """Create ``path`` *as* ``user`` (so it is theirs without a ``chown`` by root), its parent
    reached without following symlinks (``ds01.runtime.userfs``); nothing if it exists.

    Raises:
        PermissionDenied: the user cannot create it (their home is not writable to them, or
            a symlink is on the way); the message says what to do instead.
    """
    try:
        make_directory(path, UserIds.of(user.name, user.uid, user.gid), mode=0o755)
    except OSError as exc:
        raise PermissionDenied(
            f"ds01 could not create {path} as {user.name}: {exc.strerror or exc}. Create it "
            f"yourself (`mkdir {path}`), or name a directory of yours with --workspace."
        ) from None


def _resource(record: ContainerRecord) -> str:
    return f"container/{record.docker_name}"


__all__ = [
    "Ds01Service",
    "cgroup_parent",
    "format_equivalents",
    "memory_total_refusal",
    "record_parent",
    "slice_part",
]


def _why(exc: BaseException) -> str:
    """An exception's reason for a message, without echoing a long input it quotes."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return clip(reason, 2 * SHOWN_INPUT_CHARS)
