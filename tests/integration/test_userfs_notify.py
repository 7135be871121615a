"""Files in users' directories written as the user (``ds01.runtime.userfs``), with real users.

The pytest process is root, like ds01d; every write goes through a child that drops to
alice's ids. Checked: the child really is alice (and can do no more than she can), what
she may have put under a file's name (a hard link to a file of root's or bob's, a symlink,
a FIFO, a huge file, a directory) is never written through, blocked on, nor given away, a
path with a symlink anywhere is refused, and a child that hangs is killed at its timeout.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01.runtime.userfs import (
    UserFsError,
    UserIds,
    make_directory,
    reach_directory,
    replace_file,
    run_as,
    stat_in,
)
from support import make_world_traversable_dir

PRECIOUS = b"precious content\n"


def ids_of(user: Any) -> UserIds:
    return UserIds.of(user.pw_name, user.pw_uid, user.pw_gid)


@pytest.fixture
def area(unix_users: dict[str, Any]) -> Iterator[dict[str, Path]]:
    """``scratch`` (root's, 0755), ``alice`` (a directory of hers in it) and ``bob`` (bob's,
    0777), on the filesystem of the homes."""
    scratch = make_world_traversable_dir("ds01-userfs-")
    alice, bob = unix_users["alice"], unix_users["bob"]
    mine = scratch / "alice"
    mine.mkdir()
    os.chown(mine, alice.pw_uid, alice.pw_gid)
    bobs = scratch / "bob"
    bobs.mkdir()
    os.chown(bobs, bob.pw_uid, bob.pw_gid)
    bobs.chmod(0o777)
    yield {"scratch": scratch, "alice": mine, "bob": bobs}
    shutil.rmtree(scratch, ignore_errors=True)


def victim(directory: Path, owner: Any | None) -> Path:
    path = directory / f"victim-{uuid.uuid4().hex[:6]}"
    path.write_bytes(PRECIOUS)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    path.chmod(0o666)
    return path


def refused(call: Any) -> UserFsError:
    with pytest.raises(UserFsError) as caught:
        call()
    return caught.value


def test_the_child_is_the_user_and_no_more(unix_users: dict[str, Any]) -> None:
    alice = unix_users["alice"]
    ids = ids_of(alice)
    seen = run_as(ids, lambda: f"{os.getresuid()} {os.getresgid()} {sorted(os.getgroups())}")
    assert seen == f"{(alice.pw_uid,) * 3} {(alice.pw_gid,) * 3} {sorted(ids.groups)}"
    error = refused(lambda: run_as(ids, lambda: str(os.open("/etc/shadow", os.O_RDONLY))))
    assert error.errno == errno.EACCES


def test_a_notice_is_a_new_file_of_the_user(
    unix_users: dict[str, Any], area: dict[str, Path]
) -> None:
    alice = unix_users["alice"]
    replace_file(area["alice"], ".ds01-notice", b"first\n", ids_of(alice))
    replace_file(area["alice"], ".ds01-notice", b"second\n", ids_of(alice))
    notice = area["alice"] / ".ds01-notice"
    assert notice.read_bytes() == b"second\n"
    st = notice.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (alice.pw_uid, alice.pw_gid, 0o644)
    assert sorted(os.listdir(area["alice"])) == [".ds01-notice"]  # no temporary left


@pytest.mark.parametrize("owner", ["root", "bob"])
def test_a_hard_link_is_refused_and_its_file_untouched(
    unix_users: dict[str, Any], area: dict[str, Path], owner: str
) -> None:
    alice = unix_users["alice"]
    target = victim(area["scratch"], None if owner == "root" else unix_users[owner])
    before = target.stat()
    os.link(target, area["alice"] / ".ds01-notice")

    error = refused(lambda: replace_file(area["alice"], ".ds01-notice", b"x", ids_of(alice)))

    assert error.errno == errno.EEXIST and "single link" in str(error)
    after = target.stat()
    assert target.read_bytes() == PRECIOUS
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )


def test_symlinks_fifos_and_directories_are_left_as_they_are(
    unix_users: dict[str, Any], area: dict[str, Path]
) -> None:
    alice, mine = unix_users["alice"], area["alice"]
    target = victim(area["scratch"], None)
    for name, make in (
        ("link", lambda p: os.symlink(target, p)),
        ("fifo", os.mkfifo),
        ("dir", os.mkdir),
    ):
        path = mine / name
        make(path)
        error = refused(lambda n=name: replace_file(mine, n, b"x", ids_of(alice)))
        assert error.errno == errno.EEXIST, (name, error)
    assert target.read_bytes() == PRECIOUS
    assert stat.S_ISLNK((mine / "link").lstat().st_mode)
    assert stat.S_ISFIFO((mine / "fifo").lstat().st_mode)


def test_a_huge_file_is_replaced_without_being_read(
    unix_users: dict[str, Any], area: dict[str, Path]
) -> None:
    alice, mine = unix_users["alice"], area["alice"]
    huge = mine / ".ds01-notice"
    with open(huge, "wb") as stream:
        stream.truncate(1 << 40)  # 1 TiB, sparse
    os.chown(huge, alice.pw_uid, alice.pw_gid)
    replace_file(mine, ".ds01-notice", b"small\n", ids_of(alice))
    assert huge.read_bytes() == b"small\n"


def test_paths_through_symlinks_and_directories_not_the_users_are_refused(
    unix_users: dict[str, Any], area: dict[str, Path]
) -> None:
    alice, mine, bobs = unix_users["alice"], area["alice"], area["bob"]
    (mine / "real").mkdir()
    os.chown(mine / "real", alice.pw_uid, alice.pw_gid)
    os.symlink(mine / "real", mine / "swapped")  # the directory itself is a link
    os.symlink(mine, area["scratch"] / "above")  # a directory above it is a link
    for directory in (mine / "swapped", area["scratch"] / "above" / "real"):
        error = refused(lambda d=directory: replace_file(d, "n", b"x", ids_of(alice)))
        assert error.errno == errno.ENOTDIR, (directory, error)
    assert os.listdir(mine / "real") == []
    # bob's directory is writable to alice, but it is not hers: no notice of hers there.
    error = refused(lambda: replace_file(bobs, "n", b"x", ids_of(alice)))
    assert error.errno == errno.EPERM
    assert os.listdir(bobs) == []


def test_a_directory_the_user_made_unwritable_stays_so(
    unix_users: dict[str, Any], area: dict[str, Path]
) -> None:
    alice, mine = unix_users["alice"], area["alice"]
    mine.chmod(0o555)
    error = refused(lambda: replace_file(mine, ".ds01-notice", b"x", ids_of(alice)))
    assert error.errno == errno.EACCES
    assert os.listdir(mine) == []


def test_a_child_that_hangs_is_killed_at_its_timeout(
    unix_users: dict[str, Any], area: dict[str, Path]
) -> None:
    fifo = area["alice"] / "fifo"
    os.mkfifo(fifo)
    os.chown(fifo, unix_users["alice"].pw_uid, -1)
    # Opening a FIFO that no one writes to blocks (the child of ds01d never does this).
    error = refused(
        lambda: run_as(
            ids_of(unix_users["alice"]),
            lambda: str(os.open(fifo, os.O_RDONLY)),
            timeout_seconds=0.5,
        )
    )
    assert error.errno == errno.ETIMEDOUT


def test_directories_are_made_as_the_user(
    unix_users: dict[str, Any], area: dict[str, Path]
) -> None:
    alice, mine = unix_users["alice"], area["alice"]
    made = mine / "workspace"
    assert make_directory(made, ids_of(alice)) is True
    st = made.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (alice.pw_uid, alice.pw_gid, 0o755)
    assert make_directory(made, ids_of(alice)) is False  # exists
    error = refused(lambda: make_directory(area["scratch"] / "w", ids_of(alice)))
    assert error.errno == errno.EACCES  # root's directory: alice may not create there
    os.symlink(area["bob"], mine / "to-bob")
    error = refused(lambda: make_directory(mine / "to-bob" / "w", ids_of(alice)))
    assert error.errno == errno.ENOTDIR
    assert os.listdir(area["bob"]) == []


def test_root_reads_only_the_owners_regular_files_not_through_links(
    unix_users: dict[str, Any], area: dict[str, Path]
) -> None:
    alice, bob, mine = unix_users["alice"], unix_users["bob"], area["alice"]
    own = mine / "own"
    own.touch()
    os.chown(own, alice.pw_uid, alice.pw_gid)
    assert stat_in(mine, "own", alice.pw_uid) is not None
    os.symlink(own, mine / "link")
    assert stat_in(mine, "link", alice.pw_uid) is None
    assert stat_in(mine, "own", bob.pw_uid) is None  # not bob's directory
    bobs_file = area["bob"] / "f"
    bobs_file.touch()
    os.link(bobs_file, mine / "bobs")
    assert stat_in(mine, "bobs", alice.pw_uid) is None  # a file of bob's
    os.symlink(mine, area["scratch"] / "via")
    assert stat_in(area["scratch"] / "via", "own", alice.pw_uid) is None


# --- reaching a path as the user --------------------------------------------------------


def test_a_path_is_reached_as_the_user_through_her_symlinks(
    area: dict[str, Path], unix_users: dict[str, Any]
) -> None:
    target = area["alice"] / "real"
    target.mkdir()
    link = area["alice"] / "link"
    link.symlink_to(target)

    reached = reach_directory(str(link), ids_of(unix_users["alice"]))

    st = target.stat()
    assert (reached.path, reached.device, reached.inode) == (str(target), st.st_dev, st.st_ino)
    fd = os.open(target, os.O_PATH | os.O_DIRECTORY)
    try:
        assert reached.is_open_in(fd)
    finally:
        os.close(fd)


def test_a_directory_behind_a_folder_she_cannot_enter_is_not_reached(
    area: dict[str, Path], unix_users: dict[str, Any]
) -> None:
    alice = unix_users["alice"]
    locked = area["scratch"] / "locked"
    locked.mkdir(mode=0o700)
    hers = locked / "hers"
    hers.mkdir()
    os.chown(hers, alice.pw_uid, alice.pw_gid)
    (area["alice"] / "into-locked").symlink_to(hers)

    for path in (hers, area["alice"] / "into-locked", locked / "missing"):
        with pytest.raises(UserFsError) as caught:
            reach_directory(str(path), ids_of(alice))
        assert caught.value.errno == errno.EACCES, path
    with pytest.raises(UserFsError) as missing:
        reach_directory(str(area["alice"] / "missing"), ids_of(alice))
    assert missing.value.errno == errno.ENOENT
