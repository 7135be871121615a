"""Typed request and response bodies of the ds01d HTTP API (JSON over the unix socket).

These pydantic models are the contract between the CLI and the daemon, and the source of
the OpenAPI document served at ``GET /openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class CreateContainerRequest(_Model):
    name: str = Field(description="Container name as the user sees it, e.g. 'thesis'.")
    image: str = Field(description="Registry name from images.yaml or an allowed local reference.")
    gpus: int = Field(default=0, ge=0, le=64, description="Number of whole GPUs.")
    mig: list[str] = Field(default_factory=list, description="MIG profiles, e.g. ['3g.20gb'].")
    # Docker's smallest CPU limit is 0.01; less would round to 0, which means "no limit".
    cpus: float | None = Field(default=None, ge=0.01, description="CPU cores; default: quota.")
    memory: str | None = Field(default=None, description="Memory, e.g. '16G'; default: quota.")
    shm_size: str | None = Field(default=None, description="/dev/shm size; default: quota.")
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
    interface: Literal["cli", "deploy", "proxy", "job"] = "cli"
    queue: bool = Field(
        default=False,
        description="When no devices are free now: wait in the GPU queue (HTTP 202) instead "
        "of failing with exit 3. The container is created and started when its turn comes.",
    )


class Holder(_Model):
    user: str
    container: str


class DeviceStatus(_Model):
    uuid: str
    kind: Literal["gpu", "mig"]
    profile: str | None
    gpu_index: int
    model: str
    memory_mib: int
    gpu_equivalents: float
    reserved: bool
    holder: Holder | None


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
    ports: list[PublishedPort] = Field(
        default_factory=list, description="Published ports (host side on 127.0.0.1)."
    )
    jupyter_url: str | None = Field(
        default=None,
        description="Its JupyterLab with the token (running containers of Jupyter images).",
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


class ResolvedEntry(_Model):
    value: Any
    source: str


class Usage(_Model):
    gpu_equivalents: float
    containers: int
    gpu_containers: list[str]


class AggregateUsage(_Model):
    memory_bytes: int | None = Field(
        description="Memory the user's containers use together now (bytes), from the cgroup."
    )
    memory_committed_bytes: int | None = Field(
        description="Sum of the memory limits of the user's containers that are not stopped "
        "(bytes); null when one of them has no limit."
    )


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
        default=None, description="1-based place in the queue while waiting."
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
        if any(len(arg) > 65536 or "\0" in arg for arg in command):
            raise ValueError("command arguments must be under 64 KiB and free of NUL bytes")
        return command


class TerminalInfo(_Model):
    id: str
    running: bool
    exit_code: int | None = Field(description="The program's exit status once it ended.")


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
