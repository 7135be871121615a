"""End to end: ds01d crashes (``kill -9``) while creates are in flight, and restarts.

Ten ``container-create`` requests from four users run at once; the daemon is killed at
different moments: before any request arrives, right after a create was logged (its reply
not yet sent), and while a create is inside Docker (its intent recorded in ds01d's state
store, read here only to time the kill). After the restart:

- every create confirmed to a client (exit 0) has its container;
- every container the crash left behind is either kept whole or rolled back (and the
  rollback is in the event log): the daemon rolls back each create whose intent was still
  open. A create whose intent was closed in the last instant before its reply was written
  is kept although its client saw "lost the connection": a complete container the user
  finds in ``container-list``, never a half-made one;
- no device is held twice, ds01's views agree with Docker, and every request that failed
  can be retried: nothing leaked.

A graceful restart (SIGTERM) keeps every container, its state and its devices.
"""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from ds01.runtime.docker_errors import DOCKER_SOCKET
from support import (
    MANY_CREATES_LIMITS,
    TEST_IMAGES_YAML,
    assert_views_match_docker,
    describe,
    docker_name,
    docker_view,
)

LIMITS = MANY_CREATES_LIMITS

# Ten requests that together fit the embedded default's 7 devices exactly (3 whole GPUs,
# MIG 3g.20gb + 2g.10gb + 1g.5gb + 1g.5gb) plus three containers without a GPU.
REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("alice", "a-gpu1", ("--gpus", "1")),
    ("bob", "b-gpu", ("--gpus", "1")),
    ("carol", "c-small1", ("--mig", "1g.5gb")),
    ("dave", "d-cpu", ()),
    ("alice", "a-gpu2", ("--gpus", "1")),
    ("bob", "b-mig", ("--mig", "2g.10gb")),
    ("carol", "c-small2", ("--mig", "1g.5gb")),
    ("alice", "a-mig", ("--mig", "3g.20gb")),
    ("bob", "b-cpu", ()),
    ("carol", "c-cpu", ()),
]
TOTAL_DEVICES = 7

# When ds01d is killed: before any request arrives; right after the n-th create was
# confirmed (its reply may not have reached the client yet); while the n-th create is
# inside Docker (its intent recorded, the container not yet confirmed).
MOMENTS = [
    "0.15s-after-launch",
    "right-after-create-1",
    "right-after-create-2",
    "right-after-create-3",
    "right-after-create-5",
    "right-after-create-7",
    "inside-create-1",
    "inside-create-4",
    "inside-create-7",
]


# --- helpers -------------------------------------------------------------------------------


