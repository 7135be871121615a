"""Cluster mode on the user's side: a ``container-create`` submitted as a Slurm job, and the
job's step that has the node's ds01d create the container and waits on it.

- ``submit``: ds01d answered a create with ``slurm_job_required`` and the job's ``sbatch``
  options (``ds01.daemon.slurm_jobs``); this runs ``sbatch`` **as the user** (this process
  is theirs: munge tells Slurm who they are), with a script that runs ``step`` on the node
  Slurm picks. No ds01 transport between hosts: Slurm carries the request.
- ``step`` (``python -m ds01.cli.cluster REQUEST``, the job's script): asks this node's
  ds01d (``DS01_SOCKET``; ``%n`` in it is the node's name, ``SLURMD_NODENAME``) to create the
  container in job ``SLURM_JOB_ID`` and start it, then waits while it runs. The container's
  exit ends the step, hence the job; ``scancel`` and the time limit send SIGTERM, on which
  the container is removed at once. Either way the container is removed when the step ends:
  no container without a job (ds01d's reaper removes one whose step could not).
- A batch job (``ds01 job run``: the request has a ``command``): the step copies the
  container's output to its own (the job's output file) as it comes, and ends with the
  command's exit status, which becomes the job's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from ds01.cli.client import Ds01Client
from ds01.errors import Ds01Error, SlurmError
from ds01.exitcodes import OOM_KILLED_STATUS

# The job's step (``python -m ds01.cli.cluster``) is part of every cluster create's wait:
# what only the submitting side uses (``subprocess``, ``shlex``, ``pathlib`` and the
# ``urllib`` it loads) is imported where it is used (test_cluster_step_startup.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from types import FrameType
    from typing import Any

SBATCH = "sbatch"
#: Where a job's own output goes, under the user's home (as a cluster shares it), by
#: sbatch's ``%x`` job name (the container's) and ``%j`` job id: what the step says when
#: ds01d refuses or fails. Not /tmp: another user could take the name there first.
JOB_OUTPUT_DIR = (".ds01", "jobs")
JOB_OUTPUT_NAME = "%x-%j.out"


def _jobs_folder() -> Path:
    import pwd
    from pathlib import Path

    return Path(pwd.getpwuid(os.getuid()).pw_dir).joinpath(*JOB_OUTPUT_DIR)


def job_output() -> str:
    """The ``--output`` pattern of the caller's jobs; makes its folder (mode 0700) if needed."""
    folder = _jobs_folder()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SlurmError(
            f"cannot make {folder} for the job's output: {exc.strerror}; your home must be "
            "yours and shared with the cluster's nodes."
        ) from None
    return str(folder / JOB_OUTPUT_NAME)
def output_file(name: str, job: int) -> str:
    """Where job ``job`` of container ``name`` writes its output (``job_output``'s pattern
    filled in)."""
    pattern = str(_jobs_folder() / JOB_OUTPUT_NAME)
    return pattern.replace("%x", name).replace("%j", str(job))


#: Seconds between two looks of the step at its container.
STEP_POLL_SECONDS = 1.0
#: Looks at a batch container's row for its exit status after its output ended.
EXIT_STATUS_LOOKS = 50
#: The kind of ds01d's answer that asks for a job (``ds01.errors.SlurmJobRequired``).
JOB_REQUIRED_KIND = "slurm_job_required"


def job_script(request: dict[str, Any]) -> str:
    """The job's script: this interpreter runs ``step`` with ``request`` (the create's body)."""
    import shlex

    command = [sys.executable, "-m", "ds01.cli.cluster", json.dumps(request, sort_keys=True)]
    return "#!/bin/sh\nexec " + " ".join(shlex.quote(word) for word in command) + "\n"


