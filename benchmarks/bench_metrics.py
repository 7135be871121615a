"""One exporter scrape against the budget (50 ms at 300 containers).

Two figures:

- **built** (no Docker): the exporter's own code for one scrape, as prometheus-client runs it
  (``Snapshotter.take`` → the metric families → the exposition text), against a stand-in
  for ds01d's service: 300 containers parsed on every scrape from Engine-like list entries
  (as ``DockerRuntime.list_managed`` parses them), 60 users, a 16-GPU simulated inventory
  (8 whole GPUs, 8 split into seven 1g instances: 64 devices), a real SQLite store with 20
  waiting requests, a real event log, telemetry for every device from the simulated
  backend's file. Only the Engine's list call is not in it; the live figure has it.
  The first scrape (which resolves every user's limits) is reported apart.
- **live** (``--live N``, root and Docker; 0 skips): a real ds01d with the exporter on a free
  loopback port and N containers created through its API (not started), scraped over HTTP
  from this process: the whole scrape as Prometheus sees it, Docker list call included.
  Next to it, the Engine list call alone (``GET /containers/json`` with ds01's filter).

Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_metrics.py [--json] [--rounds N]
[--containers N] [--live N]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from ds01.config.gpu_config import GpuConfig
from ds01.config.images import ImagesConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import Ds01Config
from ds01.core.gpu_use import UnmanagedUse
from ds01.events.log import EventLog
from ds01.gpu.simulated import SimulatedBackend, write_simulated_telemetry
from ds01.metrics.activity import ActivityCounters
from ds01.metrics.collector import Ds01Collector
from ds01.model import labels as L
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser
from ds01.runtime.store import QueuedRequest, StateStore
from quick import parse_args

REPO = Path(__file__).resolve().parent.parent
BUDGET_MS = 50.0
USERS = 60
QUEUED = 20
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def progress(message: str) -> None:
    print(f"bench_metrics: {message}", file=sys.stderr, flush=True)


def stats(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(ordered[-1], 2),
        "n": len(ordered),
    }


# -- built: the collector code against a stand-in service ----------------------------------


def gpu_config() -> GpuConfig:
    split = {"mig": True, "mig_instances": [{"profile": "1g.5gb"}] * 7}
    return GpuConfig.model_validate(
        {"simulated": {"gpus": [{}] * 8 + [split] * 8}, "energy": {"sample_interval_seconds": 30}}
    )


def summaries(count: int, device_uuids: list[str], equivalents: list[Fraction]) -> list[Any]:
    """Engine-like ``GET /containers/json`` entries of ``count`` managed containers; the
    first ones hold one device each."""
    entries = []
    for n in range(count):
        uid = 2000 + n % USERS
        held = n < len(device_uuids)
        labels = {
            L.MANAGED: "true",
            L.USER: f"user{uid}",
            L.UID: str(uid),
            L.GROUP: "phd" if uid % 2 else "msc",
            L.NAME: f"c{n}",
            L.GPUS: device_uuids[n] if held else "",
            L.GPU_EQUIVALENTS: str(equivalents[n]) if held else "0",
            L.CREATED_AT: NOW.isoformat(),
            L.IMAGE: "busybox",
            L.MEMORY_BYTES: str(4 * 1024**3),
            L.CPUS: "2",
        }
        entries.append(
            {
                "Id": f"{n:064x}",
                "Names": [f"/c{n}._.{uid}"],
                "Image": "ds01-test/busybox:latest",
                "State": "running" if n % 3 else "exited",
                "Labels": labels,
                "Ports": [],
            }
        )
    return entries


class StandIn:
    """What the snapshot reads of ``Ds01Service``, with records parsed on every call."""

    def __init__(self, root: Path, containers: int) -> None:
        self.backend = SimulatedBackend(gpu_config(), telemetry_file=root / "telemetry.json")
        self.store = StateStore(root / "ds01.db")
        self.events = EventLog(root / "events.jsonl")
        self.lifecycle_last_pass: datetime | None = NOW
        self.unmanaged_gpu_use: tuple[UnmanagedUse, ...] = ()
        limits = {
            "defaults": {"gpu_limit": 2, "max_containers": 10},
            "aggregate": {"defaults": {"memory_limit": "64G"}},
        }
        self._config = Ds01Config(
            ResourceLimitsConfig.model_validate(limits), self.backend.config, ImagesConfig()
        )
        devices = self.backend.inventory().devices
        self._summaries = summaries(
            containers, [d.uuid for d in devices], [d.gpu_equivalents for d in devices]
        )
        write_simulated_telemetry(
            self.backend.telemetry_file or root / "telemetry.json",
            {
                d.uuid: {"gpu_util_percent": 50, "memory_used_mib": 1024, "process_count": 1}
                for d in devices
                if d.kind == "gpu"
            }
            | {
                g.uuid: {"power_watts": 250, "energy_joules": 1e9}
                for g in self.backend.inventory().gpus
            },
        )
        for n in range(QUEUED):
            self.store.add_queued(
                QueuedRequest(
                    id=f"q{n}",
                    user=f"user{2000 + n}",
                    uid=2000 + n,
                    group="phd",
                    kind="create",
                    container=f"q{n}",
                    request_json="{}",
                    whole_gpus=1,
                    mig="",
                    submitted_at=(NOW - timedelta(minutes=n)).isoformat(),
                )
            )

    def observed_records(self) -> list[ContainerRecord]:
        return [ContainerRecord.from_summary(s) for s in self._summaries]

    def config(self) -> Ds01Config:
        return self._config

    def now(self) -> datetime:
        return NOW


def lookup(uid: int) -> UnixUser:
    return UnixUser(f"user{uid}", uid, uid, Path(f"/home/user{uid}"), (f"user{uid}",))


def built(containers: int, rounds: int) -> dict[str, Any]:
    from ds01.metrics.snapshot import Snapshotter

    with tempfile.TemporaryDirectory(prefix="ds01-bench-metrics-") as tmp:
        source = StandIn(Path(tmp), containers)
        energy = {(f"user{2000 + n}", "phd"): 3.6e6 * n for n in range(USERS)}
        activity = ActivityCounters()
        for n in range(100):
            activity.observe_wait(float(n * 37))
        taker = Snapshotter(
            source,  # type: ignore[arg-type]
            activity,
            lambda: energy,
            user_lookup=lookup,
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Ds01Collector(taker.take))

        def scrape() -> tuple[float, int]:
            start = time.perf_counter()
            text = generate_latest(registry)
            return (time.perf_counter() - start) * 1000, len(text)

        first_ms, size = scrape()
        times = [scrape()[0] for _ in range(rounds)]
        parse = []
        for _ in range(rounds):
            start = time.perf_counter()
            source.observed_records()
            parse.append((time.perf_counter() - start) * 1000)
    return {
        "containers": containers,
        "devices": 64,
        "first_scrape_ms": round(first_ms, 2),
        "scrape": stats(times),
        "of_which_parsing_records": stats(parse),
        "exposition_bytes": size,
    }


# -- live: a real ds01d ------------------------------------------------------------------------


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def live(containers: int, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from ds01.cli.client import Ds01Client
    from ds01.runtime.docker import DockerRuntime
    from support import TEST_IMAGES_YAML, Ds01Daemon, free_port

    port = free_port()
    daemon = Ds01Daemon(
        resource_limits="defaults:\n  max_containers: 1000\n  gpu_limit: 4\n",
        images=TEST_IMAGES_YAML,
        extra_args=["--metrics-listen", f"127.0.0.1:{port}"],
    )
    runtime = DockerRuntime.from_env()
    names: list[str] = []
    try:
        daemon.start()
        workspace = daemon.root / "workspace"
        workspace.mkdir(mode=0o755)
        client = Ds01Client(str(daemon.paths.socket))
        progress(f"creating {containers} containers through ds01d (not started)")
        for n in range(containers):
            name = f"benchmetrics-{os.getpid()}-{n}"
            # The default simulated inventory: three whole GPUs and a split one.
            body = {"name": name, "image": "busybox", "gpus": 1 if n < 3 else 0}
            if n == 3:
                body["mig"] = ["3g.20gb"]
            client.request("POST", "/v1/containers", body=body | {"workspace": str(workspace)})
            names.append(name)
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> None:
            with urllib.request.urlopen(url, timeout=10) as reply:
                reply.read()

        progress(f"scraping {rounds} times")
        scrapes = timed(scrape, rounds)
        engine = timed(runtime.list_managed, rounds)
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                runtime.remove(f"{name}._.0", force=True, missing_ok=True)
        daemon.stop()
        shutil.rmtree(daemon.root, ignore_errors=True)
    return {
        "containers": containers,
        "http_scrape": stats(scrapes),
        "engine_list_call": stats(engine),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--rounds", type=int, default=100, help="scrapes per figure")
    parser.add_argument("--containers", type=int, default=300, help="containers, built figure")
    parser.add_argument(
        "--live", type=int, default=30, help="containers for the live figure (0: skip it)"
    )
    args = parse_args(parser, {"rounds": 2, "containers": 10, "live": 2}, argv)
    if args.rounds < 1 or args.containers < 0 or args.live < 0:
        parser.error("--rounds must be positive, --containers and --live not negative")
    document: dict[str, Any] = {"benchmark": "bench_metrics", "budget_ms": BUDGET_MS}
    progress(f"built: {args.containers} containers, {args.rounds} scrapes")
    document["built"] = built(args.containers, args.rounds)
    if args.live:
        if os.geteuid() != 0:
            parser.error("--live needs root (it starts ds01d); --live 0 skips it")
        document["live"] = live(args.live, args.rounds)
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    b = document["built"]
    print(f"Exporter scrape (budget {BUDGET_MS:g} ms at 300 containers)")
    print(
        f"  built, {b['containers']} containers, {b['devices']} devices: median "
        f"{b['scrape']['median_ms']} ms, p99 {b['scrape']['p99_ms']} ms, max "
        f"{b['scrape']['max_ms']} ms ({b['exposition_bytes']} bytes; first scrape "
        f"{b['first_scrape_ms']} ms; parsing the records: median "
        f"{b['of_which_parsing_records']['median_ms']} ms)"
    )
    if "live" in document:
        lv = document["live"]
        print(
            f"  live ds01d, {lv['containers']} containers, over HTTP: median "
            f"{lv['http_scrape']['median_ms']} ms, p99 {lv['http_scrape']['p99_ms']} ms "
            f"(the Engine list call alone: median {lv['engine_list_call']['median_ms']} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
