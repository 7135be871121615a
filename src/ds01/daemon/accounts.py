"""Give a new container its owner's name, group and home (``ds01.core.accounts``)."""

from __future__ import annotations

import grp
import logging
import threading
from collections import OrderedDict

from ds01.core.accounts import Account, group_with, passwd_with
from ds01.errors import NotFound
from ds01.runtime.docker import DockerRuntime
from ds01.runtime.identity import UnixUser

log = logging.getLogger(__name__)

#: The largest ``/etc/passwd`` or ``/etc/group`` of an image that ds01d reads.
ACCOUNT_FILE_LIMIT_BYTES = 1024 * 1024
#: Images whose own account files are remembered (the least recently used is forgotten).
CACHED_IMAGES = 64
#: What a container without the file gets besides its owner.
_ROOT_ONLY = {"passwd": "root:x:0:0:root:/root:/bin/sh\n", "group": "root:x:0:\n"}


class OwnerAccounts:
    """Writes the owner's entries into a created container's ``/etc/passwd`` and
    ``/etc/group`` (root-owned, 0644: the owner cannot change them), before its first start.

    Each engine call on a container's files costs Docker a mount of its file system (about
    60 ms on 2 cores), so an image's own files are read once per image id and remembered:
    a create then costs one call. Thread-safe: creates of different users run at once.
    """

    def __init__(self, runtime: DockerRuntime, cached_images: int = CACHED_IMAGES) -> None:
        self._runtime = runtime
        self._cached_images = cached_images
        self._lock = threading.Lock()
        self._image_files: OrderedDict[str, dict[str, str]] = OrderedDict()

    def write(self, docker_name: str, image_id: str, owner: UnixUser, *, home: str) -> None:
        """Write ``owner``'s account into ``docker_name``, made from ``image_id`` (``""``:
        unknown, read from the container). A container without ``/etc`` (an image built
        ``FROM scratch``), a container of root, and an owner whose name or group cannot be
        written in ``/etc/passwd`` are left as they are (logged).

        Raises:
            Ds01Error: Docker refused (the caller rolls the create back).
        """
        if owner.uid == 0:  # root (an admin's own container) has its line in every image
            return
        try:
            account = Account(
                name=owner.name, uid=owner.uid, gid=owner.gid, group=_group_name(owner), home=home
            )
        except ValueError as exc:  # a name /etc/passwd cannot hold: the container goes without
            log.warning("%s: no account for its owner inside: %s", docker_name, exc)
            return
        own = self._image_files_of(docker_name, image_id)
        files = {
            "passwd": passwd_with(own["passwd"], account).encode(),
            "group": group_with(own["group"], account).encode(),
        }
        try:
            self._runtime.write_files(docker_name, "/etc", files)
        except NotFound:
            log.info("%s has no /etc: its owner has no name inside", docker_name)

    def _image_files_of(self, docker_name: str, image_id: str) -> dict[str, str]:
        with self._lock:
            cached = self._image_files.get(image_id) if image_id else None
            if cached is not None:
                self._image_files.move_to_end(image_id)
                return cached
        files = {name: self._read(docker_name, name) for name in ("passwd", "group")}
        if image_id:
            with self._lock:
                self._image_files[image_id] = files
                while len(self._image_files) > self._cached_images:
                    self._image_files.popitem(last=False)
        return files

    def _read(self, docker_name: str, name: str) -> str:
        """The image's file as the new container has it; root alone when it has none or
        one larger than ``ACCOUNT_FILE_LIMIT_BYTES``."""
        content = self._runtime.read_small_file(
            docker_name, f"/etc/{name}", ACCOUNT_FILE_LIMIT_BYTES
        )
        return _ROOT_ONLY[name] if content is None else content.decode("utf-8", errors="replace")


def _group_name(owner: UnixUser) -> str:
    try:
        return grp.getgrgid(owner.gid).gr_name
    except KeyError:  # a primary gid without a name: the owner's name stands for it
        return owner.name


__all__ = ["ACCOUNT_FILE_LIMIT_BYTES", "CACHED_IMAGES", "OwnerAccounts"]
