"""Typed request and response bodies of the ds01d HTTP API (JSON over the unix socket).

These pydantic models are the contract between the CLI and the daemon, and the source of
the OpenAPI document served at ``GET /openapi.json``.
"""

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from ds01.core.allocation import DEVICE_ID_PATTERN, MAX_NAMED_DEVICES
from ds01.model.hub import HUB_ENV_PREFIXES


class _Model(BaseModel):
    # Each schema is built on first use: ds01d starts without building sixty.
    model_config = ConfigDict(extra="forbid", defer_build=True)


#: Host ports below this are the system's (ssh, web servers): users cannot publish on them.
MIN_HOST_PORT = 1024
MAX_PUBLISHED_PORTS = 16


class PortRequest(_Model):
    """A container port to publish. ds01 always binds it on 127.0.0.1 of the host."""

    container_port: int = Field(ge=1, le=65535, description="Port inside the container (TCP).")
    host_port: int | None = Field(
        default=None,
        ge=MIN_HOST_PORT,
        le=65535,
        description="Port on the host's 127.0.0.1; default: a free one chosen by Docker.",
    )


class PublishedPort(_Model):
    container_port: int
    host_ip: str
    host_port: int | None = Field(description="None while the container is not running.")


_HUB_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}\Z")
_HUB_ENV_MAX = 64
_HUB_ENV_VALUE_CHARS = 4096
_HUB_SERVER_NAME_CHARS = 255


class HubServer(_Model):
    """A JupyterHub single-user server: the image's JupyterLab port runs
    ``jupyterhub-singleuser`` with these variables instead of the image's command."""

    environment: dict[str, str] = Field(
        default_factory=dict,
        description="The hub's variables for the server: names starting with JUPYTERHUB_ "
        "or JPY_ only (the hub's API token and URLs).",
    )
    server_name: str = Field(
        default="",
        max_length=_HUB_SERVER_NAME_CHARS,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="The hub's name of the server ('' for the default server), recorded on "
        "its container (labels ds01.hub, ds01.hub.server): the hub replaces only its own "
        "servers.",
    )

    @field_validator("environment")
    @classmethod
    def _hub_variables_only(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > _HUB_ENV_MAX:
            raise ValueError(f"at most {_HUB_ENV_MAX} variables")
        for name, text in value.items():
            if not (_HUB_ENV_NAME.match(name) and name.startswith(HUB_ENV_PREFIXES)):
                raise ValueError(
                    f"variable {name[:64]!r} is not the hub's: names start with "
                    + " or ".join(HUB_ENV_PREFIXES)
                )
            if len(text) > _HUB_ENV_VALUE_CHARS or "\x00" in text:
                raise ValueError(f"variable {name} is too long or holds a NUL")
        return value


def reasonable_arguments(command: list[str]) -> list[str]:
    """``command`` if each argument is under 64 KiB and free of NUL bytes, else ``ValueError``."""
    if any(len(arg) > 65536 or "\0" in arg for arg in command):
        raise ValueError("command arguments must be under 64 KiB and free of NUL bytes")
    return command


class CreateContainerRequest(_Model):
    name: str = Field(description="Container name as the user sees it, e.g. 'thesis'.")
    image: str = Field(description="Registry name from images.yaml or an allowed local reference.")
    gpus: int = Field(default=0, ge=0, le=64, description="Number of whole GPUs.")
    mig: list[str] = Field(
        default_factory=list,
        description="A MIG profile, e.g. ['3g.20gb']: at most one (a CUDA process uses only "
        "one MIG instance; more is refused with exit code 2). Not with gpus.",
    )
    devices: list[Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]] = Field(
        default_factory=list,
        max_length=MAX_NAMED_DEVICES,
        description="Exactly these devices (`docker run --gpus device=…`): GPU indices as "
        "`gpu-status` shows them, GPU-<uuid> or MIG-<uuid>. Refused, never queued, when one "
        "is not free now. Not with gpus, mig or queue.",
    )
    # Docker's smallest CPU limit is 0.01; less would round to 0, which means "no limit".
    cpus: float | None = Field(default=None, ge=0.01, description="CPU cores; default: quota.")
    memory: str | None = Field(default=None, description="Memory, e.g. '16G'; default: quota.")
    shm_size: str | None = Field(default=None, description="/dev/shm size; default: quota.")
    disk: str | None = Field(
        default=None,
        description="Disk space for what it writes outside /workspace and /data, e.g. '20G'; "
        "default: quota (disk_limit).",
    )
    workspace: str | None = Field(
        default=None,
        description="Absolute host directory mounted at /workspace (default ~/workspace).",
    )
    data: str | None = Field(default=None, description="Absolute host directory mounted at /data.")
    ports: list[PortRequest] = Field(
        default_factory=list,
        max_length=MAX_PUBLISHED_PORTS,
        description="Container ports to publish on the host's 127.0.0.1 (never other addresses).",
    )
    interface: Literal["cli", "deploy", "proxy", "job", "docker"] = "cli"
    queue: bool = Field(
        default=False,
        description="When no devices are free now: wait in the GPU queue (HTTP 202) instead "
        "of failing with exit 3. The container is created and started when its turn comes.",
    )
    start: bool = Field(
        default=False,
        description="Start it too, in the same request (`container-create --start`). If the "
        "start fails, the container stays created and the error says so: 'Created NAME, but "
        "it was not started: …'.",
    )
    hub: HubServer | None = Field(
        default=None,
        description="Only from a hub identity acting for the user: run the image's JupyterLab "
        "as a JupyterHub single-user server.",
    )
    borrow: bool = Field(
        default=False,
        description="When the request is over gpu_limit: borrow idle devices above it (the "
        "borrowing: policy must be on; `borrow: auto` in the limits does it implicitly). A "
        "borrowed container may be stopped to make room for requests within quota.",
    )
    runtime_hours: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="How long it will run, in hours (at most max_runtime_hours; more exits "
        "3): its runtime limit, stopped at it like at max_runtime_hours. A short runtime "
        "lets it start on a GPU reserved from a later time (backfill).",
    )
    slurm_job: int | None = Field(
        default=None,
        ge=1,
        description="Cluster mode only, from the job's step on the node Slurm picked: the "
        "caller's running Slurm job, named after the container; the container gets exactly "
        "the devices Slurm gave it there (ds01d asks Slurm). Without it, a create in cluster "
        "mode is answered with the job's sbatch options (kind slurm_job_required).",
    )
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Cluster mode only (`ds01 job run`): the command the container runs "
        "instead of the image's, to completion, without a terminal; its job ends with the "
        "command's exit status. Elsewhere refused (exit 2).",
    )

    @model_validator(mode="after")
    def _devices_alone(self) -> "CreateContainerRequest":
        if self.devices and (self.gpus or self.mig or self.queue):
            raise ValueError("devices are named alone: not with gpus, mig or queue")
        return self

    @field_validator("command")
    @classmethod
    def _reasonable_command(cls, command: list[str] | None) -> list[str] | None:
        return None if command is None else reasonable_arguments(command)


