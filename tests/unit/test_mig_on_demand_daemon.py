"""ds01d's ``MigOnDemand`` over the simulated backend and a real state store: slices made
for a decision that picks them, what a crash left adopted, free slices destroyed (never a
held or a baseline one), a destroy refused while a process runs retried and logged once, a
slot's destroy that tells a slice that went from one still busy and one not there. Docker is
not asked: the containers are given as records."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ds01.config.loader import Ds01Config
from ds01.core.allocation import AllocationState, GpuRequest, Placement, place
from ds01.core.mig_on_demand import PLANNED_PREFIX, GpuView
from ds01.daemon.service import Ds01Service
from ds01.gpu.simulated import SimulatedBackend, write_simulated_telemetry
from ds01.model import labels as L
from ds01.runtime.docker import ContainerRecord
from support import NoDocker, offline_service

GPU_CONFIG = """\
backend: simulated
mig_on_demand_keep_seconds: 60
simulated:
  gpus:
    - {model: NVIDIA A100-SXM4-40GB, mig: true, mig_instances: %s}
mig_layout:
  0: {dynamic: [3g.20gb]}
"""
NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


def holder(uuid: str) -> ContainerRecord:
    return ContainerRecord.from_summary(
        {
            "Id": "c" * 64,
            "Names": ["/nb._.1000"],
            "State": "running",
            "Labels": {
                L.MANAGED: "true",
                L.USER: "alice",
                L.UID: "1000",
                L.NAME: "nb",
                L.GPUS: uuid,
                L.GPU_EQUIVALENTS: "1/7",
            },
        }
    )


class NoContainers(NoDocker):
    """A Docker engine with no container of ds01's, asked nothing else."""

    def list_managed(self) -> list[ContainerRecord]:
        return []


def service(
    tmp_path: Path, instances: str, docker: NoDocker | None = None
) -> tuple[Ds01Service, Path]:
    telemetry = tmp_path / "telemetry.json"

    def backend(config: Ds01Config) -> SimulatedBackend:
        return SimulatedBackend(
            config.gpus, telemetry_file=telemetry, mig_file=tmp_path / "mig.json"
        )

    config = {"gpu-config.yaml": GPU_CONFIG % instances}
    return offline_service(tmp_path, docker, config=config, backend_factory=backend), telemetry


def profiles(svc: Ds01Service) -> list[tuple[str | None, int | None]]:
    return sorted((d.profile, d.start) for d in svc.backend.inventory().devices)


def test_a_slice_is_made_only_for_a_decision_that_picks_it_and_recorded(tmp_path: Path) -> None:
    svc, _ = service(tmp_path, "[{profile: 3g.20gb, start: 0}]")
    mig = svc.mig_on_demand
    inventory = svc.backend.inventory()

    planned = mig.planned_for(("1g.5gb",), inventory, ())
    [new] = [d for d in planned.devices if d.uuid.startswith(PLANNED_PREFIX)]
    assert (new.profile, new.start) == ("1g.5gb", 6)
    # A decision that does not pick it makes nothing.
    assert mig.materialize(Placement(), planned, "alice") == (Placement(), planned)
    assert profiles(svc) == [("3g.20gb", 0)]

    chosen = place(GpuRequest(mig_profiles=("1g.5gb",)), planned, AllocationState())
    real, after = mig.materialize(chosen, planned, "alice")

    [made] = real.devices
    assert not made.uuid.startswith(PLANNED_PREFIX) and made.uuid in after.by_uuid()
    assert profiles(svc) == [("1g.5gb", 6), ("3g.20gb", 0)]
    assert set(svc.store.on_demand_slices()) == {made.uuid}


