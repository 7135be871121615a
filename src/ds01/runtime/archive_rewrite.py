"""A ``docker cp`` into a container, as the Docker API door passes it on: the client's
request body read from its socket (``Content-Length`` or chunked), and its tar written
again member by member (``ds01.core.docker_archive.safe_member``) into an unlinked spool
file, bounded in size. Only a tar whose every member passed goes on to dockerd. A copy out
(and an export) streams back through :func:`filter_archive`, without what the caller
could not read. A ``docker load``'s tar is written again too (:func:`spool_load`), plain,
each header made anew, read on the way for ``ds01.core.docker_load`` to decide: dockerd
gets the tar the door read, never the client's bytes.
"""

from __future__ import annotations

import bz2
import io
import lzma
import socket
import tarfile
import zlib
from collections.abc import Callable
from typing import IO

from ds01.core.docker_archive import (
    ArchiveMembers,
    ArchiveRefused,
    Owner,
    ReadableMembers,
    safe_member,
)
from ds01.core.docker_load import (
    AFTER_THE_END,
    MAGIC_BYTES,
    LoadArchive,
    LoadRefused,
    compression_of,
    header_problem,
    header_refused,
    loaded_member,
)
from ds01.model.units import format_bytes

_RECV_BYTES = 65536
#: Longest line of a chunk's size (hex digits and extensions).
_MAX_CHUNK_LINE = 4096


class BodyError(ValueError):
    """The request body is malformed or cut short (named in the message)."""


class RequestBody(io.RawIOBase):
    """A request's body from its socket: ``prefix`` (what came with the head), then the
    socket; ``length`` bytes, or chunked when ``length`` is ``None``."""

    def __init__(self, sock: socket.socket, prefix: bytes, length: int | None) -> None:
        super().__init__()
        self._sock = sock
        self._buf = bytearray(prefix)
        self._left = length  # of the body (length) or of the current chunk (chunked)
        self._chunked = length is None
        self._done = length == 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._done:
            return 0
        if self._chunked and not self._left:
            self._next_chunk()
            if self._done:
                return 0
        assert self._left is not None
        if not self._buf:
            self._fill()
        n = min(len(target), len(self._buf), self._left)
        target[:n] = self._buf[:n]
        del self._buf[:n]
        self._left -= n
        if not self._left and not self._chunked:
            self._done = True
        elif not self._left and self._line():  # the CRLF after a chunk's data
            raise BodyError("a chunk is longer than its size")
        return n

    def _fill(self) -> None:
        data = self._sock.recv(_RECV_BYTES)
        if not data:
            raise BodyError("the request body ended early")
        self._buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if len(self._buf) > _MAX_CHUNK_LINE:
                raise BodyError("a chunk's size line is too long")
            self._fill()
        line, _, rest = bytes(self._buf).partition(b"\r\n")
        self._buf = bytearray(rest)
        return line

    def _next_chunk(self) -> None:
        text = self._line().split(b";", 1)[0].strip()
        try:
            self._left = int(text, 16)
        except ValueError:
            raise BodyError(f"a chunk's size {text[:20]!r} is not hexadecimal") from None
        if self._left == 0:
            while self._line():  # trailers, up to the empty line
                pass
            self._done = True


#: A copy larger than the door passes on (``{limit}``: the limit in words).
_COPY_TOO_LARGE = (
    "The copy is larger than {limit}, the most ds01 passes into a container at once: copy "
    "it through your /workspace directory."
)
_LOAD_TOO_LARGE = (
    "The image tar is larger than {limit}, the most ds01 loads at once: build the image "
    "on this machine instead (docker build, image-build)."
)


class _Bounded(io.RawIOBase):
    """A spool that refuses to grow past ``limit`` bytes (``too_large``: the refusal's
    message, ``{limit}`` the limit in words)."""

    def __init__(self, spool: IO[bytes], limit: int, too_large: str) -> None:
        super().__init__()
        self._spool = spool
        self._limit = limit
        self._too_large = too_large
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.written += len(data)
        if self.written > self._limit:
            raise ArchiveRefused(self._too_large.format(limit=format_bytes(self._limit)), 413)
        self._spool.write(data)
        return len(data)


