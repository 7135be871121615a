"""Where dockerd spends the extra time of a container start on a user-defined bridge network.

ds01 puts each user's containers on a bridge network of their own (``ds01-u<uid>``), so
that users' containers cannot reach each other while one user's containers reach each other
by name. A network made with ``docker network create`` costs Docker more per container
start than the default bridge. This benchmark shows where, with no ds01 involved:

- ``docker run -d --init IMAGE sleep 600`` on the default bridge and on a network made with
  ``docker network create`` (removed at the end), one of each per round, the order alternated
  from round to round; medians reported;
- with ``perf`` (root): dockerd's child processes during each start, from the kernel's
  ``sched`` tracepoints (process exec, fork and exit, timed with ``CLOCK_MONOTONIC``): the
  OCI prestart hook ``libnetwork-setkey`` (runc runs dockerd's binary again, and dockerd
  sets up the container's network namespace while the hook waits), the re-executions of
  dockerd's binary that dockerd runs inside that namespace (``set-ipv6``; on a user-defined
  network also ``setup-resolver``, which installs the NAT rules of Docker's embedded DNS
  resolver at 127.0.0.11), and the ``iptables`` runs under them. A start that another
  container's start on the same engine overlapped (two hooks running in its window) is left
  out of these figures and counted;
- the floor of one re-execution, ``dockerd --version`` (dockerd's binary started and its
  package initialisers run, nothing done), and the embedded resolver's iptables calls alone,
  in a fresh network namespace (``unshare -n``), with ``iptables`` as dockerd finds it.

Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_network_start.py [--json] [--rounds N]
[--warmup N]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from quick import parse_args  # noqa: E402
from support import TEST_IMAGE  # noqa: E402

DOCKERD_PID_FILE = Path("/var/run/docker.pid")
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
DOCKERD = shutil.which("dockerd", path=SBIN_PATH) or "dockerd"
TRACEPOINTS = ("sched:sched_process_exec", "sched:sched_process_fork", "sched:sched_process_exit")
PERF_FIELDS = "pid,tid,time,event,trace"
#: How long perf may take to start recording before the steps are left out.
PERF_READY_S = 20.0
#: The iptables calls dockerd 20.10's ``setup-resolver`` makes in a new container's network
#: namespace (read from a trace of one start; the ports are examples). The two ``-C`` checks
#: fail, as they do there.
RESOLVER_RULES = (
    "-L -n",
    "-t nat -C OUTPUT -d 127.0.0.11 -j DOCKER_OUTPUT",
    "-t nat -N DOCKER_OUTPUT",
    "-t nat -I OUTPUT -d 127.0.0.11 -j DOCKER_OUTPUT",
    "-t nat -C POSTROUTING -d 127.0.0.11 -j DOCKER_POSTROUTING",
    "-t nat -N DOCKER_POSTROUTING",
    "-t nat -I POSTROUTING -d 127.0.0.11 -j DOCKER_POSTROUTING",
    "-t nat -I DOCKER_OUTPUT -d 127.0.0.11 -p udp --dport 53 -j DNAT "
    "--to-destination 127.0.0.11:38665",
    "-t nat -I DOCKER_POSTROUTING -s 127.0.0.11 -p udp --sport 38665 -j SNAT --to-source :53",
    "-t nat -I DOCKER_OUTPUT -d 127.0.0.11 -p tcp --dport 53 -j DNAT "
    "--to-destination 127.0.0.11:43959",
    "-t nat -I DOCKER_POSTROUTING -s 127.0.0.11 -p tcp --sport 43959 -j SNAT --to-source :53",
)
SIDES = ("default bridge", "user-defined network")
HOOK = "prestart hook (libnetwork-setkey)"
SET_IPV6 = "  re-exec set-ipv6"
RESOLVER = "  re-exec setup-resolver"
RESOLVER_IPTABLES = "    of which iptables runs"
HOOK_REST = "  the rest: hook's start, dockerd"
REEXECS = "re-execs of dockerd's binary (count)"
IPTABLES_RUNS = "iptables runs (count)"
#: The per-start steps, in the order they are printed.
STEPS = (HOOK, SET_IPV6, RESOLVER, RESOLVER_IPTABLES, HOOK_REST, REEXECS, IPTABLES_RUNS)


def progress(message: str) -> None:
    print(f"bench_network_start: {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- the trace -------------------------------------------------------------------------------


@dataclass
class Process:
    """One process seen in the trace: what it ran, when, and who forked it."""

    pid: int
    parent: int | None = None
    filename: str = ""
    exec_at: float | None = None
    exit_at: float | None = None

    @property
    def ms(self) -> float | None:
        if self.exec_at is None or self.exit_at is None:
            return None
        return (self.exit_at - self.exec_at) * 1000.0


EVENT = re.compile(r"^\s*(\d+)/(\d+)\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")


def parse_trace(text: str) -> dict[int, Process]:
    """Processes (by pid) from ``perf script -F pid,tid,time,event,trace`` of the three
    ``sched`` tracepoints; a thread's fork is recorded under the new task's id."""
    processes: dict[int, Process] = {}

    def get(pid: int) -> Process:
        return processes.setdefault(pid, Process(pid))

    for line in text.splitlines():
        match = EVENT.match(line)
        if match is None:
            continue
        tgid, _tid, stamp, kind, rest = match.groups()
        at = float(stamp)
        if kind == "sched_process_fork":
            child = re.search(r"child_pid=(\d+)", rest)
            if child is not None:
                get(int(child.group(1))).parent = int(tgid)
        elif kind == "sched_process_exec":
            found = re.search(r"filename=(\S+) pid=(\d+)", rest)
            if found is not None:
                proc = get(int(found.group(2)))
                proc.filename, proc.exec_at, proc.exit_at = found.group(1), at, None
        elif kind == "sched_process_exit" and "group_dead=true" in rest:
            get(int(tgid)).exit_at = at
    return processes


def descends_from(processes: dict[int, Process], pid: int, ancestor: int) -> bool:
    seen = set()
    current: int | None = pid
    while current is not None and current not in seen:
        if current == ancestor:
            return True
        seen.add(current)
        proc = processes.get(current)
        current = proc.parent if proc else None
    return False


def steps_of_start(
    processes: dict[int, Process], dockerd: int, start: float, end: float
) -> dict[str, float] | None:
    """The steps of the one container start between ``start`` and ``end`` (monotonic
    seconds); ``None`` if another container's start overlapped it (two hooks running in that
    window). The re-executions counted are dockerd's children started while the hook ran."""
    hooks = [
        p
        for p in processes.values()
        if p.filename == f"/proc/{dockerd}/exe"
        and p.exec_at is not None
        and p.exec_at <= end
        and (p.exit_at is None or p.exit_at >= start)
    ]
    if len(hooks) != 1 or hooks[0].exec_at is None or hooks[0].exit_at is None:
        return None
    hook_start, hook_end = hooks[0].exec_at, hooks[0].exit_at
    window = [
        p
        for p in processes.values()
        if p.exec_at is not None and hook_start <= p.exec_at <= hook_end
    ]
    reexecs = [
        p
        for p in window
        if p.filename == "/proc/self/exe"
        and p.parent is not None
        and descends_from(processes, p.parent, dockerd)
    ]
    iptables = [p for p in window if p.filename.endswith("/iptables")]
    under: dict[int, list[Process]] = {
        r.pid: [p for p in iptables if descends_from(processes, p.pid, r.pid)] for r in reexecs
    }
    resolver = [r for r in reexecs if under[r.pid]]
    others = [r for r in reexecs if not under[r.pid]]
    steps: dict[str, float] = {
        REEXECS: float(len(reexecs)),
        IPTABLES_RUNS: float(sum(len(v) for v in under.values())),
    }
    steps[HOOK] = (hook_end - hook_start) * 1000.0
    for name, found in ((SET_IPV6, others), (RESOLVER, resolver)):
        times = [t for t in (p.ms for p in found) if t is not None]
        if times:
            steps[name] = sum(times)
    steps[HOOK_REST] = steps[HOOK] - steps.get(SET_IPV6, 0.0) - steps.get(RESOLVER, 0.0)
    runs = [t for r in resolver for t in (p.ms for p in under[r.pid]) if t is not None]
    if runs:
        steps[RESOLVER_IPTABLES] = sum(runs)
    return steps


