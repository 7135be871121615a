"""End to end: ds01d gets SIGTERM while users' requests are in flight.

Ten commands from four users (creates, starts, stops, removes) run at once, next to a
``container-stop`` that Docker would need its whole stop timeout for (the container's shell
is frozen, so only a SIGKILL ends it): that stop holds ds01d's drain open until the test,
once it has seen what it checks during the drain, sends that SIGKILL itself (``docker
kill``, what the end of Docker's 10 s would send). ds01d gets SIGTERM as soon as the first
of the ten has taken effect. Then:

- every client learns whether its action happened: exit 0 means Docker shows it done and
  the audit log has its success; any other exit says "nothing was done", and Docker shows
  nothing done. No client sees a lost connection;
- a client that connects during the drain, and a request on a connection kept alive from
  before the signal, get the plain refusal at once;
- ds01d exits 0, within its drain timeout, and comes back with views that match Docker and
  nothing to roll back.

When the drain is cut short (its deadline, or a second SIGTERM), the client whose request
is still inside Docker is told that its outcome is unknown and how to check; ds01d exits 1
and names the request in its log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from support import (
    MANY_CREATES_LIMITS,
    TEST_IMAGES_YAML,
    Ds01Daemon,
    assert_views_match_docker,
    describe,
    docker_name,
    docker_view,
    wait_until,
)

LIMITS = MANY_CREATES_LIMITS

#: ds01d's default drain timeout (``ds01.daemon.main.DEFAULT_DRAIN_SECONDS``).
DRAIN_SECONDS = 30.0

# (verb, user, container): the ten commands sent at once.
OPERATIONS: list[tuple[str, str, str]] = [
    ("create", "alice", "new-a"),
    ("create", "bob", "new-b"),
    ("create", "carol", "new-c"),
    ("start", "bob", "start-b"),
    ("start", "carol", "start-c"),
    ("start", "dave", "start-d"),
    ("stop", "alice", "stop-a"),
    ("stop", "bob", "stop-b"),
    ("remove", "carol", "remove-c"),
    ("remove", "dave", "remove-d"),
]
CREATE_ARGS = {"new-b": ("--gpus", "1"), "new-c": ("--mig", "1g.5gb")}
# Docker's status of the container before and after each verb (None: no such container).
BEFORE = {"create": None, "start": "created", "stop": "running", "remove": "created"}
AFTER = {"create": "created", "start": "running", "stop": "exited", "remove": None}
ACTIONS = {
    "create": {"container.create", "gpu.allocate"},
    "start": {"container.start"},
    "stop": {"container.stop"},
    "remove": {"container.remove"},
}
NOTHING_DONE = "Nothing was done"
#: Seconds between the launches of two of the ten commands.
LAUNCH_SPACING_S = 0.1


# --- helpers -------------------------------------------------------------------------------


def run_operation(d: Ds01Daemon, verb: str, user: str, name: str) -> subprocess.CompletedProcess:
    if verb == "create":
        args = ("--image", "busybox", *CREATE_ARGS.get(name, ()))
        return d.cli(user, "container-create", name, *args, timeout=120)
    return d.cli(user, f"container-{verb}", name, timeout=120)


def took_effect(d: Ds01Daemon, verb: str, user: str, name: str) -> bool:
    """Whether the audit log has the success of ``verb`` on ``user``'s ``name``."""
    resource = f"container/{docker_name(user, name)}"
    return any(
        e["action"] in ACTIONS[verb] and e["resource"] == resource and e["outcome"] == "success"
        for e in d.events()
    )


def make_slow_to_stop(docker_client: Any, name: str) -> str:
    """Freeze the shell of container ``name`` (SIGSTOP from the host): the stop signal then
    stays pending, and a ``docker stop`` lasts its whole timeout (ds01d's: 10 s) until the
    SIGKILL. Returns the container's id."""
    container = docker_client.containers.get(name)
    init = container.attrs["State"]["Pid"]  # docker-init: the shell is its child
    children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    assert children, f"no process under docker-init {init} of {name}"
    for pid in children:
        os.kill(int(pid), signal.SIGSTOP)
    return str(container.id)


def end_the_stop(docker_client: Any, name: str) -> None:
    """SIGKILL the frozen container ``name`` (what Docker sends at the end of its stop
    timeout, sent sooner), which ends the stop under way in Docker; nothing when Docker's
    timeout ended it already (a slow machine)."""
    try:
        docker_client.containers.get(name).kill()
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: the container is not running
            raise


def wait_for_stop_in_docker(docker_client: Any, container_id: str, since: int) -> None:
    """Return once Docker has sent the container its stop signal (the stop is under way)."""
    events = docker_client.events(
        decode=True,
        since=since,
        until=since + 30,
        filters={"container": container_id, "event": "kill"},
    )
    try:
        for _ in events:
            return
    finally:
        events.close()
    raise AssertionError("Docker never began to stop the container")


def read_answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """One HTTP answer with a ``Content-Length`` body: (status, JSON body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of an answer"
        body += chunk
    return int(lines[0].split()[1]), json.loads(body)


def wait_for_exit(d: Ds01Daemon, timeout: float) -> int:
    assert d.process is not None
    try:
        return d.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ds01d did not exit within {timeout:g} s\n{d.log_tail()}", pytrace=False)


def slow_stop_under_way(d: Ds01Daemon, docker_client: Any, pool: ThreadPoolExecutor) -> Any:
    """alice's running container ``slow``, frozen, with her ``container-stop slow`` inside
    Docker's stop timeout; returns the future of that command."""
    created = d.cli("alice", "container-create", "slow", "--image", "busybox", "--start")
    assert created.returncode == 0, describe(created)
    container_id = make_slow_to_stop(docker_client, docker_name("alice", "slow"))
    since = int(time.time()) - 1
    stop = pool.submit(d.cli, "alice", "container-stop", "slow", timeout=120)
    wait_for_stop_in_docker(docker_client, container_id, since)
    return stop


