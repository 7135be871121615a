"""End to end: ``container-logs`` and ``container-stats`` as real users, against a real ds01d
and Docker.

A container's output is what its main process prints. Every ds01 container has a terminal,
and the main process (Docker's init, then the image's command) holds it as its standard
output, so a line written there by the owner (``> /proc/1/fd/1`` from ``container-open``,
which runs as the owner) is output of the container exactly as a program's own would be.

Checked here: the whole output and ``--tail``; ``--follow`` showing a line printed after
it started, ending by itself when the container stops, and a follower that hangs up
freeing its place in ds01d at once (otherwise a user's quiet followers, interrupted, would
soon have every later request of theirs refused); ``container-stats`` with real figures
within the container's limits, its GPU and the GPU's telemetry, its processes, stopped
containers; another user's container refused and logged; admins with ``--user``, who see
an escape sequence the container printed as escapes on their terminal (raw when piped); no
event for a read that succeeds.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from typing import Any

import pexpect

from ds01.gpu.simulated import write_simulated_telemetry
from support import PTY_TIMEOUT_S, TEST_IMAGES_YAML, describe, user_env, wait_for_docker_log

LIMITS = """
    defaults:
      gpu_limit: 1
      max_containers: 3
      cpu_limit: 1
      memory_limit: 256M
"""
MEMORY_LIMIT_BYTES = 256 * 1024**2
#: Followers interrupted in a row: more than one user may have waiting requests at once
#: (``ConnectionLimits.waiting.per_uid``, 16).
INTERRUPTED_FOLLOWERS = 17


def say(d: Any, user: str, container: str, *lines: str) -> None:
    """Make ``container`` print ``lines``: written by its owner to its main process's
    standard output, the container's terminal. A newline first ends the line its shell's
    prompt left open. Returns once Docker's log holds the last line."""
    script = "printf '\\n%s' \"$@\" > /proc/1/fd/1; printf '\\n' > /proc/1/fd/1"
    result = d.cli(user, "container-open", container, "--", "sh", "-c", script, "say", *lines)
    assert result.returncode == 0, describe(result)
    wait_for_docker_log(user, container, lines[-1])


def lines_of(output: str) -> list[str]:
    """The lines of a terminal's output (``\\r\\n`` endings), without empty ones."""
    return [line for line in output.replace("\r", "").split("\n") if line.strip()]


def spawn(d: Any, user: str, *args: str) -> subprocess.Popen[bytes]:
    """Start the ds01 command ``args`` as ``user``, its output on a pipe, in a session of
    its own (so the whole command can be interrupted or killed). Ctrl-C's signal is given
    its default action, as a terminal's foreground command has it: a test run started in
    the background (``pytest … &``) would otherwise pass it on ignored."""
    environment = user_env(user, {"DS01_SOCKET": str(d.paths.socket)})
    assignments = [f"{key}={value}" for key, value in environment.items()]
    argv = [
        "runuser", "-u", user, "--", "env", "--default-signal=INT", "-i", *assignments,
        *d.command_for(args),
    ]  # fmt: skip
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd="/",
        start_new_session=True,
    )


def read_until(
    process: subprocess.Popen[bytes], needle: bytes, timeout: float = PTY_TIMEOUT_S
) -> bytes:
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
            raise AssertionError(f"{needle!r} not seen; got {seen[-2000:]!r}")
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"{needle!r} not seen before the end; got {seen[-2000:]!r}")
        seen += chunk
    return seen


def stop_group(process: subprocess.Popen[bytes], sig: int) -> int:
    """Send ``sig`` to the command's whole group, as a terminal's Ctrl-C does; its exit code."""
    os.killpg(process.pid, sig)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        tree = subprocess.run(
            ["ps", "-o", "pid,stat,wchan:32,cmd", "-g", str(process.pid)],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"still running 20 s after signal {sig}:\n{tree}") from None


def new_events(d: Any, seen: int) -> list[dict[str, Any]]:
    return d.events()[seen:]


