"""``container-list`` on a login node (``DS01_CLUSTER=slurm``) is budgeted against a bare
``squeue`` (at most 3 x): its usual command lines skip argparse and the command table, and it
loads nothing heavy. Each check runs in a fresh interpreter; ``squeue`` is left off ``PATH``
(the error every such command line gives then is the same through either path).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from ds01.cli.cluster_views import listed_without_parser

#: What the login node's ``container-list`` does not load: the parser and the command table,
#: ``subprocess`` (``ds01.runtime.spawn`` runs squeue), the daemon's client, models and
#: everything that loads ``inspect`` or ``typing``.
HEAVY = (
    "argparse",
    "subprocess",
    "dataclasses",
    "inspect",
    "typing",
    "socket",
    "datetime",
    "pydantic",
    "rich",
    "ds01.cli.main",
    "ds01.cli.client",
    "ds01.cli.parsing",
    "ds01.config",
    "ds01.core.slurm_view",
    "ds01.core.slurm_job",
    "ds01.daemon",
    "ds01.tui",
)


def _login_env(**extra: str) -> dict[str, str]:
    """A login node's environment with no Slurm client on ``PATH``."""
    return {**os.environ, "DS01_CLUSTER": "slurm", "PATH": "/nonexistent", **extra}


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_the_login_nodes_container_list_loads_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['container-list', '--json', '--all']\n"
        "from ds01.cli.aliases import container_list\n"
        "try:\n"
        "    container_list()\n"
        "finally:\n"
        "    print(sorted(m for m in sys.modules if m.startswith(" + repr(HEAVY) + ")))\n"
    )
    done = _run(code, _login_env())
    # It ran to squeue, which is not there: the listing's own error.
    assert done.returncode == 1 and "squeue is not installed here" in done.stderr, done.stderr
    assert ast.literal_eval(done.stdout.strip().splitlines()[-1]) == [], done.stdout


@pytest.mark.parametrize("argv", [["--json"], ["-a"], ["--all", "--json"], []])
def test_an_error_reads_as_through_the_parser(argv: list[str]) -> None:
    """The same exit code and message as ``ds01 container list ARGV`` (argparse and the
    table, ``ds01.cli.main``)."""
    fast = _run(
        f"import sys; sys.argv = ['container-list', *{argv!r}]\n"
        "from ds01.cli.aliases import container_list; container_list()",
        _login_env(),
    )
    parsed = _run(
        f"from ds01.cli.main import main; main(['container', 'list', *{argv!r}])", _login_env()
    )
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        parsed.returncode,
        parsed.stdout,
        parsed.stderr,
    )
    assert fast.returncode == 1
    if "--json" in argv:
        assert json.loads(fast.stderr)["kind"] == "slurm"


@pytest.mark.parametrize(
    "argv", [["--help"], ["--user", "bob"], ["--js"], ["--json", "extra"], ["-aj"]]
)
def test_other_command_lines_go_through_the_parser(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DS01_CLUSTER", "slurm")
    assert listed_without_parser(argv) is False


def test_a_single_server_goes_through_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DS01_CLUSTER", raising=False)
    assert listed_without_parser(["--json"]) is False