def test_reclaim_adopts_keeps_held_and_baseline_retries_a_busy_destroy_then_restores(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The 3g.20gb at 0 is the baseline; the two 1g.5gb are unrecorded (a crash): adopted.
    svc, telemetry = service(
        tmp_path,
        "[{profile: 3g.20gb, start: 0}, {profile: 1g.5gb, start: 4}, {profile: 1g.5gb, start: 5}]",
    )
    mig = svc.mig_on_demand
    by_start = {d.start: d.uuid for d in svc.backend.inventory().devices}
    held = [holder(by_start[4])]

    assert not mig.reclaim(held, NOW)  # adopted, free from now: kept for 60 s
    assert set(svc.store.on_demand_slices()) == {by_start[4], by_start[5]}
    write_simulated_telemetry(telemetry, {by_start[5]: {"process_count": 2}})
    with caplog.at_level(logging.WARNING):
        for later in (61, 62):
            assert not mig.reclaim(held, NOW + timedelta(seconds=later))
    assert sum("In use by another client" in r.message for r in caplog.records) == 1
    assert len(profiles(svc)) == 3

    write_simulated_telemetry(telemetry, {})
    assert mig.reclaim(held, NOW + timedelta(seconds=63))
    assert profiles(svc) == [("1g.5gb", 4), ("3g.20gb", 0)]  # the held one stays

    # Once its holder is gone and the keep time passed, it goes too; nothing to restore.
    mig.reclaim([], NOW + timedelta(seconds=64))
    assert mig.reclaim([], NOW + timedelta(seconds=200))
    assert profiles(svc) == [("3g.20gb", 0)]
    assert svc.store.on_demand_slices() == {}


def test_a_dynamic_gpu_with_nothing_made_on_demand_gets_its_baseline_back(tmp_path: Path) -> None:
    svc, _ = service(tmp_path, "[]")

    assert not svc.mig_on_demand.reclaim([], NOW)

    assert profiles(svc) == [("3g.20gb", 0)]
    assert svc.store.on_demand_slices() == {}  # the admin's, never destroyed


def test_a_slice_made_on_demand_that_a_reservation_keeps_is_not_destroyed(
    tmp_path: Path,
) -> None:
    from ds01.core.reservations import Reservation
    from ds01.runtime.store import ReservationRecord

    svc, _ = service(tmp_path, "[{profile: 3g.20gb, start: 0}, {profile: 1g.5gb, start: 4}]")
    mig = svc.mig_on_demand
    by_start = {d.start: d.uuid for d in svc.backend.inventory().devices}
    kept = Reservation(
        "r1", "alice", (by_start[4],), NOW + timedelta(hours=1), NOW + timedelta(hours=3),
        profile="1g.5gb",
    )  # fmt: skip
    svc.store.add_reservation(ReservationRecord.of(kept, NOW.isoformat(), "upcoming"))
    mig.reclaim([], NOW)  # adopted (not the baseline), but kept for the reservation
    assert not mig.reclaim([], NOW + timedelta(minutes=30))
    assert profiles(svc) == [("1g.5gb", 4), ("3g.20gb", 0)]
    # Once the reservation has ended it is a free slice like any other.
    mig.reclaim([], NOW + timedelta(hours=3))
    assert mig.reclaim([], NOW + timedelta(hours=4))
    assert profiles(svc) == [("3g.20gb", 0)]


def test_no_slice_is_planned_over_a_slot_for_a_container_that_could_run_into_its_start(
    tmp_path: Path,
) -> None:
    from ds01.core.reservations import Reservation
    from ds01.daemon.reservations import slots_in_the_way
    from ds01.runtime.identity import UnixUser
    from ds01.runtime.store import ReservationRecord

    # The baseline 3g.20gb sits at memory slice 0; bob's 3g.20gb reservation in an hour keeps
    # a slot at 4. alice's new container (by its runtime limit, it could still run then) gets
    # no 1g.5gb there, so none at all; without the reservation it would get one at 6.
    svc, _ = service(tmp_path, "[{profile: 3g.20gb, start: 0}]")
    mig = svc.mig_on_demand
    inventory = svc.backend.inventory()
    [gpu] = inventory.gpus
    start = svc.now() + timedelta(hours=1)
    slot = Reservation(
        "r1", "bob", (f"MIG-slot-{gpu.uuid}-4",), start, start + timedelta(hours=2),
        profile="3g.20gb",
    )  # fmt: skip
    alice = UnixUser("alice", 1000, 1000, Path("/home/alice"), ("alice",))
    def views() -> list[GpuView]:
        return mig.views(inventory, ())

    assert slots_in_the_way(svc, alice, "nb", None, views) == ({}, frozenset())
    svc.store.add_reservation(ReservationRecord.of(slot, svc.now().isoformat(), "upcoming"))

    keep_out, in_way = slots_in_the_way(svc, alice, "nb", None, views)
    assert [(s.profile, s.start) for s in keep_out[gpu.uuid]] == [("3g.20gb", 4)]
    assert in_way == frozenset()
    planned = mig.planned_for(("1g.5gb",), inventory, (), keep_out)
    assert not any(d.uuid.startswith(PLANNED_PREFIX) for d in planned.devices)
    # bob, the holder, is not kept out of his own slot.
    bob = UnixUser("bob", 1001, 1001, Path("/home/bob"), ("bob",))
    assert slots_in_the_way(svc, bob, "nb", None, views) == ({}, frozenset())


def test_a_slot_whose_place_holds_a_busy_slice_gets_its_slice_elsewhere_at_its_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A 1g.5gb made on demand sits at 4, where bob's 2g.10gb slot is; a process still runs
    # on it at the slot's start, so it refuses to go: the slot's slice is made at 0 instead,
    # and the reservation keeps it.
    svc, telemetry = service(tmp_path, "[{profile: 1g.5gb, start: 4}]", NoContainers())
    [busy] = svc.backend.inventory().devices
    svc.mig_on_demand.reclaim([holder(busy.uuid)], NOW)  # adopted: made on demand
    write_simulated_telemetry(telemetry, {busy.uuid: {"process_count": 1}})

    with caplog.at_level(logging.INFO):
        assert start_slots(svc, "2g.10gb", 4) == [0]

    assert any("stays (busy)" in r.getMessage() for r in caplog.records), caplog.text
    assert profiles(svc) == [("1g.5gb", 4), ("2g.10gb", 0)]


def start_slots(svc: Ds01Service, profile: str, *places: int) -> list[int | None]:
    """bob's reservation of slots of ``profile`` at ``places`` on the GPU, in force since a
    minute ago: one pass of the reservations' watch at its start, and where the slices it
    then keeps are."""
    from ds01.core.reservations import Reservation
    from ds01.daemon.reservations import ReservationWatch, kept
    from ds01.runtime.store import ReservationRecord

    [gpu] = svc.backend.inventory().gpus
    now = svc.now()
    slots = tuple(f"MIG-slot-{gpu.uuid}-{place}" for place in places)
    reservation = Reservation(
        "r1", "bob", slots, now - timedelta(minutes=1), now + timedelta(hours=2),
        profile=profile,
    )  # fmt: skip
    svc.store.add_reservation(ReservationRecord.of(reservation, now.isoformat(), "active"))
    watch = ReservationWatch(
        svc, stop=lambda r, why: None, release=lambda r, at, why: None,
        slices=svc.mig_on_demand,
    )  # fmt: skip
    watch.run([], {}, now, dry_run=False, tell=lambda *a: None)
    [kept_now] = kept(svc)
    made = {d.uuid: d for d in svc.backend.inventory().devices}
    return [made[u].start for u in kept_now.devices]


def test_one_free_slice_over_two_slots_places_clears_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A free 2g.10gb made on demand at 0 lies over both places of bob's two 1g.5gb slots (0
    # and 1): destroyed for the first, it is not there for the second, whose place is then
    # clear too: each slot gets its slice at its own place.
    svc, _ = service(tmp_path, "[{profile: 2g.10gb, start: 0}]", NoContainers())
    svc.mig_on_demand.reclaim([], NOW)  # adopted: made on demand
    caplog.clear()  # the adoption's warning

    with caplog.at_level(logging.WARNING):
        assert start_slots(svc, "1g.5gb", 0, 1) == [0, 1]

    assert not caplog.records, "a slice already gone was destroyed again"
    assert profiles(svc) == [("1g.5gb", 0), ("1g.5gb", 1)]
    events = [json.loads(line) for line in svc.paths.events_file.read_text().splitlines()]
    [remap] = [e for e in events if e["action"] == "reservation.remap"]
    assert (remap["user"], remap["resource"]) == ("ds01d", "reservation/r1")
    details = remap["details"]
    made = [d.uuid for d in sorted(svc.backend.inventory().devices, key=lambda d: d.start or 0)]
    [gpu] = svc.backend.inventory().gpus
    slots = [f"MIG-slot-{gpu.uuid}-{place}" for place in (0, 1)]
    assert details["devices"] == made and details["made"] is True
    assert details["replaced"] == dict(zip(slots, made, strict=True))


def test_a_destroy_for_a_slot_says_whether_the_slice_went_stayed_busy_or_was_not_there(
    tmp_path: Path,
) -> None:
    from ds01.daemon.reservations import SliceDestroy

    svc, telemetry = service(
        tmp_path, "[{profile: 1g.5gb, start: 4}, {profile: 1g.5gb, start: 5}]", NoContainers()
    )
    mig = svc.mig_on_demand
    mig.reclaim([], NOW)  # both adopted: made on demand
    by_start = {d.start: d.uuid for d in svc.backend.inventory().devices}
    write_simulated_telemetry(telemetry, {by_start[4]: {"process_count": 1}})
    inventory = svc.backend.inventory()

    assert mig.destroy_for_reservation(by_start[4], inventory) is SliceDestroy.REFUSED
    assert mig.destroy_for_reservation(by_start[5], inventory) is SliceDestroy.DESTROYED
    assert mig.destroy_for_reservation(by_start[5], svc.backend.inventory()) is SliceDestroy.GONE
    assert profiles(svc) == [("1g.5gb", 4)]
    assert set(svc.store.on_demand_slices()) == {by_start[4]}
