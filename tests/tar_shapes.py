"""Tars that Python's ``tarfile`` and Go's ``archive/tar`` (dockerd's) read as different
members: what a door that checks a tar with one and forwards it to the other must never
let through (``ds01.runtime.archive_rewrite.spool_load``).

Each takes the members both readers see (``seen``) and those only Go sees (``hidden``),
as ``(TarInfo, content)`` pairs; ``hidden`` comes after ``seen``, so a ``manifest.json``
in it is the one dockerd reads (the last of a name wins).
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from pathlib import Path
from typing import IO

Members = list[tuple[tarfile.TarInfo, bytes]]

#: A size field Python reads as 0 (it stops at the NUL) and Go as 512 (it strips it).
TWO_WAY_SIZE = b"\x00" + b"%010o" % tarfile.BLOCKSIZE + b"\x00"


def new_spool(directory: Path) -> IO[bytes]:
    """An empty spool file of ``directory``, as ds01d gives the door's rewrites one."""
    return tempfile.TemporaryFile(dir=directory)


def tar_bytes(members: Members, *, end: bool = True) -> bytes:
    """``members`` as a ustar tar (PAX where needed); without its end blocks when not
    ``end``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        written = tar.offset
    return out.getvalue() if end else out.getvalue()[:written]


def with_checksum(block: bytes) -> bytes:
    """A header ``block`` with its checksum field set for what it now holds."""
    summed = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    return block[:148] + b"%06o\x00 " % summed + block[156:]


def size_smuggled(seen: Members, hidden: Members) -> bytes:
    """``seen``, then a member whose size is :data:`TWO_WAY_SIZE`, then a file ``junk``
    holding the tar of ``hidden``. Python: the first member is empty, ``junk`` a member.
    Go: the first member's 512 bytes are ``junk``'s header, then ``hidden``'s members."""
    hidden_tar = tar_bytes(hidden)
    pad = tarfile.TarInfo("pad")
    block = pad.tobuf(tarfile.USTAR_FORMAT)
    block = with_checksum(block[:124] + TWO_WAY_SIZE + block[136:])
    junk = tarfile.TarInfo("junk")
    junk.size = len(hidden_tar)
    return (
        tar_bytes(seen, end=False)
        + block
        + junk.tobuf(tarfile.USTAR_FORMAT)
        + hidden_tar
        + b"\x00" * (2 * tarfile.BLOCKSIZE)
    )


def gzip_smuggled(seen: Members, hidden: Members) -> bytes:
    """gzip(``seen`` with no end blocks) + gzip(``hidden`` and the end): Python's tarfile
    reads the first gzip stream only, Go's gunzip both as one."""
    return gzip.compress(tar_bytes(seen, end=False)) + gzip.compress(tar_bytes(hidden))
