"""End to end: GPU reservations with a real ds01d, Docker and Unix users.

A conflicting reservation is refused with exit 3, the reservation in the way and the next
free slot named; before it, a container without a runtime limit is kept off the reserved
GPUs and one created with ``--runtime-hours`` short enough backfills them; the ``--ics`` feed
parses with the icalendar library. A reservation that
starts a few seconds from now (``--from`` takes seconds too) drains the device: the owner
of the container on it is warned at the lead time (``reservations.warning_minutes`` of
3 s) and the container is stopped at the start; during the window the holder gets the
devices on top of their quota, others do not; a restart of ds01d keeps the reservation and
announces its start only once. A holder whose container uses the reserved devices on top of
their quota is warned at the lead time before the end, and it is stopped at the end; a
cancel in force ends the reservation there and then, and a container stopped on its
devices gives them back, so its next start goes through quota. What a cancel in force
kept still counts towards the week's GPU-hours; a reservation shorter than
``reservations.min_minutes`` (6 s here) and a window past the last date are refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import icalendar

from support import (
    TEST_IMAGES_YAML,
    describe,
    docker_name,
    simulated_a100s,
    wait_for_drain,
    wait_until,
)

LEAD_S = 3.0

LIMITS = f"""
    defaults:
      gpu_limit: 1
      max_gpus_per_container: 2
      max_runtime_hours: null
      gpu_hold_after_stop_minutes: 0
    users:
      alice: {{gpu_hold_after_stop_minutes: 60}}  # a stopped container keeps its GPUs
    policies:
      lifecycle_interval_seconds: 0.5
    reservations:
      warning_minutes: {LEAD_S / 60}
      min_minutes: 0.1
      users:
        alice: {{max_gpus: 2}}
        bob: {{gpu_hours_per_week: 1}}
