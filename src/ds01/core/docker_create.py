"""A Docker ``POST /containers/create`` body read as a ds01 create, or refused (pure).

The Docker API door (``ds01.daemon.docker_api``) creates containers through ds01's own
creation path; this module reads the body Docker clients send into :class:`DockerCreate`
(what ds01 can honour: image, command, environment, terminal, limits, published ports,
the caller's directories at ``/workspace`` and ``/data``, GPUs) and refuses everything
else with a message naming the field, rather than dropping it: a setting that ds01 cannot
honour is never silently lost (a limit over quota is refused later, by the creation path,
never trimmed). Refused above all: what ds01's hardening forbids (privileges, capabilities,
host namespaces, devices, security options, sysctls, volume drivers, a cgroup parent,
ds01's own labels).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ds01.core.allocation import MAX_NAMED_DEVICES, is_device_id, not_a_device_id
from ds01.errors import DoorRefusal
from ds01.model import labels as L

#: Where the caller's own directories may be mounted (what ``container-create`` mounts).
WORKSPACE_TARGET = "/workspace"
DATA_TARGET = "/data"
#: The most bytes of environment and command a create may carry.
MAX_ARGUMENTS = 1024
_PORT = re.compile(r"^(?P<port>\d{1,5})(?:/(?P<proto>tcp|udp|sctp))?\Z")
#: A network, volume or alias name as the caller gives it (Docker's characters; ds01's
#: suffix ``._.`` is added by ds01, never given).
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
#: Network modes that are not a network of the caller's (refused by the hardening).
_NOT_A_NETWORK = frozenset({"host", "none", "default", "bridge"})
#: The most network aliases, and named volumes, one create may ask for.
MAX_ALIASES = 8
MAX_VOLUMES = 8

#: Hardening refusals, by HostConfig field: why each is refused.
HARDENING = {
    "Privileged": "privileged containers are not allowed",
    "CapAdd": "added capabilities are not allowed (ds01 containers run with none)",
    "PidMode": "another PID namespace (--pid) is not allowed",
    "IpcMode": "another IPC namespace (--ipc) is not allowed",
    "UTSMode": "the host's UTS namespace (--uts) is not allowed",
    "UsernsMode": "another user namespace (--userns) is not allowed",
    "CgroupnsMode": "another cgroup namespace (--cgroupns) is not allowed",
    "NetworkMode": "another network (--network) is not allowed: ds01 puts your containers "
    "on your own network",
    "Devices": "devices (--device) are not allowed: ask for GPUs with --gpus",
    "DeviceCgroupRules": "device cgroup rules are not allowed",
    "SecurityOpt": "security options (--security-opt) are not allowed",
    "Sysctls": "sysctls are not allowed",
    "VolumeDriver": "volume drivers are not allowed",
    "VolumesFrom": "--volumes-from is not allowed",
    "CgroupParent": "a cgroup parent is not allowed: ds01 places every container in its owner's",
    "Cgroup": "another cgroup is not allowed",
    "Runtime": "another runtime is not allowed",
    "GroupAdd": "added groups (--group-add) are not allowed",
    "OomKillDisable": "disabling the OOM killer is not allowed",
    "OomScoreAdj": "changing the OOM score is not allowed",
    "Ulimits": "ulimits are not allowed",
    "Links": "links are not allowed",
    "MaskedPaths": "changing masked paths is not allowed",
    "ReadonlyPaths": "changing read-only paths is not allowed",
}
#: HostConfig fields whose only "unset" is null.
_NULL_ONLY = frozenset({"MaskedPaths", "ReadonlyPaths"})
#: HostConfig fields read into the create (everything else must be left at its default).
_HOST_READ = frozenset(
    {"Binds", "Mounts", "Memory", "MemorySwap", "NanoCpus", "ShmSize", "PortBindings",
     "DeviceRequests", "AutoRemove", "CapDrop", "Init", "LogConfig", "RestartPolicy",
     "ConsoleSize", "MemorySwappiness", "NetworkMode"}
)  # fmt: skip
#: Top-level fields read into the create.
_CONFIG_READ = frozenset(
    {"Image", "Cmd", "Entrypoint", "Env", "Tty", "OpenStdin", "StdinOnce", "AttachStdin",
     "AttachStdout", "AttachStderr", "WorkingDir", "Labels", "HostConfig", "ExposedPorts",
     "NetworkingConfig", "User", "Volumes", "ArgsEscaped"}
)  # fmt: skip


class CreateRefused(DoorRefusal):
    """The body cannot be created as asked."""


@dataclass(frozen=True)
class RunOptions:
    """What a create through the Docker API door sets beyond a ``container-create``: the
    client's command, environment, terminal, working directory and labels (none of them
    ds01's own: :func:`read_create` refused those)."""

    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    tty: bool = False
    stdin_open: bool = False
    working_dir: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    auto_remove: bool = False
    #: More names the owner's other containers reach it by (compose's service names).
    aliases: tuple[str, ...] = ()
    #: Named volumes of the owner's: (volume, target); read as the caller names them, the
    #: door passes on their Docker names.
    volumes: tuple[tuple[str, str], ...] = ()


