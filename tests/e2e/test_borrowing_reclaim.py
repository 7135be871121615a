"""End to end: borrowing above quota on idle GPUs, and its reclaim for a request within quota.

Real ds01d, real Docker, real users, three simulated GPUs, everyone's ``gpu_limit`` is 1 and
borrowing is on with a cap of one GPU, a 6-second minimum runtime and a 6-second grace
(minutes as fractions). alice fills her quota and borrows a second GPU; bob takes the
third; nothing is reclaimed while nobody waits; then carol, within quota, queues: alice's
borrowed container (never her own within quota, nor bob's) is warned no sooner than its
minimum runtime (counted from its placement), stopped (not removed) after the grace even
though renamed and restarted in it, and carol's request starts on its GPU. Started again,
a reclaimed container borrows again; a container of alice's own quota whose GPU was
released starts above quota only with ``--borrow``, and is then borrowed; its GPU released
again and started within quota, it is no longer borrowed, so alice never holds more than
her quota plus the cap. A borrower whose own container ended, so that all they hold is
within their quota, is not reclaimed for a request within quota, even with no minimum
runtime.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rawapi import queue_gpu_create

from support import (
    TEST_IMAGES_YAML,
    describe,
    docker_name,
    simulated_a100s,
    wait_for_loop_pass,
    wait_until,
)

THREE_GPUS = simulated_a100s(3)

#: Longer than the steps from the borrowed container's creation to carol's request (about 3 s:
#: a create and a queue pass), so that the warning waits for it.
MIN_RUNTIME_S = 6.0
#: Long enough for the test to see the warning, rename the container and restart it
#: within the grace on a slow machine (the rename comes well under a second after the
#: warning, the restart about a second and a half later): either after the stop would
#: find the container reclaimed already.
GRACE_S = 6.0
#: alice's GPUs are released this long after a stop: far longer than the instant between
#: the stop and the start of a restart, which must keep its GPU.
HOLD_S = 2.0
LIMITS = f"""
    defaults:
      gpu_limit: 1
      max_containers: 5
      gpu_hold_after_stop_minutes: null
    users:
      alice: {{gpu_hold_after_stop_minutes: {HOLD_S / 60}}}
    borrowing:
      enabled: true
      max_borrowed_gpus: 1
      min_runtime_minutes: {MIN_RUNTIME_S / 60}
      reclaim_grace_minutes: {GRACE_S / 60}
