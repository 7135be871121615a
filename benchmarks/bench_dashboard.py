"""ds01-dashboard: one frame at 300 containers, and ``GET /v1/overview`` against ``docker ps``.

Two parts, side by side in one run; timings are reported, never asserted.

**Frame (no Docker).** An admin's overview of 300 containers of 30 users on 8 GPUs
(``tests/dashboard_data.py``'s ``large_overview``, built through the API's models):

- the client's share of one refresh: decode the JSON, build the frame
  (``ds01.tui.frame.build_frame``), and for ``--once`` render it as text;
- the live view (textual, headless, 160x50): the first frame of 300 rows, a refresh in
  which a seventh of the rows changed (cells updated in place), and a new sort (the table
  filled again), each until the screen has settled. This is the time the UI's own thread
  spends; the request runs in a worker thread.

**Daemon (root and Docker).** A ds01d of its own (``tests/support.py``'s ``Ds01Daemon``,
the embedded simulated inventory) with N containers made through it (two of them holding a
GPU and running, the rest created), then in interleaved rounds: one ``GET /v1/overview``
from this process against one Engine ``GET /containers/json`` with ds01's label filter (the
one Docker call it makes), ``GET /v1/containers`` for reference, and the whole command
``ds01-dashboard --once`` against ``docker ps -a`` (a fresh process each, output captured),
plus ``ds01-dashboard --help`` (start-up without textual) against ``python -c pass``.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_dashboard.py [--json] [--rounds N]
[--warmup N] [--sizes 5,20] [--no-daemon]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from bench_container import (  # noqa: E402
    PYTHON,
    Samples,
    engine_list_managed,
    machine,
    rotated,
    run_timed,
    timed,
)
from dashboard_data import large_overview  # noqa: E402
from ds01.cli.client import Ds01Client  # noqa: E402
from ds01.errors import Conflict  # noqa: E402
from ds01.runtime.docker import DockerRuntime  # noqa: E402
from ds01.tui.frame import View, build_frame, render_text  # noqa: E402
from quick import parse_args  # noqa: E402
from support import BIN_DIR, TEST_IMAGES_YAML, Ds01Daemon, user_env  # noqa: E402

CONTAINERS = 300
TAG = f"dash{os.getpid():x}"
LIMITS_YAML = """\
defaults:
  max_containers: 1000
  gpu_limit: 4
"""


def progress(message: str) -> None:
    print(f"bench_dashboard: {message}", file=sys.stderr, flush=True)


# -- frame -----------------------------------------------------------------------------------


def changed(overview: dict[str, Any], step: int) -> dict[str, Any]:
    """``overview`` a refresh later: a seventh of the containers' idle times moved."""
    later = copy.deepcopy(overview)
    for container in later["containers"][::7]:
        if container["idle_minutes"] is not None:
            container["idle_minutes"] += step
    return later


def frame_figures(rounds: int, warmup: int) -> dict[str, Samples]:
    overview = large_overview(CONTAINERS)
    raw = json.dumps(overview).encode()
    samples = {k: Samples() for k in ("decode", "model", "model_text")}
    for i in range(warmup + rounds):
        decode = timed(lambda: json.loads(raw))
        model = timed(lambda: build_frame(overview, View(sort="cleanup")))
        text = timed(lambda: render_text(build_frame(overview, View(sort="cleanup"))))
        if i >= warmup:
            samples["decode"].add(decode)
            samples["model"].add(model)
            samples["model_text"].add(text)
    samples.update(asyncio.run(live_figures(overview, rounds, warmup)))
    return samples


