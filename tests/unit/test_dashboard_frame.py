"""The dashboard's frame model (``ds01.tui.frame``) and its command (``ds01.tui.main``),
without textual: what each table shows, sorting, the user filter, the user's view, the
detail of a container, ``--once`` and ``--json``, 300 containers, and a start-up that
keeps textual out of ``--help`` and ``--once``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest

from dashboard_data import admin_overview, large_overview, user_overview
from ds01.cli.dashboard import SORT_NAMES
from ds01.tui.frame import (
    SORTS,
    Table,
    Usage,
    View,
    activity,
    build_frame,
    container_detail,
    duration,
    render_text,
    size,
    time_to_cleanup,
    usage_bar,
)
from ds01.tui.main import build_parser, main, print_once


def rows(table: Table) -> list[tuple[str, ...]]:
    return [r.cells for r in table.rows]


def column(table: Table, name: str) -> list[str]:
    index = table.columns.index(name)
    return [r.cells[index] for r in table.rows]


def test_the_admin_frame_shows_every_device_container_request_and_user() -> None:
    frame = build_frame(admin_overview())
    assert "erin (admin, every user)" in frame.title
    assert column(frame.devices, "HOLDER") == [
        "alice/thesis",
        "alice/scratch",
        "free",
        "bob/notebook",
        "free",
    ]
    assert column(frame.devices, "GPU") == ["0", "1", "2", "3:1g.5gb#1", "3:1g.5gb#2"]
    assert column(frame.devices, "UTIL") == ["87%", "0%", "0%", "-", "-"]
    assert frame.containers.columns[0] == "USER"
    assert rows(frame.containers) == [
        ("alice", "old", "stopped", "busybox", "-", "0", "-", "-", "-"),
        ("alice", "scratch", "idle 42m", "busybox", "1", "1", "0%", "42m", "in 18m"),
        ("alice", "thesis", "active", "busybox", "0", "1", "87%", "0s", "in 1d00h"),
        ("bob", "notebook", "idle 5m", "busybox", "3:1g.5gb#1", "0.14", "-", "5m", "exempt"),
    ]
    assert column(frame.queue, "CONTAINER") == ["big"]
    assert column(frame.queue, "USER") == ["carol"]
    assert rows(frame.users) == [
        ("alice", "2/2", "3/5", "2", "3G/32G", "0"),
        ("bob", "0.14/unl.", "1/5", "1", "1G/32G", "0"),
        ("carol", "0/2", "0/5", "0", "0B/32G", "1"),
    ]
    assert frame.usage == Usage(
        3, 5, pytest.approx(2 + 1 / 7, abs=1e-3), pytest.approx(3 + 2 / 7, abs=1e-3)
    )
    assert "3/5 devices, 2.14/3.29 GPU-equivalents allocated" in usage_bar(frame.usage)
    assert "4 containers on the machine, 3 running; GPU queue: 1 waiting" in frame.summary


def test_the_week_view_shows_who_has_each_reserved_device_day_by_day() -> None:
    overview = admin_overview()
    gpu0, gpu2 = overview["devices"][0]["uuid"], overview["devices"][2]["uuid"]

    def kept(holder: str | None, devices: list[str], start: str, end: str) -> dict[str, Any]:
        return {"holder": holder, "devices": devices, "start": start, "end": end}

    overview["reservations"] = [
        kept("alice", [gpu0, gpu2], "2026-11-29T09:00:00+00:00", "2026-11-29T17:00:00+00:00"),
        kept(None, [gpu2], "2026-11-30T22:00:00+00:00", "2026-12-01T02:00:00+00:00"),
    ]
    week = build_frame(overview).reservations
    assert week.columns == ("GPU", "Sat 28", "Sun 29", "Mon 30", "Tue 01", "Wed 02", "Thu 03",
                            "Fri 04")  # fmt: skip
    assert rows(week) == [
        ("0", "-", "alice 09:00-17:00", "-", "-", "-", "-", "-"),
        ("2", "-", "alice 09:00-17:00", "maintenance 22:00-24:00", "maintenance 00:00-02:00",
         "-", "-", "-"),
    ]  # fmt: skip
    assert "Reservations this week" in render_text(build_frame(overview))
    assert not build_frame(admin_overview()).reservations.rows


def test_a_user_sees_every_device_but_only_the_holders_name_of_others() -> None:
    frame = build_frame(user_overview())
    assert "bob (user)" in frame.title
    assert column(frame.devices, "HOLDER") == ["alice", "alice", "free", "bob/notebook", "free"]
    assert "USER" not in frame.containers.columns
    assert column(frame.containers, "NAME") == ["notebook"]
    assert frame.containers.title.startswith("Your containers: 1")
    assert column(frame.users, "USER") == ["bob"]
    assert frame.queue.rows == ()
    assert any("other users' devices show their user name only" in n for n in frame.notes)
    text = render_text(frame)
    assert "thesis" not in text and "scratch" not in text
    assert "4 containers on the machine" in text  # the machine's totals stay


@pytest.mark.parametrize(
    ("sort", "names"),
    [
        ("user", ["old", "scratch", "thesis", "notebook"]),
        ("name", ["notebook", "old", "scratch", "thesis"]),
        ("state", ["thesis", "scratch", "notebook", "old"]),
        ("gpu-eq", ["scratch", "thesis", "notebook", "old"]),
        ("gpu%", ["thesis", "scratch", "old", "notebook"]),
        ("idle", ["scratch", "notebook", "thesis", "old"]),
        ("cleanup", ["scratch", "thesis", "old", "notebook"]),
    ],
)
def test_every_sort_column(sort: str, names: list[str]) -> None:
    frame = build_frame(admin_overview(), View(sort=sort))
    assert column(frame.containers, "NAME") == names
    assert frame.containers.title.endswith(f"sorted by {sort}")


def test_s_cycles_through_every_sort_column_and_back() -> None:
    assert tuple(s.name for s in SORTS) == SORT_NAMES
    view, seen = View(), []
    for _ in SORT_NAMES:
        seen.append(view.sort)
        view = view.next_sort()
    assert tuple(seen) == SORT_NAMES
    assert view == View()
    assert View(sort="unknown").next_sort().sort == SORT_NAMES[0]


def test_the_user_filter_keeps_one_users_containers_queue_and_usage_not_the_devices() -> None:
    frame = build_frame(admin_overview(), View().filtered(" bob "))
    assert frame.view.user == "bob"
    assert column(frame.containers, "USER") == ["bob"]
    assert frame.containers.title.startswith("Containers of bob: 1")
    assert column(frame.users, "USER") == ["bob"]
    assert frame.queue.rows == ()
    assert len(frame.devices.rows) == 5
    assert frame.usage.devices_allocated == 3
    nobody = build_frame(admin_overview(), View(user="zed"))
    assert nobody.containers.rows == () and nobody.containers.empty == "No containers of zed."
    assert View(user="bob").filtered("").user is None


def test_activity_and_time_to_cleanup() -> None:
    running = {"status": "running", "idle_minutes": 0.5}
    assert activity(running) == "active"
    assert activity({**running, "idle_minutes": 3}) == "idle"
    assert activity({"status": "running"}) == "active"
    assert activity({"status": "stopped", "idle_minutes": 30}) == "stopped"
    now = datetime.fromisoformat("2026-11-28T12:00:00+00:00")
    assert time_to_cleanup({"stop_at": "2026-11-28T12:00:30+00:00"}, now) == "in 30s"
    assert time_to_cleanup({"stop_at": "2026-11-28T11:59:00+00:00"}, now) == "due"
    assert time_to_cleanup({"stop_at": None}, now) == "-"
    assert time_to_cleanup({"stop_at": "x", "exempt_until": "never"}, now) == "exempt"
    assert duration(None) == "-" and duration(59) == "59s" and duration(3600 * 26) == "1d02h"
    assert size(None) == "-" and size(1536 * 1024**2) == "1.5G" and size(0) == "0B"


def test_container_detail_has_every_field_with_full_device_uuids() -> None:
    overview = admin_overview()
    detail = dict(container_detail(overview, "notebook._.1002") or [])
    assert detail["Name"] == "notebook" and detail["Owner"] == "bob"
    mig = overview["devices"][3]["uuid"]
    assert detail["Devices"] == f"3:1g.5gb#1  {mig}"
    assert detail["Cleanup"] == "exempt"
    assert detail["Exempt until"].startswith("2026-12-01")
    assert container_detail(overview, "gone._.1") is None


def test_render_text_is_plain_text() -> None:
    text = render_text(build_frame(admin_overview(), View(sort="cleanup", user="alice")))
    assert "\x1b" not in text
    assert "Filter: user alice" in text
    lines = text.splitlines()
    assert lines[0].startswith("ds01 dashboard: erin")
    assert lines[1].startswith("GPUs [") and "█" in lines[1]
    assert "#" in render_text(build_frame(admin_overview()), ascii_only=True).splitlines()[1]
    assert "bob" not in text.split("Containers of alice")[1].split("GPU queue")[0]


def test_300_containers_frame_is_complete_sorted_and_filtered() -> None:
    overview = large_overview(300)
    frame = build_frame(overview)
    assert len(frame.containers.rows) == 300
    assert len({r.key for r in frame.containers.rows}) == 300
    assert len(frame.users.rows) == 30
    by_cleanup = build_frame(overview, View(sort="cleanup"))
    cleanup = column(by_cleanup.containers, "CLEANUP")
    running = sum(1 for c in overview["containers"] if c["status"] == "running")
    assert 150 < running < 300
    assert cleanup.index("-") == running  # stopped ones have no stop time: last
    assert set(cleanup[running:]) == {"-"}
    stops = [c["stop_at"] for c in overview["containers"] if c["stop_at"]]
    assert sorted(stops)[0].startswith("2026-11-28T13:00")
    filtered = build_frame(overview, View(sort="idle", user="user07"))
    assert len(filtered.containers.rows) == 10
    assert set(column(filtered.containers, "USER")) == {"user07"}
    assert len(render_text(frame).splitlines()) > 300


# -- the command ----------------------------------------------------------------------------


def test_once_prints_the_frame_and_json_prints_the_overview(
    capsys: pytest.CaptureFixture[str],
) -> None:
    overview = admin_overview()
    print_once(lambda: overview, build_parser().parse_args(["--once", "--sort", "name"]))
    out = capsys.readouterr().out
    assert out == render_text(build_frame(overview, View(sort="name")))
    print_once(lambda: overview, build_parser().parse_args(["--json"]))
    assert json.loads(capsys.readouterr().out) == overview


def test_daemon_down_is_a_message_and_exit_1_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    monkeypatch.setenv("DS01_SOCKET", str(tmp_path / "nobody.sock"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--once"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: Cannot reach ds01d") and "Traceback" not in err


def test_the_live_view_needs_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "--once" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["--once"]])
def test_help_and_once_do_not_import_textual(argv: list[str], tmp_path: Any) -> None:
    code = (
        "import sys\nfrom ds01.tui.main import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('textual', 'pydantic', 'docker', 'rich'))\nprint('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env={"DS01_SOCKET": str(tmp_path / "none.sock"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert "HEAVY []" in result.stderr, result.stderr
    if argv == ["--help"]:
        assert "ds01-dashboard" in result.stdout and "--once" in result.stdout


def test_ds01_dashboard_runs_the_installed_dashboard_not_one_in_the_working_directory(
    tmp_path: Any,
) -> None:
    """`ds01 dashboard` hands over to `python -m ds01.tui`; a `ds01` package in the directory
    it is run from must not take its place."""
    shadow = tmp_path / "work" / "ds01"
    (shadow / "tui").mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "tui" / "__init__.py").write_text("")
    (shadow / "tui" / "__main__.py").write_text("print('SHADOWED')\n")
    launcher = tmp_path / "launcher.py"  # its own directory, not the working one, on sys.path
    launcher.write_text("from ds01.cli.main import main\nmain(['dashboard', '--once'])\n")
    result = subprocess.run(
        [sys.executable, str(launcher)],
        cwd=shadow.parent,
        capture_output=True,
        text=True,
        env={"DS01_SOCKET": str(tmp_path / "none.sock"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert "SHADOWED" not in result.stdout, result.stdout
    assert result.returncode != 0 and "ds01d" in result.stderr, result.stderr


def test_a_borrowed_container_and_its_device_say_so() -> None:
    overview = admin_overview()
    for container in overview["containers"]:
        if container["name"] == "scratch":
            container["borrowed"] = True
    for device in overview["devices"]:
        holder = device.get("holder")
        if holder and holder.get("container") == "scratch":
            holder["borrowed"] = True
    frame = build_frame(overview)
    assert "alice/scratch (borrowed)" in column(frame.devices, "HOLDER")
    assert "idle 42m, borrowed" in column(frame.containers, "STATE")


def test_a_declared_runtime_shows_when_it_ends() -> None:
    overview = admin_overview()
    at = datetime.fromisoformat(overview["at"])
    for container in overview["containers"]:
        if container["name"] == "thesis":
            container["runtime_hours"] = 4.0
            container["runtime_ends_at"] = (at + timedelta(hours=1, minutes=20)).isoformat()
        if container["name"] == "old":  # stopped: nothing runs out
            container["runtime_hours"] = 2.0
    frame = build_frame(overview)
    names, states_ = column(frame.containers, "NAME"), column(frame.containers, "STATE")
    states = dict(zip(names, states_, strict=True))
    assert states["thesis"] == "active, 4h00m run, ends in 1h20m"
    assert states["old"] == "stopped" and states["scratch"] == "idle 42m"
    thesis = next(c for c in overview["containers"] if c["name"] == "thesis")
    detail = dict(container_detail(overview, thesis["docker_name"]) or [])
    assert detail["Runtime ends"] == (at + timedelta(hours=1, minutes=20)).isoformat()
