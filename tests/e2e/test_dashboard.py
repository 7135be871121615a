"""End to end: ``ds01-dashboard --once`` (and ``--json``) against a real ds01d, as real users.

alice and bob create containers on simulated GPUs (alice a whole GPU, bob a MIG slice),
alice has one without GPUs too, carol waits in the GPU queue, and the simulated telemetry
says alice's GPU is busy. Then the dashboard, as alice, shows every device, her
containers and not bob's container's name; as erin (an admin), everything. Each frame is
compared with the known state, read through the commands that already show it
(``gpu-status``, ``container-list --all``, ``ds01 queue --all``).
"""

from __future__ import annotations

import time
from typing import Any

from rawapi import RawApi

from ds01.gpu.simulated import write_simulated_telemetry
from support import TEST_IMAGES_YAML, describe

GPUS = """
    backend: simulated
    simulated:
      gpus:
        - {model: NVIDIA A100-SXM4-40GB}
        - {model: NVIDIA A100-SXM4-40GB}
        - model: NVIDIA A100-SXM4-40GB
          mig: true
          mig_instances: [{profile: 3g.20gb}, {profile: 1g.5gb}]
"""
LIMITS = """
    defaults:
      gpu_limit: 2
      max_gpus_per_container: 2
      max_containers: 4
      memory_limit: 1G
"""
SECRET = "bobs-secret-run"


def once(d: Any, user: str, *args: str) -> str:
    result = d.cli(user, "ds01-dashboard", "--once", *args)
    assert result.returncode == 0, describe(result)
    assert "\x1b" not in result.stdout  # not a terminal: no escape codes
    return str(result.stdout)


def overview(d: Any, user: str) -> dict[str, Any]:
    return dict(d.cli_json(user, "ds01-dashboard"))


def section(text: str, title: str) -> str:
    """The lines of the frame's section that starts with ``title``, up to the next blank."""
    start = text.index("\n" + title) + 1
    end = text.find("\n\n", start)
    return text[start : end if end != -1 else len(text)]


def queue_create(d: Any, user: str, name: str, gpus: int) -> None:
    with RawApi(d.paths.socket, user) as api:
        reply = api.call(
            "POST",
            "/v1/containers",
            {"name": name, "image": "busybox", "gpus": gpus, "queue": True},
        )
    assert reply.status == 202, reply


