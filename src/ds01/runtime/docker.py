"""The Docker Engine adapter: with its parts, the only code that talks to Docker.

Two layers, as in docker-py: ``ContainerSpec`` is a typed request object (what ds01 decided
a container must look like); ``DockerRuntime`` turns it into Engine API calls with the
low-level ``APIClient`` (one call per action, no hidden ``inspect``), and turns what Docker
reports back into ``ContainerRecord`` objects read from labels (``ContainerRecord.from_summary``,
the record parser; ``list_managed`` and ``container_events`` below).

``DockerRuntime`` is one object in three modules: containers, exec, events and disk here;
images and builds in ``ds01.runtime.docker_images``; networks in
``ds01.runtime.docker_networks``. Docker errors become ds01 errors in all of them through
``ds01.runtime.docker_errors``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from ds01.core.bind_sources import DEFAULT_DOCKER_ROOT
from ds01.errors import NotFound, PortInUse
from ds01.model import labels as L
from ds01.runtime.docker_errors import DOCKER_SOCKET, docker_errors, raise_streamed_error
from ds01.runtime.docker_images import DockerImages
from ds01.runtime.docker_networks import DockerNetworks
from ds01.runtime.engine_socket import EngineError, EngineSocket, JsonLines
from ds01.runtime.layer_files import OverlayLayers, Unhandled, read_etc_file, write_etc_files

if TYPE_CHECKING:
    import docker
    import requests
    from docker.types import CancellableStream

CgroupDriver = Literal["cgroupfs", "systemd"]

#: The only host address ds01 publishes container ports on: reachable from this machine only.
PUBLISH_HOST_IP = "127.0.0.1"
#: The host port in Docker's refusal of a start ("Bind for 127.0.0.1:20000 failed: port is
#: already allocated", "listen tcp4 127.0.0.1:20000: bind: address already in use").
_TAKEN_PORT_RE = re.compile(r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]*\]):(\d{1,5})\b")

#: Logging drivers that rotate a container's log by size (ds01 caps it: a container that
#: prints without end does not fill the host's disk).
ROTATING_LOG_DRIVERS = frozenset({"json-file", "local"})
#: The size of one of a container's two log files.
CONTAINER_LOG_MAX_BYTES = 10 * 1024 * 1024
#: The most bytes of a container's output read from Docker at once (ds01d streams it through).
LOG_CHUNK_BYTES = 64 * 1024

#: Storage drivers whose writable layer is a plain directory on the host (``UpperDir``).
OVERLAY_DRIVERS = frozenset({"overlay2", "overlay", "fuse-overlayfs"})

#: What a tar stream of one file adds to its content: headers and padding to 10 KiB blocks.
_TAR_OVERHEAD_BYTES = 16 * 1024


# Docker state → the status ds01 shows.
_STATUS = {"exited": "stopped", "dead": "stopped"}
#: A stopped container's status text in Docker's list: ``Exited (137) 5 seconds ago``.
_EXITED_RE = re.compile(r"Exited \((-?\d+)\)")


def exit_code_of(status_text: str) -> int | None:
    """The exit status in Docker's status text of a listed container; ``None`` while it runs
    or before its first start (``Created``)."""
    found = _EXITED_RE.match(status_text)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class EngineInfo:
    """What the engine reports about its host: cgroup driver, CPUs, memory in bytes, and
    its storage driver with the filesystem under it (``docker info``'s ``Storage Driver``
    and ``Backing Filesystem``; ``None`` when not reported), and its data root
    (``DockerRootDir``)."""

    cgroup_driver: CgroupDriver
    cpus: int
    memory_bytes: int
    logging_driver: str = ""
    storage_driver: str = ""
    backing_filesystem: str | None = None
    data_root: str = DEFAULT_DOCKER_ROOT


def parse_docker_time(text: str) -> datetime | None:
    """Docker's RFC 3339 time with nanoseconds ("…:05.123456789Z") as an aware UTC datetime
    (microseconds); ``None`` for its "never" (year 1) or anything unreadable."""
    if not text or text.startswith("0001-"):
        return None
    head, _, fraction = text.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(head).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    digits = "".join(c for c in fraction if c.isdigit())[:6].ljust(6, "0")
    return moment.replace(microsecond=int(digits))


@dataclass(frozen=True)
class ContainerEvent:
    """One event of a managed container from Docker's event stream.

    ``action``: Docker's (``oom``, ``die``, ``start``…); ``exit_code`` only for ``die``;
    ``time``: when Docker saw it, in seconds since the epoch.
    """

    action: str
    container_id: str
    exit_code: int | None
    time: float

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ContainerEvent:
        attributes = (message.get("Actor") or {}).get("Attributes") or {}
        code = str(attributes.get("exitCode", ""))
        nanoseconds = message.get("timeNano") or int(message.get("time") or 0) * 10**9
        return cls(
            action=str(message.get("Action") or message.get("status") or ""),
            container_id=str(message.get("id") or (message.get("Actor") or {}).get("ID") or ""),
            exit_code=int(code) if code.lstrip("-").isdigit() else None,
            time=int(nanoseconds) / 1e9,
        )


class EventStream:
    """Docker's event stream for managed containers, as ``ContainerEvent`` objects.

    Iterate to block for the next event; ``close`` (from another thread) ends the iteration.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[ContainerEvent]:
        with docker_errors("reading Docker events"):
            for message in self._stream:
                if isinstance(message, dict) and message.get("Type", "container") == "container":
                    yield ContainerEvent.from_message(message)

    def close(self) -> None:
        # Already closed, or the connection is gone: nothing left to end.
        with contextlib.suppress(Exception):
            self._stream.close()