class Holder(_Model):
    user: str
    container: str | None = Field(
        description="The container's name: shown to its owner and admins only (else null)."
    )
    borrowed: bool = Field(
        default=False, description="Held above the owner's quota: may be reclaimed."
    )


class UnmanagedProcess(_Model):
    pid: int = Field(description="The process's host pid.")
    user: str | None = Field(description="Who runs it (null: unknown).")
    container: str | None = Field(
        description="Its container: a ds01 container's name (shown to its owner and admins "
        "only), the short Docker id of a container not made by ds01, or null: a host process."
    )
    reason: Literal["host", "not-held", "other-container"] = Field(
        description="host: in no container; not-held: in a ds01 container that does not "
        "hold this device; other-container: in a container ds01 did not make."
    )


class DeviceReservation(_Model):
    """A reservation on one device, as ``gpu-status`` shows it."""

    id: str
    holder: str | None = Field(description="Whose it is; null: maintenance.")
    start: str = Field(description="ISO 8601, the server's time zone.")
    end: str
    active: bool = Field(description="In force now.")


class DeviceStatus(_Model):
    uuid: str
    kind: Literal["gpu", "mig"]
    profile: str | None
    gpu_index: int
    model: str
    memory_mib: int
    gpu_equivalents: float
    reserved: bool = Field(description="Kept out of allocation by gpu-config.yaml.")
    holder: Holder | None
    on_demand: bool = Field(
        default=False,
        description="A MIG slice ds01d made on demand (mig_layout: dynamic); destroyed once free.",
    )
    unmanaged: list[UnmanagedProcess] = Field(
        default_factory=list,
        description="Processes using this device outside ds01's allocation, as ds01d's "
        "last GPU use pass found them.",
    )
    reservations: list[DeviceReservation] = Field(
        default_factory=list,
        description="The reservation in force on this device, if any, then the next one.",
    )


class UnusableGpu(_Model):
    index: int
    uuid: str
    model: str
    reason: str


