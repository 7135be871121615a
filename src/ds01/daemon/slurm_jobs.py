"""Cluster mode (``cluster: slurm``): a container is a Slurm job's ("No container without a
job").

- **A batch job's create** (``request.command``, ``ds01 job run``): the same, its container
  running that command without a terminal (``batch_run``); refused on a single server.
- **A create without a job** is answered with ``SlurmJobRequired`` and the job's ``sbatch``
  options (``job_required``): ``ds01 container-create`` then submits the job as the user,
  and the job's step asks this node's ds01d for the container. ds01d never submits for
  anyone: Slurm learns who submits from munge, not from ds01.
- **A create in a job** (``request.slurm_job``): ``devices_of_job`` reads the job from Slurm as
  root (``scontrol show job -d ID``), never from what the caller sends, and accepts only the
  caller's running job, named after the container, on this node; the container gets exactly
  the devices Slurm gave the job here (GRES indices → UUIDs through ds01's GRES order,
  ``ds01.core.slurm_gres``), labelled with the job and the node (``job_placement``).
- **What ds01d did to a job's container** (``note_on_job``: a stop for one of its rules,
  before ``ContainerOps.stop_by_daemon`` stops it; an OOM kill, when ``OomWatcher`` reports
  it): the job's ``AdminComment`` says so (``ds01.core.slurm_job.job_note``), set as root
  while the job runs, or in slurmdbd's record once it ended (the kill can end the job
  first), so that Slurm's accounting keeps it for the login node's report.
- **The reaper** (``SlurmJobReaper``): every ``--slurm-interval`` seconds, the containers
  labelled with a job of this node whose job Slurm no longer runs here are removed (a job
  cancelled while its step could not stop the container: slurmd or the step killed, ds01d
  down at the time). When Slurm does not answer nothing is removed.

Locks: ``job_placement`` runs under the allocation lock (it reads what is held); the reaper
takes none (removing frees devices, rule 3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ds01.core.allocation import Placement
from ds01.core.docker_create import RunOptions
from ds01.core.slurm_gres import gres_lines
from ds01.core.slurm_job import (
    JobNote,
    check_request_matches,
    gone_jobs,
    job_cgroup,
    job_devices,
    job_note,
    parse_job,
    sbatch_options,
)
from ds01.core.slurm_sync import user_association
from ds01.daemon import schemas as api
from ds01.daemon.context import DaemonContext
from ds01.daemon.identity import Caller
from ds01.daemon.periodic import PeriodicPass
from ds01.daemon.prepared import PreparedCreate
from ds01.daemon.slurm_limits import in_cluster_mode
from ds01.daemon.views import allocation_state
from ds01.errors import Conflict, InvalidInput, SlurmError, SlurmJobRequired
from ds01.model import labels as L
from ds01.model.device import Inventory
from ds01.runtime import slurm
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.procfs import process_cgroup

log = logging.getLogger(__name__)

#: Seconds between two passes of the reaper unless ``ds01d --slurm-interval`` says otherwise.
DEFAULT_INTERVAL_SECONDS = 10.0
#: The refusal of a batch command (``ds01 job run``) on a single server.
BATCH_NEEDS_CLUSTER = (
    "`ds01 job run` works on a Slurm cluster only (cluster: slurm): on a single server, "
    "run the command in a container of yours (container-create, then container-open NAME "
    "-- COMMAND)."
)
#: Why the reaper removed a container (the ``cleanup.orphan`` event's reason).
JOB_GONE_REASON = "its Slurm job is no longer running on this node"


def note_on_job(record: ContainerRecord, note: JobNote, reason: str) -> None:
    """When a Slurm job owns ``record``: write what ds01d does or saw (``note``, ``reason``) in
    the job's ``AdminComment`` (``job_note``), which slurmdbd keeps for the login node's
    report; the last note wins. A container of no job: nothing. Slurm's refusal (not an
    administrator) or silence is logged and never holds back what ds01d does: the report then
    misses one note."""
    job = record.labels.get(L.SLURM_JOB, "")
    if not job.isdigit():
        return
    try:
        slurm.set_admin_comment(int(job), job_note(note, reason))
    except SlurmError as exc:
        log.warning("could not note %s on Slurm job %s: %s", note, job, exc.message)


def batch_run(ctx: DaemonContext, command: list[str]) -> RunOptions:
    """The Docker settings of a batch job's container (``ds01 job run``): ``command``
    instead of the image's, no terminal (its output is the job's).

    Raises:
        InvalidInput: not in cluster mode: on a single server no job owns a container's
            end, so nothing would remove it once its command ends.
    """
    if not in_cluster_mode(ctx):
        raise InvalidInput(BATCH_NEEDS_CLUSTER)
    return RunOptions(command=tuple(command), tty=False, stdin_open=False)


def job_required(ctx: DaemonContext, prepared: PreparedCreate) -> SlurmJobRequired:
    """The answer to a create without a job: the job's ``sbatch`` options, from the request
    and the owner's limits, account and QOS as ``ds01 admin slurm sync`` named them. The
    job's ``--time`` is the request's ``--runtime-hours`` (already checked against
    ``max_runtime_hours`` by the prepare), else ``max_runtime_hours``."""
    owner = prepared.owner
    account, qos = user_association(ctx.config().limits, owner.name, owner.groups)
    request = prepared.gpu_request
    options = sbatch_options(
        name=prepared.name,
        gpus=request.whole_gpus,
        mig_profiles=request.mig_profiles,
        cpus=prepared.resources.cpus,
        memory_bytes=prepared.resources.memory_bytes,
        runtime_hours=prepared.runtime_hours,
        max_runtime_hours=ctx.limits_for(owner).max_runtime_hours,
        account=account,
        qos=qos,
    )
    return SlurmJobRequired(
        "This server is a node of a Slurm cluster: a container is created by a Slurm job. "
        "`container-create` submits it for you.",
        details={"sbatch": options},
    )


def devices_of_job(
    ctx: DaemonContext,
    caller: Caller,
    job_id: int,
    request: api.CreateContainerRequest,
    inventory: Inventory,
) -> tuple[str, ...]:
    """The UUIDs of the devices job ``job_id`` holds on this node, if ``caller`` may create
    container ``request.name`` in it (``ds01.core.slurm_job.job_devices``).

    Raises:
        PermissionDenied, InvalidInput: as ``ds01.core.slurm_job.job_devices``, or a request
            for another number of devices than the job holds.
        SlurmError: Slurm does not know the job, or does not answer.
    """
    job = parse_job(slurm.show_job(job_id))
    by_index = {g.index: g.uuid for g in gres_lines(inventory) if g.index is not None}
    devices = job_devices(
        job, uid=caller.uid, name=request.name, node=ctx.slurm_node, uuid_of_index=by_index
    )
    check_request_matches(devices, request.gpus, request.mig)
    return devices


def caller_job_cgroup(ctx: DaemonContext, caller: Caller, job_id: int) -> str | None:
    """The job's cgroup, as the container's cgroup parent: read from the kernel's word on the
    caller (its peer pid's ``/proc/<pid>/cgroup``: the job's step runs in it). ``None``
    (ds01's own parent) on the systemd cgroup driver, whose parents are slices, and when the
    caller is in no cgroup of the job (a cluster without Slurm's cgroup plugins)."""
    if ctx.engine.cgroup_driver != "cgroupfs":
        return None
    return job_cgroup(process_cgroup(caller.pid) or "", job_id)


def job_placement(
    uuids: tuple[str, ...], inventory: Inventory, records: list[ContainerRecord]
) -> Placement:
    """Under the allocation lock: the placement on exactly the job's devices.

    Raises:
        Conflict: a container already holds one of them (Slurm gave a device twice, or a
            container outlived its job and the reaper has not removed it yet).
    """
    state = allocation_state(records)
    for uuid in uuids:
        holder = state.holder_of(uuid)
        if holder is not None:
            raise Conflict(
                f"Device {uuid} of this Slurm job is still held by container "
                f"{holder.name!r}; try again once it is gone."
            )
    by_uuid = {d.uuid: d for d in inventory.devices}
    return Placement(devices=tuple(by_uuid[u] for u in uuids))


class SlurmJobReaper(PeriodicPass):
    """Removes the containers whose Slurm job ended (see the module docstring)."""

    thread_name = "ds01-slurm-reaper"
    work_name = "Slurm job pass"
    check_name = "slurm-jobs"
    consequence = "containers whose Slurm job ended are not removed"

    def __init__(
        self,
        ctx: DaemonContext,
        remove: Callable[[ContainerRecord], None],
        *,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self.ctx = ctx
        self._remove = remove
        self._interval = interval_seconds
        super().__init__()

    def run_pass(self) -> list[str]:
        """One look; returns the names of the containers removed."""
        ctx = self.ctx
        if not in_cluster_mode(ctx):
            return []
        mine = {
            r.docker_name: r
            for r in ctx.records()
            if r.labels.get(L.SLURM_NODE) == ctx.slurm_node
            and r.labels.get(L.SLURM_JOB, "").isdigit()
        }
        if not mine:
            return []
        live = slurm.live_jobs(ctx.slurm_node)  # SlurmError: nothing known, nothing removed
        gone = gone_jobs({n: int(r.labels[L.SLURM_JOB]) for n, r in mine.items()}, live)
        for name in gone:
            log.info("removing %s: %s", name, JOB_GONE_REASON)
            self._remove(mine[name])
        return gone

    def interval_seconds(self) -> float:
        return self._interval


__all__ = [
    "BATCH_NEEDS_CLUSTER",
    "DEFAULT_INTERVAL_SECONDS",
    "JOB_GONE_REASON",
    "SlurmJobReaper",
    "batch_run",
    "caller_job_cgroup",
    "devices_of_job",
    "in_cluster_mode",
    "job_placement",
    "job_required",
]
