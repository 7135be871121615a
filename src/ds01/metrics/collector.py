"""The metric families of one scrape, built from one ``MetricsSnapshot``.

``families(snapshot)`` is pure; ``Ds01Collector`` is the prometheus-client collector that
takes one snapshot per scrape and yields them. Names, types and labels are listed in
docs/admin.md ("Metrics"); the alert rules and dashboards in ``deploy/`` use them.
Telemetry a backend cannot read is left out, never reported as 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ds01.core.energy import co2_grams, kwh
from ds01.metrics.snapshot import MetricsSnapshot

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def families(s: MetricsSnapshot) -> Iterator[Metric]:
    """Every metric family of the snapshot ``s`` (see the module docstring)."""
    info = _gauge("ds01_build_info", "ds01 version running the exporter (always 1).", ["version"])
    info.add_metric([s.version], 1)
    yield info

    yield from _devices(s)
    yield from _allocation(s)
    yield from _queue(s)
    yield from _lifecycle(s)
    yield from _telemetry(s)
    yield from _energy(s)

    audit = _gauge("ds01_audit_log_writable", "1 when the audit log can be written, else 0.")
    audit.add_metric([], 1 if s.audit_log_writable else 0)
    yield audit


def _devices(s: MetricsSnapshot) -> Iterator[Metric]:
    device_info = _gauge(
        "ds01_device_info",
        "One allocatable device (whole GPU or MIG instance), always 1.",
        ["uuid", "kind", "profile", "gpu_index", "model"],
    )
    for d in s.devices:
        device_info.add_metric([d.uuid, d.kind, d.profile or "", str(d.gpu_index), d.model], 1)
    yield device_info
    equivalents = _gauge(
        "ds01_device_gpu_equivalents", "GPU-equivalents a device counts for in quotas.", ["uuid"]
    )
    for d in s.devices:
        equivalents.add_metric([d.uuid], float(d.gpu_equivalents))
    yield equivalents
    gpu_info = _gauge(
        "ds01_gpu_info",
        "One physical GPU, always 1 (mig: 1 when MIG mode is on; its power and energy are "
        "reported under this uuid).",
        ["uuid", "gpu_index", "model", "mig"],
    )
    for g in s.gpus:
        gpu_info.add_metric([g.uuid, str(g.index), g.model, "1" if g.mig_enabled else "0"], 1)
    yield gpu_info
    total = _gauge(
        "ds01_gpu_equivalents_total", "GPU-equivalents of every allocatable device (capacity)."
    )
    total.add_metric([], s.total_gpu_equivalents)
    yield total


def _allocation(s: MetricsSnapshot) -> Iterator[Metric]:
    if not s.records_ok:
        return  # Docker did not answer: unknown, not zero
    holder = _gauge(
        "ds01_device_holder",
        "A device held by a container (1): its user and group (and the container's name "
        "when ds01d runs with --metrics-container-names).",
        ["uuid", "user", "group", "container"],
    )
    for h in s.holders:
        holder.add_metric([h.uuid, h.user, h.group, h.container], 1)
    yield holder
    allocated = _gauge(
        "ds01_gpu_equivalents_allocated",
        "GPU-equivalents held by a user's containers (running, or stopped within the hold).",
        ["user", "group"],
    )
    for (user, group), value in sorted(s.allocated.items()):
        allocated.add_metric([user, group], value)
    yield allocated
    containers = _gauge("ds01_containers", "ds01 containers by state.", ["state"])
    for state, count in sorted(s.containers_by_state.items()):
        containers.add_metric([state], count)
    yield containers
    quota = _gauge(
        "ds01_quota_use_ratio",
        "Use over limit per user (resource: gpu_equivalents, containers, memory); only "
        "finite limits.",
        ["user", "resource"],
    )
    for (user, resource), ratio in sorted(s.quota_ratios.items()):
        quota.add_metric([user, resource], ratio)
    yield quota


def _queue(s: MetricsSnapshot) -> Iterator[Metric]:
    length = _gauge("ds01_queue_length", "Requests waiting in the GPU queue.")
    length.add_metric([], s.queue_length)
    yield length
    oldest = _gauge(
        "ds01_queue_oldest_wait_seconds",
        "How long the oldest waiting request has waited, in seconds (0 when none waits).",
    )
    oldest.add_metric([], s.queue_oldest_wait_seconds)
    yield oldest
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
    if s.lifecycle_last_pass is not None:
        last = _gauge(
            "ds01_lifecycle_last_pass_timestamp_seconds",
            "Unix time of the lifecycle loop's last pass (absent before the first).",
        )
        last.add_metric([], s.lifecycle_last_pass)
        yield last


def _telemetry(s: MetricsSnapshot) -> Iterator[Metric]:
    utilization = _gauge(
        "ds01_device_utilization_percent",
        "Share of time a kernel ran on the device, in percent (absent on MIG instances).",
        ["uuid"],
    )
    used = _gauge("ds01_device_memory_used_bytes", "Device memory in use, in bytes.", ["uuid"])
    total = _gauge("ds01_device_memory_total_bytes", "Device memory, in bytes.", ["uuid"])
    for d in s.devices:
        t = s.telemetry.get(d.uuid)
        if t is None:
            continue
        if t.gpu_util_percent is not None:
            utilization.add_metric([d.uuid], t.gpu_util_percent)
        if t.memory_used_mib is not None:
            used.add_metric([d.uuid], t.memory_used_mib * MIB)
        if t.memory_total_mib is not None:
            total.add_metric([d.uuid], t.memory_total_mib * MIB)
    power = _gauge(
        "ds01_device_power_watts",
        "Power a physical GPU draws, in watts (uuid: the GPU's, also in MIG mode).",
        ["uuid"],
    )
    energy = CounterMetricFamily(
        "ds01_device_energy_joules",
        "Energy a physical GPU used since its driver was loaded, in joules.",
        labels=["uuid"],
    )
    for g in s.gpus:
        t = s.telemetry.get(g.uuid)
        if t is None:
            continue
        if t.power_watts is not None:
            power.add_metric([g.uuid], t.power_watts)
        if t.energy_joules is not None:
            energy.add_metric([g.uuid], t.energy_joules)
    yield from (utilization, used, total, power, energy)


def _energy(s: MetricsSnapshot) -> Iterator[Metric]:
    intensity = _gauge(
        "ds01_grid_intensity_grams_per_kwh",
        "The configured grid intensity: grams of CO2 per kWh (gpu-config.yaml energy:).",
    )
    intensity.add_metric([], s.grid_intensity_g_per_kwh)
    yield intensity
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
