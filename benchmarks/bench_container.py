"""Container create + start and container-list wall times against plain Docker.

Budgets: ``container-create --start`` at most 1.1 times ``docker run -d`` of the same image
(issue 15; ``container-create`` then ``container-start``, two commands: 1.25 times), and
``container-list`` at most 3 times ``docker ps``. Both are measured from the user's point of
view: a fresh CLI process per command, wall time until it exits, output
captured.

The script starts its own ds01d (``tests/support.py``'s ``Ds01Daemon``: temporary config,
state, log and socket directories) with the offline test image registered as ``busybox`` and
room for 1000 containers, and runs every command as root. Each round runs every side once,
the order rotated from round to round, so that drift of the machine (page cache, Docker's
own housekeeping) hits all sides alike; medians over the rounds are reported.

Create + start (containers removed between rounds, not timed):

- ``ds01 CLI``: ``container-create NAME --image busybox -w DIR`` then
  ``container-start NAME``; and ``container-create … --start`` (one command, one request);
- ``docker run``: ``docker run -d --init -t -i IMAGE`` (what the budget compares with);
- ``docker run, ds01's options``: the same, with every option ds01d gives its containers
  (cgroup parent, CPU/memory/shm/pids limits, dropped capabilities, bind mount, labels…),
  read back from a container ds01 made, on the default bridge; and ``… on the user's
  network``: the same on the owner's own network, where ds01 puts it: what Docker itself
  costs for the isolation ds01 requires;
- ``ds01 API``: the one request ``container-create --start`` sends (``start: true``), from
  this process (no CLI start-up);
- ``Engine calls``: the Docker Engine calls ds01d makes for a create that starts (inspect
  image, the owner's network, create, the ledger's look-up, write the owner's account, the
  network again, inspect the binds, start, the ledger's look-up), replayed in-process
  through ds01's own ``DockerRuntime``: the part of the daemon's time that is Docker's.

List, with N managed containers present (created through ds01d, not started):
``container-list``, ``container-list --json``, ``docker ps -a`` (the budget's comparison:
it shows the same stopped containers), plain ``docker ps``, one ``GET /v1/containers`` over
ds01d's socket against one Engine ``GET /containers/json`` (same label filter) from this
process, and the bare CLI start-up (``container-list --help`` against ``docker ps --help``).

Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_container.py [--json] [--rounds N]
[--warmup N] [--sizes 20,100] [--save]``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ds01.cli.client import Ds01Client  # noqa: E402
from ds01.errors import Conflict, Ds01Error  # noqa: E402
from ds01.model.labels import MANAGED_FILTER, NAME  # noqa: E402
from ds01.runtime.docker import ContainerSpec, DockerRuntime  # noqa: E402
from quick import parse_args  # noqa: E402
from support import BIN_DIR, TEST_IMAGE, TEST_IMAGES_YAML, Ds01Daemon, user_env  # noqa: E402

CREATE_BUDGET = 1.25  # two commands: container-create, then container-start
START_BUDGET = 1.1  # one command: container-create --start
LIST_BUDGET = 3.0
DOCKER_SOCKET = "/var/run/docker.sock"
#: What ds01d writes into a new container's /etc for its owner (the size of the test image's
#: files with one line added).
ACCOUNT_FILES = {
    "passwd": b"root:x:0:0:root:/root:/bin/sh\nbench:x:1001:1001:bench:/workspace:/bin/sh\n",
    "group": b"root:x:0:\nbench:x:1001:\n",
}
PYTHON = str(BIN_DIR / "python")  # the interpreter of the installed CLI
MANAGED_LABEL = MANAGED_FILTER["label"]  # "ds01.managed=true"

LIMITS_YAML = """\
defaults:
  max_containers: 1000
