"""ds01d's cost as the number of containers grows: issue 15's budgets, in one run.

A real ds01d on the embedded default configuration (simulated GPUs; the offline test images;
``max_containers`` raised so that one user may hold them all) with its exporter on a free
loopback port, and N of its containers (``--containers``, default 500; created through its
API by root, not started). The figures, each a ds01 side and a Docker side measured in the
same run:

- ``one create at N / at 0``: one ``POST /v1/containers`` (no CLI), median of ``--rounds``,
  with N containers against none (the budget: at most 1.2); ``docker create`` for scale.
  The two are minutes apart, and on a shared machine the load may change meanwhile: the
  same ratio with each create divided by a ``docker create`` timed right after it is shown
  too;
- ``20 concurrent creates at N``: ``--concurrent`` API creates sent at once, until the last
  answers, against as many concurrent ``docker create`` processes (budget: at most 2);
- ``start to first list at N``: from starting ``ds01d`` (after a clean stop) until a
  ``GET /v1/containers`` is answered, against one ``docker ps -a`` (budget: 0.5 s);
- ``scrape p99 at N``: ``GET /metrics`` from the exporter, p99 of ``--scrapes``, steady and
  as many right after a Docker event of one of ds01's containers (an ``update`` that
  changes nothing, 20 ms before the scrape; budget: 10 ms p99 over both);
- ``container-list at 300``: the CLI against ``docker ps -a`` at ``--list-at`` containers
  (budget: at most 1.5);
- ``--help``: every ds01 command's ``--help`` against ``docker ps --help`` (budget: the
  slowest at most 2).

Holds the test machine lock (tests remove every ds01 container); removes what it made.
Timings are reported, never asserted.

Usage (root, Docker): ``/opt/ds01/venv/bin/python benchmarks/bench_scale.py [--json]
[--containers N] [--rounds N] [--concurrent N] [--scrapes N] [--list-at N] [--start-only]
[--against DS01D] [--busy N] [--quick]`` (``--start-only``: only the start to the first list,
with its slowest and fastest round; ``--against``: the same start of another ``ds01d``
console script, e.g. one installed from an older tree, round by round in turn with this
one's, starting each time with the other; ``--busy``: N processes that spin on a core each
while the starts are measured, for a machine made busy on purpose)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ds01.cli.client import Ds01Client  # noqa: E402
from ds01.errors import DaemonUnavailable  # noqa: E402
from ds01.host_setup import console_scripts  # noqa: E402
from ds01.runtime.docker import DockerRuntime  # noqa: E402
from quick import parse_args  # noqa: E402
from support import (  # noqa: E402
    BIN_DIR,
    TEST_IMAGE,
    TEST_IMAGES_YAML,
    Ds01Daemon,
    free_port,
    hold_machine_lock,
    user_env,
)

LIMITS_YAML = """\
defaults:
  max_containers: 100000
