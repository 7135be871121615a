"""``ds01.daemon.slurm_jobs.caller_job_cgroup``: a job's container goes in the job's cgroup,
and a caller outside that cgroup is refused where Slurm made one on the node (its container
would run outside the job's CPU and memory limits). This test process is in no job's cgroup;
the node's cgroup tree is a directory of the test's (``test_cgroups``' ``v1_tree``)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_cgroups import JOB, v1_tree

from ds01.daemon.slurm_jobs import caller_job_cgroup
from ds01.errors import PermissionDenied
from ds01.runtime.cgroups import CgroupManager


def _node(root: Path, driver: str = "cgroupfs") -> Any:
    """What ``caller_job_cgroup`` reads of the daemon's context."""
    return SimpleNamespace(
        engine=SimpleNamespace(cgroup_driver=driver), cgroups=CgroupManager(root)
    )


def test_a_caller_outside_the_cgroup_slurm_made_for_the_job_is_refused(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    (root / "memory" / JOB.lstrip("/")).mkdir(parents=True)
    me = SimpleNamespace(pid=os.getpid())
    with pytest.raises(PermissionDenied, match="your process is not in it"):
        caller_job_cgroup(_node(root), me, 42)
    # No cgroup of that job here (no cgroup plugins, or another job): ds01's own parent.
    assert caller_job_cgroup(_node(root), me, 43) is None
    # The systemd driver's parents are slices: never the job's.
    assert caller_job_cgroup(_node(root, "systemd"), me, 42) is None
