"""``ds01 admin report`` on a Slurm cluster's login node (``ds01.core.slurm_report``, its
Markdown and CSV in ``ds01.cli.report``), on the answers recorded from the test cluster in
``test_slurm_view`` (``squeue``, ``scontrol show node -d``) and ``sacct``'s record of the
same jobs (Slurm 22.05, ``SLURM_TIME_FORMAT=%s``)."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from ds01.cli.report import to_cluster_csv, to_cluster_markdown
from ds01.core.slurm_report import (
    SACCT_FORMAT,
    build_cluster_report,
    parse_accounting,
    tres_gpus,
)
from ds01.core.slurm_view import parse_containers, parse_nodes
from slurm_data import NODES, SQUEUE

#: ``now`` of the recording: 2026-12-06 23:00:00 UTC.
NOW = datetime(2026, 12, 6, 23, 0, tzinfo=timezone.utc)
T0 = int(NOW.timestamp())

#: ``sacct --allusers --allocations --noheader --parsable2 --format SACCT_FORMAT``: an old job
#: of alice's (2 GPUs for an hour, ended two hours ago), bob's ``small`` and ``claim`` and
#: alice's ``big`` running, ``more`` pending (never started), and a job cancelled before it
#: started.
SACCT = textwrap.dedent(
    f"""\
    7|old|alice|phd|COMPLETED|{T0 - 3 * 3600}|{T0 - 2 * 3600}|billing=2,cpu=2,gres/gpu=2,node=1
    1|big|alice|phd|RUNNING|{T0 - 59}|Unknown|billing=1,cpu=1,gres/gpu=4,mem=128M,node=1
    2|more|alice|phd|PENDING|Unknown|Unknown|
    3|small|bob|msc|RUNNING|{T0 - 38}|Unknown|billing=1,cpu=1,gres/gpu=1,mem=128M,node=1
    4|claim|bob|msc|RUNNING|{T0 - 12}|Unknown|billing=1,cpu=1,gres/gpu=1,mem=64M,node=1
    9|gone|bob|msc|CANCELLED by 1002|{T0 - 600}|{T0 - 600}|
    """
)


def _report(start: datetime, end: datetime = NOW) -> dict[str, object]:
    return build_cluster_report(
        start=start,
        end=end,
        now=NOW,
        nodes=parse_nodes(NODES),
        containers=parse_containers(SQUEUE),
        jobs=parse_accounting(SACCT),
    )


def test_sacct_is_read_with_epoch_times_and_its_gres_gpus() -> None:
    jobs = {j.job: j for j in parse_accounting(SACCT)}
    assert set(jobs) == {7, 1, 2, 3, 4, 9}
    assert (jobs[7].user, jobs[7].gpus, jobs[7].start) == ("alice", 2, NOW - timedelta(hours=3))
    assert jobs[1].end is None and jobs[2].start is None
    assert SACCT_FORMAT.split(",")[-1] == "AllocTRES"


@pytest.mark.parametrize(
    ("text", "gpus"),
    [
        ("billing=1,cpu=1,gres/gpu=4,mem=128M,node=1", 4),
        ("cpu=2,gres/gpu:a100=2,gres/gpu=2,node=1", 2),  # the typed one is part of it
        ("cpu=1,mem=1G,node=1", 0),
        ("", 0),
    ],
)
def test_alloc_tres_counts_its_gpus(text: str, gpus: int) -> None:
    assert tres_gpus(text) == gpus


def test_lines_that_are_not_a_job_are_left_out() -> None:
    assert parse_accounting("JobIDRaw|JobName|User\n\n7.batch|batch|alice|phd|x|1|2|") == []


def test_every_node_with_its_gpus_held_free_and_its_holders() -> None:
    nodes = {n["node"]: n for n in _report(NOW - timedelta(days=1))["nodes"]}  # type: ignore[attr-defined]
    assert (nodes["node1"]["gpus"], nodes["node1"]["used"], nodes["node1"]["free"]) == (2, 1, 1)
    assert nodes["node1"]["holders"] == [
        {"user": "bob", "name": "small", "slurm_job": 3, "gpus": 1}
    ]
    # bob's `claim` is no container, and squeue's GRES count is its own: node1 has 1 held.
    assert nodes["node2"]["holders"] == [
        {"user": "alice", "name": "big", "slurm_job": 1, "gpus": 4}
    ]
    assert (nodes["node2"]["free"], nodes["node2"]["other_gpus"]) == (0, 0)


def test_usage_per_user_counts_gpu_hours_inside_the_window_only() -> None:
    day = _report(NOW - timedelta(days=1))
    users = {u["user"]: u for u in day["users"]}  # type: ignore[attr-defined]
    # alice: 2 GPUs x 1 h (old) + 4 GPUs x 59 s (big); the pending one counts no time.
    assert users["alice"]["gpu_hours"] == pytest.approx(2 + 4 * 59 / 3600, abs=1e-4)
    assert (users["alice"]["containers_running"], users["alice"]["containers_pending"]) == (1, 1)
    assert (users["alice"]["gpus_held"], users["alice"]["jobs"]) == (4, 2)
    # bob: small and claim run; the job cancelled before it started never ran.
    assert users["bob"]["gpu_hours"] == pytest.approx((38 + 12) / 3600, abs=1e-4)
    assert (users["bob"]["jobs"], users["bob"]["containers_running"]) == (2, 1)
    assert [u["user"] for u in day["users"]] == ["alice", "bob"]  # type: ignore[attr-defined]
    # The last half hour: alice's old job is outside it.
    recent = {u["user"]: u for u in _report(NOW - timedelta(minutes=30))["users"]}  # type: ignore[attr-defined]
    assert recent["alice"]["gpu_hours"] == pytest.approx(4 * 59 / 3600, abs=1e-4)
    assert recent["alice"]["jobs"] == 1
    # A window that ended before the old job started: nobody used a GPU.
    early = _report(NOW - timedelta(hours=5), NOW - timedelta(hours=4))
    assert all(u["gpu_hours"] == 0 for u in early["users"])  # type: ignore[attr-defined]


def test_the_pending_containers_in_slurms_order_with_the_reason_and_the_totals() -> None:
    report = _report(NOW - timedelta(days=1))
    [more] = report["pending"]  # type: ignore[misc]
    assert (more["name"], more["reason"], more["slurm_job"]) == ("more", "Resources", 2)
    total = report["total"]
    assert total == {
        "nodes": 2, "gpus": 6, "used": 5, "free": 1, "containers_running": 2,
        "containers_pending": 1, "jobs": 4, "gpu_hours": total["gpu_hours"],  # type: ignore[index]
    }  # fmt: skip


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="must be before"):
        _report(NOW, NOW)


def test_markdown_and_csv_show_nodes_users_and_pending() -> None:
    report = _report(NOW - timedelta(days=1))
    text = to_cluster_markdown(report)  # type: ignore[arg-type]
    assert "| node2 | MIXED | 4 | 4 | 0 | alice/big (4) |" in text
    assert "| 2 | alice | more | 3 | Resources | no node has the GPUs" in text
    assert "2 nodes, 6 GPUs: 5 held, 1 free" in text
    lines = to_cluster_csv(report).splitlines()  # type: ignore[arg-type]
    assert lines[0].startswith("user,containers_running")
    assert lines[1].startswith("alice,1,1,4,2,2.06")
