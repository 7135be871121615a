"""Every benchmark that needs root or Docker runs to the end at its ``--quick`` size.

A benchmark nothing runs rots silently; this catches a crash, never a timing. Each starts
its own ds01d or Docker containers and removes them; this session's machine lock covers
them (they see ``DS01_MACHINE_LOCK_HELD``). The pure ones run in
``tests/unit/test_benchmarks_pure.py``; those of cluster mode on the Slurm test cluster.
"""

from __future__ import annotations

import pytest

from support import BENCHMARKS_DIR, CLUSTER_BENCHMARKS, PURE_BENCHMARKS, assert_benchmark_runs

NEEDING_DOCKER = sorted(
    path.name
    for path in BENCHMARKS_DIR.glob("bench_*.py")
    if path.name not in PURE_BENCHMARKS + CLUSTER_BENCHMARKS
)


def test_every_benchmark_is_run_by_one_of_the_two_files() -> None:
    assert set(PURE_BENCHMARKS) <= {path.name for path in BENCHMARKS_DIR.glob("bench_*.py")}
    assert "bench_container.py" in NEEDING_DOCKER
    assert set(CLUSTER_BENCHMARKS) <= {path.name for path in BENCHMARKS_DIR.glob("bench_*.py")}


@pytest.mark.parametrize("name", NEEDING_DOCKER)
def test_the_benchmark_runs(name: str) -> None:
    assert_benchmark_runs(name)


@pytest.mark.parametrize("name", CLUSTER_BENCHMARKS)
def test_the_cluster_benchmark_runs(name: str, slurm_cluster: dict[str, str]) -> None:
    assert_benchmark_runs(name, {"SLURM_CONF": slurm_cluster["SLURM_CONF"]})
