"""Cluster mode's two budgets (issue 18), on the Slurm test cluster of this machine.

- **create → running**: ``container-create NAME --image busybox --gpus 1 --start`` until the
  container runs, through Slurm (the CLI submits the job; the job's step has node1's or
  node2's ds01d create and start it; timed until Docker says it runs) against the same
  command on a single server's ds01d (which returns once it runs). Budget: at most 2x.
- **container-list at N containers**: ``container-list --json`` on the login node
  (``DS01_CLUSTER=slurm``: Slurm's data, no ds01d) against the plain ``squeue`` it reads,
  with N container jobs in the cluster. They are held jobs (``sbatch --hold``, the comment
  of a container's job): the two test nodes run 4 jobs at most, and a pending container is
  listed as a running one is. Budget: at most 3x ``squeue`` at 300.

Everything runs as the user ``benchslurm`` (created if missing, removed at the end then),
with an association that ``ds01 admin slurm sync`` writes. The cluster is the one
``SLURM_CONF`` names, else ``scripts/slurm-cluster.sh up`` starts it and ``down`` stops it at
the end (name ``SLURM_CONF`` to keep a cluster of yours running).
Each round runs both sides, the order rotated; medians are reported, never asserted.
The Slurm side is also split, from the cluster's logs (``LogTimeFormat``'s milliseconds) and
Docker's own times: the CLI (up to its exit, sbatch included), slurmctld's scheduling (the
job's submit to its allocation), the launch (allocation to slurmd's "Launching batch job"),
the job's step (launch to the container's creation: the step's start-up, ds01d's check of the
job, the create), ds01d's start (Docker's Created to its StartedAt: the rest of the one
request, Docker's start), and the rest until seen running.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_slurm.py [--json] [--rounds N]
[--sizes 20,300]`` (as root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ds01.core.slurm_job import JOB_COMMENT  # noqa: E402
from quick import parse_args  # noqa: E402
from support import (  # noqa: E402
    BIN_DIR,
    SLURM_CLUSTER_SCRIPT,
    TEST_IMAGES_YAML,
    Ds01Daemon,
    ensure_user,
    hold_machine_lock,
    make_world_traversable_dir,
    remove_user,
    wait_until,
)

CREATE_BUDGET = 2.0
LIST_BUDGET = 3.0
USER = "benchslurm"
NODES = (("node1", 2), ("node2", 4))
LIMITS = f"""
cluster: {{mode}}
defaults:
  gpu_limit: 4
  max_gpus_per_container: 4
  max_containers: 1000
  cpu_limit: 1
  memory_limit: 128M
  max_runtime_hours: 1
users:
  {USER}: {{{{}}}}
