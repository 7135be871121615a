"""Port takeover and mount races, as real non-admin users against a real ds01d and Docker.

Ports: a host port a container publishes on 127.0.0.1 belongs to that container for its
whole life, running or stopped. bob may not publish the fixed JupyterLab port of alice's
stopped container (asked for explicitly, or picked for his own JupyterLab), and a host
process of bob's listening on alice's port makes alice's start fail with a clear message,
never a URL that leads to bob's listener (the token would go with it).

Mounts: the directory ds01 checks is the directory Docker mounts. bob swaps a component of
his own workspace path for a symlink to alice's private directory, in a tight loop, while
he creates and starts containers; no container of his ever sees alice's directory.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import TEST_IMAGE, TEST_IMAGE_ALT, describe, free_port

LIMITS = """
    defaults:
      max_containers: 6
      cpu_limit: 1
      memory_limit: 512M
"""

#: busybox registered as serving JupyterLab on 8888: ds01 gives it a fixed host port and a
#: token (nothing listens in it; the port rules are what is tested). busybox-alt serves none.
IMAGES = f"""
    images:
      - name: notebook
        image: {TEST_IMAGE}
        framework: none
        description: BusyBox registered as a JupyterLab image
        jupyter_port: 8888
      - name: plain
        image: {TEST_IMAGE_ALT}
        framework: none
        description: BusyBox without JupyterLab
"""

#: Exit code of a refusal for capacity (a port in use is one).
CAPACITY = 3
#: Starts (and creates) per scenario of the mount race.
RACE_ROUNDS = 12

# A process of bob's that swaps two names atomically (renameat2 RENAME_EXCHANGE), forever:
# one a directory, the other a symlink, so the path is always there and always changing.
SWAPPER = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = (p.encode() for p in sys.argv[1:3])
print("swapping", flush=True)
while True:
    if libc.renameat2(-100, a, -100, b, 2) != 0:
        sys.exit(f"renameat2: errno {ctypes.get_errno()}")
"""

# A host process of bob's that serves a page on ADDRESS:PORT (a fake JupyterLab).
LISTENER = r"""
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(16)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nfake jupyter: give me your token\n")
    conn.close()
"""

# A host process of bob's that takes the port and lets it go again, over and over: it may
# take it between ds01's check and Docker's start, so Docker refuses the start itself.
FLICKER = r"""
import socket, sys, time
print("flickering", flush=True)
while True:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", int(sys.argv[1])))
        server.listen(1)
        time.sleep(0.002)
    except OSError:
        time.sleep(0.001)
    finally:
        server.close()
"""


class PortTakenOver(AssertionError):
    """Another user got, or could point the owner's URL at, a container's host port."""


class MountEscaped(AssertionError):
    """A started container sees a host directory its owner was not allowed to mount."""


@pytest.fixture
def d(ds01d: Any, unix_users: dict[str, pwd.struct_passwd]) -> Any:
    return ds01d(resource_limits=LIMITS, images=IMAGES)


@pytest.fixture
def as_bob(unix_users: dict[str, pwd.struct_passwd]) -> Iterator[Any]:
    """Start host processes as bob (``python -c SCRIPT ARGS``, bob's uid and gid, no other
    groups); each is killed by its process id at the end."""
    bob = unix_users["bob"]
    started: list[subprocess.Popen[str]] = []

    def run(script: str, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
            user=bob.pw_uid,
            group=bob.pw_gid,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin", "HOME": bob.pw_dir},
        )
        started.append(process)
        assert process.stdout is not None
        first = process.stdout.readline()  # the script's "ready" line
        assert first, (
            f"bob's process did not start: {process.stderr.read() if process.stderr else ''}"
        )
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def host_port_of(info: dict[str, Any], container_port: int = 8888) -> int:
    ports = {p["container_port"]: p["host_port"] for p in info["ports"]}
    port = ports.get(container_port)
    assert isinstance(port, int), info
    return port


def status_of(docker_client: Any, name: str) -> str:
    return str(docker_client.api.inspect_container(name)["State"]["Status"])


def new_events(d: Any, seen: int, **where: str) -> list[dict[str, Any]]:
    return [e for e in d.events()[seen:] if all(e.get(k) == v for k, v in where.items())]


# --- ports -------------------------------------------------------------------------------