async def live_figures(overview: dict[str, Any], rounds: int, warmup: int) -> dict[str, Samples]:
    from ds01.tui.app import DashboardApp

    samples = {k: Samples() for k in ("first", "refresh", "sort")}
    updates = [changed(overview, step) for step in range(1, warmup + rounds + 1)]
    for i in range(warmup + rounds):
        app = DashboardApp(lambda: overview, interval=3600)
        async with app.run_test(size=(160, 50)) as pilot:
            while app.refreshes == 0:  # the app's own first fetch, not timed
                await pilot.pause(0.005)
            await pilot.pause()
            app._shown.clear()  # time a first frame: every table filled from nothing
            for table in app.query("DataTable"):
                table.clear(columns=True)  # type: ignore[attr-defined]
            await pilot.pause()
            started = time.perf_counter()
            app.show()
            await pilot.pause()
            first = time.perf_counter() - started
            app.overview = updates[i]
            started = time.perf_counter()
            app.show()
            await pilot.pause()
            refresh = time.perf_counter() - started
            started = time.perf_counter()
            app.action_cycle_sort()
            await pilot.pause()
            sort = time.perf_counter() - started
            app.exit()
        if i >= warmup:
            samples["first"].add(first)
            samples["refresh"].add(refresh)
            samples["sort"].add(sort)
    return samples


# -- daemon ----------------------------------------------------------------------------------


class DaemonBench:
    def __init__(self, daemon: Ds01Daemon, rounds: int, warmup: int) -> None:
        self.daemon = daemon
        self.rounds = rounds
        self.warmup = warmup  # rounds run first and not counted
        self.env = user_env(None, {"DS01_SOCKET": str(daemon.paths.socket)})
        self.runtime = DockerRuntime.from_env()
        self.names: list[str] = []
        self.workspace = daemon.root / "workspace"
        self.workspace.mkdir(mode=0o755, exist_ok=True)

    def api(self) -> Ds01Client:
        return Ds01Client(str(self.daemon.paths.socket))

    def populate(self, count: int) -> None:
        while len(self.names) < count:
            name = f"{TAG}-{len(self.names)}"
            gpus = 1 if len(self.names) < 2 else 0
            body = {
                "name": name,
                "image": "busybox",
                "gpus": gpus,
                "workspace": str(self.workspace),
            }
            self.api().request("POST", "/v1/containers", body=body)
            self.names.append(name)
            if gpus:
                self.api().request("POST", Ds01Client.container_path(name, "start"))

    def cleanup(self) -> None:
        for name in self.names:
            with contextlib.suppress(Conflict):
                self.runtime.remove(f"{name}._.0", force=True, missing_ok=True)
        self.runtime.api.close()

    def cli(self, *args: str) -> float:
        return run_timed([str(BIN_DIR / args[0]), *args[1:]], self.env, self.daemon.root)

    def measure(self, count: int, startup: bool) -> dict[str, Samples]:
        self.populate(count)
        progress(f"{count} containers: {self.rounds} rounds (+{self.warmup} warm-up)")
        sides: list[tuple[str, Callable[[], float]]] = [
            ("overview", lambda: timed(lambda: self.api().request("GET", "/v1/overview"))),
            ("engine", lambda: timed(engine_list_managed)),
            ("containers", lambda: timed(lambda: self.api().request("GET", "/v1/containers"))),
            ("once", lambda: self.cli("ds01-dashboard", "--once")),
            ("ps_a", lambda: run_timed(["docker", "ps", "-a"], self.env, self.daemon.root)),
        ]
        if startup:
            sides += [
                ("help", lambda: self.cli("ds01-dashboard", "--help")),
                ("python", lambda: run_timed([PYTHON, "-c", "pass"], self.env, self.daemon.root)),
            ]
        samples = {key: Samples() for key, _ in sides}
        for i in range(self.warmup + self.rounds):
            for key, side in rotated(sides, i):
                seconds = side()
                if i >= self.warmup:
                    samples[key].add(seconds)
        return samples


# -- output ------------------------------------------------------------------------------------


