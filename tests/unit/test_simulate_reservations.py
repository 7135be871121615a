"""``ds01 simulate --reservations``: GPU reservations replayed with a trace, by hand on one
GPU (backfill kept out, the holder's job on the reserved device, a drain that queues the
work left again, a refusal), and the comparison the command prints."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ds01.cli.main import main
from ds01.config.gpu_config import GpuConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import parse_config
from ds01.config.scheduler import SchedulerConfig
from ds01.core.reservations import is_slot
from ds01.errors import InvalidInput
from ds01.gpu.simulated import SimulatedBackend
from ds01.model.device import Inventory
from ds01.sim.cli import mig_setups
from ds01.sim.engine import DynamicGpu, SimulationResult, simulate
from ds01.sim.report import compare_reservations
from ds01.sim.trace import RESERVATION_COLUMNS, TRACE_COLUMNS, parse_reservations, parse_trace

# One GPU each, 3-hour runs, no holds, no idle reclaim.
LIMITS = """\
defaults:
  gpu_limit: 1
  max_containers: 5
  max_runtime_hours: 3
  idle_timeout_hours: null
  gpu_hold_after_stop_minutes: 0
"""


@pytest.fixture
def one_gpu() -> Inventory:
    return SimulatedBackend(GpuConfig.model_validate({"simulated": {"gpus": [{}]}})).inventory()


def replay(inventory: Inventory, jobs: list[str], booked: list[str] | None) -> SimulationResult:
    trace = parse_trace("\n".join((",".join(TRACE_COLUMNS), *jobs)) + "\n", "t.csv")
    reservations = None
    if booked is not None:
        text = "\n".join((",".join(RESERVATION_COLUMNS), *booked)) + "\n"
        reservations = parse_reservations(text, "r.csv")
    config: ResourceLimitsConfig = parse_config(LIMITS, "resource-limits", "limits.yaml")
    return simulate(
        trace, inventory, config, SchedulerConfig(), "fair", "none", None, None, reservations
    )


def test_a_job_that_could_run_into_a_reservation_waits_and_the_holder_gets_the_gpu(
    one_gpu: Inventory,
) -> None:
    # bob books the GPU for [2, 3) at 0. alice's job at 0 may hold it 3 hours (her runtime
    # limit): it would run into the reservation, so it waits until its end. bob's job at 2
    # starts there at once.
    jobs = ["0,alice,lab,1,,1,0", "2,bob,lab,1,,0.5,0"]
    without = replay(one_gpu, jobs, None)
    booked = replay(one_gpu, jobs, ["0,2,1,bob,1,"])
    assert [o.start_hours for o in without.outcomes] == [0.0, 2.0]
    assert [o.start_hours for o in booked.outcomes] == [3.0, 2.0]
    [reservation] = booked.reservations or ()
    assert reservation.kept is True and reservation.displaced == 0
    compared = compare_reservations(without, booked)
    assert (compared.admitted, compared.refused, compared.kept_rate) == (1, 0, 1.0)
    assert (compared.delayed_jobs, compared.delay_hours) == (1, 3.0)
    assert compared.stopped_jobs == 0


def test_a_reservation_made_late_stops_the_job_in_the_way_which_queues_its_rest(
    one_gpu: Inventory,
) -> None:
    # alice runs from 0 for 2 hours; at 0.5 bob books the GPU for [1, 2). At 1 her job is
    # stopped with 1 hour left, which joins the queue and runs from 2 to 3.
    booked = replay(one_gpu, ["0,alice,lab,1,,2,0"], ["0.5,1,1,bob,1,"])
    [alice] = booked.outcomes
    assert (alice.displaced, alice.displaced_hours, alice.requeued) == (1, 1.0, 1)
    assert (alice.busy_hours, alice.requeue_wait_hours, alice.release_hours) == (2.0, 1.0, 3.0)
    [reservation] = booked.reservations or ()
    assert (reservation.kept, reservation.displaced) == (False, 1)
    compared = compare_reservations(replay(one_gpu, ["0,alice,lab,1,,2,0"], None), booked)
    assert (compared.kept_rate, compared.stopped_jobs, compared.stopped_gpu_hours) == (
        0.0, 1, 1.0,
    )  # fmt: skip


def test_a_conflicting_reservation_is_refused_with_the_next_free_slot(one_gpu: Inventory) -> None:
    booked = replay(one_gpu, ["0,alice,lab,1,,1,0"], ["0,2,2,bob,1,", "1,3,1,carol,1,"])
    first, second = booked.reservations or ()
    assert first.reservation is not None and second.reservation is None
    assert "next free slot" in second.refusal and second.kept is None


def test_a_bad_reservations_file_names_the_line() -> None:
    header = ",".join(RESERVATION_COLUMNS)
    with pytest.raises(InvalidInput, match=r"r.csv:2: hours must be more than 0"):
        parse_reservations(f"{header}\n0,1,0,bob,1,\n", "r.csv")
    with pytest.raises(InvalidInput, match=r"r.csv:1: missing column 'made_hours'"):
        parse_reservations("start_hours,hours,user,gpus,mig\n", "r.csv")


def test_the_command_compares_without_and_with_reservations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, booked = tmp_path / "t.csv", tmp_path / "r.csv"
    trace.write_text(f"{','.join(TRACE_COLUMNS)}\n0,alice,lab,1,,1,0\n")
    booked.write_text(
        textwrap.dedent(
            f"""\
            # bob books GPU 0 at once; prof asks for more than the server has
            {",".join(RESERVATION_COLUMNS)}
            0,2,1,bob,1,
            0,2,1,prof,9,
            """
        )
    )
    main(["simulate", str(trace), "--policy", "fair", "--reclaim", "none", "--reservations",
          str(booked), "--json"])  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert [r["reservations"] for r in document["runs"]] == [False, True]
    [compared] = document["reservations"]
    assert (compared["admitted"], compared["refused"], compared["kept_rate"]) == (1, 1, 1.0)
    assert compared["refusals"][0]["line"] == 4


def test_at_the_end_a_holders_job_over_quota_is_stopped_and_its_rest_queued() -> None:
    # alice (gpu_limit 1, may reserve 2) books both GPUs for [1, 3); her two jobs at 1 start
    # there on top of her quota. At 3 one of them must go (the newer; here the later line):
    # its last half hour runs again once the other ends at 3.5.
    two = SimulatedBackend(GpuConfig.model_validate({"simulated": {"gpus": [{}, {}]}}))
    trace = parse_trace(
        "\n".join((",".join(TRACE_COLUMNS), "1,alice,lab,1,,2.5,0", "1,alice,lab,1,,2.5,0"))
        + "\n",
        "t.csv",
    )
    booked = parse_reservations(
        "\n".join((",".join(RESERVATION_COLUMNS), "0,1,2,alice,2,")) + "\n", "r.csv"
    )
    config: ResourceLimitsConfig = parse_config(
        LIMITS + "reservations:\n  defaults: {max_gpus: 2}\n", "resource-limits", "limits.yaml"
    )
    result = simulate(
        trace, two.inventory(), config, SchedulerConfig(), "fair", "none", None, None, booked
    )
    first, second = result.outcomes
    assert (first.start_hours, first.overstayed, first.release_hours) == (1.0, 0, 3.5)
    assert (second.start_hours, second.overstayed, second.requeued) == (1.0, 1, 1)
    assert second.release_hours == pytest.approx(4.0)
    plain = simulate(
        trace, two.inventory(), config, SchedulerConfig(), "fair", "none", None, None, None
    )
    assert compare_reservations(plain, result).ended_jobs == 1


@pytest.fixture
def dynamic_a100() -> tuple[Inventory, dict[str, DynamicGpu]]:
    """One A100 with MIG on and its slices made on demand (no instance to begin with)."""
    config = GpuConfig.model_validate({"simulated": {"gpus": [{"mig": True}]}})
    return mig_setups(config, SimulatedBackend(config).inventory(), "on-demand")


def replay_dynamic(
    dynamic_a100: tuple[Inventory, dict[str, DynamicGpu]], jobs: list[str], booked: list[str]
) -> SimulationResult:
    """``jobs`` with the reservations ``booked`` on the dynamic A100 (fair, no reclaim)."""
    inventory, dynamic = dynamic_a100
    trace = parse_trace("\n".join((",".join(TRACE_COLUMNS), *jobs)) + "\n", "t.csv")
    reservations = parse_reservations(
        "\n".join((",".join(RESERVATION_COLUMNS), *booked)) + "\n", "r.csv"
    )
    config: ResourceLimitsConfig = parse_config(LIMITS, "resource-limits", "limits.yaml")
    return simulate(
        trace, inventory, config, SchedulerConfig(), "fair", "none", dynamic, None, reservations
    )


def test_a_mig_reservation_on_a_dynamic_gpu_keeps_a_slot_made_at_its_start(
    dynamic_a100: tuple[Inventory, dict[str, DynamicGpu]],
) -> None:
    # No instance exists: bob's 3g.20gb for [1, 3), booked at 0, keeps a slot, as ds01d
    # admits it. At 1 the slice is made and kept; bob's job starts on it and ends at 1.5.
    # The slice stays until the reservation's end (not destroyed while it keeps it), so
    # alice's 7g.40gb at 1.6, which needs the whole GPU, starts only at 3, once it is gone.
    result = replay_dynamic(
        dynamic_a100, ["1,bob,lab,0,3g.20gb,0.5,0", "1.6,alice,lab,0,7g.40gb,1,0"],
        ["0,1,2,bob,0,3g.20gb"],
    )  # fmt: skip
    [outcome] = result.reservations or ()
    assert (outcome.refusal, outcome.kept) == ("", True)
    assert outcome.reservation is not None
    [kept] = outcome.reservation.devices
    assert not is_slot(kept)  # the slot's slice, made at the start
    assert [o.start_hours for o in result.outcomes] == [1.0, 3.0]


def test_no_slice_is_made_on_a_slot_for_a_job_that_could_run_into_its_start(
    dynamic_a100: tuple[Inventory, dict[str, DynamicGpu]],
) -> None:
    # bob books a 4g.20gb for [2, 4) at 0: a slot at memory slice 0. alice's 7g.40gb at 0.5
    # (2.5 hours of work) may run 3 hours (her runtime limit), into the start: it gets no
    # slice over the slot, waits, and starts at 4, once the reservation's slice is gone.
    # The slice is made at 2 and the reservation is kept. (Without the rule, her slice
    # would fill the GPU until 3 and the slot would be lost.)
    result = replay_dynamic(
        dynamic_a100, ["0.5,alice,lab,0,7g.40gb,2.5,0"], ["0,2,2,bob,0,4g.20gb"]
    )
    [outcome] = result.reservations or ()
    assert outcome.kept is True and outcome.reservation is not None
    assert not any(is_slot(u) for u in outcome.reservation.devices)
    assert [o.start_hours for o in result.outcomes] == [4.0]


def test_a_slice_made_before_a_slot_is_drained_at_its_start_and_the_slot_made_there(
    dynamic_a100: tuple[Inventory, dict[str, DynamicGpu]],
) -> None:
    # alice's 7g.40gb runs from 0 for 2 hours on a slice made for it. At 0.5 bob books a
    # 4g.20gb for [1, 3): a slot at memory slice 0, under her slice. At 1 her job is stopped
    # as from a reserved GPU (1 hour of work queued again), her slice destroyed at once and
    # bob's made at the slot's place; her rest starts at 3, once the reservation's slice is
    # gone. (Before, the slot found no room and the reservation kept nothing.)
    result = replay_dynamic(dynamic_a100, ["0,alice,lab,0,7g.40gb,2,0"], ["0.5,1,2,bob,0,4g.20gb"])
    [outcome] = result.reservations or ()
    assert outcome.reservation is not None and outcome.displaced == 1
    [made] = outcome.reservation.devices
    assert not is_slot(made)  # the slot's slice, made at the start
    [alice] = result.outcomes
    assert (alice.displaced, alice.displaced_hours, alice.requeued) == (1, 1.0, 1)
    assert alice.release_hours == 4.0