def test_logs_show_what_the_container_printed_and_tail_keeps_the_last_lines(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "box", "--image", "busybox", "--start")
    say(d, "alice", "box", "jupyter starting", "port 8888 in use", "giving up")
    seen = len(d.events())

    whole = d.cli("alice", "container-logs", "box")
    last_two = d.cli("alice", "container-logs", "box", "--tail", "2")
    as_words = d.cli("alice", "container", "logs", "box", "-n", "1")

    assert whole.returncode == 0, describe(whole)
    shown = lines_of(whole.stdout)
    assert shown[-3:] == ["jupyter starting", "port 8888 in use", "giving up"], describe(whole)
    assert last_two.returncode == 0, describe(last_two)
    assert lines_of(last_two.stdout) == ["port 8888 in use", "giving up"], describe(last_two)
    assert lines_of(as_words.stdout) == ["giving up"], describe(as_words)
    # A read that succeeds is not an event, as for container-list.
    assert new_events(d, seen) == []


def test_logs_refuse_a_bad_tail_and_a_missing_container(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)

    for tail in ("-1", "many", "100001"):
        bad = d.cli("alice", "container-logs", "box", "--tail", tail)
        assert bad.returncode == 2, describe(bad)
        assert "0 to 100000" in bad.stderr, describe(bad)
    missing = d.cli("alice", "container-logs", "nothing-here")
    assert missing.returncode == 4, describe(missing)
    assert "container-list" in missing.stderr, describe(missing)


def test_follow_shows_new_output_until_interrupted_or_the_container_stops(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "box", "--image", "busybox", "--start")
    say(d, "alice", "box", "before")

    follower = spawn(d, "alice", "container-logs", "box", "-f", "--tail", "1")
    try:
        read_until(follower, b"before")
        say(d, "alice", "box", "after the follower started")
        read_until(follower, b"after the follower started")
        assert follower.poll() is None  # still following
    finally:
        code = stop_group(follower, signal.SIGINT)
    assert code == 0, "Ctrl-C ends a follow as its normal end"

    until_stop = spawn(d, "alice", "container-logs", "box", "--follow", "--tail", "0")
    stopped = d.cli("alice", "container-stop", "box")
    assert stopped.returncode == 0, describe(stopped)
    try:
        assert until_stop.wait(timeout=30) == 0
    finally:
        if until_stop.poll() is None:
            stop_group(until_stop, signal.SIGKILL)


def test_followers_that_hang_up_leave_no_request_behind(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "quiet", "--image", "busybox", "--start")
    say(d, "alice", "quiet", "only line")

    # Each follower is killed while the container prints nothing: only ds01d's watch on
    # the connection can end its stream. Left running, they would fill alice's share of
    # waiting requests, and the last follow would be refused (429).
    for _ in range(INTERRUPTED_FOLLOWERS):
        follower = spawn(d, "alice", "container-logs", "quiet", "-f")
        read_until(follower, b"only line")
        stop_group(follower, signal.SIGKILL)

    last = spawn(d, "alice", "container-logs", "quiet", "-f")
    try:
        read_until(last, b"only line")
        say(d, "alice", "quiet", "still answered")
        read_until(last, b"still answered")
    finally:
        stop_group(last, signal.SIGKILL)


def test_stats_measure_own_containers_within_their_limits(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    made = d.cli_json(
        "alice", "container-create", "train", "--image", "busybox", "--gpus", "1", "--start"
    )
    d.cli_json("alice", "container-create", "idle", "--image", "busybox")
    gpu = made["gpus"][0]
    write_simulated_telemetry(
        d.paths.simulated_telemetry_file,
        {gpu: {"gpu_util_percent": 64, "memory_used_mib": 1536, "process_count": 1}},
    )
    seen = len(d.events())

    rows = {r["name"]: r for r in d.cli_json("alice", "container-stats")}
    one = d.cli_json("alice", "container-stats", "train")
    table = d.cli("alice", "container-stats")
    detail = d.cli("alice", "container-stats", "train")

    assert set(rows) == {"train", "idle"}
    train = rows["train"]
    assert train["status"] == "running"
    assert 0 < train["memory_bytes"] <= train["memory_limit_bytes"] == MEMORY_LIMIT_BYTES
    assert train["pids"] >= 1
    assert train["cpu_percent"] is not None and 0 <= train["cpu_percent"] <= 100
    assert train["cpu_limit"] == 1
    assert train["gpus"] == [
        {"uuid": gpu, "utilization_percent": 64, "memory_used_bytes": 1536 * 1024**2}
    ]
    assert "processes" not in train or train["processes"] is None
    idle = rows["idle"]
    assert idle["status"] != "running"
    assert (idle["cpu_percent"], idle["memory_bytes"], idle["pids"]) == (None, None, None)

    assert one["name"] == "train" and one["gpus"] == train["gpus"]
    commands = [p["command"] for p in one["processes"]]
    assert any("docker-init" in c for c in commands), one["processes"]
    assert all(p["user"] in ("alice", str(unix_users["alice"].pw_uid)) for p in one["processes"])

    assert table.returncode == 0, describe(table)
    header, *body = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "STATUS", "CPU"], describe(table)
    by_name = {line.split()[0]: line for line in body}
    assert "64%/1.5G" in by_name["train"] and "/256M" in by_name["train"], describe(table)
    assert by_name["idle"].split()[2:] == ["-", "-", "-", "-"], describe(table)
    assert detail.returncode == 0, describe(detail)
    assert gpu in detail.stdout and "docker-init" in detail.stdout, describe(detail)
    # A read that succeeds is not an event, as for container-list.
    assert new_events(d, seen) == []


