"""End to end: ``ds01 events`` and ``ds01 admin report`` as real users against a real ds01d.

``ds01 events``: alice sees her own events (and ds01d's on her containers), never bob's;
filters by action and container work; asking for bob's events is refused, while an admin
sees everyone's; ``--follow`` prints a new event while it runs.

``ds01 admin report``: a container of alice's holds a simulated GPU (busy 50 %) for a few
seconds; the JSON report's GPU-hours allocated match the time it held the device (its row
in the usage ledger, from its create to the first queue pass after its removal), the used
hours are half the measured ones, the container is counted; Markdown comes with its PNG
chart next to it (a symbolic link planted under either name is replaced, never written
through), HTML with the chart inside; users are refused.
"""

from __future__ import annotations

import json
import os
import pwd
import selectors
import subprocess
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

from rawapi import RawApi

from ds01.gpu.simulated import write_simulated_telemetry
from support import TEST_IMAGES_YAML, describe, simulated_a100s, stop_process, user_env, wait_until

LIMITS = """
    defaults:
      gpu_limit: 2
      max_gpus_per_container: 2
      max_containers: 4
      gpu_hold_after_stop_minutes: 0
    groups:
      phd: {priority: 80}
    policies:
      lifecycle_interval_seconds: 0.5
"""

TWO_GPUS = simulated_a100s(2)


def uid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def events_of(d: Any, user: str, *args: str) -> list[dict[str, Any]]:
    result = d.cli(user, "events", "--json", *args)
    assert result.returncode == 0, describe(result)
    return json_lines(result.stdout)


def start(d: Any, user: str, name: str, *args: str) -> dict[str, Any]:
    info: dict[str, Any] = d.cli_json(
        user, "container-create", name, "--image", "busybox", "--start", *args
    )
    return info


def test_alice_sees_her_own_events_and_not_bobs(ds01d: Any) -> None:
    d = ds01d(resource_limits=LIMITS, gpu_config=TWO_GPUS, images=TEST_IMAGES_YAML)
    alice, bob = uid_of("alice"), uid_of("bob")
    start(d, "alice", "thesis", "--gpus", "1")
    start(d, "bob", "secret", "--gpus", "1")
    denied = d.cli("alice", "container-stop", "secret", "--user", "bob")
    assert denied.returncode == 5, describe(denied)
    assert d.cli("alice", "container-stop", "thesis").returncode == 0

    mine = events_of(d, "alice")
    actions = {e["action"] for e in mine}
    assert {"container.create", "gpu.allocate", "container.start", "container.stop"} <= actions
    assert "auth.denied" in actions  # her own refused request
    for event in mine:
        assert event["user"] == "alice" or (
            event["user"] == "ds01d" and event["resource"].endswith(f"._.{alice}")
        ), event
        assert "secret" not in json.dumps(event) or event["action"] == "auth.denied", event
        assert not event["resource"].endswith(f"._.{bob}"), event
        assert "prev" not in event and isinstance(event["seq"], int)
    seqs = [e["seq"] for e in mine]
    assert seqs == sorted(seqs)
    # every event of hers in the log is shown, and only those
    logged = [e["seq"] for e in d.events() if e["user"] == "alice"]
    assert set(logged) <= set(seqs)

    creates = events_of(d, "alice", "--action", "container.create")
    assert [e["resource"] for e in creates] == [f"container/thesis._.{alice}"]
    family = events_of(d, "alice", "--action", "container", "--container", "thesis")
    assert {e["action"] for e in family} == {"container.create", "container.start",
                                             "container.stop"}  # fmt: skip
    gpu_or_auth = [e for e in mine if e["action"].split(".")[0] in ("gpu", "auth")]
    assert {e["action"] for e in gpu_or_auth} >= {"gpu.allocate", "auth.denied"}
    assert events_of(d, "alice", "--action", "gpu,auth.*") == gpu_or_auth
    assert events_of(d, "alice", "--action", "gpu,auth.*", "--limit", "1") == gpu_or_auth[-1:]
    assert events_of(d, "alice", "--since", "2099-01-01") == []
    assert len(events_of(d, "alice", "--since", "1h", "--until", "now")) == len(mine)

    table = d.cli("alice", "events", "--action", "container.create")
    assert table.returncode == 0, describe(table)
    assert "container/thesis" in table.stdout and "TIME" in table.stdout
    # In a pipe the details are whole (a terminal cuts them at 60 characters without --wide).
    (create,) = creates
    assert "…" not in table.stdout and create["details"]["gpus"][0] in table.stdout, table.stdout
    assert len(table.stdout.splitlines()[1]) > 120

    refused = d.cli("alice", "events", "--user", "bob")
    assert refused.returncode == 5, describe(refused)
    assert d.events_where(user="alice", action="auth.denied", resource="events/bob")
    bad = d.cli("alice", "events", "--since", "soon")
    assert bad.returncode == 2, describe(bad)

    everyone = events_of(d, "erin", "--action", "container.create")
    assert {e["user"] for e in everyone} == {"alice", "bob"}
    bobs = events_of(d, "erin", "--user", "bob", "--action", "container.create")
    assert [e["resource"] for e in bobs] == [f"container/secret._.{bob}"]


