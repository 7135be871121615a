"""The benchmarks that need neither root nor Docker run to the end at their ``--quick`` size.

A benchmark nothing runs rots silently; this catches a crash, never a timing. The others
run in ``tests/integration/test_benchmarks_run.py``.
"""

from __future__ import annotations

import pytest

from support import PURE_BENCHMARKS, assert_benchmark_runs


@pytest.mark.parametrize("name", PURE_BENCHMARKS)
def test_the_benchmark_runs(name: str) -> None:
    assert_benchmark_runs(name)
