"""A note on a Slurm job that has ended: what ``sacctmgr -i modify job`` answered
(``ds01.core.slurm_note.accounting_write``, over the answers recorded from the test cluster's
Slurm 22.05), and ds01d's retries while slurmdbd has no record of the job yet
(``ds01.daemon.slurm_jobs.NoteRetries``, on an injected clock and writer)."""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from ds01.core.slurm_note import (
    NOTE_RETRY_OFFSETS_SECONDS,
    AccountingWrite,
    accounting_write,
    retry_at,
)
from ds01.daemon.slurm_jobs import NoteRetries
from ds01.errors import SlurmError
from ds01.runtime import slurm

# What `sacctmgr -i modify job where JobID=N set AdminComment=...` answered on the test
# cluster (scripts/slurm-cluster.sh up; Debian 12's slurm-wlm 22.05.8), as
# (exit code, standard output, standard error).
MODIFIED = (0, " Modified jobs...\n  2 submitted at 2026-12-07T12:31:01\n", "")
NOTHING_MODIFIED = (
    1,
    " Nothing modified\n",
    "sacctmgr: accounting_storage/slurmdbd: acct_storage_p_modify_job: Request didn't affect "
    "anything or your user doesn't have privilege to perform this action\n",
)
NOT_ADMINISTRATOR = (
    1,
    " Error with request: Access/permission denied\n",
    "sacctmgr: error: Your user doesn't have privilege to perform this action\n",
)
SLURMDBD_DOWN = (
    1,
    "",
    "sacctmgr: error: slurm_persist_conn_open_without_init: failed to open persistent "
    "connection to host:localhost:36819: Connection refused\n"
    "sacctmgr: error: Sending PersistInit msg: Connection refused\n",
)


def _said(answer: tuple[int, str, str]) -> AccountingWrite:
    code, out, err = answer
    return accounting_write(code, f"{out}\n{err}")


def test_sacctmgrs_answers_read_as_written_not_yet_accounted_away_or_refused() -> None:
    assert _said(MODIFIED) is AccountingWrite.WRITTEN
    assert _said(NOTHING_MODIFIED) is AccountingWrite.NOT_ACCOUNTED
    assert _said(SLURMDBD_DOWN) is AccountingWrite.UNREACHABLE
    # The refusal also says "doesn't have privilege", as the no-record answer does.
    assert _said(NOT_ADMINISTRATOR) is AccountingWrite.FAILED
    assert accounting_write(1, "sacctmgr: error: Unknown option: AdminComent") is (
        AccountingWrite.FAILED
    )
    # "Nothing modified" is never a written note, whatever the exit code says.
    assert accounting_write(0, " Nothing modified\n") is AccountingWrite.NOT_ACCOUNTED
    retryable = {w for w in AccountingWrite if w.retryable}
    assert retryable == {AccountingWrite.NOT_ACCOUNTED, AccountingWrite.UNREACHABLE}


def test_the_retries_double_their_waits_and_stop_a_minute_after_the_first_try() -> None:
    times = [retry_at(100.0, n) for n in range(len(NOTE_RETRY_OFFSETS_SECONDS) + 1)]
    assert times[-1] is None
    tries = [t for t in times if t is not None]
    assert tries == sorted(tries) and tries[0] == 101.0 and tries[-1] == 160.0
    waits = [b - a for a, b in itertools.pairwise([100.0, *tries])]
    assert all(b >= a for a, b in itertools.pairwise(waits))  # never shorter than the last


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Slurmdbd:
    """The writer: answers ``answers`` in turn, recording each try's (job, comment, time)."""

    def __init__(self, clock: _Clock, *answers: AccountingWrite | SlurmError) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.tries: list[tuple[int, str, float]] = []

    def __call__(self, job: int, comment: str) -> AccountingWrite:
        self.tries.append((job, comment, self.clock.now))
        answer = self.answers.pop(0)
        if isinstance(answer, SlurmError):
            raise answer
        return answer


