"""Docker networks for ds01: each user's bridge network, found, created, joined, removed.

``DockerNetworks`` is the network part of :class:`ds01.runtime.docker.DockerRuntime` (which
inherits it): the same low-level ``APIClient`` (``self.api``), docker-py errors translated
to ds01 errors; the list of networks, which ds01d's start reads, goes through the standard
library's ``self.engine`` (``ds01.runtime.engine_socket``) instead. Stateless: any thread may
call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ds01.errors import Conflict, NoCapacity, NotFound
from ds01.runtime.docker_errors import docker_errors
from ds01.runtime.engine_socket import EngineError, EngineSocket

if TYPE_CHECKING:
    import docker

#: The option of Docker's bridge driver that names the Linux bridge of a network.
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


@dataclass(frozen=True)
class NetworkRecord:
    """A Docker network: its id, name, Linux bridge, labels and attached containers."""

    id: str
    name: str
    bridge: str
    labels: dict[str, str]
    containers: tuple[str, ...] = ()  # ids of the containers attached now

    @classmethod
    def from_inspect(cls, attrs: dict[str, Any]) -> NetworkRecord:
        network_id = str(attrs.get("Id") or "")
        options = attrs.get("Options") or {}
        return cls(
            id=network_id,
            name=str(attrs.get("Name") or ""),
            # Docker's own name for a bridge it was not told to name.
            bridge=str(options.get(BRIDGE_NAME_OPTION) or f"br-{network_id[:12]}"),
            labels=dict(attrs.get("Labels") or {}),
            containers=tuple(attrs.get("Containers") or {}),
        )


class DockerNetworks:
    """Networks: look-up by name or label, creation on a named bridge, moves, removal."""

    engine: EngineSocket

    @property
    def api(self) -> docker.APIClient:
        """docker-py's client: ``DockerRuntime`` makes it on first use."""
        raise NotImplementedError

    def move_to_network(
        self, container: str, network: str, aliases: tuple[str, ...], leave: tuple[str, ...]
    ) -> None:
        """Attach a (stopped) container to ``network`` under ``aliases``, then detach it from
        the networks ``leave``; at its next start it has only the new network's address."""
        with docker_errors("moving a container to another network"):
            self.api.connect_container_to_network(container, network, aliases=list(aliases))
            for old in leave:
                self.api.disconnect_container_from_network(container, old)

    def realias(self, container: str, network: str, aliases: tuple[str, ...]) -> None:
        """Attach a container to ``network`` again, now under ``aliases`` (Docker keeps a
        container's aliases through a rename). A running or paused one gets a new endpoint:
        its open connections over ``network`` end, and a host port Docker chose may change."""
        with docker_errors("renaming a container on its network"):
            self.api.disconnect_container_from_network(container, network)
            self.api.connect_container_to_network(container, network, aliases=list(aliases))

    def find_network(self, name: str) -> NetworkRecord | None:
        """The network named exactly ``name``, or ``None``."""
        with docker_errors(f"looking up network {name}"):
            import docker.errors

            try:
                attrs = self.api.inspect_network(name)
            except docker.errors.NotFound:
                return None
        record = NetworkRecord.from_inspect(attrs)
        return record if record.name == name else None  # Docker also matches id prefixes

    def networks(self, label: str) -> list[NetworkRecord]:
        """Every network that has ``label`` (``key`` or ``key=value``), with its containers."""
        with docker_errors("listing networks"):
            found = []
            for summary in self.engine.get("/networks", filters={"label": [label]}):
                try:
                    attrs = self.engine.get(f"/networks/{summary['Id']}")
                except EngineError as exc:
                    if exc.status == 404:  # removed in between
                        continue
                    raise
                found.append(NetworkRecord.from_inspect(attrs))
            return found

    def create_network(self, name: str, bridge: str, labels: dict[str, str]) -> NetworkRecord:
        """A bridge network ``name`` on Linux bridge ``bridge``; ``Conflict`` if it exists.

        Raises:
            NoCapacity: Docker has no address range left for another network.
        """
        with docker_errors(f"creating network {name}"):
            import docker.errors

            try:
                self.api.create_network(
                    name,
                    driver="bridge",
                    options={BRIDGE_NAME_OPTION: bridge},
                    labels=labels,
                    check_duplicate=True,
                )
            except docker.errors.APIError as exc:
                if "available, non-overlapping" in str(exc.explanation or ""):
                    raise NoCapacity(
                        f"Docker has no address range left for network {name}: every range "
                        "of its default-address-pools is in use. Ask an admin (docs/admin.md, "
                        "per-user networks)."
                    ) from exc
                raise
        record = self.find_network(name)
        if record is None:
            raise NotFound(f"network {name} vanished right after it was created")
        return record

    def remove_network(self, network_id: str) -> None:
        """Remove a network; one already gone is fine, one in use is a ``Conflict``."""
        with docker_errors(f"removing network {network_id[:12]}"):
            import docker.errors

            try:
                self.api.remove_network(network_id)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 403:  # "has active endpoints"
                    raise Conflict(f"network {network_id[:12]}: {exc.explanation}") from exc
                raise
