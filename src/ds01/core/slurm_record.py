"""A job's record as Slurm itself keeps it, from ``squeue --json`` (Slurm 22.05's
``openapi/v0.0.38``). Pure.

ds01d decides which devices a container gets from this record alone
(``ds01.core.slurm_job.job_devices``), so nothing a job's owner wrote may be read as one of
its fields. Slurm's text answers (``scontrol show job``) print the job's name, comment,
working directory, standard streams and command raw, ``=``, ``|`` and newlines included:
``--comment='x JobState=RUNNING Nodes=node2 x GRES=gpu:4(IDX:0-3)'`` or a job name with a
newline and ``UserId=root(0)`` in it read as Slurm's own fields there. JSON quotes those
strings, so each field is the one Slurm set.

``squeue --json`` lists every job slurmctld holds that the caller may see (22.05 ignores
``--job`` and every other filter with ``--json``); ``job_record`` picks one by its id and
reads only that one closely, so no other job (another user's, an odd one) has a say.
Read here: the id, name, owner's uid, state, and per node (``job_resources``'
``allocated_nodes``, in Slurm's order) the GRES it holds there (``gres_detail``, one entry per
allocated node in the same order, ``gpu:2(IDX:0-1)``; empty for a job that holds no GRES).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, ValidationError

from ds01.core.slurm_job import SlurmJob, gres_indices
from ds01.errors import InvalidInput, SlurmError


class _Model(BaseModel):
    """Slurm's fields that ds01 reads; the many others are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class _AllocatedNode(_Model):
    nodename: str


class _JobResources(_Model):
    allocated_nodes: list[_AllocatedNode]


class _Job(_Model):
    job_id: int
    name: str
    user_id: int
    job_state: str
    gres_detail: list[str]
    job_resources: _JobResources | None = None  # none while it pends


def _gpus_per_node(job: _Job) -> dict[str, tuple[int, ...]]:
    nodes = [n.nodename for n in job.job_resources.allocated_nodes] if job.job_resources else []
    if job.gres_detail and len(job.gres_detail) != len(nodes):
        raise InvalidInput(
            f"Slurm's record of job {job.job_id} lists GRES for {len(job.gres_detail)} node(s) "
            f"but {len(nodes)} allocated node(s): ds01 cannot tell which devices are whose."
        )
    details = job.gres_detail or [""] * len(nodes)
    return {node: gres_indices(gres) for node, gres in zip(nodes, details, strict=True)}


def _id_of(entry: dict[str, object]) -> int | None:
    """A listed job's id, if it is an integer (not a bool, not a string)."""
    value = entry.get("job_id")
    return value if type(value) is int else None


def job_record(text: str, job_id: int) -> SlurmJob:
    """Job ``job_id`` in ``squeue --json``'s answer, as a ``SlurmJob`` (no exit code: a
    running job has none).

    Raises:
        InvalidInput: the answer is not Slurm's JSON, or lacks a field ds01 reads (named).
        SlurmError: Slurm does not list the job (unknown, ended and forgotten, or not
            visible to root).
    """
    try:
        answer = json.loads(text)
    except ValueError:
        raise InvalidInput("Slurm's JSON (squeue --json) could not be read: not JSON.") from None
    jobs = answer.get("jobs") if isinstance(answer, dict) else None
    if not isinstance(jobs, list):
        raise InvalidInput("Slurm's JSON (squeue --json) could not be read: no list of jobs.")
    # Only this job is read closely: another job Slurm lists (any user's) decides nothing.
    found = [entry for entry in jobs if isinstance(entry, dict) and _id_of(entry) == job_id]
    if not found:
        raise SlurmError(f"Slurm lists no job {job_id} (squeue --json).")
    if len(found) > 1:
        raise InvalidInput(f"Slurm's JSON (squeue --json) lists job {job_id} twice.")
    try:
        job = _Job.model_validate(found[0])
    except ValidationError as exc:
        missing = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'the job'}: {error['msg']}"
            for error in exc.errors()[:3]
        )
        raise InvalidInput(
            f"Slurm's JSON (squeue --json) of job {job_id} could not be read: {missing}"
        ) from None
    return SlurmJob(
        job_id=job.job_id,
        name=job.name,
        uid=job.user_id,
        state=job.job_state,
        gpu_indices=_gpus_per_node(job),
    )


__all__ = ["job_record"]
