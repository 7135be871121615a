"""``Launcher``: what is checked and staged right before Docker starts a container.

Before a start: the owner's network is guarded (and an older container moved onto it), the
container's binds are staged again from descriptors of the owner's directories (opened
without following symlinks: the directory checked is the directory mounted,
``ds01.runtime.staging``), and each fixed host port must be free on 127.0.0.1 (never a URL
that leads to someone else's listener). Before a create: the directories a request names
are the owner's, and its host ports are no other container's (``with_host_ports``). Every
refusal is an event.

State: none of its own. Locks: ``launch`` and ``with_host_ports`` run under the allocation
lock (``ds01.daemon.context``); the directory checks need none. Calls: the context
(runtime, staging, networks, events, ``records()``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ds01.core.bind_sources import forbidden_root
from ds01.core.container_resources import why
from ds01.core.docker_create import DATA_TARGET as CONTAINER_DATA
from ds01.core.docker_create import WORKSPACE_TARGET as CONTAINER_WORKSPACE
from ds01.core.ports import (
    PortClaim,
    choose_host_port,
    claimed_by_others,
    port_claims,
    port_in_use_message,
    port_taken_message,
)
from ds01.daemon.access import resource_of
from ds01.daemon.context import DaemonContext
from ds01.daemon.identity import Caller
from ds01.daemon.networks import NETWORK_ACTION
from ds01.daemon.prepared import PreparedCreate
from ds01.errors import InvalidInput, PermissionDenied, PolicyError, PortInUse
from ds01.model import labels as L
from ds01.model.labels import requested_ports
from ds01.model.text import shown
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser
from ds01.runtime.port_probe import port_is_free
from ds01.runtime.userfs import (
    UserFsError,
    UserIds,
    make_directory,
    open_directory,
    reach_directory,
)

DEFAULT_WORKSPACE_DIR = "workspace"  # under the user's home
MAX_PATH_LENGTH = 4096
#: Host ports for JupyterLab, on 127.0.0.1: below Linux's ephemeral range (32768 and up), so
#: ports Docker or clients pick never take one.
JUPYTER_HOST_PORTS = range(20000, 30000)
#: The user's directory behind each bind a container has, by its path in the container: the
#: label that records it (ds01d's own; Docker's bind source is the staging path).
BIND_LABELS = {CONTAINER_WORKSPACE: L.AIME_WORK_MOUNT, CONTAINER_DATA: L.AIME_DATA_MOUNT}

#: A bind of a container: a descriptor of the owner's directory (``None``: a bind made
#: before staging, checked by path), the container and the bind's name in the staging tree.
BindSource = tuple[int | None, str, str]


def user_ids(user: UnixUser) -> UserIds:
    """The credentials ds01d's child takes to act as ``user`` (``ds01.runtime.userfs``)."""
    return UserIds.of(user.name, user.uid, user.gid)


def make_user_directory(path: Path, user: UnixUser) -> None:
    """Create ``path`` *as* ``user`` (so it is theirs without a ``chown`` by root), its parent
    reached without following symlinks (``ds01.runtime.userfs``); nothing if it exists.

    Raises:
        PermissionDenied: the user cannot create it (their home is not writable to them, or
            a symlink is on the way); the message says what to do instead.
    """
    try:
        make_directory(path, user_ids(user), mode=0o755)
    except OSError as exc:
        raise PermissionDenied(
            f"ds01 could not create {path} as {user.name}: {exc.strerror or exc}. Create it "
            f"yourself (`mkdir {path}`), or name a directory of yours with --workspace."
        ) from None


def usable_path(requested: str, what: str) -> Path:
    """``requested`` as a path, if it is one a request may name: absolute, no NUL, not
    longer than ``MAX_PATH_LENGTH``.

    Raises:
        InvalidInput: it is not; the message begins with ``what``.
    """
    if "\0" in requested or len(requested) > MAX_PATH_LENGTH:
        raise InvalidInput(f"{what} is not a usable path.")
    path = Path(requested)
    if not path.is_absolute():
        raise InvalidInput(f"{what} must be an absolute path, got {shown(requested)}.")
    return path


