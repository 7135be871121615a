"""The metric families of one scrape, built from one ``MetricsSnapshot``.

``families(snapshot)`` is pure; ``Ds01Collector`` is the prometheus-client collector that
takes one snapshot per scrape and yields them. Names, types and labels are listed in
docs/admin.md ("Metrics"); the alert rules and dashboards in ``deploy/`` use them.
Telemetry a backend cannot read is left out, never reported as 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ds01.core.energy import co2_grams, kwh
from ds01.gpu.backend import DeviceTelemetry
from ds01.metrics.snapshot import MetricsSnapshot
from ds01.model.units import MIB

log = logging.getLogger(__name__)



def _gauge(
    name: str,
    documentation: str,
    labels: list[str] | None = None,
    samples: Iterable[tuple[Sequence[str], float]] = (),
) -> GaugeMetricFamily:
    """A gauge family holding ``samples``: (label values, value) each."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def families(s: MetricsSnapshot) -> Iterator[Metric]:
    """Every metric family of the snapshot ``s`` (see the module docstring)."""
    yield _gauge(
        "ds01_build_info",
        "ds01 version running the exporter (always 1).",
        ["version"],
        [([s.version], 1)],
    )

    yield from _devices(s)
    yield from _allocation(s)
    yield from _queue(s)
    yield from _lifecycle(s)
    yield from _telemetry(s)
    yield from _energy(s)

    yield _gauge(
        "ds01_audit_log_writable",
        "1 when the audit log can be written, else 0.",
        samples=[([], 1 if s.audit_log_writable else 0)],
    )


def _devices(s: MetricsSnapshot) -> Iterator[Metric]:
    yield _gauge(
        "ds01_device_info",
        "One allocatable device (whole GPU or MIG instance), always 1.",
        ["uuid", "kind", "profile", "gpu_index", "model"],
        [([d.uuid, d.kind, d.profile or "", str(d.gpu_index), d.model], 1) for d in s.devices],
    )
    yield _gauge(
        "ds01_device_gpu_equivalents",
        "GPU-equivalents a device counts for in quotas.",
        ["uuid"],
        [([d.uuid], float(d.gpu_equivalents)) for d in s.devices],
    )
    yield _gauge(
        "ds01_gpu_info",
        "One physical GPU, always 1 (mig: 1 when MIG mode is on; its power and energy are "
        "reported under this uuid).",
        ["uuid", "gpu_index", "model", "mig"],
        [([g.uuid, str(g.index), g.model, "1" if g.mig_enabled else "0"], 1) for g in s.gpus],
    )
    yield _gauge(
        "ds01_gpu_unmanaged_processes",
        "Processes using a device outside ds01's allocation: on the host, in a container "
        "that does not hold it, or in a container ds01 did not make (0 when none).",
        ["gpu"],
        [([d.uuid], s.unmanaged.get(d.uuid, 0)) for d in s.devices],
    )
    yield _gauge(
        "ds01_gpu_equivalents_total",
        "GPU-equivalents of every allocatable device (capacity).",
        samples=[([], s.total_gpu_equivalents)],
    )


def _allocation(s: MetricsSnapshot) -> Iterator[Metric]:
    if not s.records_ok:
        return  # Docker did not answer: unknown, not zero
    yield _gauge(
        "ds01_device_holder",
        "A device held by a container (1): its user and group (and the container's name "
        "when ds01d runs with --metrics-container-names).",
        ["uuid", "user", "group", "container"],
        [([h.uuid, h.user, h.group, h.container], 1) for h in s.holders],
    )
    yield _gauge(
        "ds01_gpu_equivalents_allocated",
        "GPU-equivalents held by a user's containers (running, or stopped within the hold).",
        ["user", "group"],
        sorted(s.allocated.items()),
    )
    yield _gauge(
        "ds01_borrowed_gpu_equivalents",
        "GPU-equivalents held by a user's borrowed containers (placed above gpu_limit, "
        "reclaimable); only users who borrow.",
        ["user", "group"],
        sorted(s.borrowed.items()),
    )
    yield _gauge(
        "ds01_containers",
        "ds01 containers by state.",
        ["state"],
        [([state], count) for state, count in sorted(s.containers_by_state.items())],
    )
    yield _gauge(
        "ds01_user_containers",
        "A user's ds01 containers, any state; only users who have some.",
        ["user", "group"],
        sorted(s.user_containers.items()),
    )
    yield _gauge(
        "ds01_quota_use_ratio",
        "Use over limit per user (resource: gpu_equivalents, containers, memory); only "
        "finite limits.",
        ["user", "resource"],
        sorted(s.quota_ratios.items()),
    )


