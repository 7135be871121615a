"""Whether a user may put one more request in the GPU queue. Pure; raises QuotaExceeded.

A request that fits the user's quota but finds no free device may wait in the queue; what
waits is bounded per user, so that one user cannot fill the queue (and the daemon's time)
for everyone:

- a waiting *create* will become a container, so it counts against ``max_containers``:
  the user's containers plus their waiting creates plus the new one must stay within it;
- ``max_queued`` (a ``policies:`` key, ``null`` = unlimited) bounds the user's waiting
  requests of both kinds, creates and starts, together.

A refusal names the waiting requests (at most :data:`SHOWN_REQUESTS` of them) and says how
to withdraw one: ``ds01 queue cancel ID``. The daemon decides under its allocation lock, so
two requests of one user cannot both take the last place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ds01.errors import QuotaExceeded

#: How many waiting requests a refusal lists by name.
SHOWN_REQUESTS = 5
CANCEL_HINT = "Withdraw one with `ds01 queue cancel ID` (`ds01 queue` lists yours)"


@dataclass(frozen=True)
class WaitingRequest:
    """One of the user's requests waiting in the queue."""

    id: str
    kind: Literal["create", "start"]
    container: str

    def describe(self) -> str:
        return f"{self.id} ({self.kind} {self.container!r})"


def _listed(waiting: Sequence[WaitingRequest]) -> str:
    shown = ", ".join(w.describe() for w in waiting[:SHOWN_REQUESTS])
    more = len(waiting) - SHOWN_REQUESTS
    return shown + (f" and {more} more" if more > 0 else "")


def check_queue_room(
    kind: Literal["create", "start"],
    containers: Sequence[str],
    waiting: Sequence[WaitingRequest],
    *,
    max_containers: int | None,
    max_queued: int | None,
) -> None:
    """Refuse one more waiting request of ``kind`` when it would exceed a limit.

    Args:
        kind: what the new request would do: create a container, or start a stopped one.
        containers: names of the user's existing containers.
        waiting: the user's requests waiting in the queue now (oldest first).
        max_containers: the user's ``max_containers`` (``None``: unlimited).
        max_queued: the user's ``max_queued`` (``None``: unlimited).

    Raises:
        QuotaExceeded: (exit 3) the message names the limit, the waiting requests and
            ``ds01 queue cancel ID``; ``details`` has ``limit``, ``key`` and ``waiting`` (ids).
    """
    creates = [w for w in waiting if w.kind == "create"]
    taken = len(containers) + len(creates)
    if kind == "create" and max_containers is not None and taken >= max_containers:
        have = f"{len(containers)} container(s)"
        if containers:
            more = len(containers) - SHOWN_REQUESTS
            names = ", ".join(containers[:SHOWN_REQUESTS])
            have += f" ({names}{f' and {more} more' if more > 0 else ''})"
        if creates:
            have += f" and {len(creates)} queued create(s): {_listed(creates)}"
            what_to_do = (
                "Remove a container with `container-remove NAME`, or withdraw a queued "
                "create with `ds01 queue cancel ID`."
            )
        else:
            what_to_do = "Remove one with `container-remove NAME`."
        raise QuotaExceeded(
            f"Container limit reached: {have}; max_containers is {max_containers}, and "
            f"a queued create counts as a container. {what_to_do}",
            details={
                "key": "max_containers",
                "limit": max_containers,
                "containers": len(containers),
                "waiting": [w.id for w in creates],
            },
        )
    if max_queued is not None and len(waiting) >= max_queued:
        if not waiting:
            message = "Your limits allow no requests in the queue (max_queued is 0). Ask an admin."
        else:
            message = (
                f"Queue limit reached: {len(waiting)} of your requests wait in the queue "
                f"(max_queued is {max_queued}): {_listed(waiting)}. {CANCEL_HINT}, or wait "
                "until one starts."
            )
        raise QuotaExceeded(
            message,
            details={"key": "max_queued", "limit": max_queued, "waiting": [w.id for w in waiting]},
        )