def rows_of(
    frame: dict[str, Samples], daemon: dict[int, dict[str, Samples]]
) -> list[dict[str, Any]]:
    def row(
        figure: str, ours: Samples, theirs: Samples | None = None, side: str = ""
    ) -> dict[str, Any]:
        return {
            "figure": figure,
            "ms": ours.summary(),
            "compared_with": side or None,
            "their_ms": theirs.summary() if theirs else None,
            "ratio": round(ours.median / theirs.median, 3) if theirs else None,
        }

    n = f"{CONTAINERS} containers"
    rows = [
        row(f"decode the overview JSON, {n}", frame["decode"]),
        row(f"frame model (build_frame), {n}", frame["model"]),
        row(f"frame model + text (--once), {n}", frame["model_text"]),
        row(f"live view: first frame, {n}", frame["first"]),
        row(f"live view: refresh, 1/7 of rows changed, {n}", frame["refresh"]),
        row(f"live view: new sort (table refilled), {n}", frame["sort"]),
    ]
    for count, s in daemon.items():
        c = f"{count} containers"
        rows += [
            row(f"GET /v1/overview (no CLI), {c}", s["overview"], s["engine"], "Engine list call"),
            row(
                f"GET /v1/containers (no CLI), {c}",
                s["containers"],
                s["engine"],
                "Engine list call",
            ),
            row(f"ds01-dashboard --once, {c}", s["once"], s["ps_a"], "docker ps -a"),
        ]
        if "help" in s:
            rows.append(
                row("ds01-dashboard --help (start-up)", s["help"], s["python"], "python -c pass")
            )
    return rows


def print_rows(meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    print(
        f"ds01-dashboard, median of {meta['rounds']} rounds ({meta.get('date')}, "
        f"{meta.get('cpus')} CPUs, Docker {meta.get('docker')}, Python {meta.get('python')})"
    )
    header = f"{'figure':<52}{'ms':>9}  {'compared with':<18}{'their ms':>9}{'ratio':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        theirs = f"{r['their_ms']['median_ms']:>9.1f}" if r["their_ms"] else f"{'-':>9}"
        ratio = f"{r['ratio']:>7.2f}" if r["ratio"] is not None else f"{'-':>7}"
        print(
            f"{r['figure']:<52}{r['ms']['median_ms']:>9.1f}  {r['compared_with'] or '-':<18}"
            f"{theirs}{ratio}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per figure")
    parser.add_argument("--warmup", type=int, default=1, help="rounds not counted, first")
    parser.add_argument("--sizes", default="5,20", help="containers in ds01d for the request")
    parser.add_argument(
        "--no-daemon", action="store_true", help="only the frame figures (no root, no Docker)"
    )
    args = parse_args(parser, {"rounds": 1, "warmup": 0, "sizes": "2"}, argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if args.rounds < 1 or args.warmup < 0 or not sizes or sizes[0] < 1:
        parser.error("--rounds and --sizes must be positive, --warmup not negative")
    with_daemon = not args.no_daemon
    if with_daemon and os.geteuid() != 0:
        parser.error("run as root (it starts ds01d and talks to Docker), or pass --no-daemon")
    if with_daemon and shutil.which("docker") is None:
        parser.error("no docker CLI on PATH (run `make setup`), or pass --no-daemon")

    meta: dict[str, Any] = {**(machine() if with_daemon else {}), "rounds": args.rounds}
    meta.setdefault("date", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    meta.setdefault("cpus", os.cpu_count())
    meta.setdefault("python", platform.python_version())
    progress(f"frame figures at {CONTAINERS} containers")
    frame = frame_figures(args.rounds, args.warmup)
    daemon_samples: dict[int, dict[str, Samples]] = {}
    if with_daemon:
        daemon = Ds01Daemon(resource_limits=LIMITS_YAML, images=TEST_IMAGES_YAML)
        bench: DaemonBench | None = None
        try:
            daemon.start()
            bench = DaemonBench(daemon, args.rounds, args.warmup)
            for i, size in enumerate(sizes):
                daemon_samples[size] = bench.measure(size, startup=i == 0)
        finally:
            if bench is not None:
                bench.cleanup()
            # Not Ds01Daemon.cleanup(): that removes every ds01-managed container.
            daemon.stop()
            shutil.rmtree(daemon.root, ignore_errors=True)
    rows = rows_of(frame, daemon_samples)
    if args.json:
        print(json.dumps({"benchmark": "bench_dashboard", "machine": meta, "rows": rows}, indent=2))
    else:
        print_rows(meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
