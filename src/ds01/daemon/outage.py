"""``Outage``: what a repeating part of ds01d logs while something it needs is away.

When Docker stops, every stream of events ds01d follows breaks and every periodic pass
fails, each again and again until Docker is back. Logging each failure writes a line a
second saying the same thing; retrying at once hammers an engine that is restarting. An
``Outage`` logs the loss once (with the first reason), the return once (``back after N s``),
and says how long to wait before the next try: ``first_wait_seconds``, doubling after each
failure up to ``max_wait_seconds``. Failures in between are logged at debug level only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ds01.core.units import format_duration

log = logging.getLogger(__name__)

#: The first wait after a failure, and the longest one (seconds).
FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 30.0


class Outage:
    """The state of one repeating task's outage (not thread-safe: one task, one thread).

    Args:
        what: what fails, for the log ("Docker's events (OOM watch)", "lifecycle pass").
        on_back: called once each time the task works again after failing (its failure is
            logged, never raised).
        monotonic: seconds on a clock that never jumps.
    """

    def __init__(
        self,
        what: str,
        *,
        on_back: Callable[[], object] | None = None,
        first_wait_seconds: float = FIRST_WAIT_SECONDS,
        max_wait_seconds: float = MAX_WAIT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._on_back = on_back
        self._first = first_wait_seconds
        self._max = max_wait_seconds
        self._monotonic = monotonic
        self._since: float | None = None
        self._wait = 0.0

    @property
    def ongoing(self) -> bool:
        """Whether the task failed last time."""
        return self._since is not None

    def failed(self, why: str, *, unexpected: bool = False) -> float:
        """The task failed (``why``: plain words); returns the seconds to wait before the
        next try. The first failure of an outage is logged as a warning (``unexpected``:
        an error, with the traceback being handled), later ones at debug level."""
        if self._since is None:
            self._since = self._monotonic()
            self._wait = self._first
            log.log(
                logging.ERROR if unexpected else logging.WARNING,
                "%s unavailable: %s (logged again when back)",
                self.what,
                why,
                exc_info=unexpected,
            )
        else:
            self._wait = min(self._wait * 2, self._max)
            log.debug("%s still unavailable: %s", self.what, why)
        return self._wait

    def worked(self) -> None:
        """The task worked: ends an outage (logged once, then ``on_back``)."""
        if self._since is None:
            return
        lasted = self._monotonic() - self._since
        self._since = None
        log.warning("%s back after %s", self.what, format_duration(lasted))
        if self._on_back is not None:
            try:
                self._on_back()
            except Exception:  # the task goes on; what could not be done is tried next time
                log.exception("%s: catching up after the outage failed", self.what)


__all__ = ["FIRST_WAIT_SECONDS", "MAX_WAIT_SECONDS", "Outage"]
