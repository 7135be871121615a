"""``ds01 simulate``: trace parsing, the discrete-event replay, metrics and the command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest

from ds01.cli.main import main
from ds01.config.gpu_config import GpuConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import parse_config
from ds01.config.scheduler import SchedulerConfig
from ds01.errors import InvalidInput
from ds01.gpu.simulated import SimulatedBackend
from ds01.model.device import Inventory
from ds01.sim.cli import mig_setups
from ds01.sim.engine import JobOutcome, SimulationResult, simulate, user_setups
from ds01.sim.reclaim import (
    RECLAIMS,
    ReferenceIdleState,
    reference_check,
    reference_first_check,
)
from ds01.sim.report import jain_index, nearest_rank_percentile, service_share, summarize
from ds01.sim.trace import TRACE_COLUMNS, parse_trace

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TRACE = REPO / "examples/traces/lab-week.csv"
HEADER = ",".join(TRACE_COLUMNS)
FCFS = SchedulerConfig.first_come_first_served()

# Nothing limits anyone, and nothing is reclaimed: only the queue decides.
OPEN_LIMITS = """\
defaults:
  gpu_limit: null
  max_gpus_per_container: null
  max_containers: null
  max_runtime_hours: null
  idle_timeout_hours: null
  gpu_hold_after_stop_minutes: {hold}
