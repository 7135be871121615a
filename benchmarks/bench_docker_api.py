"""The docker CLI through ds01's Docker API door against the same CLI on dockerd directly.

Budgets (issue 17): ``docker ps`` through ds01 at most 1.5 times direct (at 20 and 300
containers), ``docker run -d`` at most 1.3 times, the exec round trip (``docker exec c
true``) at most 1.3 times, ``docker logs -f`` throughput at least 0.8 times direct.
Measured from the user's point of view: a fresh Debian docker CLI (20.10) process per
command, wall time until it exits, output captured; every command as root, so both sides
see the same containers' worth of work (the door shows root the containers ds01 made for
root).

The script starts its own ds01d (``tests/support.py``'s ``Ds01Daemon``) with the offline
test image registered and room for the containers. Each round runs both sides, the order
alternating, so drift hits both alike; medians over the rounds are reported with their
ratio. ``docker run -d`` is also timed direct with the options ds01 gives a container (read
back from one made through the door: limits, cgroup parent, dropped capabilities, binds,
labels) on the caller's own network: what Docker itself costs for the isolation ds01
requires, shown against plain ``docker run -d`` and against the door (the three sides
rotated). ``docker ps`` is timed with N ds01 containers present (made through the door,
stopped) and lists them all (``-a``) on both sides; the direct side filters by ds01's
label, so both print the same rows. ``docker logs -f`` follows a fresh container (one per
side and round) that waits ``--log-pause`` seconds (2; the CLI starts following meanwhile),
prints ``--log-mb`` MB as fast as it can and exits: the throughput is
the bytes the CLI read over the time from its first byte to its end (a door that could
not keep up with the printer would lag behind it and take longer). ``bytes_read`` is what
the CLI got on each side: less than was printed when lines rotated out of the container's
log before they were read (ds01's containers keep two files of 10 MiB).

Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_docker_api.py [--json] [--rounds N]
[--sizes 20,300] [--log-mb N] [--log-rounds N] [--log-pause S]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bench_container import run_options  # noqa: E402
from quick import parse_args  # noqa: E402
from support import (  # noqa: E402
    DEBIAN_DOCKER,
    TEST_IMAGE,
    TEST_IMAGES_YAML,
    Ds01Daemon,
    hold_machine_lock,
    user_env,
)

BUDGETS = {"docker ps -a": 1.5, "docker run -d": 1.3, "docker exec true": 1.3}
#: Throughput through the door over direct: at least this (a floor, not a ceiling).
LOGS_FLOOR = 0.8
#: What the followed container prints: lines of 100 bytes, then it exits (after a pause of
#: ``--log-pause`` seconds in which the CLI starts following).
PRINTER = "sleep {pause}; yes {line} | head -c {size}"
LINE = "x" * 99
LIMITS_YAML = """\
defaults:
  max_containers: 1000
