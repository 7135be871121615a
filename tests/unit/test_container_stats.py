"""``ds01.core.container_stats``: the figures of ``container-stats`` from Docker's answers,
computed by hand here the way ``docker stats`` computes them, and ``--tail``'s bounds."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.core.container_stats import (
    MAX_TAIL_LINES,
    ProcessRow,
    cpu_percent,
    memory_used_bytes,
    parse_tail,
    pids,
    processes,
)


def sample(
    used: int,
    system: int,
    used_before: int | None,
    system_before: int | None,
    online: int | None = 4,
    percpu: int = 0,
) -> dict[str, Any]:
    """A ``stats`` answer with these CPU counters (nanoseconds)."""
    now: dict[str, Any] = {
        "cpu_usage": {"total_usage": used, "percpu_usage": [1] * percpu},
        "system_cpu_usage": system,
    }
    if online is not None:
        now["online_cpus"] = online
    before: dict[str, Any] = {"cpu_usage": {}}
    if used_before is not None:
        before["cpu_usage"]["total_usage"] = used_before
    if system_before is not None:
        before["system_cpu_usage"] = system_before
    return {"cpu_stats": now, "precpu_stats": before}


def test_cpu_percent_is_the_cpu_delta_over_the_system_delta_times_the_cpus() -> None:
    # 0.5 s of CPU while the host's 4 CPUs counted 4 s in all (1 s each): half a core.
    stats = sample(used=1_500_000_000, used_before=1_000_000_000, system=14 * 10**9,
                   system_before=10 * 10**9, online=4)  # fmt: skip
    assert cpu_percent(stats) == pytest.approx(50.0)


def test_cpu_percent_counts_cores_two_busy_cores_read_200() -> None:
    stats = sample(used=2 * 10**9, used_before=0, system=4 * 10**9, system_before=0, online=4)
    assert cpu_percent(stats) == pytest.approx(200.0)


def test_cpu_percent_falls_back_to_the_per_cpu_list_like_docker() -> None:
    stats = sample(used=10**9, used_before=0, system=8 * 10**9, system_before=0, online=None,
                   percpu=8)  # fmt: skip
    assert cpu_percent(stats) == pytest.approx(100.0)


def test_an_idle_container_reads_zero() -> None:
    stats = sample(used=5, used_before=5, system=10**9, system_before=0)
    assert cpu_percent(stats) == 0.0


@pytest.mark.parametrize(
    "stats",
    [
        pytest.param({}, id="stopped: nothing"),
        pytest.param(sample(10, 10**9, None, None), id="one-shot: no earlier sample"),
        pytest.param(sample(10, 10**9, 5, 10**9), id="host counter did not move"),
        pytest.param(sample(5, 2 * 10**9, 10, 10**9), id="restarted between samples"),
        pytest.param(sample(10, 2 * 10**9, 5, 10**9, online=None), id="no CPU count"),
    ],
)
def test_cpu_percent_is_unknown_rather_than_zero_without_two_samples(
    stats: dict[str, Any],
) -> None:
    assert cpu_percent(stats) is None


@given(
    cpus=st.integers(1, 256),
    system_delta=st.integers(1, 10**12),
    share=st.fractions(0, 1),
)
def test_cpu_percent_stays_within_the_cpus_of_the_host(
    cpus: int, system_delta: int, share: Any
) -> None:
    # A container can at most use all the host's CPUs: system_delta / cpus each.
    cpu_delta = int(system_delta * share)
    stats = sample(cpu_delta, system_delta, 0, 0, online=cpus)
    value = cpu_percent(stats)
    assert value is not None and 0 <= value <= 100 * cpus + 1e-6


def test_memory_leaves_out_the_droppable_page_cache_on_cgroup_v1_and_v2() -> None:
    v1 = {"memory_stats": {"usage": 900, "stats": {"total_inactive_file": 300}, "limit": 10**6}}
    v2 = {"memory_stats": {"usage": 900, "stats": {"inactive_file": 100}}}
    no_detail = {"memory_stats": {"usage": 900}}
    assert [memory_used_bytes(s) for s in (v1, v2, no_detail)] == [600, 800, 900]
    assert memory_used_bytes({"memory_stats": {}}) is None
    assert memory_used_bytes({}) is None


def test_pids_are_docker_current_count_or_unknown() -> None:
    assert pids({"pids_stats": {"current": 3}}) == 3
    assert pids({"pids_stats": {}}) is None
    assert pids({}) is None


def test_processes_read_the_ps_columns_by_title_the_command_whole() -> None:
    top = {
        "Titles": ["PID", "USER", "%CPU", "RSS", "COMMAND"],
        "Processes": [
            ["4242", "alice", "0.3", "688", "/sbin/docker-init -- /bin/sh"],
            ["4300", "1001", "12.5", "20480", "python train.py --epochs 3"],
            ["x", "alice", "0", "0", "not a process"],
            ["4301", "alice", "?", "-", "ps said nothing useful"],
        ],
    }
    assert processes(top) == [
        ProcessRow(4242, "alice", 0.3, 688 * 1024, "/sbin/docker-init -- /bin/sh"),
        ProcessRow(4300, "1001", 12.5, 20480 * 1024, "python train.py --epochs 3"),
        ProcessRow(4301, "alice", None, None, "ps said nothing useful"),
    ]
    assert processes({}) == []


@pytest.mark.parametrize(
    ("text", "lines"),
    [("all", None), ("ALL", None), ("0", 0), ("2", 2), (str(MAX_TAIL_LINES), MAX_TAIL_LINES)],
)
def test_tail_takes_a_bounded_number_of_lines_or_all(text: str, lines: int | None) -> None:
    assert parse_tail(text) == lines


@pytest.mark.parametrize("text", ["-1", "", "ten", str(MAX_TAIL_LINES + 1), "1e3", "٣"])
def test_tail_refuses_anything_else_and_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=f"from 0 to {MAX_TAIL_LINES} or 'all'"):
        parse_tail(text)
