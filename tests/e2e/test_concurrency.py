"""End to end: forty ``container-create`` requests at once from four users.

The embedded default inventory has 7 devices: GPUs 0-2 whole and GPU 3 split into MIG
instances 3g.20gb, 2g.10gb, 1g.5gb and 1g.5gb. alice, bob, carol and dave (quotas 2, 1, 1
and unlimited GPU-equivalents) each send ten requests, whole GPUs and MIG slices mixed, all
at the same time. Whatever order the daemon serves them in, what Docker ends up holding
must be consistent: no device in two containers, no user over quota, every device taken
(dave alone asks for enough to fill every device left free), and ``gpu-status`` agreeing
with Docker's labels. Docker is read directly, not through ds01.

A second test sends forty requests through ds01's own client at the very same moment (one
process, forty threads): a burst of connections must be queued and answered, not refused.
"""

from __future__ import annotations

import json
import pwd
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any

from support import BIN_DIR, TEST_IMAGES_YAML, describe, user_env

LIMITS = """
    defaults:
      max_gpus_per_container: 1
      max_containers: 20
      cpu_limit: 1
      memory_limit: 256M
    users:
      alice:
        gpu_limit: 2
      bob:
        gpu_limit: 1
      carol:
        gpu_limit: 1
      dave:
        gpu_limit: null
"""

GPU_LIMITS = {"alice": Fraction(2), "bob": Fraction(1), "carol": Fraction(1), "dave": None}
TOTAL_DEVICES = 7  # the embedded default inventory

# Ten requests per user. dave (unlimited) asks for 5 whole GPUs (3 exist) and 5 of the
# smallest slice (any MIG instance satisfies 1g.5gb; 4 exist), so no device can stay free.
REQUESTS: dict[str, list[tuple[str, ...]]] = {
    "alice": [("--gpus", "1")] * 4 + [("--mig", "3g.20gb")] * 2 + [("--mig", "1g.5gb")] * 4,
    "bob": [("--gpus", "1")] * 3 + [("--mig", "2g.10gb")] * 3 + [("--mig", "1g.5gb")] * 4,
    "carol": [("--mig", "1g.5gb")] * 5 + [("--gpus", "1")] * 3 + [("--mig", "3g.20gb")] * 2,
    "dave": [("--gpus", "1"), ("--mig", "1g.5gb")] * 5,
}

# Run as a user: 40 threads, released together, each ask ds01d "who am I?" through ds01's
# own client (a fresh connection each); prints every answer or error as one JSON list.
BURST_SCRIPT = """
import json, threading
from ds01.cli.client import Ds01Client

count = 40
barrier = threading.Barrier(count)
answers = [None] * count

def ask(i):
    barrier.wait()
    try:
        answers[i] = Ds01Client().request("GET", "/v1/whoami")["user"]
    except Exception as exc:
        answers[i] = f"{type(exc).__name__}: {exc}"

threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(answers))
"""


# --- helpers -------------------------------------------------------------------------------


def planned_requests() -> list[tuple[str, str, tuple[str, ...]]]:
    """(user, container name, device arguments), interleaved across users."""
    per_user = [
        [(user, f"c{i:02d}", args) for i, args in enumerate(asks)]
        for user, asks in REQUESTS.items()
    ]
    return [item for round_ in zip(*per_user, strict=True) for item in round_]


def docker_holdings(docker_client: Any) -> dict[str, dict[str, Any]]:
    """Docker's own record of every ds01-managed container: labels by Docker name."""
    found = docker_client.containers.list(all=True, filters={"label": "ds01.managed=true"})
    return {
        c.name: {
            "user": c.labels["ds01.user"],
            "name": c.labels["ds01.name"],
            "gpus": [u for u in c.labels.get("ds01.gpus", "").split(",") if u],
            "gpu_equivalents": Fraction(c.labels.get("ds01.gpu_equivalents", "0")),
        }
        for c in found
    }


def run_python_as(user: str, script: str, socket: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script with the installed venv's interpreter as ``user``."""
    env = [f"{k}={v}" for k, v in user_env(user, {"DS01_SOCKET": socket}).items()]
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", *env, str(BIN_DIR / "python"), "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        check=False,
    )


# --- the tests ----------------------------------------------------------------------------


def test_forty_concurrent_creates_never_share_a_device_or_break_a_quota(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    plan = planned_requests()
    assert len(plan) == 40

    def create(item: tuple[str, str, tuple[str, ...]]) -> Any:
        user, name, args = item
        return d.cli(
            user,
            "container-create",
            name,
            "--image",
            "busybox",
            *args,
            "--no-wait",
            "--json",
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        results = list(pool.map(create, plan))

    # Every request got an answer: created, or refused for quota or capacity.
    for result in results:
        assert result.returncode in (0, 3), describe(result)
        if result.returncode == 3:
            assert result.stderr.strip(), describe(result)
    confirmed = {
        f"{name}._.{pwd.getpwnam(user).pw_uid}": json.loads(result.stdout)
        for (user, name, _), result in zip(plan, results, strict=True)
        if result.returncode == 0
    }

    holdings = docker_holdings(docker_client)
    # Exactly the confirmed creates exist, holding the devices the clients were told.
    assert set(holdings) == set(confirmed)
    for docker_name, info in confirmed.items():
        assert holdings[docker_name]["gpus"] == info["gpus"], docker_name
        assert holdings[docker_name]["user"] == info["user"]

    # No device in two containers, and every request that succeeded holds a device.
    held = Counter(uuid for h in holdings.values() for uuid in h["gpus"])
    assert all(count == 1 for count in held.values()), held
    assert all(len(h["gpus"]) == 1 for h in holdings.values()), holdings

    # No user over their GPU quota.
    for user, limit in GPU_LIMITS.items():
        total = sum((h["gpu_equivalents"] for h in holdings.values() if h["user"] == user), 0)
        if limit is not None:
            assert total <= limit, (user, total, holdings)

    # Every device ends up held: dave's requests alone would fill any device left free.
    assert len(held) == TOTAL_DEVICES, holdings
    assert len(confirmed) == TOTAL_DEVICES
    assert sum(r.returncode == 3 for r in results) == len(plan) - TOTAL_DEVICES

    # ds01's own view agrees with Docker exactly.
    devices = d.cli_json(None, "gpu-status")
    assert len(devices) == TOTAL_DEVICES
    from_ds01 = {
        dev["uuid"]: (dev["holder"]["user"], dev["holder"]["container"])
        for dev in devices
        if dev["holder"]
    }
    from_docker = {uuid: (h["user"], h["name"]) for h in holdings.values() for uuid in h["gpus"]}
    assert from_ds01 == from_docker

    # The audit log has one allocation per device and one refusal per refused request.
    allocations = d.events_where(action="gpu.allocate", outcome="success")
    assert sorted(u for e in allocations for u in e["details"]["devices"]) == sorted(held)
    refusals = d.events_where(action="container.create", outcome="denied")
    assert len(refusals) == len(plan) - TOTAL_DEVICES


def test_forty_clients_connecting_at_the_same_moment_are_all_answered(ds01d):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    result = run_python_as("bob", BURST_SCRIPT, str(d.paths.socket))
    assert result.returncode == 0, describe(result)
    answers = json.loads(result.stdout)
    assert answers == ["bob"] * 40, Counter(answers)