class GpuStatusResponse(_Model):
    backend: str
    message: str | None
    devices: list[DeviceStatus]
    unusable: list[UnusableGpu]
    total_gpu_equivalents: float
    allocated_gpu_equivalents: float
    queued_requests: int = Field(default=0, description="Requests waiting in the GPU queue.")
    queued_gpu_equivalents: float = Field(
        default=0.0, description="The least GPU-equivalents those requests need (demand)."
    )


class ContainerInfo(_Model):
    name: str
    docker_name: str
    user: str
    status: str
    image: str
    gpus: list[str]
    gpu_equivalents: float
    created_at: str
    borrowed: bool = Field(
        default=False,
        description="Placed above its owner's gpu_limit: stopped (files kept) when its "
        "devices are needed by a request within quota.",
    )
    runtime_hours: float | None = Field(
        default=None,
        description="The runtime its owner declared (--runtime-hours): its runtime limit, instead "
        "of max_runtime_hours; null when none was declared.",
    )
    hub_server: str | None = Field(
        default=None,
        description="A JupyterHub server's container, made by a hub for its owner: the hub's "
        "name of the server ('' for the default server); null for every other container.",
    )
    runtime_ends_at: str | None = Field(
        default=None,
        description="When the runtime it declared (--runtime-hours) ends and it is stopped "
        "(UTC), as of the lifecycle loop's last pass; null without a declared runtime, while "
        "exempt, or while stopped.",
    )
    ports: list[PublishedPort] = Field(
        default_factory=list, description="Published ports (host side on 127.0.0.1)."
    )
    address: str | None = Field(
        default=None,
        description="Its IPv4 address on its owner's network (ds01-u<uid>) while it runs, "
        "else null. Only its owner, root and hub identities may connect to it from the host "
        "(a hub reaches its servers there, at the image's JupyterLab port).",
    )
    jupyter_url: str | None = Field(
        default=None,
        description="Its JupyterLab with the token (running containers of Jupyter images).",
    )
    already: bool = Field(
        default=False,
        description="A start or stop found it in that state already: nothing was done.",
    )
    oom_kills: int = Field(
        default=0, description="Processes the kernel killed for lack of memory in it."
    )
    last_oom: str | None = Field(default=None, description="When the last one was seen (UTC).")
    idle_minutes: float | None = Field(
        default=None, description="How long it has been idle (lifecycle loop's last pass)."
    )
    stop_at: str | None = Field(default=None, description="When it will be stopped (UTC).")
    stop_reason: str | None = Field(
        default=None, description="Idle and running time, the planned stop and why."
    )
    exempt_until: str | None = Field(
        default=None, description="An admin exempted it from idle and runtime stops until then."
    )
    last_oom_limit: Literal["container", "user_total", "host"] | None = Field(
        default=None,
        description="Which limit the last one hit: the container's own memory limit, the "
        "user's memory total, or the host's memory.",
    )
    disk_bytes: int | None = Field(
        default=None,
        description="Disk it holds outside its bind mounts (its own layer and volumes), as "
        "last measured; null: not measured yet.",
    )
    disk_limit_bytes: int | None = Field(
        default=None, description="Its disk limit (disk_limit when created); null: none."
    )
    exit_code: int | None = Field(
        default=None,
        description="The exit status of its last run while it is stopped (137: killed, as "
        "by the OOM killer); null while it runs or before its first start.",
    )


class ResolvedEntry(_Model):
    value: Any
    source: str
    line: int | None = Field(
        default=None,
        description="The line of resource-limits.yaml that sets it (as the file reads now); "
        "null for a builtin value.",
    )
    slurm: str | None = Field(
        default=None,
        description="Cluster mode: the Slurm QOS field (and, for priority, the association's "
        "Fairshare) that `ds01 admin slurm sync` made from it, as Slurm holds it now; what a "
        "sync would set where they differ.",
    )


class Usage(_Model):
    gpu_equivalents: float = Field(description="What counts against gpu_limit (not borrowed).")
    containers: int
    gpu_containers: list[str]
    borrowed_gpu_equivalents: float = Field(
        default=0.0,
        description="Held in borrowed containers, above gpu_limit (the borrowing cap's use).",
    )


