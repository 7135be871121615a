"""Telling a user something while no command of theirs runs (a queued container started,
an idle container will be stopped).

- Terminals, the way ``write(1)`` does: a terminal receives the message only if it belongs
  to the user and accepts messages (its group-write bit, which ``mesg y`` sets), checked
  again on the descriptor opened, so a pts number reused by another user meanwhile is not
  written to.
- A notice file in the container's workspace, written by a child process with the user's
  ids (never by root), in a directory reached without following symlinks, by a rename
  that never writes through what the user may have put under the notice's name
  (``ds01.runtime.userfs``).
- A webhook: one JSON object POSTed to a URL an admin configured (Slack, Teams and Matrix
  bridges take such "incoming webhooks").
"""

from __future__ import annotations

import json
import logging
import os
import stat
import urllib.request
from pathlib import Path
from typing import Any

from ds01.runtime.userfs import UserIds, replace_file

log = logging.getLogger(__name__)

PTS_DIR = Path("/dev/pts")


def user_terminals(uid: int, pts_dir: Path = PTS_DIR) -> list[Path]:
    """The pseudo-terminals owned by ``uid`` that accept messages, as they stand now (the
    writer checks again what it opened: ``write_terminal``)."""
    found = []
    try:
        entries = list(pts_dir.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            st = entry.lstat()
        except OSError:
            continue
        if _accepts_messages(st, uid):
            found.append(entry)
    return found


def _accepts_messages(st: os.stat_result, uid: int) -> bool:
    """A terminal of ``uid``'s with messages on (``mesg y``: its group-write bit)."""
    return st.st_uid == uid and stat.S_ISCHR(st.st_mode) and bool(st.st_mode & stat.S_IWGRP)


def notify_terminals(uid: int, message: str, pts_dir: Path = PTS_DIR) -> int:
    """Write ``message`` on each of ``uid``'s terminals; return how many got it."""
    return sum(write_terminal(t, uid, message) for t in user_terminals(uid, pts_dir))


def write_terminal(terminal: Path, uid: int, message: str) -> bool:
    """Write ``message`` on ``terminal`` if, as opened, it is ``uid``'s and accepts
    messages; whether it got it.

    The terminal is opened first (never through a symbolic link, never becoming ds01d's
    controlling terminal, never blocking), then what was opened is checked: a pts number
    freed and given to another user since ``user_terminals`` looked, or one whose owner
    turned messages off meanwhile, gets nothing.
    """
    text = ("\r\n" + message.replace("\n", "\r\n") + "\r\n").encode(errors="replace")
    flags = os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(terminal, flags)
    except OSError:
        return False
    try:
        if not _accepts_messages(os.fstat(fd), uid):
            return False
        os.write(fd, text)
    except OSError as exc:
        log.debug("cannot write to %s: %s", terminal, exc)
        return False
    finally:
        os.close(fd)
    return True


#: The notice file in a container's workspace (``/workspace/.ds01-notice`` inside).
NOTICE_FILE = ".ds01-notice"
WEBHOOK_TIMEOUT_SECONDS = 5.0
#: The longest a notice file may take (the lifecycle pass waits for it; a user's directory
#: could be on a filesystem that answers slowly).
NOTICE_TIMEOUT_SECONDS = 2.0
#: The most of a failure's reason that is logged.
MAX_REASON_CHARS = 200


def write_notice(directory: Path, user: UserIds, text: str) -> str | None:
    """Make ``directory/.ds01-notice`` hold ``text``, written *as the user* (never as root);
    ``None`` once written, else why not (also logged): e.g. the directory is not the
    user's, is reached through a symlink or is not writable to them, or the notice's name
    holds something else than a regular file with a single link (a hard link to another
    file, a FIFO, a directory), which is left as it is (``ds01.runtime.userfs``). Never
    raises an ``OSError``, never blocks longer than ``NOTICE_TIMEOUT_SECONDS``."""
    try:
        replace_file(
            directory,
            NOTICE_FILE,
            text.encode(errors="replace"),
            user,
            mode=0o644,
            timeout_seconds=NOTICE_TIMEOUT_SECONDS,
        )
    except OSError as exc:
        reason = str(exc.strerror or exc)[:MAX_REASON_CHARS]
        log.info("no notice in %s: %s", directory, reason)
        return reason
    return None


def post_webhook(url: str, payload: dict[str, Any]) -> bool:
    """POST ``payload`` as JSON to ``url`` (at most ``WEBHOOK_TIMEOUT_SECONDS``); fails soft."""
    request = urllib.request.Request(  # noqa: S310 - an admin-configured http(s) URL
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS):  # noqa: S310
            return True
    except (OSError, ValueError) as exc:
        log.warning("webhook %s failed: %s", url, exc)
        return False


__all__ = [
    "NOTICE_FILE",
    "notify_terminals",
    "post_webhook",
    "user_terminals",
    "write_notice",
    "write_terminal",
]
