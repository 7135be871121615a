"""ObservedContainers on the real Docker engine: one list call until Docker reports a change,
and a container made or removed behind ds01d's back shows in the next list within moments.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ds01.daemon.observed import ObservedContainers
from ds01.model.labels import MANAGED
from ds01.runtime.docker import ContainerRecord, DockerRuntime


class Counting(DockerRuntime):
    """The real runtime, counting its list calls."""

    lists = 0

    def list_managed(self) -> list[ContainerRecord]:
        self.lists += 1
        return super().list_managed()


def names_soon(observed: ObservedContainers, present: bool, name: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (name in {r.docker_name for r in observed.list_managed()}) == present:
            return True
        time.sleep(0.05)
    return False


def test_lists_once_per_change(docker_client: Any, test_image: str) -> None:
    runtime = Counting(docker_client.api)
    observed = ObservedContainers(runtime)
    observed.start()
    name = f"observed-test-{os.getpid()}"
    try:
        deadline = time.monotonic() + 10
        while not observed._following and time.monotonic() < deadline:
            time.sleep(0.05)
        observed.list_managed()
        lists = runtime.lists
        for _ in range(5):
            observed.list_managed()
        assert runtime.lists == lists  # nothing changed: no Docker call

        container = docker_client.containers.create(
            test_image, ["sleep", "60"], name=name, labels={MANAGED: "true"}
        )
        assert names_soon(observed, True, name)
        container.remove(force=True)
        assert names_soon(observed, False, name)
        lists = runtime.lists
        observed.list_managed()
        assert runtime.lists == lists
    finally:
        observed.stop()
        for leftover in docker_client.containers.list(all=True, filters={"name": name}):
            leftover.remove(force=True)
