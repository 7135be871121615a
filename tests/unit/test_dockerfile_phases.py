"""The four-phase Dockerfile that ``image-create`` writes: readable, commented, complete,
and built only from what the spec says."""

from __future__ import annotations

from typing import cast

import pytest

from ds01.cli.project import FRAMEWORK_NAMES
from ds01.core.dockerfile import (
    DATA_SCIENCE_PACKAGES,
    FRAMEWORKS,
    DockerfileSpec,
    Framework,
    render_dockerfile,
    validate_apt_package,
    validate_pip_requirement,
)
from ds01.core.image_build import base_references


def instructions(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]


def test_the_cli_knows_every_framework() -> None:
    assert set(FRAMEWORK_NAMES) == set(FRAMEWORKS)


def test_all_four_phases_in_order_with_comments() -> None:
    text = render_dockerfile(
        DockerfileSpec(name="thesis", packages=("transformers==4.44.2", "datasets"))
    )
    positions = [text.index(f"# Phase {n}:") for n in (1, 2, 3, 4)]
    assert positions == sorted(positions)
    assert "image-build thesis" in text
    assert instructions(text)[0] == f"FROM {FRAMEWORKS['pytorch'].base_image}"
    assert "jupyterlab" in text and "EXPOSE 8888" in text
    assert 'LABEL ds01.jupyter.port="8888"' in text  # ds01 publishes it with a token
    assert all(package in text for package in DATA_SCIENCE_PACKAGES)
    assert "        transformers==4.44.2 \\\n        datasets\n" in text
    assert text.index("transformers") > text.index("# Phase 4:")
    assert 'CMD ["jupyter", "lab"' in text
    assert "WORKDIR /workspace" in text
    assert text.endswith("\n")
    # Every comment line is a comment, every continued line ends its continuation.
    assert all(len(line) <= 100 for line in text.splitlines())


def test_phases_can_be_left_out() -> None:
    text = render_dockerfile(
        DockerfileSpec(name="t", framework="tensorflow", jupyter=False, data_science=False)
    )
    assert "jupyterlab" not in text and "CMD" not in text and "pandas" not in text
    assert "# Phase 2" not in text and "# Phase 3" not in text
    assert "# Phase 4: your use case" in text and "# RUN python3 -m pip install" in text
    assert instructions(text)[0] == f"FROM {FRAMEWORKS['tensorflow'].base_image}"


def test_plain_python_gets_a_virtual_environment_and_apt_packages() -> None:
    text = render_dockerfile(
        DockerfileSpec(name="t", framework="python", system_packages=("libgl1", "ffmpeg"))
    )
    assert "python3 -m venv /opt/venv" in text
    assert 'ENV PATH="/opt/venv/bin:${PATH}"' in text
    assert (
        "apt-get install -y --no-install-recommends \\\n        libgl1 \\\n        ffmpeg" in text
    )


def test_another_base_image() -> None:
    text = render_dockerfile(DockerfileSpec(name="t", base_image="alice/base:v1"))
    assert [b.reference for b in base_references(text)] == ["alice/base:v1"]


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_every_default_base_is_one_image_ds01_can_check(framework: str) -> None:
    text = render_dockerfile(DockerfileSpec(name="t", framework=cast("Framework", framework)))
    assert [b.reference for b in base_references(text)] == [FRAMEWORKS[framework].base_image]


@pytest.mark.parametrize(
    "package", ["torch==2.8.0", "uvicorn[standard]>=0.30", "numpy<2,>=1.26", "scikit-learn"]
)
def test_pip_requirements(package: str) -> None:
    assert validate_pip_requirement(package) == package


@pytest.mark.parametrize("package", ["", "a b", "x; rm -rf /", "'q'", "$(id)", "-e ."])
def test_what_is_not_one_pip_requirement_is_refused(package: str) -> None:
    with pytest.raises(ValueError, match="pip requirement"):
        validate_pip_requirement(package)
    with pytest.raises(ValueError, match="pip requirement"):
        render_dockerfile(DockerfileSpec(name="t", packages=(package,)))


def test_apt_packages() -> None:
    assert validate_apt_package("libgl1") == "libgl1"
    assert validate_apt_package("g++=4:12.2.0-3") == "g++=4:12.2.0-3"
    with pytest.raises(ValueError, match="Debian package"):
        validate_apt_package("Bad Name")


@pytest.mark.parametrize(
    "spec",
    [
        DockerfileSpec(name="t", framework=cast("Framework", "julia")),
        DockerfileSpec(name="a\nFROM evil"),
        DockerfileSpec(name="t", base_image="a b"),
    ],
)
def test_bad_specs_are_refused(spec: DockerfileSpec) -> None:
    with pytest.raises(ValueError):
        render_dockerfile(spec)