def _run_until_idle(retries: NoteRetries, clock: _Clock) -> None:
    """Step the clock to each due try until nothing waits."""
    while (wait := retries.run_due()) is not None:
        clock.now += wait


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_note_is_written_once_slurmdbd_has_the_jobs_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ds01.daemon.slurm_jobs")
    clock = _Clock()
    dbd = _Slurmdbd(
        clock, AccountingWrite.NOT_ACCOUNTED, AccountingWrite.UNREACHABLE, AccountingWrite.WRITTEN
    )
    retries = NoteRetries(dbd, clock=clock)
    assert retries.add(7, "oom_kill", "ds01:oom_kill: x", AccountingWrite.NOT_ACCOUNTED)
    assert retries.run_due() == 1.0  # nothing due yet: the first retry a second on
    _run_until_idle(retries, clock)
    assert [(job, at - 1000.0) for job, _, at in dbd.tries] == [(7, 1.0), (7, 3.0), (7, 7.0)]
    assert retries.waiting() == [] and _warnings(caplog) == []
    assert "noted oom_kill on Slurm job 7 at try 4" in caplog.text


def test_a_note_slurmdbd_never_records_is_given_up_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    dbd = _Slurmdbd(clock, *[AccountingWrite.NOT_ACCOUNTED] * len(NOTE_RETRY_OFFSETS_SECONDS))
    retries = NoteRetries(dbd, clock=clock)
    retries.add(7, "stop_idle", "ds01:stop_idle: x", AccountingWrite.NOT_ACCOUNTED)
    _run_until_idle(retries, clock)
    assert [at - 1000.0 for _, _, at in dbd.tries] == list(NOTE_RETRY_OFFSETS_SECONDS)
    assert _warnings(caplog) == [
        "could not note stop_idle on Slurm job 7: slurmdbd has no record of the job after "
        f"{len(NOTE_RETRY_OFFSETS_SECONDS) + 1} tries over 60 s"
    ]


def test_a_refusal_on_a_retry_ends_the_retries_of_that_note_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    refusal = SlurmError("sacctmgr ... failed (exit 1): Access/permission denied")
    dbd = _Slurmdbd(clock, refusal, AccountingWrite.WRITTEN)
    retries = NoteRetries(dbd, clock=clock)
    retries.add(7, "oom_kill", "a", AccountingWrite.UNREACHABLE)
    clock.now += 0.5
    retries.add(8, "oom_kill", "b", AccountingWrite.NOT_ACCOUNTED)
    _run_until_idle(retries, clock)
    assert [job for job, _, _ in dbd.tries] == [7, 8]
    assert _warnings(caplog) == [f"could not note oom_kill on Slurm job 7: {refusal.message}"]


def test_a_later_note_on_the_same_job_replaces_the_waiting_one() -> None:
    clock = _Clock()
    dbd = _Slurmdbd(clock, AccountingWrite.WRITTEN, AccountingWrite.WRITTEN)
    retries = NoteRetries(dbd, clock=clock)
    retries.add(7, "oom_kill", "first", AccountingWrite.NOT_ACCOUNTED)
    retries.add(8, "oom_kill", "other", AccountingWrite.NOT_ACCOUNTED)
    clock.now += 0.5
    retries.add(7, "stop_idle", "last", AccountingWrite.NOT_ACCOUNTED)
    assert retries.waiting() == [8, 7]
    _run_until_idle(retries, clock)
    assert [(job, comment) for job, comment, _ in dbd.tries] == [(8, "other"), (7, "last")]
    retries.add(9, "oom_kill", "x", AccountingWrite.UNREACHABLE)
    retries.forget(9)  # a later note on job 9 was written at once
    assert retries.waiting() == []


def test_a_note_made_while_an_older_one_is_written_goes_after_it_and_alone() -> None:
    # An OOM kill's note is being retried when the stop's note on the same job comes: the
    # stop's must be the one slurmdbd keeps, whatever the retry's answer.
    clock = _Clock()
    tries: list[str] = []
    made: list[NoteRetries] = []

    def slurmdbd(job: int, comment: str) -> AccountingWrite:
        tries.append(comment)
        if comment == "oom":
            assert made[0].busy(7)  # a newer note now queues behind this write
            made[0].add(7, "stop_idle", "stop", AccountingWrite.NOT_ACCOUNTED)
            return AccountingWrite.NOT_ACCOUNTED  # not taken yet: it would be tried again
        return AccountingWrite.WRITTEN

    retries = NoteRetries(slurmdbd, clock=clock)
    made.append(retries)
    retries.add(7, "oom_kill", "oom", AccountingWrite.NOT_ACCOUNTED)
    _run_until_idle(retries, clock)
    assert tries == ["oom", "stop"]  # the older note dropped, not tried after the newer
    assert not retries.busy(7) and retries.waiting() == []


