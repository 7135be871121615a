"""A new container's /etc files read and written in its overlay2 layers, without Docker's
archive calls, say exactly what Docker's own archive calls say (``ds01.runtime.layer_files``).

Each image is built offline from the test image, each container created and never started
(only then are the layers used); Docker's ``GET /containers/{id}/archive`` is the referee.
An opaque ``/etc`` (one a layer removed and made again) cannot be built (a build step's
``/etc`` holds mounts), so it is made by hand the way overlayfs marks it.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from ds01.runtime.docker import DockerRuntime
from ds01.runtime.layer_files import OverlayLayers, read_etc_file, write_etc_files

LIMIT = 1024 * 1024

#: Dockerfile lines after ``FROM`` the test image, by what they make of /etc.
IMAGES = {
    "plain": "",
    "passwd removed (a whiteout)": "RUN rm /etc/passwd",
    "passwd a symbolic link": "RUN mv /etc/passwd /etc/p.real && ln -s p.real /etc/passwd",
    "passwd rewritten in a later layer": "RUN echo 'extra:x:7:7::/:/bin/sh' >> /etc/passwd",
}


def docker_reads(client: Any, container: str, path: str) -> tuple[bytes | None, int | None]:
    """What Docker's archive call gives for ``path``: (content of a regular file or None,
    mode bits or None)."""
    try:
        chunks, _ = client.api.get_archive(container, path)
    except docker.errors.NotFound:
        return None, None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        member = tar.next()
        assert member is not None
        mode = stat.S_IMODE(member.mode)
        if not member.isfile():
            return None, mode
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read(), mode


@pytest.fixture(scope="module")
def images(docker_client: Any, test_image: str) -> Iterator[dict[str, str]]:
    built: dict[str, str] = {}
    try:
        for kind, lines in IMAGES.items():
            if not lines:
                built[kind] = test_image
                continue
            tag = f"ds01-test/layers-{uuid.uuid4().hex[:8]}:latest"
            dockerfile = f"FROM {test_image}\n{lines}\n".encode()
            docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
            built[kind] = tag
        yield built
    finally:
        for tag in built.values():
            if tag != test_image:
                docker_client.images.remove(tag, force=True)


@pytest.fixture
def created(docker_client: Any) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        docker_client.api.remove_container(name, force=True)


def create(client: Any, image: str, names: list[str]) -> str:
    name = f"ds01-layers-{uuid.uuid4().hex[:8]}"
    client.api.create_container(image, command=["cat", "/etc/passwd", "/etc/group"], name=name)
    names.append(name)
    return name


@pytest.mark.parametrize("kind", list(IMAGES))
def test_reading_etc_files_from_the_layers_gives_what_docker_gives(
    docker_client: Any, images: dict[str, str], created: list[str], kind: str
) -> None:
    runtime = DockerRuntime(docker_client.api)
    name = create(docker_client, images[kind], created)
    assert OverlayLayers.of(docker_client.api.inspect_container(name)) is not None

    for path in ("/etc/passwd", "/etc/group"):
        expected, _ = docker_reads(docker_client, name, path)
        assert runtime.read_small_file(name, path, LIMIT) == expected, (kind, path)


@pytest.mark.parametrize("kind", list(IMAGES))
def test_files_written_into_the_layer_are_what_the_container_and_docker_see(
    docker_client: Any, images: dict[str, str], created: list[str], kind: str
) -> None:
    runtime = DockerRuntime(docker_client.api)
    name = create(docker_client, images[kind], created)
    files = {"passwd": b"root:x:0:0::/:/bin/sh\nalice:x:1001:1001::/w:/bin/sh\n",
             "group": b"root:x:0:\nalice:x:1001:\n"}  # fmt: skip

    since = int(time.time())
    runtime.write_files(name, "/etc", files)
    until = int(time.time()) + 1

    # Docker mounted nothing for it: no archive call ("extract-to-dir", "archive-path").
    actions = [
        e["Action"]
        for e in docker_client.api.events(since=since, until=until, decode=True)
        if e.get("Actor", {}).get("Attributes", {}).get("name") == name
    ]
    assert not [a for a in actions if a.startswith(("extract-to-dir", "archive-path"))], actions
    for file, content in files.items():
        assert docker_reads(docker_client, name, f"/etc/{file}") == (content, 0o644), kind
    docker_client.api.start(name)
    assert docker_client.api.wait(name, timeout=30)["StatusCode"] == 0
    shown = docker_client.api.logs(name, stdout=True, stderr=False)
    assert shown == files["passwd"] + files["group"], kind


def test_a_started_container_is_left_to_dockers_archive_calls(
    docker_client: Any, images: dict[str, str], created: list[str]
) -> None:
    name = create(docker_client, images["plain"], created)
    docker_client.api.start(name)
    docker_client.api.wait(name, timeout=30)

    assert OverlayLayers.of(docker_client.api.inspect_container(name)) is None
    runtime = DockerRuntime(docker_client.api)
    assert runtime.read_small_file(name, "/etc/passwd", LIMIT) == docker_reads(
        docker_client, name, "/etc/passwd"
    )[0]


def test_an_opaque_etc_hides_the_layers_below_and_a_whiteout_hides_a_file(tmp_path: Path) -> None:
    top, middle, bottom, upper = (tmp_path / n for n in ("top", "middle", "bottom", "upper"))
    for layer in (top, middle, bottom, upper):
        layer.mkdir()
    (bottom / "etc").mkdir()
    (bottom / "etc" / "passwd").write_bytes(b"from the bottom\n")
    (bottom / "etc" / "group").write_bytes(b"from the bottom\n")
    (middle / "etc").mkdir(mode=0o750)
    os.setxattr(middle / "etc", "trusted.overlay.opaque", b"y")
    (middle / "etc" / "group").write_bytes(b"from the middle\n")
    (top / "etc").mkdir()
    (top / "etc").chmod(0o751)
    os.mknod(top / "etc" / "group", 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # a whiteout
    layers = OverlayLayers(upper, (top, middle, bottom))

    assert read_etc_file(layers, "passwd", LIMIT) is None  # below the opaque directory
    assert read_etc_file(layers, "group", LIMIT) is None  # removed on top
    assert write_etc_files(layers, {"passwd": b"new\n"}) is True
    written = upper / "etc" / "passwd"
    assert written.read_bytes() == b"new\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    # The directory as the top-most layer with an /etc has it: the merged view's own.
    assert stat.S_IMODE((upper / "etc").stat().st_mode) == 0o751
