"""End to end: ``docker run --gpus N`` through ds01's Docker API door waits in ds01's GPU
queue when no GPU is free, its connection held until the container is made.

One simulated GPU; bob holds it. alice's ``docker run -d --gpus 1`` (Debian's docker.io
CLI, as alice, against a real ds01d and dockerd) joins the queue (``ds01 queue`` shows it)
and returns only once bob's container is gone and hers is made on the GPU (then started
by her ``docker run``, as Docker does). A ``docker run`` interrupted while it waits
withdraws its request: nothing is created for her later.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from typing import Any

from rawapi import container_problems, environment, user_slice
from test_docker_api import ONE_GPU_LIMITS

from support import (
    DEBIAN_DOCKER,
    TEST_IMAGES_YAML,
    describe,
    simulated_a100s,
    user_env,
    wait_for_loop_pass,
    wait_until,
)


def docker_in_background(d: Any, user: str, *args: str) -> subprocess.Popen[str]:
    """Debian's docker CLI as ``user`` against ``d``'s door, running on (a session of its
    own: the test may signal the whole command, runuser and docker)."""
    env = user_env(user, {"DOCKER_HOST": f"unix://{d.docker_socket}"})
    argv = ["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()]]
    return subprocess.Popen(
        [*argv, DEBIAN_DOCKER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        start_new_session=True,
    )


def ended(process: subprocess.Popen[str]) -> None:
    """Make sure a background command of the test is gone (its whole session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def queued_for(d: Any, user: str, container: str) -> list[dict[str, Any]]:
    return [e for e in d.cli_json(user, "queue") if e["container"] == container]


def alice_waits_behind_bob(
    ds01d: Any, name: str, *run_args: str
) -> tuple[Any, subprocess.Popen[str], dict[str, Any]]:
    """One simulated GPU, which bob's container ``holder`` holds; alice's ``docker run -d
    --name NAME --gpus 1 [run_args] busybox sleep 300`` in the background, once ``ds01
    queue`` shows its request waiting: the daemon, the run and its queue entry."""
    d = ds01d(
        resource_limits=ONE_GPU_LIMITS, gpu_config=simulated_a100s(1), images=TEST_IMAGES_YAML
    )
    d.cli_json("bob", "container-create", "holder", "--image", "busybox", "--gpus", "1", "--start")
    run = docker_in_background(
        d, "alice", "run", "-d", "--name", name, "--gpus", "1", *run_args, "busybox", "sleep", "300"
    )
    try:
        [entry] = wait_until("alice's run queued", lambda: queued_for(d, "alice", name))
    except BaseException:
        ended(run)
        raise
    return d, run, entry


def test_docker_run_waits_in_the_gpu_queue_until_its_gpu_is_free(
    ds01d: Any, docker_client: Any
) -> None:
    d, run, entry = alice_waits_behind_bob(ds01d, "job", "-e", "X=1")
    try:
        assert (entry["state"], entry["request"]) == ("waiting", "1 whole GPU"), entry
        assert run.poll() is None  # held, not refused
        status = d.cli_json("alice", "gpu-status")
        assert [g["holder"]["user"] for g in status if g["holder"]] == ["bob"], status

        assert d.cli("bob", "container-remove", "holder", "--force").returncode == 0
        out, err = run.communicate(timeout=60)
    finally:
        ended(run)
    assert run.returncode == 0, (out, err)
    container = docker_client.containers.get(out.strip())
    attrs = container.attrs
    assert container.status == "running", attrs["State"]
    assert container.name == f"job._.{attrs['Config']['Labels']['ds01.uid']}"
    labels = attrs["Config"]["Labels"]
    assert (labels["ds01.user"], labels["ds01.interface"]) == ("alice", "docker"), labels
    assert labels["ds01.request_id"] == entry["id"], labels
    status = d.cli_json("alice", "gpu-status")
    [gpu] = [g for g in status if g["holder"]]
    assert (gpu["holder"]["user"], gpu["holder"]["container"]) == ("alice", "job"), status
    env = environment(attrs)
    assert env["DS01_GPUS"] == gpu["uuid"] == labels["ds01.gpus"], env
    # Set explicitly, as on every create ("void": simulated GPUs reach no real runtime).
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "void", env
    assert env["X"] == "1"  # the client's own settings, as a direct create takes them
    alice = pwd.getpwnam("alice")
    problems = container_problems(
        attrs, alice, user_slice(docker_client, "users", "alice"),
        memory_limit=256 * 1024**2, nano_cpus_limit=10**9,
    )  # fmt: skip
    assert not problems, problems
    assert attrs["HostConfig"]["Memory"] == 256 * 1024**2  # her default, as a direct create
    [started] = d.events_where(action="queue.start", resource=f"queue/{entry['id']}")
    assert started["details"]["started"] is False, started  # created; her run started it
    assert d.cli_json("alice", "queue") == []


def test_an_interrupted_docker_run_withdraws_its_queued_create(
    ds01d: Any, docker_client: Any
) -> None:
    d, run, entry = alice_waits_behind_bob(ds01d, "gone")
    try:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
        run.communicate(timeout=30)
    finally:
        ended(run)
    assert run.returncode != 0
    wait_until("her request withdrawn", lambda: not queued_for(d, "alice", "gone"))
    [cancel] = wait_until(
        "the withdrawal audited",
        lambda: d.events_where(action="queue.cancel", resource=f"queue/{entry['id']}"),
    )
    assert "connection closed" in cancel["details"]["reason"], cancel

    assert d.cli("bob", "container-remove", "holder", "--force").returncode == 0
    wait_for_loop_pass(d, "queue")  # a pass after the GPU was freed made nothing for her
    mine = docker_client.containers.list(all=True, filters={"label": "ds01.user=alice"})
    assert mine == [], [c.name for c in mine]
    status = d.cli_json("alice", "gpu-status")
    assert not [g for g in status if g["holder"]], status
    assert not d.events_where(action="queue.start", resource=f"queue/{entry['id']}")
    listed = d.docker("alice", "ps", "-a", "-q")
    assert listed.returncode == 0 and listed.stdout == "", describe(listed)


def test_a_docker_run_waiting_when_ds01d_stops_is_told_and_withdrawn(
    ds01d: Any, docker_client: Any
) -> None:
    d, run, entry = alice_waits_behind_bob(ds01d, "late")
    try:
        assert d.stop(timeout=20) == 0, d.log_tail()
        out, err = run.communicate(timeout=30)
    finally:
        ended(run)
    assert run.returncode == 125 and "nothing was created" in err, (out, err)
    state = d.state_rows(f"SELECT state FROM queue WHERE id = '{entry['id']}'")
    assert state == ["cancelled"], state
    mine = docker_client.containers.list(all=True, filters={"label": "ds01.user=alice"})
    assert mine == [], [c.name for c in mine]
