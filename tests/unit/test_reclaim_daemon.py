"""ds01d's reclaim pass and reservation drain over a real state store and the simulated
backend: a borrowed container on its owner's reservation is never reclaimed, and the
warnings both give are kept in the store, so that a restarted ds01d (new collaborators over
the same store) neither warns again nor starts a grace again. Docker is not asked: the
containers are given as records: a running borrowed one is as old as its ``ds01.created_at``.
The usage ledger marks borrowed holdings."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import cast

from ds01.core.allocation import GpuRequest
from ds01.core.reservations import Reservation
from ds01.core.scheduler import PendingRequest
from ds01.daemon.lifecycle import LifecycleLoop
from ds01.daemon.reclaim import BorrowReclaim
from ds01.daemon.reservations import ReservationWatch
from ds01.daemon.sampler import Sampler
from ds01.daemon.service import Ds01Service
from ds01.model import labels as L
from ds01.model.quota import GpuQuota
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.store import ReservationRecord, StateStore, UsageRecord
from support import offline_service, simulated_a100s, simulated_backend_in

GPU_CONFIG = simulated_a100s(2)
LIMITS = """\
defaults: {gpu_limit: 1, max_containers: 5}
borrowing:
  enabled: true
  max_borrowed_gpus: 1
  min_runtime_minutes: 30
  reclaim_grace_minutes: 5
reservations: {warning_minutes: 10}
"""
NOW = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)


def service(tmp_path: Path) -> Ds01Service:
    """A ds01d service over the state in ``tmp_path``: a second call is a restart."""

    return offline_service(
        tmp_path,
        config={"gpu-config.yaml": GPU_CONFIG, "resource-limits.yaml": LIMITS},
        backend_factory=simulated_backend_in(tmp_path),
    )


def record(
    name: str, uid: int, user: str, device: str, *, borrowed: bool, id_of: str | None = None
) -> ContainerRecord:
    """A container of ``user``'s; its id is made from ``id_of`` (default: ``name``)."""
    labels = {
        L.MANAGED: "true",
        L.USER: user,
        L.UID: str(uid),
        L.NAME: name,
        L.GPUS: device,
        L.GPU_EQUIVALENTS: "1",
    }
    return ContainerRecord.from_summary(
        {
            "Id": (id_of or name).ljust(64, "0"),
            "Names": [f"/{name}._.{uid}"],
            "State": "exited",
            "Labels": labels | ({L.BORROWED: "true"} if borrowed else {}),
        }
    )


def head() -> PendingRequest:
    """carol's request within quota, waiting for a GPU."""
    return PendingRequest(
        id="q1",
        user="carol",
        group="lab",
        request=GpuRequest(whole_gpus=1),
        quota=GpuQuota(gpu_limit=Fraction(1)),
        priority=50,
        submitted_at=NOW,
    )


def actions(svc: Ds01Service) -> list[str]:
    lines = svc.paths.events_file.read_text().splitlines()
    return [json.loads(line)["action"] for line in lines]


def reserve(svc: Ds01Service, holder: str, device: str, start: datetime) -> Reservation:
    reservation = Reservation(
        id="r1",
        holder=holder,
        devices=(device,),
        start=start,
        end=start + timedelta(hours=2),
        gpu_equivalents=Fraction(1),
    )
    svc.store.add_reservation(ReservationRecord.of(reservation, NOW.isoformat(), "upcoming"))
    return reservation


def full_server(svc: Ds01Service) -> list[ContainerRecord]:
    """alice within quota on GPU 0 and borrowing GPU 1: every GPU is taken."""
    gpu0, gpu1 = (d.uuid for d in svc.backend.inventory().devices)
    return [
        record("mine", 1000, "alice", gpu0, borrowed=False),
        record("extra", 1000, "alice", gpu1, borrowed=True),
    ]


def reclaim(svc: Ds01Service, records: list[ContainerRecord], now: datetime) -> bool:
    stopper = BorrowReclaim(svc, lambda r, why: None)
    return stopper.run(head(), svc.backend.inventory(), records, now)


