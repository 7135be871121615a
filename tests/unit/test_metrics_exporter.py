"""The Prometheus exporter without Docker: the families of a built snapshot, the counters fed
by events, one snapshot per scrape from a stand-in service, the HTTP endpoint on loopback,
and energy turned into kWh and CO₂ from the simulated backend's counters."""

from __future__ import annotations

import select
import socket
import threading
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ds01.config.gpu_config import GpuConfig
from ds01.config.images import ImagesConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import Ds01Config
from ds01.core.gpu_use import UnmanagedUse
from ds01.core.reservations import Reservation
from ds01.daemon.energy import EnergyMeter
from ds01.errors import DockerUnavailable, InvalidInput, PermissionDenied
from ds01.events.log import Event, EventLog
from ds01.gpu.backend import DeviceTelemetry
from ds01.gpu.simulated import SimulatedBackend, write_simulated_telemetry
from ds01.metrics.activity import LIFECYCLE_ACTIONS, ActivityCounters, WaitHistogram
from ds01.metrics.collector import Ds01Collector, families
from ds01.metrics.exporter import ListenAddress, MetricsExporter, parse_listen
from ds01.metrics.snapshot import Snapshotter
from ds01.model import labels as L
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser
from ds01.runtime.store import QueuedRequest, ReservationRecord, StateStore

T0 = datetime(2026, 11, 28, 14, 0, 0, tzinfo=timezone.utc)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(registry_or_families: Any) -> Samples:
    """Every sample of an exposition, by (name, labels)."""
    if isinstance(registry_or_families, CollectorRegistry):
        text = generate_latest(registry_or_families).decode()
    else:
        registry = CollectorRegistry()

        class Fixed:
            def collect(self) -> Any:
                return registry_or_families

        registry.register(Fixed())  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


def record(
    cid: str,
    user: str,
    uid: int,
    group: str,
    gpus: tuple[str, ...] = (),
    equivalents: Fraction = Fraction(0),
    status: str = "running",
    memory: str | None = "1073741824",
) -> ContainerRecord:
    labels = {} if memory is None else {L.MEMORY_BYTES: memory}
    return ContainerRecord(
        id=cid,
        docker_name=f"{cid}._.{uid}",
        name=cid,
        user=user,
        uid=uid,
        group=group,
        status=status,
        image="busybox",
        gpus=gpus,
        gpu_equivalents=equivalents,
        created_at=T0.isoformat(),
        request_id="",
        labels=labels,
    )


# --- a stand-in for the daemon's service -----------------------------------------------------


class CountingBackend(SimulatedBackend):
    """The simulated backend, counting its calls."""

    calls: int = 0

    def utilization(self, uuids: Collection[str]) -> dict[str, DeviceTelemetry]:
        self.calls += 1
        return super().utilization(uuids)


@dataclass
class Source:
    """What the snapshot reads of ``Ds01Service``."""

    backend: CountingBackend
    store: StateStore
    events: EventLog
    containers: list[ContainerRecord]
    limits: ResourceLimitsConfig
    lifecycle_last_pass: datetime | None = None
    unmanaged_gpu_use: tuple[UnmanagedUse, ...] = ()
    list_calls: int = 0
    docker_down: bool = False
    _config: Ds01Config | None = field(default=None, repr=False)

    def observed_records(self) -> list[ContainerRecord]:
        self.list_calls += 1
        if self.docker_down:
            raise DockerUnavailable("Docker is not answering")
        return list(self.containers)

    records = observed_records  # what the energy meter lists (fresh, in ds01d)

    def config(self) -> Ds01Config:
        if self._config is None or self._config.limits is not self.limits:
            self._config = Ds01Config(self.limits, self.backend.config, ImagesConfig())
        return self._config

    def now(self) -> datetime:
        return T0


LIMITS = ResourceLimitsConfig.model_validate(
    {
        "defaults": {"gpu_limit": 2, "max_containers": 4},
        "groups": {"phd": {"members": ["alice"], "gpu_limit": 4}},
        "aggregate": {"defaults": {"memory_limit": "4G"}},
    }
)
USERS = {
    1001: UnixUser("alice", 1001, 1001, Path("/home/alice"), ("alice",)),
    1002: UnixUser("bob", 1002, 1002, Path("/home/bob"), ("bob",)),
}


