"""``project-init``: the command writes the scaffold, never overwrites without ``--force``,
runs ``git init`` when it can, and its ``--guided`` mode works through a pty."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pexpect
import pytest

from conftest import skip_or_fail
from ds01.cli.main import main

#: The console script of the Python running the tests (``pip install -e .`` or make setup).
PROJECT_INIT = Path(sys.executable).parent / "project-init"


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["project", "init", *argv])
        raise SystemExit(0)
    return int(exit_info.value.code or 0)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` but git's, with its text."""
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_creates_the_project_in_dot_name(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["thesis", "--type", "nlp", "--no-git", "--description", "Chatbots."]) == 0
    project = workdir / "thesis"
    files = tree(project)
    assert {"README.md", "pyproject.toml", "requirements.txt", "Dockerfile", ".gitignore"} <= set(
        files
    )
    assert (project / "data" / "raw").is_dir() and (project / "notebooks").is_dir()
    assert 'type = "nlp"' in files["pyproject.toml"]
    assert "transformers" in files["Dockerfile"]
    out = capsys.readouterr().out
    assert "Created project thesis" in out and "skipped (--no-git)" in out
    assert not (project / ".git").exists()


def test_dir_puts_it_elsewhere_and_an_existing_directory_is_fine(workdir: Path) -> None:
    target = workdir / "somewhere" / "else"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine\n")
    assert run(["cv-seg", "--dir", str(target), "--no-git"]) == 0
    assert (target / "Dockerfile").is_file()
    assert (target / "src" / "cv_seg" / "__init__.py").is_file()
    assert (target / "notes.txt").read_text() == "mine\n"
    assert not (workdir / "cv-seg").exists()


def test_refuses_to_overwrite_and_writes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = workdir / "thesis"
    project.mkdir()
    (project / "README.md").write_text("my own readme\n")
    assert run(["thesis", "--no-git"]) == 1
    assert "README.md" in capsys.readouterr().err
    assert tree(project) == {"README.md": "my own readme\n"}
    assert [p.name for p in project.iterdir()] == ["README.md"]


def test_force_overwrites(workdir: Path) -> None:
    project = workdir / "thesis"
    project.mkdir()
    (project / "README.md").write_text("my own readme\n")
    assert run(["thesis", "--no-git", "--force"]) == 0
    assert (project / "README.md").read_text().startswith("# thesis")


def test_a_file_in_the_way(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "thesis").write_text("")
    assert run(["thesis"]) == 1
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["a/b", "1st", "-x", "x" * 64])
def test_bad_names(workdir: Path, name: str) -> None:
    assert run(["--no-git", "--", name]) == 2
    assert list(workdir.iterdir()) == []


def test_bad_type_is_a_usage_error(workdir: Path) -> None:
    assert run(["thesis", "--type", "quantum"]) == 2


def test_git_init(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("git") is None:
        skip_or_fail("git is not installed: `make images` installs it")
    assert run(["thesis"]) == 0
    assert (workdir / "thesis" / ".git" / "HEAD").is_file()
    assert "initialised an empty repository" in capsys.readouterr().out
    # A second run into the same directory (with --force) leaves the repository alone.
    assert run(["thesis", "--force"]) == 0
    assert "already a repository" in capsys.readouterr().out


def test_without_git_it_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(workdir / "no-bin"))
    assert run(["thesis"]) == 0
    assert "not installed here" in capsys.readouterr().out
    assert (workdir / "thesis" / "Dockerfile").is_file()


# -- --guided through a pty -------------------------------------------------------------------


def spawn_guided(cwd: Path) -> pexpect.spawn:
    if not PROJECT_INIT.exists():
        pytest.fail(f"{PROJECT_INIT} is missing: `pip install -e .` (or make setup)")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    child = pexpect.spawn(
        str(PROJECT_INIT), ["--guided"], cwd=str(cwd), env=env, encoding="utf-8", timeout=20
    )
    child.setwinsize(40, 100)
    return child


def answer_all(child: pexpect.spawn, name: str) -> None:
    """Give ``name`` and accept or choose the rest, up to the summary."""
    child.expect_exact("Kind of project")
    child.sendline("rl")
    child.expect_exact("Deep learning framework")
    child.sendline("")
    child.expect_exact("GPUs its containers ask for by default [1]: ")
    child.sendline("2")
    child.expect_exact("One line about it")
    child.sendline("")
    child.expect_exact("Directory to create it in")
    child.sendline("")
    child.expect_exact("Skip `git init`? [y/N]: ")
    child.sendline("y")
    child.expect_exact("The command:")
    child.expect_exact(f"project-init {name} --type rl --gpus 2 --no-git\r\n")
    child.expect_exact("Proceed? [y/N]: ")


def test_guided_through_a_pty_asks_again_and_n_writes_nothing(tmp_path: Path) -> None:
    child = spawn_guided(tmp_path)
    child.expect_exact("Project name (e.g. thesis): ")
    child.sendline("a/b")
    child.expect_exact("Invalid project name 'a/b'")
    child.expect_exact("Project name (e.g. thesis): ")
    child.sendline("gym")
    answer_all(child, "gym")
    child.sendline("n")
    child.expect_exact("Nothing done")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert list(tmp_path.iterdir()) == []


def test_guided_through_a_pty_yes_creates_it(tmp_path: Path) -> None:
    child = spawn_guided(tmp_path)
    child.expect_exact("Project name (e.g. thesis): ")
    child.sendline("gym")
    answer_all(child, "gym")
    child.sendline("y")
    child.expect_exact("Created project gym")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "gpus = 2" in (tmp_path / "gym" / "pyproject.toml").read_text()
    assert not (tmp_path / "gym" / ".git").exists()
