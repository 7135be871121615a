"""Answers of Slurm's tools recorded from the test cluster (Slurm 22.05,
``scripts/slurm-cluster.sh``), for the tests of the login node's views, report and dashboard
(no tests here): node2's 4 GPUs held by alice's ``big``, her ``more`` (3 GPUs) pending for
resources, bob's ``small`` on node1, and his ``claim``, a job that is no container.

``squeue``'s answers were recorded as ``squeue --noheader --format
'%i|%j|%T|%N|%r|%b|%M|%u|%k'`` rows, the text ds01 read before its format of random marks:
``squeue_rows`` writes them as squeue prints them in that format, with ``MARKS``
(``slurm_squeue_forged.json`` in ``tests/unit`` is a whole ``squeue --json`` answer as
recorded, its jobs written so by ``squeue_answer`` too).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from ds01.core.slurm_squeue import SQUEUE_FIELDS, SqueueAnswer, SqueueMarks

#: The test users' uids on the test machine.
UIDS = {"alice": 1001, "bob": 1002, "carol": 1003}


#: The marks of the answers written here (a call's own are random).
MARKS = SqueueMarks("a1" * 16, "b2" * 16, "c3" * 16)


def squeue_job(**fields: object) -> dict[str, object]:
    """One job as squeue lists it (``SQUEUE_FIELDS``, named as ``squeue --json`` names
    them): a pending container's job of alice's, unless ``fields`` say otherwise."""
    job: dict[str, object] = {
        "job_id": 1, "name": "c1", "user_id": UIDS["alice"], "user_name": "alice",
        "job_state": "PENDING", "state_reason": "None", "nodes": "", "tres_per_node": "",
        "comment": "ds01-container", "priority": 1, "submit_time": 0, "start_time": 0,
    }  # fmt: skip
    job.update(fields)
    return job


def squeue_record(job: dict[str, object], marks: SqueueMarks = MARKS) -> str:
    """``job`` as squeue prints it with ``marks``' format: no GRES and a time of 0 as
    ``N/A``."""
    fields = [str(job[field]) for field in SQUEUE_FIELDS]
    for index, field in enumerate(SQUEUE_FIELDS):
        if field in ("tres_per_node", "submit_time", "start_time") and job[field] in ("", 0):
            fields[index] = "N/A"
    return f"{marks.start}{marks.field.join(fields)}{marks.end}\n"


def squeue_answer(*jobs: dict[str, object], marks: SqueueMarks = MARKS) -> SqueueAnswer:
    """squeue's answer listing ``jobs`` (``squeue_job``'s) with ``marks``."""
    return SqueueAnswer("".join(squeue_record(job, marks) for job in jobs), marks)


def _seconds(elapsed: str) -> int:
    """squeue's ``%M`` (``0:38``, ``1:02:03``, ``1-02:03:04``) in seconds."""
    days, _, clock = elapsed.rpartition("-")
    total = 0
    for part in clock.split(":"):
        total = total * 60 + int(part)
    return total + 86400 * int(days or 0)


def squeue_jobs(rows: str, now: int) -> list[dict[str, object]]:
    """The ``%i|%j|%T|%N|%r|%b|%M|%u|%k`` ``rows`` squeue printed at ``now`` as jobs: each
    job's start ``now`` less its run time (``%M``), its priority falling with each row, so
    that squeue's order is theirs."""
    jobs = []
    lines = rows.splitlines()
    for rank, line in enumerate(lines):
        job, name, state, nodes, reason, gres, elapsed, user, comment = line.split("|")
        ran = _seconds(elapsed)
        jobs.append(
            squeue_job(
                job_id=int(job), name=name, user_id=UIDS[user], user_name=user,
                job_state=state, state_reason=reason, nodes=nodes, tres_per_node=gres,
                comment=comment, priority=len(lines) - rank, submit_time=now - ran,
                start_time=0 if state == "PENDING" else now - ran,
            )
        )  # fmt: skip
    return jobs


