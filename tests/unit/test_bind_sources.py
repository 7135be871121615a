"""Host directories no container may bind (``ds01.core.bind_sources``): Docker's data root
and the kernel's file systems, what is inside them, and what holds them."""

from __future__ import annotations

import pytest

from ds01.core.bind_sources import DEFAULT_DOCKER_ROOT, forbidden_root


@pytest.mark.parametrize(
    ("source", "docker_root", "refused_for"),
    [
        ("/var/lib/docker/overlay2/abc/diff/opt/conda", "", DEFAULT_DOCKER_ROOT),
        ("/var/lib/docker", "/var/lib/docker", "/var/lib/docker"),
        ("/srv/docker/volumes/v/_data", "/srv/docker", "/srv/docker"),
        ("/var/lib", "", DEFAULT_DOCKER_ROOT),  # holds the data root
        ("/", "/srv/docker", "/srv/docker"),
        ("/proc/1234", "", "/proc"),
        ("/sys/fs/cgroup", "", "/sys"),
        ("/dev/shm/alice", "", "/dev"),
        ("/home/alice/docker", "/home/alice/docker/root", "/home/alice/docker/root"),
    ],
)
def test_a_source_at_in_or_above_a_system_root_is_refused_for_it(
    source: str, docker_root: str, refused_for: str
) -> None:
    assert forbidden_root(source, docker_root) == refused_for


@pytest.mark.parametrize(
    "source",
    ["/home/alice/workspace", "/var/lib/docker-other", "/srv/data/proc", "/devices", "/tmp/x"],
)
def test_a_source_clear_of_every_system_root_is_not_refused(source: str) -> None:
    assert forbidden_root(source, DEFAULT_DOCKER_ROOT) is None
