"""Every ``--help`` of ds01's commands against ``docker ps --help`` (issue 15's budget: any
``--help`` at most 2 x ``docker ps --help``).

Every form (``ds01``, ``ds01 NOUN``, ``ds01 NOUN VERB`` and a command's verb arguments, as
``ds01 admin slurm sync``; ``ds01d``; each hyphenated command), as ``ds01.cli.help_record``
finds them in the live parsers, is run through its installed console script (the one next
to this interpreter) at each width: the default (``$COLUMNS`` unset; standard output is a
pipe, so 80) and ``COLUMNS`` 80, 120 and 200. Rounds are interleaved, a ``docker ps --help``
after each form's widths, so that a change in the machine's load reaches both sides alike.
Each figure is the median of its rounds; the ratio is against the median ``docker ps
--help``. Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_help.py [--json] [--rounds N]
[--forms N] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ds01.cli.help_record import forms
from quick import parse_args

BIN_DIR = Path(sys.executable).parent
#: The widths each form runs at: None leaves ``$COLUMNS`` unset.
WIDTHS: tuple[str | None, ...] = (None, "80", "120", "200")
BUDGET_RATIO = 2.0


def timed(command: Sequence[str], env: Mapping[str, str]) -> float:
    """Seconds ``command`` takes to run to completion, its output to a pipe."""
    start = time.perf_counter()
    subprocess.run(list(command), capture_output=True, env=env, check=True)
    return time.perf_counter() - start


def environment(columns: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    return env


def command_line(words: tuple[str, ...]) -> list[str]:
    return [str(BIN_DIR / words[0]), *words[1:], "--help"]


def measure(
    every: Sequence[tuple[str, ...]], rounds: int
) -> tuple[dict[tuple[tuple[str, ...], str | None], float], float]:
    """Median seconds of each (form, width), and of ``docker ps --help``."""
    times: dict[tuple[tuple[str, ...], str | None], list[float]] = {}
    docker: list[float] = []
    for _ in range(rounds):
        for words in every:
            for columns in WIDTHS:
                took = timed(command_line(words), environment(columns))
                times.setdefault((words, columns), []).append(took)
            docker.append(timed(["docker", "ps", "--help"], environment(None)))
    return {k: statistics.median(v) for k, v in times.items()}, statistics.median(docker)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each form and width")
    parser.add_argument("--forms", type=int, default=0, help="only the first N forms (0: all)")
    args = parse_args(parser, {"rounds": 1, "forms": 3}, argv)
    every = list(forms())
    every = every[: args.forms] if args.forms else every
    medians, docker = measure(every, args.rounds)
    rows = sorted(medians.items(), key=lambda item: -item[1])
    worst = rows[0][1] / docker
    result = {
        "docker_ps_help_ms": round(docker * 1000, 2),
        "forms": len(every),
        "widths": [c or "default" for c in WIDTHS],
        "rounds": args.rounds,
        "worst_ratio": round(worst, 2),
        "median_ratio": round(statistics.median(medians.values()) / docker, 2),
        "over_budget": [
            {"command": " ".join(w), "columns": c or "default", "ratio": round(t / docker, 2)}
            for (w, c), t in rows
            if t / docker > BUDGET_RATIO
        ],
        "slowest": [
            {"command": " ".join(w), "columns": c or "default", "ms": round(t * 1000, 2)}
            for (w, c), t in rows[:5]
        ],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    runs = len(every) * args.rounds
    print(f"docker ps --help: {result['docker_ps_help_ms']} ms (median of {runs})")
    print(f"{len(every)} forms x {len(WIDTHS)} widths, {args.rounds} rounds each")
    print(f"worst ratio {result['worst_ratio']} (budget {BUDGET_RATIO}), ", end="")
    print(f"median {result['median_ratio']}")
    for row in result["slowest"]:
        print(f"  {row['ms']:7.2f} ms  {row['command']} --help  (COLUMNS {row['columns']})")
    print(f"over budget: {len(result['over_budget'])}")


if __name__ == "__main__":
    main()
