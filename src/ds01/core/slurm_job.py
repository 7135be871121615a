"""A container as a Slurm job, in cluster mode (``cluster: slurm``). Pure.

Two halves of one contract:

- **the submission** (``sbatch_options``): what a ``container-create`` asks Slurm for, from
  the request and the user's resolved limits: ``--job-name`` the container's name (so that
  ``squeue -n NAME`` finds it), ``--gres=gpu:N`` (or ``gpu:<profile>:1`` for a MIG slice),
  ``--comment`` ``JOB_COMMENT`` (a container's job, for the login node's views),
  ``--cpus-per-task``, ``--mem``, ``--time`` (the request's ``--runtime-hours`` capped by
  ``max_runtime_hours``, else ``max_runtime_hours``) and the account and QOS
  that ``ds01 admin slurm sync`` gave the user;
- **the check on the node** (``job_devices``): before creating a job's container, ds01d
  reads the job from Slurm's JSON (``ds01.core.slurm_record.job_record``), never from the
  caller's environment nor from Slurm's text, and accepts only a running job of the caller,
  on this node, named after the container; the container gets exactly the devices Slurm
  gave the job there, its GRES indices mapped to UUIDs through ds01's GRES order
  (``ds01.core.slurm_gres``);
- **what ds01d did to a job's container** (``job_note``, ``noted``): before it stops the
  container for idleness, its runtime or another rule, and when the kernel kills in it for
  memory, ds01d writes so in the job's ``AdminComment`` (only a Slurm administrator may set
  it, so no user can write one), which slurmdbd keeps: the login node's report counts them
  from ``sacct``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ds01.core.slurm_squeue import ENDED_STATES, JOB_COMMENT
from ds01.errors import InvalidInput, PermissionDenied
from ds01.exitcodes import OOM_KILLED_STATUS
from ds01.model.text import clip

#: The state of a job whose container may be created (and must be running).
RUNNING = "RUNNING"
#: States in which a job still owns its container (``squeue``'s long names).
LIVE_STATES = frozenset({RUNNING, "COMPLETING", "CONFIGURING", "SUSPENDED"})
#: The "signal" of Slurm's ``ExitCode=0:125`` for a job whose cgroup ran out of memory
#: (Slurm's ``SIG_OOM`` is 253 = 128 + 125, a mark, not a signal a process can get).
SLURM_OOM_SIGNAL = 125

#: Why ds01d stops a container (``ContainerOps.stop_by_daemon``): the rule that stops it.
StopCause = Literal["idle", "runtime", "reservation", "reclaim", "disk"]
#: What ds01d notes in a job's ``AdminComment`` (``job_note``): a stop for one of its rules,
#: spelled as the exporter's lifecycle actions (``stop_idle``…), or an OOM kill in the job's
#: container (``oom_kill``: in a container Slurm's step accounting does not see).
JobNote = Literal[
    "stop_idle", "stop_runtime", "stop_reservation", "stop_reclaim", "stop_disk", "oom_kill"
]
JOB_NOTES: tuple[JobNote, ...] = (
    "stop_idle", "stop_runtime", "stop_reservation", "stop_reclaim", "stop_disk", "oom_kill",
)  # fmt: skip
#: The note of each stop's cause.
STOP_NOTES: dict[StopCause, JobNote] = {
    "idle": "stop_idle",
    "runtime": "stop_runtime",
    "reservation": "stop_reservation",
    "reclaim": "stop_reclaim",
    "disk": "stop_disk",
}
JOB_NOTE_PREFIX = "ds01:"
#: Characters of the reason an ``AdminComment`` keeps (slurmdbd stores it as text).
JOB_NOTE_REASON_CHARS = 200
_JOB_NOTE_RE = re.compile(r"^ds01:([a-z_]+)(?::|$)")
_FIELD_RE = re.compile(r"(\w[\w/:]*)=(\S*)")
_NODE_GRES_RE = re.compile(r"Nodes=(\S+)\s.*?GRES=(\S*)")
_IDX_RE = re.compile(r"IDX:([\d,\-]+)")


@dataclass(frozen=True)
class SlurmJob:
    """What ds01d believes about a job: Slurm's own answer, read by root."""

    job_id: int
    name: str
    uid: int
    state: str
    gpu_indices: Mapping[str, tuple[int, ...]]  # node → the GRES indices it holds there
    exit_code: int | None = None  # its script's status once it ended (128 + N: signal N;
    # OOM_KILLED_STATUS for Slurm's OOM mark)


