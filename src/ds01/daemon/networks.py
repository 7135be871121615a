"""Per-user Docker networks: each user's containers and builds on a bridge of their own.

A user's containers are attached to ``ds01-u<uid>`` (Linux bridge ``ds01u<uid>``), a bridge
network ds01d creates when the user needs it (a create, a start, a build with network) and
removes once the user has had no container for the keep (``keep_seconds``: the ``hub:``
section's ``address_keep_seconds`` while a hub identity is configured, else none;
``NetworkUpkeep`` removes it, so within one more interval of its). Kept that long because a
hub's proxy still sends a removed server's pages to its address until its next poll: removed
at once, Docker could give the freed subnet to another user's new network, and his first
container the same address. Without a hub nothing routes to a container's address, so the
network goes with the last container. So:

- the containers of one user reach each other (same bridge; by address, or by the name the
  user gave them, which is a network alias);
- another user's containers cannot reach them: Docker drops traffic between two bridges
  (its ``DOCKER-ISOLATION`` chains);
- from the host, only the owner, root and the hub identities (``hub:`` in
  resource-limits.yaml, ``hub_uids``) can open a connection to their addresses: ds01's
  firewall rules (``ds01.runtime.firewall``) refuse everyone else's. A hub reaches its
  servers there (``ds01.jupyterhub``), not at a published port. When the hub identities
  change (the configuration, or a group's members in NSS), ``NetworkUpkeep`` rewrites
  every guarded bridge's rules within ``HUB_LOOKUP_TTL_S`` (at once after a reload);
- published ports stay on 127.0.0.1, behind their tokens, as before.

Fail closed: a network is used only once its firewall rules are in place; when they cannot
be installed (no ``iptables``, or it refuses), containers are neither created nor started
(``FirewallError``, exit 1), ``ds01 admin doctor`` reports it as critical, and ds01d logs a
``network.firewall`` failure event at start. ds01d itself keeps running, so users can still
list, stop and remove their containers, and it tries again at the next create or start.

An instance owns only the networks it created (label ``ds01.instance``, from the state
directory's ``instance-id``): at start it guards every ds01 network on the engine, but removes
only its own that no ds01 container uses (after the keep, counted from the start: a hub may
still route to a server removed just before).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ds01.daemon.periodic import PeriodicPass
from ds01.errors import Conflict, Ds01Error, SystemFault
from ds01.events.log import EventLog
from ds01.model import labels as L
from ds01.runtime.docker import DockerRuntime
from ds01.runtime.docker_networks import NetworkRecord
from ds01.runtime.firewall import Firewall, FirewallError, Guard, guard_of

log = logging.getLogger(__name__)

#: The event of the firewall's set-up and of each network's life.
FIREWALL_ACTION = "network.firewall"
NETWORK_ACTION = "network.user"
#: The file, in the state directory, that names this ds01d instance.
INSTANCE_ID_FILE = "instance-id"
#: Seconds between two passes of ``NetworkUpkeep``: an emptied network goes at most this
#: long after its keep, a change of the hub identities in NSS at most
#: this long after ``HUB_LOOKUP_TTL_S`` (a pass rewrites rules only when they changed).
NETWORK_UPKEEP_INTERVAL_S = 10.0


def network_name(uid: int) -> str:
    """The Docker network of user ``uid``'s containers."""
    return f"ds01-u{uid}"


def bridge_name(uid: int) -> str:
    """The Linux bridge of ``network_name(uid)`` (15 characters at most for any uid)."""
    return f"ds01u{uid}"


def instance_id(state_dir: Path) -> str:
    """This instance's id: read from the state directory, made there the first time."""
    path = state_dir / INSTANCE_ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if not text:
        text = secrets.token_hex(8)
        path.write_text(text + "\n")
    return text


def owner_uid(network: NetworkRecord) -> int | None:
    """The uid a ds01 network belongs to, from its labels (``None``: not a user network)."""
    if network.labels.get(L.NETWORK) != L.NETWORK_USER:
        return None
    text = network.labels.get(L.UID, "")
    return int(text) if text.isascii() and text.isdigit() else None