def test_a_stopped_containers_host_port_is_refused_to_everyone_else(
    d: Any, docker_client: Any, unix_users: dict[str, pwd.struct_passwd]
) -> None:
    alice = unix_users["alice"]
    created = d.cli_json("alice", "container-create", "nb", "--image", "notebook", "--start")
    port = host_port_of(created)
    assert d.cli("alice", "container-stop", "nb").returncode == 0
    assert status_of(docker_client, f"nb._.{alice.pw_uid}") == "exited"

    attempts = {
        "bob, the same port for his JupyterLab": ("bob", "steal", "notebook", f"{port}:8888"),
        "bob, the same host port for another container port": (
            "bob",
            "steal",
            "plain",
            f"{port}:80",
        ),
        "alice's own second container": ("alice", "twin", "plain", f"{port}:80"),
    }
    for what, (user, name, image, spec) in attempts.items():
        seen = len(d.events())
        result = d.cli(user, "container-create", name, "--image", image, "--port", spec)
        if result.returncode == 0:
            raise PortTakenOver(f"{what}: got host port {port} of alice's stopped container")
        assert result.returncode == CAPACITY, describe(result)
        assert f"{port}" in result.stderr and "127.0.0.1" in result.stderr, describe(result)
        refusals = new_events(d, seen, user=user, action="container.create", outcome="denied")
        assert refusals and refusals[0]["details"].get("port") == port, d.events()[seen:]

    # bob's own JupyterLab gets a port of its own, never alice's.
    bobs = d.cli_json("bob", "container-create", "lab", "--image", "notebook")
    assert host_port_of(bobs) != port
    assert d.cli("bob", "container-remove", "lab").returncode == 0

    # The port is alice's for as long as her container exists, and free once it is gone.
    assert d.cli("alice", "container-remove", "nb").returncode == 0
    mine_now = d.cli_json(
        "bob", "container-create", "steal", "--image", "plain", "--port", f"{port}:80"
    )
    assert host_port_of(mine_now, 80) == port


def test_a_never_started_containers_host_port_is_refused_too(d: Any) -> None:
    port = host_port_of(d.cli_json("alice", "container-create", "nb", "--image", "notebook"))
    result = d.cli(
        "bob", "container-create", "steal", "--image", "notebook", "--port", f"{port}:8888"
    )
    if result.returncode == 0:
        raise PortTakenOver(f"bob got host port {port} of alice's created container")
    assert result.returncode == CAPACITY, describe(result)


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0"])
def test_a_host_process_on_the_port_makes_the_start_fail_clearly_instead_of_a_url(
    d: Any, docker_client: Any, as_bob: Any, unix_users: dict[str, pwd.struct_passwd], address: str
) -> None:
    alice = unix_users["alice"]
    port = host_port_of(d.cli_json("alice", "container-create", "nb", "--image", "notebook"))
    listener = as_bob(LISTENER, address, str(port))
    seen = len(d.events())

    started = d.cli("alice", "container-start", "nb")

    if started.returncode == 0 or "token=" in started.stdout + started.stderr:
        raise PortTakenOver(
            f"alice's start went on with bob listening on {port}:\n{describe(started)}"
        )
    assert started.returncode == CAPACITY, describe(started)
    assert f"port {port} on 127.0.0.1 is in use" in started.stderr, describe(started)
    assert status_of(docker_client, f"nb._.{alice.pw_uid}") != "running"
    refusals = new_events(d, seen, user="alice", action="container.start")
    assert refusals and refusals[0]["outcome"] == "denied", d.events()[seen:]
    assert refusals[0]["details"].get("port") == port, refusals

    # Once bob's process is gone the port is free again, and alice's URL is her own.
    listener.kill()
    listener.wait(timeout=10)
    again = d.cli("alice", "container-start", "nb")
    assert again.returncode == 0, describe(again)
    (listed,) = d.cli_json("alice", "container-list")
    assert listed["jupyter_url"].startswith(f"http://127.0.0.1:{port}/lab?token=")


def test_create_with_start_is_one_request_and_a_refused_start_leaves_it_created(
    d: Any, docker_client: Any, as_bob: Any, unix_users: dict[str, pwd.struct_passwd]
) -> None:
    """``container-create --start`` asks ds01d for both at once (``start: true``): with bob
    listening on the port, the create stays and the refusal says that it was created, as
    when the start came in a second request; with the port free, the answer is running."""
    alice = unix_users["alice"]
    port = free_port()
    listener = as_bob(LISTENER, "127.0.0.1", str(port))
    option = ("--port", f"{port}:80")

    refused = d.cli("alice", "container-create", "web", "--image", "plain", *option, "--start")

    assert refused.returncode == CAPACITY, describe(refused)
    assert "Created web, but it was not started: " in refused.stderr, describe(refused)
    assert f"port {port} on 127.0.0.1 is in use" in refused.stderr, describe(refused)
    assert status_of(docker_client, f"web._.{alice.pw_uid}") == "created"
    # Under --json the refusal says so too (a Slurm job step removes what it made by it); web
    # keeps its host port until it is removed.
    assert d.cli("alice", "container-remove", "web").returncode == 0
    as_json = d.cli("alice", "container-create", "web2", "--image", "plain", *option, "--start",
                    "--json")  # fmt: skip
    assert as_json.returncode == CAPACITY, describe(as_json)
    assert json.loads(as_json.stderr)["details"]["created"] is True, describe(as_json)
    assert status_of(docker_client, f"web2._.{alice.pw_uid}") == "created"
    listener.kill()
    listener.wait(timeout=10)
    started = d.cli_json("alice", "container-create", "up", "--image", "plain", "--start")
    assert started["status"] == "running", started
    assert status_of(docker_client, f"up._.{alice.pw_uid}") == "running"
    assert {row["name"] for row in d.cli_json("alice", "container-list")} == {"web2", "up"}


