"""What ``project-init`` writes: a project's directories and files, by project type. Pure.

``plan_project(spec)`` returns a :class:`Scaffold` (the directories and each file's text);
``ds01.cli.project`` writes it. The project types and their use-case packages
(:data:`PROJECT_TYPES`) are phase 4 of the project's Dockerfile, which
``ds01.core.dockerfile`` renders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import cast

from ds01.core.dockerfile import FRAMEWORKS, DockerfileSpec, Framework, render_dockerfile

__all__ = [
    "DIRECTORIES",
    "PROJECT_TYPES",
    "ProjectSpec",
    "ProjectType",
    "Scaffold",
    "module_name",
    "plan_project",
    "use_case_packages",
]


@dataclass(frozen=True)
class ProjectType:
    """A kind of project and the packages of its use case.

    Args:
        title: what it is, for people.
        packages: pip requirements for every framework.
        by_framework: further requirements for one framework (``torchvision`` for PyTorch).
    """

    title: str
    packages: tuple[str, ...]
    by_framework: dict[str, tuple[str, ...]]


#: Project types, with the packages phase 4 of their Dockerfile installs.
PROJECT_TYPES: dict[str, ProjectType] = {
    "ml": ProjectType(
        "classical machine learning",
        ("xgboost", "lightgbm", "catboost", "optuna", "shap"),
        {},
    ),
    "cv": ProjectType(
        "computer vision",
        ("opencv-python-headless", "albumentations", "scikit-image"),
        {"pytorch": ("torchvision", "timm", "kornia"), "tensorflow": ("keras-cv",)},
    ),
    "nlp": ProjectType(
        "natural language processing",
        ("transformers", "datasets", "tokenizers", "sentencepiece", "evaluate"),
        {"pytorch": ("accelerate", "peft"), "tensorflow": ("keras-hub",)},
    ),
    "rl": ProjectType(
        "reinforcement learning",
        ("gymnasium",),
        {"pytorch": ("stable-baselines3",), "tensorflow": ("tf-agents",)},
    ),
    "audio": ProjectType(
        "audio and speech",
        ("librosa", "soundfile", "audiomentations"),
        {"pytorch": ("torchaudio",)},
    ),
    "ts": ProjectType(
        "time series",
        ("statsmodels", "sktime", "prophet"),
        {},
    ),
    "llm": ProjectType(
        "large language models",
        ("transformers", "datasets", "tokenizers", "safetensors", "einops"),
        {"pytorch": ("accelerate", "peft", "bitsandbytes")},
    ),
    "custom": ProjectType("anything else (no use-case packages)", (), {}),
}

#: The directories of every project.
DIRECTORIES: tuple[str, ...] = (
    "configs",
    "data/external",
    "data/processed",
    "data/raw",
    "models/checkpoints",
    "notebooks",
    "outputs/figures",
    "outputs/logs",
    "scripts",
    "tests",
)

#: Keeps data, model files, outputs and caches out of git: they are large, or can be rebuilt.
GITIGNORE = """\
# Data and results: large, and rebuilt from code. Keep them in /workspace, not in git.
data/
outputs/
models/checkpoints/
*.pt
*.pth
*.ckpt
*.h5
*.onnx
*.safetensors

# Python
__pycache__/
*.py[cod]
*.egg-info/
.venv/
build/
dist/

# Tools
.ipynb_checkpoints/
.pytest_cache/
.mypy_cache/
.ruff_cache/
wandb/
mlruns/
.DS_Store

# ds01's notices and keep-alive file, when the project is /workspace itself
.ds01-notice
.keep-alive
"""


@dataclass(frozen=True)
class ProjectSpec:
    """A project to create.

    Args:
        name: the project's name (a directory, a Python distribution and an image name).
        project_type: a key of :data:`PROJECT_TYPES`.
        framework: a key of ``ds01.core.dockerfile.FRAMEWORKS``.
        image: the image reference its containers use (``alice/thesis:latest``).
        gpus: the whole GPUs its containers ask for by default (0 = none).
        description: one line about it; ``""`` for none.
    """

    name: str
    project_type: str
    framework: str
    image: str
    gpus: int = 1
    description: str = ""


@dataclass(frozen=True)
class Scaffold:
    """Directories (relative paths, parents first) and files (relative path → text)."""

    directories: tuple[str, ...]
    files: dict[str, str]


def module_name(name: str) -> str:
    """The project's Python package: ``cv-Seg`` → ``cv_seg``."""
    return re.sub(r"\W", "_", name.lower())


