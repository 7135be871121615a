"""A cluster's containers as ``squeue`` lists them, for a login node's views. Pure.

A container is a Slurm job named after it and carrying the comment ``JOB_COMMENT``
(``ds01.core.slurm_job.sbatch_options``); ``squeue``, run as the user, lists every job
Slurm lets them see with its node, state and, while it waits, Slurm's reason, which
``REASONS`` says in ds01's words. ``parse_containers`` reads that answer.

squeue's text, in a form a job's owner cannot forge: a job's name and comment are its owner's
and squeue prints them raw (``|``, newlines and all), so with a fixed layout a name could
shift the fields or add a line of its own (another user's container, a pending job of
root's). Each call has its own ``SqueueMarks``: three random tokens (128 bits each) that
start a record, separate its fields and end it (``squeue_format``). The format reaches squeue
through its environment (``SQUEUE_FORMAT``, ``squeue_environment``), not its arguments,
which any user can read in ``/proc/PID/cmdline``; ``/proc/PID/environ`` is its owner's and
root's alone. No text of a job can hold a token it cannot know, so ``read_jobs`` splits the
answer on them exactly: squeue's ``%``-format prints each field whole when it has no width
(none here), and a record with another count of fields, or text outside records, is not
this call's answer. A record's fixed fields (id, uid, user, state, reason, nodes, GRES,
priority, times) are checked; a job that is no container's and fails a check is left out, a
container's refuses the answer (as for a record missing fields).

``squeue --json`` (which ``ds01.core.slurm_record`` reads for ds01d's check of one job)
quotes those strings too, but in Slurm 22.05 it costs about 8 times the text (92 ms and
943 kB at 300 held jobs, against 12 ms) and ignores every filter. The order is ds01's:
pending first, then by priority, highest first (squeue's own within a partition).

Light on purpose: ``container-list`` on a login node is budgeted against a bare ``squeue``
(at most 3 x), and a Python command's start-up is most of its time. So this module imports
``re`` alone (no ``dataclasses``: it loads ``inspect``, about 6 ms; no ``typing``; no
``secrets``: ``ds01.runtime.slurm`` draws the tokens with ``os.urandom``, as
``secrets.token_hex`` does, without its 15 ms of imports); ``ClusterContainer`` is a plain
class. ``ds01.core.slurm_view`` builds the other views (nodes, holders, ``container-open``)
on it.
"""

from __future__ import annotations

import re

from ds01.model.text import plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import NoReturn

#: The comment of every container's job (``sbatch --comment``): how a login node tells a
#: container's job from other jobs.
JOB_COMMENT = "ds01-container"
#: Slurm's state of a job that waits.
PENDING = "PENDING"
#: States of a job that has ended (``scontrol``'s and squeue's names): ``ds01 job run
#: --wait`` stops there; the views leave them out, as ``squeue`` does unless asked (its
#: ``--states``; ``squeue --json`` lists them while slurmctld keeps them, ``MinJobAge``).
ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)

#: squeue's ``%``-format letter of each field of a job that ds01 reads (Slurm 22.05), in the
#: order of a record: ``%A`` the job's id (each array element's own), ``%j`` its name, ``%U``
#: and ``%u`` its owner, ``%T`` its state, ``%r`` why it waits (``None`` when it does not),
#: ``%N`` where it runs (empty while it pends), ``%b`` the GRES it asked for per node
#: (``gres:gpu:3``; ``N/A``: none), ``%k`` its comment, ``%Q`` its priority, ``%V`` and ``%S``
#: its submit and start times (``SLURM_TIME_FORMAT=%s``: seconds since the epoch; ``N/A``
#: or ``Unknown``: none yet). No width: each printed whole.
SQUEUE_FIELDS = {
    "job_id": "A",
    "name": "j",
    "user_id": "U",
    "user_name": "u",
    "job_state": "T",
    "state_reason": "r",
    "nodes": "N",
    "tres_per_node": "b",
    "comment": "k",
    "priority": "Q",
    "submit_time": "V",
    "start_time": "S",
}
#: ``SLURM_TIME_FORMAT`` for squeue: times as seconds since the epoch (strftime's ``%s``).
SQUEUE_TIME_FORMAT = "%s"
#: Random bytes in each token of ``SqueueMarks`` (written as twice as many hex digits).
MARK_BYTES = 16
#: The environment variables squeue reads as options (``man squeue``, ENVIRONMENT
#: VARIABLES: ``SQUEUE_FORMAT2``, ``SQUEUE_STATES``, ``SQUEUE_SORT``…): the caller's own are
#: not passed on, so that none of them changes the format, the jobs listed or their order.
SQUEUE_OPTION_PREFIX = "SQUEUE_"

