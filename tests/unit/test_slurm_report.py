"""``ds01 admin report`` on a Slurm cluster's login node (``ds01.core.slurm_report``, its
Markdown and CSV in ``ds01.cli.report``), on ``sacct``, ``squeue`` and ``scontrol show node
-d`` recorded together from the test cluster (``slurm_data``: alice's ``first`` on node2,
bob's ``second`` pending, alice's three jobs before)."""

from __future__ import annotations

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
from slurm_data import NODES_AT_SACCT, RECORDED_AT, SACCT, SACCT_FORGED_NAMES, SQUEUE_AT_SACCT

NOW = datetime.fromtimestamp(RECORDED_AT, tz=timezone.utc)
#: A user's row when none of their jobs ended for memory or for one of ds01's rules.
NO_ENDS = {"oom_kills": 0, "idle_stops": 0, "runtime_stops": 0, "other_stops": 0}
#: alice's GPU-seconds: big 3 GPUs x 1 s, small 1 x 2 s, orphan 1 x 1 s, first 3 x 3 s (up
#: to now, as it runs).
ALICE_GPU_SECONDS = 3 * 1 + 1 * 2 + 1 * 1 + 3 * 3


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _report(start: datetime, end: datetime = NOW, sacct: str = SACCT) -> dict[str, object]:
    return build_cluster_report(
        start=start,
        end=end,
        now=NOW,
        nodes=parse_nodes(NODES_AT_SACCT),
        containers=parse_containers(SQUEUE_AT_SACCT, RECORDED_AT),
        jobs=parse_accounting(sacct),
    )


def _users(report: dict[str, object]) -> dict[str, dict[str, object]]:
    rows: list[dict[str, object]] = report["users"]  # type: ignore[assignment]
    return {str(u["user"]): u for u in rows}


def test_sacct_is_read_with_epoch_times_and_its_gres_gpus() -> None:
    jobs = {j.job: j for j in parse_accounting(SACCT)}
    assert set(jobs) == {1, 2, 3, 4, 5}
    big = jobs[1]
    assert (big.user, big.state, big.gpus, big.start) == (
        "alice", "CANCELLED by 1001", 3, _at(1796598057),
    )  # fmt: skip
    assert jobs[4].end is None  # it runs
    assert (jobs[5].start, jobs[5].gpus) == (None, 0)  # it pends
    assert SACCT_FORMAT == "JobIDRaw,User,Account,State,Start,End,AllocTRES,AdminComment"