def is_object_name(name: str) -> bool:
    """Whether ``name`` may name a network, volume or alias of the caller's."""
    return _OBJECT_NAME.match(name) is not None and L.CONTAINER_NAME_SEPARATOR not in name


def is_network_name(mode: object) -> bool:
    """Whether a ``NetworkMode`` names a network of the caller's (any name they choose:
    ds01 reads every one as their own network), not the host's or another container's."""
    return isinstance(mode, str) and mode not in _NOT_A_NETWORK and is_object_name(mode)


@dataclass(frozen=True)
class DockerCreate:
    """What a Docker create asks of ds01 (sizes in bytes, ``None``: ds01's default):
    what ds01's creation path decides on (image, GPUs, limits, ports, directories), and
    the client's own ``run`` options, passed through as they are."""

    image: str
    run: RunOptions = RunOptions()
    gpus: int = 0
    #: The devices ``--gpus device=…`` names, as the client names them (index or UUID);
    #: empty with a count (``gpus``), or none.
    gpu_ids: tuple[str, ...] = ()
    cpus: float | None = None
    memory_bytes: int | None = None
    shm_size_bytes: int | None = None
    ports: tuple[tuple[int, int | None], ...] = ()
    workspace: str | None = None
    data: str | None = None


def unset(value: Any) -> bool:
    """Whether a field holds Docker's "not set" (what the CLI sends for a flag not given)."""
    if value in (None, "", 0, False):
        return True
    if isinstance(value, list):
        return all(unset(v) for v in value)
    if isinstance(value, dict):
        return all(unset(v) for v in value.values())
    return False


