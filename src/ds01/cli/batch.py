"""``ds01 job run``: batch work on a Slurm cluster (``cluster: slurm``).

A container that runs one command to completion and is removed: ds01d checks the request as
a ``container-create``'s and answers with the job's ``sbatch`` options; this submits the job
as the user (``ds01.cli.cluster``), whose step on the node Slurm picks creates the container
with the command, copies its output into the job's output file
(``~/.ds01/jobs/NAME-JOBID.out``) and ends with the command's exit status. ``--wait`` waits
for the job (Slurm's record, every second) and exits with that status. On a single server
ds01d refuses it (exit 2): no job would own the container's end there.

Imported at every start of the CLI (the command table), so standard library only at module
level.
"""

from __future__ import annotations

import argparse
import os
import time

from ds01.cli import render
from ds01.cli.client import ApiError, Ds01Client
from ds01.cli.command import Command
from ds01.cli.parsing import EveryUse, UsageError, gpu_count, positive_number
from ds01.errors import Ds01Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def default_name(now: float, token: str) -> str:
    """A job's container name when ``--name`` is not given: ``job-YYYYMMDD-HHMMSS-TOKEN``
    (UTC; ``token`` tells two jobs of one second apart)."""
    return "job-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{token}"


def the_command(words: list[str]) -> list[str]:
    """The command after ``--`` (argparse keeps the ``--`` in a remainder); ``UsageError``
    when there is none."""
    command = words[1:] if words[:1] == ["--"] else words
    if not command:
        raise UsageError("What should the job run? `ds01 job run [OPTIONS] -- COMMAND ...`")
    return command


def configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", "-i", required=True, help="image name from `image-list`")
    gpus = p.add_mutually_exclusive_group()
    gpus.add_argument("--gpus", "-g", type=gpu_count, default=0, help="number of whole GPUs")
    gpus.add_argument(
        "--mig", action=EveryUse, default=[], metavar="PROFILE", help="a MIG slice, e.g. 3g.20gb"
    )
    p.add_argument("--cpus", type=positive_number, help="CPU cores [default: your limit]")
    p.add_argument("--memory", "-m", metavar="SIZE", help="memory, e.g. 16G [your limit]")
    p.add_argument(
        "--runtime-hours",
        type=positive_number,
        metavar="HOURS",
        help="the job's time limit (at most your max_runtime_hours) [that limit]",
    )
    p.add_argument("--name", metavar="NAME", help="the job's and its container's name")
    p.add_argument(
        "--wait", action="store_true", help="wait for the end; exit with the command's status"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of sentences")
    # Not "command": the parser keeps the Command it runs under that name.
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="what to run")


def run_run(args: argparse.Namespace) -> None:
    from ds01.cli import cluster

    body: dict[str, Any] = {
        "name": args.name or default_name(time.time(), os.urandom(2).hex()),
        "image": args.image,
        "gpus": args.gpus,
        "mig": args.mig,
        "cpus": args.cpus,
        "memory": args.memory,
        "runtime_hours": args.runtime_hours,
        "command": the_command(args.words),
        "interface": "job",
        "queue": False,
    }
    try:
        Ds01Client().call("POST", "/v1/containers", body=body)
    except ApiError as exc:
        if exc.error_kind != cluster.JOB_REQUIRED_KIND:
            raise
        options: list[str] = exc.details["sbatch"]
    else:  # ds01d refuses a command outside cluster mode: never a container here
        raise Ds01Error("ds01d made a container for a batch job without a Slurm job.")
    job = cluster.submit(body, options)
    answer: dict[str, Any] = {
        "name": body["name"],
        "slurm_job": job,
        "output": cluster.output_file(body["name"], job),
        "sbatch": options,
    }
    if not args.json:
        render.ok(f"Submitted job {body['name']} as Slurm job {job}.")
        render.echo(f"  Output: {answer['output']}   Follow it: squeue -n {body['name']}")
    if not args.wait:
        render.emitted_json(args.json, answer)
        return
    try:
        answer["exit_code"] = code = cluster.wait_for(job)
    except KeyboardInterrupt:  # the job goes on: only the waiting stops
        raise SystemExit(130) from None
    if not render.emitted_json(args.json, answer):
        render.echo(f"Job {body['name']} (Slurm job {job}) ended with exit status {code}.")
    raise SystemExit(code)


JOB_COMMANDS = (
    Command(
        ("job", "run"),
        None,
        "Run a command to completion in a container, as a Slurm job.",
        "On a Slurm cluster: submit a job that runs COMMAND in a new container on the node\n"
        "Slurm picks, writes its output to ~/.ds01/jobs/NAME-JOBID.out and removes the\n"
        "container at the end. --wait waits and exits with the command's status.\n\n"
        "examples:\n"
        "  ds01 job run --image IMAGE --gpus 1 -- python train.py\n"
        "  ds01 job run --image IMAGE --wait --runtime-hours 2 -- make test",
        configure_run,
        run_run,
    ),
)

__all__ = ["JOB_COMMANDS", "default_name", "the_command"]
