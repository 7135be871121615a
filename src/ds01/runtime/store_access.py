"""The state store's access to SQLite: one connection, one lock, SQLite's errors translated.

:class:`StoreAccess` is the base of ``ds01.runtime.store.StateStore`` and of its table
collaborators (``ds01.runtime.store_metering``). It owns the connection and the lock; the
tables' methods reach SQLite only inside :meth:`StoreAccess._access` (or through
``_execute``, ``_fetch_all``, ``_fetch_as``, which take it), so that every call holds the
lock, and a full or read-only file system or a damaged file surfaces as ds01's own error,
never as ``sqlite3.Error``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ds01.errors import StateDamaged
from ds01.runtime.storage_fault import storage_fault
from ds01.runtime.store_files import is_damage, restore_hint

#: The state store's name in ds01d's log, for all of its modules.
log = logging.getLogger("ds01.runtime.store")

_Row = TypeVar("_Row")


class StoreAccess:
    """A SQLite database in WAL mode, shared by threads under one lock.

    State: ``path``; ``damage`` (the message, once damage was found); ``backup_soon`` (set
    after a block marked ``irreplaceable``); the connection ``_db`` and its ``_lock``.
    Opening it runs ``schema`` (``CREATE ... IF NOT EXISTS``) and adds the columns of
    ``added_columns`` an older file lacks. Subclasses call only the underscore helpers here
    and ``_db`` inside ``_access``; they hold no lock of their own.
    """

    def __init__(
        self,
        path: Path,
        schema: str,
        added_columns: Sequence[tuple[str, str, str]],
        on_damage: Callable[[str], None] | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.damage: str | None = None  # the message, once damage was found
        self.backup_soon = threading.Event()
        self._on_damage = on_damage
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._access():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(schema)
            self._migrate(added_columns)

    def _migrate(self, added_columns: Sequence[tuple[str, str, str]]) -> None:
        """Under ``_access``: add the columns of ``added_columns`` that an older database
        lacks (``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it was)."""
        for table, column, sql_type in added_columns:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

    @contextmanager
    def _access(self, *, irreplaceable: bool = False) -> Iterator[None]:
        """Hold the store's lock; never let SQLite's own error out: a full or read-only
        file system is a ``StorageFault`` naming the state directory, damage a
        ``StateDamaged`` with the repair command. ``irreplaceable``: the block writes what a
        backup must catch soon."""
        with self._lock:
            try:
                yield
            except (sqlite3.Error, OSError) as exc:
                fault = storage_fault(exc, self.path.parent)
                if fault is not None:
                    raise fault from exc
                if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
                    raise self._damaged(exc) from exc
                raise
        if irreplaceable:
            self.backup_soon.set()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite transaction, for a caller inside ``_access``: committed at the end of
        the block, rolled back if it raises (unless SQLite did, as it does on a full disk)."""
        self._db.execute("BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _execute(
        self, sql: str, parameters: Sequence[object] = (), *, irreplaceable: bool = False
    ) -> sqlite3.Cursor:
        """One statement under ``_access`` (``irreplaceable`` as there)."""
        with self._access(irreplaceable=irreplaceable):
            return self._db.execute(sql, parameters)

    def _fetch_all(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        """The rows of one query under ``_access``."""
        with self._access():
            return self._db.execute(sql, parameters).fetchall()

    def _fetch_as(
        self, row_type: Callable[..., _Row], sql: str, parameters: Sequence[object] = ()
    ) -> list[_Row]:
        """The rows of one query, each a ``row_type`` made from its columns in order."""
        return [row_type(*row) for row in self._fetch_all(sql, parameters)]

    def _damaged(self, exc: sqlite3.DatabaseError) -> StateDamaged:
        message = (
            f"ds01d's state database {self.path} is damaged ({exc}): the GPU queue, "
            "lifecycle clocks and usage ledger cannot be read or changed. "
            + restore_hint(self.path)
        )
        first = self.damage is None
        self.damage = message
        if first:
            log.error("%s", message)
            if self._on_damage is not None:
                self._on_damage(message)
        return StateDamaged(message)

    def close(self) -> None:
        with self._access():
            self._db.close()
