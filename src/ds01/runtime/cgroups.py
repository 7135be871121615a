"""The cgroup adapter: per-user aggregate limits on the user's cgroup parent, and counters.

Every container of a user lives under one parent, ``/ds01.slice/ds01-<group>.slice/
ds01-<group>-<user>.slice`` (``user_slice_path``). Limits written on that parent hold for
all the user's containers together (the kernel charges a container's usage to every
ancestor). Docker writes limits only on the container's own cgroup, so ds01 writes the
parent's:

============  =====================================  ==================  ===============
limit         cgroup v1 (cgroupfs driver)            cgroup v2           systemd driver
============  =====================================  ==================  ===============
CPUs          ``cpu.cfs_quota_us``/``cfs_period_us``  ``cpu.max``         ``CPUQuota=``
memory        ``memory.limit_in_bytes``               ``memory.max``      ``MemoryMax=``
processes     ``pids.max``                            ``pids.max``        ``TasksMax=``
============  =====================================  ==================  ===============

Unlimited is ``-1`` / ``max`` / ``infinity``. The version is detected from the cgroup root:
v2 when ``<root>/cgroup.controllers`` exists (the unified hierarchy is mounted there), v1
when ``<root>/memory`` does (hybrid hosts count as v1: their controllers are in v1).

The pure parts (paths, what to write, ``systemctl`` arguments, parsing counter files) are
functions; ``CgroupManager`` does the file I/O under an injected root, so tests can point
it at a temporary tree.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from ds01.errors import SystemFault

log = logging.getLogger(__name__)

CgroupVersion = Literal["v1", "v2"]
CgroupDriver = Literal["cgroupfs", "systemd"]

#: Where the cgroup hierarchies are mounted.
DEFAULT_ROOT = Path("/sys/fs/cgroup")
#: The top of ds01's tree; every user parent is two levels below it.
SLICE_ROOT = "ds01.slice"
#: CFS period written with a CPU total, in microseconds (the kernel's default).
CFS_PERIOD_US = 100_000
#: The smallest CFS quota the kernel accepts, in microseconds.
MIN_CFS_QUOTA_US = 1_000
#: Controllers an aggregate limit needs (v2 names; also the v1 hierarchies written).
CONTROLLERS = ("cpu", "memory", "pids")
SYSTEMCTL_TIMEOUT_SECONDS = 30.0

#: Characters a slice part keeps as they are; every other byte is escaped (``slice_part``).
_SLICE_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
#: Starts an escaped byte in a slice part; systemd allows it in unit names, and it is never
#: kept plain, so an escape can always be told from a plain character.
_SLICE_ESCAPE = ":"
_CONTAINER_ID_RE = re.compile(r"[0-9a-f]{12,64}")


class CgroupError(SystemFault):
    """A cgroup limit could not be written (or a ``systemctl`` call failed)."""

    kind = "cgroup"


# --- names and paths (pure) -----------------------------------------------------------------


#: (group, user) pairs whose parent's path ``user_slice_path`` keeps.
USER_SLICE_PATHS_KEPT = 4096


def slice_part(name: str) -> str:
    """A user or group name as part of a slice name, encoded injectively.

    Letters, digits and ``_`` stay; every other byte of the name's UTF-8 becomes ``:`` and
    two hex digits (``jane-r`` → ``jane:2dr``, ``a.b`` → ``a:2eb``). ``-`` never remains
    (systemd reads it as nesting), and two different names never share a part, so two users
    never share a cgroup parent and its totals.
    """
    if not name:
        raise ValueError("an empty name has no slice part")
    return "".join(
        char if char in _SLICE_PLAIN else "".join(f"{_SLICE_ESCAPE}{b:02x}" for b in char.encode())
        for char in name
    )


@functools.lru_cache(maxsize=USER_SLICE_PATHS_KEPT)
def user_slice_path(group: str, user: str) -> str:
    """The user's cgroup parent as a path below the cgroup root, for either driver:
    ``/ds01.slice/ds01-<group>.slice/ds01-<group>-<user>.slice``. Kept for the last
    ``USER_SLICE_PATHS_KEPT`` pairs: ds01d's start asks it twice for every container."""
    g, u = slice_part(group), slice_part(user)
    return f"/{SLICE_ROOT}/ds01-{g}.slice/ds01-{g}-{u}.slice"


