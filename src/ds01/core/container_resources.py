"""What a new container may use: its request checked against the user's limits (pure).

A request within the limits is taken as asked; one above a limit is refused, never trimmed.
Defaults come from the limits: the per-container ceiling, within the user's totals across all
their containers, within the host's CPUs. Whether the memory fits next to the user's other
containers is decided under the allocation lock (``memory_total_refusal``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ds01.errors import InvalidInput, NoCapacity, QuotaExceeded
from ds01.model.text import SHOWN_INPUT_CHARS, clip, shown
from ds01.model.units import MIB, format_bytes, parse_bytes

MIN_MEMORY_BYTES = 6 * 1024 * 1024  # Docker's minimum memory limit
#: Docker's smallest memory limit; less room than this is no room.
DOCKER_MIN_MEMORY_BYTES = 6 * MIB
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh"})
#: The audit event of a process of a container killed by the kernel for memory (ds01d's OOM
#: watcher writes it; the exporter counts it).
OOM_KILL_ACTION = "resource.oom_kill"


@dataclass(frozen=True)
class Resources:
    """A container's own limits (``None``: unlimited)."""

    cpus: float | None
    memory_bytes: int | None
    shm_size_bytes: int | None
    pids_limit: int | None
    disk_bytes: int | None = None


@dataclass(frozen=True)
class ResourceAsk:
    """What a create request asks for; sizes as the user wrote them (``"4G"``)."""

    cpus: float | None = None
    memory: str | None = None
    shm_size: str | None = None
    disk: str | None = None


@dataclass(frozen=True)
class ResourceCeilings:
    """The user's per-container limits and their totals across all containers."""

    cpu_limit: float | None = None
    memory_limit_bytes: int | None = None
    shm_size_bytes: int | None = None
    disk_limit_bytes: int | None = None
    pids_limit: int | None = None
    total_cpus: float | None = None
    total_memory_bytes: int | None = None
    total_disk_bytes: int | None = None