@pytest.fixture
def source(tmp_path: Path) -> Source:
    config = GpuConfig.model_validate({"energy": {"grid_intensity_g_per_kwh": 250}})
    backend = CountingBackend(config, telemetry_file=tmp_path / "telemetry.json")
    return Source(
        backend=backend,
        store=StateStore(tmp_path / "ds01.db"),
        events=EventLog(tmp_path / "log" / "events.jsonl"),
        containers=[],
        limits=LIMITS,
    )


class Lookups:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, uid: int) -> UnixUser:
        self.calls.append(uid)
        if uid not in USERS:
            raise PermissionDenied(f"uid {uid} has no user account")
        return USERS[uid]


def snapshotter(source: Source, lookups: Lookups | None = None, **kwargs: Any) -> Snapshotter:
    activity = kwargs.pop("activity", ActivityCounters())
    return Snapshotter(
        source,  # type: ignore[arg-type]
        activity,
        kwargs.pop("energy_totals", source.store.energy_totals),
        user_lookup=lookups or Lookups(),
        **kwargs,
    )


def gpus(source: Source) -> list[str]:
    return [g.uuid for g in source.backend.inventory().gpus]


# --- families of a snapshot ------------------------------------------------------------------


def test_allocations_holders_and_containers_per_user_and_group(source: Source) -> None:
    g0, g1, g2, _ = gpus(source)
    source.containers = [
        record("train", "alice", 1001, "phd", (g0, g1), Fraction(2)),
        record("notebook", "alice", 1001, "phd", status="stopped"),
        record("thesis", "bob", 1002, "msc", (g2,), Fraction(1), status="created"),
    ]

    found = samples(families(snapshotter(source).take()))

    assert value(found, "ds01_gpu_equivalents_allocated", user="alice", group="phd") == 2.0
    assert value(found, "ds01_gpu_equivalents_allocated", user="bob", group="msc") == 1.0
    assert value(found, "ds01_gpu_equivalents_total") == 4.0
    holder = {"user": "alice", "group": "phd", "container": ""}
    assert value(found, "ds01_device_holder", uuid=g1, **holder) == 1
    assert value(found, "ds01_containers", state="running") == 1
    assert value(found, "ds01_containers", state="stopped") == 1
    assert value(found, "ds01_containers", state="created") == 1
    assert value(found, "ds01_containers", state="paused") == 0
    assert value(found, "ds01_user_containers", user="alice", group="phd") == 2
    assert value(found, "ds01_user_containers", user="bob", group="msc") == 1


def test_borrowed_gpu_equivalents_per_user_only_for_borrowers(source: Source) -> None:
    g0, g1, g2, _ = gpus(source)
    extra = record("extra", "alice", 1001, "phd", (g1, g2), Fraction(2))
    source.containers = [
        record("train", "alice", 1001, "phd", (g0,), Fraction(1)),
        replace(extra, labels={**extra.labels, L.BORROWED: "true"}),
    ]
    found = samples(families(snapshotter(source).take()))
    assert value(found, "ds01_gpu_equivalents_allocated", user="alice", group="phd") == 3.0
    assert value(found, "ds01_borrowed_gpu_equivalents", user="alice", group="phd") == 2.0
    source.containers = source.containers[:1]
    found = samples(families(snapshotter(source).take()))
    assert not [key for key in found if key[0] == "ds01_borrowed_gpu_equivalents"]


def test_holders_name_their_containers_only_when_asked_to(source: Source) -> None:
    g0, *_ = gpus(source)
    source.containers = [record("secret-thesis", "alice", 1001, "phd", (g0,), Fraction(1))]

    hidden = samples(families(snapshotter(source).take()))
    named = samples(families(snapshotter(source, container_names=True).take()))

    assert "secret-thesis" not in repr(hidden)
    holder = {"uuid": g0, "user": "alice", "group": "phd"}
    assert value(hidden, "ds01_device_holder", **holder, container="") == 1
    assert value(named, "ds01_device_holder", **holder, container="secret-thesis") == 1


