"""Placement decision time against the budget (2 ms at 64 devices).

Each decision is one :func:`ds01.core.allocation.allocate` call for a random user and request
against 64 devices, 500 existing containers and 200 users, the way the daemon makes it under
its lock. Decisions are not recorded, so every one sees the same load (about half the
devices held). "cold" builds a fresh :class:`AllocationState` from the holdings for every decision
(the indexes are rebuilt, as after a reconcile); "warm" reuses one state. Refusals (quota,
capacity) are decisions too and are timed alike.

Usage: ``.venv/bin/python benchmarks/bench_placement.py [--json] [--decisions N] [--seed S]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from ds01.config.gpu_config import mig_profile_memory_mib, mig_profile_slices
from ds01.core.allocation import AllocationState, GpuRequest, Holding, allocate, free_devices
from ds01.errors import PolicyError
from ds01.model.device import Device, Inventory, PhysicalGpu
from ds01.model.quota import GpuQuota
from quick import parse_args

BUDGET_MS = 2.0
CONTAINERS = 500
USERS = 200
A100 = "NVIDIA A100-SXM4-40GB"


def _physical(index: int, mig: bool) -> PhysicalGpu:
    return PhysicalGpu(index, f"GPU-{index:08x}-0000-0000-0000-000000000000", A100, 40960, mig)


def _whole(gpu: PhysicalGpu) -> Device:
    return Device(gpu.uuid, "gpu", gpu.index, gpu.uuid, A100, gpu.memory_mib)


def _instances(gpu: PhysicalGpu, profiles: Sequence[str]) -> list[Device]:
    return [
        Device(
            uuid=f"MIG-{gpu.index:08x}-{n:04x}-0000-0000-000000000000",
            kind="mig",
            gpu_index=gpu.index,
            gpu_uuid=gpu.uuid,
            model=A100,
            memory_mib=mig_profile_memory_mib(profile),
            profile=profile,
            slices=mig_profile_slices(profile),
            instance_id=n + 1,
        )
        for n, profile in enumerate(profiles)
    ]


def _inventory(whole_gpus: int, mig_layouts: Sequence[Sequence[str]]) -> Inventory:
    gpus = [_physical(i, mig=False) for i in range(whole_gpus)]
    gpus += [_physical(whole_gpus + i, mig=True) for i in range(len(mig_layouts))]
    devices = [_whole(g) for g in gpus[:whole_gpus]]
    for gpu, layout in zip(gpus[whole_gpus:], mig_layouts, strict=True):
        devices += _instances(gpu, layout)
    return Inventory("simulated", tuple(gpus), tuple(devices))


def inventories() -> dict[str, Inventory]:
    """Two 64-device inventories: whole GPUs plus 1g instances, and mixed MIG layouts."""
    return {
        "8 whole + 8x7 1g.5gb": _inventory(8, [("1g.5gb",) * 7] * 8),
        "16 GPUs x (3g+2g+1g+1g)": _inventory(0, [("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")] * 16),
    }


QUOTAS = (
    GpuQuota(),
    GpuQuota(gpu_limit=Fraction(1), max_gpus_per_container=Fraction(1), max_containers=3),
    GpuQuota(gpu_limit=Fraction(2), max_gpus_per_container=Fraction(1), max_containers=5),
    GpuQuota(gpu_limit=Fraction(1, 2), allow_full_gpu=False, max_containers=4),
)
REQUESTS = (
    GpuRequest(),
    GpuRequest(whole_gpus=1),
    GpuRequest(whole_gpus=2),
    GpuRequest(mig_profiles=("1g.5gb",)),
    GpuRequest(mig_profiles=("2g.10gb",)),
    GpuRequest(mig_profiles=("3g.20gb",)),
)


def existing_holdings(inventory: Inventory, rng: random.Random) -> tuple[Holding, ...]:
    """500 containers of 200 users; about half the devices held, one device per container."""
    devices = list(inventory.devices)
    rng.shuffle(devices)
    held = devices[: len(devices) // 2]
    holdings = []
    for n in range(CONTAINERS):
        user = f"user{n % USERS:03d}"
        device = held[n] if n < len(held) else None
        holdings.append(
            Holding(
                container=f"c{n}._.{10000 + n % USERS}",
                name=f"c{n}",
                user=user,
                devices=(device.uuid,) if device else (),
                gpu_equivalents=device.gpu_equivalents if device else Fraction(0),
                status="running" if device else "exited",
            )
        )
    return tuple(holdings)


@dataclass(frozen=True)
class Result:
    inventory: str
    mode: str
    devices: int
    free_devices: int
    decisions: int
    median_ms: float
    p99_ms: float
    max_ms: float
    outcomes: dict[str, int]

    @property
    def p99_within_budget(self) -> bool:
        return self.p99_ms <= BUDGET_MS


def measure(name: str, inventory: Inventory, mode: str, decisions: int, seed: int) -> Result:
    rng = random.Random(seed)
    holdings = existing_holdings(inventory, rng)
    warm_state = AllocationState(holdings)
    quota_of = {f"user{u:03d}": QUOTAS[u % len(QUOTAS)] for u in range(USERS)}
    users = sorted(quota_of)
    timings: list[float] = []
    outcomes: Counter[str] = Counter()
    for _ in range(decisions):
        user, request = rng.choice(users), rng.choice(REQUESTS)
        started = time.perf_counter_ns()
        state = AllocationState(holdings) if mode == "cold" else warm_state
        names = [h.name for h in state.of_user(user)]
        try:
            allocate(request, user, quota_of[user], inventory, state, names)
            outcome = "placed"
        except PolicyError as refused:
            outcome = refused.kind
        timings.append((time.perf_counter_ns() - started) / 1e6)
        outcomes[outcome] += 1
    timings.sort()
    return Result(
        inventory=name,
        mode=mode,
        devices=len(inventory.devices),
        free_devices=len(free_devices(inventory, warm_state)),
        decisions=decisions,
        median_ms=statistics.median(timings),
        p99_ms=timings[min(len(timings) - 1, int(len(timings) * 0.99))],
        max_ms=timings[-1],
        outcomes=dict(sorted(outcomes.items())),
    )


def print_table(results: Sequence[Result]) -> None:
    print(
        f"allocate() decision time: {CONTAINERS} containers, {USERS} users, "
        f"budget {BUDGET_MS} ms"
    )
    header = (
        f"{'inventory':<26}{'state':<6}{'devices':>8}{'free':>6}{'decisions':>10}"
        f"{'median ms':>11}{'p99 ms':>9}{'max ms':>9}{'p99/budget':>12}  outcomes"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        outcomes = ", ".join(f"{k} {v}" for k, v in r.outcomes.items())
        print(
            f"{r.inventory:<26}{r.mode:<6}{r.devices:>8}{r.free_devices:>6}{r.decisions:>10}"
            f"{r.median_ms:>11.4f}{r.p99_ms:>9.4f}{r.max_ms:>9.4f}"
            f"{r.p99_ms / BUDGET_MS:>12.3f}  {outcomes}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--decisions", type=int, default=2000, help="decisions per row")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parse_args(parser, {"decisions": 20}, argv)
    results = [
        measure(name, inventory, mode, args.decisions, args.seed)
        for name, inventory in inventories().items()
        for mode in ("cold", "warm")
    ]
    if args.json:
        rows = [
            {**vars(r), "budget_ms": BUDGET_MS, "p99_within_budget": r.p99_within_budget}
            for r in results
        ]
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
