"""End to end: ``ds01 admin add-user`` and ``remove-user`` on real Unix users, against a
real ds01d and a real Docker.

add-user: dave (in no group) gets no GPU until an admin adds him to the group ``lab``; then
he creates a container within the group's quota, and no further. The edit of
resource-limits.yaml keeps its comments, ~dave/workspace is created and his, and his totals
are on his cgroup parent. remove-user: carol's queued request and reservation are
cancelled, her containers removed and their GPUs freed, her workspace archived (root only,
mode 0600; packed by tar running as carol, so a file of root's in it is left out) and her
home left as it was; her entries leave the configuration, before the archive is made (an
archive that fails leaves her limits gone; the command again makes it). Non-admins
and unknown users are refused, and every refusal is logged.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rawapi import RawApi

from support import TEST_IMAGES_YAML, describe, simulated_a100s, value_and_source

CGROUP_ROOT = Path("/sys/fs/cgroup")

TWO_GPUS = simulated_a100s(2)

LIMITS = """\
# Lab limits (a comment add-user and remove-user keep).
defaults:
  gpu_limit: 0          # no GPU outside a group
  max_containers: 4
  cpu_limit: 1
  memory_limit: 256M

groups:
  lab:
    unix_group: ds01-nobody   # membership through members: only
    members:
      - carol   # since the summer term
    gpu_limit: 1
    max_gpus_per_container: 1

users:
  carol:
    priority: 60   # thesis
    gpu_limit: 2

aggregate:
  groups:
    lab:
      memory_limit: 512M
