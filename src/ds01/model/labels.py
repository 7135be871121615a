"""ds01's Docker labels: the one place they are spelled, written and read.

Labels are the record of what ds01 created and which devices each container holds
Only ds01d writes them (:class:`ContainerLabels`); nothing a client sends
becomes a label verbatim. Every reader parses them with the functions here, which never
raise: a label that is absent or unreadable reads as "not set".
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ds01.model.names import CONTAINER_NAME_RE

PREFIX = "ds01."

MANAGED = "ds01.managed"
USER = "ds01.user"
UID = "ds01.uid"
GROUP = "ds01.group"
NAME = "ds01.name"
GPUS = "ds01.gpus"  # comma-separated device UUIDs, empty when none
GPU_EQUIVALENTS = "ds01.gpu_equivalents"  # exact fraction "3/7", or "0"
CREATED_AT = "ds01.created_at"  # ISO 8601 UTC
INTERFACE = "ds01.interface"  # cli | deploy | proxy | job | docker (the Docker API door)
IMAGE = "ds01.image"  # what the user asked for (registry name or reference)
REQUEST_ID = "ds01.request_id"  # ties a container to the daemon's create intent
MEMORY_BYTES = "ds01.memory_bytes"  # the container's memory limit in bytes, "" = unlimited
CPUS = "ds01.cpus"  # the container's CPU limit (CPUs, e.g. "0.5"), "" = unlimited
DISK_BYTES = "ds01.disk_bytes"  # the container's disk limit in bytes, "" = unlimited
KEPT_IMAGE = "ds01.kept_image"  # the commit it was re-created from (devices changed), if any
# The repository of those commits: ``ds01-kept/<uid>-<name>:<unix time>``.
KEPT_REPOSITORY_PREFIX = "ds01-kept/"
SLURM_JOB = "ds01.slurm.job"  # cluster mode: the Slurm job that owns it (its id)
SLURM_NODE = "ds01.slurm.node"  # cluster mode: the Slurm node it runs on
SLURM_CGROUP = "ds01.slurm.cgroup"  # cluster mode: its cgroup parent, the job's cgroup (if any)
PORTS = "ds01.ports"  # published ports "container:host,…"; host empty = chosen by Docker
# "true" on a container placed above its owner's gpu_limit (ds01.core.borrowing); absent
# on every other container.
BORROWED = "ds01.borrowed"
# The runtime its owner declared for it (``--runtime-hours HOURS``, at most their
# max_runtime_hours): its runtime limit instead of max_runtime_hours; absent when none.
RUNTIME_HOURS = "ds01.runtime_hours"

# On an image: the user it was built for. Such an image is allowed for that user even when
# images.yaml does not list it (only root can label images on this host).
IMAGE_OWNER = "ds01.image.owner"
# On an image: the container port its JupyterLab listens on. ds01 publishes that port on
# 127.0.0.1 and gives each container a token of its own (env JUPYTER_TOKEN, which Jupyter
# Server reads); containers inherit the label from their image.
JUPYTER_PORT = "ds01.jupyter.port"
JUPYTER_TOKEN = "ds01.jupyter.token"  # noqa: S105 - a label key; on a container: its token
JUPYTER_TOKEN_ENV = "JUPYTER_TOKEN"  # noqa: S105 - the variable's name
# "true" on a JupyterHub server's container, made by a hub identity for its owner, with the
# hub's name of that server in ``HUB_SERVER`` ("" for the default server); "" on every other
# container. Both are written on every container, so that none inherits them from its image
# (a kept image carries them emptied), and a hub replaces or stops only its own servers.
HUB = "ds01.hub"
HUB_SERVER = "ds01.hub.server"
# On an image: ``singleuser`` when it has ``jupyterhub-singleuser`` (the starter image built by
# scripts/build-jupyter-image.sh), so that a JupyterHub server can run in it.
JUPYTERHUB = "ds01.jupyterhub"

# In a container's environment: the devices ds01 allocated to it (UUIDs, comma-separated,
# empty for none), under every GPU backend; the NVIDIA toolkit's variables name them only
# where they are real (``ds01.daemon.creation.gpu_exposure``).
GPUS_ENV = "DS01_GPUS"
# The NVIDIA Container Toolkit's "no GPU" value of NVIDIA_VISIBLE_DEVICES.
NO_GPU_DEVICES = "void"

# On a network: ds01's network of one user's containers (value ``NETWORK_USER``), with ``UID``
# and the ds01d instance that created it (an instance removes only what it created).
NETWORK = "ds01.network"
NETWORK_USER = "user"
INSTANCE = "ds01.instance"

# AIME ML Containers compatibility.
AIME_MLC = "aime.mlc"
AIME_NAME = "aime.mlc.NAME"
AIME_USER = "aime.mlc.USER"
AIME_VERSION = "aime.mlc.MLC_VERSION"
AIME_WORK_MOUNT = "aime.mlc.WORK_MOUNT"
AIME_DATA_MOUNT = "aime.mlc.DATA_MOUNT"
AIME_MODELS_MOUNT = "aime.mlc.MODELS_MOUNT"
AIME_FRAMEWORK = "aime.mlc.FRAMEWORK"
AIME_GPUS = "aime.mlc.GPUS"
AIME_MLC_VERSION_VALUE = "4"

MANAGED_FILTER = {"label": f"{MANAGED}=true"}

CONTAINER_NAME_SEPARATOR = "._."
#: Suffix of a container's old self while ds01 re-creates it on other devices.
REPLACED_SUFFIX = ".replaced"


def container_name(name: str, uid: int) -> str:
    """Docker name of a user's container: ``{name}._.{uid}`` (AIME convention)."""
    return f"{name}{CONTAINER_NAME_SEPARATOR}{uid}"