class UserNetworks:
    """Creates, guards and removes users' networks. Thread-safe.

    Args:
        runtime: the Docker adapter.
        firewall: the host firewall adapter.
        events: the audit log.
        instance: this instance's id (``instance_id``).
        hub_uids: the uids of the hub identities (``hub:`` in resource-limits.yaml), let
            into every user's bridge; asked at each use (``renew``: look them up again
            now), so a change reaches a network's rules at its next create, start or build,
            or at the next ``refresh_guards``.
        keep_seconds: how long an emptied network is kept, asked at each use
            (``HubConfig.emptied_network_keep_seconds``; 0: removed at once).
        monotonic: seconds on a clock that never jumps (for the keep).
    """

    def __init__(
        self,
        runtime: DockerRuntime,
        firewall: Firewall,
        events: EventLog,
        instance: str,
        hub_uids: Callable[..., tuple[int, ...]] = lambda renew=False: (),
        keep_seconds: Callable[[], float] = lambda: 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.firewall = firewall
        self.events = events
        self.instance = instance
        self.hub_uids = hub_uids
        self._lock = threading.Lock()
        # network name → (its id, its bridge, whom its rules let through) for those whose
        # rules are in place
        self._guarded: dict[str, tuple[str, str, Guard]] = {}
        #: Notified when the hub identities may have changed (a configuration reload):
        #: wakes ``NetworkUpkeep``.
        self.hub_changed = threading.Condition()
        self._busy: Counter[int] = Counter()  # uid → builds using the network now
        self._keep_seconds = keep_seconds
        self._monotonic = monotonic
        # uid → when its network was first found unused (``monotonic``), kept until then
        self._emptied: dict[int, float] = {}
        #: Why the firewall could not be installed at the last try (``None``: it was).
        self.firewall_error: str | None = None

    # -- start-up ------------------------------------------------------------------------

    def begin_reconcile(self, in_use: Iterable[int]) -> Callable[[], list[str]]:
        """At start, in two steps, for a start that runs the work in a thread of its own:
        this takes the networks' lock now, in the caller's thread, so that whatever uses
        them afterwards (``ensure``, ``holding``, ``release_if_unused``) waits until it is
        done; the function returned does the work and releases the lock, and must be
        called exactly once, in any thread. The work: install the firewall, guard every
        ds01 network on the engine (one whose rules read back complete is left as it is),
        and remove this instance's networks of users with no container (``in_use``: the
        uids that have one), or, while there is a keep, count them as emptied now
        (``release_if_unused`` removes them after it); it returns the networks removed. It
        never raises for the firewall: a failure is logged, kept in ``firewall_error`` and
        logged as an event; it raises the ``Ds01Error`` of Docker refusing to list the
        networks."""
        users = set(in_use)
        self._lock.acquire()

        def run() -> list[str]:
            try:
                removed = self._reconcile_locked(users)
                installed = self.firewall_error is None
            finally:
                self._lock.release()
            if installed:
                self.events.emit(
                    FIREWALL_ACTION,
                    user="ds01d",
                    resource="firewall/ds01",
                    details={"guarded": sorted(self._guarded), "removed": removed},
                )
            return removed

        return run

    def _reconcile_locked(self, users: set[int]) -> list[str]:
        """``begin_reconcile``'s work, under ``_lock``: sets ``firewall_error``."""
        removed: list[str] = []
        try:
            self.firewall.install_base()
            # Read back once: a network whose rules are complete (as after a restart) is
            # not written again; the doctor reads them the same way (``unguarded``).
            complete = self.firewall.state().bridges
            for network in self.runtime.networks(L.NETWORK):
                uid = owner_uid(network)
                if uid is None:
                    continue
                if uid not in users and self._owned(network) and self._keep_seconds() > 0:
                    self._emptied.setdefault(uid, self._monotonic())
                elif uid not in users and self._owned(network):
                    try:
                        self._remove(network, "no container of this user left")
                    except FirewallError:
                        raise
                    except Ds01Error as exc:  # still in use: guarded below
                        log.warning("network %s stays: %s", network.name, exc.message)
                    else:
                        removed.append(network.name)
                        continue
                guard = self.guard_of(uid)
                if complete.get(network.bridge) != guard:
                    self.firewall.guard(network.bridge, guard, base_installed=True)
                self._guarded[network.name] = (network.id, network.bridge, guard)
        except FirewallError as exc:
            self._firewall_failed(exc)
            return removed
        self.firewall_error = None
        return removed

    def _firewall_failed(self, exc: FirewallError) -> None:
        self.firewall_error = exc.message
        log.error(
            "FIREWALL NOT INSTALLED: containers will not be created or started until it is: %s",
            exc.message,
        )
        self.events.emit(
            FIREWALL_ACTION,
            user="ds01d",
            resource="firewall/ds01",
            details={"error": exc.message},
            outcome="failure",
        )

    # -- use ------------------------------------------------------------------------------

    def ensure(self, uid: int) -> str:
        """The name of ``uid``'s network, created and guarded if it was not.

        Raises:
            FirewallError: the firewall rules could not be installed (fail closed).
            SystemFault: a network of that name exists that is not ds01's for ``uid``.
            NoCapacity: Docker has no address range left for another network.
        """
        name = network_name(uid)
        with self._lock:
            network = self.runtime.find_network(name)
            if network is not None and owner_uid(network) != uid:
                raise SystemFault(
                    f"Docker network {name} exists but is not ds01's network of uid {uid}, so "
                    "ds01 will not put containers on it. An admin must remove or rename it "
                    f"(docker network rm {name})."
                )
            self._emptied.pop(uid, None)  # in use again: kept a full while after its next end
            guard = self.guard_of(uid)
            written = None if network is None else (network.id, network.bridge, guard)
            if written is not None and self._guarded.get(name) == written:
                return name
            try:
                self.firewall.install_base()  # before a network exists that it cannot guard
                if network is None:
                    network = self._create(uid)
                self.firewall.guard(network.bridge, guard)
            except FirewallError as exc:
                self._firewall_failed(exc)
                raise FirewallError(
                    "Nothing was created, started or built: the firewall that keeps other "
                    "users away from your containers could not be installed "
                    f"({exc.message}). Ask an admin (`ds01 admin doctor`)."
                ) from exc
            self._guarded[name] = (network.id, network.bridge, guard)
            self.firewall_error = None
            return name

    def guard_of(self, uid: int) -> Guard:
        """Whom the rules of ``uid``'s bridge let through: ``uid`` and the hub identities."""
        return guard_of(uid, self.hub_uids())

    def refresh_guards(self) -> list[str]:
        """Look the hub identities up again and rewrite the rules of every guarded network
        whose rules let others through (each in one transaction: ``Firewall.guard``);
        return those networks. A member removed from a hub group loses access here, not
        at her next create.

        Raises:
            FirewallError: a network's rules could not be written (logged as an event;
                its old rules stay, and the next refresh tries again).
        """
        rewritten: list[str] = []
        with self._lock:
            hub_uids = self.hub_uids(renew=True)
            for name, (network_id, bridge, old) in sorted(self._guarded.items()):
                guard = guard_of(old.owner, hub_uids)
                if guard == old:
                    continue
                try:
                    self.firewall.guard(bridge, guard)
                except FirewallError as exc:
                    self._firewall_failed(exc)
                    raise
                self._guarded[name] = (network_id, bridge, guard)
                rewritten.append(name)
            if rewritten:
                self.firewall_error = None  # iptables took them: it works again
        if rewritten:
            self.events.emit(
                FIREWALL_ACTION,
                user="ds01d",
                resource="firewall/ds01",
                details={"rewritten": rewritten, "reason": "hub identities changed"},
            )
        return rewritten

    def hub_may_have_changed(self) -> None:
        """Wake ``NetworkUpkeep`` (the configuration was reloaded); never blocks on the
        networks' lock, so it may be called from anywhere."""
        with self.hub_changed:
            self.hub_changed.notify_all()

    def _create(self, uid: int) -> NetworkRecord:
        labels = {L.NETWORK: L.NETWORK_USER, L.UID: str(uid), L.INSTANCE: self.instance}
        try:
            network = self.runtime.create_network(network_name(uid), bridge_name(uid), labels)
        except Conflict:  # made in between by another instance on the same engine
            found = self.runtime.find_network(network_name(uid))
            if found is None:
                raise
            return found
        self.events.emit(
            NETWORK_ACTION,
            user="ds01d",
            resource=f"network/{network.name}",
            details={"uid": uid, "bridge": network.bridge, "action": "create"},
        )
        return network

    @contextmanager
    def holding(self, uid: int) -> Iterator[None]:
        """Keep ``uid``'s network while the block runs (a build), even with no container."""
        with self._lock:
            self._busy[uid] += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[uid] -= 1
                if self._busy[uid] <= 0:
                    del self._busy[uid]

    def release_if_unused(self, uid: int, in_use: Iterable[int]) -> bool:
        """Remove ``uid``'s network if this instance made it, no container of the user is
        left (``in_use``: the uids that have one), no build uses it, and it has been so for
        the keep (``keep_seconds``; the first call that finds it unused starts that while;
        a later one, ``NetworkUpkeep``'s, removes it: ``emptied``). Call it under the
        allocation lock, with ``in_use`` listed under that lock. Fails soft (logged): a
        network it could not remove is tried again at the next call."""
        with self._lock:
            if uid in set(in_use) or self._busy.get(uid):
                self._emptied.pop(uid, None)
                return False
            now = self._monotonic()
            if now - self._emptied.setdefault(uid, now) < self._keep_seconds():
                return False
            try:
                network = self.runtime.find_network(network_name(uid))
                if network is not None and owner_uid(network) == uid and self._owned(network):
                    self._remove(network, "the user's last container was removed")
                else:
                    network = None
            except Ds01Error as exc:
                log.warning("network of uid %d left for the next try: %s", uid, exc.message)
                return False
            del self._emptied[uid]
        return network is not None

    def emptied(self) -> list[int]:
        """The uids whose networks wait for their removal (``release_if_unused``)."""
        with self._lock:
            return sorted(self._emptied)

    def _owned(self, network: NetworkRecord) -> bool:
        return network.labels.get(L.INSTANCE) == self.instance

    def _remove(self, network: NetworkRecord, reason: str) -> None:
        """Remove ``network`` and then its rules (under ``_lock``)."""
        self.runtime.remove_network(network.id)
        self._guarded.pop(network.name, None)
        try:
            self.firewall.unguard(network.bridge)
        except FirewallError as exc:  # stale rules of a bridge that is gone refuse nothing
            log.warning("rules of %s left in place: %s", network.bridge, exc.message)
        self.events.emit(
            NETWORK_ACTION,
            user="ds01d",
            resource=f"network/{network.name}",
            details={"bridge": network.bridge, "action": "remove", "reason": reason},
        )

    # -- health -----------------------------------------------------------------------------

    def unguarded(self) -> list[str]:
        """The ds01 networks on the engine whose firewall rules are missing or wrong, and
        ``OUTPUT`` itself when it does not jump to ds01's chain.

        Raises:
            FirewallError: the rules cannot be read.
        """
        state = self.firewall.state()
        missing = [] if state.hooked else ["OUTPUT (no jump to DS01)"]
        for network in self.runtime.networks(L.NETWORK):
            uid = owner_uid(network)
            if uid is not None and state.bridges.get(network.bridge) != self.guard_of(uid):
                missing.append(f"{network.name} ({network.bridge})")
        return missing


class NetworkUpkeep(PeriodicPass):
    """Every ``interval_seconds`` (``NETWORK_UPKEEP_INTERVAL_S``), and at once when woken by a
    configuration reload (``UserNetworks.hub_may_have_changed``): removes the networks
    emptied their keep ago or more (``release_emptied``: the caller's, under
    the allocation lock), then rewrites users' bridge rules if the hub identities changed
    (``UserNetworks.refresh_guards``)."""

    thread_name = "ds01-network-upkeep"
    work_name = "network upkeep pass"
    check_name = "network-upkeep"
    consequence = (
        "a change of the hub identities does not reach the users' firewall rules, and "
        "emptied networks are not removed"
    )

    def __init__(
        self,
        networks: UserNetworks,
        interval_seconds: float,
        release_emptied: Callable[[], object] = lambda: None,
    ) -> None:
        self.networks = networks
        self._interval = interval_seconds
        self._release_emptied = release_emptied
        super().__init__(wake=networks.hub_changed)

    def run_pass(self) -> list[str]:
        """One pass; returns the networks whose rules were rewritten."""
        self._release_emptied()
        return self.networks.refresh_guards()

    def interval_seconds(self) -> float:
        return self._interval
