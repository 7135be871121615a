"""The live dashboard (``ds01.tui.app``) driven headless by textual's pilot, fed known
overviews: what the tables show, the keys (sort, filter by user, detail, refresh, quit),
errors shown in the status line with the last good data kept, and 300 containers.

There is no pytest-asyncio: each test runs its coroutine with ``asyncio.run``. Timings
are printed (``-s`` shows them), never asserted; ``benchmarks/bench_dashboard.py``
measures them.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from dashboard_data import admin_overview, large_overview, user_overview
from ds01.errors import DaemonUnavailable
from ds01.tui.app import DashboardApp, DetailScreen, UserFilterScreen
from ds01.tui.frame import View

SIZE = (160, 50)
WAIT_S = 10.0


def run(app: DashboardApp, script: Callable[[Pilot[None]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await script(pilot)

    asyncio.run(main())


async def refreshed(pilot: Pilot[None], app: DashboardApp, count: int = 1) -> None:
    """Wait until the app has received ``count`` overviews or failed as often."""
    deadline = time.monotonic() + WAIT_S
    while app.refreshes + (app.error is not None) < count or app._fetching:
        assert time.monotonic() < deadline, "the dashboard did not refresh"
        await pilot.pause(0.01)
    await pilot.pause()


def cells(app: DashboardApp, table_id: str, column: str | None = None) -> list[Any]:
    table: DataTable[Any] = app.query_one(f"#{table_id}", DataTable)
    rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
    if column is None:
        return rows
    index = [str(c.label) for c in table.columns.values()].index(column)
    return [row[index] for row in rows]


def text_of(app: DashboardApp, widget_id: str) -> str:
    return str(app.screen.query_one(f"#{widget_id}", Static).render())


def test_the_tables_show_the_overview_and_the_keys_sort_filter_and_detail() -> None:
    app = DashboardApp(admin_overview, interval=3600)

    async def script(pilot: Pilot[None]) -> None:
        await refreshed(pilot, app)
        assert "erin (admin, every user)" in text_of(app, "title")
        assert "3/5 devices" in text_of(app, "usage")
        assert cells(app, "devices", "HOLDER") == [
            "alice/thesis", "alice/scratch", "free", "bob/notebook", "free",
        ]  # fmt: skip
        assert cells(app, "containers", "NAME") == ["old", "scratch", "thesis", "notebook"]
        assert cells(app, "containers", "CLEANUP") == ["-", "in 18m", "in 1d00h", "exempt"]
        assert cells(app, "queue", "CONTAINER") == ["big"]
        assert cells(app, "users", "USER") == ["alice", "bob", "carol"]
        assert app.focused is app.query_one("#containers")

        await pilot.press("s")  # user -> name
        assert app.view.sort == "name"
        assert cells(app, "containers", "NAME") == ["notebook", "old", "scratch", "thesis"]
        assert "sorted by name" in str(app.query_one("#containers").border_title)
        await pilot.press("s", "s", "s", "s", "s")  # ... -> cleanup
        assert app.view.sort == "cleanup"
        assert cells(app, "containers", "NAME") == ["scratch", "thesis", "old", "notebook"]

        containers = app.query_one("#containers", DataTable)
        assert app.selected_key(containers) == "old._.1001"  # the highlight follows its row
        await pilot.press("up")  # thesis
        await pilot.press("d")
        assert isinstance(app.screen, DetailScreen)
        detail = text_of(app, "detail")
        assert "thesis" in detail and "alice" in detail and "in 1d00h" in detail
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)

        await pilot.press("u")
        assert isinstance(app.screen, UserFilterScreen)
        await pilot.press(*"bob", "enter")
        assert app.view == View(sort="cleanup", user="bob")
        assert cells(app, "containers", "NAME") == ["notebook"]
        assert cells(app, "users", "USER") == ["bob"]
        assert cells(app, "queue") == []
        assert len(cells(app, "devices")) == 5  # the devices are the machine: not filtered
        assert "filter: user bob" in text_of(app, "status")

        await pilot.press("enter")  # enter on a container row: its detail
        assert isinstance(app.screen, DetailScreen)
        assert "notebook" in text_of(app, "detail")
        await pilot.press("q")  # closes the detail, not the app
        assert not isinstance(app.screen, DetailScreen)

        await pilot.press("u")
        assert app.screen.query_one(Input).value == "bob"
        await pilot.press("escape")  # cancel: the filter stays
        assert app.view.user == "bob"
        await pilot.press("u", *["backspace"] * 3, "enter")  # empty: everyone
        assert app.view.user is None
        assert len(cells(app, "containers")) == 4

        await pilot.press("q")

    run(app, script)
    assert app.return_code == 0 or app.return_code is None


def test_a_users_view_shows_no_other_users_containers() -> None:
    app = DashboardApp(user_overview, interval=3600)

    async def script(pilot: Pilot[None]) -> None:
        await refreshed(pilot, app)
        assert cells(app, "devices", "HOLDER") == [
            "alice", "alice", "free", "bob/notebook", "free",
        ]  # fmt: skip
        assert cells(app, "containers", "NAME") == ["notebook"]
        assert "USER" not in [str(c.label) for c in app.query_one("#containers", DataTable)
                              .columns.values()]  # fmt: skip
        assert "other users' devices show their user name only" in text_of(app, "status")

    run(app, script)


def test_r_refreshes_now_and_refreshes_update_the_cells_in_place() -> None:
    calls: list[int] = []

    def fetch() -> Mapping[str, Any]:
        calls.append(1)
        overview = admin_overview()
        overview["containers"][1]["idle_minutes"] = 42.0 + len(calls)
        return overview

    app = DashboardApp(fetch, interval=3600)

    async def script(pilot: Pilot[None]) -> None:
        await refreshed(pilot, app)
        assert cells(app, "containers", "IDLE")[1] == "43m"
        await pilot.press("down", "down")  # thesis
        await pilot.press("r")
        await refreshed(pilot, app, 2)
        assert cells(app, "containers", "IDLE")[1] == "44m"
        assert app.selected_key(app.query_one("#containers", DataTable)) == "thesis._.1001"

    run(app, script)
    assert len(calls) == 2


def test_errors_are_shown_with_the_last_good_data_and_the_next_refresh_recovers() -> None:
    answers: list[Any] = [
        DaemonUnavailable("Cannot reach ds01d at /run/ds01/ds01.sock (No such file)."),
        admin_overview(),
        DaemonUnavailable("Lost the connection to ds01d."),
        admin_overview(),
    ]

    def fetch() -> Mapping[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    app = DashboardApp(fetch, interval=3600)

    async def script(pilot: Pilot[None]) -> None:
        await refreshed(pilot, app)
        assert app.error is not None
        assert "Refresh failed: Cannot reach ds01d" in text_of(app, "status")
        assert app.query_one("#status").has_class("error")
        await pilot.press("r")
        await refreshed(pilot, app, 1)
        assert app.error is None and not app.query_one("#status").has_class("error")
        assert len(cells(app, "containers")) == 4
        await pilot.press("r")
        await refreshed(pilot, app, 2)
        assert "Refresh failed: Lost the connection" in text_of(app, "status")
        assert "the data shown is from" in text_of(app, "status")
        assert len(cells(app, "containers")) == 4  # kept
        await pilot.press("r")
        await refreshed(pilot, app, 2)
        assert app.error is None

    run(app, script)
    assert answers == []


def test_300_containers_render_and_refresh() -> None:
    base = large_overview(300)
    calls: list[float] = []

    def fetch() -> Mapping[str, Any]:
        calls.append(time.perf_counter())
        overview = copy.deepcopy(base)
        for container in overview["containers"][::7]:
            if container["idle_minutes"] is not None:
                container["idle_minutes"] += len(calls)
        return overview

    app = DashboardApp(fetch, interval=3600)
    timings: dict[str, float] = {}

    async def script(pilot: Pilot[None]) -> None:
        started = time.perf_counter()
        await refreshed(pilot, app)
        timings["first frame"] = time.perf_counter() - started
        assert len(cells(app, "containers")) == 300
        assert len(cells(app, "users")) == 30
        started = time.perf_counter()
        await pilot.press("r")
        await refreshed(pilot, app, 2)
        timings["refresh"] = time.perf_counter() - started
        started = time.perf_counter()
        await pilot.press("s")
        await pilot.pause()
        timings["sort"] = time.perf_counter() - started
        assert cells(app, "containers", "NAME")[:3] == ["job000", "job001", "job002"]
        await pilot.press("u", *"user03", "enter")
        assert len(cells(app, "containers")) == 10

    run(app, script)
    print(", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()))


@pytest.mark.parametrize(("columns", "stacked"), [(120, True), (200, False)])
def test_the_queue_and_quota_panels_are_whole_side_by_side_only_where_both_fit(
    columns: int, stacked: bool
) -> None:
    app = DashboardApp(admin_overview, interval=3600)

    async def main() -> None:
        async with app.run_test(size=(columns, 50)) as pilot:
            await refreshed(pilot, app)
            await pilot.pause()
            for panel in ("queue", "users"):
                table: DataTable[str] = app.query_one(f"#{panel}", DataTable)
                whole = table.virtual_size.width <= table.scrollable_content_region.width
                assert whole, (panel, table.virtual_size, table.scrollable_content_region)
            assert app.query_one("#bottom").has_class("stacked") is stacked

    asyncio.run(main())
