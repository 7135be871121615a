"""ds01d's SQLite store: what Docker cannot hold.

*Create intents*: a create is recorded before ``docker create`` and deleted once the
container is complete. After a crash, an intent still present means the create never
finished, so the container it names (if Docker made it) is removed: no half-made container
survives a restart.

*OOM counters*: per container, the kernel's OOM counters last seen and the kills ds01
reported (``ds01.daemon.oom``), so that a restart of ds01d does not report a kill twice and
``container-list`` can show them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from pathlib import Path

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
"""

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


class StateStore:
    """A small, thread-safe SQLite store.

    WAL with ``synchronous=NORMAL``: a committed row survives any crash of the daemon
    (kill -9 included) without an fsync per commit; only a power loss may drop the last
    commits, and then Docker's own recent state is lost with them.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def add_intent(self, intent: CreateIntent) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO create_intents VALUES (?, ?, ?, ?)",
                (intent.request_id, intent.docker_name, intent.user, intent.created_at),
            )

    def remove_intent(self, request_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM create_intents WHERE request_id = ?", (request_id,))

    def intents(self) -> list[CreateIntent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, docker_name, user, created_at FROM create_intents"
            ).fetchall()
        return [CreateIntent(*row) for row in rows]

    def oom_states(self) -> dict[str, OomState]:
        """Every container's OOM state, by container id."""
        with self._lock:
            rows = self._db.execute(_SELECT_OOM).fetchall()
        return {row[0]: OomState(*row) for row in rows}

    def save_oom_state(self, state: OomState) -> None:
        with self._lock:
            self._db.execute(_SAVE_OOM, astuple(state))

    def forget_oom_states(self, container_ids: Iterable[str]) -> None:
        """Drop the OOM state of containers that no longer exist."""
        with self._lock:
            self._db.executemany(
                "DELETE FROM oom_counters WHERE container_id = ?", [(i,) for i in container_ids]
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
