"""What ``project-init`` writes: a project's directories and files, by project type. Pure.

``plan_project(spec)`` returns a :class:`Scaffold` (the directories and each file's text);
``ds01.cli.project`` writes it. Phase 1 of the Dockerfile starts from an image of this
site's registry, picked by :func:`choose_base` (the starter, or the first entry of the
framework), never from an image the site may not have. The project types and their use-case packages
(:data:`PROJECT_TYPES`) are phase 4 of the project's Dockerfile, which
``ds01.core.dockerfile`` renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ds01.core.dockerfile import (
    FRAMEWORKS,
    DockerfileSpec,
    Framework,
    framework_fits,
    render_dockerfile,
)

__all__ = [
    "DIRECTORIES",
    "PROJECT_TYPES",
    "BaseImage",
    "ProjectSpec",
    "ProjectType",
    "Scaffold",
    "choose_base",
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
class BaseImage:
    """The image phase 1 starts ``FROM``.

    Args:
        image: its Docker reference.
        name: its registry entry's name; ``None`` for an image outside the registry.
        framework: the entry's framework (free text, ``none`` for none).
        description: the entry's description, or ``""``.
        present: whether it is on the machine; ``None`` when that is not known.
        starter: the registry's starter (serves JupyterLab).
    """

    image: str
    name: str | None = None
    framework: str = "none"
    description: str = ""
    present: bool | None = None
    starter: bool = False

    @property
    def shown(self) -> str:
        return f"{self.name} ({self.image})" if self.name else self.image


def choose_base(
    registry: Sequence[Mapping[str, Any]], framework: str, wanted: str | None = None
) -> BaseImage:
    """Phase 1's image, from this site's registry (``/v1/images`` items: ``name``,
    ``image``, ``framework``, ``description``, optional ``present`` and ``starter``).

    ``wanted`` (the user's ``--image``): the entry of that name or image, else that
    reference as given (ds01d checks it when it builds). Otherwise the entries whose
    framework fits ``framework`` (``ds01.core.dockerfile.framework_fits``), preferring one
    on the machine, then the starter, then the registry's order.

    Raises ``ValueError`` (saying what to do) when no entry fits.
    """
    entries = [_base(item) for item in registry]
    if wanted:
        return next((e for e in entries if wanted in (e.name, e.image)), BaseImage(wanted))
    fitting = [e for e in entries if framework_fits(e.framework, framework)]
    if not fitting:
        names = ", ".join(f"{e.name} ({e.framework})" for e in entries) or "none"
        raise ValueError(
            f"This site's image registry has no {FRAMEWORKS[framework].title} image to start "
            f"from (it has: {names}). Give one with --image NAME (`image-list --catalog`), "
            "or choose another --framework."
        )
    return min(fitting, key=lambda e: (e.present is False, not e.starter))


def _base(item: Mapping[str, Any]) -> BaseImage:
    present = item.get("present")
    return BaseImage(
        image=str(item["image"]),
        name=str(item["name"]),
        framework=str(item.get("framework") or "none"),
        description=str(item.get("description") or ""),
        present=None if present is None else bool(present),
        starter=bool(item.get("starter")),
    )


@dataclass(frozen=True)
class ProjectSpec:
    """A project to create.

    Args:
        name: the project's name (a directory, a Python distribution and an image name).
        project_type: a key of :data:`PROJECT_TYPES`.
        framework: a key of ``ds01.core.dockerfile.FRAMEWORKS``.
        image: the image reference its containers use (``alice/thesis:latest``).
        base: the image phase 1 starts from (:func:`choose_base`).
        gpus: the whole GPUs its containers ask for by default (0 = none).
        description: one line about it; ``""`` for none.
    """

    name: str
    project_type: str
    framework: str
    image: str
    base: BaseImage
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
    base = spec.base
    dockerfile = render_dockerfile(
        DockerfileSpec(
            name=spec.name,
            framework=framework,
            base_image=base.image,
            base_note=f"The registry's {base.name}: {base.description}".rstrip(": ")
            if base.name
            else None,
            # Python itself, on a base that brings no framework (and so maybe no Python).
            python_setup=framework == "python" and base.framework.casefold() in ("none", ""),
            packages=packages,
        )
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
    origin = f" (the registry's {spec.base.name})" if spec.base.name else ""
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
# The image its Dockerfile starts FROM{origin}.
base_image = {_toml_string(spec.base.image)}
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

The project's image is `{spec.image}`, built from `Dockerfile` (its header says how),
which starts from `{spec.base.shown}` of this site's image registry.
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
