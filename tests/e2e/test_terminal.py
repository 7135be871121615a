"""End to end: ``container-open`` gives a real user a terminal in their own container;
``container-deploy`` and ``container-retire`` around it.

Driven through a pseudo-terminal like a person at a keyboard: the command runs as the
container's owner (``id -u``), the program's exit status passes through, an interactive
shell answers typed lines, a stopped container is started first, someone else's
container stays closed (exit 5), and stopping ds01d closes a terminal with a last line
while the container runs on.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from support import PTY_TIMEOUT_S, TEST_IMAGES_YAML, describe, user_env


def open_in_pty(d: Any, user: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``container-open ARGS`` as ``user`` on a new pseudo-terminal; return the process
    and the master side to type into and read from."""
    return spawn_in_pty(d, user, "container-open", *args)


def spawn_in_pty(d: Any, user: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start the ds01 command ``ARGS`` as ``user`` on a new pseudo-terminal."""
    environment = user_env(user, {"DS01_SOCKET": str(d.paths.socket), "TERM": "xterm"})
    assignments = [f"{key}={value}" for key, value in environment.items()]
    argv = ["runuser", "-u", user, "--", "env", "-i", *assignments, *d.command_for(args)]
    master, slave = pty.openpty()
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, cwd="/", start_new_session=True
    )
    os.close(slave)
    return process, master


def read_until(master: int, needle: bytes, timeout: float = PTY_TIMEOUT_S) -> bytes:
    """Read the terminal until ``needle`` was shown: a prompt may come only after Docker
    started the container and the exec in it, which a slow machine takes seconds for."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen; got {seen[-2000:]!r}")
        if select.select([master], [], [], left)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:  # the process ended and closed the terminal
                break
    return seen


def finish(process: subprocess.Popen[bytes], master: int) -> tuple[int, bytes]:
    """The command's exit status and what it still shows until it closes the terminal."""
    rest = b""
    while True:
        if not select.select([master], [], [], PTY_TIMEOUT_S)[0]:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        rest += chunk
    code = process.wait(timeout=20)
    os.close(master)
    return code, rest


def test_a_command_runs_as_the_owner_and_its_exit_status_passes_through(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "shell", "--image", "busybox")  # not started
    process, master = open_in_pty(d, "alice", "shell", "--", "sh", "-c", "id -u; pwd; exit 7")

    code, output = finish(process, master)

    assert code == 7, output
    assert str(unix_users["alice"].pw_uid).encode() in output, output
    assert b"/workspace" in output, output
    [row] = d.cli_json("alice", "container-list")
    assert row["status"] == "running"  # started to open it
    assert d.events_where(action="container.terminal", user="alice")


def test_an_interactive_shell_answers_typed_lines(ds01d: Any, unix_users: dict[str, Any]) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "shell", "--image", "busybox", "--start")
    process, master = open_in_pty(d, "alice", "shell")

    read_until(master, b"$")  # the prompt of a non-root shell
    os.write(master, b"echo $((6 * 7)) from $(id -un 2>/dev/null || id -u)\r")
    read_until(master, b"42 from")
    os.write(master, b"exit 3\r")
    code, _ = finish(process, master)

    assert code == 3


def test_stopping_ds01d_closes_the_terminal_with_a_last_line_and_the_container_runs_on(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "shell", "--image", "busybox", "--start")
    process, master = open_in_pty(d, "alice", "shell")
    read_until(master, b"$")

    d.kill(signal.SIGTERM)  # returns once ds01d has exited: it did not wait for the terminal
    code, output = finish(process, master)

    assert d.process is not None and d.process.returncode == 0, d.log_tail()
    assert b"ds01d is stopping, so it closed this terminal" in output, output
    assert code == 1, output
    uid = unix_users["alice"].pw_uid
    assert docker_client.containers.get(f"shell._.{uid}").status == "running"


def test_someone_elses_container_stays_closed(ds01d: Any, unix_users: dict[str, Any]) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("bob", "container-create", "private", "--image", "busybox", "--start")
    uid = unix_users["bob"].pw_uid

    result = d.cli("alice", "container-open", f"private._.{uid}", "--", "id")

    assert result.returncode == 5, describe(result)
    assert d.events_where(action="auth.denied", user="alice")
    assert not d.events_where(action="container.terminal")


