"""End to end: while Docker is down ds01d says so in plain words, logs the outage once, and
settles a create that Docker's going away interrupted as soon as Docker is back.

Real ds01d, real dockerd, real users. To stop dockerd in the middle of a create, at the
same point every time, ds01d finds on its ``PATH`` an ``iptables`` that waits while a gate
file exists and then runs the real one: the create of a user's first container installs
the firewall after recording its create intent and before asking Docker for the network.
The test stops dockerd while the create waits there, under the machine lock every
docker/e2e session holds, and starts it again in a ``finally``.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from support import (
    TEST_IMAGES_YAML,
    describe,
    restart_docker,
    stop_docker,
    user_env,
    wait_until,
)

PLAIN_WORDS = "Docker is not running or not answering on /var/run/docker.sock"
# What an exception's text looks like: "FileNotFoundError(2, …)", "('Connection aborted.'",
# "[Errno 111]", "Traceback", "<urllib3.connection…>".
RAW_EXCEPTION = re.compile(r"\w+Error\(|\('|\[Errno|Traceback|<\w+(\.\w+)+")
FOLLOWERS = ("Docker's events (OOM watch)", "Docker's events (the container ledger)")


def gated_iptables(directory: Path) -> tuple[Path, Path]:
    """An ``iptables`` in ``directory`` that, while the gate file exists, notes that it was
    reached and waits; then it runs the real one. Returns (gate, reached)."""
    gate, reached = directory / "gate", directory / "reached"
    script = directory / "iptables"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{gate}" ]; then : > "{reached}"; '
        f'while [ -e "{gate}" ]; do sleep 0.05; done; fi\n'
        'exec /usr/sbin/iptables "$@"\n'
    )
    script.chmod(0o755)
    return gate, reached


def intents(d: Any) -> list[str]:
    with sqlite3.connect(d.paths.state_db) as db:
        return [row[0] for row in db.execute("SELECT docker_name FROM create_intents")]


def in_background(call: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def assert_plain(result: subprocess.CompletedProcess[str]) -> None:
    text = result.stdout + result.stderr
    assert not RAW_EXCEPTION.search(text), describe(result)


def test_docker_down_plain_words_one_log_line_and_intents_settled_when_back(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any], tmp_path: Path
) -> None:
    uid = unix_users["alice"].pw_uid
    subprocess.run(["docker", "network", "rm", f"ds01-u{uid}"], capture_output=True, check=False)
    gate, reached = gated_iptables(tmp_path)
    path = f"{tmp_path}:{user_env(None)['PATH']}"
    d = ds01d(images=TEST_IMAGES_YAML, env={"PATH": path})
    pid = d.pid
    gate.touch()
    thread, created = in_background(
        lambda: d.cli("alice", "container-create", "first", "--image", "busybox", timeout=120)
    )
    try:
        wait_until("the create to reach the firewall", reached.exists, timeout=30)
        stop_docker()
        gate.unlink()
        thread.join(60)
        [failed] = created
        assert failed.returncode == 1, describe(failed)
        assert PLAIN_WORDS in failed.stderr and "ds01 admin doctor" in failed.stderr
        assert_plain(failed)
        assert intents(d) == [f"first._.{uid}"]  # left by the create Docker's going away cut

        for command in (
            ("container-list",),
            ("container-create", "second", "--image", "busybox"),
            ("container-stop", "first"),
            ("container-start", "first"),
            ("gpu-status",),
            ("check-limits",),
        ):
            down = d.cli("alice", *command, timeout=60)
            assert_plain(down)
            if command[0] in ("container-list", "container-create"):
                assert down.returncode == 1 and PLAIN_WORDS in down.stderr, describe(down)
        wait_until("the followers to notice", lambda: _all_lost(d), timeout=30)
        time.sleep(6)  # an outage of seconds: retried several times, logged once
        assert intents(d) == [f"first._.{uid}"]  # nothing to settle while Docker is away
    finally:
        gate.unlink(missing_ok=True)
        restart_docker()

    wait_until("the failed create settled", lambda: not intents(d), timeout=60)
    assert d.running and d.pid == pid  # without a restart of ds01d
    log = d.output_file.read_text()
    for follower in FOLLOWERS:
        assert log.count(f"{follower} failed") == 1, d.log_tail()
        wait_until(f"{follower} back", lambda f=follower: f"{f} recovered after" in log_of(d), 60)
        assert log_of(d).count(f"{follower} recovered after") == 1, d.log_tail()

    made = d.cli("alice", "container-create", "third", "--image", "busybox")
    assert made.returncode == 0, describe(made)
    listed = {c["name"] for c in d.cli_json("alice", "container-list")}
    in_docker = {
        c["Labels"]["ds01.name"]
        for c in docker_client.api.containers(all=True, filters={"label": f"ds01.uid={uid}"})
    }
    assert listed == in_docker == {"third"}


def log_of(d: Any) -> str:
    return str(d.output_file.read_text())


def _all_lost(d: Any) -> bool:
    log = log_of(d)
    return all(f"{follower} failed" in log for follower in FOLLOWERS)