def submit(request: dict[str, Any], options: list[str]) -> int:
    """Submit the container's job as the user; returns its id.

    Raises:
        SlurmError: sbatch is missing or refused (its message: an unknown account, a QOS
            limit Slurm checks at submission, no node with enough GPUs).
    """
    import subprocess

    argv = [SBATCH, "--parsable", f"--output={job_output()}", *options]
    try:
        done = subprocess.run(
            argv, input=job_script(request), capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise SlurmError(
            "sbatch is not installed here: this is a Slurm cluster's node, install Slurm's "
            "client (Debian: slurm-client)."
        ) from None
    if done.returncode != 0:
        raise SlurmError(
            f"Slurm refused the job: {done.stderr.strip() or done.stdout.strip()}",
            details={"argv": argv},
        )
    return int(done.stdout.strip().split(";")[0])


def wait_for(job: int) -> int:
    """Wait until job ``job`` ends (Slurm's record, every ``STEP_POLL_SECONDS``); returns
    its exit status (128 + N when signal N ended it).

    Raises:
        SlurmError: Slurm does not answer, or no longer knows the job.
    """
    from ds01.core.slurm_job import ENDED_STATES, parse_job
    from ds01.runtime.slurm import show_job

    while True:
        record = parse_job(show_job(job))
        if record.state in ENDED_STATES:
            return 1 if record.exit_code is None else record.exit_code
        time.sleep(STEP_POLL_SECONDS)


class _Stopped(Exception):
    """SIGTERM or SIGINT reached the step: scancel, the time limit, or a node going down."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


def step(request: dict[str, Any]) -> int:
    """The job's step (see the module docstring); returns its exit status."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    name = str(request["name"])
    client = Ds01Client()
    # Created and started in one request: the job's container runs one round trip sooner.
    body = {
        **request, "slurm_job": int(os.environ["SLURM_JOB_ID"]), "queue": False, "start": True
    }  # fmt: skip
    try:
        client.request("POST", "/v1/containers", body=body)
    except Ds01Error as exc:
        print(f"ds01: {exc.message}", file=sys.stderr)
        if exc.details.get("created"):  # made, but its start failed: this job's to remove
            _remove(client, name)
        # Otherwise refused: nothing of this job's was made.
        return 1
    except _Stopped:
        # Made or not: a container of that name may be another of the user's, so it is
        # left to ds01d's reaper, which removes only the one labelled with this job.
        return 0
    status = 0
    try:
        if request.get("command"):
            status = _batch_output(client, name)
        else:
            while _row(client, name).get("status") == "running":
                time.sleep(STEP_POLL_SECONDS)
    except _Stopped:
        pass
    except Ds01Error as exc:
        print(f"ds01: {exc.message}", file=sys.stderr)
        status = 1
    finally:
        _remove(client, name)
    return status


def _row(client: Ds01Client, name: str) -> dict[str, Any]:
    """The container's row in ``container-list`` (empty once it is gone)."""
    rows = client.request("GET", "/v1/containers")
    return next((r for r in rows if r["name"] == name), {})


def _batch_output(client: Ds01Client, name: str) -> int:
    """Copy a batch container's output to the step's until it stops; its exit status."""
    chunks = client.stream(
        "GET", Ds01Client.container_path(name, "logs"), query={"follow": True}
    )
    out = sys.stdout.buffer
    try:
        for chunk in chunks:
            out.write(chunk)
            out.flush()
    finally:
        chunks.close()
    row: dict[str, Any] = {}
    for _ in range(EXIT_STATUS_LOOKS):  # Docker's list may lag its log stream's end
        row = _row(client, name)
        if row.get("exit_code") is not None:
            break
        time.sleep(STEP_POLL_SECONDS / 10)
    code = row.get("exit_code")
    if code is None:
        print(f"ds01: the exit status of {name} is not known", file=sys.stderr)
        return 1
    if row.get("oom_kills") or code == OOM_KILLED_STATUS:
        print(
            f"ds01: {name} ended with {code}: killed (SIGKILL), as the OOM killer does when "
            "the job's memory (--mem) is used up",
            file=sys.stderr,
        )
    return int(code)


def _remove(client: Ds01Client, name: str) -> None:
    # A second signal must not cut the removal short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        client.request("DELETE", Ds01Client.container_path(name), query={"force": True})
    except Ds01Error as exc:  # ds01d's reaper removes it once the job is gone
        print(f"ds01: {name} not removed: {exc.message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(step(json.loads(sys.argv[1])))
