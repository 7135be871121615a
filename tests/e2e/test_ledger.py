"""End to end: ds01d's container ledger against the real engine.

ds01d lists Docker's containers once at start and then follows Docker's events. These tests
take events away from it and check that it never gives a device twice and that its view
converges to Docker's labels:

- one full list at start (counted by a ds01d whose Docker adapter notes each list call);
- a container removed behind ds01d's back (``docker rm -f``): its device is free once
  ds01d sees the ``destroy``, and creates racing with such removals never share a device;
- dockerd restarted while ds01d runs: while Docker is away no read answers from memory,
  and once it is back (with creates and removals racing with the reconnect) ds01d's view
  is Docker's again, without a restart of ds01d.

The dockerd restart runs under the machine lock every docker/e2e session holds, and dockerd
is started again in a ``finally``.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from support import (
    BIN_DIR,
    MANY_CREATES_LIMITS,
    TEST_IMAGES_YAML,
    Ds01Daemon,
    assert_views_match_docker,
    describe,
    docker_name,
    docker_view,
    restart_docker,
    stop_docker,
    wait_until,
)

# ds01d with every full Docker list noted in the file $DS01_TEST_LISTS.
COUNTING_DS01D = """
import os, sys
from ds01.runtime.docker import DockerRuntime
listed = DockerRuntime.list_managed
def noted(self):
    with open(os.environ["DS01_TEST_LISTS"], "a") as out:
        out.write("list\\n")
    return listed(self)
DockerRuntime.list_managed = noted
from ds01.daemon.main import main
main(sys.argv[1:])
"""


def create(d: Ds01Daemon, user: str, name: str) -> subprocess.CompletedProcess[str]:
    return d.cli(user, "container-create", name, "--image", "busybox", "--gpus", "1", "--no-wait")


def rm_behind_ds01d(user: str, name: str) -> None:
    subprocess.run(["docker", "rm", "-f", docker_name(user, name)], capture_output=True, check=True)


def no_device_twice(docker_client: Any) -> None:
    held = Counter(u for c in docker_view(docker_client).values() for u in c["gpus"])
    assert all(n == 1 for n in held.values()), held


def converged(d: Ds01Daemon, docker_client: Any) -> bool:
    """ds01d's view (gpu-status, container-list --all, with states) is Docker's."""
    try:
        docker = assert_views_match_docker(d, docker_client)
    except AssertionError:
        return False
    listed = {c["docker_name"]: c["status"] for c in d.cli_json(None, "container-list", "--all")}
    running = {name for name, c in docker.items() if c["status"] == "running"}
    return {name for name, status in listed.items() if status == "running"} == running


def test_ds01d_lists_docker_once_at_start(
    ds01d: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists = tmp_path / "lists"
    lists.touch()
    lists.chmod(0o666)
    plain = Ds01Daemon.command.fget
    assert plain is not None
    monkeypatch.setattr(
        Ds01Daemon,
        "command",
        property(lambda self: [str(BIN_DIR / "python"), "-c", COUNTING_DS01D, *plain(self)[1:]]),
    )
    d = ds01d(MANY_CREATES_LIMITS, images=TEST_IMAGES_YAML, env={"DS01_TEST_LISTS": str(lists)})
    made = create(d, "alice", "one")
    assert made.returncode == 0, describe(made)
    assert [c["name"] for c in d.cli_json("alice", "container-list")] == ["one"]
    d.kill()
    lists.write_text("")
    d.restart()  # with a container to find this time
    assert [c["name"] for c in d.cli_json("alice", "container-list")] == ["one"]
    assert d.cli_json(None, "gpu-status")
    assert lists.read_text().count("list") == 1, d.log_tail()


def test_removed_behind_its_back_and_dockerd_restarted_no_device_twice(
    ds01d: Any, docker_client: Any
) -> None:
    d = ds01d(MANY_CREATES_LIMITS, images=TEST_IMAGES_YAML)
    for user, name in (("alice", "a1"), ("alice", "a2"), ("bob", "b1")):
        made = create(d, user, name)
        assert made.returncode == 0, describe(made)
    full = create(d, "bob", "b2")
    assert full.returncode == 3, describe(full)  # every whole GPU is held
    started = d.cli("alice", "container-start", "a1")
    assert started.returncode == 0, describe(started)

    # Removed behind ds01d's back: its device is free once ds01d has seen the destroy.
    gone = docker_view(docker_client)[docker_name("alice", "a2")]["gpus"]
    rm_behind_ds01d("alice", "a2")
    wait_until(
        "ds01d to free the removed container's device",
        lambda: all(
            dev["holder"] is None for dev in d.cli_json(None, "gpu-status") if dev["uuid"] in gone
        ),
        timeout=10,
    )
    made = create(d, "bob", "b2")
    assert made.returncode == 0, describe(made)
    assert docker_view(docker_client)[docker_name("bob", "b2")]["gpus"] == gone

    # Creates racing with removals behind ds01d's back.
    with ThreadPoolExecutor(6) as pool:
        creates = [pool.submit(create, d, "carol", f"c{i}") for i in range(4)]
        removals = [pool.submit(rm_behind_ds01d, "bob", name) for name in ("b1", "b2")]
        for removal in removals:
            removal.result()
        results = [c.result() for c in creates]
    assert all(r.returncode in (0, 3) for r in results), [describe(r) for r in results]
    no_device_twice(docker_client)
    wait_until("ds01d's view to converge", lambda: converged(d, docker_client), timeout=20)

    # dockerd restarted while ds01d runs: no answer from a ledger that cannot follow Docker.
    pid = d.pid
    try:
        stop_docker()
        wait_until(
            "reads to go to Docker (and fail) while it is away",
            lambda: d.cli("alice", "container-list").returncode == 1,
            timeout=10,
        )
        down = create(d, "dave", "while-down")
        assert down.returncode == 1, describe(down)
    finally:
        restart_docker()
    # Creates and a removal behind its back race with ds01d's reconnect and reconcile.
    free = [n for n in ("c0", "c1", "c2", "c3") if docker_name("carol", n) in docker_view(
        docker_client)]  # fmt: skip
    with ThreadPoolExecutor(4) as pool:
        creates = [pool.submit(create, d, "dave", f"d{i}") for i in range(3)]
        if free:
            pool.submit(rm_behind_ds01d, "carol", free[0]).result()
        results = [c.result() for c in creates]
    assert all(r.returncode in (0, 1, 3) for r in results), [describe(r) for r in results]
    no_device_twice(docker_client)
    wait_until("ds01d's view to converge", lambda: converged(d, docker_client), timeout=60)
    assert d.running and d.pid == pid  # the same ds01d throughout
    # Once converged, every whole GPU free in Docker's labels can be given, and only those.
    held = {u for c in docker_view(docker_client).values() for u in c["gpus"]}
    whole = [dev["uuid"] for dev in d.cli_json(None, "gpu-status") if dev["uuid"].startswith("GPU")]
    free_whole = [u for u in whole if u not in held]
    for i in range(len(free_whole)):
        made = create(d, "erin", f"e{i}")
        assert made.returncode == 0, describe(made)
    assert create(d, "erin", "one-too-many").returncode == 3
    no_device_twice(docker_client)
    assert converged(d, docker_client)
