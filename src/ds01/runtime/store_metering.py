"""The state store's metering tables: the energy ledger and the GPU activity per hour.

*The energy ledger* (``energy``): GPU energy in joules over an interval, attributed to the
container (and its user and group) that held a device then (``ds01.daemon.energy`` writes
it; the exporter and ``ds01 admin report`` read it).

*GPU activity* (``gpu_activity``): per container and UTC hour, the GPU-equivalent seconds
the lifecycle loop measured the utilisation of, and those seconds weighted by it (busy
GPU-seconds), for the "GPU-hours used" of ``ds01 admin report``.

The tables themselves are created with the rest of the schema (``ds01.runtime.store``);
:class:`MeteringTables` is a base of ``StateStore``, so callers reach these methods there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta

from ds01.runtime.store_access import StoreAccess


@dataclass(frozen=True)
class EnergyRecord:
    """GPU energy of one held device over ``[start, end)`` (ISO 8601 UTC), in joules,
    attributed to the container that held it, its user and group.

    ``device_uuid`` is the device held (``GPU-…`` or ``MIG-…``); for a MIG instance the
    joules are its share of its GPU's energy (see ``ds01.core.energy``).
    """

    container_id: str
    user: str
    group: str
    device_uuid: str
    start: str
    end: str
    joules: float


@dataclass(frozen=True)
class GpuActivity:
    """What the lifecycle loop measured of one container's devices in one UTC hour.

    ``measured_gpu_seconds``: GPU-equivalents x seconds during which its devices reported a
    utilisation; ``busy_gpu_seconds``: the same, each weighted by that utilisation (0-1).
    ``hour`` is the hour's start, ISO 8601 UTC (``2026-11-28T15:00:00+00:00``).
    """

    container_id: str
    user: str
    group: str
    hour: str
    measured_gpu_seconds: float
    busy_gpu_seconds: float


#: Length of the ISO 8601 prefix that names an hour ("2026-11-28T15").
_HOUR_PREFIX = 13


class MeteringTables(StoreAccess):
    """The ``energy`` and ``gpu_activity`` tables; every method takes the store's lock
    (through ``StoreAccess``) and writes in one transaction; none is ``irreplaceable`` (a
    lost hour of metering is not worth a backup)."""

    # -- the energy ledger -------------------------------------------------------------------

    def add_energy(self, records: Iterable[EnergyRecord], *, merge: bool = False) -> None:
        """Add ``records`` to the ledger, in one transaction.

        With ``merge``, a record that continues a row of the same container and device
        (the row ends where the record starts) is added to that row instead, as long as
        the row started in the UTC hour in which the record ends: the meter samples every
        few seconds, and the ledger keeps about one row per held device and hour.
        """
        rows = [astuple(record) for record in records]
        if not rows:
            return
        with self._access(), self._transaction():
            for row in rows:
                if merge and self._extend_energy(row):
                    continue
                self._db.execute("INSERT INTO energy VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def _extend_energy(self, row: tuple[object, ...]) -> bool:
        container_id, _, _, device_uuid, start, end, joules = row
        cursor = self._db.execute(
            "UPDATE energy SET end = ?, joules = joules + ? "
            "WHERE container_id = ? AND device_uuid = ? AND end = ? "
            "AND substr(start, 1, ?) = substr(?, 1, ?)",
            (end, joules, container_id, device_uuid, start, _HOUR_PREFIX, end, _HOUR_PREFIX),
        )
        return cursor.rowcount > 0

    def energy_between(self, start: str, end: str) -> list[EnergyRecord]:
        """Records overlapping ``[start, end)`` (ISO 8601 UTC), by start, container, device.

        A record that overlaps only in part is returned whole: pro-rate its joules by the
        overlapping share of its interval if needed (records cover at most about an hour).
        """
        return self._fetch_as(
            EnergyRecord,
            "SELECT container_id, user, grp, device_uuid, start, end, joules FROM energy "
            "WHERE end > ? AND start < ? ORDER BY start, container_id, device_uuid",
            (start, end),
        )

    def energy_totals(self) -> dict[tuple[str, str], float]:
        """Joules in the whole ledger by (user, group)."""
        rows = self._fetch_all("SELECT user, grp, SUM(joules) FROM energy GROUP BY user, grp")
        return {(user, group): float(joules) for user, group, joules in rows}

    # -- GPU activity ----------------------------------------------------------------------------

    def add_gpu_activity(self, records: Iterable[GpuActivity]) -> None:
        """Add ``records`` to the hours they name (one transaction), summing with what an
        hour of the same container already holds."""
        rows = [astuple(record) for record in records]
        if not rows:
            return
        with self._access(), self._transaction():
            self._db.executemany(
                "INSERT INTO gpu_activity VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (container_id, hour) DO UPDATE SET "
                "measured_gpu_seconds = measured_gpu_seconds + excluded.measured_gpu_seconds, "
                "busy_gpu_seconds = busy_gpu_seconds + excluded.busy_gpu_seconds",
                rows,
            )

    def gpu_activity_between(self, start: str, end: str) -> list[GpuActivity]:
        """Hours that overlap ``[start, end)`` (ISO 8601 UTC), oldest first."""
        return self._fetch_as(
            GpuActivity,
            "SELECT container_id, user, grp, hour, measured_gpu_seconds, busy_gpu_seconds "
            "FROM gpu_activity WHERE hour < ? AND hour > ? ORDER BY hour, container_id",
            (end, _hour_before(start)),
        )

    def forget_gpu_activity(self, before: str) -> None:
        """Drop hours that started before ``before`` (ISO 8601 UTC)."""
        self._execute("DELETE FROM gpu_activity WHERE hour < ?", (before,))


def _hour_before(moment: str) -> str:
    """The ISO 8601 time one hour before ``moment``: an hour starting after it overlaps."""
    return (datetime.fromisoformat(moment) - timedelta(hours=1)).isoformat()
