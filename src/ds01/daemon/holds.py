"""Counted holds, by key (thread-safe): how many of something each user, container or
other key holds now, each hold given back exactly once however its holder ends."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Holds(Generic[K]):
    """The holds of each key; ``take`` one, call what it returns to give it back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[K] = Counter()

    def count(self, key: K | None = None) -> int:
        """How many holds ``key`` has now (``None``: all keys together)."""
        with self._lock:
            return self._held.total() if key is None else self._held[key]

    def take(
        self, key: K, refusal: Callable[[int, int], Exception | None] | None = None
    ) -> Callable[[], None]:
        """A hold for ``key``, unless ``refusal`` (given the key's holds and all holds now,
        under the same lock) returns an exception: then that is raised. Returns the
        hold's release, which gives it back on its first call only."""
        with self._lock:
            refused = refusal(self._held[key], self._held.total()) if refusal else None
            if refused is not None:
                raise refused
            self._held[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._held[key] -= 1
                    if self._held[key] <= 0:
                        del self._held[key]

        return release


__all__ = ["Holds"]
