"""What guarding the state database costs (issue 13, item 1): the backup and the checks.

ds01d copies its state database to ``ds01.db.backup`` (SQLite's online backup, switched to
rollback-journal mode, checked with ``quick_check``, flushed and renamed) seconds after a
queue change and every few minutes; it runs ``quick_check`` at every start, and
``ds01 admin state restore`` runs ``integrity_check`` on the backup. This script fills a
store in a temporary directory with ``--rows`` energy rows and half as many GPU-activity
hours (100 000 rows: about 70 days of 64 devices), then reports the median over
``--runs`` of each: ``write_backup``, ``examine`` with ``quick_check`` and with
``integrity_check``. Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_state_backup.py [--rows N] [--runs N]
[--json]``
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ds01.runtime.store import EnergyRecord, GpuActivity, StateStore
from ds01.runtime.store_files import backup_path, examine, write_backup
from quick import parse_args


def fill(path: Path, rows: int) -> None:
    store = StateStore(path)
    store.add_energy(
        EnergyRecord(
            f"c{i % 500}", "alice", "phd", f"GPU-{i % 64}",
            f"2026-01-01T{i % 24:02d}:00:{i:09d}", f"2026-01-01T{i % 24:02d}:59:{i:09d}", 1.5,
        )
        for i in range(rows)
    )  # fmt: skip
    store.add_gpu_activity(
        GpuActivity(
            f"c{i}", "alice", "phd", f"2026-01-{i % 28 + 1:02d}T{i % 24:02d}:00:00+00:00", 1, 0.5
        )
        for i in range(rows // 2)
    )
    store.close()  # the last connection: the WAL goes into the file


def median_ms(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parse_args(parser, {"rows": 1000, "runs": 1})
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ds01.db"
        fill(path, args.rows)
        source = sqlite3.connect(path)
        target = backup_path(path)
        result = {
            "rows": args.rows,
            "database_mb": round(path.stat().st_size / 1e6, 1),
            "backup_ms": median_ms(lambda: write_backup(source, target), args.runs),
            "quick_check_ms": median_ms(lambda: examine(path), args.runs),
            "integrity_check_ms": median_ms(
                lambda: examine(target, "integrity_check"), args.runs
            ),
        }
        source.close()
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['rows']} energy rows, {result['database_mb']} MB: backup (copy, check, "
        f"fsync, rename) {result['backup_ms']} ms; quick_check at start "
        f"{result['quick_check_ms']} ms; integrity_check at restore "
        f"{result['integrity_check_ms']} ms (medians of {args.runs})"
    )


if __name__ == "__main__":
    main()
