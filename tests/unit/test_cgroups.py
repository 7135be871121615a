"""The cgroup adapter: what it writes for v1, v2 and systemd, on temporary directory trees
that imitate ``/sys/fs/cgroup``, and the pure decisions behind it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.runtime.cgroups import (
    AggregateLimits,
    CgroupError,
    CgroupManager,
    CgroupWrite,
    cfs_quota_us,
    container_cgroup,
    detect_version,
    limit_writes,
    parse_flat_keyed,
    peak_at_limit,
    slice_part,
    slice_unit,
    subtree_enable,
    systemctl_set_property,
    user_slice_path,
)

MIB = 1024**2
PARENT = "/ds01.slice/ds01-phd.slice/ds01-phd-alice.slice"
CONTAINER_ID = "0123456789ab" * 5 + "cdef"
LIMITS = AggregateLimits(cpus=0.5, memory_bytes=150 * MIB, pids=64)
V1_HIERARCHIES = ("blkio", "cpu", "cpuacct", "memory", "pids", "unified")


def v1_tree(root: Path) -> Path:
    """A v1 (hybrid) layout: one directory per hierarchy, no cgroup.controllers at the top."""
    for hierarchy in V1_HIERARCHIES:
        (root / hierarchy).mkdir(parents=True)
    return root


def v2_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    (root / "cgroup.subtree_control").write_text("cpu\n")
    return root


def tree_rmdir(path: Path) -> None:
    """rmdir for a plain directory tree, whose "cgroups" hold ordinary files."""
    shutil.rmtree(path)


# --- pure parts -------------------------------------------------------------------------------


def test_paths_follow_the_slice_naming() -> None:
    assert slice_part("Jane-R.x") == "Jane:2dR:2ex"
    assert slice_part("jane_r") == "jane_r"
    assert user_slice_path("phd", "jane-r") == "/ds01.slice/ds01-phd.slice/ds01-phd-jane:2dr.slice"
    assert slice_unit(PARENT) == "ds01-phd-alice.slice"
    assert container_cgroup(PARENT, CONTAINER_ID, "cgroupfs") == f"{PARENT}/{CONTAINER_ID}"
    assert container_cgroup(PARENT, CONTAINER_ID, "systemd").endswith(
        f"/docker-{CONTAINER_ID}.scope"
    )
    with pytest.raises(ValueError, match="not a container id"):
        container_cgroup(PARENT, "../../etc", "cgroupfs")


NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@given(NAMES, NAMES)
def test_distinct_names_never_share_a_slice_part(a: str, b: str) -> None:
    """Users ``a.b`` and ``a-b`` (or ``Ab`` and ``ab``) once shared a cgroup parent, so one
    user's totals applied to the other's containers."""
    assert (slice_part(a) == slice_part(b)) == (a == b)


@given(NAMES, NAMES)
def test_a_user_parent_is_one_slice_two_levels_below_ds01(group: str, user: str) -> None:
    parent = user_slice_path(group, user)
    parts = parent.split("/")
    assert parts[:2] == ["", "ds01.slice"] and len(parts) == 4
    assert parts[3].count("-") == 2  # ds01-<group>-<user>.slice: systemd's nesting, nothing else
    assert all(part.isascii() and part.isprintable() for part in parts)


def test_v1_writes_period_before_quota_and_minus_one_for_unlimited() -> None:
    assert limit_writes("v1", LIMITS) == (
        CgroupWrite("cpu", "cpu.cfs_period_us", "100000"),
        CgroupWrite("cpu", "cpu.cfs_quota_us", "50000"),
        CgroupWrite("memory", "memory.limit_in_bytes", str(150 * MIB)),
        CgroupWrite("pids", "pids.max", "64"),
    )
    unlimited = {w.file: w.value for w in limit_writes("v1", AggregateLimits())}
    assert unlimited["cpu.cfs_quota_us"] == "-1"
    assert unlimited["memory.limit_in_bytes"] == "-1"
    assert unlimited["pids.max"] == "max"


def test_v2_writes_cpu_max_memory_max_and_pids_max() -> None:
    assert limit_writes("v2", LIMITS) == (
        CgroupWrite("", "cpu.max", "50000 100000"),
        CgroupWrite("", "memory.max", str(150 * MIB)),
        CgroupWrite("", "pids.max", "64"),
    )
    assert [w.value for w in limit_writes("v2", AggregateLimits())] == [
        "max 100000",
        "max",
        "max",
    ]


def test_cfs_quota_is_clamped_to_the_kernels_minimum() -> None:
    assert cfs_quota_us(2.0) == 200_000
    assert cfs_quota_us(0.001) == 1_000
    assert cfs_quota_us(0.125) == 12_500


def test_systemd_gets_slice_properties() -> None:
    assert systemctl_set_property("ds01-phd-alice.slice", LIMITS) == [
        "systemctl",
        "set-property",
        "--runtime",
        "ds01-phd-alice.slice",
        "CPUQuota=50%",
        f"MemoryMax={150 * MIB}",
        "TasksMax=64",
    ]
    assert systemctl_set_property("x.slice", AggregateLimits(cpus=12.345))[4:] == [
        "CPUQuota=1234.5%",
        "MemoryMax=infinity",
        "TasksMax=infinity",
    ]
    assert systemctl_set_property("x.slice", AggregateLimits())[4] == "CPUQuota="


def test_subtree_control_enables_only_missing_available_controllers() -> None:
    assert subtree_enable(["cpuset", "cpu", "memory", "pids"], ["cpu"]) == "+memory +pids"
    assert subtree_enable(["cpu", "memory", "pids"], ["cpu", "memory", "pids"]) is None
    assert subtree_enable(["memory"], []) == "+memory"


def test_flat_keyed_files_are_parsed() -> None:
    text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    assert parse_flat_keyed(text) == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}
    assert parse_flat_keyed("low 0\nhigh x\n\n") == {"low": 0}


def test_version_is_detected_from_the_root(tmp_path: Path) -> None:
    assert detect_version(v1_tree(tmp_path / "v1")) == "v1"
    assert detect_version(v2_tree(tmp_path / "v2")) == "v2"
    assert detect_version(tmp_path / "none") is None


# --- writing limits ---------------------------------------------------------------------------


def test_v1_apply_creates_the_parent_in_each_hierarchy_and_writes_the_limits(
    tmp_path: Path,
) -> None:
    manager = CgroupManager(v1_tree(tmp_path))
    assert manager.version == "v1"
    assert manager.apply(PARENT, LIMITS)
    parent = PARENT.lstrip("/")
    assert (tmp_path / "cpu" / parent / "cpu.cfs_quota_us").read_text() == "50000"
    assert (tmp_path / "cpu" / parent / "cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "memory" / parent / "memory.limit_in_bytes").read_text() == str(150 * MIB)
    assert (tmp_path / "pids" / parent / "pids.max").read_text() == "64"
    assert not (tmp_path / "blkio" / parent).exists()  # runc makes the others

    assert manager.apply(PARENT, AggregateLimits(memory_bytes=MIB), create=False)
    assert (tmp_path / "memory" / parent / "memory.limit_in_bytes").read_text() == str(MIB)
    assert (tmp_path / "cpu" / parent / "cpu.cfs_quota_us").read_text() == "-1"


def test_nothing_is_made_for_a_live_update_or_an_unlimited_user(tmp_path: Path) -> None:
    manager = CgroupManager(v1_tree(tmp_path))
    assert not manager.apply(PARENT, LIMITS, create=False)
    assert not manager.apply(PARENT, AggregateLimits())
    assert not (tmp_path / "memory" / "ds01.slice").exists()
    absent = CgroupManager(tmp_path / "nothing")
    assert not absent.apply(PARENT, AggregateLimits())
    with pytest.raises(CgroupError, match="cannot enforce aggregate limits"):
        absent.apply(PARENT, LIMITS)


def test_failed_writes_are_all_reported_and_the_others_still_made(tmp_path: Path) -> None:
    manager = CgroupManager(v1_tree(tmp_path))
    blocked = tmp_path / "memory" / PARENT.lstrip("/") / "memory.limit_in_bytes"
    blocked.mkdir(parents=True)  # writing a directory fails, as a refused write would
    with pytest.raises(CgroupError) as caught:
        manager.apply(PARENT, LIMITS)
    assert "memory.limit_in_bytes" in caught.value.message
    assert caught.value.details["parent"] == PARENT
    assert (tmp_path / "pids" / PARENT.lstrip("/") / "pids.max").read_text() == "64"


def test_v2_apply_enables_the_controllers_down_the_chain(tmp_path: Path) -> None:
    root = v2_tree(tmp_path)
    manager = CgroupManager(root)
    assert manager.version == "v2"
    assert manager.apply(PARENT, LIMITS)
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"
    parent = root / PARENT.lstrip("/")
    assert (parent / "cpu.max").read_text() == "50000 100000"
    assert (parent / "memory.max").read_text() == str(150 * MIB)
    assert (parent / "pids.max").read_text() == "64"


def test_the_systemd_driver_sets_slice_properties_through_systemctl(tmp_path: Path) -> None:
    calls: list[Sequence[str]] = []
    manager = CgroupManager(v1_tree(tmp_path), "systemd", run=calls.append)
    assert manager.apply(PARENT, LIMITS)
    assert calls == [systemctl_set_property("ds01-phd-alice.slice", LIMITS)]
    assert not manager.apply(PARENT, LIMITS, create=False)  # the slice is not there
    assert len(calls) == 1
    assert not (tmp_path / "memory" / "ds01.slice").exists()


# --- removing empty parents -----------------------------------------------------------------


def test_empty_parents_go_deepest_first_in_every_hierarchy(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    manager = CgroupManager(root, rmdir=tree_rmdir)
    other = "/ds01.slice/ds01-phd.slice/ds01-phd-carol.slice"
    for hierarchy in V1_HIERARCHIES:
        for parent in (PARENT, other):
            directory = root / hierarchy / parent.lstrip("/")
            directory.mkdir(parents=True)
            (directory / "cgroup.procs").write_text("")

    assert manager.remove_if_empty(PARENT)
    for hierarchy in V1_HIERARCHIES:
        assert not (root / hierarchy / PARENT.lstrip("/")).exists()
        assert (root / hierarchy / "ds01.slice/ds01-phd.slice").is_dir()  # carol is there

    assert manager.remove_if_empty(other)
    for hierarchy in V1_HIERARCHIES:
        assert not (root / hierarchy / "ds01.slice").exists()
    assert manager.remove_if_empty(PARENT)  # already gone


def test_a_parent_with_a_container_or_a_process_stays(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    manager = CgroupManager(root, rmdir=tree_rmdir)
    (root / "memory" / PARENT.lstrip("/") / CONTAINER_ID).mkdir(parents=True)
    assert not manager.remove_if_empty(PARENT)
    assert (root / "memory" / PARENT.lstrip("/") / CONTAINER_ID).is_dir()

    pids = root / "pids" / PARENT.lstrip("/")
    pids.mkdir(parents=True)
    (pids / "tasks").write_text("4242\n")
    shutil.rmtree(root / "memory" / PARENT.lstrip("/"))
    assert not manager.remove_if_empty(PARENT)
    assert pids.is_dir()


def test_the_systemd_driver_stops_an_empty_slice(tmp_path: Path) -> None:
    calls: list[Sequence[str]] = []
    root = v2_tree(tmp_path)
    manager = CgroupManager(root, "systemd", run=calls.append)
    (root / PARENT.lstrip("/")).mkdir(parents=True)
    manager.remove_if_empty(PARENT)
    assert calls == [["systemctl", "stop", "ds01-phd-alice.slice"]]
    (root / PARENT.lstrip("/") / f"docker-{CONTAINER_ID}.scope").mkdir()
    assert not manager.remove_if_empty(PARENT)
    assert len(calls) == 1


# --- counters ---------------------------------------------------------------------------------


def test_v1_counters(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    manager = CgroupManager(root)
    container = root / "memory" / PARENT.lstrip("/") / CONTAINER_ID
    container.mkdir(parents=True)
    (container / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (container / "memory.failcnt").write_text("7\n")
    (container.parent / "memory.usage_in_bytes").write_text(f"{5 * MIB}\n")
    counters = manager.oom_counters(f"{PARENT}/{CONTAINER_ID}")
    assert counters is not None
    assert (counters.kills, counters.limit_events) == (2, 7)
    assert counters.generation == container.stat().st_ino
    assert manager.memory_usage(PARENT) == 5 * MIB
    assert manager.limit_events(PARENT) is None  # no failcnt file
    # With swap accounting a failed memory+swap charge counts only in memsw.failcnt.
    (container / "memory.memsw.failcnt").write_text("3\n")
    assert manager.limit_events(f"{PARENT}/{CONTAINER_ID}") == 10
    assert manager.oom_counters(f"{PARENT}/gone") is None
    assert not counters.at_limit  # no peak files


def test_v1_a_peak_at_the_limit_counts_as_the_limit_hit_until_rearmed(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    manager = CgroupManager(root)
    container = root / "memory" / PARENT.lstrip("/") / CONTAINER_ID
    container.mkdir(parents=True)
    (container / "memory.oom_control").write_text("oom_kill 1\n")
    (container / "memory.failcnt").write_text("0\n")
    (container / "memory.limit_in_bytes").write_text(f"{32 * MIB}\n")
    (container / "memory.max_usage_in_bytes").write_text(f"{32 * MIB}\n")
    (container / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    (container / "memory.memsw.max_usage_in_bytes").write_text(f"{32 * MIB}\n")
    cgroup = f"{PARENT}/{CONTAINER_ID}"
    counters = manager.oom_counters(cgroup)
    assert counters is not None and counters.at_limit
    manager.rearm_peak(cgroup)
    assert (container / "memory.max_usage_in_bytes").read_text() == "0"
    counters = manager.oom_counters(cgroup)
    assert counters is not None and not counters.at_limit


def test_peaks_within_a_huge_page_of_the_limit_count() -> None:
    assert peak_at_limit(32 * MIB, 32 * MIB)
    assert peak_at_limit(32 * MIB - 2 * MIB, 32 * MIB)
    assert not peak_at_limit(29 * MIB, 32 * MIB)
    assert not peak_at_limit(2**63 - 4096, 9223372036854771712)  # no limit


def test_v2_counters_use_memory_events_and_the_local_oom_count(tmp_path: Path) -> None:
    root = v2_tree(tmp_path)
    manager = CgroupManager(root)
    container = root / PARENT.lstrip("/") / CONTAINER_ID
    container.mkdir(parents=True)
    (container / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    parent = container.parent
    (parent / "memory.events").write_text("low 0\nhigh 0\nmax 30\noom 4\noom_kill 3\n")
    (parent / "memory.events.local").write_text("low 0\nhigh 0\nmax 20\noom 3\noom_kill 0\n")
    (parent / "memory.current").write_text("1234\n")
    counters = manager.oom_counters(f"{PARENT}/{CONTAINER_ID}")
    assert counters is not None
    assert (counters.kills, counters.limit_events) == (1, 1)
    assert manager.limit_events(PARENT) == 3  # the parent's own OOMs, not its children's
    assert manager.memory_usage(PARENT) == 1234


def test_a_slurm_jobs_cgroup_goes_with_its_empty_uid_parent_but_never_the_nodes_top(
    tmp_path: Path,
) -> None:
    root = v1_tree(tmp_path)
    manager = CgroupManager(root, rmdir=tree_rmdir)
    job, other_job = "slurm_node2/uid_1001/job_42", "slurm_node2/uid_1002/job_43"
    for hierarchy in V1_HIERARCHIES:
        for cgroup in (job, other_job):
            (root / hierarchy / cgroup).mkdir(parents=True)
    manager.remove_job_cgroup("/" + job, with_parent=False)  # the owner has another here
    assert all((root / h / "slurm_node2/uid_1001").is_dir() for h in V1_HIERARCHIES)
    assert not any((root / h / job).exists() for h in V1_HIERARCHIES)
    (root / "memory" / "slurm_node2/uid_1001/job_44").mkdir()  # Slurm's next job there
    manager.remove_job_cgroup("/" + job, with_parent=True)
    assert (root / "memory" / "slurm_node2/uid_1001/job_44").is_dir()
    others = [h for h in V1_HIERARCHIES if h != "memory"]
    assert not any((root / h / "slurm_node2/uid_1001").exists() for h in others)
    # Another user's job and the node's top stay.
    assert all((root / h / other_job).is_dir() for h in V1_HIERARCHIES)


# --- whose a Slurm job's cgroup is -------------------------------------------------------------

JOB = "/slurm_node2/uid_1001/job_42"


def test_a_job_cgroup_counts_only_where_its_owner_made_every_level(tmp_path: Path) -> None:
    """``owned_by`` is asked with root's uid in ds01d; here the tree is this test's own, so
    the test's uid stands for root and any other uid for a user's."""
    mine, other = os.getuid(), os.getuid() + 1
    v2 = CgroupManager(v2_tree(tmp_path / "v2"))
    (tmp_path / "v2" / JOB.lstrip("/")).mkdir(parents=True)
    assert v2.owned_by(JOB, mine)
    assert not v2.owned_by(JOB, other)  # made by someone else (a delegated user)
    assert not v2.owned_by("/slurm_node2/uid_1001/job_43", mine)  # no such cgroup
    assert not v2.owned_by("/slurm_node2/../job_42", mine)
    # A level that is a symbolic link (to a directory of the user's choice) is no cgroup.
    (tmp_path / "v2" / "elsewhere" / "job_7").mkdir(parents=True)
    (tmp_path / "v2" / "slurm_node2" / "uid_1002").symlink_to(tmp_path / "v2" / "elsewhere")
    assert not v2.owned_by("/slurm_node2/uid_1002/job_7", mine)
    assert not CgroupManager(tmp_path / "nothing").owned_by(JOB, mine)


def test_on_v1_every_hierarchy_holding_the_job_cgroup_is_checked(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    manager = CgroupManager(root)
    (root / "cpu" / JOB.lstrip("/")).mkdir(parents=True)
    assert not manager.owned_by(JOB, os.getuid())  # not in the memory hierarchy
    (root / "memory" / JOB.lstrip("/")).mkdir(parents=True)
    assert manager.owned_by(JOB, os.getuid())  # pids has none: Docker makes it there
    (root / "pids" / "slurm_node2").mkdir()
    (root / "pids" / "slurm_node2" / "uid_1001").symlink_to(
        root / "cpu" / "slurm_node2" / "uid_1001"
    )
    assert not manager.owned_by(JOB, os.getuid())


def test_the_cgroups_slurm_made_for_a_job_are_found_two_levels_down(tmp_path: Path) -> None:
    v1 = CgroupManager(v1_tree(tmp_path / "v1"))
    (tmp_path / "v1" / "memory" / JOB.lstrip("/")).mkdir(parents=True)
    (tmp_path / "v1" / "memory" / "slurm_node2" / "uid_1001" / "job_420").mkdir()
    assert v1.slurm_job_cgroups(42) == [JOB]
    assert v1.slurm_job_cgroups(43) == []
    v2 = CgroupManager(v2_tree(tmp_path / "v2"))
    (tmp_path / "v2" / "system.slice" / "slurmstepd.scope" / "job_42").mkdir(parents=True)
    assert v2.slurm_job_cgroups(42) == ["/system.slice/slurmstepd.scope/job_42"]
    assert CgroupManager(tmp_path / "nothing").slurm_job_cgroups(42) == []