def test_a_port_taken_between_the_check_and_dockers_start_is_a_clear_refusal(
    d: Any, docker_client: Any, as_bob: Any, unix_users: dict[str, pwd.struct_passwd]
) -> None:
    """bob takes the port and lets it go, thousands of times a second: whichever of ds01's
    check or Docker's start notices, alice gets the same clear refusal, with an event."""
    alice = unix_users["alice"]
    port = host_port_of(d.cli_json("alice", "container-create", "nb", "--image", "notebook"))
    as_bob(FLICKER, str(port))
    refused, seen = 0, len(d.events())
    for _ in range(RACE_ROUNDS):
        started = d.cli("alice", "container-start", "nb")
        if started.returncode == 0:
            (listed,) = d.cli_json("alice", "container-list")
            assert f"127.0.0.1:{port}/" in listed["jupyter_url"], listed
            assert d.cli("alice", "container-stop", "nb").returncode == 0
            continue
        refused += 1
        assert started.returncode == CAPACITY, describe(started)
        assert re.search(rf"port {port} on 127\.0\.0\.1 is in use", started.stderr), describe(
            started
        )
        assert status_of(docker_client, f"nb._.{alice.pw_uid}") != "running"
    d.stop()  # the audit log writes the count of refusals its throttle held back
    events = new_events(d, seen, user="alice", action="container.start", outcome="denied")
    summaries = new_events(d, seen, user="alice", action="audit.suppressed")
    held_back = sum(e["details"]["counts"].get("container.start", 0) for e in summaries)
    assert len(events) + held_back == refused, d.events()[seen:]


# --- mounts -----------------------------------------------------------------------------


def _private_directory_of_alice(alice: pwd.struct_passwd) -> tuple[Path, Path]:
    """alice's 0700 directory, and inside it a 0755 directory with a marker file: what
    bob could read if it were ever mounted into his container."""
    private = Path(alice.pw_dir) / "ports-private"
    shutil.rmtree(private, ignore_errors=True)
    inside = private / "ws"
    inside.mkdir(parents=True)
    (inside / "ALICE-SECRET").write_text("alice's\n")
    for path in (private, inside, inside / "ALICE-SECRET"):
        os.chown(path, alice.pw_uid, alice.pw_gid)
    private.chmod(0o700)
    inside.chmod(0o755)
    return private, inside


def _bobs_directory(path: Path, bob: pwd.struct_passwd) -> None:
    path.mkdir(parents=True)
    (path / "BOB-FILE").write_text("bob's\n")
    for p in (path, path / "BOB-FILE"):
        os.chown(p, bob.pw_uid, bob.pw_gid)


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev} {st.st_ino}"


