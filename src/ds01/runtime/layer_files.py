"""Small files of a created, never started container, read and written in its overlay2 layers.

Docker's archive calls (``docker cp``: ``GET``/``PUT /containers/{id}/archive``) mount the
container's whole file system for each call: about 60 ms of a create on 2 cores, a fifth of
a ``docker run``. Before its first start a container on the overlay2 storage driver is not
mounted, and its file system is plain directories on the host that ``docker inspect``
names (``GraphDriver.Data``): the image's layers (``LowerDir``, top first, read-only) and
the container's own empty writable layer (``UpperDir``). ds01d, root on the host, reads the
image's ``/etc`` files from the layers and writes the owner's files into the writable layer,
as the kernel's overlay would when the container starts.

Only what overlayfs makes plain is handled here: a file found in a layer, removed by a
whiteout (a character device 0/0) or hidden below an opaque directory, under a real
directory ``/etc``. Anything else (another storage driver, a running container, a symbolic
link on the path, which only the container's own root resolves) is :data:`UNHANDLED`, and
the caller uses Docker's archive calls. Nothing is followed: every path is opened with
``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

#: overlayfs marks a directory that hides the layers below it with this extended attribute.
_OPAQUE_XATTR = "trusted.overlay.opaque"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class Unhandled(Enum):
    """What the layers cannot answer: ask Docker."""

    UNHANDLED = "unhandled"


UNHANDLED = Unhandled.UNHANDLED


@dataclass(frozen=True)
class OverlayLayers:
    """A container's overlay2 directories: ``upper`` (its writable layer), ``lowers`` (the
    image's layers, the top one first)."""

    upper: Path
    lowers: tuple[Path, ...]

    @classmethod
    def of(cls, inspected: Mapping[str, Any]) -> OverlayLayers | None:
        """The layers of a container as ``docker inspect`` shows it, when they may be used:
        overlay2, and never started (``State.Status`` ``created``); else ``None``."""
        driver = inspected.get("GraphDriver") or {}
        data = driver.get("Data") or {}
        status = (inspected.get("State") or {}).get("Status")
        upper, lower = data.get("UpperDir"), data.get("LowerDir")
        if driver.get("Name") != "overlay2" or status != "created" or not upper or not lower:
            return None
        return cls(Path(upper), tuple(Path(p) for p in str(lower).split(":") if p))


def read_etc_file(layers: OverlayLayers, name: str, limit_bytes: int) -> bytes | Unhandled | None:
    """The image's ``/etc/<name>``: its content, ``None`` when there is none, it is not a
    regular file or is larger than ``limit_bytes``, or :data:`UNHANDLED`."""
    for layer in layers.lowers:
        etc = _entry(layer / "etc")
        if etc is None:
            continue
        if not stat.S_ISDIR(etc.st_mode):
            return None if _is_whiteout(etc) else UNHANDLED
        found = _entry(layer / "etc" / name)
        if found is not None:
            if _is_whiteout(found):
                return None
            if stat.S_ISLNK(found.st_mode):
                return UNHANDLED
            if not stat.S_ISREG(found.st_mode) or found.st_size > limit_bytes:
                return None
            return _read(layer / "etc" / name, limit_bytes)
        if _is_opaque(layer / "etc"):
            return None
    return None


def write_etc_files(layers: OverlayLayers, files: Mapping[str, bytes]) -> bool | Unhandled:
    """Write ``files`` (name → content) into ``/etc`` of the writable layer, owned by root,
    mode 0644. ``False`` when the image has no ``/etc``; :data:`UNHANDLED` when its ``/etc``
    is not a plain directory."""
    etc = _image_etc(layers.lowers)
    if etc is None or isinstance(etc, Unhandled):
        return False if etc is None else UNHANDLED
    upper = os.open(layers.upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir("etc", stat.S_IMODE(etc.st_mode), dir_fd=upper)
        target = os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=upper)
        try:
            os.chown(target, etc.st_uid, etc.st_gid)
            os.chmod(target, stat.S_IMODE(etc.st_mode))
            for name, content in files.items():
                _write(target, name, content)
        finally:
            os.close(target)
    finally:
        os.close(upper)
    return True


def _image_etc(lowers: Sequence[Path]) -> os.stat_result | Unhandled | None:
    """The image's ``/etc`` as its top-most layer that has one holds it."""
    for layer in lowers:
        etc = _entry(layer / "etc")
        if etc is None:
            continue
        if stat.S_ISDIR(etc.st_mode):
            return etc
        return None if _is_whiteout(etc) else UNHANDLED
    return None


def _write(directory: int, name: str, content: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=directory)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=directory)
    with os.fdopen(fd, "wb") as out:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o644)
        out.write(content)


def _entry(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_whiteout(entry: os.stat_result) -> bool:
    return stat.S_ISCHR(entry.st_mode) and entry.st_rdev == 0


def _is_opaque(directory: Path) -> bool:
    try:
        return os.getxattr(directory, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _read(path: Path, limit_bytes: int) -> bytes:
    with os.fdopen(os.open(path, _READ_FLAGS), "rb") as file:
        return file.read(limit_bytes)


__all__ = ["UNHANDLED", "OverlayLayers", "Unhandled", "read_etc_file", "write_etc_files"]
