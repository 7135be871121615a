"""Reservation admission time as the number of reservations on the server grows.

Each decision is one :func:`ds01.core.reservations.admit` call, the way ds01d makes it under
its allocation lock for ``ds01 reserve``: against ``N`` back-to-back one-hour reservations
that fill both GPUs of the server (users of the whole lab, one at a time), a two-hour request
that starts now is refused, naming the conflicts and searching the next free slot; one that
starts after them all is admitted. A lab's real load is far below the sizes measured here:
they show that the cost of a refusal does not grow with the square of what is booked (a
flood of bookings within every user's cap cannot hold the lock for long).

Timings are reported, never asserted.

Usage: ``.venv/bin/python benchmarks/bench_reservations.py [--json] [--sizes N ...] [--rounds R]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from fractions import Fraction

from ds01.core.reservations import Reservation, ReservationLimits, ReservationRequest, admit
from ds01.errors import NoCapacity
from ds01.model.device import Device, Inventory
from quick import parse_args

NOW = datetime(2026, 12, 7, 8, tzinfo=timezone.utc)
GPUS = 2
USERS = 50
#: Limits that let every request reach the search (the defaults would refuse it earlier).
UNLIMITED = ReservationLimits(max_hours=None, max_days_ahead=None, max_reservations=None)


def _inventory() -> Inventory:
    devices = tuple(Device(f"GPU-{i}", "gpu", i, f"GPU-{i}", "A100", 40960) for i in range(GPUS))
    return Inventory("simulated", devices=devices)


def _booked(count: int) -> list[Reservation]:
    every_gpu = tuple(f"GPU-{i}" for i in range(GPUS))
    return [
        Reservation(
            f"r{k}",
            f"user{k % USERS}",
            every_gpu,
            NOW + timedelta(hours=k),
            NOW + timedelta(hours=k + 1),
            Fraction(GPUS),
        )
        for k in range(count)
    ]


def _time_ms(
    request: ReservationRequest, booked: list[Reservation], rounds: int, *, refused: bool
) -> float:
    """Median milliseconds of ``admit(request)``, which must be ``refused`` or not."""
    inventory, times = _inventory(), []
    for _ in range(rounds):
        began = time.perf_counter()
        try:
            admit(request, booked, inventory, UNLIMITED, NOW, new_id="new")
            outcome = False
        except NoCapacity:
            outcome = True
        times.append((time.perf_counter() - began) * 1000)
        if outcome != refused:
            raise SystemExit(f"expected {'a refusal' if refused else 'an admission'}: {request}")
    return statistics.median(times)


def measure(count: int, rounds: int) -> dict[str, float]:
    """Median milliseconds of a refused and of an admitted request against ``count``."""
    booked = _booked(count)
    refused = ReservationRequest("bob", NOW, NOW + timedelta(hours=2), 1)
    after = NOW + timedelta(hours=count + 1)
    admitted = ReservationRequest("bob", after, after + timedelta(hours=2), 1)
    return {
        "reservations": count,
        "refused_ms": _time_ms(refused, booked, rounds, refused=True),
        "admitted_ms": _time_ms(admitted, booked, rounds, refused=False),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parse_args(parser, {"sizes": [50], "rounds": 1}, argv)
    rows = [measure(count, args.rounds) for count in args.sizes]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'reservations':>12}  {'refused':>10}  {'admitted':>10}   (median of {args.rounds})")
    for row in rows:
        print(
            f"{row['reservations']:>12}  {row['refused_ms']:>8.1f}ms  {row['admitted_ms']:>8.1f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
