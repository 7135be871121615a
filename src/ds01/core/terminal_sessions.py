"""The terminal sessions ds01d keeps (pure): which are live, which one to forget when the
table is full, and how many live ones a user may hold.

A session is *live* from its opening until ds01d stops relaying it (its program ended,
its client went away before the relay began, or ds01d stops); it is then *finished*, kept
only so that its owner can still read its exit code. At most ``MAX_SESSIONS`` are kept:
past that, the oldest finished session of the user opening one is forgotten, else the
oldest finished one of anyone; a live session is never forgotten, so no user's terminals
make another user's resize or exit code ``NotFound``. One user holds at most
``MAX_LIVE_SESSIONS_PER_USER`` live sessions (HTTP 429 past that), so no user fills the
table with live ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from ds01.errors import ServerBusy, Throttled

#: Most sessions kept, live or finished.
MAX_SESSIONS = 1000
#: Most live sessions one user may hold (as many as their requests that wait may be).
MAX_LIVE_SESSIONS_PER_USER = 16

V = TypeVar("V")


@dataclass
class _Kept(Generic[V]):
    uid: int
    value: V
    live: bool = True


class SessionTable(Generic[V]):
    """The kept sessions, oldest first: each a uid, a value (what the caller keeps of it)
    and whether it is live. Not thread-safe (its owner holds a lock around it)."""

    def __init__(self) -> None:
        self._kept: dict[str, _Kept[V]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def live(self, uid: int) -> int:
        """How many live sessions ``uid`` holds."""
        return sum(1 for kept in self._kept.values() if kept.live and kept.uid == uid)

    def refusal(self, uid: int) -> Throttled | None:
        """Why ``uid`` may not open another session now (HTTP 429); ``None`` if they may."""
        live = self.live(uid)
        if live < MAX_LIVE_SESSIONS_PER_USER:
            return None
        return Throttled(
            f"You have {live} terminals open in ds01d, the most one user may "
            f"({MAX_LIVE_SESSIONS_PER_USER}). Close one (exit its shell) and try again."
        )

    def add(self, session_id: str, uid: int, value: V) -> str | None:
        """Keep a new live session; the id of the finished session forgotten to make room
        (``None``: none was).

        Raises:
            Throttled: ``uid`` holds ``MAX_LIVE_SESSIONS_PER_USER`` live sessions.
            ServerBusy: the table is full of live sessions (HTTP 503).
        """
        refused = self.refusal(uid)
        if refused is not None:
            raise refused
        forgotten = None
        if len(self._kept) >= MAX_SESSIONS:
            forgotten = self.to_forget(uid)
            if forgotten is None:
                raise ServerBusy(
                    f"ds01d has {len(self._kept)} terminals open, the most it keeps; try "
                    "again when some have ended."
                )
            del self._kept[forgotten]
        self._kept[session_id] = _Kept(uid, value)
        return forgotten

    def to_forget(self, uid: int) -> str | None:
        """The session forgotten first: ``uid``'s oldest finished one, else the oldest
        finished one of anyone; ``None`` when all are live."""
        finished = [(sid, kept.uid) for sid, kept in self._kept.items() if not kept.live]
        own = [sid for sid, owner in finished if owner == uid]
        return own[0] if own else finished[0][0] if finished else None

    def end(self, session_id: str) -> None:
        """The session is finished (nothing if it is not kept)."""
        kept = self._kept.get(session_id)
        if kept is not None:
            kept.live = False

    def get(self, session_id: str) -> tuple[int, V] | None:
        """A kept session's uid and value."""
        kept = self._kept.get(session_id)
        return None if kept is None else (kept.uid, kept.value)


__all__ = ["MAX_LIVE_SESSIONS_PER_USER", "MAX_SESSIONS", "SessionTable"]
