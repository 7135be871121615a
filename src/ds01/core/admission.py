"""Who gets a connection and a worker of ds01d, fairly between users. Pure: no threads, no I/O.

ds01d serves every local user over one socket, so one user must not be able to take all of
it (issue: 3,000 idle connections of one user held 3,008 threads). Three decisions, each a
small state machine the daemon drives under its own lock:

- :class:`ConnectionTable`: how many connections each uid holds; a new one is admitted only
  under the per-uid cap and the total cap (decided at accept, from ``SO_PEERCRED``, before
  anything else is spent on it).
- :class:`WorkShares`: which ready request runs next on a bounded pool of workers. A uid
  never runs more than its share at once, so the others always find a worker; a few slots
  are kept for privileged callers (root and admins); among uids the next request is taken
  round-robin, and within one uid in arrival order.
- :class:`RefusalNotices`: refusals are counted per (uid, reason) and reported at most once
  per interval, with the number suppressed since, so a flood of refused connections makes
  one log line a minute, not one (or a traceback) each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

#: Why a connection was not admitted.
ConnectionRefusal = Literal["per_uid", "total"]


class ConnectionTable:
    """Open connections per uid, with a per-uid and a total cap.

    Contract: ``admit`` either counts the connection (``None``) or says which cap refused
    it and counts nothing; every admitted connection is released exactly once.
    """

    def __init__(self, per_uid: int, total: int) -> None:
        if per_uid < 1 or total < 1:
            raise ValueError("connection caps must be at least 1")
        self.per_uid = per_uid
        self.total = total
        self._open: dict[int, int] = {}
        self._count = 0

    def admit(self, uid: int) -> ConnectionRefusal | None:
        if self._open.get(uid, 0) >= self.per_uid:
            return "per_uid"
        if self._count >= self.total:
            return "total"
        self._open[uid] = self._open.get(uid, 0) + 1
        self._count += 1
        return None

    def release(self, uid: int) -> None:
        left = self._open.get(uid, 0) - 1
        if left < 0:
            raise ValueError(f"uid {uid} holds no connection to release")
        if left:
            self._open[uid] = left
        else:
            del self._open[uid]
        self._count -= 1

    def held(self, uid: int) -> int:
        return self._open.get(uid, 0)

    @property
    def count(self) -> int:
        return self._count


@dataclass(frozen=True)
class Share:
    """The limits of one pool of workers.

    ``slots``: workers in all; ``per_uid``: the most one uid runs at once; ``reserved``:
    slots only privileged callers may take (so an admin finds a worker when users filled
    the rest). ``per_uid`` must leave room for others: at most ``slots - reserved``.
    """

    slots: int
    per_uid: int
    reserved: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.per_uid <= self.slots - self.reserved or self.reserved < 0:
            raise ValueError(f"inconsistent worker share {self}")


class WorkShares(Generic[T]):
    """Ready jobs per uid and the slots they run in; ``take`` chooses the next one fairly.

    Invariants (property-tested): running jobs never exceed ``share.slots``; one uid never
    runs more than ``share.per_uid``; unprivileged jobs never take more than ``share.slots -
    share.reserved`` slots; ``take`` returns a job whenever one is allowed to run (no slot
    stays empty while a job may use it); uids with ready jobs are served round-robin, and
    one uid's jobs in the order they came.
    """

    def __init__(self, share: Share) -> None:
        self.share = share
        self._ready: dict[int, deque[tuple[T, bool]]] = {}
        self._turns: deque[int] = deque()  # uids with ready jobs, the next to serve first
        self._running: dict[int, int] = {}
        self._busy = 0
        self._busy_unprivileged = 0

    def submit(self, uid: int, job: T, *, privileged: bool = False) -> None:
        queue = self._ready.get(uid)
        if queue is None:
            queue = self._ready[uid] = deque()
            self._turns.append(uid)
        queue.append((job, privileged))

    def take(self) -> tuple[int, T, bool] | None:
        """The next job allowed to run now (counted as running) as (uid, job, privileged),
        or ``None``."""
        if self._busy >= self.share.slots:
            return None
        open_to_all = self._busy_unprivileged < self.share.slots - self.share.reserved
        for _ in range(len(self._turns)):
            uid = self._turns[0]
            self._turns.rotate(-1)
            if self._running.get(uid, 0) >= self.share.per_uid:
                continue
            queue = self._ready[uid]
            job, privileged = queue[0]
            if not (open_to_all or privileged):
                continue
            queue.popleft()
            if not queue:
                del self._ready[uid]
                self._turns.remove(uid)
            self._running[uid] = self._running.get(uid, 0) + 1
            self._busy += 1
            self._busy_unprivileged += not privileged
            return uid, job, privileged
        return None

    def done(self, uid: int, *, privileged: bool = False) -> None:
        """A job of ``uid`` that ``take`` returned (with ``privileged``) has finished."""
        left = self._running.get(uid, 0) - 1
        if left < 0:
            raise ValueError(f"uid {uid} runs no job")
        if left:
            self._running[uid] = left
        else:
            del self._running[uid]
        self._busy -= 1
        self._busy_unprivileged -= not privileged

    def running(self, uid: int | None = None) -> int:
        """Jobs running (of ``uid``, or of everyone)."""
        return self._busy if uid is None else self._running.get(uid, 0)

    def waiting(self, uid: int | None = None) -> int:
        """Jobs ready but not running (of ``uid``, or of everyone)."""
        if uid is not None:
            return len(self._ready.get(uid, ()))
        return sum(len(q) for q in self._ready.values())


@dataclass(frozen=True)
class Notice:
    """What to report now about a (key, reason): this refusal and those suppressed since
    the last report (``count`` includes this one)."""

    key: Hashable
    reason: str
    count: int


class RefusalNotices:
    """Counts refusals per (key, reason); ``refused`` returns a :class:`Notice` at most once
    per ``interval_s`` per pair (the first refusal at once), ``None`` otherwise."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple[Hashable, str], float] = {}
        self._suppressed: dict[tuple[Hashable, str], int] = {}

    def refused(self, key: Hashable, reason: str, now_s: float) -> Notice | None:
        pair = (key, reason)
        last = self._last.get(pair)
        if last is not None and now_s - last < self.interval_s:
            self._suppressed[pair] = self._suppressed.get(pair, 0) + 1
            return None
        self._last[pair] = now_s
        count = self._suppressed.pop(pair, 0) + 1
        if len(self._last) > 4096:  # forget pairs quiet for longer than the interval
            self._last = {p: t for p, t in self._last.items() if now_s - t < self.interval_s}
        return Notice(key, reason, count)


__all__ = [
    "ConnectionRefusal",
    "ConnectionTable",
    "Notice",
    "RefusalNotices",
    "Share",
    "WorkShares",
]
