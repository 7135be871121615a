"""Everything one scrape reports, gathered in one pass (``Snapshotter.take``).

One scrape costs, whatever the number of containers: at most one Docker list call
(``observed_records()``: none while Docker reports no change to any container), one GPU
inventory and one telemetry call for all devices and GPUs, one read each of the waiting
queue and the reservations from SQLite, the event log's health, and the counters kept in
memory (``ActivityCounters``, the energy meter's totals). Limits are resolved once per user
and configuration (and again after ``QUOTA_CACHE_SECONDS``, for Unix group changes), never
once per container. The snapshot is plain data; ``ds01.metrics.collector`` turns it into
metric families.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Protocol

from ds01 import __version__
from ds01.config.loader import Ds01Config
from ds01.config.resolve import resolve_aggregate, resolve_limits
from ds01.core.gpu_use import UnmanagedUse
from ds01.errors import Ds01Error
from ds01.gpu.backend import DeviceTelemetry, GpuBackend, device_telemetry
from ds01.metrics.activity import Activity, ActivityCounters
from ds01.model import labels as L
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser, user_by_uid

log = logging.getLogger(__name__)

#: Container states always reported (0 when none), besides any other state Docker gives.
CONTAINER_STATES = ("running", "stopped", "created", "paused", "restarting")
#: Quota resources of ``ds01_quota_use_ratio``.
QUOTA_RESOURCES = ("gpu_equivalents", "containers", "memory")
#: Resolved limits are kept this long (seconds) even when the configuration is unchanged,
#: so that a user's new Unix groups count without a reload.
QUOTA_CACHE_SECONDS = 300.0


class WaitingRequest(Protocol):
    """A request waiting in the GPU queue; ``submitted_at``: ISO 8601."""

    @property
    def submitted_at(self) -> str: ...


class StoredReservation(Protocol):
    """A reservation as the snapshot reads it: times ISO 8601, ``gpu_equivalents`` an exact
    fraction as text (``"3/7"``)."""

    @property
    def start(self) -> str: ...

    @property
    def end(self) -> str: ...

    @property
    def gpu_equivalents(self) -> str: ...


class WaitingQueue(Protocol):
    """The GPU queue and the reservations as the snapshot reads them (ds01d's store)."""

    def queued(self) -> Sequence[WaitingRequest]: ...

    def reservations(self) -> Sequence[StoredReservation]: ...


class AuditLogHealth(Protocol):
    """The event log as the snapshot reads it: ``health()["writable"]``."""

    def health(self) -> Mapping[str, object]: ...


class MetricsSource(Protocol):
    """What the snapshot reads, and all it reads, of ds01d: its service satisfies it (or a
    stand-in in tests and benchmarks). Every member is read from the scrape's thread, so
    each must be safe to call while ds01d serves requests."""

    @property
    def store(self) -> WaitingQueue: ...

    @property
    def events(self) -> AuditLogHealth: ...

    @property
    def lifecycle_last_pass(self) -> datetime | None: ...

    @property
    def backend(self) -> GpuBackend: ...

    @property
    def unmanaged_gpu_use(self) -> Sequence[UnmanagedUse]: ...

    def config(self) -> Ds01Config: ...

    def observed_records(self) -> list[ContainerRecord]: ...

    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Holder:
    """A device and the container holding it (``container`` is ``""`` unless the exporter
    names containers: ``--metrics-container-names``)."""

    uuid: str
    user: str
    group: str
    container: str


@dataclass(frozen=True)
class UserQuota:
    """The limits a user's quota ratios are taken against; ``None``: unlimited."""

    gpu_limit: float | None
    max_containers: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape's worth of state (see ``ds01.metrics.collector`` for the metrics).

    ``records_ok`` is ``False`` when Docker could not be listed: the container-derived
    figures (holders, allocations, containers, quotas) are then left out rather than
    reported as zero.
    """

    version: str
    taken_at: float  # unix time
    devices: Sequence[Device]
    gpus: Sequence[PhysicalGpu]
    total_gpu_equivalents: float
    records_ok: bool
    holders: Sequence[Holder]
    allocated: Mapping[tuple[str, str], float]  # (user, group) -> GPU-equivalents
    containers_by_state: Mapping[str, int]
    queue_length: int
    queue_oldest_wait_seconds: float
    activity: Activity
    lifecycle_last_pass: float | None  # unix time
    quota_ratios: Mapping[tuple[str, str], float]  # (user, resource) -> use / limit
    telemetry: Mapping[str, DeviceTelemetry]  # by device or GPU UUID
    energy_joules: Mapping[tuple[str, str], float]  # (user, group) -> J in the ledger
    grid_intensity_g_per_kwh: float
    audit_log_writable: bool
    inventory_message: str | None = field(default=None)
    #: Processes outside ds01's allocation by device UUID (the GPU use watch's last pass).
    unmanaged: Mapping[str, int] = field(default_factory=dict)
    #: Reservations not cancelled by phase (``upcoming``, ``active``; ended ones left out).
    reservations: Mapping[str, int] = field(default_factory=dict)
    #: GPU-equivalents under a reservation in force.
    reserved_gpu_equivalents: float = 0.0
    #: (user, group) -> GPU-equivalents held by borrowed containers (above ``gpu_limit``).
    borrowed: Mapping[tuple[str, str], float] = field(default_factory=dict)
    #: (user, group) -> their ds01 containers, any state.
    user_containers: Mapping[tuple[str, str], int] = field(default_factory=dict)


def holders_of(
    records: Sequence[ContainerRecord], *, container_names: bool = False
) -> list[Holder]:
    """One row per device a container holds. The container's name (as its user sees it)
    only with ``container_names``: any local user can read the exporter, and ``gpu-status``
    shows other users' container names to admins only."""
    return [
        Holder(uuid, r.user, r.group, r.name if container_names else "")
        for r in records
        for uuid in r.gpus
    ]


def unmanaged_by_device(uses: Sequence[UnmanagedUse]) -> dict[str, int]:
    """How many processes use each device outside ds01's allocation."""
    counts: dict[str, int] = {}
    for use in uses:
        counts[use.device_uuid] = counts.get(use.device_uuid, 0) + 1
    return counts


def allocated_by_user(records: Sequence[ContainerRecord]) -> dict[tuple[str, str], float]:
    """GPU-equivalents held per (user, group), summed exactly; users with containers and
    none held: 0."""
    totals: dict[tuple[str, str], Fraction] = {}
    for record in records:
        key = (record.user, record.group)
        totals[key] = totals.get(key, Fraction(0)) + record.gpu_equivalents
    return {key: float(total) for key, total in totals.items()}


def borrowed_by_user(records: Sequence[ContainerRecord]) -> dict[tuple[str, str], float]:
    """GPU-equivalents held by borrowed containers per (user, group): only the users who
    borrow some."""
    return allocated_by_user([r for r in records if r.gpus and L.borrowed_of(r.labels)])


def reservations_by_phase(
    rows: Sequence[StoredReservation], now: datetime
) -> tuple[dict[str, int], float]:
    """How many reservations are upcoming and active at ``now``, and the GPU-equivalents the
    active ones keep."""
    counts = {"upcoming": 0, "active": 0}
    kept = Fraction(0)
    for row in rows:
        start, end = _parse(row.start), _parse(row.end)
        if now < start:
            counts["upcoming"] += 1
        elif now < end:
            counts["active"] += 1
            kept += Fraction(row.gpu_equivalents)
    return counts, float(kept)


def containers_by_user(records: Sequence[ContainerRecord]) -> dict[tuple[str, str], int]:
    """Containers per (user, group), any state; only users who have some."""
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        key = (record.user, record.group)
        counts[key] = counts.get(key, 0) + 1
    return counts


def containers_by_state(records: Sequence[ContainerRecord]) -> dict[str, int]:
    counts = dict.fromkeys(CONTAINER_STATES, 0)
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


def quota_ratios(
    records: Sequence[ContainerRecord], quotas: Mapping[int, UserQuota]
) -> dict[tuple[str, str], float]:
    """Use over limit per (user, resource), for users with containers and a finite limit.

    ``gpu_equivalents``: GPU-equivalents held / ``gpu_limit``; ``containers``: containers
    (any state) / ``max_containers``; ``memory``: the memory limits of the containers that
    are not stopped (one without a limit counts as the whole total, as at admission) /
    ``aggregate.memory_limit``. A limit of 0 gives no ratio.
    """
    by_uid: dict[int, list[ContainerRecord]] = {}
    for record in records:
        by_uid.setdefault(record.uid, []).append(record)
    ratios: dict[tuple[str, str], float] = {}
    for uid, mine in by_uid.items():
        quota = quotas.get(uid)
        if quota is None:
            continue
        user = mine[0].user
        if quota.gpu_limit:
            held = sum((r.gpu_equivalents for r in mine), Fraction(0))
            ratios[(user, "gpu_equivalents")] = float(held) / quota.gpu_limit
        if quota.max_containers:
            ratios[(user, "containers")] = len(mine) / quota.max_containers
        if quota.memory_total_bytes:
            total = quota.memory_total_bytes
            sizes = [L.size_of(r.labels, L.MEMORY_BYTES) for r in mine if r.status != "stopped"]
            committed = sum(total if size is None else size for size in sizes)
            ratios[(user, "memory")] = committed / total
    return ratios


class Snapshotter:
    """Takes snapshots of ``source`` (see the module docstring).

    Args:
        source: the daemon's service.
        activity: the counters fed by the event log.
        energy_totals: joules in the energy ledger by (user, group) (the energy meter's
            ``totals``).
        container_names: whether holders name their containers (off by default: see
            ``holders_of``).
        user_lookup: a user's name and groups by uid (NSS; injected by tests).
        monotonic: seconds for the quota cache's age.
    """

    def __init__(
        self,
        source: MetricsSource,
        activity: ActivityCounters,
        energy_totals: Callable[[], Mapping[tuple[str, str], float]],
        *,
        container_names: bool = False,
        user_lookup: Callable[[int], UnixUser] = user_by_uid,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.container_names = container_names
        self.activity = activity
        self.energy_totals = energy_totals
        self._user_lookup = user_lookup
        self._monotonic = monotonic
        self._quota_lock = threading.Lock()  # scrapes may run at once
        self._quota_config: Ds01Config | None = None
        self._quota_since = 0.0
        self._quotas: dict[int, UserQuota | None] = {}

    def take(self) -> MetricsSnapshot:
        source = self.source
        config = source.config()
        now = source.now()
        backend = source.backend
        inventory = self._inventory(backend)
        try:
            records: list[ContainerRecord] | None = source.observed_records()
        except Ds01Error as exc:
            log.warning("metrics without containers: %s", exc.message)
            records = None
        uuids = {d.uuid for d in inventory.devices} | {g.uuid for g in inventory.gpus}
        telemetry = device_telemetry(backend, uuids)
        waiting = source.store.queued()
        oldest = min((_parse(r.submitted_at) for r in waiting), default=None)
        last_pass = source.lifecycle_last_pass
        reserved, reserved_equivalents = reservations_by_phase(source.store.reservations(), now)
        rows = records or []
        return MetricsSnapshot(
            version=__version__,
            taken_at=now.timestamp(),
            devices=inventory.devices,
            gpus=inventory.gpus,
            total_gpu_equivalents=float(inventory.total_gpu_equivalents),
            records_ok=records is not None,
            holders=holders_of(rows, container_names=self.container_names),
            allocated=allocated_by_user(rows),
            containers_by_state=containers_by_state(rows),
            queue_length=len(waiting),
            queue_oldest_wait_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
            activity=self.activity.snapshot(),
            lifecycle_last_pass=None if last_pass is None else last_pass.timestamp(),
            quota_ratios=quota_ratios(rows, self._quotas_for(config, rows)),
            telemetry=telemetry,
            energy_joules=self.energy_totals(),
            grid_intensity_g_per_kwh=config.gpus.energy.grid_intensity_g_per_kwh,
            audit_log_writable=bool(source.events.health()["writable"]),
            inventory_message=inventory.message,
            unmanaged=unmanaged_by_device(source.unmanaged_gpu_use),
            reservations=reserved,
            reserved_gpu_equivalents=reserved_equivalents,
            borrowed=borrowed_by_user(rows),
            user_containers=containers_by_user(rows),
        )

    def _inventory(self, backend: GpuBackend) -> Inventory:
        try:
            return backend.inventory()
        except Ds01Error as exc:
            log.warning("metrics without GPUs: %s", exc.message)
            return Inventory(backend=backend.name, gpus=(), devices=(), message=exc.message)

    def _quotas_for(
        self, config: Ds01Config, records: Sequence[ContainerRecord]
    ) -> dict[int, UserQuota]:
        """Each container owner's limits, resolved once per configuration (see above)."""
        with self._quota_lock:
            return self._cached_quotas(config, records)

    def _cached_quotas(
        self, config: Ds01Config, records: Sequence[ContainerRecord]
    ) -> dict[int, UserQuota]:
        clock = self._monotonic()
        if config is not self._quota_config or clock - self._quota_since > QUOTA_CACHE_SECONDS:
            self._quota_config, self._quota_since, self._quotas = config, clock, {}
        quotas: dict[int, UserQuota] = {}
        for uid in {r.uid for r in records}:
            if uid not in self._quotas:
                self._quotas[uid] = self._resolve(config, uid)
            quota = self._quotas[uid]
            if quota is not None:
                quotas[uid] = quota
        return quotas

    def _resolve(self, config: Ds01Config, uid: int) -> UserQuota | None:
        try:
            user = self._user_lookup(uid)
        except Ds01Error:
            return None  # a container of a user who no longer exists: no quota to show
        limits = resolve_limits(config.limits, user.name, user.groups)
        aggregate = resolve_aggregate(config.limits, user.name, user.groups)
        return UserQuota(
            gpu_limit=limits.gpu_limit,
            max_containers=limits.max_containers,
            memory_total_bytes=aggregate.memory_limit_bytes,
        )


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


__all__ = [
    "CONTAINER_STATES",
    "QUOTA_CACHE_SECONDS",
    "QUOTA_RESOURCES",
    "AuditLogHealth",
    "Holder",
    "MetricsSnapshot",
    "MetricsSource",
    "Snapshotter",
    "UserQuota",
    "WaitingQueue",
    "WaitingRequest",
    "allocated_by_user",
    "borrowed_by_user",
    "containers_by_state",
    "containers_by_user",
    "holders_of",
    "quota_ratios",
    "reservations_by_phase",
    "unmanaged_by_device",
]
