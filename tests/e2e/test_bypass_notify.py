"""End to end: what a user puts in their own directories cannot turn ds01d's notices against
others, and nothing a user fakes keeps an idle container from being reclaimed.

Real ds01d, real Docker, real non-admin users (the attacker is alice), idle timeouts of
seconds and a loop of half a second.

Notice files (``/workspace/.ds01-notice``, written at each idle warning and stop): a hard
link from the notice's name to a file of root's or of bob's that alice may write, a symlink
in its place, a workspace (or a directory above it) swapped for a symlink, a FIFO, a huge
file and a workspace alice made unwritable: no other file changes owner or content, nothing
is written outside the workspace, and the lifecycle loop goes on for everyone. One ds01d
serves every notice trap (``notice_scene``): their idle stops are waited for together.

Idle reclaim: a process in the container named like an SSH login (``sshd: bob@pts/0``), an
exec left running after its terminal's client was killed, and a keep-alive file touched
in a loop do not keep a container past its limits; a terminal a user really has open does.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from support import (
    TEST_IMAGES_YAML,
    describe,
    make_world_traversable_dir,
    user_env,
    wait_for_loop_pass,
    wait_until,
)

TIMEOUT_S = 7.2  # idle_timeout_hours: 0.002
LATER_TIMEOUT_S = 9.0  # bob's: 0.0025, so his stop comes after alice's
CAP_S = 10.8  # keep_alive_max_hours: 0.003

LIMITS = """
    defaults:
      idle_timeout_hours: 0.002
      max_runtime_hours: null
      max_containers: 6
      gpu_hold_after_stop_minutes: 0
    users:
      bob:
        idle_timeout_hours: 0.0025
    policies:
      lifecycle_interval_seconds: 0.5
      idle_grace_minutes: 0
      keep_alive_max_hours: 0.003
"""

WEBHOOK_LIMITS = (
    LIMITS.replace("0.002", "0.003") + "      webhook_url: http://127.0.0.1:{port}/hook\n"
)

IMAGES_WITH_PYTHON = (
    TEST_IMAGES_YAML
    + """\
  - name: python
    image: ds01-test/python:latest
    framework: none
    description: Debian with python3
"""
)

PRECIOUS = "precious content\n"


# -- helpers ------------------------------------------------------------------------------------


def as_user(user: str, *argv: str) -> None:
    """Run ``argv`` on the host as ``user`` (what the attacker can do from their shell)."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", *argv], capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 0, describe(result)


def own_dir(user: Any, name: str) -> Path:
    """A fresh directory in ``user``'s home, made by them."""
    path = Path(user.pw_dir) / f"{name}-{uuid.uuid4().hex[:8]}"
    as_user(user.pw_name, "mkdir", str(path))
    return path


def create(d: Any, user: str, name: str, *args: str, image: str = "busybox") -> float:
    """Create and start ``name``; return when (epoch seconds) the create returned."""
    d.cli_json(user, "container-create", name, "--image", image, *args, "--start")
    return time.time()


def idle_stops(d: Any, docker_name: str) -> list[dict[str, Any]]:
    stops: list[dict[str, Any]] = d.events_where(
        action="cleanup.idle", resource=f"container/{docker_name}"
    )
    return stops


def wait_for_stop(d: Any, docker_name: str, timeout: float) -> dict[str, Any]:
    stop: dict[str, Any] = wait_until(
        f"the idle stop of {docker_name}", lambda: idle_stops(d, docker_name), timeout
    )[0]
    return stop


def pass_done(d: Any) -> None:
    """Wait until the lifecycle pass in progress has finished (a dry run takes the same lock)."""
    result = d.cli("erin", "maintenance", "run", "--dry-run", timeout=30)
    assert result.returncode == 0, describe(result)


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def status_of(docker_client: Any, docker_name: str) -> str:
    return str(docker_client.api.inspect_container(docker_name)["State"]["Status"])


def victim_file(directory: Path, owner: Any | None) -> Path:
    """A file of ``owner`` (``None``: root) that anyone may write, holding PRECIOUS."""
    path = directory / f"victim-{uuid.uuid4().hex[:8]}"
    path.write_text(PRECIOUS)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    path.chmod(0o666)
    return path


@dataclass(frozen=True)
class NoticeScene:
    """Every notice trap of alice's, each in a container of its own, and bob's container
    whose stop comes last, all on one ds01d: each trap's idle stop has been waited for."""

    d: Any
    victims: dict[str, tuple[Path, os.stat_result]]  # hard link: owner -> (file, stat before)
    control: Path  # a plain workspace: its notice is written
    root_only: Path  # root's file a symlink named the notice
    bobs: Path  # bob's directory a workspace was swapped for
    elsewhere: Path  # where a directory above a workspace was pointed
    fifo: Path
    readonly: Path
    huge: Path
    bob_stop: dict[str, Any]