#: What a user sends as a user name to get a clipboard write (OSC 52), a cursor move and a
#: line of her own making onto an admin's terminal through ``ds01 events``.
FORGED_USER = (
    "\x1b]52;c;ZWNobyBwd25lZAo=\x07\x1b[1A\x1b[2K\n"
    "2026-12-07 18:00:00  root  container.remove  container/thesis  success"
)


def test_an_admin_sees_what_a_user_sent_as_escapes_not_as_terminal_codes(ds01d: Any) -> None:
    d = ds01d()
    query = urllib.parse.quote(FORGED_USER, safe="")
    with RawApi(d.paths.socket, "alice") as api:
        reply = api.send(f"GET /v1/limits?user={query} HTTP/1.1\r\nHost: d\r\n\r\n".encode())
    assert reply.status is not None and reply.status >= 400, reply
    (denied,) = d.events_where(user="alice", action="auth.denied")
    assert FORGED_USER in denied["resource"]  # the log keeps what was sent

    for args in (["--wide"], ["--json"]):
        shown = d.cli("erin", "events", "--user", "alice", *args)
        assert shown.returncode == 0, describe(shown)
        assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout, shown.stdout
    table = d.cli("erin", "events", "--user", "alice", "--wide").stdout.splitlines()
    assert len(table) == 2, table  # the header and alice's one event: no forged row
    assert table[1].split()[2] == "alice" and "\\x1b]52;c;" in table[1], table


