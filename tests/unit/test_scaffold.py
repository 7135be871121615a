"""``ds01.core.scaffold``: what ``project-init`` writes, for every project type and framework,
and the project's four-phase Dockerfile."""

from __future__ import annotations

import itertools
import re
import sys

import pytest

from ds01.cli.project import FRAMEWORK_NAMES, PROJECT_TYPE_NAMES
from ds01.core.dockerfile import FRAMEWORKS
from ds01.core.scaffold import (
    DIRECTORIES,
    PROJECT_TYPES,
    BaseImage,
    ProjectSpec,
    choose_base,
    module_name,
    plan_project,
    use_case_packages,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # a dependency of ds01 before Python 3.11

COMBINATIONS = list(itertools.product(PROJECT_TYPES, FRAMEWORKS))


def spec(project_type: str = "cv", framework: str = "pytorch", **kw: object) -> ProjectSpec:
    values: dict[str, object] = {
        "name": "thesis",
        "project_type": project_type,
        "framework": framework,
        "image": "alice/thesis:latest",
        "base": BaseImage("lab/base:1", "lab-base", "none", "The lab's base"),
        "gpus": 1,
        "description": "",
    }
    values.update(kw)
    return ProjectSpec(**values)  # type: ignore[arg-type]


def test_the_cli_knows_every_type_and_framework() -> None:
    """The CLI spells the names out (to keep its start-up light): they must stay equal."""
    assert tuple(PROJECT_TYPES) == PROJECT_TYPE_NAMES
    assert tuple(FRAMEWORKS) == FRAMEWORK_NAMES


@pytest.mark.parametrize(("project_type", "framework"), COMBINATIONS)
def test_every_type_and_framework(project_type: str, framework: str) -> None:
    scaffold = plan_project(spec(project_type, framework))
    assert set(scaffold.files) == {
        "README.md",
        "pyproject.toml",
        "requirements.txt",
        "Dockerfile",
        ".gitignore",
        "src/thesis/__init__.py",
    }
    assert set(DIRECTORIES) <= set(scaffold.directories)
    # Parents come before their children, so they can be made in order.
    for directory in scaffold.directories:
        parent = directory.rpartition("/")[0]
        if parent:
            assert scaffold.directories.index(parent) < scaffold.directories.index(directory)

    meta = tomllib.loads(scaffold.files["pyproject.toml"])
    assert meta["project"]["name"] == "thesis"
    assert meta["tool"]["ds01"] == {
        "type": project_type,
        "framework": framework,
        "image": "alice/thesis:latest",
        "gpus": 1,
        "base_image": "lab/base:1",
    }

    packages = use_case_packages(project_type, framework)
    requirements = [
        line
        for line in scaffold.files["requirements.txt"].splitlines()
        if line and not line.startswith("#")
    ]
    assert requirements == list(packages)

    dockerfile = scaffold.files["Dockerfile"]
    phases = re.findall(r"^# Phase (\d):", dockerfile, re.MULTILINE)
    assert phases == ["1", "2", "3", "4"]
    # The base comes from the registry, never from the framework's built-in default.
    assert "\nFROM lab/base:1\n" in dockerfile
    assert FRAMEWORKS[framework].base_image not in dockerfile
    assert "The registry's lab-base: The lab's base" in dockerfile
    # Python is installed on a base without a framework, for the python framework only.
    assert ("python3 -m venv /opt/venv" in dockerfile) == (framework == "python")
    phase4 = dockerfile.split("# Phase 4:")[1]
    for package in packages:
        assert re.search(rf"^\s+{re.escape(package)}( \\)?$", phase4, re.MULTILINE), package
    assert "jupyterlab" in dockerfile and "pandas" in dockerfile


def test_framework_specific_packages() -> None:
    assert "torchvision" in use_case_packages("cv", "pytorch")
    assert "torchvision" not in use_case_packages("cv", "tensorflow")
    assert "torchaudio" not in use_case_packages("audio", "python")
    assert use_case_packages("custom", "pytorch") == ()


def test_custom_has_an_empty_phase_4() -> None:
    dockerfile = plan_project(spec("custom")).files["Dockerfile"]
    assert "# Phase 4:" in dockerfile
    assert "Nothing yet" in dockerfile.split("# Phase 4:")[1]


def test_description_and_odd_names_stay_valid_toml() -> None:
    scaffold = plan_project(
        spec(name="Cv-Seg_2", description='Segmentation "of" cells \\ päper', gpus=0)
    )
    meta = tomllib.loads(scaffold.files["pyproject.toml"])
    assert meta["project"]["description"] == 'Segmentation "of" cells \\ päper'
    assert meta["tool"]["ds01"]["gpus"] == 0
    assert "src/cv_seg_2/__init__.py" in scaffold.files
    assert "--gpus" not in scaffold.files["README.md"]  # no GPU asked for
    assert module_name("Cv-Seg_2") == "cv_seg_2"


def test_readme_says_how_to_use_it() -> None:
    readme = plan_project(spec("nlp", description="A chatbot.")).files["README.md"]
    assert readme.startswith("# thesis\n\nA chatbot.\n")
    assert "natural language processing" in readme
    assert "project-launch ." in readme
    assert "container-deploy thesis --image alice/thesis:latest --gpus 1 --workspace ." in readme


def test_gitignore_keeps_data_and_models_out() -> None:
    ignored = plan_project(spec()).files[".gitignore"].splitlines()
    for pattern in ("data/", "outputs/", "models/checkpoints/", "*.pt", "__pycache__/"):
        assert pattern in ignored


@pytest.mark.parametrize(("field", "value"), [("project_type", "quantum"), ("framework", "caffe")])
def test_unknown_type_or_framework(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="unknown"):
        plan_project(spec(**{field: value}))


#: A registry as ds01d lists it (``/v1/images?catalog=1``).
REGISTRY = [
    {"name": "tf", "image": "lab/tf:2", "framework": "TensorFlow", "description": "TF",
     "present": True},
    {"name": "torch-old", "image": "lab/torch:1", "framework": "PyTorch", "description": "",
     "present": False},
    {"name": "torch", "image": "lab/torch:2", "framework": "pytorch", "description": "",
     "present": True},
    {"name": "notebook", "image": "lab/nb", "framework": "PyTorch", "description": "",
     "present": True, "starter": True},
    {"name": "python", "image": "lab/python:3", "framework": "none", "description": "",
     "present": True},
]  # fmt: skip


def test_the_base_comes_from_the_registry_the_starter_first_if_it_fits() -> None:
    assert choose_base(REGISTRY, "pytorch").name == "notebook"  # the starter, present
    assert choose_base(REGISTRY, "tensorflow").image == "lab/tf:2"
    assert choose_base(REGISTRY, "python").image == "lab/python:3"
    # One that is here beats the starter that is not, and the registry's order decides last.
    away = [{**e, "present": e["present"] and e["name"] != "notebook"} for e in REGISTRY]
    assert choose_base(away, "pytorch").name == "torch"
    unknown = [{k: v for k, v in e.items() if k != "present"} for e in REGISTRY]
    assert choose_base(unknown, "pytorch").name == "notebook"
    # The user's --image: a registry name or image, or any reference, as given.
    assert choose_base(REGISTRY, "pytorch", "python").image == "lab/python:3"
    assert choose_base(REGISTRY, "pytorch", "lab/torch:1").name == "torch-old"
    assert choose_base(REGISTRY, "pytorch", "alice/mine:v2") == BaseImage("alice/mine:v2")


def test_no_registry_image_of_the_framework_says_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"no TensorFlow image .*--image NAME"):
        choose_base([e for e in REGISTRY if e["name"] != "tf"], "tensorflow")


def test_plan_is_pure_and_deterministic() -> None:
    assert plan_project(spec()) == plan_project(spec())