def existing_directory(requested: str, what: str) -> tuple[Path, os.stat_result]:
    """``requested``, an absolute path of an existing directory, resolved (symlinks
    included) by ds01d itself, with its ``stat``: for paths an admin names (``--archive``);
    a user's directories are reached as the user (``owned_directory``).

    Raises:
        InvalidInput: not a usable or not an absolute path, missing, unreadable, or not a
            directory; the message begins with ``what`` (``"--workspace"``, ``"--archive"``).
    """
    path = usable_path(requested, what)
    try:
        real = path.resolve(strict=True)
        st = real.stat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise InvalidInput(f"{what} {shown(requested)} does not exist.") from exc
    # Too long, or a loop of symlinks (RuntimeError before Python 3.13, OSError after).
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidInput(f"{what} {shown(requested)} cannot be used: {why(exc)}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{what} {shown(requested)} is not a directory.")
    return real, st


#: What the user's own lookup of a path fails with when, for all she can tell, there is no
#: directory there: one answer, so a refusal never says what lies behind a folder she
#: cannot enter.
_NOT_THERE = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR})


def reached_by(user: UnixUser, requested: str, what: str, docker_root: str) -> tuple[str, int]:
    """The directory ``requested`` leads to when ``user`` follows it herself: its resolved
    path, and ds01d's ``O_PATH`` descriptor of that very directory (the caller closes it).

    The path is resolved *as the user* (``ds01.runtime.userfs.reach_directory``: her own
    search rights on every folder on the way, symlinks followed as she would follow them);
    ds01d then opens the resolved path without following any symlink and accepts it only if
    it holds the same directory (device and inode) the user reached. It must be hers (root's
    directories only for root), and not at, in or above Docker's data root or the kernel's
    ``/proc``, ``/sys`` or ``/dev`` (``ds01.core.bind_sources``).

    Raises:
        InvalidInput: not a usable path; or nothing the user can reach is there (missing,
            behind a folder she cannot enter, or not a directory: one message for all).
        PermissionDenied: a directory that is not hers, in a system area, or one that
            changed between her lookup and ds01d's.
    """
    usable_path(requested, what)
    try:
        reached = reach_directory(requested, user_ids(user))
    except UserFsError as exc:
        if exc.errno in _NOT_THERE:
            raise InvalidInput(
                f"{what} {shown(requested)} does not exist, or is not a directory you can reach."
            ) from None
        raise InvalidInput(f"{what} {shown(requested)} cannot be used: {exc.strerror}") from None
    real = shown(reached.path)
    try:
        fd = open_directory(reached.path)
    except OSError:
        fd = -1
    if fd < 0 or not reached.is_open_in(fd):
        if fd >= 0:
            os.close(fd)
        raise PermissionDenied(
            f"{what} {shown(requested)} (resolves to {real}) changed while ds01 checked it; "
            "try again with a directory of yours that stays put."
        )
    if os.fstat(fd).st_uid != user.uid and user.uid != 0:
        os.close(fd)
        raise PermissionDenied(
            f"{what} {shown(requested)} (resolves to {real}) is not a directory you own; "
            "only your own directories can be mounted."
        )
    system = forbidden_root(reached.path, docker_root)
    if system is not None:
        os.close(fd)
        raise PermissionDenied(
            f"{what} {shown(requested)} (resolves to {real}) is at, in or above {system}, "
            "which ds01 never mounts; only your own directories can be mounted."
        )
    return reached.path, fd


def owned_directory(user: UnixUser, requested: str, what: str, docker_root: str) -> Path:
    """The resolved path of the directory of ``user``'s that ``requested`` leads to when she
    follows it herself (``reached_by``: its checks and refusals)."""
    real, fd = reached_by(user, requested, what, docker_root)
    os.close(fd)
    return Path(real)


def workspace_of(user: UnixUser, requested: str | None, docker_root: str) -> Path:
    """The workspace a create mounts: ``requested``, or ``~/workspace`` (made if missing)."""
    if requested:
        return owned_directory(user, requested, "--workspace", docker_root)
    path = user.home / DEFAULT_WORKSPACE_DIR
    if not os.path.lexists(path):
        make_user_directory(path, user)
    return owned_directory(user, str(path), "workspace", docker_root)


