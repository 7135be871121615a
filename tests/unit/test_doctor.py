from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ds01.core.gpu_check import DockerGpuAccess
from ds01.daemon import doctor
from ds01.daemon.doctor import (
    Finding,
    check_admin_group,
    check_api_socket,
    check_cgroups,
    check_config,
    check_docker_engine,
    check_docker_group,
    check_docker_socket,
    check_nvidia_toolkit,
    check_registry_images,
    check_storage,
    exit_code,
    run_checks,
)
from ds01.errors import DockerUnavailable


def test_docker_group_members_other_than_root_are_critical() -> None:
    assert check_docker_group([]).level == "ok"
    assert check_docker_group(["root"]).level == "ok"
    finding = check_docker_group(["root", "alice", "bob"])
    assert finding.level == "critical"
    assert "alice, bob" in finding.message
    assert "gpasswd" in finding.hint


def test_world_writable_docker_socket_is_critical(tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    sock.touch()
    os.chmod(sock, 0o660)
    assert check_docker_socket(sock).level == "ok"
    os.chmod(sock, 0o666)
    assert check_docker_socket(sock).level == "critical"
    assert check_docker_socket(tmp_path / "missing").level == "critical"


def test_missing_admin_group_is_a_warning() -> None:
    assert check_admin_group("no-such-group-ds01").level == "warning"
    assert check_admin_group("root").level == "ok"


def test_invalid_config_on_disk_is_critical(tmp_path: Path) -> None:
    assert check_config(tmp_path).level == "ok"
    (tmp_path / "resource-limits.yaml").write_text("defaults:\n  gpu_limit: -1\n")
    finding = check_config(tmp_path)
    assert finding.level == "critical"
    assert "resource-limits.yaml:2" in finding.message


def test_a_crashing_check_becomes_a_warning_and_levels_give_the_exit_code() -> None:
    def broken() -> Finding:
        raise RuntimeError("boom")

    findings = run_checks([lambda: Finding("a", "ok", "fine"), broken])
    assert [f.level for f in findings] == ["ok", "warning"]
    assert "boom" in findings[1].message
    assert exit_code(findings[:1]) == 0
    assert exit_code(findings) == 1
    assert exit_code([*findings, Finding("c", "critical", "bad")]) == 2


# --- the engine, cgroups, the toolkit, the loop, the socket -----------------------------------


class _Cgroups:
    """What the checks read of a CgroupManager."""

    def __init__(self, version: str | None, driver: str = "cgroupfs") -> None:
        self.version, self.driver, self.root = version, driver, Path("/sys/fs/cgroup")


def test_a_docker_engine_that_does_not_answer_is_critical_at_once() -> None:
    def down() -> dict[str, object]:
        raise DockerUnavailable("asking the Docker engine for its info: connection refused")

    finding, info = check_docker_engine(down)
    assert finding.level == "critical"
    assert finding.check == "docker"
    assert "does not answer" in finding.message and "connection refused" in finding.message
    assert info == {}
    up, info = check_docker_engine(lambda: {"ServerVersion": "20.10.24", "ContainersRunning": 2})
    assert up.level == "ok" and "20.10.24" in up.message and info["ContainersRunning"] == 2


def test_cgroup_version_and_a_changed_docker_driver() -> None:
    info = {"CgroupDriver": "cgroupfs", "CgroupVersion": "1"}
    assert check_cgroups(info, _Cgroups("v1")).level == "ok"  # type: ignore[arg-type]
    changed = check_cgroups({**info, "CgroupDriver": "systemd"}, _Cgroups("v1"))  # type: ignore[arg-type]
    assert changed.level == "critical" and "Restart ds01d" in changed.hint
    assert check_cgroups(info, _Cgroups(None)).level == "warning"  # type: ignore[arg-type]
    assert check_cgroups({}, _Cgroups("v2")).level == "ok"  # type: ignore[arg-type]


def test_the_nvidia_toolkit_matters_only_with_nvml() -> None:
    def unasked() -> DockerGpuAccess:
        raise AssertionError("simulated GPUs need no toolkit: nothing to look for")

    simulated = check_nvidia_toolkit("simulated", unasked)
    assert simulated.level == "ok" and "not needed" in simulated.message
    # The `nvidia` runtime alone does not serve a GPU request (--gpus): critical, said so.
    runtime_only = check_nvidia_toolkit(
        "nvml", lambda: DockerGpuAccess(hook=None, runtimes=("nvidia", "runc"), path="/usr/bin")
    )
    assert runtime_only.level == "critical"
    assert "nvidia-container-runtime-hook" in runtime_only.message
    assert "--runtime=nvidia" in runtime_only.message
    hook = "/usr/bin/nvidia-container-runtime-hook"
    assert check_nvidia_toolkit("nvml", lambda: DockerGpuAccess(hook=hook)).level == "ok"
    cdi = DockerGpuAccess(hook=None, cdi_specs=("/etc/cdi/nvidia.yaml",))
    assert check_nvidia_toolkit("nvml", lambda: cdi).level == "ok"


def test_the_api_socket_must_be_open_to_every_user(tmp_path: Path) -> None:
    path = tmp_path / "ds01.sock"
    assert check_api_socket(path).level == "critical"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        tmp_path.chmod(0o755)
        path.chmod(0o666)
        assert check_api_socket(path).level == "ok"
        path.chmod(0o600)
        closed = check_api_socket(path)
        assert closed.level == "warning" and "chmod 666" in closed.hint


def test_storage_names_each_file_system_once_and_a_full_one_is_critical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, log = tmp_path / "state", tmp_path / "log"
    state.mkdir()
    log.mkdir()
    finding = check_storage([state, log])
    assert finding.level in ("ok", "warning"), finding  # this machine's own disk
    assert f"{state}, {log}: " in finding.message and finding.message.count(" free on ") == 1
    monkeypatch.setattr(doctor, "FULL_BELOW_BYTES", 1 << 62)  # any free space is too little
    full = check_storage([state, log])
    assert full.level == "critical" and "is full" in full.message and "df -h" in full.hint


def test_each_registry_image_not_here_is_a_warning_the_starter_first() -> None:
    entries = [("pytorch", "aimehub/pytorch"), ("base", "lab/base:1"), ("jupyter", "lab/jl")]
    here = {"lab/base:1"}
    findings = check_registry_images(entries, "jupyter", lambda image: image in here)
    assert [(f.check, f.level) for f in findings] == [
        ("starter-image", "warning"),
        ("registry-image", "warning"),
    ]
    starter, other = findings
    assert "starter image jupyter (lab/jl)" in starter.message
    assert "docker pull lab/jl" in starter.hint and "ds01 image-pull jupyter" in starter.hint
    assert "pytorch (aimehub/pytorch) is not on this machine" in other.message
    assert exit_code(findings) == 1
    everything = check_registry_images(entries, "jupyter", lambda image: True)
    assert [(f.check, f.level) for f in everything] == [("registry-images", "ok")]
