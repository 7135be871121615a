"""The ``policies:`` section of resource-limits.yaml: schema, errors, resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import load_file
from ds01.config.policies import (
    BUILTIN_POLICY,
    POLICY_KEYS,
    LifecyclePolicy,
    policy_permissiveness,
)
from ds01.config.resolve import resolve_policy, resolve_policy_sources
from support import limits_error, limits_from

#: The mission's example resource-limits.yaml, as shipped in examples/config/.
MISSION_EXAMPLE = Path(__file__).resolve().parents[2] / "examples/config/resource-limits.yaml"


CONFIG = """
    groups:
      students: {}
      phd: {}
      staff: {}
    policies:
      idle_grace_minutes: 20
      cpu_percent: 3
      groups:
        students:
          cpu_percent: 10
          demand_idle_factor: 0.25
          idle_warning_fractions: [0.9]
        phd:
          cpu_percent: 2
          idle_warning_fractions: [0.5, 0.9]
          container_hold_after_stop_hours: null
        staff:
      users:
        jane:
          network_bytes_per_second: 1024
          idle_warning_fractions: []
"""


def test_the_defaults_and_a_config_without_the_section() -> None:
    assert BUILTIN_POLICY.values() == {
        "lifecycle_interval_seconds": 60.0,
        "idle_grace_minutes": 30.0,
        "gpu_utilization_percent": 5.0,
        "gpu_memory_mib": 256,
        "cpu_percent": 5.0,
        "network_bytes_per_second": 10240.0,
        "idle_warning_fractions": (0.8, 0.95),
        "runtime_warning_fractions": (0.75, 0.9),
        "keep_alive_max_hours": 24.0,
        "demand_idle_factor": 0.5,
        "created_unstarted_minutes": 30.0,
        "container_hold_after_stop_hours": 168.0,
        "max_queued": 10,
        "disk_warning_fraction": 0.9,
        "disk_grace_minutes": 10.0,
        "build_network": True,
        "webhook_url": None,
    }
    without = ("{}", "policies:\n", "policies:\n  groups:\n  users:\n", "defaults: {gpu_limit: 1}")
    for text in without:
        config = limits_from(text)
        assert config.policies.defaults() == BUILTIN_POLICY
        resolved = resolve_policy_sources(config, "alice", ["students"])
        assert resolved.policy == BUILTIN_POLICY
        assert {resolved.source_of(key) for key in POLICY_KEYS} == {"builtin"}


def test_the_mission_example_loads_with_default_policies() -> None:
    config = load_file(MISSION_EXAMPLE, "resource-limits")
    assert resolve_policy(config, "jane.researcher", ["phd_students"]) == BUILTIN_POLICY


def test_resolution_is_user_then_groups_then_the_top_then_builtin() -> None:
    config = limits_from(CONFIG)
    jane = resolve_policy_sources(config, "jane", ["students"])
    explained = jane.explain()
    assert explained["network_bytes_per_second"] == {"value": 1024.0, "source": "user:jane"}
    assert explained["idle_warning_fractions"] == {"value": (), "source": "user:jane"}
    assert explained["cpu_percent"] == {"value": 10.0, "source": "group:students"}
    assert explained["idle_grace_minutes"] == {"value": 20.0, "source": "defaults"}
    assert explained["keep_alive_max_hours"] == {"value": 24.0, "source": "builtin"}
    assert jane.policy.demand_idle_factor == 0.25
    nobody = resolve_policy(config, "nobody", [])
    assert (nobody.cpu_percent, nobody.idle_grace_minutes) == (3.0, 20.0)
    assert resolve_policy(config, "sam", ["staff"]) == nobody  # an entry without keys


def test_in_several_groups_the_least_aggressive_value_wins() -> None:
    both = resolve_policy_sources(limits_from(CONFIG), "bob", ["students", "phd"])
    # A lower threshold finds fewer containers idle.
    assert both.values["cpu_percent"].value == 2.0
    assert both.source_of("cpu_percent") == "group:phd"
    # A factor closer to 1 shrinks less (only students set one: it wins over the top).
    assert both.values["demand_idle_factor"].value == 0.25
    # The earlier first warning wins; null (never removed) beats any hold.
    assert both.values["idle_warning_fractions"].value == (0.5, 0.9)
    assert both.values["container_hold_after_stop_hours"].value is None


def test_permissiveness_orders_each_kind_of_key() -> None:
    def most(key: str, *values: object) -> object:
        return max(values, key=lambda v: policy_permissiveness(key, v))

    assert most("gpu_utilization_percent", 10.0, 5.0, 20.0) == 5.0
    assert most("gpu_memory_mib", 512, 128) == 128
    assert most("network_bytes_per_second", 1.0, 2.0) == 1.0
    assert most("idle_grace_minutes", 10.0, 60.0) == 60.0
    assert most("demand_idle_factor", 0.5, 1.0) == 1.0
    assert most("container_hold_after_stop_hours", 1.0, None, 500.0) is None
    assert most("idle_warning_fractions", (), (0.8, 0.95), (0.8,), (0.9,)) == (0.8, 0.95)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "policies:\n  idle_warning_fractions: [0.95, 0.8]\n",
            "limits.yaml:2: policies.idle_warning_fractions: must be fractions of the limit "
            "strictly between 0 and 1, in increasing order, e.g. [0.8, 0.95] ([] = no "
            "warning); got [0.95, 0.8]",
        ),
        (
            "policies:\n  runtime_warning_fractions: [0.5, 1]\n",
            "limits.yaml:2: policies.runtime_warning_fractions: must be fractions",
        ),
        (
            "policies:\n  idle_warning_fractions: [0.5, 0.5]\n",
            "limits.yaml:2: policies.idle_warning_fractions: must be fractions",
        ),
        (
            "policies:\n  demand_idle_factor: 0\n",
            "policies.demand_idle_factor: must be more than 0",
        ),
        (
            "policies:\n  demand_idle_factor: 1.5\n",
            "policies.demand_idle_factor: must be at most 1",
        ),
        ("policies:\n  cpu_percent: 0\n", "policies.cpu_percent: must be more than 0"),
        ("policies:\n  gpu_utilization_percent: 101\n", "policies.gpu_utilization_percent:"),
        ("policies:\n  lifecycle_interval_seconds: .nan\n", "expected a finite number"),
        (
            "policies:\n  idle_grace_minutes: -1\n",
            "policies.idle_grace_minutes: must be at least 0",
        ),
        (
            "policies:\n  idle_grace_minutes: null\n",
            "policies.idle_grace_minutes: expected a number, got null",
        ),
        ("policies:\n  gpu_memory_mib: 0.5\n", "policies.gpu_memory_mib: expected a whole number"),
        ("policies:\n  idle_timeout_hours: 4\n", "policies.idle_timeout_hours: unknown key"),
        (
            "policies:\n  gpu_idle_threshold: 5\n",
            "limits.yaml:1: policies: unknown key 'gpu_idle_threshold'; use "
            "gpu_utilization_percent (policy keys: lifecycle_interval_seconds, ",
        ),
        (
            "policies:\n  idle_detection_window: 3\n",
            "use nothing: idle time is measured exactly, not in checks",
        ),
        (
            "policies:\n  webhook_url: hooks.example.org/ds01\n",
            "limits.yaml:2: policies.webhook_url: must be an http:// or https:// URL, got "
            "'hooks.example.org/ds01'",
        ),
    ],
)
def test_invalid_values_name_file_line_and_key(text: str, message: str) -> None:
    assert message in limits_error(text)


def test_group_entries_name_defined_groups_and_leave_the_interval_alone() -> None:
    message = limits_error(
        """
        groups:
          phd: {}
        policies:
          groups:
            phd: {cpu_percent: 2}
            phdd: {cpu_percent: 2}
        """
    )
    assert message.startswith("limits.yaml:6: policies.groups.phdd: no such group")
    assert "(defined: phd)" in message
    message = limits_error(
        """
        groups:
          phd: {}
        policies:
          lifecycle_interval_seconds: 30
          users:
            jane: {lifecycle_interval_seconds: 5}
        """
    )
    assert message == (
        "limits.yaml:6: policies.users.jane: lifecycle_interval_seconds is one setting for "
        "the whole server: set it at the top of the policies: section"
    )
    assert "policies.users.jane.cpu_percent: must be more than 0" in limits_error(
        "policies:\n  users:\n    jane: {cpu_percent: -1}\n"
    )
    assert "policies.groups.phd: webhook_url is one setting for the whole server" in limits_error(
        "groups: {phd: {}}\npolicies:\n  groups:\n    phd: {webhook_url: 'https://x.org'}\n"
    )
    config = limits_from("policies:\n  webhook_url: https://chat.example.org/hooks/ds01\n")
    assert resolve_policy(config, "anyone", []).webhook_url == "https://chat.example.org/hooks/ds01"


@given(
    top=st.floats(min_value=0.5, max_value=50),
    groups=st.lists(st.one_of(st.none(), st.floats(min_value=0.5, max_value=50)), max_size=4),
)
def test_a_group_threshold_is_the_lowest_of_those_set(
    top: float, groups: list[float | None]
) -> None:
    config = ResourceLimitsConfig.model_validate(
        {
            "groups": {f"g{i}": {} for i in range(len(groups))},
            "policies": {
                "cpu_percent": top,
                "groups": {
                    f"g{i}": {} if v is None else {"cpu_percent": v} for i, v in enumerate(groups)
                },
            },
        }
    )
    resolved = resolve_policy(config, "u", [f"g{i}" for i in range(len(groups))])
    written = [v for v in groups if v is not None]
    assert resolved.cpu_percent == (min(written) if written else top)
    assert isinstance(resolved, LifecyclePolicy)
