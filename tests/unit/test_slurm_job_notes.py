"""What ds01d notes in a Slurm job's ``AdminComment`` (``ds01.core.slurm_job.job_note``) and
how the login node's report counts it (``ds01.core.slurm_report``), on ``sacct`` recorded
from the test cluster (``slurm_data.SACCT_ENDS``: alice's idle stop and OOM kill)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ds01.cli.report import CLUSTER_CSV_COLUMNS, to_cluster_csv, to_cluster_markdown
from ds01.core.slurm_job import JOB_NOTES, STOP_NOTES, job_note, noted
from ds01.core.slurm_report import (
    END_COLUMNS,
    LOGIN_NODE_NOTES,
    build_cluster_report,
    end_column,
    parse_accounting,
)
from ds01.runtime.slurm import admin_comment_text
from slurm_data import ENDS_RECORDED_AT, SACCT_ENDS

NOW = datetime.fromtimestamp(ENDS_RECORDED_AT, tz=timezone.utc)


def _report(sacct: str, start: datetime, end: datetime = NOW) -> dict[str, Any]:
    return build_cluster_report(
        start=start, end=end, now=NOW, nodes=[], containers=[], jobs=parse_accounting(sacct)
    )


def _users(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["user"]: u for u in report["users"]}


def test_a_note_names_what_ds01d_did_and_why_on_one_bounded_line() -> None:
    text = job_note("stop_idle", "Idle for 7 s,\nthe limit is 7 s.")
    assert text == "ds01:stop_idle: Idle for 7 s, the limit is 7 s."
    assert len(job_note("oom_kill", "x" * 5000)) < 260
    assert {STOP_NOTES[c] for c in STOP_NOTES} <= set(JOB_NOTES)


def test_a_note_holds_its_quotes_as_both_ways_of_writing_it_keep_them() -> None:
    # scontrol (a running job) keeps an apostrophe, sacctmgr (a job that has ended) would
    # write a backquote: both are given the typographic forms, so both keep one text.
    text = admin_comment_text(job_note("oom_kill", '1 process killed, alice\'s "memory" total hit'))
    assert text == "ds01:oom_kill: 1 process killed, alice\u2019s \u201dmemory\u201d total hit"
    assert admin_comment_text(text) == text


@given(st.sampled_from(JOB_NOTES), st.text(max_size=300))
def test_every_note_reads_back_as_itself(note: Any, reason: str) -> None:
    assert noted(job_note(note, reason)) == note
    assert noted(admin_comment_text(job_note(note, reason))) == note  # as Slurm keeps it


def test_comments_that_are_not_ds01s_notes_count_for_nothing() -> None:
    others = ("", "ds01:", "ds01:stop_lunch: no", "node rebooted", "ds01:stopidle", "DS01:oom_kill")
    for comment in others:
        assert noted(comment) is None, comment


def test_the_recorded_ends_count_per_user_by_the_jobs_end_in_the_window() -> None:
    jobs = {j.job: j for j in parse_accounting(SACCT_ENDS)}
    assert [(j.job, j.note, end_column(j)) for j in jobs.values()] == [
        (1, "stop_idle", "idle_stops"),  # idler
        (2, None, None),  # waiter, cancelled by bob: no end of interest
        (3, "oom_kill", "oom_kills"),  # hog2, FAILED to Slurm; ds01d saw the OOM kill
    ]
    users = _users(_report(SACCT_ENDS, NOW - timedelta(hours=1)))
    ends = {u: {c: row[c] for c, _ in END_COLUMNS} for u, row in users.items()}
    assert ends == {
        "alice": {"oom_kills": 1, "idle_stops": 1, "runtime_stops": 0, "other_stops": 0},
        "bob": {"oom_kills": 0, "idle_stops": 0, "runtime_stops": 0, "other_stops": 0},
    }
    # A window that ends before idler's end (1796608787), after hog2's (1796608785).
    cut = datetime.fromtimestamp(1796608786, tz=timezone.utc)
    alice = _users(_report(SACCT_ENDS, NOW - timedelta(hours=1), cut))["alice"]
    assert (alice["oom_kills"], alice["idle_stops"], alice["jobs"]) == (1, 0, 2)


def test_slurms_own_out_of_memory_counts_and_a_note_wins_over_the_state() -> None:
    sacct = (
        # A step's OOM, which Slurm sees itself (sbatch --wrap, no container).
        "7|carol|phd|OUT_OF_MEMORY|1796608076|1796608078|billing=1,cpu=1,mem=32M,node=1|\n"
        # A container stopped at its runtime limit after an OOM kill in it: the last note.
        "8|carol|phd|FAILED|1796608076|1796608080|billing=1,gres/gpu=1|ds01:stop_runtime: x\n"
        "9|carol|phd|FAILED|1796608076|1796608080|billing=1,gres/gpu=1|ds01:stop_disk: y\n"
        "10|carol|phd|COMPLETED|1796608076|1796608080|billing=1|a|b ds01:stop_idle\n"
    )
    carol = _users(_report(sacct, NOW - timedelta(hours=1)))["carol"]
    assert (carol["oom_kills"], carol["runtime_stops"], carol["other_stops"]) == (1, 1, 1)
    assert carol["idle_stops"] == 0  # a comment with a `|`: read whole, not a note


def test_the_report_says_what_the_login_node_cannot_show_and_shows_the_ends() -> None:
    report = _report(SACCT_ENDS, NOW - timedelta(hours=1))
    assert report["notes"][-len(LOGIN_NODE_NOTES) :] == list(LOGIN_NODE_NOTES)
    assert "Prometheus" in LOGIN_NODE_NOTES[0] and "energy" in LOGIN_NODE_NOTES[0]
    assert (report["total"]["oom_kills"], report["total"]["idle_stops"]) == (1, 1)
    text = to_cluster_markdown(report)
    assert "1 OOM kills, 1 idle stops, 0 runtime stops, 0 other stops." in text
    assert "| alice | 0 | 0 | 0 | 2 | 0.012 | 1 | 1 | 0 | 0 |" in text  # idler: 4 GPUs x 11 s
    # The CSV's last columns are the ends, in END_COLUMNS' order.
    assert CLUSTER_CSV_COLUMNS[-len(END_COLUMNS) :] == tuple(c for c, _ in END_COLUMNS)
    assert "alice,0,0,0,2,0.0122,1,1,0,0" in to_cluster_csv(report).splitlines()