@dataclass(frozen=True)
class PortBinding:
    """A published TCP port: ``host_ip:host_port`` on the host → ``container_port`` inside.

    ``host_port`` is ``None`` when Docker chooses it and the container is not running.
    """

    container_port: int
    host_ip: str
    host_port: int | None


def _published_ports(
    labels: dict[str, str], summary_ports: list[dict[str, Any]]
) -> tuple[PortBinding, ...]:
    """Requested ports (label) completed with the host ports Docker reports while running."""
    actual = {
        int(p["PrivatePort"]): int(p["PublicPort"])
        for p in summary_ports
        if p.get("PublicPort") and p.get("IP") == PUBLISH_HOST_IP
    }
    return tuple(
        PortBinding(port, PUBLISH_HOST_IP, actual.get(port, fixed))
        for port, fixed in L.requested_ports(labels)
    )


@dataclass(frozen=True)
class ContainerSpec:
    """Everything ds01 decided about one container, ready for ``docker create``.

    Sizes are in bytes, CPUs in (fractional) cores; ``None`` means no limit.
    """

    docker_name: str
    image: str
    user: str  # "uid:gid"
    hostname: str
    labels: dict[str, str]
    environment: dict[str, str]
    mounts: tuple[tuple[str, str], ...]  # (host path, container path), read-write binds
    cgroup_parent: str
    cpus: float | None = None
    memory_bytes: int | None = None
    shm_size_bytes: int | None = None
    pids_limit: int | None = None
    gpu_uuids: tuple[str, ...] = ()  # through the NVIDIA toolkit (real hosts)
    device_nodes: tuple[str, ...] = ()  # "host:container:rwm" (simulated GPUs)
    ports: tuple[tuple[int, int | None], ...] = ()  # (container, host or None), on 127.0.0.1
    working_dir: str = "/workspace"
    stop_signal: str | None = None  # None: the image's own (usually SIGTERM)
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges",)
    # The writable layer's size (--storage-opt size=), where the storage driver enforces it.
    storage_size_bytes: int | None = None
    # The engine's logging driver when it rotates (json-file, local): logs are capped.
    rotating_log_driver: str | None = None
    network: str = "bridge"  # the owner's network (``ds01.daemon.networks``)
    network_aliases: tuple[str, ...] = ()  # names the owner's other containers reach it by
    # Named volumes of the owner's (Docker's volume name, container path), never copied up
    # from the image (the volume's root stays the owner's).
    volumes: tuple[tuple[str, str], ...] = ()
    # Through the Docker API door: the client's command, entrypoint and terminal settings
    # (``None``: the image's own; ds01's own creates keep a terminal open on the image's).
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    tty: bool = True
    stdin_open: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def create_arguments(api: docker.APIClient, spec: ContainerSpec) -> dict[str, Any]:
    """The keyword arguments of ``APIClient.create_container`` for ``spec``, with
    ``host_config`` the HostConfig payload Docker receives (docker-py's own types and
    checks); builds and sends nothing else, so tests can read exactly what a create asks.

    GPUs the NVIDIA Container Toolkit provides (``spec.gpu_uuids``, real devices) are one
    ``DeviceRequest`` for those UUIDs with the ``gpu`` capability and the default driver;
    stand-in device nodes (simulated GPUs) are plain ``--device`` entries.
    """
    from docker.types import DeviceRequest, LogConfig, Mount, NetworkingConfig

    device_requests = (
        [DeviceRequest(device_ids=list(spec.gpu_uuids), capabilities=[["gpu"]])]
        if spec.gpu_uuids
        else None
    )
    host_config = api.create_host_config(
        init=True,
        privileged=False,
        cap_drop=list(spec.cap_drop),
        security_opt=list(spec.security_opt),
        cgroup_parent=spec.cgroup_parent,
        nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
        mem_limit=spec.memory_bytes,
        # Same as memory: no swap beyond the memory limit.
        memswap_limit=spec.memory_bytes,
        shm_size=spec.shm_size_bytes,
        pids_limit=spec.pids_limit,
        mounts=[Mount(target=dst, source=src, type="bind") for src, dst in spec.mounts]
        + [Mount(target=dst, source=src, type="volume", no_copy=True) for src, dst in spec.volumes],
        devices=list(spec.device_nodes) or None,
        device_requests=device_requests,
        network_mode=spec.network,
        storage_opt={"size": str(spec.storage_size_bytes)} if spec.storage_size_bytes else None,
        log_config=LogConfig(
            type=spec.rotating_log_driver,
            config={"max-size": str(CONTAINER_LOG_MAX_BYTES), "max-file": "2"},
        )
        if spec.rotating_log_driver
        else None,
        port_bindings={
            c: (PUBLISH_HOST_IP,) if h is None else (PUBLISH_HOST_IP, h) for c, h in spec.ports
        }
        or None,
        **spec.extra,
    )
    # Docker's NetworkingConfig maps network names to endpoints (its stub says otherwise).
    endpoints: Any = {spec.network: api.create_endpoint_config(aliases=list(spec.network_aliases))}
    return {
        "image": spec.image,
        "name": spec.docker_name,
        "hostname": spec.hostname,
        "user": spec.user,
        "environment": spec.environment,
        "labels": spec.labels,
        "working_dir": spec.working_dir,
        "stop_signal": spec.stop_signal,
        "host_config": host_config,
        "ports": [c for c, _ in spec.ports] or None,
        "networking_config": NetworkingConfig(endpoints) if spec.network_aliases else None,
        "command": list(spec.command) if spec.command is not None else None,
        "entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
        "tty": spec.tty,
        "stdin_open": spec.stdin_open,
    }


