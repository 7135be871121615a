"""Opening a directory with no symlink followed (ds01.runtime.staging)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ds01.daemon.doctor import check_mount_namespace
from ds01.runtime.staging import MountStaging
from ds01.runtime.userfs import PathStep, open_directory


def test_the_directory_itself_is_opened(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    fd = open_directory(str(tmp_path / "a" / "b"))
    try:
        assert os.fstat(fd).st_ino == (tmp_path / "a" / "b").stat().st_ino
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["leaf", "parent"])
def test_a_symlink_at_any_component_fails_the_open(tmp_path: Path, where: str) -> None:
    (tmp_path / "real" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "leaf").symlink_to(tmp_path / "real" / "b")
    path = tmp_path / "link" / "b" if where == "parent" else tmp_path / "real" / "leaf"
    with pytest.raises(PathStep) as failed:
        open_directory(str(path))
    assert failed.value.errno in (errno.ELOOP, errno.ENOTDIR)
    expected = tmp_path / ("link" if where == "parent" else "real/leaf")
    assert failed.value.component == str(expected)


@pytest.mark.parametrize("path", ["relative/dir", "/tmp/../etc", "/tmp/./x"])
def test_only_absolute_normalised_paths_are_opened(path: str) -> None:
    with pytest.raises(OSError) as refused:
        open_directory(path)
    assert refused.value.errno == errno.EINVAL


def test_staging_paths_are_recognised_and_names_checked(tmp_path: Path) -> None:
    staging = MountStaging(tmp_path / "mounts")
    source = staging.path("nb._.1001", "workspace")
    assert staging.owner_of(str(source)) == ("nb._.1001", "workspace")
    assert staging.owner_of("/home/alice/workspace") is None
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            staging.path(bad, "workspace")


def test_the_doctor_tells_whether_ds01d_shares_dockerds_mount_namespace(tmp_path: Path) -> None:
    pid_file = tmp_path / "docker.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert check_mount_namespace(pid_file).level == "ok"
    assert check_mount_namespace(tmp_path / "missing.pid").level == "warning"
