"""End to end: `ds01 admin doctor` finds set-up risks, and only admins may run it."""

from __future__ import annotations

import subprocess

from support import describe


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