class AggregateUsage(_Model):
    memory_bytes: int | None = Field(
        description="Memory the user's containers use together now (bytes), from the cgroup."
    )
    memory_committed_bytes: int | None = Field(
        description="Sum of the memory limits of the user's containers that are not stopped "
        "(bytes); null when one of them has no limit."
    )
    disk_bytes: int | None = Field(
        default=None,
        description="Disk the user's containers hold together outside their bind mounts, as "
        "last measured (bytes); null while one is not measured yet.",
    )
    disk_by_container: dict[str, int] = Field(
        default_factory=dict, description="Each measured container's disk use (bytes), by name."
    )
    disk_mode: str | None = Field(
        default=None,
        description="How disk limits hold on this host: 'enforced' (by Docker's storage "
        "driver) or 'measured' (by the lifecycle loop), and why.",
    )


class DaemonDirectories(_Model):
    """Where this ds01d reads and writes (admins): what `config check` and `audit verify`
    check when given no directory."""

    config_dir: str
    state_dir: str
    log_dir: str
    socket: str


class LimitsResponse(_Model):
    user: str
    groups: list[str]
    is_admin: bool
    limits: dict[str, Any]
    usage: Usage
    explain: dict[str, ResolvedEntry] | None = Field(
        default=None,
        description="Every key of `limits` and of `aggregate` (as `aggregate.<key>`) with "
        "the layer its value came from.",
    )
    aggregate: dict[str, Any] = Field(
        default_factory=dict,
        description="The user's totals across all containers: cpu_limit (CPUs), memory_limit "
        "(size), pids_limit; null = unlimited.",
    )
    aggregate_usage: AggregateUsage | None = None
    host_cpus: int | None = Field(
        default=None,
        description="CPUs of this host: a cpu_limit above it gives a container this many.",
    )
    reservations: dict[str, Any] = Field(
        default_factory=dict,
        description="The user's reservation limits (`ds01 reserve`): max_gpus, max_hours, "
        "max_days_ahead, max_reservations, gpu_hours_per_week (null = unlimited) and the "
        "server's min_minutes.",
    )


class ImageInfo(_Model):
    name: str = Field(description="What to give --image: a registry name, or your image's tag.")
    image: str
    framework: str
    description: str
    version: str | None
    present: bool
    own: bool = Field(default=False, description="An image built for you (`image-build`).")
    starter: bool = Field(
        default=False, description="The image `user-setup` starts (serves JupyterLab)."
    )
    source: str | None = Field(
        default=None,
        description="Where a registry entry comes from: 'images.yaml' or 'aime:FILE:LINE'.",
    )
    architectures: list[str] = Field(
        default_factory=list, description="GPU architectures (AIME catalogue entries)."
    )
    id: str | None = Field(default=None, description="Docker image id (your own images).")
    size_bytes: int | None = None
    created_at: str | None = Field(default=None, description="When it was built (UTC).")


class WhoAmI(_Model):
    user: str
    uid: int
    groups: list[str]
    is_admin: bool
    via: str | None = None  # the hub identity acting for this user, if any


class ActionResult(_Model):
    container: ContainerInfo
    message: str


class ErrorBody(_Model):
    kind: str
    message: str
    exit_code: int
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(_Model):
    error: ErrorBody


class DoctorFinding(_Model):
    check: str
    level: Literal["ok", "warning", "critical"]
    message: str
    hint: str = ""


class GpuCheckGpu(_Model):
    index: int
    uuid: str
    model: str
    memory_mib: int
    mig_enabled: bool
    telemetry: dict[str, float | int | None] = Field(
        description="The board's readings (power, energy…); null where the driver has none."
    )


class GpuCheckDevice(_Model):
    uuid: str
    kind: Literal["gpu", "mig"]
    profile: str | None
    gpu_index: int
    gpu_uuid: str
    memory_mib: int
    gpu_equivalents: float
    telemetry: dict[str, float | int | None] = Field(
        description="Utilisation, memory, processes…; null where the driver has none "
        "(utilisation, power and energy of MIG instances)."
    )


class GpuCheckReport(_Model):
    """``ds01 admin gpu-check``: can this machine serve real GPUs, and only through ds01?"""

    backend: str
    driver: dict[str, str | None] = Field(
        description="kernel (the loaded module's version line), driver, nvml, cuda."
    )
    gpus: list[GpuCheckGpu]
    devices: list[GpuCheckDevice]
    device_nodes: list[dict[str, Any]] = Field(description="/dev/nvidia*: path, mode, group.")
    docker: dict[str, Any] = Field(
        description="can_serve, hook (on dockerd's PATH), cdi_specs, runtimes."
    )
    container_test: dict[str, Any] | None = Field(
        description="The container given one device that ran `nvidia-smi -L` (null: not run)."
    )
    findings: list[DoctorFinding]
    exit_code: int