@dataclass(frozen=True)
class ContainerRecord:
    """A ds01-managed container as Docker reports it (from one list call)."""

    id: str
    docker_name: str
    name: str
    user: str
    uid: int
    group: str
    status: str
    image: str
    gpus: tuple[str, ...]
    gpu_equivalents: Fraction
    created_at: str
    request_id: str
    labels: dict[str, str]
    ports: tuple[PortBinding, ...] = ()
    networks: tuple[str, ...] = ()  # the names of the networks it is attached to, sorted
    # (network name, IPv4 address) where it has one: while it runs, sorted by name
    addresses: tuple[tuple[str, str], ...] = ()
    exit_code: int | None = None  # of its last run, while it is stopped
    bind_sources: tuple[str, ...] = ()  # host paths of its bind mounts (ds01's: staging paths)
    binds: tuple[tuple[str, str], ...] = ()  # (host path, path inside) of each bind mount

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> ContainerRecord:
        """Build from one entry of ``GET /containers/json`` (no inspect needed)."""
        labels: dict[str, str] = summary.get("Labels") or {}
        names = summary.get("Names") or ["/"]
        uid, equivalents = L.owner_uid_and_equivalents(labels)
        state = str(summary.get("State", ""))
        docker_name = names[0].lstrip("/")
        attached = (summary.get("NetworkSettings") or {}).get("Networks") or {}
        binds = tuple(
            (str(m.get("Source", "")), str(m.get("Destination", "")))
            for m in summary.get("Mounts") or ()
            if m.get("Type") == "bind"
        )
        return cls(
            id=str(summary.get("Id", "")),
            docker_name=docker_name,
            name=L.name_of(docker_name, uid, labels),
            user=labels.get(L.USER, ""),
            uid=uid,
            group=labels.get(L.GROUP, ""),
            status=_STATUS.get(state, state),
            image=labels.get(L.IMAGE, str(summary.get("Image", ""))),
            gpus=L.gpus_of(labels),
            gpu_equivalents=equivalents,
            created_at=labels.get(L.CREATED_AT, ""),
            request_id=labels.get(L.REQUEST_ID, ""),
            labels=labels,
            ports=_published_ports(labels, summary.get("Ports") or []),
            networks=tuple(sorted(attached)),
            addresses=tuple(
                (name, str(endpoint["IPAddress"]))
                for name, endpoint in sorted(attached.items())
                if isinstance(endpoint, dict) and endpoint.get("IPAddress")
            ),
            exit_code=exit_code_of(str(summary.get("Status", ""))),
            bind_sources=tuple(source for source, _ in binds),
            binds=binds,
        )


