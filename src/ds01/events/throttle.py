"""Rate-limit repeated refusals per user in the audit log, counting what is left out. Pure.

A user can send refused requests as fast as the socket answers (a 4,000-character path,
500 times a second); each used to be one event. :class:`RefusalThrottle` lets through, per
user and per *window* of ``window_seconds``, at most ``per_action`` refusals of each action
and ``per_user`` refusals in all; the others are counted, not written. When the window ends
(or at shutdown, :meth:`RefusalThrottle.drain`) what was left out becomes one summary: an
``audit.suppressed`` event with the count per action and the times of the first and last
refusal left out. Nothing is lost silently: every refusal is either an event or counted in
exactly one summary.

A user's window opens at their first refusal after the previous window ended, so a user
who is refused now and then never loses an event. The caller (``EventLog``) asks for the
summaries that are due (:meth:`RefusalThrottle.due`) before each event and from a timer at
:meth:`RefusalThrottle.next_due`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: The action of a summary event.
SUPPRESSED_ACTION = "audit.suppressed"

DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_PER_ACTION = 10
DEFAULT_PER_USER = 30


@dataclass(frozen=True)
class Suppressed:
    """The refusals of one user left out of the log in one window.

    Attributes:
        user: whose refusals.
        counts: per action, how many were left out (every count ≥ 1).
        first: when the first one left out happened; ``last``: the last one.
        window_seconds, per_action, per_user: the limits that applied.
    """

    user: str
    counts: dict[str, int]
    first: datetime
    last: datetime
    window_seconds: float
    per_action: int
    per_user: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def details(self) -> dict[str, Any]:
        """The ``details`` of the summary event."""
        return {
            "suppressed": self.total,
            "counts": dict(sorted(self.counts.items())),
            "first_ts": self.first.isoformat(timespec="milliseconds"),
            "last_ts": self.last.isoformat(timespec="milliseconds"),
            "window_seconds": self.window_seconds,
            "per_action": self.per_action,
            "per_user": self.per_user,
        }


@dataclass
class _Window:
    end: datetime
    written: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None


class RefusalThrottle:
    """Which refusals to write (see the module docstring). Not thread-safe: the event log
    calls it under its own lock.

    Args:
        window_seconds: length of a user's window (> 0).
        per_action: refusals of one action written per user and window (≥ 1).
        per_user: refusals written per user and window, all actions together (≥ 1).

    Raises:
        ValueError: a limit is out of range.
    """

    def __init__(
        self,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        per_action: int = DEFAULT_PER_ACTION,
        per_user: int = DEFAULT_PER_USER,
    ) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be more than 0, got {window_seconds}")
        if per_action < 1 or per_user < 1:
            raise ValueError(
                f"per_action and per_user must be 1 or more, got {per_action}, {per_user}"
            )
        self.window = timedelta(seconds=window_seconds)
        self.per_action = per_action
        self.per_user = per_user
        self._windows: dict[str, _Window] = {}

    def admit(self, user: str, action: str, now: datetime) -> bool:
        """Whether to write this refusal of ``user``; if not, it is counted for the summary.

        Call :meth:`due` first, so that a window that ended is summed up before the next
        one opens.
        """
        window = self._windows.get(user)
        if window is None or now >= window.end:
            fresh = _Window(end=now + self.window)
            if window is not None:  # due() was not called: keep what it left out
                fresh.suppressed, fresh.first, fresh.last = (
                    window.suppressed, window.first, window.last
                )
            window = self._windows[user] = fresh
        written_total = sum(window.written.values())
        if window.written[action] < self.per_action and written_total < self.per_user:
            window.written[action] += 1
            return True
        window.suppressed[action] += 1
        window.first = window.first or now
        window.last = now
        return False

    def due(self, now: datetime) -> list[Suppressed]:
        """Summaries of the windows that ended by ``now``, oldest first; those windows are
        forgotten (their users start afresh)."""
        ended = [user for user, window in self._windows.items() if now >= window.end]
        return self._take(sorted(ended, key=lambda user: self._windows[user].end))

    def drain(self) -> list[Suppressed]:
        """Summaries of every window with refusals left out, ended or not (at shutdown)."""
        return self._take(sorted(self._windows, key=lambda user: self._windows[user].end))

    def next_due(self) -> datetime | None:
        """When the next summary is due: the earliest end of a window that left refusals
        out (``None``: none did)."""
        ends = [w.end for w in self._windows.values() if w.suppressed]
        return min(ends) if ends else None

    def _take(self, users: list[str]) -> list[Suppressed]:
        summaries = []
        for user in users:
            window = self._windows.pop(user)
            if window.suppressed:
                assert window.first is not None and window.last is not None
                summaries.append(
                    Suppressed(
                        user=user,
                        counts=dict(window.suppressed),
                        first=window.first,
                        last=window.last,
                        window_seconds=self.window.total_seconds(),
                        per_action=self.per_action,
                        per_user=self.per_user,
                    )
                )
        return summaries

