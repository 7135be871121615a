"""End to end: a client that hangs up is a normal event for ds01d.

A user's ``container-create`` waits in the GPU queue on a terminal and is stopped with
Ctrl-C: the request stays queued and starts by itself when its turn comes, and ds01d's log
says nothing alarming about the client that went away (no traceback, no "crashed", no broken
pipe), though its long poll was cut off mid-wait and the answer it was about to write had
nowhere to go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pexpect

from support import TEST_IMAGES_YAML, Ds01Daemon, describe, simulated_a100s, wait_until

ONE_GPU = simulated_a100s(1)
LIMITS = """
    defaults:
      gpu_limit: 1
      max_containers: 3
"""
#: What a client hanging up must never leave in the daemon's log.
ALARMS = ("Traceback", "crashed", "BrokenPipe", " ERROR ", " WARNING ds01.daemon.conn")
#: ds01d's one line, at DEBUG, for an answer that found its client gone.
HANG_UP_LINE = "uid {uid}: connection dropped while answering"


def test_ctrl_c_on_a_queued_create_leaves_it_queued_and_the_log_calm(
    ds01d: Callable[..., Ds01Daemon], unix_users: dict[str, Any]
) -> None:
    d = ds01d(
        resource_limits=LIMITS,
        gpu_config=ONE_GPU,
        images=TEST_IMAGES_YAML,
        # No metrics exporter: its port taken (by any other ds01d on the machine) is an
        # ERROR line in the log that this test reads for alarms.
        extra_args=("--queue-interval", "0.5", "--log-level", "debug", "--metrics-listen", "off"),
    )
    d.cli_json("dave", "container-create", "fill", "--image", "busybox", "--gpus", "1")
    child = d.spawn("alice", "container-create", "train", "--image", "busybox", "--gpus", "1")
    child.expect_exact("Waiting…")
    [queued] = wait_until("alice queued", lambda: d.cli_json("alice", "queue"))
    child.sendintr()
    child.expect_exact(f"Left in the queue as {queued['id']}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130 or child.signalstatus is not None, child.before

    rows = [r for r in d.cli_json("alice", "queue") if r["id"] == queued["id"]]
    assert rows and rows[0]["state"] == "waiting" and rows[0]["container"] == "train", rows
    listed = d.cli("alice", "queue")
    assert queued["id"] in listed.stdout and "train" in listed.stdout, listed.stdout

    # Its turn comes (dave's container goes): the request starts by itself, which ends the
    # long poll that was cut off (without it, after QUEUE_POLL_SECONDS), and the answer finds
    # nobody to read it: one quiet DEBUG line, nothing more.
    removed = d.cli("dave", "container-remove", "fill", "--force")
    assert removed.returncode == 0, describe(removed)
    [started] = wait_until(
        "alice's request started", lambda: d.events_where(action="queue.start", user="alice")
    )
    assert started["details"]["container"] == "train", started
    wanted = HANG_UP_LINE.format(uid=unix_users["alice"].pw_uid)

    def hang_up_lines() -> list[str]:
        output = d.output_file.read_text(errors="replace")
        return [line for line in output.splitlines() if wanted in line]

    noticed = wait_until("the hang-up noticed", hang_up_lines, timeout=15)
    assert len(noticed) == 1 and " DEBUG " in noticed[0], noticed
    output = d.output_file.read_text(errors="replace")
    assert not [alarm for alarm in ALARMS if alarm in output], d.log_tail()
    assert not d.cli_json("alice", "queue")
    assert [c["name"] for c in d.cli_json("alice", "container-list")] == ["train"]