#: Room for every trap of the notice scene at once.
NOTICE_LIMITS = LIMITS.replace("max_containers: 6", "max_containers: 12")


@pytest.fixture(scope="class")
def notice_scene(ds01d_per_class: Any, unix_users: dict[str, Any]) -> Iterator[NoticeScene]:
    """One ds01d for every notice trap: the traps' idle stops are waited for together, each
    trap armed right after its container's create (well before its idle timeout), as a
    scene of its own would. The assertions are the tests'."""
    scratch = make_world_traversable_dir("ds01-bypass-notify-")
    try:
        yield notice_scene_in(scratch, ds01d_per_class, unix_users)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def notice_scene_in(scratch: Path, ds01d: Any, unix_users: dict[str, Any]) -> NoticeScene:
    alice, bob = unix_users["alice"], unix_users["bob"]
    # Hard links: a file of root's and one of bob's, each in a holder of its owner's, that
    # alice may write (so the kernel lets her link them: protected_hardlinks).
    victims = {}
    for owner_name in ("root", "bob"):
        owner = None if owner_name == "root" else unix_users[owner_name]
        holder = scratch / f"holder-{owner_name}"
        holder.mkdir(mode=0o755)
        if owner is not None:
            os.chown(holder, owner.pw_uid, owner.pw_gid)
        victim = victim_file(holder, owner)
        victims[owner_name] = (victim, victim.stat())
    # Symlinks: root's file, bob's directory, and a directory of alice's elsewhere.
    root_only = victim_file(scratch, None)
    root_only.chmod(0o644)
    bobs = scratch / "bobs-dir"
    bobs.mkdir()
    os.chown(bobs, bob.pw_uid, bob.pw_gid)
    bobs.chmod(0o777)
    elsewhere = own_dir(alice, "elsewhere")
    as_user("alice", "mkdir", str(elsewhere / "ws"))
    # A FIFO, a huge file and an unwritable workspace.
    fifo, readonly, huge = own_dir(alice, "fifo"), own_dir(alice, "ro"), own_dir(alice, "huge")
    as_user("alice", "mkfifo", str(fifo / ".ds01-notice"))
    as_user("alice", "truncate", "-s", "1T", str(huge / ".ds01-notice"))
    as_user("alice", "chmod", "0555", str(readonly))
    d = ds01d(resource_limits=NOTICE_LIMITS, images=TEST_IMAGES_YAML)

    for owner_name, (victim, _) in victims.items():
        trap = own_dir(alice, f"trap-{owner_name}")
        create(d, "alice", f"trap-{owner_name}", "--workspace", str(trap))
        as_user("alice", "ln", "-f", str(victim), str(trap / ".ds01-notice"))
    control = own_dir(alice, "control")
    create(d, "alice", "control", "--workspace", str(control))

    linked = own_dir(alice, "linked")  # the notice's name is a symlink to root's file
    create(d, "alice", "linked", "--workspace", str(linked))
    as_user("alice", "ln", "-s", str(root_only), str(linked / ".ds01-notice"))
    swapped = own_dir(alice, "swapped")  # the workspace itself becomes a symlink
    create(d, "alice", "swapped", "--workspace", str(swapped))
    as_user("alice", "mv", str(swapped), f"{swapped}.real")
    as_user("alice", "ln", "-s", str(bobs), str(swapped))
    above = own_dir(alice, "above")  # a directory above the workspace becomes a symlink
    as_user("alice", "mkdir", str(above / "ws"))
    create(d, "alice", "above", "--workspace", str(above / "ws"))
    as_user("alice", "mv", str(above), f"{above}.real")
    as_user("alice", "ln", "-s", str(elsewhere), str(above))

    for name, workspace in (("fifo", fifo), ("ro", readonly), ("huge", huge)):
        create(d, "alice", name, "--workspace", str(workspace))
    create(d, "bob", "later")

    names = ("trap-root", "trap-bob", "control", "linked", "swapped", "above", "fifo", "ro")
    for name in (*names, "huge"):
        wait_for_stop(d, f"{name}._.{alice.pw_uid}", TIMEOUT_S + 15)
    # A loop stuck on alice's FIFO would never stop bob's container.
    bob_stop = wait_for_stop(d, f"later._.{bob.pw_uid}", LATER_TIMEOUT_S + 15)
    pass_done(d)
    return NoticeScene(
        d, victims, control, root_only, bobs, elsewhere, fifo, readonly, huge, bob_stop
    )  # fmt: skip


