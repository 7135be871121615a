"""Host directories a request names (``--workspace``, ``--archive``): one check that the
path is absolute and an existing directory, then each command's own rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ds01.daemon.admin import _archive_directory
from ds01.daemon.launch import existing_directory
from ds01.errors import InvalidInput


def test_an_existing_directory_is_resolved_with_its_stat(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    real, st = existing_directory(str(tmp_path / "link"), "--workspace")
    assert real == (tmp_path / "real").resolve()
    assert st.st_ino == os.stat(tmp_path / "real").st_ino


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("relative", "--workspace must be an absolute path, got 'relative'."),
        ("{tmp}/missing", "--workspace '{tmp}/missing' does not exist."),
        ("{tmp}/file", "--workspace '{tmp}/file' is not a directory."),
        ("{tmp}/loop", "--workspace '{tmp}/loop' cannot be used: "),
        ("a\0b", "--workspace is not a usable path."),
    ],
)
def test_what_is_not_an_existing_directory_is_refused_in_words(
    tmp_path: Path, name: str, message: str
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(InvalidInput) as caught:
        existing_directory(name.format(tmp=tmp_path), "--workspace")
    assert caught.value.message.startswith(message.format(tmp=tmp_path))


def test_an_archive_directory_passes_the_same_check_then_its_own(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "keep").mkdir(parents=True)
    (tmp_path / "file").write_text("x")
    os.chmod(tmp_path, 0o755)
    if os.geteuid() == 0:
        checked = _archive_directory(str(tmp_path), None)
        assert checked.path == tmp_path.resolve()
        assert os.fstat(checked.fd).st_ino == tmp_path.stat().st_ino  # held open from the check
        checked.close()
    else:  # the directory is the test runner's, not root's
        with pytest.raises(InvalidInput, match="owned by root"):
            _archive_directory(str(tmp_path), None)
    with pytest.raises(InvalidInput, match="is not a directory"):
        _archive_directory(str(tmp_path / "file"), None)
    with pytest.raises(InvalidInput, match="inside the user's home"):
        _archive_directory(str(home / "keep"), home)
    os.chmod(tmp_path, 0o777)
    with pytest.raises(InvalidInput, match="owned by root that no one else can write"):
        _archive_directory(str(tmp_path), None)
