"""``remove-user --archive``'s archive (``ds01.daemon.admin._write_archive``), made by a
real user's ``tar``: it lands in the directory that was checked even when that directory's
path leads elsewhere by the time it is written, and a sparse file costs neither time nor
space (``tar --sparse``)."""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.daemon.admin import _archive_directory, _write_archive
from ds01.runtime.identity import UnixUser, user_by_name

STAMP = "20261207T090000Z"
SPARSE_BYTES = 1024**3  # read as zeros, 1 GiB would take seconds; as a hole, nothing


@pytest.fixture
def alice(unix_users: dict[str, Any]) -> Iterator[UnixUser]:
    """alice, with a workspace of hers holding one small file."""
    account = user_by_name("alice")
    workspace = account.home / "workspace"
    workspace.mkdir(exist_ok=True)
    os.chown(workspace, account.uid, account.gid)
    notes = workspace / "notes.txt"
    notes.write_text("chapter 1\n")
    os.chown(notes, account.uid, account.gid)
    yield account
    for name in ("notes.txt", "big"):
        (workspace / name).unlink(missing_ok=True)


def test_the_archive_goes_into_the_directory_checked_though_its_path_was_swapped(
    alice: UnixUser, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"  # a folder alice may write in, above the archive's
    (shared / "archive").mkdir(parents=True, mode=0o700)
    shared.chmod(0o777)
    checked = _archive_directory(str(shared / "archive"), alice.home)
    try:
        # alice moves the checked directory away and puts her own under its name.
        (shared / "archive").rename(shared / "moved")
        (shared / "archive").mkdir()
        os.chown(shared / "archive", alice.uid, alice.gid)

        archive, unread = _write_archive(alice, checked, STAMP)
    finally:
        checked.close()

    assert list((shared / "archive").iterdir()) == []
    [made] = list((shared / "moved").iterdir())
    assert made.name == archive.name and unread == []
    with tarfile.open(made) as tar:
        assert "alice/workspace/notes.txt" in tar.getnames()


def test_a_sparse_file_is_archived_as_sparse(alice: UnixUser, tmp_path: Path) -> None:
    big = alice.home / "workspace" / "big"
    with big.open("wb") as stream:
        stream.truncate(SPARSE_BYTES)
    os.chown(big, alice.uid, alice.gid)
    tmp_path.chmod(0o700)
    checked = _archive_directory(str(tmp_path), alice.home)
    try:
        archive, _ = _write_archive(alice, checked, STAMP)
    finally:
        checked.close()

    with tarfile.open(archive) as tar:
        member = tar.getmember("alice/workspace/big")
        assert member.issparse() and member.size == SPARSE_BYTES
    with gzip.open(archive) as unpacked:
        assert len(unpacked.read()) < 64 * 1024  # headers and the sparse map, no zeros
