"""What a ``docker cp`` into a container may put there (pure): the members of a
``PUT /containers/{id}/archive`` tar, as dockerd gets them from the Docker API door.

dockerd extracts such a tar as root, and a ds01 container's file system includes the
caller's own directories (``/workspace``, ``/data``), bind-mounted from the host. Files
land as the tar says: a member may carry root ownership and the set-uid bit (a set-uid-root
binary in the user's home, runnable on the host), file capabilities in an extended
attribute (``SCHILY.xattr.security.capability``), or be a device node (a host disk,
mode 0666). So the door does not forward the client's tar: it writes a new one, member by
member, from what :func:`safe_member` returns:

- **ownership** is the caller's (uid, gid and names), whatever the tar said;
- **mode** keeps only the permission bits (``0o777``): set-uid, set-gid and sticky go;
- **extended attributes** and every other PAX record are dropped (a new header carries
  only name, type, size, mode, time, link target and owner);
- **types**: regular files, directories and symbolic links; a hard link only to a regular
  file written earlier by the same archive (under a name no later member replaced): a
  link to a file already in the container could give the caller a second name for a file
  they do not own. Device nodes, FIFOs and anything else are refused, the whole archive
  with them (nothing reaches dockerd: the door checks every member before it sends one).

:class:`ArchiveMembers` keeps what the hard-link rule needs across the members.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass, field

#: The permission bits a member keeps (no set-uid, set-gid or sticky bit).
PERMISSION_BITS = 0o777
#: Largest tar a ``docker cp`` into a container may send through the door (spooled by
#: ds01d before it goes on).
MAX_ARCHIVE_BYTES = 2 * 1024**3


class ArchiveRefused(ValueError):
    """An archive the door does not let into a container (why, in the message);
    ``status``: the HTTP status to answer."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Owner:
    """Whose the extracted files become: the caller's ids and names."""

    uid: int
    gid: int
    user: str
    group: str


def member_key(name: str) -> str:
    """A member's name as dockerd places it (relative to the target directory): ``./a``,
    ``/a`` and ``a/`` are all ``a``."""
    return posixpath.normpath("/" + name).lstrip("/") or "."


@dataclass
class ArchiveMembers:
    """The regular files an archive wrote so far (by :func:`member_key`), for hard links."""

    files: set[str] = field(default_factory=set)

    def replaced(self, key: str) -> None:
        """A member at ``key`` replaces what was there and below it (dockerd removes a
        path before it writes a non-directory there): its files are no link targets."""
        prefix = key + "/"
        self.files = {f for f in self.files if f != key and not f.startswith(prefix)}


def safe_member(member: tarfile.TarInfo, owner: Owner, seen: ArchiveMembers) -> tarfile.TarInfo:
    """The header that goes to dockerd in place of ``member`` (see the module's rules),
    and ``seen`` updated.

    Raises:
        ArchiveRefused: a device node, FIFO or other special file; a hard link to anything
            but a regular file written earlier by this archive.
    """
    key = member_key(member.name)
    shown = member.name[:80]
    out = tarfile.TarInfo(member.name)
    out.mtime = member.mtime
    out.mode = member.mode & PERMISSION_BITS
    out.uid, out.gid, out.uname, out.gname = owner.uid, owner.gid, owner.user, owner.group
    if member.isreg():
        out.type, out.size = tarfile.REGTYPE, member.size
        seen.replaced(key)
        seen.files.add(key)
    elif member.isdir():
        out.type = tarfile.DIRTYPE
        seen.files.discard(key)  # a file there is replaced; what is below it stays
    elif member.issym():
        out.type, out.linkname = tarfile.SYMTYPE, member.linkname
        seen.replaced(key)
    elif member.islnk():
        if member_key(member.linkname) not in seen.files:
            raise ArchiveRefused(
                f"ds01 copies a hard link into a container only to a file the same copy "
                f"wrote before it: {shown!r} links to {member.linkname[:80]!r}."
            )
        out.type, out.linkname = tarfile.LNKTYPE, member.linkname
        seen.replaced(key)
        seen.files.add(key)  # a second name of a file this archive wrote
    else:
        kind = "a device node" if member.ischr() or member.isblk() else "a special file"
        raise ArchiveRefused(
            f"ds01 copies only files, directories and links into a container: {shown!r} is "
            f"{kind}."
        )
    return out


__all__ = [
    "MAX_ARCHIVE_BYTES",
    "PERMISSION_BITS",
    "ArchiveMembers",
    "ArchiveRefused",
    "Owner",
    "member_key",
    "safe_member",
]