def open_owned(owner: UnixUser, path: str, what: str, docker_root: str) -> int:
    """A descriptor of ``path``, a directory of ``owner``'s that she still reaches herself
    at that very path, no symlink anywhere on it (``reached_by``; the staging mounts the
    descriptor).

    Raises:
        PermissionDenied: she no longer reaches her own directory there: a component is
            missing, unreachable to her or a symlink, or the directory is not hers.
    """
    try:
        real, fd = reached_by(owner, path, what, docker_root)
    except PolicyError as exc:
        raise PermissionDenied(
            f"{exc.message} Restore the directory, or re-create the container with another one."
        ) from exc
    if real != path:
        os.close(fd)
        raise PermissionDenied(
            f"{what} {path} now leads to {shown(real)}: a symbolic link is on its path. "
            "Restore the directory, or re-create the container with another one."
        )
    return fd


def _check_legacy_bind(owner: UnixUser, source: str, docker_root: str) -> None:
    """A bind Docker resolves by path (made before staging): still the owner's, and no
    symlink on the way. Docker resolves it once more; re-create such a container."""
    os.close(open_owned(owner, source, "mount", docker_root))


def host_port_claims(records: Sequence[ContainerRecord]) -> dict[int, PortClaim]:
    """Every host port a ds01 container publishes, running or stopped: its label's fixed
    ports and the ports Docker reports while it runs. A container's old self while it is
    re-created (``.replaced``) claims for the container it becomes."""
    return port_claims(
        PortClaim(b.host_port, r.docker_name.removesuffix(L.REPLACED_SUFFIX), r.user)
        for r in records
        for b in r.ports
        if b.host_port is not None
    )