"""

#: Prefix of every container this run makes (ds01 names and Docker names alike), so that
#: cleanup removes exactly these and never another user's or a concurrent test's.
TAG = f"bench{os.getpid():x}"
MAX_ATTEMPTS = 3

#: One side of a comparison: runs once, returns named wall times in seconds.
Side = Callable[[], dict[str, float]]


def progress(message: str) -> None:
    print(f"bench_container: {message}", file=sys.stderr, flush=True)


# -- timing helpers ------------------------------------------------------------------------


class CommandFailed(RuntimeError):
    pass


def run_timed(command: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Run one command to completion, output captured; return its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        list(command), capture_output=True, text=True, env=env, cwd=cwd, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise CommandFailed(
            f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return elapsed


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(seconds * 1000.0)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.values)
        return {
            "n": len(ordered),
            "median_ms": round(statistics.median(ordered), 2),
            "min_ms": round(ordered[0], 2),
            "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 2),
            "max_ms": round(ordered[-1], 2),
        }


@dataclass(frozen=True)
class Row:
    figure: str
    ds01: Samples
    docker: Samples | None = None
    docker_side: str = ""
    budget: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.ds01.median / self.docker.median if self.docker else None

    @property
    def within_budget(self) -> bool | None:
        if self.budget is None or self.ratio is None:
            return None
        return self.ratio <= self.budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "ds01": self.ds01.summary(),
            "docker_side": self.docker_side or None,
            "docker": self.docker.summary() if self.docker else None,
            "ratio": round(self.ratio, 3) if self.ratio is not None else None,
            "budget": self.budget,
            "within_budget": self.within_budget,
        }


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    k = round_index % len(items)
    return list(items[k:]) + list(items[:k])


# -- raw Engine API over its unix socket (the in-process counterpart of GET /v1/containers) --


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def engine_list_managed() -> list[dict[str, Any]]:
    """One ``GET /containers/json?all=1`` with ds01's label filter, on a fresh connection."""
    filters = quote(json.dumps({"label": [MANAGED_LABEL]}))
    conn = _UnixConnection(DOCKER_SOCKET)
    try:
        conn.request("GET", f"/containers/json?all=1&filters={filters}")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise CommandFailed(f"Engine answered {response.status}: {body!r}")
        result: list[dict[str, Any]] = json.loads(body)
        return result
    finally:
        conn.close()


# -- the benchmark -----------------------------------------------------------------------


def run_options(attrs: dict[str, Any]) -> tuple[list[str], ContainerSpec, str]:
    """``docker run`` options (on the default bridge, ending with the image) and a
    ``ContainerSpec`` equal to the container ds01 made that ``attrs`` (Docker's inspect)
    describes, and the network ds01 put it on (its owner's own). Label keys get a
    ``bench.`` prefix, so that containers made with them are not ds01-managed (same count
    and size of labels)."""
    config, host = attrs["Config"], attrs["HostConfig"]
    (own_network,) = (attrs.get("NetworkSettings") or {}).get("Networks") or {"bridge": {}}
    labels = {f"bench.{k}": v for k, v in (config.get("Labels") or {}).items()}
    env = dict(e.split("=", 1) for e in config.get("Env") or ())
    mounts = tuple((m["Source"], m["Destination"]) for m in attrs.get("Mounts") or ())
    cpus = (host.get("NanoCpus") or 0) / 1e9 or None
    spec = ContainerSpec(
        docker_name="",
        image=config["Image"],
        user=config.get("User") or "",
        hostname=config.get("Hostname") or "",
        labels=labels,
        environment=env,
        mounts=mounts,
        cgroup_parent=host.get("CgroupParent") or "",
        cpus=cpus,
        memory_bytes=host.get("Memory") or None,
        shm_size_bytes=host.get("ShmSize") or None,
        pids_limit=host.get("PidsLimit") or None,
        working_dir=config.get("WorkingDir") or "/workspace",
        stop_signal=config.get("StopSignal") or None,
        cap_drop=tuple(host.get("CapDrop") or ()),
        security_opt=tuple(host.get("SecurityOpt") or ()),
        network=own_network,
    )
    options = ["--network", "bridge"]
    if spec.user:
        options += ["--user", spec.user]
    if spec.hostname:
        options += ["--hostname", spec.hostname]
    options += ["--workdir", spec.working_dir]
    for cap in spec.cap_drop:
        options += ["--cap-drop", cap]
    for opt in spec.security_opt:
        options += ["--security-opt", opt]
    if spec.cgroup_parent:
        options += ["--cgroup-parent", spec.cgroup_parent]
    if spec.cpus:
        options += ["--cpus", f"{spec.cpus:g}"]
    if spec.memory_bytes:
        options += ["--memory", f"{spec.memory_bytes}b"]
        options += ["--memory-swap", f"{host.get('MemorySwap') or spec.memory_bytes}b"]
    if spec.shm_size_bytes:
        options += ["--shm-size", f"{spec.shm_size_bytes}b"]
    if spec.pids_limit:
        options += ["--pids-limit", str(spec.pids_limit)]
    if spec.stop_signal:
        options += ["--stop-signal", spec.stop_signal]
    for source, target in spec.mounts:
        options += ["--mount", f"type=bind,source={source},target={target}"]
    for key, value in spec.environment.items():
        options += ["-e", f"{key}={value}"]
    for key, value in labels.items():
        options += ["--label", f"{key}={value}"]
    return [*options, spec.image], spec, own_network


