"""End to end: what a user's image build may do on this machine.

A RUN step runs in the user's build cgroup (inside their cgroup parent) with a pids limit,
so a fork loop fails instead of exhausting the host's pid_max.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

from support import TEST_IMAGE, TEST_IMAGES_YAML, describe

#: A small pids limit, so that a fork loop in a build meets it quickly.
PIDS_LIMIT = 64
LIMITS = f"""
    defaults:
      max_containers: 4
      cpu_limit: 1
      memory_limit: 256M
      pids_limit: {PIDS_LIMIT}
"""


# -- builds ----------------------------------------------------------------------------------


def build_context(user: str, *steps: str) -> Path:
    """A fresh build directory in ``user``'s home with a Dockerfile of ``steps``."""
    entry = pwd.getpwnam(user)
    path = Path(entry.pw_dir) / f"ds01t-net-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    (path / "Dockerfile").write_text("\n".join([f"FROM {TEST_IMAGE}", *steps]) + "\n")
    for item in (path, path / "Dockerfile"):
        os.chown(item, entry.pw_uid, entry.pw_gid)
    return path


def build(d: Any, user: str, context: Path) -> subprocess.CompletedProcess[str]:
    return d.cli(
        user, "image-build", f"ds01t-net-{uuid.uuid4().hex[:6]}", "--context", str(context),
        "--no-cache", timeout=120,
    )  # fmt: skip


def test_a_fork_loop_in_a_build_step_meets_her_pids_limit(ds01d, unix_users):
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    forks = build_context(
        "alice",
        "RUN cat /proc/self/cgroup; i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); done; "
        "echo all-$((250 * 2))-started",  # the text only when it runs
    )

    result = build(d, "alice", forks)

    assert result.returncode != 0, describe(result)
    assert "all-500-started" not in result.stdout, describe(result)
    assert "can't fork" in result.stdout + result.stderr, describe(result)
    # The step's pids cgroup: her build cgroup, inside her cgroup parent.
    assert re.search(
        r":pids:/ds01\.slice/[^ ]*alice[^/ ]*\.slice/[^/ ]*-build\.slice/", result.stdout
    ), describe(result)
    assert f"at most {PIDS_LIMIT} processes" in result.stdout, describe(result)