def test_the_dashboard_shows_the_machine_to_everyone_and_containers_to_their_owners(
    ds01d, unix_users
):
    d = ds01d(resource_limits=LIMITS, gpu_config=GPUS, images=TEST_IMAGES_YAML)
    for user, args in (
        ("alice", ("thesis", "--gpus", "1", "--start")),
        ("alice", ("notes",)),
        ("bob", (SECRET, "--mig", "3g.20gb", "--start")),
    ):
        made = d.cli(user, "container-create", *args, "--image", "busybox")
        assert made.returncode == 0, describe(made)
    queue_create(d, "carol", "big", 2)  # one whole GPU is free: carol waits

    devices = {g["uuid"]: g for g in d.cli_json("erin", "gpu-status")}
    containers = {c["name"]: c for c in d.cli_json("erin", "container-list", "--all")}
    thesis_gpu = containers["thesis"]["gpus"][0]
    write_simulated_telemetry(
        d.paths.simulated_telemetry_file,
        {thesis_gpu: {"gpu_util_percent": 73, "memory_used_mib": 2048, "process_count": 1}},
    )
    deadline = time.monotonic() + 10  # the queue's first pass places carol's request
    while not d.cli_json("erin", "queue", "--all")[0].get("position"):
        assert time.monotonic() < deadline, "carol's request was never placed"
        time.sleep(0.1)

    # -- alice: every device, her containers, bob's device by his name only ---------------
    mine = overview(d, "alice")
    assert (mine["user"], mine["scope"], mine["is_admin"]) == ("alice", "own", False)
    assert [x["uuid"] for x in mine["devices"]] == list(devices)
    holders = {x["uuid"]: x["holder"] for x in mine["devices"]}
    assert holders[thesis_gpu] == {"user": "alice", "container": "thesis", "borrowed": False}
    bobs = containers[SECRET]["gpus"][0]
    assert holders[bobs] == {"user": "bob", "container": None, "borrowed": False}
    busy = next(x for x in mine["devices"] if x["uuid"] == thesis_gpu)
    assert (busy["utilization_percent"], busy["memory_used_mib"]) == (73, 2048)
    assert sorted(c["name"] for c in mine["containers"]) == ["notes", "thesis"]
    by_name = {c["name"]: c for c in mine["containers"]}
    for name, shown in by_name.items():  # what container-list shows, field by field
        listed = containers[name]
        for key in ("status", "image", "gpus", "gpu_equivalents", "docker_name", "user"):
            assert shown[key] == listed[key], (name, key)
    assert by_name["thesis"]["gpu_utilization_percent"] == 73
    assert mine["queue"] == []
    assert [u["user"] for u in mine["users"]] == ["alice"]
    assert mine["users"][0]["gpu_equivalents"] == 1 and mine["users"][0]["containers"] == 2
    totals = mine["totals"]
    assert (totals["devices"], totals["devices_allocated"]) == (4, 2)
    assert abs(totals["gpu_equivalents_allocated"] - (1 + 3 / 7)) < 1e-3
    assert (totals["containers"], totals["containers_running"], totals["queued_requests"]) == (
        3, 2, 1,
    )  # fmt: skip

    text = once(d, "alice")
    assert SECRET not in text
    assert "bob/" not in text
    for uuid in devices:
        assert uuid[:12] in text
    device_lines = section(text, "Devices")
    assert "alice/thesis" in device_lines and "73%" in device_lines
    bob_line = next(line for line in device_lines.splitlines() if bobs[:12] in line)
    assert " bob " in bob_line
    assert "2/4 devices, 1.43/2.57 GPU-equivalents allocated" in text
    assert "3 containers on the machine, 2 running; GPU queue: 1 waiting" in text
    own = section(text, "Your containers")
    assert "thesis" in own and "notes" in own and "USER" not in own
    assert "Nothing waiting." in section(text, "GPU queue")
    assert "carol" not in text
    usage = section(text, "Usage against quota")
    assert "alice" in usage and "1/2" in usage and "2/4" in usage

    # -- bob: his own, alice's devices by her name ----------------------------------------
    text = once(d, "bob")
    assert SECRET in text and "thesis" not in text and "notes" not in text
    assert f"bob/{SECRET}" in text

    # -- erin (admin): everyone ------------------------------------------------------------
    everyone = overview(d, "erin")
    assert (everyone["scope"], everyone["is_admin"]) == ("all", True)
    assert sorted(c["name"] for c in everyone["containers"]) == sorted(containers)
    assert {x["uuid"]: x["holder"] for x in everyone["devices"]}[bobs] == {
        "user": "bob", "container": SECRET, "borrowed": False,
    }  # fmt: skip
    assert [q["container"] for q in everyone["queue"]] == ["big"]
    assert [u["user"] for u in everyone["users"]] == ["alice", "bob", "carol"]
    assert {u["user"]: u["queued"] for u in everyone["users"]}["carol"] == 1
    text = once(d, "erin")
    for name in containers:
        assert name in text
    assert "alice/thesis" in text and f"bob/{SECRET}" in text
    assert "carol" in section(text, "GPU queue") and "big" in section(text, "GPU queue")
    assert "Containers of every user: 3 (2 running" in text
    filtered = once(d, "erin", "--user", "bob", "--sort", "name")
    assert "Containers of bob: 1" in filtered and "thesis" not in section(
        filtered, "Containers of bob"
    )


def test_the_dashboard_says_when_ds01d_is_down(ds01d, unix_users):
    d = ds01d(images=TEST_IMAGES_YAML)
    assert once(d, "alice").startswith("ds01 dashboard: alice (user)")
    d.stop()
    result = d.cli("alice", "ds01-dashboard", "--once")
    assert result.returncode == 1, describe(result)
    assert "Cannot reach ds01d" in result.stderr and "Traceback" not in result.stderr