class Bench:
    def __init__(self, daemon: Ds01Daemon, rounds: int, warmup: int = 1) -> None:
        self.daemon = daemon
        self.rounds = rounds
        self.warmup = warmup  # rounds run first and not counted
        self.runtime = DockerRuntime.from_env()
        self.env = user_env(None, {"DS01_SOCKET": str(daemon.paths.socket)})
        self.cwd = daemon.root
        self.workspace = daemon.root / "workspace"
        self.workspace.mkdir(mode=0o755, exist_ok=True)
        self.counter = 0
        self.retries = 0  # sides run again after a failure (see measure)
        self.recreated = 0  # list containers re-created after vanishing (see ensure_listed)
        self.list_names: list[str] = []
        self.ds01_names: set[str] = set()  # ds01 names (Docker name: NAME._.0)
        self.docker_names: set[str] = set()

    # naming and cleanup

    def fresh(self, kind: str) -> str:
        self.counter += 1
        return f"{TAG}-{kind}-{self.counter}"

    def api(self) -> Ds01Client:
        return Ds01Client(str(self.daemon.paths.socket))

    def remove_docker(self, docker_name: str) -> None:
        # Conflict: "removal already in progress", a concurrent teardown got there first.
        with contextlib.suppress(Conflict):
            self.runtime.remove(docker_name, force=True, missing_ok=True)

    def remove_ds01(self, name: str) -> None:
        self.remove_docker(f"{name}._.0")
        self.ds01_names.discard(name)

    def remove_plain(self, docker_name: str) -> None:
        self.remove_docker(docker_name)
        self.docker_names.discard(docker_name)

    def cleanup(self) -> None:
        for name in list(self.ds01_names):
            self.remove_ds01(name)
        for docker_name in list(self.docker_names):
            self.remove_plain(docker_name)
        self.runtime.api.close()

    # commands

    def cli(self, *args: str) -> float:
        return run_timed([str(BIN_DIR / args[0]), *args[1:]], self.env, self.cwd)

    def docker(self, *args: str) -> float:
        return run_timed(["docker", *args], self.env, self.cwd)

    def create_body(self, name: str) -> dict[str, Any]:
        """The request body ``container-create NAME --image busybox --workspace DIR`` sends."""
        return {
            "name": name,
            "image": "busybox",
            "gpus": 0,
            "mig": [],
            "cpus": None,
            "memory": None,
            "shm_size": None,
            "workspace": str(self.workspace),
            "data": None,
        }

    # a. create + start

    def ds01_cli_create_start(self) -> dict[str, float]:
        name = self.fresh("cli")
        self.ds01_names.add(name)
        workspace = str(self.workspace)
        try:
            create = self.cli("container-create", name, "--image", "busybox", "-w", workspace)
            start = self.cli("container-start", name)
        finally:
            self.remove_ds01(name)
        return {"cli": create + start, "cli_create": create, "cli_start": start}

    def ds01_cli_create_with_start(self) -> float:
        name = self.fresh("clistart")
        self.ds01_names.add(name)
        workspace = str(self.workspace)
        try:
            return self.cli(
                "container-create", name, "--image", "busybox", "-w", workspace, "--start"
            )
        finally:
            self.remove_ds01(name)

    def ds01_api_create_start(self) -> float:
        name = self.fresh("api")
        self.ds01_names.add(name)
        body = {**self.create_body(name), "start": True}
        try:
            return timed(lambda: self.api().request("POST", "/v1/containers", body=body))
        finally:
            self.remove_ds01(name)

    def docker_run(self, options: Sequence[str]) -> float:
        docker_name = self.fresh("docker")
        self.docker_names.add(docker_name)
        try:
            return self.docker("run", "-d", "--init", "-t", "-i", "--name", docker_name, *options)
        finally:
            self.remove_plain(docker_name)

    def engine_replay(self, template: ContainerSpec) -> float:
        docker_name = self.fresh("engine")
        self.docker_names.add(docker_name)
        spec = dataclasses.replace(template, docker_name=docker_name)

        def calls() -> None:
            self.runtime.local_image(spec.image)  # _resolve_image
            self.runtime.find_network(spec.network)  # the owner's network, guarded
            container_id = self.runtime.create(spec)
            self.runtime.find_managed_by_id(container_id)  # the ledger's look-up
            # the owner's account (the image's own files are cached after its first create)
            self.runtime.write_files(docker_name, "/etc", ACCOUNT_FILES)
            self.runtime.find_network(spec.network)  # the start's guard
            self.runtime.inspect(docker_name)  # the start's check of the bind sources
            self.runtime.start(docker_name)
            self.runtime.find_managed_by_id(container_id)  # the ledger's look-up

        try:
            return timed(calls)
        finally:
            self.remove_plain(docker_name)

    def ds01_options(self, name: str) -> tuple[list[str], ContainerSpec, str]:
        """``run_options`` of container ``name``, made through ds01d's API. It stays until
        ``remove_ds01(name)``: while the owner has a container, ds01d keeps their network."""
        self.ds01_names.add(name)
        self.api().request("POST", "/v1/containers", body=self.create_body(name))
        return run_options(self.runtime.inspect(f"{name}._.0"))

    def measure(
        self, sides: Sequence[tuple[str, Side]], before: Callable[[], None] | None = None
    ) -> dict[str, Samples]:
        """Run every side once per round, order rotated each round, ``before`` (untimed)
        before each; the first ``self.warmup`` rounds are not counted.

        A side that fails (e.g. its container was removed under it by a concurrent test
        session's teardown, which removes every ds01-managed container) is run again, up to
        ``MAX_ATTEMPTS`` times; the retries are counted in ``self.retries``.
        """
        samples: dict[str, Samples] = {}
        for index in range(self.warmup + self.rounds):
            for _key, side in rotated(sides, index):
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    try:
                        if before is not None:
                            before()
                        parts = side()
                        break
                    except (CommandFailed, Ds01Error) as exc:
                        if attempt == MAX_ATTEMPTS:
                            raise
                        self.retries += 1
                        progress(f"retrying after: {str(exc).strip().splitlines()[-1]}")
                if index >= self.warmup:
                    for part, seconds in parts.items():
                        samples.setdefault(part, Samples()).add(seconds)
        return samples

    def create_start(self) -> tuple[list[Row], dict[str, float]]:
        progress(
            f"create + start: {self.rounds} rounds (+{self.warmup} warm-up), 7 sides interleaved"
        )
        probe = self.fresh("probe")
        options, spec, own_network = self.ds01_options(probe)
        own_options = [own_network if o == "bridge" else o for o in options]
        try:
            samples = self._create_start_samples(options, own_options, spec, probe)
        finally:
            self.remove_ds01(probe)
        return self._create_start_rows(samples)

    def keep_network(self, network: str, probe: str) -> None:
        """Before a side that uses the owner's network (untimed): if it is gone (a concurrent
        test session's teardown removes every ds01 container, and ds01d then the network),
        ``probe`` is made again through ds01d, which makes the network again."""
        if self.runtime.find_network(network) is None:
            self.remove_ds01(probe)
            self.ds01_names.add(probe)
            self.api().request("POST", "/v1/containers", body=self.create_body(probe))

    def _create_start_samples(
        self, options: list[str], own_options: list[str], spec: ContainerSpec, probe: str
    ) -> dict[str, Samples]:
        return self.measure(
            before=lambda: self.keep_network(spec.network, probe),
            sides=[
                ("cli", self.ds01_cli_create_start),
                ("cli_start_flag", lambda: {"cli_start_flag": self.ds01_cli_create_with_start()}),
                ("run_plain", lambda: {"run_plain": self.docker_run([TEST_IMAGE])}),
                ("api", lambda: {"api": self.ds01_api_create_start()}),
                ("run_same", lambda: {"run_same": self.docker_run(options)}),
                ("run_own_net", lambda: {"run_own_net": self.docker_run(own_options)}),
                ("engine", lambda: {"engine": self.engine_replay(spec)}),
            ],
        )

    def _create_start_rows(self, samples: dict[str, Samples]) -> tuple[list[Row], dict[str, float]]:
        cli_total, cli_create, cli_start = (
            samples["cli"],
            samples["cli_create"],
            samples["cli_start"],
        )
        api, run_plain = samples["api"], samples["run_plain"]
        run_same, engine = samples["run_same"], samples["engine"]
        run_own_net = samples["run_own_net"]
        rows = [
            Row(
                "create + start: ds01 CLI (2 commands)",
                cli_total,
                run_plain,
                "docker run -d --init -ti",
                CREATE_BUDGET,
            ),
            Row("  container-create alone", cli_create),
            Row("  container-start alone", cli_start),
            Row(
                "create --start: ds01 CLI (1 command)",
                samples["cli_start_flag"],
                run_plain,
                "docker run -d --init -ti",
                START_BUDGET,
            ),
            Row(
                "create + start: ds01 CLI",
                cli_total,
                run_same,
                "docker run, ds01's options",
            ),
            Row(
                "create --start: ds01 CLI (1 command)",
                samples["cli_start_flag"],
                run_own_net,
                "same, on the user's network",
            ),
            Row(
                "docker run, ds01's options, user's net",
                run_own_net,
                run_plain,
                "docker run -d --init -ti",
            ),
            Row(
                "create + start: ds01 API, no CLI",
                api,
                run_plain,
                "docker run -d --init -ti",
            ),
            Row(
                "create + start: Engine calls only",
                engine,
                run_plain,
                "docker run -d --init -ti",
            ),
        ]
        breakdown = {
            "cli_processes_ms": samples["cli_start_flag"].median - api.median,
            "daemon_own_ms": api.median - engine.median,
            "engine_calls_ms": engine.median,
            "docker_run_ms": run_plain.median,
            "docker_run_ds01_options_ms": run_same.median,
            "docker_run_ds01_options_own_network_ms": run_own_net.median,
        }
        return rows, breakdown

    # b/c. list

    def populate(self, count: int) -> None:
        """Create managed containers (not started) through ds01d until this run has ``count``."""
        missing = count - len(self.list_names)
        if missing > 0:
            progress(f"creating {missing} managed containers through ds01d (not started)")
            for _ in range(missing):
                name = self.fresh("list")
                self.ds01_names.add(name)
                self.list_names.append(name)
                self.api().request("POST", "/v1/containers", body=self.create_body(name))

    def ensure_listed(self, count: int) -> None:
        """Re-create any of this run's list containers that vanished (a concurrent test
        session's teardown removes every ds01-managed container on the engine)."""
        present = {(s.get("Labels") or {}).get(NAME) for s in engine_list_managed()}
        for name in self.list_names[:count]:
            if name not in present:
                self.recreated += 1
                self.api().request("POST", "/v1/containers", body=self.create_body(name))

    def listing(self, count: int, startup: bool) -> list[Row]:
        self.populate(count)
        progress(f"list with {count} containers: {self.rounds} rounds (+{self.warmup} warm-up)")
        self.ensure_listed(count)

        def side(key: str, fn: Callable[[], float]) -> tuple[str, Side]:
            return key, lambda: {key: fn()}

        def ensured(fn: Callable[[], float]) -> Callable[[], float]:
            def run() -> float:
                self.ensure_listed(count)  # not timed
                return fn()

            return run

        sides = [
            side("list", ensured(lambda: self.cli("container-list"))),
            side("ps_a", lambda: self.docker("ps", "-a")),
            side("list_json", ensured(lambda: self.cli("container-list", "--json"))),
            side("ps", lambda: self.docker("ps")),
            side(
                "api", ensured(lambda: timed(lambda: self.api().request("GET", "/v1/containers")))
            ),
            side("engine", lambda: timed(engine_list_managed)),
        ]
        if startup:
            sides += [
                side("help", lambda: self.cli("container-list", "--help")),
                side("docker_help", lambda: self.docker("ps", "--help")),
                side("python", lambda: run_timed([PYTHON, "-c", "pass"], self.env, self.cwd)),
            ]
        samples = self.measure(sides)
        n = f"{count} containers"
        rows = [
            Row(
                f"container-list, {n}",
                samples["list"],
                samples["ps_a"],
                "docker ps -a",
                LIST_BUDGET,
            ),
            Row(
                f"container-list --json, {n}", samples["list_json"], samples["ps_a"], "docker ps -a"
            ),
            Row(f"container-list, {n}", samples["list"], samples["ps"], "docker ps (none running)"),
            Row(
                f"GET /v1/containers (no CLI), {n}",
                samples["api"],
                samples["engine"],
                "Engine GET /containers/json",
            ),
        ]
        if startup:
            rows.append(
                Row(
                    "CLI start-up: container-list --help",
                    samples["help"],
                    samples["docker_help"],
                    "docker ps --help",
                )
            )
            rows.append(Row("  floor: the venv's python -c pass", samples["python"]))
        return rows


