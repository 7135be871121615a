"""End to end: the GPU queue starts waiting requests by itself, in priority order, survives a
``kill -9`` of the daemon, and gets GPUs back from containers stopped for longer than the
hold.

Real ds01d, real Docker, real users; the simulated inventory is small (two whole GPUs) so
that dave can fill it. Requests are queued through the raw API (``queue: true``, answered
with HTTP 202), so no client is running while they wait; one test follows the CLI's own
wait.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from rawapi import RawApi, queue_gpu_create

from support import TEST_IMAGES_YAML, describe, simulated_a100s, wait_for_loop_pass, wait_until

TWO_GPUS = simulated_a100s(2)

# carol first, then bob, then alice, whatever the order they queue in.
PRIORITIES = """
    defaults:
      gpu_limit: 2
      max_containers: 5
      gpu_hold_after_stop_minutes: null
    users:
      alice: {priority: 100, gpu_hold_after_stop_minutes: 0.02}
      bob: {priority: 500}
      carol: {priority: 900}
"""
WAIT_S = 30.0


def queue_create(d: Any, user: str, name: str) -> str:
    """Queue a 1-GPU create for ``user`` through the raw API; return the request id."""
    return queue_gpu_create(d.paths.socket, user, name)


def started(d: Any, request_id: str) -> list[dict[str, Any]]:
    return d.events_where(action="queue.start", resource=f"queue/{request_id}")


def gpus_of(d: Any, user: str, name: str) -> list[str]:
    rows = {r["name"]: r for r in d.cli_json(user, "container-list")}
    return list(rows[name]["gpus"]) if name in rows else []


@pytest.fixture
def carols_terminal(unix_users: dict[str, Any]) -> Iterator[int]:
    """A real pseudo-terminal of carol's that accepts messages (``mesg y``); yields the
    master side, from which the test reads what was written to her terminal."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.chown(path, unix_users["carol"].pw_uid, -1)
    os.chmod(path, 0o620)
    yield master
    os.close(slave)
    os.close(master)


def read_terminal(master: int, timeout: float = 5.0) -> str:
    text = b""
    while select.select([master], [], [], timeout)[0]:
        text += os.read(master, 4096)
        timeout = 0.2
    return text.decode(errors="replace")


def start_daemon(ds01d: Any) -> Any:
    return ds01d(
        resource_limits=PRIORITIES,
        gpu_config=TWO_GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.5"),
    )


def test_queued_requests_start_by_themselves_in_priority_order_across_a_kill_9(
    ds01d, docker_client, unix_users, carols_terminal
):
    d = start_daemon(ds01d)
    for name in ("fill0", "fill1"):
        d.cli_json("dave", "container-create", name, "--image", "busybox", "--gpus", "1", "--start")
    full = d.cli("alice", "container-create", "x", "--image", "busybox", "--gpus", "1", "--no-wait")
    assert full.returncode == 3, describe(full)

    ids = {user: queue_create(d, user, f"q-{user}") for user in ("alice", "bob", "carol")}

    listed = wait_until(
        "positions", lambda: [r for r in d.cli_json("erin", "queue", "--all") if r["position"]]
    )
    assert [r["user"] for r in listed] == ["carol", "bob", "alice"], listed
    assert listed[0]["score"]["priority"] > listed[1]["score"]["priority"]
    with RawApi(d.paths.socket, "alice") as api:
        status = api.call("GET", "/v1/gpus").json()
    assert (status["queued_requests"], status["queued_gpu_equivalents"]) == (3, 3.0)
    assert "Queued: 3 request(s) waiting for at least 3 GPU-equivalents" in (
        d.cli("alice", "gpu-status").stdout
    )
    mine = d.cli_json("alice", "queue")
    assert [r["id"] for r in mine] == [ids["alice"]]  # a user sees only her own
    assert d.cli("alice", "queue", "--all").returncode == 5

    freed = gpus_of(d, "dave", "fill0")
    assert d.cli("dave", "container-remove", "fill0", "--force").returncode == 0
    wait_until("carol's start", lambda: started(d, ids["carol"]))
    assert gpus_of(d, "carol", "q-carol") == freed
    told = read_terminal(carols_terminal)  # no client of hers runs: ds01d wrote it
    assert "your queued container 'q-carol' started on " + freed[0] in told, told
    assert not started(d, ids["bob"]) and not started(d, ids["alice"])

    assert d.cli("dave", "container-remove", "fill1", "--force").returncode == 0
    wait_until("bob's start", lambda: started(d, ids["bob"]))
    assert not started(d, ids["alice"])

    d.kill()  # SIGKILL with alice still waiting
    d.restart()
    [waiting] = d.cli_json("alice", "queue")
    assert waiting["id"] == ids["alice"] and waiting["state"] == "waiting"
    assert d.cli("carol", "container-remove", "q-carol", "--force").returncode == 0
    wait_until("alice's start", lambda: started(d, ids["alice"]))
    wait_for_loop_pass(d, "queue")  # a later pass starts nothing twice
    assert len(started(d, ids["alice"])) == 1
    alices = docker_client.containers.list(all=True, filters={"label": "ds01.user=alice"})
    assert [c.name for c in alices] == [f"q-alice._.{unix_users['alice'].pw_uid}"]
    assert alices[0].status == "running"
    [event] = started(d, ids["alice"])
    assert event["details"]["waited_seconds"] > 0


