"""``ds01 admin slurm sync|gres`` against a real Slurm 22.05 cluster on this machine
(``slurm_cluster``: munge, MariaDB, slurmdbd, slurmctld, two slurmd nodes), with real users
submitting real jobs. Nothing is mocked: what ds01 wrote is read back with sacctmgr, sinfo,
squeue and slurmd."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import describe, wait_until

DS01 = str(Path(sys.executable).parent / "ds01")

#: alice and carol are in the Unix group phd, bob in msc, dave in none (``unix_users``).
LIMITS = """
defaults:
  priority: 10
  gpu_limit: 1
  max_containers: 2
  max_runtime_hours: 24
groups:
  phd:
    priority: 40
    max_runtime_hours: 48
  msc:
    gpu_limit: 2
    max_containers: 1
users:
  dave:
    gpu_limit: 3
"""


def _run(
    env: dict[str, str], *args: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``args`` with the cluster's variables, as root or as ``user`` (in /tmp, which they
    can enter)."""
    prefix = ["runuser", "-u", user, "--"] if user else []
    variables = [f"{k}={v}" for k, v in env.items()]
    return subprocess.run(
        [*prefix, "env", f"PATH={os.environ['PATH']}", *variables, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/tmp",
        check=False,
    )


def _ok(env: dict[str, str], *args: str, user: str | None = None) -> str:
    done = _run(env, *args, user=user)
    assert done.returncode == 0, describe(done)
    return done.stdout


def _config_dir(tmp: Path, limits: str) -> str:
    (tmp / "resource-limits.yaml").write_text(textwrap.dedent(limits))
    return str(tmp)


def _sync(env: dict[str, str], config_dir: str, *flags: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(
        _ok(env, DS01, "admin", "slurm", "sync", "--json", "--config-dir", config_dir, *flags)
    )
    return answer


def _show(env: dict[str, str], entity: str, fields: str) -> set[str]:
    rows = _ok(env, "sacctmgr", "--parsable2", "--noheader", "show", entity, f"format={fields}")
    return set(rows.splitlines())


@pytest.fixture(scope="module")
def synced(
    slurm_cluster: dict[str, str],
    unix_users: dict[str, pwd.struct_passwd],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, str], str, dict[str, Any]]]:
    """The cluster after one sync of ``LIMITS``: (its variables, the config dir, the answer)."""
    config_dir = _config_dir(tmp_path_factory.mktemp("slurm-config"), LIMITS)
    yield slurm_cluster, config_dir, _sync(slurm_cluster, config_dir)


IDLE_NODES = {("node1", "idle", "gpu:2"), ("node2", "idle", "gpu:4")}


def _nodes(env: dict[str, str]) -> set[tuple[str, ...]]:
    rows = _ok(env, "sinfo", "--noheader", "--Node", "--format=%N %t %G").split("\n")
    return {tuple(row.split()) for row in rows if row.strip()}


def test_both_nodes_are_up_with_their_gpus(slurm_cluster: dict[str, str]) -> None:
    # Jobs of tests before may still be completing ("comp") on the session's cluster.
    nodes: set[tuple[str, ...]] = set()

    def idle() -> bool:
        nodes.clear()
        nodes.update(_nodes(slurm_cluster))
        return nodes == IDLE_NODES

    try:
        wait_until("both nodes idle", idle, timeout=30)
    except AssertionError:
        assert nodes == IDLE_NODES


def test_sync_writes_the_limits_into_slurm_and_a_second_sync_finds_nothing(
    synced: tuple[dict[str, str], str, dict[str, Any]],
) -> None:
    env, config_dir, _ = synced
    qos = {
        row
        for row in _show(env, "qos", "Name,Priority,MaxTRESPU,MaxJobsPU,MaxWall")
        if row.startswith("ds01-")
    }
    assert qos == {
        "ds01-default|10|gres/gpu=1|2|1-00:00:00",
        "ds01-group-phd|40|gres/gpu=1|2|2-00:00:00",
        "ds01-group-msc|10|gres/gpu=2|1|1-00:00:00",
        "ds01-user-dave|10|gres/gpu=3|2|1-00:00:00",
    }
    fields = "Account,User,QOS,DefaultQOS,Fairshare"
    users = {row for row in _show(env, "assoc", fields) if row.split("|")[1]}
    # Fairshare: the user's priority (the shares fair share weighs their usage against).
    assert users >= {
        "phd|alice|ds01-group-phd|ds01-group-phd|40",
        "phd|carol|ds01-group-phd|ds01-group-phd|40",
        "msc|bob|ds01-group-msc|ds01-group-msc|10",
        "ds01-default|dave|ds01-user-dave|ds01-user-dave|10",
    }
    assert {row.split("|")[0] for row in users} == {"phd", "msc", "ds01-default", "root"}
    assert {"alice|phd", "bob|msc", "dave|ds01-default"} <= _show(
        env, "user", "User,DefaultAccount"
    )
    assert _sync(env, config_dir)["changes"] == []


