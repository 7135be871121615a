"""End to end: bob tries to build FROM alice's private image, or from an image outside the
registry, by writing the Dockerfile the way Docker reads it and ds01 once did not.

alice (``phd``) builds ``alice/ds01t-secret`` through ds01 with a secret file in it; the
engine also holds ``ds01-test/busybox-alt`` and ``ds01t-unlisted`` (no slash, so a stage
can be named like it), neither in the registry. bob (``msc``, not an admin) then runs the
real ``image-build`` CLI with one Dockerfile per row: a tab after FROM, a no-break space
after a continuation backslash, lower-case ``from``, the backtick escape directive, an
escaped escape, an ARG-built name, ``COPY --from``, ``RUN --mount=from=``, ``ONBUILD``, a
stage named like the image it claims to shadow, ``FROM --platform``, quotes, a
here-document, a bare carriage return, the image's short id, ``ADD`` of a URL or git
repository (which dockerd would fetch on the host's network). For every row:

- the exit code is 5 (ds01 cannot prove the image allowed) or 2 (malformed);
- the refusal is one event of bob's with outcome ``denied`` (``auth.denied`` for exit 5,
  ``image.build`` for exit 2);
- the build never started: no build event of bob's other than refusals (ds01d calls
  Docker's ``/build`` only from a build job, and every job ends in a success or failure
  event), and no image tagged for any attempt.

Then noisy Dockerfiles that use only allowed images (tabs, mixed case, the escape
directive, continuations with comments, ARG-built names, stages, COPY --from a stage, bob's
own image, the registry's short name ``busybox`` in FROM) still build.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from support import ONLY_BUSYBOX_YAML, TEST_IMAGE, TEST_IMAGE_ALT, describe

IMAGES = ONLY_BUSYBOX_YAML
LIMITS = """
    defaults:
      cpu_limit: 1
      memory_limit: 256M
"""
PREFIX = "ds01t-"
SECRET = "alice/ds01t-secret"
UNLISTED = "ds01t-unlisted"  # a local image outside the registry, without a namespace


@pytest.fixture
def engine(docker_client: Any, test_image_alt: str) -> Iterator[Any]:
    """The engine with ``ds01t-unlisted``; every ds01t image removed afterwards."""
    docker_client.images.get(test_image_alt).tag(UNLISTED, "latest")
    yield docker_client
    for image in docker_client.images.list():
        for reference in image.tags:
            if PREFIX in reference:
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.images.remove(reference, force=True)


def build(d: Any, user: str, name: str, context: Path) -> Any:
    return d.cli(user, "image-build", f"{PREFIX}{name}", "--context", str(context), timeout=120)


B = f"FROM {TEST_IMAGE}\n"
NBSP = "\u00a0"
#: (name, Dockerfile, exit code). ``{secret}`` is alice's image, ``{id}`` its short id.
ATTEMPTS = [
    ("tab-after-from", B + f"FROM\t{SECRET}\nRUN cat /secret\n", 5),
    ("tabs-and-spaces", B + f"FROM\t \t{SECRET}\n", 5),
    ("only-a-tab", f"FROM\t{SECRET}\n", 5),
    ("nbsp-after-backslash", B + f"RUN echo \\{NBSP}\nFROM {SECRET}\nRUN cat /secret\n", 5),
    ("ideographic-space-after-backslash", B + f"RUN echo \\\u3000\nFROM {SECRET}\n", 5),
    ("escaped-escape", B + f"LABEL a=b\\\\\nFROM {SECRET}\n", 5),
    ("lower-case-from", f"from {SECRET}\n", 5),
    ("mixed-case-from", f"fRoM {SECRET}\n", 5),
    ("leading-nbsp", f"{NBSP}FROM {SECRET}\n", 5),
    ("escape-directive", "# escape=`\n" + B + f"RUN echo \\\nFROM {SECRET}\n", 5),
    ("arg-built-name", "ARG WHO=alice\nFROM ${WHO}/ds01t-secret\n", 5),
    ("arg-default-modifier", f"ARG X=1\nFROM ${{X:+{SECRET}}}\n", 5),
    ("arg-chain", f"ARG A={SECRET}\nARG B=$A\nFROM $B\n", 5),
    ("quoted-arg", f'ARG A="{SECRET}"\nFROM $A\n', 5),
    ("quoted-from", f'FROM "{SECRET}"\n', 5),
    ("copy-from", B + f"COPY --from={SECRET} /secret /stolen\n", 5),
    ("copy-from-quoted", B + f'COPY --chown=0:0 --from="{SECRET}" /secret /stolen\n', 5),
    ("copy-from-outside-registry", B + f"COPY --from={TEST_IMAGE_ALT} / /x\n", 5),
    ("run-mount-from", B + f"RUN --mount=type=bind,from={SECRET},target=/s cat /s/secret\n", 5),
    ("run-mount-from-upper-key", B + f"RUN --mount=FROM={SECRET},target=/s true\n", 5),
    ("onbuild-copy-from", B + f"ONBUILD COPY --from={SECRET} /secret /stolen\n", 5),
    ("stage-named-like-the-image", f"FROM {UNLISTED} AS {UNLISTED}\n", 5),
    (
        "stage-defined-after-use",
        B + f"COPY --from={UNLISTED} / /x\nFROM {B[5:-1]} AS {UNLISTED}\n",
        5,
    ),
    ("platform-flag", f"FROM --platform=linux/amd64 {SECRET}\n", 5),
    ("outside-registry", B + f"FROM\t{TEST_IMAGE_ALT}\n", 5),
    # Registry short names (FROM busybox) mean the registry's image; any other bare name is
    # the reference it reads as, refused unless the registry allows it.
    ("short-name-outside-registry", "FROM python\n", 5),
    ("bare-local-name-outside-registry", f"FROM {UNLISTED}\n", 5),
    ("short-name-via-arg-outside-registry", f"ARG B={UNLISTED}\nFROM $B\n", 5),
    ("short-name-only-in-from", B + "COPY --from=busybox / /x\n", 5),
    ("stage-named-like-a-short-name", f"FROM {UNLISTED} AS busybox\nFROM busybox\n", 5),
    ("short-id", "FROM {id}\n", 5),
    ("here-document", B + f"RUN <<EOF\nFROM {SECRET}\nEOF\n", 5),
    ("unset-arg", f"ARG TAG\nFROM {SECRET}$TAG\n", 5),
    ("bare-carriage-return", B + f"RUN echo \\\r\r\nFROM {SECRET}\n", 2),
    # dockerd fetches an ADD URL itself, on the host's network, past the build's network
    # mode and the per-user firewall: another user's service, 127.0.0.1, link-local.
    ("add-url", B + "ADD http://127.0.0.1:9/secret /x\n", 5),
    ("add-url-lower-case", B + "add HTTPS://169.254.169.254/latest/meta-data /x\n", 5),
    ("add-git", B + "ADD git@github.com:alice/private.git /src\n", 5),
    ("add-url-via-env", B + "ENV U=http://127.0.0.1:9/secret\nADD $U /x\n", 5),
    ("onbuild-add-url", B + "ONBUILD ADD http://127.0.0.1:9/secret /x\n", 5),
    ("add-from", B + f"ADD --from={SECRET} /secret /x\n", 2),
    ("unknown-flag", f"FROM --plat=linux/amd64 {SECRET}\n", 2),
]


@pytest.fixture
def alice_secret(ds01d: Any, engine: Any, home_dir: Callable[..., Path]) -> tuple[Any, str]:
    """A ds01d, alice's private image built through it, and the secret inside."""
    # Each refusal must be an event of its own: a window of 1 ms keeps the audit log's
    # throttle of repeated refusals (tested in test_bypass_flood.py) out of the count.
    d = ds01d(resource_limits=LIMITS, images=IMAGES, extra_args=["--audit-refusal-window", "0.001"])
    token = uuid.uuid4().hex
    context = home_dir("alice", {"Dockerfile": B + "COPY secret /secret\n", "secret": token})
    result = build(d, "alice", "secret", context)
    assert result.returncode == 0, describe(result)
    assert engine.images.get(SECRET).labels["ds01.image.owner"] == "alice"
    return d, token


