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

:class:`ArchiveMembers` keeps what the hard-link rule needs across the members; a copy
*out* of a container is filtered by :class:`ReadableMembers`.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass, field

from ds01.errors import DoorRefusal

#: The permission bits a member keeps (no set-uid, set-gid or sticky bit).
PERMISSION_BITS = 0o777
#: Largest tar a ``docker cp`` into a container may send through the door (spooled by
#: ds01d before it goes on).
MAX_ARCHIVE_BYTES = 2 * 1024**3


class ArchiveRefused(DoorRefusal):
    """An archive the door does not let into a container (why, in the message)."""


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


#: PAX records in which a tar carries a POSIX ACL (GNU tar's ``--acls``; an extended
#: attribute ``system.posix_acl_*`` as star and libarchive write it).
_ACL_RECORDS = (
    "SCHILY.acl.",
    "SCHILY.xattr.system.posix_acl_",
    "LIBARCHIVE.xattr.system.posix_acl_",
)


def has_acl(member: tarfile.TarInfo) -> bool:
    """Whether ``member`` carries a POSIX ACL (then its group bits are the ACL's mask, and
    an entry naming a user or a group may grant or deny more than its mode bits say)."""
    return any(key.startswith(_ACL_RECORDS) for key in member.pax_headers)


@dataclass
class ReadableMembers:
    """What a copy out of a container (``GET /containers/{id}/archive``, ``export``) may
    show the caller: dockerd reads the container as root, so a file the container's user
    could not read (the image's ``/etc/shadow``; a root-owned 0600 file in the user's own
    directory) would come out too. :meth:`keep` leaves out a member the caller could not
    read by its mode bits as the kernel reads them (owner ``uid``; else group, when the
    member's group is ``gid`` or one of ``groups``, the caller's supplementary groups as
    NSS reports them; else everyone; a directory also needs search permission for what is
    below it), a hard link to one left out, and all below a directory the caller could
    not enter.

    ACLs: mode bits alone cannot say what an ACL grants or denies, so a member that
    carries one is kept only for its owner (whose ACL entry is the owner bits); for anyone
    else it is left out (a directory: as if it could not be entered). Supplementary
    groups are read, not guessed: a caller whose groups are unknown (``groups`` empty)
    gets only what their primary group or everyone may read."""

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()
    hidden: set[str] = field(default_factory=set)  # member keys left out
    closed: list[str] = field(default_factory=list)  # directories not to be entered

    def _may(self, member: tarfile.TarInfo, bits: tuple[int, int, int]) -> bool:
        if self.uid == 0:
            return True
        mode = member.mode
        if member.uid == self.uid:
            return bool(mode & bits[0])
        if has_acl(member):  # errs towards leaving out
            return False
        if member.gid == self.gid or member.gid in self.groups:
            return bool(mode & bits[1])
        return bool(mode & bits[2])

    def keep(self, member: tarfile.TarInfo) -> bool:
        """Whether ``member`` goes to the caller."""
        key = member_key(member.name)
        if any(key.startswith(d + "/") for d in self.closed):
            self.hidden.add(key)
            return False
        if member.isdir():
            if not self._may(member, (0o100, 0o010, 0o001)):  # no search: nothing below
                self.closed.append(key)
            return True
        if member.islnk() and member_key(member.linkname) in self.hidden:
            self.hidden.add(key)
            return False
        if member.isreg() and not self._may(member, (0o400, 0o040, 0o004)):
            self.hidden.add(key)
            return False
        return True


__all__ = [
    "MAX_ARCHIVE_BYTES",
    "PERMISSION_BITS",
    "ArchiveMembers",
    "ArchiveRefused",
    "Owner",
    "ReadableMembers",
    "has_acl",
    "member_key",
    "safe_member",
]
