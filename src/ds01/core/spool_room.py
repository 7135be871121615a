"""How much ds01d spools at once on its state disk (pure): the uploads it writes to a file
before they go on, build contexts (``docker build``, ``image-build``), ``docker cp`` into
a container and ``docker load``'s image tars.

Each spool file is bounded in size (gigabytes), and a compressed upload can fill one from
a body a thousand times smaller, so what bounds the disk is how many there are at once
and how much room is left: a user holds at most ``MAX_SPOOLS_PER_USER`` spool files
(from before the first byte is read until the file is closed: a copy passed on, a build's
context read by Docker), all users together ``MAX_SPOOLS``; and none is begun, nor grows,
while the file system holding them has less than ``MIN_FREE_BYTES`` free (looked at again
every ``CHECK_EVERY_BYTES`` written), so ds01's own state never runs out of room.
"""

from __future__ import annotations

from ds01.errors import NoSpace, Throttled
from ds01.model.units import format_bytes

#: Spool files one user may hold at once: two build contexts, or a context and a copy.
MAX_SPOOLS_PER_USER = 2
#: Spool files all users together may hold at once.
MAX_SPOOLS = 8
#: Free space the spools' file system keeps: none begins or grows below it.
MIN_FREE_BYTES = 2 * 1024**3
#: How often (in bytes written to one spool) the free space is looked at again.
CHECK_EVERY_BYTES = 64 * 1024**2


def spool_refusal(mine: int, in_all: int) -> Throttled | None:
    """Why a user holding ``mine`` spool files, of ``in_all`` held in all, may not begin
    another (HTTP 429); ``None`` when they may."""
    if mine >= MAX_SPOOLS_PER_USER:
        return Throttled(
            f"ds01 already holds {mine} uploads of yours (build contexts not yet handed to "
            f"Docker, copies or image loads in progress), the most one user may "
            f"({MAX_SPOOLS_PER_USER}). Wait for one to finish, then try again."
        )
    if in_all >= MAX_SPOOLS:
        return Throttled(
            f"ds01 holds {in_all} uploads (builds, copies, image loads) of all users, the "
            "most it holds at once. Try again in a few minutes."
        )
    return None


def space_refusal(free_bytes: int) -> NoSpace | None:
    """Why no spool may begin or grow while its file system has ``free_bytes`` free
    (HTTP 507); ``None`` when there is room."""
    if free_bytes >= MIN_FREE_BYTES:
        return None
    free = format_bytes(max(free_bytes, 0) // 2**20 * 2**20)  # whole MiB: short to read
    return NoSpace(
        f"The disk that holds ds01's state has {free} free, less than the "
        f"{format_bytes(MIN_FREE_BYTES)} ds01 keeps free, so it takes no upload (build "
        "context, copy, image load) now. Try again later, and tell an admin."
    )


__all__ = [
    "CHECK_EVERY_BYTES",
    "MAX_SPOOLS",
    "MAX_SPOOLS_PER_USER",
    "MIN_FREE_BYTES",
    "space_refusal",
    "spool_refusal",
]
