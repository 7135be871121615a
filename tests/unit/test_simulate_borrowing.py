"""``ds01 simulate`` with borrowing above quota: hand-computed replays and the comparison."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ds01.cli.main import main
from ds01.config.borrowing import BorrowingConfig
from ds01.config.gpu_config import GpuConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import parse_config
from ds01.config.scheduler import SchedulerConfig
from ds01.gpu.simulated import SimulatedBackend
from ds01.model.device import Inventory
from ds01.sim.engine import SimulationResult, simulate
from ds01.sim.report import compare_borrowing, summarize, table_rows
from ds01.sim.trace import TRACE_COLUMNS, parse_trace

# Everyone may hold one GPU; no holds, no idle reclaim, no runtime limit.
LIMITS = """\
defaults:
  gpu_limit: 1
  max_gpus_per_container: 1
  max_containers: 5
  max_runtime_hours: null
  idle_timeout_hours: null
  gpu_hold_after_stop_minutes: 0
"""
# 30 minutes of protected runtime, a 6-minute grace.
LENT = BorrowingConfig(
    enabled=True, max_borrowed_gpus=1, min_runtime_minutes=30, reclaim_grace_minutes=6
)


@pytest.fixture
def two_gpus() -> Inventory:
    config = GpuConfig.model_validate({"simulated": {"gpus": [{}, {}]}})
    return SimulatedBackend(config).inventory()


def replay(inventory: Inventory, *rows: str, borrowing: bool) -> SimulationResult:
    text = "\n".join((",".join(TRACE_COLUMNS), *rows)) + "\n"
    config: ResourceLimitsConfig = parse_config(LIMITS, "resource-limits", "limits.yaml")
    jobs = parse_trace(text, "t.csv")
    return simulate(
        jobs, inventory, config, SchedulerConfig(), "fair", "none", None,
        LENT if borrowing else None,
    )  # fmt: skip


def test_an_idle_gpu_is_borrowed_instead_of_waiting_for_the_quota(two_gpus: Inventory) -> None:
    # alice asks for two GPUs one at a time; nobody else wants the second GPU.
    rows = ("0,alice,lab,1,,2,0", "0,alice,lab,1,,2,0")
    without = replay(two_gpus, *rows, borrowing=False)
    assert [o.wait_hours for o in without.outcomes] == [0.0, 2.0]
    lent = replay(two_gpus, *rows, borrowing=True)
    assert [(o.wait_hours, o.borrowed, o.lost_hours) for o in lent.outcomes] == [
        (0.0, False, 0.0),
        (0.0, True, 0.0),  # nobody needed it back
    ]
    assert lent.end_hours == 2.0 and without.end_hours == 4.0
    comparison = compare_borrowing(without, lent)
    assert comparison.utilisation_ratio == pytest.approx(2.0)
    assert (comparison.borrowed_jobs, comparison.reclaimed_jobs) == (1, 0)


def test_a_request_within_quota_reclaims_the_borrowed_gpu_after_the_minimum_runtime_and_grace(
    two_gpus: Inventory,
) -> None:
    # bob asks at 0.25 h: alice's borrowed job may be reclaimed from 0.5 h (its 30 minutes),
    # is warned then and stopped 6 minutes later; bob starts at 0.6 h. Her own job runs on.
    rows = ("0,alice,lab,1,,2,0", "0,alice,lab,1,,2,0", "0.25,bob,lab,1,,1,0")
    lent = replay(two_gpus, *rows, borrowing=True)
    own, borrowed, bob = lent.outcomes
    assert (own.borrowed, own.busy_hours, own.lost_hours) == (False, 2.0, 0.0)
    assert borrowed.borrowed and borrowed.busy_hours == pytest.approx(0.6)
    assert borrowed.lost_hours == pytest.approx(1.4)
    assert bob.wait_hours == pytest.approx(0.35)
    report = summarize(lent)
    assert report.groups["all"].borrowed_jobs == 1
    assert report.groups["all"].lost_gpu_hours == pytest.approx(1.4)
    headers, rows_shown = table_rows([report])
    assert headers[3:5] == ["BORROW", "BORROWED"] and rows_shown[0][3:5] == ["on", "1"]


def test_the_command_compares_without_and_with_borrowing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        textwrap.dedent(
            f"""\
            {",".join(TRACE_COLUMNS)}
            0,alice,lab,1,,2,0
            0,alice,lab,1,,2,0
            """
        )
    )
    main(["simulate", str(path), "--policy", "fair", "--reclaim", "none", "--borrowing", "both",
          "--json"])  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert [r["borrowing"] for r in document["runs"]] == [False, True]
    [comparison] = document["borrowing"]
    assert comparison["borrowed_jobs"] == 1
    assert comparison["utilisation_ratio"] > 1
