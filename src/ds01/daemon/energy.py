"""The energy meter of ds01d: GPU energy counters into the energy ledger.

Every ``energy.sample_interval_seconds`` (``gpu-config.yaml``, 30 s by default) one pass
reads every physical GPU's energy counter in **one** backend call and the holders in
**one** Docker list call (``Ds01Service.records``: containers whose devices were released
hold none), and writes the energy used since the previous pass to the ledger
(``StateStore.add_energy``, merged into about one row per held device and hour),
attributed as ``ds01.core.energy`` says: a whole GPU to its holder, a GPU in MIG mode to the
holders of its instances by their GPU-equivalents, nothing to nobody.

The previous readings are kept in memory: the first pass after a start only takes the
baseline, and a GPU that could not be read loses its baseline until it can be read again
(so an interval is never stretched over a gap). A counter that drops restarted (driver
reload) and is never turned into negative energy.

The meter also keeps the ledger's totals per user and group (read once from the ledger,
then added to), so that a scrape of the exporter costs no SQL sum over the whole ledger.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ds01.core.energy import DeviceHolder, attribute_energy, counter_delta
from ds01.daemon.periodic import PeriodicPass
from ds01.daemon.service import Ds01Service
from ds01.events.log import utc_now
from ds01.gpu.backend import device_telemetry
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.store import EnergyRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Reading:
    joules: float
    at: datetime


def holders_of(records: list[ContainerRecord]) -> list[DeviceHolder]:
    """Who holds which device, from the containers' labels."""
    return [
        DeviceHolder(container_id=r.id, user=r.user, group=r.group, device_uuid=uuid)
        for r in records
        for uuid in r.gpus
    ]


class EnergyMeter(PeriodicPass):
    """Reads the GPUs' energy counters into the ledger (see the module docstring), every
    ``energy.sample_interval_seconds`` in a thread of its own (``start``/``stop``).

    Args:
        service: the daemon's service (its backend, Docker list, store and config).
        clock: the current UTC time.
    """

    thread_name = "ds01-energy"
    work_name = "energy pass"
    check_name = "energy"
    consequence = "GPU energy is not recorded"

    def __init__(self, service: Ds01Service, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.service = service
        self._clock = clock
        self._last: dict[str, _Reading] = {}
        self._pass_lock = threading.Lock()
        self._totals_lock = threading.Lock()
        self._totals: dict[tuple[str, str], float] | None = None
        super().__init__()

    def run_pass(self) -> list[EnergyRecord]:
        """Read every GPU's counter once and record the energy since the last pass."""
        with self._pass_lock:
            return self._pass()

    def _pass(self) -> list[EnergyRecord]:
        service = self.service
        backend = service.backend
        inventory = backend.inventory()
        # Holders first: if Docker cannot answer, the baseline stays and the next pass
        # covers this interval too.
        holders = holders_of(service.records())
        now = self._clock()
        telemetry = device_telemetry(backend, [gpu.uuid for gpu in inventory.gpus])
        readings = {
            uuid: _Reading(t.energy_joules, now)
            for uuid, t in telemetry.items()
            if t.energy_joules is not None
        }
        previous, self._last = self._last, readings
        intervals = {
            uuid: (previous[uuid].at, counter_delta(previous[uuid].joules, reading.joules))
            for uuid, reading in readings.items()
            if uuid in previous and previous[uuid].at < now
        }
        if not intervals:
            return []
        shares = attribute_energy(
            {uuid: joules for uuid, (_, joules) in intervals.items()},
            holders,
            inventory.by_uuid(),
        )
        end = now.isoformat(timespec="seconds")
        ledger = [
            EnergyRecord(
                container_id=share.holder.container_id,
                user=share.holder.user,
                group=share.holder.group,
                device_uuid=share.holder.device_uuid,
                start=intervals[share.gpu_uuid][0].isoformat(timespec="seconds"),
                end=end,
                joules=share.joules,
            )
            for share in shares
        ]
        with self._totals_lock:  # totals() never reads the ledger between the two steps
            service.store.add_energy(ledger, merge=True)
            if self._totals is not None:
                for record in ledger:
                    key = (record.user, record.group)
                    self._totals[key] = self._totals.get(key, 0.0) + record.joules
        return ledger

    def totals(self) -> dict[tuple[str, str], float]:
        """Joules in the ledger by (user, group): read once, then kept up to date."""
        with self._totals_lock:
            if self._totals is None:
                self._totals = self.service.store.energy_totals()
            return dict(self._totals)

    def interval_seconds(self) -> float:
        return self.service.config().gpus.energy.sample_interval_seconds


__all__ = ["EnergyMeter", "holders_of"]