"""


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def create(d: Any, user: str, name: str, *flags: str) -> Any:
    return d.cli(user, "container-create", name, "--image", "busybox", "--gpus", "1", *flags)


def test_borrow_up_to_the_cap_then_reclaim_for_a_request_within_quota(
    ds01d, docker_client, unix_users
):
    d = ds01d(
        resource_limits=LIMITS,
        gpu_config=THREE_GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.5"),
    )
    own = create(d, "alice", "own", "--start", "--no-wait")
    assert own.returncode == 0, describe(own)
    borrowed = create(d, "alice", "extra", "--start", "--no-wait", "--borrow", "--json")
    assert borrowed.returncode == 0, describe(borrowed)
    # The minimum runtime counts from the placement: its creation (seconds, rounded down).
    extra_labels = docker_client.containers.get(docker_name("alice", "extra")).labels
    placed_at = datetime.fromisoformat(extra_labels["ds01.created_at"]).timestamp()

    # Above the cap, or over quota without --borrow: refused, with the reason.
    over_cap = create(d, "alice", "more", "--no-wait", "--borrow")
    assert over_cap.returncode == 3 and "max_borrowed_gpus" in over_cap.stderr, describe(over_cap)
    no_borrow = create(d, "alice", "more", "--no-wait")
    assert no_borrow.returncode == 3 and "GPU quota" in no_borrow.stderr, describe(no_borrow)

    rows = {r["name"]: r for r in d.cli_json("alice", "container-list")}
    assert (rows["own"]["borrowed"], rows["extra"]["borrowed"]) == (False, True)
    assert "running, borrowed" in d.cli("alice", "container-list").stdout
    usage = d.cli_json("alice", "check-limits")["usage"]
    assert (usage["gpu_equivalents"], usage["borrowed_gpu_equivalents"]) == (1.0, 1.0)
    labels = docker_client.containers.get(docker_name("alice", "extra")).labels
    assert labels.get("ds01.borrowed") == "true"
    assert "ds01.borrowed" not in docker_client.containers.get(docker_name("alice", "own")).labels
    [event] = [e for e in d.events_where(action="container.create") if e["details"].get("borrowed")]
    assert event["resource"].endswith(docker_name("alice", "extra"))
    assert "(borrowed)" in d.cli("alice", "gpu-status").stdout

    # The last GPU goes to bob within his quota; nobody waits, so nothing is reclaimed.
    assert create(d, "bob", "b", "--start", "--no-wait").returncode == 0
    wait_for_loop_pass(d, "queue")
    assert not d.events_where(action="container.reclaim_warning")

    # carol asks within quota: alice's borrowed container is reclaimed, and only it.
    request_id = queue_gpu_create(d.paths.socket, "carol", "c")
    print(f"carol queued {time.time() - placed_at:.1f} s into the {MIN_RUNTIME_S:.0f} s minimum")
    [warning] = wait_until(
        "the reclaim warning", lambda: d.events_where(action="container.reclaim_warning")
    )
    assert warning["resource"].endswith(docker_name("alice", "extra")), warning
    assert at(warning) >= placed_at + MIN_RUNTIME_S - 0.5, (warning, placed_at)
    # A rename in the grace (the Docker API door renames a running container) neither warns
    # again nor starts the grace again: the warning follows the container, not its name.
    renamed = d.docker("alice", "rename", "extra", "lent")
    assert renamed.returncode == 0, describe(renamed)
    print(f"renamed {time.time() - at(warning):.1f} s into the {GRACE_S:.0f} s grace")
    # Nor does a restart: its age counts from its placement, not its last start, and a
    # warned container stays chosen whatever its age (nothing is cancelled).
    restarted = d.docker("alice", "restart", "lent")
    assert restarted.returncode == 0, describe(restarted)
    state = docker_client.containers.get(docker_name("alice", "lent")).attrs["State"]
    restarted_at = datetime.fromisoformat(state["StartedAt"][:26] + "+00:00").timestamp()
    print(f"restarted {restarted_at - at(warning):.1f} s into the {GRACE_S:.0f} s grace")
    [reclaim] = wait_until(
        "the reclaim", lambda: d.events_where(action="container.reclaim"), timeout=30
    )
    assert at(warning) < restarted_at < at(reclaim), (warning, state, reclaim)
    assert at(reclaim) >= at(warning) + GRACE_S - 0.5, (warning, reclaim)
    assert reclaim["resource"].endswith(docker_name("alice", "lent")), reclaim
    assert not d.events_where(action="container.reclaim_cancelled")
    queue = f"queue/{request_id}"
    wait_until("carol's start", lambda: d.events_where(action="queue.start", resource=queue))
    mine = {r["name"]: r for r in d.cli_json("alice", "container-list")}
    assert mine["own"]["status"] == "running"
    assert mine["lent"]["status"] != "running"  # stopped, not removed: its files are kept
    assert d.cli_json("carol", "container-list")[0]["status"] == "running"
    assert d.events_where(action="container.reclaim_warning") == [warning]
    back = d.docker("alice", "rename", "lent", "extra")
    assert back.returncode == 0, describe(back)

    # Started again: it borrows again once a device is idle, and stays borrowed.
    busy = d.cli("alice", "container-start", "extra", "--no-wait")
    assert busy.returncode == 3 and "no idle device" in busy.stderr, describe(busy)
    assert d.cli("bob", "container-remove", "b", "--force").returncode == 0
    again = d.cli("alice", "container-start", "extra", "--no-wait")
    assert again.returncode == 0, describe(again)
    rows = {r["name"]: r for r in d.cli_json("alice", "container-list")}
    assert (rows["extra"]["status"], rows["extra"]["borrowed"]) == ("running", True)

    # A container made within quota, its GPU released, starts over quota only with --borrow.
    assert d.cli("alice", "container-remove", "extra", "--force").returncode == 0
    assert d.cli("alice", "container-stop", "own").returncode == 0
    own_name = docker_name("alice", "own")
    released = f"container/{own_name}"
    wait_until(
        "own's GPU released", lambda: d.events_where(action="gpu.release", resource=released)
    )
    assert create(d, "alice", "own2", "--start", "--no-wait").returncode == 0
    refused = d.cli("alice", "container-start", "own", "--no-wait")
    assert refused.returncode == 3 and "GPU quota" in refused.stderr, describe(refused)
    lent = d.cli("alice", "container-start", "own", "--no-wait", "--borrow")
    assert lent.returncode == 0, describe(lent)
    rows = {r["name"]: r for r in d.cli_json("alice", "container-list")}
    assert (rows["own"]["borrowed"], rows["own2"]["borrowed"]) == (True, False)
    assert docker_client.containers.get(own_name).labels.get("ds01.borrowed") == "true"
    lent_devices = rows["own"]["gpus"]

    # Its GPU released again and started within quota, it is no longer borrowed: it counts
    # against gpu_limit, so alice borrows one more GPU at most (quota 1 + cap 1).
    assert d.cli("alice", "container-stop", "own").returncode == 0
    wait_until(
        "own's GPU released again",
        lambda: len(d.events_where(action="gpu.release", resource=released)) == 2,
    )
    assert d.cli("alice", "container-remove", "own2", "--force").returncode == 0
    within = d.cli("alice", "container-start", "own", "--no-wait", "--json")
    assert within.returncode == 0, describe(within)
    assert docker_client.containers.get(own_name).labels.get("ds01.borrowed", "") == ""
    # re-created for its label (a borrowed one is never started as it was): the event says
    # where, on the same devices or others
    placed = d.events_where(action="gpu.allocate", resource=released)[-1]["details"]
    same = placed["devices"] == lent_devices
    assert placed["reason"] == f"re-created on {'the same' if same else 'other'} devices", placed
    more = create(d, "alice", "more", "--start", "--no-wait", "--borrow")
    assert more.returncode == 0, describe(more)
    most = create(d, "alice", "most", "--no-wait", "--borrow")
    assert most.returncode == 3 and "max_borrowed_gpus" in most.stderr, describe(most)
    rows = {r["name"]: r for r in d.cli_json("alice", "container-list")}
    assert (rows["own"]["borrowed"], rows["more"]["borrowed"]) == (False, True)
    usage = d.cli_json("alice", "check-limits")["usage"]
    assert (usage["gpu_equivalents"], usage["borrowed_gpu_equivalents"]) == (1.0, 1.0)


NO_MIN_RUNTIME = LIMITS.replace(
    f"min_runtime_minutes: {MIN_RUNTIME_S / 60}", "min_runtime_minutes: 0"
)


def test_a_borrower_back_within_quota_is_not_reclaimed(ds01d, docker_client, unix_users):
    """alice borrows a GPU beside her own; her own container ends and dave takes its GPU:
    alice now holds one GPU on a quota of one, so carol, queued within quota, waits for a
    GPU like anyone instead of taking alice's (no minimum runtime protects it here)."""
    d = ds01d(
        resource_limits=NO_MIN_RUNTIME,
        gpu_config=THREE_GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.5"),
    )
    assert create(d, "alice", "own", "--start", "--no-wait").returncode == 0
    lent = create(d, "alice", "extra", "--start", "--no-wait", "--borrow")
    assert lent.returncode == 0, describe(lent)
    assert create(d, "bob", "b", "--start", "--no-wait").returncode == 0
    assert d.cli("alice", "container-remove", "own", "--force").returncode == 0
    dave = create(d, "dave", "d", "--start", "--no-wait")
    assert dave.returncode == 0, describe(dave)

    request_id = queue_gpu_create(d.paths.socket, "carol", "c")
    queue = f"queue/{request_id}"
    wait_for_loop_pass(d, "queue")
    wait_for_loop_pass(d, "queue")
    assert not d.events_where(action="container.reclaim_warning")
    rows = {r["name"]: r for r in d.cli_json("alice", "container-list")}
    assert (rows["extra"]["status"], rows["extra"]["borrowed"]) == ("running", True)
    assert not d.events_where(action="queue.start", resource=queue)

    # A GPU freed within quota goes to carol, and alice's container still runs.
    assert d.cli("bob", "container-remove", "b", "--force").returncode == 0
    wait_until("carol's start", lambda: d.events_where(action="queue.start", resource=queue))
    assert not d.events_where(action="container.reclaim_warning")
    assert d.cli_json("alice", "container-list")[0]["status"] == "running"