class ImagesPresent(_Model):
    """Which of the asked image references are on this machine."""

    present: dict[str, bool]


class DoctorReport(_Model):
    findings: list[DoctorFinding]
    exit_code: int = Field(description="0 healthy, 1 warnings, 2 critical findings.")


class ScoreInfo(_Model):
    """A queued request's score in points, part by part (higher goes first)."""

    total: float
    priority: float
    fairshare: float
    age: float
    fairshare_factor: float = Field(description="1 = no recent GPU usage, towards 0 = heavy.")
    waited_hours: float


class QueueEntryInfo(_Model):
    id: str
    user: str
    container: str = Field(description="The container the request creates or starts.")
    kind: Literal["create", "start"]
    request: str = Field(description="What it asks for, e.g. '2 whole GPUs'.")
    state: Literal["waiting", "started", "cancelled", "failed"]
    submitted_at: str
    ended_at: str | None = None
    position: int | None = Field(
        default=None,
        description="1-based place in line while waiting, from the same plan as status; "
        "null while it starts, or until the next pass places a request that just joined.",
    )
    queue_length: int | None = None
    status: str | None = Field(
        default=None, description="Why it waits: capacity, head, reserved_for_head, quota, …"
    )
    reason: str | None = Field(default=None, description="The same, in a sentence.")
    estimated_start: str | None = None
    message: str | None = Field(default=None, description="Why it failed or was cancelled.")
    devices: list[str] = Field(default_factory=list, description="Devices it started on.")
    waited_seconds: float
    score: ScoreInfo | None = None


class ReservationRequest(_Model):
    """``ds01 reserve``: GPUs or one MIG instance kept for the caller (or for maintenance)."""

    gpus: int | None = Field(default=None, ge=1, le=64, description="Whole GPUs.")
    mig: str | None = Field(default=None, max_length=32, description="One MIG instance.")
    start: str = Field(
        max_length=32,
        description="'YYYY-MM-DD HH:MM' (or with ':SS'), the server's local time.",
    )
    hours: float = Field(gt=0, le=24 * 366, allow_inf_nan=False, description="How long.")
    note: str = Field(default="", max_length=200, description="Shown in every listing.")
    maintenance: bool = Field(
        default=False, description="Admins: keep the devices for nobody (maintenance)."
    )


class ReservationInfo(_Model):
    id: str
    holder: str | None = Field(description="Whose it is; null: maintenance.")
    devices: list[str] = Field(description="UUIDs of the devices kept.")
    device_labels: list[str] = Field(description="The same as gpu-status names them.")
    gpu_equivalents: float
    start: str = Field(description="ISO 8601, the server's time zone.")
    end: str
    note: str
    created_by: str
    created_at: str
    phase: Literal["upcoming", "active", "ended", "cancelled"]
    missing_devices: list[str] = Field(
        default_factory=list,
        description="Devices it keeps that this server no longer has (a MIG layout changed) "
        "and that had no free equivalent to move to: it keeps nothing there.",
    )


class ExemptionRequest(_Model):
    user: str = Field(description="Whose containers are exempt.")
    container: str | None = Field(
        default=None, description="Only this container of theirs (its name); default: all."
    )
    hours: float = Field(gt=0, le=24 * 366, description="How long from now, in hours.")
    reason: str = Field(min_length=1, max_length=500, description="Why (shown to the user).")


class ExemptionInfo(_Model):
    id: str
    user: str
    container: str | None
    until: str
    reason: str
    created_by: str
    created_at: str


class LifecycleStatus(_Model):
    """What the lifecycle loop found for one container in its last pass."""

    container_id: str
    name: str
    user: str
    status: str
    idle_minutes: float | None = Field(default=None, description="How long it has been idle.")
    runtime_minutes: float | None = Field(
        default=None, description="Running time over all its runs."
    )
    stop_at: str | None = Field(default=None, description="When it will be stopped (UTC).")
    stop_kind: Literal["idle", "runtime"] | None = None
    runtime_stop_at: str | None = Field(
        default=None, description="When its runtime limit stops it (UTC); null: no limit."
    )
    exempt_until: str | None = None
    reason: str = Field(description="Idle and running time, the stop and why, in a sentence.")
    actions: list[str] = Field(default_factory=list, description="What the pass did (or would).")


class MaintenanceReport(_Model):
    at: str
    dry_run: bool
    containers: list[LifecycleStatus]


