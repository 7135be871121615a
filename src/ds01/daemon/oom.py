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

A second thread follows Docker's event stream for managed containers. An ``oom`` event
triggers a scan at once, so most kills are read within milliseconds. When the kill ends the
container (its main process was the victim: the usual case of a training script), Docker
removes the cgroup with its counters, often before any scan. Such a container's ``die``
event with exit code 137 (SIGKILL) within ``EXIT_AFTER_OOM_SECONDS`` of an ``oom`` event for
it is reported as one kill (``assess_exit``): at the user's total if the parent's limit
counter went up since the scan before the ``oom`` event, else at the container's own limit
if it has one, else ``host``. A kill a scan already reported is not reported again.

Each kill is logged as a ``resource.oom_kill`` event naming the container and the limit
(and, for a Slurm job's container, noted in the job's ``AdminComment``: ``note_on_job``);
the counters last seen are kept in SQLite, so a restarted ds01d does not report a kill
twice, and ``container-list`` shows the kills per container.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol

from ds01.core.container_resources import OOM_KILL_ACTION
from ds01.daemon.access import resource_of
from ds01.daemon.health import MAX_WAIT_SECONDS, PassTracker
from ds01.daemon.limits_enforcement import own_parent, record_parent
from ds01.daemon.periodic import PeriodicPass
from ds01.daemon.slurm_jobs import note_on_job
from ds01.events.log import EventLog, utc_now
from ds01.exitcodes import OOM_KILLED_STATUS
from ds01.model import labels as L
from ds01.runtime.cgroups import CgroupDriver, CgroupManager, OomCounters, container_cgroup
from ds01.runtime.docker import ContainerEvent, ContainerRecord, EventStream
from ds01.runtime.store import OomState, StateStore

log = logging.getLogger(__name__)

LimitHit = Literal["container", "user_total", "host"]

#: Seconds between two scans.
DEFAULT_INTERVAL_SECONDS = 2.0
#: How long a limit whose counter rose stays the one a later kill is put down to, when no
#: counter rose with the kill: the kernel counts a failed charge, then reclaims and picks a
#: victim, which on a busy machine can take more than one scan.
RISEN_KEPT = timedelta(seconds=30)
#: A ``die`` with SIGKILL this soon after an ``oom`` event is that OOM's kill, in seconds.
EXIT_AFTER_OOM_SECONDS = 10.0


class ContainerLister(Protocol):
    """What the watcher needs from the Docker adapter."""

    def list_managed(self) -> list[ContainerRecord]: ...

    def container_events(
        self, actions: tuple[str, ...], since: float | None = None
    ) -> EventStream: ...


@dataclass(frozen=True)
class OomFinding:
    """New kills in one container since the last scan, and the limit they hit."""

    kills: int
    limit: LimitHit


def limit_hit_text(record: ContainerRecord, limit: LimitHit) -> str:
    """``limit`` in words, for ``record``'s log line and its Slurm job's note. The parent
    of a container in its Slurm job's cgroup (``own_parent``: none of ds01's) is that
    cgroup: its limit is the job's ``--mem``."""
    if limit == "container":
        return "its own memory limit"
    if limit == "host":
        return "the host's memory (no ds01 limit)"
    if own_parent(record) is None:
        return f"Slurm job {record.labels.get(L.SLURM_JOB, '?')}'s memory (--mem)"
    return f"{record.user}'s memory total across all their containers"


def limit_risen(previous: OomState | None, now: OomCounters, parent_events: int) -> LimitHit | None:
    """Which limit's counter went up since the state last seen (the container's own first),
    or ``None``.

    A new ``generation`` (the container restarted in a fresh cgroup) starts the container's
    counters from 0; the parent's counter is compared with the last value seen unless it
    went backwards (the parent was re-created).
    """
    same_cgroup = previous is not None and previous.generation == now.generation
    base_own = previous.own_events if previous is not None and same_cgroup else 0
    base_parent = (
        previous.parent_events
        if previous is not None and parent_events >= previous.parent_events
        else 0
    )
    if now.limit_events > base_own or now.at_limit:
        return "container"
    if parent_events > base_parent:
        return "user_total"
    return None


def assess(
    previous: OomState | None,
    now: OomCounters,
    parent_events: int,
    risen_before: LimitHit | None = None,
) -> OomFinding | None:
    """Compare one container's counters with the state last seen; ``None`` if no new kill.

    The limit is the one whose counter went up with the kill (``limit_risen``), else
    ``risen_before``, the one that went up at a scan before (the watcher keeps it for
    ``RISEN_KEPT``, until a kill is put down to it): the kernel counts the failed charge
    before it reclaims and picks a victim, so scans may fall between the two. Else ``host``.
    """
    same_cgroup = previous is not None and previous.generation == now.generation
    base_kills = previous.kills if previous is not None and same_cgroup else 0
    kills = now.kills - base_kills
    if kills <= 0:
        return None
    limit = limit_risen(previous, now, parent_events) or risen_before or "host"
    return OomFinding(kills=kills, limit=limit)


