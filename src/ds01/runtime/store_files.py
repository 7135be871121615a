"""The state database's files: its health, its backup, its restore, and who holds it.

``<state-dir>/ds01.db`` is ds01d's SQLite store (``ds01.runtime.store``). Next to it:

- ``ds01.db.backup``: the last consistent copy (SQLite's online backup API), verified with
  ``PRAGMA quick_check`` before it replaces the previous one (:func:`write_backup`), mode
  0600, in rollback-journal mode so that it can be checked read-only.
- ``ds01.db.damaged-<UTC time>`` (with ``-wal`` and ``-shm`` when there were such files):
  a database that ``ds01 admin state restore`` put aside; never deleted by ds01.
- ``state-restored.json``: what the last restore did, left by ``ds01 admin state restore``
  for ds01d, which records it as an audit event at its next start and removes the file
  (only ds01d writes the audit log).

While ds01d runs it holds an exclusive ``flock`` on the state directory itself
(:func:`lock_state_dir`): a second ds01d on the same directory, or a restore, is refused
instead of pulling the files from under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from ds01.core.state_recovery import (
    RESTORE_COMMAND,
    START_EMPTY_COMMAND,
    BackupInfo,
    DbCondition,
)
from ds01.errors import Conflict, NotFound, SystemFault
from ds01.model.units import format_duration

BACKUP_SUFFIX = ".backup"
MARKER_FILE = "state-restored.json"
#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: SQLite's result codes that mean the file's content is damaged (not locked, not I/O).
_DAMAGE_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_DAMAGE_WORDS = ("malformed", "not a database", "corrupt")
#: The WAL and shared-memory files SQLite keeps next to a database in WAL mode.
_COMPANIONS = ("-wal", "-shm")


class StateDirBusy(Conflict):
    """Another process (a running ds01d) holds the state directory."""


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error says the database's content is damaged."""
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return any(name.startswith(code) for code in _DAMAGE_CODES)
    text = str(exc).lower()
    return any(word in text for word in _DAMAGE_WORDS)


def _check_rows(db: sqlite3.Connection, pragma: str) -> list[str]:
    """The problems ``PRAGMA quick_check`` or ``integrity_check`` reports (``[]``: none)."""
    rows = [str(row[0]) for row in db.execute(f"PRAGMA {pragma}").fetchall()]
    return [] if rows == ["ok"] else rows


def _problems_text(problems: list[str]) -> str:
    # SQLite's report spans lines ("*** in database main ***\nOn tree page 6 …").
    lines = [" ".join(p.replace("*** in database main ***", "").split()) for p in problems]
    shown = "; ".join(lines[:3])
    more = len(lines) - 3
    return shown + (f"; and {more} more" if more > 0 else "")


def examine(path: Path, pragma: str = "quick_check") -> DbCondition:
    """The condition of the database file ``path``, without changing its content.

    ``quick_check`` (the default) reads every page, in about 40 ms for a 24 MB database;
    ``integrity_check`` also checks every index against its table, about 6 times slower
    (``benchmarks/bench_state_backup.py``).
    A leftover WAL is replayed into the file as any open would.
    """
    try:
        size = path.stat().st_size
        if not path.is_file():
            return DbCondition("unreadable", "not a regular file")
        if size == 0:
            return DbCondition("empty")
        with path.open("rb") as stream:
            header = stream.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return DbCondition("missing")
    except OSError as exc:
        return DbCondition("unreadable", exc.strerror or str(exc))
    if header != SQLITE_HEADER:
        return DbCondition("damaged", "it does not start with SQLite's header")
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
        try:
            problems = _check_rows(db, pragma)
        finally:
            db.close()
    except sqlite3.Error as exc:
        if is_damage(exc):
            return DbCondition("damaged", str(exc))
        return DbCondition("unreadable", str(exc))
    if problems:
        return DbCondition("damaged", _problems_text(problems))
    return DbCondition("healthy")


