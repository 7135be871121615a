"""``DaemonContext``: what ds01d's collaborators share, and the one lock rule.

The service is split by responsibility into collaborators (``containers``, ``creation``,
``reacquire``, ``queue_desk``, ``limits_enforcement``, ``launch``, ``access``,
``reconcile``, ``views``); each gets this context and nothing of the others it does not
name in its own contract.

The allocation lock
-------------------

``allocation_lock`` is the one lock of ds01's decisions. It is held around every step that
reads which devices, ports, cgroup totals or queue places are taken and then takes one:
list the containers (``records()``), decide (``ds01.core``), create or start the container
in Docker, record it. So two decisions never see the same free device. Rules:

1. A method whose contract says *under the allocation lock* must be called with the lock
   held; it never takes it itself (the lock is not re-entrant).
2. A method that says *takes the allocation lock* must be called without it.
3. Freeing (remove, stop) needs no lock: it can never make two containers share a device.
4. Nothing slow that does not decide (measuring, waiting for a client, an image build) runs
   under it.
5. ``queue_condition`` and ``lifecycle_condition`` are never held while taking the
   allocation lock.

Containers
----------

``records()`` is the one place that lists ds01's containers for decisions; a caller that
decides holds the allocation lock around it and the decision. It reads the container ledger
(``ds01.daemon.ledger``): no Docker call while the ledger follows Docker's events, a full
list while it does not. ``observed_records()`` is for observers (metrics, the dashboard).
Devices given back after a stop (``gpu_hold_after_stop_minutes``) are shown as held by
nobody in both.
"""

from __future__ import annotations

import grp
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from fractions import Fraction

from ds01.config.loader import Ds01Config
from ds01.config.resolve import ResolvedAggregate, ResolvedLimits, resolve_aggregate, resolve_limits
from ds01.daemon.accounts import OwnerAccounts
from ds01.daemon.config_watch import ConfigWatcher
from ds01.daemon.identity import Caller
from ds01.daemon.ledger import ContainerLedger
from ds01.daemon.networks import UserNetworks, instance_id
from ds01.daemon.paths import DaemonPaths
from ds01.daemon.status import DaemonStatus
from ds01.errors import Ds01Error, PermissionDenied
from ds01.events.log import EventLog, utc_now
from ds01.gpu.backend import GpuBackend, make_backend
from ds01.model import labels as L
from ds01.paths import slurm_node
from ds01.runtime.cgroups import DEFAULT_ROOT, CgroupManager
from ds01.runtime.docker import ContainerRecord, DockerRuntime, EngineInfo
from ds01.runtime.firewall import Firewall
from ds01.runtime.identity import UnixUser, member_uids
from ds01.runtime.notify import notify_terminals
from ds01.runtime.staging import STAGING_DIR, MountStaging
from ds01.runtime.store import StateStore

log = logging.getLogger(__name__)

#: Seconds ds01d keeps what it learnt from NSS of who is a hub identity (``hub:`` in
#: resource-limits.yaml): a caller's being one (at accept), and the uids the firewall lets
#: into every user's bridge (``DaemonContext.hub_uids``).
HUB_LOOKUP_TTL_S = 60.0


def configured_backend(config: Ds01Config) -> GpuBackend:
    """The GPU backend ``gpu-config.yaml`` names."""
    return make_backend(config.gpus)


@dataclass(frozen=True)
class DaemonDependencies:
    """What ds01d is given rather than builds (injected so tests can pass fakes).

    Attributes:
        paths: where configuration, state and logs live.
        runtime: the Docker adapter.
        store: the SQLite state store.
        events: the event log.
        backend_factory: builds the GPU backend from ``gpu-config.yaml`` (tests pass a
            simulated backend with a telemetry file).
        clock: returns the current UTC time.
        cgroups: writes aggregate limits on users' cgroup parents (default: the host's
            ``/sys/fs/cgroup`` with the engine's cgroup driver).
        firewall: the host firewall that guards users' networks (default: ``iptables``).
        ledger: ds01's containers as Docker says (default: a ledger not yet started, which
            lists at every read).
        slurm_node: in cluster mode, this node's Slurm name (default: the host's short name,
            ``ds01.paths.slurm_node``).
    """

    paths: DaemonPaths
    runtime: DockerRuntime
    store: StateStore
    events: EventLog
    backend_factory: Callable[[Ds01Config], GpuBackend] = configured_backend
    clock: Callable[[], datetime] = utc_now
    cgroups: CgroupManager | None = None
    firewall: Firewall | None = None
    ledger: ContainerLedger | None = None
    slurm_node: str | None = None
    #: The engine's facts, when the caller already asked Docker for them.
    engine: EngineInfo | None = None


