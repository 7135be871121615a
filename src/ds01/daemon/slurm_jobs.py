"""Cluster mode (``cluster: slurm``): a container is a Slurm job's ("No container without a
job").

- **A batch job's create** (``request.command``, ``ds01 job run``): the same, its container
  running that command without a terminal (``batch_run``); refused on a single server.
- **A create without a job** is answered with ``SlurmJobRequired`` and the job's ``sbatch``
  options (``job_required``): ``ds01 container-create`` then submits the job as the user,
  and the job's step asks this node's ds01d for the container. ds01d never submits for
  anyone: Slurm learns who submits from munge, not from ds01.
- **A create in a job** (``request.slurm_job``): ``devices_of_job`` reads the job from Slurm as
  root (``squeue --json``, ``ds01.core.slurm_record``: no field its owner wrote can pass for
  one Slurm set), never from what the caller sends, and accepts only the
  caller's running job, named after the container, on this node; the container gets exactly
  the devices Slurm gave the job here (GRES indices → UUIDs through ds01's GRES order,
  ``ds01.core.slurm_gres``), labelled with the job and the node (``job_placement``).
- **What ds01d did to a job's container** (``note_on_job``: a stop for one of its rules,
  before ``ContainerOps.stop_by_daemon`` stops it; an OOM kill, when ``OomWatcher`` reports
  it): the job's ``AdminComment`` says so (``ds01.core.slurm_job.job_note``), set as root
  while the job runs, or in slurmdbd's record once it ended (the kill can end the job
  first), so that Slurm's accounting keeps it for the login node's report. slurmctld sends
  a job's record to slurmdbd asynchronously: a note on a job that ended a moment ago can
  find no record yet (or slurmdbd away); ``NoteRetries`` then tries again in a thread of its
  own for up to a minute (``ds01.core.slurm_note``), the caller never waiting for it.
- **The reaper** (``SlurmJobReaper``): every ``--slurm-interval`` seconds, the containers
  labelled with a job of this node whose job Slurm no longer runs here are removed (a job
  cancelled while its step could not stop the container: slurmd or the step killed, ds01d
  down at the time). When Slurm does not answer nothing is removed.

Locks: ``job_placement`` runs under the allocation lock (it reads what is held); the reaper
and the notes' retries take none (removing frees devices, rule 3).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

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
    sbatch_options,
)
from ds01.core.slurm_note import MAX_PENDING_NOTES, AccountingWrite, retry_at
from ds01.core.slurm_record import job_record
from ds01.core.slurm_sync import user_association
from ds01.daemon import schemas as api
from ds01.daemon.context import DaemonContext
from ds01.daemon.identity import Caller
from ds01.daemon.periodic import PeriodicPass
from ds01.daemon.prepared import PreparedCreate
from ds01.daemon.slurm_limits import in_cluster_mode
from ds01.daemon.views import allocation_state
from ds01.errors import Conflict, InvalidInput, PermissionDenied, SlurmError, SlurmJobRequired
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


@dataclass
class _PendingNote:
    """A note waiting for another try (``NoteRetries``)."""

    job: int
    note: JobNote
    comment: str
    first_failed_at: float
    #: Tries since the first (failed) one.
    retries: int
    #: The answer to the last try (why it waits).
    last: AccountingWrite

    @property
    def due(self) -> float | None:
        return retry_at(self.first_failed_at, self.retries)


#: Why a waiting note is given up when ds01d stops.
_STOPPED = "ds01d stopped before slurmdbd had the job's record"
#: Why a note waits, in the log line of its giving up.
_WHY_WAITING = {
    AccountingWrite.NOT_ACCOUNTED: "slurmdbd has no record of the job",
    AccountingWrite.UNREACHABLE: "slurmdbd did not answer",
}


class NoteRetries:
    """Notes on ended jobs that slurmdbd could not take yet (``AccountingWrite.retryable``),
    written again (``write``: ``slurm.set_ended_job_comment``) on
    ``ds01.core.slurm_note.retry_at``'s schedule by a thread of its own, so that no caller
    (the OOM watcher's pass, a stop) waits for slurmdbd.

    Contract: ``add`` keeps a note (at most ``capacity`` wait; one more is given up at once);
    ``run_due`` makes the tries that are due and says when the next one is. ``start`` runs
    ``run_due`` in a daemon thread, woken by ``add``; ``stop`` ends it, gives up whatever
    still waits, and gives up any later ``add`` until the next ``start``. Without ``start``,
    nothing runs by itself (a caller steps ``run_due``). A note is given up with one warning
    (``could not note …``, as a first try that fails for good); a note written on a retry is
    logged once. ``clock``: monotonic seconds.
    """

    def __init__(
        self,
        write: Callable[[int, str], AccountingWrite] = slurm.set_ended_job_comment,
        *,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = MAX_PENDING_NOTES,
    ) -> None:
        self._write = write
        self._clock = clock
        self._capacity = capacity
        self._pending: list[_PendingNote] = []
        self._trying: set[int] = set()  # jobs whose note's write is under way
        self._changed = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def add(self, job: int, note: JobNote, comment: str, last: AccountingWrite) -> bool:
        """Keep ``comment`` (``note`` on ``job``, whose first write answered ``last``) for
        another try, instead of an older note on the same job (a job holds one comment: the
        last note wins); ``False`` when it is given up instead (stopped, or full)."""
        with self._changed:
            self._pending = [p for p in self._pending if p.job != job]
            refused = "ds01d is stopping" if self._stopped else None
            if refused is None and len(self._pending) >= self._capacity:
                refused = f"{self._capacity} notes already wait for slurmdbd"
            if refused is None:
                self._pending.append(_PendingNote(job, note, comment, self._clock(), 0, last))
                self._changed.notify_all()
                return True
        _give_up(job, note, f"{_WHY_WAITING.get(last, last.value)}, and {refused}")
        return False

    def busy(self, job: int) -> bool:
        """Whether a note on ``job`` waits or is being written: a newer note then goes
        behind it (``add``), so that the last note written is the last one made."""
        with self._changed:
            return job in self._trying or any(p.job == job for p in self._pending)

    def forget(self, job: int) -> None:
        """No more tries of a note on ``job``: a later one was written."""
        with self._changed:
            self._pending = [p for p in self._pending if p.job != job]

    def waiting(self) -> list[int]:
        """The jobs whose note waits, oldest first."""
        with self._changed:
            return [p.job for p in self._pending]

    def run_due(self) -> float | None:
        """Try every waiting note whose time has come (without holding the lock while
        ``write`` runs); returns the seconds until the next try, ``None`` when none waits."""
        now = self._clock()
        with self._changed:
            due = [p for p in self._pending if p.due is not None and p.due <= now]
            self._pending = [p for p in self._pending if p not in due]
            self._trying.update(p.job for p in due)
        for pending in due:
            try:
                self._try(pending)
            finally:
                with self._changed:
                    self._trying.discard(pending.job)
        with self._changed:
            return self._seconds_to_next()

    def _try(self, pending: _PendingNote) -> None:
        pending.retries += 1
        try:
            pending.last = self._write(pending.job, pending.comment)
        except SlurmError as exc:
            _give_up(pending.job, pending.note, exc.message)
            return
        if pending.last is AccountingWrite.WRITTEN:
            log.info(
                "noted %s on Slurm job %s at try %d", pending.note, pending.job, pending.retries + 1
            )
        elif pending.due is None:
            waited = self._clock() - pending.first_failed_at
            _give_up(
                pending.job,
                pending.note,
                f"{_WHY_WAITING.get(pending.last, pending.last.value)} after "
                f"{pending.retries + 1} tries over {waited:.0f} s",
            )
        else:
            log.debug(
                "note %s on Slurm job %s: %s at try %d",
                pending.note, pending.job, pending.last.value, pending.retries + 1,
            )  # fmt: skip
            with self._changed:
                if any(p.job == pending.job for p in self._pending):
                    return  # a newer note on the job came meanwhile: it alone goes on
                if not self._stopped:
                    self._pending.append(pending)
                    return
            _give_up(pending.job, pending.note, _STOPPED)

    def _seconds_to_next(self) -> float | None:
        dues = [d for d in (p.due for p in self._pending) if d is not None]
        return max(0.0, min(dues) - self._clock()) if dues else None

    def start(self) -> None:
        """Make the tries in a daemon thread until ``stop``."""
        with self._changed:
            if self._thread is not None:
                raise RuntimeError("the Slurm notes' retry thread is already running")
            self._stopped = False
            self._thread = threading.Thread(target=self._loop, name="ds01-slurm-notes", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> bool:
        """End the thread (a try under way finishes, up to ``timeout_seconds``); every note
        still waiting is given up. Returns whether the thread has ended."""
        with self._changed:
            self._stopped = True
            thread, self._thread = self._thread, None
            given_up, self._pending = self._pending, []
            self._changed.notify_all()
        for pending in given_up:
            _give_up(pending.job, pending.note, _STOPPED)
        if thread is None:
            return True
        thread.join(timeout_seconds)
        return not thread.is_alive()

    def _loop(self) -> None:
        while True:
            try:
                self.run_due()
            except Exception:  # a bug must not end the retries of the notes to come
                log.exception("the retry of notes on Slurm jobs failed")
            with self._changed:
                if self._stopped:
                    return
                self._changed.wait(self._seconds_to_next())


def _give_up(job: int, note: JobNote, why: str) -> None:
    log.warning("could not note %s on Slurm job %s: %s", note, job, why)


#: ds01d's retries of notes (started and stopped with the reaper, ``SlurmJobReaper``).
NOTE_RETRIES = NoteRetries()


def note_on_job(
    record: ContainerRecord, note: JobNote, reason: str, retries: NoteRetries = NOTE_RETRIES
) -> None:
    """When a Slurm job owns ``record``: write what ds01d does or saw (``note``, ``reason``) in
    the job's ``AdminComment`` (``job_note``), which slurmdbd keeps for the login node's
    report; the last note wins. A container of no job: nothing. A job that has ended and
    whose record slurmdbd does not have yet (or slurmdbd away): ``retries`` tries again
    later, in its own thread. Slurm's refusal (not an administrator) or silence is logged and
    never holds back what ds01d does: the report then misses one note."""
    job = record.labels.get(L.SLURM_JOB, "")
    if not job.isdigit():
        return
    comment = job_note(note, reason)
    if retries.busy(int(job)):  # an older note is still on its way: this one goes after it
        retries.add(int(job), note, comment, AccountingWrite.NOT_ACCOUNTED)
        return
    try:
        done = slurm.set_admin_comment(int(job), comment)
    except SlurmError as exc:
        _give_up(int(job), note, exc.message)
        return
    if done.retryable:
        log.debug("note %s on Slurm job %s: %s, to be tried again", note, job, done.value)
        retries.add(int(job), note, comment, done)
    else:
        retries.forget(int(job))


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
        SlurmError: Slurm does not list the job, or does not answer.
    """
    job = job_record(slurm.cluster_jobs(), job_id)
    by_index = {g.index: g.uuid for g in gres_lines(inventory) if g.index is not None}
    devices = job_devices(
        job, uid=caller.uid, name=request.name, node=ctx.slurm_node, uuid_of_index=by_index
    )
    check_request_matches(devices, request.gpus, request.mig)
    return devices


def caller_job_cgroup(ctx: DaemonContext, caller: Caller, job_id: int) -> str | None:
    """The job's cgroup, as the container's cgroup parent: read from the kernel's word on the
    caller (its peer pid's ``/proc/<pid>/cgroup``: the job's step runs in it), so that the
    container stays inside the job's CPU and memory limits. ``None`` (ds01's own parent) on
    the systemd cgroup driver, whose parents are slices, and on a node where Slurm made no
    cgroup for the job (a cluster without Slurm's cgroup plugins).

    Raises:
        PermissionDenied: Slurm made a cgroup for the job here but the caller is not in it
            (a process outside the job's step would put the container outside the job's
            limits); or the caller's cgroup named like the job's is not root's from the
            cgroup root down (``CgroupManager.owned_by``): a user made it herself (a
            delegated cgroup v2 subtree), so it is no cgroup of Slurm's.
    """
    if ctx.engine.cgroup_driver != "cgroupfs":
        return None
    cgroup = job_cgroup(process_cgroup(caller.pid) or "", job_id)
    if cgroup is None:
        made = ctx.cgroups.slurm_job_cgroups(job_id)
        if made:
            raise PermissionDenied(
                f"Slurm job {job_id} runs in cgroup {made[0]} on this node, and your process "
                "is not in it: ds01 places a job's container inside the job's limits only. "
                "Run container-create in the job's own step (srun or the batch script)."
            )
        return None
    if not ctx.cgroups.owned_by(cgroup):
        raise PermissionDenied(
            f"Your process is in cgroup {cgroup}, named like Slurm job {job_id}'s, but it is "
            f"not root's all the way down from {ctx.cgroups.root}: Slurm did not make it, so "
            "ds01 will not place a container in it. Run container-create in the job's own "
            "step (srun or the batch script), not in a cgroup of your own."
        )
    return cgroup


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
        notes: NoteRetries = NOTE_RETRIES,
    ) -> None:
        self.ctx = ctx
        self._remove = remove
        self._interval = interval_seconds
        self._notes = notes
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

    def start(self) -> None:
        """The reaper's passes, and the notes' retries (``NOTE_RETRIES``)."""
        super().start()
        self._notes.start()

    def stop(self, timeout_seconds: float = 5.0) -> bool:
        """Both stopped (a note still waiting is given up); whether both threads ended."""
        reaper_ended = super().stop(timeout_seconds)
        return self._notes.stop(timeout_seconds) and reaper_ended


__all__ = [
    "BATCH_NEEDS_CLUSTER",
    "DEFAULT_INTERVAL_SECONDS",
    "JOB_GONE_REASON",
    "NOTE_RETRIES",
    "NoteRetries",
    "SlurmJobReaper",
    "batch_run",
    "caller_job_cgroup",
    "devices_of_job",
    "in_cluster_mode",
    "job_placement",
    "job_required",
    "note_on_job",
]
