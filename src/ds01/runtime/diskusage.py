"""How much disk a directory tree that a container writes holds, measured safely.

The trees measured (a container's overlay2 ``UpperDir``, its anonymous volumes) are written
by the container's user, who may fill them with symlinks (to ``/`` of the host, say), hard
links, sparse files, deep nesting, and may change them while they are measured. So:

- every directory is opened relative to its parent's descriptor with ``O_NOFOLLOW`` and
  checked to be the inode that was listed: a symlink is never followed, not even one swapped
  in for a directory during the walk (such a subtree is left out of that measurement, and
  the measurement says it is incomplete);
- only one filesystem is walked (a different ``st_dev`` is not descended into);
- what is counted is the space allocated (``st_blocks`` times 512, what the disk loses), so a
  sparse file counts what it really holds, and each inode once: a file hard-linked a
  hundred times counts once, however the links are spread;
- a tree nested deeper than the descriptors kept open (``MAX_OPEN_DIRECTORIES``) is still
  walked to the end: a closed ancestor is reopened from the nearest open one, component by
  component with ``O_NOFOLLOW``, each checked against the inode listed.

Nothing here knows about Docker; the daemon gives the paths (``DockerRuntime.disk_sources``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Directory descriptors one walk keeps open at most (deeper ancestors are reopened).
MAX_OPEN_DIRECTORIES = 32
#: The unit of ``st_blocks``.
BLOCK_BYTES = 512

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

_Key = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True)
class TreeUsage:
    """The disk space a set of trees holds.

    Attributes:
        bytes: allocated bytes, each inode counted once.
        inodes: inodes counted (files, directories, links, …).
        complete: ``False`` when part of a tree changed during the walk or could not be
            read (what was read is counted).
    """

    bytes: int
    inodes: int
    complete: bool = True


@dataclass
class _Frame:
    """A directory on the walk's path: its descriptor (``-1`` once closed to save
    descriptors), the inode expected at each step from the root, and the subdirectories
    still to visit (name, inode)."""

    fd: int
    path: tuple[tuple[str, int], ...]
    pending: list[tuple[str, int]] = field(default_factory=list)


class _Walk:
    def __init__(self, seen: set[_Key]) -> None:
        self.seen = seen
        self.bytes = 0
        self.inodes = 0
        self.complete = True

    def _count(self, st: os.stat_result) -> bool:
        """Count ``st`` unless its inode was counted; ``False`` if it was."""
        if st.st_nlink > 1 or stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in self.seen:
                return False
            self.seen.add(key)
        self.bytes += st.st_blocks * BLOCK_BYTES
        self.inodes += 1
        return True

    def _scan(self, fd: int, dev: int) -> list[tuple[str, int]]:
        """Count the entries of the directory open at ``fd``; return its subdirectories on
        the same filesystem (name, inode) that were not counted before."""
        subdirectories = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile: no longer held
                    if stat.S_ISDIR(st.st_mode):
                        if st.st_dev == dev and self._count(st):
                            subdirectories.append((entry.name, st.st_ino))
                    else:
                        self._count(st)
        except OSError:
            self.complete = False
        return subdirectories

    def _open_child(self, parent_fd: int, name: str, inode: int, dev: int) -> int | None:
        """Open ``name`` under ``parent_fd`` without following a link; ``None`` (and the
        walk incomplete) unless it is still the directory ``inode`` listed."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError:
            self.complete = False
            return None
        st = os.fstat(fd)
        if st.st_ino != inode or st.st_dev != dev:
            os.close(fd)
            self.complete = False
            return None
        return fd

    def _reopen(self, stack: list[_Frame], index: int, dev: int) -> int | None:
        """The descriptor of ``stack[index]``, reopened from its nearest open ancestor."""
        base = max(i for i in range(index) if stack[i].fd >= 0)
        fd = stack[base].fd
        opened: list[int] = []
        for i in range(base + 1, index + 1):
            name, inode = stack[i].path[-1]
            child = self._open_child(fd, name, inode, dev)
            if child is None:
                for extra in opened:
                    os.close(extra)
                return None
            if opened:
                os.close(opened.pop())
            opened.append(child)
            fd = child
        stack[index].fd = fd
        return fd

    def walk(self, root: str) -> None:
        try:
            root_fd = os.open(root, _DIR_FLAGS)
        except OSError:
            return  # no such tree (the container is gone, or never wrote a volume)
        st = os.fstat(root_fd)
        dev = st.st_dev
        if not self._count(st):
            os.close(root_fd)
            return
        stack = [_Frame(root_fd, (), self._scan(root_fd, dev))]
        try:
            while stack:
                top = stack[-1]
                if not top.pending:
                    if top.fd >= 0:
                        os.close(top.fd)
                    stack.pop()
                    continue
                name, inode = top.pending.pop()
                parent_fd = top.fd if top.fd >= 0 else self._reopen(stack, len(stack) - 1, dev)
                if parent_fd is None:
                    top.pending.clear()  # the path changed under the walk: leave it
                    continue
                child = self._open_child(parent_fd, name, inode, dev)
                if child is None:
                    continue
                stack.append(_Frame(child, (*top.path, (name, inode)), self._scan(child, dev)))
                open_frames = [f for f in stack[1:-1] if f.fd >= 0]
                if len(open_frames) + 2 > MAX_OPEN_DIRECTORIES:
                    os.close(open_frames[0].fd)
                    open_frames[0].fd = -1
        finally:
            for frame in stack:
                if frame.fd >= 0:
                    os.close(frame.fd)


def tree_usage(roots: Iterable[str]) -> TreeUsage:
    """The disk space the trees at ``roots`` hold together (module docstring): an inode in
    two of them counts once. A root that does not exist counts nothing."""
    walk = _Walk(set())
    for root in roots:
        walk.walk(root)
    return TreeUsage(walk.bytes, walk.inodes, walk.complete)


__all__ = ["BLOCK_BYTES", "MAX_OPEN_DIRECTORIES", "TreeUsage", "tree_usage"]