"""
#: Prefix of every container this run makes, ds01's and plain Docker's alike.
TAG = f"scale{os.getpid():x}"
POPULATE_THREADS = 4
#: How long after a Docker event the "after events" scrape is sent: time for ds01d to read
#: the event, so that the scrape sees whatever the event made it do.
AFTER_EVENT_S = 0.02


def progress(message: str) -> None:
    print(f"bench_scale: {message}", file=sys.stderr, flush=True)


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run_quiet(command: Sequence[str]) -> None:
    subprocess.run(list(command), capture_output=True, check=True, env=user_env(None))


@dataclass
class Row:
    """One figure: ds01's milliseconds against Docker's (``None``: no Docker side), and the
    budget issue 15 holds it to, in words."""

    figure: str
    ds01: float
    docker_side: str
    docker: float | None
    budget: str = ""

    @property
    def ratio(self) -> float | None:
        return round(self.ds01 / self.docker, 2) if self.docker else None


class ScaleBench:
    """The daemon under test, its clients and the names of what this run made."""

    def __init__(self, daemon: Ds01Daemon, metrics_port: int, rounds: int) -> None:
        self.daemon = daemon
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.rounds = rounds
        self.runtime = DockerRuntime.from_env()
        self.workspace = daemon.root / "workspace"
        self.workspace.mkdir(mode=0o755, exist_ok=True)
        self.kept: list[str] = []  # the N containers
        self.counter = 0

    def fresh(self, kind: str) -> str:
        self.counter += 1
        return f"{TAG}-{kind}-{self.counter}"

    def api(self) -> Ds01Client:
        return Ds01Client(str(self.daemon.paths.socket), timeout=120)

    def create(self, name: str) -> None:
        body = {"name": name, "image": "busybox", "gpus": 0, "workspace": str(self.workspace)}
        self.api().request("POST", "/v1/containers", body=body)

    def remove(self, name: str) -> None:
        self.api().request("DELETE", Ds01Client.container_path(name), query={"force": "1"})

    def docker_create(self, name: str) -> None:
        run_quiet(["docker", "create", "--name", name, TEST_IMAGE, "true"])

    def docker_remove(self, names: Sequence[str]) -> None:
        if names:
            run_quiet(["docker", "rm", "-f", *names])

    # the figures

    def populate(self, count: int) -> None:
        names = [self.fresh("kept") for _ in range(count - len(self.kept))]
        if names:
            progress(f"creating {len(names)} containers through ds01d (now {len(self.kept)})")
            with ThreadPoolExecutor(POPULATE_THREADS) as pool:
                list(pool.map(self.create, names))
            self.kept += names

    def one_create(self) -> list[float]:
        """Seconds of one API create, per round (each removed again, untimed)."""
        times = []
        for _ in range(self.rounds + 1):  # the first is a warm-up
            name = self.fresh("one")
            times.append(timed(lambda: self.create(name)))  # noqa: B023 (called at once)
            self.remove(name)
        return times[1:]

    def docker_one_create(self) -> list[float]:
        times = []
        for _ in range(self.rounds):
            name = self.fresh("plain")
            times.append(timed(lambda: self.docker_create(name)))  # noqa: B023
            self.docker_remove([name])
        return times

    def concurrent(self, count: int, create: Callable[[str], None]) -> float:
        """Median seconds until ``count`` creates sent at once have all returned."""
        walls = []
        for _ in range(self.rounds):
            names = [self.fresh("burst") for _ in range(count)]
            with ThreadPoolExecutor(count) as pool:
                walls.append(timed(lambda: list(pool.map(create, names))))  # noqa: B023
            if create == self.create:
                with ThreadPoolExecutor(POPULATE_THREADS) as pool:
                    list(pool.map(self.remove, names))
            else:
                self.docker_remove(names)
        return statistics.median(walls)

    def scrape(self) -> float:
        def get() -> None:
            with urllib.request.urlopen(self.metrics_url, timeout=30) as reply:
                reply.read()

        return timed(get)

    def scrapes(self, count: int) -> tuple[list[float], list[float]]:
        """Scrape times: steady, and right after an event of one of ds01's containers (an
        ``update`` that sets its restart policy to what it is: nothing changes, but Docker
        reports it as it would any change)."""
        target = f"{self.kept[0]}._.0"
        policy = self.runtime.inspect(target)["HostConfig"]["RestartPolicy"]["Name"] or "no"
        self.scrape()  # warm-up
        steady = [self.scrape() for _ in range(count)]
        after_events = []
        for _ in range(count):
            run_quiet(["docker", "update", "--restart", policy, target])
            time.sleep(AFTER_EVENT_S)
            after_events.append(self.scrape())
        return steady, after_events

    def start_to_first_list(
        self, ds01d: str | None = None, rounds: int | None = None
    ) -> list[float]:
        """Per round: seconds from starting ds01d (stopped cleanly; ``ds01d``: that console
        script instead of this tree's) to an answered list."""
        times = []
        command = self.daemon.command if ds01d is None else [ds01d, *self.daemon.command[1:]]
        for _ in range(self.rounds if rounds is None else rounds):
            self.daemon.stop()
            started = time.perf_counter()
            with self.daemon.output_file.open("ab") as out:
                self.daemon.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**user_env(None), **self.daemon.env},
                    cwd=self.daemon.root,
                )
            while True:
                try:
                    self.api().request("GET", "/v1/containers")
                    break
                except DaemonUnavailable:
                    if not self.daemon.running:
                        raise RuntimeError(f"ds01d exited\n{self.daemon.log_tail()}") from None
                    time.sleep(0.002)
            times.append(time.perf_counter() - started)
        return times

    def cli_times(self, command: Sequence[str]) -> float:
        """Median seconds of a command run to completion ``rounds`` times."""
        env = {**user_env(None), "DS01_SOCKET": str(self.daemon.paths.socket)}
        return statistics.median(
            timed(lambda: subprocess.run(list(command), capture_output=True, env=env, check=True))
            for _ in range(self.rounds)
        )

    def cleanup(self) -> None:
        """Remove every container whose name is this run's (ds01's and plain)."""
        for summary in self.runtime.api.containers(all=True, filters={"name": TAG}):
            with contextlib.suppress(Exception):
                self.runtime.api.remove_container(summary["Id"], force=True, v=True)
        self.runtime.api.close()