class DaemonContext:
    """The state ds01d's collaborators share (see the module docstring for the lock rule).

    Attributes, all set once here and never replaced:
        paths, runtime, store, events: where things live, Docker, the SQLite state, the
            audit log.
        ledger: ds01's containers as Docker last said (``ContainerLedger``). Whoever changes
            a container in Docker (create, start, stop, rename, network move, remove) tells
            the ledger at once (``refresh``/``forget``), before releasing the allocation
            lock if it holds it, so the next decision sees the change.
        allocation_lock: the lock of every allocation decision.
        queue_condition: notified whenever the queue or the devices held may have changed
            (``queue_changed``).
        lifecycle_condition: notified when a reservation is made or cancelled
            (``reservations_changed``): the lifecycle loop's wait, computed before, may be
            too long for it.
        settings: the configuration (``config()``, ``backend``).
        engine, cgroups: the Docker engine's facts and the users' cgroup parents.
        staging, accounts, networks: bind staging, owner accounts in containers, per-user
            networks.
        status: the loops' latest word (``DaemonStatus``; one writer per field).
        slurm_node: this node's Slurm name (cluster mode).

    Built from ``DaemonDependencies``. Thread-safe: every method may be called from any
    thread, with or without the allocation lock unless it says otherwise.
    """

    def __init__(self, given: DaemonDependencies) -> None:
        paths, runtime, events = given.paths, given.runtime, given.events
        self.paths = paths
        self.runtime = runtime
        # The managed containers (one that is not started lists at every read).
        self.ledger = given.ledger or ContainerLedger(runtime)
        self.store = given.store
        self.events = events
        self._clock = given.clock
        self.allocation_lock = threading.Lock()
        self.queue_condition = threading.Condition()
        self.lifecycle_condition = threading.Condition()
        self.status = DaemonStatus(started_at=given.clock())
        self.settings = ConfigWatcher(paths.config_dir, events, given.backend_factory)
        self.settings.on_admin_group_changed = self.share_log_with_admins
        self.engine = given.engine or runtime.engine_info()
        self.cgroups = given.cgroups or CgroupManager(DEFAULT_ROOT, self.engine.cgroup_driver)
        # Bind sources, opened without following symlinks and mounted where only root reaches.
        self.staging = MountStaging(paths.state_dir / STAGING_DIR)
        self.accounts = OwnerAccounts(runtime)
        # (the hub section looked up, when the lookup expires, the uids found)
        self._hub_uids: tuple[object, float, tuple[int, ...]] = (None, 0.0, ())
        self.networks = UserNetworks(
            runtime,
            given.firewall or Firewall(),
            events,
            instance_id(paths.state_dir),
            self.hub_uids,
            lambda: self.config().limits.hub.emptied_network_keep_seconds(),
        )
        self.slurm_node = given.slurm_node or slurm_node()

    # -- time, configuration ----------------------------------------------------------------

    def now(self) -> datetime:
        """The service's clock (UTC)."""
        return self._clock()

    def config(self) -> Ds01Config:
        """The current configuration (``ConfigWatcher.config``)."""
        return self.settings.config()

    def hub_uids(self, *, renew: bool = False) -> tuple[int, ...]:
        """The uids of the hub identities the configuration names (``hub:``: its users and
        the members of its groups, ``member_uids``), for the firewall; looked up in NSS
        again when the configuration changed, after ``HUB_LOOKUP_TTL_S``, or with
        ``renew`` (a name NSS does not know is left out)."""
        hub = self.config().limits.hub
        seen, expires, uids = self._hub_uids
        now = time.monotonic()
        if renew or seen is not hub or now >= expires:
            uids = member_uids(hub.users, hub.unix_groups)
            self._hub_uids = (hub, now + HUB_LOOKUP_TTL_S, uids)
        return uids

    @property
    def backend(self) -> GpuBackend:
        """The GPU backend of the current configuration."""
        return self.settings.backend

    def limits_for(self, user: UnixUser) -> ResolvedLimits:
        return resolve_limits(self.config().limits, user.name, user.groups)

    def gpu_limits(
        self,
        records: Iterable[ContainerRecord],
        owner_of: Callable[[ContainerRecord], UnixUser | None],
    ) -> dict[str, Fraction | None]:
        """The ``gpu_limit`` of each owner of ``records``, by user name: ``owner_of`` is asked
        for the account of a record whose owner has none yet; ``None`` leaves that record's
        owner out (a later record of theirs asks again)."""
        limits: dict[str, Fraction | None] = {}
        for record in records:
            if record.user in limits:
                continue
            owner = owner_of(record)
            if owner is not None:
                limits[record.user] = self.limits_for(owner).gpu_quota().gpu_limit
        return limits

    def aggregate_for(self, user: UnixUser, config: Ds01Config | None = None) -> ResolvedAggregate:
        """``user``'s totals across all their containers (``config``: the current one)."""
        return resolve_aggregate((config or self.config()).limits, user.name, user.groups)

    def share_log_with_admins(self) -> None:
        """Give the audit log's directory and files to the configured admin group.

        Owner root, group the admin group (mode 0640, directory 0750: see ``EventLog``);
        root only when that group does not exist. Called at start and when the admin
        group changes in the configuration.
        """
        try:
            gid: int | None = grp.getgrnam(self.settings.loaded.limits.admin_group).gr_gid
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

    # -- containers ---------------------------------------------------------------------------

    def records(self) -> list[ContainerRecord]:
        """Every managed container of this node, from the ledger; those whose devices were
        released hold none. Decisions read it under the allocation lock. A container labelled
        with another Slurm node is that node's ds01d's (several nodes may share one Docker
        engine: the test cluster), never this one's."""
        node = self.slurm_node
        return self.without_released(
            [r for r in self.ledger.list_managed() if r.labels.get(L.SLURM_NODE, node) == node]
        )

    def observed_records(self) -> list[ContainerRecord]:
        """``records()`` for observers (metrics, the dashboard): the same ledger, no Docker
        call while it follows Docker's events."""
        return self.records()

    def without_released(self, records: list[ContainerRecord]) -> list[ContainerRecord]:
        """``records`` with the devices of released containers taken off them."""
        released = self.store.released()
        if not released:
            return records
        return [
            replace(r, gpus=(), gpu_equivalents=Fraction(0)) if r.id in released else r
            for r in records
        ]

    # -- signals to people and loops ----------------------------------------------------------

    def queue_changed(self) -> None:
        """Wake the dispatcher and every client waiting on the queue."""
        with self.queue_condition:
            self.queue_condition.notify_all()

    def reservations_changed(self) -> None:
        """Wake the lifecycle loop: a reservation made or cancelled may ask for a step
        (a warning, a start, an end) before the pass it was waiting for."""
        with self.lifecycle_condition:
            self.lifecycle_condition.notify_all()

    def notify_user(self, uid: int, message: str) -> None:
        """Write ``message`` on the terminals where user ``uid`` is logged in and accepts
        messages (like ``write``: the terminal's group-write bit, ``mesg y``). Fails soft."""
        notify_terminals(uid, message)

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
        """A logged ``PermissionDenied`` for the caller to raise."""
        refusal = PermissionDenied(message)
        self.log_refusal(caller, "auth.denied", resource, refusal, **details)
        return refusal


__all__ = ["DaemonContext"]
