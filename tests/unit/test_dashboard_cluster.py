"""The dashboard on a Slurm cluster's login node: the cluster's overview
(``ds01.core.slurm_view.cluster_overview``, from the answers recorded in ``slurm_data``) as
text (``--once``, ``ds01.tui.cluster_frame``) and in the live view driven by textual's
pilot: the nodes with their holders, every container with its node and job, the pending
ones with Slurm's reason, the sort, the user filter and a container's detail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_dashboard_app import SIZE, cells, refreshed, text_of
from textual.pilot import Pilot

from dashboard_data import cluster_overview
from ds01.core import slurm_view
from ds01.core.slurm_view import REASONS
from ds01.tui.app import DashboardApp, DetailScreen
from ds01.tui.frame import View, build_frame, container_detail, render_text
from ds01.tui.main import build_parser, print_once
from slurm_data import NODES, SQUEUE_AT, SQUEUE_JOBS, UIDS, squeue_answer, squeue_job


def test_once_shows_the_nodes_holders_containers_and_the_pending_with_their_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    overview = cluster_overview()
    print_once(lambda: overview, build_parser().parse_args(["--once"]))
    text = capsys.readouterr().out
    assert "ds01 dashboard: the Slurm cluster, seen by alice" in text
    assert "5/6 devices" in text  # every node's GPUs: 1 of node1's 2, node2's 4
    lines = text.splitlines()
    node2 = next(line for line in lines if line.strip().startswith("node2"))
    assert node2.split()[:5] == ["node2", "MIXED", "4", "4", "0"]
    assert node2.endswith("alice/big (4)")
    assert "small" in next(line for line in lines if line.strip().startswith("node1"))
    assert f"Resources  {REASONS['Resources']}" in text
    assert "claim" not in text  # a job that is no container


def test_the_containers_sort_and_filter_as_on_a_single_server() -> None:
    overview = cluster_overview()
    frame = build_frame(overview)
    names = [r.cells[1] for r in frame.containers.rows]
    assert names == ["big", "more", "small"]  # by user, then name
    assert frame.containers.rows[1].cells[2:5] == ("pending (Resources)", "-", "2")
    by_gpus = build_frame(overview, View(sort="gpu-eq"))
    assert [r.cells[1] for r in by_gpus.containers.rows] == ["big", "more", "small"]
    by_state = build_frame(overview, View(sort="state"))
    assert [r.cells[1] for r in by_state.containers.rows] == ["big", "small", "more"]
    # A column the cluster has not: by user, and the title says so.
    idle = build_frame(overview, View(sort="idle"))
    assert "sorted by user" in idle.containers.title
    bob = build_frame(overview, View(user="bob"))
    assert [r.cells[1] for r in bob.containers.rows] == ["small"]
    assert bob.queue.rows == () and [r.key for r in bob.users.rows] == ["bob"]
    assert len(bob.devices.rows) == 2  # the nodes are the cluster: not filtered
    users = {r.cells[0]: r.cells[1:] for r in frame.users.rows}
    assert users == {"alice": ("1", "1", "4"), "bob": ("1", "0", "1")}
    assert "scontrol show reservation" in render_text(frame)  # Slurm's, not ds01's


def test_a_containers_detail_is_its_job() -> None:
    detail = dict(container_detail(cluster_overview(), "2") or [])
    assert (detail["Name"], detail["Slurm job"], detail["Node"]) == ("more", "2", "-")
    assert detail["Why it waits"].startswith("Resources: no node has the GPUs")
    assert container_detail(cluster_overview(), "99") is None


def test_the_live_view_shows_the_cluster() -> None:
    app = DashboardApp(cluster_overview, interval=3600)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await script(pilot)

    async def script(pilot: Pilot[None]) -> None:
        await refreshed(pilot, app)
        assert "the Slurm cluster" in text_of(app, "title")
        assert "5/6 devices" in text_of(app, "usage")
        assert cells(app, "devices", "NODE") == ["node1", "node2"]
        assert cells(app, "devices", "HELD BY") == ["bob/small (1)", "alice/big (4)"]
        assert cells(app, "containers", "NAME") == ["big", "more", "small"]
        assert cells(app, "queue", "REASON") == ["Resources"]
        assert cells(app, "users", "USER") == ["alice", "bob"]
        await pilot.press("down", "d")  # more
        assert isinstance(app.screen, DetailScreen)
        assert "Resources" in text_of(app, "detail")
        await pilot.press("escape")
        await pilot.press("s")  # user -> name
        assert cells(app, "containers", "NAME") == ["big", "more", "small"]
        await pilot.press("q")

    asyncio.run(main())


#: A job of bob's named like Rich markup, with a terminal escape (SGR red) in its name.
MARKUP_NAME = "c1[/x]\x1b[31mred"


def _overview_with_a_markup_name() -> dict[str, Any]:
    jobs = list(SQUEUE_JOBS)
    jobs.append(
        squeue_job(job_id=9, name=MARKUP_NAME, user_id=UIDS["bob"], user_name="bob",
                   job_state="PENDING", state_reason="Priority", tres_per_node="gres:gpu:1")
    )  # fmt: skip
    containers = slurm_view.parse_containers(squeue_answer(*jobs), SQUEUE_AT)
    return slurm_view.cluster_overview(slurm_view.parse_nodes(NODES), containers, "alice", "t")


def test_a_job_name_is_shown_as_text_without_its_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    overview = _overview_with_a_markup_name()
    print_once(lambda: overview, build_parser().parse_args(["--once"]))
    text = capsys.readouterr().out
    assert "c1[/x]red" in text and "\x1b" not in text
    app = DashboardApp(lambda: overview, interval=3600)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await refreshed(pilot, app)
            assert app.error is None
            assert "c1[/x]red" in cells(app, "containers", "NAME")
            assert cells(app, "queue", "CONTAINER")[-1] == "c1[/x]red"
            await pilot.press("q")

    asyncio.run(main())
