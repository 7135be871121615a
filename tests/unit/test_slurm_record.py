"""``ds01.core.slurm_record``: a job's record read from ``squeue --json``, where no field a
job's owner wrote can pass for one Slurm set.

``slurm_squeue_forged.json`` is ``squeue --json`` recorded on the test cluster (Slurm
22.05.8, ``scripts/slurm-cluster.sh``) with five jobs of root's: 1, held, named ``c1``, with
the comment ``ds01-container JobState=RUNNING Nodes=node2 x GRES=gpu:4(IDX:0-3)`` (which
``scontrol show job -d`` printed raw, and ds01d's text reading took for a running job holding
node2's four GPUs); 2, held, whose name holds newlines and a made-up ``UserId=root(0)`` and
``JobState=RUNNING`` line; 3, ``big``, running on node2 with GPUs 0 and 1; 4 and 5, held,
with ``|`` and newlines in their name and comment, and an ESC in 5's name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ds01.core.slurm_job import job_devices
from ds01.core.slurm_record import job_record
from ds01.errors import InvalidInput, PermissionDenied, SlurmError

FORGED = (Path(__file__).parent / "slurm_squeue_forged.json").read_text()
UUIDS = {0: "GPU-a", 1: "GPU-b", 2: "GPU-c", 3: "GPU-d"}


def test_a_comment_that_spells_slurms_fields_gets_no_device() -> None:
    job = job_record(FORGED, 1)
    assert (job.name, job.uid, job.state, dict(job.gpu_indices)) == ("c1", 0, "PENDING", {})
    with pytest.raises(InvalidInput, match="is PENDING, not RUNNING"):
        job_devices(job, uid=0, name="c1", node="node2", uuid_of_index=UUIDS)


def test_a_name_with_newlines_stays_the_name() -> None:
    job = job_record(FORGED, 2)
    assert job.name.startswith("c1\n   UserId=root(0)")
    assert (job.state, dict(job.gpu_indices)) == ("PENDING", {})
    with pytest.raises(PermissionDenied, match="not after container"):
        job_devices(job, uid=0, name="c1", node="node2", uuid_of_index=UUIDS)


def test_a_running_job_holds_the_gres_slurm_gave_it_per_node() -> None:
    job = job_record(FORGED, 3)
    assert (job.job_id, job.name, job.uid, job.state) == (3, "big", 0, "RUNNING")
    assert dict(job.gpu_indices) == {"node2": (0, 1)}
    assert job_devices(job, uid=0, name="big", node="node2", uuid_of_index=UUIDS) == (
        "GPU-a",
        "GPU-b",
    )


def test_a_job_slurm_does_not_list_is_an_error_of_slurms() -> None:
    with pytest.raises(SlurmError, match="no job 99"):
        job_record(FORGED, 99)


def _without(field: str) -> str:
    answer = json.loads(FORGED)
    for job in answer["jobs"]:
        del job[field]
    return json.dumps(answer)


@pytest.mark.parametrize("field", ["user_id", "job_state", "gres_detail"])
def test_a_missing_field_is_named(field: str) -> None:
    with pytest.raises(InvalidInput, match=f"job 3 could not be read: {field}: Field required"):
        job_record(_without(field), 3)


def test_another_jobs_odd_record_decides_nothing() -> None:
    answer = json.loads(FORGED)
    for job in answer["jobs"]:
        if job["job_id"] != 3:
            del job["gres_detail"], job["user_id"]
    answer["jobs"].append({"job_id": "3", "name": "big", "job_state": "RUNNING"})
    assert job_record(json.dumps(answer), 3).gpu_indices == {"node2": (0, 1)}


def test_a_job_listed_twice_is_refused() -> None:
    answer = json.loads(FORGED)
    answer["jobs"] += [job for job in answer["jobs"] if job["job_id"] == 3]
    with pytest.raises(InvalidInput, match="lists job 3 twice"):
        job_record(json.dumps(answer), 3)


def test_what_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidInput, match="squeue --json"):
        job_record("JobId=3 JobName=big\n   JobState=RUNNING", 3)


def test_gres_of_more_nodes_than_allocated_is_refused() -> None:
    answer = json.loads(FORGED)
    big = next(job for job in answer["jobs"] if job["job_id"] == 3)
    big["gres_detail"].append("gpu:2(IDX:2-3)")
    with pytest.raises(InvalidInput, match="cannot tell which devices are whose"):
        job_record(json.dumps(answer), 3)
