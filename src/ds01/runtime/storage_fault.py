"""Tell "the disk is full" (or read-only) apart from other failures, and say it plainly.

ds01d writes its state database, its audit log, notices and staging directories under
``/var/lib/ds01`` and ``/var/log/ds01``. When their file system fills up, SQLite says
"database or disk is full" and the OS says ``ENOSPC``: unexpected exceptions that used to
reach users as "internal error" and the log as a traceback a pass. :func:`storage_fault`
turns them into one :class:`~ds01.errors.StorageFault` whose message names the directory,
the file system it lives on and what to do; anything else it leaves alone (``None``).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Literal

from ds01.errors import StorageFault

Condition = Literal["full", "read-only"]

#: SQLite's primary result codes (the low byte of an extended code).
_SQLITE_READONLY = 8
_SQLITE_FULL = 13
#: What SQLite says when its result code is not available (Python before 3.11).
_SQLITE_MESSAGES: dict[str, Condition] = {
    "database or disk is full": "full",
    "attempt to write a readonly database": "read-only",
}
_ERRNOS: dict[int, Condition] = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EROFS: "read-only",
}


def condition_of(exc: BaseException) -> Condition | None:
    """``"full"`` or ``"read-only"`` when ``exc`` says ds01d's files cannot be written for
    lack of space (or of a writable file system); ``None`` for anything else."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            primary = code & 0xFF
            if primary == _SQLITE_FULL:
                return "full"
            if primary == _SQLITE_READONLY:
                return "read-only"
        return _SQLITE_MESSAGES.get(str(exc))
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNOS.get(exc.errno)
    return None


def storage_fault(exc: BaseException, where: Path) -> StorageFault | None:
    """The plain ``StorageFault`` that ``exc`` means for the directory ``where``, or ``None``
    when ``exc`` is no such condition. An existing ``StorageFault`` is returned as it is;
    an ``OSError`` that names its own file is reported for that file's directory."""
    if isinstance(exc, StorageFault):
        return exc
    condition = condition_of(exc)
    if condition is None:
        return None
    if isinstance(exc, OSError) and exc.filename:
        where = Path(os.fsdecode(exc.filename)).parent
    return StorageFault(
        storage_message(where, condition),
        details={"directory": str(where), "condition": condition, "error": str(exc)},
    )


def storage_message(where: Path, condition: Condition) -> str:
    """What is wrong and what to do, in one sentence for users and admins alike."""
    mount = mount_point(where)
    on = f"the file system of {where}" + ("" if mount == where else f" (mounted on {mount})")
    if condition == "read-only":
        state = f"{on} is read-only"
        fix = f"An admin must make it writable again (e.g. `mount -o remount,rw {mount}`)"
        then = "once it is writable"
    else:
        state = f"{on} is full"
        fix = f"An admin must free space on it (`df -h {where}` shows it)"
        then = "once there is room"
    return (
        f"ds01d cannot write its files: {state}. {fix}; ds01d retries by itself, so try "
        f"again {then}."
    )


def mount_point(path: Path) -> Path:
    """The mount point of the file system ``path`` is on (``path`` itself for a mount
    point; the nearest existing ancestor is used while ``path`` does not exist)."""
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current


__all__ = ["Condition", "condition_of", "mount_point", "storage_fault", "storage_message"]
