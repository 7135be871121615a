"""Counters of what ds01d did, fed by its event log (``EventLog.subscribe``).

Counted since the daemon started (Prometheus counters: a restart is a reset, which
``rate()`` and ``increase()`` handle):

- lifecycle actions by kind, from the events the lifecycle loop writes: ``lifecycle.warn``
  (``warn_idle``, ``warn_runtime``, ``warn_reservation``: before a reservation's start or,
  for a holder over quota, its end), ``cleanup.idle`` (``stop_idle``),
  ``cleanup.runtime`` (``stop_runtime``), ``cleanup.reservation`` (``stop_reservation``)
  and ``cleanup.orphan`` (``cleanup``: a container removed after being stopped, or created
  and never started, for too long); and the queue pass's reclaim of borrowed containers:
  ``container.reclaim_warning`` (``warn_reclaim``) and ``container.reclaim``
  (``stop_reclaim``);
- how long queued requests waited before they started, from ``queue.start``
  (``waited_seconds``), as a histogram;
- OOM kills in ds01's containers, from ``resource.oom_kill`` (ds01d's OOM watcher).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ds01.core.container_resources import OOM_KILL_ACTION
from ds01.events.log import Event

#: Every lifecycle action kind, reported from the start (0 until it happens).
LIFECYCLE_ACTIONS = (
    "warn_idle",
    "warn_runtime",
    "warn_reservation",
    "stop_idle",
    "stop_runtime",
    "stop_reservation",
    "warn_reclaim",
    "stop_reclaim",
    "cleanup",
)

#: Upper bounds of the queue wait histogram's buckets, in seconds (10 s … 1 day).
QUEUE_WAIT_BUCKETS_SECONDS = (
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)


def lifecycle_action(action: str, details: Mapping[str, Any]) -> str | None:
    """The lifecycle action kind an event records, or ``None`` for other events."""
    if action == "lifecycle.warn":
        kind = details.get("kind")
        if kind == "reservation_end":  # a holder over quota before the end: a reservation's too
            return "warn_reservation"
        return f"warn_{kind}" if kind in ("idle", "runtime", "reservation") else None
    if action in ("cleanup.idle", "cleanup.runtime", "cleanup.reservation"):
        return "stop_" + action.removeprefix("cleanup.")
    if action == "cleanup.orphan":
        return "cleanup"
    if action == "container.reclaim_warning":
        return "warn_reclaim"
    if action == "container.reclaim":
        return "stop_reclaim"
    return None


@dataclass(frozen=True)
class WaitHistogram:
    """Queue waits: ``buckets`` are (upper bound in s, count of waits ≤ it), cumulative and
    ending with ``+Inf``; ``count`` waits summing to ``sum_seconds``."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum_seconds: float

    @classmethod
    def empty(cls) -> WaitHistogram:
        bounds = (*QUEUE_WAIT_BUCKETS_SECONDS, float("inf"))
        return cls(tuple((bound, 0) for bound in bounds), 0, 0.0)


@dataclass(frozen=True)
class Activity:
    """The counters at one moment."""

    lifecycle_actions: Mapping[str, int]
    queue_waits: WaitHistogram
    oom_kills: int = 0


class ActivityCounters:
    """Counts lifecycle actions, queue waits and OOM kills from events; thread-safe.

    Subscribe :meth:`observe` to the daemon's event log; read with :meth:`snapshot`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._actions: dict[str, int] = dict.fromkeys(LIFECYCLE_ACTIONS, 0)
        self._waits = [0] * (len(QUEUE_WAIT_BUCKETS_SECONDS) + 1)  # per bucket, +Inf last
        self._wait_sum = 0.0
        self._oom_kills = 0

    def observe(self, event: Event) -> None:
        """Count ``event`` if it is a lifecycle action, a queued request's start or an OOM
        kill."""
        if event.outcome != "success":
            return
        kind = lifecycle_action(event.action, event.details)
        if kind is not None:
            with self._lock:
                self._actions[kind] = self._actions.get(kind, 0) + 1
        elif event.action == "queue.start":
            waited = event.details.get("waited_seconds")
            if isinstance(waited, (int, float)) and waited >= 0:
                self.observe_wait(float(waited))
        elif event.action == OOM_KILL_ACTION:
            with self._lock:
                self._oom_kills += 1

    def observe_wait(self, seconds: float) -> None:
        """Count one queued request that started after waiting ``seconds``."""
        index = bisect.bisect_left(QUEUE_WAIT_BUCKETS_SECONDS, seconds)
        with self._lock:
            self._waits[index] += 1
            self._wait_sum += seconds

    def snapshot(self) -> Activity:
        with self._lock:
            actions = dict(self._actions)
            per_bucket = list(self._waits)
            wait_sum = self._wait_sum
            oom_kills = self._oom_kills
        bounds = (*QUEUE_WAIT_BUCKETS_SECONDS, float("inf"))
        cumulative, running = [], 0
        for bound, count in zip(bounds, per_bucket, strict=True):
            running += count
            cumulative.append((bound, running))
        waits = WaitHistogram(tuple(cumulative), running, wait_sum)
        return Activity(actions, waits, oom_kills)


__all__ = [
    "LIFECYCLE_ACTIONS",
    "QUEUE_WAIT_BUCKETS_SECONDS",
    "Activity",
    "ActivityCounters",
    "WaitHistogram",
    "lifecycle_action",
]
