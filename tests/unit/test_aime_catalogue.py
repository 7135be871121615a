"""AIME's ``ml_images.repo`` as registry entries: the format exactly as AIME ships it
(the sample in ``examples/aime/``), errors with file and line, and ``images.yaml``'s
``import_aime``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ds01.config.aime import AimeFormatError, entry_name, parse_ml_images_repo
from ds01.config.loader import load_config, load_file, parse_config
from ds01.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "aime" / "ml_images.repo"
SAMPLE_ROWS = 117  # AIME MLC v2.2.0: Pytorch 76, Tensorflow 35, Mxnet 5, ROCM 1


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# --- the format ---------------------------------------------------------------------------


def test_the_sample_parses_row_by_row() -> None:
    rows = parse_ml_images_repo(SAMPLE.read_text(encoding="utf-8"))

    assert len(rows) == SAMPLE_ROWS
    first = rows[0]
    assert (first.line, first.framework, first.version) == (1, "Pytorch", "2.9.1")
    assert first.architectures == ("CUDA_BLACKWELL",)
    assert first.image == "aimehub/pytorch-2.9.1-cuda12.8.1"
    frameworks = [r.framework for r in rows]
    assert {f: frameworks.count(f) for f in set(frameworks)} == {
        "Pytorch": 76,
        "Tensorflow": 35,
        "Mxnet": 5,
        "ROCM": 1,
    }
    assert rows[-1].line == SAMPLE_ROWS  # the last line has no newline


def test_several_architectures_free_text_versions_and_a_tagged_image() -> None:
    rows = parse_ml_images_repo(SAMPLE.read_text(encoding="utf-8"))
    by_image = {r.image: r for r in rows}

    both = by_image["aimehub/pytorch-2.1.0-aime-cuda11.8"]
    assert both.architectures == ("CUDA_ADA", "CUDA_AMPERE")
    assert both.version == "2.1.0-aime"
    assert by_image["aimehub/pytorch-1.14.0a-nvidia-cuda12.0"].version == "1.14.0a-nvidia"
    rocm = by_image["rocm/dev-ubuntu-20.04:5.4.2-complete"]
    assert (rocm.framework_title, rocm.architectures) == ("ROCm", ("ROCM5",))
    assert "ROCm 5.4.2 for ROCM5" in rocm.description


def test_spaces_blank_lines_comments_and_a_bare_architecture() -> None:
    text = "\n# lab additions\n  Pytorch ,2.0.0,CUDA ,  aimehub/pytorch-2.0.0-cuda11.8  \n\n"

    (row,) = parse_ml_images_repo(text)

    assert (row.line, row.framework, row.version) == (3, "Pytorch", "2.0.0")
    assert row.architectures == ("CUDA",)
    assert row.image == "aimehub/pytorch-2.0.0-cuda11.8"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("Pytorch, 2.8.0, [CUDA_ADA]", "expected 4 comma-separated fields"),
        ("Pytorch, 2.8.0, [CUDA_ADA], aimehub/x, extra", "got 5"),
        ("Pytorch, , [CUDA_ADA], aimehub/x", "the version field is empty"),
        ("Pytorch, 2.8.0, [CUDA_ADA], Aimehub/Upper", "invalid image reference"),
        ("Pytorch, 2.8.0, [CUDA ADA], aimehub/x", "invalid architecture"),
        ("Pytorch, 2.8.0, [CUDA_ADA, aimehub/x", "unbalanced brackets"),
    ],
)
def test_a_bad_row_is_reported_with_its_line(line: str, problem: str) -> None:
    text = f"Pytorch, 2.8.0, [CUDA_ADA], aimehub/good\n{line}\n"

    with pytest.raises(AimeFormatError) as caught:
        parse_ml_images_repo(text)

    assert [number for number, _ in caught.value.problems] == [2]
    assert problem in caught.value.problems[0][1]


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("aimehub/pytorch-2.8.0-cuda12.6.3", "pytorch-2.8.0-cuda12.6.3"),
        ("rocm/dev-ubuntu-20.04:5.4.2-complete", "dev-ubuntu-20.04-5.4.2-complete"),
        ("registry.example.org:5000/lab/tf_tool:V1", "tf_tool-v1"),
    ],
)
def test_entry_names_come_from_the_image(image: str, name: str) -> None:
    assert entry_name(image) == name


# --- images.yaml: import_aime --------------------------------------------------------------


def test_images_yaml_imports_the_catalogue_next_to_its_own_entries(tmp_path: Path) -> None:
    (tmp_path / "ml_images.repo").write_bytes(SAMPLE.read_bytes())
    write(
        tmp_path,
        "images.yaml",
        """
        images:
          - name: pytorch
            image: aimehub/pytorch-2.8.0-cuda12.6.3
            framework: PyTorch
            description: The lab's PyTorch
        import_aime: ml_images.repo
        """,
    )

    registry = load_config(tmp_path).images

    # The sample's row with the same image as the lab's own entry is left out.
    assert len(registry.entries) == 1 + SAMPLE_ROWS - 1
    assert registry.find("pytorch") is registry.images[0]
    assert registry.source_of(registry.images[0]) == "images.yaml"
    imported = registry.find("pytorch-2.7.1-cuda12.8.0")
    assert imported is not None
    assert imported.image == "aimehub/pytorch-2.7.1-cuda12.8.0"
    assert (imported.framework, imported.version) == ("PyTorch", "2.7.1")
    assert imported.architectures == ("CUDA_BLACKWELL",)
    assert registry.source_of(imported) == f"aime:{tmp_path / 'ml_images.repo'}:7"
    # Imported entries are registry entries for the image policy too.
    assert registry.allows_reference("aimehub/mxnet-1.3.1-cuda")
    assert registry.allows_reference("aimehub/mxnet-1.3.1-cuda:latest")
    assert registry.registry_image("rocm/dev-ubuntu-20.04:5.4.2-complete")
    assert not registry.allows_reference("aimehub/not-in-the-catalogue")


def test_a_list_of_catalogues_and_clashing_names_get_a_suffix(tmp_path: Path) -> None:
    write(tmp_path, "a.repo", "Pytorch, 1.0, [CUDA], lab/tool\n")
    write(tmp_path, "b.repo", "Pytorch, 2.0, [CUDA], other/tool\nPytorch, 1.0, [CUDA], lab/tool\n")
    path = write(tmp_path, "images.yaml", f"import_aime: [a.repo, {tmp_path / 'b.repo'}]\n")

    registry = load_file(path, "images")

    assert [(e.name, e.image) for e in registry.entries] == [
        ("tool", "lab/tool"),
        ("tool-2", "other/tool"),
    ]


def test_a_missing_catalogue_is_reported_on_the_line_that_names_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "images.yaml",
        """
        images: []
        import_aime:
          - here.repo
          - nowhere.repo
        """,
    )
    write(tmp_path, "here.repo", "Pytorch, 1.0, [CUDA], lab/tool\n")

    with pytest.raises(ConfigError) as caught:
        load_file(path, "images")

    assert caught.value.message == (
        f"{path}:4: import_aime: {tmp_path / 'nowhere.repo'}: file not found"
    )


def test_a_bad_catalogue_row_names_the_catalogue_and_its_line(tmp_path: Path) -> None:
    repo = write(tmp_path, "ml_images.repo", "Pytorch, 1.0, [CUDA], lab/tool\nbroken\n")

    with pytest.raises(ConfigError) as caught:
        parse_config("import_aime: ml_images.repo\n", "images", str(tmp_path / "images.yaml"))

    assert caught.value.message.startswith(f"{repo}:2: expected 4 comma-separated fields")


def test_the_daemon_configuration_is_refused_with_a_broken_catalogue(tmp_path: Path) -> None:
    write(tmp_path, "images.yaml", "import_aime: ml_images.repo\n")
    write(tmp_path, "ml_images.repo", "Pytorch, 1.0, [CUDA], Not/A/Reference\n")

    with pytest.raises(ConfigError, match=r"ml_images.repo:1: invalid image reference"):
        load_config(tmp_path)


def test_import_aime_must_name_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="import_aime paths must not be empty"):
        parse_config("import_aime: ['']\n", "images", str(tmp_path / "images.yaml"))


def test_an_allow_pattern_must_not_be_blank(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow patterns must not be empty"):
        parse_config("allow: ['ds01/*', ' ']\n", "images", str(tmp_path / "images.yaml"))
