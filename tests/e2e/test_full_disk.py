"""End to end: the disk under ds01d's state and log directories fills up, then frees.

ds01d's state and log directories are put on a 2 MiB tmpfs and filled with a file while a
container holding a GPU runs (so every lifecycle pass writes to the state database). Then
a create is refused with the plain message naming the full file system (exit code 1, not
"internal error") and leaves no container and no staging path, while a list still works;
the loops log their fault once instead of a traceback a pass; ``ds01 admin doctor``
reports the failing loop and the full disk. Once the file is removed the loops log their
recovery, the doctor says ok again, a create works, and the audit chain is intact.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from support import TEST_IMAGES_YAML, describe, make_world_traversable_dir, wait_until

LIMITS = """
    defaults:
      gpu_limit: 2
    policies:
      lifecycle_interval_seconds: 1
"""
#: Seconds the disk stays full while the log is watched: many passes of every 1 s loop.
FULL_FOR_SECONDS = 10
#: One line of ds01d's log: time, level, logger and message.
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>\S+): (?P<message>.*)$")


@pytest.fixture
def small_disk() -> Iterator[Callable[[], Path]]:
    """Factory: a fresh 2 MiB tmpfs (mode 0755), unmounted at teardown."""
    mounted: list[Path] = []

    def mount() -> Path:
        directory = make_world_traversable_dir("ds01-small-disk-")
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(directory)],
            check=True,
        )
        mounted.append(directory)
        return directory

    yield mount
    for directory in mounted:
        # Lazily: the daemon and containers' staging mounts may still hold it.
        subprocess.run(["umount", "-l", str(directory)], check=False)
        shutil.rmtree(directory, ignore_errors=True)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until its file system has no room left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (64 * 1024, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)


def doctor(d: Any) -> dict[str, dict[str, Any]]:
    result = d.cli(None, "admin", "doctor", "--json", timeout=30)
    assert result.returncode in (0, 1, 2), describe(result)
    return {f["check"]: f for f in json.loads(result.stdout)["findings"]}


def log_lines(d: Any, since: int) -> list[dict[str, str]]:
    """ds01d's log lines from byte ``since`` of its output file on, parsed."""
    text = d.output_file.read_bytes()[since:].decode(errors="replace")
    return [m.groupdict() for line in text.splitlines() if (m := LOG_LINE.match(line))]


def test_a_full_disk_is_said_plainly_logged_once_reported_and_recovered(
    ds01d, small_disk, docker_client, unix_users
) -> None:
    d = ds01d(
        LIMITS,
        images=TEST_IMAGES_YAML,
        start=False,
        extra_args=["--queue-interval", "1", "--oom-interval", "1", "--metrics-listen", "off"],
    )
    disk = small_disk()
    d.paths = replace(d.paths, state_dir=disk / "state", log_dir=disk / "log")
    d.start()
    running = d.cli(
        "alice", "container-create", "a", "--image", "busybox", "--gpus", "1", "--start"
    )
    assert running.returncode == 0, describe(running)
    alice = unix_users["alice"]
    refused_name = f"b._.{alice.pw_uid}"

    fill(disk / "fill")
    full_since = d.output_file.stat().st_size
    refused = d.cli("alice", "container-create", "b", "--image", "busybox")

    assert refused.returncode == 1, describe(refused)
    assert "internal error" not in refused.stderr, describe(refused)
    assert f"the file system of {disk}/state" in refused.stderr, describe(refused)
    assert "is full" in refused.stderr and "free space" in refused.stderr, describe(refused)
    assert not docker_client.containers.list(all=True, filters={"name": refused_name})
    # Its staging directory is ``{refused_name}.{digest}`` (ds01.runtime.staging.staging_key).
    assert not list((disk / "state" / "mounts").glob(f"{refused_name}*"))
    listed = d.cli("alice", "container-list")  # reading needs no room
    assert listed.returncode == 0 and "a" in listed.stdout.split(), describe(listed)

    failing = wait_until(
        "the doctor to report the failing lifecycle loop",
        lambda: (f := doctor(d))["lifecycle"]["level"] == "warning" and f,
        timeout=30,
    )
    assert "is full" in failing["lifecycle"]["message"], failing["lifecycle"]
    assert "failed in a row" in failing["lifecycle"]["message"], failing["lifecycle"]
    assert failing["storage"]["level"] == "critical", failing["storage"]
    time.sleep(FULL_FOR_SECONDS)  # the disk stays full this long: passes fail throughout

    lines = log_lines(d, full_since)
    errors = [(line["logger"], line["message"]) for line in lines if line["level"] == "ERROR"]
    repeated = [line for line, count in Counter(errors).items() if count > 1]
    assert not repeated, f"repeated in {FULL_FOR_SECONDS} s: {repeated}"
    assert any(
        logger == "ds01.daemon.lifecycle" and "lifecycle pass failed" in message
        for logger, message in errors
    ), d.log_tail()
    assert "Traceback" not in d.output_file.read_bytes()[full_since:].decode(errors="replace")

    (disk / "fill").unlink()
    healthy = wait_until(
        "the doctor to say the loops and the disk are fine again",
        lambda: (
            (f := doctor(d))["lifecycle"]["level"] == "ok" and f["storage"]["level"] == "ok" and f
        ),
        timeout=30,
    )
    assert all(
        healthy[check]["level"] == "ok" for check in ("queue", "oom-watcher", "disk-meter")
    ), healthy
    recovered = [
        line["message"]
        for line in log_lines(d, full_since)
        if line["logger"] == "ds01.daemon.lifecycle" and "recovered after" in line["message"]
    ]
    assert len(recovered) == 1 and "failed attempt(s) since" in recovered[0], recovered

    created = d.cli("alice", "container-create", "b", "--image", "busybox")
    assert created.returncode == 0, describe(created)
    outcomes = [e["outcome"] for e in d.events_where(action="container.create")]
    assert outcomes == ["success", "failure", "success"], outcomes
    verified = d.cli(None, "audit", "verify", "--log-dir", str(d.paths.log_dir))
    assert verified.returncode == 0 and "chain intact" in verified.stdout, describe(verified)
