"""Slurm's accounting through ``sacctmgr``, and users' Unix groups through NSS, for
``ds01 admin slurm sync``; the driver's MIG capability minors for ``ds01 admin slurm gres``;
a job's record (``squeue --json``) and a node's jobs (``squeue``) for ds01d in cluster mode;
the cluster's containers (``squeue`` with a format of random marks in its environment) and
nodes (``scontrol``) for a login node's views and its exporter, its jobs' accounting
(``sacct``) for its report; a job's ``AdminComment`` (``scontrol update``, ``sacctmgr`` once
it ended: ``ds01.core.slurm_note`` reads its answer) for ds01d's notes.

Every Slurm tool is run with an argument list (never a shell); ``sacctmgr`` with ``-i`` (no
question asked) for changes and ``--parsable2 --noheader`` for listings, the names in its
arguments checked by ``ds01.core.slurm_sync``. They find the cluster the usual way:
``SLURM_CONF`` or ``/etc/slurm/slurm.conf``.
"""

from __future__ import annotations

import grp
import os
import pwd

from ds01.errors import SlurmError
from ds01.runtime.spawn import run_captured

# Only what a login node's `container-list` needs is imported at start (its budget is a bare
# `squeue`'s time): no subprocess (ds01.runtime.spawn), typing, datetime, nor the report's
# and the sync's modules.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from datetime import datetime

    from ds01.core.slurm_note import AccountingWrite
    from ds01.core.slurm_squeue import SqueueAnswer
    from ds01.core.slurm_sync import Accounting, Change

SACCT = "sacct"
SACCTMGR = "sacctmgr"
SCONTROL = "scontrol"
SQUEUE = "squeue"
#: Seconds one call of a Slurm tool may take (slurmdbd and slurmctld answer in milliseconds
#: when they are up).
SLURM_TOOL_TIMEOUT_SECONDS = 60

_LISTINGS = (
    ("qos", "format=Name,Priority,MaxTRESPU,MaxJobsPU,MaxWall"),
    ("account", "format=Account,Organization"),
    ("assoc", "format=Account,User,QOS,DefaultQOS,Fairshare"),
    ("user", "format=User,DefaultAccount"),
)


def _call_tool(
    program: str,
    args: Sequence[str],
    hint: str,
    env: Mapping[str, str] | None = None,
    *,
    whole_env: bool = False,
) -> tuple[int, str, str]:
    """``program ARGS``' exit code, standard output and error, whatever the code;
    ``SlurmError`` when it is not installed or does not answer (``hint``: what to check
    then). ``env``: variables set for it, over this process's environment (``whole_env``:
    its whole environment instead)."""
    try:
        return run_captured(
            [program, *args],
            timeout=SLURM_TOOL_TIMEOUT_SECONDS,
            env=env if whole_env or not env else {**os.environ, **env},
        )
    except FileNotFoundError:
        raise SlurmError(
            f"{program} is not installed here: install Slurm's client (Debian: slurm-client)."
        ) from None
    except TimeoutError as exc:
        raise SlurmError(
            f"{program} {' '.join(args)} did not answer in {SLURM_TOOL_TIMEOUT_SECONDS} s: {hint}"
        ) from exc


def _failed(program: str, args: Sequence[str], code: int, out: str, err: str) -> SlurmError:
    """The error of ``program ARGS`` that exited with ``code``: its last words."""
    said = (err or out).strip().splitlines()
    return SlurmError(
        f"{program} {' '.join(args)} failed (exit {code}): "
        + (" / ".join(said[-3:]) or "no message"),
        details={"argv": [program, *args], "stderr": err[-2000:]},
    )


def _run_tool(
    program: str,
    args: Sequence[str],
    hint: str,
    env: Mapping[str, str] | None = None,
    *,
    whole_env: bool = False,
) -> str:
    """``program ARGS``' standard output; ``SlurmError`` with its message when it fails
    (``hint``: what to check when it does not answer). ``env``: variables set for it, over
    this process's environment (``whole_env``: its whole environment instead)."""
    code, out, err = _call_tool(program, args, hint, env, whole_env=whole_env)
    if code != 0:
        raise _failed(program, args, code, out, err)
    return out


def _sacctmgr(args: Sequence[str]) -> str:
    return _run_tool(SACCTMGR, args, "is slurmdbd running?")


def show_job(job_id: int) -> str:
    """``scontrol show job -d ID``: Slurm's text record of the job, which prints the fields
    its owner wrote raw (``ds01.core.slurm_job.parse_job`` reads it for ``ds01 job run
    --wait``, the owner's own wait; ds01d reads ``cluster_jobs`` instead). ``SlurmError`` when
    Slurm does not know it or does not answer."""
    return _run_tool(SCONTROL, ["show", "job", "-d", str(job_id)], "is slurmctld running?")


