"""Bind sources a user may not reach herself, as real non-admin users against a real ds01d.

ds01d runs as root, and root needs no search permission on the folders above a directory.
A directory alice owns behind a folder she cannot enter (an image layer's files under
Docker's 0710 data root belong to the uid the image gave them) must not become her
``--data`` or ``--workspace``: a writable bind of a registry image's shared layer would
run her code in every other user's container of that image. ds01d reaches the path as
alice, and the refusal is the one for a directory that does not exist, so it tells her
nothing about what lies behind the folder. The same directory, moved where she can reach
it, is hers to mount. A directory that stops being reachable is not mounted at the next
start. ``/proc/<pid>`` of her own process and her own directory in ``/dev/shm`` are hers
and reachable, but never mounted.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import TEST_IMAGES_YAML, describe

#: Exit codes of an invalid request and of a refusal for permission.
USAGE, PERMISSION = 2, 5
UNREACHABLE = "does not exist, or is not a directory you can reach."
SYSTEM = "which ds01 never mounts"


class BindEscaped(AssertionError):
    """A user got a directory she cannot reach herself, or a system one, as a bind."""


@pytest.fixture
def d(ds01d: Any) -> Any:
    return ds01d(images=TEST_IMAGES_YAML)


@pytest.fixture
def scene(unix_users: dict[str, pwd.struct_passwd]) -> Iterator[Path]:
    """A root-owned 0755 folder under /var/lib with ``locked/`` (root's, 0700) in it, and in
    ``locked/``, ``layer/`` (alice's, 0755, with a file of hers): the shape of an image
    layer's ``diff/opt/conda`` under Docker's data root. Removed at the end."""
    alice = unix_users["alice"]
    base = Path(tempfile.mkdtemp(prefix="ds01-test-binds-", dir="/var/lib"))
    base.chmod(0o755)
    locked = base / "locked"
    locked.mkdir(mode=0o700)
    layer = locked / "layer"
    layer.mkdir()
    (layer / "LAYER-FILE").write_text("shared by every container of the image\n")
    for path in (layer, layer / "LAYER-FILE"):
        os.chown(path, alice.pw_uid, alice.pw_gid)
    layer.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _refusal(d: Any, option: str, path: Path) -> subprocess.CompletedProcess[str]:
    return d.cli("alice", "container-create", "x", "--image", "busybox", option, str(path))


def _no_container(d: Any) -> None:
    listed = d.cli_json("alice", "container-list")
    if listed:
        raise BindEscaped(f"a container was made: {listed}")


@pytest.mark.parametrize("option", ["--data", "--workspace"])
def test_her_directory_behind_a_folder_she_cannot_enter_is_refused_like_a_missing_one(
    d: Any, docker_client: Any, unix_users: dict[str, pwd.struct_passwd], scene: Path, option: str
) -> None:
    alice = unix_users["alice"]
    layer = scene / "locked" / "layer"
    missing = scene / "locked" / "nothing"
    seen = len(d.events())

    refused = _refusal(d, option, layer)

    if refused.returncode == 0:
        raise BindEscaped(f"alice got {layer} behind root's 0700 folder:\n{describe(refused)}")
    assert refused.returncode == USAGE, describe(refused)
    assert f"{option} '{layer}' {UNREACHABLE}" in refused.stderr, describe(refused)
    _no_container(d)
    denied = [
        e for e in d.events()[seen:] if e.get("user") == "alice" and e.get("outcome") == "denied"
    ]
    assert denied and UNREACHABLE in denied[0]["details"]["reason"], d.events()[seen:]
    # What she hears about her directory there is what she hears about nothing there.
    nothing = _refusal(d, option, missing)
    assert nothing.returncode == refused.returncode, describe(nothing)
    assert nothing.stderr.replace(str(missing), str(layer)) == refused.stderr, (
        describe(nothing),
        describe(refused),
    )

    # The same directory, moved to a folder she can enter, is hers to mount.
    reachable = scene / "layer"
    os.rename(layer, reachable)
    made = d.cli("alice", "container-create", "x", "--image", "busybox", option,
                 str(reachable), "--start")  # fmt: skip
    assert made.returncode == 0, describe(made)
    inside = "/data" if option == "--data" else "/workspace"
    box = docker_client.containers.get(f"x._.{alice.pw_uid}")
    listing = box.exec_run(["ls", inside]).output.decode()
    assert "LAYER-FILE" in listing, listing


def test_a_directory_that_she_can_no_longer_reach_is_not_mounted_at_the_next_start(
    d: Any, docker_client: Any, unix_users: dict[str, pwd.struct_passwd], scene: Path
) -> None:
    alice = unix_users["alice"]
    folder = scene / "open"
    folder.mkdir(mode=0o755)
    data = folder / "data"
    data.mkdir()
    os.chown(data, alice.pw_uid, alice.pw_gid)
    made = d.cli("alice", "container-create", "x", "--image", "busybox", "--data", str(data))
    assert made.returncode == 0, describe(made)
    folder.chmod(0o700)  # the admin closes the folder: data is still alice's, out of reach
    seen = len(d.events())

    started = d.cli("alice", "container-start", "x")

    if started.returncode == 0:
        raise BindEscaped(f"started with {data} out of alice's reach:\n{describe(started)}")
    assert started.returncode == PERMISSION, describe(started)
    assert UNREACHABLE in started.stderr, describe(started)
    state = docker_client.api.inspect_container(f"x._.{alice.pw_uid}")["State"]["Status"]
    assert state != "running"
    denied = [e for e in d.events()[seen:] if e.get("outcome") == "denied"]
    assert denied and UNREACHABLE in denied[0]["details"]["reason"], d.events()[seen:]
    folder.chmod(0o755)
    again = d.cli("alice", "container-start", "x")
    assert again.returncode == 0, describe(again)


@pytest.fixture
def alices_process(unix_users: dict[str, pwd.struct_passwd]) -> Iterator[int]:
    """The pid of a ``sleep`` of alice's, killed (by its pid) at the end."""
    alice = unix_users["alice"]
    process = subprocess.Popen(
        ["sleep", "600"], user=alice.pw_uid, group=alice.pw_gid, extra_groups=[], cwd="/"
    )
    yield process.pid
    process.kill()
    process.wait(timeout=10)


@pytest.mark.parametrize("where", ["proc", "shm"])
def test_her_own_directory_in_the_kernels_file_systems_is_never_mounted(
    d: Any, unix_users: dict[str, pwd.struct_passwd], alices_process: int, where: str
) -> None:
    alice = unix_users["alice"]
    if where == "proc":
        path = Path(f"/proc/{alices_process}")
    else:
        path = Path(tempfile.mkdtemp(prefix="ds01-test-binds-", dir="/dev/shm"))
        os.chown(path, alice.pw_uid, alice.pw_gid)
    try:
        assert path.stat().st_uid == alice.pw_uid
        seen = len(d.events())

        refused = _refusal(d, "--data", path)

        if refused.returncode == 0:
            raise BindEscaped(f"alice got {path} as /data:\n{describe(refused)}")
        assert refused.returncode == PERMISSION, describe(refused)
        assert SYSTEM in refused.stderr, describe(refused)
        _no_container(d)
        denied = [e for e in d.events()[seen:] if e.get("outcome") == "denied"]
        assert denied and SYSTEM in denied[0]["details"]["reason"], d.events()[seen:]
    finally:
        if where == "shm":
            shutil.rmtree(path, ignore_errors=True)
