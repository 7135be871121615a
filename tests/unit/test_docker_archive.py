"""A ``docker cp`` into a container through the Docker API door: the tar dockerd gets is
written again (the caller's ownership, permission bits only, no extended attributes, no
device nodes, hard links only to files of the same copy), and the request body is read
from the client's socket as sent (Content-Length or chunked)."""

from __future__ import annotations

import gzip
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ds01.core.docker_archive import (
    ArchiveMembers,
    ArchiveRefused,
    Owner,
    ReadableMembers,
    member_key,
    safe_member,
)
from ds01.runtime.archive_rewrite import BodyError, RequestBody, filter_archive, rewrite_archive
from tar_shapes import new_spool

ALICE = Owner(uid=1001, gid=1001, user="alice", group="alice")


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def test_a_set_uid_root_binary_becomes_the_callers_plain_file() -> None:
    planted = member("sh", uid=0, gid=0, uname="root", gname="root", mode=0o6755)
    out = safe_member(planted, ALICE, ArchiveMembers())
    assert (out.uid, out.gid, out.uname, out.gname) == (1001, 1001, "alice", "alice")
    assert out.mode == 0o755
    assert out.type == tarfile.REGTYPE


def test_a_sticky_set_gid_directory_keeps_only_its_permissions() -> None:
    out = safe_member(member("d", tarfile.DIRTYPE, mode=0o3777, uid=0), ALICE, ArchiveMembers())
    assert (out.type, out.mode, out.uid) == (tarfile.DIRTYPE, 0o777, 1001)


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (tarfile.CHRTYPE, "device node"),
        (tarfile.BLKTYPE, "device node"),
        (tarfile.FIFOTYPE, "special file"),
    ],
)
def test_device_nodes_and_special_files_are_refused(kind: bytes, words: str) -> None:
    with pytest.raises(ArchiveRefused, match=words):
        safe_member(member("sda", kind, devmajor=8, mode=0o666), ALICE, ArchiveMembers())


def test_a_hard_link_only_to_a_file_this_copy_wrote() -> None:
    seen = ArchiveMembers()
    safe_member(member("./dir/a"), ALICE, seen)
    link = safe_member(member("b", tarfile.LNKTYPE, linkname="dir/a"), ALICE, seen)
    assert (link.type, link.linkname, link.uid) == (tarfile.LNKTYPE, "dir/a", 1001)
    safe_member(member("c", tarfile.LNKTYPE, linkname="/b"), ALICE, seen)  # a second name
    with pytest.raises(ArchiveRefused, match="hard link"):
        safe_member(member("x", tarfile.LNKTYPE, linkname="usr/bin/su"), ALICE, seen)


def test_a_file_replaced_below_a_symbolic_link_is_no_link_target() -> None:
    # dir/su written, then dir made a link to /bin: "dir/su" now names the image's su.
    seen = ArchiveMembers()
    safe_member(member("dir/su"), ALICE, seen)
    safe_member(member("dir", tarfile.SYMTYPE, linkname="/bin"), ALICE, seen)
    with pytest.raises(ArchiveRefused, match="hard link"):
        safe_member(member("mine", tarfile.LNKTYPE, linkname="dir/su"), ALICE, seen)


def test_member_keys_are_where_dockerd_puts_them() -> None:
    assert member_key("./a/b/") == member_key("/a/b") == member_key("a//b") == "a/b"
    assert member_key("../../etc") == "etc"
    assert member_key("./") == "."


def test_the_rewritten_tar_drops_extended_attributes_and_keeps_contents(tmp_path: Path) -> None:
    binary = member("x", uid=0, mode=0o4755)
    binary.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    data = tar_of((binary, b"#!/bin/sh\n"), (member("d", tarfile.DIRTYPE, mode=0o755), None))
    spool, size = rewrite_archive(io.BytesIO(data), ALICE, new_spool(tmp_path), 1 << 20)
    with spool:
        assert size == len(spool.read())
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r:") as tar:
            members = tar.getmembers()
            assert [(m.name, m.mode, m.uid) for m in members] == [
                ("x", 0o755, 1001),
                ("d", 0o755, 1001),
            ]
            assert not any(key.startswith("SCHILY.") for m in members for key in m.pax_headers)
            extracted = tar.extractfile("x")
            assert extracted is not None and extracted.read() == b"#!/bin/sh\n"
    assert list(tmp_path.iterdir()) == []  # the spool is an unlinked file


def test_a_gzipped_copy_is_read_as_dockerd_reads_it(tmp_path: Path) -> None:
    data = gzip.compress(tar_of((member("a", uid=0), b"hello")))
    spool, _ = rewrite_archive(io.BytesIO(data), ALICE, new_spool(tmp_path), 1 << 20)
    with spool, tarfile.open(fileobj=spool, mode="r:") as tar:
        assert [(m.name, m.uid) for m in tar.getmembers()] == [("a", 1001)]


def test_a_gzipped_copy_unpacks_to_no_more_than_a_plain_one_may_be(tmp_path: Path) -> None:
    # A 1 MiB header record, a few KiB gzipped: never written out again, but read whole.
    padded = member("x")
    padded.pax_headers = {"comment": "a" * (1 << 20)}
    data = gzip.compress(tar_of((padded, b"")))
    assert len(data) < 1 << 16
    with pytest.raises(ArchiveRefused, match="larger than") as refused:
        rewrite_archive(io.BytesIO(data), ALICE, new_spool(tmp_path), 1 << 16)
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"this is not a tar archive" * 40, 400, "not a tar"),
        (tar_of((member("big"), b"x" * 32768)), 413, "larger than"),
        (tar_of((member("sda", tarfile.CHRTYPE), None)), 403, "device node"),
    ],
)
def test_a_copy_refused_whole(tmp_path: Path, data: bytes, status: int, words: str) -> None:
    with pytest.raises(ArchiveRefused, match=words) as refused:
        rewrite_archive(io.BytesIO(data), ALICE, new_spool(tmp_path), 16384)
    assert refused.value.status == status
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    left.settimeout(5)
    with left, right:
        yield left, right