class TerminalRequest(_Model):
    command: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="What to run; default: a login shell (bash where the image has it).",
    )
    rows: int = Field(default=24, ge=1, le=1000, description="Terminal height in lines.")
    cols: int = Field(default=80, ge=1, le=1000, description="Terminal width in columns.")
    term: str = Field(
        default="xterm-256color", pattern=r"^[A-Za-z0-9._+-]{1,64}$", description="TERM inside."
    )
    user: str | None = Field(default=None, description="Whose container (admins only).")

    @field_validator("command")
    @classmethod
    def _reasonable_arguments(cls, command: list[str]) -> list[str]:
        return reasonable_arguments(command)


class TerminalInfo(_Model):
    id: str
    running: bool
    exit_code: int | None = Field(description="The program's exit status once it ended.")


class GpuUse(_Model):
    """One device a container holds, and what it does now (null: not known)."""

    uuid: str
    utilization_percent: float | None = Field(
        description="GPU utilisation now; null where the backend cannot tell (MIG instances)."
    )
    memory_used_bytes: int | None = Field(description="Device memory in use now.")


class ProcessInfo(_Model):
    """One process of a container, as the host's ps sees it."""

    host_pid: int = Field(description="The host's process id (not the one inside).")
    user: str
    cpu_percent: float | None = Field(description="ps's average over the process's life.")
    memory_bytes: int | None = Field(description="Resident memory.")
    command: str


class ContainerStats(_Model):
    """What a container uses now (``container-stats``); null where not known or not running."""

    name: str
    docker_name: str
    user: str
    status: str
    cpu_percent: float | None = Field(
        description="CPU use over about a second, in percent of one core (as docker stats)."
    )
    cpu_limit: float | None = Field(description="Its CPU limit in cores; null: none.")
    memory_bytes: int | None = Field(description="Memory in use, page cache excluded.")
    memory_limit_bytes: int | None = Field(description="Its memory limit; null: none.")
    pids: int | None = Field(description="Processes and threads in it.")
    gpus: list[GpuUse] = Field(description="The devices it holds.")
    processes: list[ProcessInfo] | None = Field(
        default=None, description="Its processes (asked for one container only)."
    )


class ImageBuildRequest(_Model):
    name: str = Field(
        min_length=1,
        max_length=128,
        description="Image name; tagged as <your namespace>/<name>:<tag>, the name made a "
        "valid lower-case reference component.",
    )
    context: str = Field(
        min_length=1, max_length=4096, description="Absolute path of a directory you own."
    )
    dockerfile: str = Field(
        default="Dockerfile", max_length=4096, description="Path inside the context."
    )
    tag: str = Field(default="latest", max_length=128)
    pull: bool = Field(default=False, description="Pull a newer base image first (if allowed).")
    no_cache: bool = Field(default=False, description="Run every step again, no cache.")


class ImagePullRequest(_Model):
    image: str = Field(
        min_length=1,
        max_length=512,
        description="A registry name (`image-list --catalog`) or a reference the policy allows.",
    )


class ImageJobInfo(_Model):
    """An image build or pull running in ds01d, and the output lines asked for."""

    id: str
    kind: Literal["build", "pull"]
    user: str
    image: str = Field(description="The reference it builds (tag) or pulls.")
    state: Literal["running", "succeeded", "failed", "cancelled"]
    started_at: str
    ended_at: str | None = None
    lines: list[str] = Field(default_factory=list, description="Output, from line `since` on.")
    since: int = Field(description="Index of the first of `lines` in the whole output.")
    next: int = Field(description="Index to ask from next time (`since=`).")
    step: int | None = Field(default=None, description="Dockerfile step being run (builds).")
    steps: int | None = None
    progress: str | None = Field(default=None, description="Latest progress (pulls).")
    message: str | None = Field(default=None, description="The outcome, in a sentence.")
    image_id: str | None = None
    limits: dict[str, Any] = Field(
        default_factory=dict,
        description="What each step of a build may use: cpus, memory_bytes, cgroup_parent.",
    )


class ImageRemoved(_Model):
    image: str
    id: str
    message: str


class AddUserRequest(_Model):
    user: str = Field(min_length=1, max_length=256, description="A Unix user of this machine.")
    group: str | None = Field(
        default=None,
        max_length=256,
        description="A group defined in resource-limits.yaml to add them to (members:); "
        "default: an entry of their own under users:.",
    )
    dry_run: bool = Field(default=False, description="Change nothing; tell what would be done.")


