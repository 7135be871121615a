"""A victim's ``container-list`` while another user floods ds01d's socket (issue 12, item 11).

Budget (issue 12): under a thousands-of-connections attacker, another user's
``container-list`` answers within its normal time; reported as the ratio of its median
(and p95) under attack to the same without an attacker, measured in the same run.

The script starts its own ds01d (``tests/support.py``'s ``Ds01Daemon``) and makes two
Unix users for the run (``ds01bv`` the victim, ``ds01ba`` the attacker; removed at the
end), holding the test machine lock meanwhile. The victim has one container. Per scenario,
an attacker process runs as ``ds01ba`` (the venv's Python, its descriptor limit raised to
the hard limit), and the victim runs ``container-list`` ``--runs`` times (a fresh CLI
process each, wall time until it exits). Scenarios:

- ``no attacker``: the baseline;
- ``idle flood``: the attacker keeps ``--connections`` connections open (reopening every
  second those ds01d refused or closed), sending nothing;
- ``slowloris``: the same number of connections, each sending a request head one byte a
  second (reopened when ds01d cuts them off);
- ``long polls``: the same number of ``GET /v1/events?…&wait=60`` requests held open.

Also reported: ds01d's largest thread count during the scenario (``/proc/PID/status``).
Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_connection_flood.py [--json]
[--runs N] [--connections N] [--settle S]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from quick import parse_args  # noqa: E402
from support import (  # noqa: E402
    BIN_DIR,
    TEST_IMAGES_YAML,
    Ds01Daemon,
    ensure_user,
    hold_machine_lock,
    remove_user,
    user_env,
)

VICTIM = "ds01bv"
ATTACKER = "ds01ba"
LIMITS_YAML = """\
defaults:
  max_containers: 3
  cpu_limit: 1
  memory_limit: 256M
"""

#: The attacker, run as ATTACKER. argv: socket, mode, connections. Prints "ready" once its
#: connections are up, then keeps them up (reopening what ds01d closes) until stdin closes.
FLOOD = r"""
import resource, select, socket, sys, threading, time

SOCKET, MODE, COUNT = sys.argv[1], sys.argv[2], int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
HEAD = b"GET /v1/whoami HTTP/1.1\r\nHost: ds01d\r\nX-Slow: " + b"a" * 4000 + b"\r\n\r\n"
POLL = (b"GET /v1/events?after_seq=4611686018427387904&wait=60&action=container.create "
        b"HTTP/1.1\r\nHost: ds01d\r\n\r\n")
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()


def opened():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(SOCKET)
        if MODE == "longpoll":
            sock.sendall(POLL)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    return [sock, 0]


def alive(slot):
    # Anything from ds01d (a refusal, a 408, an answer, the end) ends the connection's use.
    poller = select.poll()  # select() cannot watch descriptors above 1023
    poller.register(slot[0], select.POLLIN)
    return not poller.poll(0)


slots = [opened() for _ in range(COUNT)]
print("ready", flush=True)
while not stop.wait(1.0):
    for i, slot in enumerate(slots):
        if slot is None or not alive(slot):
            if slot is not None:
                slot[0].close()
            slots[i] = opened()
        elif MODE == "slowloris":
            try:
                slot[0].send(HEAD[slot[1] : slot[1] + 1])
                slot[1] += 1
            except OSError:
                pass
"""

SCENARIOS = (
    ("no attacker", None),
    ("idle flood", "idle"),
    ("slowloris", "slowloris"),
    ("long polls", "longpoll"),
)


def progress(message: str) -> None:
    print(f"bench_connection_flood: {message}", file=sys.stderr, flush=True)


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def start_attacker(
    daemon: Ds01Daemon, mode: str, connections: int, settle: float
) -> subprocess.Popen[str]:
    env = [f"{k}={v}" for k, v in user_env(ATTACKER).items()]
    process = subprocess.Popen(
        ["runuser", "-u", ATTACKER, "--", "env", "-i", *env, str(BIN_DIR / "python"), "-I",
         "-c", FLOOD, str(daemon.paths.socket), mode, str(connections)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"the {mode} attacker did not start")
    time.sleep(settle)  # let the flood settle (refusals, slow heads under way)
    return process


def measure(daemon: Ds01Daemon, runs: int) -> tuple[list[float], int]:
    """``runs`` wall times of the victim's container-list, and ds01d's most threads."""
    most = threads_of(daemon.pid)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = daemon.cli(VICTIM, "container-list")
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(f"container-list failed under attack:\n{result.stderr}")
        most = max(most, threads_of(daemon.pid))
    return times, most


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def run(runs: int, connections: int, settle: float) -> dict[str, Any]:
    daemon = Ds01Daemon(resource_limits=LIMITS_YAML, images=TEST_IMAGES_YAML)
    rows: list[dict[str, Any]] = []
    try:
        daemon.start()
        made = daemon.cli(VICTIM, "container-create", "thesis", "--image", "busybox")
        if made.returncode != 0:
            raise RuntimeError(f"container-create failed:\n{made.stderr}")
        measure(daemon, 3)  # warm the page cache and the daemon
        for name, mode in SCENARIOS:
            progress(f"{name} ...")
            attacker = start_attacker(daemon, mode, connections, settle) if mode else None
            try:
                times, threads = measure(daemon, runs)
            finally:
                if attacker is not None:
                    assert attacker.stdin is not None
                    attacker.stdin.close()
                    try:
                        attacker.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        attacker.kill()  # only the attacker this script started
                        attacker.wait()
            rows.append(
                {
                    "scenario": name,
                    "median_ms": statistics.median(times) * 1000,
                    "p95_ms": p95(times) * 1000,
                    "max_threads": threads,
                }
            )
            time.sleep(settle / 2)  # ds01d closes the last attacker's connections
    finally:
        daemon.cleanup()
    base = rows[0]
    for row in rows:
        row["median_ratio"] = row["median_ms"] / base["median_ms"]
        row["p95_ratio"] = row["p95_ms"] / base["p95_ms"]
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "runs": runs,
        "connections": connections,
        "cpus": os.cpu_count(),
        "docker": docker,
        "python": platform.python_version(),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="container-list runs per scenario")
    parser.add_argument("--connections", type=int, default=3000, help="attacker connections")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds a flood runs before the runs"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parse_args(parser, {"runs": 2, "connections": 50, "settle": 0.2}, argv)
    if os.geteuid() != 0:
        sys.exit("bench_connection_flood: run as root (it starts ds01d and makes two users)")
    lock = hold_machine_lock(progress)
    created = [user for user in (VICTIM, ATTACKER) if ensure_user(user)]
    try:
        result = run(args.runs, args.connections, args.settle)
    finally:
        for user in created:
            remove_user(user)
        if lock is not None:
            os.close(lock)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"container-list of another user, {result['runs']} runs per scenario, attacker with "
        f"{result['connections']} connections ({result['cpus']} CPUs, Docker "
        f"{result['docker']}, Python {result['python']})"
    )
    print(f"{'scenario':<14} {'median ms':>10} {'p95 ms':>8} {'ratio':>6} {'p95 ratio':>9} "
          f"{'threads':>7}")  # fmt: skip
    for row in result["rows"]:
        print(
            f"{row['scenario']:<14} {row['median_ms']:>10.1f} {row['p95_ms']:>8.1f} "
            f"{row['median_ratio']:>6.2f} {row['p95_ratio']:>9.2f} {row['max_threads']:>7}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