def sent_later(sock: socket.socket, data: bytes) -> threading.Thread:
    thread = threading.Thread(target=lambda: (sock.sendall(data), sock.shutdown(socket.SHUT_WR)))
    thread.start()
    return thread


def test_a_chunked_body_is_read_across_receives(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    thread = sent_later(client, b"lo, \r\n7;ext=1\r\nworld!\n\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT")
    body = io.BufferedReader(RequestBody(server, b"7\r\nhel", None))
    assert body.read() == b"hello, world!\n"
    thread.join()


def test_a_long_body_is_read_to_its_length(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    thread = sent_later(client, b"cdefNEXT")
    assert io.BufferedReader(RequestBody(server, b"ab", 6)).read() == b"abcdef"
    thread.join()


@pytest.mark.parametrize(
    ("prefix", "length", "words"),
    [
        (b"zz\r\n", None, "hexadecimal"),
        (b"5\r\nab", None, "ended early"),
        (b"2\r\nabc\r\n", None, "longer than its size"),
        (b"ab", 5, "early"),
    ],
)
def test_a_malformed_or_short_body_is_an_error(
    pair: tuple[socket.socket, socket.socket], prefix: bytes, length: int | None, words: str
) -> None:
    server, client = pair
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(BodyError, match=words):
        io.BufferedReader(RequestBody(server, prefix, length)).read()


def readable(**fields: object) -> tarfile.TarInfo:
    info = member("f", **{"uid": 0, "gid": 0, "mode": 0o600, **fields})
    return info


@pytest.mark.parametrize(
    ("fields", "kept"),
    [
        ({"uid": 1001, "mode": 0o400}, True),
        ({"uid": 1001, "mode": 0o044}, False),  # hers, but not readable by her
        ({"gid": 1001, "mode": 0o040}, True),
        ({"mode": 0o604}, True),
        ({"mode": 0o640}, False),  # root's group
        ({"mode": 0o600}, False),  # /etc/shadow
    ],
)
def test_a_copy_out_keeps_what_the_containers_user_could_read(
    fields: dict[str, object], kept: bool
) -> None:
    assert ReadableMembers(1001, 1001).keep(readable(**fields)) is kept
    assert ReadableMembers(0, 0).keep(readable(**fields))  # root reads everything


@pytest.mark.parametrize(
    ("fields", "kept"),
    [
        ({"gid": 2000, "mode": 0o040}, True),  # her supplementary group may read it
        ({"gid": 2000, "mode": 0o604}, False),  # her group may not: everyone's bits do not count
        ({"gid": 2001, "mode": 0o040}, False),  # a group she is not in
    ],
)
def test_a_copy_out_reads_her_supplementary_groups(fields: dict[str, object], kept: bool) -> None:
    assert ReadableMembers(1001, 1001, frozenset({1001, 2000})).keep(readable(**fields)) is kept
    assert not ReadableMembers(1001, 1001).keep(readable(gid=2000, mode=0o040))  # groups unknown


ACL = {"SCHILY.xattr.system.posix_acl_access": "\x02\x00\x00\x00"}


def test_a_member_with_an_acl_is_kept_only_for_its_owner() -> None:
    # The ACL may deny her what everyone's bits allow: left out, as if it were not readable.
    members = ReadableMembers(1001, 1001, frozenset({1001}))
    assert not members.keep(readable(mode=0o644, pax_headers=ACL))
    assert not members.keep(readable(gid=1001, mode=0o640, pax_headers={"SCHILY.acl.access": "x"}))
    assert members.keep(readable(uid=1001, mode=0o600, pax_headers=ACL))  # hers: owner bits
    assert members.keep(member("d", tarfile.DIRTYPE, uid=0, mode=0o755, pax_headers=ACL))
    assert not members.keep(member("d/f", mode=0o644))  # below a directory it may not enter


def test_nothing_below_a_closed_directory_and_no_link_to_a_hidden_file() -> None:
    members = ReadableMembers(1001, 1001)
    assert members.keep(member("root", tarfile.DIRTYPE, mode=0o700))
    assert not members.keep(member("root/open", mode=0o644))
    assert members.keep(member("etc", tarfile.DIRTYPE, mode=0o755))
    assert not members.keep(member("etc/shadow", mode=0o600))
    assert not members.keep(member("copy", tarfile.LNKTYPE, linkname="etc/shadow"))
    assert members.keep(member("etc/passwd", mode=0o644))


def test_the_filtered_tar_streams_what_is_kept(tmp_path: Path) -> None:
    data = tar_of(
        (member("etc", tarfile.DIRTYPE, mode=0o755), None),
        (member("etc/shadow", mode=0o600), b"root:$6$secret"),
        (member("etc/passwd", mode=0o644), b"root:x:0:0"),
    )
    out = io.BytesIO()
    filter_archive(io.BytesIO(data), out, ReadableMembers(1001, 1001))  # type: ignore[arg-type]
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getnames() == ["etc", "etc/passwd"]
    assert b"secret" not in out.getvalue()