class AddUserResult(_Model):
    user: str
    uid: int
    dry_run: bool
    config_file: str
    config_changes: list[str] = Field(description="What changed in resource-limits.yaml.")
    comments_kept: bool = Field(description="False: the file was written anew, comments lost.")
    groups: list[str] = Field(description="The config groups they belong to afterwards.")
    workspace: str | None = Field(description="Their ~/workspace; null when they have no home.")
    cgroup_parent: str
    actions: list[str] = Field(description="What was done (or, in a dry run, would be).")
    notes: list[str] = Field(description="What an admin should know or do next.")


class RemoveUserResult(_Model):
    user: str
    dry_run: bool
    containers: list[str] = Field(description="Their containers, stopped and removed.")
    freed_gpu_equivalents: float
    cancelled_requests: list[str] = Field(description="Their queued GPU requests, cancelled.")
    config_changes: list[str] = Field(description="What changed in resource-limits.yaml.")
    comments_kept: bool
    archive: str | None = Field(description="The workspace's tar.gz (root, mode 0600), if made.")
    home: str | None = Field(description="Their home directory: never deleted.")
    actions: list[str] = Field(description="What was done (or, in a dry run, would be).")
    notes: list[str] = Field(description="What an admin should know or do next.")


class MigLayoutInfo(_Model):
    mig: bool = Field(description="MIG mode on.")
    profiles: list[str] = Field(description="Its MIG instances' profiles.")
    description: str = Field(description="'whole GPU', 'MIG: 3g.20gb + 2g.10gb', …")


class MigGpuPlan(_Model):
    key: str | None = Field(description="How mig_layout names the GPU; null: it does not.")
    gpu_index: int | None
    gpu_uuid: str | None
    model: str | None
    current: MigLayoutInfo | None
    desired: MigLayoutInfo | None
    status: Literal["unchanged", "apply", "held", "invalid", "unmanaged", "missing"]
    reason: str
    steps: list[str] = Field(description="What apply does to it, in order.")
    holders: list[str] = Field(description="user/container of the containers holding it.")


class MigPlan(_Model):
    backend: str
    gpus: list[MigGpuPlan]


class MigApplyRequest(_Model):
    gpus: list[int] = Field(
        default_factory=list, max_length=64, description="Only these GPU indexes; empty: all."
    )


class MigGpuOutcome(_Model):
    gpu_index: int | None
    gpu_uuid: str | None
    outcome: Literal["applied", "unchanged", "refused", "failed", "pending_reset", "skipped"]
    message: str
    done: list[str] = Field(description="The steps carried out.")


class MigApplyResult(_Model):
    backend: str
    gpus: list[MigGpuOutcome]
    complete: bool = Field(description="Every selected GPU now has its desired layout.")
    plan: MigPlan = Field(description="The plan after the changes.")


class RetireRequest(_Model):
    keep_as: str | None = Field(
        default=None,
        description="Keep what was installed in the container as your image NAME[:TAG] "
        "(in your namespace) before removing it; default: keep nothing.",
    )
    user: str | None = Field(default=None, description="Whose container (admins only).")


class RetireResult(_Model):
    container: ContainerInfo
    kept_image: str | None = Field(description="The image the container was kept as.")


class OverviewDevice(DeviceStatus):
    """A device as ``gpu-status`` shows it, with its short name and its telemetry now."""

    label: str = Field(description="Short name: '2' for GPU 2, '3:1g.5gb#4' for a MIG instance.")
    held_for_queue: bool = Field(description="Free, but kept for the head of the GPU queue.")
    utilization_percent: float | None = Field(
        description="GPU utilisation now; null where the backend cannot tell (MIG instances)."
    )
    memory_used_mib: int | None
    process_count: int | None


class OverviewTotals(_Model):
    devices: int
    devices_allocated: int
    gpu_equivalents: float
    gpu_equivalents_allocated: float
    containers: int = Field(description="ds01 containers on the machine, everyone's.")
    containers_running: int
    queued_requests: int = Field(description="Requests waiting in the GPU queue, everyone's.")
    queued_gpu_equivalents: float = Field(
        description="The least GPU-equivalents those requests need (demand)."
    )


class OverviewContainer(ContainerInfo):
    gpu_utilization_percent: float | None = Field(
        default=None, description="Its busiest device's utilisation now (running ones)."
    )
    gpu_memory_used_mib: int | None = Field(
        default=None, description="Device memory in use over its devices now (running ones)."
    )


