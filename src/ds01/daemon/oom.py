"""OOM visibility: notice when the kernel kills a process in a user's container, and why.

Docker is no help here: under a limit on the user's parent every container gets Docker's
``oom`` event and ``.State.OOMKilled`` stays false. The kernel's counters are exact, so a
background thread (``OomWatcher``) reads, every ``interval_seconds``, for each running
managed container (one Docker list call):

- the container's kill counter: v1 ``memory.oom_control`` ``oom_kill``, v2 ``memory.events``
  ``oom_kill``, which counts only kills of the container's own processes;
- how often the container's own limit was hit, and how often the user parent's was
  (``OomCounters.limit_events``; on v1 also whether the container's peak usage reached its
  limit since the last scan, ``OomCounters.at_limit``).

A kill counter that went up is a kill (``assess``). The limit it hit is the container's own
if that limit's counter went up too, else the user's total if the parent's did, else
``host`` (a system-wide OOM, or a limit above ds01's). On cgroup v2 the limit counters
count OOMs exactly; on v1 a limit also counts as hit when usage only reached it and cache
was reclaimed, so a kill at the total in a container that was also at its own limit in the
same interval is reported as ``container``.

Each kill is logged as a ``resource.oom_kill`` event naming the container and the limit;
the counters last seen are kept in SQLite, so a restarted ds01d does not report a kill
twice, and ``container-list`` shows the kills per container. A kill in a container whose
cgroup disappears before the next scan (its main process died and it stopped) is missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Protocol

from ds01.daemon.service import record_parent
from ds01.daemon.state import OomState, StateStore
from ds01.errors import Ds01Error
from ds01.events.log import EventLog, utc_now
from ds01.runtime.cgroups import CgroupDriver, CgroupManager, OomCounters, container_cgroup
from ds01.runtime.docker import ContainerRecord

log = logging.getLogger(__name__)

LimitHit = Literal["container", "user_total", "host"]

#: Seconds between two scans.
DEFAULT_INTERVAL_SECONDS = 2.0
OOM_KILL_ACTION = "resource.oom_kill"


class ContainerLister(Protocol):
    """What the watcher needs from the Docker adapter."""

    def list_managed(self) -> list[ContainerRecord]: ...


@dataclass(frozen=True)
class OomFinding:
    """New kills in one container since the last scan, and the limit they hit."""

    kills: int
    limit: LimitHit


def assess(previous: OomState | None, now: OomCounters, parent_events: int) -> OomFinding | None:
    """Compare one container's counters with the state last seen; ``None`` if no new kill.

    A new ``generation`` (the container restarted in a fresh cgroup) starts the container's
    counters from 0; the parent's counter is compared with the last value seen unless it
    went backwards (the parent was re-created).
    """
    same_cgroup = previous is not None and previous.generation == now.generation
    base_kills = previous.kills if previous is not None and same_cgroup else 0
    base_own = previous.own_events if previous is not None and same_cgroup else 0
    base_parent = (
        previous.parent_events
        if previous is not None and parent_events >= previous.parent_events
        else 0
    )
    kills = now.kills - base_kills
    if kills <= 0:
        return None
    limit: LimitHit
    if now.limit_events > base_own or now.at_limit:
        limit = "container"
    elif parent_events > base_parent:
        limit = "user_total"
    else:
        limit = "host"
    return OomFinding(kills=kills, limit=limit)


def advance(
    previous: OomState | None,
    record: ContainerRecord,
    now: OomCounters,
    parent_events: int,
    finding: OomFinding | None,
    seen_at: str,
) -> OomState:
    """The state to keep after a scan that read ``now`` (and found ``finding``)."""
    state = OomState(
        container_id=record.id,
        docker_name=record.docker_name,
        user=record.user,
        kills=now.kills,
        own_events=now.limit_events,
        parent_events=parent_events,
        generation=now.generation,
        oom_kills=previous.oom_kills if previous is not None else 0,
        last_oom=previous.last_oom if previous is not None else None,
        last_limit=previous.last_limit if previous is not None else None,
    )
    if finding is None:
        return state
    return replace(
        state,
        oom_kills=state.oom_kills + finding.kills,
        last_oom=seen_at,
        last_limit=finding.limit,
    )


class OomWatcher:
    """Background thread of ds01d that reports OOM kills (see the module docstring).

    Args:
        runtime: lists the managed containers (one call per scan).
        cgroups: reads the counters.
        store: keeps the counters between scans and restarts.
        events: where ``resource.oom_kill`` events go.
        driver: Docker's cgroup driver (where a container's cgroup is).
        clock: the current UTC time.
        interval_seconds: time between scans.
    """

    def __init__(
        self,
        runtime: ContainerLister,
        cgroups: CgroupManager,
        store: StateStore,
        events: EventLog,
        driver: CgroupDriver,
        *,
        clock: Callable[[], datetime] = utc_now,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self.runtime = runtime
        self.cgroups = cgroups
        self.store = store
        self.events = events
        self.driver = driver
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scan(self) -> list[OomState]:
        """Read every running container's counters once; report and record new kills.

        Returns the states of the containers that had new kills.
        """
        records = self.runtime.list_managed()
        known = self.store.oom_states()
        parent_events: dict[str, int | None] = {}
        reported: list[OomState] = []
        for record in records:
            if record.status != "running" or not record.id:
                continue
            parent = record_parent(record)
            if parent not in parent_events:
                parent_events[parent] = self.cgroups.limit_events(parent)
            try:
                cgroup = container_cgroup(parent, record.id, self.driver)
            except ValueError:
                continue
            counters = self.cgroups.oom_counters(cgroup)
            if counters is None:
                continue  # not (or no longer) there: nothing to read
            if counters.at_limit:
                self.cgroups.rearm_peak(cgroup)
            previous = known.get(record.id)
            on_parent = parent_events[parent]
            if on_parent is None:
                on_parent = previous.parent_events if previous is not None else 0
            finding = assess(previous, counters, on_parent)
            seen_at = self._clock().isoformat(timespec="seconds")
            state = advance(previous, record, counters, on_parent, finding, seen_at)
            if state != previous:
                self.store.save_oom_state(state)
            if finding is not None:
                self._report(record, state, finding)
                reported.append(state)
        gone = set(known) - {r.id for r in records}
        if gone:
            self.store.forget_oom_states(gone)
        return reported

    def _report(self, record: ContainerRecord, state: OomState, finding: OomFinding) -> None:
        what = {
            "container": "its own memory limit",
            "user_total": f"{record.user}'s memory total across all their containers",
            "host": "the host's memory (no ds01 limit)",
        }[finding.limit]
        log.warning(
            "OOM: the kernel killed %d process(es) in %s (%s hit)",
            finding.kills,
            record.docker_name,
            what,
        )
        self.events.emit(
            OOM_KILL_ACTION,
            user=record.user,
            resource=f"container/{record.docker_name}",
            details={
                "container": record.name,
                "limit": finding.limit,
                "kills": finding.kills,
                "oom_kills": state.oom_kills,
            },
        )

    # -- thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Scan now and then every ``interval_seconds`` in a daemon thread until ``stop``."""
        if self._thread is not None:
            raise RuntimeError("the OOM watcher is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ds01-oom-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop the thread and wait for it (at most ``timeout_seconds``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Ds01Error as exc:  # Docker away for a moment: try again next time
                log.warning("OOM scan skipped: %s", exc.message)
            except Exception:  # observation fails soft; the daemon goes on
                log.exception("OOM scan failed")
            self._stop.wait(self.interval_seconds)


__all__ = ["OomFinding", "OomWatcher", "advance", "assess"]
