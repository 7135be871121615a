"""What the host says about its NVIDIA driver and Docker's way to GPUs, as facts for
``ds01.core.gpu_check``: the ``/dev/nvidia*`` nodes, the driver version in ``/proc``,
``nvidia-container-runtime-hook`` on dockerd's ``PATH`` and CDI specs. Reads only; a
file that cannot be read is a fact ("not there"), never an error.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from ds01.core.gpu_check import (
    CDI_DIRECTORIES,
    GPU_DEVICE_GROUP,
    NVIDIA_HOOK,
    DeviceNode,
    DockerGpuAccess,
)

DEV = Path("/dev")
DOCKER_PID_FILE = Path("/var/run/docker.pid")  # dockerd's default --pidfile
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


def device_group_gid() -> int | None:
    """The gid of ``GPU_DEVICE_GROUP`` (``None``: the group does not exist). Containers given
    GPUs get it as a supplementary group: once ``ds01 admin setup`` made the nodes 0660
    root:ds01-gpu, a container's unprivileged user opens its own nodes through it."""
    try:
        return grp.getgrnam(GPU_DEVICE_GROUP).gr_gid
    except KeyError:
        return None


def group_members(gid: int) -> tuple[str | None, tuple[str, ...]]:
    """A group's name (``None``: no such group) and its users, listed and primary, but root."""
    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return None, ()
    members = set(group.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid}
    members.discard("root")
    return group.gr_name, tuple(sorted(members))


def device_nodes(dev: Path = DEV) -> list[DeviceNode]:
    """Every character device ``dev/nvidia*`` (not the ``nvidia-caps`` directory)."""
    nodes = []
    for path in sorted(dev.glob("nvidia*")):
        try:
            st = path.lstat()
        except OSError:
            continue  # gone while listed
        if not stat.S_ISCHR(st.st_mode):
            continue
        name, members = group_members(st.st_gid)
        nodes.append(
            DeviceNode(str(path), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, name, members)
        )
    return nodes


def dockerd_path(pid_file: Path = DOCKER_PID_FILE, proc: Path = Path("/proc")) -> str | None:
    """dockerd's ``PATH`` (from its environment), or ``None`` when it cannot be read."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
        environ = (proc / str(pid) / "environ").read_bytes()
    except (OSError, ValueError):
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"PATH="):
            return entry[5:].decode(errors="replace")
    return None


def cdi_specs(directories: Iterable[str] = CDI_DIRECTORIES) -> tuple[str, ...]:
    """The CDI spec files (``*.yaml``, ``*.json``) in ``directories``."""
    found: list[str] = []
    for directory in directories:
        try:
            entries = sorted(Path(directory).iterdir())
        except OSError:
            continue
        found += [str(p) for p in entries if p.suffix in (".yaml", ".json") and p.is_file()]
    return tuple(found)


def docker_gpu_access(
    runtimes: Iterable[str],
    pid_file: Path = DOCKER_PID_FILE,
    cdi_directories: Iterable[str] = CDI_DIRECTORIES,
) -> DockerGpuAccess:
    """The hook on dockerd's ``PATH`` (ds01d's own when dockerd's cannot be read), the CDI
    specs, and Docker's ``runtimes`` as given."""
    path = dockerd_path(pid_file) or os.environ.get("PATH", os.defpath)
    return DockerGpuAccess(
        hook=shutil.which(NVIDIA_HOOK, path=path),
        cdi_specs=cdi_specs(cdi_directories),
        runtimes=tuple(sorted(runtimes)),
        path=path,
    )


def kernel_driver_version(version_file: Path = DRIVER_VERSION_FILE) -> str | None:
    """The loaded NVIDIA kernel module's version line, or ``None`` when none is loaded."""
    try:
        first = version_file.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    return " ".join(first.split()) or None


__all__ = [
    "cdi_specs",
    "device_group_gid",
    "device_nodes",
    "docker_gpu_access",
    "dockerd_path",
    "group_members",
    "kernel_driver_version",
]