#: Quotes an ``AdminComment`` holds in their typographic forms, which read the same:
#: ``sacctmgr`` (the path of a job that has ended) would write an apostrophe as a backquote,
#: and a double quote would end its value.
_COMMENT_QUOTES = str.maketrans({"'": "\u2019", '"': "\u201d"})


def admin_comment_text(text: str) -> str:
    """``text`` as a job's ``AdminComment`` keeps it, whichever way it is written
    (``scontrol update`` while the job runs, ``sacctmgr modify job`` once it ended): its
    apostrophes and double quotes in their typographic forms (U+2019, U+201D)."""
    return text.translate(_COMMENT_QUOTES)


def set_admin_comment(job_id: int, comment: str) -> AccountingWrite:
    """A note on the job that slurmdbd keeps (``sacct --format AdminComment``): ``scontrol
    update JobId=ID AdminComment=COMMENT`` while slurmctld holds the job; once it says the job
    has ended (its end can come before ds01d's note of what ended it: an OOM kill ends the
    container and with it the job's step), in the job's accounting record instead
    (``set_ended_job_comment``). Both write the same text, ``comment`` as
    ``admin_comment_text`` gives it. Only a Slurm administrator (root, SlurmUser) may set it.

    Returns ``WRITTEN``, or what ``set_ended_job_comment`` returns: ``NOT_ACCOUNTED`` or
    ``UNREACHABLE`` when the same write may succeed later. ``SlurmError`` when Slurm refuses
    (not an administrator) or does not answer in time."""
    from ds01.core.slurm_note import AccountingWrite

    kept = admin_comment_text(comment)
    try:
        _run_tool(
            SCONTROL,
            ["update", f"JobId={job_id}", f"AdminComment={kept}"],
            "is slurmctld running?",
        )
    except SlurmError as exc:
        if not any(said in exc.message for said in _JOB_ENDED):
            raise
        return set_ended_job_comment(job_id, comment)
    return AccountingWrite.WRITTEN


def set_ended_job_comment(job_id: int, comment: str) -> AccountingWrite:
    """``sacctmgr -i modify job where JobID=ID set AdminComment=COMMENT`` (``comment`` as
    ``admin_comment_text`` gives it): the note in the accounting record of a job that has
    ended. Returns what it did (``ds01.core.slurm_note.accounting_write``): ``WRITTEN``;
    ``NOT_ACCOUNTED`` (slurmdbd has no record of the job yet: slurmctld sends it
    asynchronously) or ``UNREACHABLE`` (slurmdbd did not take the connection), both worth
    another try. ``SlurmError`` for any other answer (not an administrator) or none in time."""
    from ds01.core.slurm_note import AccountingWrite, accounting_write

    args = [
        "-i", "modify", "job", "where", f"JobID={job_id}",
        "set", f'AdminComment="{admin_comment_text(comment)}"',
    ]  # fmt: skip
    code, out, err = _call_tool(SACCTMGR, args, "is slurmdbd running?")
    done = accounting_write(code, f"{out}\n{err}")
    if done is AccountingWrite.FAILED:
        raise _failed(SACCTMGR, args, code, out, err)
    return done


#: What ``scontrol update`` says of a job that has ended: slurmctld still holds it, or has
#: already forgotten it (``MinJobAge``).
_JOB_ENDED = ("already finished", "Invalid job id")


def live_jobs(node: str) -> dict[int, str]:
    """The jobs Slurm has on ``node`` now: job id → state (``RUNNING``, ``COMPLETING``…).
    ``SlurmError`` when slurmctld does not answer (then nothing is known: callers must not
    read that as "no job")."""
    text = _run_tool(
        SQUEUE, ["--noheader", "--nodelist", node, "--format", "%i %T"], "is slurmctld running?"
    )
    jobs: dict[int, str] = {}
    for line in text.splitlines():
        job, _, state = line.strip().partition(" ")
        if job.isdigit():
            jobs[int(job)] = state.strip()
    return jobs


def cluster_jobs() -> str:
    """``squeue --json``: every job slurmctld holds that the caller may see, as JSON (a
    job's name, comment and paths, which its owner writes, stay strings: its text answers
    print them raw). ``ds01.core.slurm_record.job_record`` reads it for ds01d's check of a
    job. Slurm 22.05 ignores ``--job``, ``--me`` and every other filter with ``--json``: the
    reader filters. ``SlurmError`` when Slurm does not answer."""
    return _run_tool(SQUEUE, ["--json"], "is slurmctld running?")


