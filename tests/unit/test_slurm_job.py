"""Cluster mode's pure parts: ``ds01.core.slurm_job`` (a container's sbatch options, Slurm's
record of a job as ds01d reads it, the checks before a job's container is created), the
``cluster:`` setting, and the ``%n`` of a socket path."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from ds01 import paths
from ds01.config.limits import ResourceLimitsConfig
from ds01.core.slurm_job import (
    ENDED_STATES,
    RUNNING,
    check_request_matches,
    gone_jobs,
    job_cgroup,
    job_devices,
    job_hours,
    parse_job,
    sbatch_options,
)
from ds01.errors import InvalidInput, PermissionDenied

#: ``scontrol show job -d 7`` of Slurm 22.05 (trimmed), a job of alice's on node2.
RECORD = textwrap.dedent(
    """\
    JobId=7 JobName=big
       UserId=alice(1001) GroupId=alice(1004) MCS_label=N/A
       Priority=10000 Nice=0 Account=phd QOS=ds01-group-phd
       JobState=RUNNING Reason=None Dependency=(null)
       NodeList=node2
       BatchHost=node2
       TRES=cpu=1,node=1,billing=1,gres/gpu=3
       JOB_GRES=gpu:3
         Nodes=node2 CPU_IDs=0 Mem=0 GRES=gpu:3(IDX:0-1,3)
       MinCPUsNode=1 MinMemoryNode=100M MinTmpDiskNode=0
    """
)
UUIDS = {0: "GPU-a", 1: "GPU-b", 2: "GPU-c", 3: "GPU-d"}


def test_sbatch_options_name_the_job_after_the_container_and_round_up() -> None:
    options = sbatch_options(
        name="big",
        gpus=3,
        mig_profiles=(),
        cpus=1.5,
        memory_bytes=256 * 2**20 + 1,
        runtime_hours=None,
        max_runtime_hours=0.51,
        account="phd",
        qos="ds01-group-phd",
    )
    assert options == [
        "--job-name=big",
        "--comment=ds01-container",
        "--account=phd",
        "--qos=ds01-group-phd",
        "--gres=gpu:3",
        "--cpus-per-task=2",
        "--mem=257M",
        "--time=31",
    ]


def test_sbatch_options_of_a_mig_slice_without_limits() -> None:
    options = sbatch_options(
        name="n",
        gpus=0,
        mig_profiles=("3g.20gb",),
        cpus=None,
        memory_bytes=None,
        runtime_hours=None,
        max_runtime_hours=None,
        account="ds01-default",
        qos="ds01-default",
    )
    assert options[4:] == ["--gres=gpu:3g.20gb:1"]


@pytest.mark.parametrize(
    ("asked", "most", "hours"),
    [(None, None, None), (None, 48.0, 48.0), (2.0, None, 2.0), (2.0, 48.0, 2.0), (9.0, 4.0, 4.0)],
)
def test_the_job_time_is_the_runtime_asked_capped_by_max_runtime_hours(
    asked: float | None, most: float | None, hours: float | None
) -> None:
    assert job_hours(asked, most) == hours


def test_runtime_hours_becomes_the_job_time_in_minutes() -> None:
    options = sbatch_options(
        name="n", gpus=1, mig_profiles=(), cpus=None, memory_bytes=None,
        runtime_hours=0.25, max_runtime_hours=48, account="a", qos="q",
    )  # fmt: skip
    assert options[-1] == "--time=15"


def test_parse_job_reads_owner_state_and_device_indices_per_node() -> None:
    job = parse_job(RECORD)
    assert (job.job_id, job.name, job.uid, job.state) == (7, "big", 1001, "RUNNING")
    assert job.gpu_indices == {"node2": (0, 1, 3)}


def test_parse_job_refuses_what_is_not_a_record() -> None:
    with pytest.raises(InvalidInput):
        parse_job("slurm_load_jobs error: Invalid job id specified")


def test_job_devices_maps_indices_to_uuids() -> None:
    job = parse_job(RECORD)
    devices = job_devices(job, uid=1001, name="big", node="node2", uuid_of_index=UUIDS)
    assert devices == ("GPU-a", "GPU-b", "GPU-d")


@pytest.mark.parametrize(
    ("uid", "name", "node", "uuids", "error"),
    [
        (1002, "big", "node2", UUIDS, PermissionDenied),  # another user's job
        (1001, "other", "node2", UUIDS, PermissionDenied),  # not named after the container
        (1001, "big", "node1", UUIDS, InvalidInput),  # the job runs elsewhere
        (1001, "big", "node2", {0: "GPU-a", 1: "GPU-b"}, InvalidInput),  # not in the inventory
    ],
)
def test_job_devices_refusals(
    uid: int, name: str, node: str, uuids: dict[int, str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        job_devices(parse_job(RECORD), uid=uid, name=name, node=node, uuid_of_index=uuids)


def test_job_devices_refuses_a_job_that_is_not_running() -> None:
    job = parse_job(RECORD.replace("JobState=RUNNING", "JobState=PENDING"))
    with pytest.raises(InvalidInput, match="PENDING"):
        job_devices(job, uid=1001, name="big", node="node2", uuid_of_index=UUIDS)


def test_a_request_gets_exactly_its_jobs_devices() -> None:
    check_request_matches(("GPU-a", "GPU-b"), 2, ())
    with pytest.raises(InvalidInput, match="holds 1"):
        check_request_matches(("GPU-a",), 2, ())


CGROUP_V1 = """\
9:name=systemd:/
6:freezer:/slurm_node1/uid_0/job_1/step_batch
4:memory:/slurm_node1/uid_0/job_1/step_batch/task_0
1:cpu:/
0::/
"""


def test_job_cgroup_is_the_memory_path_up_to_the_job() -> None:
    assert job_cgroup(CGROUP_V1, 1) == "/slurm_node1/uid_0/job_1"
    assert job_cgroup("0::/system.slice/slurmstepd.scope/job_12/step_0/user/task_0\n", 12) == (
        "/system.slice/slurmstepd.scope/job_12"
    )


def test_job_cgroup_of_a_process_outside_the_job_is_none() -> None:
    assert job_cgroup(CGROUP_V1, 11) is None  # job_1 is not job_11
    assert job_cgroup("4:memory:/\n0::/\n", 1) is None


def test_gone_jobs_are_those_not_live_on_the_node() -> None:
    labelled = {"a": 1, "b": 2, "c": 3}
    assert gone_jobs(labelled, {1: "RUNNING", 2: "COMPLETED"}) == ["b", "c"]


def test_cluster_mode_is_a_top_level_setting_off_by_default() -> None:
    assert ResourceLimitsConfig().cluster == "none"
    assert ResourceLimitsConfig.model_validate({"cluster": "slurm"}).cluster == "slurm"
    with pytest.raises(ValidationError):
        ResourceLimitsConfig.model_validate({"cluster": "kubernetes"})


def test_a_socket_path_names_the_slurm_node_it_runs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.ENV_SOCKET, "/run/ds01/%n.sock")
    monkeypatch.setenv(paths.ENV_SLURM_NODE, "node1")
    monkeypatch.delenv(paths.ENV_SLURMD_NODENAME, raising=False)
    assert paths.socket_path() == "/run/ds01/node1.sock"
    # Inside a job, Slurm's word wins over what the submitting shell exported.
    monkeypatch.setenv(paths.ENV_SLURMD_NODENAME, "node2")
    assert paths.socket_path() == "/run/ds01/node2.sock"
    assert paths.socket_path("/x/ds01.sock") == "/x/ds01.sock"


@pytest.mark.parametrize(
    ("state", "exit_code", "status"),
    [
        ("COMPLETED", "0:0", 0),
        ("FAILED", "137:0", 137),
        ("CANCELLED", "0:15", 143),
        # Slurm's OOM mark (its SIG_OOM, 253) when the job's cgroup saw the kill: not signal
        # 125, but the SIGKILL the kernel sent.
        ("OUT_OF_MEMORY", "0:125", 137),
    ],
)
def test_an_ended_jobs_exit_status_is_read_as_a_shell_tells_it(
    state: str, exit_code: str, status: int
) -> None:
    record = RECORD.replace("JobState=RUNNING", f"JobState={state}").replace(
        "Reason=None", f"Reason=None ExitCode={exit_code}"
    )
    job = parse_job(record)
    assert job.state in ENDED_STATES and job.exit_code == status
    assert parse_job(RECORD).exit_code is None and RUNNING not in ENDED_STATES