def rewrite_archive(
    source: IO[bytes], owner: Owner, spool: IO[bytes], limit: int
) -> tuple[IO[bytes], int]:
    """The tar in ``source`` (plain, gzip, bzip2 or xz, as dockerd reads it) written again
    with :func:`safe_member`'s headers into ``spool`` (an empty file, closed here if the
    rewrite fails), rewound; and its size.

    Raises:
        ArchiveRefused: a member refused, the archive larger than ``limit``, or not a tar.
        BodyError: the request body is malformed or ended early.
        OSError: the client's socket failed.
    """

    def rewrite(bounded: _Bounded) -> None:
        seen = ArchiveMembers()
        tar = _Uncompressed(source, limit, _COPY_TOO_LARGE, exact=False)
        with (
            tarfile.open(fileobj=io.BufferedReader(tar, _RECV_BYTES), mode="r|") as tar_in,
            tarfile.open(fileobj=bounded, mode="w|", format=tarfile.PAX_FORMAT) as tar_out,
        ):
            for member in tar_in:
                header = safe_member(member, owner, seen)
                tar_out.addfile(header, tar_in.extractfile(member) if header.isreg() else None)

    return _spooled(spool, limit, _COPY_TOO_LARGE, "The copy is not a tar archive", rewrite)


def _spooled(
    spool: IO[bytes],
    limit: int,
    too_large: str,
    not_a_tar: str,
    write: Callable[[_Bounded], None],
) -> tuple[IO[bytes], int]:
    """``spool`` (an empty file) that ``write`` fills through a ``_Bounded`` of ``limit``
    bytes, rewound, and its size; closed if ``write`` raises. A tar ``write`` cannot read
    is ``ArchiveRefused`` (400), its message beginning with ``not_a_tar``."""
    try:
        bounded = _Bounded(spool, limit, too_large)
        write(bounded)
        spool.flush()  # may meet a full disk too: the spool is closed all the same
        spool.seek(0)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        spool.close()
        raise ArchiveRefused(f"{not_a_tar} ds01 can read ({exc}).", 400) from exc
    except BaseException:
        spool.close()
        raise
    return spool, bounded.written