class OutputStream:
    """A container's output, chunk by chunk (bytes), as :meth:`DockerRuntime.logs` reads it.

    ``close`` may be called from another thread: it shuts the connection to Docker down,
    which ends an iteration blocked waiting for output.
    """

    def __init__(self, what: str, chunks: CancellableStream[bytes]) -> None:
        self._what = what
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        with docker_errors(self._what):
            for chunk in self._chunks:
                if chunk:
                    yield chunk

    def close(self) -> None:
        # Already closed, or the connection is gone: nothing left to end.
        with contextlib.suppress(Exception):
            self._chunks.close()


def _multiplexed_payloads(response: requests.Response) -> Iterator[bytes]:
    """The payloads of Docker's multiplexed stream (a container without a terminal): each
    frame is an 8-byte header (stream, 3 zero bytes, big-endian length), then the payload."""
    while True:
        header = response.raw.read(8)
        if len(header) < 8:
            return
        length = int.from_bytes(header[4:], "big")
        if length:
            payload = response.raw.read(length)
            if not payload:
                return
            yield payload


class DockerRuntime(DockerImages, DockerNetworks):
    """Thin, typed wrapper over docker-py's low-level client. Stateless but for the client:
    any thread may call it, and no lock is needed.

    The reads ds01d's start makes (the managed containers' list and look-ups, the event
    stream, the engine's info, networks, local images) go through ``engine``, with the
    standard library alone; docker-py's client (``api``) is made, and docker-py imported,
    on first use, so ds01d answers before it loads.

    Args:
        client: a ``docker.APIClient``, or ``None`` (``from_env``): one for Docker's socket
            is made on first use of ``api``.
    """

    def __init__(self, client: docker.APIClient | None = None) -> None:
        self.engine = EngineSocket(DOCKER_SOCKET)
        if client is not None:
            self.api = client

    @classmethod
    def from_env(cls) -> DockerRuntime:
        """The runtime for the local engine's socket (nothing is asked of Docker yet)."""
        return cls()

    @cached_property
    def api(self) -> docker.APIClient:
        """docker-py's client, made on first use; ``DockerUnavailable`` if Docker does not
        answer (``version="auto"`` asks it its API version)."""
        import docker

        with docker_errors("connecting to Docker"):
            return docker.APIClient(base_url=f"unix://{DOCKER_SOCKET}", version="auto", timeout=120)

    def probe(self, timeout_seconds: float = 3.0) -> dict[str, Any]:
        """The engine's ``/info``, asked with a short timeout: for health checks, which must
        answer quickly when the engine is down or hangs.

        Raises:
            DockerUnavailable: the engine did not answer in time, or not with its info.
        """
        with docker_errors("asking the Docker engine for its info"):
            info: dict[str, Any] = self.engine.get("/info", timeout_s=timeout_seconds)
            return info

    def engine_info(self) -> EngineInfo:
        """The engine's ``/info``, read once (ds01d's start reads it only here)."""
        with docker_errors("reading Docker info"):
            info = self.engine.get("/info")
            systemd = info.get("CgroupDriver") == "systemd"
            driver: CgroupDriver = "systemd" if systemd else "cgroupfs"
            status = {str(k): str(v) for k, v in info.get("DriverStatus") or [] if k}
            return EngineInfo(
                cgroup_driver=driver,
                cpus=int(info.get("NCPU") or 1),
                memory_bytes=int(info.get("MemTotal") or 0),
                logging_driver=str(info.get("LoggingDriver") or ""),
                storage_driver=str(info.get("Driver") or ""),
                backing_filesystem=status.get("Backing Filesystem"),
                data_root=str(info.get("DockerRootDir") or DEFAULT_DOCKER_ROOT),
            )

    def container_events(self, actions: tuple[str, ...], since: float | None = None) -> EventStream:
        """A stream of ``actions`` events of managed containers, from ``since`` (epoch s),
        read without a timeout on a connection of its own.
        """
        query = {} if since is None else {"since": int(since)}  # whole seconds: may repeat
        with docker_errors("subscribing to Docker events"):
            stream: JsonLines = self.engine.stream(
                "/events",
                filters={
                    "type": "container",
                    "event": list(actions),
                    "label": [f"{L.MANAGED}=true"],
                },
                **query,
            )
            return EventStream(stream)

    def list_managed(self) -> list[ContainerRecord]:
        """Every ds01-managed container, any state, from one Engine API call."""
        with docker_errors("listing containers"):
            summaries = self.engine.get("/containers/json", filters=L.MANAGED_FILTER, all=1)
            return [ContainerRecord.from_summary(s) for s in summaries]

    def find_managed(self, docker_name: str) -> ContainerRecord | None:
        """The managed container with exactly this Docker name, from one filtered list call."""
        with docker_errors("looking up a container"):
            filters = {**L.MANAGED_FILTER, "name": f"^/?{re.escape(docker_name)}$"}
            for summary in self.engine.get("/containers/json", filters=filters, all=1):
                record = ContainerRecord.from_summary(summary)
                if record.docker_name == docker_name:
                    return record
            return None

    def find_managed_by_id(self, id_prefix: str) -> ContainerRecord | None:
        """The managed container whose id starts with ``id_prefix`` (None if none or ambiguous)."""
        with docker_errors("looking up a container"):
            filters = {**L.MANAGED_FILTER, "id": id_prefix}
            found = [
                ContainerRecord.from_summary(s)
                for s in self.engine.get("/containers/json", filters=filters, all=1)
                if str(s.get("Id", "")).startswith(id_prefix)
            ]
            return found[0] if len(found) == 1 else None

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) the container; return its id."""
        arguments = create_arguments(self.api, spec)
        with docker_errors(f"creating container {spec.docker_name}"):
            response = self.api.create_container(**arguments)
        return str(response["Id"])

    def run_to_end(self, spec: ContainerSpec, timeout_seconds: float) -> tuple[int, str]:
        """Create and start the container, wait for it to exit, and remove it; its exit
        code and output (``ds01 admin gpu-check``'s test container).

        Raises:
            ds01.errors.SystemFault: Docker refused, or it ran past ``timeout_seconds``
                (it is removed either way).
        """
        container = self.create(spec)
        try:
            with docker_errors(f"running container {spec.docker_name}"):
                self.api.start(container)
                status = self.api.wait(container, timeout=max(1, round(timeout_seconds)))
                output = self.api.logs(container, stdout=True, stderr=True)
            return int(status.get("StatusCode", -1)), bytes(output).decode(errors="replace")
        finally:
            self.remove(container, force=True, missing_ok=True)

    def read_small_file(self, container: str, path: str, limit_bytes: int) -> bytes | None:
        """The content of the regular file ``path`` in a created or running container; ``None``
        when there is none, it is not a regular file, or it is larger than ``limit_bytes``
        (a user's image decides what is there: ds01d never reads more than that)."""
        directory, _, name = path.rpartition("/")
        layers = self._unstarted_layers(container) if directory == "/etc" else None
        if layers is not None:
            found = read_etc_file(layers, name, limit_bytes)
            if not isinstance(found, Unhandled):
                return found
        with docker_errors(f"reading {path} in container {container}"):
            import docker.errors

            try:
                chunks, stat = self.api.get_archive(container, path)
            except docker.errors.NotFound:
                return None
            if int(stat.get("size", 0)) > limit_bytes:
                return None
            archive = bytearray()
            for chunk in chunks:
                archive += chunk
                if len(archive) > limit_bytes + _TAR_OVERHEAD_BYTES:
                    return None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = tar.next()
            content = tar.extractfile(member) if member is not None and member.isfile() else None
            return None if content is None else content.read(limit_bytes)

    def write_files(self, container: str, directory: str, files: Mapping[str, bytes]) -> None:
        """Write ``files`` (name → content) into ``directory`` of a created container, owned
        by root and mode 0644, replacing what is there.

        A container never started, on overlay2, gets them in its writable layer directly
        (``ds01.runtime.layer_files``); otherwise through Docker's archive call, which
        mounts the container's file system.

        Raises:
            NotFound: the container or ``directory`` does not exist.
        """
        layers = self._unstarted_layers(container) if directory == "/etc" else None
        if layers is not None:
            written = write_etc_files(layers, files)
            if written is False:
                raise NotFound(f"container {container} has no {directory}")
            if written is True:
                return
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(content))
        with docker_errors(f"writing {directory} in container {container}"):
            self.api.put_archive(container, directory, archive.getvalue())

    def _unstarted_layers(self, container: str) -> OverlayLayers | None:
        """The overlay2 layers of ``container`` while it was never started, else ``None``."""
        with docker_errors(f"inspecting container {container}"):
            return OverlayLayers.of(self.api.inspect_container(container))

    def start(self, container: str) -> None:
        with docker_errors(f"starting container {container}"):
            import docker.errors

            try:
                self.api.start(container)
            except docker.errors.APIError as exc:
                text = str(exc.explanation or "")
                if "port is already allocated" in text or "address already in use" in text:
                    taken = _TAKEN_PORT_RE.search(text)
                    port = int(taken.group(1)) if taken else 0
                    raise PortInUse(
                        f"Docker could not start {container}: port {port or '?'} on "
                        f"{PUBLISH_HOST_IP} is in use by another program. Stop it, or "
                        "re-create the container with another --port HOST:CONTAINER.",
                        port=port,
                    ) from exc
                raise

    def stop(self, container: str, timeout_seconds: int = 10) -> None:
        with docker_errors("stopping container"):
            self.api.stop(container, timeout=timeout_seconds)

    def remove(self, container: str, *, force: bool = False, missing_ok: bool = False) -> None:
        with docker_errors(f"removing container {container}"):
            import docker.errors

            try:
                # v: its anonymous volumes (an image's VOLUME) go with it, not left behind.
                self.api.remove_container(container, force=force, v=True)
            except docker.errors.NotFound:
                if not missing_ok:
                    raise

    def started_at(self, container: str) -> datetime | None:
        """When the container's current (or last) run started, UTC; ``None`` if never."""
        return parse_docker_time(
            str((self.inspect(container).get("State") or {}).get("StartedAt") or "")
        )

    def finished_at(self, container: str) -> datetime | None:
        """When the container last stopped, UTC; ``None`` if unknown or never."""
        return parse_docker_time(
            str((self.inspect(container).get("State") or {}).get("FinishedAt") or "")
        )

    def exec_create(
        self,
        container: str,
        command: list[str],
        *,
        user: str,
        workdir: str,
        environment: dict[str, str],
    ) -> str:
        """An exec of ``command`` with a terminal, as ``user`` ("uid:gid"); its id."""
        with docker_errors("starting a terminal"):
            created = self.api.exec_create(
                container,
                command,
                stdin=True,
                tty=True,
                user=user,
                workdir=workdir,
                environment=environment,
            )
            return str(created["Id"])

    def exec_attach(self, exec_id: str) -> Any:
        """Start the exec and return its raw socket (terminal bytes both ways)."""
        with docker_errors("attaching a terminal"):
            return self.api.exec_start(exec_id, tty=True, socket=True)

    def exec_resize(self, exec_id: str, *, rows: int, cols: int) -> None:
        with docker_errors("resizing a terminal"):
            self.api.exec_resize(exec_id, height=rows, width=cols)

    def exec_state(self, exec_id: str) -> dict[str, Any]:
        """Docker's view of the exec: ``Running``, ``ExitCode``."""
        with docker_errors("reading a terminal's state"):
            result: dict[str, Any] = self.api.exec_inspect(exec_id)
            return result

    def commit(
        self, container: str, repository: str, tag: str, labels: dict[str, str] | None = None
    ) -> str:
        """Commit the container's filesystem as ``repository:tag`` with ``labels`` set on the
        image (an empty value empties a label); return that reference."""
        with docker_errors("saving a container's files"):
            changes = [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in (labels or {}).items()]
            self.api.commit(container, repository=repository, tag=tag, changes=changes or None)
            return f"{repository}:{tag}"

    def rename(self, container: str, new_name: str) -> None:
        with docker_errors("renaming a container"):
            self.api.rename(container, new_name)

    def inspect(self, container: str) -> dict[str, Any]:
        with docker_errors("inspecting container"):
            result: dict[str, Any] = self.api.inspect_container(container)
            return result

    # -- what a container prints and uses --------------------------------------------------

    def logs(self, container: str, *, tail: int | None, follow: bool) -> OutputStream:
        """The container's output as Docker keeps it (stdout and stderr, one stream on a
        terminal), ``tail`` last lines (``None``: all); with ``follow``, then what it prints
        until it stops.

        Streamed in chunks as Docker sends them, never read whole: docker-py's own
        ``logs(stream=True)`` yields a terminal's output one byte at a time.

        Raises:
            NotFound: no such container. DockerUnavailable: the engine failed.
        """
        what = f"reading the output of {container}"
        with docker_errors(what):
            tty = bool((self.api.inspect_container(container).get("Config") or {}).get("Tty"))
            path = f"/v{self.api.api_version}/containers/{quote(container, safe='')}/logs"
            params: dict[str, str | int] = {
                "stdout": 1,
                "stderr": 1,
                "follow": int(follow),
                "tail": "all" if tail is None else str(tail),
            }
            # No timeout: a followed container may print nothing for hours.
            response = self.api.get(
                self.api.base_url + path, params=params, stream=True, timeout=None
            )
            raise_streamed_error(response)
        from docker.types import CancellableStream

        chunks = response.iter_content(LOG_CHUNK_BYTES) if tty else _multiplexed_payloads(response)
        return OutputStream(what, CancellableStream(chunks, response))

    def stats(self, container: str) -> dict[str, Any]:
        """Docker's stats of the container: two samples a second apart (``precpu_stats`` is
        the first), so the call takes about a second."""
        with docker_errors("measuring a container"):
            result: dict[str, Any] = self.api.stats(container, stream=False)
            return result

    def top(self, container: str, ps_args: str) -> dict[str, Any]:
        """The container's processes as the host's ``ps ps_args`` shows them (``Titles``,
        ``Processes``); host PIDs."""
        with docker_errors("listing a container's processes"):
            result: dict[str, Any] = dict(self.api.top(container, ps_args=ps_args))
            return result

    # -- disk ------------------------------------------------------------------------------

    def probe_storage_size(self, image: str, size_bytes: int) -> str | None:
        """Create (never start) and remove a container of ``image`` with ``--storage-opt
        size=``: ``None`` when Docker accepts it (its driver enforces the size), else
        Docker's answer."""
        name = f"ds01-storage-probe-{os.getpid()}"
        spec = {
            "Image": image,
            "Cmd": ["true"],
            "HostConfig": {"StorageOpt": {"size": str(size_bytes)}},
        }
        # Through the engine socket: the probe runs before ds01d serves, without docker-py.
        with docker_errors("probing the storage driver"):
            try:
                created = self.engine.send("POST", "/containers/create", body=spec, name=name)
            except EngineError as exc:
                return exc.explanation or str(exc)
            self.engine.send("DELETE", f"/containers/{created['Id']}", force=1, v=1)
        return None

    def disk_sources(self, container: str) -> tuple[str | None, tuple[str, ...]]:
        """Where the container's writes outside its bind mounts land on the host: its
        writable layer (overlay2's ``UpperDir``; ``None`` with another storage driver) and
        its anonymous and named volumes of the local driver. One ``inspect``."""
        attrs = self.inspect(container)
        graph = attrs.get("GraphDriver") or {}
        upper = None
        if graph.get("Name") in OVERLAY_DRIVERS:
            upper = (graph.get("Data") or {}).get("UpperDir") or None
        volumes = tuple(
            str(m["Source"])
            for m in attrs.get("Mounts") or ()
            if m.get("Type") == "volume" and m.get("Driver", "local") == "local" and m.get("Source")
        )
        return upper, volumes

    def writable_layer_bytes(self, container: str) -> int | None:
        """The size of the container's writable layer as the Engine computes it (``SizeRw``
        of ``inspect`` with ``size=1``: a walk inside dockerd); for storage drivers whose
        layer ds01 cannot read itself."""
        with docker_errors("measuring a container's writable layer"):
            response = self.api.get(
                f"{self.api.base_url}/v{self.api.api_version}/containers/{container}/json",
                params={"size": 1},
            )
            response.raise_for_status()
            size = response.json().get("SizeRw")
            return int(size) if isinstance(size, int) else None

    def containers_of_image(self, image_id: str) -> list[ContainerRecord]:
        """Every container (any state, ds01's or not) created from the image ``image_id``
        itself (not from an image built on it)."""
        with docker_errors("listing containers"):
            summaries = self.api.containers(all=True, filters={"ancestor": image_id})
            made = [s for s in summaries if s.get("ImageID") == image_id]
            return [ContainerRecord.from_summary(s) for s in made]