def build_slice_path(user_parent: str) -> str:
    """The cgroup of a user's image builds, inside their parent (so their totals hold for
    builds too): ``…/ds01-<group>-<user>.slice/ds01-<group>-<user>-build.slice``, which is
    also how systemd nests ``ds01-<group>-<user>-build.slice``."""
    path = PurePosixPath(user_parent)
    return f"{path}/{path.name.removesuffix('.slice')}-build.slice"


def slice_unit(parent: str) -> str:
    """The systemd unit of a parent path: its last component (``ds01-phd-jane.slice``)."""
    return PurePosixPath(parent).name


def container_cgroup(parent: str, container_id: str, driver: CgroupDriver) -> str:
    """The path of a container's own cgroup below the cgroup root.

    With cgroupfs the container's directory is its full id; with the systemd driver it is
    the scope ``docker-<id>.scope``.
    """
    if not _CONTAINER_ID_RE.fullmatch(container_id):
        raise ValueError(f"not a container id: {container_id!r}")
    leaf = f"docker-{container_id}.scope" if driver == "systemd" else container_id
    return f"{parent.rstrip('/')}/{leaf}"


def _relative(cgroup: str) -> str:
    relative = PurePosixPath(cgroup.lstrip("/"))
    if cgroup in ("", "/") or ".." in relative.parts:
        raise ValueError(f"not a cgroup path below the root: {cgroup!r}")
    return str(relative)


# --- what to write (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateLimits:
    """A user's totals across all their containers; ``None`` means unlimited.

    ``cpus`` in CPUs (0.5 = half of one core's time), ``memory_bytes`` in bytes, ``pids`` in
    processes (threads included, as the kernel counts them).
    """

    cpus: float | None = None
    memory_bytes: int | None = None
    pids: int | None = None

    @property
    def unlimited(self) -> bool:
        """Whether no total is set."""
        return self.cpus is None and self.memory_bytes is None and self.pids is None


@dataclass(frozen=True)
class CgroupWrite:
    """One value to write into one file of a cgroup.

    ``hierarchy`` is the v1 hierarchy directory under the root (``"memory"``, ``"cpu"``,
    ``"pids"``), or ``""`` for the v2 unified hierarchy.
    """

    hierarchy: str
    file: str
    value: str


def cfs_quota_us(cpus: float, period_us: int = CFS_PERIOD_US) -> int:
    """The CFS quota in microseconds per ``period_us`` that grants ``cpus`` CPUs."""
    return max(MIN_CFS_QUOTA_US, round(cpus * period_us))