class Launcher:
    """Checks and stages a container's binds, ports and network before Docker starts it
    (see the module docstring for the contract)."""

    def __init__(self, context: DaemonContext) -> None:
        self.context = context

    def check_mounts(self, caller: Caller, owner: UnixUser, record: ContainerRecord) -> None:
        """Refuse (``PermissionDenied``, logged) to start ``record`` if a directory it binds
        is no longer the owner's own, with no symlink on its path. A check ahead of the lock;
        ``launch`` checks again on the very descriptor it mounts."""
        for fd, _, _ in self._bind_sources(caller, owner, record):
            if fd is not None:
                os.close(fd)

    def launch(self, caller: Caller, owner: UnixUser, record: ContainerRecord) -> None:
        """Under the allocation lock: start ``record`` in Docker (if it is not running),
        after the checks of the module docstring; a port Docker finds taken at the start
        itself is the same refusal as one found taken before.

        Raises:
            PermissionDenied: a bind source is no longer the owner's own directory.
            PortInUse: a host port of the container is held by something else.
        """
        if record.status == "running":
            return
        ctx = self.context
        self.onto_own_network(record)
        for fd, container, what in self._bind_sources(caller, owner, record):
            if fd is None:
                continue
            try:
                ctx.staging.stage(container, what, fd)
            finally:
                os.close(fd)
        for _, host_port in requested_ports(record.labels):
            if host_port is not None and not port_is_free(host_port):
                self._refuse_port(caller, record, host_port, self._port_holder(record, host_port))
        try:
            ctx.runtime.start(record.docker_name)
            ctx.ledger.refresh(record.id)
        except PortInUse as exc:
            self._refuse_port(caller, record, exc.port, "another program (Docker found it taken)")

    def onto_own_network(self, record: ContainerRecord) -> None:
        """Before a start: the owner's network guarded (gone with a reboot, or never guarded
        by this ds01d), and a container made before per-user networks moved onto it."""
        ctx = self.context
        network = ctx.networks.ensure(record.uid)
        if record.status != "running" and record.networks not in ((), (network,)):
            leave = tuple(n for n in record.networks if n != network)
            ctx.runtime.move_to_network(record.docker_name, network, (record.name,), leave)
            ctx.ledger.refresh(record.id)
            ctx.events.emit(
                NETWORK_ACTION,
                user="ds01d",
                resource=resource_of(record),
                details={"action": "move", "network": network, "left": list(leave)},
            )

    def with_host_ports(self, prepared: PreparedCreate) -> PreparedCreate:
        """Under the allocation lock: ``prepared`` with its host ports checked against every
        other container's claim (``ds01.core.ports``), and a fixed host port for its
        JupyterLab when it serves one.

        A fixed port (not Docker's pick at each start) keeps the URL, bookmarks and SSH
        tunnels valid across restarts: the lowest port of ``JUPYTER_HOST_PORTS`` that no ds01
        container claims (running or stopped) and nothing listens on.

        Raises:
            PortInUse: a host port asked for belongs to another container; or no port of
                ``JUPYTER_HOST_PORTS`` is free.
        """
        claims = host_port_claims(self.context.records())
        fixed = [h for _, h in prepared.ports if h is not None]
        taken = claimed_by_others(fixed, claims, prepared.docker_name)
        if taken:
            raise PortInUse(
                port_taken_message(taken[0].host_port, taken[0], prepared.owner.name),
                port=taken[0].host_port,
            )
        port, published = prepared.jupyter_port, dict(prepared.ports)
        if port is None or port not in published or published[port] is not None:
            return prepared  # no JupyterLab, not published (a hub's server), or its port fixed
        chosen = choose_host_port(JUPYTER_HOST_PORTS, claims, port_is_free)
        if chosen is None:
            raise PortInUse(
                f"No free host port for JupyterLab in {JUPYTER_HOST_PORTS.start}-"
                f"{JUPYTER_HOST_PORTS.stop - 1}; ask an admin.",
                port=0,
            )
        ports = tuple((c, chosen if c == port else h) for c, h in prepared.ports)
        return replace(prepared, ports=ports)

    def _port_holder(self, record: ContainerRecord, port: int) -> str:
        """Who holds ``port``, as a refusal names it: a container of ds01 or something else."""
        for other in self.context.records():
            running = other.id != record.id and other.status == "running"
            if running and any(b.host_port == port for b in other.ports):
                return "another container"
        return "a process on this machine that is not a ds01 container"

    def _refuse_port(self, caller: Caller, record: ContainerRecord, port: int, holder: str) -> None:
        refusal = PortInUse(port_in_use_message(port, record.name, holder), port=port)
        self.context.log_refusal(caller, "container.start", resource_of(record), refusal, port=port)
        raise refusal

    def _bind_sources(
        self, caller: Caller, owner: UnixUser, record: ContainerRecord
    ) -> list[BindSource]:
        """The binds of ``record`` (``BindSource``; the caller closes the descriptors).

        Raises:
            PermissionDenied: (logged) a source is no longer the owner's own directory.
        """
        ctx = self.context
        sources: list[BindSource] = []
        try:
            # As Docker listed them: a container's mounts never change after its create.
            for source, destination in record.binds:
                staged = ctx.staging.owner_of(source)
                if staged is None:
                    _check_legacy_bind(owner, source, ctx.engine.data_root)
                    sources.append((None, "", ""))
                    continue
                label = BIND_LABELS.get(destination)
                path = record.labels.get(label, "") if label else ""
                if not path.startswith("/"):
                    raise PermissionDenied(f"its bind {destination} has no source ds01 made.")
                opened = open_owned(owner, path, str(destination), ctx.engine.data_root)
                sources.append((opened, staged[0], staged[1]))
        except PolicyError as exc:
            for fd, _, _ in sources:
                if fd is not None:
                    os.close(fd)
            raise ctx.deny(
                caller, resource_of(record), f"Not starting {record.name!r}: {exc.message}"
            ) from exc
        return sources


__all__ = [
    "BIND_LABELS",
    "CONTAINER_DATA",
    "CONTAINER_WORKSPACE",
    "DEFAULT_WORKSPACE_DIR",
    "JUPYTER_HOST_PORTS",
    "Launcher",
    "host_port_claims",
    "make_user_directory",
    "open_owned",
    "owned_directory",
    "reached_by",
    "usable_path",
    "user_ids",
    "workspace_of",
]
