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
from ds01.sim.cli import mig_setups
from ds01.sim.engine import DynamicGpu, SimulationResult, simulate
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
    # Without borrowing, the second GPU stood free for 2 hours while her job waited.
    assert (without.borrowable_gpu_hours, lent.borrowable_gpu_hours) == (2.0, 0.0)
    comparison = compare_borrowing(without, lent)
    assert comparison.utilisation_ratio == pytest.approx(2.0)
    assert (comparison.borrowed_jobs, comparison.reclaimed_jobs) == (1, 0)
    assert comparison.borrowable_gpu_hours == 2.0


def test_a_request_within_quota_reclaims_the_borrowed_gpu_after_the_minimum_runtime_and_grace(
    two_gpus: Inventory,
) -> None:
    # bob asks at 0.25 h: alice's borrowed job may be reclaimed from 0.5 h (its 30 minutes),
    # is warned then and stopped 6 minutes later; bob starts at 0.6 h. Her own job runs on.
    # The 1.4 hours the borrowed job had left join the queue at once, as alice would start
    # it again; over her quota, it borrows again when bob is done (1.6 h) and ends at 3 h.
    rows = ("0,alice,lab,1,,2,0", "0,alice,lab,1,,2,0", "0.25,bob,lab,1,,1,0")
    lent = replay(two_gpus, *rows, borrowing=True)
    own, borrowed, bob = lent.outcomes
    assert (own.borrowed, own.busy_hours, own.lost_hours) == (False, 2.0, 0.0)
    assert borrowed.borrowed and borrowed.busy_hours == pytest.approx(2.0)
    assert (borrowed.requeued, borrowed.lost_hours) == (1, 0.0)
    assert borrowed.requeued_hours == pytest.approx(1.4)
    assert borrowed.requeue_wait_hours == pytest.approx(1.0)
    assert borrowed.release_hours == pytest.approx(3.0)
    assert bob.wait_hours == pytest.approx(0.35)
    report = summarize(lent)
    assert report.groups["all"].borrowed_jobs == 1
    assert report.groups["all"].requeued_gpu_hours == pytest.approx(1.4)
    assert report.groups["all"].lost_gpu_hours == 0.0
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


def test_borrowable_hours_follow_borrowings_rule_not_any_waiting_request() -> None:
    # Four A100s, GPU 3 split (3g.20gb, 2g.10gb, 1g.5gb, 1g.5gb). carol holds the 3g.20gb
    # and dave waits within quota for one: he cannot use a whole GPU, so he keeps no whole
    # GPU from being borrowed. alice's second one-GPU job waits for her quota while GPUs 1
    # and 2 stand free for 2 hours (the free MIG instances are no use to her).
    inventory = SimulatedBackend(GpuConfig()).inventory()
    rows = (
        "0,carol,lab,0,3g.20gb,4,0", "0,dave,lab,0,3g.20gb,1,0",
        "0,alice,lab,1,,2,0", "0,alice,lab,1,,2,0",
    )  # fmt: skip
    without = replay(inventory, *rows, borrowing=False)
    assert [o.wait_hours for o in without.outcomes] == [0.0, 4.0, 0.0, 2.0]
    assert without.borrowable_gpu_hours == pytest.approx(4.0)
    lent = replay(inventory, *rows, borrowing=True)
    assert [o.borrowed for o in lent.outcomes] == [False, False, False, True]
    assert lent.outcomes[3].wait_hours == 0.0


def test_week_utilisation_counts_only_work_done_within_the_traces_week(
    two_gpus: Inventory,
) -> None:
    # Submitted an hour before the week ends: without borrowing the second job runs after
    # it (169-171 h), so only the first job's last hour is inside; with borrowing both are.
    rows = ("167,alice,lab,1,,2,0", "167,alice,lab,1,,2,0")
    without = replay(two_gpus, *rows, borrowing=False)
    lent = replay(two_gpus, *rows, borrowing=True)
    assert (without.window_hours, lent.window_hours) == (168.0, 168.0)
    assert (without.busy_gpu_hours_in_window, lent.busy_gpu_hours_in_window) == (1.0, 2.0)
    comparison = compare_borrowing(without, lent)
    assert comparison.week_utilisation_without == pytest.approx(1 / (2 * 168))
    assert comparison.week_utilisation_ratio == pytest.approx(2.0)


def one_dynamic_a100() -> tuple[Inventory, dict[str, DynamicGpu], ResourceLimitsConfig]:
    """One A100 that makes its slices on demand, no instance to begin with; everyone's
    gpu_limit is 0.15 (one 1g.5gb)."""
    config = GpuConfig.model_validate({"simulated": {"gpus": [{"mig": True}]}})
    inventory, dynamic = mig_setups(config, SimulatedBackend(config).inventory(), "on-demand")
    limits: ResourceLimitsConfig = parse_config(
        LIMITS.replace("gpu_limit: 1", "gpu_limit: 0.15"), "resource-limits", "limits.yaml"
    )
    return inventory, dynamic, limits


TWO_SLICES = parse_trace(
    "\n".join((",".join(TRACE_COLUMNS), "0,alice,lab,0,1g.5gb,1,0", "0,alice,lab,0,1g.5gb,1,0"))
    + "\n",
    "t.csv",
)


def test_a_job_over_quota_borrows_a_mig_slice_made_on_demand() -> None:
    # alice asks for two 1g.5gb at once: the first gets a slice made for it; the second,
    # over quota, borrows a second slice made for it, as a create with --borrow would
    # (ds01d plans the slice before deciding, borrowing included), instead of waiting.
    inventory, dynamic, limits = one_dynamic_a100()
    lent = simulate(TWO_SLICES, inventory, limits, SchedulerConfig(), "fair", "none", dynamic,
                    LENT)  # fmt: skip
    assert [(o.wait_hours, o.borrowed) for o in lent.outcomes] == [(0.0, False), (0.0, True)]


def test_borrowable_hours_count_a_slice_that_could_be_made_on_demand() -> None:
    # The same without borrowing: the second waits for the first, one hour, while the GPU
    # could make it a slice. That hour of a 1g.5gb (1/7 GPU) is borrowable, by the rule a
    # create with --borrow follows (before, only instances that existed were counted: 0).
    inventory, dynamic, limits = one_dynamic_a100()
    without = simulate(TWO_SLICES, inventory, limits, SchedulerConfig(), "fair", "none", dynamic)
    assert [o.wait_hours for o in without.outcomes] == [0.0, 1.0]
    assert without.borrowable_gpu_hours == pytest.approx(1 / 7)