def create(d: Any, user: str, name: str, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    return d.cli(user, "container-create", name, "--image", "busybox", *args, timeout=120)


def launch_creates(d: Any, pool: ThreadPoolExecutor) -> list[Future]:
    return [pool.submit(create, d, user, name, args) for user, name, args in REQUESTS]


def confirmed_creates(d: Any) -> int:
    """How many creates the daemon has confirmed in its event log (a create's first
    success event, ``gpu.allocate`` or ``container.create``, is written once it is done)."""
    return len(
        {
            e["resource"]
            for e in d.events()
            if e["action"] in ("gpu.allocate", "container.create") and e["outcome"] == "success"
        }
    )


def wait_for_confirmed_creates(d: Any, count: int, timeout: float = 30.0) -> None:
    """Return as soon as ``count`` creates were confirmed in the event log."""
    deadline = time.monotonic() + timeout
    while confirmed_creates(d) < count:
        assert time.monotonic() < deadline, f"only saw {d.events()}"
        time.sleep(0.0005)


def open_create_intents(d: Any) -> int:
    """How many creates ds01d has recorded as begun and not yet finished (its state store)."""
    return int(d.state_value("SELECT count(*) FROM create_intents") or 0)


def wait_for_open_create_intent(d: Any, timeout: float = 30.0) -> None:
    """Return as soon as a create is between "intent recorded" and "container made"."""
    deadline = time.monotonic() + timeout
    while open_create_intents(d) == 0:
        assert time.monotonic() < deadline, f"no create was ever in flight: {d.events()}"
        time.sleep(0.001)


#: Seconds to wait at most for dockerd to finish the creates a killed ds01d had begun: on a
#: slow machine one may show a second or more after the kill.
SENT_CREATE_WAIT_S = 5.0


def engine_requests_of_the_dead() -> int:
    """Connections to dockerd's socket that dockerd has not accepted yet (its listener's
    queue), and those it holds whose client is gone (``ss`` shows their peer as 0): each
    may carry a request of a dead client that dockerd has still to handle (an idle one it
    closes at once). The connections of a killed ds01d are among them until dockerd is done
    with what ds01d had sent."""
    listed = subprocess.run(
        ["ss", "-x", "-a", "-n", "src", DOCKER_SOCKET], capture_output=True, text=True, check=True
    )
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    queued = sum(int(row[2]) for row in rows if row[1] == "LISTEN")
    return queued + sum(1 for row in rows if row[1] == "ESTAB" and row[-1] == "0")


def wait_for_sent_creates(
    d: Any, docker_client: Any, timeout: float = SENT_CREATE_WAIT_S
) -> set[str]:
    """After a kill -9: the Docker names of ds01's containers once Docker has settled.

    A create the daemon had sent either finishes or, when dockerd sees its client gone,
    is cancelled and removed again; one it had not sent never shows. So wait until every
    begun create (an open intent in the store) is present, or dockerd holds no request of a
    dead client (it is done with all ds01d had sent), or ``timeout`` seconds passed; then
    until two lists 0.2 s apart agree."""
    begun = set(d.state_rows("SELECT docker_name FROM create_intents"))
    began = time.monotonic()
    while (
        not (shown := begun <= set(docker_view(docker_client)))
        and (pending := engine_requests_of_the_dead())
        and time.monotonic() < began + timeout
    ):
        time.sleep(0.01)
    why = "every begun create shown" if shown else "timeout" if pending else "dockerd done"
    print(f"waited {time.monotonic() - began:.2f} s for Docker ({why})")
    settled = set(docker_view(docker_client))
    for _ in range(50):
        time.sleep(0.2)
        if (now := set(docker_view(docker_client))) == settled:
            return settled
        settled = now
    raise AssertionError(f"Docker's container list did not settle: {settled}")


def wait_for_moment(d: Any, moment: str) -> None:
    """Block until the moment of the crash scenario ``moment`` (see MOMENTS)."""
    if moment == "0.15s-after-launch":
        time.sleep(0.15)  # the scenario is a crash at a moment no event marks
    elif moment.startswith("right-after-create-"):
        wait_for_confirmed_creates(d, int(moment.rsplit("-", 1)[1]))
    elif moment.startswith("inside-create-"):
        wait_for_confirmed_creates(d, int(moment.rsplit("-", 1)[1]) - 1)
        wait_for_open_create_intent(d)
        time.sleep(0.005)  # let the Docker create call get under way
    else:
        raise AssertionError(f"unknown moment {moment}")


# --- crash while creating --------------------------------------------------------------------


@pytest.mark.parametrize("moment", MOMENTS)
def test_kill_9_during_creates_leaves_exactly_the_confirmed_containers(
    ds01d, docker_client, moment
):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    with ThreadPoolExecutor(max_workers=len(REQUESTS)) as pool:
        futures = launch_creates(d, pool)
        wait_for_moment(d, moment)
        d.kill(signal.SIGKILL)
        results = [f.result() for f in futures]

    for result in results:
        assert result.returncode in (0, 1), describe(result)
        if result.returncode == 1:
            assert "ds01d" in result.stderr, describe(result)
    confirmed = {
        docker_name(user, name)
        for (user, name, _), result in zip(REQUESTS, results, strict=True)
        if result.returncode == 0
    }
    left_by_the_crash = wait_for_sent_creates(d, docker_client)

    d.restart()

    docker = assert_views_match_docker(d, docker_client)
    # No confirmed create is lost.
    assert confirmed <= set(docker), (confirmed, left_by_the_crash, d.log_tail())
    # What the daemon removed at start-up, it logged as rolled back; the rest it kept whole.
    rolled_back = {
        e["resource"].removeprefix("container/")
        for e in d.events_where(action="container.create", outcome="rolled_back")
    }
    assert not rolled_back & confirmed, d.events()
    assert set(docker) | rolled_back == left_by_the_crash, (docker, rolled_back, d.events())
    assert not set(docker) & rolled_back
    for event in d.events_where(outcome="rolled_back"):
        assert {"ts", "user", "action", "resource", "details", "outcome"} <= set(event)

    # Nothing leaked: every request that failed, and whose container is not there, fits
    # when sent again.
    for (user, name, args), result in zip(REQUESTS, results, strict=True):
        if result.returncode != 0 and docker_name(user, name) not in docker:
            retry = create(d, user, name, args)
            assert retry.returncode == 0, describe(retry)
    docker = assert_views_match_docker(d, docker_client)
    assert set(docker) == {docker_name(user, name) for user, name, _ in REQUESTS}
    assert sum(len(c["gpus"]) for c in docker.values()) == TOTAL_DEVICES


# --- graceful restart ----------------------------------------------------------------------


def test_graceful_restart_keeps_containers_devices_and_uuids(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    for user, name, args in (REQUESTS[i] for i in (0, 1, 2, 3, 5)):
        # two whole GPUs, two MIG slices, one container without a GPU
        result = create(d, user, name, args)
        assert result.returncode == 0, describe(result)
    for user, name in (("alice", "a-gpu1"), ("carol", "c-small1"), ("dave", "d-cpu")):
        started = d.cli(user, "container-start", name)
        assert started.returncode == 0, describe(started)
    all_devices = [dev["uuid"] for dev in d.cli_json(None, "gpu-status")]
    before = assert_views_match_docker(d, docker_client)
    limits_before = d.cli_json("alice", "check-limits")["usage"]

    d.kill(signal.SIGTERM)
    assert not d.running and not d.paths.socket.exists()  # a clean exit removes the socket
    d.restart()

    after = assert_views_match_docker(d, docker_client)
    assert after == before  # same containers (same ids), same state, same devices
    assert [dev["uuid"] for dev in d.cli_json(None, "gpu-status")] == all_devices
    assert d.cli_json("alice", "check-limits")["usage"] == limits_before
    assert not d.events_where(outcome="rolled_back")

    # The restarted daemon still sees the held devices: one whole GPU is left, not two.
    free_gpu = create(d, "erin", "e-gpu1", ("--gpus", "1"))
    assert free_gpu.returncode == 0, describe(free_gpu)
    no_more = create(d, "erin", "e-gpu2", ("--gpus", "1", "--no-wait"))
    assert no_more.returncode == 3, describe(no_more)
    assert_views_match_docker(d, docker_client)
    stop = d.cli("alice", "container-stop", "a-gpu1")
    assert stop.returncode == 0, describe(stop)
    assert docker_view(docker_client)[docker_name("alice", "a-gpu1")]["status"] == "exited"
