"""A ``docker load`` through the Docker API door: the tar is spooled as sent (bounded) and
read on the way; it goes on only when every image in it is tagged in the caller's own
namespace, has a config in the tar that claims none of ds01's labels (not even her own
owner label), and nothing in it lies below a symbolic link of its own."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from ds01.core.docker_api import own_repository
from ds01.core.docker_archive import ArchiveRefused
from ds01.core.docker_load import LoadArchive, LoadRefused
from ds01.runtime.archive_rewrite import spool_load

CONFIG = "abc.json"


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data), link
    return info, data


def saved(
    tags: object = ("alice/model:1",),
    labels: dict[str, str] | None = None,
    extra: tuple[tuple[tarfile.TarInfo, bytes], ...] = (),
    manifest: object = None,
    last: tuple[tuple[tarfile.TarInfo, bytes], ...] = (),
) -> bytes:
    """A tar as ``docker save`` writes one image (a config, a layer, the manifest)."""
    config = json.dumps({"config": {"Labels": labels}, "rootfs": {"type": "layers"}}).encode()
    if manifest is None:
        manifest = [{"Config": CONFIG, "RepoTags": tags, "Layers": ["l1/layer.tar"]}]
    members = [
        entry(CONFIG, config),
        entry("l1", kind=tarfile.DIRTYPE),
        entry("l1/layer.tar", b"\0" * 1024),
        *extra,
        entry("manifest.json", json.dumps(manifest).encode()),
        *last,
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def load(data: bytes, tmp_path: Path, limit: int = 1 << 20) -> tuple[list[str], bytes]:
    """The tags alice's load of ``data`` brings in, and what goes on to dockerd."""
    archive = LoadArchive()
    spool, size = spool_load(io.BytesIO(data), archive, tmp_path, limit)
    with spool:
        sent = spool.read()
    assert size == len(sent)
    return archive.tags(lambda repo: own_repository(repo, "alice", 1001)), sent


def test_a_tar_of_her_own_tagged_image_goes_on_as_sent(tmp_path: Path) -> None:
    data = saved(tags=["alice/model:1", "alice/model:latest"])
    assert load(data, tmp_path) == (["alice/model:1", "alice/model:latest"], data)


def test_a_compressed_tar_is_read_and_goes_on_compressed(tmp_path: Path) -> None:
    data = gzip.compress(saved())
    assert load(data, tmp_path) == (["alice/model:1"], data)


def test_an_image_may_say_what_it_serves_or_carry_emptied_ds01_labels(tmp_path: Path) -> None:
    labels = {"ds01.jupyter.port": "8888", "ds01.uid": "", "org.example": "x"}
    assert load(saved(labels=labels), tmp_path)[0] == ["alice/model:1"]


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        (["ds01-test/busybox:latest"], "alice/NAME"),  # the registry's tag
        (["bob/model:1"], "alice/NAME"),  # another user's
        (["alice/model:1", "busybox:latest"], "alice/NAME"),  # one of several
        (["docker.io/alice/model:1"], "alice/NAME"),
        ([], "has no tag"),
        (None, "has no tag"),
        (["alice/model"], "not REPOSITORY:TAG"),
        (["alice/model@sha256:" + "0" * 64], "not REPOSITORY:TAG"),
    ],
)
def test_a_tag_outside_her_namespace_or_none_is_refused(
    tags: object, why: str, tmp_path: Path
) -> None:
    with pytest.raises((LoadRefused, PermissionError), match=why):
        load(saved(tags=tags), tmp_path)


@pytest.mark.parametrize(
    ("labels", "why"),
    [
        ({"ds01.uid": "1002"}, "ds01.uid"),
        ({"ds01.image.owner": "bob"}, "ds01.image.owner"),
        # Hers too: only ds01's builds and commits label an image hers (it then runs
        # outside the image policy); a tar cannot show that ds01 made it.
        ({"ds01.image.owner": "alice"}, "ds01.image.owner"),
    ],
)
def test_an_image_claiming_ds01_labels_is_refused(
    labels: dict[str, str], why: str, tmp_path: Path
) -> None:
    with pytest.raises(LoadRefused, match=why):
        load(saved(labels=labels), tmp_path)


def test_a_manifest_or_config_through_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    # dockerd follows links inside the extracted tar when it reads the manifest.
    link = entry("d", kind=tarfile.SYMTYPE, link=".")
    tagged = json.dumps([{"Config": CONFIG, "RepoTags": ["bob/x:1"]}]).encode()
    with pytest.raises(LoadRefused, match="below a symbolic link"):
        load(saved(extra=(link, entry("d/other.json", tagged))), tmp_path)
    with pytest.raises(LoadRefused, match=r"manifest\.json is a symbolic link"):
        load(saved(last=(entry("manifest.json", kind=tarfile.SYMTYPE, link=CONFIG),)), tmp_path)


def test_the_last_manifest_of_a_name_is_the_one_read(tmp_path: Path) -> None:
    # An earlier manifest naming her image does not cover a later one naming bob's.
    data = saved(tags=["alice/model:1"], last=(entry("manifest.json", json.dumps(
        [{"Config": CONFIG, "RepoTags": ["bob/x:1"]}]).encode()),))  # fmt: skip
    with pytest.raises(PermissionError, match="alice/NAME"):
        load(data, tmp_path)


def test_a_legacy_tar_without_a_manifest_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info, data = entry("repositories", b'{"bob/x": {"1": "abc"}}')
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(LoadRefused, match=r"no manifest\.json"):
        load(out.getvalue(), tmp_path)


def test_a_missing_config_or_an_oci_index_naming_others_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadRefused, match=r"no nope\.json"):
        load(saved(manifest=[{"Config": "nope.json", "RepoTags": ["alice/m:1"]}]), tmp_path)
    index = {"manifests": [{"annotations": {"io.containerd.image.name": "docker.io/bob/x:1"}}]}
    with pytest.raises(PermissionError, match="alice/NAME"):
        load(saved(extra=(entry("index.json", json.dumps(index).encode()),)), tmp_path)


def test_a_tar_over_the_limit_or_not_a_tar_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveRefused, match="larger than") as too_big:
        load(saved(), tmp_path, limit=2048)
    assert too_big.value.status == 413
    with pytest.raises(ArchiveRefused, match="not a tar"):
        load(b"x" * 4096, tmp_path)
    assert list(tmp_path.iterdir()) == []  # the spool is an unlinked file
