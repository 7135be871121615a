"""Time of one GPU queue pass (``ds01.core.scheduler.plan``), the work ds01d's dispatcher does
under the allocation lock on every change.

Each pass plans N waiting requests of 200 users against 64 devices and 500 existing
containers (the placement benchmark's load: about half the devices held), with the usage
of the last weeks (2,000 ledger intervals) decayed into fair-share factors first. There is
no budget of its own; the pass is compared with the placement budget (2 ms
per decision), since it makes up to one decision per waiting request.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_queue.py [--json] [--passes N] [--seed S]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction

from bench_placement import BUDGET_MS, QUOTAS, REQUESTS, USERS, existing_holdings, inventories
from ds01.config.scheduler import SchedulerConfig
from ds01.core.allocation import AllocationState
from ds01.core.scheduler import PendingRequest, UsageInterval, decayed_usage, plan
from ds01.model.device import Inventory
from quick import parse_args

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
LEDGER_INTERVALS = 2000
QUEUE_SIZES = (10, 100, 500)


def ledger(rng: random.Random) -> list[UsageInterval]:
    """Four weeks of holdings: 2,000 intervals of 1 to 48 hours, 1/7 to 2 GPU-equivalents."""
    intervals = []
    for _ in range(LEDGER_INTERVALS):
        user = rng.randrange(USERS)
        start = NOW - timedelta(hours=rng.uniform(0, 28 * 24))
        end = start + timedelta(hours=rng.uniform(1, 48))
        intervals.append(
            UsageInterval(
                user=f"user{user:03d}",
                group=f"group{user % 5}",
                gpu_equivalents=rng.choice(
                    (Fraction(1, 7), Fraction(3, 7), Fraction(1), Fraction(2))
                ),
                start=start,
                end=None if end > NOW else end,
            )
        )
    return intervals


def waiting(rng: random.Random, count: int) -> list[PendingRequest]:
    return [
        PendingRequest(
            id=f"q{n:04d}",
            user=f"user{(u := rng.randrange(USERS)):03d}",
            group=f"group{u % 5}",
            request=rng.choice([r for r in REQUESTS if not r.is_empty]),
            quota=QUOTAS[u % len(QUOTAS)],
            priority=rng.choice((0, 100, 500, 900)),
            submitted_at=NOW - timedelta(minutes=rng.uniform(0, 600)),
            expected_runtime_hours=rng.choice((None, 1.0, 8.0, 24.0)),
        )
        for n in range(count)
    ]


@dataclass(frozen=True)
class Result:
    inventory: str
    queue: int
    passes: int
    median_ms: float
    p99_ms: float
    max_ms: float
    starts: int
    median_ms_per_request: float


def measure(name: str, inventory: Inventory, queue: int, passes: int, seed: int) -> Result:
    rng = random.Random(seed)
    state = AllocationState(existing_holdings(inventory, rng))
    intervals = ledger(rng)
    pending = waiting(rng, queue)
    policy = SchedulerConfig()
    timings, starts = [], 0
    for _ in range(passes):
        started = time.perf_counter_ns()
        usage = decayed_usage(intervals, NOW, policy.usage_half_life_hours)
        result = plan(pending, inventory, state, NOW, usage, policy)
        timings.append((time.perf_counter_ns() - started) / 1e6)
        starts = len(result.starts)
    timings.sort()
    median = statistics.median(timings)
    return Result(
        inventory=name,
        queue=queue,
        passes=passes,
        median_ms=median,
        p99_ms=timings[min(len(timings) - 1, int(len(timings) * 0.99))],
        max_ms=timings[-1],
        starts=starts,
        median_ms_per_request=median / queue,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--passes", type=int, default=50, help="passes per row")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parse_args(parser, {"passes": 2}, argv)
    results = [
        measure(name, inventory, size, args.passes, args.seed)
        for name, inventory in inventories().items()
        for size in QUEUE_SIZES
    ]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    print(
        f"One queue pass (decay {LEDGER_INTERVALS} ledger intervals + plan), 500 containers, "
        f"{USERS} users; placement budget {BUDGET_MS} ms per decision"
    )
    header = (
        f"{'inventory':<26}{'queue':>6}{'starts':>7}{'median ms':>11}{'p99 ms':>9}"
        f"{'max ms':>9}{'ms/request':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.inventory:<26}{r.queue:>6}{r.starts:>7}{r.median_ms:>11.2f}{r.p99_ms:>9.2f}"
            f"{r.max_ms:>9.2f}{r.median_ms_per_request:>12.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