def test_the_cli_waits_in_the_queue_and_cancel_withdraws(ds01d, unix_users):
    d = start_daemon(ds01d)
    for name in ("fill0", "fill1"):
        d.cli_json("dave", "container-create", name, "--image", "busybox", "--gpus", "1", "--start")
    result: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            cli=d.cli("bob", "container-create", "train", "--image", "busybox", "--gpus", "1")
        )
    )
    waiter.start()
    cancelled = queue_create(d, "carol", "never")
    wait_until("bob queued", lambda: d.cli_json("bob", "queue"))

    assert d.cli("bob", "queue", "cancel", cancelled).returncode == 5  # not his
    assert d.cli("carol", "queue", "cancel", cancelled).returncode == 0
    assert d.events_where(action="queue.cancel", resource=f"queue/{cancelled}")
    assert d.cli("dave", "container-remove", "fill0", "--force").returncode == 0
    waiter.join(WAIT_S)

    cli = result["cli"]
    assert cli.returncode == 0, describe(cli)
    assert "Queued as" in cli.stdout and "Started train" in cli.stdout, describe(cli)
    assert d.cli_json("carol", "container-list") == []


def test_a_stopped_containers_gpu_goes_to_the_queue_and_it_comes_back_elsewhere(
    ds01d, docker_client, unix_users
):
    d = start_daemon(ds01d)
    uid = unix_users["alice"].pw_uid
    d.cli_json("alice", "container-create", "keep", "--image", "busybox", "--gpus", "1", "--start")
    d.cli_json("dave", "container-create", "other", "--image", "busybox", "--gpus", "1", "--start")
    before = gpus_of(d, "alice", "keep")
    container = docker_client.containers.get(f"keep._.{uid}")
    assert container.exec_run(["sh", "-c", "echo kept > /tmp/mark"]).exit_code == 0
    assert d.cli("alice", "container-stop", "keep").returncode == 0

    bobs = queue_create(d, "bob", "next")  # alice's hold is 1.2 s
    wait_until("bob's start", lambda: started(d, bobs))
    assert gpus_of(d, "bob", "next") == before
    assert d.events_where(action="gpu.release", resource=f"container/keep._.{uid}")
    assert gpus_of(d, "alice", "keep") == []

    refused = d.cli("alice", "container-start", "keep", "--no-wait")
    assert refused.returncode == 3, describe(refused)
    result: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: result.update(cli=d.cli("alice", "container-start", "keep"))
    )
    waiter.start()  # no device is free: the start waits in the queue
    [queued] = wait_until("alice's start queued", lambda: d.cli_json("alice", "queue"))
    assert (queued["kind"], queued["container"]) == ("start", "keep")
    assert d.cli("dave", "container-remove", "other", "--force").returncode == 0
    waiter.join(WAIT_S)
    back = result["cli"]
    assert back.returncode == 0, describe(back)
    assert "Started keep" in back.stdout, describe(back)

    now = gpus_of(d, "alice", "keep")
    assert len(now) == 1 and now != before
    container = docker_client.containers.get(f"keep._.{uid}")
    assert container.status == "running"
    assert container.exec_run(["cat", "/tmp/mark"]).output.decode().strip() == "kept"
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["DS01_GPUS"] == now[0]
    assert len(docker_client.containers.list(all=True, filters={"label": "ds01.user=alice"})) == 1

    # Removed behind ds01d's back, its kept commit would stay for good: the lifecycle loop's
    # first pass after a start removes it.
    kept = container.labels["ds01.kept_image"]
    assert docker_client.images.list(name=kept)
    container.remove(force=True)
    d.restart()
    wait_until("the orphan kept image removed", lambda: not docker_client.images.list(name=kept))