def _strings(value: Any, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CreateRefused(f"{field} must be a list of strings.", 400)
    if len(value) > MAX_ARGUMENTS:
        raise CreateRefused(f"{field} has more than {MAX_ARGUMENTS} entries.", 400)
    return tuple(value)


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CreateRefused(f"{field} must be a whole number of at least 0.", 400)
    return value


def read_create(body: Any, *, uid: int, gid: int, user: str) -> DockerCreate:
    """``body`` (the parsed JSON of a create) as a :class:`DockerCreate`.

    Raises:
        CreateRefused: a malformed body (400), or a field ds01 does not allow or cannot
            honour (403), named in the message.
    """
    if not isinstance(body, dict) or not body:
        raise CreateRefused("A container create needs a JSON object body (Image, …).", 400)
    for key, value in body.items():
        if key not in _CONFIG_READ and not unset(value):
            raise CreateRefused(f"ds01 does not allow {key} in a create.")
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise CreateRefused("A container create needs an Image.", 400)
    _check_user(body.get("User"), uid=uid, gid=gid, user=user)
    host = body.get("HostConfig")
    host = {} if host is None else host
    if not isinstance(host, dict):
        raise CreateRefused("HostConfig must be an object.", 400)
    mounts, volumes = _host_checks(host)
    # {"/data": {}}: a volume at /data; one that no bind or named volume fills is anonymous.
    declared = body.get("Volumes") or {}
    filled = set(mounts) | {target for _, target in volumes}
    if not isinstance(declared, dict) or {str(t).rstrip("/") or "/" for t in declared} - filled:
        raise CreateRefused(
            "Anonymous volumes are not allowed: mount your own directory at /workspace or "
            "/data (-v DIR:/workspace), or a named volume of yours (-v NAME:/path)."
        )
    aliases = _aliases(body.get("NetworkingConfig"))
    env = _strings(body.get("Env"), "Env") or ()
    pairs = tuple((e.partition("=")[0], e.partition("=")[2]) for e in env)
    for name, _ in pairs:
        if name.startswith("NVIDIA_") or name == "CUDA_VISIBLE_DEVICES":
            raise CreateRefused(
                f"ds01 sets {name[:60]} itself from the GPUs it gives (ask with --gpus N)."
            )
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise CreateRefused("Labels must map names to strings.", 400)
    for key in labels:
        if key.startswith((L.PREFIX, "aime.")):
            raise CreateRefused(f"Label {key[:80]!r} is ds01's own: only ds01 sets it.")
    working_dir = body.get("WorkingDir") or None
    if working_dir is not None and not isinstance(working_dir, str):
        raise CreateRefused("WorkingDir must be a string.", 400)
    gpus, gpu_ids = _gpus(host.get("DeviceRequests"))
    return DockerCreate(
        image=image,
        run=RunOptions(
            command=_strings(body.get("Cmd"), "Cmd"),
            entrypoint=_strings(body.get("Entrypoint"), "Entrypoint"),
            env=pairs,
            tty=bool(body.get("Tty")),
            stdin_open=bool(body.get("OpenStdin")),
            working_dir=working_dir,
            labels=tuple(sorted(labels.items())),
            auto_remove=bool(host.get("AutoRemove")),
            aliases=aliases,
            volumes=volumes,
        ),
        gpus=gpus,
        gpu_ids=gpu_ids,
        cpus=_int(host.get("NanoCpus") or 0, "NanoCpus") / 1e9 or None,
        memory_bytes=_int(host.get("Memory") or 0, "Memory") or None,
        shm_size_bytes=_int(host.get("ShmSize") or 0, "ShmSize") or None,
        ports=_ports(host.get("PortBindings")),
        workspace=mounts.get(WORKSPACE_TARGET),
        data=mounts.get(DATA_TARGET),
    )


def _check_user(value: Any, *, uid: int, gid: int, user: str) -> None:
    """Containers run as their owner: ``User`` may only name the caller."""
    if unset(value):
        return
    if value in (user, str(uid), f"{uid}:{gid}", f"{user}:{gid}"):
        return
    raise CreateRefused(
        f"Containers run as you ({user}, {uid}:{gid}); User {str(value)[:40]!r} is not allowed."
    )


def _aliases(networking: Any) -> tuple[str, ...]:
    """The aliases of the one network endpoint a create may name (any network name: ds01
    reads it as the caller's own network); addresses, links and driver options refused."""
    if networking is None:
        return ()
    if not isinstance(networking, dict):
        raise CreateRefused("NetworkingConfig must be an object.", 400)
    endpoints = networking.get("EndpointsConfig") or {}
    if not isinstance(endpoints, dict) or len(endpoints) > 1:
        raise CreateRefused("A container is on one network: your own.")
    for name, endpoint in endpoints.items():
        if not is_network_name(name):
            raise CreateRefused(HARDENING["NetworkMode"] + ".")
        endpoint = endpoint or {}
        if not isinstance(endpoint, dict):
            raise CreateRefused("An endpoint must be an object.", 400)
        extra = sorted(k for k, v in endpoint.items() if k != "Aliases" and not unset(v))
        if extra:
            raise CreateRefused(
                f"ds01 does not allow {', '.join(extra)[:80]} in a network endpoint: only "
                "aliases (addresses, links and driver options are ds01's)."
            )
        aliases = _strings(endpoint.get("Aliases"), "Aliases") or ()
        if len(aliases) > MAX_ALIASES or not all(is_object_name(a) for a in aliases):
            raise CreateRefused(
                f"Aliases must be at most {MAX_ALIASES} names of letters, digits, '_', '.' "
                "or '-'.",
                400,
            )
        return aliases
    return ()


def _host_checks(host: Mapping[str, Any]) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """Refuse what the hardening forbids and what ds01 cannot honour; return the caller's
    directories by target (``/workspace``, ``/data``) and their named volumes."""
    for key, value in host.items():
        if key == "NetworkMode" and (value in ("", "default", "bridge", None)
                                     or is_network_name(value)):  # fmt: skip
            continue
        if key == "MemorySwappiness" and value in (None, -1):
            continue
        if key == "CapDrop" or (key not in HARDENING and key in _HOST_READ):
            continue
        # MaskedPaths and ReadonlyPaths: [] is not "unset" but "unmask everything"
        # (--security-opt systempaths=unconfined); only null keeps Docker's masks.
        if unset(value) and not (key in _NULL_ONLY and value is not None):
            continue
        if key in HARDENING:
            raise CreateRefused(f"ds01: {HARDENING[key]} ({key}).")
        raise CreateRefused(f"ds01 does not allow HostConfig.{key} in a create.")
    restart = host.get("RestartPolicy") or {}
    if restart.get("Name") not in (None, "", "no"):
        raise CreateRefused("Restart policies are not allowed: ds01 starts and stops containers.")
    if not unset((host.get("LogConfig") or {}).get("Type")):
        raise CreateRefused("Another logging driver is not allowed.")
    swap = host.get("MemorySwap") or 0
    if swap not in (0, -1) and swap != host.get("Memory"):
        raise CreateRefused("--memory-swap is not allowed: ds01 gives containers no swap.")
    if host.get("Init") is False:
        raise CreateRefused("--init=false is not allowed: ds01 runs an init in every container.")
    return _mounts(host.get("Binds"), host.get("Mounts"))


def _mounts(binds: Any, mounts: Any) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """The caller's directories by target, and their named volumes (name, target)."""
    found: dict[str, str] = {}
    volumes: list[tuple[str, str]] = []

    def add(source: str, target: str, options: str) -> None:
        target = target.rstrip("/") or "/"
        if options not in ("", "rw", "z", "Z"):
            raise CreateRefused(f"Mount options {options[:40]!r} are not allowed.")
        if target in found or target in (t for _, t in volumes):
            raise CreateRefused(f"Two mounts at {target[:80]}.", 400)
        if not source.startswith("/"):
            _volume(source, target)
            volumes.append((source, target))
            return
        if target not in (WORKSPACE_TARGET, DATA_TARGET):
            raise CreateRefused(
                f"Only your own directories at /workspace and /data may be mounted, not at "
                f"{target[:80]!r}."
            )
        found[target] = source

    for bind in _strings(binds, "Binds") or ():
        parts = bind.split(":")
        if len(parts) not in (2, 3):
            raise CreateRefused(f"Bind {bind[:80]!r} is not SOURCE:TARGET[:OPTIONS].", 400)
        add(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
    if mounts is not None and not isinstance(mounts, list):
        raise CreateRefused("Mounts must be a list.", 400)
    for mount in mounts or []:
        kind = mount.get("Type") if isinstance(mount, dict) else None
        if kind not in ("bind", "volume"):
            raise CreateRefused("Only your own directories and named volumes may be mounted.")
        assert isinstance(mount, dict)
        extra = {k for k, v in mount.items() if not unset(v)} - {"Type", "Source", "Target",
                                                                  "Consistency"}  # fmt: skip
        if extra:
            raise CreateRefused(f"Mount settings {sorted(extra)} are not allowed.")
        add(str(mount.get("Source") or ""), str(mount.get("Target") or ""), "")
    if len(volumes) > MAX_VOLUMES:
        raise CreateRefused(f"At most {MAX_VOLUMES} named volumes per container.")
    return found, tuple(volumes)


def _volume(name: str, target: str) -> None:
    """Refuse a named volume ds01 cannot mount: a name not one, a target that is not a
    path, or ds01's own ``/workspace``."""
    if not is_object_name(name):
        raise CreateRefused(
            f"Volume {name[:80]!r} is not a volume name (letters, digits, '_', '.', '-'), nor a "
            "directory of yours."
        )
    if not target.startswith("/") or target == "/" or target == WORKSPACE_TARGET:
        raise CreateRefused(f"A named volume cannot be mounted at {target[:80]!r}.")


def _gpus(requests: Any) -> tuple[int, tuple[str, ...]]:
    """What ``--gpus`` (``DeviceRequests``) asks for: a number of whole GPUs (``--gpus N``),
    or the devices it names (``--gpus device=0,2``: ``DeviceIDs``), only their form checked
    here (ds01's inventory resolves them)."""
    if unset(requests):
        return 0, ()
    if not isinstance(requests, list) or len(requests) != 1 or not isinstance(requests[0], dict):
        raise CreateRefused("Ask for GPUs with one --gpus N (or --gpus device=ID,…).")
    request = requests[0]
    if request.get("Driver") not in (None, "", "nvidia"):
        raise CreateRefused("Only NVIDIA GPUs (--gpus N) may be requested.")
    count = request.get("Count")
    if count == -1:
        raise CreateRefused("--gpus all is not allowed: ask for a number (--gpus N).")
    ids = request.get("DeviceIDs")
    if unset(ids):
        return _int(count or 0, "DeviceRequests.Count"), ()
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CreateRefused("DeviceRequests.DeviceIDs must be a list of strings.", 400)
    if not unset(count):
        raise CreateRefused("Ask for a number of GPUs or name them, not both.", 400)
    if len(ids) > MAX_NAMED_DEVICES:
        raise CreateRefused(f"Name at most {MAX_NAMED_DEVICES} devices.", 400)
    for given in ids:
        if not is_device_id(given):
            raise CreateRefused(not_a_device_id(given), 400)
    return 0, tuple(ids)


def asks_for_gpus(body: Any) -> bool:
    """Whether a create's parsed JSON ``body`` asks for GPUs by number (``--gpus N``, N > 0):
    such a create may wait in ds01's GPU queue. One that names devices (``--gpus device=…``)
    does not (it is refused when one is not free now), nor does a body that
    :func:`read_create` would refuse (its refusal is quick)."""
    host = body.get("HostConfig") if isinstance(body, dict) else None
    if not isinstance(host, dict):
        return False
    try:
        return _gpus(host.get("DeviceRequests"))[0] > 0
    except CreateRefused:
        return False


def _ports(bindings: Any) -> tuple[tuple[int, int | None], ...]:
    """Published ports: TCP, on 127.0.0.1 (ds01 publishes on no other address)."""
    if not bindings:  # ``-p 8888`` sends {"8888/tcp": [{"HostIp": "", "HostPort": ""}]}
        return ()
    if not isinstance(bindings, dict):
        raise CreateRefused("PortBindings must be an object.", 400)
    ports: list[tuple[int, int | None]] = []
    for key, hosts in bindings.items():
        match = _PORT.match(str(key))
        if not match or match["proto"] not in (None, "tcp"):
            raise CreateRefused(f"Only TCP ports may be published, not {str(key)[:40]!r}.")
        for host in hosts or [{}]:
            ip = (host or {}).get("HostIp") or ""
            if ip not in ("", "127.0.0.1"):
                raise CreateRefused(
                    f"Ports are published on 127.0.0.1 only, not on {ip[:40]!r} "
                    "(use -p 127.0.0.1:PORT:PORT, or -p PORT)."
                )
            text = (host or {}).get("HostPort") or ""
            if text and not (text.isdigit() and 0 < int(text) < 65536):
                raise CreateRefused(f"Host port {text[:20]!r} is not a port number.", 400)
            ports.append((int(match["port"]), int(text) if text else None))
    return tuple(ports)


__all__ = ["DATA_TARGET", "HARDENING", "MAX_ALIASES", "MAX_VOLUMES", "WORKSPACE_TARGET",
           "CreateRefused", "DockerCreate", "RunOptions", "asks_for_gpus", "is_network_name",
           "is_object_name", "read_create", "unset"]  # fmt: skip