# -- output -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    try:
        runtime = DockerRuntime.from_env()
        engine = runtime.api.info()
        info.update(
            docker=engine.get("ServerVersion"),
            cgroup_version=engine.get("CgroupVersion"),
            cgroup_driver=engine.get("CgroupDriver"),
            storage_driver=engine.get("Driver"),
        )
        runtime.api.close()
    except Exception as exc:  # only metadata
        info["docker"] = f"unknown ({exc})"
    return info


def print_table(meta: dict[str, Any], rows: Sequence[Row], breakdown: dict[str, float]) -> None:
    print(
        f"ds01 container create/start and list against Docker, median of {meta['rounds']} "
        f"interleaved rounds ({meta['date']}, {meta['cpus']} CPUs, Docker {meta.get('docker')}, "
        f"cgroup v{meta.get('cgroup_version')}, Python {meta['python']})"
    )
    header = (
        f"{'figure':<40}{'ds01 ms':>9}  {'docker side':<29}{'docker ms':>10}"
        f"{'ratio':>7}{'budget':>8}  status"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        docker_ms = f"{r.docker.median:>10.1f}" if r.docker else f"{'-':>10}"
        ratio = f"{r.ratio:>7.2f}" if r.ratio is not None else f"{'-':>7}"
        budget = f"{r.budget:>8.2f}" if r.budget is not None else f"{'-':>8}"
        status = {True: "met", False: "MISSED", None: ""}[r.within_budget]
        print(
            f"{r.figure:<40}{r.ds01.median:>9.1f}  {r.docker_side or '-':<29}{docker_ms}"
            f"{ratio}{budget}  {status}"
        )
    print()
    print(
        "create + start, where the time goes (medians): "
        f"the CLI process adds {breakdown['cli_processes_ms']:.0f} ms over the same one "
        f"API request; ds01d beyond its Engine calls {breakdown['daemon_own_ms']:+.0f} ms "
        "(API minus Engine calls, within noise when near 0); "
        f"the Engine calls {breakdown['engine_calls_ms']:.0f} ms "
        f"(docker run: {breakdown['docker_run_ms']:.0f} ms plain, "
        f"{breakdown['docker_run_ds01_options_ms']:.0f} ms with ds01's options, "
        f"{breakdown['docker_run_ds01_options_own_network_ms']:.0f} ms with them on the "
        "user's network)."
    )
    if meta.get("retries") or meta.get("list_containers_recreated"):
        print(
            f"Interference: {meta['retries']} side(s) rerun, "
            f"{meta['list_containers_recreated']} list container(s) re-created "
            "(another process removed ds01-managed containers during the run)."
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per figure")
    parser.add_argument(
        "--sizes", default="20,100", help="managed container counts for the list figures"
    )
    parser.add_argument("--warmup", type=int, default=1, help="rounds not counted, first")
    parser.add_argument(
        "--save", action="store_true", help="also write the JSON to benchmarks/results/"
    )
    args = parse_args(parser, {"rounds": 1, "warmup": 0, "sizes": "2"}, argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if args.rounds < 1 or args.warmup < 0 or not sizes or sizes[0] < 1:
        parser.error("--rounds and --sizes must be positive, --warmup not negative")
    if os.geteuid() != 0:
        parser.error("run as root (it starts ds01d and talks to Docker)")
    if shutil.which("docker") is None:
        parser.error("no docker CLI on PATH (run `make setup`)")

    meta = {**machine(), "rounds": args.rounds, "sizes": sizes}
    daemon = Ds01Daemon(resource_limits=LIMITS_YAML, images=TEST_IMAGES_YAML)
    bench: Bench | None = None
    started = time.monotonic()
    try:
        daemon.start()
        bench = Bench(daemon, args.rounds, args.warmup)
        rows, breakdown = bench.create_start()
        for i, size in enumerate(sizes):
            rows += bench.listing(size, startup=i == 0)
        meta["retries"] = bench.retries
        meta["list_containers_recreated"] = bench.recreated
    finally:
        if bench is not None:
            bench.cleanup()
        # Not Ds01Daemon.cleanup(): that removes every ds01-managed container on the engine.
        daemon.stop()
        shutil.rmtree(daemon.root, ignore_errors=True)
    meta["duration_s"] = round(time.monotonic() - started, 1)
    progress(f"done in {meta['duration_s']} s")

    document = {
        "benchmark": "bench_container",
        "machine": meta,
        "rows": [r.to_dict() for r in rows],
        "create_start_breakdown_ms": {k: round(v, 1) for k, v in breakdown.items()},
    }
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        print_table(meta, rows, breakdown)
    if args.save:
        results = Path(__file__).resolve().parent / "results"
        results.mkdir(exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = results / f"bench_container-{stamp}.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        progress(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