#: When ``SQUEUE`` was recorded (a moment of its day: its rows' run times are what count).
SQUEUE_AT = 1796590000
#: ``squeue``'s jobs, as root (every user's).
SQUEUE_JOBS = squeue_jobs(
    textwrap.dedent(
        """\
        2|more|PENDING||Resources|gres:gpu:3|0:00|alice|ds01-container
        3|small|RUNNING|node1|None|gres:gpu:1|0:38|bob|ds01-container
        1|big|RUNNING|node2|None|gres:gpu:4|0:59|alice|ds01-container
        4|claim|RUNNING|node1|None|gres:gpu:1|0:12|bob|
        """
    ),
    SQUEUE_AT,
)
SQUEUE = squeue_answer(*SQUEUE_JOBS)

#: ``scontrol show node -d`` (trimmed: the lines between are Slurm's, unread).
NODES = textwrap.dedent(
    """\
    NodeName=node1 Arch=x86_64 CoresPerSocket=1
       CPUAlloc=1 CPUEfctv=2 CPUTot=2 CPULoad=2.07
       Gres=gpu:2
       GresDrain=N/A
       GresUsed=gpu:1
       NodeAddr=127.0.0.1 NodeHostName=localhost Port=36818 Version=22.05.8
       State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
       CfgTRES=cpu=2,mem=1G,billing=2,gres/gpu=2
    NodeName=node2 Arch=x86_64 CoresPerSocket=1
       CPUAlloc=1 CPUEfctv=2 CPUTot=2 CPULoad=2.07
       Gres=gpu:4
       GresDrain=N/A
       GresUsed=gpu:4
       State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
       CfgTRES=cpu=2,mem=1G,billing=2,gres/gpu=4
    """
)

#: The moment of the second recording (``date +%s``), in the pending test of
#: ``tests/e2e/test_slurm_cluster.py``: alice's ``first`` runs on node2 with 3 GPUs, bob's
#: ``second`` (3 GPUs) pends for resources; alice's ``big``, ``small`` and ``orphan`` ran
#: before (cancelled, completed, and failed when its step was killed).
RECORDED_AT = 1796598069

#: ``sacct --allusers --allocations --noheader --parsable2 --starttime=now-1days
#: --format=SACCT_FORMAT`` with ``SLURM_TIME_FORMAT=%s``, as alice (recorded before
#: ``SACCT_FORMAT`` ended with ``AdminComment``: each line's last field, empty, added; and
#: before it left out ``JobName``, which a job's owner writes: that column taken out).
SACCT = """\
1|alice|phd|CANCELLED by 1001|1796598057|1796598058|billing=1,cpu=1,gres/gpu=3,mem=128M,node=1|
2|alice|phd|COMPLETED|1796598060|1796598062|billing=1,cpu=1,gres/gpu=1,mem=128M,node=1|
3|alice|phd|FAILED|1796598063|1796598064|billing=1,cpu=1,gres/gpu=1,mem=128M,node=1|
4|alice|phd|RUNNING|1796598066|Unknown|billing=1,cpu=1,gres/gpu=3,mem=128M,node=1|
5|bob|msc|PENDING|Unknown|Unknown||
"""

#: ``squeue``'s jobs at the same moment.
SQUEUE_AT_SACCT = squeue_answer(*squeue_jobs(
    textwrap.dedent(
        """\
        5|second|PENDING||Resources|gres:gpu:3|0:00|bob|ds01-container
        4|first|RUNNING|node2|None|gres:gpu:3|0:03|alice|ds01-container
        """
    ),
    RECORDED_AT,
))  # fmt: skip

