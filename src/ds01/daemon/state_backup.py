"""``StateBackups``: keep a recent, consistent copy of the state database.

A thread copies the store to ``ds01.db.backup`` (``ds01.runtime.store_files.write_backup``)
``settle_seconds`` after a write of what Docker's labels cannot rebuild (the store's
``backup_soon``: queue, released devices, exemptions), every ``interval_seconds`` when
anything else changed, and once more at a clean stop. It reads through a connection of
its own: in WAL mode the copy blocks no writer, and the store's lock is never taken.
A 24 MB database (100 000 energy rows) is copied and checked in 0.1 to 0.2 s
(``benchmarks/bench_state_backup.py``).

A copy that fails is logged once per distinct error (the previous backup stays), and
none is taken while the store reports damage: a damaged page must not replace the last
good copy.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from ds01.problem_log import ProblemLog
from ds01.runtime.store import StateStore
from ds01.runtime.store_files import backup_path, write_backup

log = logging.getLogger(__name__)

#: Seconds between two backups when only observations (clocks, energy, usage) changed.
DEFAULT_INTERVAL_SECONDS = 300.0
#: Seconds to wait after a queue change, so that a burst of them is copied once.
DEFAULT_SETTLE_SECONDS = 2.0


class StateBackups:
    """Backs ``store`` up in a thread; see the module docstring.

    Contract: :meth:`start` once; :meth:`stop` ends the thread and takes a last backup
    (call it after every writer stopped). :meth:`backup_now` takes one at once, from any
    thread, and returns whether a new copy is in place.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    ) -> None:
        self.store = store
        self.target = backup_path(store.path)
        self.interval_seconds = interval_seconds
        self.settle_seconds = settle_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._copy_lock = threading.Lock()
        self._source: sqlite3.Connection | None = None
        self._copied_version: int | None = None
        self._problem = ProblemLog(
            log,
            logging.ERROR,
            "cannot back up the state database to %s: %s; the previous backup stays",
        )

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the backup thread is already running")
        self._thread = threading.Thread(target=self._loop, name="ds01-state-backup", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        self._stop.set()
        self.store.backup_soon.set()  # wakes the thread
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            self._thread = None
        self.backup_now()
        with self._copy_lock:
            if self._source is not None:
                self._source.close()
                self._source = None

    def backup_now(self) -> bool:
        """Copy the store if it changed since the last copy; ``True`` if a copy was made."""
        if self.store.damage is not None:
            return False
        with self._copy_lock:
            try:
                if self._source is None:
                    self._source = sqlite3.connect(self.store.path, check_same_thread=False)
                # data_version changes with every commit of another connection: the store's.
                version = int(self._source.execute("PRAGMA data_version").fetchone()[0])
                if version == self._copied_version and self.target.exists():
                    return False
                write_backup(self._source, self.target)
            except (sqlite3.Error, OSError) as exc:
                self._problem.failed(str(exc), self.target)
                return False
            self._copied_version = version
            if self._problem.cleared():
                log.info("state backups work again (%s)", self.target)
            return True

    def _loop(self) -> None:
        soon = self.store.backup_soon
        while not self._stop.is_set():
            if soon.wait(self.interval_seconds) and not self._stop.is_set():
                self._stop.wait(self.settle_seconds)  # one copy for a burst of changes
            soon.clear()
            if not self._stop.is_set():
                self.backup_now()


__all__ = ["DEFAULT_INTERVAL_SECONDS", "DEFAULT_SETTLE_SECONDS", "StateBackups"]
