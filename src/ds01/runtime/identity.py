"""Unix accounts and socket peers: kernel credentials of the peer, names and groups from NSS.

Identity never comes from the request. ``SO_PEERCRED`` gives the uid the kernel knows for
the process at the other end of the unix socket; NSS (``pwd``/``grp``, so LDAP and SSSD
work) turns it into a name, a home directory and Unix groups.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ds01.errors import NotFound, PermissionDenied

#: Where shadow-utils keep the first uid of an ordinary (non-system) account.
LOGIN_DEFS = Path("/etc/login.defs")
#: The first ordinary uid when login.defs names none (Debian's and Red Hat's default).
DEFAULT_UID_MIN = 1000


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class UnixUser:
    """A Unix account as NSS reports it."""

    name: str
    uid: int
    gid: int
    home: Path
    groups: tuple[str, ...]  # names of every group the user is in, primary first
    gids: tuple[int, ...] = ()  # ids of every group the user is in, primary first


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Kernel-verified pid, uid and gid of the process connected to ``sock``."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def _group_ids(name: str, gid: int) -> tuple[int, ...]:
    """Every group id of ``name`` as NSS reports it, primary (``gid``) first."""
    return tuple(dict.fromkeys([gid, *os.getgrouplist(name, gid)]))


def _group_names(name: str, gid: int) -> tuple[str, ...]:
    names: list[str] = []
    for group_id in _group_ids(name, gid):
        try:
            group_name = grp.getgrgid(group_id).gr_name
        except KeyError:
            continue
        if group_name not in names:
            names.append(group_name)
    return tuple(names)


def user_by_uid(uid: int) -> UnixUser:
    """Look a uid up in NSS; a uid without an account may not use ds01."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError as exc:
        raise PermissionDenied(
            f"uid {uid} has no user account; ds01 serves named users only"
        ) from exc
    return UnixUser(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        home=Path(entry.pw_dir),
        groups=_group_names(entry.pw_name, entry.pw_gid),
        gids=_group_ids(entry.pw_name, entry.pw_gid),
    )


def user_by_name(name: str) -> UnixUser:
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise NotFound(f"No user named {name!r} on this machine.") from exc
    return user_by_uid(entry.pw_uid)


def member_uids(users: Iterable[str], groups: Iterable[str]) -> tuple[int, ...]:
    """The uids of the accounts ``users`` names and of every account that is, as NSS reports
    it now, a member of a group ``groups`` names: listed in the group's members or having it
    as primary group (sorted, each once; a name NSS does not know is left out). Membership
    as ``os.getgrouplist`` sees it, so as ds01d's check of a caller's groups; enumerates
    every account (``getpwall``) when a group is named."""
    names = set(users)
    gids = set()
    for group in groups:
        with contextlib.suppress(KeyError):
            entry = grp.getgrnam(group)
            gids.add(entry.gr_gid)
            names.update(entry.gr_mem)
    uids = (
        {account.pw_uid for account in pwd.getpwall() if account.pw_gid in gids} if gids else set()
    )
    for name in names:
        with contextlib.suppress(KeyError):
            uids.add(pwd.getpwnam(name).pw_uid)
    return tuple(sorted(uids))


def uid_min_in(login_defs: str) -> int:
    """The ``UID_MIN`` a ``login.defs`` text sets: the first uid of an ordinary account
    (below it, system accounts); ``DEFAULT_UID_MIN`` when unset or unreadable. The last
    setting wins, as in shadow-utils."""
    uid_min = DEFAULT_UID_MIN
    for line in login_defs.splitlines():
        match line.split():
            case ["UID_MIN", value, *_] if value.isascii() and value.isdigit():
                uid_min = int(value)
    return uid_min


def ordinary_uid_min(login_defs: Path = LOGIN_DEFS) -> int:
    """This machine's first ordinary uid (``uid_min_in`` of ``login_defs``; the default
    when the file is missing or unreadable)."""
    try:
        return uid_min_in(login_defs.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return DEFAULT_UID_MIN