class Tracer:
    """``perf record`` of the ``sched`` tracepoints on every CPU, started before the rounds and
    read after them. ``available`` is false (with ``why``) where it cannot run."""

    def __init__(self) -> None:
        self.why = ""
        self.dockerd = 0
        self._dir = Path(tempfile.mkdtemp(prefix="bench-net-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._ack = -1
        self._ctl = -1

    @property
    def available(self) -> bool:
        return self._proc is not None

    def start(self) -> None:
        if os.geteuid() != 0 or shutil.which("perf") is None:
            self.why = "needs root and perf"
            return
        try:
            self.dockerd = int(DOCKERD_PID_FILE.read_text().strip())
        except (OSError, ValueError) as exc:
            self.why = f"dockerd's pid unknown ({exc})"
            return
        ctl_read, ctl_write = os.pipe()
        ack_read, ack_write = os.pipe()
        command = ["perf", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-D", "-1"]
        command += [f"--control=fd:{ctl_read},{ack_write}", "-o", str(self._dir / "perf.data")]
        for point in TRACEPOINTS:
            command += ["-e", point]
        self._proc = subprocess.Popen(
            command,
            pass_fds=(ctl_read, ack_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(ctl_read)
        os.close(ack_write)
        self._ack, self._ctl = ack_read, ctl_write  # perf stops when its control pipe closes
        os.write(ctl_write, b"enable\n")
        ready, _, _ = select.select([ack_read], [], [], PERF_READY_S)
        if not ready or not os.read(ack_read, 16).startswith(b"ack"):
            self.why = f"perf did not start recording: {self._stop()}"

    def _stop(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        proc.send_signal(2)  # SIGINT: perf writes its file and exits
        _, err = proc.communicate(timeout=60)
        for fd in (self._ack, self._ctl):
            if fd >= 0:
                os.close(fd)
        self._ack = self._ctl = -1
        return err.decode(errors="replace").strip()

    def finish(self) -> dict[int, Process]:
        """Stop recording; the processes seen."""
        if self._proc is None:
            return {}
        self._stop()
        script = subprocess.run(
            ["perf", "script", "-i", str(self._dir / "perf.data"), "-F", PERF_FIELDS],
            capture_output=True,
            text=True,
            check=False,
        )
        shutil.rmtree(self._dir, ignore_errors=True)
        if script.returncode != 0:
            self.why = f"perf script failed: {script.stderr.strip()}"
            return {}
        return parse_trace(script.stdout)

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self._dir, ignore_errors=True)


# -- the rounds --------------------------------------------------------------------------------


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


@contextmanager
def user_network() -> Iterator[str]:
    """A bridge network made with ``docker network create``, removed afterwards."""
    name = f"bench-net-{os.getpid()}"
    docker("network", "create", "--driver", "bridge", name)
    try:
        yield name
    finally:
        docker("network", "rm", name)


@dataclass
class Results:
    wall: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    windows: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {s: [] for s in SIDES}
    )
    floor: dict[str, list[float]] = field(default_factory=dict)


def timed_ms(fn: Callable[..., object], *args: Any) -> tuple[float, float, float]:
    """Run ``fn(*args)``; its start and end (monotonic seconds) and its wall time in ms."""
    start = time.monotonic()
    fn(*args)
    end = time.monotonic()
    return start, end, (end - start) * 1000.0


def run_rounds(network: str, rounds: int, warmup: int) -> Results:
    results = Results()
    iptables = shutil.which("iptables", path=SBIN_PATH) or "iptables"
    resolver_rules = " ; ".join(f"{iptables} --wait {rule} 2>/dev/null" for rule in RESOLVER_RULES)
    floors: dict[str, Callable[[], object]] = {
        "dockerd --version (one re-exec's floor)": lambda: subprocess.run(
            [DOCKERD, "--version"], capture_output=True, check=True
        ),
        f"the resolver's {len(RESOLVER_RULES)} iptables calls, unshare -n": lambda: subprocess.run(
            ["unshare", "-n", "sh", "-c", resolver_rules], capture_output=True, check=False
        ),
    }
    made: list[str] = []
    try:
        for index in range(warmup + rounds):
            counted = index >= warmup
            order = list(SIDES) if index % 2 == 0 else list(reversed(SIDES))
            for side in order:
                net = "bridge" if side == SIDES[0] else network
                name = f"bench-net-{os.getpid()}-{index}-{SIDES.index(side)}"
                command = ["run", "-d", "--init", "--name", name, "--network", net]
                start, end, ms = timed_ms(docker, *command, TEST_IMAGE, "sleep", "600")
                made.append(name)
                if counted:
                    results.wall[side].append(ms)
                    results.windows[side].append((start, end))
                docker("rm", "-f", name)
                made.remove(name)
            for label, fn in floors.items():
                _, _, ms = timed_ms(fn)
                if counted:
                    results.floor.setdefault(label, []).append(ms)
            progress(f"round {index + 1}/{warmup + rounds}")
    finally:
        for name in made:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    return results


# -- output ----------------------------------------------------------------------------------


def summarise(
    results: Results, processes: dict[int, Process], dockerd: int
) -> tuple[dict[str, dict[str, float | None]], int]:
    """Per step and side, the median over the rounds (ms, or a count); and how many traced
    starts were left out because another container started at the same time."""
    per_step: dict[str, dict[str, list[float]]] = {s: {side: [] for side in SIDES} for s in STEPS}
    left_out = 0
    if processes:
        for side in SIDES:
            for start, end in results.windows[side]:
                steps = steps_of_start(processes, dockerd, start, end)
                if steps is None:
                    left_out += 1
                    continue
                for step in STEPS:
                    per_step[step][side].append(steps.get(step, 0.0))
    table: dict[str, dict[str, float | None]] = {
        "docker run -d (wall)": {side: median(results.wall[side]) for side in SIDES}
    }
    for step in STEPS:
        table[step] = {side: median(per_step[step][side]) for side in SIDES}
    return table, left_out


def print_table(
    meta: dict[str, Any],
    table: dict[str, dict[str, float | None]],
    floor: dict[str, float | None],
) -> None:
    print(
        f"docker run -d on the default bridge and on a user-defined bridge network, medians of "
        f"{meta['rounds']} interleaved rounds ({meta['date']}, {meta['cpus']} CPUs, "
        f"{meta['docker']}, {meta['iptables']})"
    )
    header = f"{'figure':<40}{'default bridge':>16}{'user-defined':>14}{'difference':>12}"
    print(header)
    print("-" * len(header))

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for figure, sides in table.items():
        a, b = sides[SIDES[0]], sides[SIDES[1]]
        diff = None if a is None or b is None else b - a
        print(f"{figure:<40}{cell(a):>16}{cell(b):>14}{cell(diff):>12}")
    for figure, value in floor.items():
        print(f"{figure:<40}{cell(value):>16}")
    if meta.get("trace"):
        print(f"Steps: {meta['trace']}")


def version(command: Sequence[str]) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per figure")
    parser.add_argument("--warmup", type=int, default=1, help="rounds not counted, first")
    args = parse_args(parser, {"rounds": 1, "warmup": 0}, argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be positive, --warmup not negative")
    if shutil.which("docker") is None:
        parser.error("no docker CLI on PATH (run `make setup`)")
    meta: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "docker": version([DOCKERD, "--version"]),
        "iptables": version([shutil.which("iptables", path=SBIN_PATH) or "iptables", "--version"]),
    }
    tracer = Tracer()
    try:
        with user_network() as network:
            tracer.start()
            results = run_rounds(network, args.rounds, args.warmup)
            processes = tracer.finish()
    finally:
        tracer.close()
    table, left_out = summarise(results, processes, tracer.dockerd)
    if processes:
        meta["trace"] = (
            f"perf sched tracepoints; {left_out} start(s) left out (another container "
            "started at the same time)"
        )
    else:
        meta["trace"] = f"not traced ({tracer.why})"
    floor = {label: median(values) for label, values in results.floor.items()}
    if args.json:
        document = {"benchmark": "bench_network_start", "machine": meta, "steps_ms": table}
        json.dump({**document, "floor_ms": floor}, sys.stdout, indent=2)
        print()
    else:
        print_table(meta, table, floor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
