"""How ds01d's background loops are doing: one place that logs their faults and keeps score.

Every loop (lifecycle, energy, disk measurement, GPU queue, OOM scan, and the followers of
Docker's event stream) reports each pass to a :class:`PassTracker`:

- the first failure of an outage is logged (ERROR; a ``Ds01Error`` that is no system fault
  at WARNING), another reason later in the same outage once at INFO ("still failing,
  now: …"), with a traceback only the first time an unexpected exception is seen; further
  failures are counted silently, so a loop that fails every two seconds for an hour writes
  one line, not two thousand tracebacks;
- the first pass that succeeds again logs once, at INFO, how many attempts failed since
  when, and calls ``on_back`` (e.g. settle what an outage of Docker left half-done);
- :meth:`PassTracker.failed` says how long to wait before the next try: a stream that
  reconnects waits ``first_wait_seconds``, doubling up to ``max_wait_seconds``, so an engine
  that is restarting is not hammered;
- the time of the last success (monotonic) and the current fault are kept for
  ``ds01 admin doctor`` (:meth:`PassTracker.health`, :class:`LoopRegistry`), which calls
  a loop stalled when its last success is several intervals old.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ds01.errors import Ds01Error, SystemFault
from ds01.events.log import utc_now

#: Distinct faults logged in one outage; beyond them failures are only counted.
MAX_DISTINCT_FAULTS = 10
#: The first wait after a failure, and the longest one (seconds).
FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class LoopHealth:
    """One loop's health at one moment, for ``ds01 admin doctor``.

    ``since_success_seconds`` is ``None`` while no pass has succeeded since the loop started
    (``running_seconds`` ago); ``fault`` is the latest failure's message while the latest
    pass failed, ``None`` once one succeeded; ``failures`` counts the failed passes since the
    last success, the first of them at ``fault_since`` (UTC).
    """

    check: str
    work: str
    consequence: str
    interval_seconds: float
    running_seconds: float
    since_success_seconds: float | None
    failures: int
    fault: str | None
    fault_since: datetime | None


class PassTracker:
    """Logs one loop's faults once and its recovery once, and remembers its last success.

    Contract: the loop calls :meth:`started` when it starts, then :meth:`succeeded` or
    :meth:`failed` after every pass (from one thread); :meth:`health` may be called from any
    thread. Nothing here raises.

    Args:
        check: the doctor's name for the loop ("lifecycle", "queue", …).
        work: what one pass is called in messages ("lifecycle pass").
        consequence: what goes undone while the passes fail ("queued requests do not start").
        interval: the loop's current interval in seconds (asked when health is read).
        logger: where faults and recoveries go (the loop's own module logger).
        on_back: called once each time the loop works again after failing (its failure is
            logged, never raised).
        first_wait_seconds, max_wait_seconds: the back-off :meth:`failed` returns.
        monotonic, wall: clocks (injected by tests).
    """

    def __init__(
        self,
        check: str,
        work: str,
        consequence: str,
        *,
        interval: Callable[[], float],
        logger: logging.Logger,
        on_back: Callable[[], object] | None = None,
        first_wait_seconds: float = FIRST_WAIT_SECONDS,
        max_wait_seconds: float = MAX_WAIT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        self.check = check
        self.work = work
        self.consequence = consequence
        self._interval = interval
        self._log = logger
        self._on_back = on_back
        self._first_wait = first_wait_seconds
        self._max_wait = max_wait_seconds
        self._wait = 0.0
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._started = monotonic()
        self._last_success: float | None = None
        self._failures = 0
        self._fault: str | None = None
        self._fault_since: datetime | None = None
        self._logged: set[str] = set()  # faults of the current outage already logged
        self._traceback_logged = False  # one traceback per outage is enough

    def started(self) -> None:
        """The loop (re)starts: its age counts from now."""
        with self._lock:
            self._started = self._monotonic()

    def succeeded(self) -> None:
        """A pass succeeded; after failures, say once that the loop recovered and call
        ``on_back``."""
        with self._lock:
            failures, fault, since = self._failures, self._fault, self._fault_since
            self._last_success = self._monotonic()
            self._failures = 0
            self._fault = self._fault_since = None
            self._logged.clear()
            self._traceback_logged = False
            self._wait = 0.0
        if not failures:
            return
        self._log.info(
            "%s recovered after %d failed attempt(s) since %s (last fault: %s)",
            self.work,
            failures,
            _clock_time(since),
            fault,
        )
        if self._on_back is not None:
            try:
                self._on_back()
            except Exception:  # the loop goes on; what could not be done is tried next time
                self._log.exception("%s: catching up after the outage failed", self.work)

    def failed(self, exc: BaseException | str) -> float:
        """A pass failed with ``exc`` (or a reason in words, e.g. "the stream ended"): log it
        if this fault is new in the current outage. Returns the seconds to wait before the
        next try (the back-off)."""
        expected = not isinstance(exc, BaseException) or isinstance(exc, Ds01Error)
        if isinstance(exc, Ds01Error):
            message = exc.message
        elif isinstance(exc, BaseException):
            message = f"{type(exc).__name__}: {exc}"
        else:
            message = exc
        with self._lock:
            first = self._failures == 0
            self._failures += 1
            self._fault = message
            if self._fault_since is None:
                self._fault_since = self._wall()
            new = message not in self._logged and len(self._logged) < MAX_DISTINCT_FAULTS
            if new:
                self._logged.add(message)
            with_traceback = new and not expected and not self._traceback_logged
            self._traceback_logged |= with_traceback
            self._wait = min(self._wait * 2, self._max_wait) if self._wait else self._first_wait
            wait = self._wait
        traceback = exc if with_traceback and isinstance(exc, BaseException) else None
        if new and first:
            system = isinstance(exc, SystemFault)
            level = logging.WARNING if expected and not system else logging.ERROR
            self._log.log(
                level,
                "%s failed (repeats are not logged until it recovers): %s",
                self.work,
                message,
                exc_info=traceback,
            )
        elif new:  # the same outage, another reason (Docker's stream ended, then Docker went)
            self._log.info("%s still failing, now: %s", self.work, message, exc_info=traceback)
        return wait

    def health(self) -> LoopHealth:
        """The loop's health now."""
        now = self._monotonic()
        with self._lock:
            return LoopHealth(
                check=self.check,
                work=self.work,
                consequence=self.consequence,
                interval_seconds=self._interval(),
                running_seconds=max(now - self._started, 0.0),
                since_success_seconds=(
                    None if self._last_success is None else max(now - self._last_success, 0.0)
                ),
                failures=self._failures,
                fault=self._fault,
                fault_since=self._fault_since,
            )


class LoopRegistry:
    """The trackers of the loops that run in this ds01d, in the order they were added."""

    def __init__(self) -> None:
        self._trackers: list[PassTracker] = []

    def add(self, tracker: PassTracker) -> None:
        self._trackers.append(tracker)

    def health(self) -> list[LoopHealth]:
        return [t.health() for t in self._trackers]

    def checks(self) -> set[str]:
        return {t.check for t in self._trackers}


def _clock_time(moment: datetime | None) -> str:
    return "?" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


__all__ = [
    "FIRST_WAIT_SECONDS",
    "MAX_DISTINCT_FAULTS",
    "MAX_WAIT_SECONDS",
    "LoopHealth",
    "LoopRegistry",
    "PassTracker",
]
