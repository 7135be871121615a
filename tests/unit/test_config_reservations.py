"""The ``reservations:`` section of resource-limits.yaml: schema, errors, resolution."""

from __future__ import annotations

import pytest

from ds01.config.reservations import DEFAULT_MAX_RESERVATIONS, DEFAULT_MIN_MINUTES
from ds01.config.resolve import resolve_reservation_limits
from ds01.errors import ConfigError
from support import limits_from


def test_nothing_said_gives_the_contract_defaults() -> None:
    config = limits_from("defaults: {gpu_limit: 2}\n")
    resolved = resolve_reservation_limits(config, "alice", [])
    assert resolved.to_dict() == {
        "max_gpus": 2.0,
        "max_hours": 8.0,
        "max_days_ahead": 14.0,
        "max_reservations": DEFAULT_MAX_RESERVATIONS,  # generous, but no endless chain
        "gpu_hours_per_week": None,
    }
    assert resolved.source_of("max_gpus") == "gpu_limit"
    assert resolved.source_of("max_reservations") == "builtin"
    assert config.reservations.warning_minutes == 15
    assert config.reservations.min_minutes == DEFAULT_MIN_MINUTES == 15


def test_user_then_most_permissive_group_then_defaults() -> None:
    config = limits_from(
        """
        groups:
          phd: {members: [alice]}
          staff: {members: [alice]}
        reservations:
          warning_minutes: 0.05
          min_minutes: 0.05
          defaults: {max_hours: 4, gpu_hours_per_week: 10, max_reservations: null}
          groups:
            phd: {max_gpus: 2, gpu_hours_per_week: 20}
            staff: {gpu_hours_per_week: null}
          users:
            alice: {max_hours: 12}
        """
    )
    resolved = resolve_reservation_limits(config, "alice", [])
    assert resolved.to_dict()["max_hours"] == 12
    assert resolved.to_dict()["max_gpus"] == 2
    assert resolved.to_dict()["gpu_hours_per_week"] is None  # null: unlimited wins
    assert resolved.source_of("gpu_hours_per_week") == "group:staff"
    assert resolve_reservation_limits(config, "bob", []).to_dict()["max_hours"] == 4
    assert config.reservations.warning_minutes == 0.05
    assert config.reservations.min_minutes == 0.05
    assert resolve_reservation_limits(config, "bob", []).to_dict()["max_reservations"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reservations: {defaults: {max_hours: 0}}", "max_hours"),
        ("reservations: {defaults: {hours: 3}}", "hours"),
        ("reservations: {warning_minutes: -1}", "warning_minutes"),
        ("reservations: {min_minutes: 0}", "min_minutes"),
        ("reservations: {groups: {nobody: {max_hours: 3}}}", "no such group"),
    ],
)
def test_bad_values_are_refused_with_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        limits_from(text + "\n")
    assert expected in caught.value.message
