"""``ContainerLedger``: ds01d's in-memory view of its managed containers.

Every decision of ds01d (which devices are free, how many containers a user has, which
host ports are taken) and every observer (``container-list``, the dashboard, the exporter,
the OOM watcher, the lifecycle, energy and disk loops) needs the managed containers. Listing
them from Docker costs a full list and parse of every container (about 30 ms at 300), so
doing it for each decision makes ds01d's cost grow with the machine. The ledger keeps the
``ContainerRecord`` of each managed container, by id, and keeps it current:

- **one list at start** (:meth:`start`, after subscribing to Docker's events, so nothing
  that happens while it lists is missed);
- **ds01d's own changes, synchronously**: whoever creates, starts, stops, renames or moves
  a container calls :meth:`refresh` with its id right after Docker answered, and
  :meth:`forget` after a remove; under the allocation lock, so the next decision already
  sees the new container and its devices;
- **everybody else's, from Docker's event stream**: an event of a managed container
  refreshes just that container (one list call filtered by its id, parsed by the same
  parser), and again ``LOOK_AGAIN_SECONDS`` later (Docker reports a ``die`` before its list
  shows the container stopped); ``destroy`` drops it. A container removed behind ds01d's
  back (``docker rm -f``) holds its devices in the ledger until its ``destroy`` arrives:
  safe, never the other way;
- **a full reconcile** (re-list and replace): at start, whenever the stream came back after
  a gap (broken, dockerd restarted), and every ``reconcile_seconds`` in any case. Docker's
  labels stay the truth: the ledger only ever holds what a list said.

Two views of one container never go back in time: each Docker call takes a ticket before it
asks, and an answer older than one already applied to that container is dropped.

**While the event stream is down** (before :meth:`start`, after a break, until the reconcile
that follows its return), the ledger is not trusted: every read lists from Docker (and
replaces the ledger with that list), exactly as ds01d did before it had one; Docker away
then means the read raises ``DockerUnavailable`` and a decision fails closed. The same holds
after a synchronous :meth:`refresh` failed: the ledger is not trusted again until a full
list made after the failure.

Contract: every method may be called from any thread. Readers (:meth:`list_managed`) and
writers (:meth:`refresh`, :meth:`forget`) hold no lock of the ledger while Docker answers;
its own lock guards only the dictionary and is never held around a Docker call, so it nests
inside the allocation lock. Callers that decide on devices hold the allocation lock around
both the read and the ``refresh`` of what they created (``Creation.create_admitted``);
readers that only observe need no lock. :meth:`start` once, :meth:`stop` at the end.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from ds01.daemon.health import MAX_WAIT_SECONDS, PassTracker
from ds01.errors import Ds01Error
from ds01.runtime.docker import ContainerRecord, EventStream

log = logging.getLogger(__name__)

#: Every container action Docker reports that can change a container's ``ContainerRecord``.
CHANGES = (
    "create",
    "start",
    "restart",
    "die",
    "kill",
    "stop",
    "pause",
    "unpause",
    "rename",
    "update",
    "destroy",
)
#: A full re-list this often even while the stream runs (seconds).
DEFAULT_RECONCILE_SECONDS = 60.0
#: After an event, the container is looked up again this long after it (seconds): Docker
#: reports ``die`` before its list shows the container stopped, so the first lookup may
#: still see it running.
LOOK_AGAIN_SECONDS = (0.1, 1.0)


class LedgerRuntime(Protocol):
    """What the ledger needs from the Docker adapter."""

    def list_managed(self) -> list[ContainerRecord]: ...

    def find_managed_by_id(self, id_prefix: str) -> ContainerRecord | None: ...

    def container_events(
        self, actions: tuple[str, ...], since: float | None = None
    ) -> EventStream: ...


class ContainerLedger:
    """The managed containers as ds01d knows them (see the module docstring).

    State: the records by id; per container the ticket of the newest answer applied; whether
    the event stream is followed and the ledger trusted; the second looks due after events.
    The follower, and the second looks with the periodic reconcile, run in two daemon
    threads between :meth:`start` and :meth:`stop`.

    Args:
        runtime: the Docker adapter.
        reconcile_seconds: the period of the full re-list while the stream runs.
    """

    def __init__(
        self, runtime: LedgerRuntime, *, reconcile_seconds: float = DEFAULT_RECONCILE_SECONDS
    ) -> None:
        self.runtime = runtime
        self.reconcile_seconds = reconcile_seconds
        self._lock = threading.Lock()
        self._records: dict[str, ContainerRecord] = {}
        self._applied: dict[str, int] = {}  # id -> ticket of the newest answer applied
        self._listed = 0  # ticket of the newest full list applied: older answers are void
        self._tickets = itertools.count(1)
        self._following = False  # the stream runs and a list made since it began is applied
        self._distrusted_at: int | None = None  # a refresh failed at this ticket
        self._stop = threading.Event()
        self._stream: EventStream | None = None
        self._threads: list[threading.Thread] = []
        self._wake = threading.Condition()  # guards _due; notified on new entries and stop
        self._due: list[tuple[float, str]] = []  # (monotonic time, id): look up again then
        # The follower reconnects, with growing waits, while Docker is away: its faults are
        # logged once, not at every try.
        self._tracker = PassTracker(
            "ledger",
            "Docker's events (the container ledger)",
            "every container read lists from Docker",
            interval=lambda: MAX_WAIT_SECONDS,
            logger=log,
        )

    # -- reads ------------------------------------------------------------------------------

    @property
    def trusted(self) -> bool:
        """Whether reads answer from memory (the stream runs, nothing failed since)."""
        with self._lock:
            return self._following and self._distrusted_at is None

    def list_managed(self) -> list[ContainerRecord]:
        """Every managed container, any state: from memory while the ledger is trusted, else
        from one Docker list (which also replaces the ledger).

        Raises:
            DockerUnavailable: the ledger is not trusted and Docker did not answer.
        """
        with self._lock:
            if self._following and self._distrusted_at is None:
                return list(reversed(self._records.values()))  # newest first, as Docker lists
        return self.reconcile()

    def known(self, container_id: str) -> ContainerRecord | None:
        """The container with this full id as the ledger holds it, while it is trusted;
        ``None`` when it does not hold it or is not trusted (the caller looks it up)."""
        with self._lock:
            if self._following and self._distrusted_at is None:
                return self._records.get(container_id)
        return None

    def container_events(self, actions: tuple[str, ...], since: float | None = None) -> EventStream:
        """Docker's own stream of these events (for followers of their own, such as the OOM
        watcher, which takes the ledger as its lister)."""
        return self.runtime.container_events(actions, since)

    # -- writes -----------------------------------------------------------------------------

    def reconcile(self) -> list[ContainerRecord]:
        """List every managed container from Docker and make the ledger that list (answers
        newer than the list, for single containers, are kept). Returns the list."""
        ticket = next(self._tickets)
        records = self.runtime.list_managed()
        with self._lock:
            self._replace(ticket, records)
            if self._distrusted_at is not None and self._distrusted_at < ticket:
                self._distrusted_at = None
        return records

    def refresh(self, container_id: str) -> ContainerRecord | None:
        """Ask Docker for this one container now and apply the answer (gone: dropped).
        Returns what Docker said (``None``: gone, or Docker could not be asked), so that a
        caller acting on the container next need not ask again.

        Never raises: if Docker cannot be asked, the ledger is distrusted (every read lists)
        until a full list made afterwards succeeds.
        """
        ticket = next(self._tickets)
        try:
            record = self.runtime.find_managed_by_id(container_id)
        except Ds01Error as exc:
            log.warning("container %s not looked up (%s): reads list again", container_id[:12],
                        exc.message)  # fmt: skip
            with self._lock:
                self._distrusted_at = ticket
            return None
        self._apply(ticket, container_id, record)
        return record

    def forget(self, container_id: str) -> None:
        """The container is gone (ds01d removed it, or Docker reported its ``destroy``)."""
        self._apply(next(self._tickets), container_id, None)

    def _apply(self, ticket: int, container_id: str, record: ContainerRecord | None) -> None:
        key = record.id if record is not None else self._full_id(container_id)
        with self._lock:
            if max(self._applied.get(key, 0), self._listed) > ticket:
                return  # a newer answer about it is already in
            self._applied[key] = ticket
            if record is None:
                self._records.pop(key, None)
            else:
                self._records[key] = record

    def _full_id(self, container_id: str) -> str:
        with self._lock:
            return next((i for i in self._records if i.startswith(container_id)), container_id)

    def _replace(self, ticket: int, records: Iterable[ContainerRecord]) -> None:
        """Caller holds ``_lock``. The list becomes the ledger, except for containers with
        an answer newer than ``ticket`` (their current state, or their absence, stays). A
        list older than the last one applied is dropped."""
        if ticket < self._listed:
            return
        self._listed = ticket
        newer = {i for i, applied in self._applied.items() if applied > ticket}
        # Kept oldest first (Docker lists newest first); a container new to the ledger is
        # added last, so reading it backwards gives Docker's order.
        fresh = {r.id: r for r in reversed(list(records)) if r.id not in newer}
        fresh.update((i, self._records[i]) for i in newer if i in self._records)
        self._records = fresh
        self._applied = {i: self._applied[i] for i in newer}

    # -- following Docker's events ----------------------------------------------------------

    def start(self) -> None:
        """Subscribe to Docker's events, fill the ledger with one list, then follow the
        stream (and re-list periodically) in daemon threads. If Docker cannot be followed
        now, the follower keeps trying and reads list until it can."""
        if self._threads:
            raise RuntimeError("the ledger already follows Docker's events")
        self._stop.clear()
        try:
            self._connect()
        except Ds01Error as exc:
            self._tracker.failed(exc)
        for target, name in ((self._follow, "ds01-ledger"), (self._audit, "ds01-ledger-audit")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_seconds: float = 5.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        stream = self._stream
        if stream is not None:
            stream.close()
        for thread in self._threads:
            thread.join(timeout_seconds)
        self._threads = []

    def _connect(self) -> None:
        """Subscribe, then reconcile: what happened before the subscription is in the list,
        what happens after is in the stream."""
        self._stream = self.runtime.container_events(CHANGES)
        self.reconcile()
        with self._lock:
            self._following = True
        self._tracker.succeeded()

    def _follow(self) -> None:
        while not self._stop.is_set():
            why: Exception | str = "the stream ended"
            try:
                if self._stream is None:
                    self._connect()
                stream = self._stream
                assert stream is not None
                for event in stream:
                    if self._stop.is_set():
                        break
                    if event.action == "destroy":
                        self.forget(event.container_id)
                    else:
                        self.refresh(event.container_id)
                        self._look_again(event.container_id)
            except Exception as exc:  # a broken stream: reads list until it is back
                why = exc
            finally:
                with self._lock:
                    self._following = False
                self._stream = None
            if not self._stop.is_set():
                self._stop.wait(self._tracker.failed(why))

    def _look_again(self, container_id: str) -> None:
        now = time.monotonic()
        with self._wake:
            for delay in LOOK_AGAIN_SECONDS:
                heapq.heappush(self._due, (now + delay, container_id))
            self._wake.notify_all()

    def _audit(self) -> None:
        """The second looks after events, and the periodic full reconcile: labels are the
        truth, whatever the stream missed."""
        next_reconcile = time.monotonic() + self.reconcile_seconds
        while not self._stop.is_set():
            with self._wake:
                now = time.monotonic()
                until = min([next_reconcile, *(due for due, _ in self._due[:1])])
                if until > now:
                    self._wake.wait(until - now)
                    continue
                due = set()
                while self._due and self._due[0][0] <= now:
                    due.add(heapq.heappop(self._due)[1])
            for container_id in due:
                self.refresh(container_id)
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + self.reconcile_seconds
                self._reconcile_if_trusted()

    def _reconcile_if_trusted(self) -> None:
        if not self.trusted:
            return  # reads list anyway; the follower reconciles when it is back
        try:
            self.reconcile()
        except Ds01Error as exc:
            log.warning("periodic reconcile of the container ledger failed: %s", exc.message)


__all__ = [
    "CHANGES",
    "DEFAULT_RECONCILE_SECONDS",
    "LOOK_AGAIN_SECONDS",
    "ContainerLedger",
    "LedgerRuntime",
]
