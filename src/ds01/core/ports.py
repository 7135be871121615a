"""Host ports on 127.0.0.1: who holds one, and the choice of a free one (pure).

A host port that a ds01 container publishes belongs to that container for its whole life,
running or stopped (its JupyterLab URL, bookmarks and SSH tunnels name the port): no other
request may publish it, neither another user's nor another container of the same user, and
no automatic choice picks it. Only when the container is removed is the port free again.

The claims are read from Docker (each container's ``ds01.ports`` label, completed with the
ports Docker reports while it runs) under the allocation lock, so two creates cannot both
claim one port and a restart of ds01d forgets nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PortClaim:
    """Host port ``host_port`` on 127.0.0.1 belongs to ``container`` (a Docker name) of
    ``user``."""

    host_port: int
    container: str
    user: str


def port_claims(claims: Iterable[PortClaim]) -> dict[int, PortClaim]:
    """The claims by host port (the first claim of a port wins; there is one by design)."""
    by_port: dict[int, PortClaim] = {}
    for claim in claims:
        by_port.setdefault(claim.host_port, claim)
    return by_port


def claimed_by_others(
    host_ports: Iterable[int], claims: Mapping[int, PortClaim], container: str
) -> list[PortClaim]:
    """The claims of other containers than ``container`` on any of ``host_ports``."""
    return [
        claims[p]
        for p in sorted(set(host_ports))
        if p in claims and claims[p].container != container
    ]


def choose_host_port(
    candidates: Iterable[int], claims: Mapping[int, PortClaim], is_free: Callable[[int], bool]
) -> int | None:
    """The first of ``candidates`` that no container claims and ``is_free`` (nothing on the
    host listens there now); ``None`` if there is none."""
    for port in candidates:
        if port not in claims and is_free(port):
            return port
    return None


def port_taken_message(port: int, claim: PortClaim, user: str) -> str:
    """Why ``user`` may not publish ``port``: which container holds it (named only to its
    owner: a container's name is private)."""
    if claim.user == user:
        holder = f"your container {claim.container.partition('._.')[0]!r}"
    else:
        holder = "another user's container"
    return (
        f"Host port {port} on 127.0.0.1 belongs to {holder}, running or stopped: a published "
        "host port stays with its container until the container is removed. Pick another "
        "host port (--port HOST:CONTAINER), or give only the container port and let ds01 "
        "choose."
    )


def port_in_use_message(port: int, name: str, holder: str) -> str:
    """Why container ``name`` was not started: ``holder`` (e.g. "a process on this machine
    that is not a ds01 container") listens on its host port."""
    return (
        f"Not starting {name!r}: port {port} on 127.0.0.1 is in use by {holder}, so its URL "
        f"would lead there instead of to your container. Stop what listens on {port} (`ss "
        f"-ltnp 'sport = :{port}'` shows it, if it is yours) and start again, or re-create "
        "the container to get another port."
    )


__all__ = [
    "PortClaim",
    "choose_host_port",
    "claimed_by_others",
    "port_claims",
    "port_in_use_message",
    "port_taken_message",
]
