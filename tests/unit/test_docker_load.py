"""A ``docker load`` through the Docker API door: the tar is read (bounded) and written
again, plain, each header made anew, and only that goes on to dockerd; a tar that another
reader could read as other members (a header field not in its one plain form, more after
its end or its compressed stream) is refused. It goes on only when every image in it is
tagged in the caller's own namespace, has a config in the tar that claims none of ds01's
labels (not even her own owner label), and nothing in it lies below a symbolic link of
its own; a tar as Docker 25 and later save it (an OCI image layout with Docker's manifest
beside it) is read the same way. Then dockerd's answer, read on its way to the client,
says what it loaded or why not (the ``image.load`` event's outcome)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ds01.core.docker_api import own_repository
from ds01.core.docker_archive import ArchiveRefused
from ds01.core.docker_load import (
    MAGIC_BYTES,
    LoadAnswer,
    LoadArchive,
    LoadRefused,
    compression_of,
    header_problem,
)
from ds01.runtime import archive_rewrite
from ds01.runtime.archive_rewrite import spool_load
from tar_shapes import (
    TWO_WAY_SIZE,
    gzip_smuggled,
    new_spool,
    size_smuggled,
    tar_bytes,
    with_checksum,
)

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
    spool, size = spool_load(io.BytesIO(data), archive, new_spool(tmp_path), limit)
    with spool:
        sent = spool.read()
    assert size == len(sent)
    return archive.tags(lambda repo: own_repository(repo, "alice", 1001)), sent


def members_of(data: bytes) -> list[tuple[str, bytes, int, str, bytes]]:
    """Each member of the tar ``data``: name, type, mode, link target, content."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [
            (m.name, m.type, m.mode, m.linkname, tar.extractfile(m).read() if m.isreg() else b"")  # type: ignore[union-attr]
            for m in tar
        ]


def test_a_tar_of_her_own_tagged_image_goes_on_with_the_same_members(tmp_path: Path) -> None:
    data = saved(tags=["alice/model:1", "alice/model:latest"])
    tags, sent = load(data, tmp_path)
    assert tags == ["alice/model:1", "alice/model:latest"]
    assert members_of(sent) == members_of(data)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_a_compressed_tar_is_read_and_goes_on_plain(
    compress: Callable[[bytes], bytes], tmp_path: Path
) -> None:
    data = saved()
    tags, sent = load(compress(data), tmp_path)
    assert tags == ["alice/model:1"]
    assert compression_of(sent[:MAGIC_BYTES]) is None
    assert members_of(sent) == members_of(data)


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


# --- a tar as Docker 25 and later save it (OCI layout) -------------------------------------


