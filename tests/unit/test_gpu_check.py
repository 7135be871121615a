"""``ds01 admin gpu-check``'s decisions over collected facts (``ds01.core.gpu_check``)."""

from __future__ import annotations

import dataclasses

from ds01.core.findings import exit_code
from ds01.core.gpu_check import (
    ContainerTest,
    DeviceNode,
    DockerGpuAccess,
    GpuCheckFacts,
    check_container_test,
    gpu_check_findings,
    listed_uuids,
)

GPU = "GPU-5f3c1a2b-0000-1111-2222-333344445555"
PARENT = "GPU-aaaaaaaa-0000-1111-2222-333344445555"
MIG = "MIG-0b1c2d3e-4444-5555-6666-777788889999"

READY = GpuCheckFacts(
    backend="nvml",
    kernel_driver="NVRM version: NVIDIA UNIX x86_64 Kernel Module 550.54.15",
    driver_version="550.54.15",
    nvml_version="12.550.54.15",
    cuda_version="12.4",
    gpus=1,
    devices=1,
    mig_without_instances=(),
    inventory_message=None,
    devices_without_telemetry=(),
    nodes=(
        DeviceNode("/dev/nvidiactl", 0o660, 0, 990, "ds01-gpu"),
        DeviceNode("/dev/nvidia0", 0o660, 0, 990, "ds01-gpu"),
    ),
    docker=DockerGpuAccess(hook="/usr/bin/nvidia-container-runtime-hook"),
    container_test=ContainerTest(GPU, 0, f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {GPU})\n"),
)


def levels(facts: GpuCheckFacts) -> dict[str, str]:
    return {f.check: f.level for f in gpu_check_findings(facts)}


def test_a_ready_server_exits_0() -> None:
    findings = gpu_check_findings(READY)
    assert exit_code(findings) == 0, findings
    assert "550.54.15" in findings[0].message and "CUDA 12.4" in findings[0].message


def test_this_machine_no_driver_and_simulated_gpus_cannot_serve() -> None:
    simulated = dataclasses.replace(
        READY,
        backend="simulated",
        kernel_driver=None,
        driver_version=None,
        nvml_version=None,
        cuda_version=None,
        nodes=(),
        docker=DockerGpuAccess(hook=None, path="/usr/bin:/bin"),
        container_test=None,
    )
    findings = gpu_check_findings(simulated)
    assert exit_code(findings) == 2
    by_check = {f.check: f for f in findings}
    assert "No NVIDIA driver" in by_check["driver"].message
    assert by_check["backend"].level == "critical" and "simulated" in by_check["backend"].message
    assert "container-test" not in by_check  # nothing to test on


def test_open_device_nodes_and_missing_telemetry_are_warnings() -> None:
    open_nodes = dataclasses.replace(
        READY,
        nodes=(DeviceNode("/dev/nvidiactl", 0o666, 0, 0, "root"),),
        devices_without_telemetry=(GPU,),
        mig_without_instances=(1,),
    )
    found = levels(open_nodes)
    assert found["gpu-device-nodes"] == "warning"
    assert found["telemetry"] == "warning" and found["mig"] == "warning"
    assert exit_code(gpu_check_findings(open_nodes)) == 1


def test_no_free_device_skips_the_container_test_with_a_warning() -> None:
    busy = dataclasses.replace(READY, container_test=None, container_test_skipped="all held")
    assert levels(busy)["container-test"] == "warning"


def test_the_container_must_see_exactly_its_device() -> None:
    assert check_container_test(READY.container_test or ContainerTest(GPU)).level == "ok"
    two = ContainerTest(GPU, 0, f"GPU 0: A (UUID: {GPU})\nGPU 1: B (UUID: {PARENT})\n")
    assert check_container_test(two).level == "critical"
    failed = ContainerTest(GPU, 127, "exec: nvidia-smi: not found")
    assert "not found" in check_container_test(failed).message
    assert check_container_test(ContainerTest(GPU, error="no such image")).level == "critical"
    # A MIG instance is listed under its GPU: that GPU line is not a device of its own.
    mig = (
        f"GPU 0: NVIDIA A100-SXM4-40GB (UUID: {PARENT})\n"
        f"  MIG 1g.5gb      Device  0: (UUID: {MIG})\n"
    )
    assert listed_uuids(mig) == (PARENT, MIG)
    assert check_container_test(ContainerTest(MIG, 0, mig)).level == "ok"
    assert check_container_test(ContainerTest(GPU, 0, mig)).level == "critical"