def why(exc: BaseException) -> str:
    """An exception's reason for a message, without echoing a long input it quotes."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return clip(reason, 2 * SHOWN_INPUT_CHARS)


def _as_bytes(x: float) -> str:
    return format_bytes(int(x))


def _as_cpus(x: float) -> str:
    return f"{x:g} CPUs"


def _bounded(
    label: str, asked: float | None, limit: float | None, fmt: Callable[[float], str]
) -> float | None:
    if asked is None:
        return limit
    if limit is not None and asked > limit:
        raise QuotaExceeded(
            f"Requested {label} {fmt(asked)} is above your limit of {fmt(limit)} per "
            f"container. Ask for at most {fmt(limit)} (see `check-limits`)."
        )
    return asked


def _size(value: str | None, label: str) -> int | None:
    if value is None:
        return None
    try:
        parsed = parse_bytes(value)
    except ValueError as exc:
        raise InvalidInput(f"Invalid {label} {shown(value)}: {why(exc)}") from exc
    if parsed < MIN_MEMORY_BYTES:  # 0 would mean "no limit" to Docker
        raise InvalidInput(f"{label} {shown(value)} is too small: at least 6M.")
    return parsed


def _over_total(asked: str, kind: str, total: str) -> QuotaExceeded:
    return QuotaExceeded(
        f"Requested {asked} is above your {kind} total of {total} across all your "
        f"containers. Ask for at most {total} (see `check-limits`)."
    )


def _cpus(ask: ResourceAsk, ceilings: ResourceCeilings, host_cpus: int) -> float | None:
    cpus = _bounded("CPUs", ask.cpus, ceilings.cpu_limit, _as_cpus)
    if ask.cpus is not None and ask.cpus > host_cpus:
        raise NoCapacity(f"This machine has {host_cpus} CPUs; ask for at most {host_cpus}.")
    total = ceilings.total_cpus
    if total is not None:
        if ask.cpus is not None and ask.cpus > total:
            raise _over_total(_as_cpus(ask.cpus), "CPU", _as_cpus(total))
        cpus = total if cpus is None else min(cpus, total)
    return None if cpus is None else min(cpus, float(host_cpus))


def _memory(ask: ResourceAsk, ceilings: ResourceCeilings) -> float | None:
    memory = _bounded(
        "memory", _size(ask.memory, "--memory"), ceilings.memory_limit_bytes, _as_bytes
    )
    total = ceilings.total_memory_bytes
    if ask.memory is None and total is not None:
        memory = total if memory is None else min(memory, total)
    return memory


def _disk(ask: ResourceAsk, ceilings: ResourceCeilings) -> float | None:
    disk = _bounded("disk", _size(ask.disk, "--disk"), ceilings.disk_limit_bytes, _as_bytes)
    total = ceilings.total_disk_bytes
    if total is not None:
        if ask.disk is not None and disk is not None and disk > total:
            raise _over_total(f"disk {_as_bytes(disk)}", "disk", _as_bytes(total))
        disk = total if disk is None else min(disk, total)
    return disk


def resources_for(ask: ResourceAsk, ceilings: ResourceCeilings, host_cpus: int) -> Resources:
    """Per-container resources: the request if within the limits, else a refusal.

    The CPU ceiling is a ceiling; on a host with fewer cores the default is all of them. The
    user's totals are ceilings too: a default never exceeds them, and a request for more
    CPUs than the total is refused (cgroup v1 cannot start a container whose CPU limit is
    above its parent's).

    Raises:
        QuotaExceeded: a request above a limit or total.
        NoCapacity: more CPUs than the host has.
        InvalidInput: a size that is not one, or below Docker's minimum.
    """
    cpus = _cpus(ask, ceilings, host_cpus)
    memory = _memory(ask, ceilings)
    shm = _bounded(
        "shared memory", _size(ask.shm_size, "--shm-size"), ceilings.shm_size_bytes, _as_bytes
    )
    disk = _disk(ask, ceilings)
    return Resources(
        cpus=cpus,
        memory_bytes=int(memory) if memory is not None else None,
        shm_size_bytes=int(shm) if shm is not None else None,
        pids_limit=ceilings.pids_limit,
        disk_bytes=int(disk) if disk is not None else None,
    )


def requested_ports(
    requested: Sequence[tuple[int, int | None]],
) -> tuple[tuple[int, int | None], ...]:
    """(container port, host port) pairs; each port at most once on either side."""
    container_ports = [c for c, _ in requested]
    host_ports = [h for _, h in requested if h is not None]
    for ports, side in ((container_ports, "container"), (host_ports, "host")):
        repeated = sorted({p for p in ports if ports.count(p) > 1})
        if repeated:
            raise InvalidInput(f"{side.capitalize()} port {repeated[0]} is published twice.")
    return tuple(requested)


def stop_signal(command: tuple[str, ...]) -> str | None:
    """SIGHUP for images whose command is a bare shell: interactive shells ignore SIGTERM,
    so `container-stop` would otherwise wait for the kill timeout."""
    if len(command) == 1 and Path(command[0]).name in SHELLS:
        return "SIGHUP"
    return None


def _names(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def memory_total_refusal(
    total: int | None,
    container: str | None,
    asked: int | None,
    others: Sequence[tuple[str, int | None]],
) -> str | None:
    """Why a container's memory does not fit in the user's total, or ``None`` if it does.

    ``others`` are the user's other containers that hold memory (not stopped), with their
    memory limits in bytes; ``asked`` is the container's own (``None``: no limit). A
    container without a limit counts as the whole ``total``. ``container`` names the
    container being started, ``None`` for one being created.
    """
    if total is None:
        return None
    need = total if asked is None else asked
    committed = sum(total if size is None else size for _, size in others)
    if committed + need <= total:
        return None
    what = "this one" if container is None else container
    message = f"Memory total reached: your containers may use {format_bytes(total)} together; "
    if others:
        names = [name for name, _ in others]
        verb = "has" if len(names) == 1 else "have"
        message += f"{_names(names)} already {verb} {format_bytes(committed)}"
        unlimited = [name for name, size in others if size is None]
        if unlimited:
            message += f" ({_names(unlimited)}: no memory limit, which counts as all of it)"
        message += "; "
    message += (
        f"{what} asks for {format_bytes(need)}."
        if asked is not None
        else f"{what} has no memory limit, which counts as all of it."
    )
    room = (total - committed) // MIB * MIB
    if container is None and room >= DOCKER_MIN_MEMORY_BYTES:
        return message + f" Ask for --memory {format_bytes(room)} or less, or stop one."
    if container is None:
        return message + " Stop or remove one of them first (`container-stop NAME`)."
    return (
        message + " Stop one of the others first (`container-stop NAME`), or re-create "
        f"{container} with a smaller --memory."
    )


__all__ = [
    "DOCKER_MIN_MEMORY_BYTES",
    "MIN_MEMORY_BYTES",
    "ResourceAsk",
    "ResourceCeilings",
    "Resources",
    "memory_total_refusal",
    "requested_ports",
    "resources_for",
    "stop_signal",
    "why",
]