def sbatch_options(
    *,
    name: str,
    gpus: int,
    mig_profiles: Sequence[str],
    cpus: float | None,
    memory_bytes: int | None,
    runtime_hours: float | None,
    max_runtime_hours: float | None,
    account: str,
    qos: str,
) -> list[str]:
    """The ``sbatch`` options of a container's job (see the module docstring). CPUs are
    rounded up (Slurm counts whole CPUs), memory to whole MiB up, the time limit
    (``runtime_hours``, never over ``max_runtime_hours``; ``None``: not asked) to whole
    minutes up."""
    options = [
        f"--job-name={name}",
        f"--comment={JOB_COMMENT}",
        f"--account={account}",
        f"--qos={qos}",
    ]
    if mig_profiles:
        options.append(f"--gres=gpu:{mig_profiles[0]}:1")
    elif gpus:
        options.append(f"--gres=gpu:{gpus}")
    if cpus is not None:
        options.append(f"--cpus-per-task={max(1, math.ceil(cpus))}")
    if memory_bytes is not None:
        options.append(f"--mem={max(1, math.ceil(memory_bytes / 2**20))}M")
    hours = job_hours(runtime_hours, max_runtime_hours)
    if hours is not None:
        options.append(f"--time={max(1, math.ceil(hours * 60))}")
    return options


def job_hours(runtime_hours: float | None, max_runtime_hours: float | None) -> float | None:
    """A job's time limit in hours: the request's ``runtime_hours`` capped by
    ``max_runtime_hours``; either alone; ``None`` (no limit) when neither is set."""
    if runtime_hours is None:
        return max_runtime_hours
    if max_runtime_hours is None:
        return runtime_hours
    return min(runtime_hours, max_runtime_hours)


def _indices(text: str) -> tuple[int, ...]:
    """``0-2,5`` → ``(0, 1, 2, 5)``."""
    found: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        found.extend(range(int(low), int(high or low) + 1))
    return tuple(found)


def gres_indices(gres: str) -> tuple[int, ...]:
    """The device indices of one node's GRES (``gpu:2(IDX:0-1)``); none without ``IDX``."""
    found = _IDX_RE.search(gres)
    return _indices(found.group(1)) if found else ()


def parse_job(text: str) -> SlurmJob:
    """``scontrol show job -d ID``'s answer (Slurm 22.05) as a ``SlurmJob``: for the job's
    owner only (``ds01 job run --wait`` reads its own job's end). Slurm prints the fields the
    owner wrote (name, comment, paths) raw, so they can pass for any other field: nothing
    ds01d decides may rest on this reading (it reads ``ds01.core.slurm_record``'s).

    Raises:
        InvalidInput: the text is not one job's record.
    """
    fields = dict(_FIELD_RE.findall(text))
    user = re.search(r"\((\d+)\)", fields.get("UserId", ""))
    if "JobId" not in fields or user is None or "JobState" not in fields:
        raise InvalidInput("Slurm's record of the job could not be read.")
    gpus: dict[str, tuple[int, ...]] = {}
    for nodes, gres in _NODE_GRES_RE.findall(text):
        gpus[nodes] = gres_indices(gres)
    return SlurmJob(
        job_id=int(fields["JobId"]),
        name=fields.get("JobName", ""),
        uid=int(user.group(1)),
        state=fields["JobState"],
        gpu_indices=gpus,
        exit_code=_exit_status(fields.get("ExitCode", "")),
    )


def _exit_status(text: str) -> int | None:
    """Slurm's ``ExitCode=STATUS:SIGNAL`` as a shell tells it: the status, or 128 + the
    signal that ended the script; ``None`` when it is not there. Slurm's OOM mark
    (``SLURM_OOM_SIGNAL``, state ``OUT_OF_MEMORY``) is no signal: the kernel's OOM killer
    sent SIGKILL, so it reads as ``OOM_KILLED_STATUS``, what Docker says of such a kill."""
    status, _, signal = text.partition(":")
    if not status.isdigit() or not signal.isdigit():
        return None
    if int(signal) == SLURM_OOM_SIGNAL:
        return OOM_KILLED_STATUS
    return 128 + int(signal) if int(signal) else int(status)