def oci_saved(tags: list[str], annotations: list[dict[str, str]] | None = None) -> bytes:
    """A tar as ``docker save`` writes one image since Docker 25: an OCI image layout
    (``oci-layout``, ``index.json``, content-addressed ``blobs/sha256/…``) with Docker's
    own ``manifest.json`` (its config and layers named by their blobs) beside it."""
    layer = b"\0" * 1024
    config = json.dumps({"config": {"Labels": None}, "rootfs": {"type": "layers"}}).encode()
    blobs = {hashlib.sha256(data).hexdigest(): data for data in (layer, config)}
    digest = {data: f"sha256:{hexa}" for hexa, data in blobs.items()}
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest[config], "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest[layer], "size": len(layer)}],
    }).encode()  # fmt: skip
    manifest_hex = hashlib.sha256(manifest).hexdigest()
    blobs[manifest_hex] = manifest
    if annotations is None:
        annotations = [
            {"io.containerd.image.name": f"docker.io/{tag}",
             "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1]}
            for tag in tags
        ]  # fmt: skip
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": f"sha256:{manifest_hex}", "size": len(manifest), "annotations": names}
            for names in annotations
        ],
    }  # fmt: skip
    docker_manifest = [{
        "Config": f"blobs/sha256/{digest[config].removeprefix('sha256:')}",
        "RepoTags": tags,
        "Layers": [f"blobs/sha256/{digest[layer].removeprefix('sha256:')}"],
    }]  # fmt: skip
    members = [
        entry("blobs", kind=tarfile.DIRTYPE),
        entry("blobs/sha256", kind=tarfile.DIRTYPE),
        *(entry(f"blobs/sha256/{hexa}", data) for hexa, data in blobs.items()),
        entry("index.json", json.dumps(index).encode()),
        entry("manifest.json", json.dumps(docker_manifest).encode()),
        entry("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def test_an_oci_layout_tar_of_her_own_image_goes_on_with_the_same_members(
    tmp_path: Path,
) -> None:
    data = oci_saved(["alice/model:1"])
    tags, sent = load(data, tmp_path)
    assert tags == ["alice/model:1"]
    assert members_of(sent) == members_of(data)


@pytest.mark.parametrize(
    ("tags", "annotations", "refusal", "why"),
    [
        # Docker's manifest names another's tag (the index too, as Docker writes it).
        (["bob/model:1"], None, PermissionError, "alice/NAME"),
        (["library/busybox:latest"], None, PermissionError, "alice/NAME"),
        # Docker's manifest names hers, the index (which a newer dockerd reads) another's.
        (["alice/model:1"], [{"io.containerd.image.name": "docker.io/bob/model:1"}],
         PermissionError, "alice/NAME"),
        (["alice/model:1"], [{"org.opencontainers.image.ref.name": "registry.example/x:1"}],
         PermissionError, "alice/NAME"),
        # A digest names no tag of hers (and could be anyone's image).
        (["alice/model:1"], [{"io.containerd.image.name": "docker.io/alice/model@sha256:"
                              + "0" * 64}], LoadRefused, "not REPOSITORY:TAG"),
    ],
)  # fmt: skip
def test_an_oci_layout_tar_naming_another_tag_or_a_digest_is_refused(
    tags: list[str],
    annotations: list[dict[str, str]] | None,
    refusal: type[Exception],
    why: str,
    tmp_path: Path,
) -> None:
    with pytest.raises(refusal, match=why):
        load(oci_saved(tags, annotations), tmp_path)


# --- one tar, read one way: what reaches dockerd is what the door read ---------------------


def evil() -> list[tuple[tarfile.TarInfo, bytes]]:
    """What a smuggled tail would bring: bob's owner label and another's tag."""
    config = json.dumps({"config": {"Labels": {"ds01.image.owner": "bob"}}}).encode()
    manifest = json.dumps([{"Config": "evil.json", "RepoTags": ["someone-else/x:1"]}])
    return [entry("evil.json", config), entry("manifest.json", manifest.encode())]


def seen() -> list[tuple[tarfile.TarInfo, bytes]]:
    return members_of_saved(saved())


def members_of_saved(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]  # type: ignore[union-attr]


def test_a_size_field_read_two_ways_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadRefused, match="size field is not a plain octal number"):
        load(size_smuggled(seen(), evil()), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_what_goes_on_is_what_the_door_read_even_past_the_header_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new tar alone keeps the tail from dockerd: with the header check off, the size
    read two ways goes on as the 0 the door read, ``junk`` as a file, the hidden members
    inside it as its content; and every header of the new tar reads one way only."""
    monkeypatch.setattr(archive_rewrite, "header_problem", lambda block: None)
    tags, sent = load(size_smuggled(seen(), evil()), tmp_path)
    assert tags == ["alice/model:1"]
    with tarfile.open(fileobj=io.BytesIO(sent)) as tar:
        members = list(tar)
        assert [m.name for m in members] == [m.name for m, _ in seen()] + ["pad", "junk"]
        assert members[-2].size == 0
        assert tar.extractfile(members[-1]).read() == tar_bytes(evil())  # type: ignore[union-attr]
    for member in members:
        assert header_problem(sent[member.offset : member.offset + tarfile.BLOCKSIZE]) is None


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (gzip_smuggled(seen(), evil()), "gzip"),
        (bz2.compress(tar_bytes(seen(), end=False)) + bz2.compress(tar_bytes(evil())), "bzip2"),
        (lzma.compress(tar_bytes(seen(), end=False)) + lzma.compress(tar_bytes(evil())), "xz"),
        (gzip.compress(saved()) + b"\x00" * 512, "gzip"),  # not even zeros after it
    ],
)
def test_a_second_compressed_stream_or_more_after_the_first_is_refused(
    data: bytes, what: str, tmp_path: Path
) -> None:
    with pytest.raises(LoadRefused, match=f"more after the end of its {what} stream"):
        load(data, tmp_path)


def test_anything_but_zeros_after_the_tars_end_is_refused(tmp_path: Path) -> None:
    # Python ends a tar at its first zero block; Go reads the next one.
    after_one_zero_block = tar_bytes(seen(), end=False) + b"\x00" * 512 + tar_bytes(evil())
    with pytest.raises(LoadRefused, match="more after the end of the archive"):
        load(after_one_zero_block, tmp_path)
    # Zeros (a tar's record padding) are no more tar to either.
    assert load(saved() + b"\x00" * 8192, tmp_path)[0] == ["alice/model:1"]


def test_a_tar_cut_inside_a_header_or_with_an_unreadable_header_is_not_a_tar(
    tmp_path: Path,
) -> None:
    # Python would take either for the tar's end and read no further.
    whole = tar_bytes(seen(), end=False)
    bad_checksum = tar_bytes(evil())
    bad_checksum = bad_checksum[:148] + b"0000000\x00" + bad_checksum[156:]
    for data in (whole + tar_bytes(evil())[:300], whole + bad_checksum):
        with pytest.raises(ArchiveRefused, match="not a tar") as refused:
            load(data, tmp_path)
        assert refused.value.status == 400


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (entry("dev", kind=tarfile.CHRTYPE), r"type b'3'"),
        (entry("fifo", kind=tarfile.FIFOTYPE), r"type b'6'"),
        (entry("c", b"x", kind=tarfile.CONTTYPE), r"type b'7'"),
        (entry("s", kind=tarfile.GNUTYPE_SPARSE), r"type b'S'"),
    ],
)
def test_a_member_other_than_a_file_directory_or_link_is_refused(
    member: tuple[tarfile.TarInfo, bytes], why: str, tmp_path: Path
) -> None:
    with pytest.raises(LoadRefused, match=why):
        load(saved(extra=(member,)), tmp_path)


def test_a_global_pax_header_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"path": "manifest.json"}) as tar:  # fmt: skip
        for info, data in seen():
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    with pytest.raises(LoadRefused, match=r"type b'g'"):
        load(out.getvalue(), tmp_path)


def test_the_new_tar_has_headers_made_anew(tmp_path: Path) -> None:
    """Owners, set-id bits and PAX records stay behind; long and non-ASCII names, links
    and contents go on as read."""
    planted = entry("x" * 150 + "/é.bin", b"data")
    planted[0].uid, planted[0].uname, planted[0].mode = 0, "root", 0o6755
    planted[0].pax_headers = {"SCHILY.xattr.security.capability": "\x01"}
    link = entry("l1/other.tar", kind=tarfile.SYMTYPE, link="layer.tar")
    _, sent = load(saved(extra=(planted, link)), tmp_path)
    with tarfile.open(fileobj=io.BytesIO(sent)) as tar:
        members = {m.name: m for m in tar}
        copied = members["x" * 150 + "/é.bin"]
        assert tar.extractfile(copied).read() == b"data"  # type: ignore[union-attr]
    assert (copied.mode, copied.uname, copied.pax_headers.keys() - {"path"}) == (0o755, "", set())
    assert (members["l1/other.tar"].type, members["l1/other.tar"].linkname) == (
        tarfile.SYMTYPE, "layer.tar")  # fmt: skip


def test_a_first_name_read_as_compression_or_a_zstd_stream_is_refused(tmp_path: Path) -> None:
    # Sent compressed, its first member named so: dockerd would read the new, plain tar
    # as bzip2.
    first = tarfile.TarInfo("BZh91AY&SY")
    with pytest.raises(LoadRefused, match="begins as a compressed stream does"):
        load(gzip.compress(tar_bytes([(first, b""), *seen()])), tmp_path)
    with pytest.raises(LoadRefused, match="zstd"):
        load(b"\x28\xb5\x2f\xfd" + b"\x00" * 600, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_limit_holds_for_the_uncompressed_tar(tmp_path: Path) -> None:
    bomb = gzip.compress(saved(extra=(entry("zeros", b"\x00" * (4 << 20)),)))
    assert len(bomb) < 1 << 20
    with pytest.raises(ArchiveRefused, match="larger than") as too_big:
        load(bomb, tmp_path, limit=1 << 20)
    assert too_big.value.status == 413


def header(**fields: bytes) -> bytes:
    """A ustar header of a file, ``fields`` (by name: offset) written over it."""
    block = tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT)
    offsets = {"size": 124, "mode": 100, "kind": 156, "prefix": 345, "magic": 257}
    for name, value in fields.items():
        at = offsets[name]
        block = block[:at] + value + block[at + len(value) :]
    return with_checksum(block)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, None),
        ({"size": b"   1000 \x00\x00 "}, None),  # spaces, as old tars pad
        ({"size": b"\x80" + (9 << 30).to_bytes(11, "big")}, None),  # base-256, over 8 GiB
        ({"size": TWO_WAY_SIZE}, "size field"),
        ({"size": b"0_00001000\x00"}, "size field"),  # Python's int() takes the underscore
        ({"size": b"1000\x002\x00\x00\x00\x00\x00\x00"}, "size field"),
        ({"size": b"\xff" * 12}, "size field"),  # negative base-256
        ({"size": b"\x81" + b"\x00" * 11}, "size field"),  # base-256 to Go, not to Python
        ({"mode": b"\x00000644\x00"}, "mode field"),
        ({"kind": b"g"}, "type b'g'"),
        ({"kind": b"x", "size": b"%011o\x00" % (2 << 20)}, "PAX header is larger"),
        ({"prefix": b"dir", "magic": b"ustar  \x00"}, "name prefix"),  # GNU: no prefix to Go
        ({"prefix": b"dir"}, None),  # POSIX ustar: a prefix to both
    ],
)
def test_a_header_is_read_one_way_only(fields: dict[str, bytes], problem: str | None) -> None:
    found = header_problem(header(**fields))
    assert (found is None) if problem is None else (found is not None and problem in found)


# --- dockerd's answer, read on its way to the client ---------------------------------------

HEAD = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
    b"Server: Docker/20.10.24+dfsg1 (linux)\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(message: bytes) -> bytes:
    """One message as dockerd writes it: a JSON line ending ``\\r\\n``, one chunk."""
    return b"%x\r\n%s\r\n" % (len(message) + 2, message + b"\r\n")


LOADED = HEAD + chunk(b'{"stream":"Loaded image: alice/model:1\\n"}') + b"0\r\n\r\n"
#: Docker 20.10's answer to a tar whose layer is not a tar: progress, then the error.
FAILED = (
    HEAD
    + chunk(b'{"status":"Loading layer","progressDetail":{"current":160,"total":160},'
            b'"progress":"[==\\u003e]     160B/160B","id":"000000000000"}')
    + chunk(b'{"errorDetail":{"message":"Error processing tar file(exit status 1): '
            b'unexpected EOF"},"error":"Error processing tar file(exit status 1): '
            b'unexpected EOF"}')
    + b"0\r\n\r\n"
)  # fmt: skip


def answer_of(raw: bytes, piece: int) -> LoadAnswer:
    answer = LoadAnswer()
    for start in range(0, len(raw), piece):
        answer.feed(raw[start : start + piece])
    return answer


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 1 << 20])
def test_dockerds_answer_says_what_it_loaded_or_why_not_however_it_is_cut(piece: int) -> None:
    loaded = answer_of(LOADED, piece)
    assert (loaded.failure(), loaded.loaded) == (None, ["alice/model:1"])
    failed = answer_of(FAILED, piece)
    assert failed.failure() == "Error processing tar file(exit status 1): unexpected EOF"
    assert failed.loaded == []


def test_an_answer_that_never_says_it_loaded_is_a_failure() -> None:
    assert LoadAnswer().failure() == "dockerd gave no answer"
    assert answer_of(LOADED[:-5], 64).failure() == "dockerd's answer was cut short"
    assert answer_of(HEAD + b"0\r\n\r\n", 64).failure() == (
        "dockerd did not say that it loaded an image"
    )
    body = b'{"message":"invalid tar header"}\n'
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(body)
    refused = head + body
    assert answer_of(refused, 5).failure() == "invalid tar header"


def test_an_overlong_message_is_skipped_and_the_next_still_read() -> None:
    noise = chunk(b'{"status":"' + b"x" * 200_000 + b'"}')
    raw = HEAD + noise + chunk(b'{"stream":"Loaded image: alice/model:1\\n"}') + b"0\r\n\r\n"
    answer = answer_of(raw, 4096)
    assert (answer.failure(), answer.loaded) == (None, ["alice/model:1"])
