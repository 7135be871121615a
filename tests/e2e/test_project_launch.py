"""End to end: ``project-init`` then ``project-launch`` as a real user.

project-launch builds the project's image through ds01d (from the project's own
Dockerfile, edited here to start from the offline JupyterLab image), then deploys a
container from it with the project directory at /workspace. A second launch reuses both.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib

from support import describe, run_root

JUPYTER_IMAGE = "ds01-test/jupyter:latest"
IMAGES = f"""\
images:
  - name: jupyter
    image: {JUPYTER_IMAGE}
    framework: none
    description: JupyterLab starter, built offline
"""
LIMITS = """\
defaults:
  gpu_limit: 1
  memory_limit: 2G
  cpu_limit: 1
"""


@pytest.fixture
def project(unix_users: dict[str, Any], docker_client: Any) -> Iterator[Path]:
    try:
        docker_client.images.get(JUPYTER_IMAGE)
    except Exception:
        pytest.fail(f"{JUPYTER_IMAGE} is missing: run `make images`", pytrace=False)
    home = Path(unix_users["alice"].pw_dir)
    directory = home / "launchdemo"
    shutil.rmtree(directory, ignore_errors=True)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
    for image in docker_client.images.list(filters={"label": "ds01.image.owner=alice"}):
        for tag in image.tags:
            if tag.endswith("/launchdemo:latest"):
                docker_client.images.remove(tag, force=True)


def test_project_launch_builds_the_image_and_deploys_it_with_the_project_mounted(
    ds01d: Any, project: Path
) -> None:
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    # The registry has no PyTorch image: --image names the one to start from.
    made = d.cli("alice", "project-init", "launchdemo", "--no-git", "--gpus", "0",
                 "--image", "jupyter", "--dir", str(project))  # fmt: skip
    assert made.returncode == 0, describe(made)
    assert f"FROM {JUPYTER_IMAGE}\n" in (project / "Dockerfile").read_text()
    image = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["ds01"]["image"]
    # The user edits the generated Dockerfile: here, a base that exists offline.
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(f"FROM {JUPYTER_IMAGE}\nRUN echo built > /opt/project-built\n")
    run_root(["chown", "alice:alice", str(dockerfile)])

    first = d.cli("alice", "project-launch", str(project), "--background", timeout=300)
    assert first.returncode == 0, describe(first)
    assert f"Building {image}" in first.stdout
    assert "JupyterLab: http://127.0.0.1:" in first.stdout
    (container,) = d.cli_json("alice", "container-list")
    assert (container["name"], container["status"], container["image"]) == (
        "launchdemo", "running", image,
    )  # fmt: skip
    assert container["jupyter_url"]
    inside = d.cli("alice", "container-open", "launchdemo", "--", "sh", "-c",
                   "cat /opt/project-built; ls /workspace/pyproject.toml; id -u")  # fmt: skip
    assert inside.returncode == 0, describe(inside)
    assert "built" in inside.stdout and "/workspace/pyproject.toml" in inside.stdout
    assert str(project.stat().st_uid) in inside.stdout

    # Again: the image is reused and so is the running container.
    again = d.cli("alice", "project-launch", str(project), "--background")
    assert again.returncode == 0, describe(again)
    assert "built already" in again.stdout
    assert len(d.cli_json("alice", "container-list")) == 1


def test_project_launch_needs_a_ds01_project(ds01d: Any, project: Path) -> None:
    d = ds01d(resource_limits=LIMITS, images=IMAGES)
    project.mkdir()
    run_root(["chown", "alice:alice", str(project)])
    result = d.cli("alice", "project-launch", str(project))
    assert result.returncode == 2, describe(result)
    assert "not a ds01 project" in result.stderr
    (project / "pyproject.toml").write_text('[tool.ds01]\nimage = "bob/x:latest"\n')
    result = d.cli("alice", "project-launch", str(project))
    assert result.returncode == 2, describe(result)
    assert "is not an image of yours" in result.stderr