"""


def limits(text: str) -> ResourceLimitsConfig:
    return parse_config(textwrap.dedent(text), "resource-limits", "resource-limits.yaml")


def trace(*rows: str) -> str:
    return "\n".join((HEADER, *rows)) + "\n"


def outcome_of(result: SimulationResult, user: str) -> list[JobOutcome]:
    return [o for o in result.outcomes if o.job.user == user]


def waits(result: SimulationResult) -> dict[str, float | None]:
    return {o.id: o.wait_hours for o in result.outcomes}


# --------------------------------------------------------------------------------------------
# The trace format
# --------------------------------------------------------------------------------------------


def test_a_trace_parses_in_submission_order() -> None:
    jobs = parse_trace(
        "# a comment\n"
        "user,group,submit_hours,gpus,mig,duration_hours,idle_tail_hours\n"
        "\n"
        "bob,phd,2.5,2,,10,0.5\n"
        "alice,msc,0.25,0,3g.20gb,1.5,0\n",
        "t.csv",
    )
    assert [(j.line, j.user, j.submit_hours) for j in jobs] == [(5, "alice", 0.25), (4, "bob", 2.5)]
    assert jobs[0].request.mig_profiles == ("3g.20gb",)
    assert jobs[1].request.whole_gpus == 2
    assert (jobs[1].duration_hours, jobs[1].idle_tail_hours) == (10.0, 0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "t.csv: the trace is empty"),
        (HEADER + "\n", "t.csv: the trace has a header but no job"),
        ("submit_hours,user\n", "t.csv:1: missing column 'group'"),
        (HEADER + ",extra\n", "t.csv:1: unknown column 'extra'"),
        (trace("0,alice,lab,1,,1"), "t.csv:2: expected 7 fields, found 6"),
        (trace("soon,alice,lab,1,,1,0"), "t.csv:2: submit_hours must be a number of hours"),
        (trace("0,alice,lab,1,,-1,0"), "t.csv:2: duration_hours must be a finite number >= 0"),
        (trace("0,alice,lab,1,,1,nan"), "t.csv:2: idle_tail_hours must be a finite number >= 0"),
        (trace("0,alice,lab,1.5,,1,0"), "t.csv:2: gpus must be a whole number 0..64"),
        (trace("0,alice,lab,0,,1,0"), "t.csv:2: the job asks for no GPU"),
        (trace("0,alice,lab,1,1g.5gb,1,0"), "t.csv:2: A container gets either whole GPUs"),
        (trace("0,alice,lab,0,3g.20gb+1g.5gb,1,0"), "t.csv:2: A container gets one MIG instance"),
        (trace("0,alice,lab,0,1g.5GB,1,0"), "t.csv:2: Unknown MIG profile '1g.5GB'"),
        (trace("0,al ice,lab,1,,1,0"), "t.csv:2: user must be a name without spaces"),
        (
            trace("0,alice,lab,1,,1,0", "# moved", "1,alice,phd,1,,1,0"),
            "t.csv:4: user 'alice' is in group 'phd' here and in group 'lab' on line 2",
        ),
    ],
)
def test_trace_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_trace(text, "t.csv")
    assert caught.value.message.startswith(message)
    assert caught.value.exit_code == 2


# --------------------------------------------------------------------------------------------
# The replay
# --------------------------------------------------------------------------------------------


@pytest.fixture
def one_gpu() -> Inventory:
    return SimulatedBackend(GpuConfig.model_validate({"simulated": {"gpus": [{}]}})).inventory()


def test_a_tiny_trace_gives_the_hand_computed_waits(one_gpu: Inventory) -> None:
    # One GPU, a 15-minute hold after every stop.
    #   alice  submits 0,   computes 2 h, idles 0.5 h: stop 2.5, release 2.75
    #   bob    submits 1,   starts 2.75 (waited longest), stop 3.75, release 4.0
    #   carol  submits 1.5, starts 4.0, stop 5.0, release 5.25
    jobs = parse_trace(
        trace("0,alice,lab,1,,2,0.5", "1,bob,lab,1,,1,0", "1.5,carol,lab,1,,1,0"), "t.csv"
    )
    config = limits(OPEN_LIMITS.format(hold=15))
    for name, policy in (("fair", SchedulerConfig()), ("fcfs", FCFS)):
        result = simulate(jobs, one_gpu, config, policy, name)
        assert waits(result) == {"job-2": 0.0, "job-3": 1.75, "job-4": 2.5}
        assert result.end_hours == 5.25
        report = summarize(result)
        overall = report.groups["all"]
        assert report.span_hours == 5.25
        assert overall.busy_gpu_hours == 4.0
        assert overall.utilisation == pytest.approx(4 / 5.25)
        assert overall.idle_gpu_hours == pytest.approx(0.5 + 3 * 0.25)
        assert overall.mean_wait_hours == pytest.approx((1.75 + 2.5) / 3)
        assert overall.p95_wait_hours == 2.5
        shares = [1.0, 1 / 2.75, 1 / 3.5]
        assert overall.jain_index == pytest.approx(
            sum(shares) ** 2 / (3 * sum(s * s for s in shares))
        )


def test_limits_cut_idle_tails_and_runs_and_null_hold_counts_as_none(one_gpu: Inventory) -> None:
    config = limits(
        """
        defaults: {gpu_hold_after_stop_minutes: null}
        groups:
          students:
            unix_group: lab-students
            idle_timeout_hours: 1
            max_runtime_hours: 3
        """
    )
    jobs = parse_trace(trace("0,alice,students,1,,2.5,5", "0,bob,other,1,,1,0"), "t.csv")
    setups = user_setups(jobs, config)
    alice = setups["alice"]
    assert (alice.max_runtime_hours, alice.idle_timeout_hours, alice.hold_hours) == (3.0, 1.0, 0.0)
    assert alice.busy_hours(jobs[0]) == 2.5
    assert alice.held_tail_hours(jobs[0]) == 0.5  # the runtime limit stops it at 3 h
    assert setups["bob"].priority == 50  # a group the config does not define: the defaults
    result = simulate(jobs, one_gpu, config, SchedulerConfig(), "fair")
    assert [o.release_hours for o in result.outcomes] == [3.0, 4.0]


def test_fair_share_and_backfill_beat_fcfs_on_a_crafted_trace() -> None:
    inventory = SimulatedBackend(GpuConfig()).inventory()  # 3 whole GPUs + MIG GPU 3
    jobs = parse_trace(
        trace(
            "0,hog,lab,2,,10,0",  # hog holds all three whole GPUs: two until 10 h,
            "0,hog,lab,1,,5,0",  # one until 5 h
            "1,hog,lab,1,,10,0",  # and asks for more,
            "1.1,newbie,lab,1,,1,0",  # just before a newcomer does;
            "2,student,lab,0,1g.5gb,1,0",  # a MIG slice nobody in line needs.
        ),
        "t.csv",
    )
    config = limits(OPEN_LIMITS.format(hold=0))
    fair = waits(simulate(jobs, inventory, config, SchedulerConfig(), "fair"))
    fcfs = waits(simulate(jobs, inventory, config, FCFS, "fcfs"))
    # Fair share: the GPU freed at 5 h goes to the newcomer, not to the heavy user.
    assert fair["job-5"] == pytest.approx(5 - 1.1)
    assert fcfs["job-5"] == pytest.approx(10 - 1.1)
    # The heavy user's request waits for the newcomer's hour instead.
    assert fair["job-4"] == pytest.approx(6 - 1) and fcfs["job-4"] == pytest.approx(5 - 1)
    # Backfill: the slice starts at once instead of waiting behind the queue's head.
    assert fair["job-6"] == 0
    assert fcfs["job-6"] == pytest.approx(10 - 2)


def test_a_job_that_can_never_start_is_reported_not_started(one_gpu: Inventory) -> None:
    jobs = parse_trace(trace("0,alice,lab,2,,1,0", "0.5,bob,lab,1,,1,0"), "t.csv")
    config = limits(OPEN_LIMITS.format(hold=0))
    result = simulate(jobs, one_gpu, config, SchedulerConfig(), "fair")
    assert waits(result) == {"job-2": None, "job-3": 0.0}
    overall = summarize(result).groups["all"]
    assert (overall.jobs, overall.not_started) == (2, 1)
    assert result.end_hours == 1.5


def test_metric_helpers() -> None:
    assert nearest_rank_percentile([], 95) is None
    assert nearest_rank_percentile([3.0, 1.0, 2.0], 95) == 3.0
    assert nearest_rank_percentile([float(v) for v in range(1, 21)], 95) == 19.0
    assert jain_index([]) is None
    assert jain_index([0.0, 0.0]) == 1.0
    assert jain_index([1.0, 1.0, 1.0]) == 1.0
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == 0.25
    assert service_share([], 10.0) == 1.0


# --------------------------------------------------------------------------------------------
# Idle reclaim
# --------------------------------------------------------------------------------------------

IDLE_LIMITS = """\
defaults:
  idle_timeout_hours: {timeout}
  max_runtime_hours: null
  gpu_hold_after_stop_minutes: 0
