"""Spool files on ds01d's state disk: unlinked files that stop growing when the disk runs
low (``ds01.core.spool_room``), and say when they are closed (the daemon's count of the
spools a user holds goes down then, however the file was closed)."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ds01.core.spool_room import CHECK_EVERY_BYTES, space_refusal


def free_bytes(where: Path | int) -> int:
    """Bytes an unprivileged writer may still write on the file system of ``where`` (a
    path, or an open file's descriptor)."""
    stat = os.fstatvfs(where) if isinstance(where, int) else os.statvfs(where)
    return stat.f_bavail * stat.f_frsize


def check_space(where: Path | int) -> None:
    """Raise ``NoSpace`` when the file system of ``where`` has less free than ds01 keeps."""
    refusal = space_refusal(free_bytes(where))
    if refusal is not None:
        raise refusal


def _nothing() -> None:
    pass


class SpoolFile(io.BufferedRandom):
    """An unlinked file of ``directory``, read and written like ``tempfile.TemporaryFile``'s.
    Every ``CHECK_EVERY_BYTES`` written it looks at the free space again (``NoSpace`` below
    the floor, the write not done); ``on_close`` is called once, when it is closed (or
    collected unclosed)."""

    def __init__(self, directory: Path, on_close: Callable[[], None]) -> None:
        self._on_close = on_close  # first: a file that failed to open is closed too
        self._unchecked = 0
        raw = tempfile.TemporaryFile(dir=directory, buffering=0)  # noqa: SIM115 (kept open)
        super().__init__(raw)

    def write(self, data: Any, /) -> int:
        self._unchecked += memoryview(data).nbytes
        if self._unchecked >= CHECK_EVERY_BYTES:
            self._unchecked = 0
            check_space(self.fileno())
        return super().write(data)

    def close(self) -> None:
        try:
            super().close()
        finally:
            on_close, self._on_close = self._on_close, _nothing
            on_close()


__all__ = ["SpoolFile", "check_space", "free_bytes"]