def test_device_info_for_whole_gpus_and_mig_instances(source: Source) -> None:
    found = samples(families(snapshotter(source).take()))

    device_info = [labels for name, labels in found if name == "ds01_device_info"]
    assert len(device_info) == 7  # 3 whole GPUs + 4 MIG instances
    mig = [dict(labels) for labels in device_info if ("kind", "mig") in labels]
    assert sorted(d["profile"] for d in mig) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    assert {d["gpu_index"] for d in mig} == {"3"}
    three_g = source.backend.inventory().devices[3].uuid
    assert value(found, "ds01_device_gpu_equivalents", uuid=three_g) == pytest.approx(3 / 7)


def test_unmanaged_processes_are_counted_per_device_zero_elsewhere(source: Source) -> None:
    g0, g1, *_ = gpus(source)
    source.unmanaged_gpu_use = (
        UnmanagedUse(g1, 10, "carol", "host"),
        UnmanagedUse(g1, 11, "alice", "not-held", "a" * 64, "train", "alice"),
    )

    found = samples(families(snapshotter(source).take()))

    assert value(found, "ds01_gpu_unmanaged_processes", gpu=g1) == 2
    assert value(found, "ds01_gpu_unmanaged_processes", gpu=g0) == 0


def test_telemetry_per_device_and_power_and_energy_per_board(source: Source) -> None:
    g0, g1, _, g3 = gpus(source)
    three_g = source.backend.inventory().devices[3].uuid
    assert source.backend.telemetry_file is not None
    write_simulated_telemetry(
        source.backend.telemetry_file,
        {
            g0: {"gpu_util_percent": 37, "memory_used_mib": 1024, "power_watts": 250.5},
            g1: {"gpu_util_percent": None},
            g3: {"power_watts": 90, "energy_joules": 5e6},
        },
    )

    found = samples(families(snapshotter(source).take()))

    assert value(found, "ds01_device_utilization_percent", uuid=g0) == 37
    assert value(found, "ds01_device_memory_used_bytes", uuid=g0) == 1024 * 1024**2
    assert value(found, "ds01_device_memory_total_bytes", uuid=g0) == 40960 * 1024**2
    assert value(found, "ds01_device_power_watts", uuid=g0) == 250.5
    assert value(found, "ds01_device_power_watts", uuid=g3) == 90
    assert value(found, "ds01_device_energy_joules_total", uuid=g3) == 5e6
    # Unknown is absent, never 0: GPU 1's utilisation, a MIG instance's, GPU 1's power.
    assert ("ds01_device_utilization_percent", frozenset({("uuid", g1)})) not in found
    assert ("ds01_device_utilization_percent", frozenset({("uuid", three_g)})) not in found
    assert ("ds01_device_power_watts", frozenset({("uuid", g1)})) not in found
    assert value(found, "ds01_device_memory_total_bytes", uuid=three_g) == 20480 * 1024**2


def test_quota_ratios_against_resolved_limits(source: Source) -> None:
    g0, g1, g2, _ = gpus(source)
    source.containers = [
        record("train", "alice", 1001, "phd", (g0, g1), Fraction(2)),  # phd: gpu_limit 4
        record("thesis", "bob", 1002, "msc", (g2,), Fraction(1)),  # defaults: gpu_limit 2
        record("big", "bob", 1002, "msc", memory=""),  # no memory limit: the whole total
        record("old", "bob", 1002, "msc", status="stopped"),  # stopped: commits no memory
    ]

    found = samples(families(snapshotter(source).take()))

    assert value(found, "ds01_quota_use_ratio", user="alice", resource="gpu_equivalents") == 0.5
    assert value(found, "ds01_quota_use_ratio", user="bob", resource="gpu_equivalents") == 0.5
    assert value(found, "ds01_quota_use_ratio", user="bob", resource="containers") == 0.75
    assert value(found, "ds01_quota_use_ratio", user="alice", resource="memory") == 0.25
    assert value(found, "ds01_quota_use_ratio", user="bob", resource="memory") == 1.25


