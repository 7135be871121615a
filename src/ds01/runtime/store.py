"""ds01d's SQLite store: what Docker cannot hold.

*Create intents*: a create is recorded before ``docker create`` and deleted once the
container is complete. After a crash, an intent still present means the create never
finished, so the container it names (if Docker made it) is removed: no half-made container
survives a restart.

*The GPU queue*: requests waiting for devices (``queue``), each with its state; a row
leaves ``waiting`` exactly once (``finish_queued`` is a compare-and-set), and a container
created for it carries its id as ``ds01.request_id``, so that a crash between the two
cannot start a request twice.

*The usage ledger*: intervals during which a container held GPU devices, with their
GPU-equivalents, for fair share (``usage``).

*GPU releases*: stopped containers whose devices went back to the pool after
``gpu_hold_after_stop_minutes`` (``gpu_releases``); their labels still name the devices
they had, which they get back at start only if still free.

*Lifecycle clocks* (``lifecycle``): per container, the idle and runtime state of the
lifecycle loop (``core.lifecycle.ContainerClock`` as JSON), so a restart loses no countdown;
and when the last pass ran on the wall and the monotonic clock (``lifecycle_mark``, one
row), so a jump of the wall clock while ds01d was down is taken out too.

*Exemptions* from idle and runtime limits (``exemptions``): per user or per container, with
an expiry and a reason, set by admins.

*OOM counters*: per container, the kernel's OOM counters last seen and the kills ds01
reported (``ds01.daemon.oom``), so that a restart of ds01d does not report a kill twice and
``container-list`` can show them.

*The energy ledger* (``energy``) and *GPU activity* (``gpu_activity``): see
``ds01.runtime.store_metering``, whose methods ``StateStore`` inherits.

*Cgroup parents* (``cgroup_parents``): the user parents this ds01d made (or had Docker
make) for its containers, builds and users. An instance removes only these when they are
empty and unused: another ds01d on the same engine owns its own.

*MIG slices made on demand* (``mig_on_demand``): the MIG instances ds01d made on GPUs with
``dynamic`` in ``mig_layout`` (or adopted there), and since when nobody holds each, so that
a restart destroys them at the same moment and never takes the admin's baseline for one.

*Reservations* (``reservations``): GPUs kept for a user (or for maintenance) over a window,
with the phase ds01d last announced (``upcoming``, ``active``, ``ended``), so that a restart
neither loses one nor announces its start or end twice. One cancelled before its start is
deleted (rows an earlier release marked ``cancelled`` instead go at the next cleanup).

*Warnings given* (``warnings``): per kind (``reclaim``: a borrowed container warned that it
will be reclaimed, by Docker name; ``reservation``: a container warned off a reserved device,
by ``reservation_id/container_id``) when the owner was warned, so that a restart neither
warns twice nor starts a grace again.

The connection, its lock and the translation of SQLite's errors are
``ds01.runtime.store_access.StoreAccess``, the base of every table's methods.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Literal

from ds01.core.lifecycle import ContainerClock, Exemption, PassMark
from ds01.core.reservations import Reservation
from ds01.runtime.store_metering import EnergyRecord as EnergyRecord  # re-exported
from ds01.runtime.store_metering import GpuActivity as GpuActivity  # re-exported
from ds01.runtime.store_metering import MeteringTables

#: What a stored warning is about (the ``warnings`` table).
WarningKind = Literal["reclaim", "reservation", "reservation_end", "reservation_affected"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS create_intents (
    request_id   TEXT PRIMARY KEY,
    docker_name  TEXT NOT NULL,
    user         TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS oom_counters (
    container_id   TEXT PRIMARY KEY,
    docker_name    TEXT NOT NULL,
    user           TEXT NOT NULL,
    kills          INTEGER NOT NULL,
    own_events     INTEGER NOT NULL,
    parent_events  INTEGER NOT NULL,
    generation     INTEGER NOT NULL,
    oom_kills      INTEGER NOT NULL,
    last_oom       TEXT,
    last_limit     TEXT
);
CREATE TABLE IF NOT EXISTS queue (
    id            TEXT PRIMARY KEY,
    user          TEXT NOT NULL,
    uid           INTEGER NOT NULL,
    grp           TEXT NOT NULL,
    kind          TEXT NOT NULL,
    container     TEXT NOT NULL,
    request_json  TEXT NOT NULL,
    whole_gpus    INTEGER NOT NULL,
    mig           TEXT NOT NULL,
    submitted_at  TEXT NOT NULL,
    state         TEXT NOT NULL,
    ended_at      TEXT,
    message       TEXT,
    devices       TEXT NOT NULL,
    via           TEXT
);
CREATE INDEX IF NOT EXISTS queue_state ON queue (state);
CREATE INDEX IF NOT EXISTS queue_user ON queue (uid, state);
CREATE TABLE IF NOT EXISTS usage (
    container_id     TEXT NOT NULL,
    user             TEXT NOT NULL,
    grp              TEXT NOT NULL,
    gpu_equivalents  TEXT NOT NULL,
    start            TEXT NOT NULL,
    end              TEXT,
    borrowed         INTEGER,
    PRIMARY KEY (container_id, start)
);
CREATE TABLE IF NOT EXISTS lifecycle (
    container_id  TEXT PRIMARY KEY,
    docker_name   TEXT NOT NULL,
    clock         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lifecycle_mark (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    wall       TEXT NOT NULL,
    monotonic  REAL NOT NULL,
    boot       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exemptions (
    id          TEXT PRIMARY KEY,
    user        TEXT NOT NULL,
    container   TEXT,
    until       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gpu_releases (
    container_id  TEXT PRIMARY KEY,
    docker_name   TEXT NOT NULL,
    released_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS energy (
    container_id  TEXT NOT NULL,
    user          TEXT NOT NULL,
    grp           TEXT NOT NULL,
    device_uuid   TEXT NOT NULL,
    start         TEXT NOT NULL,
    end           TEXT NOT NULL,
    joules        REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS energy_end ON energy (end);
CREATE INDEX IF NOT EXISTS energy_holding ON energy (container_id, device_uuid, end);
CREATE TABLE IF NOT EXISTS gpu_activity (
    container_id         TEXT NOT NULL,
    user                 TEXT NOT NULL,
    grp                  TEXT NOT NULL,
    hour                 TEXT NOT NULL,
    measured_gpu_seconds REAL NOT NULL,
    busy_gpu_seconds     REAL NOT NULL,
    PRIMARY KEY (container_id, hour)
);
CREATE TABLE IF NOT EXISTS mig_on_demand (
    uuid        TEXT PRIMARY KEY,
    gpu_uuid    TEXT NOT NULL,
    profile     TEXT NOT NULL,
    start       INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    free_since  TEXT
);
CREATE TABLE IF NOT EXISTS reservations (
    id               TEXT PRIMARY KEY,
    holder           TEXT,
    devices          TEXT NOT NULL,
    gpu_equivalents  TEXT NOT NULL,
    start            TEXT NOT NULL,
    end              TEXT NOT NULL,
    note             TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    phase            TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cgroup_parents (
    parent      TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS warnings (
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    warned_at   TEXT NOT NULL,
    PRIMARY KEY (kind, subject)
);
"""

