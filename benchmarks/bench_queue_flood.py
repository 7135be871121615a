"""Cost of one enqueue as the GPU queue grows, and of the audit log under a refusal flood.

Queue: a real ds01d (``tests/support.py``'s ``Ds01Daemon``) with one simulated GPU, held
by a container, and no queue limits (``max_queued: null``, ``max_containers: null``). The
script then queues N one-GPU creates through the API from this process (no CLI start-up)
and reports the wall time of each enqueue (the answer, HTTP 202) by queue length, and the
CPU seconds ds01d used meanwhile (``/proc/PID/stat``). Every enqueue wakes the dispatcher,
whose pass takes the allocation lock the next enqueue needs, so the pass's cost per
waiting request shows in the enqueue's time.

Audit log: the same daemon answers R refusals (a create whose 4,000-character workspace
does not exist) as fast as this process sends them; the script reports the bytes
``events.jsonl`` grew by, per refusal and per second.

Timings are reported, never asserted. Usage:
``/opt/ds01/venv/bin/python benchmarks/bench_queue_flood.py [--json] [--requests N]
[--refusals R]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ds01.cli.client import ApiError, Ds01Client  # noqa: E402
from quick import parse_args  # noqa: E402
from support import TEST_IMAGES_YAML, Ds01Daemon, remove_managed_containers  # noqa: E402

LIMITS_YAML = """\
defaults:
  gpu_limit: null
  max_containers: null
"""
#: Without a queue limit (a tree that has no ``max_queued`` has no limit either).
UNLIMITED_QUEUE = "policies:\n  max_queued: null\n"
ONE_GPU = """\
backend: simulated
simulated:
  gpus:
    - {model: NVIDIA A100-SXM4-40GB}
"""
BUCKETS = (10, 100, 500, 1000, 1500, 2000)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def flood_queue(daemon: Ds01Daemon, requests: int) -> dict[str, Any]:
    client = Ds01Client(str(daemon.paths.socket))
    client.request("POST", "/v1/containers", body={"name": "hold", "image": "busybox", "gpus": 1})
    times: list[float] = []
    cpu_before = cpu_seconds(daemon.pid)
    started = time.perf_counter()
    for i in range(requests):
        body = {"name": f"q{i}", "image": "busybox", "gpus": 1, "queue": True}
        t0 = time.perf_counter()
        status, _ = client.call("POST", "/v1/containers", body=body)
        times.append(time.perf_counter() - t0)
        assert status == 202, status
    wall = time.perf_counter() - started
    cpu = cpu_seconds(daemon.pid) - cpu_before
    by_length = {}
    low = 0
    for high in BUCKETS:
        part = times[low:high]
        if part:
            by_length[f"{low}-{high}"] = round(statistics.median(part) * 1000, 2)
        low = high
    return {
        "requests": requests,
        "median_ms_by_queue_length": by_length,
        "last_ms": round(times[-1] * 1000, 2),
        "wall_s": round(wall, 2),
        "ds01d_cpu_s": round(cpu, 2),
    }


def flood_log(daemon: Ds01Daemon, refusals: int) -> dict[str, Any]:
    client = Ds01Client(str(daemon.paths.socket))
    workspace = "/root/" + "a/" * 1997
    events = daemon.paths.events_file
    size_before = events.stat().st_size
    started = time.perf_counter()
    for _ in range(refusals):
        with contextlib.suppress(ApiError):
            client.call(
                "POST",
                "/v1/containers",
                body={"name": "x", "image": "busybox", "workspace": workspace},
            )
    wall = time.perf_counter() - started
    grown = events.stat().st_size - size_before
    return {
        "refusals": refusals,
        "bytes_written": grown,
        "bytes_per_refusal": round(grown / refusals, 1),
        "bytes_per_second": round(grown / wall),
        "wall_s": round(wall, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1820)
    parser.add_argument("--refusals", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parse_args(parser, {"requests": 10, "refusals": 10}, argv)
    from ds01.config.policies import LifecyclePolicy

    limits = LIMITS_YAML + (UNLIMITED_QUEUE if "max_queued" in LifecyclePolicy.model_fields else "")
    daemon = Ds01Daemon(resource_limits=limits, gpu_config=ONE_GPU, images=TEST_IMAGES_YAML)
    try:
        daemon.start()
        result = {
            "queue": flood_queue(daemon, args.requests),
            "audit_log": flood_log(daemon, args.refusals),
        }
    finally:
        daemon.cleanup()
        remove_managed_containers()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        queue, audit = result["queue"], result["audit_log"]
        print(f"enqueue, median ms by queue length: {queue['median_ms_by_queue_length']}")
        print(
            f"  {queue['requests']} enqueues in {queue['wall_s']} s, "
            f"ds01d CPU {queue['ds01d_cpu_s']} s, the last one {queue['last_ms']} ms"
        )
        print(
            f"audit log: {audit['refusals']} refusals wrote {audit['bytes_written']} bytes "
            f"({audit['bytes_per_refusal']} per refusal, {audit['bytes_per_second']} per second)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
