"""Messages to a user's terminals, the way ``write(1)`` sends them.

Used when something the user waits for happens while their command is no longer running
(a queued container started). A terminal receives the message only if it belongs to the
user and accepts messages (its group-write bit, which ``mesg y`` sets).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PTS_DIR = Path("/dev/pts")


def user_terminals(uid: int, pts_dir: Path = PTS_DIR) -> list[Path]:
    """The pseudo-terminals owned by ``uid`` that accept messages."""
    found = []
    try:
        entries = list(pts_dir.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        if st.st_uid == uid and stat.S_ISCHR(st.st_mode) and st.st_mode & stat.S_IWGRP:
            found.append(entry)
    return found


def notify_terminals(uid: int, message: str, pts_dir: Path = PTS_DIR) -> int:
    """Write ``message`` on each of ``uid``'s terminals; return how many got it."""
    text = ("\r\n" + message.replace("\n", "\r\n") + "\r\n").encode(errors="replace")
    sent = 0
    for terminal in user_terminals(uid, pts_dir):
        try:
            fd = os.open(terminal, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(fd, text)
            sent += 1
        except OSError as exc:
            log.debug("cannot write to %s: %s", terminal, exc)
        finally:
            os.close(fd)
    return sent


__all__ = ["notify_terminals", "user_terminals"]
