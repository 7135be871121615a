"""``ObservedContainers``: the managed containers for observers, listed once per change.

The exporter and the dashboard ask for every container at each scrape or refresh. Docker's
list call is most of that cost (about 30 ms at 300 containers), and containers change far
less often than they are looked at. This keeps the last list and follows Docker's event
stream for managed containers: any event (create, start, die, stop, destroy, rename…) makes
the next caller list again. It is exact as long as the stream runs; while it does not
(Docker restarting, the stream broken), every caller lists afresh, and a kept list is never
older than ``max_age_seconds`` in any case. A broken stream is followed again after waits
that grow while Docker stays away, its loss and return logged once each
(``daemon.outage``).

Decisions never use it: allocation lists under the allocation lock (``Ds01Service.records``),
so a device is never given on the strength of a kept list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ds01.daemon.health import MAX_WAIT_SECONDS, PassTracker
from ds01.runtime.docker import ContainerRecord, EventStream

log = logging.getLogger(__name__)

#: Every container action Docker reports that can change what ``list_managed`` returns.
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
#: A kept list is listed again after this long even without events (seconds).
DEFAULT_MAX_AGE_SECONDS = 30.0


class Runtime(Protocol):
    def list_managed(self) -> list[ContainerRecord]: ...

    def container_events(
        self, actions: tuple[str, ...], since: float | None = None
    ) -> EventStream: ...


class ObservedContainers:
    """The managed containers, as of the last change Docker reported.

    Contract: :meth:`list_managed` may be called from any thread at any time and returns a
    list no older than the last event seen (and than ``max_age_seconds``); :meth:`start`
    begins following events in a daemon thread, :meth:`stop` ends it. Before ``start`` and
    while the stream is down, every call lists from Docker.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.max_age_seconds = max_age_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._generation = 0  # counts changes; a list is kept only if none came meanwhile
        self._following = False
        self._kept: tuple[int, float, list[ContainerRecord]] | None = None
        self._stop = threading.Event()
        self._stream: EventStream | None = None
        self._thread: threading.Thread | None = None
        # The follower reconnects, with growing waits, while Docker is away: its faults are
        # logged once, not at every try.
        self._tracker = PassTracker(
            "observed",
            "Docker's events (container lists for observers)",
            "observers list containers afresh at every call",
            interval=lambda: MAX_WAIT_SECONDS,
            logger=log,
        )

    def list_managed(self) -> list[ContainerRecord]:
        """Every managed container (one Docker list call, or none when nothing changed)."""
        with self._lock:
            generation, kept = self._generation, self._kept
            fresh = (
                self._following
                and kept is not None
                and kept[0] == generation
                and self._monotonic() - kept[1] < self.max_age_seconds
            )
            if fresh and kept is not None:
                return list(kept[2])
        records = self.runtime.list_managed()
        with self._lock:
            if self._generation == generation:  # no change while listing: keep it
                self._kept = (generation, self._monotonic(), records)
        return list(records)

    def changed(self) -> None:
        """Something changed: the next call lists again."""
        with self._lock:
            self._generation += 1
            self._kept = None

    # -- following Docker's events -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already following Docker's events")
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="ds01-observed", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            self._thread = None

    def _follow(self) -> None:
        while not self._stop.is_set():
            why: Exception | str = "the stream ended"
            try:
                self._stream = self.runtime.container_events(CHANGES)
                self._tracker.succeeded()
                with self._lock:
                    self._following = True
                self.changed()  # what happened before the stream began is unknown
                for _event in self._stream:
                    self.changed()
                    if self._stop.is_set():
                        break
            except Exception as exc:  # a broken stream: list afresh until it is back
                why = exc
            finally:
                with self._lock:
                    self._following = False
                self.changed()
            if not self._stop.is_set():
                self._stop.wait(self._tracker.failed(why))


__all__ = ["CHANGES", "ObservedContainers"]