def test_limits_are_resolved_once_per_user_and_configuration(source: Source) -> None:
    source.containers = [
        record(f"c{n}", "alice" if n % 2 else "bob", 1001 if n % 2 else 1002, "phd")
        for n in range(40)
    ] + [record("orphan", "ghost", 4242, "phd")]
    lookups = Lookups()
    taker = snapshotter(source, lookups)

    taker.take()
    taker.take()
    assert sorted(lookups.calls) == [1001, 1002, 4242]  # the unknown uid is cached too

    source.limits = LIMITS.model_copy(deep=True)  # a reloaded configuration
    taker.take()
    assert len(lookups.calls) == 6


def test_one_docker_list_and_one_telemetry_call_per_scrape(source: Source) -> None:
    g0 = gpus(source)[0]
    source.containers = [
        record(f"c{n}", "alice", 1001, "phd", (g0,) if n == 0 else ()) for n in range(300)
    ]
    taker = snapshotter(source)

    found = samples(families(taker.take()))

    assert (source.list_calls, source.backend.calls) == (1, 1)
    assert value(found, "ds01_containers", state="running") == 300


def test_without_docker_container_figures_are_absent_not_zero(source: Source) -> None:
    source.docker_down = True

    found = samples(families(snapshotter(source).take()))

    assert "ds01_gpu_equivalents_allocated" not in names(found)
    assert "ds01_containers" not in names(found)
    assert "ds01_user_containers" not in names(found)
    assert value(found, "ds01_gpu_equivalents_total") == 4.0  # what does not need Docker


def test_queue_length_and_oldest_wait(source: Source) -> None:
    for n, minutes_ago in enumerate((5, 30)):
        source.store.add_queued(
            QueuedRequest(
                id=f"q{n}",
                user="alice",
                uid=1001,
                group="phd",
                kind="create",
                container=f"c{n}",
                request_json="{}",
                whole_gpus=1,
                mig="",
                submitted_at=(T0 - timedelta(minutes=minutes_ago)).isoformat(),
            )
        )

    found = samples(families(snapshotter(source).take()))

    assert value(found, "ds01_queue_length") == 2
    assert value(found, "ds01_queue_oldest_wait_seconds") == 1800


def test_an_empty_queue_has_waited_zero(source: Source) -> None:
    found = samples(families(snapshotter(source).take()))

    assert value(found, "ds01_queue_length") == 0
    assert value(found, "ds01_queue_oldest_wait_seconds") == 0


def test_reservations_by_phase_and_the_devices_kept(source: Source) -> None:
    g0, g1, _, _ = gpus(source)
    windows = (
        ("r1", -1, 1, (g0, g1)),  # in force
        ("r2", 2, 3, (g0,)),  # upcoming
        ("r3", -3, -2, (g1,)),  # ended
    )
    for rid, start, end, devices in windows:
        kept = Reservation(
            rid, "alice", devices, T0 + timedelta(hours=start), T0 + timedelta(hours=end),
            Fraction(len(devices)),
        )  # fmt: skip
        source.store.add_reservation(ReservationRecord.of(kept, T0.isoformat(), "upcoming"))

    found = samples(families(snapshotter(source).take()))

    assert value(found, "ds01_reservations", phase="active") == 1
    assert value(found, "ds01_reservations", phase="upcoming") == 1
    assert value(found, "ds01_reserved_gpu_equivalents") == 2


def test_lifecycle_last_pass_audit_log_and_build_info(source: Source) -> None:
    before = samples(families(snapshotter(source).take()))
    source.lifecycle_last_pass = T0
    after = samples(families(snapshotter(source).take()))

    assert "ds01_lifecycle_last_pass_timestamp_seconds" not in names(before)
    assert value(after, "ds01_lifecycle_last_pass_timestamp_seconds") == T0.timestamp()
    assert value(after, "ds01_audit_log_writable") == 1
    assert [labels for name, labels in after if name == "ds01_build_info"]