def limit_writes(version: CgroupVersion, limits: AggregateLimits) -> tuple[CgroupWrite, ...]:
    """The files to write on a parent cgroup so that it enforces ``limits``, in order.

    v1: the CFS period goes before the quota (the kernel checks their ratio).
    """
    if version == "v1":
        quota = "-1" if limits.cpus is None else str(cfs_quota_us(limits.cpus))
        memory = "-1" if limits.memory_bytes is None else str(limits.memory_bytes)
        return (
            CgroupWrite("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)),
            CgroupWrite("cpu", "cpu.cfs_quota_us", quota),
            CgroupWrite("memory", "memory.limit_in_bytes", memory),
            CgroupWrite("pids", "pids.max", _max_or(limits.pids)),
        )
    quota = "max" if limits.cpus is None else str(cfs_quota_us(limits.cpus))
    return (
        CgroupWrite("", "cpu.max", f"{quota} {CFS_PERIOD_US}"),
        CgroupWrite("", "memory.max", _max_or(limits.memory_bytes)),
        CgroupWrite("", "pids.max", _max_or(limits.pids)),
    )


def _max_or(value: int | None) -> str:
    return "max" if value is None else str(value)


def systemd_properties(limits: AggregateLimits) -> tuple[str, ...]:
    """``systemctl set-property`` assignments for a slice that enforce ``limits``.

    ``CPUQuota=`` takes a percentage of one CPU (two decimals at most); an empty value
    removes the quota. ``infinity`` removes the memory and task limits.
    """
    cpu = "" if limits.cpus is None else _percent(limits.cpus)
    memory = "infinity" if limits.memory_bytes is None else str(limits.memory_bytes)
    tasks = "infinity" if limits.pids is None else str(limits.pids)
    return (f"CPUQuota={cpu}", f"MemoryMax={memory}", f"TasksMax={tasks}")


def _percent(cpus: float) -> str:
    """CPUs as systemd's percentage of one CPU, two decimals at most: 0.5 → ``"50%"``."""
    return f"{cpus * 100:.2f}".rstrip("0").rstrip(".") + "%"


def systemctl_set_property(unit: str, limits: AggregateLimits) -> list[str]:
    """The ``systemctl`` command that sets ``limits`` on slice ``unit`` until reboot."""
    return ["systemctl", "set-property", "--runtime", unit, *systemd_properties(limits)]


def subtree_enable(available: Sequence[str], enabled: Sequence[str]) -> str | None:
    """What to write to a v2 ``cgroup.subtree_control`` so that its children get the
    controllers in ``CONTROLLERS`` (only those ``available``), or ``None`` if nothing."""
    missing = [c for c in CONTROLLERS if c in available and c not in enabled]
    return " ".join(f"+{c}" for c in missing) or None


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse a flat-keyed cgroup file (``memory.oom_control``, ``memory.events``):
    ``key value`` lines; lines whose value is not an integer are left out."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        try:
            result[key] = int(value)
        except ValueError:
            continue
    return result


def detect_version(root: Path) -> CgroupVersion | None:
    """Which cgroup version holds the controllers under ``root``, or ``None`` if neither."""
    if (root / "cgroup.controllers").is_file():
        return "v2"
    if (root / "memory").is_dir():
        return "v1"
    return None


@dataclass(frozen=True)
class OomCounters:
    """A memory cgroup's OOM counters as the kernel reports them.

    ``kills``: processes of this cgroup killed by the OOM killer (v1 ``memory.oom_control``
    ``oom_kill``; v2 ``memory.events`` ``oom_kill``). ``limit_events``: how often this
    cgroup's own limit was hit (v1 ``memory.failcnt`` plus ``memory.memsw.failcnt``: the
    kernel counts a failed charge only in the counter that failed, and when
    ``--memory-swap`` equals ``--memory`` that is the memory+swap one; v2 ``oom`` in
    ``memory.events.local``, else ``memory.events``). ``generation``: the directory's inode
    number; a container restarted in a new cgroup gets a new one, and its counters start
    again from 0.

    ``at_limit`` (v1 only): the peak usage (``memory[.memsw].max_usage_in_bytes``) came
    within ``PEAK_TOLERANCE_BYTES`` of the cgroup's own limit since the peak was last
    re-armed (``CgroupManager.rearm_peak``): a second witness, whichever counter failed.
    """

    kills: int
    limit_events: int
    generation: int
    at_limit: bool = False


#: How close to its limit a v1 peak must come to count as the limit hit, in bytes: a
#: failed charge is at most one huge page (2 MiB on x86).
PEAK_TOLERANCE_BYTES = 2 * 1024 * 1024
#: v1 reads an unlimited limit as a number this large or larger.
_V1_UNLIMITED = 2**62
_V1_PEAKS = (
    ("memory.max_usage_in_bytes", "memory.limit_in_bytes"),
    ("memory.memsw.max_usage_in_bytes", "memory.memsw.limit_in_bytes"),
)


def peak_at_limit(peak: int, limit: int) -> bool:
    """Whether a v1 peak usage (bytes) reached its limit (bytes); never for no limit."""
    return limit < _V1_UNLIMITED and peak >= limit - PEAK_TOLERANCE_BYTES


def _default_run(argv: Sequence[str]) -> None:
    try:
        subprocess.run(
            list(argv),
            check=True,
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT_SECONDS,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()
        raise CgroupError(f"{' '.join(argv)} failed: {detail or exc}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CgroupError(f"{' '.join(argv)} failed: {exc}") from exc


def _hint(write: CgroupWrite, code: int | None) -> str:
    if code == errno.EINVAL and write.file == "cpu.cfs_quota_us":
        return (
            " (cgroup v1 refuses a CPU total below the CPU limit of a running container: "
            "stop the containers with a larger --cpus first)"
        )
    if code == errno.EBUSY and write.file == "memory.limit_in_bytes":
        return " (the containers already use more memory than the new total)"
    return ""


# --- the adapter ------------------------------------------------------------------------------


class CgroupManager:
    """Writes aggregate limits on users' cgroup parents and reads their counters.

    Args:
        root: where the cgroup hierarchies are mounted (``/sys/fs/cgroup``).
        driver: Docker's cgroup driver; with ``"systemd"`` limits are set as slice
            properties through ``run`` (``systemctl``), with ``"cgroupfs"`` written directly.
        run: runs a command, raising ``CgroupError`` if it fails (injected for tests).
        rmdir: removes one empty cgroup directory (``os.rmdir``; tests of a plain
            directory tree pass one that also removes the files in it).
        version: the cgroup version; detected from ``root`` when not given.
    """

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        driver: CgroupDriver = "cgroupfs",
        *,
        run: Callable[[Sequence[str]], None] = _default_run,
        rmdir: Callable[[Path], None] = os.rmdir,
        version: CgroupVersion | None = None,
    ) -> None:
        self.root = root
        self.driver = driver
        self._run = run
        self._rmdir = rmdir
        self.version: CgroupVersion | None = version or detect_version(root)

    def __repr__(self) -> str:
        return f"<CgroupManager {self.root} {self.version} {self.driver}>"

    # -- paths ---------------------------------------------------------------------------------

    def path(self, cgroup: str, hierarchy: str = "memory") -> Path:
        """The directory of ``cgroup`` in v1 ``hierarchy`` (v2: in the unified tree)."""
        return self._hierarchy(hierarchy) / _relative(cgroup)

    def _hierarchy(self, hierarchy: str = "memory") -> Path:
        """The directory of v1 ``hierarchy`` (v2: the root, the unified tree)."""
        return self.root if self.version == "v2" else self.root / hierarchy

    def hierarchies(self) -> list[Path]:
        """Every hierarchy directory a cgroup has a copy in: v2 the root, v1 each mounted
        hierarchy (co-mounted ones such as ``cpu,cpuacct`` once)."""
        if self.version == "v2":
            return [self.root]
        seen: dict[Path, Path] = {}
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return []
        for entry in entries:
            if entry.is_dir():
                seen.setdefault(entry.resolve(), entry)
        return list(seen.values())

    def exists(self, cgroup: str) -> bool:
        """Whether ``cgroup`` exists (in the memory hierarchy on v1)."""
        return self.version is not None and self.path(cgroup).is_dir()

    def slurm_job_cgroups(self, job_id: int) -> list[str]:
        """The cgroups Slurm's cgroup plugins made for job ``job_id`` on this host, two levels
        down from the memory hierarchy's root (the unified one on v2):
        ``/slurm[_NODE]/uid_UID/job_ID`` (cgroup v1), ``/system.slice/slurmstepd.scope/job_ID``
        (v2). None on a node without those plugins, or where the job holds nothing."""
        if self.version is None:
            return []
        hierarchy = self._hierarchy()
        found = hierarchy.glob(f"*/*/job_{int(job_id)}")
        return sorted("/" + str(p.relative_to(hierarchy)) for p in found if p.is_dir())

    def owned_by(self, cgroup: str, uid: int = 0) -> bool:
        """Whether ``cgroup`` exists in the memory hierarchy (v1; the unified one on v2) and
        it and every cgroup above it, in every hierarchy it exists in, is a directory (no
        symbolic link) owned by ``uid`` (root; tests pass their own uid).

        A user can make cgroups of her own only where she was delegated a subtree (cgroup
        v2, ``user@.service``), and those are hers, so a cgroup that passes was made by
        root (Slurm's ``slurmstepd``), not by a user naming it like a job's."""
        if self.version is None:
            return False
        try:
            relative = PurePosixPath(_relative(cgroup))
        except ValueError:
            return False
        first = self._hierarchy()
        hierarchies = [first, *(h for h in self.hierarchies() if h != first)]
        for number, hierarchy in enumerate(hierarchies):
            if number and not (hierarchy / relative).is_dir():
                continue  # a v1 hierarchy Slurm does not use: Docker makes it there
            current = hierarchy
            for part in relative.parts:
                current /= part
                try:
                    status = os.lstat(current)
                except OSError:
                    return False
                if not stat.S_ISDIR(status.st_mode) or status.st_uid != uid:
                    return False
        return True

    # -- limits --------------------------------------------------------------------------------

    def apply(self, parent: str, limits: AggregateLimits, *, create: bool = True) -> bool:
        """Make the parent cgroup enforce ``limits``; return whether anything was written.

        With ``create=False`` only a parent that exists is updated (a live config change).
        A parent that does not exist is left alone when ``limits`` are all unlimited: runc
        creates it without limits. Writes that fail are collected, the others still made,
        then ``CgroupError`` lists the failures.
        """
        if self.driver == "systemd":
            if not create and not self.exists(parent):
                return False
            self._run(systemctl_set_property(slice_unit(parent), limits))
            return True
        if self.version is None:
            if limits.unlimited:
                return False
            raise CgroupError(
                f"cannot enforce aggregate limits: no cgroup v1 memory hierarchy or cgroup v2 "
                f"under {self.root}"
            )
        if not self.exists(parent) and (not create or limits.unlimited):
            return False
        writes = limit_writes(self.version, limits)
        if self.version == "v2":
            self._create_v2(parent)
        else:
            for hierarchy in dict.fromkeys(w.hierarchy for w in writes):
                self.path(parent, hierarchy).mkdir(parents=True, exist_ok=True)
        failures = []
        for write in writes:
            target = self.path(parent, write.hierarchy) / write.file
            try:
                target.write_text(write.value)
            except OSError as exc:
                failures.append(
                    f"{target}: {exc.strerror or exc} (writing {write.value})"
                    + _hint(write, exc.errno)
                )
        if failures:
            raise CgroupError(
                f"could not set the aggregate limits of {parent}: " + "; ".join(failures),
                details={"parent": parent, "failures": failures},
            )
        return True

    def _create_v2(self, parent: str) -> None:
        """Create ``parent`` and enable the controllers from the root down to it."""
        current = self.root
        self._enable_controllers(current)
        for part in PurePosixPath(_relative(parent)).parts:
            current = current / part
            current.mkdir(exist_ok=True)
            self._enable_controllers(current)

    @staticmethod
    def _enable_controllers(directory: Path) -> None:
        def words(name: str) -> list[str]:
            try:
                return (directory / name).read_text().split()
            except FileNotFoundError:
                return []

        change = subtree_enable(words("cgroup.controllers"), words("cgroup.subtree_control"))
        if change is not None:
            (directory / "cgroup.subtree_control").write_text(change)

    # -- removal -------------------------------------------------------------------------------

    def remove_if_empty(self, parent: str) -> bool:
        """Remove ``parent`` and then its empty ancestors up to ``/ds01.slice``, deepest
        first, in every hierarchy, where no process and no child cgroup is left.

        Returns whether the parent is gone. Never fails: a cgroup still in use stays.
        """
        if self.version is None:
            return True
        if self.driver == "systemd":
            if not self.exists(parent):
                return True
            if not all(_is_empty(h / _relative(parent)) for h in self.hierarchies()):
                return False
            try:
                self._run(["systemctl", "stop", slice_unit(parent)])
            except CgroupError as exc:
                log.warning("%s", exc.message)
            return not self.exists(parent)
        chain = [PurePosixPath(parent)]
        while chain[-1].parent.name and chain[-1].name != SLICE_ROOT:
            chain.append(chain[-1].parent)
        self._remove_empty(chain)
        return not any((h / _relative(parent)).is_dir() for h in self.hierarchies())

    def remove_job_cgroup(self, cgroup: str, *, with_parent: bool) -> None:
        """Remove a Slurm job's cgroup (``/slurm_node2/uid_1001/job_42``) where it holds no
        process and no child and, if ``with_parent``, then its parent (``uid_1001``) where
        that is empty too, in every hierarchy; never the top (``/slurm_node2``). Docker
        (cgroupfs) makes that chain in the hierarchies Slurm does not use (cpu, pids…), where
        nobody else removes it; in Slurm's own, Slurm removes it first.

        Each hierarchy's removal holds an exclusive ``flock`` on the top's directory there:
        the lock Slurm's cgroup/v1 plugin takes on it while it makes or removes a job's
        cgroups, so that a job starting meanwhile never finds its ``uid_`` directory gone
        between two of its mkdirs. Never fails; nothing on the systemd driver."""
        if self.version is None or self.driver == "systemd":
            return
        leaf = PurePosixPath(cgroup)
        chain = [leaf, leaf.parent] if with_parent and len(leaf.parts) > 3 else [leaf]
        top = "/" + leaf.parts[1] if len(leaf.parts) > 1 else str(leaf)
        for hierarchy in self.hierarchies():
            with _flocked(hierarchy / _relative(top)):
                self._remove_chain(hierarchy, chain)

    def _remove_empty(self, chain: list[PurePosixPath]) -> None:
        """In each hierarchy, remove the cgroups of ``chain`` (deepest first) while they are
        empty; stop at the first that is not."""
        for hierarchy in self.hierarchies():
            self._remove_chain(hierarchy, chain)

    def _remove_chain(self, hierarchy: Path, chain: list[PurePosixPath]) -> None:
        for cgroup in chain:
            directory = hierarchy / _relative(str(cgroup))
            if not directory.is_dir():
                continue
            if not _is_empty(directory):
                break
            try:
                self._rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError as exc:  # EBUSY: a process or child appeared meanwhile
                log.info("cgroup %s stays: %s", directory, exc.strerror or exc)
                break

    # -- counters ------------------------------------------------------------------------------

    def memory_usage(self, cgroup: str) -> int | None:
        """Memory charged to ``cgroup`` and its descendants now, in bytes (``None`` if it
        cannot be read)."""
        name = "memory.current" if self.version == "v2" else "memory.usage_in_bytes"
        return self._read_int(cgroup, name)

    def limit_events(self, cgroup: str) -> int | None:
        """How often ``cgroup``'s own memory limit was hit (see ``OomCounters``)."""
        if self.version == "v2":
            directory = self.path(cgroup)
            for name in ("memory.events.local", "memory.events"):
                values = self._read_keyed(directory / name)
                if values is not None:
                    return values.get("oom", 0)
            return None
        # A charge that fails counts only in the counter that failed: with swap accounting
        # and --memory-swap equal to --memory that is the memory+swap one.
        memory = self._read_int(cgroup, "memory.failcnt")
        if memory is None:
            return None
        return memory + (self._read_int(cgroup, "memory.memsw.failcnt") or 0)

    def oom_counters(self, cgroup: str) -> OomCounters | None:
        """The OOM counters of ``cgroup`` (a container's own cgroup), or ``None`` if it is
        gone or unreadable."""
        if self.version is None:
            return None
        directory = self.path(cgroup)
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        generation = self.generation(cgroup)
        if generation is None:
            return None
        values = self._read_keyed(directory / name)
        limit_events = self.limit_events(cgroup)
        if values is None or limit_events is None:
            return None
        at_limit = False
        if self.version == "v1":
            for peak_file, limit_file in _V1_PEAKS:
                peak, limit = self._read_int(cgroup, peak_file), self._read_int(cgroup, limit_file)
                if peak is not None and limit is not None and peak_at_limit(peak, limit):
                    at_limit = True
        return OomCounters(
            kills=values.get("oom_kill", 0),
            limit_events=limit_events,
            generation=generation,
            at_limit=at_limit,
        )

    def cpu_seconds(self, cgroup: str) -> float | None:
        """CPU time ``cgroup`` and its descendants used so far, in seconds (v1
        ``cpuacct.usage``, nanoseconds; v2 ``cpu.stat`` ``usage_usec``); ``None`` if it
        cannot be read."""
        if self.version == "v2":
            values = self._read_keyed(self.path(cgroup) / "cpu.stat")
            return (
                None if values is None or "usage_usec" not in values else values["usage_usec"] / 1e6
            )
        if self.version == "v1":
            try:
                text = (self.path(cgroup, "cpuacct") / "cpuacct.usage").read_text()
                return int(text.strip()) / 1e9
            except (OSError, ValueError):
                return None
        return None

    def processes(self, cgroup: str) -> list[int]:
        """PIDs (host namespace) of the processes in ``cgroup`` itself (not its children);
        empty if it cannot be read."""
        hierarchy = "unified" if self.version == "v2" else "pids"
        try:
            text = (self.path(cgroup, hierarchy) / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(line) for line in text.split() if line.isdigit()]

    def generation(self, cgroup: str) -> int | None:
        """The inode of ``cgroup``'s directory: it changes when a container runs again in a
        fresh cgroup (``None`` if the cgroup is not there)."""
        try:
            return self.path(cgroup).stat().st_ino
        except OSError:
            return None

    def rearm_peak(self, cgroup: str) -> None:
        """v1: reset ``cgroup``'s peak usage to its current usage, so that the next
        ``oom_counters`` tells whether the limit was reached since. Fails soft."""
        if self.version != "v1":
            return
        for peak_file, _ in _V1_PEAKS:
            try:
                (self.path(cgroup) / peak_file).write_text("0")
            except OSError as exc:
                log.debug("cannot reset %s of %s: %s", peak_file, cgroup, exc)

    def _read_int(self, cgroup: str, name: str) -> int | None:
        if self.version is None:
            return None
        try:
            return int((self.path(cgroup) / name).read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _read_keyed(path: Path) -> dict[str, int] | None:
        try:
            return parse_flat_keyed(path.read_text())
        except OSError:
            return None


@contextlib.contextmanager
def _flocked(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``directory`` while the block runs; none when it is not
    there (then nothing below it is to be removed either)."""
    try:
        fd: int | None = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _is_empty(directory: Path) -> bool:
    """Whether a cgroup directory holds no process and no child cgroup."""
    try:
        if any(entry.is_dir() for entry in directory.iterdir()):
            return False
        for name in ("cgroup.procs", "tasks"):
            try:
                if (directory / name).read_text().strip():
                    return False
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


__all__ = [
    "AggregateLimits",
    "CgroupError",
    "CgroupManager",
    "CgroupWrite",
    "OomCounters",
    "cfs_quota_us",
    "container_cgroup",
    "detect_version",
    "limit_writes",
    "parse_flat_keyed",
    "peak_at_limit",
    "slice_part",
    "slice_unit",
    "subtree_enable",
    "systemctl_set_property",
    "systemd_properties",
    "user_slice_path",
]
