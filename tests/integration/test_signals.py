"""The kernel counters idle detection reads, on real containers (cgroups and /proc).

A container made by ds01d for alice: its CPU time grows while a busy loop runs in it and
stands still otherwise, and traffic sent from the container shows in its network bytes.
(Sessions are ds01d's own terminals, not read from the container: see
``tests/e2e/test_bypass_notify.py``.)
"""

from __future__ import annotations

import time
from typing import Any

from ds01.daemon.limits_enforcement import record_parent
from ds01.runtime import procfs
from ds01.runtime.cgroups import CgroupManager, container_cgroup
from ds01.runtime.docker import DockerRuntime
from support import TEST_IMAGES_YAML, wait_until


def test_cpu_time_and_network_bytes_of_a_running_container(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "signals", "--image", "busybox", "--start")
    runtime = DockerRuntime(docker_client.api)
    record = runtime.find_managed(f"signals._.{unix_users['alice'].pw_uid}")
    assert record is not None
    driver = runtime.engine_info().cgroup_driver
    cgroups = CgroupManager(driver=driver)
    cgroup = container_cgroup(record_parent(record), record.id, driver)

    pids = cgroups.processes(cgroup)
    assert pids, "no processes read from the container's cgroup"
    idle_before = cgroups.cpu_seconds(cgroup)
    time.sleep(1.0)  # a measuring window: an idle shell uses no CPU over it
    idle_after = cgroups.cpu_seconds(cgroup)
    assert idle_before is not None and idle_after is not None
    assert idle_after - idle_before < 0.2, "an idle shell used CPU"

    container = docker_client.containers.get(record.id)
    container.exec_run(["sh", "-c", "timeout 2 sh -c 'while :; do :; done'"], detach=True)
    wait_until(
        "the busy loop's CPU time in the cgroup",
        lambda: (cgroups.cpu_seconds(cgroup) or 0.0) - idle_after > 0.5,
        timeout=10,
    )
    wait_until(
        "the busy loop to end",
        lambda: set(cgroups.processes(cgroup)) == set(pids),
        timeout=10,
    )

    sent_before = procfs.network_bytes(cgroups.processes(cgroup))
    gateway = container.attrs["NetworkSettings"]["Gateway"]
    # Connections to a closed port of the host: a few packets each, no privilege needed.
    probe = f"for i in 1 2 3; do nc -w 1 {gateway} 9 </dev/null; done; true"
    container.exec_run(["sh", "-c", probe])
    sent_after = procfs.network_bytes(cgroups.processes(cgroup))
    assert sent_before is not None and sent_after is not None
    assert sent_after - sent_before >= 3 * 54, "three connection attempts did not show"