#: ``scontrol show node -d`` at the same moment (trimmed as ``NODES``).
NODES_AT_SACCT = textwrap.dedent(
    """\
    NodeName=node1 Arch=x86_64 CoresPerSocket=1
       CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=2.50
       Gres=gpu:2
       GresDrain=N/A
       GresUsed=gpu:0
       NodeAddr=127.0.0.1 NodeHostName=localhost Port=36818 Version=22.05.8
       State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
       CfgTRES=cpu=2,mem=1G,billing=2,gres/gpu=2
       AllocTRES=
    NodeName=node2 Arch=x86_64 CoresPerSocket=1
       CPUAlloc=1 CPUEfctv=2 CPUTot=2 CPULoad=2.50
       Gres=gpu:4
       GresDrain=N/A
       GresUsed=gpu:3
       NodeAddr=127.0.0.1 NodeHostName=localhost Port=36828 Version=22.05.8
       State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
       CfgTRES=cpu=2,mem=1G,billing=2,gres/gpu=4
       AllocTRES=cpu=1,mem=128M,gres/gpu=3
    """
)

#: The login node's report and exporter test of ``tests/e2e/test_slurm_cluster.py``: alice's
#: ``idler`` (node2's 4 GPUs) stopped by node2's ds01d for idleness, her batch job ``hog2``
#: killed in its container for memory (noted by ds01d: Slurm calls it FAILED), bob's
#: ``waiter`` pending for resources meanwhile, cancelled once it ran.
ENDS_RECORDED_AT = 1796608792

#: ``sacct --allusers --allocations --noheader --parsable2 --format=SACCT_FORMAT`` with
#: ``SLURM_TIME_FORMAT=%s``, as root, at ``ENDS_RECORDED_AT`` (``JobName``'s column, then
#: in the format, taken out).
SACCT_ENDS = """\
1|alice|phd|COMPLETED|1796608776|1796608787|billing=1,cpu=1,gres/gpu=4,mem=128M,node=1|ds01:stop_idle: Idle for 7 s, the limit is 7 s.
2|bob|msc|CANCELLED by 1002|1796608789|1796608790|billing=1,cpu=1,gres/gpu=3,mem=128M,node=1|
3|alice|phd|FAILED|1796608783|1796608785|billing=1,cpu=1,mem=64M,node=1|ds01:oom_kill: 1 process(es) killed, alice's memory total across all their containers hit
"""  # noqa: E501

#: ``squeue``'s pending jobs, as root, at ``PENDING_AT``: bob's ``waiter`` (recorded as
#: ``%i|%u|%r|%V|%k``: ``2|bob|Resources|1796608777|ds01-container``).
PENDING_AT = 1796608782
PENDING_JOB = squeue_job(
    job_id=2, name="waiter", user_id=UIDS["bob"], user_name="bob",
    state_reason="Resources", tres_per_node="gres:gpu:3", submit_time=1796608777,
)  # fmt: skip
SQUEUE_PENDING = squeue_answer(PENDING_JOB)

#: ``sacct --allusers --allocations --noheader --parsable2 --format=SACCT_FORMAT`` with
#: ``SLURM_TIME_FORMAT=%s``, as root: three jobs of root's that completed at once, the first
#: named ``x|root|phd|OUT_OF_MEMORY|1796000000|1796090000|billing=1,gres/gpu=8``, the second
#: ``y``, a newline, then ``77|root|phd|OUT_OF_MEMORY|…|billing=1,gres/gpu=8|ds01:oom_kill:
#: fake``, the third ``plain`` with a GPU. With ``JobName`` in the format (before), sacct
#: printed those names raw: an OOM-killed job of root's with 8 GPUs for 25 hours, and a
#: whole line of its own, job 77, with a note only ds01d may write.
SACCT_FORGED_NAMES = """\
1|root|root|COMPLETED|1796658705|1796658705|billing=1,cpu=1,mem=64M,node=1|
2|root|root|COMPLETED|1796658705|1796658705|billing=1,cpu=1,mem=64M,node=1|
3|root|root|COMPLETED|1796658705|1796658705|billing=1,cpu=1,gres/gpu=1,mem=64M,node=1|
"""

#: ``squeue --json`` recorded with jobs of root's whose names and comments hold newlines,
#: ``|``, Slurm's field names and terminal escapes (``unit/slurm_squeue_forged.json``), as
#: squeue prints them with ``MARKS``.
FORGED = squeue_answer(
    *json.loads((Path(__file__).parent / "unit" / "slurm_squeue_forged.json").read_text())["jobs"]
)
