"""End to end: the site's image registry drives a new user's first day.

ds01d runs on the example configuration shipped in ``examples/config``, changed only where
this offline machine needs it (``support.offline_example_config``: the starter's image is
the offline JupyterLab image, registered under the example's starter name). Then:

- a fresh user's ``user-setup`` gets the example's starter, JupyterLab answering;
- with a starter image that is not on the machine and cannot be fetched, ``user-setup``
  says in words what the admin and the user can do, and the doctor and ``config check``
  warn about each registry image missing here;
- ``project-init`` starts the project's Dockerfile from the registry's starter, and
  ``project-launch`` builds from it;
- a Dockerfile ``FROM python`` (a registry short name) builds from that entry's image.

A short name of an image the registry does not allow is refused: test_bypass_dockerfile.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import tomllib

from support import OFFLINE_STARTER_IMAGE, describe, offline_example_config, run_root

PYTHON_IMAGE = "ds01-test/python:latest"
PYTHON_ENTRY = {
    "name": "python",
    "image": PYTHON_IMAGE,
    "framework": "none",
    "description": "Debian 12 with Python, built offline",
}
#: An image no registry serves: its pull is refused at once (nothing listens on port 9).
UNFETCHABLE = "127.0.0.1:9/ds01t/starter:latest"
URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]+)")


@pytest.fixture
def offline_images(docker_client: Any) -> None:
    for image in (OFFLINE_STARTER_IMAGE, PYTHON_IMAGE):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"{image} is missing: run `make images`", pytrace=False)


@pytest.fixture
def own_images(docker_client: Any) -> Iterator[None]:
    """Removes the images the test builds for alice (``ds01t-`` names) afterwards."""
    yield
    for image in docker_client.images.list(filters={"label": "ds01.image.owner=alice"}):
        for tag in image.tags:
            if "/ds01t-" in tag:
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.images.remove(tag, force=True)


def start_example(ds01d: Callable[..., Any], **offline: Any) -> Any:
    files, _ = offline_example_config(**offline)
    return ds01d(resource_limits=files["resource-limits.yaml"], images=files["images.yaml"])


def test_a_fresh_user_gets_the_example_registry_s_starter(
    ds01d: Any, unix_users: dict[str, Any], offline_images: None
) -> None:
    d = start_example(ds01d)
    result = d.cli("dave", "user-setup", "--yes", timeout=180)
    assert result.returncode == 0, describe(result)
    match = URL_RE.search(result.stdout)
    assert match, describe(result)
    request = urllib.request.Request(
        f"http://127.0.0.1:{match[1]}/api/status", headers={"Authorization": f"token {match[2]}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200
    # The guide's examples name this site's images, not one it may not have.
    assert "container-deploy NAME --image pytorch-jupyter --gpus 1" in result.stdout
    (container,) = d.cli_json("dave", "container-list")
    assert container["image"] == "pytorch-jupyter"  # the example registry's starter name


def test_a_starter_that_cannot_be_fetched_is_said_in_words_and_the_admin_warned(
    ds01d: Any, unix_users: dict[str, Any], offline_images: None
) -> None:
    d = start_example(ds01d, starter_image=UNFETCHABLE)
    result = d.cli("dave", "user-setup", "--yes", timeout=180)
    assert result.returncode == 1, describe(result)
    assert f"The starter image pytorch-jupyter ({UNFETCHABLE}) is not on this machine, and " \
        "fetching it failed" in result.stderr, describe(result)  # fmt: skip
    assert "sets `starter: NAME` in images.yaml" in result.stderr
    assert "`user-setup --image NAME`" in result.stderr
    assert "fetching it…" in result.stdout  # it tried, as image-pull does
    assert d.cli_json("dave", "container-list") == []
    assert d.events_where(action="image.pull", outcome="failure")

    doctor = d.cli(None, "admin", "doctor", "--json")
    report = json.loads(doctor.stdout)
    warned = {f["check"]: f for f in report["findings"] if f["level"] == "warning"}
    assert warned["starter-image"]["hint"].startswith(f"`docker pull {UNFETCHABLE}`")
    assert "(aimehub/pytorch-2.8.0-cuda12.6.3) is not on this machine" in json.dumps(report)
    assert report["exit_code"] >= 1

    checked = d.cli(None, "config", "check", "--config-dir", str(d.paths.config_dir))
    assert checked.returncode == 0, describe(checked)  # warnings, not errors
    assert f"The starter image pytorch-jupyter ({UNFETCHABLE}) is not on this machine" in (
        checked.stderr
    )
    assert "docker pull aimehub/tensorflow-2.16.1-cuda12.3" in checked.stderr
    d.stop()
    unchecked = d.cli(None, "config", "check", "--config-dir", str(d.paths.config_dir))
    assert unchecked.returncode == 0, describe(unchecked)
    assert "was not checked: ds01d does not answer" in unchecked.stderr


def test_project_init_builds_from_the_registry_and_from_python_builds_too(
    ds01d: Any,
    unix_users: dict[str, Any],
    offline_images: None,
    own_images: None,
    home_dir: Callable[..., Path],
    docker_client: Any,
) -> None:
    d = start_example(ds01d, extra_entries=[PYTHON_ENTRY])
    project = Path(unix_users["alice"].pw_dir) / "ds01t-project"
    shutil.rmtree(project, ignore_errors=True)
    made = d.cli("alice", "project-init", "ds01t-project", "--no-git", "--gpus", "0",
                 "--dir", str(project))  # fmt: skip
    assert made.returncode == 0, describe(made)
    assert f"Base: pytorch-jupyter ({OFFLINE_STARTER_IMAGE})." in made.stdout
    dockerfile = (project / "Dockerfile").read_text()
    (from_line,) = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert from_line == f"FROM {OFFLINE_STARTER_IMAGE}"
    settings = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["ds01"]
    assert settings["base_image"] == OFFLINE_STARTER_IMAGE
    # No package index here: the project keeps the generated FROM, without the pip phases.
    (project / "Dockerfile").write_text(f"{from_line}\nRUN echo built > /opt/project-built\n")
    run_root(["chown", "alice:alice", str(project / "Dockerfile")])
    launched = d.cli("alice", "project-launch", str(project), "--background", timeout=300)
    try:
        assert launched.returncode == 0, describe(launched)
        inside = d.cli("alice", "container-open", "ds01t-project", "--", "cat",
                       "/opt/project-built")  # fmt: skip
        assert inside.stdout.strip() == "built", describe(inside)
    finally:
        shutil.rmtree(project, ignore_errors=True)

    context = home_dir("alice", {"Dockerfile": "FROM python\nRUN python3 -c 'print(6 * 7)'\n"})
    built = d.cli("alice", "image-build", "ds01t-short", "--context", str(context), timeout=180)
    assert built.returncode == 0, describe(built)
    assert f"FROM python is the registry's python, built from {PYTHON_IMAGE}" in built.stdout
    # Built on the registry's image (its layers first), not on anything called "python".
    base_layers = docker_client.images.get(PYTHON_IMAGE).attrs["RootFS"]["Layers"]
    own = docker_client.images.list(filters={"label": "ds01.image.owner=alice"})
    (image,) = [i for i in own if any(t.endswith("/ds01t-short:latest") for t in i.tags)]
    assert image.attrs["RootFS"]["Layers"][: len(base_layers)] == base_layers
