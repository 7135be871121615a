"""Host directories no container may bind, whoever owns what is inside them.

A user may mount only a directory she owns and can reach herself (``ds01.daemon.launch``).
Some places hold directories a user's uid owns that are still not hers to hand a container:
Docker's data root (an image layer's files belong to the uid the image gave them, so a
writable bind of ``<data-root>/overlay2/<layer>/diff/...`` would change that image for
everyone who runs it), and the kernel's ``/proc``, ``/sys`` and ``/dev`` (``/proc/<pid>``
of the user's own process is hers; ``/dev/shm`` is everyone's). A bind source at or under
one of them, or above one (``/``), is refused. Pure: paths in, an answer out.
"""

from __future__ import annotations

from pathlib import PurePosixPath

#: Where Docker keeps images, containers and volumes when ``docker info`` names no
#: ``DockerRootDir``.
DEFAULT_DOCKER_ROOT = "/var/lib/docker"
#: The kernel's file systems: what is in them is no user's directory to mount.
KERNEL_ROOTS = ("/proc", "/sys", "/dev")


def forbidden_root(source: str, docker_root: str) -> str | None:
    """The directory of Docker's or the kernel's that the absolute, resolved ``source``
    is at, inside, or above; ``None`` when it is clear of all of them.

    ``docker_root``: Docker's data root (``DockerRootDir``); empty means
    ``DEFAULT_DOCKER_ROOT``.
    """
    path = PurePosixPath(source)
    for root in (docker_root or DEFAULT_DOCKER_ROOT, *KERNEL_ROOTS):
        system = PurePosixPath(root)
        if path == system or system in path.parents or path in system.parents:
            return root
    return None


__all__ = ["DEFAULT_DOCKER_ROOT", "KERNEL_ROOTS", "forbidden_root"]
