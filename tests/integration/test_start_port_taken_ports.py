"""Docker's refusal of a start whose host port is taken, as ds01 reports it.

ds01d checks a container's fixed host ports before it starts it; a process that takes the
port between that check and Docker's start makes Docker refuse the start itself. That
refusal must become the same clear error (``PortInUse``: exit 3, the port named), not a
generic Docker failure.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from ds01.errors import PortInUse
from ds01.exitcodes import ExitCode
from ds01.model import labels as L
from ds01.runtime.docker import ContainerSpec, DockerRuntime
from support import TEST_IMAGE

NAME = "port-taken._.0"


@pytest.fixture
def runtime(docker_client: Any) -> Iterator[DockerRuntime]:
    yield DockerRuntime(docker_client.api)
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.api.remove_container(NAME, force=True)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a process of this machine listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield int(listener.getsockname()[1])


def test_a_host_port_taken_at_start_is_a_port_in_use_refusal(
    runtime: DockerRuntime, held_port: int, test_image: str
) -> None:
    runtime.create(
        ContainerSpec(
            docker_name=NAME,
            image=TEST_IMAGE,
            user="65534:65534",
            hostname="port-taken",
            labels={L.MANAGED: "true"},
            environment={},
            mounts=(),
            cgroup_parent="",
            ports=((8888, held_port),),
            working_dir="/",
        )
    )
    with pytest.raises(PortInUse) as refused:
        runtime.start(NAME)
    assert refused.value.port == held_port
    assert refused.value.exit_code == ExitCode.QUOTA
    assert f"port {held_port} on 127.0.0.1 is in use" in refused.value.message
