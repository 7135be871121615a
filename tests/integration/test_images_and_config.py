"""The image registry, image policy and configuration handling of a real ds01d.

Images: ``image-list`` shows the registry entries whose image is present in the local Docker
engine (``--all`` adds the missing ones); ``--image`` accepts a registry name or a local
reference that ``images.yaml`` allows, and refuses everything else with the documented exit
codes (5 not allowed, 4 not present, 2 malformed).

Configuration: ``ds01 config check`` validates files and directories, naming file, line and
key of every problem; a running daemon picks up a valid change without a restart and keeps
the last good configuration (logging a ``config.reload`` failure) when a file turns invalid;
and ds01d refuses to start at all on an invalid configuration.
"""

from __future__ import annotations

import io
import pwd
import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from support import ONLY_BUSYBOX_YAML, TEST_IMAGE, TEST_IMAGES_YAML, describe

MISSING_IMAGE = "ds01-test/never-built-here:1.0"

#: The test image as ``busybox`` and an entry whose image exists nowhere.
IMAGES_WITH_MISSING_ENTRY = ONLY_BUSYBOX_YAML + f"""\
      - name: ghost
        image: {MISSING_IMAGE}
        framework: none
        description: An image nobody built
"""

#: The test image registered, and ``ds01-test/*`` references allowed directly.
BUSYBOX_AND_ALLOWED_TEST_REFERENCES = ONLY_BUSYBOX_YAML + """\
    allow:
      - "ds01-test/*"
"""

LIMITS_CPU_1 = """
    defaults:
      cpu_limit: 1
"""
LIMITS_CPU_1_5 = """
    defaults:
      cpu_limit: 1.5
"""
#: gpu_limit on line 6 is not a number.
BROKEN_LIMITS = """\
defaults:
  gpu_limit: 1
groups:
  phd:
    cpu_limit: 2
    gpu_limit: lots
"""
BROKEN_LIMITS_LINE = 6
BROKEN_LIMITS_KEY = "groups.phd.gpu_limit"

GOOD_GPU_CONFIG = """\
backend: simulated
simulated:
  gpus:
    - {}
    - mig: true
      mig_instances:
        - profile: 3g.20gb
"""


# --- helpers --------------------------------------------------------------------------------


def image_list(daemon: Any, *flags: str) -> dict[str, dict[str, Any]]:
    """The registry entries of ``image-list --json`` as alice, by entry name (her own
    images, which follow them, are left out)."""
    entries = daemon.cli_json("alice", "image-list", *flags)
    return {entry["name"]: entry for entry in entries if not entry.get("own")}


def create_with_image(daemon: Any, image: str, name: str) -> subprocess.CompletedProcess:
    return daemon.cli("alice", "container-create", name, "--image", image)


def alice_container(docker_client: Any, name: str) -> Any | None:
    """alice's container ``name`` as Docker has it (``{name}._.{uid}``), or ``None``."""
    try:
        return docker_client.containers.get(f"{name}._.{pwd.getpwnam('alice').pw_uid}")
    except docker.errors.NotFound:
        return None


def cpu_limit_of(daemon: Any, user: str = "alice") -> Any:
    """The resolved ``cpu_limit`` that ``check-limits --json`` shows ``user``."""
    return daemon.cli_json(user, "check-limits")["limits"]["cpu_limit"]


def write_file(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# --- image-list -----------------------------------------------------------------------------


def test_image_list_shows_present_registry_entries_and_all_adds_missing_ones(ds01d):
    d = ds01d(images=IMAGES_WITH_MISSING_ENTRY)

    present = image_list(d)
    assert set(present) == {"busybox"}
    assert present["busybox"]["image"] == TEST_IMAGE
    assert present["busybox"]["present"] is True

    everything = image_list(d, "--all")
    assert set(everything) == {"busybox", "ghost"}
    assert everything["ghost"]["image"] == MISSING_IMAGE
    assert everything["ghost"]["present"] is False
    assert everything["busybox"]["present"] is True


# --- image policy on create -----------------------------------------------------------------


def test_unregistered_local_reference_is_refused_with_exit_5(ds01d, docker_client, test_image_alt):
    d = ds01d(images=ONLY_BUSYBOX_YAML)

    result = create_with_image(d, test_image_alt, "alt-refused")

    assert result.returncode == 5, describe(result)
    assert alice_container(docker_client, "alt-refused") is None
    assert d.events_where(action="auth.denied", outcome="denied")


def test_local_reference_matching_allow_is_accepted(ds01d, docker_client, test_image_alt):
    d = ds01d(images=BUSYBOX_AND_ALLOWED_TEST_REFERENCES)

    result = create_with_image(d, test_image_alt, "alt-allowed")

    assert result.returncode == 0, describe(result)
    container = alice_container(docker_client, "alt-allowed")
    assert container is not None
    assert container.attrs["Config"]["Image"] == test_image_alt
    assert container.labels["ds01.image"] == test_image_alt


def test_registry_name_runs_the_registered_image(ds01d, docker_client):
    d = ds01d(images=ONLY_BUSYBOX_YAML)

    result = create_with_image(d, "busybox", "by-name")

    assert result.returncode == 0, describe(result)
    container = alice_container(docker_client, "by-name")
    assert container is not None
    assert container.attrs["Config"]["Image"] == TEST_IMAGE


@pytest.fixture
def image_built_for_alice(docker_client: Any, test_image: str) -> Any:
    """A local image outside the registry, labelled as built for alice."""
    tag = "ds01-test/alice-own:latest"
    dockerfile = f"FROM {test_image}\nLABEL ds01.image.owner=alice\n"
    docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, pull=False, rm=True
    )
    yield tag
    docker_client.images.remove(tag, force=True)


