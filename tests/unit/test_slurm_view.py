"""The cluster as a login node sees it (``ds01.core.slurm_view``), on outputs recorded from the
test cluster (``slurm_data``): node2's 4 GPUs held by ``big``, ``more`` (3 GPUs) pending for
resources, ``small`` on node1, and a job that is no container."""

from __future__ import annotations

import pytest

from ds01.core.slurm_job import JOB_COMMENT, sbatch_options
from ds01.core.slurm_squeue import SqueueAnswer
from ds01.core.slurm_view import (
    NOT_A_CLUSTER,
    REASONS,
    explain_reason,
    gres_gpus,
    open_argv,
    parse_containers,
    parse_nodes,
    pending,
    running_container,
)
from ds01.errors import Conflict, NotFound, SlurmError
from ds01.paths import ENV_CLUSTER
from slurm_data import (
    FORGED,
    MARKS,
    NODES,
    SQUEUE,
    SQUEUE_AT,
    SQUEUE_JOBS,
    squeue_answer,
    squeue_job,
    squeue_record,
)


def test_the_containers_are_the_jobs_with_ds01s_comment_in_squeues_order() -> None:
    found = parse_containers(SQUEUE, SQUEUE_AT)
    assert [(c.name, c.user, c.slurm_job, c.status, c.node, c.gpus) for c in found] == [
        ("more", "alice", 2, "pending", "", 3),
        ("small", "bob", 3, "running", "node1", 1),
        ("big", "alice", 1, "running", "node2", 4),
    ]


def test_a_pending_container_says_slurms_reason_in_ds01s_words() -> None:
    [more] = pending(parse_containers(SQUEUE, SQUEUE_AT))
    assert more.name == "more"
    assert more.reason_text == REASONS["Resources"]
    row = more.as_json()
    assert (row["status"], row["reason"], row["node"]) == ("pending", "Resources", None)
    assert parse_containers(SQUEUE, SQUEUE_AT)[1].as_json()["reason"] is None  # running: no reason


def test_an_unknown_reason_is_shown_as_slurm_says_it() -> None:
    assert "NodeDown" in explain_reason("NodeDown")


def test_the_submission_carries_the_comment_the_views_look_for() -> None:
    options = sbatch_options(
        name="x", gpus=1, mig_profiles=(), cpus=None, memory_bytes=None,
        runtime_hours=None, max_runtime_hours=None, account="phd", qos="ds01-group-phd",
    )  # fmt: skip
    assert f"--comment={JOB_COMMENT}" in options


def test_each_nodes_gpus_used_and_total() -> None:
    assert [n.as_json() for n in parse_nodes(NODES)] == [
        {"node": "node1", "state": "MIXED", "gpus": 2, "used": 1, "free": 1},
        {"node": "node2", "state": "MIXED", "gpus": 4, "used": 4, "free": 0},
    ]


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("gres:gpu:3", 3),
        ("gpu:2(S:0-1)", 2),
        ("gpu:full:1(IDX:0),gpu:1g.10gb:2(IDX:1)", 3),  # typed GRES (MIG slices)
        ("gpu:1g.10gb:0(IDX:N/A)", 0),
        ("(null)", 0),
        ("N/A", 0),
    ],
)
def test_gres_texts_count_their_gpus(text: str, count: int) -> None:
    assert gres_gpus(text) == count


def test_open_runs_container_open_in_a_step_of_the_running_containers_job() -> None:
    big = running_container(parse_containers(SQUEUE, SQUEUE_AT), "big")
    argv = open_argv(big, "/opt/ds01/venv/bin/python", ["sh", "-c", "id"])
    assert argv[:4] == ["srun", "--jobid=1", "--overlap", "--pty"]
    # There the node's own ds01d answers: no second srun.
    step = argv[argv.index("env") :]
    assert step == [
        "env", f"{ENV_CLUSTER}={NOT_A_CLUSTER}", "/opt/ds01/venv/bin/python", "-m", "ds01.cli",
        "container", "open", "big", "--", "sh", "-c", "id",
    ]  # fmt: skip
    assert open_argv(big, "py", [])[-1] == "big"  # a login shell: no "--"


def test_open_refuses_a_pending_or_unknown_container_in_words() -> None:
    containers = parse_containers(SQUEUE, SQUEUE_AT)
    with pytest.raises(Conflict, match=r"pending \(Resources\): no node has the GPUs"):
        running_container(containers, "more")
    with pytest.raises(NotFound):
        running_container(containers, "nothing")


def test_bars_and_newlines_in_names_and_comments_stay_in_their_field() -> None:
    # Recorded (tests/unit/slurm_squeue_forged.json): squeue's text printed job 4's name
    # `x|root|phd|…` and its comment's second line `424242|root|Priority|1|ds01-container` raw.
    found = parse_containers(FORGED, 1796657400)
    assert [(c.slurm_job, c.user, c.status) for c in found] == [
        (2, "root", "pending"), (5, "root", "pending"), (3, "root", "running"),
    ]  # fmt: skip
    names = {c.slurm_job: c.name for c in found}
    # Each name whole, without its newlines and escapes (the views show it to other users).
    assert names[2].startswith("c1   UserId=root(0)") and names[5] == "c1[/x]red"
    # Job 1's comment is not ds01's (it only starts with it), nor job 4's (two lines).
    assert 1 not in names and 4 not in names


def test_a_users_own_and_a_named_container_are_filtered_here() -> None:
    mine = parse_containers(SQUEUE, SQUEUE_AT, uid=1002)
    assert [c.name for c in mine] == ["small"]
    assert [c.name for c in parse_containers(SQUEUE, SQUEUE_AT, uid=1001, name="big")] == ["big"]
    assert [c.elapsed for c in parse_containers(SQUEUE, SQUEUE_AT)] == ["0:00", "0:38", "0:59"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("2|more|PENDING||Resources|gres:gpu:3|0:00|alice|ds01-container\n", "outside its records"),
        (SQUEUE.text.replace(MARKS.end, ""), "does not have the fields"),
        (SQUEUE.text.replace(MARKS.field, "|", 1), "does not have the fields"),
        (squeue_record(squeue_job(job_id=2, user_id="x")), "job '2' has no id, uid"),
    ],
)
def test_an_answer_that_is_not_squeues_in_ds01s_format_is_refused(text: str, said: str) -> None:
    with pytest.raises(SlurmError, match=said):
        parse_containers(SqueueAnswer(text, MARKS), 0)


def test_another_jobs_odd_record_is_left_out_not_every_view() -> None:
    odd = squeue_record(squeue_job(job_id=99, name="other", user_name="", comment=""))
    answer = SqueueAnswer(SQUEUE.text + odd, MARKS)
    assert parse_containers(answer, SQUEUE_AT) == parse_containers(SQUEUE, SQUEUE_AT)


def test_a_job_that_has_ended_is_no_container_any_more() -> None:
    # squeue lists the jobs slurmctld still keeps (MinJobAge) when asked (--states).
    ended = squeue_job(job_id=7, name="waiter", job_state="CANCELLED", start_time=SQUEUE_AT - 9)
    jobs = [*SQUEUE_JOBS, ended]
    names = [c.name for c in parse_containers(squeue_answer(*jobs), SQUEUE_AT)]
    assert names == ["more", "small", "big"]