class _Uncompressed(io.RawIOBase):
    """A tar from ``source``, uncompressed as dockerd would read it: a plain tar as it
    comes, or the one gzip, bzip2 or xz stream it begins with. At most ``limit`` bytes are
    read from ``source``, and at most ``limit`` come out (``too_large``: the refusal's
    message, ``{limit}`` the limit in words), so a small compressed body cannot make
    ds01d read more than a plain one could be. ``exact`` (a ``docker load``, whose tar
    dockerd reads itself): nothing after the compressed stream (a second one is more tar
    to dockerd, none to Python), and a zstd stream refused; otherwise (a tar the door
    writes again) what follows the stream is not read, and zstd is for the tar reader to
    refuse.

    Raises (when read):
        LoadRefused: ``exact``, and a zstd stream or anything after the compressed stream.
        ArchiveRefused: more than ``limit`` bytes in or out (413).
        tarfile.ReadError: the compressed stream is corrupt or ends early.
        BodyError, OSError: from ``source``.
    """

    def __init__(
        self, source: IO[bytes], limit: int, too_large: str = _LOAD_TOO_LARGE, exact: bool = True
    ) -> None:
        super().__init__()
        self._source = source
        self._limit = limit
        self._too_large = too_large
        self._exact = exact
        self._taken = 0  # bytes read from source
        self._given = 0  # bytes given out
        head = b""
        while len(head) < MAGIC_BYTES and (more := self._take(MAGIC_BYTES - len(head))):
            head += more
        self._pending = head  # read from source, not yet used
        self._kind = compression_of(head)
        if self._kind == "zstd" and not exact:
            self._kind = None  # the tar reader refuses it: not a tar it can read
        if self._kind == "zstd":
            raise LoadRefused(
                "The image tar is compressed with zstd, which ds01 does not read: send it "
                "plain, or compressed with gzip, bzip2 or xz."
            )
        self._gzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._other = bz2.BZ2Decompressor() if self._kind == "bzip2" else lzma.LZMADecompressor()

    def readable(self) -> bool:
        return True

    def readinto(self, target: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._plain(len(target)) if self._kind is None else self._inflate(len(target))
        self._given += len(data)
        if self._given > self._limit:
            raise self._refused()
        target[: len(data)] = data
        return len(data)

    def _take(self, size: int) -> bytes:
        data = self._source.read(size)
        self._taken += len(data)
        if self._taken > self._limit:
            raise self._refused()
        return data

    def _plain(self, size: int) -> bytes:
        data, self._pending = self._pending[:size], self._pending[size:]
        return data or self._take(size)

    def _input(self) -> bytes:
        data, self._pending = self._pending or self._take(_RECV_BYTES), b""
        if not data:
            raise tarfile.ReadError(f"its {self._kind} stream ends early")
        return data

    def _inflate(self, size: int) -> bytes:
        """Up to ``size`` bytes of the stream; b"" once it ended (and nothing followed)."""
        while True:
            stream = self._gzip if self._kind == "gzip" else self._other
            if stream.eof:
                return self._ended(stream.unused_data + self._pending)
            if self._kind == "gzip":
                data = self._pending or self._input()
            else:
                data = self._input() if self._other.needs_input else b""
            try:
                if self._kind == "gzip":
                    out = self._gzip.decompress(data, size)
                    self._pending = self._gzip.unconsumed_tail
                else:
                    out = self._other.decompress(data, size)
            except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:  # bz2: OSError
                raise tarfile.ReadError(f"its {self._kind} stream is corrupt: {exc}") from None
            if out:
                return out

    def _refused(self) -> ArchiveRefused:
        return ArchiveRefused(self._too_large.format(limit=format_bytes(self._limit)), 413)

    def _ended(self, unused: bytes) -> bytes:
        if self._exact and (unused or self._take(1)):
            raise LoadRefused(AFTER_THE_END.format(what=f"the end of its {self._kind} stream"))
        return b""


class _OneWayHeader(tarfile.TarInfo):
    """A tar header as Python reads it, refused where another reader (dockerd's Go) could
    read it otherwise (``ds01.core.docker_load.header_problem``), or where Python would
    quietly take it for the tar's end (a header cut short or unreadable after the first)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _OneWayHeader:
        if buf and len(buf) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError("it ends inside a header")
        try:
            header = super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as exc:
            if buf.count(0) == len(buf):
                raise  # the tar's end (a zero block, or no more input)
            raise tarfile.ReadError(f"a header cannot be read: {exc}") from None
        problem = header_problem(bytes(buf))
        if problem is not None:
            raise header_refused(problem)
        return header


def spool_load(
    source: IO[bytes], archive: LoadArchive, spool: IO[bytes], limit: int
) -> tuple[IO[bytes], int]:
    """A ``docker load``'s tar from ``source`` (plain, gzip, bzip2 or xz, as dockerd reads
    it) written again, plain, into ``spool`` (an empty file, closed here if refused),
    rewound; and its size. Each member goes to ``archive`` (its content too, when
    ``archive.wants`` it), which then decides (``LoadArchive.tags``), and into the new
    tar with a header made anew (``loaded_member``) and its content as it came: dockerd
    reads what the door read. At most ``limit`` bytes are read, uncompressed or written.

    Raises:
        ArchiveRefused: the tar is larger than ``limit``, or not a tar.
        LoadRefused: ``archive`` refused a member; a header could be read two ways; more
            than zeros after the tar's end, or more after its compressed stream.
        BodyError: the request body is malformed or ended early.
        OSError: the client's socket failed.
    """

    def rewrite(bounded: _Bounded) -> None:
        tar = io.BufferedReader(_Uncompressed(source, limit), _RECV_BYTES)
        with (
            tarfile.open(fileobj=tar, mode="r|", tarinfo=_OneWayHeader) as tar_in,
            tarfile.open(fileobj=bounded, mode="w|", format=tarfile.PAX_FORMAT) as tar_out,
        ):
            for member in tar_in:
                header = loaded_member(member)
                content = tar_in.extractfile(member) if header.isreg() else None
                kept = content.read() if content and archive.wants(member) else None
                archive.add(member, kept)
                tar_out.addfile(header, io.BytesIO(kept) if kept is not None else content)
            # Python stops at the first zero block; Go reads on after a lone one.
            while rest := tar_in.fileobj.read(_RECV_BYTES):
                if rest.strip(b"\x00"):
                    raise LoadRefused(AFTER_THE_END.format(what="the end of the archive"))

    spool, size = _spooled(spool, limit, _LOAD_TOO_LARGE, "The image tar is not a tar", rewrite)
    if compression_of(spool.read(MAGIC_BYTES)) is not None:
        # dockerd would take the new tar, its first name leading, for a compressed one.
        spool.close()
        raise header_refused("its first member's name begins as a compressed stream does")
    spool.seek(0)
    return spool, size


class SocketWriter(io.RawIOBase):
    """A socket as a file to write to (every write sent whole)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._sock.sendall(data)
        return len(data)


def filter_archive(source: IO[bytes], sink: io.RawIOBase, readable: ReadableMembers) -> None:
    """The tar dockerd sends from ``source`` to ``sink``, member by member as it comes,
    without what ``readable`` leaves out (a copy out of a container, an export).

    Raises:
        tarfile.TarError: dockerd's tar cannot be read (the client's is then cut short).
        OSError: the client or dockerd went away.
    """
    with (
        tarfile.open(fileobj=source, mode="r|") as tar_in,
        tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar_out,
    ):
        for member in tar_in:
            if readable.keep(member):
                tar_out.addfile(member, tar_in.extractfile(member) if member.isreg() else None)


__all__ = [
    "BodyError",
    "RequestBody",
    "SocketWriter",
    "filter_archive",
    "rewrite_archive",
    "spool_load",
]
