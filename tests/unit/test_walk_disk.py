"""``runtime.diskusage.tree_usage`` on a real filesystem: what a container's user can plant in
its writable layer neither inflates nor hides its disk use."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.runtime.diskusage import MAX_OPEN_DIRECTORIES, tree_usage

MIB = 1024**2


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


def allocated(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def test_counts_what_is_allocated_in_files_and_directories(tmp_path: Path) -> None:
    write(tmp_path / "a" / "b" / "big", 3 * MIB)
    write(tmp_path / "small", 100)
    usage = tree_usage([str(tmp_path)])
    assert usage.complete
    assert usage.inodes == 5  # tmp_path, a, a/b, big, small
    assert 3 * MIB <= usage.bytes <= 3 * MIB + 64 * 1024


def test_hard_links_count_once_wherever_they_are(tmp_path: Path) -> None:
    write(tmp_path / "data", 2 * MIB)
    alone = tree_usage([str(tmp_path)]).bytes
    (tmp_path / "sub").mkdir()
    for i in range(50):
        os.link(tmp_path / "data", tmp_path / "sub" / f"link{i}")
    usage = tree_usage([str(tmp_path)])
    assert usage.bytes == alone + allocated(tmp_path / "sub")
    # A link left after the original name is removed still holds the data.
    os.unlink(tmp_path / "data")
    assert tree_usage([str(tmp_path)]).bytes == usage.bytes


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    write(tmp_path / "tree" / "f", MIB)
    before = tree_usage([str(tmp_path / "tree")])
    (tmp_path / "tree" / "root").symlink_to("/")
    (tmp_path / "tree" / "usr").symlink_to("/usr/")
    (tmp_path / "tree" / "loop").symlink_to(".")
    after = tree_usage([str(tmp_path / "tree")])
    assert after.inodes == before.inodes + 3
    assert after.bytes - before.bytes <= 3 * 4096  # the links themselves, nothing behind them
    # A root that is itself a symlink is not followed either.
    (tmp_path / "alias").symlink_to(tmp_path / "tree")
    assert tree_usage([str(tmp_path / "alias")]).bytes == 0


def test_sparse_files_count_what_they_hold_not_their_length(tmp_path: Path) -> None:
    with (tmp_path / "sparse").open("wb") as f:
        f.seek(50 * 1024**3)
        f.write(b"x")
    assert tree_usage([str(tmp_path)]).bytes < MIB


def test_deep_nesting_is_walked_to_the_end(tmp_path: Path) -> None:
    depth = 4 * MAX_OPEN_DIRECTORIES + 3
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(depth):  # relative steps: the path gets longer than PATH_MAX allows
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        data = os.open("deep", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(data, os.urandom(2 * MIB))
        os.fsync(data)
        os.close(data)
    finally:
        os.close(fd)
    usage = tree_usage([str(tmp_path)])
    assert usage.complete
    assert usage.inodes == depth + 2
    assert usage.bytes >= 2 * MIB


def test_several_roots_share_the_inodes_seen_and_a_missing_root_counts_nothing(
    tmp_path: Path,
) -> None:
    write(tmp_path / "layer" / "f", MIB)
    (tmp_path / "volume").mkdir()
    os.link(tmp_path / "layer" / "f", tmp_path / "volume" / "f")
    one = tree_usage([str(tmp_path / "layer")]).bytes
    both = tree_usage([str(tmp_path / "layer"), str(tmp_path / "volume"), "/no/such/dir"])
    assert both.bytes == one + allocated(tmp_path / "volume")


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 70_000), st.integers(0, 3)),
        min_size=1,
        max_size=12,
    )
)
def test_the_total_is_the_sum_over_distinct_inodes(
    tmp_path_factory: object, files: list[tuple[int, int, int]]
) -> None:
    """Random trees with random hard links: the walk counts every distinct inode once."""
    root = Path(tmp_path_factory.mktemp("tree"))  # type: ignore[attr-defined]
    expected: dict[tuple[int, int], int] = {}
    for i, (depth, size, links) in enumerate(files):
        path = root.joinpath(*[f"d{j}" for j in range(depth)], f"f{i}")
        write(path, size)
        for k in range(links):
            os.link(path, root / f"l{i}_{k}")
    for directory, _, names in os.walk(root):
        for name in [".", *names]:
            st_ = os.lstat(os.path.join(directory, name))
            expected[(st_.st_dev, st_.st_ino)] = st_.st_blocks * 512
    assert tree_usage([str(root)]).bytes == sum(expected.values())
