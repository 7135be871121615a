"""Users' own images through a real ds01d and Docker: image-build, image-remove, image-pull.

alice builds from a directory of hers (``FROM ds01-test/busybox:latest``, nothing from the
network): the image is tagged ``alice/<name>:<tag>``, labelled hers, and she, not bob, can
create containers from it. The build context is read as alice, so a file she cannot read
fails the build instead of reaching Docker; a directory that is not hers (directly or
through a symlink) is refused with exit 5; base images outside the image policy and
reserved labels are refused; every step runs with her CPU and memory limits under her
cgroup parent. Removal is for the owner (admins: registry images only with --force);
pulls are only of what the policy allows: a refused one changes nothing, an allowed one
comes from Debian's docker-registry on 127.0.0.1 (installed by ``make images``), one that
no registry has fails with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from support import BIN_DIR, ONLY_BUSYBOX_YAML, TEST_IMAGE, describe, user_env

#: Only the test image is registered (so builds may start FROM it); nothing else is allowed.
IMAGES = ONLY_BUSYBOX_YAML + """\
      - name: ghost
        image: ds01-test/never-built-here:1.0
        framework: none
        description: An image no registry here has
"""
#: alice is in group phd: 0.5 CPUs and 96 MiB per container, 200 MiB in total.
LIMITS = """
    defaults:
      cpu_limit: 1
      memory_limit: 256M
    groups:
      phd:
        cpu_limit: 0.5
        memory_limit: 96M
    aggregate:
      groups:
        phd:
          memory_limit: 200M
