"""``ds01 admin report``'s aggregation (``ds01.core.report``) over a known event log, usage
ledger, GPU activity and energy records, with every figure computed by hand; the GPU
activity ledger of the state store; and the Markdown, CSV and HTML renderings."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from ds01.cli import report as render_report
from ds01.core.report import (
    Activity,
    Energy,
    Holding,
    Report,
    activity_sample,
    build_report,
    hour_start,
    max_sample_gap,
)
from ds01.runtime.store import GpuActivity, StateStore


def t(text: str) -> datetime:
    return datetime.fromisoformat(f"2026-{text}+00:00")


START, END, NOW = t("11-01T00:00"), t("11-02T00:00"), t("11-03T00:00")
UIDS = {1001: "alice", 1002: "bob"}

HOLDINGS = [
    # alice, whole GPU: 2 of its 6 hours before the window -> 4 h x 1.0
    Holding("alice", "phd", 1.0, t("10-31T22:00"), t("11-01T04:00")),
    # alice, a 3g.20gb slice: 4 of its 7 hours in the window -> 4 h x 3/7
    Holding("alice", "phd", float(Fraction(3, 7)), t("11-01T20:00"), t("11-02T03:00")),
    # bob, two GPUs for 1.5 h -> 3 GPU-hours
    Holding("bob", "msc", 2.0, t("11-01T06:00"), t("11-01T07:30")),
    # bob, still holding one GPU since 23:00 -> 1 h in the window (the rest is after it)
    Holding("bob", "msc", 1.0, t("11-01T23:00"), None),
    # carol, before the window: not in the report
    Holding("carol", "phd", 1.0, t("10-30T00:00"), t("10-31T00:00")),
]

ACTIVITY = [
    Activity("alice", "phd", t("10-31T23:00"), 3600.0, 3600.0),  # before the window
    Activity("alice", "phd", t("11-01T01:00"), 3600.0, 1800.0),  # 1 h measured, 50 % busy
    Activity("bob", "msc", t("11-01T06:00"), 7200.0, 5400.0),  # 2 GPUs, 75 % busy
]

ENERGY = [
    Energy("alice", "phd", t("11-01T00:00"), t("11-01T01:00"), 3_600_000.0),  # 1 kWh
    Energy("bob", "msc", t("10-31T23:30"), t("11-01T00:30"), 7_200_000.0),  # half: 1 kWh
]


def ev(ts: str, user: str, action: str, resource: str, outcome: str = "success",
       **details: Any) -> dict[str, Any]:  # fmt: skip
    return {"ts": t(ts).isoformat(), "user": user, "action": action, "resource": resource,
            "details": details, "outcome": outcome}  # fmt: skip


EVENTS = [
    ev("11-01T01:00", "alice", "container.create", "container/a._.1001"),
    ev("11-01T01:00", "alice", "gpu.allocate", "container/a._.1001"),  # not counted
    ev("11-01T02:00", "alice", "container.create", "container/b._.1001", outcome="failure"),
    ev("11-01T05:00", "alice", "cleanup.idle", "container/a._.1001"),
    # created by ds01d for bob's queued request: bob's (uid 1002)
    ev("11-01T06:00", "ds01d", "container.create", "container/q._.1002"),
    ev("11-01T06:00", "bob", "queue.start", "queue/x1", container="q", waited_seconds=120.0),
    ev("11-01T09:00", "bob", "queue.start", "queue/x2", container="r", waited_seconds=60),
    ev("11-01T12:00", "bob", "cleanup.runtime", "container/q._.1002"),
    ev("10-31T12:00", "bob", "container.create", "container/old._.1002"),  # before
    ev("11-02T00:00", "bob", "container.create", "container/new._.1002"),  # end excluded
    ev("11-01T13:00", "ds01d", "container.create", "container/z._.4242"),  # unknown uid
]


def full_report() -> Any:
    return build_report(
        start=START,
        end=END,
        now=NOW,
        events=EVENTS,
        holdings=HOLDINGS,
        activity=ACTIVITY,
        energy=ENERGY,
        co2_g_per_kwh=400.0,
        uid_names=UIDS,
        user_groups={},
    )


def report_of(**given: Any) -> Report:
    """``build_report`` over the test window at ``NOW`` with nothing recorded (no energy
    ledger, no CO₂ figure, no names) but what ``given`` sets."""
    inputs: dict[str, Any] = {
        "start": START, "end": END, "now": NOW, "events": (), "holdings": (), "activity": (),
        "energy": None, "co2_g_per_kwh": None, "uid_names": {}, "user_groups": {},
    }  # fmt: skip
    return build_report(**{**inputs, **given})


def test_gpu_hours_allocated_and_used_per_user() -> None:
    report = full_report()
    rows = {row.name: row for row in report.users}
    assert list(rows) == ["alice", "bob"]  # most GPU-hours first; carol had none here
    alice, bob = rows["alice"], rows["bob"]
    assert alice.gpu_hours_allocated == round(4 + 4 * 3 / 7, 4) == 5.7143
    assert (alice.gpu_hours_measured, alice.gpu_hours_used) == (1.0, 0.5)
    assert alice.utilization_percent == 50.0
    assert bob.gpu_hours_allocated == 4.0  # 2 x 1.5 h + 1 h of the open holding
    assert (bob.gpu_hours_measured, bob.gpu_hours_used) == (2.0, 1.5)
    assert bob.utilization_percent == 75.0
    assert report.total.gpu_hours_allocated == round(8 + 12 / 7, 4) == 9.7143
    assert report.total.gpu_hours_used == 2.0


def test_events_are_counted_for_the_container_owner() -> None:
    rows = {row.name: row for row in full_report().users}
    alice, bob = rows["alice"], rows["bob"]
    assert (alice.containers_created, alice.idle_reclaims, alice.runtime_stops) == (1, 1, 0)
    assert (bob.containers_created, bob.idle_reclaims, bob.runtime_stops) == (1, 0, 1)
    assert bob.queue_waits.count == 2
    assert (bob.queue_waits.mean_seconds, bob.queue_waits.max_seconds) == (90.0, 120.0)
    assert alice.queue_waits.count == 0 and alice.queue_waits.mean_seconds is None


def test_gpu_use_outside_ds01_is_counted_for_the_container_owner_else_the_user() -> None:
    def use(user: str, container_user: str | None, hour: int) -> dict[str, Any]:
        return {
            "ts": (START + timedelta(hours=hour)).isoformat(),
            "user": user,
            "action": "gpu.unmanaged_use",
            "resource": "gpu/GPU-0",
            "details": {"pid": 7, "container_user": container_user},
            "outcome": "success",
        }

    events = [use("carol", None, 1), use("alice", "alice", 2), use("root", "bob", 3)]
    events.append(use("carol", None, -1))  # before the window
    report = report_of(events=events)
    rows = {row.name: row.unmanaged_gpu_uses for row in report.users}
    assert rows == {"alice": 1, "bob": 1, "carol": 1}
    assert report.total.unmanaged_gpu_uses == 3


def test_reservations_count_for_the_holder_and_stops_for_the_container_owner() -> None:
    def event(action: str, user: str, resource: str, **details: Any) -> dict[str, Any]:
        return {
            "ts": (START + timedelta(hours=1)).isoformat(),
            "user": user,
            "action": action,
            "resource": resource,
            "details": details,
            "outcome": "success",
        }

    events = [
        event("reservation.create", "alice", "reservation/r1", holder="alice"),
        event("reservation.create", "erin", "reservation/r2", holder=None),  # maintenance
        event("cleanup.reservation", "bob", "container/train._.1002", reason="reserved"),
    ]
    report = report_of(events=events, uid_names={1002: "bob"})
    rows = {row.name: (row.reservations, row.reservation_stops) for row in report.users}
    assert rows == {"alice": (1, 0), "erin": (1, 0), "bob": (0, 1)}
    assert (report.total.reservations, report.total.reservation_stops) == (2, 1)


def test_borrowed_gpu_hours_and_reclaims_count_for_the_container_owner() -> None:
    holdings = [
        Holding("alice", "phd", 1.0, START, START + timedelta(hours=3)),
        # borrowed, from 1 h before the window: 2 of its 3 hours count
        Holding(
            "alice", "phd", 1.0, START - timedelta(hours=1), START + timedelta(hours=2),
            borrowed=True,
        ),
    ]
    events = [
        ev("11-01T02:00", "ds01d", "container.reclaim", "container/extra._.1001"),
        ev("11-01T01:55", "ds01d", "container.reclaim_warning", "container/extra._.1001"),
    ]
    report = report_of(events=events, holdings=holdings, uid_names=UIDS)
    [alice] = report.users
    assert (alice.gpu_hours_allocated, alice.gpu_hours_borrowed, alice.borrow_reclaims) == (
        5.0, 2.0, 1,
    )  # fmt: skip
    assert report.total.to_dict()["gpu_hours_borrowed"] == 2.0
    assert render_report.to_csv(report.to_dict()).splitlines()[1].endswith(",2.0,1")


def test_energy_and_co2_are_pro_rated_to_the_window() -> None:
    rows = {row.name: row for row in full_report().users}
    assert (rows["alice"].energy_kwh, rows["alice"].co2_kg) == (1.0, 0.4)
    assert (rows["bob"].energy_kwh, rows["bob"].co2_kg) == (1.0, 0.4)


def test_groups_sum_their_users_and_the_total_sums_everything() -> None:
    report = full_report()
    groups = {row.name: row for row in report.groups}
    assert set(groups) == {"phd", "msc"}
    assert groups["phd"].gpu_hours_allocated == 5.7143
    assert groups["msc"].gpu_hours_used == 1.5
    assert groups["msc"].queue_waits.count == 2
    total = report.total
    assert (total.containers_created, total.idle_reclaims, total.runtime_stops) == (2, 1, 1)
    assert total.energy_kwh == 2.0 and total.co2_kg == 0.8
    assert report.to_dict()["users"][0]["group"] == "phd"


def test_hours_cut_by_the_window_count_pro_rata() -> None:
    report = report_of(
        start=t("11-01T00:30"),
        end=t("11-01T01:30"),
        holdings=[Holding("alice", "phd", 2.0, t("11-01T00:00"), t("11-01T02:00"))],
        activity=[
            Activity("alice", "phd", t("11-01T00:00"), 7200.0, 3600.0),
            Activity("alice", "phd", t("11-01T01:00"), 7200.0, 7200.0),
        ],
        co2_g_per_kwh=400.0,
    )
    (alice,) = report.users
    assert alice.gpu_hours_allocated == 2.0  # 1 h x 2 GPUs
    assert alice.gpu_hours_measured == 2.0  # half of each hour: 1 + 1
    assert alice.gpu_hours_used == 1.5  # 0.5 + 1.0
    assert alice.energy_kwh is None and alice.co2_kg is None  # energy not recorded


def test_the_current_hour_counts_what_was_measured_so_far() -> None:
    now = t("11-01T10:15")
    report = report_of(
        start=t("11-01T10:00"),
        end=t("11-01T11:00"),
        now=now,
        holdings=[Holding("bob", "msc", 1.0, t("11-01T09:00"), None)],
        activity=[Activity("bob", "msc", t("11-01T10:00"), 900.0, 450.0)],
        energy=[],
    )
    (bob,) = report.users
    assert bob.gpu_hours_allocated == 0.25  # an open holding counts up to now
    assert (bob.gpu_hours_measured, bob.gpu_hours_used) == (0.25, 0.125)
    assert bob.energy_kwh == 0.0 and bob.co2_kg is None  # no intensity, no CO2


def test_a_user_without_holdings_gets_the_group_the_caller_resolves() -> None:
    report = report_of(
        events=[ev("11-01T01:00", "dave", "container.create", "container/x._.1004")],
        energy=[],
        uid_names={1004: "dave"},
        user_groups={"dave": "users"},
    )
    assert [(r.name, r.group, r.containers_created) for r in report.users] == [("dave", "users", 1)]
    assert [g.name for g in report.groups] == ["users"]


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="before its end"):
        report_of(start=END, end=START)


# -- what the lifecycle loop records ----------------------------------------------------------


def test_activity_sample_shares_the_gpu_equivalents_among_devices() -> None:
    assert activity_sample(2, [100.0, 50.0], 60) == (120.0, 90.0)
    # a device without a reading is not measured
    assert activity_sample(2, [100.0, None], 60) == (60.0, 60.0)
    assert activity_sample(Fraction(3, 7), [None], 60) is None
    assert activity_sample(1, [40.0], 0) is None
    assert activity_sample(1, [250.0], 10) == (10.0, 10.0)  # clamped to 100 %


def test_hours_and_gaps() -> None:
    moment = datetime(2026, 11, 1, 15, 42, 7, tzinfo=timezone(timedelta(hours=1)))
    assert hour_start(moment) == t("11-01T14:00")
    assert max_sample_gap(0.5) == 60.0 and max_sample_gap(60) == 180.0


def test_the_state_store_sums_activity_per_container_and_hour(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "ds01.db")
    hour = t("11-01T10:00").isoformat()
    store.add_gpu_activity([GpuActivity("c1", "alice", "phd", hour, 60.0, 30.0)])
    store.add_gpu_activity(
        [
            GpuActivity("c1", "alice", "phd", hour, 60.0, 60.0),
            GpuActivity("c1", "alice", "phd", t("11-01T11:00").isoformat(), 60.0, 0.0),
            GpuActivity("c2", "bob", "msc", t("11-01T08:00").isoformat(), 10.0, 1.0),
        ]
    )
    rows = store.gpu_activity_between(t("11-01T09:30").isoformat(), t("11-01T11:00").isoformat())
    assert rows == [GpuActivity("c1", "alice", "phd", hour, 120.0, 90.0)]
    # an hour that starts before the window but reaches into it overlaps it
    rows = store.gpu_activity_between(t("11-01T08:30").isoformat(), t("11-01T09:00").isoformat())
    assert [r.container_id for r in rows] == ["c2"]
    store.forget_gpu_activity(t("11-01T11:00").isoformat())
    rows = store.gpu_activity_between(t("11-01T00:00").isoformat(), t("11-02T00:00").isoformat())
    assert [r.hour for r in rows] == [t("11-01T11:00").isoformat()]
    store.close()


# -- rendering ----------------------------------------------------------------------------------


def test_markdown_csv_and_html_carry_every_row() -> None:
    data = full_report().to_dict()
    markdown = render_report.to_markdown(data, "report.png")
    assert "![GPU-hours per user: allocated and used](report.png)" in markdown
    assert "| alice | phd | 5.714 | 1 | 0.5 | 50 |" in markdown
    assert "| **total** | 9.714 | 3 | 2 |" in markdown
    rows = list(csv.DictReader(io.StringIO(render_report.to_csv(data))))
    assert [(r["kind"], r["name"]) for r in rows] == [
        ("user", "alice"), ("user", "bob"), ("group", "phd"), ("group", "msc"), ("total", "total"),
    ]  # fmt: skip
    assert rows[1]["gpu_hours_used"] == "1.5" and rows[1]["queue_wait_mean_seconds"] == "90.0"
    html = render_report.to_html(data, b"\x89PNG fake")
    assert 'src="data:image/png;base64,iVBORyBmYWtl"' in html
    assert "<td>alice</td><td>phd</td><td>5.714</td><td>1</td><td>0.5</td>" in html


def test_the_chart_is_a_png() -> None:
    png = render_report.chart_png(full_report().to_dict())
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    empty = report_of()
    assert render_report.chart_png(empty.to_dict()).startswith(b"\x89PNG")
