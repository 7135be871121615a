"""Slurm's accounting through ``sacctmgr``, and users' Unix groups through NSS, for
``ds01 admin slurm sync``; the driver's MIG capability minors for ``ds01 admin slurm gres``.

``sacctmgr`` is always run with an argument list (never a shell), ``-i`` (no question asked)
for changes and ``--parsable2 --noheader`` for listings; the names in its arguments were
checked by ``ds01.core.slurm_sync``. It finds its cluster and slurmdbd the usual way:
``SLURM_CONF`` or ``/etc/slurm/slurm.conf``.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Collection, Sequence

from ds01.core.slurm_gres import MIG_MINORS_FILE
from ds01.core.slurm_sync import Accounting, Change, current_accounting
from ds01.errors import SlurmError

SACCTMGR = "sacctmgr"
#: Seconds one sacctmgr call may take (slurmdbd answers in milliseconds when it is up).
SACCTMGR_TIMEOUT_SECONDS = 60

_LISTINGS = (
    ("qos", "format=Name,Priority,MaxTRESPU,MaxJobsPU,MaxWall"),
    ("account", "format=Account,Organization"),
    ("assoc", "format=Account,User,QOS,DefaultQOS"),
    ("user", "format=User,DefaultAccount"),
)


def _sacctmgr(args: Sequence[str]) -> str:
    """``sacctmgr ARGS``' standard output; ``SlurmError`` with its message when it fails."""
    if shutil.which(SACCTMGR) is None:
        raise SlurmError(
            "sacctmgr is not installed here: install Slurm's client (Debian: slurm-client)."
        )
    try:
        done = subprocess.run(
            [SACCTMGR, *args],
            capture_output=True,
            text=True,
            timeout=SACCTMGR_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(
            f"sacctmgr {' '.join(args)} did not answer in {SACCTMGR_TIMEOUT_SECONDS} s: "
            "is slurmdbd running?"
        ) from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise SlurmError(
            f"sacctmgr {' '.join(args)} failed (exit {done.returncode}): "
            + (" / ".join(said[-3:]) or "no message"),
            details={"argv": [SACCTMGR, *args], "stderr": done.stderr[-2000:]},
        )
    return done.stdout


def read_accounting() -> Accounting:
    """What ds01 owns in Slurm's accounting now (``ds01.core.slurm_sync.current_accounting``)."""
    texts = [
        _sacctmgr(["--parsable2", "--noheader", "show", entity, fmt]) for entity, fmt in _LISTINGS
    ]
    return current_accounting(*texts)


def apply_changes(changes: Sequence[Change]) -> int:
    """Run each change, in order, as ``sacctmgr -i``; stops at the first that fails
    (``SlurmError``, naming it). Returns how many ran."""
    for done, change in enumerate(changes):
        try:
            _sacctmgr(["-i", *change.argv()])
        except SlurmError as exc:
            raise SlurmError(
                f"{exc.message} ({done} of {len(changes)} change(s) made before it; run the "
                "sync again once the cause is fixed)",
                details=exc.details,
            ) from exc
    return len(changes)


def read_mig_minors() -> str:
    """The driver's list of MIG capability minors; empty without an NVIDIA driver."""
    try:
        with open(MIG_MINORS_FILE, encoding="utf-8") as stream:
            return stream.read()
    except OSError:
        return ""


def unix_group_members(groups: Collection[str]) -> dict[str, set[str]]:
    """Unix group → its members as NSS lists them: the group's member list and the users whose
    primary group it is. A group NSS does not know has none."""
    members: dict[str, set[str]] = {}
    by_gid: dict[int, str] = {}
    for name in groups:
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            continue
        members[name] = set(entry.gr_mem)
        by_gid[entry.gr_gid] = name
    if by_gid:
        for user in pwd.getpwall():
            if user.pw_gid in by_gid:
                members[by_gid[user.pw_gid]].add(user.pw_name)
    return members


def unix_groups_of(user: str) -> list[str]:
    """The names of ``user``'s Unix groups (primary and supplementary); none for a user NSS
    does not know."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return []
    names = []
    for gid in os.getgrouplist(user, entry.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


__all__ = [
    "apply_changes",
    "read_accounting",
    "read_mig_minors",
    "unix_group_members",
    "unix_groups_of",
]