_COMMENT_INDEX = list(SQUEUE_FIELDS).index("comment")
_HEX_RE = re.compile(f"[0-9a-f]{{{2 * MARK_BYTES}}}")
#: A user name as NSS gives it (or a uid where it has none): no blank (and printable).
_USER_RE = re.compile(r"\S+")
_STATE_RE = re.compile(r"[A-Z_]+")
#: A node list (``node1``, ``node[1-2],gpu3``), empty while a job pends.
_NODES_RE = re.compile(r"[A-Za-z0-9_.,\[\]-]*")
#: A job's GRES per node: ``gres:gpu:3``, ``gres:gpu:1g.10gb:1``, ``gres/gpu:2,gres/shard:1``.
_GRES_RE = re.compile(r"[A-Za-z0-9_.:/,()=+-]*")
#: What squeue prints for a field it has no value for (a time not yet known, no GRES).
_NONE_TEXTS = frozenset({"N/A", "Unknown", "(null)"})


class SqueueMarks:
    """The tokens of one squeue call: ``start`` begins each record, ``field`` separates its
    fields, ``end`` ends it (squeue then prints a newline). Each is ``MARK_BYTES`` random
    bytes in hex, drawn anew for each call (``ds01.runtime.slurm.cluster_containers``)."""

    __slots__ = ("end", "field", "start")

    def __init__(self, start: str, field: str, end: str) -> None:
        """Raises ``ValueError`` unless each is ``MARK_BYTES`` bytes in lowercase hex and
        they differ."""
        if len({start, field, end}) != 3 or not all(
            _HEX_RE.fullmatch(mark) for mark in (start, field, end)
        ):
            raise ValueError("squeue's marks are three different tokens of random hex")
        self.start = start
        self.field = field
        self.end = end

    @classmethod
    def drawn(cls, random_bytes: Callable[[int], bytes]) -> SqueueMarks:
        """Marks of ``random_bytes(MARK_BYTES)`` each (``os.urandom``)."""
        return cls(*(random_bytes(MARK_BYTES).hex() for _ in range(3)))


def squeue_format(marks: SqueueMarks) -> str:
    """``SQUEUE_FORMAT`` for a call with ``marks``: each record ``start`` then
    ``SQUEUE_FIELDS`` (no width) separated by ``field``, then ``end``."""
    fields = marks.field.join(f"%{letter}" for letter in SQUEUE_FIELDS.values())
    return f"{marks.start}{fields}{marks.end}"


def squeue_environment(environ: Mapping[str, str], marks: SqueueMarks) -> dict[str, str]:
    """The whole environment of a squeue call with ``marks``: ``environ`` less the variables
    that squeue reads as options (``SQUEUE_OPTION_PREFIX``) and ``SLURM_TIME_FORMAT``, with
    ``squeue_format`` and ``SQUEUE_TIME_FORMAT``."""
    env = {
        name: value
        for name, value in environ.items()
        if not name.startswith(SQUEUE_OPTION_PREFIX) and name != "SLURM_TIME_FORMAT"
    }
    env["SQUEUE_FORMAT"] = squeue_format(marks)
    env["SLURM_TIME_FORMAT"] = SQUEUE_TIME_FORMAT
    return env


class SqueueAnswer:
    """squeue's standard output for a call with ``marks`` (``squeue --noheader`` with
    ``squeue_environment``)."""

    __slots__ = ("marks", "text")

    def __init__(self, text: str, marks: SqueueMarks) -> None:
        self.text = text
        self.marks = marks


#: Slurm's pending reasons (22.05, ``squeue %r``) in ds01's words (docs/cluster.md's table).
REASONS = {
    "Resources": "no node has the GPUs (or CPUs, memory) free now; it starts when a job ends",
    "Priority": "others are ahead (fair share and your group's priority)",
    "QOSMaxGRESPerUser": "your running containers already hold your gpu_limit",
    "QOSMaxJobsPerUserLimit": "you run max_containers containers already",
    "QOSMaxWallDurationPerJobLimit": "it asks for more time than max_runtime_hours",
    "Dependency": "it waits for another job",
    "BeginTime": "it starts later, at its begin time",
    "ReqNodeNotAvail": "the node it needs is down or reserved",
    "JobHeldUser": "held by you (scontrol release JOB)",
    "JobHeldAdmin": "held by an administrator",
}

