"""What ``/proc`` tells about the processes of a container, for idle detection.

Pure parsing functions over the text of ``/proc`` files, and thin readers around them; all
readers fail soft (``None`` or an empty result) since processes come and go while they are
read.

- Network bytes: every process of a container shares its network namespace, so the
  ``/proc/<pid>/net/dev`` of any one of them counts the container's traffic (all interfaces
  but ``lo``).
- Interactive sessions: a ``docker exec`` starts a process whose parent is outside the
  container (the runtime's shim), like the container's own main process; any further such
  "root" process is an exec session. An SSH login into the container shows as an
  ``sshd: user…`` session process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


def parse_stat(text: str) -> tuple[str, int] | None:
    """``(comm, ppid)`` from a ``/proc/<pid>/stat`` text (comm may hold spaces and parens)."""
    start, end = text.find("("), text.rfind(")")
    if start < 0 or end < start:
        return None
    fields = text[end + 2 :].split()
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return text[start + 1 : end], int(fields[1])


def count_sessions(parents: Mapping[int, int], commands: Mapping[int, str]) -> int:
    """Interactive sessions among a container's processes.

    ``parents``: pid → parent pid of every process in the container; ``commands``: pid →
    command line. Processes whose parent is outside the container are the main process and
    one per ``docker exec``; SSH logins are ``sshd: user…`` processes.
    """
    roots = sum(1 for ppid in parents.values() if ppid not in parents)
    ssh = sum(1 for command in commands.values() if command.startswith("sshd: ") and "@" in command)
    return max(roots - 1, 0) + ssh


def network_bytes(pids: Iterable[int], proc: Path = PROC) -> int | None:
    """The container's network traffic so far (bytes), read through any of its ``pids``."""
    for pid in pids:
        try:
            return parse_net_dev((proc / str(pid) / "net" / "dev").read_text())
        except (OSError, ValueError):
            continue
    return None


def sessions(pids: Iterable[int], proc: Path = PROC) -> int:
    """Interactive sessions (exec and SSH) among ``pids``, the container's processes."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for pid in pids:
        try:
            parsed = parse_stat((proc / str(pid) / "stat").read_text())
            command = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if parsed is None:
            continue
        parents[pid] = parsed[1]
        commands[pid] = command.replace(b"\0", b" ").decode(errors="replace").strip()
    return count_sessions(parents, commands)


__all__ = ["count_sessions", "network_bytes", "parse_net_dev", "parse_stat", "sessions"]
