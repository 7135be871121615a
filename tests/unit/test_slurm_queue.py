"""The login node's exporter of Slurm's queue: ``squeue``'s pending jobs read
(``ds01.core.slurm_queue``) and served under ds01's queue metric names
(``ds01.metrics.slurm_queue``), on an answer recorded from the test cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ds01.core.slurm_queue import parse_pending, queue_metrics
from ds01.core.slurm_squeue import SqueueAnswer
from ds01.errors import SlurmError
from ds01.metrics.slurm_queue import SlurmQueueCollector
from slurm_data import (
    FORGED,
    MARKS,
    PENDING_AT,
    PENDING_JOB,
    SQUEUE_PENDING,
    squeue_answer,
    squeue_job,
    squeue_record,
)


def _samples(
    collector: SlurmQueueCollector,
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name → its samples' labels (sorted (name, value) pairs) → value, as Prometheus
    would read the scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def test_the_pending_containers_jobs_are_read_with_user_reason_and_submit_time() -> None:
    [job] = parse_pending(SQUEUE_PENDING)
    assert (job.job, job.user, job.reason, job.submitted) == (2, "bob", "Resources", 1796608777)
    # A job that is no container (no ds01 comment) and one that runs are left out.
    other = squeue_job(job_id=3, user_name="carol", submit_time=1796608778, comment="")
    running = squeue_job(job_id=4, job_state="RUNNING", submit_time=1796608700, start_time=1)
    assert parse_pending(squeue_answer(PENDING_JOB, other, running)) == [job]


def test_queue_samples_count_per_user_and_reason_and_the_oldest_wait() -> None:
    rows = [
        (7, "bob", "Resources", 100, "ds01-container"),
        (8, "bob", "Resources", 110, "ds01-container"),
        (9, "carol", "QOSMaxGRESPerUser", 130, "ds01-container"),
        (10, "carol", "Priority", 0, "ds01-container"),  # no submit time: left out
        (11, "dave", "Resources", 90, ""),  # no container
        (12, "erin", "Priority", 120, "ds01-container|x"),  # a comment of somebody else's
    ]
    text = squeue_answer(
        *(
            squeue_job(job_id=job, user_name=user, state_reason=reason, submit_time=at,
                       comment=comment)
            for job, user, reason, at, comment in rows
        )
    )  # fmt: skip
    queue = queue_metrics(parse_pending(text), now=160.0)
    assert queue.lengths == {("bob", "Resources"): 2, ("carol", "QOSMaxGRESPerUser"): 1}
    assert queue.oldest_wait_seconds == 60.0
    empty = queue_metrics([], now=160.0)
    assert (empty.lengths, empty.oldest_wait_seconds) == ({}, 0.0)
    # A submit time ahead of this host's clock is no negative wait.
    assert queue_metrics(parse_pending(text), now=50.0).oldest_wait_seconds == 0.0


def test_the_exporter_serves_the_queue_and_reads_squeue_once_per_cache_period() -> None:
    calls: list[float] = []
    now = [1000.0]

    def read() -> SqueueAnswer:
        calls.append(now[0])
        return SQUEUE_PENDING

    collector = SlurmQueueCollector(
        read, clock=lambda: PENDING_AT, monotonic=lambda: now[0], cache_seconds=5.0
    )
    first = _samples(collector)
    assert first["ds01_queue_length"] == {(("reason", "Resources"), ("user", "bob")): 1.0}
    assert first["ds01_queue_oldest_wait_seconds"] == {(): 5.0}
    assert first["ds01_slurm_up"] == {(): 1.0}
    now[0] += 4.9
    _samples(collector)
    assert len(calls) == 1  # within the cache period: the same answer
    now[0] += 0.1
    _samples(collector)
    assert len(calls) == 2


def test_when_squeue_fails_the_queue_is_unknown_not_empty() -> None:
    def read() -> SqueueAnswer:
        raise SlurmError("squeue --noheader … failed (exit 1): Unable to contact slurm controller")

    samples = _samples(SlurmQueueCollector(read))
    assert samples["ds01_slurm_up"] == {(): 0.0}
    assert "ds01_queue_length" not in samples
    assert "ds01_queue_oldest_wait_seconds" not in samples
    assert "ds01_build_info" in samples


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["exporter", "--listen", "10.1.1.1:9102"], "Add --allow-remote"),
        (["exporter", "--listen", "nowhere"], "expected HOST:PORT"),
        (["exporter", "--dry-run"], "takes --listen and --allow-remote only"),
        (["sync", "--listen", "127.0.0.1:9102"], "go with `exporter`"),
    ],
)
def test_the_exporter_command_refuses_bad_arguments_before_it_listens(
    args: list[str], said: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ds01.cli", "admin", "slurm", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and said in done.stderr, (done.stdout, done.stderr)


def test_an_answer_that_cannot_be_read_counts_as_none() -> None:
    unreadable = SqueueAnswer(squeue_record(squeue_job(priority="high")), MARKS)
    samples = _samples(SlurmQueueCollector(lambda: unreadable))
    assert samples["ds01_slurm_up"] == {(): 0.0}
    assert "ds01_queue_length" not in samples


def test_a_comment_or_name_with_newlines_and_bars_adds_no_pending_job() -> None:
    # Recorded: job 4's comment is "ds01-container\n424242|root|Priority|1|ds01-container",
    # which squeue's text printed as a line of its own (a pending job 424242 of root's).
    jobs = parse_pending(FORGED)
    assert [job.job for job in jobs] == [2, 5]  # the held containers' jobs, as Slurm has them
    assert 424242 not in [job.job for job in jobs] and {j.reason for j in jobs} == {"JobHeldUser"}
