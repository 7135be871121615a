"""Messages on a user's terminals (``ds01.runtime.notify``), on real pseudo-terminals.

Like ``write(1)``: a terminal gets the message only if it is the user's and accepts
messages (its group-write bit, set by ``mesg y``), as checked on what was opened: a pts
number given to another user after the look gets nothing.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.runtime.notify import notify_terminals, user_terminals, write_terminal

#: ioctls of a pseudo-terminal master (Linux): unlock its slave, and the slave's number.
TIOCSPTLCK, TIOCGPTN = 0x40045431, 0x80045430


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


@pytest.fixture
def pts_dir(tmp_path: Path) -> Iterator[Path]:
    """A devpts of the test's own (``newinstance``): its pts numbers go to no one else."""
    path = tmp_path / "pts"
    path.mkdir()
    options = "newinstance,ptmxmode=0666,mode=0620"
    subprocess.run(["mount", "-t", "devpts", "-o", options, "devpts", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=True)


def new_terminal(pts_dir: Path, uid: int, mode: int) -> tuple[int, int, Path]:
    """A new pseudo-terminal in ``pts_dir`` (the lowest free number), given to ``uid``:
    its master, its slave (open, as a login's) and the slave's path."""
    master = os.open(pts_dir / "ptmx", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    path = pts_dir / str(struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0])
    os.chown(path, uid, -1)
    os.chmod(path, mode)
    return master, os.open(path, os.O_RDWR | os.O_NOCTTY), path


def test_a_pts_number_reused_after_the_look_gets_nothing(
    unix_users: dict[str, Any], pts_dir: Path
) -> None:
    alice, bob = unix_users["alice"].pw_uid, unix_users["bob"].pw_uid
    *alices, path = new_terminal(pts_dir, alice, 0o620)
    assert user_terminals(alice, pts_dir) == [path]
    for fd in alices:  # alice logs out; bob logs in, messages off, on the same number
        os.close(fd)
    *bobs, reused = new_terminal(pts_dir, bob, 0o600)
    try:
        assert reused == path

        assert not write_terminal(path, alice, "ds01: your container started")

        assert received(bobs[0]) == ""
    finally:
        for fd in bobs:
            os.close(fd)