"""
ALICE_SLICE = "/ds01.slice/ds01-phd.slice/ds01-phd-alice.slice"
PREFIX = "ds01t-"  # every image these tests build is named like this


def tag(user: str, name: str, version: str = "latest") -> str:
    return f"{user}/{PREFIX}{name}:{version}"


@pytest.fixture(autouse=True)
def _remove_built_images(docker_client: Any) -> Iterator[None]:
    yield
    for image in docker_client.images.list():
        for reference in image.tags:
            if f"/{PREFIX}" in reference:
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.images.remove(reference, force=True)


def dockerfile(*steps: str) -> str:
    return "\n".join([f"FROM {TEST_IMAGE}", *steps]) + "\n"


def build(d: Any, user: str, name: str, context: Path, *extra: str) -> subprocess.CompletedProcess:
    return d.cli(user, "image-build", f"{PREFIX}{name}", "--context", str(context), *extra)


def image_or_none(docker_client: Any, reference: str) -> Any | None:
    try:
        return docker_client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def api_as(d: Any, user: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One API call as ``user``, through the CLI's client: (HTTP status, JSON)."""
    script = (
        "import json, sys\n"
        "from ds01.cli.client import ApiError, Ds01Client\n"
        "method, path, body = json.loads(sys.argv[1])\n"
        "try:\n"
        "    status, data = Ds01Client().call(method, path, body=body)\n"
        "except ApiError as e:\n"
        "    status, data = {5: 403, 4: 404, 3: 409, 2: 400}.get(int(e.code), 500), e.message\n"
        "print(json.dumps([status, data]))\n"
    )
    env = user_env(user, {"DS01_SOCKET": str(d.paths.socket)})
    assignments = [f"{k}={v}" for k, v in env.items()]
    result = subprocess.run(
        [
            *("runuser", "-u", user, "--", "env", "-i", *assignments),
            *(str(BIN_DIR / "python"), "-c", script, json.dumps([method, path, body])),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert result.returncode == 0, describe(result)
    status, data = json.loads(result.stdout)
    return int(status), data


# --- building ---------------------------------------------------------------------------------


def test_a_failed_build_says_why_in_plain_text_without_dockers_bookkeeping(
    ds01d, docker_client, home_dir
):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    colour = "printf '\\033[9%dmno such package\\033[0m\\n' 1 >&2"  # red, as apt prints
    context = home_dir(
        "alice", {"Dockerfile": dockerfile("RUN echo step-one", f"RUN {colour}; false")}
    )

    result = build(d, "alice", "broken", context)

    assert result.returncode == 1, describe(result)
    output = result.stdout + result.stderr
    assert "no such package" in output, describe(result)
    assert "\x1b" not in output.replace("\x1b[1m", "").replace("\x1b[0m", ""), repr(output)
    assert "[91m" not in output, repr(output)
    assert "Removing intermediate container" not in output, describe(result)
    assert "returned a non-zero code: 1" in result.stderr, describe(result)


def test_alice_builds_her_image_and_only_she_can_use_it(ds01d, docker_client, home_dir):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    token = uuid.uuid4().hex
    context = home_dir(
        "alice",
        {
            "Dockerfile": dockerfile(
                "COPY notes.txt /notes.txt", f"RUN echo built-{token} > /built.txt"
            ),
            "notes.txt": "hello\n",
        },
    )

    result = build(d, "alice", "thesis", context)

    assert result.returncode == 0, describe(result)
    reference = tag("alice", "thesis")
    assert f"Building {reference}" in result.stdout
    assert "[1/4]" in result.stdout and "[3/4] RUN echo built-" in result.stdout
    assert f"Built {reference}" in result.stdout
    image = docker_client.images.get(reference)
    assert image.labels["ds01.image.owner"] == "alice"
    events = d.events_where(action="image.build", user="alice", outcome="success")
    assert events and events[-1]["details"]["tag"] == reference

    hers = d.cli("alice", "container-create", "own", "--image", reference)
    assert hers.returncode == 0, describe(hers)
    theirs = d.cli("bob", "container-create", "own", "--image", reference)
    assert theirs.returncode == 5, describe(theirs)

    listed = {i["name"]: i for i in d.cli_json("alice", "image-list")}
    assert listed[reference]["own"] is True and listed[reference]["id"] == image.id
    assert reference not in {i["name"] for i in d.cli_json("bob", "image-list")}
    text = d.cli("alice", "image-list")
    assert "Your own images" in text.stdout and reference in text.stdout, describe(text)


def test_every_step_runs_with_her_limits_under_her_cgroup_parent(ds01d, home_dir):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    probe = (
        "RUN echo probe-$(cat /proc/sys/kernel/random/uuid) >/dev/null; "
        'echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null '
        '|| cat /sys/fs/cgroup/memory.max)"; '
        'echo "swap=$(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null '
        '|| cat /sys/fs/cgroup/memory.swap.max)"; '
        'echo "quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null '
        "|| cut -d' ' -f1 /sys/fs/cgroup/cpu.max)\"; "
        'echo "cgroup=$(grep memory /proc/self/cgroup || cat /proc/self/cgroup)"'
    )
    context = home_dir("alice", {"Dockerfile": dockerfile(probe)})

    result = build(d, "alice", "limits", context, "--no-cache")

    assert result.returncode == 0, describe(result)
    out = result.stdout
    assert f"memory={96 * 1024**2}" in out, out
    assert f"quota={50_000}" in out, out  # 0.5 CPUs of a 100 ms period
    assert "swap=" in out and ("swap=0" in out or f"swap={96 * 1024**2}" in out), out
    assert "0.5 CPUs" in out and "no GPU" in out
    if "cgroup=0::/" not in out:  # cgroup v1, or v2 without a cgroup namespace
        assert "cgroup=" in out and ALICE_SLICE in out, out
    details = d.events_where(action="image.build", outcome="success")[-1]["details"]
    assert details["cpus"] == 0.5 and details["memory"] == "96M"


def test_a_directory_she_does_not_own_is_refused_even_through_a_symlink(
    ds01d, docker_client, home_dir
):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    bobs = home_dir("bob", {"Dockerfile": dockerfile("RUN echo bob")})
    bobs.chmod(0o755)
    alices = home_dir("alice")
    link = alices / "ctx"
    link.symlink_to(bobs)
    os.lchown(link, *(lambda e: (e.pw_uid, e.pw_gid))(pwd.getpwnam("alice")))

    direct = build(d, "alice", "notmine", bobs)
    through_link = build(d, "alice", "notmine", link)
    root_dir = build(d, "alice", "notmine", Path("/"))

    for result in (direct, through_link, root_dir):
        assert result.returncode == 5, describe(result)
        assert "not a directory you own" in result.stderr, describe(result)
    assert image_or_none(docker_client, tag("alice", "notmine")) is None
    assert len(d.events_where(action="auth.denied", user="alice", outcome="denied")) >= 3


def test_a_file_she_cannot_read_fails_the_build_and_never_reaches_docker(
    ds01d, docker_client, home_dir
):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    context = home_dir("alice", {"Dockerfile": dockerfile("COPY . /context")})
    secret = context / "secret.txt"
    secret.write_text("root's secret\n", encoding="utf-8")  # owned by root
    secret.chmod(0o000)

    result = build(d, "alice", "leak", context)

    assert result.returncode == 5, describe(result)
    assert "secret.txt" in result.stderr and "Permission denied" in result.stderr
    assert "as you (alice)" in result.stderr
    assert image_or_none(docker_client, tag("alice", "leak")) is None
    assert not d.events_where(action="image.build", outcome="success")


def test_a_symlink_in_the_context_does_not_reach_outside_it(ds01d, docker_client, home_dir):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    context = home_dir("alice", {"Dockerfile": dockerfile("COPY shadow /shadow")})
    (context / "shadow").symlink_to("/etc/shadow")

    result = build(d, "alice", "shadow", context)

    assert result.returncode == 1, describe(result)
    assert "failed" in result.stderr
    assert image_or_none(docker_client, tag("alice", "shadow")) is None
    failure = d.events_where(action="image.build", outcome="failure")
    assert failure and failure[-1]["details"]["tag"] == tag("alice", "shadow")


def test_base_images_outside_the_policy_and_reserved_labels_are_refused(
    ds01d, docker_client, home_dir, test_image_alt
):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    other_base = home_dir("alice", {"Dockerfile": f"FROM {test_image_alt}\nRUN echo x\n"})
    copy_from = home_dir("alice", {"Dockerfile": dockerfile(f"COPY --from={test_image_alt} / /x")})
    labelled = home_dir("alice", {"Dockerfile": dockerfile("LABEL ds01.managed=true")})
    owner_label = home_dir("alice", {"Dockerfile": dockerfile("LABEL ds01.image.owner=bob")})

    for context in (other_base, copy_from):
        refused = build(d, "alice", "base", context)
        assert refused.returncode == 5, describe(refused)
        assert "not an image you may build from" in refused.stderr
    reserved = build(d, "alice", "labelled", labelled)
    assert reserved.returncode == 1, describe(reserved)
    assert "ds01.managed" in reserved.stderr
    overridden = build(d, "alice", "owner", owner_label)
    assert overridden.returncode == 0, describe(overridden)

    assert image_or_none(docker_client, tag("alice", "base")) is None
    assert image_or_none(docker_client, tag("alice", "labelled")) is None
    labels = docker_client.images.get(tag("alice", "owner")).labels
    assert labels["ds01.image.owner"] == "alice"


def test_her_images_can_be_built_on_and_rebuilding_replaces_the_old_one(
    ds01d, docker_client, home_dir
):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    base = home_dir("alice", {"Dockerfile": dockerfile("RUN echo one > /v")})
    assert build(d, "alice", "base", base).returncode == 0
    first = docker_client.images.get(tag("alice", "base")).id
    on_top = home_dir("alice", {"Dockerfile": f"FROM {tag('alice', 'base')}\nRUN echo x\n"})
    assert build(d, "alice", "top", on_top).returncode == 0
    bob_on_top = home_dir("bob", {"Dockerfile": f"FROM {tag('alice', 'base')}\nRUN echo x\n"})
    assert build(d, "bob", "top", bob_on_top).returncode == 5

    (base / "Dockerfile").write_text(dockerfile("RUN echo two > /v"), encoding="utf-8")
    assert build(d, "alice", "base", base).returncode == 0
    assert docker_client.images.get(tag("alice", "base")).id != first
    # The first build is still the base of alice/…top, so it stays (untagged).
    assert image_or_none(docker_client, first) is not None


def test_following_and_cancelling_a_build_is_for_its_owner(ds01d, docker_client, home_dir):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    context = home_dir("alice", {"Dockerfile": dockerfile("RUN echo started; sleep 60")})
    body = {"name": f"{PREFIX}slow", "context": str(context), "no_cache": True}

    status, job = api_as(d, "alice", "POST", "/v1/images/builds", body)
    assert status == 202, job
    path = f"/v1/images/builds/{job['id']}"
    assert api_as(d, "bob", "GET", path)[0] == 403
    assert api_as(d, "bob", "DELETE", path)[0] == 403
    status, cancelled = api_as(d, "alice", "DELETE", path)
    assert status == 200, cancelled
    status, final = api_as(d, "alice", "GET", path + "?wait=30")
    while final["state"] == "running":
        status, final = api_as(d, "alice", "GET", f"{path}?wait=30&since={final['next']}")
    assert final["state"] == "cancelled", final
    assert "Cancelled by alice" in final["message"]
    assert image_or_none(docker_client, tag("alice", "slow")) is None
    assert d.events_where(action="auth.denied", user="bob", outcome="denied")


# --- removing ---------------------------------------------------------------------------------


def test_only_the_owner_removes_an_image_and_not_while_a_container_uses_it(
    ds01d, docker_client, home_dir
):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    context = home_dir("alice", {"Dockerfile": dockerfile("RUN echo x")})
    assert build(d, "alice", "mine", context).returncode == 0
    reference = tag("alice", "mine")

    by_bob = d.cli("bob", "image-remove", reference)
    assert by_bob.returncode == 5, describe(by_bob)
    assert d.events_where(action="auth.denied", user="bob", outcome="denied")

    assert d.cli("alice", "container-create", "uses", "--image", reference).returncode == 0
    in_use = d.cli("alice", "image-remove", reference)
    assert in_use.returncode == 1, describe(in_use)
    assert "in use by container(s) uses (yours)" in in_use.stderr
    assert image_or_none(docker_client, reference) is not None

    assert d.cli("alice", "container-remove", "uses").returncode == 0
    removed = d.cli("alice", "image-remove", reference)
    assert removed.returncode == 0, describe(removed)
    assert image_or_none(docker_client, reference) is None
    assert d.events_where(action="image.remove", user="alice", outcome="success")

    missing = d.cli("alice", "image-remove", reference)
    assert missing.returncode == 4, describe(missing)


def test_registry_images_are_removed_by_admins_with_force_only(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)

    by_user = d.cli("alice", "image-remove", "busybox")
    admin_without_force = d.cli("erin", "image-remove", TEST_IMAGE)

    assert by_user.returncode == 5, describe(by_user)
    assert admin_without_force.returncode == 1, describe(admin_without_force)
    assert "--force" in admin_without_force.stderr
    assert image_or_none(docker_client, TEST_IMAGE) is not None


# --- pulling ----------------------------------------------------------------------------------


def test_a_pull_outside_the_policy_is_refused(ds01d):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)

    for reference in ("evil/miner:latest", "ds01-test/busybox-alt:latest"):
        result = d.cli("alice", "image-pull", reference)
        assert result.returncode == 5, describe(result)
        assert "cannot be pulled here" in result.stderr
    denied = d.events_where(action="auth.denied", user="alice", outcome="denied")
    assert {e["resource"] for e in denied} >= {"image/evil/miner:latest"}


def test_an_allowed_pull_runs_as_a_job_and_reports_its_failure(ds01d):
    """No registry answers here: the allowed pull is started, fails, and says why."""
    d = ds01d(resource_limits=LIMITS, images=IMAGES)

    result = d.cli("alice", "image-pull", "ghost")

    assert result.returncode == 1, describe(result)
    assert "Pulling ds01-test/never-built-here:1.0" in result.stdout, describe(result)
    assert "Pulling ds01-test/never-built-here:1.0 failed" in result.stderr
    failure = d.events_where(action="image.pull", user="alice", outcome="failure")
    assert failure and failure[-1]["resource"] == "image/ds01-test/never-built-here:1.0"


def test_an_allowed_pull_fetches_the_image_with_progress(ds01d, docker_client, local_registry):
    d = ds01d(
        resource_limits=LIMITS,
        images=IMAGES
        + f"""
      - name: pulled
        image: {local_registry}
        framework: none
        description: The test image, from a local registry
    """,
    )
    assert image_or_none(docker_client, local_registry) is None

    result = d.cli("alice", "image-pull", "pulled")

    assert result.returncode == 0, describe(result)
    assert f"Pulling {local_registry}" in result.stdout
    assert "Pull complete" in result.stdout or "Downloaded newer image" in result.stdout
    assert f"Pulled {local_registry}" in result.stdout
    assert image_or_none(docker_client, local_registry) is not None
    success = d.events_where(action="image.pull", user="alice", outcome="success")
    assert success and success[-1]["resource"] == f"image/{local_registry}"
    created = d.cli("alice", "container-create", "from-pull", "--image", "pulled")
    assert created.returncode == 0, describe(created)


# --- image-create ------------------------------------------------------------------------------


def test_image_create_writes_a_dockerfile_that_image_build_builds(ds01d, docker_client, home_dir):
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    target = home_dir("alice")

    created = d.cli(
        "alice",
        "image-create",
        f"{PREFIX}made",
        "--base",
        TEST_IMAGE,
        "--no-jupyter",
        "--no-data-science",
        "--dir",
        str(target),
    )

    assert created.returncode == 0, describe(created)
    path = target / "Dockerfile"
    assert path.stat().st_uid == pwd.getpwnam("alice").pw_uid
    text = path.read_text(encoding="utf-8")
    assert f"FROM {TEST_IMAGE}" in text and "# Phase 4: your use case" in text
    again = d.cli("alice", "image-create", f"{PREFIX}made", "--dir", str(target))
    assert again.returncode == 2 and "--force" in again.stderr, describe(again)

    built = d.cli("alice", "image-build", f"{PREFIX}made", "--context", str(target))
    assert built.returncode == 0, describe(built)
    assert image_or_none(docker_client, tag("alice", "made")) is not None