def test_a_borrowed_container_on_its_owners_reservation_in_force_is_not_reclaimed(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    records = full_server(svc)
    gpu1 = records[1].gpus[0]
    reserve(svc, "alice", gpu1, NOW - timedelta(minutes=10))
    assert not reclaim(svc, records, NOW)
    assert "container.reclaim_warning" not in actions(svc)
    assert svc.store.warnings("reclaim") == {}


def test_someone_elses_or_a_future_reservation_does_not_protect_a_borrowed_container(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    records = full_server(svc)
    reserve(svc, "alice", records[1].gpus[0], NOW + timedelta(hours=1))
    reclaim(svc, records, NOW)
    assert actions(svc).count("container.reclaim_warning") == 1


def test_a_reclaim_warning_survives_a_restart_and_the_grace_counts_from_the_first(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    records = full_server(svc)
    assert not reclaim(svc, records, NOW)
    assert svc.store.warnings("reclaim") == {"extra".ljust(64, "0"): NOW.isoformat()}

    restarted = service(tmp_path)
    assert not reclaim(restarted, records, NOW + timedelta(minutes=4))
    assert actions(restarted).count("container.reclaim_warning") == 1
    assert reclaim(restarted, records, NOW + timedelta(minutes=5))
    assert actions(restarted)[-2:] == ["gpu.release", "container.reclaim"]
    lines = restarted.paths.events_file.read_text().splitlines()
    release = json.loads(lines[-2])
    assert (release["user"], release["resource"]) == ("ds01d", "container/extra._.1000")
    assert release["details"] == {
        "devices": list(records[1].gpus),
        "gpu_equivalents": 1.0,
        "reason": "reclaimed",
    }
    assert restarted.store.warnings("reclaim") == {}
    assert "extra".ljust(64, "0") in restarted.store.released()


def test_a_running_borrowed_container_is_as_old_as_its_placement_not_its_last_start(
    tmp_path: Path,
) -> None:
    """Its age is its ``ds01.created_at`` (a borrowed container is created, or re-created,
    when its devices are placed): a restart since does not protect it again, and Docker's
    start time is not asked."""
    svc = service(tmp_path)
    mine, extra = full_server(svc)

    def placed(minutes: float) -> ContainerRecord:
        created = (NOW - timedelta(minutes=minutes)).isoformat(timespec="seconds")
        return replace(extra, status="running", created_at=created)

    assert not reclaim(svc, [mine, placed(29)], NOW)
    assert "container.reclaim_warning" not in actions(svc)
    assert not reclaim(svc, [mine, placed(30)], NOW)
    assert actions(svc).count("container.reclaim_warning") == 1
    # warned: it stays chosen whatever its age says, and is stopped after the grace
    assert reclaim(svc, [mine, placed(0)], NOW + timedelta(minutes=5))
    assert actions(svc)[-1] == "container.reclaim"


def test_a_rename_in_the_grace_neither_warns_again_nor_starts_the_grace_again(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    mine, extra = full_server(svc)
    assert not reclaim(svc, [mine, extra], NOW)
    lent = record("lent", 1000, "alice", extra.gpus[0], borrowed=True, id_of="extra")
    assert not reclaim(svc, [mine, lent], NOW + timedelta(minutes=4))
    assert reclaim(svc, [mine, lent], NOW + timedelta(minutes=5))
    assert actions(svc).count("container.reclaim_warning") == 1
    assert actions(svc)[-1] == "container.reclaim"


def test_a_warning_of_a_container_gone_is_forgotten(tmp_path: Path) -> None:
    svc = service(tmp_path)
    records = full_server(svc)
    reclaim(svc, records, NOW)
    reclaim(service(tmp_path), records[:1], NOW + timedelta(minutes=1))
    assert svc.store.warnings("reclaim") == {}


def test_a_reservation_warning_survives_a_restart(tmp_path: Path) -> None:
    svc = service(tmp_path)
    records = full_server(svc)
    gpu0 = records[0].gpus[0]
    reserve(svc, "bob", gpu0, NOW + timedelta(minutes=5))
    running = [replace(records[0], status="running")]
    told: list[str] = []

    def watch_pass(ds01d: Ds01Service, now: datetime) -> dict[str, list[str]]:
        watch = ReservationWatch(ds01d, lambda r, why: None, lambda r, t, why: None)
        return watch.run(running, {1000: "alice"}, now, False, lambda r, o, m: told.append(m))

    assert "warn: reservation r1" in watch_pass(svc, NOW)[running[0].id][0]
    assert watch_pass(service(tmp_path), NOW + timedelta(minutes=1)) == {}
    assert len(told) == 1
    assert actions(svc).count("lifecycle.warn") == 1


def test_a_reservation_of_a_gpu_gone_is_remapped_to_a_free_one_and_says_so(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path)
    free = svc.backend.inventory().devices[0].uuid
    reserve(svc, "bob", "GPU-gone", NOW + timedelta(hours=1))
    watch = ReservationWatch(svc, lambda r, why: None, lambda r, t, why: None)
    assert watch.run([], {}, NOW, False, lambda r, o, m: None) == {}
    [kept_now] = svc.store.reservations()
    assert json.loads(kept_now.devices) == [free]
    events = [json.loads(line) for line in svc.paths.events_file.read_text().splitlines()]
    [remap] = [e for e in events if e["action"] == "reservation.remap"]
    assert (remap["user"], remap["resource"]) == ("ds01d", "reservation/r1")
    assert remap["details"]["devices"] == [free]
    assert remap["details"]["replaced"] == {"GPU-gone": free}
    assert "made" not in remap["details"]


def test_the_lifecycle_loop_waits_only_until_the_next_reservation_step(tmp_path: Path) -> None:
    # Interval 60 s, lead 10 minutes. Without a reservation the loop waits the interval;
    # with bob's starting 10 min 20 s from now, it waits 20 s (the warning), then, once
    # the warning is past, until the start itself when that is under the interval.
    svc = service(tmp_path)
    now = NOW
    loop = LifecycleLoop(svc, cast(Sampler, None), clock=lambda: now)
    assert loop.wait_seconds() == 60.0
    start = NOW + timedelta(minutes=10, seconds=20)
    reserve(svc, "bob", svc.backend.inventory().devices[0].uuid, start)
    assert loop.wait_seconds() == 20.0
    now = start - timedelta(seconds=30)
    assert loop.wait_seconds() == 30.0
    now = start + timedelta(minutes=1)
    assert loop.wait_seconds() == 60.0


def test_store_keeps_warnings_per_kind(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.add_warning("reclaim", "a._.1", "2026-12-07T03:00:00+00:00")
    store.add_warning("reservation", "r1/c1", "2026-12-07T03:01:00+00:00")
    store.add_warning("reclaim", "a._.1", "2026-12-07T03:02:00+00:00")
    store.close()
    reopened = StateStore(tmp_path / "state.db")
    assert reopened.warnings("reclaim") == {"a._.1": "2026-12-07T03:02:00+00:00"}
    reopened.forget_warnings("reclaim", ["a._.1", "unknown"])
    assert reopened.warnings("reclaim") == {}
    assert reopened.warnings("reservation") == {"r1/c1": "2026-12-07T03:01:00+00:00"}


def test_usage_rows_say_whether_borrowed_and_an_older_database_gains_the_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE usage (container_id TEXT NOT NULL, user TEXT NOT NULL, grp TEXT NOT NULL,"
        " gpu_equivalents TEXT NOT NULL, start TEXT NOT NULL, end TEXT,"
        " PRIMARY KEY (container_id, start))"
    )
    old.execute("INSERT INTO usage VALUES ('c1', 'alice', 'phd', '1', '2026-12-01', NULL)")
    old.commit()
    old.close()
    store = StateStore(path)
    store.open_usage(UsageRecord("c2", "alice", "phd", "1", "2026-12-02", borrowed=True))
    rows = {row.container_id: row.borrowed for row in store.usage()}
    assert rows == {"c1": False, "c2": True}


def test_an_older_database_gains_the_reservations_profile_column(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE reservations (id TEXT PRIMARY KEY, holder TEXT, devices TEXT NOT NULL,"
        " gpu_equivalents TEXT NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL,"
        " note TEXT NOT NULL, created_by TEXT NOT NULL, created_at TEXT NOT NULL,"
        " phase TEXT NOT NULL)"
    )
    old.execute(
        "INSERT INTO reservations VALUES ('r0', 'alice', '[\"GPU-0\"]', '1',"
        " '2026-12-08T09:00:00+00:00', '2026-12-08T11:00:00+00:00', '', 'alice',"
        " '2026-12-07T09:00:00+00:00', 'upcoming')"
    )
    old.commit()
    old.close()
    store = StateStore(path)
    mine = Reservation(
        "r1", "bob", ("MIG-1",), NOW + timedelta(hours=1), NOW + timedelta(hours=2),
        Fraction(3, 7), profile="3g.20gb",
    )  # fmt: skip
    store.add_reservation(ReservationRecord.of(mine, NOW.isoformat(), "upcoming"))
    assert store.set_reservation_devices("r1", ["MIG-2"])
    kept = {r.id: r.reservation() for r in store.reservations()}
    assert kept["r0"].profile is None and kept["r0"].devices == ("GPU-0",)
    assert (kept["r1"].profile, kept["r1"].devices) == ("3g.20gb", ("MIG-2",))
