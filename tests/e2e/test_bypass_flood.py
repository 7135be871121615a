"""End to end: a local user flooding the audit log or the GPU queue, against real ds01d.

The attacks (issue 12, items 12 and 13), each by a real non-admin user through the real
socket (the CLI, or raw HTTP from a process running as that user):

- refusals that echo a huge input (a 4,000-character path, a 100,000-character name, a
  60,000-character URL, a JSON body of a thousand unknown fields): every logged value and
  every error message stays bounded, the cut is marked, and the hash chain verifies;
- hundreds of refusals a second: a bounded number of events is written, the rest counted in
  one ``audit.suppressed`` event per user, at the end of the window or at shutdown, with
  the exact count; other users' refusals are still written;
- a log that grows anyway is rotated by size (``--audit-max-bytes``), and
  ``ds01 audit verify`` follows the chain across the files, also after a restart;
- waiting requests: creates beyond ``max_containers`` (counting the waiting creates), and
  requests beyond ``max_queued`` (creates and starts together) are refused with exit 3 and
  a message naming the waiting requests and ``ds01 queue cancel ID``; other users still
  queue, and a cancelled request frees the place.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from rawapi import RawApi

from ds01.events.chain import chain_files, iter_lines
from support import TEST_IMAGES_YAML, describe, simulated_a100s, wait_until

#: What a bounded event line can never exceed (ds01.events.bound: ~22 KB at most).
MAX_EVENT_LINE_BYTES = 24 * 1024
#: Characters of an echoed input an error message may hold, with its text around it.
MAX_MESSAGE_CHARS = 1000
#: The throttle's defaults (ds01.events.throttle).
PER_ACTION, PER_USER = 10, 30

ONE_GPU = simulated_a100s(1)
TWO_GPUS = simulated_a100s(2)
LIMITS = """
    defaults:
      gpu_limit: 2
      max_containers: 10
