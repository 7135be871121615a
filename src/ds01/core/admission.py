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

A hub identity (a JupyterHub acting for many users, ``hub:`` in resource-limits.yaml) is one
uid for hundreds of users, so one user's caps would make all of them share 64 connections
and 8 workers. Its caps are its own (:class:`HubCaps`): more connections in all; within
them, each user it acts for is a party of its own (:func:`party_of`) with a user's share of
workers and at most ``user_requests`` requests open; and the hub's users together take at
most ``workers`` and ``waiting`` slots of each pool (a :class:`Group` of
:class:`WorkShares`), so one user behind the hub cannot starve the others and the hub
cannot starve local users. :func:`request_refusal` is the check a complete request passes
before it is handed to a pool.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
_K = TypeVar("_K", bound=Hashable)

#: Why a connection was not admitted.
ConnectionRefusal = Literal["per_uid", "total"]
#: Why a complete request was not handed to a pool.
RequestRefusal = Literal["waiting_per_uid", "hub_user_requests", "hub_waiting"]
#: Whom a request counts against in a pool: a uid, or (a hub's uid, the user it acts for).
Party = int | tuple[int, str]


@dataclass(frozen=True)
class HubCaps:
    """The caps of one hub identity's connections and requests (``hub:`` in
    resource-limits.yaml; see the module docstring).

    ``connections``: connections the hub holds at once, in place of a user's cap;
    ``user_requests``: requests one user behind the hub has open at once (being answered
    or waiting for a worker, in both pools); ``workers`` and ``waiting``: slots of the
    ordinary and the waiting pool the hub's users take together (each of them at most a
    user's share, as anyone).
    """

    connections: int
    user_requests: int
    workers: int
    waiting: int

    def __post_init__(self) -> None:
        if min(self.connections, self.user_requests, self.workers, self.waiting) < 1:
            raise ValueError(f"hub caps must be at least 1: {self}")


def party_of(uid: int, hub: HubCaps | None, on_behalf_of: str | None) -> Party:
    """Whom a request of ``uid`` counts against: the user a hub acts for, as a party of the
    hub's own; anyone else's request (a user naming someone is refused later) the uid."""
    if hub is None or not on_behalf_of:
        return uid
    return (uid, on_behalf_of)


@dataclass(frozen=True)
class Group:
    """Parties whose jobs run together in at most ``slots`` slots of a pool (a hub's users),
    named by ``name`` (the hub's uid)."""

    name: int
    slots: int


def request_refusal(
    *,
    waits: bool,
    per_uid: int,
    lane_load: int,
    open_requests: int,
    hub: HubCaps | None,
    hub_waiting_load: int,
) -> RequestRefusal | None:
    """Whether a complete request of a party is refused before it reaches a pool, and why.

    ``waits``: it goes to the waiting pool, where a party may have ``per_uid`` requests
    (``lane_load`` it has there now); ``open_requests``: the party's requests in both pools;
    ``hub``: the caps of the hub it comes through (``None``: no hub), whose users hold
    ``hub_waiting_load`` waiting requests together. Ordinary requests are never refused
    here but by a hub's cap: they wait for their turn (fair between parties).
    """
    if hub is not None and open_requests >= hub.user_requests:
        return "hub_user_requests"
    if waits and lane_load >= per_uid:
        return "waiting_per_uid"
    if waits and hub is not None and hub_waiting_load >= hub.waiting:
        return "hub_waiting"
    return None