@pytest.mark.parametrize(
    ("text", "gpus"),
    [
        ("billing=1,cpu=1,gres/gpu=3,mem=128M,node=1", 3),
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
    report = _report(NOW - timedelta(days=1))
    nodes: list[dict[str, object]] = report["nodes"]  # type: ignore[assignment]
    assert [(n["node"], n["state"], n["gpus"], n["used"], n["free"]) for n in nodes] == [
        ("node1", "IDLE", 2, 0, 2),
        ("node2", "MIXED", 4, 3, 1),
    ]
    assert (nodes[0]["holders"], nodes[0]["other_gpus"]) == ([], 0)
    assert nodes[1]["holders"] == [{"user": "alice", "name": "first", "slurm_job": 4, "gpus": 3}]


def test_usage_per_user_counts_gpu_hours_inside_the_window_only() -> None:
    day = _users(_report(NOW - timedelta(days=1)))
    assert day["alice"] == {
        "user": "alice", "containers_running": 1, "containers_pending": 0, "gpus_held": 3,
        "jobs": 4, "gpu_hours": round(ALICE_GPU_SECONDS / 3600, 4), **NO_ENDS,
    }  # fmt: skip
    # bob's job pends: no time, no job that ran; his container waits.
    assert day["bob"] == {
        "user": "bob", "containers_running": 0, "containers_pending": 1, "gpus_held": 0,
        "jobs": 0, "gpu_hours": 0.0, **NO_ENDS,
    }  # fmt: skip
    # From small's start: big (ended before) is out.
    later = _users(_report(_at(1796598060)))["alice"]
    assert later["jobs"] == 3
    assert later["gpu_hours"] == round((2 + 1 + 9) / 3600, 4)
    # Up to orphan's start: big and small, whole; orphan had not started.
    earlier = _users(_report(NOW - timedelta(days=1), _at(1796598063)))["alice"]
    assert (earlier["jobs"], earlier["gpu_hours"]) == (2, round((3 + 2) / 3600, 4))
    # Half of big's second.
    half = _users(_report(_at(1796598057) + timedelta(seconds=0.5), _at(1796598059)))
    assert half["alice"]["gpu_hours"] == round(3 * 0.5 / 3600, 4)


def test_a_job_cancelled_as_it_started_never_ran() -> None:
    sacct = "9|bob|msc|CANCELLED by 1002|1796598050|1796598050|billing=1,gres/gpu=1|\n"
    assert _users(_report(NOW - timedelta(days=1), sacct=sacct))["bob"]["jobs"] == 0


def test_the_pending_containers_in_slurms_order_with_the_reason_and_the_totals() -> None:
    report = _report(NOW - timedelta(days=1))
    [second] = report["pending"]  # type: ignore[misc]
    assert (second["name"], second["reason"], second["slurm_job"]) == ("second", "Resources", 5)
    assert report["total"] == {
        "nodes": 2, "gpus": 6, "used": 3, "free": 3, "containers_running": 1,
        "containers_pending": 1, "jobs": 4, "gpu_hours": round(ALICE_GPU_SECONDS / 3600, 4),
        **NO_ENDS,
    }  # fmt: skip


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="must be before"):
        _report(NOW, NOW)


def test_markdown_and_csv_show_nodes_users_and_pending() -> None:
    report = _report(NOW - timedelta(days=1))
    text = to_cluster_markdown(report)  # type: ignore[arg-type]
    assert "| node2 | MIXED | 4 | 3 | 1 | alice/`first` (3) |" in text
    assert "| 5 | bob | `second` | 3 | Resources | no node has the GPUs" in text
    assert "2 nodes, 6 GPUs: 3 held, 3 free" in text
    lines = to_cluster_csv(report).splitlines()  # type: ignore[arg-type]
    assert lines[0] == (
        "user,containers_running,containers_pending,gpus_held,jobs,gpu_hours,"
        "oom_kills,idle_stops,runtime_stops,other_stops"
    )
    assert lines[1:] == ["alice,1,0,3,4,0.0042,0,0,0,0", "bob,0,1,0,0,0.0,0,0,0,0"]


def test_a_job_name_with_bars_or_a_newline_forges_no_accounting_row() -> None:
    jobs = parse_accounting(SACCT_FORGED_NAMES)
    assert [(j.job, j.user, j.state, j.gpus, j.note) for j in jobs] == [
        (1, "root", "COMPLETED", 0, None),
        (2, "root", "COMPLETED", 0, None),
        (3, "root", "COMPLETED", 1, None),
    ]
    assert "JobName" not in SACCT_FORMAT and "Comment," not in SACCT_FORMAT


#: A job name any user can give a job that carries ds01's comment, meant to become an image,
#: links (one GitHub makes of an address by itself), HTML and a bidi override in a report an
#: admin publishes.
MARKUP_NAME = (
    "![x](https://evil.example/p.png) [login](https://evil.example) <b>x</b> a_b* "
    "https://evil.example/login &#x202E; `tick`"
)


def test_a_job_name_with_markdown_is_shown_as_written_not_as_a_link_or_an_image() -> None:
    from markdown_it import MarkdownIt

    report = _report(NOW - timedelta(days=1))
    pending: list[dict[str, object]] = report["pending"]  # type: ignore[assignment]
    nodes: list[dict[str, object]] = report["nodes"]  # type: ignore[assignment]
    pending[0]["name"] = MARKUP_NAME
    holders = [n for n in nodes if n["holders"]]
    holders[0]["holders"][0]["name"] = MARKUP_NAME  # type: ignore[index]
    html = MarkdownIt("gfm-like").render(to_cluster_markdown(report))
    for markup in ("<a ", "<img", "<b>", "<em>", "<strong>", "\u202e"):
        assert markup not in html, (markup, html)
    written = MARKUP_NAME.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert html.count(f"<code>{written}</code>") == 2, html  # pending, and the node's holders
