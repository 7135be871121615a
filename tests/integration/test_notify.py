"""Messages on a user's terminals (``ds01.runtime.notify``), on real pseudo-terminals.

Like ``write(1)``: a terminal gets the message only if it is the user's and accepts
messages (its group-write bit, set by ``mesg y``).
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from typing import Any

import pytest

from ds01.runtime.notify import notify_terminals


@pytest.fixture
def terminals(unix_users: dict[str, Any]) -> Iterator[dict[str, int]]:
    """Three terminals, by name, as master file descriptors to read from: alice's with
    ``mesg y``, alice's with ``mesg n``, and bob's with ``mesg y``."""
    opened = []
    masters = {}
    for name, user, mode in (
        ("alice-open", "alice", 0o620),
        ("alice-closed", "alice", 0o600),
        ("bob-open", "bob", 0o620),
    ):
        master, slave = os.openpty()
        path = os.ttyname(slave)
        os.chown(path, unix_users[user].pw_uid, -1)
        os.chmod(path, mode)
        opened += [master, slave]
        masters[name] = master
    yield masters
    for fd in opened:
        os.close(fd)


def received(master: int) -> str:
    if not select.select([master], [], [], 0.5)[0]:
        return ""
    return os.read(master, 4096).decode(errors="replace")


def test_only_the_users_terminals_that_accept_messages_get_it(
    terminals: dict[str, int], unix_users: dict[str, Any]
) -> None:
    sent = notify_terminals(unix_users["alice"].pw_uid, "ds01: your container started")

    assert sent == 1
    assert "ds01: your container started" in received(terminals["alice-open"])
    assert received(terminals["alice-closed"]) == ""
    assert received(terminals["bob-open"]) == ""
