"""The standard-library reads of ``ds01.runtime.engine_socket`` against the real engine.

ds01d's start reads Docker through them instead of docker-py: the same requests must give
the same answers (containers, networks, images), their events must arrive as Docker writes
them and end when closed from another thread, and their errors must read as docker-py's do.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from ds01.errors import DockerUnavailable, NotFound
from ds01.runtime.docker import ContainerEvent, DockerRuntime
from ds01.runtime.docker_errors import docker_errors
from support import TEST_IMAGE, wait_until


@pytest.fixture
def labelled(docker_client: Any) -> Any:
    """Two containers (never started) with a label of this test's own."""
    label = f"ds01test.engine={uuid.uuid4().hex[:12]}"
    key, value = label.split("=")
    made = [
        docker_client.api.create_container(TEST_IMAGE, ["true"], labels={key: value})["Id"]
        for _ in range(2)
    ]
    yield label, made
    for container in made:
        docker_client.api.remove_container(container, force=True)


def test_lists_are_docker_pys(docker_client: Any, labelled: Any) -> None:
    label, made = labelled
    engine = DockerRuntime.from_env().engine
    filters = {"label": label}
    listed = engine.get("/containers/json", filters=filters, all=1)
    assert sorted(c["Id"] for c in listed) == sorted(made)
    assert listed == docker_client.api.containers(all=True, filters=filters)
    assert engine.get("/networks", filters={"label": ["com.docker.network.x"]}) == (
        docker_client.api.networks(filters={"label": "com.docker.network.x"})
    )
    assert {i["Id"] for i in engine.get("/images/json")} == {
        i["Id"] for i in docker_client.api.images()
    }


def test_events_arrive_and_a_close_from_another_thread_ends_them(docker_client: Any) -> None:
    runtime = DockerRuntime.from_env()
    stream = runtime.container_events(("create", "destroy"), since=time.time() - 1)
    seen: list[ContainerEvent] = []
    ended = threading.Event()

    def read() -> None:
        seen.extend(stream)
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    # The stream follows managed containers: this one is removed at once (not started).
    name = f"ds01test-engine-{uuid.uuid4().hex[:12]}"
    made = docker_client.api.create_container(
        TEST_IMAGE, ["true"], name=name, labels={"ds01.managed": "true"}
    )["Id"]
    docker_client.api.remove_container(made, force=True)
    wait_until(
        "the create and destroy events",
        lambda: {(e.action, e.container_id) for e in seen} >= {("create", made), ("destroy", made)},
    )
    stream.close()
    assert ended.wait(10), "the stream did not end when closed"


def test_errors_read_as_docker_pys() -> None:
    runtime = DockerRuntime.from_env()
    missing = f"ds01test-missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(NotFound, match="No such container"), docker_errors("reading it"):
        runtime.engine.get(f"/containers/{missing}/json")
    runtime.engine.path = "/nonexistent/docker.sock"
    with pytest.raises(DockerUnavailable, match="not running or not answering"):
        runtime.list_managed()


def test_a_create_and_a_remove_sent_as_json_are_dockers(docker_client: Any) -> None:
    # The storage probe's requests (``DockerRuntime.probe_storage_size``), before ds01d serves.
    engine = DockerRuntime.from_env().engine
    name = f"ds01test-send-{uuid.uuid4().hex[:12]}"
    spec = {"Image": TEST_IMAGE, "Cmd": ["true"], "Labels": {"ds01test.send": "1"}}
    created = engine.send("POST", "/containers/create", body=spec, name=name)
    try:
        inspected = docker_client.api.inspect_container(created["Id"])
        assert (inspected["Name"], inspected["Config"]["Cmd"]) == (f"/{name}", ["true"])
        assert inspected["Config"]["Labels"]["ds01test.send"] == "1"
    finally:
        assert engine.send("DELETE", f"/containers/{created['Id']}", force=1, v=1) is None
    assert docker_client.api.containers(all=True, filters={"name": name}) == []