def test_another_users_container_is_refused_and_logged_but_admins_may_look(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "private", "--image", "busybox", "--start")
    say(d, "alice", "private", "alice's secret output")
    full_name = f"private._.{unix_users['alice'].pw_uid}"

    for args in (
        ("container-logs", full_name),
        ("container-logs", full_name, "-f"),
        ("container-stats", full_name),
        ("container-logs", "private", "--user", "alice"),
        ("container-stats", "--user", "alice"),
    ):
        seen = len(d.events())
        refused = d.cli("bob", *args)
        assert refused.returncode == 5, describe(refused)
        assert "secret" not in refused.stdout + refused.stderr
        denied = [
            e
            for e in new_events(d, seen)
            if (e["user"], e["action"], e["outcome"]) == ("bob", "auth.denied", "denied")
        ]
        assert denied, f"{args}: not logged; {new_events(d, seen)}"
    # bob's own listing does not show alice's container
    assert d.cli_json("bob", "container-stats") == []

    # erin is an admin (group ds01-admin)
    logs = d.cli("erin", "container-logs", "private", "--user", "alice", "--tail", "1")
    assert logs.returncode == 0, describe(logs)
    assert lines_of(logs.stdout) == ["alice's secret output"], describe(logs)
    stats = d.cli_json("erin", "container-stats", "--user", "alice")
    assert [r["name"] for r in stats] == ["private"]

    # What alice's container prints reaches erin's terminal as text: an OSC 52 sequence
    # (write the clipboard) shows as escapes; piped, the bytes are as printed.
    say(d, "alice", "private", "\x1b]52;c;ZWNobwo=\x07clipboard")
    for args in (("--tail", "1"), ("--tail", "1", "--follow")):
        on_terminal = d.spawn("erin", "container-logs", "private", "--user", "alice", *args)
        on_terminal.expect("clipboard")
        shown = on_terminal.before
        assert "\x1b" not in shown and shown.endswith("\\x1b]52;c;ZWNobwo=\\x07"), shown
        if "--follow" in args:
            on_terminal.sendintr()
        on_terminal.expect(pexpect.EOF)
    piped = d.cli("erin", "container-logs", "private", "--user", "alice", "--tail", "1")
    assert "\x1b]52;c;ZWNobwo=\x07clipboard" in piped.stdout, describe(piped)


def test_both_commands_have_the_four_help_tiers(ds01d: Any, unix_users: dict[str, Any]) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    d.cli_json("alice", "container-create", "box", "--image", "busybox")
    # Answers to --guided: the questions, then "n" to "Proceed?": nothing runs.
    answers = {"container-logs": "box\n\n\nn\n", "container-stats": "\n\nn\n"}
    for command, guided_answers in answers.items():
        pages = {}
        for tier in ("--help", "--info", "--concepts"):
            result = d.cli("alice", command, tier)
            assert result.returncode == 0, describe(result)
            pages[tier] = result.stdout
        assert len(set(pages.values())) == 3
        assert "EXAMPLES" in pages["--info"] and command in pages["--info"]
        assert "output" in pages["--concepts"].lower()
        guided = d.cli("alice", command, "--guided", input=guided_answers)
        assert guided.returncode == 0, describe(guided)
        assert "Proceed?" in guided.stdout, describe(guided)