def test_deploy_creates_starts_and_opens_or_leaves_it_in_the_background(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    uid = unix_users["alice"].pw_uid
    background = d.cli("alice", "container-deploy", "bg", "--image", "busybox", "--background")
    assert background.returncode == 0, describe(background)
    assert "container-open bg" in background.stdout
    assert docker_client.containers.get(f"bg._.{uid}").status == "running"

    process, master = spawn_in_pty(d, "alice", "container-deploy", "fg", "--image", "busybox")
    read_until(master, b"$")
    os.write(master, b"id -u; exit 0\r")
    code, output = finish(process, master)
    assert code == 0, output
    assert docker_client.containers.get(f"fg._.{uid}").status == "running"


@pytest.fixture
def kept_image(docker_client: Any) -> Iterator[str]:
    """The image alice's retired container is kept as, removed however the test ends (the
    containers' clean-up leaves images): no later test finds an image of hers it did not
    make."""
    yield "alice/env-kept:latest"
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove("alice/env-kept:latest", force=True)


def test_retire_keeps_what_was_installed_as_her_image_and_frees_the_gpu_at_once(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any], kept_image: str
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    uid = unix_users["alice"].pw_uid
    info = d.cli_json("alice", "container-create", "env", "--image", "busybox", "--gpus", "1",
                      "--start")  # fmt: skip
    container = docker_client.containers.get(f"env._.{uid}")
    assert container.exec_run(["sh", "-c", "echo installed > /tmp/tool"]).exit_code == 0

    retired = d.cli_json("alice", "container-retire", "env", "--keep-as", "env-kept", "--yes")

    kept = retired["kept_image"]
    assert kept == kept_image, retired
    assert f"env._.{uid}" not in {c.name for c in docker_client.containers.list(all=True)}
    holders = [g["holder"] for g in d.cli_json("alice", "gpu-status") if g["uuid"] in info["gpus"]]
    assert holders == [None], "the GPU was not freed at once"
    image = docker_client.images.get(kept)
    assert image.labels["ds01.image.owner"] == "alice"
    assert not {k: v for k, v in image.labels.items() if k.startswith("ds01.") and v
                and k != "ds01.image.owner"}  # fmt: skip
    again = d.cli_json("alice", "container-create", "back", "--image", kept, "--start")
    back = docker_client.containers.get(f"back._.{uid}")
    assert back.exec_run(["cat", "/tmp/tool"]).output.decode().strip() == "installed"
    assert again["image"] == kept
    refused = d.cli("bob", "container-create", "theirs", "--image", kept)
    assert refused.returncode == 5, describe(refused)
    d.cli("alice", "container-remove", "back", "--force")


PYTHON_IMAGES_YAML = (
    TEST_IMAGES_YAML
    + """\
  - name: python
    image: ds01-test/python:latest
    framework: none
    description: Debian's Python with bash
"""
)


def test_the_owner_has_their_name_group_and_home_inside(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(images=PYTHON_IMAGES_YAML)
    d.cli_json("alice", "container-create", "thesis", "--image", "python", "--start")
    group = grp.getgrgid(unix_users["alice"].pw_gid).gr_name
    process, master = open_in_pty(d, "alice", "thesis", "--", "bash", "-il")

    prompt = read_until(master, b"$ ")
    os.write(master, b"echo \"[$(whoami)|$(id -gn)|$(cd ~ && pwd)|$(getent passwd alice)]\"\r")
    answer = read_until(master, b"]\r\n")
    os.write(master, b"echo x >> /etc/passwd || echo REFUSED; exit\r")
    code, rest = finish(process, master)

    assert code == 0, rest
    assert b"I have no name!" not in prompt, prompt
    assert b"alice@thesis" in prompt, prompt
    expected = f"[alice|{group}|/workspace|alice:x:{unix_users['alice'].pw_uid}:"
    assert expected.encode() in answer, answer
    assert b"REFUSED" in rest, rest


def test_busybox_knows_the_owner_from_a_root_owned_passwd(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "box", "--image", "busybox", "--start")

    result = d.cli("alice", "container-open", "box", "--", "sh", "-c",
                   "whoami; ls -ln /etc/passwd")  # fmt: skip

    assert result.returncode == 0, describe(result)
    lines = result.stdout.split()
    assert lines[0] == "alice", describe(result)
    # root-owned, mode 0644: the owner reads it and cannot change it
    assert "-rw-r--r--" in result.stdout and " 0 " in result.stdout, describe(result)


def test_roots_own_container_is_made_as_before(ds01d: Any, unix_users: dict[str, Any]) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)

    made = d.cli(None, "container-create", "rootbox", "--image", "busybox", "--start")

    assert made.returncode == 0, describe(made)
    inside = d.cli(None, "container-open", "rootbox", "--", "sh", "-c", "whoami")
    assert inside.stdout.split() == ["root"], describe(inside)
