"""``disk_limit`` in resource-limits.yaml: per container and in ``aggregate:``, resolved with
provenance like every size key; the disk policy keys; the mission's example still loads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.config.limits import BUILTIN_AGGREGATE, BUILTIN_LIMITS, ResourceLimitsConfig
from ds01.config.loader import load_file
from ds01.config.resolve import resolve_aggregate, resolve_limits, resolve_policy
from ds01.errors import ConfigError
from ds01.model.units import GIB, MIB, format_bytes

EXAMPLE = Path(__file__).parents[2] / "examples" / "config" / "resource-limits.yaml"

CONFIG = """
    defaults:
      disk_limit: 50g
    groups:
      phd:
        disk_limit: 200G
      msc:
        members: [bob]
        disk_limit: 20480M
      staff:
        disk_limit: null
    users:
      jane:
        disk_limit: 10G
    aggregate:
      defaults:
        disk_limit: 100G
      groups:
        phd:
          disk_limit: 1T
      users:
        bob:
          disk_limit: null
    policies:
      disk_grace_minutes: 5
      groups:
        phd:
          disk_warning_fraction: 0.8
"""


def limits(text: str, tmp_path: Path) -> ResourceLimitsConfig:
    path = tmp_path / "resource-limits.yaml"
    path.write_text(textwrap.dedent(text))
    config = load_file(path)
    assert isinstance(config, ResourceLimitsConfig)
    return config


def test_per_container_disk_limit_resolves_with_its_source(tmp_path: Path) -> None:
    config = limits(CONFIG, tmp_path)
    jane = resolve_limits(config, "jane", ["phd"])
    assert (jane.disk_limit, jane.source_of("disk_limit")) == ("10G", "user:jane")
    assert jane.disk_limit_bytes == 10 * GIB
    phd = resolve_limits(config, "carol", ["phd"])
    assert (phd.disk_limit, phd.source_of("disk_limit")) == ("200G", "group:phd")
    bob = resolve_limits(config, "bob", [])  # msc by members: the size is normalised
    assert (bob.disk_limit, bob.source_of("disk_limit")) == ("20G", "group:msc")
    nobody = resolve_limits(config, "nobody", [])
    assert (nobody.disk_limit, nobody.source_of("disk_limit")) == ("50G", "defaults")
    assert nobody.explain()["disk_limit"] == {"value": "50G", "source": "defaults"}


def test_null_is_unlimited_and_beats_any_size_among_groups(tmp_path: Path) -> None:
    config = limits(CONFIG, tmp_path)
    both = resolve_limits(config, "carol", ["phd", "staff"])
    assert both.disk_limit_bytes is None
    assert both.source_of("disk_limit") == "group:staff"


def test_without_a_key_the_builtin_applies(tmp_path: Path) -> None:
    empty = resolve_limits(limits("{}\n", tmp_path), "ann", [])
    assert empty.disk_limit == BUILTIN_LIMITS.disk_limit == "100G"
    assert empty.source_of("disk_limit") == "builtin"
    assert resolve_aggregate(limits("{}\n", tmp_path), "ann", []).disk_limit_bytes is None
    assert BUILTIN_AGGREGATE.disk_limit is None


def test_aggregate_disk_total_resolves_user_then_groups_then_defaults(tmp_path: Path) -> None:
    config = limits(CONFIG, tmp_path)
    carol = resolve_aggregate(config, "carol", ["phd"])
    assert carol.disk_limit_bytes == 1024 * GIB
    assert carol.source_of("disk_limit") == "group:phd"
    assert resolve_aggregate(config, "bob", []).disk_limit_bytes is None
    assert resolve_aggregate(config, "bob", []).source_of("disk_limit") == "user:bob"
    assert resolve_aggregate(config, "ann", []).disk_limit_bytes == 100 * GIB


def test_a_disk_total_alone_writes_nothing_on_cgroups(tmp_path: Path) -> None:
    """The cgroup parent cannot enforce a disk total: ``unlimited`` speaks of cgroup totals."""
    text = "aggregate:\n  defaults:\n    disk_limit: 100G\n"
    assert resolve_aggregate(limits(text, tmp_path), "ann", []).unlimited


def test_disk_policy_keys_resolve_per_group(tmp_path: Path) -> None:
    config = limits(CONFIG, tmp_path)
    phd = resolve_policy(config, "carol", ["phd"])
    assert (phd.disk_warning_fraction, phd.disk_grace_minutes) == (0.8, 5.0)
    other = resolve_policy(config, "ann", [])
    assert (other.disk_warning_fraction, other.disk_grace_minutes) == (0.9, 5.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("defaults:\n  disk_limit: 0\n", "must be greater than 0"),
        ("defaults:\n  disk_limit: lots\n", "invalid size"),
        ("aggregate:\n  defaults:\n    disk_limit: -5G\n", "disk_limit"),
        ("policies:\n  disk_warning_fraction: 1.5\n", "disk_warning_fraction"),
        ("policies:\n  disk_grace_minutes: -1\n", "disk_grace_minutes"),
    ],
)
def test_invalid_values_are_refused_with_file_line_and_key(
    text: str, expected: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        limits(text, tmp_path)
    assert "resource-limits.yaml:" in caught.value.message
    assert expected in caught.value.message


@given(st.integers(min_value=1, max_value=2**50))
def test_any_size_round_trips_through_resolution(size: int) -> None:
    config = ResourceLimitsConfig.model_validate({"defaults": {"disk_limit": format_bytes(size)}})
    assert resolve_limits(config, "ann", []).disk_limit_bytes == size


def test_the_shipped_example_still_loads_and_gets_the_builtin(tmp_path: Path) -> None:
    config = load_file(EXAMPLE)
    assert isinstance(config, ResourceLimitsConfig)
    for user in ("nobody", *config.users):
        resolved = resolve_limits(config, user, list(config.groups))
        assert resolved.disk_limit_bytes is None or resolved.disk_limit_bytes >= 1 * MIB