def test_the_waiting_notes_are_bounded_and_a_stop_gives_them_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    dbd = _Slurmdbd(clock)
    retries = NoteRetries(dbd, clock=clock, capacity=2)
    assert retries.add(1, "oom_kill", "a", AccountingWrite.NOT_ACCOUNTED)
    assert retries.add(2, "oom_kill", "b", AccountingWrite.NOT_ACCOUNTED)
    assert not retries.add(3, "oom_kill", "c", AccountingWrite.NOT_ACCOUNTED)
    assert retries.waiting() == [1, 2]
    assert _warnings(caplog) == [
        "could not note oom_kill on Slurm job 3: slurmdbd has no record of the job, and 2 "
        "notes already wait for slurmdbd"
    ]
    caplog.clear()
    assert retries.stop()
    assert not retries.add(4, "stop_idle", "d", AccountingWrite.UNREACHABLE)
    assert dbd.tries == [] and retries.waiting() == []
    assert [w.split(":")[0] for w in _warnings(caplog)] == [
        "could not note oom_kill on Slurm job 1",
        "could not note oom_kill on Slurm job 2",
        "could not note stop_idle on Slurm job 4",
    ]


def test_a_note_whose_try_ends_after_the_stop_is_given_up_not_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()

    def write(job: int, comment: str) -> AccountingWrite:
        retries.stop()  # ds01d stops while sacctmgr runs
        return AccountingWrite.NOT_ACCOUNTED

    retries = NoteRetries(write, clock=clock)
    retries.add(7, "oom_kill", "a", AccountingWrite.NOT_ACCOUNTED)
    clock.now += 1.0
    assert retries.run_due() is None and retries.waiting() == []
    assert _warnings(caplog) == [
        "could not note oom_kill on Slurm job 7: ds01d stopped before slurmdbd had the job's record"
    ]


def test_the_retry_thread_writes_without_the_caller_and_stops() -> None:
    written = threading.Event()

    def write(job: int, comment: str) -> AccountingWrite:
        written.set()
        return AccountingWrite.WRITTEN

    # Each reading of this clock is 100 s on: every try is due when the thread looks.
    ticks = itertools.count(0.0, 100.0)
    retries = NoteRetries(write, clock=lambda: next(ticks))
    retries.start()
    try:
        assert retries.add(5, "oom_kill", "ds01:oom_kill: x", AccountingWrite.NOT_ACCOUNTED)
        assert written.wait(30), "the retry thread never wrote the note"
    finally:
        assert retries.stop()
    assert retries.waiting() == []


def test_the_adapter_reads_sacctmgrs_answer_after_scontrol_says_the_job_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``set_admin_comment`` through its real process path, with stand-ins for the two
    tools on ``PATH`` that answer as the test cluster did for a job slurmdbd did not know."""
    scontrol = "#!/bin/sh\necho 'Job has already finished for job 2' >&2\nexit 1\n"
    code, out, err = NOTHING_MODIFIED
    sacctmgr = f"#!/bin/sh\nprintf '%s' \"{out}\"\nprintf '%s' \"{err}\" >&2\nexit {code}\n"
    for name, text in (("scontrol", scontrol), ("sacctmgr", sacctmgr)):
        tool = tmp_path / name
        tool.write_text(text)
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert slurm.set_admin_comment(2, "ds01:oom_kill: x") is AccountingWrite.NOT_ACCOUNTED
    code, out, err = NOT_ADMINISTRATOR
    (tmp_path / "sacctmgr").write_text(
        f"#!/bin/sh\nprintf '%s' \"{out}\"\nprintf '%s' \"{err}\" >&2\nexit {code}\n"
    )
    with pytest.raises(SlurmError, match="privilege"):
        slurm.set_admin_comment(2, "ds01:oom_kill: x")
