"""Typed request and response bodies of the ds01d HTTP API (JSON over the unix socket).

These pydantic models are the contract between the CLI and the daemon, and the source of
the OpenAPI document served at ``GET /openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateContainerRequest(_Model):
    name: str = Field(description="Container name as the user sees it, e.g. 'thesis'.")
    image: str = Field(description="Registry name from images.yaml or an allowed local reference.")
    gpus: int = Field(default=0, ge=0, le=64, description="Number of whole GPUs.")
    mig: list[str] = Field(default_factory=list, description="MIG profiles, e.g. ['3g.20gb'].")
    cpus: float | None = Field(default=None, gt=0, description="CPU cores; default: the quota.")
    memory: str | None = Field(default=None, description="Memory, e.g. '16G'; default: quota.")
    shm_size: str | None = Field(default=None, description="/dev/shm size; default: quota.")
    workspace: str | None = Field(
        default=None,
        description="Absolute host directory mounted at /workspace (default ~/workspace).",
    )
    data: str | None = Field(default=None, description="Absolute host directory mounted at /data.")
    interface: Literal["cli", "deploy", "proxy", "job"] = "cli"


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


class ContainerInfo(_Model):
    name: str
    docker_name: str
    user: str
    status: str
    image: str
    gpus: list[str]
    gpu_equivalents: float
    created_at: str


class ResolvedEntry(_Model):
    value: Any
    source: str


class Usage(_Model):
    gpu_equivalents: float
    containers: int
    gpu_containers: list[str]


class LimitsResponse(_Model):
    user: str
    groups: list[str]
    is_admin: bool
    limits: dict[str, Any]
    usage: Usage
    explain: dict[str, ResolvedEntry] | None = None


class ImageInfo(_Model):
    name: str
    image: str
    framework: str
    description: str
    version: str | None
    present: bool


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