# The estimate rests on the lifecycle loop's clock of the running container: a fast loop.
ONE_GPU_ONE_HOUR = """
    defaults:
      max_runtime_hours: 1
      gpu_hold_after_stop_minutes: 0
    policies:
      lifecycle_interval_seconds: 0.5
"""
ONE_GPU = simulated_a100s(1)


def test_the_head_gets_an_estimated_start_from_the_enforced_runtime_limit(ds01d, unix_users):
    d = ds01d(
        resource_limits=ONE_GPU_ONE_HOUR,
        gpu_config=ONE_GPU,
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.5"),
    )
    started = datetime.now(timezone.utc)
    d.cli_json("dave", "container-create", "hold", "--image", "busybox", "--gpus", "1", "--start")
    queue_create(d, "alice", "next")

    [entry] = wait_until(
        "an estimated start",
        lambda: [e for e in d.cli_json("alice", "queue") if e.get("estimated_start")],
    )
    estimated = datetime.fromisoformat(entry["estimated_start"])
    assert entry["status"] == "head"
    # dave's run ends at his 1 h runtime limit (the lifecycle loop stops it), give or take
    # the minutes the estimate is rounded to and the time the test took.
    assert abs((estimated - started).total_seconds() - 3600) < 120, entry


#: Statuses of requests that block nobody: the only ones that may stand ahead of the head.
BLOCKS_NOBODY = frozenset({"quota", "unsatisfiable"})


def line_problems(rows: list[dict[str, Any]]) -> list[str]:
    """What is inconsistent in one ``queue --all`` answer: positions not 1..N of the length
    shown, a starting request with a place in line, or a head behind a request that waits
    for devices (the head is first in line)."""
    problems = []
    in_line = sorted((r for r in rows if r["position"] is not None), key=lambda r: r["position"])
    if [r["position"] for r in in_line] != list(range(1, len(in_line) + 1)):
        problems.append("positions are not 1..N")
    for r in in_line:
        if r["queue_length"] != len(in_line):
            problems.append(f"{r['id']}: length {r['queue_length']} of {len(in_line)} in line")
        if r["status"] in ("starting", "backfilling"):
            problems.append(f"{r['id']} starts at position {r['position']}")
    for head in (r for r in in_line if r["status"] == "head"):
        ahead = [r for r in in_line[: head["position"] - 1] if r["status"] not in BLOCKS_NOBODY]
        if ahead:
            problems.append(f"head {head['id']} at {head['position']} of {head['queue_length']}")
    return problems


def test_every_queue_listing_is_one_consistent_view_while_requests_start(ds01d, unix_users):
    d = start_daemon(ds01d)
    seen: list[list[dict[str, Any]]] = []
    stop = threading.Event()

    def watch_with_the_cli() -> None:
        while not stop.is_set():
            seen.append(d.cli_json("erin", "queue", "--all"))

    def watch_through_the_api() -> None:  # many more looks than the CLI manages
        with RawApi(d.paths.socket, "erin") as api:
            while not stop.is_set():
                seen.append(api.call("GET", "/v1/queue?all=1").json())

    watchers = [threading.Thread(target=f) for f in (watch_with_the_cli, watch_through_the_api)]
    try:
        for watcher in watchers:
            watcher.start()
        for round_ in range(2):
            fills = [f"fill{round_}{n}" for n in range(2)]
            for name in fills:
                d.cli_json("dave", "container-create", name, "--image", "busybox", "--gpus", "1")
            ids = [queue_create(d, user, f"q{round_}-{user}") for user in ("alice", "bob", "carol")]
            for name in fills:  # each removal lets the first in line start, the next one heads
                assert d.cli("dave", "container-remove", name, "--force").returncode == 0
            wait_until("two starts", lambda ids=ids: sum(bool(started(d, i)) for i in ids) == 2)
            for user in ("alice", "bob", "carol"):  # the two that started (the third: none yet)
                d.cli(user, "container-remove", f"q{round_}-{user}", "--force")
            wait_until("the last start", lambda ids=ids: all(started(d, i) for i in ids))
            for user in ("alice", "bob", "carol"):
                d.cli(user, "container-remove", f"q{round_}-{user}", "--force")
    finally:
        stop.set()
        for watcher in watchers:
            watcher.join(WAIT_S)
    with_heads = [rows for rows in seen if any(r["status"] == "head" for r in rows)]
    assert with_heads, f"no listing showed a head among {len(seen)}"
    bad = [(rows, line_problems(rows)) for rows in seen if line_problems(rows)]
    assert not bad, bad[:3]
