"""Bind sources staged from a descriptor: the directory ds01 checked is the one Docker mounts.

Docker resolves a bind source by its path at every start of a container. A user may rename
entries in their own directories at any time, so a component of their workspace path can be
a directory when ds01 checks it and a symbolic link to someone else's directory when Docker
resolves it a moment later. Checking the path, however carefully, leaves that window open.

So ds01d never hands Docker a user's path. It opens the directory itself, one component at a
time from ``/`` with ``O_NOFOLLOW | O_DIRECTORY`` (``ds01.runtime.userfs.open_directory``: a
symbolic link anywhere in the path fails the open), checks owner and type on the open
descriptor (``fstat``), and bind-mounts exactly that directory from the descriptor
(``/proc/self/fd/N``: the kernel follows the descriptor, not a name) onto a staging path
only root can reach, ``<state>/mounts/<key>/<what>`` (directories mode 0700, owner
root). Docker's bind source is the staging path. Staging is
done again right before every start (staging mounts do not survive a reboot), undone when
the container is removed, and leftovers of removed containers are cleared when ds01d starts.

A container's staging key (:func:`staging_key`) is fixed at its create: its Docker name then
and a digest of its create's request id. From then on ds01d finds the key in the container's
own bind sources (:meth:`MountStaging.keys_of`), never from its current Docker name, so a
container whose Docker name changes keeps staging into the directory its binds point at, and
a later container under the same Docker name gets a directory of its own. Containers made
before the key had the digest use their Docker name at create as key; the same rule holds.

dockerd must see ds01d's mounts: both must run in the same mount namespace (no
``PrivateTmp``, ``ProtectSystem`` or other namespacing options in ds01d's systemd unit). If
it does not, a container gets the empty, root-only staging directory instead: it fails
closed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from ds01.errors import SystemFault

#: The staging tree's directory under ds01d's state directory.
STAGING_DIR = "mounts"
_MS_BIND = 4096
_MNT_DETACH = 2
_MAX_STACKED = 64  # unmounts tried on one staging path (mounts stacked by a crash)
#: Hex digits of the request id's digest in a staging key: two containers that ever share a
#: Docker name (one renamed, one created later) collide with odds of one in 16**12.
_KEY_DIGEST_HEX = 12


def staging_key(docker_name: str, request_id: str) -> str:
    """The staging key of the container a create with ``request_id`` makes under
    ``docker_name`` (no I/O; the same answer for the same create, so a failed create's
    rollback finds it again). A re-creation that reuses the request id (``reacquire``) gets
    the same key: the container it replaces is removed once it exists."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:_KEY_DIGEST_HEX]
    return f"{docker_name}.{digest}"


class StagingError(SystemFault):
    """A staging mount could not be made or removed."""


class MountStaging:
    """The staging tree under ``root`` (``<state>/mounts``): one directory per container
    (its staging key, :func:`staging_key`), one staging path per bind (``workspace``,
    ``data``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._prefix = f"{root}/"
        self._libc = ctypes.CDLL(None, use_errno=True)

    def path(self, key: str, what: str) -> Path:
        """The staging path of bind ``what`` under staging key ``key`` (no I/O)."""
        for part in (key, what):
            if not part or "/" in part or part.startswith(".") or "\0" in part:
                raise ValueError(f"not a staging name: {part!r}")
        return self.root / key / what

    def owner_of(self, source: str) -> tuple[str, str] | None:
        """``(key, what)`` when ``source`` is a staging path of this tree, else
        ``None`` (e.g. a bind made before staging existed)."""
        # The usual source, as ds01d made it and Docker lists it (``<root>/<key>/<what>``),
        # read from the string: ds01d's start reads every container's sources, and a Path
        # for each costs milliseconds at hundreds of containers.
        if source.startswith(self._prefix):
            key, _, what = source[len(self._prefix) :].partition("/")
            if key and what and "/" not in what and "." not in (key, what):
                return key, what
        try:
            relative = Path(source).relative_to(self.root)
        except ValueError:
            return None
        parts = relative.parts
        return (parts[0], parts[1]) if len(parts) == 2 else None

    def keys_of(self, sources: Iterable[str]) -> set[str]:
        """The staging keys that the bind ``sources`` of one or more containers use (their
        staging directories; a source outside the tree names none)."""
        return {owned[0] for owned in map(self.owner_of, sources) if owned is not None}

    def prepare(self, key: str, what: str) -> Path:
        """Make the (empty, root-only) staging path for a bind; Docker's create wants its
        source to exist."""
        target = self.path(key, what)
        for directory in (self.root, target.parent, target):
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
            if directory.is_symlink() or not directory.is_dir():
                raise StagingError(f"{directory} is not a directory ds01d made; remove it.")
        return target

    def stage(self, key: str, what: str, fd: int) -> Path:
        """Bind-mount the directory open as ``fd`` onto the staging path (replacing what was
        staged there before); returns the staging path."""
        target = self.prepare(key, what)
        self._unmount_all(target)
        source = f"/proc/self/fd/{fd}".encode()
        if self._libc.mount(source, os.fsencode(target), None, _MS_BIND, None) != 0:
            code = ctypes.get_errno()
            raise StagingError(f"cannot stage the bind mount {target}: {os.strerror(code)}")
        return target

    def unstage(self, key: str) -> None:
        """Unmount and remove every staging path of the staging key ``key`` (nothing there:
        no-op)."""
        directory = self.path(key, "x").parent
        if not directory.is_dir() or directory.is_symlink():
            return
        for target in directory.iterdir():
            self._unmount_all(target)
            target.rmdir()
        directory.rmdir()

    def staged(self) -> set[str]:
        """The staging keys that have a staging directory."""
        try:
            # The entries' types as the directory lists them: no stat per key.
            with os.scandir(self.root) as entries:
                return {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        except (FileNotFoundError, NotADirectoryError):
            return set()

    def _unmount_all(self, target: Path) -> None:
        """Unmount whatever is mounted on ``target`` (lazily: a running container keeps its
        own copy of the mount)."""
        for _ in range(_MAX_STACKED):
            if self._libc.umount2(os.fsencode(target), _MNT_DETACH) == 0:
                continue
            code = ctypes.get_errno()
            if code in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
                return
            raise StagingError(f"cannot unmount the staging path {target}: {os.strerror(code)}")
        raise StagingError(f"{target} has more than {_MAX_STACKED} mounts stacked on it.")


__all__ = ["STAGING_DIR", "MountStaging", "StagingError", "staging_key"]