_GRES_COUNT_RE = re.compile(r"gpu(?::[^:(,\s]+)?:(\d+)")


class ClusterContainer:
    """One container of the cluster: its job as ``squeue`` lists it. Not to be changed once
    made; equal when every field is."""

    __slots__ = ("elapsed", "gpus", "name", "node", "reason", "slurm_job", "state", "user")

    def __init__(
        self,
        *,
        name: str,
        user: str,
        slurm_job: int,
        state: str,  # Slurm's: RUNNING, PENDING, COMPLETING…
        node: str,  # "" while it pends
        reason: str,  # Slurm's, "None" while it runs
        gpus: int,  # devices asked for (each node it runs on)
        elapsed: str,  # squeue's %M: 0:00, 1:02:03, 1-02:03:04
    ) -> None:
        self.name = name
        self.user = user
        self.slurm_job = slurm_job
        self.state = state
        self.node = node
        self.reason = reason
        self.gpus = gpus
        self.elapsed = elapsed

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, field) for field in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClusterContainer):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{field}={getattr(self, field)!r}" for field in self.__slots__)
        return f"ClusterContainer({fields})"

    @property
    def status(self) -> str:
        """The state in ds01's words: ``running``, ``pending``, ``completing``…"""
        return self.state.lower()

    @property
    def reason_text(self) -> str:
        """Why it waits, in ds01's words; ``""`` when it does not wait."""
        if self.state != PENDING:
            return ""
        return explain_reason(self.reason)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "user": self.user,
            "status": self.status,
            "slurm_job": self.slurm_job,
            "slurm_state": self.state,
            "node": self.node or None,
            "gpus": self.gpus,
            "elapsed": self.elapsed,
            "reason": self.reason if self.state == PENDING else None,
            "reason_text": self.reason_text or None,
        }


def explain_reason(reason: str) -> str:
    """Slurm's pending reason in ds01's words; an unknown one as Slurm says it."""
    return REASONS.get(reason, f"Slurm says {reason} (see `scontrol show job`)")


def gres_gpus(text: str) -> int:
    """The GPUs a GRES text counts: ``gres:gpu:3``, ``gpu:1g.10gb:1``,
    ``gpu:full:2(IDX:0-1),gpu:1g.10gb:1(IDX:2)`` → their sum; none without a ``gpu``."""
    return sum(int(count) for count in _GRES_COUNT_RE.findall(text))


class SqueueJob:
    """One job of squeue's answer: its ``SQUEUE_FIELDS``, checked (``read_job``)."""

    __slots__ = tuple(SQUEUE_FIELDS)

    job_id: int
    name: str
    user_id: int
    user_name: str
    job_state: str
    state_reason: str
    nodes: str
    tres_per_node: str
    comment: str
    priority: int
    submit_time: int
    start_time: int

    def squeue_order(self) -> tuple[bool, int, int]:
        """ds01's order: pending first, then the highest priority (module docstring)."""
        return (self.job_state != PENDING, -self.priority, self.job_id)


def read_job(fields: Sequence[str]) -> SqueueJob | str:
    """A record's ``fields`` (``SQUEUE_FIELDS``' order) as a job, or why not: a count that is
    not a decimal number, a time that is neither one nor ``N/A``, a user, state, node list or
    GRES that is not one. The name and comment are kept as squeue printed them; the reason is
    Slurm's alone (``ReqNodeNotAvail``, not the nodes slurmctld may add after a comma);
    ``N/A`` (no GRES, no time yet) is ``""`` and ``0``."""
    (job_id, name, user_id, user_name, state, reason, nodes, gres, comment, priority,
     submitted, started) = fields  # fmt: skip
    reason = reason.partition(",")[0]
    if gres in _NONE_TEXTS:
        gres = ""
    if not (
        _USER_RE.fullmatch(user_name)
        and _STATE_RE.fullmatch(state)
        and _NODES_RE.fullmatch(nodes)
        and _GRES_RE.fullmatch(gres)
        and user_name.isprintable()  # no C1 control (\x9b starts an escape too)
        and reason.isprintable()
    ):
        return f"job {job_id!r} has no user, state, nodes, GRES or reason"
    job = SqueueJob()
    job.job_id, job.user_id, job.priority = _count(job_id), _count(user_id), _count(priority)
    job.submit_time, job.start_time = _time(submitted), _time(started)
    if -1 in (job.job_id, job.user_id, job.priority, job.submit_time, job.start_time):
        return f"job {job_id!r} has no id, uid, priority or time"
    job.name, job.user_name, job.job_state, job.state_reason = name, user_name, state, reason
    job.nodes, job.tres_per_node, job.comment = nodes, gres, comment
    return job