"""


def long_path(user_home: str) -> str:
    """A 4,000-character absolute path under ``user_home`` that does not exist."""
    base = f"{user_home}/"
    return base + "a/" * ((4000 - len(base)) // 2)




def chain_events(log_dir: Path) -> list[dict[str, Any]]:
    """Every event of every file of the chain: rotated files (oldest first), then live."""
    files = chain_files(log_dir / "events.jsonl")
    return [json.loads(line) for path in files for line in iter_lines(path) if line]


def verify_ok(d: Any) -> str:
    result = d.cli(None, "audit", "verify", "--log-dir", str(d.paths.log_dir))
    assert result.returncode == 0, describe(result)
    assert "chain intact" in result.stdout, describe(result)
    return str(result.stdout)


def assert_bounded(event: dict[str, Any]) -> None:
    line = json.dumps(event, sort_keys=True, separators=(",", ":"))
    assert len(line) <= MAX_EVENT_LINE_BYTES, line[:300]


# -- item 12: the audit log -------------------------------------------------------------------


def test_a_refusal_with_a_4000_character_path_is_logged_and_answered_bounded(
    ds01d, unix_users
):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    path = long_path(unix_users["bob"].pw_dir)
    assert len(path) >= 3990
    result = d.cli("bob", "container-create", "x", "--image", "busybox", "--workspace", path)
    assert result.returncode == 2, describe(result)
    assert len(result.stderr) < MAX_MESSAGE_CHARS, describe(result)
    assert "chars in all]" in result.stderr, describe(result)
    (event,) = d.events_where(user="bob", action="container.create", outcome="denied")
    reason = event["details"]["reason"]
    assert len(reason) <= 512 and "[cut: " in reason, reason
    assert path not in json.dumps(event)
    assert_bounded(event)
    verify_ok(d)


def test_every_echo_of_a_huge_input_is_bounded_in_the_answer_and_the_log(ds01d, unix_users):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    bob_home = unix_users["bob"].pw_dir
    with RawApi(d.paths.socket, "bob") as api:
        replies = [
            api.call("POST", "/v1/containers", {"name": "n" * 60_000, "image": "busybox"}),
            api.call("POST", "/v1/containers", {"name": "x", "image": "i" * 60_000}),
            api.call(
                "POST",
                "/v1/containers",
                {"name": "x", "image": "busybox", "data": long_path(bob_home)},
            ),
            api.call(
                "POST", "/v1/containers", {"name": "x", "image": "busybox", "memory": "9" * 50_000}
            ),
            api.call("POST", "/v1/containers/" + "c" * 60_000 + "/start"),
            api.call("GET", "/v1/" + "u" * 60_000),
            api.call("POST", "/v1/containers", {f"field{i}": i for i in range(1000)}),
        ]
    for reply in replies:
        assert reply.status is not None and 400 <= reply.status < 500, reply
        message = reply.error_body.get("message", "")
        assert message and len(message) < MAX_MESSAGE_CHARS, reply
    events = [e for e in d.events() if e["user"] == "bob" and e["outcome"] == "denied"]
    assert len(events) >= 5, events
    for event in events:
        assert_bounded(event)
    raw = d.paths.events_file.read_bytes()
    assert b"n" * 600 not in raw and b"i" * 600 not in raw and b"9" * 600 not in raw
    verify_ok(d)


def test_500_rapid_refusals_write_a_bounded_number_and_one_summary_with_the_count(
    ds01d, unix_users
):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    body = {"name": "x", "image": "busybox", "workspace": long_path(unix_users["bob"].pw_dir)}
    with RawApi(d.paths.socket, "bob") as api:
        statuses = {api.call("POST", "/v1/containers", body).status for _ in range(500)}
    assert statuses == {400}
    # Another user is refused meanwhile: written, not swallowed by bob's flood.
    refused = d.cli("alice", "container-start", "nothing-here")
    assert refused.returncode == 4, describe(refused)
    written = d.events_where(user="bob", action="container.create", outcome="denied")
    assert len(written) == PER_ACTION
    assert d.events_where(user="alice", action="container.start", outcome="denied")
    size_while_running = d.paths.events_file.stat().st_size
    assert size_while_running < 64 * 1024  # before the fix: 500 lines of ~4.3 KB
    d.stop()  # the window has not ended: the summary is written at shutdown
    (summary,) = d.events_where(user="bob", action="audit.suppressed")
    assert summary["details"]["counts"] == {"container.create": 500 - PER_ACTION}
    assert summary["details"]["suppressed"] == 500 - PER_ACTION
    assert summary["outcome"] == "denied" and summary["resource"] == "user/bob"
    assert not d.events_where(user="alice", action="audit.suppressed")
    verify_ok(d)


def test_refusals_across_actions_are_capped_per_user_and_summed_up_when_the_window_ends(
    ds01d,
):
    d = ds01d(
        resource_limits=LIMITS,
        images=TEST_IMAGES_YAML,
        extra_args=("--audit-refusal-window", "10"),
    )
    sent: dict[str, int] = {}
    with RawApi(d.paths.socket, "bob") as api:
        for i in range(20):
            for action, (method, path) in {
                "container.start": ("POST", f"/v1/containers/missing{i}/start"),
                "container.stop": ("POST", f"/v1/containers/missing{i}/stop"),
                "container.remove": ("DELETE", f"/v1/containers/missing{i}"),
            }.items():
                reply = api.call(method, path)
                assert reply.status == 404, reply
                sent[action] = sent.get(action, 0) + 1
    # No shutdown: a timer writes the summary once the window is over.
    summaries = wait_until(
        "the audit.suppressed summary",
        lambda: d.events_where(user="bob", action="audit.suppressed"),
        timeout=40,
    )
    written = [e for e in d.events() if e["user"] == "bob" and e["action"] in sent]
    for action, count in sent.items():
        logged = sum(1 for e in written if e["action"] == action)
        counted = sum(s["details"]["counts"].get(action, 0) for s in summaries)
        assert logged + counted == count, (action, logged, counted)
    if len(summaries) == 1:  # all 60 refusals fell into one window (they take about 1 s)
        assert len(written) == PER_USER
        assert all(
            sum(1 for e in written if e["action"] == action) <= PER_ACTION for action in sent
        )
    # The next window writes bob's refusals again.
    with RawApi(d.paths.socket, "bob") as api:
        assert api.call("POST", "/v1/containers/again/start").status == 404
    assert d.events_where(user="bob", action="container.start", outcome="denied")[-1][
        "resource"
    ].startswith("container/again")
    verify_ok(d)


def test_the_log_rotates_by_size_and_the_chain_verifies_across_files(ds01d, unix_users):
    d = ds01d(
        resource_limits=LIMITS,
        images=TEST_IMAGES_YAML,
        extra_args=("--audit-max-bytes", "2K", "--audit-keep-files", "100"),
    )
    for user in ("alice", "bob", "carol", "dave"):
        body = {"name": "x", "image": "busybox", "workspace": long_path(unix_users[user].pw_dir)}
        with RawApi(d.paths.socket, user) as api:
            for _ in range(PER_USER):
                assert api.call("POST", "/v1/containers", body).status == 400
    log_dir = d.paths.log_dir
    rotated = sorted(log_dir.glob("events-*.jsonl.gz"))
    assert len(rotated) >= 3, sorted(p.name for p in log_dir.iterdir())
    for path in rotated:
        assert len(gzip.decompress(path.read_bytes())) < 2048 + MAX_EVENT_LINE_BYTES
    report = json.loads(
        d.cli(None, "audit", "verify", "--log-dir", str(log_dir), "--json").stdout
    )
    assert report["ok"] and len(report["files"]) == len(rotated) + 1, report
    assert report["first_seq"] == 1
    events = chain_events(log_dir)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert sum(1 for e in events if e["action"] == "container.create") == 4 * PER_ACTION
    d.restart()
    d.cli("erin", "container-start", "missing")
    verify_ok(d)


# -- item 13: the GPU queue -------------------------------------------------------------------


def queue_create(api: RawApi, name: str) -> Any:
    return api.call(
        "POST", "/v1/containers", {"name": name, "image": "busybox", "gpus": 1, "queue": True}
    )


def test_waiting_creates_count_against_max_containers(ds01d):
    d = ds01d(
        resource_limits="""
            defaults:
              gpu_limit: 1
              max_containers: 3
        """,
        gpu_config=ONE_GPU,
        images=TEST_IMAGES_YAML,
    )
    d.cli_json("dave", "container-create", "fill", "--image", "busybox", "--gpus", "1")
    d.cli_json("bob", "container-create", "cpu-only", "--image", "busybox")
    with RawApi(d.paths.socket, "bob") as api:
        first, second = queue_create(api, "q1"), queue_create(api, "q2")
        assert first.status == 202 and second.status == 202, (first, second)
        ids = [first.json()["id"], second.json()["id"]]
        third = queue_create(api, "q3")
    assert third.status == 409, third
    error = third.error_body
    assert error["exit_code"] == 3, third
    assert "max_containers is 3" in error["message"], third
    assert all(i in error["message"] for i in ids) and "ds01 queue cancel ID" in error["message"]
    # The CLI says the same, with exit 3.
    cli = d.cli("bob", "container-create", "q4", "--image", "busybox", "--gpus", "1")
    assert cli.returncode == 3, describe(cli)
    assert "max_containers" in cli.stderr and "ds01 queue cancel" in cli.stderr, describe(cli)
    assert len(d.events_where(user="bob", action="queue.join")) == 2
    refusals = d.events_where(user="bob", action="container.create", outcome="denied")
    assert len(refusals) == 2 and all("max_containers" in e["details"]["reason"] for e in refusals)
    # Cancelling one frees its place.
    cancelled = d.cli("bob", "queue", "cancel", ids[0])
    assert cancelled.returncode == 0, describe(cancelled)
    with RawApi(d.paths.socket, "bob") as api:
        assert queue_create(api, "q5").status == 202
    # Another user still queues.
    with RawApi(d.paths.socket, "alice") as api:
        assert queue_create(api, "a1").status == 202


def test_max_queued_bounds_waiting_creates_and_starts_together(ds01d):
    d = ds01d(
        resource_limits="""
            defaults:
              gpu_limit: 2
              max_containers: 20
              gpu_hold_after_stop_minutes: null
            users:
              bob: {gpu_hold_after_stop_minutes: 0}
            policies:
              users:
                bob: {max_queued: 3}
        """,
        gpu_config=TWO_GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.5"),
    )
    for name in ("s1", "s2"):
        d.cli_json("bob", "container-create", name, "--image", "busybox", "--gpus", "1", "--start")
        stopped = d.cli("bob", "container-stop", name)
        assert stopped.returncode == 0, describe(stopped)
    wait_until("bob's devices released", lambda: len(d.events_where(action="gpu.release")) >= 2)
    for name in ("fill0", "fill1"):
        d.cli_json("dave", "container-create", name, "--image", "busybox", "--gpus", "1")
    with RawApi(d.paths.socket, "bob") as api:
        start = api.call("POST", "/v1/containers/s1/start?queue=1")
        creates = [queue_create(api, "q1"), queue_create(api, "q2")]
        assert [r.status for r in (start, *creates)] == [202, 202, 202], (start, creates)
        ids = [r.json()["id"] for r in (start, *creates)]
        # A second start of a container already waiting joins its request: no new place.
        again = api.call("POST", "/v1/containers/s1/start?queue=1")
        assert again.status == 202 and again.json()["id"] == ids[0], again
        over_create = queue_create(api, "q3")
    assert over_create.status == 409 and over_create.error_body["exit_code"] == 3, over_create
    message = over_create.error_body["message"]
    assert "max_queued is 3" in message and "ds01 queue cancel ID" in message, message
    assert all(i in message for i in ids), message
    # A start beyond the limit is refused the same way (the CLI waits in the queue).
    over_start = d.cli("bob", "container-start", "s2")
    assert over_start.returncode == 3, describe(over_start)
    assert "max_queued is 3" in over_start.stderr, describe(over_start)
    assert "ds01 queue cancel" in over_start.stderr, describe(over_start)
    assert d.events_where(user="bob", action="container.start", outcome="denied")
    assert len(d.events_where(user="bob", action="queue.join")) == 3
    # Other users queue as before.
    with RawApi(d.paths.socket, "alice") as api:
        assert queue_create(api, "a1").status == 202
    # A cancelled request frees a place, and only one.
    cancelled = d.cli("bob", "queue", "cancel", ids[2])
    assert cancelled.returncode == 0, describe(cancelled)
    with RawApi(d.paths.socket, "bob") as api:
        assert queue_create(api, "q4").status == 202
        refused = api.call("POST", "/v1/containers/s2/start?queue=1")
    assert refused.status == 409 and "max_queued" in refused.error_body["message"], refused
    assert len(d.events_where(user="bob", action="queue.join")) == 4
