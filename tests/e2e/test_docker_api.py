"""End to end: users' own Docker tools on ds01's Docker API door (``docker.sock``).

Debian's docker.io CLI (20.10) and docker-py, run as real non-admin users with
``DOCKER_HOST=unix://<the door>``, against a real ds01d and dockerd: version negotiation,
``ps`` (with ``-a``, filters and sizes) showing only the caller's containers, ``inspect``,
``logs`` (also followed, line by line as the container prints), ``top``, ``stats``,
``events`` and ``images`` limited to the caller; another user's container by name, id or
id prefix is Docker's own "No such container"; ``docker cp`` both ways, ``diff``,
``export`` and ``port`` on one's own containers; ``update`` (lowering only), ``pause``,
``unpause`` and ``rename`` (of a stopped container, which keeps its bind staging while a
new one under its old name gets its own); ``commit``, ``tag`` and ``rmi`` of one's own
images, in one's own namespace; ``pull`` of what the image policy allows (from a local
registry); ``build`` with the classic builder, as ``image-build`` builds (BuildKit
refused, saying so);
``save`` and ``load`` where ``images.yaml`` allows them (a load only of images tagged in
one's own namespace, audited with what dockerd did: loaded, or its error for a tar
whose layer is no tar); ``docker-compose up -d`` and ``down -v`` of a two-service project
with a network and a named volume (per user: another user sees none of it), and ``up -d``
again after a service changed (re-created: stop, rename aside, create, remove); VS Code's
attach sequence (stdout and stderr in frames of their own). ``docker run`` makes a
container with the same ``ds01.*`` labels as ``container-create`` and the GPU ``gpu-status``
shows in its environment; ``docker start`` of one whose GPU was released gets one again;
``exec -it`` and ``run -it`` see the terminal's size and its changes; ``docker kill`` and
``docker port`` (the published mapping); docker-py's ``containers.run(detach=True)`` and
``exec_run``; a restart of ds01d ends ``logs -f`` and ``exec -it`` with the CLI's clean
error; the door on a socket of its own (``--docker-socket``) and ``user-setup``'s context
for it.
The refusals are in ``test_bypass_docker_api.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pexpect
from rawapi import queue_gpu_create

from ds01.model.labels import GPUS as GPUS_LABEL
from ds01.model.labels import GPUS_ENV, NO_GPU_DEVICES
from support import (
    DEBIAN_DOCKER,
    TEST_IMAGE,
    TEST_IMAGES_YAML,
    describe,
    free_port,
    make_world_traversable_dir,
    simulated_a100s,
    user_env,
    wait_for_docker_log,
    wait_until,
)

#: Debian's docker-compose (1.29, on docker-py), installed by ``make images``.
DOCKER_COMPOSE = "/usr/bin/docker-compose"

LIMITS = """
    defaults:
      max_containers: 3
      cpu_limit: 1
      memory_limit: 256M
"""
#: As ``LIMITS``, with one GPU each and room for a queued create.
ONE_GPU_LIMITS = """
    defaults:
      max_containers: 4
      gpu_limit: 1
      cpu_limit: 1
      memory_limit: 256M
"""

#: docker-py as a user: prints what the door lists for them, then runs a container
#: (detached) and an exec in it and prints what they gave. argv: the door's socket, a
#: container to read the logs of, the image to run.
DOCKER_PY = r"""
import json, sys, docker
client = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto")
print(json.dumps({
    "api": client.api.api_version,
    "names": sorted(c.name for c in client.containers.list(all=True)),
    "images": sorted(t for i in client.images.list() for t in i.tags),
    "logs": client.containers.get(sys.argv[2]).logs().decode(),
}))
ran = client.containers.run(sys.argv[3], ["sleep", "300"], name="pyrun", detach=True)
code, output = ran.exec_run(["id", "-u"])
print(json.dumps({"name": ran.name, "status": client.containers.get("pyrun").status,
                  "exec": [code, output.decode()]}))
