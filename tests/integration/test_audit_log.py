"""The audit log of a real ds01d: hash-chained lines that ``ds01 audit verify`` checks.

After real CLI actions the chain verifies (exit 0), also across a daemon restart; editing
one line of ``events.jsonl`` makes ``ds01 audit verify`` exit 1 naming that file and line.
The live file is mode 0640, owned by root, its group the admin group; a new admin group
takes the log over from the old one.
"""

from __future__ import annotations

import grp
import json
import stat
import subprocess
from typing import Any

from support import TEST_IMAGES_YAML, Ds01Daemon, describe

ADMIN_GROUP = "ds01-admin"  # the default admin_group; erin is in it


#: One GPU-equivalent each, so that asking for two is refused (and logged).
ONE_GPU = """
    defaults:
      gpu_limit: 1
"""


def start(ds01d: Any) -> Ds01Daemon:
    daemon: Ds01Daemon = ds01d(resource_limits=ONE_GPU, images=TEST_IMAGES_YAML)
    return daemon


def act(d: Ds01Daemon, name: str) -> None:
    """Logged actions of three kinds: a create, a create over the quota, a refusal."""
    for expected, args in (
        (0, ("container-create", name, "--image", "busybox")),
        (3, ("container-create", f"{name}-big", "--image", "busybox", "--gpus", "2")),
        (5, ("container-list", "--user", "bob")),
    ):
        result = d.cli("alice", *args)
        assert result.returncode == expected, describe(result)


def verify(d: Ds01Daemon, user: str | None = None) -> subprocess.CompletedProcess[str]:
    return d.cli(user, "audit", "verify", "--log-dir", str(d.paths.log_dir))


def test_real_events_verify_and_an_edited_line_is_named(ds01d: Any) -> None:
    d = start(ds01d)
    act(d, "audited")
    events = d.events()
    assert len(events) >= 3
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert d.events_where(action="auth.denied", user="alice")

    result = verify(d)
    assert result.returncode == 0, describe(result)
    assert f"OK: {len(events)} events in 1 file, chain intact" in result.stdout

    lines = d.paths.events_file.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["user"] = "mallory"
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    d.paths.events_file.write_bytes(b"".join(lines))
    result = verify(d)
    assert result.returncode == 1, describe(result)
    assert f"Tampered: {d.paths.events_file}:2: line edited" in result.stdout, describe(result)


def test_the_chain_continues_across_a_restart(ds01d: Any) -> None:
    d = start(ds01d)
    act(d, "before-restart")
    before = len(d.events())
    d.restart()
    act(d, "after-restart")
    events = d.events()
    assert len(events) > before
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    result = verify(d)
    assert result.returncode == 0, describe(result)


def test_the_live_file_is_0640_and_owned_by_root(ds01d: Any) -> None:
    d = ds01d()  # the file exists from the start, before any event
    st = d.paths.events_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_uid == 0


def test_admins_can_verify_the_log_and_others_cannot(ds01d: Any) -> None:
    d = start(ds01d)
    act(d, "admin-check")
    admin_gid = grp.getgrnam(ADMIN_GROUP).gr_gid
    assert d.paths.events_file.stat().st_gid == admin_gid
    assert d.paths.log_dir.stat().st_gid == admin_gid
    result = verify(d, "erin")
    assert result.returncode == 0, describe(result)
    result = verify(d, "alice")
    assert result.returncode == 5, describe(result)


def test_a_new_admin_group_gets_the_log_and_the_old_one_loses_it(ds01d: Any) -> None:
    d = start(ds01d)
    act(d, "before-change")
    d.write_config("resource-limits.yaml", ONE_GPU + "    admin_group: phd\n")
    result = d.cli("alice", "whoami")  # any request reloads the changed configuration
    assert result.returncode == 0, describe(result)

    phd_gid = grp.getgrnam("phd").gr_gid
    assert d.paths.log_dir.stat().st_gid == phd_gid
    created = d.cli("bob", "container-create", "after-change", "--image", "busybox")
    assert created.returncode == 0, describe(created)
    assert d.paths.events_file.stat().st_gid == phd_gid
    assert verify(d, "alice").returncode == 0
    result = verify(d, "erin")
    assert result.returncode == 5, describe(result)
