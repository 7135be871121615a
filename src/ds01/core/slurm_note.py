"""A note on a Slurm job that has ended (``sacctmgr -i modify job … set AdminComment=…``):
what ``sacctmgr`` answered, and when ds01d tries again.

slurmctld can report a job ended before slurmdbd has the job's record: slurmctld sends its
accounting to slurmdbd asynchronously (and queues it while slurmdbd is away). A note written
in that gap modifies nothing; the same note written once the record arrived is kept. ds01d
therefore tries again on a bounded schedule (``retry_at``), never for a refusal.

What Slurm 22.05's ``sacctmgr -i modify job where JobID=N set AdminComment=…`` answers, as
observed on the test cluster (``scripts/slurm-cluster.sh``):

- written: exit 0, ``Modified jobs...`` and the job on standard output;
- no record of the job (yet): exit 1, ``Nothing modified`` on standard output and
  ``acct_storage_p_modify_job: Request didn't affect anything or your user doesn't have
  privilege to perform this action`` on standard error. A caller who is no administrator
  never gets this far (below), so here it means the record is not there;
- the caller is no Slurm administrator: exit 1, ``Your user doesn't have privilege to
  perform this action`` and ``Error with request: Access/permission denied``;
- slurmdbd not listening: exit 1, ``… failed to open persistent connection to
  host:localhost:36819: Connection refused``.
"""

from __future__ import annotations

import enum


class AccountingWrite(enum.Enum):
    """What one ``sacctmgr -i modify job`` did (``accounting_write``)."""

    #: The job's record holds the note now.
    WRITTEN = "written"
    #: slurmdbd has no record of the job (yet): nothing was modified. Worth another try.
    NOT_ACCOUNTED = "not_accounted"
    #: slurmdbd did not take the connection (restarting, down). Worth another try.
    UNREACHABLE = "unreachable"
    #: Anything else: a refusal (not an administrator), a malformed request. Final.
    FAILED = "failed"

    @property
    def retryable(self) -> bool:
        """Whether the same write may succeed later without anybody's help."""
        return self in (AccountingWrite.NOT_ACCOUNTED, AccountingWrite.UNREACHABLE)


#: ``sacctmgr``'s words for "no record matched" (standard output, standard error).
_NOTHING_MODIFIED = ("Nothing modified", "Request didn't affect anything")
#: ``sacctmgr``'s words for a refusal; checked first: a refusal's message also says
#: "doesn't have privilege", as does the no-record one.
_REFUSED = ("Access/permission denied",)
#: ``sacctmgr``'s words when slurmdbd does not take the connection.
_UNREACHABLE = ("Connection refused",)


def accounting_write(exit_code: int, output: str) -> AccountingWrite:
    """What ``sacctmgr -i modify job`` did, from its exit code and ``output`` (its standard
    output and error together), as the module docstring lists Slurm's answers. "Nothing
    modified" is never a written note, whatever the exit code."""
    if any(said in output for said in _REFUSED):
        return AccountingWrite.FAILED
    if any(said in output for said in _NOTHING_MODIFIED):
        return AccountingWrite.NOT_ACCOUNTED
    if exit_code == 0:
        return AccountingWrite.WRITTEN
    if any(said in output for said in _UNREACHABLE):
        return AccountingWrite.UNREACHABLE
    return AccountingWrite.FAILED


#: Seconds after the first failed write at which ds01d tries again: doubling waits, the
#: last one a minute after the first try. slurmctld sends a job's record to slurmdbd within
#: a second when both are up (the test cluster: 4.5 s after a restarted slurmdbd came back);
#: past a minute the record waits on something no retry mends.
NOTE_RETRY_OFFSETS_SECONDS = (1.0, 3.0, 7.0, 15.0, 31.0, 60.0)
#: Notes waiting for another try at most; one more is given up at once (a burst of ended
#: jobs while slurmdbd is away must not grow ds01d without bound).
MAX_PENDING_NOTES = 64


def retry_at(first_failed_at: float, retries_done: int) -> float | None:
    """When to try a note again whose first write failed (retryably) at ``first_failed_at``
    (monotonic seconds) and that has been tried ``retries_done`` times since; ``None`` once
    every try of ``NOTE_RETRY_OFFSETS_SECONDS`` was made (give up)."""
    if retries_done >= len(NOTE_RETRY_OFFSETS_SECONDS):
        return None
    return first_failed_at + NOTE_RETRY_OFFSETS_SECONDS[retries_done]


__all__ = [
    "MAX_PENDING_NOTES",
    "NOTE_RETRY_OFFSETS_SECONDS",
    "AccountingWrite",
    "accounting_write",
    "retry_at",
]
