"""A full or read-only disk is recognised in SQLite's and the OS's errors and said plainly
(``ds01.runtime.storage_fault``); other errors are left alone."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from ds01.errors import StorageFault
from ds01.runtime.storage_fault import condition_of, mount_point, storage_fault


def test_no_space_conditions_are_recognised() -> None:
    assert condition_of(sqlite3.OperationalError("database or disk is full")) == "full"
    assert (
        condition_of(sqlite3.OperationalError("attempt to write a readonly database"))
        == "read-only"
    )
    assert condition_of(OSError(errno.ENOSPC, "No space left on device")) == "full"
    assert condition_of(OSError(errno.EDQUOT, "Disk quota exceeded")) == "full"
    assert condition_of(OSError(errno.EROFS, "Read-only file system")) == "read-only"
    assert condition_of(sqlite3.OperationalError("no such table: queue")) is None
    assert condition_of(OSError(errno.EACCES, "Permission denied")) is None
    assert condition_of(ValueError("database or disk is full")) is None


def test_the_fault_names_the_directory_its_file_system_and_what_to_do() -> None:
    fault = storage_fault(sqlite3.OperationalError("database or disk is full"), Path("/proc/x"))
    assert isinstance(fault, StorageFault) and fault.exit_code == 1 and fault.http_status == 507
    assert "the file system of /proc/x (mounted on /proc) is full" in fault.message
    assert "free space" in fault.message and "retries by itself" in fault.message
    assert fault.details["condition"] == "full"

    named = storage_fault(OSError(errno.EROFS, "Read-only file system", "/proc/a/b"), Path("/"))
    assert named is not None and "/proc/a (mounted on /proc) is read-only" in named.message
    assert "remount,rw /proc" in named.message and "once it is writable" in named.message

    assert storage_fault(KeyError("x"), Path("/")) is None
    assert storage_fault(fault, Path("/elsewhere")) is fault


def test_the_mount_point_of_a_path_that_does_not_exist_yet(tmp_path: Path) -> None:
    assert mount_point(Path("/")) == Path("/")
    assert mount_point(Path("/proc/self")) == Path("/proc")
    assert mount_point(tmp_path / "not" / "yet") == mount_point(tmp_path)