_SELECT_QUEUE = (
    "SELECT id, user, uid, grp, kind, container, request_json, whole_gpus, mig, submitted_at, "
    "state, ended_at, message, devices, via FROM queue"
)
_INSERT_QUEUE = (
    "INSERT INTO queue (id, user, uid, grp, kind, container, request_json, whole_gpus, mig, "
    "submitted_at, state, ended_at, message, devices, via) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Columns added to a table after its first release: (table, column, its SQL type). A
#: database made before one of them gains it when it is opened (``StoreAccess._migrate``);
#: its old rows read the column as NULL.
_ADDED_COLUMNS = (
    ("queue", "via", "TEXT"),
    ("usage", "borrowed", "INTEGER"),
    ("reservations", "profile", "TEXT"),
)

_SELECT_OOM = (
    "SELECT container_id, docker_name, user, kills, own_events, parent_events, generation, "
    "oom_kills, last_oom, last_limit FROM oom_counters"
)
_SAVE_OOM = (
    "INSERT OR REPLACE INTO oom_counters (container_id, docker_name, user, kills, own_events, "
    "parent_events, generation, oom_kills, last_oom, last_limit) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class CreateIntent:
    request_id: str
    docker_name: str
    user: str
    created_at: str


@dataclass(frozen=True)
class OomState:
    """What ds01d knows about one container's OOM kills.

    ``kills``, ``own_events``, ``parent_events`` and ``generation`` are the kernel counters
    as last read (see ``ds01.runtime.cgroups.OomCounters``; ``parent_events`` are the user
    parent's). ``oom_kills`` counts the kills reported over the container's life (restarts
    included); ``last_oom`` is when the last one was seen (ISO 8601 UTC) and ``last_limit``
    which limit it hit (``container``, ``user_total`` or ``host``).
    """

    container_id: str
    docker_name: str
    user: str
    kills: int
    own_events: int
    parent_events: int
    generation: int
    oom_kills: int = 0
    last_oom: str | None = None
    last_limit: str | None = None


QueueKind = Literal["create", "start"]
QueueState = Literal["waiting", "started", "cancelled", "failed"]


@dataclass(frozen=True)
class QueuedRequest:
    """A request in the GPU queue.

    ``kind``: ``create`` (a new container, ``request_json`` is its create request) or
    ``start`` (an existing stopped container ``container`` that needs devices again).
    Times are ISO 8601 UTC; ``mig`` and ``devices`` are comma-separated. ``via``: the hub
    identity that queued it for ``user`` (``None``: the user did), named again on the
    events of its dispatch.
    """

    id: str
    user: str
    uid: int
    group: str
    kind: QueueKind
    container: str
    request_json: str
    whole_gpus: int
    mig: str
    submitted_at: str
    state: QueueState = "waiting"
    ended_at: str | None = None
    message: str | None = None
    devices: str = ""
    via: str | None = None

    @property
    def mig_profiles(self) -> tuple[str, ...]:
        return tuple(p for p in self.mig.split(",") if p)


@dataclass(frozen=True)
class OnDemandSlice:
    """A MIG instance ds01d made on demand: where, when, and since when nobody holds it
    (``None``: held, or not seen free yet). Times are ISO 8601 UTC."""

    uuid: str
    gpu_uuid: str
    profile: str
    start: int
    created_at: str
    free_since: str | None = None


@dataclass(frozen=True)
class UsageRecord:
    """One container's holding of GPU devices: from ``start`` to ``end`` (``None``: still);
    ``borrowed``: the container was placed above its owner's ``gpu_limit``."""

    container_id: str
    user: str
    group: str
    gpu_equivalents: str  # an exact fraction, "3/7"
    start: str
    end: str | None = None
    borrowed: bool = False


@dataclass(frozen=True)
class ExemptionRecord:
    """An admin's exemption of ``user``'s containers (or only ``container``, a name as the
    user sees it) from idle and runtime limits until ``until`` (ISO 8601 UTC)."""

    id: str
    user: str
    container: str | None
    until: str
    reason: str
    created_by: str
    created_at: str

    def exemption(self) -> Exemption:
        """The exemption as the lifecycle decisions take it."""
        return Exemption(self.user, self.container, datetime.fromisoformat(self.until), self.reason)


@dataclass(frozen=True)
class ReservationRecord:
    """A stored reservation: ``devices`` a JSON list of UUIDs, ``gpu_equivalents`` an exact
    fraction (``"3/7"``), times ISO 8601 UTC; ``holder`` ``None`` for maintenance; ``phase``
    the last one ds01d announced, or ``cancelled``; ``profile`` the MIG profile a ``--mig``
    reservation asked for (``None``: whole GPUs, or stored before it was kept)."""

    id: str
    holder: str | None
    devices: str
    gpu_equivalents: str
    start: str
    end: str
    note: str
    created_by: str
    created_at: str
    phase: str
    profile: str | None = None

    @classmethod
    def of(cls, reservation: Reservation, created_at: str, phase: str) -> ReservationRecord:
        return cls(
            reservation.id,
            reservation.holder,
            json.dumps(list(reservation.devices)),
            str(reservation.gpu_equivalents),
            reservation.start.isoformat(timespec="seconds"),
            reservation.end.isoformat(timespec="seconds"),
            reservation.note,
            reservation.created_by,
            created_at,
            phase,
            reservation.profile,
        )

    def reservation(self) -> Reservation:
        """The reservation as ``ds01.core.reservations`` takes it."""
        return Reservation(
            id=self.id,
            holder=self.holder,
            devices=tuple(json.loads(self.devices)),
            start=datetime.fromisoformat(self.start),
            end=datetime.fromisoformat(self.end),
            gpu_equivalents=Fraction(self.gpu_equivalents),
            note=self.note,
            created_by=self.created_by,
            profile=self.profile,
        )


class StateStore(MeteringTables):
    """A small, thread-safe SQLite store.

    WAL with ``synchronous=NORMAL``: a committed row survives any crash of the daemon
    (kill -9 included) without an fsync per commit; only a power loss may drop the last
    commits, and then Docker's own recent state is lost with them.

    Every method raises ``ds01.errors.StorageFault`` (never SQLite's error) when the file
    system of the state directory is full or read-only; a write that failed so changed
    nothing, and the next call tries again.

    Damage found while running (SQLite: "database disk image is malformed", "file is not
    a database") raises ``StateDamaged``, whose message names the file and the admin's
    repair command; the first time, it is logged and ``on_damage`` is called with it
    (ds01d writes a ``state.damaged`` event). ds01d checks the file before it opens it
    (``ds01.runtime.store_files.examine``).

    ``backup_soon`` is set by every write of what Docker's labels cannot rebuild (the
    queue, released devices, exemptions), for ``ds01.daemon.state_backup`` to copy the
    store soon after.
    """

    def __init__(self, path: Path, on_damage: Callable[[str], None] | None = None) -> None:
        super().__init__(path, _SCHEMA, _ADDED_COLUMNS, on_damage)

    def add_intent(self, intent: CreateIntent) -> None:
        self._execute(
            "INSERT INTO create_intents VALUES (?, ?, ?, ?)",
            (intent.request_id, intent.docker_name, intent.user, intent.created_at),
        )

    def remove_intent(self, request_id: str) -> None:
        self._execute("DELETE FROM create_intents WHERE request_id = ?", (request_id,))

    def intents(self) -> list[CreateIntent]:
        return self._fetch_as(
            CreateIntent, "SELECT request_id, docker_name, user, created_at FROM create_intents"
        )

    def oom_states(self) -> dict[str, OomState]:
        """Every container's OOM state, by container id."""
        rows = self._fetch_all(_SELECT_OOM)
        return {row[0]: OomState(*row) for row in rows}

    def save_oom_state(self, state: OomState) -> None:
        self._execute(_SAVE_OOM, astuple(state))

    def forget_oom_states(self, container_ids: Iterable[str]) -> None:
        """Drop the OOM state of containers that no longer exist."""
        with self._access():
            self._db.executemany(
                "DELETE FROM oom_counters WHERE container_id = ?", [(i,) for i in container_ids]
            )

    # -- the GPU queue ---------------------------------------------------------------------

    def add_queued(self, request: QueuedRequest) -> None:
        self._execute(_INSERT_QUEUE, astuple(request), irreplaceable=True)

    def queued(self, *states: QueueState) -> list[QueuedRequest]:
        """Requests in the given states (default: waiting), oldest first."""
        wanted = states or ("waiting",)
        marks = ", ".join("?" * len(wanted))
        query = f"{_SELECT_QUEUE} WHERE state IN ({marks}) ORDER BY submitted_at, id"
        return self._fetch_as(QueuedRequest, query, wanted)

    def waiting_of(self, uid: int) -> list[QueuedRequest]:
        """The waiting requests of user ``uid``, oldest first (an index lookup)."""
        return self._fetch_as(
            QueuedRequest,
            _SELECT_QUEUE + " WHERE uid = ? AND state = 'waiting' ORDER BY submitted_at, id",
            (uid,),
        )

    def queued_by_id(self, request_id: str) -> QueuedRequest | None:
        with self._access():
            row = self._db.execute(_SELECT_QUEUE + " WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else QueuedRequest(*row)

    def finish_queued(
        self,
        request_id: str,
        state: QueueState,
        ended_at: str,
        message: str | None = None,
        devices: str = "",
    ) -> bool:
        """Move a waiting request to ``state``; ``False`` if it was not waiting any more."""
        cursor = self._execute(
            "UPDATE queue SET state = ?, ended_at = ?, message = ?, devices = ? "
            "WHERE id = ? AND state = 'waiting'",
            (state, ended_at, message, devices, request_id),
            irreplaceable=True,
        )
        return cursor.rowcount == 1

    def forget_finished_queued(self, before: str) -> None:
        """Drop finished requests that ended before ``before`` (ISO 8601 UTC)."""
        self._execute("DELETE FROM queue WHERE state != 'waiting' AND ended_at < ?", (before,))

    # -- the usage ledger --------------------------------------------------------------------

    def usage(self) -> list[UsageRecord]:
        rows = self._fetch_all(
            "SELECT container_id, user, grp, gpu_equivalents, start, end, borrowed FROM usage"
        )
        return [
            UsageRecord(cid, user, grp, equivalents, start, end, bool(borrowed))
            for cid, user, grp, equivalents, start, end, borrowed in rows
        ]

    def open_usage(self, record: UsageRecord) -> None:
        self._execute(
            "INSERT OR IGNORE INTO usage (container_id, user, grp, gpu_equivalents, start, end, "
            "borrowed) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*astuple(record)[:6], int(record.borrowed)),
        )

    def close_usage(self, container_id: str, end: str) -> None:
        """End the open holding of ``container_id`` (if any) at ``end``."""
        self._execute(
            "UPDATE usage SET end = ? WHERE container_id = ? AND end IS NULL", (end, container_id)
        )

    def forget_usage(self, ended_before: str) -> None:
        """Drop holdings that ended before ``ended_before``: they weigh nothing any more."""
        self._execute("DELETE FROM usage WHERE end IS NOT NULL AND end < ?", (ended_before,))

    # -- lifecycle clocks --------------------------------------------------------------------

    def lifecycle_clocks(self) -> dict[str, ContainerClock]:
        """Every container's lifecycle clock, by container id (unreadable rows left out)."""
        rows = self._fetch_all("SELECT container_id, clock FROM lifecycle")
        clocks = {}
        for container_id, text in rows:
            try:
                clocks[container_id] = ContainerClock.from_row(json.loads(text))
            except (ValueError, TypeError):
                continue  # a row of an older layout: the container starts a fresh clock
        return clocks

    def save_lifecycle_clock(
        self, container_id: str, docker_name: str, clock: ContainerClock
    ) -> None:
        self._execute(
            "INSERT OR REPLACE INTO lifecycle VALUES (?, ?, ?)",
            (container_id, docker_name, json.dumps(clock.to_row())),
        )

    def move_lifecycle_clocks(
        self, change: Callable[[ContainerClock], ContainerClock], mark: PassMark
    ) -> None:
        """Replace every readable clock by ``change(clock)`` and record ``mark`` as the last
        pass, in one transaction: a crash in between cannot move the clocks twice."""
        with self._access():
            rows = self._db.execute("SELECT container_id, clock FROM lifecycle").fetchall()
            changed = []
            for container_id, text in rows:
                try:
                    clock = ContainerClock.from_row(json.loads(text))
                except (ValueError, TypeError):
                    continue
                changed.append((json.dumps(change(clock).to_row()), container_id))
            with self._transaction():
                self._db.executemany(
                    "UPDATE lifecycle SET clock = ? WHERE container_id = ?", changed
                )
                self._save_mark(mark)

    def lifecycle_mark(self) -> PassMark | None:
        """When the last lifecycle pass ran (``None``: never, or unreadable)."""
        with self._access():
            row = self._db.execute(
                "SELECT wall, monotonic, boot FROM lifecycle_mark WHERE id = 1"
            ).fetchone()
        if row is None:
            return None
        try:
            return PassMark(datetime.fromisoformat(row[0]), float(row[1]), str(row[2]))
        except (ValueError, TypeError):
            return None

    def save_lifecycle_mark(self, mark: PassMark) -> None:
        with self._access():
            self._save_mark(mark)

    def _save_mark(self, mark: PassMark) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO lifecycle_mark VALUES (1, ?, ?, ?)",
            (mark.wall.isoformat(), mark.monotonic, mark.boot),
        )

    def forget_lifecycle_clocks(self, container_ids: Iterable[str]) -> None:
        with self._access():
            self._db.executemany(
                "DELETE FROM lifecycle WHERE container_id = ?", [(i,) for i in container_ids]
            )

    # -- exemptions ------------------------------------------------------------------------------

    def exemptions(self) -> list[ExemptionRecord]:
        return self._fetch_as(
            ExemptionRecord,
            "SELECT id, user, container, until, reason, created_by, created_at "
            "FROM exemptions ORDER BY created_at, id",
        )

    def add_exemption(self, exemption: ExemptionRecord) -> None:
        self._execute(
            "INSERT INTO exemptions VALUES (?, ?, ?, ?, ?, ?, ?)",
            astuple(exemption),
            irreplaceable=True,
        )

    def remove_exemption(self, exemption_id: str) -> bool:
        cursor = self._execute(
            "DELETE FROM exemptions WHERE id = ?", (exemption_id,), irreplaceable=True
        )
        return cursor.rowcount == 1

    def move_exemptions(self, user: str, container: str, to: str) -> list[str]:
        """``user``'s exemptions of their container ``container`` now name ``to`` (a
        rename), in one transaction; the ids of those moved."""
        with self._access(irreplaceable=True), self._transaction():
            moved = [
                str(row[0])
                for row in self._db.execute(
                    "SELECT id FROM exemptions WHERE user = ? AND container = ? ORDER BY id",
                    (user, container),
                )
            ]
            self._db.execute(
                "UPDATE exemptions SET container = ? WHERE user = ? AND container = ?",
                (to, user, container),
            )
        return moved

    def forget_exemptions(self, expired_before: str) -> None:
        self._execute("DELETE FROM exemptions WHERE until < ?", (expired_before,))

    # -- reservations ----------------------------------------------------------------------------

    def reservations(self, *, include_cancelled: bool = False) -> list[ReservationRecord]:
        """Every reservation, by start (cancelled ones only when asked)."""
        return self._fetch_as(
            ReservationRecord,
            "SELECT id, holder, devices, gpu_equivalents, start, end, note, created_by, "
            "created_at, phase, profile FROM reservations WHERE ? OR phase != 'cancelled' "
            "ORDER BY start, id",
            (int(include_cancelled),),
        )

    def add_reservation(self, record: ReservationRecord) -> None:
        self._execute(
            "INSERT INTO reservations (id, holder, devices, gpu_equivalents, start, end, note, "
            "created_by, created_at, phase, profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            astuple(record),
            irreplaceable=True,
        )

    def set_reservation_phase(self, reservation_id: str, phase: str) -> bool:
        """Record ``phase``; ``False`` when the reservation is gone or was cancelled."""
        cursor = self._execute(
            "UPDATE reservations SET phase = ? WHERE id = ? AND phase != 'cancelled'",
            (phase, reservation_id),
            irreplaceable=True,
        )
        return cursor.rowcount == 1

    def set_reservation_devices(self, reservation_id: str, devices: Sequence[str]) -> bool:
        """Keep ``devices`` for the reservation instead (a MIG layout changed under it);
        ``False`` when it is gone or was cancelled."""
        cursor = self._execute(
            "UPDATE reservations SET devices = ? WHERE id = ? AND phase != 'cancelled'",
            (json.dumps(list(devices)), reservation_id),
            irreplaceable=True,
        )
        return cursor.rowcount == 1

    def cut_reservation(self, reservation_id: str, end: str) -> bool:
        """End the reservation at ``end`` instead (a cancel while it is in force: what it
        kept until then still counts); ``False`` when it is gone or was cancelled."""
        cursor = self._execute(
            "UPDATE reservations SET end = ? WHERE id = ? AND phase != 'cancelled'",
            (end, reservation_id),
            irreplaceable=True,
        )
        return cursor.rowcount == 1

    def drop_reservation(self, reservation_id: str) -> bool:
        """Delete the reservation (cancelled before its start: the audit event keeps its
        record); ``False`` when it is gone or was cancelled."""
        cursor = self._execute(
            "DELETE FROM reservations WHERE id = ? AND phase != 'cancelled'",
            (reservation_id,),
            irreplaceable=True,
        )
        return cursor.rowcount == 1

    def forget_reservations(self, ended_before: str) -> None:
        """Drop reservations that ended before ``ended_before``, and any marked cancelled
        (rows an earlier release kept for a cancel before the start)."""
        self._execute(
            "DELETE FROM reservations WHERE end < ? OR phase = 'cancelled'", (ended_before,)
        )

    # -- warnings given ------------------------------------------------------------------------

    def warnings(self, kind: WarningKind) -> dict[str, str]:
        """Subject → when its owner was warned (ISO 8601), for warnings of ``kind``."""
        rows = self._fetch_all("SELECT subject, warned_at FROM warnings WHERE kind = ?", (kind,))
        return dict(rows)

    def add_warning(self, kind: WarningKind, subject: str, at: str) -> None:
        self._execute(
            "INSERT OR REPLACE INTO warnings VALUES (?, ?, ?)", (kind, subject, at)
        )

    def forget_warnings(self, kind: WarningKind, subjects: Iterable[str]) -> None:
        """Forget warnings: done with (stopped, cancelled) or about something gone."""
        with self._access():
            self._db.executemany(
                "DELETE FROM warnings WHERE kind = ? AND subject = ?",
                [(kind, s) for s in subjects],
            )

    # -- GPU releases ----------------------------------------------------------------------------

    def released(self) -> dict[str, str]:
        """Container id → when its devices were released (ISO 8601 UTC)."""
        rows = self._fetch_all("SELECT container_id, released_at FROM gpu_releases")
        return dict(rows)

    def release(self, container_id: str, docker_name: str, at: str) -> None:
        self._execute(
            "INSERT OR REPLACE INTO gpu_releases VALUES (?, ?, ?)",
            (container_id, docker_name, at),
            irreplaceable=True,
        )

    def unrelease(self, container_ids: Iterable[str]) -> None:
        """Forget releases: the containers hold their devices again, or are gone."""
        with self._access(irreplaceable=True):
            self._db.executemany(
                "DELETE FROM gpu_releases WHERE container_id = ?", [(i,) for i in container_ids]
            )

    # -- MIG slices made on demand ---------------------------------------------------------------

    def on_demand_slices(self) -> dict[str, OnDemandSlice]:
        """The slices made on demand by UUID."""
        rows = self._fetch_as(OnDemandSlice, "SELECT * FROM mig_on_demand")
        return {row.uuid: row for row in rows}

    def add_on_demand_slice(self, row: OnDemandSlice) -> None:
        self._execute(
            "INSERT OR REPLACE INTO mig_on_demand VALUES (?, ?, ?, ?, ?, ?)",
            astuple(row),
            irreplaceable=True,
        )

    def set_free_since(self, uuid: str, at: str | None) -> None:
        """Since when nobody holds slice ``uuid`` (``None``: it is held)."""
        self._execute("UPDATE mig_on_demand SET free_since = ? WHERE uuid = ?", (at, uuid))

    def forget_on_demand_slices(self, uuids: Iterable[str]) -> None:
        """Forget slices that are gone (destroyed, or no longer on the GPU)."""
        with self._access(irreplaceable=True):
            self._db.executemany(
                "DELETE FROM mig_on_demand WHERE uuid = ?", [(u,) for u in uuids]
            )

    # -- cgroup parents ------------------------------------------------------------------------

    def own_cgroup_parent(self, parent: str, at: str) -> None:
        """Record that this instance made (or is about to make) ``parent``; idempotent."""
        self._execute("INSERT OR IGNORE INTO cgroup_parents VALUES (?, ?)", (parent, at))

    def owned_cgroup_parents(self) -> set[str]:
        rows = self._fetch_all("SELECT parent FROM cgroup_parents")
        return {parent for (parent,) in rows}

    def disown_cgroup_parent(self, parent: str) -> None:
        """Forget ``parent``: it is gone."""
        self._execute("DELETE FROM cgroup_parents WHERE parent = ?", (parent,))