def read_line_matching(process: subprocess.Popen[str], want: Any, timeout: float) -> Any:
    """Read JSON lines from ``process`` until one satisfies ``want``; fail after ``timeout``."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = process.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        seen.append(event)
        if want(event):
            return event
    raise AssertionError(f"no matching line within {timeout} s; got {seen}")


def test_follow_prints_a_new_event_as_it_happens(ds01d: Any) -> None:
    d = ds01d(resource_limits=LIMITS, gpu_config=TWO_GPUS, images=TEST_IMAGES_YAML)
    alice = uid_of("alice")
    start(d, "alice", "before")
    env = user_env("alice", {"DS01_SOCKET": str(d.paths.socket)})
    command = [
        "runuser", "-u", "alice", "--", "env", "-i",
        *[f"{k}={v}" for k, v in env.items()],
        *d.command_for(("events", "--follow", "--json", "--action", "container.create")),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=user_env(None),
        cwd=pwd.getpwnam("alice").pw_dir,
    )
    try:
        backlog = read_line_matching(process, lambda e: True, timeout=15)
        assert backlog["resource"] == f"container/before._.{alice}"
        d.cli_json("alice", "container-create", "during", "--image", "busybox")
        new = read_line_matching(
            process, lambda e: e["resource"] == f"container/during._.{alice}", timeout=15
        )
        assert new["action"] == "container.create" and new["user"] == "alice"
        assert new["seq"] > backlog["seq"]
        assert process.poll() is None, "--follow ended by itself"
    finally:
        stop_process(process)
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def test_report_counts_the_gpu_hours_a_container_held(ds01d: Any, tmp_path: Path) -> None:
    d = ds01d(
        resource_limits=LIMITS,
        gpu_config=TWO_GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=("--queue-interval", "0.2"),
    )
    devices = [g["uuid"] for g in d.cli_json("alice", "gpu-status")]
    write_simulated_telemetry(
        d.paths.simulated_telemetry_file, {u: {"gpu_util_percent": 50} for u in devices}
    )
    asked = time.time()
    start(d, "alice", "train", "--gpus", "2")
    # Lifecycle passes measure the busy GPUs: 2 GPUs for over 3 s.
    wait_until(
        "GPU activity measured",
        lambda: (d.state_value("SELECT sum(measured_gpu_seconds) FROM gpu_activity") or 0) > 6,
    )
    removing = time.time()
    removed = d.cli("alice", "container-remove", "train", "--force")
    assert removed.returncode == 0, describe(removed)
    wait_until(  # the queue's next pass closes the usage ledger's row
        "the usage row closed",
        lambda: d.state_value("SELECT count(*) FROM usage WHERE end IS NULL") == 0,
    )
    closed_by = time.time()
    row_start, row_end = (
        datetime.fromisoformat(d.state_value(f"SELECT {column} FROM usage")).timestamp()
        for column in ("start", "end")
    )

    result = d.cli("erin", "admin", "report", "--from", "1h", "--format", "json")
    assert result.returncode == 0, describe(result)
    report = json.loads(result.stdout)
    (alice,) = [row for row in report["users"] if row["name"] == "alice"]
    train = f"container/train._.{uid_of('alice')}"
    [created] = d.events_where(action="container.create", resource=train)
    [removed_event] = d.events_where(action="container.remove", resource=train)
    # The ledger's row, in whole seconds, runs from the create to the queue's pass after the
    # removal, which a loaded machine may run a second or more after the removal's event (the
    # events' own times are no measure of it): the report counts 2 GPUs for the row's time.
    # (whole seconds: a second below each bound's own time)
    assert asked - 1 <= row_start <= event_time(created), (asked, row_start, created)
    assert removing - 1 <= row_end <= closed_by, (removing, row_end, closed_by)
    held = row_end - row_start
    between = event_time(removed_event) - event_time(created)
    print(f"ledger row {held:.0f} s, from the create to the removal's event {between:.2f} s")
    assert between > 3
    assert abs(alice["gpu_hours_allocated"] - 2 * held / 3600) <= 0.0001, (alice, held)
    assert alice["group"] == "phd"
    assert 0 < alice["gpu_hours_measured"] <= alice["gpu_hours_allocated"] + 0.0002
    assert abs(alice["gpu_hours_used"] - alice["gpu_hours_measured"] / 2) <= 0.0001
    assert alice["utilization_percent"] == 50.0
    assert alice["containers_created"] == 1
    assert (alice["idle_reclaims"], alice["queue_waits"]["count"]) == (0, 0)
    total = sum(row["gpu_hours_allocated"] for row in report["users"])
    assert abs(report["total"]["gpu_hours_allocated"] - total) <= 0.0002
    (phd,) = [g for g in report["groups"] if g["name"] == "phd"]
    assert phd["gpu_hours_allocated"] == alice["gpu_hours_allocated"]
    assert report["notes"]

    md = tmp_path / "report.md"
    png = tmp_path / "report.png"
    # Links planted under both names (the .png is implied): replaced, never written through.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    md.symlink_to(victim)
    png.symlink_to(victim)
    written = d.cli(None, "admin", "report", "--from", "1h", "--format", "md", "-o", str(md))
    assert written.returncode == 0, describe(written)
    assert victim.read_text() == "precious\n"
    assert not md.is_symlink() and not png.is_symlink()
    assert png.read_bytes().startswith(b"\x89PNG")
    text = md.read_text()
    assert "](report.png)" in text and "| alice | phd |" in text

    html = d.cli("erin", "admin", "report", "--from", "1h", "--format", "html")
    assert html.returncode == 0, describe(html)
    assert '<img alt="GPU-hours per user' in html.stdout
    assert "data:image/png;base64,iVBORw0KGgo" in html.stdout
    csv = d.cli("erin", "admin", "report", "--from", "1h", "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.splitlines()[1].startswith("user,alice,phd,")

    refused = d.cli("alice", "admin", "report", "--format", "json")
    assert refused.returncode == 5, describe(refused)
    assert d.events_where(user="alice", action="auth.denied", resource="report")
    assert os.path.exists(md)
