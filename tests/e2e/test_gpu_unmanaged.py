"""End to end: ds01d finds GPU use outside its allocation. The simulated backend declares two
processes on a GPU nobody holds: a real host process (a ``sleep`` run as carol, in no
container) and the init process of alice's running ds01 container, which holds another GPU.
Both are found through their real ``/proc/<pid>/cgroup``: shown by ``gpu-status --json``
(container names only to whom they belong), logged once each as ``gpu.unmanaged_use``, and
counted by ``ds01_gpu_unmanaged_processes``."""

from __future__ import annotations

import subprocess
import urllib.request
from typing import Any

from ds01.gpu.simulated import write_simulated_processes
from support import (
    TEST_IMAGES_YAML,
    describe,
    docker_name,
    free_port,
    simulated_a100s,
    wait_for_loop_pass,
    wait_until,
)

TWO_GPUS = simulated_a100s(2)


def test_host_processes_and_containers_off_their_gpu_are_flagged(
    ds01d: Any, unix_users: Any, docker_client: Any
) -> None:
    port = free_port()
    d = ds01d(
        gpu_config=TWO_GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=["--gpu-use-interval", "0.2", "--metrics-listen", f"127.0.0.1:{port}"],
    )
    created = d.cli("alice", "container-create", "train", "--image", "busybox", "--gpus", "1",
                    "--start")  # fmt: skip
    assert created.returncode == 0, describe(created)
    devices = {dev["uuid"]: dev for dev in d.cli_json(None, "gpu-status")}
    [held] = [u for u, dev in devices.items() if dev["holder"]]
    [free] = [u for u in devices if u != held]
    container = docker_client.containers.get(docker_name("alice", "train"))
    in_container = int(container.attrs["State"]["Pid"])
    shell = subprocess.Popen(["runuser", "-u", "carol", "--", "sleep", "300"])
    try:
        host = wait_until("carol's sleep", lambda: _child_of(shell.pid, "sleep"))
        # alice's container on its own GPU is fine; on the free GPU it is not.
        write_simulated_processes(
            d.paths.simulated_process_file, {held: [in_container], free: [host, in_container]}
        )

        def flagged() -> list[dict[str, Any]]:
            [device] = [dev for dev in d.cli_json(None, "gpu-status") if dev["uuid"] == free]
            return device["unmanaged"] if len(device["unmanaged"]) == 2 else []

        unmanaged = wait_until("both processes in gpu-status", flagged, timeout=15)
        assert sorted(unmanaged, key=lambda p: p["pid"]) == sorted(
            [
                {"pid": host, "user": "carol", "container": None, "reason": "host"},
                {"pid": in_container, "user": "alice", "container": "train", "reason": "not-held"},
            ],
            key=lambda p: p["pid"],
        )
        [held_device] = [dev for dev in d.cli_json(None, "gpu-status") if dev["uuid"] == held]
        assert held_device["unmanaged"] == []
        # bob sees that alice's container is there, not its name.
        [seen] = [dev for dev in d.cli_json("bob", "gpu-status") if dev["uuid"] == free]
        assert {p["container"] for p in seen["unmanaged"]} == {None}
        text = d.cli("alice", "gpu-status")
        assert "a host process, in no container" in text.stderr, describe(text)

        wait_for_loop_pass(d, "gpu-use")  # more passes: still one event per process
        events = d.events_where(action="gpu.unmanaged_use")
        assert sorted((e["user"], e["details"]["pid"], e["resource"]) for e in events) == sorted(
            [("carol", host, f"gpu/{free}"), ("alice", in_container, f"gpu/{free}")]
        )
        assert events[0]["details"]["reason"] in ("host", "not-held")
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
        lines = exposition.read().decode().splitlines()
        assert f'ds01_gpu_unmanaged_processes{{gpu="{free}"}} 2.0' in lines
        assert f'ds01_gpu_unmanaged_processes{{gpu="{held}"}} 0.0' in lines
    finally:
        shell.kill()
        shell.wait()


def _child_of(pid: int, name: str) -> int | None:
    """The pid of ``pid``'s child called ``name`` (runuser forks it), once it exists."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            for child in children.read().split():
                with open(f"/proc/{child}/comm") as comm:
                    if comm.read().strip() == name:
                        return int(child)
    except OSError:
        return None
    return None
