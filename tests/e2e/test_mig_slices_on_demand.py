"""End to end: MIG slices made on demand (``mig_layout: {1: dynamic}``) on the simulated
backend, which enforces the A100's placement rules and refuses to destroy a slice a process
runs on, as NVML does.

GPU 1 is in MIG mode with no instance. alice and bob each ask for a 3g.20gb: each gets a
slice made for it (``gpu-status`` marks it ``on_demand``), and the two take all 8 memory
slices, so carol's 1g.5gb fragments: it waits in the queue. alice's slice, once free, is
too large for carol's quota: it is destroyed and the queue makes carol a 1g.5gb there.
bob removes his container while a process still runs on his slice: the destroy is refused
and retried, nobody is told of an error; once the process is gone the slice is destroyed
(keep time 0). A ``--mig 3g.20gb`` reservation when no such instance exists keeps a slot on
GPU 1; at its start the slice is made and the reservation keeps it. A container on a slice
made before such a reservation, over its slot's place, is warned at the lead time and
stopped at the start; its slice is destroyed at once and the slot's slice made there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rawapi import RawApi

from ds01.gpu.simulated import write_simulated_telemetry
from support import (
    TEST_IMAGES_YAML,
    describe,
    docker_name,
    wait_for_drain,
    wait_for_loop_pass,
    wait_until,
)

GPUS = """
    backend: simulated
    mig_on_demand_keep_seconds: 0
    simulated:
      gpus:
        - {model: NVIDIA A100-SXM4-40GB}
        - {model: NVIDIA A100-SXM4-40GB, mig: true}
    mig_layout:
      1: dynamic
"""

# carol may hold 0.2 GPU-equivalents: a 1g.5gb (1/7), never a 3g.20gb (3/7).
LIMITS = """
    defaults:
      gpu_limit: 1
      max_containers: 2
    users:
      carol: {gpu_limit: 0.2}
