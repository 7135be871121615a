"""A sample's time comes after its readings (``daemon.sampler.Sampler.sample``): a keep-alive
file touched while the lifecycle pass samples a container is never later than the sample,
so the rule that ignores a touch in the future (``core.lifecycle``) never drops it."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

from ds01.config.policies import LifecyclePolicy
from ds01.core.lifecycle import observe
from ds01.daemon.sampler import KEEP_ALIVE_FILE, Sampler
from ds01.model import labels as L
from ds01.runtime.cgroups import CgroupManager
from ds01.runtime.docker import ContainerRecord

CONTAINER_ID = "c" * 64


def test_a_touch_made_while_the_sample_is_taken_counts(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    keep_alive = workspace / KEEP_ALIVE_FILE
    keep_alive.touch()
    os.utime(keep_alive, (0, 0))  # touched long ago
    container = tmp_path / "cgroup" / "parent" / CONTAINER_ID
    container.mkdir(parents=True)
    (container / "cpu.stat").write_text("usage_usec 1000\n")
    (container / "cgroup.procs").write_text("")
    record = ContainerRecord(
        id=CONTAINER_ID, docker_name="c._.1", name="c", user="alice", uid=os.getuid(),
        group="users", status="running", image="busybox", gpus=(), gpu_equivalents=Fraction(0),
        created_at="", request_id="", labels={L.AIME_WORK_MOUNT: str(workspace)},
    )  # fmt: skip
    pass_began = datetime.now(timezone.utc)

    def sessions(docker_name: str) -> int:
        # The owner's loop touches the file while the pass runs, after the pass began (file
        # times come from the kernel's coarse clock, up to a tick behind the precise one).
        time.sleep(0.05)
        keep_alive.touch()
        return 0

    sampler = Sampler(
        runtime=None,  # type: ignore[arg-type]  # asked only for a run's start, not here
        cgroups=CgroupManager(tmp_path / "cgroup", version="v2"),
        driver="cgroupfs",
        sessions=sessions,
    )
    sample = sampler.sample(record, "/parent", {}, lambda: datetime.now(timezone.utc))
    assert sample is not None
    assert sample.keep_alive_at is not None and pass_began < sample.keep_alive_at <= sample.at
    clock = observe(None, sample, running_since=pass_began, policy=LifecyclePolicy())
    assert clock.sample_keep_alive_at == sample.keep_alive_at