class TestNoticeFiles:
    @pytest.mark.parametrize("victim_owner", ["root", "bob"])
    def test_a_notice_never_writes_through_a_hard_link(
        self, notice_scene: NoticeScene, unix_users: dict[str, Any], victim_owner: str
    ) -> None:
        alice = unix_users["alice"]
        scene = notice_scene
        control = scene.control / ".ds01-notice"
        assert "was stopped" in control.read_text()  # notices are written
        assert control.stat().st_uid == alice.pw_uid
        victim, before = scene.victims[victim_owner]
        after = victim.stat()
        assert victim.read_text() == PRECIOUS, "the notice was written into the victim's file"
        assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid), (
            f"the victim's file changed owner to {after.st_uid}:{after.st_gid}"
        )
        assert stat.S_IMODE(after.st_mode) == 0o666
        refused = scene.d.events_where(
            action="lifecycle.notice",
            resource=f"container/trap-{victim_owner}._.{alice.pw_uid}",
            outcome="failure",
        )
        assert refused and "single link" in refused[0]["details"]["error"], refused

    def test_a_notice_follows_no_symlink(self, notice_scene: NoticeScene) -> None:
        scene = notice_scene
        assert scene.root_only.read_text() == PRECIOUS
        assert scene.root_only.stat().st_uid == 0
        assert os.listdir(scene.bobs) == [], "a notice landed in bob's directory"
        assert os.listdir(scene.elsewhere / "ws") == [], "a notice was written through a symlink"

    def test_a_fifo_an_unwritable_workspace_or_a_huge_file_never_stop_the_loop(
        self, notice_scene: NoticeScene, unix_users: dict[str, Any]
    ) -> None:
        alice = unix_users["alice"]
        scene = notice_scene
        # The loop did not hang on alice's FIFO: it refused the notice there (never opened it
        # for writing), left the FIFO as it is, and went on to stop bob's container, whose
        # timeout comes later (the scene waited for that stop).
        refused = scene.d.events_where(
            action="lifecycle.notice",
            resource=f"container/fifo._.{alice.pw_uid}",
            outcome="failure",
        )
        assert refused and "not a regular file" in refused[0]["details"]["error"], refused
        assert stat.S_ISFIFO((scene.fifo / ".ds01-notice").lstat().st_mode)
        [fifo_stop] = idle_stops(scene.d, f"fifo._.{alice.pw_uid}")
        assert event_time(fifo_stop) <= event_time(scene.bob_stop)
        assert not (scene.readonly / ".ds01-notice").exists(), "written where alice may not write"
        notice = scene.huge / ".ds01-notice"
        assert "was stopped" in notice.read_text()
        assert notice.stat().st_uid == alice.pw_uid
        assert notice.stat().st_size < 4096


# -- sessions -------------------------------------------------------------------------------------


def spawn_open(d: Any, user: str, *args: str) -> subprocess.Popen[bytes]:
    """``container-open ARGS`` as ``user`` in the background, its input kept open (a client
    that stays connected); kill it with ``os.killpg``."""
    environment = user_env(user, {"DS01_SOCKET": str(d.paths.socket)})
    assignments = [f"{key}={value}" for key, value in environment.items()]
    argv = [
        "runuser", "-u", user, "--", "env", "-i", *assignments,
        *d.command_for(("container-open", *args)),
    ]  # fmt: skip
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        start_new_session=True,
    )


def processes_in(docker_client: Any, docker_name: str) -> list[str]:
    """The command lines of the container's processes, as the host's ``ps`` sees them."""
    top = docker_client.api.top(docker_name)
    column = top["Titles"].index("CMD")
    return [row[column] for row in top["Processes"]]


