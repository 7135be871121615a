"""The host door and Docker's way to GPUs (``ds01.core.gpu_check``), and the facts read
from the host (``ds01.runtime.host_gpu``) on files made for the test."""

from __future__ import annotations

import os
from pathlib import Path

from ds01.core.findings import exit_code
from ds01.core.gpu_check import (
    GPU_DEVICE_GROUP,
    DeviceNode,
    DockerGpuAccess,
    check_device_nodes,
    check_docker_gpu_access,
    modprobe_options,
)
from ds01.runtime.host_gpu import cdi_specs, docker_gpu_access, dockerd_path


def node(path: str, mode: int, group: str = "root", members: tuple[str, ...] = ()) -> DeviceNode:
    return DeviceNode(path, mode, 0, 0, group, members)


def test_nodes_open_to_everyone_are_a_warning_with_the_fix() -> None:
    finding = check_device_nodes(
        [node("/dev/nvidiactl", 0o666), node("/dev/nvidia0", 0o666), node("/dev/nvidia-uvm", 0o666)]
    )
    assert finding.level == "warning"
    assert "/dev/nvidiactl 0666" in finding.message and "/dev/nvidia0 0666" in finding.message
    assert "/dev/nvidia-uvm" not in finding.message  # useless without nvidiactl
    assert "NVreg_DeviceFileMode=0660" in finding.hint and "modprobe -r" in finding.hint


def test_closed_nodes_are_ok_unless_the_group_has_members() -> None:
    closed = [node("/dev/nvidiactl", 0o660, GPU_DEVICE_GROUP), node("/dev/nvidia3", 0o660)]
    assert check_device_nodes(closed).level == "ok"
    members = [node("/dev/nvidiactl", 0o660, "video", ("alice",)), node("/dev/nvidia0", 0o600)]
    finding = check_device_nodes(members)
    assert finding.level == "warning" and "alice" in finding.message and "video" in finding.message
    # No driver loaded: nothing to open.
    assert check_device_nodes([node("/dev/nvidia-uvm", 0o666)]).level == "ok"


def test_docker_needs_the_hook_or_cdi_not_just_the_runtime() -> None:
    assert check_docker_gpu_access(DockerGpuAccess(hook="/usr/bin/x")).level == "ok"
    assert check_docker_gpu_access(DockerGpuAccess(None, ("/etc/cdi/a.yaml",))).level == "ok"
    none = check_docker_gpu_access(DockerGpuAccess(None, (), ("nvidia", "runc"), "/sbin:/bin"))
    assert none.level == "critical" and "/sbin:/bin" in none.message
    assert exit_code([none]) == 2


def test_the_modprobe_option_names_the_group_and_mode() -> None:
    text = modprobe_options(991)
    assert (
        "options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID=991 NVreg_DeviceFileMode=0660\n"
        in text
    )


def test_the_hook_is_looked_up_on_dockerds_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "toolkit"
    bin_dir.mkdir()
    hook = bin_dir / "nvidia-container-runtime-hook"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242/environ").write_bytes(b"HOME=/root\0PATH=" + str(bin_dir).encode() + b"\0")
    pid_file = tmp_path / "docker.pid"
    pid_file.write_text("4242\n")
    assert dockerd_path(pid_file, proc) == str(bin_dir)
    assert dockerd_path(tmp_path / "missing.pid", proc) is None
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    (cdi / "nvidia.yaml").write_text("cdiVersion: 0.5.0\n")
    (cdi / "README").write_text("")
    assert cdi_specs([str(cdi), str(tmp_path / "absent")]) == (str(cdi / "nvidia.yaml"),)
    # Without dockerd's pid file: ds01d's own PATH (which has no hook here).
    access = docker_gpu_access({"runc": {}}, tmp_path / "missing.pid", [])
    assert access.path == os.environ.get("PATH", os.defpath)
    assert access.runtimes == ("runc",)
