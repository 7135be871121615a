"""``CreateSpecs``: what Docker is asked for a create, and the image a request names.

``resolve_image`` decides which image a request may use (the registry, the ``allow``
patterns, the user's own builds); ``spec`` writes the ``ContainerSpec`` of an admitted
create: ds01's labels, the GPU exposure (``gpu_exposure``), the staging paths of its
bind mounts, its resources, the log driver and the user's cgroup parent.

State: none. Locks: ``spec`` runs under the allocation lock (``Creation.create_admitted``);
``resolve_image`` needs none. Calls: the context's runtime (the local image), clock,
staging, engine facts and status; no other collaborator.
"""

from __future__ import annotations

from dataclasses import dataclass

from ds01.config.loader import Ds01Config
from ds01.core.allocation import Placement
from ds01.core.container_resources import stop_signal
from ds01.core.docker_create import RunOptions
from ds01.daemon.context import DaemonContext
from ds01.daemon.launch import CONTAINER_DATA, CONTAINER_WORKSPACE
from ds01.daemon.limits_enforcement import cgroup_parent
from ds01.daemon.prepared import PreparedCreate, ResolvedImage
from ds01.daemon.views import jupyter_port_of
from ds01.errors import NotFound, PermissionDenied
from ds01.model import labels as L
from ds01.model.device import Device, Inventory
from ds01.model.names import validate_image_reference
from ds01.model.suggest import did_you_mean
from ds01.model.text import shown
from ds01.runtime.docker import ROTATING_LOG_DRIVERS, ContainerSpec
from ds01.runtime.host_gpu import device_group_gid
from ds01.runtime.staging import staging_key


@dataclass(frozen=True)
class GpuExposure:
    """How a container's devices reach it: its GPU variables, the devices Docker asks the
    NVIDIA Container Toolkit for (a ``DeviceRequest`` by UUID), and stand-in device nodes."""

    environment: dict[str, str]
    gpu_uuids: tuple[str, ...] = ()
    device_nodes: tuple[str, ...] = ()


def gpu_exposure(backend: str, devices: tuple[Device, ...]) -> GpuExposure:
    """The GPU part of a container's spec under GPU backend ``backend``.

    ``DS01_GPUS`` names the devices ds01 allocated (UUIDs, comma-separated; empty for none)
    under every backend. With ``nvml`` the devices are real: ``NVIDIA_VISIBLE_DEVICES`` and
    ``CUDA_VISIBLE_DEVICES`` name them, and Docker asks the toolkit for them by UUID. With
    the simulated backend they do not exist, so both variables say ``void`` and no made-up
    UUID reaches a real runtime: on a host whose Docker default runtime is ``nvidia``, the
    runtime reads ``NVIDIA_VISIBLE_DEVICES`` and would fail the start on a device it cannot
    find. Simulated GPUs reach the container only as their stand-in device nodes, where
    ``gpu-config.yaml`` gives them. Without devices both variables say ``void`` under every
    backend, which also overrides an image's own ``ENV NVIDIA_VISIBLE_DEVICES=all``.
    """
    uuids = tuple(d.uuid for d in devices)
    listed = ",".join(uuids)
    real = backend == "nvml"
    visible = (listed if real else "") or L.NO_GPU_DEVICES
    environment = {
        "NVIDIA_VISIBLE_DEVICES": visible,
        "CUDA_VISIBLE_DEVICES": visible,
        L.GPUS_ENV: listed,
    }
    if real:
        return GpuExposure(environment, gpu_uuids=uuids)
    return GpuExposure(environment, device_nodes=device_nodes(devices))


def device_nodes(devices: tuple[Device, ...]) -> tuple[str, ...]:
    """``--device`` entries for simulated GPUs that have a stand-in device node."""
    nodes: dict[str, str] = {}
    for device in devices:
        if device.device_node:
            nodes[device.device_node] = f"/dev/nvidia{device.gpu_index}"
    return tuple(f"{host}:{inside}:rwm" for host, inside in sorted(nodes.items()))