"""


def created(d: Any, user: str, name: str) -> dict[str, Any]:
    info: dict[str, Any] = d.cli_json(
        user, "container-create", name, "--image", "busybox", "--start"
    )
    return info


def say(d: Any, user: str, container: str, line: str) -> None:
    """Make ``container`` print ``line`` on its output (its main process's terminal); return
    once Docker's log holds it."""
    script = f"printf '\\n%s\\n' {line} > /proc/1/fd/1"
    result = d.cli(user, "container-open", container, "--", "sh", "-c", script)
    assert result.returncode == 0, describe(result)
    wait_for_docker_log(user, container, line)


def container_id(docker_client: Any, user: str, name: str) -> str:
    uid = docker_client.containers.list(filters={"label": f"ds01.user={user}"})[0].labels[
        "ds01.uid"
    ]
    return str(docker_client.containers.get(f"{name}._.{uid}").id)


def test_docker_cli_sees_only_the_callers_containers(ds01d: Any, docker_client: Any) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created(d, "alice", "mine")
    created(d, "bob", "theirs")
    say(d, "alice", "mine", "hello-from-mine")
    theirs = container_id(docker_client, "bob", "theirs")

    version = d.docker("alice", "version", "--format", "{{.Server.APIVersion}}")
    assert version.returncode == 0 and version.stdout.strip() == "1.41", describe(version)

    ps = d.docker("alice", "ps", "-a", "--format", "{{.Names}}")
    assert ps.returncode == 0, describe(ps)
    assert ps.stdout.split() == [f"mine._.{pwd_uid('alice')}"]
    filtered = d.docker("alice", "ps", "-a", "-q", "--filter", "name=theirs", "--size")
    assert filtered.returncode == 0 and filtered.stdout == "", describe(filtered)
    assert d.docker("bob", "ps", "-q").stdout.split() == [theirs[:12]]
    setup = d.cli("alice", "user-setup", "--no-container", "--json")
    assert setup.returncode == 0, describe(setup)
    by_context = d.run_as(
        "alice", [DEBIAN_DOCKER, "--context", "ds01", "ps", "--format", "{{.Names}}"], {},
        input=None, timeout=60, cwd=None,
    )  # fmt: skip
    assert by_context.stdout.split() == ps.stdout.split(), describe(by_context)

    inspect = d.docker("alice", "inspect", "--type", "container", "mine")
    assert inspect.returncode == 0, describe(inspect)
    assert json.loads(inspect.stdout)[0]["Config"]["Labels"]["ds01.user"] == "alice"
    logs = d.docker("alice", "logs", "mine")
    assert "hello-from-mine" in logs.stdout, describe(logs)
    top = d.docker("alice", "top", "mine")
    assert top.returncode == 0 and "PID" in top.stdout, describe(top)
    stats = d.docker("alice", "stats", "--no-stream", "--format", "{{.Name}}", "mine")
    assert stats.returncode == 0 and "mine" in stats.stdout, describe(stats)

    for ref in (f"theirs._.{pwd_uid('bob')}", theirs, theirs[:12], theirs[:4], "theirs"):
        for verb in (("inspect", "--type", "container"), ("logs",), ("top",)):
            seen = d.docker("alice", *verb, ref)
            assert seen.returncode != 0, describe(seen)
            assert f"No such container: {ref}" in seen.stderr, describe(seen)
    denied = d.events_where(action="docker_api.request", outcome="denied", user="alice")
    assert len(denied) >= 10


def test_the_door_on_a_socket_of_its_own_and_user_setups_context_for_it(
    ds01d: Any, docker_client: Any
) -> None:
    """``--docker-socket PATH`` puts the door elsewhere than next to the API socket;
    ``user-setup`` writes the ``ds01`` context for the socket the user's environment names
    (``DS01_DOCKER_SOCKET``, as ``DS01_SOCKET`` names the API socket)."""
    elsewhere = make_world_traversable_dir("ds01-door-")
    door = elsewhere / "door.sock"
    d = ds01d(
        resource_limits=LIMITS, images=TEST_IMAGES_YAML, extra_args=("--docker-socket", str(door))
    )
    try:
        created(d, "alice", "mine")
        assert not d.docker_socket.exists()  # nothing next to the API socket
        env = {"DOCKER_HOST": f"unix://{door}"}
        asked = [DEBIAN_DOCKER, "version", "--format", "{{.Server.APIVersion}}"]
        version = d.run_as("alice", asked, env, input=None, timeout=60, cwd=None)
        assert version.returncode == 0 and version.stdout == "1.41\n", describe(version)
        setup = d.cli("alice", "user-setup", "--no-container", "--json",
                      env={"DS01_DOCKER_SOCKET": str(door)})  # fmt: skip
        assert setup.returncode == 0, describe(setup)
        by_context = d.run_as("alice", [DEBIAN_DOCKER, "--context", "ds01", "ps", "--format",
                              "{{.Names}}"], {}, input=None, timeout=60, cwd=None)  # fmt: skip
        assert by_context.stdout == f"mine._.{pwd_uid('alice')}\n", describe(by_context)
    finally:
        d.stop()
        shutil.rmtree(elsewhere)


def test_logs_follow_and_events_stream_the_callers_own_and_end_with_ds01d(ds01d: Any) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created(d, "alice", "mine")
    created(d, "bob", "theirs")
    env = user_env("alice", {"DOCKER_HOST": f"unix://{d.docker_socket}"})
    argv = ["runuser", "-u", "alice", "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()]]
    # Sessions of their own: the whole command (runuser and docker) can be ended at once.
    follow = subprocess.Popen(
        [*argv, DEBIAN_DOCKER, "logs", "-f", "mine"],
        stdout=subprocess.PIPE,
        cwd="/",
        start_new_session=True,
    )
    # From now, whenever the stream opens (a slow start must not miss the stops and block
    # the reads below); only stops and starts, not the execs that print the lines.
    since = f"{time.time():.6f}"
    events = subprocess.Popen(
        [*argv, DEBIAN_DOCKER, "events", "--since", since, "--filter", "event=stop",
         "--filter", "event=start", "--format", "{{.Actor.Attributes.name}} {{.Action}}"],
        stdout=subprocess.PIPE,
        cwd="/",
        start_new_session=True,
    )  # fmt: skip
    try:
        say(d, "alice", "mine", "streamed-line")
        assert follow.stdout is not None and events.stdout is not None
        while b"streamed-line" not in follow.stdout.readline():
            pass
        # bob's stop comes first: had it been shown, it would be read before alice's.
        assert d.cli("bob", "container-stop", "theirs").returncode == 0
        assert d.cli("alice", "container-stop", "mine").returncode == 0
        first = events.stdout.readline().decode()
        assert first.split() == [f"mine._.{pwd_uid('alice')}", "stop"], first
        assert follow.wait(timeout=30) == 0  # ended by itself with the container
        # ds01d stops while the event stream is open: the client is cut off at once and
        # ds01d's drain ends cleanly (exit 0), not at its deadline.
        assert d.cli("alice", "container-start", "mine").returncode == 0
        while not events.stdout.readline().decode().startswith("mine._."):
            pass
        assert d.stop(timeout=10) == 0, d.log_tail()
        assert events.wait(timeout=10) is not None
    finally:
        for process in (follow, events):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group this test started
            process.wait()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


#: How the docker CLI ends an ``exec -it`` whose connection ds01d's stop cut, when it cannot
#: learn the exec's exit code: ds01d's drain refused the request, or its socket, about to
#: close, reset the connection or was gone.
EXEC_CUT_MESSAGES = (
    "Error response from daemon: ds01d is stopping, so it did not run this request: "
    "nothing was done.",
    "error during connect: ",
    "Cannot connect to the Docker daemon at unix://",
)
#: Descriptors the new ds01d may open for itself while serving a few requests (its Docker
#: connection pool, the audit log's files); a leak per cut stream would be more each time.
FD_HEADROOM = 8


def test_a_restart_of_ds01d_ends_followed_logs_and_an_interactive_exec_cleanly(
    ds01d: Any, docker_client: Any
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created(d, "alice", "mine")
    container = docker_client.containers.get(f"mine._.{pwd_uid('alice')}")
    processes = len(container.top()["Processes"])
    env = user_env("alice", {"DOCKER_HOST": f"unix://{d.docker_socket}"})
    argv = ["runuser", "-u", "alice", "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()]]
    follow = subprocess.Popen(
        [*argv, DEBIAN_DOCKER, "logs", "-f", "mine"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        start_new_session=True,
    )
    shell = spawn_docker(d, "alice", "exec", "-it", "mine", "sh")
    try:
        say(d, "alice", "mine", "before-restart")
        assert follow.stdout is not None
        while b"before-restart" not in follow.stdout.readline():
            pass
        shell.sendline("echo in-$((40+2))")
        shell.expect("in-42")
        assert len(container.top()["Processes"]) > processes  # the exec's shell runs
        assert d.stop() == 0, d.log_tail()
        # Both clients are cut off and end by themselves, as when a connection to dockerd
        # closes: `logs -f` on the cut stream, `exec -it` with its shell hung up; then the
        # CLI asks for the exec's exit code, which ds01d answers while it stops (129 once
        # the shell's SIGHUP ended it, 0 while it still ran: Docker's CLI reads no code as
        # 0), or refuses in one line, exit status 1.
        assert follow.wait(timeout=30) == 1
        assert follow.stderr is not None and follow.stderr.read() == b"unexpected EOF\n"
        shell.expect(pexpect.EOF)
        shell.close()
        last = (shell.before or "").rsplit("$ ", 1)[-1].replace("\x1b[6n", "")
        assert (shell.exitstatus in (0, 129) and last == "") or (
            shell.exitstatus == 1
            and last.endswith("\r\n")
            and last.count("\n") == 1
            and last.startswith(EXEC_CUT_MESSAGES)
        ), (shell.exitstatus, shell.before)
        d.start()
        # Nothing is left: the exec's shell ended with its connection, the container runs on
        # as it was, and the new ds01d serves alice with no descriptor kept per cut stream.
        wait_until(
            "the cut exec's shell ended",
            lambda: len(container.top()["Processes"]) == processes,
        )
        container.reload()
        assert container.status == "running"
        ps = d.docker("alice", "ps", "--format", "{{.Names}}")
        assert ps.stdout.split() == [container.name], describe(ps)
        resting = open_fds(d.pid)
        for _ in range(3):
            assert d.docker("alice", "logs", "mine").returncode == 0
            assert d.docker("alice", "exec", "mine", "true").returncode == 0
        assert open_fds(d.pid) <= resting + FD_HEADROOM, (open_fds(d.pid), resting)
        assert "Traceback" not in d.output_file.read_text(errors="replace"), d.log_tail()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(follow.pid, signal.SIGKILL)  # the group this test started
        follow.wait()
        shell.close(force=True)


def test_docker_py_sees_only_the_callers_containers_and_allowed_images(
    ds01d: Any, docker_client: Any, test_image: str
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created(d, "alice", "mine")
    created(d, "bob", "theirs")
    say(d, "alice", "mine", "py-line")
    docker_client.images.get(test_image).tag("ds01-test/unlisted", "latest")
    try:
        result = d.run_as(
            "alice",
            [sys.executable, "-c", DOCKER_PY, str(d.docker_socket), "mine", test_image],
            {},
            input=None,
            timeout=60,
            cwd=None,
        )
    finally:
        docker_client.images.remove("ds01-test/unlisted:latest")
    assert result.returncode == 0, describe(result)
    seen, ran = (json.loads(line) for line in result.stdout.splitlines())
    uid = pwd_uid("alice")
    assert seen["api"] == "1.41"
    assert seen["names"] == [f"mine._.{uid}"]
    assert test_image in seen["images"]
    assert "ds01-test/unlisted:latest" not in seen["images"]
    assert "py-line" in seen["logs"]
    # containers.run(detach=True) made a ds01 container of hers; exec_run ran in it as her.
    assert ran == {"name": f"pyrun._.{uid}", "status": "running", "exec": [0, f"{uid}\n"]}
    made = docker_client.containers.get(f"pyrun._.{uid}")
    assert made.labels["ds01.uid"] == str(uid) and made.labels["ds01.interface"] == "docker"


def spawn_docker(d: Any, user: str, *args: str) -> Any:
    """Debian's docker CLI as ``user`` on a pseudo-terminal (as ``Ds01Daemon.spawn`` runs
    ds01's commands), against the door."""
    environment = user_env(user, {"DOCKER_HOST": f"unix://{d.docker_socket}", "TERM": "xterm"})
    assignments = [f"{key}={value}" for key, value in environment.items()]
    child = pexpect.spawn(
        "runuser",
        ["-u", user, "--", "env", "-i", *assignments, DEBIAN_DOCKER, *args],
        env=user_env(None),
        cwd="/",
        encoding="utf-8",
        timeout=30,
    )
    child.setwinsize(40, 120)
    return child


def pwd_uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def terminal_size(child: Any) -> str:
    """``stty size`` of the shell on ``child``'s terminal: ``"ROWS COLUMNS"``, or ``""``
    while it has none (0 x 0: the CLI has not passed its size on yet)."""
    child.sendline("echo size-$(stty size)")  # its echo has ``$`` after ``size-``
    child.expect(r"size-([\d ]*)\r\n")
    return str(child.match.group(1))


def wait_for_terminal_size(child: Any, rows: int, columns: int) -> None:
    """Set ``child``'s terminal to ``rows`` x ``columns`` and wait until the shell in the
    container sees it: the docker CLI passes the size on (a resize request through the
    door) when it gets SIGWINCH, not in step with what the shell reads next."""
    child.setwinsize(rows, columns)
    wait_until(
        f"the container's terminal at {rows} {columns}",
        lambda: terminal_size(child) == f"{rows} {columns}",
    )


RUN_LIMITS = """
    defaults:
      gpu_limit: 1
      max_containers: 3
      cpu_limit: 1
      memory_limit: 256M
"""


def test_docker_run_goes_through_ds01s_creation(ds01d: Any, docker_client: Any) -> None:
    d = ds01d(resource_limits=RUN_LIMITS, images=TEST_IMAGES_YAML)
    image = "ds01-test/busybox:latest"
    run = d.docker(
        "alice", "run", "-d", "--name", "job", "--gpus", "1", "-m", "128m", "-e", "X=1",
        image, "sh", "-c", "echo started-$X; sleep 300",
    )  # fmt: skip
    assert run.returncode == 0, describe(run)
    container = docker_client.containers.get(run.stdout.strip())
    attrs = container.attrs
    uid, gid = pwd_uid("alice"), pwd.getpwnam("alice").pw_gid
    assert container.name == f"job._.{uid}"
    assert attrs["Config"]["User"] == f"{uid}:{gid}"
    assert attrs["Config"]["Labels"]["ds01.interface"] == "docker"
    assert attrs["HostConfig"]["Memory"] == 128 * 1024**2
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"] and not attrs["HostConfig"]["Privileged"]
    assert "alice" in attrs["HostConfig"]["CgroupParent"]
    status = d.cli_json("alice", "gpu-status")
    held = [g for g in status if g["holder"] and g["holder"]["user"] == "alice"]
    assert len(held) == 1 and held[0]["holder"]["container"] == "job", status

    # `docker run -d` returns once the container started, not once its shell has printed.
    wait_for_docker_log("alice", "job", "started-1")
    logs = d.docker("alice", "logs", "job")
    assert logs.stdout.strip() == "started-1", describe(logs)
    exec_ = d.docker("alice", "exec", "job", "id", "-u")
    assert exec_.returncode == 0 and exec_.stdout.strip() == str(uid), describe(exec_)
    interactive = spawn_docker(d, "alice", "exec", "-it", "job", "sh")
    interactive.sendline("tty")
    interactive.expect("/dev/pts/")
    # The terminal's size reaches the shell in the container, and so does a change of it.
    wait_for_terminal_size(interactive, 40, 120)
    wait_for_terminal_size(interactive, 30, 100)
    interactive.sendline("read x; echo got-$x; exit 3")
    interactive.sendline("typed")
    interactive.expect("got-typed")
    interactive.expect(pexpect.EOF)
    interactive.close()
    assert interactive.exitstatus == 3
    attached = spawn_docker(d, "alice", "run", "-it", "--rm", image, "sh")
    wait_for_terminal_size(attached, 40, 120)
    wait_for_terminal_size(attached, 25, 90)
    attached.sendline("read x; echo ran-$x; exit 4")
    attached.sendline("typed")
    attached.expect("ran-typed")
    attached.expect(pexpect.EOF)
    attached.close()
    assert attached.exitstatus == 4
    # A set-uid-root binary planted in her own directory would make alice root on the host:
    # every way to root in the container is refused, and what she can plant is hers.
    for as_root in (("exec", "-u", "root", "job"), ("exec", "-u", "0:0", "job"),
                    ("run", "--rm", "-u", "0", image), ("run", "--rm", "--cap-add", "SETUID",
                    image), ("run", "--rm", "--privileged", image)):  # fmt: skip
        plant = d.docker(
            "alice", *as_root, "sh", "-c", "cp /bin/busybox /workspace/x; chmod 4755 /workspace/x"
        )
        assert plant.returncode != 0, describe(plant)
    root = d.docker("alice", "exec", "-u", "root", "job", "id", "-u")
    assert root.returncode != 0 and "as the container's owner" in root.stderr, describe(root)
    planted = d.docker(
        "alice",
        "exec",
        "job",
        "sh",
        "-c",
        "cp /bin/busybox /workspace/x && chmod 4755 /workspace/x",
    )
    assert planted.returncode == 0, describe(planted)
    planted_file = Path(pwd.getpwnam("alice").pw_dir) / "workspace" / "x"
    mode = planted_file.stat()
    planted_file.unlink()
    assert mode.st_uid == uid and mode.st_mode & 0o4000  # set-uid alice: nothing gained

    over = d.docker("alice", "run", "-d", "--gpus", "5", image, "true")
    assert over.returncode == 125, describe(over)
    # ds01's own quota message, word for word as container-create gives it.
    refused = over.stderr.partition("Error response from daemon: ")[2].splitlines()[0]
    same = d.cli("alice", "container-create", "over", "--image", "busybox", "--gpus", "5")
    assert same.returncode != 0 and "limit" in refused and refused in same.stderr, (
        describe(over), describe(same)
    )
    privileged = d.docker("alice", "run", "-d", "--privileged", image, "true")
    assert privileged.returncode == 125 and "privileged" in privileged.stderr, describe(privileged)

    assert d.docker("alice", "stop", "-t", "1", "job").returncode == 0
    assert container.reload() is None and container.status == "exited"
    assert d.docker("alice", "start", "job").returncode == 0
    killed = d.docker("alice", "kill", "job")
    assert killed.returncode == 0, describe(killed)
    container.reload()
    assert (container.status, container.attrs["State"]["ExitCode"]) == ("exited", 137)
    rm = d.docker("alice", "rm", "-f", "job")
    assert rm.returncode == 0, describe(rm)
    assert not docker_client.containers.list(all=True, filters={"label": "ds01.user=alice"})


#: Two GPUs for alice, one a container; a stopped container's GPU goes back at once.
RELEASE_LIMITS = """
    defaults:
      gpu_limit: 2
      max_gpus_per_container: 1
      max_containers: 3
      cpu_limit: 1
      memory_limit: 256M
      gpu_hold_after_stop_minutes: 0
"""


def gpus_held(d: Any, user: str) -> dict[str, str]:
    """``gpu-status`` as ``user`` sees it: the device UUID each of their containers holds."""
    return {
        g["holder"]["container"]: g["uuid"]
        for g in d.cli_json(user, "gpu-status")
        if g["holder"] and g["holder"]["user"] == user
    }


def gpu_environment(container: Any) -> tuple[str, str, str]:
    """What ``container``'s processes are told of their GPUs: ``DS01_GPUS`` (the devices
    ds01 allocated), ``NVIDIA_VISIBLE_DEVICES`` and ``CUDA_VISIBLE_DEVICES``."""
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    return env[GPUS_ENV], env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]


def told_of(uuid: str) -> tuple[str, str, str]:
    """``gpu_environment`` of a container holding simulated GPU ``uuid``: the toolkit's
    variables say ``void`` under the simulated backend, so that no made-up UUID reaches a
    real runtime (``create_spec.gpu_exposure``; with ``nvml`` they name ``uuid``)."""
    return uuid, NO_GPU_DEVICES, NO_GPU_DEVICES


def test_docker_run_makes_what_container_create_makes_and_start_gets_a_released_gpu_again(
    ds01d: Any, docker_client: Any
) -> None:
    d = ds01d(
        resource_limits=RELEASE_LIMITS,
        gpu_config=simulated_a100s(2),
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.5"),
    )
    run = d.docker(
        "alice", "run", "-d", "--name", "door", "--gpus", "1", TEST_IMAGE, "sleep", "300"
    )
    assert run.returncode == 0, describe(run)
    d.cli_json("alice", "container-create", "cli", "--image", "busybox", "--gpus", "1", "--start")
    uid = pwd_uid("alice")
    door = docker_client.containers.get(f"door._.{uid}")
    cli = docker_client.containers.get(f"cli._.{uid}")

    def ds01_keys(container: Any) -> list[str]:
        return sorted(key for key in container.labels if key.startswith("ds01."))

    assert ds01_keys(door) == ds01_keys(cli)
    held = gpus_held(d, "alice")
    assert sorted(held) == ["cli", "door"] and held["cli"] != held["door"], held
    assert door.labels[GPUS_LABEL] == held["door"] and cli.labels[GPUS_LABEL] == held["cli"]
    assert gpu_environment(door) == told_of(held["door"])
    assert gpu_environment(cli) == told_of(held["cli"])

    # Stopped, its GPU goes back (gpu_hold_after_stop_minutes: 0); `docker start` gets one
    # again, through ds01's start, as `container-start` would.
    stop = d.docker("alice", "stop", "-t", "1", "door")
    assert stop.returncode == 0, describe(stop)
    wait_until("the stopped container's GPU released", lambda: "door" not in gpus_held(d, "alice"))
    start = d.docker("alice", "start", "door")
    assert start.returncode == 0, describe(start)
    held = gpus_held(d, "alice")
    assert sorted(held) == ["cli", "door"], held
    again = docker_client.containers.get(f"door._.{uid}")
    assert again.status == "running" and again.labels[GPUS_LABEL] == held["door"]
    assert gpu_environment(again) == told_of(held["door"])


def test_detach_keys_leave_the_container_running(ds01d: Any, docker_client: Any) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    run = spawn_docker(d, "alice", "run", "-it", "--name", "det", "ds01-test/busybox:latest", "sh")
    run.sendline("echo up-$((1+1))")
    run.expect("up-2")
    run.send("\x10\x11")  # Docker's default detach keys: ctrl-p ctrl-q
    run.expect(pexpect.EOF)
    run.close()
    assert run.exitstatus == 0, run.before
    container = docker_client.containers.get(f"det._.{pwd_uid('alice')}")
    assert container.status == "running"
    attach = spawn_docker(d, "alice", "attach", "--detach-keys", "ctrl-x,x", "det")
    attach.sendline("echo again-$((2+2))")
    attach.expect("again-4")
    attach.send("\x18x")
    attach.expect(pexpect.EOF)
    attach.close()
    # Docker's CLI says so and exits 1 after detaching from an attach (as with dockerd).
    assert "read escape sequence" in (attach.before or ""), attach.before
    container.reload()
    assert container.status == "running"
    exec_ = spawn_docker(d, "alice", "exec", "-it", "--detach-keys", "ctrl-x,x", "det", "sh")
    exec_.sendline("echo in-$((3+3))")
    exec_.expect("in-6")
    exec_.send("\x18x")
    exec_.expect(pexpect.EOF)
    exec_.close()
    container.reload()
    assert container.status == "running"


def test_docker_save_of_images_the_user_may_see_where_policy_allows(
    ds01d: Any, docker_client: Any, test_image: str
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML + "docker_save: true\n")
    with tempfile.TemporaryDirectory(dir="/tmp") as where:  # one alice can write in
        Path(where).chmod(0o777)
        saves_what_alice_may_see(d, docker_client, test_image, Path(where))


def saves_what_alice_may_see(d: Any, docker_client: Any, test_image: str, tmp_path: Path) -> None:
    saved = tmp_path / "saved.tar"
    result = d.docker("alice", "save", "-o", str(saved), test_image)
    assert result.returncode == 0, describe(result)
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [test_image]
    docker_client.images.get(test_image).tag("ds01-test/unlisted", "latest")
    try:
        # Not allowed to her; a repository alone would be all its tags, allowed or not.
        for hidden, why in (("ds01-test/unlisted:latest", "No such image"),
                            (test_image.split(":")[0], "name the tag")):  # fmt: skip
            refused = d.docker("alice", "save", "-o", str(tmp_path / "x.tar"), hidden)
            assert refused.returncode != 0 and why in refused.stderr, describe(refused)
    finally:
        docker_client.images.remove("ds01-test/unlisted:latest")
    assert not (tmp_path / "x.tar").exists()


def test_docker_load_of_images_tagged_in_her_own_namespace_only(
    ds01d: Any, docker_client: Any, test_image: str
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML + "docker_load: true\n")
    image = docker_client.images.get(test_image)
    with tempfile.TemporaryDirectory(dir="/tmp") as where:  # one alice can read
        Path(where).chmod(0o755)
        tars = {}
        for tag in ("alice/loaded:1", "bob/loaded:1"):  # each tar names one tag
            image.tag(tag)
            tars[tag] = Path(where) / f"{tag.split('/')[0]}.tar"
            with tars[tag].open("wb") as out:
                for chunk in docker_client.images.get(tag).save(named=tag):
                    out.write(chunk)
            docker_client.images.remove(tag)
        try:
            loaded = d.docker("alice", "load", "-i", str(tars["alice/loaded:1"]))
            assert loaded.returncode == 0, describe(loaded)
            assert "Loaded image: alice/loaded:1" in loaded.stdout, describe(loaded)
            assert docker_client.images.get("alice/loaded:1").id == image.id
            # Audited once dockerd has answered, naming what dockerd says it loaded.
            event = wait_until("the load's event", lambda: d.events_where(action="image.load"))
            assert [(e["user"], e["outcome"], e["details"]["tags"], e["details"]["loaded"])
                    for e in event] == [("alice", "success", ["alice/loaded:1"],
                                         ["alice/loaded:1"])], event  # fmt: skip
            # A tar ds01's checks let through (her tag, a clean config) but whose layer is no
            # tar: dockerd fails it, and the event says so, never that it was loaded.
            broken = Path(where) / "broken.tar"
            broken.write_bytes(broken_tar("alice/broken:1"))
            failed = d.docker("alice", "load", "-i", str(broken))
            assert failed.returncode != 0 and "Error processing tar" in failed.stderr, (
                describe(failed)
            )
            failure = wait_until("the failed load's event", lambda: d.events_where(
                action="image.load", resource="image/alice/broken:1"))  # fmt: skip
            assert [(e["outcome"], "Error processing tar" in e["details"]["error"],
                     "loaded" in e["details"]) for e in failure] == [("failure", True, False)]
            assert not docker_client.images.list("alice/broken")
            listed = d.docker("alice", "images", "--format", "{{.Repository}}:{{.Tag}}")
            assert "alice/loaded:1" in listed.stdout.split(), describe(listed)
            # The image policy still decides what runs: a loaded image is not hers to run.
            run = d.docker("alice", "create", "alice/loaded:1", "true")
            assert run.returncode != 0 and "not in the image registry" in run.stderr, describe(run)
            removed = d.docker("alice", "rmi", "alice/loaded:1")
            assert removed.returncode == 0, describe(removed)
            assert not docker_client.images.list("alice/loaded")
            refused = d.docker("alice", "load", "-i", str(tars["bob/loaded:1"]))
            assert refused.returncode != 0 and "alice/NAME" in refused.stderr, describe(refused)
            assert not docker_client.images.list("bob/loaded")
        finally:
            with contextlib.suppress(Exception):
                docker_client.images.remove("alice/loaded:1")


def broken_tar(tag: str) -> bytes:
    """An image tar as ``docker save`` lays one out, tagged ``tag`` with a clean config,
    whose one layer is not a tar: what ds01 reads passes, what dockerd reads fails."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag],
                            "Layers": ["layer/layer.tar"]}])  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (("config.json", config.encode()), ("manifest.json", manifest.encode()),
                           ("layer/layer.tar", b"not a tar" * 20)):  # fmt: skip
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


def planted_tar(path: Path) -> Path:
    """A tar whose one file claims root, set-uid and set-gid, and file capabilities."""
    member = tarfile.TarInfo("planted")
    member.uid, member.gid, member.uname, member.gname = 0, 0, "root", "root"
    member.mode = 0o6755
    member.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    data = b"#!/bin/sh\nid\n"
    member.size = len(data)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(data))
    return path


def test_docker_cp_both_ways_diff_and_export_on_own_containers_only(ds01d: Any) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created(d, "alice", "mine")
    created(d, "bob", "theirs")
    alice = pwd.getpwnam("alice")
    box = Path(alice.pw_dir) / "cp-test"
    box.mkdir()
    try:
        (box / "in.txt").write_text("into-the-container\n")
        planted_tar(box / "planted.tar")
        for path in (box, *box.iterdir()):
            os.chown(path, alice.pw_uid, alice.pw_gid)
        cp_in = d.docker("alice", "cp", str(box / "in.txt"), "mine:/tmp/in.txt")
        assert cp_in.returncode == 0, describe(cp_in)
        cp_out = d.docker("alice", "cp", "mine:/tmp/in.txt", str(box / "out.txt"))
        assert cp_out.returncode == 0, describe(cp_out)
        assert (box / "out.txt").read_text() == "into-the-container\n"
        assert (box / "out.txt").stat().st_uid == alice.pw_uid
        # dockerd reads as root: a root-only file in her own directory stays unread.
        secret = Path(alice.pw_dir) / "workspace" / "root-only"
        secret.write_text("not-for-alice\n")
        secret.chmod(0o600)
        try:
            out = d.run_as(
                "alice", ["sh", "-c", f"{DEBIAN_DOCKER} cp mine:/workspace - | tar t"],
                {"DOCKER_HOST": f"unix://{d.docker_socket}"}, input=None, timeout=60, cwd=None,
            )  # fmt: skip
            assert out.returncode == 0 and "workspace/" in out.stdout, describe(out)
            assert "root-only" not in out.stdout, describe(out)
            shown = d.docker("alice", "cp", "mine:/workspace/root-only", str(box / "leak"))
            assert not (box / "leak").exists() or "not-for-alice" not in (box / "leak").read_text()
            assert "not-for-alice" not in shown.stdout + shown.stderr
        finally:
            secret.unlink()
        diff = d.docker("alice", "diff", "mine")
        assert "A /tmp/in.txt" in diff.stdout.splitlines(), describe(diff)
        listed = d.run_as(
            "alice", ["sh", "-c", f"{DEBIAN_DOCKER} export mine | tar t"],
            {"DOCKER_HOST": f"unix://{d.docker_socket}"}, input=None, timeout=60, cwd=None,
        )  # fmt: skip
        assert "tmp/in.txt" in listed.stdout.splitlines(), describe(listed)
        host_port = free_port()
        published = d.docker("alice", "run", "-d", "--name", "pub", "-p",
                             f"127.0.0.1:{host_port}:8080", TEST_IMAGE, "sleep", "300")  # fmt: skip
        assert published.returncode == 0, describe(published)
        port = d.docker("alice", "port", "pub", "8080")
        assert port.returncode == 0 and port.stdout == f"127.0.0.1:{host_port}\n", describe(port)
        listed = d.docker("alice", "port", "pub")
        assert listed.stdout == f"8080/tcp -> 127.0.0.1:{host_port}\n", describe(listed)
        # A tar from stdin into her own directory: root's set-uid binary is not planted,
        # what lands is alice's plain file.
        plant = d.run_as(
            "alice", ["sh", "-c", f"{DEBIAN_DOCKER} cp - mine:/workspace < {box}/planted.tar"],
            {"DOCKER_HOST": f"unix://{d.docker_socket}"}, input=None, timeout=60, cwd=None,
        )  # fmt: skip
        assert plant.returncode == 0, describe(plant)
        planted = Path(alice.pw_dir) / "workspace" / "planted"
        landed = planted.stat()
        capability = os.getxattr(planted, "security.capability") if _has_xattr(planted) else None
        planted.unlink()
        assert (landed.st_uid, landed.st_gid) == (alice.pw_uid, alice.pw_gid)
        assert landed.st_mode & 0o7777 == 0o755 and capability is None
        # bob's container reads as one that does not exist (the CLI's own words for that:
        # a copy into it stats its directory first, a HEAD answered 404 without a body).
        for args, words in ((("cp", "theirs:/etc/passwd", str(box / "x")), "No such container"),
                            (("cp", str(box / "in.txt"), "theirs:/tmp/"), "no such directory"),
                            (("diff", "theirs"), "No such container"),
                            (("export", "theirs"), "No such container")):  # fmt: skip
            other = d.docker("alice", *args)
            assert other.returncode != 0 and words in other.stderr, describe(other)
    finally:
        shutil.rmtree(box)


def _has_xattr(path: Path) -> bool:
    try:
        return "security.capability" in os.listxattr(path)
    except OSError:
        return False


#: VS Code's "Attach to Running Container", as its logs show it, on raw HTTP as the user:
#: the engine's version, the container's inspection, an exec create, and the exec's start
#: on a hijacked connection whose stdin stays open across several commands (its server
#: installer talks to a shell this way). argv: the door's socket, the container's name.
VSCODE_ATTACH = r"""
import http.client, json, socket, struct, sys

path, name = sys.argv[1], sys.argv[2]

class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)

def call(method, target, body=None):
    conn = Unix("docker", timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, "/v1.41" + target, data, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read() or b"null")

seen = {"version": call("GET", "/version")[1]["ApiVersion"]}
status, info = call("GET", f"/containers/{name}/json")
seen["inspect"] = [status, info["State"]["Running"], info["Config"]["User"]]
status, created = call("POST", f"/containers/{info['Id']}/exec", {
    "AttachStdin": True, "AttachStdout": True, "AttachStderr": True, "Tty": False,
    "Cmd": ["sh"]})
exec_id = created["Id"]
body = json.dumps({"Detach": False, "Tty": False}).encode()
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(30)
sock.connect(path)
sock.sendall((f"POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
              "Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
              f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
buf = b""
while b"\r\n\r\n" not in buf:
    buf += sock.recv(4096)
head, _, buf = buf.partition(b"\r\n\r\n")
seen["upgrade"] = head.split(b"\r\n")[0].decode()

# What the exec wrote on stdout and on stderr (frames of stream type 1 and 2), until stdout
# holds word and stderr error (word None: until the stream ends).
def frames_until(word, error=b""):
    global buf
    out = {1: b"", 2: b""}
    while True:
        while len(buf) >= 8 and len(buf) >= 8 + struct.unpack(">I", buf[4:8])[0]:
            size = struct.unpack(">I", buf[4:8])[0]
            out[buf[0]] = out.get(buf[0], b"") + buf[8:8 + size]
            buf = buf[8 + size:]
        if word is not None and word in out[1] and error in out[2]:
            break
        data = sock.recv(4096)
        if not data:
            break
        buf += data
    return {str(stream): text.decode() for stream, text in out.items()}

sock.sendall(b"id -u; echo first-done; echo first-error >&2\n")
seen["first"] = frames_until(b"first-done", b"first-error")
sock.sendall(b"echo second-done; exit 7\n")
seen["second"] = frames_until(None)
seen["exit"] = call("GET", f"/exec/{exec_id}/json")[1]["ExitCode"]
print(json.dumps(seen))
"""


def test_vs_code_attach_sequence(ds01d: Any) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created(d, "alice", "mine")
    uid, gid = pwd_uid("alice"), pwd.getpwnam("alice").pw_gid
    env = user_env("alice", {"DOCKER_HOST": f"unix://{d.docker_socket}"})
    argv = ["runuser", "-u", "alice", "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()]]
    # VS Code watches for restarts of the container it attached to (from now: a start
    # before the stream is open is not missed, and the first start is before now).
    since = f"{time.time():.6f}"
    events = subprocess.Popen(
        [*argv, DEBIAN_DOCKER, "events", "--since", since, "--filter", "event=start", "--format",
         "{{.Action}} {{.Actor.Attributes.name}}"],
        stdout=subprocess.PIPE, cwd="/", start_new_session=True,
    )  # fmt: skip
    try:
        attach = d.run_as(
            "alice", [sys.executable, "-c", VSCODE_ATTACH, str(d.docker_socket), "mine"], {},
            input=None, timeout=60, cwd=None,
        )  # fmt: skip
        assert attach.returncode == 0, describe(attach)
        seen = json.loads(attach.stdout)
        assert seen["version"] == "1.41"
        assert seen["inspect"] == [200, True, f"{uid}:{gid}"]
        assert seen["upgrade"].startswith("HTTP/1.1 101")
        # stdout and stderr in frames of their own (no terminal: Tty false).
        assert seen["first"] == {"1": f"{uid}\nfirst-done\n", "2": "first-error\n"}
        assert seen["second"] == {"1": "second-done\n", "2": ""}
        assert seen["exit"] == 7
        restart = d.docker("alice", "restart", "-t", "1", "mine")
        assert restart.returncode == 0, describe(restart)
        assert events.stdout is not None
        assert events.stdout.readline().decode().split() == ["start", f"mine._.{uid}"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(events.pid, signal.SIGKILL)  # the group this test started
        events.wait()


def _staging_dirs(attrs: dict[str, Any]) -> set[str]:
    """The staging directories a container's binds point at (ds01.runtime.staging)."""
    return {str(Path(m["Source"]).parent) for m in attrs["Mounts"] if m["Type"] == "bind"}


def test_docker_update_lowers_limits_pause_unpause_and_rename(
    ds01d: Any, docker_client: Any
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created(d, "alice", "mine")
    container = docker_client.containers.get(f"mine._.{pwd_uid('alice')}")
    assert container.attrs["HostConfig"]["Memory"] == 256 * 2**20  # made with her limit

    lower = d.docker("alice", "update", "-m", "64m", "--cpus", "0.5", "mine")
    assert lower.returncode == 0, describe(lower)
    host = docker_client.containers.get(container.id).attrs["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"]) == (
        64 * 2**20, 64 * 2**20, 500_000_000,
    )  # fmt: skip
    over = d.docker("alice", "update", "-m", "512m", "mine")
    assert over.returncode != 0 and "does not raise" in over.stderr, describe(over)
    back = d.docker("alice", "update", "-m", "256m", "mine")  # up to what it was made with
    assert back.returncode == 0, describe(back)
    assert docker_client.containers.get(container.id).attrs["HostConfig"]["Memory"] == 256 * 2**20

    assert d.docker("alice", "pause", "mine").returncode == 0
    assert docker_client.containers.get(container.id).attrs["State"]["Paused"] is True
    assert d.docker("alice", "unpause", "mine").returncode == 0
    assert docker_client.containers.get(container.id).attrs["State"]["Paused"] is False

    uid = pwd_uid("alice")
    # A paused container is renamed as it is (Docker allows it), and so is a running one.
    assert d.docker("alice", "pause", "mine").returncode == 0
    paused = d.docker("alice", "rename", "mine", "held")
    assert paused.returncode == 0, describe(paused)
    attrs = docker_client.containers.get(container.id).attrs
    assert (attrs["Name"], attrs["State"]["Paused"]) == (f"/held._.{uid}", True)
    assert d.docker("alice", "unpause", "held").returncode == 0
    back = d.docker("alice", "rename", "held", "mine")
    assert back.returncode == 0, describe(back)
    assert d.docker("alice", "stop", "mine").returncode == 0
    staged = _staging_dirs(docker_client.containers.get(container.id).attrs)
    renamed = d.docker("alice", "rename", "mine", "other")
    assert renamed.returncode == 0, describe(renamed)
    assert docker_client.containers.get(container.id).name == f"other._.{uid}"
    moves = [
        (e["details"]["from"], e["details"]["to"], e["details"]["status"])
        for e in d.events_where(action="container.rename", user="alice", outcome="success")
    ]
    assert moves == [
        ("mine", "held", "paused"), ("held", "mine", "running"), ("mine", "other", "stopped")
    ], moves
    # A new container under the old name stages into a directory of its own; both run and
    # both mount alice's workspace.
    created(d, "alice", "mine")
    assert d.docker("alice", "start", "other").returncode == 0
    fresh = docker_client.containers.get(f"mine._.{uid}")
    assert _staging_dirs(docker_client.containers.get(container.id).attrs) == staged
    assert _staging_dirs(fresh.attrs).isdisjoint(staged)
    marked = d.docker("alice", "exec", "other", "touch", "/workspace/renamed-marker")
    assert marked.returncode == 0, describe(marked)
    seen = d.docker("alice", "exec", "mine", "ls", "/workspace/renamed-marker")
    assert seen.returncode == 0, describe(seen)
    listed = d.cli_json("alice", "container-list")
    assert sorted((c["name"], c["status"]) for c in listed) == [
        ("mine", "running"), ("other", "running")
    ]
    assert d.docker("alice", "stop", "other").returncode == 0
    taken = d.docker("alice", "rename", "other", "mine")
    assert taken.returncode != 0 and "already in use" in taken.stderr, describe(taken)
    assert d.docker("alice", "rm", "-f", "other").returncode == 0
    assert all(not Path(s).exists() for s in staged)  # its own staging went with it
    assert d.docker("alice", "exec", "mine", "ls", "/workspace/renamed-marker").returncode == 0
    (Path(pwd.getpwnam("alice").pw_dir) / "workspace" / "renamed-marker").unlink()


def test_docker_rename_of_a_running_container_moves_its_name_and_its_exemption(
    ds01d: Any, docker_client: Any
) -> None:
    d = ds01d(
        resource_limits=ONE_GPU_LIMITS, gpu_config=simulated_a100s(1), images=TEST_IMAGES_YAML
    )
    served = d.docker(
        "alice", "run", "-d", "--name", "srv", "busybox",
        "sh", "-c", "while true; do echo pong | nc -l -p 7000; done",
    )  # fmt: skip
    assert served.returncode == 0, describe(served)
    created(d, "alice", "peer")

    def reach(name: str) -> Any:
        """One try of ``peer`` at ``name``: up to 2 s of nc's, after an exec through the door
        (a second or more on a slow machine), so a wait for an answer gets the default 30 s."""
        return d.docker("alice", "exec", "peer", "nc", "-w", "2", name, "7000")

    wait_until("srv answers peer", lambda: reach("srv").stdout.strip() == "pong")
    hostname = d.docker("alice", "exec", "srv", "hostname").stdout
    exempt = d.cli_json(
        "erin", "admin", "exempt", "alice", "--container", "srv", "--hours", "1",
        "--reason", "long run",
    )  # fmt: skip

    renamed = d.docker("alice", "rename", "srv", "srv2")
    assert renamed.returncode == 0, describe(renamed)
    uid = pwd_uid("alice")
    attrs = docker_client.containers.get(served.stdout.strip()).attrs
    assert (attrs["Name"], attrs["State"]["Running"]) == (f"/srv2._.{uid}", True)
    # Her other container reaches it by its new name (Docker alone would keep only the old
    # alias on a running container's endpoint; its hostname, the old name, stays a name of
    # it on her network: Docker adds a container's hostname to its aliases).
    wait_until("srv2 answers peer", lambda: reach("srv2").stdout.strip() == "pong")
    assert d.docker("alice", "exec", "srv2", "hostname").stdout == hostname  # as in Docker
    listed = {c["name"]: c["status"] for c in d.cli_json("alice", "container-list")}
    assert listed == {"srv2": "running", "peer": "running"}, listed
    # The admin's exemption followed the container, in the same step.
    (event,) = d.events_where(action="container.rename", user="alice", outcome="success")
    assert event["details"]["exemptions"] == [exempt["id"]], event
    shown = [(e["id"], e["container"]) for e in d.cli_json("erin", "admin", "exemptions")]
    assert shown == [(exempt["id"], "srv2")], shown
    # A new container under the old name is a container of its own, not exempt.
    created(d, "alice", "srv")
    assert [e["container"] for e in d.cli_json("erin", "admin", "exemptions")] == ["srv2"]
    # A name the GPU queue holds for her (a create waiting for bob's GPU) is refused.
    d.cli_json("bob", "container-create", "holder", "--image", "busybox", "--gpus", "1", "--start")
    queue_gpu_create(d.paths.socket, "alice", "waiting")
    queued = d.docker("alice", "rename", "srv2", "waiting")
    assert queued.returncode != 0 and "GPU queue holds" in queued.stderr, describe(queued)
    assert docker_client.containers.get(served.stdout.strip()).name == f"srv2._.{uid}"


def test_docker_commit_tag_and_rmi_of_own_images(ds01d: Any, docker_client: Any) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    created(d, "alice", "mine")
    marked = d.docker("alice", "exec", "mine", "touch", "/tmp/marker")
    assert marked.returncode == 0, describe(marked)
    try:
        commit = d.docker("alice", "commit", "mine", "alice/snap:v1")
        assert commit.returncode == 0, describe(commit)
        image = docker_client.images.get("alice/snap:v1")
        assert image.id == commit.stdout.strip()
        assert image.labels["ds01.image.owner"] == "alice"
        assert not image.labels.get("ds01.uid")  # the container's labels are emptied
        tag = d.docker("alice", "tag", "alice/snap:v1", "alice/snap:v2")
        assert tag.returncode == 0, describe(tag)
        listed = d.docker("alice", "images", "--format", "{{.Repository}}:{{.Tag}}")
        assert {"alice/snap:v1", "alice/snap:v2"} <= set(listed.stdout.split()), describe(listed)
        run = d.docker("alice", "run", "--rm", "alice/snap:v1", "ls", "/tmp/marker")
        assert run.returncode == 0 and "/tmp/marker" in run.stdout, describe(run)

        for user, args, words in (
            ("alice", ("commit", "mine", "bob/snap"), "alice/NAME"),
            ("alice", ("commit", "--change", "USER root", "mine", "alice/x"), "--change"),
            ("alice", ("tag", "alice/snap:v1", "ds01-test/busybox:evil"), "alice/NAME"),
            ("alice", ("tag", "ds01-test/busybox:latest", "alice/mine"), "No such image"),
            ("alice", ("rmi", "ds01-test/busybox:latest"), "not one of your images"),
            ("bob", ("rmi", "alice/snap:v1"), "No such image"),
            ("bob", ("tag", "alice/snap:v1", "bob/stolen"), "No such image"),
        ):
            refused = d.docker(user, *args)
            assert refused.returncode != 0 and words in refused.stderr, describe(refused)
        rmi = d.docker("alice", "rmi", "alice/snap:v2")
        assert rmi.returncode == 0 and "Untagged: alice/snap:v2" in rmi.stdout, describe(rmi)
        assert docker_client.images.get("alice/snap:v1").tags == ["alice/snap:v1"]
    finally:
        for reference in ("alice/snap:v1", "alice/snap:v2"):
            with contextlib.suppress(Exception):
                docker_client.images.remove(reference)


COMPOSE_PROJECT = """\
version: "3"
services:
  web:
    image: ds01-test/busybox:latest
    command: ["sh", "-c", "echo from-web > /data/x; exec sleep 300"]
    volumes: ["data:/data"]
    networks: [back]
  db:
    image: ds01-test/busybox:latest
    command: ["sleep", "300"]
    networks: [back]
networks:
  back: {}
volumes:
  data: {}
"""


def test_docker_compose_up_and_down_of_a_project_with_a_network_and_a_volume(
    ds01d: Any, docker_client: Any
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    alice = pwd.getpwnam("alice")
    project = Path(alice.pw_dir) / "compose-test"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE_PROJECT)
    for path in (project, project / "docker-compose.yml"):
        os.chown(path, alice.pw_uid, alice.pw_gid)
    env = {"DOCKER_HOST": f"unix://{d.docker_socket}"}

    def compose(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return d.run_as(user, [DOCKER_COMPOSE, "-p", "proj", *args], env, input=None,
                        timeout=120, cwd=project)  # fmt: skip

    try:
        up = compose("alice", "up", "-d")
        assert up.returncode == 0, describe(up)
        mine = docker_client.containers.list(
            filters={"label": ["ds01.user=alice", "com.docker.compose.project=proj"]}
        )
        assert sorted(c.labels["com.docker.compose.service"] for c in mine) == ["db", "web"]
        assert {c.attrs["Config"]["User"] for c in mine} == {f"{alice.pw_uid}:{alice.pw_gid}"}
        volume = docker_client.volumes.get(f"proj_data._.{alice.pw_uid}")
        assert volume.attrs["Labels"]["ds01.uid"] == str(alice.pw_uid)
        # The service writes its volume as alice; the other service finds it by its name.
        wait_until("the web service's write", lambda: d.docker(
            "alice", "exec", "proj_web_1", "cat", "/data/x").stdout == "from-web\n")  # fmt: skip
        found = d.docker("alice", "exec", "proj_db_1", "nslookup", "web")
        assert found.returncode == 0 and "Address" in found.stdout, describe(found)
        volumes = d.docker("alice", "volume", "ls", "--format", "{{.Name}}")
        assert volumes.stdout.split() == ["proj_data"], describe(volumes)
        # bob sees none of it, and cannot use it.
        assert d.docker("bob", "volume", "ls", "-q").stdout == ""
        theirs = d.docker("bob", "volume", "inspect", "proj_data")
        assert theirs.returncode != 0 and "No such volume" in theirs.stderr, describe(theirs)
        assert d.docker("bob", "ps", "-a", "-q").stdout == ""

        # A changed service is re-created: compose stops it, renames it aside, creates the
        # new one under its name, starts it and removes the old one.
        web = docker_client.containers.get(f"proj_web_1._.{alice.pw_uid}")
        marked = d.docker("alice", "exec", "proj_web_1", "touch", "/workspace/compose-marker")
        assert marked.returncode == 0, describe(marked)
        changed = "    networks: [back]\n    environment: {MODE: changed}\n  db:"
        (project / "docker-compose.yml").write_text(
            COMPOSE_PROJECT.replace("    networks: [back]\n  db:", changed)
        )
        again = compose("alice", "up", "-d")
        assert again.returncode == 0, describe(again)
        fresh = docker_client.containers.get(f"proj_web_1._.{alice.pw_uid}")
        assert fresh.id != web.id and "MODE=changed" in fresh.attrs["Config"]["Env"]
        assert fresh.status == "running"
        seen = d.docker("alice", "exec", "proj_web_1", "ls", "/workspace/compose-marker")
        assert seen.returncode == 0, describe(seen)
        kept = d.docker("alice", "exec", "proj_web_1", "cat", "/data/x")
        assert kept.stdout == "from-web\n", describe(kept)
        listed = d.cli_json("alice", "container-list")
        assert sorted(c["name"] for c in listed) == ["proj_db_1", "proj_web_1"], listed
        assert d.events_where(action="container.rename", user="alice", outcome="success")

        down = compose("alice", "down", "-v")
        assert down.returncode == 0, describe(down)
        assert not docker_client.containers.list(all=True, filters={"label": "ds01.user=alice"})
        assert list((d.paths.state_dir / "mounts").iterdir()) == []  # no staging left
        assert not docker_client.volumes.list(filters={"label": f"ds01.uid={alice.pw_uid}"})
    finally:
        shutil.rmtree(project)
        (Path(alice.pw_dir) / "workspace" / "compose-marker").unlink(missing_ok=True)
        for volume in docker_client.volumes.list(filters={"label": f"ds01.uid={alice.pw_uid}"}):
            with contextlib.suppress(Exception):
                volume.remove(force=True)


def test_docker_pull_of_an_allowed_reference_only(
    ds01d: Any, docker_client: Any, local_registry: str
) -> None:
    registry = f"  - name: pulled\n    image: {local_registry}\n    framework: none\n" \
        "    description: The test image, from a local registry\n"  # fmt: skip
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML + registry)
    try:
        pull = d.docker("alice", "pull", local_registry)
        assert pull.returncode == 0, describe(pull)
        assert f"Pulled {local_registry}" in pull.stdout, describe(pull)
        assert docker_client.images.get(local_registry).id
        pulled = d.events_where(action="image.pull", user="alice", outcome="success")
        assert pulled and pulled[-1]["resource"] == f"image/{local_registry}"
        other = local_registry.rsplit(":", 1)[0] + ":other"
        refused = d.docker("alice", "pull", other)
        assert refused.returncode != 0 and "not allowed" in refused.stderr, describe(refused)
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(local_registry)


def test_docker_build_as_image_build_does_it(ds01d: Any, docker_client: Any) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    alice = pwd.getpwnam("alice")
    context = Path(alice.pw_dir) / "build-test"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nCOPY Dockerfile /\nRUN echo built > /b\n")
    (context / "unlisted").mkdir()
    (context / "unlisted" / "Dockerfile").write_text("FROM ds01-test/unlisted:latest\n")
    # dockerd would fetch this itself, on the host's network: refused as image-build does.
    (context / "fetch").mkdir()
    (context / "fetch" / "Dockerfile").write_text("FROM busybox\nADD http://127.0.0.1:9/x /x\n")
    for path in (context, *context.rglob("*")):
        os.chown(path, alice.pw_uid, alice.pw_gid)
    docker_client.images.get(TEST_IMAGE).tag("ds01-test/unlisted", "latest")
    try:
        build = d.docker("alice", "build", "-t", "alice/built:v1", str(context), timeout=120)
        assert build.returncode == 0, describe(build)
        assert "Successfully tagged alice/built:v1" in build.stdout, describe(build)
        image = docker_client.images.get("alice/built:v1")
        assert image.labels["ds01.image.owner"] == "alice"
        # FROM busybox is the registry's busybox; the context came with the build.
        run = d.docker("alice", "run", "--rm", "alice/built:v1", "sh", "-c", "cat /b /Dockerfile")
        assert run.stdout.split()[:2] == ["built", "FROM"], describe(run)
        built = d.events_where(action="image.build", user="alice", outcome="success")
        assert built and built[-1]["resource"] == "image/alice/built:v1"
        for args, words in (
            (("build", "-t", "alice/other", str(context / "unlisted")), "may build from"),
            (("build", "-t", "alice/fetch", str(context / "fetch")), "RUN curl"),
            (("build", "-t", "bob/x", str(context)), "alice/NAME"),
            (("build", "--build-arg", "A=1", "-t", "alice/x", str(context)), "buildargs"),
        ):
            refused = d.docker("alice", *args)
            assert refused.returncode != 0 and words in refused.stderr, describe(refused)
        kit = d.run_as("alice", [DEBIAN_DOCKER, "build", "-t", "alice/x", str(context)],
                       {"DOCKER_HOST": f"unix://{d.docker_socket}", "DOCKER_BUILDKIT": "1"},
                       input=None, timeout=60, cwd=None)  # fmt: skip
        assert kit.returncode != 0 and "DOCKER_BUILDKIT=0" in kit.stderr, describe(kit)
    finally:
        shutil.rmtree(context)
        for reference in ("alice/built:v1", "ds01-test/unlisted:latest"):
            with contextlib.suppress(Exception):
                docker_client.images.remove(reference)