def _time(text: str) -> int:
    """A time as squeue prints it with ``SQUEUE_TIME_FORMAT``; ``0`` for none (``N/A``), -1
    if it is not one."""
    return 0 if text in _NONE_TEXTS else _count(text)


def _count(text: str) -> int:
    """``text`` as a decimal number (ASCII digits only); -1 if it is not one."""
    return int(text) if text.isascii() and text.isdigit() else -1


def read_jobs(answer: SqueueAnswer) -> list[SqueueJob]:
    """squeue's jobs, in ds01's order (see the module docstring). A job that is no
    container's (its comment is not ``JOB_COMMENT``) and fails a check of ``read_job`` is
    left out: another job's odd record does not take every user's views down.

    Raises:
        SlurmError: the answer is not a series of records with this call's marks, each of
            ``SQUEUE_FIELDS``; or a container's job fails a check of ``read_job``.
    """
    marks = answer.marks
    records = answer.text.split(marks.start)
    if records[0]:
        _refuse("it has text outside its records (squeue did not take ds01's format)")
    jobs: list[SqueueJob] = []
    for record in records[1:]:
        body, end, rest = record.partition(marks.end)
        fields = body.split(marks.field)
        if not end or rest != "\n" or len(fields) != len(SQUEUE_FIELDS):
            _refuse("a record does not have the fields ds01 asked for")
        job = read_job(fields)
        if isinstance(job, SqueueJob):
            jobs.append(job)
        elif fields[_COMMENT_INDEX] == JOB_COMMENT:
            _refuse(job)
    return sorted(jobs, key=SqueueJob.squeue_order)


def _refuse(why: str) -> NoReturn:
    from ds01.errors import SlurmError  # only now: it loads typing

    raise SlurmError(f"Slurm's answer (squeue) could not be read: {why}.")


def elapsed_text(seconds: int) -> str:
    """A run time as ``squeue``'s ``%M`` writes it: ``0:00``, ``1:02:03``, ``1-02:03:04``."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def parse_containers(
    answer: SqueueAnswer, now: float, *, uid: int | None = None, name: str | None = None
) -> list[ClusterContainer]:
    """squeue's ``answer`` at ``now`` (seconds since the epoch): the jobs that are
    containers (comment ``JOB_COMMENT``) and have not ended (``ENDED_STATES``), of user
    ``uid`` and named ``name`` where given, in
    ds01's order. A job's run time is ``now`` less its start (none while it pends). A
    name, which its owner wrote and other users' terminals show, comes without terminal
    escapes and control characters (``ds01.model.text.plain``; ``name`` is matched before).

    Raises:
        SlurmError: as ``read_jobs``.
    """
    found: list[ClusterContainer] = []
    for job in read_jobs(answer):
        if job.comment != JOB_COMMENT or job.job_state in ENDED_STATES:
            continue
        if (uid is not None and job.user_id != uid) or (name is not None and job.name != name):
            continue
        running = job.job_state != PENDING and job.start_time > 0
        found.append(
            ClusterContainer(
                name=plain(job.name),  # its owner's: shown on others' terminals
                user=job.user_name,
                slurm_job=job.job_id,
                state=job.job_state,
                node=job.nodes if job.job_state != PENDING else "",
                reason=job.state_reason,
                gpus=gres_gpus(job.tres_per_node),
                elapsed=elapsed_text(int(now) - job.start_time if running else 0),
            )
        )
    return found


def pending(containers: Sequence[ClusterContainer]) -> list[ClusterContainer]:
    """The containers whose job waits, in the order Slurm listed them."""
    return [c for c in containers if c.state == PENDING]
