"""A cluster create waits for its job's step (``python -m ds01.cli.cluster REQUEST`` on the
node): the step's module loads only what the step uses. What only the submitting side needs
(``subprocess`` for sbatch, ``shlex`` for the job's script, ``pathlib`` for the job's output
folder) is imported where it is used. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

#: What the job's step does not load: the submitting side's modules, the CLI's parser and
#: command table, models and the daemon.
HEAVY = (
    "subprocess",
    "shlex",
    "pathlib",
    "argparse",
    "typing",
    "dataclasses",
    "pydantic",
    "ds01.cli.main",
    "ds01.config",
    "ds01.core",
    "ds01.daemon",
    "ds01.runtime",
)


def _loaded_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_job_step_loads_nothing_heavy() -> None:
    loaded = _loaded_after("import ds01.cli.cluster")
    assert "ds01.cli.cluster" in loaded
    heavy = sorted(m for m in loaded if m in HEAVY or m.startswith(tuple(h + "." for h in HEAVY)))
    assert heavy == []


def test_the_submitting_side_still_finds_what_it_needs() -> None:
    # job_script quotes with shlex, imported on use: the script runs this interpreter.
    loaded = _loaded_after(
        "from ds01.cli.cluster import job_script\n"
        "script = job_script({'name': \"it's\"})\n"
        "assert script.startswith('#!/bin/sh\\nexec ')\n"
        "assert \"it'\\\"'\\\"'s\" in script, script\n"
    )
    assert "shlex" in loaded
