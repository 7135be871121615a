"""What ``/proc`` tells about the processes of a container, for idle detection.

A pure parsing function over the text of a ``/proc`` file, and a thin reader around it that
fails soft (``None``) since processes come and go while they are read.

- Network bytes: every process of a container shares its network namespace, so the
  ``/proc/<pid>/net/dev`` of any one of them counts the container's traffic (all interfaces
  but ``lo``).
- A process's cgroup (``/proc/<pid>/cgroup``: which container it is in) and owner, for the
  processes the GPU driver lists (``ds01.core.gpu_use``).
- The host's boot id: readings of the monotonic clock compare only within one boot (the
  lifecycle loop tells a jump of the wall clock from time that passed with it).

Interactive sessions are *not* read from here: a process in a container may take any name
(``sshd: alice@pts/0``) and outlive the terminal that started it, so nothing the container
shows proves that someone is at a terminal (``daemon.sampler`` counts ds01d's own).
"""

from __future__ import annotations

import pwd
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def parse_net_dev(text: str) -> int:
    """Received + transmitted bytes over every interface but ``lo`` in a ``net/dev`` text."""
    total = 0
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        total += int(fields[0]) + int(fields[8])
    return total


def network_bytes(pids: Iterable[int], proc: Path = PROC) -> int | None:
    """The container's network traffic so far (bytes), read through any of its ``pids``."""
    for pid in pids:
        try:
            return parse_net_dev((proc / str(pid) / "net" / "dev").read_text())
        except (OSError, ValueError):
            continue
    return None


def process_cgroup(pid: int, proc: Path = PROC) -> str | None:
    """The text of ``/proc/<pid>/cgroup``; ``None`` when the process is gone."""
    try:
        return (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None


def process_user(pid: int, proc: Path = PROC) -> str | None:
    """The name of the user owning process ``pid`` (its uid as text when the uid has no
    name); ``None`` when the process is gone."""
    try:
        uid = (proc / str(pid)).stat().st_uid
    except OSError:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def boot_id(proc: Path = PROC) -> str:
    """The host's boot id (changes at every boot); ``""`` if it cannot be read."""
    try:
        return (proc / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


__all__ = ["boot_id", "network_bytes", "parse_net_dev", "process_cgroup", "process_user"]