"""


def started(d: Any, request_id: str) -> list[dict[str, Any]]:
    return d.events_where(action="queue.start", resource=f"queue/{request_id}")


def slices(d: Any) -> list[dict[str, Any]]:
    return [g for g in d.cli_json("erin", "gpu-status") if g["gpu_index"] == 1]


def reserve_a_slot(d: Any, seconds: float) -> tuple[dict[str, Any], datetime]:
    """alice's reservation of a 3g.20gb for an hour from ``seconds`` ahead, which keeps a
    slot on GPU 1 (no such instance exists), and its start (local, naive)."""
    start = datetime.now().replace(microsecond=0) + timedelta(seconds=seconds)
    made = d.cli_json(
        "alice", "reserve", "--mig", "3g.20gb", "--from", start.strftime("%Y-%m-%d %H:%M:%S"),
        "--hours", "1",
    )  # fmt: skip
    [slot] = made["devices"]
    assert slot.startswith("MIG-slot-"), made
    return made, start


def slot_made(d: Any, reservation: str) -> str:
    """The slice made for ``reservation``'s slot at its start (``reservation.remap``,
    ``made``), waited for."""
    remap = wait_until(
        "the slot's slice made at the start",
        lambda: d.events_where(action="reservation.remap", resource=f"reservation/{reservation}"),
        timeout=10,
    )[0]
    assert remap["details"]["made"] is True
    [uuid] = remap["details"]["devices"]
    return str(uuid)


def test_slices_are_made_for_requests_destroyed_once_free_and_a_fragmenting_one_waits(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(
        resource_limits=LIMITS,
        gpu_config=GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.5"),
    )
    assert slices(d) == []
    empty = d.cli("carol", "gpu-status")  # MIG on and no instance, but slices can be made
    assert empty.returncode == 0 and "unusable" not in empty.stdout, describe(empty)

    for user in ("alice", "bob"):
        made = d.cli(user, "container-create", "nb", "--image", "busybox", "--mig", "3g.20gb")
        assert made.returncode == 0, describe(made)

    shown = slices(d)
    assert [(g["kind"], g["profile"], g["on_demand"]) for g in shown] == [
        ("mig", "3g.20gb", True)
    ] * 2
    assert {g["holder"]["user"] for g in shown} == {"alice", "bob"}
    table = d.cli("carol", "gpu-status")
    assert table.stdout.count("3g.20gb (on demand)") == 2, describe(table)
    created = d.events_where(action="gpu.mig_create")
    assert sorted(e["details"]["start"] for e in created) == [0, 4]
    # Two 3g.20gb take every memory slice: a 1g.5gb fits nowhere, so carol waits.
    with RawApi(d.paths.socket, "carol") as api:
        reply = api.call(
            "POST",
            "/v1/containers",
            {"name": "small", "image": "busybox", "mig": ["1g.5gb"], "queue": True},
        )
    assert reply.status == 202, reply
    request_id = reply.json()["id"]

    wait_for_loop_pass(d, "queue")
    assert not started(d, request_id)

    # alice's slice is free now, but too large for carol's quota: it is destroyed, and the
    # queue makes carol a 1g.5gb in the room it left.
    alices = next(g["uuid"] for g in shown if g["holder"]["user"] == "alice")
    assert d.cli("alice", "container-remove", "nb").returncode == 0
    wait_until("carol's request to start", lambda: started(d, request_id), timeout=15)
    [carols] = started(d, request_id)[0]["details"]["devices"]
    [made] = [e for e in d.events_where(action="gpu.mig_create") if e["details"]["uuid"] == carols]
    assert (made["user"], made["details"]["profile"]) == ("ds01d", "1g.5gb")
    assert [e["details"]["uuid"] for e in d.events_where(action="gpu.mig_destroy")] == [alices]

    # bob's slice is freed while a process still runs on it: the destroy is refused and
    # tried again, nobody is told of an error; once the process is gone it is destroyed.
    bobs = next(g["uuid"] for g in shown if g["holder"]["user"] == "bob")
    write_simulated_telemetry(d.paths.simulated_telemetry_file, {bobs: {"process_count": 1}})
    assert d.cli("bob", "container-remove", "nb").returncode == 0
    wait_until(
        "the refused destroy to be logged",
        lambda: "In use by another client" in d.log_tail(200),
        timeout=15,
    )
    assert bobs in {g["uuid"] for g in slices(d)}
    write_simulated_telemetry(d.paths.simulated_telemetry_file, {})
    wait_until(
        "bob's slice to be destroyed",
        lambda: len(d.events_where(action="gpu.mig_destroy")) == 2,
        timeout=15,
    )
    assert d.events_where(action="gpu.mig_destroy")[-1]["details"]["uuid"] == bobs
    assert [(g["uuid"], g["on_demand"]) for g in slices(d)] == [(carols, True)]


def test_an_instance_left_unrecorded_by_a_crash_is_adopted_and_destroyed_the_baseline_kept(
    ds01d: Any,
) -> None:
    # GPU 1's baseline is one 3g.20gb. The 1g.5gb beside it is what a ds01d that died
    # between making a slice and recording it leaves: nobody holds it, the store does not
    # know it.
    d = ds01d(
        gpu_config="""
            backend: simulated
            mig_on_demand_keep_seconds: 0
            simulated:
              gpus:
                - {model: NVIDIA A100-SXM4-40GB}
                - model: NVIDIA A100-SXM4-40GB
                  mig: true
                  mig_instances: [{profile: 3g.20gb, start: 0}, {profile: 1g.5gb, start: 6}]
            mig_layout:
              1: {dynamic: [3g.20gb]}
        """,
        extra_args=("--queue-interval", "0.5"),
    )

    wait_until("the leftover to be destroyed", lambda: d.events_where(action="gpu.mig_destroy"))

    [destroyed] = d.events_where(action="gpu.mig_destroy")
    assert destroyed["details"]["profile"] == "1g.5gb"
    assert [(g["profile"], g["on_demand"]) for g in slices(d)] == [("3g.20gb", False)]
    plan = d.cli_json(None, "admin", "mig", "plan")["gpus"][1]
    assert plan["status"] == "unchanged"
    assert plan["desired"]["description"] == "MIG on demand (baseline: 3g.20gb)"


def test_a_reservation_keeps_a_slot_and_the_slice_is_made_at_its_start(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    limits = LIMITS + "    policies:\n      lifecycle_interval_seconds: 0.5\n"
    d = ds01d(resource_limits=limits, gpu_config=GPUS, images=TEST_IMAGES_YAML)
    # No 3g.20gb exists: GPU 1 could make one, so the reservation keeps a slot there.
    made, _ = reserve_a_slot(d, seconds=2)
    assert made["missing_devices"] == []

    uuid = slot_made(d, made["id"])
    assert [(g["uuid"], g["profile"]) for g in slices(d)] == [(uuid, "3g.20gb")]
    [listed] = d.cli_json("alice", "reservations")
    assert listed["devices"] == [uuid] and listed["missing_devices"] == []
    mine = d.cli_json("alice", "container-create", "exam", "--image", "busybox",
                      "--mig", "3g.20gb")  # fmt: skip
    assert mine["gpus"] == [uuid]


def test_a_slice_made_before_a_slot_is_drained_destroyed_and_the_slot_made_there(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    # bob's container runs on a 7g.40gb made for it on GPU 1 (every memory slice). alice
    # then reserves a 3g.20gb from a few seconds ahead: the slot her reservation keeps does
    # not see slices made for containers, so it lies under bob's. bob is warned at the lead
    # time and stopped at the start, his slice destroyed at once (the keep time is an hour)
    # and alice's slice made at the slot's place.
    lead_s = 3.0
    gpus = GPUS.replace("mig_on_demand_keep_seconds: 0", "mig_on_demand_keep_seconds: 3600")
    limits = LIMITS + (
        "    policies:\n      lifecycle_interval_seconds: 0.5\n"
        f"    reservations:\n      warning_minutes: {lead_s / 60}\n"
    )
    d = ds01d(resource_limits=limits, gpu_config=gpus, images=TEST_IMAGES_YAML)
    train = d.cli_json("bob", "container-create", "train", "--image", "busybox",
                       "--mig", "7g.40gb", "--start")  # fmt: skip
    [bobs] = train["gpus"]
    made, start = reserve_a_slot(d, seconds=7)
    place = int(made["devices"][0].rsplit("-", 1)[1])

    warning, stop = wait_for_drain(d, "bob", start, lead_s)
    assert warning["details"]["reservation"] == made["id"]
    assert made["id"] in stop["details"]["reason"]
    assert docker_client.containers.get(docker_name("bob", "train")).status == "exited"

    uuid = slot_made(d, made["id"])
    destroyed = [e["details"]["uuid"] for e in d.events_where(action="gpu.mig_destroy")]
    assert destroyed == [bobs]
    [created] = [e for e in d.events_where(action="gpu.mig_create") if e["details"]["uuid"] == uuid]
    assert (created["details"]["profile"], created["details"]["start"]) == ("3g.20gb", place)
    assert [(g["uuid"], g["profile"]) for g in slices(d)] == [(uuid, "3g.20gb")]
    [listed] = d.cli_json("alice", "reservations")
    assert listed["devices"] == [uuid] and listed["missing_devices"] == []
    assert not d.events_where(action="reservation.affected")