def assess_exit(
    parent_before: int | None, parent_now: int | None, has_memory_limit: bool
) -> OomFinding:
    """The kill that ended a container whose cgroup is gone (see the module docstring).

    ``parent_before``: the user parent's limit counter at the last scan before the ``oom``
    event; ``parent_now``: the counter now (``None``: unknown).
    """
    limit: LimitHit
    if parent_before is not None and parent_now is not None and parent_now > parent_before:
        limit = "user_total"
    elif has_memory_limit:
        limit = "container"
    else:
        limit = "host"
    return OomFinding(kills=1, limit=limit)


@dataclass(frozen=True)
class _PendingOom:
    """A recent ``oom`` event: when, the parent's counter before it, and whether a scan has
    reported its kill already (Docker may send several ``oom`` events for one kill)."""

    time: float
    parent_before: int | None
    reported: bool = False


def _last_read(state: OomState | None) -> OomCounters:
    """The container's own counters as ``state`` last read them (all 0 without a state)."""
    if state is None:
        return OomCounters(kills=0, limit_events=0, generation=0)
    return OomCounters(
        kills=state.kills, limit_events=state.own_events, generation=state.generation
    )


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


class OomWatcher(PeriodicPass):
    """Background thread of ds01d that reports OOM kills (see the module docstring).

    Args:
        runtime: lists the managed containers (ds01d passes its ledger: no Docker call per
            scan) and follows their events.
        cgroups: reads the counters.
        store: keeps the counters between scans and restarts.
        events: where ``resource.oom_kill`` events go.
        driver: Docker's cgroup driver (where a container's cgroup is).
        clock: the current UTC time.
        interval_seconds: time between scans.
    """

    thread_name = "ds01-oom-watcher"
    work_name = "OOM scan"
    check_name = "oom-watcher"
    consequence = "OOM kills in containers are not reported"

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
        on_docker_back: Callable[[], object] | None = None,
    ) -> None:
        self.runtime = runtime
        self.cgroups = cgroups
        self.store = store
        self.events = events
        self.driver = driver
        self.interval = interval_seconds
        self._clock = clock
        super().__init__()
        self._listener: threading.Thread | None = None
        self._stream: EventStream | None = None
        self._lock = threading.Lock()  # one scan or exit at a time
        self._parent_seen: dict[str, int] = {}  # parent cgroup -> limit counter, last scan
        self._pending: dict[str, _PendingOom] = {}  # container id -> its unmatched oom event
        # container id -> the limit that rose at a scan (and when), until a kill is put down
        # to it or RISEN_KEPT has passed
        self._risen: dict[str, tuple[LimitHit, datetime]] = {}
        self._last_event_time: float | None = None
        # Not a periodic pass (no interval for the doctor): only its faults are logged once.
        self._events_tracker = PassTracker(
            "oom-events",
            "Docker's events (OOM watch)",
            "kills that end a container may go unreported",
            interval=lambda: MAX_WAIT_SECONDS,
            logger=log,
            on_back=on_docker_back,
        )

    def scan(self) -> list[OomState]:
        """Read every running container's counters once; report and record new kills.

        Returns the states of the containers that had new kills.
        """
        with self._lock:
            return self._scan()

    def _scan(self) -> list[OomState]:
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
            scanned_at = self._clock()
            risen_before = self._risen_since(record.id, scanned_at)
            risen = limit_risen(previous, counters, on_parent)
            if risen is not None:
                self._risen[record.id] = (risen, scanned_at)
            finding = assess(previous, counters, on_parent, risen_before)
            if finding is not None:
                self._risen.pop(record.id, None)  # put down to it: a later kill needs its own
            seen_at = scanned_at.isoformat(timespec="seconds")
            state = advance(previous, record, counters, on_parent, finding, seen_at)
            if state != previous:
                self.store.save_oom_state(state)
            if finding is not None:
                self._report(record, state, finding)
                if record.id in self._pending:
                    self._pending[record.id] = replace(self._pending[record.id], reported=True)
                reported.append(state)
        self._parent_seen.update({p: v for p, v in parent_events.items() if v is not None})
        running = {r.id for r in records if r.status == "running"}
        self._risen = {cid: risen for cid, risen in self._risen.items() if cid in running}
        gone = set(known) - {r.id for r in records}
        if gone:
            self.store.forget_oom_states(gone)
        return reported

    def _risen_since(self, container_id: str, now: datetime) -> LimitHit | None:
        """The limit that rose for the container at a scan less than ``RISEN_KEPT`` ago."""
        risen = self._risen.get(container_id)
        if risen is None or now - risen[1] >= RISEN_KEPT:
            self._risen.pop(container_id, None)
            return None
        return risen[0]

    def _report(self, record: ContainerRecord, state: OomState, finding: OomFinding) -> None:
        what = limit_hit_text(record, finding.limit)
        log.warning(
            "OOM: the kernel killed %d process(es) in %s (%s hit)",
            finding.kills,
            record.docker_name,
            what,
        )
        self.events.emit(
            OOM_KILL_ACTION,
            user=record.user,
            resource=resource_of(record),
            details={
                "container": record.name,
                "limit": finding.limit,
                "kills": finding.kills,
                "oom_kills": state.oom_kills,
            },
        )
        # A Slurm job's container: Slurm's accounting sees no OOM outside its steps' cgroups,
        # so the job says it (the login node's report counts it).
        note_on_job(record, "oom_kill", f"{finding.kills} process(es) killed, {what} hit")

    # -- Docker events ---------------------------------------------------------------------------

    def handle(self, event: ContainerEvent) -> None:
        """React to one Docker event of a managed container (``oom`` or ``die``)."""
        if event.action == "oom":
            with self._lock:
                self._expire_pending(event.time)
                if event.container_id not in self._pending:  # else: the same OOM again
                    record = self._record(event.container_id)
                    before = None
                    if record is not None:
                        before = self._parent_seen.get(record_parent(record))
                    self._pending[event.container_id] = _PendingOom(event.time, before)
            self.scan()  # read the counters while the cgroup is still there
        elif event.action == "die":
            with self._lock:
                self._on_exit(event)

    def _on_exit(self, event: ContainerEvent) -> None:
        self._expire_pending(event.time)
        pending = self._pending.pop(event.container_id, None)
        if pending is None or pending.reported or event.exit_code != OOM_KILLED_STATUS:
            return
        record = self._record(event.container_id)
        if record is None:
            return  # already removed: nobody left to tell
        parent_now = self.cgroups.limit_events(record_parent(record))
        finding = assess_exit(
            pending.parent_before, parent_now, bool(record.labels.get(L.MEMORY_BYTES))
        )
        previous = self.store.oom_states().get(record.id)
        state = advance(
            previous,
            record,
            _last_read(previous),
            parent_now if parent_now is not None else 0,
            finding,
            self._clock().isoformat(timespec="seconds"),
        )
        self.store.save_oom_state(state)
        self._report(record, state, finding)

    def _expire_pending(self, now: float) -> None:
        self._pending = {
            cid: p for cid, p in self._pending.items() if now - p.time <= EXIT_AFTER_OOM_SECONDS
        }

    def _record(self, container_id: str) -> ContainerRecord | None:
        return next((r for r in self.runtime.list_managed() if r.id == container_id), None)

    def _listen(self) -> None:
        """Follow Docker's events until ``stop``; reconnect (without losing events) on a
        break, after growing waits while Docker stays away, and call ``on_docker_back``
        each time the stream is back after a break (the tracker's ``on_back``)."""
        while not self._stop.is_set():
            why: Exception | str = "the stream ended"
            try:
                self._stream = self.runtime.container_events(("oom", "die"), self._last_event_time)
                self._events_tracker.succeeded()
                for event in self._stream:
                    if self._last_event_time is not None and event.time <= self._last_event_time:
                        continue  # replayed after a reconnect
                    self._last_event_time = event.time
                    self.handle(event)
            except Exception as exc:  # observation fails soft; the daemon goes on
                if self._stop.is_set():
                    break  # ``stop`` closed the stream under us
                why = exc
            if not self._stop.is_set():
                self._stop.wait(self._events_tracker.failed(why))

    # -- thread ----------------------------------------------------------------------------------

    def interval_seconds(self) -> float:
        return self.interval

    def run_pass(self) -> object:
        return self.scan()

    def start(self) -> None:
        """Scan now and then every ``interval_seconds``, and follow Docker's events, in two
        daemon threads until ``stop``."""
        super().start()
        self._last_event_time = self._clock().timestamp()
        self._listener = threading.Thread(target=self._listen, name="ds01-oom-events", daemon=True)
        self._listener.start()

    def stop(self, timeout_seconds: float = 5.0) -> bool:
        """Stop both threads and wait for them (each at most ``timeout_seconds``); return
        whether the scanning thread has ended."""
        self.request_stop()
        if self._stream is not None:
            self._stream.close()
        ended = super().stop(timeout_seconds)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.join(timeout_seconds)
        return ended


__all__ = ["OomFinding", "OomWatcher", "advance", "assess", "assess_exit", "limit_hit_text"]