def _queue(s: MetricsSnapshot) -> Iterator[Metric]:
    yield _gauge(
        "ds01_queue_length",
        "Requests waiting in the GPU queue.",
        samples=[([], s.queue_length)],
    )
    yield _gauge(
        "ds01_queue_oldest_wait_seconds",
        "How long the oldest waiting request has waited, in seconds (0 when none waits).",
        samples=[([], s.queue_oldest_wait_seconds)],
    )
    yield _gauge(
        "ds01_reservations",
        "GPU reservations not ended, by phase (upcoming, active).",
        ["phase"],
        [([phase], count) for phase, count in sorted(s.reservations.items())],
    )
    yield _gauge(
        "ds01_reserved_gpu_equivalents",
        "GPU-equivalents kept by the reservations in force.",
        samples=[([], s.reserved_gpu_equivalents)],
    )
    waits = s.activity.queue_waits
    histogram = HistogramMetricFamily(
        "ds01_queue_wait_seconds",
        "How long queued requests waited before they started, in seconds (since ds01d started).",
        buckets=[(_bound(bound), count) for bound, count in waits.buckets],
        sum_value=waits.sum_seconds,
    )
    yield histogram


def _lifecycle(s: MetricsSnapshot) -> Iterator[Metric]:
    actions = CounterMetricFamily(
        "ds01_lifecycle_actions",
        "Lifecycle actions since ds01d started (warn_idle, warn_runtime, stop_idle, "
        "stop_runtime, cleanup).",
        labels=["action"],
    )
    for action, count in sorted(s.activity.lifecycle_actions.items()):
        actions.add_metric([action], count)
    yield actions
    oom = CounterMetricFamily(
        "ds01_oom_kills",
        "Processes of ds01 containers killed by the kernel for memory since ds01d started.",
    )
    oom.add_metric([], s.activity.oom_kills)
    yield oom
    if s.lifecycle_last_pass is not None:
        yield _gauge(
            "ds01_lifecycle_last_pass_timestamp_seconds",
            "Unix time of the lifecycle loop's last pass (absent before the first).",
            samples=[([], s.lifecycle_last_pass)],
        )


def _telemetry(s: MetricsSnapshot) -> Iterator[Metric]:
    devices, gpus = [d.uuid for d in s.devices], [g.uuid for g in s.gpus]
    yield _gauge(
        "ds01_device_utilization_percent",
        "Share of time a kernel ran on the device, in percent (absent on MIG instances).",
        ["uuid"],
        _readings(s, devices, lambda t: t.gpu_util_percent),
    )
    yield _gauge(
        "ds01_device_memory_used_bytes",
        "Device memory in use, in bytes.",
        ["uuid"],
        _readings(s, devices, lambda t: _bytes(t.memory_used_mib)),
    )
    yield _gauge(
        "ds01_device_memory_total_bytes",
        "Device memory, in bytes.",
        ["uuid"],
        _readings(s, devices, lambda t: _bytes(t.memory_total_mib)),
    )
    yield _gauge(
        "ds01_device_power_watts",
        "Power a physical GPU draws, in watts (uuid: the GPU's, also in MIG mode).",
        ["uuid"],
        _readings(s, gpus, lambda t: t.power_watts),
    )
    energy = CounterMetricFamily(
        "ds01_device_energy_joules",
        "Energy a physical GPU used since its driver was loaded, in joules.",
        labels=["uuid"],
    )
    for values, joules in _readings(s, gpus, lambda t: t.energy_joules):
        energy.add_metric(values, joules)
    yield energy


def _readings(
    s: MetricsSnapshot, uuids: list[str], read: Callable[[DeviceTelemetry], float | None]
) -> list[tuple[list[str], float]]:
    """The samples (``[uuid]``, value) of one telemetry value, for the devices or GPUs whose
    backend could read it (the others are left out, never reported as 0)."""
    samples = []
    for uuid in uuids:
        telemetry = s.telemetry.get(uuid)
        value = None if telemetry is None else read(telemetry)
        if value is not None:
            samples.append(([uuid], value))
    return samples


def _bytes(mib: float | None) -> float | None:
    return None if mib is None else mib * MIB


def _energy(s: MetricsSnapshot) -> Iterator[Metric]:
    yield _gauge(
        "ds01_grid_intensity_grams_per_kwh",
        "The configured grid intensity: grams of CO2 per kWh (gpu-config.yaml energy:).",
        samples=[([], s.grid_intensity_g_per_kwh)],
    )
    energy = CounterMetricFamily(
        "ds01_energy_kwh",
        "GPU energy attributed to a user's containers while they held devices, in kWh "
        "(the energy ledger).",
        labels=["user", "group"],
    )
    co2 = CounterMetricFamily(
        "ds01_co2_grams",
        "CO2 of that energy at the configured grid intensity, in grams.",
        labels=["user", "group"],
    )
    for (user, group), joules in sorted(s.energy_joules.items()):
        energy.add_metric([user, group], kwh(joules))
        co2.add_metric([user, group], co2_grams(joules, s.grid_intensity_g_per_kwh))
    yield energy
    yield co2


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class Ds01Collector(Collector):
    """A prometheus-client collector: one snapshot per scrape, every family from it.

    Args:
        take_snapshot: ``Snapshotter.take``.
    """

    def __init__(self, take_snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._take_snapshot = take_snapshot

    def describe(self) -> Iterator[Metric]:
        """Nothing: the registry must not take a snapshot just to learn the names."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        yield from families(self._take_snapshot())


__all__ = ["Ds01Collector", "families"]