"""


def progress(message: str) -> None:
    print(f"bench_slurm: {message}", file=sys.stderr, flush=True)


def cluster_env() -> tuple[dict[str, str], bool]:
    """``SLURM_CONF`` of the running test cluster, and whether this run started it (when
    none is named)."""
    if os.environ.get("SLURM_CONF"):
        return {"SLURM_CONF": os.environ["SLURM_CONF"]}, False
    up = subprocess.run(
        ["bash", str(SLURM_CLUSTER_SCRIPT), "up"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if "=" in line
    )
    return {"SLURM_CONF": exports["SLURM_CONF"]}, True


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


class Bench:
    def __init__(self, slurm: dict[str, str], devices: Path) -> None:
        self.sockets = make_world_traversable_dir("ds01-bench-nodes-")
        self.daemons: dict[str, Ds01Daemon] = {}
        for node, count in NODES:
            gpus = "\n".join(
                f"    - {{device_node: {devices}/{node}/nvidia{i}}}" for i in range(count)
            )
            self.daemons[node] = Ds01Daemon(
                resource_limits=LIMITS.format(mode="slurm"),
                gpu_config=f"backend: simulated\nsimulated:\n  uuid_seed: {node}\n"
                f"  gpus:\n{gpus}\n",
                images=TEST_IMAGES_YAML,
                extra_args=["--slurm-node", node, "--slurm-interval", "1",
                            "--metrics-listen", "off"],
                env=slurm,
            )  # fmt: skip
        self.single = Ds01Daemon(
            resource_limits=LIMITS.format(mode="none"),
            images=TEST_IMAGES_YAML,
            extra_args=["--metrics-listen", "off"],
        )
        self.env = {**slurm, "DS01_SOCKET": f"{self.sockets}/%n", "DS01_SLURM_NODE": "node1"}
        self.login = {**slurm, "DS01_CLUSTER": "slurm", "DS01_SOCKET": "/nonexistent"}
        self.splits: list[dict[str, float]] = []

    def start(self) -> None:
        for node, daemon in self.daemons.items():
            daemon.start()
            (self.sockets / node).symlink_to(daemon.paths.socket)
        self.single.start()
        config = str(self.daemons["node1"].paths.config_dir)
        self.run(str(BIN_DIR / "ds01"), "admin", "slurm", "sync", "--config-dir", config, user=None)

    def stop(self) -> None:
        try:
            self.run("scancel", f"--user={USER}", user=None)
        except RuntimeError as exc:  # the cluster went away: nothing of ours runs there
            progress(str(exc))
        for daemon in (*self.daemons.values(), self.single):
            daemon.stop()
            shutil.rmtree(daemon.root, ignore_errors=True)
        shutil.rmtree(self.sockets, ignore_errors=True)

    def run(self, *argv: str, user: str | None = USER, env: dict[str, str] | None = None) -> str:
        done = self.daemons["node1"].run_as(
            user, list(argv), env or self.env, input=None, timeout=120, cwd="/tmp"
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr[-800:]}")
        return done.stdout

    def ds01(self, *args: str, daemon: Ds01Daemon | None = None) -> str:
        env = self.env if daemon is None else {"DS01_SOCKET": str(daemon.paths.socket)}
        return self.run(*self.daemons["node1"].command_for(args), env=env)

    def running(self, name: str) -> bool:
        return bool(
            subprocess.run(
                ["docker", "ps", "-q", "--filter", f"label=ds01.name={name}",
                 "--filter", "status=running"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        )  # fmt: skip

    def gone(self, name: str) -> bool:
        return not subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=ds01.name={name}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    def create_through_slurm(self, name: str) -> float:
        marks: dict[str, float] = {}

        def create() -> None:
            marks["begin"] = time.time()
            out = self.ds01("container-create", name, "--image", "busybox", "--gpus", "1",
                            "--start")  # fmt: skip
            marks["cli"] = time.time()
            job = re.search(r"Slurm job (\d+)", out)
            marks["job"] = float(job.group(1)) if job else -1
            wait_until(f"{name} to run", lambda: self.running(name), timeout=60, interval=0.02)
            marks["seen"] = time.time()

        took = timed(create)
        marks.update(self.docker_times(name))
        if marks["job"] > 0:
            marks.update(self.slurm_times(int(marks["job"])))
        self.splits.append(marks)
        self.run("scancel", f"--name={name}")
        wait_until(f"{name} to be gone", lambda: self.gone(name), timeout=60)
        return took

    def docker_times(self, name: str) -> dict[str, float]:
        """When Docker created and started the container (its own clock, UTC)."""
        ids = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=ds01.name={name}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        if not ids:
            return {}
        out = subprocess.run(
            ["docker", "inspect", "--format", "{{.Created}} {{.State.StartedAt}}", ids[0]],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        created, started = out.stdout.split()
        return {"created": docker_time(created), "started": docker_time(started)}

    def slurm_times(self, job: int) -> dict[str, float]:
        """The job's submit, allocation and launch, from slurmctld's and slurmd's logs."""
        logs = Path(self.env["SLURM_CONF"]).parent.parent / "log"
        patterns = {
            "submitted": re.compile(rf"_slurm_rpc_submit_batch_job: JobId={job}\b"),
            "allocated": re.compile(rf"Allocate JobId={job}\b"),
            "launched": re.compile(rf"Launching batch job {job}\b"),
        }
        found: dict[str, float] = {}
        for log in sorted(logs.glob("slurm*.log")):
            for line in log.read_text(errors="replace").splitlines():
                for key, pattern in patterns.items():
                    if key not in found and pattern.search(line):
                        stamp = line[1 : line.index("]")] if line.startswith("[") else ""
                        with contextlib.suppress(ValueError):  # not a stamped line
                            found[key] = datetime.fromisoformat(stamp).timestamp()
        return found

    def create_single(self, name: str) -> float:
        took = timed(
            lambda: self.ds01("container-create", name, "--image", "busybox", "--gpus", "1",
                              "--start", daemon=self.single)
        )  # fmt: skip
        self.ds01("container-remove", name, "--force", daemon=self.single)
        return took

    def listing(self, size: int, rounds: int) -> dict[str, Any]:
        for i in range(size):
            self.run(
                "sbatch", "--hold", f"--comment={JOB_COMMENT}", f"--job-name=held{i}",
                "--output=/dev/null", "--mem=16M", "--wrap=true",
            )  # fmt: skip
        listed = json.loads(self.ds01_login("container-list", "--json"))
        if len(listed) != size:
            raise RuntimeError(f"container-list shows {len(listed)} containers, not {size}")
        squeue: list[float] = []
        ours: list[float] = []
        for r in range(rounds):
            sides = [
                (squeue, lambda: self.run("squeue", "--me", env=self.login)),
                (ours, lambda: self.ds01_login("container-list")),
            ]
            for times, action in sides if r % 2 == 0 else reversed(sides):
                times.append(timed(action))
        self.run("scancel", f"--user={USER}", user=None)
        return ratio_row(f"container-list at {size} vs squeue", ours, squeue, LIST_BUDGET)

    def ds01_login(self, *args: str) -> str:
        return self.run(*self.daemons["node1"].command_for(args), env=self.login)