def name_of(docker_name: str, uid: int, labels: dict[str, str]) -> str:
    """ds01's name of a container: its Docker name without the owner's suffix when that
    name is ``{name}._.{uid}`` of its owner ``uid`` (a rename changes it, and the ``ds01.name``
    label cannot follow), also while ds01d re-creates it under ``….replaced``; else the name
    it was created under, in ``ds01.name``."""
    current = docker_name.removesuffix(REPLACED_SUFFIX)
    base, separator, suffix = current.rpartition(CONTAINER_NAME_SEPARATOR)
    if separator and suffix == str(uid) and CONTAINER_NAME_RE.fullmatch(base):
        return base
    return labels.get(NAME, docker_name)


def ports_label(ports: tuple[tuple[int, int | None], ...]) -> str:
    """The ``ds01.ports`` label value for requested (container port, host port) pairs."""
    return ",".join(f"{c}:{'' if h is None else h}" for c, h in ports)


def requested_ports(labels: dict[str, str]) -> tuple[tuple[int, int | None], ...]:
    """The (container port, host port or ``None``) pairs of a ``ds01.ports`` label."""
    pairs = []
    for item in filter(None, labels.get(PORTS, "").split(",")):
        container, _, host = item.partition(":")
        if container.isdigit():
            pairs.append((int(container), int(host) if host.isdigit() else None))
    return tuple(pairs)


def jupyter_port_of(labels: dict[str, str]) -> int | None:
    """The container port an image's JupyterLab listens on (``ds01.jupyter.port``), if any."""
    text = labels.get(JUPYTER_PORT, "")
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 65536 else None


def size_of(labels: dict[str, str], key: str) -> int | None:
    """A byte count a ds01 label holds; ``None`` (unlimited) when empty, absent or invalid."""
    text = labels.get(key, "")
    return int(text) if text.isdigit() else None


def cpus_of(labels: dict[str, str]) -> float | None:
    """The container's CPU limit (``ds01.cpus``); ``None`` when unlimited or unknown."""
    try:
        return float(labels.get(CPUS, ""))
    except ValueError:
        return None


def gpus_of(labels: dict[str, str]) -> tuple[str, ...]:
    """The device UUIDs a container holds (``ds01.gpus``), in label order."""
    return tuple(u for u in labels.get(GPUS, "").split(",") if u)


def borrowed_of(labels: dict[str, str]) -> bool:
    """Whether a container was placed above its owner's quota (``ds01.borrowed``)."""
    return labels.get(BORROWED) == "true"


def hub_server_of(labels: dict[str, str]) -> str | None:
    """The hub's name of the JupyterHub server a container is (``ds01.hub.server``: "" for
    the default server); ``None`` for a container that no hub made (``ds01.hub`` not
    "true")."""
    return labels.get(HUB_SERVER, "") if labels.get(HUB) == "true" else None


