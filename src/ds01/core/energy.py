"""GPU energy: counter deltas, who it is attributed to, and what it weighs in kWh and CO₂.

NVML keeps one energy counter per board (``nvmlDeviceGetTotalEnergyConsumption``, joules
since the driver was loaded); MIG instances have none. ds01d reads every board's counter
every few seconds (``ds01.daemon.energy``) and attributes the energy used between two
readings like this:

- a whole GPU held by a container: all of it to that container (its user and group);
- a GPU in MIG mode: each held instance gets the instance's share of the GPU, its
  GPU-equivalents (3g.20gb on an A100: 3/7), whatever the instances actually drew: NVML
  cannot tell them apart, and the share is what the holder was given;
- what no container holds (a free GPU, free instances) is attributed to nobody. The
  exporter's per-device counters still show it.

The holders are those when the interval ends (the reading that closes it): with the
default interval of 30 s an interval at a change of holder may go to the next holder.

A counter that drops (the driver was reloaded, the GPU reset) restarted from 0 in the
interval: the energy since then is its new value, never a negative difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from ds01.model.device import Device

JOULES_PER_KWH = 3_600_000.0


def counter_delta(previous_joules: float, current_joules: float) -> float:
    """Energy between two readings of a cumulative counter, in joules, never negative.

    A reading below the previous one means the counter restarted from 0 (driver reload):
    the energy since then is the reading itself.
    """
    if current_joules >= previous_joules:
        return current_joules - previous_joules
    return max(current_joules, 0.0)


def kwh(joules: float) -> float:
    """Joules in kWh."""
    return joules / JOULES_PER_KWH


def co2_grams(joules: float, grid_intensity_g_per_kwh: float) -> float:
    """Grams of CO₂ for ``joules`` taken from a grid emitting ``grid_intensity_g_per_kwh``."""
    return kwh(joules) * grid_intensity_g_per_kwh


@dataclass(frozen=True)
class DeviceHolder:
    """A container that holds ``device_uuid`` (from its labels)."""

    container_id: str
    user: str
    group: str
    device_uuid: str


@dataclass(frozen=True)
class EnergyShare:
    """Joules of one GPU interval attributed to the holder of one of its devices."""

    holder: DeviceHolder
    gpu_uuid: str
    joules: float


def attribute_energy(
    joules_by_gpu: Mapping[str, float],
    holders: Iterable[DeviceHolder],
    devices: Mapping[str, Device],
) -> list[EnergyShare]:
    """Split each GPU's energy in an interval among the holders of its devices.

    Args:
        joules_by_gpu: energy each physical GPU used in the interval (by GPU UUID, J).
        holders: who holds which device at the end of the interval.
        devices: the inventory's devices by UUID (for their GPU and GPU-equivalents).

    Returns:
        One share per held device whose GPU has a figure, in the order of ``holders``; a
        whole GPU's holder gets all of it, a MIG instance's its GPU-equivalents' share. A
        device held twice (which the allocator never allows) counts once, for the first.
        Devices not in ``devices`` and shares of 0 J are left out.
    """
    shares: list[EnergyShare] = []
    seen: set[str] = set()
    for holder in holders:
        device = devices.get(holder.device_uuid)
        if device is None or device.uuid in seen:
            continue
        seen.add(device.uuid)
        joules = joules_by_gpu.get(device.gpu_uuid)
        if joules is None:
            continue
        share = Fraction(1) if device.kind == "gpu" else device.gpu_equivalents
        attributed = joules * float(share)
        if attributed > 0:
            shares.append(EnergyShare(holder, device.gpu_uuid, attributed))
    return shares


__all__ = [
    "JOULES_PER_KWH",
    "DeviceHolder",
    "EnergyShare",
    "attribute_energy",
    "co2_grams",
    "counter_delta",
    "kwh",
]