def test_a_process_named_like_an_ssh_login_keeps_nothing_alive(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    alice = unix_users["alice"]
    d = ds01d(resource_limits=LIMITS, images=IMAGES_WITH_PYTHON)
    docker_name = f"fake._.{alice.pw_uid}"
    create(d, "alice", "fake", image="python")
    # A daemon that names itself as sshd names its login sessions, detached from the terminal.
    fake_sshd = (
        "import os, time\n"
        "if os.fork():\n"
        "    time.sleep(1)\n"
        "    os._exit(0)\n"
        "os.setsid()\n"
        "os.execv('/bin/sleep', ['sshd: bob@pts/0', '100000'])\n"
    )
    result = d.cli("alice", "container-open", "fake", "--", "python3", "-c", fake_sshd)
    assert result.returncode == 0, describe(result)
    opened = time.time()
    assert any(c.startswith("sshd: bob@pts/0") for c in processes_in(docker_client, docker_name))

    stop = wait_for_stop(d, docker_name, TIMEOUT_S + 10)
    print(f"stopped {event_time(stop) - opened:.1f} s after the fake login started")
    assert status_of(docker_client, docker_name) == "exited"


def test_an_open_terminal_keeps_a_container_and_an_exec_left_behind_does_not(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    alice = unix_users["alice"]
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    attached_name, left_name = f"attached._.{alice.pw_uid}", f"left._.{alice.pw_uid}"
    # Each terminal opens right after its container's create: until one is open, the idle
    # timeout (7.2 s) runs from the start, and a slow machine must not use it up first.
    clients: list[subprocess.Popen[bytes]] = []
    try:
        created = create(d, "alice", "attached")
        clients.append(spawn_open(d, "alice", "attached", "--", "sleep", "100000"))
        create(d, "alice", "left")
        left = spawn_open(d, "alice", "left", "--", "sleep", "100001")
        clients.append(left)
        wait_until(
            "both terminals",
            lambda: len(d.events_where(action="container.terminal", user="alice")) == 2,
            timeout=15,
        )
        print(f"both terminals open {time.time() - created:.1f} s after 'attached' started")
        wait_until(
            "the exec in 'left'",
            lambda: any("100001" in c for c in processes_in(docker_client, left_name)),
            timeout=10,
        )
        os.killpg(left.pid, signal.SIGKILL)  # the client dies; its exec runs on in Docker
        left.wait(timeout=10)
        killed = time.time()
        stop = wait_for_stop(d, left_name, TIMEOUT_S + 10)
        print(f"'left' stopped {event_time(stop) - killed:.1f} s after its client died")

        # A second past the timeout of 'attached' too (passed already: 'left' was made later
        # and stopped a timeout after its client died), and a pass after that: the loop did
        # not stall.
        time.sleep(max(0.0, created + TIMEOUT_S + 1 - time.time()))
        wait_for_loop_pass(d, "lifecycle")
        assert status_of(docker_client, attached_name) == "running"
        assert not idle_stops(d, attached_name)
    finally:
        for process in clients:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    closed = time.time()
    stop = wait_for_stop(d, attached_name, TIMEOUT_S + 10)
    print(f"'attached' stopped {event_time(stop) - closed:.1f} s after its terminal closed")


# -- keep-alive -----------------------------------------------------------------------------------


def test_a_keep_alive_touched_in_a_loop_is_capped_even_across_a_daemon_restart(
    ds01d: Any,
    docker_client: Any,
    unix_users: dict[str, Any],
    webhook: tuple[int, list[dict[str, Any]]],
) -> None:
    alice = unix_users["alice"]
    port, received = webhook
    timeout_s = 10.8  # idle_timeout_hours 0.003 in WEBHOOK_LIMITS
    d = ds01d(resource_limits=WEBHOOK_LIMITS.format(port=port), images=TEST_IMAGES_YAML)
    docker_name = f"looped._.{alice.pw_uid}"
    started = create(d, "alice", "looped", "--workspace", str(own_dir(alice, "looped")))
    loop = "while :; do touch /workspace/.keep-alive; sleep 0.5; done"
    detached = f"setsid sh -c '{loop}' </dev/null >/dev/null 2>&1 & sleep 1"
    result = d.cli("alice", "container-open", "looped", "--", "sh", "-c", detached)
    assert result.returncode == 0, describe(result)
    opened = time.time()

    time.sleep(CAP_S / 2)  # half the cap passes before the crash
    d.kill()  # the cap is kept across a crash of ds01d
    d.restart()
    stop = wait_for_stop(d, docker_name, timeout_s + CAP_S + 12)

    elapsed = event_time(stop) - started
    print(f"stopped {elapsed:.1f} s after the start, {event_time(stop) - opened:.1f} s after "
          f"the loop began (timeout {timeout_s} s, cap {CAP_S} s)")  # fmt: skip
    assert elapsed >= timeout_s + CAP_S - 1.5, "the keep-alive file did not count at all"
    assert "keep_alive_max_hours" in stop["details"]["reason"], stop
    warnings = d.events_where(action="lifecycle.warn", user="alice")
    assert 1 <= len(warnings) <= 2, f"warned {len(warnings)} times: {warnings}"
    assert all("keep_alive_until" in w["details"] for w in warnings), warnings
    texts = [r["text"] for r in received if "will be stopped" in r["text"]]
    assert texts and all("keep_alive_max_hours" in t for t in texts), received
