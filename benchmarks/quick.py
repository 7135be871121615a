"""``--quick``, which every ``bench_*.py`` takes: its smallest run.

It checks that a benchmark still works (``tests/integration/test_benchmarks_run.py`` runs
each one so), not how fast anything is: its figures are too few to mean much. Options given
next to ``--quick`` still win over its sizes.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any


def parse_args(
    parser: argparse.ArgumentParser, quick: Mapping[str, Any], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with ``--quick`` added, which makes ``quick`` (option
    destinations to values) the defaults."""
    parser.add_argument(
        "--quick", action="store_true", help=f"smallest run, to check it works: {dict(quick)}"
    )
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args