def use_case_packages(project_type: str, framework: str) -> tuple[str, ...]:
    """Phase 4 of the Dockerfile: the packages of ``project_type`` with ``framework``."""
    kind = PROJECT_TYPES[project_type]
    return kind.packages + kind.by_framework.get(framework, ())


def plan_project(spec: ProjectSpec) -> Scaffold:
    """Everything ``project-init`` writes for ``spec``. Raises ``ValueError`` for an unknown
    type or framework."""
    if spec.project_type not in PROJECT_TYPES:
        raise ValueError(
            f"unknown project type {spec.project_type!r}: one of {', '.join(PROJECT_TYPES)}"
        )
    if spec.framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {spec.framework!r}: one of {', '.join(FRAMEWORKS)}")
    packages = use_case_packages(spec.project_type, spec.framework)
    module = module_name(spec.name)
    framework = cast("Framework", spec.framework)  # checked above
    dockerfile = render_dockerfile(
        DockerfileSpec(name=spec.name, framework=framework, packages=packages)
    )
    directories = sorted({*DIRECTORIES, "src", f"src/{module}"})
    parents = {str(p) for d in directories for p in _parents(d)}
    return Scaffold(
        directories=tuple(sorted({*directories, *parents})),
        files={
            "README.md": _readme(spec, module),
            "pyproject.toml": _pyproject(spec),
            "requirements.txt": _requirements(spec, packages),
            "Dockerfile": dockerfile,
            ".gitignore": GITIGNORE,
            f"src/{module}/__init__.py": f'"""{spec.description or spec.name}"""\n',
        },
    )


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's."""
    return json.dumps(text, ensure_ascii=False)


def _pyproject(spec: ProjectSpec) -> str:
    return f"""\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = {_toml_string(spec.name)}
version = "0.1.0"
description = {_toml_string(spec.description)}
readme = "README.md"
requires-python = ">=3.10"
# The packages come with the project's image (Dockerfile); requirements.txt lists those of
# its use case, for work outside a container.
dependencies = []

[tool.setuptools.packages.find]
where = ["src"]

# Read by ds01: what kind of project this is, its image, and what its containers ask for.
[tool.ds01]
type = {_toml_string(spec.project_type)}
framework = {_toml_string(spec.framework)}
image = {_toml_string(spec.image)}
gpus = {spec.gpus}
"""


def _requirements(spec: ProjectSpec, packages: tuple[str, ...]) -> str:
    kind = PROJECT_TYPES[spec.project_type]
    header = [
        f"# Packages of this {kind.title} project, one per line (pip syntax; pin versions,",
        "# e.g. timm==1.0.9, to rebuild the same image later). Phase 4 of the Dockerfile",
        "# installs the same list; the framework, JupyterLab and the data-science packages come",
        "# from phases 1 to 3.",
    ]
    return "\n".join([*header, *packages]) + "\n"


def _readme(spec: ProjectSpec, module: str) -> str:
    kind = PROJECT_TYPES[spec.project_type]
    framework = FRAMEWORKS[spec.framework].title
    gpu_flag = f" --gpus {spec.gpus}" if spec.gpus else ""
    about = f"{spec.description}\n\n" if spec.description else ""
    return f"""\
# {spec.name}

{about}A {kind.title} project (type `{spec.project_type}`) with {framework}, created by
`project-init`.

## Layout

```
configs/             experiment configurations
data/raw/            data as it came (not in git)
data/processed/      data ready for training (not in git)
data/external/       data from third parties (not in git)
models/checkpoints/  saved models (not in git)
notebooks/           Jupyter notebooks
outputs/             logs and figures (not in git)
scripts/             training and evaluation scripts
{f"src/{module}/":<20} the project's Python package
tests/               tests
Dockerfile           the project's image, in four phases
requirements.txt     the packages of its use case
pyproject.toml       the package, and [tool.ds01]: type, framework, image, GPUs
```

## Working on ds01

The project's image is `{spec.image}`, built from `Dockerfile` (its header says how).
One command builds it (the first time, or with `--rebuild`) and starts a container with
this directory at `/workspace` and a terminal in it; `container-list` shows JupyterLab's
URL:

```
project-launch .      # from this directory
```

By hand: `image-build {spec.name} --context .`, then
`container-deploy {spec.name} --image {spec.image}{gpu_flag} --workspace .`.

Keep the project under `~/workspace`, which every container sees as `/workspace`. Data,
checkpoints and outputs stay out of git (`.gitignore`); code, configs and notebooks go in.
"""
