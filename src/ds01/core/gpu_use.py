"""GPU use outside ds01's allocation: which processes on the GPUs are not where ds01 put them.

The driver lists the processes on each device (host pids). Each pid's ``/proc/<pid>/cgroup``
names its container, if any: Docker puts a container's processes in a cgroup whose path
holds the container's 64-hex id, whatever the layout (cgroupfs v1 ``/docker/<id>``, a
custom parent ``/ds01/alice/<id>``, systemd ``/system.slice/docker-<id>.scope``, cgroup v2
``0::/…/docker-<id>.scope``). A process is **unmanaged** when it is

- ``host``: in no container, e.g. a user running CUDA in their shell;
- ``not-held``: in a ds01 container that does not hold that device;
- ``other-container``: in a container that is not one of ds01's (made with Docker directly).

Pure: the facts (processes, their cgroup text and user, ds01's holdings) are read by
``ds01.daemon.gpu_use``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

#: A container id as a whole segment of a cgroup path, or inside a systemd scope name.
_CONTAINER_ID = re.compile(r"(?:^|/|-)([0-9a-f]{64})(?:\.scope)?(?=/|$)")

#: The audit event of a use outside the allocation (logged once per pid and device).
UNMANAGED_USE_ACTION = "gpu.unmanaged_use"

UnmanagedReason = Literal["host", "not-held", "other-container"]


@dataclass(frozen=True)
class ProcessFacts:
    """One process on one device, with what ``/proc`` said of it.

    Attributes:
        device_uuid: the device the driver lists it on.
        pid: its host pid.
        cgroup: the text of ``/proc/<pid>/cgroup`` (``None``: the process is gone).
        user: its owner's name (the uid as text when it has no name; ``None``: unknown).
    """

    device_uuid: str
    pid: int
    cgroup: str | None
    user: str | None


@dataclass(frozen=True)
class ContainerHolding:
    """A ds01 container and the devices it holds.

    Attributes:
        container_id: Docker's full id.
        name: the name its user gave it.
        user: its owner.
        devices: the UUIDs it holds (none once released).
    """

    container_id: str
    name: str
    user: str
    devices: frozenset[str]


@dataclass(frozen=True)
class UnmanagedUse:
    """A process using a device outside ds01's allocation (see the module docstring).

    Attributes:
        device_uuid, pid, user: the process, as in ``ProcessFacts``.
        reason: ``host``, ``not-held`` or ``other-container``.
        container_id: its container's id (``None``: a host process).
        container: the ds01 name of its container (``None``: none, or not ds01's).
        container_user: the owner of that ds01 container.
    """

    device_uuid: str
    pid: int
    user: str | None
    reason: UnmanagedReason
    container_id: str | None = None
    container: str | None = None
    container_user: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        """What is reported once: this pid on this device."""
        return (self.device_uuid, self.pid)


def container_id_of(cgroup: str) -> str | None:
    """The id of the container a ``/proc/<pid>/cgroup`` text puts the process in, or
    ``None`` for a host process. Lines are ``hierarchy:controllers:path``; the first path
    that holds an id wins (every hierarchy of one process names the same container)."""
    for line in cgroup.splitlines():
        path = line.split(":", 2)[-1]
        found = _CONTAINER_ID.search(path)
        if found:
            return found.group(1)
    return None


def unmanaged_uses(
    processes: Iterable[ProcessFacts], holdings: Mapping[str, ContainerHolding]
) -> list[UnmanagedUse]:
    """Every process not where ds01's allocation puts it, by device and pid.

    ``holdings``: ds01's containers by full id. A process that is gone (``cgroup`` ``None``)
    is left out: it uses nothing any more.
    """
    found: list[UnmanagedUse] = []
    for process in processes:
        if process.cgroup is None:
            continue
        container_id = container_id_of(process.cgroup)
        holding = holdings.get(container_id) if container_id else None
        if container_id is None:
            reason: UnmanagedReason = "host"
        elif holding is None:
            reason = "other-container"
        elif process.device_uuid in holding.devices:
            continue  # where ds01 put it
        else:
            reason = "not-held"
        found.append(
            UnmanagedUse(
                device_uuid=process.device_uuid,
                pid=process.pid,
                user=process.user,
                reason=reason,
                container_id=container_id,
                container=holding.name if holding else None,
                container_user=holding.user if holding else None,
            )
        )
    return sorted(found, key=lambda u: u.key)


def new_uses(
    uses: Iterable[UnmanagedUse], reported: frozenset[tuple[str, int]]
) -> tuple[list[UnmanagedUse], frozenset[tuple[str, int]]]:
    """The uses not reported yet, and what is reported from now on: the keys still in use
    (a pid that went away is forgotten, so a new process with its number is reported)."""
    current = list(uses)
    fresh = [u for u in current if u.key not in reported]
    return fresh, frozenset(u.key for u in current)


__all__ = [
    "UNMANAGED_USE_ACTION",
    "ContainerHolding",
    "ProcessFacts",
    "UnmanagedReason",
    "UnmanagedUse",
    "container_id_of",
    "new_uses",
    "unmanaged_uses",
]