def job_devices(
    job: SlurmJob, *, uid: int, name: str, node: str, uuid_of_index: Mapping[int, str]
) -> tuple[str, ...]:
    """The UUIDs of the devices ``job`` holds on ``node``, if the caller (``uid``) may put
    container ``name`` in it.

    Raises:
        PermissionDenied: another user's job, or one not named after the container.
        InvalidInput: the job is not running, not on this node, or holds a device this
            node's inventory does not have.
    """
    if job.uid != uid:
        raise PermissionDenied(f"Slurm job {job.job_id} is not yours.")
    if job.name != name:
        raise PermissionDenied(
            f"Slurm job {job.job_id} is named {job.name!r}, not after container {name!r}."
        )
    if job.state != RUNNING:
        raise InvalidInput(f"Slurm job {job.job_id} is {job.state}, not RUNNING.")
    if node not in job.gpu_indices:
        raise InvalidInput(
            f"Slurm job {job.job_id} does not run on node {node!r} "
            f"(it runs on {', '.join(job.gpu_indices) or 'no node'})."
        )
    indices = job.gpu_indices[node]
    unknown = [i for i in indices if i not in uuid_of_index]
    if unknown:
        raise InvalidInput(
            f"Slurm gave job {job.job_id} GPU index(es) {unknown} that node {node!r}'s "
            "inventory does not have: write its gres.conf with `ds01 admin slurm gres`."
        )
    return tuple(uuid_of_index[i] for i in indices)


def check_request_matches(devices: Sequence[str], gpus: int, mig_profiles: Sequence[str]) -> None:
    """Refuse (``InvalidInput``) a request for another number of devices than its job
    holds: the container gets the job's devices, no more and no fewer."""
    asked = gpus + len(mig_profiles)
    if asked != len(devices):
        raise InvalidInput(
            f"The request asks for {asked} device(s) but its Slurm job holds {len(devices)}."
        )


def job_cgroup(cgroup_text: str, job_id: int) -> str | None:
    """The job's own cgroup (``/slurm_node2/uid_1001/job_42``: Slurm's ``task/cgroup`` and
    ``proctrack/cgroup``) from ``/proc/<pid>/cgroup`` of a process of one of its steps: the
    memory controller's path (cgroup v1; the unified one on v2) up to ``job_<id>``. ``None``
    when the process is in no cgroup of that job (a cluster without Slurm's cgroup plugins,
    or a process outside the job)."""
    paths = {}
    for line in cgroup_text.splitlines():
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        paths[controllers] = path
    path = paths.get("memory") or paths.get("") or ""
    marker = f"/job_{job_id}"
    at = (path + "/").find(marker + "/")
    return path[: at + len(marker)] if at >= 0 else None


def job_note(note: JobNote, reason: str) -> str:
    """A job's ``AdminComment`` saying what ds01d did to its container: one line,
    ``ds01:<note>: <reason>`` (the reason clipped to ``JOB_NOTE_REASON_CHARS``)."""
    line = " ".join(reason.split())
    return f"{JOB_NOTE_PREFIX}{note}: {clip(line, JOB_NOTE_REASON_CHARS)}"


def noted(admin_comment: str) -> JobNote | None:
    """What a job's ``AdminComment`` says ds01d did (``job_note``'s), or ``None``: no
    comment, or one of somebody else's."""
    found = _JOB_NOTE_RE.match(admin_comment.strip())
    word = found.group(1) if found else None
    return next((note for note in JOB_NOTES if note == word), None)


def gone_jobs(labelled: Mapping[str, int], live: Mapping[int, str]) -> list[str]:
    """The containers (name → their job id) whose job is no longer live on the node:
    ``live`` is job id → state as ``squeue -w NODE`` listed them."""
    return sorted(c for c, job in labelled.items() if live.get(job) not in LIVE_STATES)


__all__ = [
    "ENDED_STATES",
    "JOB_COMMENT",
    "JOB_NOTES",
    "JOB_NOTE_PREFIX",
    "LIVE_STATES",
    "RUNNING",
    "SLURM_OOM_SIGNAL",
    "STOP_NOTES",
    "JobNote",
    "SlurmJob",
    "StopCause",
    "check_request_matches",
    "gone_jobs",
    "gres_indices",
    "job_cgroup",
    "job_devices",
    "job_hours",
    "job_note",
    "noted",
    "parse_job",
    "sbatch_options",
]
