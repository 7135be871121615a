"""Disk limits as pure decisions: can the storage driver enforce them, and when is a container
(or a user's set of containers) warned, then stopped, for the disk space it holds.

A container holds disk space outside its mounts in two places: its own filesystem layer
(what it writes to ``/``, ``/tmp``, ``/root``…: Docker's *writable layer*) and the anonymous
volumes its image declares (``VOLUME``). ``/workspace`` and ``/data`` are the user's own host
directories, bound by the host's quotas, not by ``disk_limit``.

**Modes.** Where Docker's storage driver can cap a container's layer (``--storage-opt
size=``: overlay2 over xfs mounted with project quotas, devicemapper, btrfs with quotas,
zfs), ds01 gives every container its ``disk_limit`` as that size: a write past it fails
with "No space left on device" (:func:`driver_can_enforce` says whether the driver may; a
probe container tells whether it really does). Everywhere else the size is *measured*: the
lifecycle loop compares each container's measured use with its limit. The aggregate
(``aggregate.disk_limit``, the sum over all the user's containers, running or stopped) is
measured in both modes: no driver caps a sum.

**Warn, then stop** (:func:`decide_disk`), like idle reclaim, per container and per user
total, at each loop pass with the latest measurement:

- below ``disk_warning_fraction`` of the limit: nothing (and the warnings re-arm);
- at or above it, below the limit: one warning (level 1), no stop planned;
- at or above the limit: one warning (level 2) with the stop time, ``disk_grace_minutes``
  after the first measurement over the limit; at or after that time, a stop (of the
  container, or of every running container of the user for the total), unless a
  measurement under the limit came first. No warning is sent in a pass that stops.

Stopping frees no space; it stops the growth. A container over its limit (or a user over
the total) is not started again until the use is back under it: the owner removes the
container (``/workspace`` is kept) or an admin raises the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, TypeAlias

_UNITS = ("K", "M", "G", "T", "P")


def human_bytes(n: int) -> str:
    """A measured size for people, 1024-based, to three figures: ``"41.2M"``, ``"512K"``,
    ``"980"`` (bytes). Limits are shown exactly with ``format_bytes``."""
    value, suffix = float(n), ""
    for unit in _UNITS:
        if value < 1024:
            break
        value, suffix = value / 1024, unit
    if not suffix:
        return str(n)
    return f"{value:.3g}{suffix}" if value < 1000 else f"{value:.0f}{suffix}"


#: Storage drivers whose ``--storage-opt size=`` caps a container's writable layer, with the
#: condition under which it does (checked by a probe).
ENFORCING_DRIVERS: dict[str, str] = {
    "overlay2": "over xfs mounted with project quotas (pquota)",
    "devicemapper": "always (the size must be at least the base device size)",
    "btrfs": "with btrfs quotas enabled",
    "zfs": "always",
}

#: Which limit a warning or stop is about: one container's, or the user's total.
DiskScope = Literal["container", "total"]

Mode = Literal["enforced", "measured"]


def driver_can_enforce(driver: str, backing_filesystem: str | None) -> tuple[bool, str]:
    """Whether storage driver ``driver`` (on ``backing_filesystem``, as ``docker info``
    reports them) may cap a container's layer, and why (or why not), in one sentence.

    ``True`` only says that a probe is worth making: overlay2 over xfs also needs the
    ``pquota`` mount option, btrfs needs quotas enabled.
    """
    where = f"Docker's storage driver is {driver or 'unknown'}"
    if backing_filesystem:
        where += f" on {backing_filesystem}"
    if driver not in ENFORCING_DRIVERS:
        return False, f"{where}, which cannot limit a container's size"
    if driver == "overlay2" and (backing_filesystem or "").lower() != "xfs":
        return False, (
            f"{where}: overlay2 limits a container's size only over xfs mounted with "
            "project quotas (pquota)"
        )
    return True, f"{where}, which limits a container's size {ENFORCING_DRIVERS[driver]}"


@dataclass(frozen=True)
class DiskClock:
    """What the loop keeps per container (or per user, for the total) between passes.

    Attributes:
        over_since: the first measurement at or over the limit since it was last under it;
            ``None`` = under the limit.
        warning_level: warnings sent since it was last below the warning fraction (0 =
            none, 1 = near the limit, 2 = over the limit).
    """

    over_since: datetime | None = None
    warning_level: int = 0


@dataclass(frozen=True)
class DiskWarn:
    """Tell the owner that the disk use is near (level 1) or over (level 2) the limit.

    ``stop_at``: when the stop is due if the use stays over the limit (level 2 only).
    """

    scope: DiskScope
    level: int
    used_bytes: int
    limit_bytes: int
    stop_at: datetime | None

    def describe(self) -> str:
        """E.g. ``"uses 19G of its disk limit of 20G"`` (a container), ``"hold 95G of your
        disk total of 100G"`` (the total)."""
        used, limit = human_bytes(self.used_bytes), human_bytes(self.limit_bytes)
        if self.scope == "container":
            return f"uses {used} of its disk limit of {limit}"
        return f"hold {used} of your disk total of {limit}"


