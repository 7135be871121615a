"""Opening a directory with no symlink followed, and staging keys (ds01.runtime.staging)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from ds01.daemon.doctor import check_mount_namespace
from ds01.daemon.views import container_info
from ds01.model import labels as L
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.staging import MountStaging, staging_key
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


@pytest.mark.parametrize(
    "tail",
    ["k/workspace", "k/workspace/", "k//workspace", "./k/workspace", "k/./workspace",
     "k/..", "../x", "k", "k/workspace/more", "", "/k/workspace"],
)  # fmt: skip
def test_a_source_is_read_as_its_path_would_be(tmp_path: Path, tail: str) -> None:
    staging = MountStaging(tmp_path / "mounts")
    source = f"{staging.root}/{tail}"
    relative = Path(source).relative_to(staging.root).parts
    assert staging.owner_of(source) == (relative if len(relative) == 2 else None)


def test_the_staged_keys_are_the_tree_s_own_directories(tmp_path: Path) -> None:
    staging = MountStaging(tmp_path / "mounts")
    assert staging.staged() == set()  # no tree yet
    staging.prepare("kept", "workspace")
    (staging.root / "a-file").write_text("")
    (tmp_path / "elsewhere").mkdir()
    (staging.root / "a-link").symlink_to(tmp_path / "elsewhere")
    assert staging.staged() == {"kept"}


def test_a_staging_key_is_fixed_by_the_create_and_differs_for_a_later_one_of_the_name() -> None:
    key = staging_key("web._.1001", "a" * 32)
    assert key == staging_key("web._.1001", "a" * 32)  # a rollback finds it again
    assert key.startswith("web._.1001.")
    assert key != staging_key("web._.1001", "b" * 32)  # a new container of the same name
    MountStaging(Path("/state/mounts")).path(key, "workspace")  # a valid staging name


def test_staging_keys_are_read_from_a_containers_own_bind_sources(tmp_path: Path) -> None:
    staging = MountStaging(tmp_path / "mounts")
    key = staging_key("web._.1001", "a" * 32)
    summary = {
        "Id": "c" * 64,
        # renamed since its create: its binds still point at its create's key
        "Names": ["/0123456789ab_web._.1001"],
        "Labels": {"ds01.managed": "true", "ds01.uid": "1001", "ds01.name": "web"},
        "Mounts": [
            {"Type": "bind", "Source": str(staging.path(key, "workspace"))},
            {"Type": "bind", "Source": str(staging.path(key, "data"))},
            {"Type": "bind", "Source": "/home/alice/old"},  # made before staging
            {"Type": "volume", "Source": "/var/lib/docker/volumes/v/_data"},
        ],
    }
    record = ContainerRecord.from_summary(summary)
    assert len(record.bind_sources) == 3
    assert staging.keys_of(record.bind_sources) == {key}


def test_the_doctor_tells_whether_ds01d_shares_dockerds_mount_namespace(tmp_path: Path) -> None:
    pid_file = tmp_path / "docker.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert check_mount_namespace(pid_file).level == "ok"
    assert check_mount_namespace(tmp_path / "missing.pid").level == "warning"


def test_a_listed_container_knows_its_binds_as_docker_lists_them() -> None:
    summary: dict[str, Any] = {
        "Id": "c" * 64, "Names": ["/a._.1001"], "State": "created",
        "Labels": {L.MANAGED: "true", L.UID: "1001"},
        "NetworkSettings": {"Networks": {"ds01-u1001": {"NetworkID": ""}}},
        "Mounts": [
            {"Type": "bind", "Source": "/s/k/workspace", "Destination": "/workspace"},
            {"Type": "volume", "Name": "v", "Source": "/var/lib/docker/v", "Destination": "/v"},
        ],
    }  # fmt: skip
    record = ContainerRecord.from_summary(summary)
    assert record.networks == ("ds01-u1001",)
    assert record.binds == (("/s/k/workspace", "/workspace"),)
    assert record.bind_sources == ("/s/k/workspace",)


def test_a_running_container_tells_its_address_on_its_owners_network_only() -> None:
    summary: dict[str, Any] = {
        "Id": "c" * 64, "Names": ["/jupyterhub._.1001"], "State": "running",
        "Labels": {L.MANAGED: "true", L.UID: "1001"},
        "NetworkSettings": {"Networks": {
            "ds01-u1001": {"NetworkID": "n", "IPAddress": "172.18.0.2"},
            "bridge": {"NetworkID": "b", "IPAddress": "172.17.0.9"},
            "none": None,
        }},
    }  # fmt: skip
    record = ContainerRecord.from_summary(summary)
    assert record.addresses == (("bridge", "172.17.0.9"), ("ds01-u1001", "172.18.0.2"))
    assert container_info(record).address == "172.18.0.2"  # where the hub reaches it

    stopped = ContainerRecord.from_summary({**summary, "State": "exited"})
    assert container_info(stopped).address is None
    elsewhere = {"Networks": {"bridge": {"IPAddress": "172.17.0.9"}}}
    assert container_info(ContainerRecord.from_summary(
        {**summary, "NetworkSettings": elsewhere})).address is None  # fmt: skip