def test_an_image_built_for_a_user_is_hers_alone(ds01d, docker_client, image_built_for_alice):
    d = ds01d(images=ONLY_BUSYBOX_YAML)

    hers = create_with_image(d, image_built_for_alice, "own-image")
    theirs = d.cli("bob", "container-create", "own-image", "--image", image_built_for_alice)

    assert hers.returncode == 0, describe(hers)
    container = alice_container(docker_client, "own-image")
    assert container is not None and container.attrs["Config"]["Image"] == image_built_for_alice
    assert theirs.returncode == 5, describe(theirs)
    assert "not one of your own images" in theirs.stderr
    assert d.events_where(action="auth.denied", user="bob", outcome="denied")


def test_image_not_present_locally_exits_4(ds01d, docker_client):
    d = ds01d(images=IMAGES_WITH_MISSING_ENTRY + '    allow: ["ds01-test/*"]\n')

    for image in ("ghost", "ds01-test/not-here-either:2.0"):
        result = create_with_image(d, image, "no-image")
        assert result.returncode == 4, describe(result)
    assert alice_container(docker_client, "no-image") is None


def test_malformed_image_reference_exits_2(ds01d, docker_client):
    d = ds01d(images=TEST_IMAGES_YAML)

    for image in ("Not A Reference!", "ds01-test/BusyBox:latest", "busybox::latest"):
        result = create_with_image(d, image, "bad-ref")
        assert result.returncode == 2, describe(result)
    assert alice_container(docker_client, "bad-ref") is None


# --- ds01 config check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken_line", "key"),
    [
        ("    gpu_limit: lots", BROKEN_LIMITS_KEY),
        ("    gpu_limitt: 1", "groups.phd.gpu_limitt"),
        ("    priority: null", "groups.phd.priority"),
    ],
)
def test_config_check_of_a_broken_file_exits_2_naming_file_line_and_key(
    ds01d, tmp_path, broken_line, key
):
    d = ds01d(start=False)  # `config check` reads files; it needs no daemon
    text = BROKEN_LIMITS.replace("    gpu_limit: lots", broken_line)
    path = write_file(tmp_path, "resource-limits.yaml", text)

    result = d.cli(None, "config", "check", str(path))

    assert result.returncode == 2, describe(result)
    output = result.stdout + result.stderr
    assert f"{path}:{BROKEN_LIMITS_LINE}:" in output, describe(result)
    assert key in output, describe(result)


def test_config_check_of_a_good_directory_exits_0_and_of_a_broken_one_exits_2(ds01d, tmp_path):
    d = ds01d(start=False)
    write_file(tmp_path, "resource-limits.yaml", BROKEN_LIMITS.replace("lots", "2"))
    write_file(tmp_path, "gpu-config.yaml", GOOD_GPU_CONFIG)
    write_file(tmp_path, "images.yaml", TEST_IMAGES_YAML)

    good = d.cli(None, "config", "check", "--config-dir", str(tmp_path))
    assert good.returncode == 0, describe(good)

    broken = write_file(tmp_path, "images.yaml", TEST_IMAGES_YAML + "unknown_section: 1\n")
    bad = d.cli(None, "config", "check", "--config-dir", str(tmp_path))
    assert bad.returncode == 2, describe(bad)
    assert str(broken) in bad.stdout + bad.stderr, describe(bad)


# --- configuration of a running daemon ------------------------------------------------------


def test_invalid_change_keeps_last_good_config_and_valid_change_applies_live(ds01d, docker_client):
    d = ds01d(resource_limits=LIMITS_CPU_1, images=TEST_IMAGES_YAML)
    assert cpu_limit_of(d) == 1
    pid = d.pid

    d.write_config("resource-limits.yaml", BROKEN_LIMITS)
    assert cpu_limit_of(d) == 1, "the last good limits must stay in force"
    created = d.cli("alice", "container-create", "still-works", "--image", "busybox")
    assert created.returncode == 0, describe(created)
    container = alice_container(docker_client, "still-works")
    assert container is not None
    assert container.attrs["HostConfig"]["NanoCpus"] == 10**9
    failures = d.events_where(action="config.reload", outcome="failure")
    assert failures, d.events()
    assert "resource-limits.yaml" in str(failures[-1]["details"])

    d.write_config("resource-limits.yaml", LIMITS_CPU_1_5)
    assert cpu_limit_of(d) == 1.5
    assert d.running and d.pid == pid, "the daemon must not have restarted"
    assert d.events_where(action="config.reload", outcome="success")


def test_daemon_refuses_to_start_on_invalid_config_naming_the_file(ds01d):
    d = ds01d(resource_limits=BROKEN_LIMITS, start=False)

    result = subprocess.run(d.command, capture_output=True, text=True, timeout=30, check=False)

    assert result.returncode != 0, describe(result)
    path = d.paths.config_dir / "resource-limits.yaml"
    assert str(path) in result.stdout + result.stderr, describe(result)
    assert BROKEN_LIMITS_KEY in result.stdout + result.stderr, describe(result)
    assert not d.paths.socket.exists()