def cluster_containers() -> SqueueAnswer:
    """``squeue --noheader``: every job slurmctld holds that the caller may see, in the
    format of ``ds01.core.slurm_squeue.squeue_environment`` with marks drawn for this call
    alone (``os.urandom``, as ``secrets.token_hex``), given in squeue's environment, which
    other users cannot read (its arguments they can). ``ds01.core.slurm_squeue.read_jobs``
    reads it for a login node's views and exporter. Run as the calling user: Slurm decides
    what they may see. ``SlurmError`` when Slurm does not answer."""
    from ds01.core.slurm_squeue import SqueueAnswer, SqueueMarks, squeue_environment

    marks = SqueueMarks.drawn(os.urandom)
    env = squeue_environment(os.environ, marks)
    text = _run_tool(SQUEUE, ["--noheader"], "is slurmctld running?", env, whole_env=True)
    return SqueueAnswer(text, marks)


def show_nodes() -> str:
    """``scontrol show node -d``: every node's GRES and those in use
    (``ds01.core.slurm_view.parse_nodes``)."""
    return _run_tool(SCONTROL, ["show", "node", "-d"], "is slurmctld running?")


def accounted_jobs(start: datetime, end: datetime) -> str:
    """``sacct``'s record of every job (allocations, not steps) that was in the cluster
    between ``start`` and ``end`` (aware), of every user Slurm lets the caller see
    (``ds01.core.slurm_report.parse_accounting`` reads it). ``sacct`` takes local times:
    the window is given to it in this host's time zone, as Slurm's clients read it."""

    from ds01.core.slurm_report import SACCT_FORMAT, SACCT_TIME_FORMAT

    def local(moment: datetime) -> str:
        return moment.astimezone().strftime("%Y-%m-%dT%H:%M:%S")

    args = [
        "--allusers", "--allocations", "--noheader", "--parsable2",
        f"--starttime={local(start)}", f"--endtime={local(end)}", f"--format={SACCT_FORMAT}",
    ]  # fmt: skip
    return _run_tool(
        SACCT, args, "is slurmdbd running?", env={"SLURM_TIME_FORMAT": SACCT_TIME_FORMAT}
    )


def read_accounting() -> Accounting:
    """What ds01 owns in Slurm's accounting now (``ds01.core.slurm_sync.current_accounting``)."""
    # Here, not at the top: the sync's models (pydantic) would cost the login node's views
    # (``container-list``) a fifth of a second at every start.
    from ds01.core.slurm_sync import current_accounting

    texts = [
        _sacctmgr(["--parsable2", "--noheader", "show", entity, fmt]) for entity, fmt in _LISTINGS
    ]
    return current_accounting(*texts)


def apply_changes(changes: Sequence[Change]) -> int:
    """Run each change, in order, as ``sacctmgr -i``; stops at the first that fails
    (``SlurmError``, naming it). Returns how many ran."""
    for done, change in enumerate(changes):
        try:
            _sacctmgr(["-i", *change.argv()])
        except SlurmError as exc:
            raise SlurmError(
                f"{exc.message} ({done} of {len(changes)} change(s) made before it; run the "
                "sync again once the cause is fixed)",
                details=exc.details,
            ) from exc
    return len(changes)


def read_mig_minors() -> str:
    """The driver's list of MIG capability minors; empty without an NVIDIA driver."""
    from ds01.core.slurm_gres import MIG_MINORS_FILE

    try:
        with open(MIG_MINORS_FILE, encoding="utf-8") as stream:
            return stream.read()
    except OSError:
        return ""


def unix_group_members(groups: Collection[str]) -> dict[str, set[str]]:
    """Unix group → its members as NSS lists them: the group's member list and the users whose
    primary group it is. A group NSS does not know has none."""
    members: dict[str, set[str]] = {}
    by_gid: dict[int, str] = {}
    for name in groups:
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            continue
        members[name] = set(entry.gr_mem)
        by_gid[entry.gr_gid] = name
    if by_gid:
        for user in pwd.getpwall():
            if user.pw_gid in by_gid:
                members[by_gid[user.pw_gid]].add(user.pw_name)
    return members


def unix_groups_of(user: str) -> list[str]:
    """The names of ``user``'s Unix groups (primary and supplementary); none for a user NSS
    does not know."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return []
    names = []
    for gid in os.getgrouplist(user, entry.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


__all__ = [
    "apply_changes",
    "cluster_containers",
    "cluster_jobs",
    "live_jobs",
    "read_accounting",
    "read_mig_minors",
    "set_admin_comment",
    "set_ended_job_comment",
    "show_job",
    "show_nodes",
    "unix_group_members",
    "unix_groups_of",
]