policies:
  demand_idle_factor: {factor}
"""


def test_each_reclaim_policy_cuts_a_forgotten_notebook_differently(one_gpu: Inventory) -> None:
    # Alice computes 1 h, then leaves her notebook open for 10 h; her idle timeout is 1 h.
    jobs = parse_trace(trace("0,alice,lab,1,,1,10"), "t.csv")
    config = limits(IDLE_LIMITS.format(timeout=1, factor=1))
    released = {}
    for reclaim in RECLAIMS:
        (outcome,) = simulate(jobs, one_gpu, config, SchedulerConfig(), "fair", reclaim).outcomes
        released[reclaim] = outcome.release_hours
        assert outcome.reclaimed_hours == pytest.approx(11 - outcome.release_hours)
    assert released["none"] == 11  # held until she stops it
    assert released["ds01"] == pytest.approx(2)  # exactly 1 h after it went idle
    # The reference checks hourly at minute 20: idle at 1:20, 2:20 and 3:20, stopped at the
    # third idle check, 2 h 20 min after it went idle, whatever the 1-hour timeout.
    assert released["reference"] == pytest.approx(3 + 1 / 3)


def test_ds01_shrinks_the_idle_timeout_while_others_wait(one_gpu: Inventory) -> None:
    # Alice idles from 1 h with a 4-hour timeout; Bob asks for the only GPU at 2 h.
    jobs = parse_trace(trace("0,alice,lab,1,,1,10", "2,bob,lab,1,,1,0"), "t.csv")
    bob_waits = {}
    for factor in (0.5, 1):
        config = limits(IDLE_LIMITS.format(timeout=4, factor=factor))
        result = simulate(jobs, one_gpu, config, SchedulerConfig(), "fair", "ds01")
        bob_waits[factor] = waits(result)["job-3"]
    assert bob_waits[0.5] == pytest.approx(1)  # halved to 2 h: alice stopped at 3 h
    assert bob_waits[1] == pytest.approx(3)  # alice stopped at 5 h
    none = simulate(jobs, one_gpu, config, SchedulerConfig(), "fair", "none")
    assert waits(none)["job-3"] == pytest.approx(9)


def test_the_grace_period_applies_in_the_simulation(one_gpu: Inventory) -> None:
    jobs = parse_trace(trace("0,alice,lab,1,,0,5"), "t.csv")
    config = limits(IDLE_LIMITS.format(timeout=0.1, factor=1))
    (outcome,) = simulate(jobs, one_gpu, config, SchedulerConfig(), "fair", "ds01").outcomes
    assert outcome.release_hours == pytest.approx(0.5)  # idle_grace_minutes: 30


def test_the_reference_check() -> None:
    assert reference_first_check(0.0) == pytest.approx(1 + 1 / 3)  # 0:20 is within the grace
    assert reference_first_check(0.5) == pytest.approx(1 + 1 / 3)
    assert reference_first_check(1.0) == pytest.approx(2 + 1 / 3)
    # Busy until 2 h, timeout 3.5 h: active at 1:20, idle at 2:20, 3:20, 4:20 and 5:20,
    # stopped at 5:20, the first check at which the idle time counted from the last active
    # check (1:20) reaches the timeout.
    state = ReferenceIdleState(last_activity_hours=0.0)
    state, stops = reference_check(state, 1 + 1 / 3, 2.0, 3.5, high_demand=False)
    assert (state, stops) == (ReferenceIdleState(1 + 1 / 3, 0), False)
    for hours in (2, 3, 4, 5):
        state, stops = reference_check(state, hours + 1 / 3, 2.0, 3.5, high_demand=False)
        assert stops == (hours == 5)
    assert state.streak == 4
    # In high demand the timeout halves, but three idle checks in a row are still needed.
    _, stops = reference_check(ReferenceIdleState(0.0, 1), 3.0, 1.0, 4.0, high_demand=True)
    assert not stops
    _, stops = reference_check(ReferenceIdleState(0.0, 2), 3.0, 1.0, 4.0, high_demand=True)
    assert stops
    # Without a timeout the owner is exempt.
    exempt = ReferenceIdleState(0.0, streak=50)
    assert reference_check(exempt, 100.0, 1.0, None, high_demand=True) == (
        ReferenceIdleState(0.0, 51),
        False,
    )


# --------------------------------------------------------------------------------------------
# The command and the shipped example
# --------------------------------------------------------------------------------------------


def test_the_command_prints_a_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "resource-limits.yaml").write_text(OPEN_LIMITS.format(hold=0), encoding="utf-8")
    path = tmp_path / "t.csv"
    path.write_text(trace("0,alice,lab,1,,2,0", "1,bob,lab,1,,1,0"), encoding="utf-8")
    main(["simulate", str(path), "--config-dir", str(tmp_path)])
    text = capsys.readouterr().out
    assert "POLICY  RECLAIM    MIG     GROUP" in text
    assert "fair    ds01       layout  lab" in text and "fcfs    reference  layout  all" in text
    main(["simulate", str(path), "--policy", "fcfs", "--reclaim", "none", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["sources"] == {
        "resource-limits": "embedded default",
        "gpu-config": "embedded default",
    }
    assert [(r["policy"], r["reclaim"]) for r in document["runs"]] == [("fcfs", "none")]
    assert document["runs"][0]["capacity_gpu_equivalents"] == 4.0
    assert document["runs"][0]["groups"]["all"]["jobs"] == 2
    assert document["runs"][0]["groups"]["all"]["reclaimed_gpu_hours"] == 0


@pytest.mark.parametrize(
    ("setup", "exit_code", "message"),
    [
        ("missing-dir", 2, "no such directory"),
        ("nvml", 1, "backend is nvml"),
        ("bad-trace", 2, "t.csv:2: gpus must be"),
    ],
)
def test_the_command_reports_bad_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    exit_code: int,
    message: str,
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(trace("0,alice,lab,x,,1,0" if setup == "bad-trace" else "0,a,l,1,,1,0"))
    config_dir = tmp_path / "config"
    if setup != "missing-dir":
        config_dir.mkdir()
    if setup == "nvml":
        (config_dir / "gpu-config.yaml").write_text("backend: nvml\n")
    with pytest.raises(SystemExit) as caught:
        main(["simulate", str(path), "--config-dir", str(config_dir)])
    assert caught.value.code == exit_code
    assert message in capsys.readouterr().err


def test_the_shipped_lab_week_favours_fair_share_and_reclaim(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["simulate", str(EXAMPLE_TRACE), "--config-dir", str(EXAMPLE_TRACE.parent), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["sources"]["resource-limits"].endswith("traces/resource-limits.yaml")
    runs = {(r["policy"], r["reclaim"]): r["groups"]["all"] for r in document["runs"]}
    assert len(runs) == 6
    # Idle reclaim: ds01 reclaims the most and the waits follow.
    ds01, none, reference = (runs["fair", reclaim] for reclaim in ("ds01", "none", "reference"))
    assert none["reclaimed_gpu_hours"] == 0
    assert ds01["reclaimed_gpu_hours"] > reference["reclaimed_gpu_hours"] > 0
    assert ds01["idle_gpu_hours"] < reference["idle_gpu_hours"] < none["idle_gpu_hours"]
    assert ds01["mean_wait_hours"] < reference["mean_wait_hours"] < none["mean_wait_hours"]
    # The queue order, with ds01's reclaim.
    with_ds01 = {r["policy"]: r for r in document["runs"] if r["reclaim"] == "ds01"}
    fair, fcfs = with_ds01["fair"], with_ds01["fcfs"]
    assert fair["groups"]["all"]["jobs"] == document["jobs"] > 100
    assert fair["groups"]["all"]["not_started"] == fcfs["groups"]["all"]["not_started"] == 0
    assert fair["groups"]["all"]["mean_wait_hours"] < fcfs["groups"]["all"]["mean_wait_hours"]
    assert (
        fair["groups"]["students"]["mean_wait_hours"]
        < fcfs["groups"]["students"]["mean_wait_hours"]
    )
    assert fair["groups"]["all"]["jain_index"] > fcfs["groups"]["all"]["jain_index"]


@pytest.mark.parametrize(
    ("option", "name"),
    [
        (None, "lab-week.csv"),
        ("--sweeps", "lab-week-sweeps.csv"),
        ("--deadline-sweeps", "lab-week-deadline-sweeps.csv"),
        ("--night-evals", "lab-week-night-evals.csv"),
    ],
)
def test_the_shipped_traces_are_what_the_generator_writes(option: str | None, name: str) -> None:
    options = [] if option is None else [option]
    generated = subprocess.run(
        [sys.executable, str(REPO / "scripts/make_lab_trace.py"), *options],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert generated == (EXAMPLE_TRACE.parent / name).read_text(encoding="utf-8")


def test_capacity_counts_only_allocatable_devices() -> None:
    config = GpuConfig.model_validate({"reserved": [], "simulated": {"gpus": [{}, {}]}})
    inventory = SimulatedBackend(config).inventory()
    reserved = SimulatedBackend(
        config.model_copy(update={"reserved": [inventory.devices[0].uuid]})
    ).inventory()
    jobs = parse_trace(trace("0,alice,lab,1,,1,0"), "t.csv")
    result = simulate(jobs, reserved, ResourceLimitsConfig(), SchedulerConfig(), "fair")
    assert result.capacity_gpu_equivalents == Fraction(1)


def test_slices_made_on_demand_serve_small_requests_a_fixed_layout_makes_wait() -> None:
    # One A100 split into two 3g.20gb. Four 1g.5gb jobs at once: with the fixed layout two
    # run on the 3g.20gb instances and two wait an hour; made on demand, four 1g.5gb fit.
    config = GpuConfig.model_validate(
        {
            "simulated": {
                "gpus": [
                    {"mig": True, "mig_instances": [{"profile": "3g.20gb"}] * 2},
                ]
            }
        }
    )
    inventory = SimulatedBackend(config).inventory()
    jobs = parse_trace(trace(*(f"0,u{i},lab,0,1g.5gb,1,0" for i in range(4))), "t.csv")
    setting = limits(OPEN_LIMITS.format(hold=0))

    fixed_inventory, none = mig_setups(config, inventory, "layout")
    assert none == {}
    fixed = simulate(jobs, fixed_inventory, setting, SchedulerConfig(), "fair", "none")
    empty, dynamic = mig_setups(config, inventory, "on-demand")
    assert empty.devices == () and len(dynamic) == 1
    made = simulate(jobs, empty, setting, SchedulerConfig(), "fair", "none", dynamic)

    assert sorted(waits(fixed).values()) == [0.0, 0.0, 1.0, 1.0]
    assert sorted(waits(made).values()) == [0.0] * 4
    assert (made.mig, made.capacity_gpu_equivalents) == ("on-demand", Fraction(1))
    assert summarize(made).to_dict()["mig"] == "on-demand"
