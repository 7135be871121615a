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

import contextlib
import json
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from ds01.cli.client import Ds01Client
from ds01.errors import Ds01Error, SlurmError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType
    from typing import Any

SBATCH = "sbatch"
#: Where a job's own output goes, under the user's home (as a cluster shares it), by
#: sbatch's ``%x`` job name (the container's) and ``%j`` job id: what the step says when
#: ds01d refuses or fails. Not /tmp: another user could take the name there first.
JOB_OUTPUT_DIR = (".ds01", "jobs")
JOB_OUTPUT_NAME = "%x-%j.out"


def _jobs_folder() -> Path:
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
#: The exit status of a process killed with SIGKILL (128 + 9): the OOM killer's.
OOM_KILLED_STATUS = 137
#: The kind of ds01d's answer that asks for a job (``ds01.errors.SlurmJobRequired``).
JOB_REQUIRED_KIND = "slurm_job_required"


def job_script(request: dict[str, Any]) -> str:
    """The job's script: this interpreter runs ``step`` with ``request`` (the create's body)."""
    command = [sys.executable, "-m", "ds01.cli.cluster", json.dumps(request, sort_keys=True)]
    return "#!/bin/sh\nexec " + " ".join(shlex.quote(word) for word in command) + "\n"


def submit(request: dict[str, Any], options: list[str]) -> int:
    """Submit the container's job as the user; returns its id.

    Raises:
        SlurmError: sbatch is missing or refused (its message: an unknown account, a QOS
            limit Slurm checks at submission, no node with enough GPUs).
    """
    with _sbatch(request, options, wait=False) as sbatch:
        return _job_id(sbatch)


def submit_and_wait(
    request: dict[str, Any], options: list[str], submitted: Callable[[int], None]
) -> int:
    """Submit the job as ``submit`` does, call ``submitted`` with its id, and wait until it
    ends (``sbatch --wait``); returns the job's exit status (1 when a signal ended it).

    Raises:
        SlurmError: as ``submit``.
    """
    with _sbatch(request, options, wait=True) as sbatch:
        submitted(_job_id(sbatch))
        return sbatch.wait()


@contextlib.contextmanager
def _sbatch(
    request: dict[str, Any], options: list[str], *, wait: bool
) -> Iterator[subprocess.Popen[str]]:
    """``sbatch`` running with the job's script written to it; killed if left early."""
    argv = [SBATCH, "--parsable", *(["--wait"] if wait else []), f"--output={job_output()}"]
    argv += options
    try:
        sbatch = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except FileNotFoundError:
        raise SlurmError(
            "sbatch is not installed here: this is a Slurm cluster's node, install Slurm's "
            "client (Debian: slurm-client)."
        ) from None
    with sbatch:
        assert sbatch.stdin is not None
        sbatch.stdin.write(job_script(request))
        sbatch.stdin.close()
        try:
            yield sbatch
        finally:
            if sbatch.poll() is None:  # Ctrl-C while waiting: the job goes on
                sbatch.terminate()


def _job_id(sbatch: subprocess.Popen[str]) -> int:
    """The job id sbatch prints first (``--parsable``: ``ID[;CLUSTER]``); ``SlurmError`` with
    sbatch's message when it refused the job."""
    assert sbatch.stdout is not None and sbatch.stderr is not None
    line = sbatch.stdout.readline().strip()
    if not line:
        sbatch.wait()
        raise SlurmError(
            f"Slurm refused the job: {sbatch.stderr.read().strip() or 'no message'}",
            details={"argv": sbatch.args},
        )
    return int(line.split(";")[0])


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
    body = {**request, "slurm_job": int(os.environ["SLURM_JOB_ID"]), "queue": False}
    try:
        client.request("POST", "/v1/containers", body=body)
    except Ds01Error as exc:  # refused: nothing of this job's was made
        print(f"ds01: {exc.message}", file=sys.stderr)
        return 1
    except _Stopped:
        # Made or not: a container of that name may be another of the user's, so it is
        # left to ds01d's reaper, which removes only the one labelled with this job.
        return 0
    status = 0
    try:
        client.request("POST", Ds01Client.container_path(name, "start"))
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
