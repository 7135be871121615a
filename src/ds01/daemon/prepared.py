"""The values a create passes between ds01d's collaborators: a request prepared outside the
allocation lock, and the two answers a create can give (created, or queued)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ds01.config.resolve import ResolvedAggregate
from ds01.core.allocation import GpuRequest
from ds01.core.container_resources import Resources
from ds01.core.docker_create import RunOptions
from ds01.daemon import schemas as api
from ds01.model.quota import GpuQuota
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.docker_images import LocalImage
from ds01.runtime.identity import UnixUser
from ds01.runtime.store import QueuedRequest


@dataclass(frozen=True)
class Made:
    """A container ``Creation.create_admitted`` made: what its owner is told, and the
    container as Docker listed it right after (``None`` if that look-up failed), so that
    whoever acts on it next (its start, the Docker API door's answer) need not ask again."""

    info: api.ContainerInfo
    record: ContainerRecord | None


@dataclass(frozen=True)
class Created:
    """A container just created, and the intent to confirm once the client is answered.
    ``record``: as ``Made.record``."""

    info: api.ContainerInfo
    request_id: str
    record: ContainerRecord | None = None


@dataclass(frozen=True)
class Queued:
    """A create that found no free devices and now waits in the GPU queue."""

    entry: QueuedRequest
    reason: str  # why it could not start now


@dataclass(frozen=True)
class ResolvedImage:
    """An image a user may run, as a create uses it."""

    reference: str
    framework: str
    local: LocalImage
    jupyter_port: int | None  # from its registry entry or its ds01.jupyter.port label


@dataclass(frozen=True)
class PreparedCreate:
    """A validated create request with everything resolved that needs no lock."""

    owner: UnixUser
    name: str
    docker_name: str
    group: str  # the cgroup slice and fair-share group
    gpu_request: GpuRequest
    quota: GpuQuota
    priority: int
    image_ref: str
    requested_image: str
    framework: str
    image_command: tuple[str, ...]
    resources: Resources
    aggregate: ResolvedAggregate
    workspace: Path
    data: Path | None
    ports: tuple[tuple[int, int | None], ...]
    interface: str
    kept_image: str | None = None  # set when re-created from a commit of its old self
    jupyter_port: int | None = None  # the container port its JupyterLab listens on
    jupyter_token: str | None = None
    # A JupyterHub single-user server (request.hub): the hub's variables, the port's command.
    hub_environment: tuple[tuple[str, str], ...] = ()
    hub_server: str | None = None  # and the hub's name of the server ("" for the default)
    image_id: str = ""  # the local image's id, when known (its account files are cached)
    run: RunOptions | None = None  # a create through the Docker API door
    borrow: bool = False  # asks to borrow above gpu_limit (--borrow or `borrow: auto`)
    borrowed: bool = False  # placed above gpu_limit (decided under the allocation lock)
    slurm_job: int | None = None  # cluster mode: the Slurm job that owns it
    slurm_node: str | None = None  # and the node it runs on
    slurm_cgroup: str | None = None  # and the job's cgroup, its cgroup parent (cgroupfs)
    runtime_hours: float | None = None  # declared by its owner (--runtime-hours): its runtime limit


__all__ = ["Created", "PreparedCreate", "Queued", "ResolvedImage"]