"""

TWO_GPUS = simulated_a100s(2)


def start_daemon(ds01d: Any) -> Any:
    return ds01d(resource_limits=LIMITS, gpu_config=TWO_GPUS, images=TEST_IMAGES_YAML)


def minute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def test_conflict_is_refused_with_the_next_free_slot_and_the_feed_parses(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = start_daemon(ds01d)
    tomorrow = (datetime.now() + timedelta(days=1)).replace(hour=9, minute=0, second=0)
    made = d.cli_json(
        "alice", "reserve", "--gpus", "2", "--from", minute(tomorrow), "--hours", "4",
        "--note", "course",
    )  # fmt: skip
    assert made["holder"] == "alice" and len(made["devices"]) == 2

    refused = d.cli(
        "bob", "reserve", "--gpus", "1", "--from", minute(tomorrow.replace(hour=10)),
        "--hours", "2",
    )  # fmt: skip
    assert refused.returncode == 3, describe(refused)
    assert f"{minute(tomorrow)}-13:00 (alice)" in refused.stderr, describe(refused)
    assert f"next free slot for 1 GPU and 2 hours starts {minute(tomorrow.replace(hour=13))}" in (
        refused.stderr
    ), describe(refused)
    too_long = d.cli("bob", "reserve", "--gpus", "1", "--from", minute(tomorrow), "--hours", "9")
    assert too_long.returncode == 3 and "at most 8 hours" in too_long.stderr, describe(too_long)
    blink = d.cli("bob", "reserve", "--gpus", "1", "--from", minute(tomorrow), "--hours", "0.001")
    assert blink.returncode == 3 and "at least 0.1 minutes" in blink.stderr, describe(blink)
    never = d.cli("bob", "reserve", "--gpus", "1", "--from", "9999-12-31 23:00", "--hours", "2")
    assert never.returncode == 2 and "past any date" in never.stderr, describe(never)
    assert d.events_where(action="reservation.create", outcome="denied", user="bob")

    # Both GPUs are reserved from tomorrow 09:00 and bob has no runtime limit: a container
    # of his may use one before then only when he says it is done in time (--runtime-hours).
    unbounded = d.cli("bob", "container-create", "long", "--image", "busybox", "--gpus", "1",
                      "--no-wait")  # fmt: skip
    assert unbounded.returncode == 3, describe(unbounded)
    short = d.cli_json("bob", "container-create", "short", "--image", "busybox", "--gpus", "1",
                       "--runtime-hours", "1", "--no-wait")  # fmt: skip
    assert short["gpus"] and short["runtime_hours"] == 1
    listed = d.cli_json("bob", "container-list")
    assert [(c["name"], c["runtime_hours"]) for c in listed] == [("short", 1)]

    feed = d.cli("bob", "reservations", "--all", "--ics")
    assert feed.returncode == 0, describe(feed)
    events = icalendar.Calendar.from_ical(feed.stdout).walk("VEVENT")
    assert [str(e["uid"]) for e in events] == [f"{made['id']}@ds01"]
    assert events[0].decoded("dtstart") == datetime.fromisoformat(made["start"])
    assert "alice: course" in str(events[0]["summary"])

    assert d.cli_json("bob", "reservations") == []  # not bob's
    cancelled = d.cli("bob", "reservations", "cancel", made["id"])
    assert cancelled.returncode == 5, describe(cancelled)
    d.cli_json("alice", "reservations", "cancel", made["id"])
    assert d.events_where(action="reservation.cancel", user="alice")

    # bob may reserve 1 GPU-hour a week: cancelled in force, an hour's reservation keeps
    # counting what it kept, so another hour is refused.
    now = datetime.now().replace(microsecond=0)
    hour = d.cli_json("bob", "reserve", "--gpus", "1", "--from", minute(now), "--hours", "1")
    cut = d.cli_json("bob", "reservations", "cancel", hour["id"])
    assert cut["phase"] == "ended" and cut["end"] < hour["end"]
    # a start not in the past whenever this runs (``now`` may be a minute behind by now)
    later = minute(datetime.now() + timedelta(minutes=2))
    again = d.cli("bob", "reserve", "--gpus", "1", "--from", later, "--hours", "1")
    assert again.returncode == 3 and "GPU-hours in a week" in again.stderr, describe(again)
    twice = d.cli("bob", "reservations", "cancel", hour["id"])  # ended: its cost stays
    assert twice.returncode == 2 and "ended already" in twice.stderr, describe(twice)
    limits = d.cli("bob", "limits")
    assert "Reservations (`ds01 reserve`): 20 not yet ended, 1 GPU-equivalents at once, " \
        "0.1 min to 8 h each, up to 14 days ahead, 1 GPU-hours a week." in limits.stdout, (
        describe(limits))  # fmt: skip


def test_a_reservation_drains_its_device_and_survives_a_restart(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = start_daemon(ds01d)
    bob = unix_users["bob"]
    d.cli_json("bob", "container-create", "train", "--image", "busybox", "--gpus", "1", "--start")
    start = datetime.now().replace(microsecond=0) + timedelta(seconds=7)
    made = d.cli_json(
        "alice", "reserve", "--gpus", "2", "--from", start.strftime("%Y-%m-%d %H:%M:%S"),
        "--hours", "1",
    )  # fmt: skip

    _, stop = wait_for_drain(d, "bob", start, LEAD_S)
    notice = Path(bob.pw_dir) / "workspace" / ".ds01-notice"
    assert "reserved for alice" in notice.read_text()
    assert made["id"] in stop["details"]["reason"]
    assert docker_client.containers.get(docker_name("bob", "train")).status == "exited"
    assert d.events_where(action="reservation.start")

    # During the window: alice (gpu_limit 1) gets both devices; bob gets none.
    refused = d.cli("bob", "container-create", "again", "--image", "busybox", "--gpus", "1",
                    "--no-wait")  # fmt: skip
    assert refused.returncode == 3, describe(refused)
    mine = d.cli_json("alice", "container-create", "exam", "--image", "busybox", "--gpus", "2")
    assert sorted(mine["gpus"]) == sorted(made["devices"])

    d.restart()
    listed = d.cli_json("alice", "reservations")
    assert [(r["id"], r["phase"]) for r in listed] == [(made["id"], "active")]
    status = d.cli_json("bob", "gpu-status")
    assert all(dev["reservations"][0]["holder"] == "alice" for dev in status)
    d.cli_json(None, "maintenance", "run")  # a full lifecycle pass after the restart
    assert len(d.events_where(action="reservation.start")) == 1


def test_at_the_end_a_holder_over_quota_is_warned_then_stopped(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = start_daemon(ds01d)
    alice = unix_users["alice"]
    now = datetime.now().replace(microsecond=0)
    made = d.cli_json(
        "alice", "reserve", "--gpus", "2", "--from", now.strftime("%Y-%m-%d %H:%M:%S"),
        "--hours", "0.002",
    )  # fmt: skip
    end = datetime.fromisoformat(made["end"]).replace(tzinfo=None)
    # gpu_limit 1: both GPUs are hers only on top of her quota, until the end.
    exam = d.cli_json("alice", "container-create", "exam", "--image", "busybox", "--gpus", "2",
                      "--start")  # fmt: skip
    assert sorted(exam["gpus"]) == sorted(made["devices"])

    def warned() -> list[dict[str, Any]]:
        return [e for e in d.events_where(action="lifecycle.warn", user="alice")
                if e["details"].get("kind") == "reservation_end"]  # fmt: skip

    warning = wait_until("alice's warning before the end", warned, timeout=15)[0]
    warned_at = datetime.fromisoformat(warning["ts"]).astimezone().replace(tzinfo=None)
    assert end - timedelta(seconds=LEAD_S + 1) <= warned_at < end, (warned_at, end)
    notice = Path(alice.pw_dir) / "workspace" / ".ds01-notice"
    assert f"reservation {made['id']} ends" in notice.read_text()

    stop = wait_until(
        "the stop at the end", lambda: d.events_where(action="cleanup.reservation"), timeout=10
    )[0]
    assert made["id"] in stop["details"]["reason"] and "gpu_limit" in stop["details"]["reason"]
    assert datetime.fromisoformat(stop["ts"]).astimezone().replace(tzinfo=None) >= end
    assert docker_client.containers.get(docker_name("alice", "exam")).status == "exited"

    # Stopped in the window, then the reservation cancelled (its end cut to then): the
    # container stopped on its devices gives them back, so a start goes through quota
    # (gpu_limit 1; it asks for 2) rather than keeping both GPUs for free.
    now = datetime.now().replace(microsecond=0)
    again = d.cli_json(
        "alice", "reserve", "--gpus", "2", "--from", now.strftime("%Y-%m-%d %H:%M:%S"),
        "--hours", "1",
    )  # fmt: skip
    restarted = d.cli_json("alice", "container-start", "exam")
    assert sorted(restarted["gpus"]) == sorted(again["devices"])
    d.cli_json("alice", "container-stop", "exam")
    d.cli_json("alice", "reservations", "cancel", again["id"])
    late = d.cli("alice", "container-start", "exam", "--no-wait")  # at once: no wait needed
    assert late.returncode == 3, describe(late)
    given_back = wait_until(
        "the devices given back after the cancel",
        lambda: [e for e in d.events_where(action="gpu.release")
                 if again["id"] in str(e["details"])],
        timeout=10,
    )  # fmt: skip
    assert len(given_back) == 1 and "gpu_limit" in str(given_back[0]["details"])
