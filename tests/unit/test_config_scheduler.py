"""The ``scheduler:`` section and the ``gpu_hold_after_stop_minutes`` limit."""

from __future__ import annotations

import pytest

from ds01.config.limits import ResourceLimitsConfig
from ds01.config.resolve import resolve_limits
from ds01.config.scheduler import SchedulerConfig
from support import limits_error, limits_from

# --- scheduler: ---------------------------------------------------------------------------


def test_without_a_scheduler_section_every_default_applies() -> None:
    assert limits_from("defaults: {gpu_limit: 1}\n").scheduler == SchedulerConfig()
    assert limits_from("scheduler:\n").scheduler == SchedulerConfig()
    assert SchedulerConfig().model_dump() == {
        "priority_weight": 1.0,
        "fairshare_weight": 1.0,
        "age_weight_per_hour": 0.1,
        "usage_half_life_hours": 168.0,
        "backfill": True,
        "backfill_max_delay_minutes": 0.0,
    }


def test_a_full_scheduler_section() -> None:
    config = limits_from(
        """
        scheduler:
          priority_weight: 2
          fairshare_weight: 0.5
          age_weight_per_hour: 0.25
          usage_half_life_hours: 24
          backfill: false
          backfill_max_delay_minutes: null
        """
    )
    assert config.scheduler == SchedulerConfig(
        priority_weight=2.0,
        fairshare_weight=0.5,
        age_weight_per_hour=0.25,
        usage_half_life_hours=24.0,
        backfill=False,
        backfill_max_delay_minutes=None,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("priority_weight: -1", "scheduler.priority_weight: must be at least 0"),
        ("fairshare_weight: -0.5", "scheduler.fairshare_weight: must be at least 0"),
        (
            "age_weight_per_hour: 0",
            "scheduler.age_weight_per_hour: must be greater than 0 (got 0.0): without an age "
            "term a request could wait forever behind newer ones",
        ),
        ("age_weight_per_hour: -1", "scheduler.age_weight_per_hour: must be greater than 0"),
        ("usage_half_life_hours: 0", "scheduler.usage_half_life_hours: must be more than 0"),
        (
            "backfill_max_delay_minutes: -5",
            "scheduler.backfill_max_delay_minutes: must be at least 0",
        ),
        ("priority_weight: .inf", "scheduler.priority_weight: expected a finite number"),
        ("backfill: maybe", "scheduler.backfill: expected true or false"),
        (
            "half_life_hours: 24",
            "scheduler.half_life_hours: unknown key 'half_life_hours'. Did you mean "
            "'usage_half_life_hours'?",
        ),
    ],
)
def test_bad_scheduler_values_name_file_line_and_key(line: str, message: str) -> None:
    error = limits_error(f"defaults: {{}}\nscheduler:\n  {line}\n")
    assert error.startswith(f"limits.yaml:3: {message}")


def test_fcfs_is_a_setting_of_the_same_model() -> None:
    fcfs = SchedulerConfig.first_come_first_served()
    assert (fcfs.priority_weight, fcfs.fairshare_weight, fcfs.backfill) == (0.0, 0.0, False)
    assert fcfs.overtaking_horizon_hours() == 0.0


def test_overtaking_horizon() -> None:
    # Priority spans 10 points (1000 / 100), fair share 1, at 0.1 point per hour.
    assert SchedulerConfig().overtaking_horizon_hours() == pytest.approx(110.0)
    policy = SchedulerConfig(priority_weight=0.5, fairshare_weight=2, age_weight_per_hour=1)
    assert policy.overtaking_horizon_hours() == pytest.approx(7.0)


# --- gpu_hold_after_stop_minutes ----------------------------------------------------------


def test_gpu_hold_after_stop_minutes_defaults_to_a_quarter_hour() -> None:
    resolved = resolve_limits(ResourceLimitsConfig(), "ann", [])
    assert resolved.gpu_hold_after_stop_minutes == 15.0
    assert resolved.explain()["gpu_hold_after_stop_minutes"] == {"value": 15.0, "source": "builtin"}


def test_gpu_hold_after_stop_minutes_values() -> None:
    config = limits_from(
        """
        defaults:
          gpu_hold_after_stop_minutes: 0
        groups:
          short: {gpu_hold_after_stop_minutes: 30}
          keep: {gpu_hold_after_stop_minutes: null}
        """
    )
    assert resolve_limits(config, "ann", []).gpu_hold_after_stop_minutes == 0.0
    assert resolve_limits(config, "bob", ["short"]).gpu_hold_after_stop_minutes == 30.0
    # In several groups the most permissive wins: null (keep until removed) beats any number.
    both = resolve_limits(config, "cat", ["short", "keep"])
    assert both.gpu_hold_after_stop_minutes is None
    assert both.source_of("gpu_hold_after_stop_minutes") == "group:keep"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("-1", "must be at least 0"), (".nan", "finite number"), ("'15m'", "expected a number")],
)
def test_bad_gpu_hold_after_stop_minutes(value: str, fragment: str) -> None:
    error = limits_error(f"defaults:\n  gpu_hold_after_stop_minutes: {value}\n")
    assert error.startswith("limits.yaml:2: defaults.gpu_hold_after_stop_minutes:")
    assert fragment in error