"""


def uid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def home_of(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def docker_names(docker_client: Any, user: str) -> list[str]:
    found = docker_client.containers.list(all=True, filters={"label": f"ds01.user={user}"})
    return sorted(c.name for c in found)


def memory_limit_of_parent(parent: str) -> int:
    v2 = (CGROUP_ROOT / "cgroup.controllers").is_file()
    path = CGROUP_ROOT / parent.lstrip("/") if v2 else CGROUP_ROOT / "memory" / parent.lstrip("/")
    text = (path / ("memory.max" if v2 else "memory.limit_in_bytes")).read_text().strip()
    return int(text)


@pytest.fixture
def archive_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ds01-archive-"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(ds01d: Any) -> Any:
    return ds01d(resource_limits=LIMITS, gpu_config=TWO_GPUS, images=TEST_IMAGES_YAML)


def test_add_user_lets_dave_create_a_container_within_his_groups_quota(
    ds01d: Any, unix_users: dict[str, Any], docker_client: Any
) -> None:
    d = start(ds01d)
    refused = d.cli(
        "dave", "container-create", "a", "--image", "busybox", "--gpus", "1", "--no-wait"
    )
    assert refused.returncode == 3, describe(refused)
    shutil.rmtree(home_of("dave") / "workspace", ignore_errors=True)  # made by that create

    plan = d.cli_json(None, "admin", "add-user", "dave", "--group", "lab", "--dry-run")
    assert plan["dry_run"] and plan["config_changes"] == ["add dave to groups.lab.members"]
    assert "dave" not in d.paths.config_dir.joinpath("resource-limits.yaml").read_text()
    assert not (home_of("dave") / "workspace").exists()

    added = d.cli("erin", "admin", "add-user", "dave", "--group", "lab")  # erin: ds01-admin

    assert added.returncode == 0, describe(added)
    assert "Done: add dave to groups.lab.members" in added.stdout
    text = d.paths.config_dir.joinpath("resource-limits.yaml").read_text()
    assert "      - carol   # since the summer term\n      - dave\n" in text
    assert "# Lab limits (a comment add-user and remove-user keep)." in text
    workspace = home_of("dave") / "workspace"
    assert workspace.is_dir() and workspace.stat().st_uid == uid_of("dave")
    parent = "/ds01.slice/ds01-lab.slice/ds01-lab-dave.slice"
    assert memory_limit_of_parent(parent) == 512 * 1024**2
    [event] = d.events_where(action="user.add", resource="user/dave")
    assert event["user"] == "erin" and event["details"]["groups"] == ["lab"]

    explained = d.cli_json("dave", "check-limits", "--explain")["explain"]
    assert value_and_source(explained["gpu_limit"]) == {"value": 1.0, "source": "group:lab"}
    first = d.cli("dave", "container-create", "a", "--image", "busybox", "--gpus", "1", "--no-wait")
    assert first.returncode == 0, describe(first)
    second = d.cli(
        "dave", "container-create", "b", "--image", "busybox", "--gpus", "1", "--no-wait"
    )
    assert second.returncode == 3, describe(second)
    assert "GPU quota reached: 1.0 of 1.0 GPU-equivalents in use by a" in second.stderr
    assert docker_names(docker_client, "dave") == [f"a._.{uid_of('dave')}"]

    again = d.cli_json(None, "admin", "add-user", "dave", "--group", "lab")
    assert again["config_changes"] == [] and again["actions"] == [
        f"write dave's totals (memory_limit 512M) on the cgroup parent {parent}"
    ]


def test_add_user_refuses_non_admins_unknown_users_and_unknown_groups(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = start(ds01d)
    before = d.paths.config_dir.joinpath("resource-limits.yaml").read_text()

    by_alice = d.cli("alice", "admin", "add-user", "dave")
    assert by_alice.returncode == 5, describe(by_alice)
    assert d.events_where(action="auth.denied", user="alice", resource="user/dave")

    nobody = d.cli(None, "admin", "add-user", "no-such-user-ds01")
    assert nobody.returncode == 4, describe(nobody)
    assert "No user named 'no-such-user-ds01'" in nobody.stderr
    assert d.events_where(action="user.add", outcome="denied", resource="user/no-such-user-ds01")

    no_group = d.cli(None, "admin", "add-user", "dave", "--group", "phd_students")
    assert no_group.returncode == 2, describe(no_group)
    assert "No group 'phd_students'" in no_group.stderr and "defined: lab" in no_group.stderr

    assert d.paths.config_dir.joinpath("resource-limits.yaml").read_text() == before


def test_remove_user_frees_gpus_cancels_requests_archives_and_keeps_the_home(
    ds01d: Any, unix_users: dict[str, Any], docker_client: Any, archive_dir: Path
) -> None:
    d = start(ds01d)
    assert d.cli(None, "admin", "add-user", "dave", "--group", "lab").returncode == 0
    assert (
        d.cli("dave", "container-create", "d", "--image", "busybox", "--gpus", "1").returncode == 0
    )
    run = d.cli("carol", "container-create", "a", "--image", "busybox", "--gpus", "1", "--start")
    assert run.returncode == 0, describe(run)
    with RawApi(d.paths.socket, "carol") as api:  # no GPU left: carol's next request waits
        reply = api.call(
            "POST", "/v1/containers", {"name": "q", "image": "busybox", "gpus": 1, "queue": True}
        )
    assert reply.status == 202, reply
    request_id = reply.json()["id"]
    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%d 09:00")
    booked = d.cli_json("carol", "reserve", "--gpus", "1", "--from", tomorrow, "--hours", "2")
    notes = home_of("carol") / "workspace" / "notes.txt"
    notes.write_text("chapter 3\n")
    os.chown(notes, uid_of("carol"), -1)
    (home_of("carol") / "workspace" / "outside").symlink_to("/etc")
    # A file of root's that carol cannot read: tar packs the workspace as carol, so it is
    # left out (ds01d as root would have read it).
    root_only = home_of("carol") / "workspace" / "root-only.txt"
    root_only.write_text("root's\n")
    root_only.chmod(0o600)

    plan = d.cli_json(
        None, "admin", "remove-user", "carol", "--archive", str(archive_dir), "--dry-run"
    )
    assert plan["containers"] == ["a"] and plan["cancelled_requests"] == [request_id]
    assert "remove users.carol" in plan["config_changes"]
    assert any(f"cancel reservation {booked['id']}" in a for a in plan["actions"])
    assert docker_names(docker_client, "carol") == [f"a._.{uid_of('carol')}"]
    assert list(archive_dir.iterdir()) == []

    unconfirmed = d.cli(None, "admin", "remove-user", "carol")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    by_bob = d.cli("bob", "admin", "remove-user", "carol", "--yes")
    assert by_bob.returncode == 5, describe(by_bob)
    assert d.events_where(action="auth.denied", user="bob", resource="user/carol")

    removed = d.cli(None, "admin", "remove-user", "carol", "--archive", str(archive_dir), "--yes")

    assert removed.returncode == 0, describe(removed)
    assert (
        "Removed carol from ds01: 1 container(s) removed (1 GPU-equivalents freed)"
        in removed.stdout
    )
    assert docker_names(docker_client, "carol") == []
    free = [g for g in d.cli_json("alice", "gpu-status") if g["holder"] is None]
    assert len(free) == 1  # carol's GPU is free again; dave still holds his
    assert all(q["id"] != request_id for q in d.cli_json(None, "queue", "--all"))
    assert d.events_where(action="queue.cancel", resource=f"queue/{request_id}")
    assert d.cli_json("alice", "reservations", "--all") == []
    assert d.events_where(action="reservation.cancel", resource=f"reservation/{booked['id']}")
    [archive] = list(archive_dir.iterdir())
    st = archive.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert tar.extractfile("carol/workspace/notes.txt").read() == b"chapter 3\n"  # type: ignore[union-attr]
        assert tar.getmember("carol/workspace/outside").issym()  # a link, never its target
    assert not any(name.startswith("carol/workspace/outside/") for name in names)
    assert "carol/workspace/root-only.txt" not in names
    assert "root-only.txt" in removed.stdout + removed.stderr  # the admin is told
    assert notes.read_text() == "chapter 3\n"  # nothing of hers deleted
    assert home_of("carol").is_dir()
    text = d.paths.config_dir.joinpath("resource-limits.yaml").read_text()
    assert "carol" not in text
    assert "# Lab limits (a comment add-user and remove-user keep)." in text
    [event] = d.events_where(action="user.remove", resource="user/carol")
    assert event["details"]["containers"] == ["a"] and event["details"]["archive"] == str(archive)

    kept = d.cli_json(None, "admin", "remove-user", "dave", "--keep-data", "--yes")
    assert kept["containers"] == ["d"] and kept["archive"] is None
    assert (home_of("dave") / "workspace").is_dir()
    assert len([g for g in d.cli_json("alice", "gpu-status") if g["holder"] is None]) == 2

    unknown = d.cli(None, "admin", "remove-user", "no-such-user-ds01", "--yes")
    assert unknown.returncode == 4, describe(unknown)
    assert d.events_where(action="user.remove", outcome="denied", resource="user/no-such-user-ds01")
    (home_of("carol") / "workspace" / "outside").unlink()
    root_only.unlink()
    notes.unlink()


def test_an_archive_that_fails_comes_after_her_limits_are_gone_and_can_be_made_again(
    ds01d: Any, unix_users: dict[str, Any], archive_dir: Path
) -> None:
    d = start(ds01d)
    workspace = home_of("carol") / "workspace"
    workspace.mkdir(exist_ok=True)
    os.chown(workspace, uid_of("carol"), -1)
    # Every name the archive could take in the next two minutes is taken: it fails.
    now = datetime.now(UTC)
    taken = [
        archive_dir / f"ds01-carol-workspace-{now + timedelta(seconds=s):%Y%m%dT%H%M%SZ}.tar.gz"
        for s in range(-2, 120)
    ]
    for path in taken:
        path.touch()

    failed = d.cli(None, "admin", "remove-user", "carol", "--archive", str(archive_dir), "--yes")

    assert failed.returncode == 1 and "Could not archive" in failed.stderr, describe(failed)
    assert "carol" not in d.paths.config_dir.joinpath("resource-limits.yaml").read_text()
    [event] = d.events_where(action="user.remove", resource="user/carol")
    assert event["outcome"] == "failure", event
    assert "remove users.carol" in event["details"]["config_changes"]
    for path in taken:
        path.unlink()
    again = d.cli(None, "admin", "remove-user", "carol", "--archive", str(archive_dir), "--yes")
    assert again.returncode == 0, describe(again)
    [archive] = list(archive_dir.iterdir())
    assert archive.name.startswith("ds01-carol-workspace-")
