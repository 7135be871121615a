"""A readable, commented Dockerfile in four phases, from a typed description. Pure.

The phases are the ones a lab teaches its image builds in:

1. **framework**: the base image with the ML framework (PyTorch, TensorFlow) or plain Python;
2. **Jupyter**: JupyterLab, so the container can serve notebooks (optional);
3. **data science**: the usual scientific Python stack (optional);
4. **use case**: the packages this project needs.

``render_dockerfile(spec)`` returns the text; nothing here touches the filesystem. The text
is meant to be read and edited by the user: every phase says what it does and how to change
it. ``image-create`` writes it, ``project-init`` may too; ``image-build`` builds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ds01.model.labels import JUPYTER_PORT as JUPYTER_PORT_LABEL  # a constant, no I/O
from ds01.model.names import require_match

Framework = Literal["pytorch", "tensorflow", "python"]


@dataclass(frozen=True)
class FrameworkInfo:
    """A framework phase-1 can start from."""

    title: str
    base_image: str  # the default base; an entry of the packaged image registry
    note: str  # one line on what the base image brings
    setup: tuple[str, ...] = ()  # Dockerfile lines that make `python3 -m pip` usable


#: The frameworks phase 1 knows, with their default base images (all in the image registry
#: ds01 ships, so that a build from them passes the image policy out of the box).
FRAMEWORKS: dict[str, FrameworkInfo] = {
    "pytorch": FrameworkInfo(
        title="PyTorch",
        base_image="aimehub/pytorch-2.8.0-cuda12.6.3",
        note="PyTorch 2.8.0 with CUDA 12.6.3 and Python (AIME ML container image).",
    ),
    "tensorflow": FrameworkInfo(
        title="TensorFlow",
        base_image="aimehub/tensorflow-2.16.1-cuda12.3",
        note="TensorFlow 2.16.1 with CUDA 12.3 and Python (AIME ML container image).",
    ),
    "python": FrameworkInfo(
        title="Python",
        base_image="nvidia/cuda:12.6.3-base-ubuntu24.04",
        note="Ubuntu 24.04 with the CUDA 12.6.3 runtime; Python is installed below.",
        setup=(
            "# Python in a virtual environment (/opt/venv), first on PATH: `pip install`",
            "# then works without touching the system's Python.",
            "RUN apt-get update \\",
            " && apt-get install -y --no-install-recommends python3 python3-venv \\",
            " && rm -rf /var/lib/apt/lists/* \\",
            " && python3 -m venv /opt/venv",
            'ENV PATH="/opt/venv/bin:${PATH}"',
        ),
    ),
}

def framework_fits(entry_framework: str, framework: str) -> bool:
    """Whether a registry entry of ``entry_framework`` (free text in images.yaml:
    ``PyTorch``, ``none``) can be phase 1 of ``framework`` (a key of ``FRAMEWORKS``): the
    same framework, or for ``python`` an entry without a deep-learning framework."""
    wanted = entry_framework.strip().casefold()
    if framework == "python":
        return wanted in ("python", "none", "")
    return framework in FRAMEWORKS and wanted == FRAMEWORKS[framework].title.casefold()


#: Phase 2: what JupyterLab needs.
JUPYTER_PACKAGES: tuple[str, ...] = ("jupyterlab", "ipywidgets")
#: Phase 3: the scientific Python stack.
DATA_SCIENCE_PACKAGES: tuple[str, ...] = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "seaborn",
)
JUPYTER_PORT = 8888

# A pip requirement as one shell word: a name, extras, a version specifier, no spaces or
# shell characters ("torch==2.8.0", "transformers>=4.40", "uvicorn[standard]").
_PIP_REQUIREMENT_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?((==|>=|<=|~=|!=|>|<)[A-Za-z0-9.*+!-]+)?"
    r"(,(==|>=|<=|~=|!=|>|<)[A-Za-z0-9.*+!-]+)*",
    re.ASCII,
)
# A Debian package name (Debian policy 5.6.1), optionally with =version.
_APT_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+:~-]+)?", re.ASCII)
_MAX_PACKAGES = 200


@dataclass(frozen=True)
class DockerfileSpec:
    """What to put in the Dockerfile.

    Args:
        name: the image's name, shown in the header and as the OCI title label.
        framework: phase 1, a key of ``FRAMEWORKS``.
        base_image: phase 1's ``FROM``; default: the framework's base image.
        base_note: one line on what ``base_image`` brings (e.g. its registry entry);
            default: the framework's note when the base is the framework's own.
        python_setup: add the framework's lines that make ``python3 -m pip`` usable (the
            ``python`` framework on a base without Python); default: only on the
            framework's own base image.
        jupyter: phase 2 (JupyterLab, and a command that starts it).
        data_science: phase 3 (``DATA_SCIENCE_PACKAGES``).
        packages: phase 4, pip requirements (``"transformers>=4.40"``).
        system_packages: phase 4, Debian/Ubuntu packages installed with apt.
    """

    name: str
    framework: Framework = "pytorch"
    base_image: str | None = None
    base_note: str | None = None
    python_setup: bool | None = None
    jupyter: bool = True
    data_science: bool = True
    packages: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()


def validate_pip_requirement(text: str) -> str:
    """``text`` if it is a pip requirement that fits in a Dockerfile line, else ValueError."""
    return require_match(
        _PIP_REQUIREMENT_RE,
        text,
        f"not a pip requirement ds01 can write: {text!r} (expected e.g. 'pandas', "
        "'torch==2.8.0', 'uvicorn[standard]>=0.30'; no spaces or quotes)",
        ValueError,
    )


def validate_apt_package(text: str) -> str:
    """``text`` if it is a Debian package name (optionally ``=version``), else ValueError."""
    return require_match(
        _APT_PACKAGE_RE,
        text,
        f"not a Debian package name: {text!r} (lower case letters, digits, '+', '-', '.')",
        ValueError,
    )


def _check(spec: DockerfileSpec) -> FrameworkInfo:
    if spec.framework not in FRAMEWORKS:
        raise ValueError(
            f"unknown framework {spec.framework!r}: one of {', '.join(sorted(FRAMEWORKS))}"
        )
    if not spec.name or any(c in spec.name for c in "\n\r"):
        raise ValueError("the image name must be one non-empty line")
    if spec.base_image is not None and (
        not spec.base_image or any(c.isspace() for c in spec.base_image)
    ):
        raise ValueError(f"not an image reference: {spec.base_image!r}")
    if len(spec.packages) + len(spec.system_packages) > _MAX_PACKAGES:
        raise ValueError(f"at most {_MAX_PACKAGES} packages")
    for requirement in spec.packages:
        validate_pip_requirement(requirement)
    for package in spec.system_packages:
        validate_apt_package(package)
    return FRAMEWORKS[spec.framework]


def _install(packages: tuple[str, ...]) -> list[str]:
    """A ``pip install`` of ``packages``, one per line so that a diff shows each change."""
    lines = ["RUN python3 -m pip install --no-cache-dir \\"]
    lines += [f"        {package} \\" for package in packages[:-1]]
    lines.append(f"        {packages[-1]}")
    return lines


def _apt(packages: tuple[str, ...]) -> list[str]:
    lines = [
        "RUN apt-get update \\",
        " && apt-get install -y --no-install-recommends \\",
    ]
    lines += [f"        {package} \\" for package in packages]
    lines.append(" && rm -rf /var/lib/apt/lists/*")
    return lines


def _phase(number: int, title: str, *explanation: str) -> list[str]:
    rule = "# " + "-" * 86
    return ["", rule, f"# Phase {number}: {title}", *(f"# {line}" for line in explanation), rule]


def render_dockerfile(spec: DockerfileSpec) -> str:
    """The Dockerfile for ``spec``, ending with a newline. Raises ``ValueError`` on a bad spec
    (unknown framework, a package that is not one word)."""
    framework = _check(spec)
    base = spec.base_image or framework.base_image
    lines = [
        f"# Dockerfile for {spec.name}",
        "#",
        "# Four phases, each building on the one before: framework -> Jupyter -> data science",
        "# -> your use case. Edit freely: add packages to phase 4, drop a phase you do not need.",
        "# Docker caches each step, so keep what changes most often (phase 4) at the end.",
        "#",
        f"# Build it:   image-build {spec.name}",
        "# Use it:     container-create NAME --image <the tag image-build prints>",
        "#",
        "# Builds run with your CPU and memory limits and without GPUs. Containers from this",
        "# image run as your own user with /workspace mounted, whatever USER says below.",
    ]
    note = spec.base_note or (framework.note if spec.base_image is None else f"Base: {base}.")
    lines += _phase(
        1,
        f"framework ({framework.title})",
        note,
        "Another version: change FROM to an image from `image-list --catalog` (its IMAGE,",
        "or its NAME: ds01 builds a registry name from that entry's image).",
    )
    lines.append(f"FROM {base}")
    setup = spec.base_image is None if spec.python_setup is None else spec.python_setup
    if framework.setup and setup:
        lines += ["", *framework.setup]
    if spec.jupyter:
        lines += _phase(
            2,
            "Jupyter",
            "JupyterLab serves notebooks on port 8888. The label tells ds01 so: it publishes",
            "the port on this machine's 127.0.0.1 and gives each container a token of its own",
            "(`container-list` shows the URL); reach it from your laptop through an SSH tunnel.",
        )
        lines += _install(JUPYTER_PACKAGES)
        lines += [f"EXPOSE {JUPYTER_PORT}", f'LABEL {JUPYTER_PORT_LABEL}="{JUPYTER_PORT}"']
    if spec.data_science:
        lines += _phase(
            3,
            "data science",
            "Arrays, data frames, classic machine learning and plots.",
        )
        lines += _install(DATA_SCIENCE_PACKAGES)
    lines += _phase(
        4,
        "your use case",
        "The packages this project needs. Pin versions (pkg==1.2.3) to rebuild the same image",
        "later.",
    )
    if spec.system_packages:
        lines += ["# System packages (apt):", *_apt(spec.system_packages)]
    if spec.packages:
        lines += ["# Python packages (pip):", *_install(spec.packages)]
    if not spec.packages and not spec.system_packages:
        lines += [
            "# Nothing yet. For example:",
            "# RUN python3 -m pip install --no-cache-dir transformers==4.44.2",
        ]
    lines += [
        "",
        "# Where your files are: ds01 mounts your workspace here.",
        "WORKDIR /workspace",
        f'LABEL org.opencontainers.image.title="{spec.name}"',
    ]
    if spec.jupyter:
        lines += [
            "",
            "# The container's command: JupyterLab on all interfaces of the container (ds01",
            "# publishes the port on this machine's 127.0.0.1 only). For a plain shell instead:",
            '# CMD ["/bin/bash"]',
            f'CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port={JUPYTER_PORT}", "--no-browser"]',
        ]
    return "\n".join(lines) + "\n"


__all__ = [
    "DATA_SCIENCE_PACKAGES",
    "FRAMEWORKS",
    "JUPYTER_PACKAGES",
    "DockerfileSpec",
    "Framework",
    "FrameworkInfo",
    "framework_fits",
    "render_dockerfile",
    "validate_apt_package",
    "validate_pip_requirement",
]
