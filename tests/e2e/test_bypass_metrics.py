"""End to end: what another local user learns from ds01d's Prometheus exporter.

Every local user can connect to the exporter on 127.0.0.1 (Prometheus has no login), so the
metrics carry only what ``gpu-status`` shows everyone: devices, and which user and group
hold them. Container names, which ``gpu-status`` shows other users only to admins, appear
only when the admin opts in with ``ds01d --metrics-container-names``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from support import TEST_IMAGES_YAML, describe, free_port, user_env

LIMITS = """
    defaults:
      gpu_limit: 1
      max_containers: 2
"""
SECRET = "thesis-on-patient-data"
READ_METRICS = """
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode())
"""


def metrics_as(user: str, port: int) -> str:
    """The exposition as ``user`` reads it, from a process running with that user's uid."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", sys.executable, "-c", READ_METRICS, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        env=user_env(None),
        check=False,
    )
    assert result.returncode == 0, describe(result)
    return result.stdout


@pytest.mark.parametrize(
    ("extra", "named"),
    [([], False), (["--metrics-container-names"], True)],
    ids=["default", "opted-in"],
)
def test_another_user_reads_holders_but_not_container_names(
    ds01d: Any, extra: list[str], named: bool
) -> None:
    port = free_port()
    d = ds01d(
        resource_limits=LIMITS,
        images=TEST_IMAGES_YAML,
        extra_args=["--metrics-listen", f"127.0.0.1:{port}", *extra],
    )
    created = d.cli("alice", "container-create", SECRET, "--image", "busybox", "--gpus", "1")
    assert created.returncode == 0, describe(created)
    (device,) = d.cli_json("alice", "container-list")[0]["gpus"]

    text = metrics_as("bob", port)

    holder_lines = [line for line in text.splitlines() if line.startswith("ds01_device_holder{")]
    assert any(device in line and 'user="alice"' in line for line in holder_lines), text
    assert (SECRET in text) is named
