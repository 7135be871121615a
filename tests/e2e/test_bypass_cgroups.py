"""End to end: two users whose names differ only in what a slice name cannot hold.

ds01 puts each user's containers under a cgroup parent of their own and writes their totals
(``aggregate:``) on it. Names such as ``lab.x`` and ``lab-x`` were once sanitised to the
same parent, so one user's total applied to the other's containers too: a user could be
OOM-killed within their own limit because of someone else's containers. Each pair below
are real Unix users, each creating a container through the CLI; the kernel's files must
show two parents, each with its own user's total.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import TEST_IMAGES_YAML, describe, ensure_user, remove_user

CGROUP_ROOT = Path("/sys/fs/cgroup")
PAIRS = [("lab.x", "lab-x"), ("lab_y", "lab.y"), ("Labz", "labz")]


def limits_for(first: str, second: str) -> str:
    return f"""
        defaults:
          memory_limit: 1G
          max_containers: 2
        aggregate:
          users:
            "{first}": {{memory_limit: 300M}}
            "{second}": {{memory_limit: 500M}}
    """


def memory_limit_of(parent: str) -> int:
    unified = (CGROUP_ROOT / "cgroup.controllers").is_file()
    hierarchy = CGROUP_ROOT if unified else CGROUP_ROOT / "memory"
    directory = hierarchy / parent.lstrip("/")
    name = "memory.max" if unified else "memory.limit_in_bytes"
    return int((directory / name).read_text())


@pytest.fixture(params=PAIRS, ids=lambda pair: "/".join(pair))
def look_alike_users(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    pair: tuple[str, str] = request.param
    created = [name for name in pair if ensure_user(name)]
    try:
        yield pair
    finally:
        for name in created:
            remove_user(name)


def test_look_alike_users_get_parents_and_totals_of_their_own(
    ds01d: Any, docker_client: Any, look_alike_users: tuple[str, str]
) -> None:
    first, second = look_alike_users
    d = ds01d(resource_limits=limits_for(first, second), images=TEST_IMAGES_YAML)
    parents = {}
    for user in (first, second):
        created = d.cli(user, "container-create", "box", "--image", "busybox", "--memory", "100M")
        assert created.returncode == 0, describe(created)
        mine = {"label": f"ds01.user={user}"}
        (container,) = docker_client.containers.list(all=True, filters=mine)
        parents[user] = container.attrs["HostConfig"]["CgroupParent"]

    assert parents[first] != parents[second], parents
    assert memory_limit_of(parents[first]) == 300 * 1024**2
    assert memory_limit_of(parents[second]) == 500 * 1024**2
