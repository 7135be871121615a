"""Per-user aggregate limits, read back from the kernel's cgroup files.

alice (Unix group ``phd``) creates containers through the real CLI; the tests then read the
files of her cgroup parent ``/ds01.slice/ds01-phd.slice/ds01-phd-alice.slice`` under
``/sys/fs/cgroup`` (cgroup v1 on the CI machine; v2 paths are handled too) and measure what
the kernel enforces: the CPU time two busy containers get together, the processes they may
start. A changed ``resource-limits.yaml`` must reach the live parent, the parent must go
when alice's last container does, and a container whose memory does not fit in her total
must be refused before it is created.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from support import TEST_IMAGES_YAML, describe, value_and_source, wait_until

CGROUP_ROOT = Path("/sys/fs/cgroup")
ALICE_PARENT = "ds01.slice/ds01-phd.slice/ds01-phd-alice.slice"
MIB = 1024**2
GIB = 1024**3


def limits_yaml(aggregate: str, defaults: str = "memory_limit: 1G") -> str:
    """A resource-limits.yaml with group phd (alice, carol) and the given aggregate entry."""
    return f"""
        defaults:
          {defaults}
          max_containers: 5
        groups:
          phd: {{}}
        aggregate:
          groups:
            phd: {aggregate}
    """


def is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").is_file()


def parent_dir(hierarchy: str, parent: str = ALICE_PARENT) -> Path:
    """The parent's directory in v1 ``hierarchy`` (v2: in the unified tree)."""
    return CGROUP_ROOT / parent if is_v2() else CGROUP_ROOT / hierarchy / parent


def read(hierarchy: str, v1_file: str, v2_file: str, parent: str = ALICE_PARENT) -> str:
    name = v2_file if is_v2() else v1_file
    return (parent_dir(hierarchy, parent) / name).read_text().strip()


def memory_limit(parent: str = ALICE_PARENT) -> int | None:
    """The parent's memory limit in bytes, ``None`` when unlimited."""
    text = read("memory", "memory.limit_in_bytes", "memory.max", parent)
    value = None if text == "max" else int(text)
    return None if value is None or value >= 2**62 else value  # v1 "unlimited" is ~2**63


def cpu_quota() -> float | None:
    """The parent's CPU quota in CPUs, ``None`` when unlimited."""
    if is_v2():
        quota, period = read("cpu", "", "cpu.max").split()
        return None if quota == "max" else int(quota) / int(period)
    quota = int(read("cpu", "cpu.cfs_quota_us", ""))
    return None if quota < 0 else quota / int(read("cpu", "cpu.cfs_period_us", ""))


def cpu_usage_seconds() -> float:
    """CPU time used by everything under the parent so far, in seconds."""
    if is_v2():
        stat = dict(line.split() for line in read("cpu", "", "cpu.stat").splitlines())
        return int(stat["usage_usec"]) / 1e6
    return int(read("cpuacct", "cpuacct.usage", "")) / 1e9


def pids_max() -> str:
    return read("pids", "pids.max", "pids.max")


def start_daemon(ds01d: Any, aggregate: str, defaults: str = "memory_limit: 1G") -> Any:
    return ds01d(resource_limits=limits_yaml(aggregate, defaults), images=TEST_IMAGES_YAML)


def create(daemon: Any, name: str, *args: str, user: str = "alice") -> dict[str, Any]:
    info: dict[str, Any] = daemon.cli_json(
        user, "container-create", name, "--image", "busybox", *args
    )
    return info


def run_in(docker_client: Any, container: str, script: str) -> str:
    """Start ``sh -c script`` in a running container, in the background; its exec's id."""
    exec_id: str = docker_client.api.exec_create(container, ["sh", "-c", script])["Id"]
    docker_client.api.exec_start(exec_id, detach=True)
    return exec_id


def docker_name(unix_users: dict[str, Any], name: str, user: str = "alice") -> str:
    return f"{name}._.{unix_users[user].pw_uid}"


# --- the limits land on the parent ----------------------------------------------------------