def test_energy_in_kwh_and_co2_at_the_configured_intensity(source: Source) -> None:
    snapshot = snapshotter(source, energy_totals=lambda: {("alice", "phd"): 7_200_000.0}).take()

    found = samples(families(snapshot))
    cleaner = samples(families(replace(snapshot, grid_intensity_g_per_kwh=50.0)))

    assert value(found, "ds01_energy_kwh_total", user="alice", group="phd") == 2.0
    assert value(found, "ds01_co2_grams_total", user="alice", group="phd") == 500.0
    assert value(found, "ds01_grid_intensity_grams_per_kwh") == 250
    assert value(cleaner, "ds01_co2_grams_total", user="alice", group="phd") == 100.0


# --- counters fed by events ------------------------------------------------------------------


def event(action: str, outcome: str = "success", **details: Any) -> Event:
    return Event(
        ts=T0.isoformat(),
        user="ds01d",
        action=action,
        resource="container/x",
        details=details,
        outcome=outcome,  # type: ignore[arg-type]
    )


def test_lifecycle_actions_are_counted_by_kind_from_zero() -> None:
    counters = ActivityCounters()
    assert counters.snapshot().lifecycle_actions == dict.fromkeys(LIFECYCLE_ACTIONS, 0)

    for e in (
        event("lifecycle.warn", kind="idle"),
        event("lifecycle.warn", kind="idle"),
        event("lifecycle.warn", kind="runtime"),
        event("lifecycle.warn", kind="reservation"),
        event("lifecycle.warn", kind="reservation_end"),
        event("cleanup.idle"),
        event("cleanup.runtime"),
        event("cleanup.reservation"),
        event("cleanup.orphan"),
        event("cleanup.orphan", outcome="failure"),
        event("container.reclaim_warning"),
        event("container.reclaim"),
        event("container.stop"),
    ):
        counters.observe(e)

    assert counters.snapshot().lifecycle_actions == {
        "warn_idle": 2,
        "warn_runtime": 1,
        "warn_reservation": 2,
        "stop_idle": 1,
        "stop_runtime": 1,
        "stop_reservation": 1,
        "warn_reclaim": 1,
        "stop_reclaim": 1,
        "cleanup": 1,
    }


def test_queue_waits_fill_a_cumulative_histogram() -> None:
    counters = ActivityCounters()
    for waited in (3, 10, 45.5, 7200, 200000):
        counters.observe(event("queue.start", waited_seconds=waited))
    counters.observe(event("queue.start"))  # no wait recorded: not counted

    waits = counters.snapshot().queue_waits
    buckets = dict(waits.buckets)

    assert (waits.count, waits.sum_seconds) == (5, 3 + 10 + 45.5 + 7200 + 200000)
    assert buckets[10.0] == 2  # a bucket holds waits up to and including its bound
    assert buckets[60.0] == 3
    assert buckets[7200.0] == 4
    assert buckets[86400.0] == 4
    assert buckets[float("inf")] == 5


def test_the_histogram_in_the_exposition(source: Source) -> None:
    activity = ActivityCounters()
    activity.observe_wait(20)
    activity.observe_wait(4000)

    found = samples(families(snapshotter(source, activity=activity).take()))

    assert value(found, "ds01_queue_wait_seconds_bucket", le="30.0") == 1
    assert value(found, "ds01_queue_wait_seconds_bucket", le="+Inf") == 2
    assert value(found, "ds01_queue_wait_seconds_count") == 2
    assert value(found, "ds01_queue_wait_seconds_sum") == 4020
    assert value(found, "ds01_lifecycle_actions_total", action="stop_idle") == 0


def test_oom_kills_are_counted_and_exported_from_zero(source: Source) -> None:
    activity = ActivityCounters()
    found = samples(families(snapshotter(source, activity=activity).take()))
    assert value(found, "ds01_oom_kills_total") == 0
    activity.observe(event("resource.oom_kill", limit="container"))
    activity.observe(event("resource.oom_kill", outcome="failure"))
    activity.observe(event("cleanup.idle"))
    found = samples(families(snapshotter(source, activity=activity).take()))
    assert value(found, "ds01_oom_kills_total") == 1