def measure_start(bench: ScaleBench, args: argparse.Namespace) -> list[Row]:
    """``--start-only``: ds01d's start to the first answered list at N, alone, or round by
    round in turn with ``--against``'s."""
    bench.populate(args.containers)
    progress(f"ds01d start to the first answered list, {args.rounds} rounds")
    with busy_cores(args.busy):
        if args.against is None:
            starts, others = bench.start_to_first_list(), []
        else:
            starts, others = alternating_starts(bench, args.against)
        ps_a = bench.cli_times(["docker", "ps", "-a"])
    n = args.containers
    rows = [
        Row(f"start to first list at {n}", ms(statistics.median(starts)), "docker ps -a",
            ms(ps_a), budget="<= 500 ms"),
        Row(f"  slowest start at {n}", ms(max(starts)), "-", None),
        Row(f"  fastest start at {n}", ms(min(starts)), "-", None),
    ]  # fmt: skip
    if others:
        rows += [
            Row(f"  this ds01d against {Path(args.against).name}", ms(statistics.median(starts)),
                str(args.against)[-30:], ms(statistics.median(others))),
            Row(f"  slowest start of {Path(args.against).name}", ms(max(others)), "-", None),
            Row(f"  fastest start of {Path(args.against).name}", ms(min(others)), "-", None),
        ]  # fmt: skip
    return rows