def test_totals_are_written_on_the_parent_of_all_the_users_containers(
    ds01d, docker_client, unix_users
):
    d = start_daemon(ds01d, "{cpu_limit: 0.5, memory_limit: 150M, pids_limit: 64}")
    create(d, "one", "--start", "--memory", "86M")
    create(d, "two", "--memory", "64M")

    assert memory_limit() == 150 * MIB
    assert cpu_quota() == pytest.approx(0.5)
    assert pids_max() == "64"
    for name in ("one", "two"):
        attrs = docker_client.api.inspect_container(docker_name(unix_users, name))
        assert attrs["HostConfig"]["CgroupParent"] == f"/{ALICE_PARENT}"
    # The default CPU limit (2 CPUs) never exceeds the total.
    one = docker_client.api.inspect_container(docker_name(unix_users, "one"))
    assert one["HostConfig"]["NanoCpus"] == 500_000_000
    # The running container really sits below the parent.
    assert (parent_dir("memory") / one["Id"]).is_dir()

    limits = d.cli_json("alice", "check-limits", "--explain")
    assert limits["aggregate"] == {
        "cpu_limit": 0.5,
        "memory_limit": "150M",
        "pids_limit": 64,
        "disk_limit": None,
    }
    memory_total = value_and_source(limits["explain"]["aggregate.memory_limit"])
    assert memory_total == {"value": "150M", "source": "group:phd"}
    assert limits["explain"]["aggregate.cpu_limit"]["source"] == "group:phd"
    assert limits["aggregate_usage"]["memory_committed_bytes"] == 150 * MIB
    assert limits["limits"]["memory_limit"] == "1G"  # the per-container limits are unchanged
    text = d.cli("alice", "check-limits", "--explain")
    line = next(ln for ln in text.stdout.splitlines() if ln.startswith("aggregate.memory_limit"))
    assert "150M" in line and "group:phd" in line, describe(text)

    # bob is in no group with a total: no limit is written for him.
    d.cli_json("bob", "container-create", "free", "--image", "busybox", "--start")
    assert memory_limit("ds01.slice/ds01-users.slice/ds01-users-bob.slice") is None


def test_cpu_total_holds_two_busy_containers(ds01d, docker_client, unix_users):
    d = start_daemon(ds01d, "{cpu_limit: 0.5}")
    for name in ("busy1", "busy2"):
        create(d, name, "--start")
        run_in(docker_client, docker_name(unix_users, name), "while :; do :; done")
    time.sleep(0.5)  # the loops get going: measured from here, not from their start
    before, started = cpu_usage_seconds(), time.monotonic()
    time.sleep(3)  # the measuring window (a rate, not a wait for an event)
    used = (cpu_usage_seconds() - before) / (time.monotonic() - started)
    print(f"two busy containers under a 0.5-CPU total used {used:.3f} CPUs")
    # Unlimited, two busy loops would take both cores of the machine (2.0).
    assert used <= 0.5 * 1.15, f"{used:.3f} CPUs used, the total is 0.5"
    assert used >= 0.2, f"{used:.3f} CPUs used: the busy loops did not run"


def test_pids_total_stops_forks_across_containers(ds01d, docker_client, unix_users):
    d = start_daemon(ds01d, "{pids_limit: 30}")
    for name in ("p1", "p2"):
        create(d, name, "--start")
    assert pids_max() == "30"
    # 2 x 20 sleepers: the second container runs out of processes.
    forks = [
        run_in(
            docker_client, docker_name(unix_users, name), "for i in $(seq 20); do sleep 60 & done"
        )
        for name in ("p1", "p2")
    ]
    wait_until(
        "both fork loops to end",
        lambda: not any(docker_client.api.exec_inspect(f)["Running"] for f in forks),
        timeout=15,
    )
    current = int(read("pids", "pids.current", "pids.current"))
    assert 20 <= current <= 30, f"{current} processes under a total of 30"


def test_cpu_request_above_the_total_is_refused(ds01d):
    d = start_daemon(ds01d, "{cpu_limit: 0.5}", defaults="cpu_limit: 2")
    result = d.cli("alice", "container-create", "x", "--image", "busybox", "--cpus", "1")
    assert result.returncode == 3, describe(result)
    assert "above your CPU total of 0.5 CPUs" in result.stderr, describe(result)


# --- memory is checked before a create or a start --------------------------------------------