def test_every_variant_is_refused_before_docker_builds_anything(
    alice_secret: tuple[Any, str], engine: Any, home_dir: Callable[..., Path]
) -> None:
    d, _ = alice_secret
    short_id = engine.images.get(SECRET).id.removeprefix("sha256:")[:12]
    failures = []
    for name, text, code in ATTEMPTS:
        seen = len(d.events())
        context = home_dir("bob", {"Dockerfile": text.replace("{id}", short_id)})
        result = build(d, "bob", name, context)
        # A permission refusal is an auth.denied event, malformed input an image.build one.
        action = "auth.denied" if code == 5 else "image.build"
        denied = [
            e
            for e in d.events()[seen:]
            if (e["user"], e["action"], e["outcome"]) == ("bob", action, "denied")
            and e["resource"] == f"image/bob/{PREFIX}{name}:latest"
        ]
        if result.returncode != code:
            failures.append(f"{name}: exit {result.returncode}, not {code}\n{describe(result)}")
        elif len(denied) != 1:
            failures.append(f"{name}: {len(denied)} {action} events, not one")
    assert not failures, "\n".join(failures)
    started = [
        e for e in d.events_where(user="bob", action="image.build") if e["outcome"] != "denied"
    ]
    assert started == [], started
    # ds01d calls Docker's /build only from a build job, and every job ends in a success
    # or failure event: none, so Docker built nothing for bob, and no tag of his appeared.
    attempted = {f"bob/{PREFIX}{name}:latest" for name, _, _ in ATTEMPTS}
    assert not [t for i in engine.images.list() for t in i.tags if t in attempted]


def test_dockerfiles_that_use_only_allowed_images_still_build(
    alice_secret: tuple[Any, str], engine: Any, home_dir: Callable[..., Path]
) -> None:
    d, token = alice_secret
    noisy = (
        "# escape=`\n"
        "ARG NS=ds01-test\n"
        f"FROM\t${{NS}}/busybox AS Base\n"
        "RUN echo base > /base `\n"
        "  # a comment inside the continuation\n"
        "  && echo done\n"
        f"from {TEST_IMAGE}\n"
        f"LABEL a=b\\{NBSP}\n"
        "COPY --from=base /base /copied\n"
        "COPY --from=0 /base /copied-too\n"
    )
    first = build(d, "bob", "noisy", home_dir("bob", {"Dockerfile": noisy}))
    assert first.returncode == 0, describe(first)
    short = "ARG NAME=busybox\nFROM busybox AS b\nFROM $NAME\nCOPY --from=b /bin/sh /sh-copy\n"
    third = build(d, "bob", "short", home_dir("bob", {"Dockerfile": short}))
    assert third.returncode == 0, describe(third)
    assert f"FROM busybox is the registry's busybox, built from {TEST_IMAGE}" in third.stdout
    own = f"FROM\tbob/{PREFIX}noisy\nRUN cat /copied /copied-too\n"
    second = build(d, "bob", "own", home_dir("bob", {"Dockerfile": own}))
    assert second.returncode == 0, describe(second)
    assert "base" in second.stdout + second.stderr
    assert token not in second.stdout + second.stderr