# -- the backup -------------------------------------------------------------------------------


def backup_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + BACKUP_SUFFIX)


def backup_info(db_path: Path, now: float | None = None) -> BackupInfo | None:
    """The backup of ``db_path`` and its age (from its modification time), if there is one."""
    path = backup_path(db_path)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return BackupInfo(str(path), max(0.0, (time.time() if now is None else now) - mtime))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_next_to(path: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o600)
    os.close(fd)
    return Path(name)


def _put_in_place(temporary: Path, path: Path) -> None:
    """Flush ``temporary`` to disk and rename it over ``path``, then flush the directory."""
    _fsync_path(temporary)
    temporary.replace(path)
    _fsync_path(path.parent)


def write_backup(source: sqlite3.Connection, target: Path) -> None:
    """Copy the database of ``source`` to ``target`` atomically, or leave ``target`` as it is.

    One step of SQLite's online backup reads a consistent snapshot (in WAL mode it blocks
    no writer); the copy is switched to rollback-journal mode, checked with
    ``quick_check``, flushed and renamed over ``target`` (mode 0600).

    Raises:
        sqlite3.Error, OSError: the copy could not be made or is not sound.
    """
    temporary = _temporary_next_to(target)
    try:
        copy = sqlite3.connect(temporary)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            problems = _check_rows(copy, "quick_check")
        finally:
            copy.close()
        if problems:
            raise sqlite3.DatabaseError(f"the copy is not sound: {_problems_text(problems)}")
        _put_in_place(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


# -- who holds the directory ---------------------------------------------------------------


def lock_state_dir(state_dir: Path) -> int:
    """Hold an exclusive lock on ``state_dir`` for as long as the returned descriptor is
    open (for ds01d: its whole life).

    Raises:
        StateDirBusy: another process holds it.
        OSError: the directory cannot be opened.
    """
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirBusy(
            f"ds01d is running on {state_dir} (another process holds it). Stop it first "
            "(`systemctl stop ds01d`)."
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def state_dir_in_use(state_dir: Path) -> bool:
    """Whether a running ds01d holds ``state_dir`` now."""
    try:
        fd = lock_state_dir(state_dir)
    except StateDirBusy:
        return True
    except OSError:
        return False
    os.close(fd)
    return False


# -- restore ------------------------------------------------------------------------------------

RestoreSource = Literal["backup", "empty"]


@dataclass(frozen=True)
class RestoreRecord:
    """What ``ds01 admin state restore`` did; ``state-restored.json`` holds it for ds01d.

    ``source``: ``backup`` (the last backup is the database now) or ``empty`` (ds01d starts
    anew). ``condition`` is what the database was (``damaged: …``); ``kept_as`` where it
    and its WAL were put aside; ``backup_age_seconds`` the backup's age at the restore;
    ``dropped_intents``: creates in flight when the backup was taken, whose containers
    are kept (rolling them back now could remove a container completed since).
    """

    source: RestoreSource
    at: str
    by: str
    database: str
    condition: str
    kept_as: list[str] = field(default_factory=list)
    backup: str | None = None
    backup_age_seconds: float | None = None
    dropped_intents: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _condition_words(condition: DbCondition) -> str:
    return condition.kind + (f": {condition.detail}" if condition.detail else "")


def _move_aside(db_path: Path, tag: str) -> list[str]:
    """Rename the database and its WAL files to ``<name>.<tag>[-wal|-shm]``; their new paths."""
    kept = []
    for suffix in ("", *_COMPANIONS):
        source = db_path.with_name(db_path.name + suffix)
        if source.exists():
            target = db_path.with_name(f"{db_path.name}.{tag}{suffix}")
            source.rename(target)
            kept.append(str(target))
    return kept


def _verified_backup(db_path: Path) -> BackupInfo:
    info = backup_info(db_path)
    if info is None:
        raise NotFound(
            f"There is no backup of {db_path} ({backup_path(db_path)}). To start anew, "
            f"accepting the loss: `{START_EMPTY_COMMAND}`."
        )
    condition = examine(Path(info.path), "integrity_check")
    if condition.kind != "healthy":
        raise SystemFault(
            f"The backup {condition.describe(info.path)}; nothing was changed. To start anew, "
            f"accepting the loss: `{START_EMPTY_COMMAND}`."
        )
    return info


def _copy_without_intents(backup: Path, db_path: Path) -> list[str]:
    """Put a copy of ``backup`` in place as ``db_path``; drop its create intents (see
    ``RestoreRecord``) and return the containers they named."""
    temporary = _temporary_next_to(db_path)
    try:
        shutil.copyfile(backup, temporary)
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            rows = db.execute("SELECT docker_name FROM create_intents").fetchall()
            db.execute("DELETE FROM create_intents")
        finally:
            db.close()
        _put_in_place(temporary, db_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return sorted(str(name) for (name,) in rows)


def restore(
    db_path: Path, *, empty: bool, force: bool, by: str, now: datetime
) -> RestoreRecord:
    """Replace the state database of a stopped ds01d with its last backup (or, ``empty``,
    with nothing: ds01d starts anew), keeping the old files aside; record it for ds01d.

    Refuses while ds01d runs (``StateDirBusy``), when the database is healthy unless
    ``force`` (``Conflict``), and when there is no sound backup (``NotFound``,
    ``SystemFault``), changing nothing then.
    """
    state_dir = db_path.parent
    fd = lock_state_dir(state_dir)
    try:
        condition = examine(db_path)
        if condition.kind == "healthy" and not force:
            info = backup_info(db_path)
            since = f" since the backup ({info.describe()})" if info else ""
            raise Conflict(
                f"{db_path} is healthy: restoring would lose every change{since}. "
                "Add --force to restore anyway."
            )
        info = None if empty else _verified_backup(db_path)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        tag = ("replaced-" if condition.kind == "healthy" else "damaged-") + stamp
        kept = _move_aside(db_path, tag)
        dropped = [] if info is None else _copy_without_intents(Path(info.path), db_path)
        record = RestoreRecord(
            source="empty" if empty else "backup",
            at=now.isoformat(timespec="seconds"),
            by=by,
            database=str(db_path),
            condition=_condition_words(condition),
            kept_as=kept,
            backup=None if info is None else info.path,
            backup_age_seconds=None if info is None else round(info.age_seconds),
            dropped_intents=dropped,
        )
        marker = state_dir / MARKER_FILE
        temporary = _temporary_next_to(marker)
        temporary.write_text(json.dumps(record.to_dict(), indent=2) + "\n", encoding="utf-8")
        _put_in_place(temporary, marker)
        return record
    finally:
        os.close(fd)


def read_restore_record(state_dir: Path) -> dict[str, Any] | None:
    """What the last ``ds01 admin state restore`` left for ds01d (``None``: nothing, or
    an unreadable file, which is then treated as no record)."""
    try:
        data = json.loads((state_dir / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clear_restore_record(state_dir: Path) -> None:
    (state_dir / MARKER_FILE).unlink(missing_ok=True)


def restore_hint(db_path: Path) -> str:
    """The admin's way out of a damaged database, with the backup's age."""
    info = backup_info(db_path)
    if info is None:
        return f"Stop ds01d and start anew, accepting the loss: `{START_EMPTY_COMMAND}`."
    return (
        f"Stop ds01d and restore the last backup ({format_duration(info.age_seconds)} old): "
        f"`{RESTORE_COMMAND}`."
    )


__all__ = [
    "BACKUP_SUFFIX",
    "MARKER_FILE",
    "RestoreRecord",
    "StateDirBusy",
    "backup_info",
    "backup_path",
    "clear_restore_record",
    "examine",
    "is_damage",
    "lock_state_dir",
    "read_restore_record",
    "restore",
    "restore_hint",
    "state_dir_in_use",
    "write_backup",
]
