"""What measuring disk use costs at 300 containers (disk limits in measured mode).

N containers of the busybox test image are created (never started) with plain Docker; each
writable layer (overlay2 ``UpperDir``) gets a tree of F files (as a ``pip install`` in a
container would leave) plus one hard link per file and a symlink to ``/``. Then, side by
side:

- **walk**: one round of ds01d's disk meter over every layer (``runtime.diskusage.tree_usage``,
  fd-relative, no link followed, each inode once): what the meter thread spends per round,
  outside the lifecycle pass;
- **engine**: the Engine's own measure of every container, ``GET /containers/json?all=1&
  size=1`` (``SizeRw``: a walk inside dockerd per container, on every call);
- **sources**: one ``inspect`` per container for its ``UpperDir`` (done once per container
  and cached by the meter);
- **decide**: the lifecycle pass's share (``DiskWatch``'s pure decisions over N measured
  containers; no walk), against the 1 s budget for a pass over 300 containers.

Timings are reported, never asserted. Takes the machine's test lock (``/tmp/ds01-tests.lock``)
so that no test session runs beside it.

Usage (root, Docker): ``/opt/ds01/venv/bin/python benchmarks/bench_disk.py [--containers N]
[--files F] [--rounds R] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ds01.core.disk import DiskClock, decide_disk  # noqa: E402
from ds01.runtime.diskusage import tree_usage  # noqa: E402
from quick import parse_args  # noqa: E402
from support import hold_machine_lock  # noqa: E402

IMAGE = "ds01-test/busybox:latest"
LABEL = "ds01.bench.disk"


def populate(upper: str, files: int) -> None:
    """``files`` files of 4 KiB in directories of 50, each hard-linked once, and a symlink
    to the host's ``/`` (which the walk must not follow)."""
    for i in range(files):
        directory = os.path.join(upper, "usr", "lib", f"pkg{i // 50}")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"m{i}.py")
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
        os.link(path, path + ".link")
    os.symlink("/", os.path.join(upper, "host"))


def timed(fn: Any, rounds: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(rounds):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return times, result


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=300)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parse_args(parser, {"containers": 3, "files": 10, "rounds": 1})
    client = docker.APIClient(version="auto", timeout=600)
    lock = hold_machine_lock(print)  # timings are worthless while tests load the machine
    ids: list[str] = []
    try:
        began = time.perf_counter()
        for i in range(args.containers):
            created = client.create_container(
                IMAGE, command=["true"], name=f"ds01-bench-disk-{i}", labels={LABEL: "1"}
            )
            ids.append(created["Id"])
        uppers = []
        for cid in ids:
            upper = client.inspect_container(cid)["GraphDriver"]["Data"]["UpperDir"]
            populate(upper, args.files)
            uppers.append(upper)
        setup_s = time.perf_counter() - began
        os.sync()

        walk_times, usage = timed(lambda: [tree_usage([u]) for u in uppers], args.rounds)
        engine_times, listed = timed(
            lambda: client.containers(all=True, size=True, filters={"label": LABEL}),
            args.rounds,
        )
        source_times, _ = timed(
            lambda: [client.inspect_container(c)["GraphDriver"] for c in ids], 1
        )
        now = datetime(2026, 1, 5, tzinfo=timezone.utc)

        def decide_all() -> None:
            for measured in usage:
                decide_disk(
                    DiskClock(),
                    measured.bytes,
                    20 * 1024**3,
                    now,
                    warning_fraction=0.9,
                    grace=timedelta(minutes=10),
                    running=True,
                    scope="container",
                )

        decide_times, _ = timed(decide_all, max(args.rounds, 10))
        result = {
            "containers": args.containers,
            "files_per_container": args.files * 2 + 1,
            "setup_s": round(setup_s, 1),
            "walk_all": summary(walk_times),
            "walk_per_container_ms": round(
                statistics.median(walk_times) * 1000 / args.containers, 2
            ),
            "engine_size_list": summary(engine_times),
            "inspect_sources_once": summary(source_times),
            "decide_in_pass": summary(decide_times),
            "walk_bytes_one": usage[0].bytes,
            "engine_size_rw_one": listed[0].get("SizeRw"),
        }
    finally:
        for cid in ids:
            client.remove_container(cid, force=True, v=True)
        if lock is not None:
            os.close(lock)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.containers} containers, {result['files_per_container']} entries each")
    for key in ("walk_all", "engine_size_list", "inspect_sources_once", "decide_in_pass"):
        median, most = result[key]["median_ms"], result[key]["max_ms"]
        print(f"  {key:22} median {median:8.1f} ms  max {most:8.1f} ms")
    print(f"  walk per container     {result['walk_per_container_ms']} ms")
    print(
        f"  one layer: walk {result['walk_bytes_one']} B allocated, "
        f"Engine SizeRw {result['engine_size_rw_one']} B (apparent sizes)"
    )


if __name__ == "__main__":
    main()
