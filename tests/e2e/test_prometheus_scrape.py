"""End to end: a real Prometheus server scrapes ds01d's exporter.

Debian's ``prometheus`` (installed by ``make images``) is started by the test on loopback,
with its own temporary storage, scraping the job ``ds01`` every second from a ds01d whose
exporter listens on a free loopback port. Users create containers with simulated GPUs
through the CLI; PromQL over Prometheus's HTTP API must then return the GPU-equivalents they
were given, and the energy their GPUs used (driven through the simulated backend's
counters) in kWh and CO₂.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import skip_or_fail
from ds01.gpu.simulated import write_simulated_telemetry
from support import TEST_IMAGES_YAML, describe, free_port, stop_process

GPU_UUIDS = [f"GPU-00000000-0000-4000-8000-00000000000{n}" for n in range(3)]
GRID_INTENSITY = 250  # g/kWh

THREE_GPUS = f"""
    backend: simulated
    simulated:
      gpus:
        - {{model: NVIDIA A100-SXM4-40GB, uuid: {GPU_UUIDS[0]}}}
        - {{model: NVIDIA A100-SXM4-40GB, uuid: {GPU_UUIDS[1]}}}
        - {{model: NVIDIA A100-SXM4-40GB, uuid: {GPU_UUIDS[2]}}}
    energy:
      grid_intensity_g_per_kwh: {GRID_INTENSITY}
      sample_interval_seconds: 1
"""
LIMITS = """
    defaults:
      gpu_limit: 2
      max_gpus_per_container: 2
"""
WAIT_S = 60.0


class Prometheus:
    """A running Prometheus server and its HTTP API."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to now."""
        url = f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            answer = json.loads(reply.read())
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def scalar(self, promql: str) -> float | None:
        """The value of a one-element result, ``None`` while there is none."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def wait_for(self, promql: str, expected: float, timeout: float = WAIT_S) -> float:
        deadline = time.monotonic() + timeout
        seen: float | None = None
        while time.monotonic() < deadline:
            seen = self.scalar(promql)
            if seen is not None and seen == pytest.approx(expected):
                return seen
            time.sleep(0.5)
        targets = self.api_targets()
        raise AssertionError(
            f"{promql} = {seen}, expected {expected} within {timeout:g} s; "
            f"targets: {targets}; prometheus log:\n{self.log.read_text()[-3000:]}"
        )

    def api_targets(self) -> Any:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as reply:
            return [
                {k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
                for t in json.loads(reply.read())["data"]["activeTargets"]
            ]


@pytest.fixture
def prometheus() -> Iterator[Callable[[int], Prometheus]]:
    """Factory: a Prometheus server on a free loopback port scraping ``127.0.0.1:PORT`` as
    job ``ds01`` every second; stopped and its storage removed at teardown."""
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail("Debian's prometheus is not installed: `make images` installs it")
    root = Path(tempfile.mkdtemp(prefix="ds01-prometheus-"))
    processes: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> Prometheus:
        port = free_port()
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: ds01\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n",
            encoding="utf-8",
        )
        log = root / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                return Prometheus(url, log)
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"prometheus did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)

    try:
        yield start
    finally:
        for process in processes:
            stop_process(process)
        shutil.rmtree(root, ignore_errors=True)


def gpus_of(d: Any, user: str, name: str) -> list[str]:
    rows = {r["name"]: r for r in d.cli_json(user, "container-list")}
    return list(rows[name]["gpus"])


def test_promql_returns_the_gpu_equivalents_and_energy_of_each_user(
    ds01d: Any, prometheus: Callable[[int], Prometheus]
) -> None:
    port = free_port()
    d = ds01d(
        resource_limits=LIMITS,
        gpu_config=THREE_GPUS,
        images=TEST_IMAGES_YAML,
        extra_args=["--metrics-listen", f"127.0.0.1:{port}"],
        start=False,
    )
    # Every GPU's energy counter stands at 1 kJ when ds01d starts: its meter's baseline.
    telemetry = d.paths.simulated_telemetry_file
    write_simulated_telemetry(telemetry, {u: {"energy_joules": 1000.0} for u in GPU_UUIDS})
    d.start()
    for user, name, gpus in (("alice", "train", "2"), ("bob", "thesis", "1")):
        created = d.cli(user, "container-create", name, "--image", "busybox", "--gpus", gpus)
        assert created.returncode == 0, describe(created)
    server = prometheus(port)

    server.wait_for('sum(ds01_gpu_equivalents_allocated{user="alice"})', 2.0)
    server.wait_for('sum(ds01_gpu_equivalents_allocated{user="bob"})', 1.0)
    assert server.scalar('up{job="ds01"}') == 1.0
    assert server.scalar("ds01_gpu_equivalents_total") == 3.0
    holders = server.query('ds01_device_holder{user="alice"}')
    assert sorted(h["metric"]["uuid"] for h in holders) == sorted(gpus_of(d, "alice", "train"))
    # No container names by default: any local user can read the exporter.
    assert all("container" not in h["metric"] for h in holders), holders

    # alice's two GPUs use 1.8 MJ each (1 kWh together), bob's 0.72 MJ (0.2 kWh).
    alice_gpus, bob_gpus = gpus_of(d, "alice", "train"), gpus_of(d, "bob", "thesis")
    write_simulated_telemetry(
        telemetry,
        {u: {"energy_joules": 1000.0 + 1.8e6} for u in alice_gpus}
        | {u: {"energy_joules": 1000.0 + 0.72e6} for u in bob_gpus},
    )

    server.wait_for('sum(ds01_energy_kwh_total{user="alice"})', 1.0)
    server.wait_for('sum(ds01_energy_kwh_total{user="bob"})', 0.2)
    assert server.scalar('sum(ds01_co2_grams_total{user="alice"})') == pytest.approx(GRID_INTENSITY)
    assert server.scalar('sum(ds01_co2_grams_total{user="bob"})') == pytest.approx(
        0.2 * GRID_INTENSITY
    )