# --- SIGTERM during requests -------------------------------------------------------------


def test_sigterm_during_requests_tells_every_client_what_happened(
    ds01d: Any, docker_client: Any
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    for verb, user, name in OPERATIONS:
        if BEFORE[verb] is not None:
            args = ("--start",) if BEFORE[verb] == "running" else ()
            made = d.cli(user, "container-create", name, "--image", "busybox", *args)
            assert made.returncode == 0, describe(made)
    before = docker_view(docker_client)
    kept_alive = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    kept_alive.connect(str(d.paths.socket))
    kept_alive.settimeout(30)
    kept_alive.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: ds01d\r\n\r\n")
    assert read_answer(kept_alive)[0] == 200

    with ThreadPoolExecutor(max_workers=len(OPERATIONS) + 1) as pool:
        slow_stop = slow_stop_under_way(d, docker_client, pool)
        futures = []
        for op in OPERATIONS:  # spread out, so that the signal finds some not yet sent
            futures.append(pool.submit(run_operation, d, *op))
            time.sleep(LAUNCH_SPACING_S)
        wait_until(
            "the first of the ten commands to take effect",
            lambda: any(took_effect(d, *op) for op in OPERATIONS),
            timeout=60,
            interval=0.01,
        )
        d.kill(signal.SIGTERM, wait=False)
        signalled = time.monotonic()

        # During the drain: a new client, and a new request on an old connection.
        late = d.cli("erin", "container-list")
        kept_alive.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: ds01d\r\n\r\n")
        status, body = read_answer(kept_alive)
        kept_alive.close()
        assert d.running, "ds01d did not wait for the stop inside Docker"

        results = [f.result() for f in futures]
        end_the_stop(docker_client, docker_name("alice", "slow"))
        slow = slow_stop.result()
    code = wait_for_exit(d, DRAIN_SECONDS + 10)
    stopped_after = time.monotonic() - signalled

    assert late.returncode == 1, describe(late)
    assert "ds01d is stopping" in late.stderr and "nothing was done" in late.stderr, describe(late)
    assert status == 503 and body["error"]["kind"] == "stopping", body
    assert "nothing was done" in body["error"]["message"], body

    assert slow.returncode == 0, describe(slow)
    assert took_effect(d, "stop", "alice", "slow")
    after = docker_view(docker_client)
    assert after[docker_name("alice", "slow")]["status"] == "exited"

    outcomes = []
    for (verb, user, name), result in zip(OPERATIONS, results, strict=True):
        key = docker_name(user, name)
        status_now = after[key]["status"] if key in after else None
        assert "Lost the connection" not in result.stderr, describe(result)
        assert "unknown" not in result.stderr, describe(result)
        if result.returncode == 0:
            assert status_now == AFTER[verb], (describe(result), after.get(key))
            assert took_effect(d, verb, user, name), describe(result)
        else:
            assert result.returncode == 1, describe(result)
            assert NOTHING_DONE.lower() in result.stderr.lower(), describe(result)
            assert status_now == BEFORE[verb], (describe(result), after.get(key))
            assert not took_effect(d, verb, user, name), describe(result)
            if key in before:
                assert after[key]["id"] == before[key]["id"]
        outcomes.append(f"{verb} {name}: exit {result.returncode}")

    print(f"SIGTERM to exit: {stopped_after:.2f} s; {'; '.join(outcomes)}")
    assert code == 0, d.log_tail()
    assert stopped_after < DRAIN_SECONDS, stopped_after
    assert not d.paths.socket.exists()  # a clean exit removes the socket
    d.start()
    assert_views_match_docker(d, docker_client)
    assert not d.events_where(outcome="rolled_back"), (outcomes, d.events())


# --- the drain cut short -------------------------------------------------------------------


@pytest.mark.parametrize("cut_by", ["drain-timeout", "second-sigterm"])
def test_a_request_still_in_docker_when_the_drain_ends_is_told_its_outcome_is_unknown(
    ds01d: Any, docker_client: Any, cut_by: str
) -> None:
    extra = ["--drain-timeout", "1"] if cut_by == "drain-timeout" else []
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML, extra_args=extra)
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow_stop = slow_stop_under_way(d, docker_client, pool)
        d.kill(signal.SIGTERM, wait=False)
        signalled = time.monotonic()
        if cut_by == "second-sigterm":
            wait_until("the drain to begin", lambda: "stopping:" in d.log_tail(), timeout=10)
            d.kill(signal.SIGTERM, wait=False)
        code = wait_for_exit(d, DRAIN_SECONDS)
        stopped_after = time.monotonic() - signalled
        slow = slow_stop.result()

    assert slow.returncode == 1, describe(slow)
    assert "whether it took effect is unknown" in slow.stderr, describe(slow)
    assert "container-list" in slow.stderr, describe(slow)
    assert "Lost the connection" not in slow.stderr, describe(slow)
    assert code == 1, d.log_tail()
    assert "POST /v1/containers/slow/stop of alice" in d.log_tail(), d.log_tail()
    # ds01d exits without waiting for Docker's stop (which would end with the SIGKILL at the
    # end of Docker's timeout), well within ds01d's default drain.
    assert stopped_after < DRAIN_SECONDS / 2, stopped_after

    d.start()  # Docker's stop is most likely still under way: the new ds01d sees it end
    key = docker_name("alice", "slow")
    end_the_stop(docker_client, key)
    wait_until(
        "Docker to end the stop", lambda: docker_view(docker_client)[key]["status"] == "exited"
    )
    assert_views_match_docker(d, docker_client)