def runtime_hours_of(labels: dict[str, str]) -> float | None:
    """The runtime its owner declared for a container (``ds01.runtime_hours``), if any."""
    try:
        hours = float(labels.get(RUNTIME_HOURS, ""))
    except ValueError:
        return None
    return hours if hours > 0 and hours != float("inf") else None


def owner_uid_and_equivalents(labels: dict[str, str]) -> tuple[int, Fraction]:
    """The owner's uid and the GPU-equivalents held; ``(-1, 0)`` if either is unreadable."""
    try:
        return int(labels.get(UID, "-1")), Fraction(labels.get(GPU_EQUIVALENTS, "0"))
    except ValueError:
        return -1, Fraction(0)


@dataclass(frozen=True)
class ContainerLabels:
    """What ds01d records on a container it creates; :meth:`as_dict` is the label set.

    Sizes are in bytes and CPUs in cores, ``None`` meaning unlimited; ``created_at`` is ISO
    8601 UTC; ``visible_devices`` names the devices it was given as the NVIDIA toolkit would
    (UUIDs, or ``void`` for none), whatever the GPU backend.
    """

    user: str
    uid: int
    group: str
    name: str
    gpus: tuple[str, ...]
    gpu_equivalents: Fraction
    created_at: str
    interface: str
    image: str
    request_id: str
    memory_bytes: int | None
    cpus: float | None
    disk_bytes: int | None
    ports: tuple[tuple[int, int | None], ...]
    kept_image: str | None
    jupyter_port: int | None
    jupyter_token: str | None
    workspace: str
    data: str | None
    framework: str
    visible_devices: str
    borrowed: bool = False
    slurm_job: int | None = None  # cluster mode only, with slurm_node
    slurm_node: str | None = None
    slurm_cgroup: str | None = None
    runtime_hours: float | None = None
    hub_server: str | None = None  # a JupyterHub server's name ("" default), made by a hub

    def as_dict(self) -> dict[str, str]:
        """The labels, ds01's and the AIME ML Containers' ones (``ds01.borrowed`` only on a
        borrowed container, ``ds01.runtime_hours`` only with a declared runtime, the Slurm
        ones only on a job's container)."""
        slurm = (
            {
                SLURM_JOB: str(self.slurm_job),
                SLURM_NODE: self.slurm_node or "",
                **({SLURM_CGROUP: self.slurm_cgroup} if self.slurm_cgroup else {}),
            }
            if self.slurm_job is not None
            else {}
        )
        declared = {} if self.runtime_hours is None else {RUNTIME_HOURS: f"{self.runtime_hours:g}"}
        return ({BORROWED: "true"} if self.borrowed else {}) | declared | {
            **slurm,
            MANAGED: "true",
            USER: self.user,
            UID: str(self.uid),
            GROUP: self.group,
            NAME: self.name,
            GPUS: ",".join(self.gpus),
            GPU_EQUIVALENTS: str(self.gpu_equivalents),
            CREATED_AT: self.created_at,
            INTERFACE: self.interface,
            IMAGE: self.image,
            REQUEST_ID: self.request_id,
            MEMORY_BYTES: _optional(self.memory_bytes),
            CPUS: "" if self.cpus is None else f"{self.cpus:g}",
            DISK_BYTES: _optional(self.disk_bytes),
            PORTS: ports_label(self.ports),
            KEPT_IMAGE: self.kept_image or "",
            JUPYTER_PORT: _optional(self.jupyter_port),
            JUPYTER_TOKEN: self.jupyter_token or "",
            HUB: "" if self.hub_server is None else "true",
            HUB_SERVER: self.hub_server or "",
            AIME_MLC: self.user,
            AIME_NAME: self.name,
            AIME_USER: self.user,
            AIME_VERSION: AIME_MLC_VERSION_VALUE,
            AIME_WORK_MOUNT: self.workspace,
            AIME_DATA_MOUNT: self.data or "-",
            AIME_MODELS_MOUNT: "-",
            AIME_FRAMEWORK: self.framework,
            AIME_GPUS: self.visible_devices,
        }


def _optional(value: int | None) -> str:
    return "" if value is None else str(value)