"""
#: Prefix of every container this run makes, so that cleanup removes exactly these.
TAG = f"benchapi{os.getpid():x}"
DIRECT = "unix:///var/run/docker.sock"
PROBE = f"{TAG}-probe"  # the door's container ``ds01_run_options`` reads


def progress(message: str) -> None:
    print(f"bench_docker_api: {message}", file=sys.stderr, flush=True)


def docker(host: str, *args: str) -> tuple[float, str]:
    """One docker CLI run against ``host``: (wall seconds, stdout); fails on an error."""
    env = user_env(None, {"DOCKER_HOST": host})
    started = time.perf_counter()
    result = subprocess.run(
        [DEBIAN_DOCKER, *args], capture_output=True, text=True, env=env, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} on {host}: {result.stderr.strip()}")
    return elapsed, result.stdout


def compare(
    name: str, door: str, rounds: int, door_args: Sequence[str], direct_args: Sequence[str]
) -> dict[str, object]:
    """Median wall times of the docker CLI through the door (``door_args``) and direct
    (``direct_args``), and their ratio."""
    times: dict[str, list[float]] = {"door": [], "direct": []}
    for i in range(rounds):
        sides = [("door", door, door_args), ("direct", DIRECT, direct_args)]
        for side, host, args in sides if i % 2 == 0 else sides[::-1]:
            times[side].append(docker(host, *args)[0] * 1000)
    door_ms, direct_ms = statistics.median(times["door"]), statistics.median(times["direct"])
    return {
        "figure": name,
        "door_ms": round(door_ms, 1),
        "direct_ms": round(direct_ms, 1),
        "ratio": round(door_ms / direct_ms, 2),
        "budget": BUDGETS.get(name.split(" (")[0]),
        "rounds": rounds,
    }


def ds01_run_options(door: str) -> list[str]:
    """``docker run`` options equal to what ds01 gives a container ``docker run -d`` makes
    through the door, on the caller's own network (``bench_container.run_options``). The
    container it reads them from stays (``PROBE``: its bind sources are staged for it) until
    it is removed with ``docker(door, "rm", "-f", PROBE)``."""
    docker(door, "run", "-d", "--init", "--name", PROBE, TEST_IMAGE, "sleep", "600")
    own_id = docker(door, "inspect", "--format", "{{.Id}}", PROBE)[1].strip()
    attrs = json.loads(docker(DIRECT, "inspect", own_id)[1])[0]
    options, _, own_network = run_options(attrs)
    return [own_network if o == "bridge" else o for o in options[:-1]]


def run_figures(door: str, rounds: int) -> list[dict[str, object]]:
    """``docker run -d`` (removed after each round, not timed) through the door, direct,
    and direct with ds01's options on the caller's own network (what Docker itself costs
    for the isolation ds01 requires); and the exec round trip."""
    same = ds01_run_options(door)
    times: dict[str, list[float]] = {"door": [], "direct": [], "same": []}
    sides = [("door", door, []), ("direct", DIRECT, []), ("same", DIRECT, same)]
    for i in range(rounds):
        for side, host, options in sides[i % 3 :] + sides[: i % 3]:
            name = f"{TAG}-run-{side}-{i}"
            seconds, _ = docker(host, "run", "-d", "--init", "--name", name, *options,
                                TEST_IMAGE, "sleep", "600")  # fmt: skip
            times[side].append(seconds * 1000)
            docker(host, "rm", "-f", name)
    docker(door, "rm", "-f", PROBE)
    door_ms, direct_ms = statistics.median(times["door"]), statistics.median(times["direct"])
    same_ms = statistics.median(times["same"])
    rows: list[dict[str, object]] = [
        {"figure": "docker run -d", "door_ms": round(door_ms, 1),
         "direct_ms": round(direct_ms, 1), "ratio": round(door_ms / direct_ms, 2),
         "budget": BUDGETS["docker run -d"], "rounds": rounds},
        {"figure": "  direct with ds01's options, own net",
         "door_ms": round(same_ms, 1), "direct_ms": round(direct_ms, 1),
         "ratio": round(same_ms / direct_ms, 2), "rounds": rounds},
        {"figure": "  door against that", "door_ms":
         round(door_ms, 1), "direct_ms": round(same_ms, 1),
         "ratio": round(door_ms / same_ms, 2), "rounds": rounds},
    ]  # fmt: skip
    docker(door, "run", "-d", "--name", f"{TAG}-exec", TEST_IMAGE, "sleep", "600")
    own_id = docker(door, "inspect", "--format", "{{.Id}}", f"{TAG}-exec")[1].strip()
    times = {"door": [], "direct": []}
    for i in range(rounds):
        for side, host, ref in [("door", door, f"{TAG}-exec"), ("direct", DIRECT, own_id)][
            :: 1 if i % 2 == 0 else -1
        ]:
            times[side].append(docker(host, "exec", ref, "true")[0] * 1000)
    docker(door, "rm", "-f", f"{TAG}-exec")
    door_ms, direct_ms = statistics.median(times["door"]), statistics.median(times["direct"])
    rows.append(
        {"figure": "docker exec true", "door_ms": round(door_ms, 1),
         "direct_ms": round(direct_ms, 1), "ratio": round(door_ms / direct_ms, 2),
         "budget": BUDGETS["docker exec true"], "rounds": rounds}
    )  # fmt: skip
    return rows


def follow_rate(host: str, name: str) -> tuple[float, int]:
    """``docker logs -f name`` on ``host`` to its end: (bytes per second from the first byte
    to the end, bytes read)."""
    env = user_env(None, {"DOCKER_HOST": host})
    process = subprocess.Popen(
        [DEBIAN_DOCKER, "logs", "-f", name], stdout=subprocess.PIPE, env=env
    )
    assert process.stdout is not None
    out = process.stdout.fileno()
    first = os.read(out, 65536)
    started = time.perf_counter()
    read = len(first)
    while chunk := os.read(out, 1 << 20):
        read += len(chunk)
    elapsed = time.perf_counter() - started
    if process.wait() != 0:
        raise RuntimeError(f"docker logs -f {name} on {host} failed")
    return read / elapsed, read


def logs_figure(door: str, rounds: int, megabytes: int, pause: float) -> dict[str, object]:
    """``docker logs -f`` throughput of a container printing ``megabytes`` MB, through the
    door and direct (median MB/s, and door over direct)."""
    rates: dict[str, list[float]] = {"door": [], "direct": []}
    size = megabytes * 1_000_000
    read: dict[str, int] = {}
    for i in range(rounds):
        for side, host in [("door", door), ("direct", DIRECT)][:: 1 if i % 2 == 0 else -1]:
            name = f"{TAG}-logs-{side}-{i}"
            script = PRINTER.format(pause=pause, line=LINE, size=size)
            docker(door, "run", "-d", "--name", name, TEST_IMAGE, "sh", "-c", script)
            ref = name if side == "door" else docker(door, "inspect", "--format", "{{.Id}}",
                                                     name)[1].strip()  # fmt: skip
            rate, read[side] = follow_rate(host, ref)
            rates[side].append(rate / 1e6)
            docker(door, "rm", "-f", name)
    door_rate, direct_rate = statistics.median(rates["door"]), statistics.median(rates["direct"])
    return {
        "figure": f"docker logs -f ({megabytes} MB)",
        "door_mb_s": round(door_rate, 1),
        "direct_mb_s": round(direct_rate, 1),
        "ratio": round(door_rate / direct_rate, 2),
        "floor": LOGS_FLOOR,
        "bytes_read": read,
        "rounds": rounds,
    }


def cleanup() -> None:
    env = user_env(None, {"DOCKER_HOST": DIRECT})
    listed = subprocess.run(
        [DEBIAN_DOCKER, "ps", "-aq", "--filter", f"name={TAG}"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    ids = listed.stdout.split()
    if ids:
        subprocess.run([DEBIAN_DOCKER, "rm", "-f", *ids], capture_output=True, env=env, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument(
        "--rounds",
        type=int,
        default=21,
        help="timed rounds per figure (21: at 11 the median of docker run -d moved by as much as "
        "its distance to the budget from run to run)",
    )
    parser.add_argument("--sizes", default="20,300", help="containers present for docker ps")
    parser.add_argument("--log-mb", type=int, default=50, help="MB the followed container prints")
    parser.add_argument(
        "--log-pause",
        type=float,
        default=2.0,
        help="seconds the printer waits before it prints, for docker logs -f to be following",
    )
    parser.add_argument("--log-rounds", type=int, default=3, help="rounds of docker logs -f")
    # No pause: the CLI may start after the printer ended, and still reads it all (no figure).
    quick = {"rounds": 1, "sizes": "2", "log_mb": 1, "log_rounds": 1, "log_pause": 0.0}
    args = parse_args(parser, quick, argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if min(args.rounds, args.log_mb, args.log_rounds) < 1 or not sizes or sizes[0] < 1:
        parser.error("--rounds, --sizes, --log-mb and --log-rounds must be positive")
    if args.log_pause < 0:
        parser.error("--log-pause must not be negative")
    if os.geteuid() != 0:
        parser.error("run as root (it starts ds01d and talks to Docker)")
    lock = hold_machine_lock(progress)  # timings are worthless while tests load the machine
    daemon = Ds01Daemon(resource_limits=LIMITS_YAML, images=TEST_IMAGES_YAML)
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    try:
        daemon.start()
        door = f"unix://{daemon.docker_socket}"
        rows += run_figures(door, args.rounds)
        progress(f"docker logs -f of {args.log_mb} MB")
        rows.append(logs_figure(door, args.log_rounds, args.log_mb, args.log_pause))
        made = 0
        for size in sizes:
            while made < size:
                docker(door, "create", "--name", f"{TAG}-ps-{made}", TEST_IMAGE, "true")
                made += 1
            progress(f"docker ps at {size} containers")
            rows.append(
                compare(
                    f"docker ps -a ({size} containers)",
                    door,
                    args.rounds,
                    ["ps", "-a"],
                    ["ps", "-a", "--filter", "label=ds01.managed=true"],
                )
            )
    finally:
        cleanup()
        daemon.stop()
        shutil.rmtree(daemon.root, ignore_errors=True)
        if lock is not None:
            os.close(lock)
    document = {
        "benchmark": "bench_docker_api",
        "rounds": args.rounds,
        "sizes": sizes,
        "duration_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"{'figure':38} {'door ms':>9} {'direct ms':>10} {'ratio':>6} {'budget':>7}")
        for row in rows:
            if "door_mb_s" in row:
                print(f"{row['figure']!s:38} {row['door_mb_s']!s:>4} MB/s "
                      f"{row['direct_mb_s']!s:>5} MB/s {row['ratio']!s:>6} "
                      f"{'>=' + str(row['floor']):>7}")  # fmt: skip
                continue
            print(f"{row['figure']!s:38} {row['door_ms']!s:>9} {row['direct_ms']!s:>10} "
                  f"{row['ratio']!s:>6} {row.get('budget', '-')!s:>7}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
