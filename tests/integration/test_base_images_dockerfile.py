"""Docker's classic builder is the judge of which images a Dockerfile uses.

ds01 reads base images with BuildKit's parser (the ``dockerfile`` package); this test does
not trust that reading. Dockerfiles are drawn from the model of ``dockerfile_strategies``
(tabs, Unicode spaces, continuations, the escape directive and its look-alikes, comments,
mixed case, ARG defaults and ``${…:-…}``, stage names that shadow image names,
``--platform``, ``COPY --from`` by image, stage name and index) and built by the engine
itself, through ``/build`` with ``version=1`` as ds01d builds, offline, from probe images
that each carry one marker file ``/who/<name>``. What Docker really used is read back from
the images it made: the markers found in the last image of every stage. For every drawn
Dockerfile, Docker's set, the model's and ds01's must be equal; where the model says a
reference cannot be known (an ARG without a value), Docker's build fails and ds01 refuses.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest
from hypothesis import HealthCheck, example, given, settings

from dockerfile_strategies import GeneratedDockerfile, dockerfiles
from ds01.core.dockerfile_bases import base_references
from ds01.errors import PermissionDenied

#: Probe images, made from the test image with a marker each; ``probe-b`` is also a stage
#: name of the model, so stages shadow it.
PROBES = ("ds01-probe/a", "ds01-probe/b:v1", "probe-b")
_STEP_RE = re.compile(r"^Step \d+/\d+ : (\S+)")
_ID_RE = re.compile(r"^ ---> ([0-9a-f]{12})$")


def _slug(reference: str) -> str:
    return re.sub(r"[^a-z0-9]", "_", reference)


def _context(text: str, files: dict[str, str] | None = None) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in {"Dockerfile": text, **(files or {})}.items():
            raw = content.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    data.seek(0)
    return data


def classic_build(client: Any, text: str) -> tuple[list[str], str | None]:
    """Build ``text`` with the classic builder, as ds01d asks for it: the output lines and
    the error (``None`` if the build succeeded)."""
    api = client.api
    response = api.post(
        f"{api.base_url}/v{api.api_version}/build",
        params={"version": "1", "rm": "1", "forcerm": "1", "nocache": "1", "pull": "0"},
        data=_context(text),
        headers={"Content-Type": "application/x-tar"},
        stream=True,
        timeout=120,
    )
    if response.status_code != 200:
        return [], response.text
    lines: list[str] = []
    error = None
    buffer = ""
    for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
        buffer += chunk
        while "\n" in buffer:  # the engine writes one JSON object a line
            raw, buffer = buffer.split("\n", 1)
            if not raw.strip():
                continue
            message = json.loads(raw)
            if message.get("error"):
                error = str(message["error"])
            lines += str(message.get("stream", "")).splitlines()
    return lines, error


def images_docker_used(client: Any, lines: list[str]) -> set[str]:
    """The probes whose markers are in the last image of some stage; removes the images
    the build made (never the probes or the test image)."""
    stage_images: list[str] = []
    made: list[str] = []
    instruction = ""
    for line in lines:
        step = _STEP_RE.match(line)
        if step:
            instruction = step[1].lower()
            if instruction == "from":
                stage_images.append("")
            continue
        made_id = _ID_RE.match(line)
        if made_id and stage_images:
            stage_images[-1] = made_id[1]
            if instruction != "from":
                made.append(made_id[1])
    found: set[str] = set()
    slugs = {_slug(p): p for p in PROBES}
    try:
        for image in filter(None, stage_images):
            container = client.api.create_container(image, command=["/who"])
            try:
                with contextlib.suppress(docker.errors.NotFound):
                    stream, _ = client.api.get_archive(container["Id"], "/who")
                    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                        for member in tar.getnames():
                            name = member.rsplit("/", 1)[-1]
                            if name in slugs:
                                found.add(slugs[name])
            finally:
                client.api.remove_container(container["Id"], force=True)
    finally:
        for image in reversed(made):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(image, force=True)
    return found


@pytest.fixture(scope="module")
def probes(docker_client: Any, test_image: str) -> Iterator[tuple[str, ...]]:
    """The probe images, each ``test_image`` plus the marker ``/who/<its name>``."""
    made = []
    try:
        for reference in PROBES:
            text = f"FROM {test_image}\nCOPY marker /who/{_slug(reference)}\n"
            image, _ = docker_client.images.build(
                fileobj=_context(text, {"marker": reference}),
                custom_context=True,
                rm=True,
                forcerm=True,
            )
            repository, _, version = reference.partition(":")
            image.tag(repository, version or "latest")
            made.append(reference)
        yield PROBES
    finally:
        for reference in made:
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(reference, force=True)


def test_the_probe_markers_show_what_a_build_used(docker_client, probes):
    """The oracle itself: a build from one probe that copies from another shows both, and
    one from a single probe shows only it."""
    text = "FROM ds01-probe/a AS one\nFROM probe-b\nCOPY --from=ds01-probe/b:v1 /who/ /who/\n"
    lines, error = classic_build(docker_client, text)
    assert error is None, "\n".join(lines)
    assert images_docker_used(docker_client, lines) == set(PROBES)
    lines, error = classic_build(docker_client, "FROM ds01-probe/b:v1\n")
    assert error is None
    assert images_docker_used(docker_client, lines) == {"ds01-probe/b:v1"}


#: Drawn Dockerfiles per run (each built by Docker: about 0.5 s). In 40 runs of 20, every
#: trait of the model (tabs, Unicode spaces, continuations, the escape directive, comments,
#: ARG, ``${…:-…}``, ``--platform``, ``COPY --from``, an unknowable reference, three or more
#: stages) came up in at least 36 runs, most in all 40; a stage named like an image, in 33,
#: is in ``SHADOWING`` every run. ds01's reading against the model is drawn 1,100 times by
#: ``tests/unit/test_dockerfile_bases.py``; this test checks the model against Docker.
EXAMPLES = 20
#: A stage named like a probe image shadows it, in ``FROM`` and in ``COPY --from``.
SHADOWING = GeneratedDockerfile(
    text="FROM ds01-probe/a AS probe-b\nFROM probe-b\nCOPY --from=probe-b /who/ /who/\n",
    expected=["ds01-probe/a"],
    stages=2,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    generated=dockerfiles(PROBES, allow_mounts=False, allow_onbuild=False, allow_unknowable=True)
)
@example(generated=SHADOWING)
def test_docker_ds01_and_the_model_agree_on_every_base_image(
    docker_client, probes, generated: GeneratedDockerfile
):
    lines, error = classic_build(docker_client, generated.text)
    used = images_docker_used(docker_client, lines)
    shown = generated.text + "\n--- Docker said:\n" + "\n".join(lines[-8:]) + f"\n{error}"
    if generated.unknowable:
        assert error is not None, shown  # Docker cannot build it either
        with pytest.raises(PermissionDenied):
            base_references(generated.text)
        return
    assert error is None, shown
    assert used == set(generated.expected), shown
    assert {b.reference for b in base_references(generated.text)} == used, shown