def alternating_starts(bench: ScaleBench, against: str) -> tuple[list[float], list[float]]:
    """This tree's starts and ``against``'s, one of each per round, the order alternating."""
    ours: list[float] = []
    theirs: list[float] = []
    for round_number in range(bench.rounds):
        sides = [(None, ours), (against, theirs)]
        for ds01d, times in sides if round_number % 2 == 0 else sides[::-1]:
            times += bench.start_to_first_list(ds01d, rounds=1)
        progress(f"round {round_number + 1}: {ms(ours[-1])} ms, against {ms(theirs[-1])} ms")
    return ours, theirs


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """``count`` processes spinning on a core each while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def measure(bench: ScaleBench, args: argparse.Namespace) -> list[Row]:
    n, at = args.containers, min(args.list_at, args.containers)
    progress(f"one create at 0 containers, {args.rounds} rounds")
    at_zero = statistics.median(bench.one_create())
    docker_one = statistics.median(bench.docker_one_create())
    bench.populate(at)
    progress(f"container-list at {at} containers")
    listing = bench.cli_times([str(BIN_DIR / "container-list")])
    ps_a = bench.cli_times(["docker", "ps", "-a"])
    bench.populate(n)
    progress(f"one create at {n} containers")
    at_n = statistics.median(bench.one_create())
    docker_one_at_n = statistics.median(bench.docker_one_create())
    progress(f"{args.concurrent} concurrent creates at {n} containers")
    burst = bench.concurrent(args.concurrent, bench.create)
    docker_burst = bench.concurrent(args.concurrent, bench.docker_create)
    progress(f"{args.scrapes} scrapes, steady and after events")
    steady, after_events = bench.scrapes(args.scrapes)
    progress("ds01d start to the first answered list")
    startup = statistics.median(bench.start_to_first_list())
    ps_a_at_n = bench.cli_times(["docker", "ps", "-a"])
    progress("--help of every command")
    helps = {
        name: bench.cli_times([str(BIN_DIR / name), "--help"])
        for name in console_scripts()
        if (BIN_DIR / name).exists()
    }
    docker_help = bench.cli_times(["docker", "ps", "--help"])
    slowest = max(helps, key=helps.__getitem__)
    return [
        Row(f"one API create at {n} (vs at 0)", ms(at_n), "the same at 0", ms(at_zero),
            budget="ratio <= 1.2"),
        Row("  the same, per docker create (x100, not ms)",
            round(100 * at_n / docker_one_at_n, 1), "at 0, per docker create",
            round(100 * at_zero / docker_one, 1)),
        Row("one API create at 0", ms(at_zero), "docker create", ms(docker_one)),
        Row(f"{args.concurrent} concurrent API creates at {n}", ms(burst),
            f"{args.concurrent} concurrent docker create", ms(docker_burst), budget="ratio <= 2"),
        Row(f"start to first list at {n}", ms(startup), "docker ps -a", ms(ps_a_at_n),
            budget="<= 500 ms"),
        Row(f"scrape p99 at {n}, steady + after events", ms(p99(steady + after_events)),
            "-", None, budget="<= 10 ms"),
        Row(f"  scrape p99 at {n}, steady", ms(p99(steady)), "-", None),
        Row(f"  scrape p99 at {n}, after events", ms(p99(after_events)), "-", None),
        Row(f"  scrape median at {n}, after events", ms(statistics.median(after_events)),
            "-", None),
        Row(f"container-list at {at}", ms(listing), "docker ps -a", ms(ps_a),
            budget="ratio <= 1.5"),
        Row(f"slowest --help: {slowest}", ms(helps[slowest]), "docker ps --help",
            ms(docker_help), budget="ratio <= 2"),
        Row("median --help over every command", ms(statistics.median(helps.values())),
            "docker ps --help", ms(docker_help)),
        Row("ds01 --help (the command list)", ms(helps["ds01"]), "docker ps --help",
            ms(docker_help)),
    ]  # fmt: skip


def machine() -> dict[str, Any]:
    version = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    )
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "docker": version.stdout.strip(),
        "python": platform.python_version(),
    }


def print_table(meta: dict[str, Any], rows: Sequence[Row]) -> None:
    print(
        f"ds01d at scale: medians of {meta['rounds']} rounds ({meta['date']}, {meta['cpus']} "
        f"CPUs, Docker {meta['docker']}, Python {meta['python']})"
    )
    header = (
        f"{'figure':<46} {'ds01 ms':>9}  {'docker side':<30} {'docker ms':>9} {'ratio':>6}  budget"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        docker = f"{r.docker:>9.1f}" if r.docker is not None else f"{'-':>9}"
        ratio = f"{r.ratio:>6.2f}" if r.ratio is not None else f"{'-':>6}"
        print(f"{r.figure:<46} {r.ds01:>9.1f}  {r.docker_side:<30} {docker} {ratio}  {r.budget}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--containers", type=int, default=500, help="ds01 containers (N)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure")
    parser.add_argument("--concurrent", type=int, default=20, help="creates sent at once")
    parser.add_argument("--scrapes", type=int, default=100, help="scrapes per kind")
    parser.add_argument("--list-at", type=int, default=300, help="containers for the list")
    parser.add_argument(
        "--start-only", action="store_true", help="only ds01d's start to the first list at N"
    )
    parser.add_argument(
        "--against",
        metavar="DS01D",
        help="with --start-only: another ds01d console script, started in turn with this one's",
    )
    parser.add_argument(
        "--busy", type=int, default=0, metavar="N", help="with --start-only: N spinning processes"
    )
    args = parse_args(
        parser,
        {"containers": 3, "rounds": 1, "concurrent": 2, "scrapes": 3, "list_at": 2},
        argv,
    )
    if min(args.containers, args.rounds, args.concurrent, args.scrapes, args.list_at) < 1:
        parser.error("every size must be positive")
    if (args.against is not None or args.busy) and not args.start_only:
        parser.error("--against and --busy go with --start-only")
    if args.busy < 0:
        parser.error("--busy must not be negative")
    if os.geteuid() != 0:
        parser.error("run as root (it starts ds01d and talks to Docker)")
    if shutil.which("docker") is None:
        parser.error("no docker CLI on PATH (run `make setup`)")
    lock = hold_machine_lock(progress)
    meta = {**machine(), "rounds": args.rounds, "containers": args.containers}
    port = free_port()
    daemon = Ds01Daemon(
        resource_limits=LIMITS_YAML,
        images=TEST_IMAGES_YAML,
        extra_args=["--metrics-listen", f"127.0.0.1:{port}"],
    )
    bench: ScaleBench | None = None
    started = time.monotonic()
    try:
        daemon.start()
        bench = ScaleBench(daemon, port, args.rounds)
        rows = measure_start(bench, args) if args.start_only else measure(bench, args)
    finally:
        # Not Ds01Daemon.cleanup(): that removes every ds01-managed container on the engine.
        with contextlib.suppress(Exception):
            daemon.stop()
        if bench is not None:
            bench.cleanup()
        shutil.rmtree(daemon.root, ignore_errors=True)
        if lock is not None:
            os.close(lock)
    meta["duration_s"] = round(time.monotonic() - started, 1)
    progress(f"done in {meta['duration_s']} s")
    if args.json:
        document = {
            "benchmark": "bench_scale",
            "machine": meta,
            "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
        }
        print(json.dumps(document, indent=2))
    else:
        print_table(meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