@dataclass(frozen=True)
class DiskStop:
    """Stop the container (``scope`` container) or the user's running containers (total)."""

    scope: DiskScope
    used_bytes: int
    limit_bytes: int
    reason: str


#: What :func:`decide_disk` asks the loop to do.
DiskAction: TypeAlias = DiskWarn | DiskStop


def over_limit_reason(scope: DiskScope, used_bytes: int, limit_bytes: int) -> str:
    """One sentence: what is over which limit (for stops and refused starts)."""
    used, limit = human_bytes(used_bytes), human_bytes(limit_bytes)
    if scope == "container":
        return f"Its own filesystem holds {used} of disk, above its disk limit of {limit}"
    return f"Your containers hold {used} of disk together, above your disk total of {limit}"


def decide_disk(
    clock: DiskClock,
    used_bytes: int | None,
    limit_bytes: int | None,
    now: datetime,
    *,
    warning_fraction: float,
    grace: timedelta,
    running: bool,
    scope: DiskScope,
) -> tuple[DiskClock, DiskAction | None]:
    """The clock after a measurement of ``used_bytes`` at ``now``, and what to do (module
    docstring).

    Args:
        clock: the state after the previous pass.
        used_bytes: the latest measurement; ``None`` = not measured yet (nothing changes).
        limit_bytes: the limit; ``None`` = unlimited (the clock is reset).
        warning_fraction: the part of the limit at which the first warning is sent, (0, 1].
        grace: time from the first measurement over the limit to the stop.
        running: whether there is something to stop (a stopped container is never warned
            or stopped, but its clock goes on: it may not start while over).
        scope: which limit this is.
    """
    if limit_bytes is None:
        return DiskClock(), None
    if used_bytes is None:
        return clock, None
    if used_bytes < limit_bytes * warning_fraction:
        return DiskClock(), None
    if used_bytes < limit_bytes:
        clock = DiskClock(over_since=None, warning_level=min(clock.warning_level, 1))
        if not running or clock.warning_level >= 1:
            return clock, None
        warn = DiskWarn(scope, 1, used_bytes, limit_bytes, None)
        return replace(clock, warning_level=1), warn
    over_since = clock.over_since if clock.over_since is not None else now
    clock = replace(clock, over_since=over_since)
    if not running:
        return clock, None
    stop_at = over_since + grace
    if now >= stop_at:
        reason = over_limit_reason(scope, used_bytes, limit_bytes)
        return clock, DiskStop(scope, used_bytes, limit_bytes, reason)
    if clock.warning_level >= 2:
        return clock, None
    return replace(clock, warning_level=2), DiskWarn(scope, 2, used_bytes, limit_bytes, stop_at)


def start_refusal(
    container: str,
    used_bytes: int | None,
    limit_bytes: int | None,
    total_bytes: int | None,
    total_limit_bytes: int | None,
) -> str | None:
    """Why ``container`` may not start (its own use, or its owner's total, is at or over
    the limit), with what to do; ``None`` when it may (or when nothing is measured)."""
    if used_bytes is not None and limit_bytes is not None and used_bytes >= limit_bytes:
        why = over_limit_reason("container", used_bytes, limit_bytes)
        return (
            f"{container} cannot start: {why[0].lower()}{why[1:]}. Remove it "
            f"(`container-remove {container}`; your /workspace is kept) and create it again, "
            "keeping large files in /workspace; or ask an admin to raise disk_limit."
        )
    if (
        total_bytes is not None
        and total_limit_bytes is not None
        and total_bytes >= total_limit_bytes
    ):
        why = over_limit_reason("total", total_bytes, total_limit_bytes)
        return (
            f"{container} cannot start: {why[0].lower()}{why[1:]}. Remove a container "
            "you no longer need (`container-list` shows each one's disk use; /workspace "
            "is kept), or ask an admin to raise aggregate.disk_limit."
        )
    return None


__all__ = [
    "ENFORCING_DRIVERS",
    "DiskAction",
    "DiskClock",
    "DiskScope",
    "DiskStop",
    "DiskWarn",
    "Mode",
    "decide_disk",
    "driver_can_enforce",
    "human_bytes",
    "over_limit_reason",
    "start_refusal",
]
