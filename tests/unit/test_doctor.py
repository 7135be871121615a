from __future__ import annotations

import os
from pathlib import Path

from ds01.daemon.doctor import (
    Finding,
    check_admin_group,
    check_config,
    check_docker_group,
    check_docker_socket,
    exit_code,
    run_checks,
)


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
