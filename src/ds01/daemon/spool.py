"""The spool files ds01d holds for its users' uploads (build contexts, ``docker cp`` into a
container, ``docker load``): counted per user and in all, and taken *before* the first
byte of an upload is read (``ds01.core.spool_room`` says how many and why).

A spool is taken with :meth:`Spools.take`, which refuses (``Throttled``, HTTP 429; or
``NoSpace``, HTTP 507 when the state disk is low) or returns the open, empty spool file;
the user holds it until the file is closed, on every path: a copy passed on, a refused
upload, a build's context handed to Docker (its job closes it once Docker has read it).
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

from ds01.core.spool_room import spool_refusal
from ds01.daemon.holds import Holds
from ds01.runtime.spool_file import SpoolFile, check_space


class Spools:
    """The spool files of one ds01d, by uid. Thread-safe."""

    def __init__(self) -> None:
        self._holds: Holds[int] = Holds()

    def held(self, uid: int | None = None) -> int:
        """How many spool files ``uid`` holds now (``None``: all users together)."""
        return self._holds.count(uid)

    def take(self, uid: int, directory: Path) -> SpoolFile:
        """A new spool file of ``directory`` for ``uid``, counted until it is closed.

        Raises:
            Throttled: ``uid`` holds as many as one user may, or all users as many as
                ds01d holds.
            NoSpace: the file system of ``directory`` has less free than ds01 keeps.
        """
        release = self._holds.take(uid, spool_refusal)
        try:
            check_space(directory)
            return SpoolFile(directory, release)
        except BaseException:
            release()
            raise


_TABLES: weakref.WeakKeyDictionary[object, Spools] = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def spools_of(owner: object) -> Spools:
    """The spool count of one daemon (``owner``: its service), made on first use."""
    with _TABLES_LOCK:
        return _TABLES.setdefault(owner, Spools())


__all__ = ["Spools", "spools_of"]