def test_the_empty_histogram_has_every_bucket() -> None:
    assert dict(WaitHistogram.empty().buckets)[float("inf")] == 0


def test_the_event_log_tells_its_listeners_and_a_failing_one_breaks_nothing(
    tmp_path: Path,
) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    counters = ActivityCounters()

    def broken(_: Event) -> None:
        raise RuntimeError("listener bug")

    log.subscribe(broken)
    log.subscribe(counters.observe)
    log.emit("cleanup.idle", user="alice", resource="container/a", details={"reason": "idle"})

    assert counters.snapshot().lifecycle_actions["stop_idle"] == 1
    assert "cleanup.idle" in (tmp_path / "events.jsonl").read_text()


# --- the listen address -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9101", ListenAddress("127.0.0.1", 9101)),
        ("localhost:9200", ListenAddress("localhost", 9200)),
        ("[::1]:9101", ListenAddress("::1", 9101)),
        ("127.0.0.2:0", ListenAddress("127.0.0.2", 0)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_listen_addresses(text: str, expected: ListenAddress | None) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9101", "127.0.0.1", "127.0.0.1:http", ":9101", "h:70000"])
def test_malformed_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="HOST:PORT"):
        parse_listen(text)


@pytest.mark.parametrize("text", ["0.0.0.0:9101", "[::]:9101", "10.1.2.3:9101", "gpu01:9101"])
def test_remote_listen_addresses_need_to_be_allowed(text: str) -> None:
    with pytest.raises(InvalidInput, match="not loopback"):
        parse_listen(text)
    address = parse_listen(text, allow_remote=True)
    assert address is not None and not address.loopback


# --- over HTTP ----------------------------------------------------------------------------------


def scrape(address: ListenAddress) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def test_the_exporter_serves_one_snapshot_per_scrape_on_loopback(source: Source) -> None:
    g0, g1, _, _ = gpus(source)
    source.containers = [record("train", "alice", 1001, "phd", (g0, g1), Fraction(2))]
    exporter = MetricsExporter(Ds01Collector(snapshotter(source).take))
    bound = exporter.start(ListenAddress("127.0.0.1", 0))
    try:
        assert bound.port != 0 and exporter.address == bound
        text = scrape(bound)
        scrape(bound)
    finally:
        exporter.stop()
        exporter.stop()

    found = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert value(found, "ds01_gpu_equivalents_allocated", user="alice", group="phd") == 2.0
    assert "process_resident_memory_bytes" in names(found)
    assert source.list_calls == 2  # one Docker list call per scrape
    assert exporter.address is None
    with pytest.raises(OSError):
        scrape(bound)


def ended(conn: socket.socket, within: float = 0.0) -> bool:
    """Whether the exporter closed ``conn``: it is readable (at once, or ``within`` seconds)
    and at its end."""
    if not select.select([conn], [], [], within)[0]:
        return False
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_slow_clients_hold_at_most_the_bound_of_threads_and_a_scrape_still_answers(
    source: Source,
) -> None:
    """Slowloris: connections that begin a request and never finish it. Each new one past
    the bound closes the oldest of them, so the threads stay within the bound and a scrape
    (which sends its request at once) is answered."""
    exporter = MetricsExporter(Ds01Collector(snapshotter(source).take), max_connections=4)
    bound = exporter.start(ListenAddress("127.0.0.1", 0))
    threads_before = threading.active_count()
    slow = [socket.create_connection((bound.host, bound.port), timeout=5) for _ in range(12)]
    try:
        for conn in slow:
            conn.sendall(b"GET /met")
        assert "ds01_gpu_equivalents_allocated" in scrape(bound)  # accepted after them all
        assert threading.active_count() - threads_before <= 4
        assert exporter.open_connections() <= 4
        # the scrape made room by closing the oldest slow one still held: the newest 3 remain
        assert [ended(conn) for conn in slow] == [True] * 9 + [False] * 3
    finally:
        for conn in slow:
            conn.close()
        exporter.stop()


