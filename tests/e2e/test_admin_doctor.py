"""End to end: `ds01 admin doctor` finds set-up risks, and only admins may run it; a stopped
Docker engine is reported as broken (exit 2) at once while ds01d stays up, and a CLI run
while ds01d itself is down says so.

The test that stops dockerd runs under the machine lock every session with docker/e2e
tests holds (tests/conftest.py), and starts dockerd again in a ``finally``
(``support.stop_docker``, ``support.restart_docker``)."""

from __future__ import annotations

import json
import subprocess

from support import describe, restart_docker, stop_docker


def test_doctor_names_docker_group_members_and_is_for_admins_only(ds01d, unix_users) -> None:
    d = ds01d()
    healthy = d.cli(None, "admin", "doctor", "--json")
    assert healthy.returncode in (0, 1), describe(healthy)
    subprocess.run(["usermod", "-aG", "docker", "dave"], check=True)
    try:
        risky = d.cli("erin", "admin", "doctor")
        assert risky.returncode == 2, describe(risky)
        assert "docker group" in risky.stdout and "dave" in risky.stdout, describe(risky)
        assert "gpasswd -d USER docker" in risky.stdout
    finally:
        subprocess.run(["gpasswd", "-d", "dave", "docker"], check=True, capture_output=True)

    refused = d.cli("alice", "admin", "doctor")
    assert refused.returncode == 5, describe(refused)
    assert d.events_where(action="auth.denied", user="alice", resource="admin/doctor")


def test_doctor_reports_a_stopped_docker_engine_as_broken(ds01d, unix_users) -> None:
    d = ds01d()
    try:
        stop_docker()

        broken = d.cli("erin", "admin", "doctor", timeout=30)  # short timeouts: no hang

        assert broken.returncode == 2, describe(broken)
        assert "CRIT  docker: The Docker engine does not answer" in broken.stdout
        assert "systemctl start docker" in broken.stdout
        report = d.cli(None, "admin", "doctor", "--json", timeout=30)
        assert report.returncode == 2, describe(report)
        [docker] = [f for f in json.loads(report.stdout)["findings"] if f["check"] == "docker"]
        assert docker["level"] == "critical"
        assert d.running  # ds01d itself stays up without Docker
    finally:
        restart_docker()
    healthy = d.cli(None, "admin", "doctor")
    assert healthy.returncode in (0, 1), describe(healthy)
    assert "ok  docker: The Docker engine" in healthy.stdout


def test_doctor_says_when_ds01d_itself_is_down(ds01d, unix_users) -> None:
    d = ds01d()
    d.stop()

    down = d.cli(None, "admin", "doctor")

    assert down.returncode == 2, describe(down)
    assert "CRIT  ds01d: Cannot reach ds01d at" in down.stdout
    assert "systemctl start ds01d" in down.stdout
    report = json.loads(d.cli(None, "admin", "doctor", "--json").stdout)
    assert report["exit_code"] == 2
    assert {f["check"] for f in report["findings"]} >= {"ds01d", "config", "docker-socket"}


def test_gpu_check_says_this_machine_serves_no_real_gpu(ds01d, unix_users) -> None:
    d = ds01d()

    text = d.cli("erin", "admin", "gpu-check")
    assert text.returncode == 2, describe(text)
    assert "CRIT  driver: No NVIDIA driver on this machine" in text.stdout
    assert "CRIT  backend: GPUs are simulated" in text.stdout
    report = json.loads(d.cli(None, "admin", "gpu-check", "--json").stdout)
    assert report["exit_code"] == 2 and report["backend"] == "simulated"
    assert report["container_test"] is None  # no real GPU, no test container
    device = report["devices"][0]
    assert device["uuid"].startswith(("GPU-", "MIG-")) and device["gpu_equivalents"] > 0
    assert set(device["telemetry"]) >= {"gpu_util_percent", "memory_used_mib", "power_watts"}
    assert {f["check"] for f in report["findings"]} >= {"driver", "backend", "gpu-device-nodes"}

    refused = d.cli("alice", "admin", "gpu-check")
    assert refused.returncode == 5, describe(refused)
