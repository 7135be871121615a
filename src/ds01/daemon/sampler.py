"""One observation of each running container for the lifecycle loop (``core.lifecycle.Sample``).

Everything comes from counters the kernel and the GPU backend keep, never from ``docker
stats`` or one Docker call per container: CPU time from the container's cgroup, network
bytes from ``/proc`` of its processes, GPU utilisation, memory and processes of its devices
from one backend call for all devices, and the keep-alive file's modification time from its
workspace on the host. Docker is asked only for the start time of a run it has not seen yet
(one ``inspect`` per container start).

Interactive sessions are counted only from what a user cannot fake: the ``container-open``
terminals ds01d itself relays to a connected client (``daemon.terminal``). Nothing inside
the container counts as a session: any process there may take any name (``sshd:
alice@pts/0``), and an exec whose client went away is no one at a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from ds01.core.lifecycle import Sample
from ds01.errors import Ds01Error
from ds01.gpu.backend import DeviceTelemetry, GpuBackend, device_telemetry
from ds01.model import labels as L
from ds01.runtime import procfs
from ds01.runtime.cgroups import CgroupDriver, CgroupManager, container_cgroup
from ds01.runtime.docker import ContainerRecord, DockerRuntime
from ds01.runtime.userfs import stat_in

#: The keep-alive file in a container's workspace (``/workspace/.keep-alive`` inside).
KEEP_ALIVE_FILE = ".keep-alive"


def workspace_of(record: ContainerRecord) -> Path | None:
    """The host directory mounted at ``/workspace`` (from the AIME work-mount label)."""
    path = record.labels.get(L.AIME_WORK_MOUNT, "")
    return Path(path) if path.startswith("/") else None


def keep_alive_at(record: ContainerRecord) -> datetime | None:
    """When the container's keep-alive file was last touched (``None``: no such file).

    Only a regular file of the owner's, in a workspace of theirs reached without following
    any symlink, counts: a link into another directory keeps nothing alive.
    """
    workspace = workspace_of(record)
    if workspace is None:
        return None
    st = stat_in(workspace, KEEP_ALIVE_FILE, record.uid)
    if st is None:
        return None
    return datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)


def gpu_figures(
    devices: Sequence[str], telemetry: dict[str, DeviceTelemetry]
) -> tuple[float | None, int | None, int | None]:
    """(utilisation %, memory used MiB, processes) over a container's devices: the busiest
    device's utilisation, the sums of the others; ``None`` where no device reports it."""
    known = [telemetry[u] for u in devices if u in telemetry]
    utilizations = [t.gpu_util_percent for t in known if t.gpu_util_percent is not None]
    memories = [t.memory_used_mib for t in known if t.memory_used_mib is not None]
    processes = [t.process_count for t in known if t.process_count is not None]
    return (
        max(utilizations) if utilizations else None,
        sum(memories) if memories else None,
        sum(processes) if processes else None,
    )


class Sampler:
    """Takes a ``Sample`` of running containers (see the module docstring).

    Args:
        runtime: Docker, asked only for the start time of new runs.
        cgroups: CPU time and processes of each container's cgroup.
        driver: Docker's cgroup driver (where a container's cgroup is).
        sessions: the number of terminals ds01d relays to a connected client, by Docker
            name of the container (``daemon.terminal.Terminals.attached``).
    """

    def __init__(
        self,
        runtime: DockerRuntime,
        cgroups: CgroupManager,
        driver: CgroupDriver,
        sessions: Callable[[str], int],
    ) -> None:
        self.runtime = runtime
        self.cgroups = cgroups
        self.driver = driver
        self.sessions = sessions
        self._started: dict[tuple[str, int], datetime] = {}  # (id, cgroup inode) -> StartedAt

    def cgroup_of(self, record: ContainerRecord, parent: str) -> str | None:
        try:
            return container_cgroup(parent, record.id, self.driver)
        except ValueError:
            return None

    def started_at(self, record: ContainerRecord, cgroup: str) -> datetime | None:
        """When the container's current run started (Docker's ``StartedAt``), cached per run."""
        generation = self.cgroups.generation(cgroup)
        if generation is None:
            return None
        key = (record.id, generation)
        if key not in self._started:
            try:
                moment = self.runtime.started_at(record.docker_name)
            except Ds01Error:
                return None
            if moment is None:
                return None
            self._started = {k: v for k, v in self._started.items() if k[0] != record.id}
            self._started[key] = moment
        return self._started[key]

    def sample(
        self,
        record: ContainerRecord,
        parent: str,
        telemetry: dict[str, DeviceTelemetry],
        clock: Callable[[], datetime],
    ) -> Sample | None:
        """A sample of a running container; ``None`` if its cgroup is gone (it just ended).

        Its time is ``clock()`` read after every reading, so that a keep-alive file touched
        while the sample was taken is never later than the sample (a touch in the future is
        ignored: ``ds01.core.lifecycle``), however long the pass has taken so far.
        """
        cgroup = self.cgroup_of(record, parent)
        if cgroup is None:
            return None
        cpu = self.cgroups.cpu_seconds(cgroup)
        if cpu is None:
            return None
        pids = self.cgroups.processes(cgroup)
        utilization, memory, processes = gpu_figures(record.gpus, telemetry)
        network_bytes = procfs.network_bytes(pids)
        sessions = self.sessions(record.docker_name)
        touched = keep_alive_at(record)
        return Sample(
            at=clock(),
            cpu_seconds=cpu,
            network_bytes=network_bytes,
            gpu_utilization_percent=utilization,
            gpu_memory_used_mib=memory,
            gpu_processes=processes,
            sessions=sessions,
            keep_alive_at=touched,
        )

    @staticmethod
    def telemetry(
        backend: GpuBackend, records: Sequence[ContainerRecord]
    ) -> dict[str, DeviceTelemetry]:
        """Telemetry of every device the running ``records`` hold, in one backend call."""
        return device_telemetry(
            backend, {u for r in records if r.status == "running" for u in r.gpus}
        )


__all__ = [
    "KEEP_ALIVE_FILE",
    "Sampler",
    "gpu_figures",
    "keep_alive_at",
    "workspace_of",
]
