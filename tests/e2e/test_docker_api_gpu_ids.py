"""End to end: ``docker run --gpus device=…`` through ds01's Docker API door gets exactly the
devices named, through ds01's allocator, or is refused at once (never queued, never given
others).

Two simulated GPUs; bob holds GPU 0 (``container-create --gpus 1``). Debian's docker.io CLI
as alice, against a real ds01d and dockerd: ``--gpus device=<bob's GPU UUID>`` is refused
(exit 125, ds01's message naming bob as its holder) and nothing is created, nothing queued;
``--gpus '"device=0,1"'`` is over her limit of one GPU and refused; ``--gpus device=7``
names no device and is refused with the ids she can name; ``--gpus device=1`` gets GPU 1
(``gpu-status`` shows its UUID hers, the container's ``ds01.gpus`` label says it).
"""

from __future__ import annotations

from typing import Any

from test_docker_api import ONE_GPU_LIMITS, gpus_held

from ds01.model.labels import GPUS as GPUS_LABEL
from ds01.model.labels import USER
from support import TEST_IMAGES_YAML, describe, simulated_a100s

IMAGE = "ds01-test/busybox:latest"


def alices_containers(docker_client: Any) -> list[str]:
    """Every container of alice's in Docker (whatever made it)."""
    return [
        c.name for c in docker_client.containers.list(all=True) if c.labels.get(USER) == "alice"
    ]


def refused(d: Any, docker_client: Any, device: str, *words: str) -> None:
    """alice's ``docker run -d --gpus device=DEVICE`` is refused at once with ds01's message
    (each of ``words`` in it); nothing of hers is made, nothing waits in the queue."""
    before = alices_containers(docker_client)
    run = d.docker("alice", "run", "-d", "--name", "named", "--gpus", device, IMAGE, "sleep", "300")
    assert run.returncode == 125, describe(run)
    for word in words:
        assert word in run.stderr, describe(run)
    assert alices_containers(docker_client) == before
    assert d.docker("alice", "ps", "-aq").stdout.strip() == ""
    assert d.cli_json("alice", "queue") == []


def test_docker_run_gets_exactly_the_gpus_it_names_or_is_refused(
    ds01d: Any, docker_client: Any
) -> None:
    d = ds01d(
        resource_limits=ONE_GPU_LIMITS, gpu_config=simulated_a100s(2), images=TEST_IMAGES_YAML
    )
    d.cli_json("bob", "container-create", "holder", "--image", "busybox", "--gpus", "1", "--start")
    status = {g["gpu_index"]: g for g in d.cli_json("alice", "gpu-status")}
    bobs = status[0]
    assert bobs["holder"]["user"] == "bob", status

    refused(d, docker_client, f"device={bobs['uuid']}", f"({bobs['uuid']}) is held by", "bob")
    refused(d, docker_client, '"device=0,1"', "needs 2.0 GPU-equivalents", "at most 1.0")
    refused(d, docker_client, "device=7", "no device '7'", "Devices you can name: 0, 1")

    run = d.docker(
        "alice", "run", "-d", "--name", "one", "--gpus", "device=1", IMAGE, "sleep", "300"
    )
    assert run.returncode == 0, describe(run)
    held = gpus_held(d, "alice")
    assert held == {"one": status[1]["uuid"]}, held
    container = docker_client.containers.get(run.stdout.strip())
    assert container.status == "running"
    assert container.labels[GPUS_LABEL] == status[1]["uuid"]
    assert gpus_held(d, "bob") == {"holder": bobs["uuid"]}