def docker_time(text: str) -> float:
    """Docker's RFC 3339 time (nanoseconds, ``Z``) as a Unix time."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


#: The Slurm side's split: (stage, from mark, to mark), in order.
STAGES = (
    ("CLI (ds01d's answer, sbatch)", "begin", "cli"),
    ("slurmctld: submit to allocation", "submitted", "allocated"),
    ("allocation to slurmd's launch", "allocated", "launched"),
    ("job step: start-up, ds01d's create", "launched", "created"),
    ("ds01d's start (Docker's created to started)", "created", "started"),
    ("until seen running", "started", "seen"),
)


def split_row(splits: list[dict[str, float]]) -> dict[str, Any]:
    """Medians of each stage of the Slurm side, in ms (stages a log lacks are left out)."""
    stages = {}
    for what, begin, end in STAGES:
        spans = [(m[end] - m[begin]) * 1000 for m in splits if begin in m and end in m]
        if spans:
            stages[what] = round(statistics.median(spans), 1)
    return {"what": "create→running through Slurm, split (medians, ms)", "stages": stages}


def ratio_row(what: str, ours: list[float], theirs: list[float], budget: float) -> dict[str, Any]:
    mine, base = statistics.median(ours), statistics.median(theirs)
    return {
        "what": what,
        "ds01_ms": round(mine, 1),
        "baseline_ms": round(base, 1),
        "ratio": round(mine / base, 2),
        "budget": budget,
        "within": mine / base <= budget,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per figure")
    parser.add_argument("--sizes", default="20,300", help="container jobs for the list figures")
    args = parse_args(parser, {"rounds": 1, "sizes": "3"}, argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if args.rounds < 1 or not sizes or sizes[0] < 1:
        parser.error("--rounds and --sizes must be positive")
    if os.geteuid() != 0:
        parser.error("run as root (it starts ds01d per node and creates a user)")
    lock = hold_machine_lock(progress)  # other tests' containers would stop ds01d's start
    slurm, started_cluster = cluster_env()
    devices = Path(slurm["SLURM_CONF"]).parent.parent / "dev"
    created = ensure_user(USER)
    bench = Bench(slurm, devices)
    rows = []
    started = time.monotonic()
    try:
        bench.start()
        through, single = [], []
        for r in range(args.rounds):
            sides = [
                (through, bench.create_through_slurm, f"bench-s{r}"),
                (single, bench.create_single, f"bench-l{r}"),
            ]
            for times, create, name in sides if r % 2 == 0 else reversed(sides):
                times.append(create(name))
        rows.append(
            ratio_row("create→running, Slurm vs single server", through, single, CREATE_BUDGET)
        )
        rows.append(split_row(bench.splits))
        rows += [bench.listing(size, args.rounds) for size in sizes]
    finally:
        bench.stop()
        if created:
            remove_user(USER)
        if started_cluster:
            subprocess.run(
                ["bash", str(SLURM_CLUSTER_SCRIPT), "down"],
                capture_output=True, timeout=120, check=False,
            )  # fmt: skip
        if lock is not None:
            os.close(lock)
    meta = {"rounds": args.rounds, "sizes": sizes, "cpus": os.cpu_count()}
    meta["duration_s"] = round(time.monotonic() - started, 1)
    if args.json:
        json.dump({"benchmark": "bench_slurm", "machine": meta, "rows": rows}, sys.stdout, indent=2)
        print()
    else:
        print(f"bench_slurm: {meta}")
        for row in rows:
            if "stages" in row:
                print(f"  {row['what']}:")
                for stage, ms in row["stages"].items():
                    print(f"    {stage}: {ms} ms")
                continue
            verdict = "ok" if row["within"] else "OVER BUDGET"
            print(
                f"  {row['what']}: {row['ds01_ms']} ms vs {row['baseline_ms']} ms = "
                f"{row['ratio']}x (budget {row['budget']}x, {verdict})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
