"""ds01d's SQLite store: what Docker cannot hold.

For now: *create intents*. A create is recorded before ``docker create`` and deleted once
the container is complete. After a crash, an intent still present means the create never
finished, so the container it names (if Docker made it) is removed: no half-made container
survives a restart.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS create_intents (
    request_id   TEXT PRIMARY KEY,
    docker_name  TEXT NOT NULL,
    user         TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class CreateIntent:
    request_id: str
    docker_name: str
    user: str
    created_at: str


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

    def close(self) -> None:
        with self._lock:
            self._db.close()
