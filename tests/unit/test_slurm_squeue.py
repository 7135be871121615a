"""squeue's answer in ds01's format of random marks (``ds01.core.slurm_squeue``): what a job's
owner writes in its name or comment (newlines, ``|``, a record in the marks of another call,
a made-up mark) stays in its field, and other users' views list only the jobs Slurm has."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ds01.core.slurm_squeue import (
    JOB_COMMENT,
    SQUEUE_FIELDS,
    SqueueAnswer,
    SqueueMarks,
    parse_containers,
    read_jobs,
    squeue_environment,
    squeue_format,
)
from ds01.errors import SlurmError
from ds01.model.text import plain
from ds01.runtime import slurm
from slurm_data import MARKS, UIDS, squeue_answer, squeue_job, squeue_record

#: Another call's marks: a job's owner who saw them (their own call) writes them in a name.
EARLIER = SqueueMarks("d4" * 16, "e5" * 16, "f6" * 16)
#: A pending container's job of root's, with 8 GPUs, as a record in each call's marks.
ROOTS = squeue_job(job_id=424242, name="admin", user_id=0, user_name="root",
                   tres_per_node="gres:gpu:8", priority=9999)  # fmt: skip


def _bobs(job_id: int, name: str, comment: str = JOB_COMMENT) -> dict[str, object]:
    return squeue_job(job_id=job_id, name=name, user_id=UIDS["bob"], user_name="bob",
                      comment=comment, tres_per_node="gres:gpu:1")  # fmt: skip


FORGERIES = {
    # The earlier call's whole record of root's job, its end and start, after the name.
    "an earlier call's record": "c1" + EARLIER.end + "\n" + squeue_record(ROOTS, EARLIER),
    # This call's layout guessed with the earlier call's marks (a job's owner cannot know this
    # call's: they are drawn anew, 128 bits each).
    "an earlier call's marks": EARLIER.field.join(["c1", "0", "root"]) + EARLIER.end,
    "newlines and bars": "c1\n424242|admin|0|root|PENDING|Priority||gres:gpu:8|ds01-container",
    "a made-up mark": "c1" + "0" * 32 + "\n" + "1" * 32 + "424242",
}


@pytest.mark.parametrize("forged", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_name_or_comment_stays_in_its_field_and_adds_no_job(forged: str) -> None:
    jobs = [_bobs(7, forged), _bobs(8, "c2", comment=f"{JOB_COMMENT}\n{forged}"), _bobs(9, "c3")]
    found = parse_containers(squeue_answer(*jobs), 0)
    # Jobs 7 and 9 only (8's comment is not ds01's); none of root's; each name whole.
    assert [(c.slurm_job, c.user, c.gpus) for c in found] == [(7, "bob", 1), (9, "bob", 1)]
    assert found[0].name == plain(forged)
    assert [job.job_id for job in read_jobs(squeue_answer(*jobs))] == [7, 8, 9]


def test_names_come_without_newlines_and_escapes() -> None:
    [found] = parse_containers(squeue_answer(_bobs(7, "c1\n\x1b[31mroot\tx")), 0)
    assert found.name == "c1root\tx"  # plain(): the escape whole, the newline


def test_a_long_name_is_kept_whole() -> None:
    [found] = parse_containers(squeue_answer(_bobs(7, "n" * 300)), 0)
    assert found.name == "n" * 300


def test_squeues_no_value_and_its_times_are_read() -> None:
    record = squeue_record(squeue_job(job_id=3, job_state="RUNNING", nodes="node2",
                                      submit_time=100, start_time=160))  # fmt: skip
    [job] = read_jobs(SqueueAnswer(record.replace("N/A", "Unknown"), MARKS))
    assert (job.tres_per_node, job.submit_time, job.start_time) == ("", 100, 160)
    [found] = parse_containers(SqueueAnswer(record, MARKS), 225)
    assert (found.node, found.gpus, found.elapsed) == ("node2", 0, "1:05")


def test_slurms_reason_is_read_without_the_nodes_it_names() -> None:
    job = squeue_job(state_reason="ReqNodeNotAvail, UnavailableNodes:node[1-2]")
    [found] = parse_containers(squeue_answer(job), 0)
    assert found.reason == "ReqNodeNotAvail"


@pytest.mark.parametrize(
    "odd",
    [
        {"job_id": "12a"},
        {"user_id": "-1"},
        {"user_name": "bob smith"},
        {"user_name": "bob\x9b31m"},
        {"job_state": "pending\n"},
        {"nodes": "node1 node2"},
        {"tres_per_node": "gres:gpu:1\nx"},
        {"priority": "٣"},  # a digit, not an ASCII one
        {"submit_time": "2026-12-07T18:00:00"},
    ],
    ids=lambda odd: next(iter(odd)),
)
def test_a_job_whose_fixed_field_fails_its_check_is_left_out_or_refused(
    odd: dict[str, object],
) -> None:
    other = {**squeue_job(job_id=5, comment=""), **odd}
    ours = {**squeue_job(job_id=6), **odd}
    assert [j.job_id for j in read_jobs(squeue_answer(squeue_job(), other))] == [1]
    with pytest.raises(SlurmError, match="could not be read"):
        read_jobs(squeue_answer(squeue_job(), ours))


def test_no_jobs_is_an_empty_answer() -> None:
    assert read_jobs(SqueueAnswer("", MARKS)) == []


def test_each_call_draws_three_different_marks() -> None:
    first, second = SqueueMarks.drawn(os.urandom), SqueueMarks.drawn(os.urandom)
    marks = {first.start, first.field, first.end, second.start, second.field, second.end}
    assert len(marks) == 6 and all(len(mark) == 32 for mark in marks)
    with pytest.raises(ValueError, match="three different"):
        SqueueMarks("a" * 32, "a" * 32, "b" * 32)
    with pytest.raises(ValueError, match="three different"):
        SqueueMarks("a" * 32, "b" * 32, "%j" + "c" * 30)


def test_the_format_reaches_squeue_in_its_environment_with_no_width() -> None:
    env = squeue_environment(
        {"PATH": "/usr/bin", "SQUEUE_FORMAT2": "JobID", "SQUEUE_STATES": "all",
         "SLURM_TIME_FORMAT": "relative", "SLURM_CONF": "/etc/slurm/slurm.conf"},
        MARKS,
    )  # fmt: skip
    assert env == {
        "PATH": "/usr/bin",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "SQUEUE_FORMAT": squeue_format(MARKS),
        "SLURM_TIME_FORMAT": "%s",
    }
    letters = "".join(f"%{letter}" for letter in SQUEUE_FIELDS.values())
    assert squeue_format(MARKS).replace(MARKS.field, "") == f"{MARKS.start}{letters}{MARKS.end}"


def test_each_call_gives_squeue_new_marks_in_its_environment_never_its_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for squeue on PATH that keeps what it was given: its arguments (any user
    # reads them in /proc/PID/cmdline) and its environment (its owner and root alone).
    script = tmp_path / "squeue"
    script.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" >> "$0.argv"\n'
        'printf "%s|%s|%s\\n" "$SQUEUE_FORMAT" "$SQUEUE_FORMAT2" "$SLURM_TIME_FORMAT" >> "$0.env"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SQUEUE_FORMAT2", "JobID,Name")
    answers = [slurm.cluster_containers() for _ in range(2)]
    assert all(read_jobs(answer) == [] for answer in answers)  # squeue printed no job
    assert (tmp_path / "squeue.argv").read_text() == "--noheader\n" * 2
    formats = (tmp_path / "squeue.env").read_text().splitlines()
    assert formats == [f"{squeue_format(answer.marks)}||%s" for answer in answers]
    first, second = (answer.marks for answer in answers)
    assert not {first.start, first.field, first.end} & {second.start, second.field, second.end}