def test_an_idle_connection_is_closed_and_busy_answers_are_not_interrupted() -> None:
    inside = threading.Semaphore(0)
    release = threading.Event()

    class Slow:
        def collect(self) -> Any:
            inside.release()
            release.wait(10)
            return []

    exporter = MetricsExporter(
        Slow(),  # type: ignore[arg-type]
        process_metrics=False,
        max_connections=2,
        connection_timeout=0.2,
    )
    bound = exporter.start(ListenAddress("127.0.0.1", 0))
    try:
        idle = socket.create_connection((bound.host, bound.port), timeout=10)
        assert ended(idle, within=10)  # closed by the exporter after 0.2 s of silence
        answers: list[str] = []
        scrapes = [threading.Thread(target=lambda: answers.append(scrape(bound))) for _ in range(2)]
        for thread in scrapes:
            thread.start()
        assert inside.acquire(timeout=5) and inside.acquire(timeout=5)
        # both places are being answered: a third connection is closed at once, not them
        third = socket.create_connection((bound.host, bound.port), timeout=5)
        third.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ended(third, within=5)
        release.set()
        for thread in scrapes:
            thread.join(5)
        assert answers == ["", ""]
    finally:
        release.set()
        exporter.stop()


def test_energy_from_simulated_counters_turns_into_kwh_and_co2_per_user(source: Source) -> None:
    g0, g1, _, g3 = gpus(source)
    mig = source.backend.inventory().devices[3]  # 3g.20gb on GPU 3
    source.containers = [
        record("train", "alice", 1001, "phd", (g0,), Fraction(1)),
        record("small", "bob", 1002, "msc", (mig.uuid,), Fraction(3, 7)),
    ]
    clock = [T0]
    meter = EnergyMeter(source, clock=lambda: clock[0])  # type: ignore[arg-type]
    exporter = MetricsExporter(Ds01Collector(snapshotter(source, energy_totals=meter.totals).take))
    telemetry = source.backend.telemetry_file
    assert telemetry is not None

    # Two passes of the meter 30 s apart: GPU 0 used 1.8 MJ, GPU 1 (free) 1 MJ, GPU 3 7 MJ.
    write_simulated_telemetry(telemetry, {g: {"energy_joules": 1000.0} for g in (g0, g1, g3)})
    meter.run_pass()
    clock[0] += timedelta(seconds=30)
    write_simulated_telemetry(
        telemetry,
        {
            g0: {"energy_joules": 1000.0 + 1.8e6},
            g1: {"energy_joules": 1000.0 + 1e6},
            g3: {"energy_joules": 1000.0 + 7 * 1.2e6},
        },
    )
    meter.run_pass()
    found = samples(exporter.registry)

    assert value(found, "ds01_energy_kwh_total", user="alice", group="phd") == 0.5
    assert value(found, "ds01_co2_grams_total", user="alice", group="phd") == 125.0  # 250 g/kWh
    # bob's 3g instance gets 3/7 of GPU 3's 8.4 MJ: 3.6 MJ = 1 kWh; the free GPU 1 nobody's.
    assert value(found, "ds01_energy_kwh_total", user="bob", group="msc") == pytest.approx(1.0)
    assert value(found, "ds01_co2_grams_total", user="bob", group="msc") == pytest.approx(250.0)
    assert {labels for name, labels in found if name == "ds01_energy_kwh_total"} == {
        frozenset({("user", "alice"), ("group", "phd")}),
        frozenset({("user", "bob"), ("group", "msc")}),
    }


# --- configuration ------------------------------------------------------------------------------


def test_grid_intensity_defaults_to_400_and_is_validated_with_its_line() -> None:
    from ds01.config.loader import parse_config
    from ds01.errors import ConfigError

    assert GpuConfig().energy.grid_intensity_g_per_kwh == 400
    text = "backend: simulated\nenergy:\n  grid_intensity_g_per_kwh: -5\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "gpu-config", "gpu-config.yaml")
    assert "gpu-config.yaml:3: energy.grid_intensity_g_per_kwh" in refused.value.message
    with pytest.raises(ConfigError, match=r"energy\.grid_intensity"):
        parse_config("energy:\n  grid_intensity: 300\n", "gpu-config", "gpu-config.yaml")
