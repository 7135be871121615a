"""``GET /v1/admin/gpu-check``: can this machine serve real GPUs, and only through ds01
(admins only; ``ds01 admin gpu-check``)?

Collects the facts (``ds01.core.gpu_check.GpuCheckFacts``): the driver's versions (the
kernel module's in ``/proc``, and NVML's), every GPU and device with its telemetry, the
``/dev/nvidia*`` nodes, Docker's way to GPUs (the hook on dockerd's PATH, or CDI). With the
NVML backend and Docker able to give GPUs, ds01d then runs one test container on a device
that no container holds or waits for: ``nvidia-smi -L`` as an unprivileged user, given the
device the way ds01 gives devices (a GPU request by UUID, the device group when the door is
closed), and checks that it lists exactly that device. The container is not one of ds01's
(no labels), has no network, and is removed when it ends. Nothing else is changed; MIG
modes never.

The image of the test container is the query's ``image`` or the starter of
``images.yaml``; it must be on this machine (nothing is pulled) and have a C library
(the toolkit adds ``nvidia-smi`` to it).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from ds01.core.allocation import equivalents_to_float
from ds01.core.findings import exit_code
from ds01.core.gpu_check import ContainerTest, GpuCheckFacts, gpu_check_findings
from ds01.daemon import schemas as api
from ds01.daemon.create_spec import device_group, gpu_exposure
from ds01.daemon.doctor import DOCKER_TIMEOUT_SECONDS
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.daemon.views import allocation_state
from ds01.errors import Ds01Error
from ds01.gpu.backend import DeviceTelemetry, device_telemetry
from ds01.model.device import Device, Inventory
from ds01.runtime.docker import ContainerSpec
from ds01.runtime.host_gpu import (
    device_nodes,
    docker_gpu_access,
    kernel_driver_version,
)

#: Seconds the test container may run.
TEST_TIMEOUT_SECONDS = 60
#: Who runs ``nvidia-smi`` in the test container: nobody, like a user without privileges.
TEST_USER = "65534:65534"


def _telemetry(reading: DeviceTelemetry | None) -> dict[str, float | int | None]:
    return dict(vars(reading)) if reading is not None else dict(vars(DeviceTelemetry()))


def _silent(inventory: Inventory, telemetry: Mapping[str, DeviceTelemetry]) -> tuple[str, ...]:
    """The devices for which no value at all could be read."""
    nothing = DeviceTelemetry()
    return tuple(d.uuid for d in inventory.devices if telemetry.get(d.uuid, nothing) == nothing)


def _free_device(service: Ds01Service, inventory: Inventory) -> Device | None:
    """A device no container holds, not reserved and not kept for the queue's head."""
    held = allocation_state(service.records()).held()
    kept = service.status.queue_reserved
    for device in inventory.devices:
        if device.uuid not in held and device.uuid not in inventory.reserved | kept:
            return device
    return None


def _test_image(service: Ds01Service, query: Mapping[str, str]) -> str | None:
    if query.get("image"):
        return query["image"]
    images = service.config().images
    return next((e.image for e in images.images if e.name == images.starter), None)


def _container_test(
    service: Ds01Service, inventory: Inventory, query: Mapping[str, str]
) -> tuple[ContainerTest | None, str | None]:
    """The test container's result, or why it was not run."""
    device = _free_device(service, inventory)
    if device is None:
        return None, "every device is held by a container or kept for the queue"
    image = _test_image(service, query)
    if image is None:
        return None, "no image to run it in: give --image (one with a C library)"
    runtime = service.runtime
    if runtime.local_image(image) is None:
        return None, f"image {image} is not on this machine (nothing is pulled)"
    gpus = gpu_exposure(inventory.backend, (device,))  # as a container of ds01's gets it
    spec = ContainerSpec(
        docker_name=f"ds01-gpu-check-{secrets.token_hex(4)}",
        image=image,
        user=TEST_USER,
        hostname="ds01-gpu-check",
        labels={},
        environment={**gpus.environment, "NVIDIA_DRIVER_CAPABILITIES": "utility"},
        mounts=(),
        cgroup_parent="",
        gpu_uuids=gpus.gpu_uuids,
        network="none",
        working_dir="/",
        command=("nvidia-smi", "-L"),
        extra=device_group(gpus.gpu_uuids),
    )
    try:
        code, output = runtime.run_to_end(spec, TEST_TIMEOUT_SECONDS)
    except Ds01Error as exc:
        return ContainerTest(device.uuid, error=exc.message), None
    return ContainerTest(device.uuid, code, output), None


def gpu_check(
    service: Ds01Service, caller: Caller, query: Mapping[str, str]
) -> api.GpuCheckReport:
    """Every check of ``ds01 admin gpu-check`` (see the module docstring)."""
    if not caller.is_admin:
        raise service.deny(caller, "admin/gpu-check", "Only admins may run the GPU check.")
    backend_name = service.config().gpus.backend
    backend = service.backend
    inventory = backend.inventory()
    uuids = [g.uuid for g in inventory.gpus] + [d.uuid for d in inventory.devices]
    telemetry = device_telemetry(backend, uuids)
    versions = backend.driver_versions()
    try:
        info = service.runtime.probe(timeout_seconds=DOCKER_TIMEOUT_SECONDS)
    except Ds01Error:
        info = {}
    docker = docker_gpu_access(info.get("Runtimes") or {})
    test, skipped = None, None
    if backend_name == "nvml" and docker.can_serve and inventory.devices:
        test, skipped = _container_test(service, inventory, query)
    facts = GpuCheckFacts(
        backend=backend_name,
        kernel_driver=kernel_driver_version(),
        driver_version=versions.get("driver"),
        nvml_version=versions.get("nvml"),
        cuda_version=versions.get("cuda"),
        gpus=len(inventory.gpus),
        devices=len(inventory.devices),
        mig_without_instances=tuple(g.index for g in inventory.unusable_gpus()),
        inventory_message=inventory.message,
        devices_without_telemetry=_silent(inventory, telemetry) if backend_name == "nvml" else (),
        nodes=tuple(device_nodes()),
        docker=docker,
        container_test=test,
        container_test_skipped=skipped,
    )
    findings = gpu_check_findings(facts)
    return api.GpuCheckReport(
        backend=backend_name,
        driver={
            "kernel": facts.kernel_driver,
            "driver": facts.driver_version,
            "nvml": facts.nvml_version,
            "cuda": facts.cuda_version,
        },
        gpus=[
            api.GpuCheckGpu(
                index=g.index,
                uuid=g.uuid,
                model=g.model,
                memory_mib=g.memory_mib,
                mig_enabled=g.mig_enabled,
                telemetry=_telemetry(telemetry.get(g.uuid)),
            )
            for g in inventory.gpus
        ],
        devices=[
            api.GpuCheckDevice(
                uuid=d.uuid,
                kind=d.kind,
                profile=d.profile,
                gpu_index=d.gpu_index,
                gpu_uuid=d.gpu_uuid,
                memory_mib=d.memory_mib,
                gpu_equivalents=equivalents_to_float(d.gpu_equivalents),
                telemetry=_telemetry(telemetry.get(d.uuid)),
            )
            for d in inventory.devices
        ],
        device_nodes=[n.to_dict() for n in facts.nodes],
        docker=docker.to_dict(),
        container_test=test.to_dict() if test is not None else None,
        findings=[api.DoctorFinding(**vars(f)) for f in findings],
        exit_code=exit_code(findings),
    )


__all__ = ["gpu_check"]
