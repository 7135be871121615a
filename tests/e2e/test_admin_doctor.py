"""End to end: `ds01 admin doctor` finds set-up risks, and only admins may run it; a stopped
Docker engine is reported as broken (exit 2) at once while ds01d stays up, and a CLI run
while ds01d itself is down says so.

The test that stops dockerd runs under the machine lock every session with docker/e2e
tests holds (tests/conftest.py), and starts dockerd again in a ``finally``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from support import describe

ENSURE_DOCKER = Path(__file__).resolve().parents[2] / "scripts" / "ensure-docker.sh"


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


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def process_gone(pid: int) -> bool:
    """No such process, or a zombie (a killed dockerd stays one for a while here)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return any(line.startswith("State:") and "Z" in line for line in status.splitlines())


def restart_docker() -> None:
    """scripts/ensure-docker.sh until `docker info` answers (it fails while the old dockerd
    is still a zombie holding its pid file: retry)."""
    for _ in range(20):
        if docker_answers():
            return
        subprocess.run([str(ENSURE_DOCKER)], capture_output=True, check=False, timeout=120)
        if docker_answers():
            return
        time.sleep(1)
    raise AssertionError("dockerd did not come back: run scripts/ensure-docker.sh")


def test_doctor_reports_a_stopped_docker_engine_as_broken(ds01d, unix_users) -> None:
    d = ds01d()
    pid = int(Path("/var/run/docker.pid").read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        wait_for("dockerd to stop", lambda: process_gone(pid), 60)
        assert not docker_answers(), "another dockerd answers: something restarted it"

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