class OverviewUser(_Model):
    user: str
    gpu_equivalents: float
    gpu_limit: float | None = Field(description="null: unlimited; absent limits: null too.")
    containers: int
    max_containers: int | None
    running: int
    queued: int = Field(description="Requests of theirs waiting in the GPU queue.")
    memory_bytes: int | None = Field(description="Memory their containers use now (cgroup).")
    memory_committed_bytes: int | None = Field(
        description="Memory limits of their containers that are not stopped; null when one "
        "has no limit."
    )
    memory_limit_bytes: int | None = Field(
        description="Their memory total (aggregate.memory_limit); null: none."
    )


class Overview(_Model):
    """Everything ``ds01-dashboard`` shows, in one answer: the machine's devices with their
    telemetry, totals, and the containers, queue entries and per-user usage the caller may
    see (admins: everyone's; a user: their own, and every device with its holder's user
    name only)."""

    at: str = Field(description="When it was taken (UTC).")
    user: str = Field(description="Who asked.")
    is_admin: bool
    scope: Literal["all", "own"] = Field(
        description="'all': every user's containers, queue and usage (admins); 'own': the "
        "caller's only."
    )
    backend: str
    message: str | None
    totals: OverviewTotals
    devices: list[OverviewDevice]
    unusable: list[UnusableGpu]
    containers: list[OverviewContainer]
    queue: list[QueueEntryInfo]
    users: list[OverviewUser]
    reservations: list[ReservationInfo] = Field(
        default_factory=list,
        description="Reservations not ended that start within the next 7 days, everyone's "
        "(the dashboard's week view).",
    )


class EventRecord(BaseModel):
    """One event of the audit log as ``GET /v1/events`` returns it (the chain's ``prev``
    hash left out: ``ds01 audit verify`` checks the chain)."""

    model_config = ConfigDict(extra="ignore")

    seq: int | None = Field(default=None, description="The event's number in the log.")
    ts: str
    user: str = Field(description="Who acted (`ds01d`: the daemon itself).")
    action: str
    resource: str
    details: dict[str, Any] = Field(default_factory=dict)
    outcome: str


class EventsPage(_Model):
    """Events selected by a query, oldest first."""

    events: list[EventRecord]
    last_seq: int | None = Field(
        description="Ask with after_seq= this number to get only later events (the newest "
        "event looked at, matching or not); null while the log is empty."
    )


class ReportQueueWaits(_Model):
    count: int = Field(description="Queued requests that started in the window.")
    mean_seconds: float | None
    max_seconds: float | None


class ReportRow(_Model):
    """One user's, one group's or everyone's figures over a report's window."""

    name: str = Field(description="The user, the group, or `total`.")
    group: str | None = Field(default=None, description="The user's group (user rows).")
    gpu_hours_allocated: float = Field(
        description="GPU-equivalent hours held (usage ledger), clipped to the window."
    )
    gpu_hours_measured: float = Field(
        description="Of those, hours with a utilisation reading of the devices held."
    )
    gpu_hours_used: float = Field(
        description="Measured hours weighted by the measured utilisation (busy GPU-hours)."
    )
    utilization_percent: float | None = Field(description="used / measured; null without readings.")
    containers_created: int
    idle_reclaims: int = Field(description="Stops by the lifecycle loop for idleness.")
    runtime_stops: int = Field(description="Stops by the lifecycle loop at the runtime limit.")
    queue_waits: ReportQueueWaits
    energy_kwh: float | None = Field(description="null: energy is not recorded.")
    co2_kg: float | None = Field(description="null: energy or grid intensity unknown.")
    unmanaged_gpu_uses: int = Field(
        default=0,
        description="Processes found on a GPU outside ds01's allocation (gpu.unmanaged_use): "
        "for the owner of the ds01 container they ran in, else for the process's user.",
    )
    reservations: int = Field(default=0, description="Reservations made (reservation.create).")
    reservation_stops: int = Field(
        default=0, description="Containers stopped because their GPU was reserved."
    )
    gpu_hours_borrowed: float = Field(
        default=0.0,
        description="Of the GPU-hours allocated, those held by containers placed above the "
        "owner's gpu_limit (borrowed).",
    )
    borrow_reclaims: int = Field(
        default=0,
        description="Borrowed containers stopped for a request within quota (container.reclaim).",
    )


class UsageReport(_Model):
    """``ds01 admin report``: usage per user and per group over a window."""

    start: str = Field(description="The window's start (UTC, included).")
    end: str = Field(description="The window's end (UTC, excluded).")
    generated_at: str
    co2_g_per_kwh: float | None = Field(description="Grid intensity used for CO2.")
    users: list[ReportRow]
    groups: list[ReportRow]
    total: ReportRow
    notes: list[str] = Field(description="What the figures rest on, and their limits.")