class ConnectionTable:
    """Open connections per uid, with a per-uid and a total cap.

    Contract: ``admit`` either counts the connection (``None``) or says which cap refused
    it and counts nothing; every admitted connection is released exactly once. ``admit``'s
    ``cap`` replaces the per-uid cap for that uid (a hub identity's own).
    """

    def __init__(self, per_uid: int, total: int) -> None:
        if per_uid < 1 or total < 1:
            raise ValueError("connection caps must be at least 1")
        self.per_uid = per_uid
        self.total = total
        self._open: dict[int, int] = {}
        self._count = 0

    def admit(self, uid: int, cap: int | None = None) -> ConnectionRefusal | None:
        if self._open.get(uid, 0) >= (self.per_uid if cap is None else cap):
            return "per_uid"
        if self._count >= self.total:
            return "total"
        self._open[uid] = self._open.get(uid, 0) + 1
        self._count += 1
        return None

    def release(self, uid: int) -> None:
        if uid not in self._open:
            raise ValueError(f"uid {uid} holds no connection to release")
        _count_down(self._open, uid)
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
    """Ready jobs per party (a uid, or a user behind a hub: :data:`Party`) and the slots
    they run in; ``take`` chooses the next one fairly.

    Invariants (property-tested): running jobs never exceed ``share.slots``; one party never
    runs more than ``share.per_uid``; unprivileged jobs never take more than ``share.slots -
    share.reserved`` slots; the parties of one :class:`Group` never run more than its
    ``slots`` together; ``take`` returns a job whenever one is allowed to run (no slot stays
    empty while a job may use it); parties with ready jobs are served round-robin, and one
    party's jobs in the order they came.
    """

    def __init__(self, share: Share) -> None:
        self.share = share
        self._ready: dict[Party, deque[tuple[T, bool]]] = {}
        self._turns: deque[Party] = deque()  # parties with ready jobs, the next to serve first
        self._running: dict[Party, int] = {}
        self._busy = 0
        self._busy_unprivileged = 0
        self._group_of: dict[Party, Group] = {}  # parties in a group, while they have jobs
        self._group_running: dict[int, int] = {}
        self._group_load: dict[int, int] = {}  # running and ready, per group

    def submit(
        self, party: Party, job: T, *, privileged: bool = False, group: Group | None = None
    ) -> None:
        """Add a job of ``party`` (of ``group``, whose latest ``slots`` then apply)."""
        queue = self._ready.get(party)
        if queue is None:
            queue = self._ready[party] = deque()
            self._turns.append(party)
        queue.append((job, privileged))
        if group is not None:
            self._group_of[party] = group
            self._group_load[group.name] = self._group_load.get(group.name, 0) + 1

    def take(self) -> tuple[Party, T, bool] | None:
        """The next job allowed to run now (counted as running) as (party, job,
        privileged), or ``None``."""
        if self._busy >= self.share.slots:
            return None
        open_to_all = self._busy_unprivileged < self.share.slots - self.share.reserved
        for _ in range(len(self._turns)):
            party = self._turns[0]
            self._turns.rotate(-1)
            if self._running.get(party, 0) >= self.share.per_uid:
                continue
            group = self._group_of.get(party)
            if group is not None and self._group_running.get(group.name, 0) >= group.slots:
                continue
            queue = self._ready[party]
            job, privileged = queue[0]
            if not (open_to_all or privileged):
                continue
            queue.popleft()
            if not queue:
                del self._ready[party]
                self._turns.remove(party)
            self._running[party] = self._running.get(party, 0) + 1
            self._busy += 1
            self._busy_unprivileged += not privileged
            if group is not None:
                self._group_running[group.name] = self._group_running.get(group.name, 0) + 1
            return party, job, privileged
        return None

    def done(self, party: Party, *, privileged: bool = False) -> None:
        """A job of ``party`` that ``take`` returned (with ``privileged``) has finished."""
        if party not in self._running:
            raise ValueError(f"{party} runs no job")
        left = _count_down(self._running, party)
        self._busy -= 1
        self._busy_unprivileged -= not privileged
        group = self._group_of.get(party)
        if group is not None:
            _count_down(self._group_running, group.name)
            _count_down(self._group_load, group.name)
            if not left and party not in self._ready:
                del self._group_of[party]

    def running(self, party: Party | None = None) -> int:
        """Jobs running (of ``party``, or of everyone)."""
        return self._busy if party is None else self._running.get(party, 0)

    def waiting(self, party: Party | None = None) -> int:
        """Jobs ready but not running (of ``party``, or of everyone)."""
        if party is not None:
            return len(self._ready.get(party, ()))
        return sum(len(q) for q in self._ready.values())

    def group_load(self, name: int) -> int:
        """Jobs running or ready of the parties of group ``name``."""
        return self._group_load.get(name, 0)


def _count_down(counts: dict[_K, int], key: _K) -> int:
    """One less for ``key`` (which must have one), dropped at zero; what is left."""
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
    return left


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
    "Group",
    "HubCaps",
    "Notice",
    "Party",
    "RefusalNotices",
    "RequestRefusal",
    "Share",
    "WorkShares",
    "party_of",
    "request_refusal",
]
