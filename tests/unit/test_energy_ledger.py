"""GPU energy: counter deltas, attribution to holders, the ledger in SQLite and the meter
that fills it from the simulated backend's counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.config.gpu_config import GpuConfig
from ds01.config.images import ImagesConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import Ds01Config
from ds01.core.energy import (
    DeviceHolder,
    attribute_energy,
    co2_grams,
    counter_delta,
    kwh,
)
from ds01.daemon.energy import EnergyMeter
from ds01.errors import DockerUnavailable
from ds01.gpu.simulated import SimulatedBackend, write_simulated_telemetry
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.store import EnergyRecord, StateStore

T0 = datetime(2026, 11, 28, 14, 0, 0, tzinfo=timezone.utc)


def record(
    cid: str, user: str, group: str, gpus: tuple[str, ...], equivalents: Fraction = Fraction(1)
) -> ContainerRecord:
    return ContainerRecord(
        id=cid,
        docker_name=f"{cid}._.1000",
        name=cid,
        user=user,
        uid=1000,
        group=group,
        status="running",
        image="busybox",
        gpus=gpus,
        gpu_equivalents=equivalents if gpus else Fraction(0),
        created_at=T0.isoformat(),
        request_id="",
        labels={},
    )


# --- pure: deltas, shares, units -------------------------------------------------------------


def test_a_growing_counter_gives_the_difference() -> None:
    assert counter_delta(1000.0, 1250.5) == 250.5


def test_a_counter_that_dropped_restarted_and_gives_its_new_value() -> None:
    assert counter_delta(5_000_000.0, 120.0) == 120.0


@given(st.floats(0, 1e15), st.floats(0, 1e15))
def test_energy_from_a_counter_is_never_negative(previous: float, current: float) -> None:
    assert counter_delta(previous, current) >= 0


def test_kwh_and_co2() -> None:
    assert kwh(3_600_000) == 1.0
    assert co2_grams(7_200_000, 400) == 800.0


@pytest.fixture
def backend(tmp_path: Path) -> SimulatedBackend:
    """The default simulated inventory: GPUs 0-2 whole, GPU 3 split 3g+2g+1g+1g."""
    return SimulatedBackend(GpuConfig(), telemetry_file=tmp_path / "telemetry.json")


def test_a_whole_gpu_goes_to_its_holder_and_mig_instances_by_their_share(
    backend: SimulatedBackend,
) -> None:
    inventory = backend.inventory()
    gpu0, gpu3 = inventory.gpus[0].uuid, inventory.gpus[3].uuid
    three_g, one_g = inventory.devices[3], inventory.devices[5]  # 3g.20gb, 1g.5gb on GPU 3
    holders = [
        DeviceHolder("a", "alice", "phd", gpu0),
        DeviceHolder("b", "bob", "msc", three_g.uuid),
        DeviceHolder("c", "carol", "phd", one_g.uuid),
    ]

    shares = attribute_energy({gpu0: 700.0, gpu3: 700.0}, holders, inventory.by_uuid())

    assert [(s.holder.user, s.gpu_uuid, s.joules) for s in shares] == [
        ("alice", gpu0, 700.0),
        ("bob", gpu3, 300.0),  # 3/7 of the board
        ("carol", gpu3, 100.0),  # 1/7; the free 3/7 go to nobody
    ]


def test_free_gpus_unknown_devices_and_unread_gpus_give_nothing(
    backend: SimulatedBackend,
) -> None:
    inventory = backend.inventory()
    gpu0, gpu1 = inventory.gpus[0].uuid, inventory.gpus[1].uuid
    holders = [
        DeviceHolder("a", "alice", "phd", gpu1),  # GPU 1 was not read
        DeviceHolder("x", "xavier", "phd", "GPU-gone"),
    ]

    assert attribute_energy({gpu0: 500.0}, holders, inventory.by_uuid()) == []


# --- the ledger in SQLite ------------------------------------------------------------------


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat(timespec="seconds")


def energy(cid: str, device: str, start: float, end: float, joules: float) -> EnergyRecord:
    return EnergyRecord(cid, "alice", "phd", device, at(start), at(end), joules)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "ds01.db")


def test_energy_between_returns_records_overlapping_the_range(store: StateStore) -> None:
    early, middle, late = (
        energy("a", "GPU-1", 0, 10, 1.0),
        energy("a", "GPU-1", 10, 20, 2.0),
        energy("b", "GPU-2", 20, 30, 3.0),
    )
    store.add_energy([late, early, middle])

    assert store.energy_between(at(5), at(20)) == [early, middle]
    assert store.energy_between(at(20), at(60)) == [late]  # [start, end): 20 is not in middle
    assert store.energy_between(at(30), at(60)) == []


def test_energy_totals_by_user_and_group(store: StateStore) -> None:
    store.add_energy([energy("a", "GPU-1", 0, 1, 10.0), energy("a", "GPU-2", 0, 1, 5.0)])
    store.add_energy([EnergyRecord("b", "bob", "msc", "GPU-3", at(0), at(1), 7.0)])

    assert store.energy_totals() == {("alice", "phd"): 15.0, ("bob", "msc"): 7.0}


def test_merged_records_continue_a_row_within_its_hour(store: StateStore) -> None:
    for minute in range(0, 70, 10):  # 14:00 ... 15:10 in steps of 10 minutes
        store.add_energy([energy("a", "GPU-1", minute, minute + 10, 1.0)], merge=True)

    rows = store.energy_between(at(0), at(120))

    # A row grows while the records it takes end in the hour it started in: the record
    # ending at 15:00 starts a row of its own, and so does the next (that row started at
    # 14:50). No energy is lost, and no row spans much more than an hour.
    assert [(r.start, r.end, r.joules) for r in rows] == [
        (at(0), at(50), 5.0),
        (at(50), at(60), 1.0),
        (at(60), at(70), 1.0),
    ]


def test_merging_never_joins_other_containers_or_devices(store: StateStore) -> None:
    store.add_energy([energy("a", "GPU-1", 0, 1, 1.0)], merge=True)
    store.add_energy([energy("b", "GPU-1", 1, 2, 1.0), energy("a", "GPU-2", 1, 2, 1.0)], merge=True)

    assert len(store.energy_between(at(0), at(2))) == 3


# --- the meter ------------------------------------------------------------------------------


@dataclass
class FakeService:
    """What the meter reads of ``Ds01Service``: backend, records, store, config."""

    backend: SimulatedBackend
    store: StateStore
    holders: list[ContainerRecord] = field(default_factory=list)
    docker_down: bool = False

    def records(self) -> list[ContainerRecord]:
        if self.docker_down:
            raise DockerUnavailable("Docker is not answering")
        return list(self.holders)

    def config(self) -> Ds01Config:
        return Ds01Config(ResourceLimitsConfig(), self.backend.config, ImagesConfig())


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def drive(backend: SimulatedBackend, **joules_by_gpu_index: float) -> None:
    """Set GPU N's energy counter (``gpu0=…``) in the simulated backend's telemetry file."""
    gpus = backend.inventory().gpus
    assert backend.telemetry_file is not None
    write_simulated_telemetry(
        backend.telemetry_file,
        {gpus[int(k[3:])].uuid: {"energy_joules": v} for k, v in joules_by_gpu_index.items()},
    )


def test_the_first_pass_takes_the_baseline_and_the_next_records_the_difference(
    backend: SimulatedBackend, store: StateStore, clock: Clock
) -> None:
    gpu0 = backend.inventory().gpus[0].uuid
    service = FakeService(backend, store, [record("c1", "alice", "phd", (gpu0,))])
    meter = EnergyMeter(service, clock=clock)  # type: ignore[arg-type]
    drive(backend, gpu0=10_000.0)

    assert meter.run_pass() == []
    clock.advance(30)
    drive(backend, gpu0=13_000.0)
    written = meter.run_pass()

    expected = EnergyRecord("c1", "alice", "phd", gpu0, at(0), at(0.5), 3000.0)
    assert written == [expected]
    assert store.energy_between(at(0), at(1)) == [expected]
    assert meter.totals() == {("alice", "phd"): 3000.0}


def test_a_driver_reload_never_gives_negative_energy(
    backend: SimulatedBackend, store: StateStore, clock: Clock
) -> None:
    gpu0 = backend.inventory().gpus[0].uuid
    service = FakeService(backend, store, [record("c1", "alice", "phd", (gpu0,))])
    meter = EnergyMeter(service, clock=clock)  # type: ignore[arg-type]
    for joules in (5_000_000.0, 5_000_600.0, 400.0, 1000.0):  # reload after the second
        drive(backend, gpu0=joules)
        meter.run_pass()
        clock.advance(30)

    assert meter.totals() == {("alice", "phd"): 600.0 + 400.0 + 600.0}
    assert all(r.joules > 0 for r in store.energy_between(at(0), at(10)))


def test_energy_is_split_among_the_holders_of_mig_instances(
    backend: SimulatedBackend, store: StateStore, clock: Clock
) -> None:
    inventory = backend.inventory()
    three_g, two_g = inventory.devices[3], inventory.devices[4]
    service = FakeService(
        backend,
        store,
        [
            record("c1", "alice", "phd", (three_g.uuid,), Fraction(3, 7)),
            record("c2", "bob", "msc", (two_g.uuid,), Fraction(2, 7)),
        ],
    )
    meter = EnergyMeter(service, clock=clock)  # type: ignore[arg-type]
    drive(backend, gpu3=0.0)
    meter.run_pass()
    clock.advance(60)
    drive(backend, gpu3=7000.0)
    meter.run_pass()

    assert meter.totals() == {("alice", "phd"): 3000.0, ("bob", "msc"): 2000.0}


def test_energy_while_docker_is_down_is_recorded_by_the_next_pass(
    backend: SimulatedBackend, store: StateStore, clock: Clock
) -> None:
    gpu0 = backend.inventory().gpus[0].uuid
    service = FakeService(backend, store, [record("c1", "alice", "phd", (gpu0,))])
    meter = EnergyMeter(service, clock=clock)  # type: ignore[arg-type]
    drive(backend, gpu0=0.0)
    meter.run_pass()
    service.docker_down = True
    clock.advance(30)
    drive(backend, gpu0=100.0)
    with pytest.raises(DockerUnavailable):
        meter.run_pass()
    service.docker_down = False
    clock.advance(30)
    drive(backend, gpu0=250.0)
    meter.run_pass()

    assert [(r.start, r.end, r.joules) for r in store.energy_between(at(0), at(5))] == [
        (at(0), at(1), 250.0)
    ]


def test_a_gpu_that_could_not_be_read_starts_a_new_baseline(
    backend: SimulatedBackend, store: StateStore, clock: Clock
) -> None:
    gpu0 = backend.inventory().gpus[0].uuid
    service = FakeService(backend, store, [record("c1", "alice", "phd", (gpu0,))])
    meter = EnergyMeter(service, clock=clock)  # type: ignore[arg-type]
    for joules in (0.0, None, 500.0, 800.0):
        if joules is None:
            drive(backend)  # no counter this time
        else:
            drive(backend, gpu0=joules)
        meter.run_pass()
        clock.advance(30)

    assert meter.totals() == {("alice", "phd"): 300.0}  # nothing stretched over the gap


def test_totals_start_from_the_ledger_of_earlier_runs(
    backend: SimulatedBackend, store: StateStore, clock: Clock
) -> None:
    store.add_energy([EnergyRecord("old", "alice", "phd", "GPU-x", at(-60), at(-30), 1000.0)])
    gpu0 = backend.inventory().gpus[0].uuid
    service = FakeService(backend, store, [record("c1", "alice", "phd", (gpu0,))])
    meter = EnergyMeter(service, clock=clock)  # type: ignore[arg-type]
    assert meter.totals() == {("alice", "phd"): 1000.0}
    drive(backend, gpu0=0.0)
    meter.run_pass()
    clock.advance(30)
    drive(backend, gpu0=50.0)
    meter.run_pass()

    assert meter.totals() == {("alice", "phd"): 1050.0} == store.energy_totals()