class CreateSpecs:
    """What Docker is asked for a create (see the module docstring for the contract)."""

    def __init__(self, context: DaemonContext) -> None:
        self.context = context

    def resolve_image(self, config: Ds01Config, wanted: str, user: str) -> ResolvedImage:
        """The image a request names: its reference, framework, local image and Jupyter port.

        Allowed: a registry entry (by name or reference), a reference matching an ``allow``
        pattern, or an image labelled as built for ``user`` (``ds01.image.owner``).
        """
        entry = config.images.find(wanted)
        if entry is not None:
            ref, framework = entry.image, entry.framework
        else:
            ref, framework = validate_image_reference(wanted), "-"
        image = self.context.runtime.local_image(ref)
        allowed = (
            entry is not None
            or config.images.allows_reference(ref)
            or (image is not None and image.owner() == user)
        )
        if not allowed:
            # The same answer whether the image exists or belongs to someone else: the
            # suggestions come from the registry alone.
            hint = did_you_mean(wanted, (e.name for e in config.images.entries))
            if hint or not any(mark in wanted for mark in "/:@"):
                raise NotFound(
                    f"There is no image {shown(wanted)} in the image registry or among your "
                    f"own images.{hint} `image-list` shows the images you can use."
                )
            raise PermissionDenied(
                f"Image {shown(wanted)} is not in the image registry, not one of your own "
                "images, and local references like it are not allowed here. `image-list` "
                "shows the images you can use."
            )
        if image is None:
            raise NotFound(
                f"Image {shown(ref)} is not present on this machine. `image-list` shows the "
                "images "
                "that are; ask an admin to pull or build it."
            )
        jupyter_port = (entry.jupyter_port if entry else None) or jupyter_port_of(image.labels)
        return ResolvedImage(ref, framework, image, jupyter_port)

    def _labels(
        self, prepared: PreparedCreate, placement: Placement, request_id: str
    ) -> dict[str, str]:
        """ds01's labels of the container (``ds01.model.labels.ContainerLabels``)."""
        owner, resources, uuids = prepared.owner, prepared.resources, placement.uuids
        return L.ContainerLabels(
            user=owner.name,
            uid=owner.uid,
            group=prepared.group,
            name=prepared.name,
            gpus=uuids,
            gpu_equivalents=placement.gpu_equivalents,
            created_at=self.context.now().isoformat(timespec="seconds"),
            interface=prepared.interface,
            image=prepared.requested_image,
            request_id=request_id,
            slurm_job=prepared.slurm_job,
            slurm_node=prepared.slurm_node,
            slurm_cgroup=prepared.slurm_cgroup,
            memory_bytes=resources.memory_bytes,
            cpus=resources.cpus,
            disk_bytes=resources.disk_bytes,
            ports=prepared.ports,
            kept_image=prepared.kept_image,
            jupyter_port=prepared.jupyter_port,
            jupyter_token=prepared.jupyter_token,
            workspace=str(prepared.workspace),
            data=str(prepared.data) if prepared.data else None,
            framework=prepared.framework,
            visible_devices=",".join(uuids) or L.NO_GPU_DEVICES,
            borrowed=prepared.borrowed,
            runtime_hours=prepared.runtime_hours,
            hub_server=prepared.hub_server,
        ).as_dict()

    def spec(
        self, prepared: PreparedCreate, placement: Placement, inventory: Inventory, request_id: str
    ) -> ContainerSpec:
        """What Docker is asked to create for ``prepared`` on ``placement``: the staging
        paths of its bind mounts are made here (``ctx.staging.prepare``)."""
        ctx = self.context
        owner, resources, data = prepared.owner, prepared.resources, prepared.data
        gpus = gpu_exposure(inventory.backend, placement.devices)
        # Docker binds the staging paths; ``launch`` mounts the owner's directories there.
        inside = [CONTAINER_WORKSPACE] + ([CONTAINER_DATA] if data else [])
        staging = staging_key(prepared.docker_name, request_id)
        mounts = [
            (str(ctx.staging.prepare(staging, path.strip("/"))), path)
            for path in inside
        ]
        token = prepared.jupyter_token
        run = prepared.run or RunOptions()
        return ContainerSpec(
            docker_name=prepared.docker_name,
            image=prepared.image_ref,
            user=f"{owner.uid}:{owner.gid}",
            hostname=prepared.name,
            # ds01's labels and variables win over the client's (which name none of them).
            labels={**dict(run.labels), **self._labels(prepared, placement, request_id)},
            environment={
                **dict(run.env),
                **gpus.environment,
                "HOME": CONTAINER_WORKSPACE,
                "USER": owner.name,
                "DS01_CONTAINER": prepared.name,
                **({L.JUPYTER_TOKEN_ENV: token} if token else {}),
                **dict(prepared.hub_environment),
            },
            mounts=tuple(mounts),
            volumes=run.volumes,
            # A Slurm job's container lives in the job's cgroup: Slurm's limits hold it.
            cgroup_parent=prepared.slurm_cgroup
            or cgroup_parent(prepared.group, owner.name, ctx.engine.cgroup_driver),
            cpus=resources.cpus,
            memory_bytes=resources.memory_bytes,
            shm_size_bytes=resources.shm_size_bytes,
            pids_limit=resources.pids_limit,
            storage_size_bytes=resources.disk_bytes
            if ctx.status.storage.mode == "enforced"
            else None,
            rotating_log_driver=ctx.engine.logging_driver
            if ctx.engine.logging_driver in ROTATING_LOG_DRIVERS
            else None,
            gpu_uuids=gpus.gpu_uuids,
            device_nodes=gpus.device_nodes,
            stop_signal=stop_signal(prepared.image_command),
            ports=prepared.ports,
            working_dir=run.working_dir or CONTAINER_WORKSPACE,
            command=hub_command(prepared.jupyter_port) if prepared.hub_environment else run.command,
            entrypoint=run.entrypoint,
            # ds01's own creates keep a terminal open on the image's command.
            tty=run.tty if prepared.run is not None else True,
            stdin_open=run.stdin_open if prepared.run is not None else True,
            extra={
                **device_group(gpus.gpu_uuids),
                **({"auto_remove": True} if run.auto_remove else {}),
            },
        )


def hub_command(port: int | None) -> tuple[str, ...]:
    """The command of a JupyterHub single-user server listening on the image's JupyterLab
    ``port`` (published on the host's 127.0.0.1, where the hub reaches it)."""
    return ("jupyterhub-singleuser", "--ip=0.0.0.0", f"--port={port}")


def device_group(gpu_uuids: tuple[str, ...]) -> dict[str, list[str]]:
    """Docker's ``group_add`` for a container given GPUs through the NVIDIA toolkit: the
    device group, so that its user (not root) opens the device nodes the toolkit puts in
    it once ``ds01 admin setup`` made them 0660 root:ds01-gpu. No GPUs or no group: none."""
    gid = device_group_gid() if gpu_uuids else None
    return {"group_add": [str(gid)]} if gid is not None else {}