def test_dry_run_shows_the_diff_and_changes_nothing(
    synced: tuple[dict[str, str], str, dict[str, Any]], tmp_path: Path
) -> None:
    env, _, _ = synced
    changed = _config_dir(tmp_path, LIMITS.replace("gpu_limit: 2", "gpu_limit: 3"))
    answer = _sync(env, changed, "--dry-run")
    assert answer["dry_run"] is True
    assert [c["argv"] for c in answer["changes"]] == [
        [
            "modify", "qos", "where", "name=ds01-group-msc", "set", "Priority=10",
            "MaxTRESPerUser=gres/gpu=3", "MaxJobsPerUser=1", "MaxWall=1440",
        ]
    ]  # fmt: skip
    assert "ds01-group-msc|gres/gpu=2" in _show(env, "qos", "Name,MaxTRESPU")


def _job(env: dict[str, str], user: str, *args: str) -> str:
    out = _ok(env, "sbatch", "--parsable", "--output=/dev/null", *args, user=user)
    return out.strip().split(";")[0]


def _state(env: dict[str, str], job: str) -> tuple[str, str]:
    state, _, reason = (
        _ok(env, "squeue", "--noheader", "-j", job, "--format=%T %r").strip().partition(" ")
    )
    return state, reason


def test_a_user_over_gpu_limit_is_held_by_slurm(
    synced: tuple[dict[str, str], str, dict[str, Any]],
) -> None:
    env, _, _ = synced
    # alice may hold 1 GPU (phd inherits gpu_limit 1): one job gets it, the rest pend.
    first = _job(env, "alice", "--gres=gpu:1", "--wrap=sleep 300")
    jobs = [first]
    try:
        wait_until("alice's first job to run", lambda: _state(env, first)[0] == "RUNNING")
        too_big = _job(env, "alice", "--gres=gpu:2", "--wrap=true")
        second = _job(env, "alice", "--gres=gpu:1", "--wrap=true")
        jobs += [too_big, second]
        for job in (too_big, second):
            wait_until(
                f"job {job} held for alice's GPU limit",
                lambda job=job: _state(env, job) == ("PENDING", "QOSMaxGRESPerUser"),
            )
        # dave (gpu_limit 3) is not held by alice's limit: his 2-GPU job runs beside hers.
        daves = _job(env, "dave", "--gres=gpu:2", "--wrap=sleep 300")
        jobs.append(daves)
        wait_until("dave's job to run", lambda: _state(env, daves)[0] == "RUNNING")
    finally:
        _run(env, "scancel", *jobs)


def test_gres_conf_from_the_inventory_is_what_slurmd_reads(
    slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    devices = Path(slurm_cluster["DS01_SLURM_DIR"]) / "dev" / "node2"
    # GPU index and device number differ on purpose: Slurm numbers a GPU by its file.
    order = (3, 1, 0, 2)
    gpus = "\n".join(f"    - {{device_node: {devices}/nvidia{n}}}" for n in order)
    (tmp_path / "gpu-config.yaml").write_text(f"backend: simulated\nsimulated:\n  gpus:\n{gpus}\n")
    conf_dir = tmp_path / "slurm"
    conf_dir.mkdir()
    answer = json.loads(
        _ok(
            slurm_cluster,
            *(DS01, "admin", "slurm", "gres", "--json", "--node", "node2"),
            *("--config-dir", str(tmp_path), "--output", str(conf_dir / "gres.conf")),
        )
    )
    assert answer["node_line"] == "NodeName=node2 Gres=gpu:4"
    # slurmd reads gres.conf next to slurm.conf: the cluster's slurm.conf, ds01's gres.conf.
    (conf_dir / "slurm.conf").write_text(Path(slurm_cluster["SLURM_CONF"]).read_text())
    done = _run(
        {**slurm_cluster, "SLURM_CONF": str(conf_dir / "slurm.conf")}, "slurmd", "-G", "-N", "node2"
    )
    assert done.returncode == 0, describe(done)
    seen = dict(re.findall(r"Index=(\d+) .*?File=(\S+)", done.stdout + done.stderr))
    ours = {str(d["index"]): d["files"][0] for d in answer["devices"]}
    assert seen == ours, (seen, ours)
    comments = re.findall(r"# index (\d+): (\S+)", answer["gres_conf"])
    assert comments == [(str(d["index"]), d["uuid"]) for d in answer["devices"]]