def test_memory_that_does_not_fit_in_the_total_is_refused_with_exit_3(
    ds01d, docker_client, unix_users
):
    d = start_daemon(ds01d, "{memory_limit: 4G}", defaults="memory_limit: 32G")
    create(d, "thesis", "--memory", "2G", "--start")
    create(d, "nb", "--memory", "1G", "--start")

    result = d.cli("alice", "container-create", "big", "--image", "busybox", "--memory", "2G")
    assert result.returncode == 3, describe(result)
    assert (
        "Memory total reached: your containers may use 4G together; nb and thesis already "
        "have 3G; this one asks for 2G. Ask for --memory 1G or less, or stop one."
    ) in result.stderr, describe(result)
    refused = d.events_where(action="container.create", outcome="denied")
    assert refused and "Memory total reached" in refused[-1]["details"]["reason"]

    # A stopped container holds no memory: stop nb, and big fits; nb cannot start again.
    d.cli_json("alice", "container-stop", "nb")
    create(d, "big", "--memory", "2G")
    result = d.cli("alice", "container-start", "nb")
    assert result.returncode == 3, describe(result)
    assert "nb asks for 1G" in result.stderr, describe(result)
    assert "Stop one of the others first" in result.stderr, describe(result)
    state = docker_client.api.inspect_container(docker_name(unix_users, "nb"))["State"]
    assert state["Status"] == "exited"

    # Without --memory a container gets at most what the total allows, and here none is left.
    result = d.cli("alice", "container-create", "more", "--image", "busybox")
    assert result.returncode == 3, describe(result)
    assert "this one asks for 4G" in result.stderr, describe(result)
    assert "Stop or remove one of them first" in result.stderr, describe(result)


# --- a changed configuration reaches the live parent; empty parents go ----------------------


def test_a_changed_total_is_written_on_the_live_parent(ds01d):
    d = start_daemon(ds01d, "{memory_limit: 300M, pids_limit: 100}")
    create(d, "live", "--memory", "100M", "--cpus", "1", "--start")
    assert memory_limit() == 300 * MIB

    d.write_config("resource-limits.yaml", limits_yaml("{memory_limit: 200M, cpu_limit: 1.5}"))
    d.cli_json("carol", "check-limits")  # any request makes ds01d notice the new file
    assert memory_limit() == 200 * MIB
    assert cpu_quota() == pytest.approx(1.5)
    assert pids_max() == "max"  # no longer set: inherits the builtin, unlimited
    updates = d.events_where(action="resource.aggregate", outcome="success")
    assert updates and updates[-1]["details"]["updated"] >= 1

    d.write_config("resource-limits.yaml", limits_yaml("{}"))
    d.cli_json("carol", "check-limits")
    assert memory_limit() is None
    assert cpu_quota() is None

    if not is_v2():
        # cgroup v1 refuses a CPU total below the 1 CPU of the running container: the
        # failure is logged, the other limits are still written.
        d.write_config("resource-limits.yaml", limits_yaml("{cpu_limit: 0.5, pids_limit: 50}"))
        d.cli_json("carol", "check-limits")
        assert pids_max() == "50"
        assert cpu_quota() is None
        failed = d.events_where(action="resource.aggregate", outcome="failure")
        assert any("cpu.cfs_quota_us" in e["details"].get("error", "") for e in failed), failed


def test_the_parent_goes_with_the_users_last_container(ds01d):
    d = start_daemon(ds01d, "{memory_limit: 300M}")
    create(d, "first", "--memory", "100M", "--start")
    create(d, "second", "--memory", "100M")
    hierarchies = [CGROUP_ROOT] if is_v2() else [p for p in CGROUP_ROOT.iterdir() if p.is_dir()]
    assert (parent_dir("memory")).is_dir()

    d.cli_json("alice", "container-remove", "second")
    assert parent_dir("memory").is_dir(), "removed with a container still in it"
    d.cli_json("alice", "container-remove", "first", "--force")
    left = [str(h / ALICE_PARENT) for h in hierarchies if (h / ALICE_PARENT).exists()]
    assert not left, f"empty parents left behind: {left}"


def test_start_up_removes_its_own_empty_parents(ds01d, docker_client):
    d = start_daemon(ds01d, "{memory_limit: 300M}")
    create(d, "gone", "--memory", "100M")
    assert parent_dir("memory").is_dir()
    d.stop()
    for container in docker_client.containers.list(all=True, filters={"label": "ds01.user=alice"}):
        container.remove(force=True)  # removed behind ds01d's back while it was down

    d.start()

    assert not parent_dir("memory").exists()
    assert not parent_dir("pids").exists()


def test_start_up_leaves_parents_it_did_not_make(ds01d):
    """Another ds01d on the same engine (or an admin) made this parent for a user of its own,
    who has no container yet: it is not this instance's to remove."""
    theirs = "ds01.slice/ds01-ghosts.slice/ds01-ghosts-casper.slice"
    made = [parent_dir(hierarchy, theirs) for hierarchy in ("memory", "pids")]
    try:
        for directory in made:
            directory.mkdir(parents=True, exist_ok=True)
        start_daemon(ds01d, "{memory_limit: 300M}")
        assert all(directory.is_dir() for directory in made)
    finally:
        for directory in made:
            for cgroup in (directory, directory.parent):
                if cgroup.is_dir():
                    cgroup.rmdir()