@pytest.mark.parametrize("swapped", ["leaf", "parent", "data"])
def test_a_bind_source_swapped_for_a_symlink_in_a_loop_never_mounts_another_users_directory(
    d: Any,
    docker_client: Any,
    as_bob: Any,
    unix_users: dict[str, pwd.struct_passwd],
    swapped: str,
) -> None:
    alice, bob = unix_users["alice"], unix_users["bob"]
    private, inside = _private_directory_of_alice(alice)
    base = Path(bob.pw_dir) / "ports-race"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    os.chown(base, bob.pw_uid, bob.pw_gid)
    option, inside_path = (
        ("--data", "/data") if swapped == "data" else ("--workspace", "/workspace")
    )
    if swapped in ("leaf", "data"):  # ~/ports-race/ws: bob's directory <-> a symlink to alice's
        workspace = base / "ws"
        _bobs_directory(workspace, bob)
        name, other, target = workspace, base / "ws.link", inside
    else:  # ~/ports-race/p/ws: ~/ports-race/p is bob's directory <-> a symlink to alice's
        workspace = base / "p" / "ws"
        _bobs_directory(workspace, bob)
        name, other, target = base / "p", base / "p.link", private
    other.symlink_to(target)
    os.lchown(other, bob.pw_uid, bob.pw_gid)
    forbidden = {_identity(private), _identity(inside)}
    ours = _identity(workspace)
    docker_name = f"race._.{bob.pw_uid}"
    created = d.cli("bob", "container-create", "race", "--image", "plain",
                    option, str(workspace))  # fmt: skip
    assert created.returncode == 0, describe(created)
    swapper = as_bob(SWAPPER, str(name), str(other))
    try:
        for round_ in range(RACE_ROUNDS):
            result = d.cli("bob", "container-start", "race")
            assert result.returncode in (0, 5), describe(result)
            if status_of(docker_client, docker_name) != "running":
                continue
            box = docker_client.containers.get(docker_name)
            seen = box.exec_run(["stat", "-c", "%d %i", inside_path]).output.decode().strip()
            listing = box.exec_run(["ls", "-a", inside_path]).output.decode()
            if seen in forbidden or "ALICE-SECRET" in listing:
                raise MountEscaped(
                    f"start {round_}: bob's {inside_path} is alice's ({seen}):\n{listing}"
                )
            assert seen == ours and "BOB-FILE" in listing, (seen, ours, listing)
            assert d.cli("bob", "container-stop", "race").returncode == 0
        # And creates with --start under the race: refused, or bob's own directory.
        for round_ in range(RACE_ROUNDS // 2):
            result = d.cli("bob", "container-create", f"more{round_}", "--image", "plain",
                           option, str(workspace), "--start")  # fmt: skip
            assert result.returncode in (0, 2, 5), describe(result)
            more = f"more{round_}._.{bob.pw_uid}"
            if result.returncode == 0 and status_of(docker_client, more) == "running":
                seen = (
                    docker_client.containers.get(more)
                    .exec_run(["stat", "-c", "%d %i", inside_path])
                    .output.decode()
                    .strip()
                )
                if seen in forbidden:
                    raise MountEscaped(f"create {round_}: bob's {inside_path} is alice's ({seen})")
            d.cli("bob", "container-remove", f"more{round_}", "--force")
    finally:
        swapper.kill()
        swapper.wait(timeout=10)
        if name.is_symlink():  # the swapper stopped on the symlink: swap back
            os.rename(name, base / "tmp")
            os.rename(other, name)
            os.rename(base / "tmp", other)

    # With the loop stopped, an ordinary start works and mounts bob's directory.
    normal = d.cli("bob", "container-start", "race")
    assert normal.returncode == 0, describe(normal)
    box = docker_client.containers.get(docker_name)
    assert box.exec_run(["stat", "-c", "%d %i", inside_path]).output.decode().strip() == ours
    assert "BOB-FILE" in box.exec_run(["ls", inside_path]).output.decode()
    shutil.rmtree(private, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


def test_a_free_port_check_does_not_hold_the_port(d: Any) -> None:
    """ds01's check leaves the port to Docker: a plain create and start gets its URL."""
    created = d.cli_json("alice", "container-create", "nb", "--image", "notebook", "--start")
    port = host_port_of(created)
    (listed,) = d.cli_json("alice", "container-list")
    assert listed["jupyter_url"].startswith(f"http://127.0.0.1:{port}/lab?token=")
    with socket.socket() as probe, pytest.raises(OSError):  # Docker holds it now
        probe.bind(("127.0.0.1", port))


def _staged_mounts(state_dir: Path) -> list[str]:
    """The mount points under ds01d's staging tree, from this mount namespace's table."""
    root = str(state_dir / "mounts") + "/"
    lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(root)]


def test_staging_is_undone_on_removal_and_leftovers_are_cleared_at_daemon_start(
    d: Any, docker_client: Any, unix_users: dict[str, pwd.struct_passwd]
) -> None:
    alice = unix_users["alice"]
    staging = d.paths.state_dir / "mounts"
    for name in ("kept", "gone", "removed"):
        created = d.cli("alice", "container-create", name, "--image", "plain", "--start")
        assert created.returncode == 0, describe(created)
    assert len(_staged_mounts(d.paths.state_dir)) == 3

    assert d.cli("alice", "container-remove", "removed", "--force").returncode == 0
    assert not list(staging.glob(f"removed._.{alice.pw_uid}*"))
    assert len(_staged_mounts(d.paths.state_dir)) == 2

    # A container removed behind ds01d's back while it was down: its staging is a leftover.
    d.kill()
    docker_client.api.remove_container(f"gone._.{alice.pw_uid}", force=True)
    d.start()
    (kept,) = staging.iterdir()  # its key: its Docker name at create and a digest
    assert kept.name.startswith(f"kept._.{alice.pw_uid}."), kept
    (mount,) = _staged_mounts(d.paths.state_dir)
    assert mount == str(kept / "workspace")
    # The one that is still there starts again from a fresh staging.
    assert d.cli("alice", "container-stop", "kept").returncode == 0
    assert d.cli("alice", "container-start", "kept").returncode == 0
    assert len(_staged_mounts(d.paths.state_dir)) == 1
