"""Resolving a user's limits: user → groups (most permissive) → defaults → builtin."""

from __future__ import annotations

import math
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ds01.config.limits import BUILTIN_LIMITS, LIMIT_KEYS, ResourceLimitsConfig
from ds01.config.loader import load_file, parse_config
from ds01.config.resolve import (
    Resolved,
    ResolvedLimits,
    groups_of,
    is_admin,
    resolve_limits,
)
from ds01.model.quota import GpuQuota
from ds01.model.units import GIB, MIB, format_bytes, parse_bytes

#: The mission's example, verbatim, as shipped in examples/config/.
MISSION_EXAMPLE = (
    Path(__file__).resolve().parents[2] / "examples/config/resource-limits.yaml"
).read_text(encoding="utf-8")

#: The mission's example as data: what examples/config/resource-limits.yaml must keep saying.
MISSION_SETTINGS = {
    "defaults": {"cpu_limit": 8, "memory_limit": "32G", "gpu_limit": 1, "max_runtime_hours": 48},
    "groups": {
        "phd_students": {"priority": 80, "gpu_limit": 2, "max_runtime_hours": 168},
        "msc_students": {"priority": 50, "gpu_limit": 1, "max_runtime_hours": 24},
    },
    "users": {"jane.researcher": {"priority": 100, "gpu_limit": 4, "max_runtime_hours": 336}},
}


def config_from(text: str) -> ResourceLimitsConfig:
    return parse_config(textwrap.dedent(text), "resource-limits", "resource-limits.yaml")


@pytest.fixture
def mission(tmp_path: Path) -> ResourceLimitsConfig:
    path = tmp_path / "resource-limits.yaml"
    path.write_text(MISSION_EXAMPLE, encoding="utf-8")
    return load_file(path, "resource-limits")


# --- the mission's example -------------------------------------------------------------------


def test_the_shipped_example_is_the_mission_example() -> None:
    assert yaml.safe_load(MISSION_EXAMPLE) == MISSION_SETTINGS


def test_jane_gets_her_overrides_and_the_defaults(mission: ResourceLimitsConfig) -> None:
    jane = resolve_limits(mission, "jane.researcher", unix_groups=["jane.researcher"])
    assert jane.groups == ()
    assert jane.values["priority"] == Resolved(100, "user:jane.researcher")
    assert jane.values["gpu_limit"] == Resolved(4.0, "user:jane.researcher")
    assert jane.values["max_runtime_hours"] == Resolved(336.0, "user:jane.researcher")
    assert jane.values["cpu_limit"] == Resolved(8.0, "defaults")
    assert jane.values["memory_limit"] == Resolved("32G", "defaults")
    assert jane.values["pids_limit"] == Resolved(4096, "builtin")
    assert (jane.priority, jane.gpu_limit, jane.max_runtime_hours) == (100, 4.0, 336.0)
    assert jane.memory_limit_bytes == 32 * GIB


def test_a_phd_student_gets_the_group_values(mission: ResourceLimitsConfig) -> None:
    phd = resolve_limits(mission, "pat", unix_groups=["pat", "phd_students"])
    assert phd.groups == ("phd_students",)
    assert phd.values["gpu_limit"] == Resolved(2.0, "group:phd_students")
    assert phd.values["priority"] == Resolved(80, "group:phd_students")
    assert phd.values["max_runtime_hours"] == Resolved(168.0, "group:phd_students")
    assert phd.values["cpu_limit"] == Resolved(8.0, "defaults")


def test_a_member_of_both_groups_gets_the_most_permissive(mission: ResourceLimitsConfig) -> None:
    both = resolve_limits(mission, "sam", unix_groups=["msc_students", "phd_students"])
    assert both.groups == ("phd_students", "msc_students")  # file order, not caller order
    assert both.values["gpu_limit"] == Resolved(2.0, "group:phd_students")
    assert both.values["max_runtime_hours"] == Resolved(168.0, "group:phd_students")
    assert both.values["priority"] == Resolved(80, "group:phd_students")


def test_a_user_in_no_group_gets_the_defaults(mission: ResourceLimitsConfig) -> None:
    nobody = resolve_limits(mission, "nobody", unix_groups=["users"])
    assert nobody.groups == ()
    assert nobody.explain() == {
        "priority": {"value": 50, "source": "builtin"},
        "gpu_limit": {"value": 1.0, "source": "defaults"},
        "max_gpus_per_container": {"value": 1.0, "source": "builtin"},
        "allow_full_gpu": {"value": True, "source": "builtin"},
        "allow_mig": {"value": True, "source": "builtin"},
        "cpu_limit": {"value": 8.0, "source": "defaults"},
        "memory_limit": {"value": "32G", "source": "defaults"},
        "shm_size": {"value": "8G", "source": "builtin"},
        "disk_limit": {"value": "100G", "source": "builtin"},
        "pids_limit": {"value": 4096, "source": "builtin"},
        "max_containers": {"value": 3, "source": "builtin"},
        "max_runtime_hours": {"value": 48.0, "source": "defaults"},
        "idle_timeout_hours": {"value": 48.0, "source": "builtin"},
        "gpu_hold_after_stop_minutes": {"value": 15.0, "source": "builtin"},
        "borrow": {"value": "ask", "source": "builtin"},
    }


def test_user_overrides_layer_on_top_of_group_values(mission: ResourceLimitsConfig) -> None:
    # jane is also a PhD student: her own keys win, the rest still comes from her group.
    jane = resolve_limits(mission, "jane.researcher", unix_groups=["phd_students"])
    assert jane.values["gpu_limit"] == Resolved(4.0, "user:jane.researcher")
    assert jane.values["priority"] == Resolved(100, "user:jane.researcher")
    assert jane.values["cpu_limit"] == Resolved(8.0, "defaults")
    user_lower = config_from(
        """
        groups:
          phd_students: {gpu_limit: 2, max_containers: 6}
        users:
          jane: {gpu_limit: 1}
        """
    )
    jane = resolve_limits(user_lower, "jane", ["phd_students"])
    assert jane.values["gpu_limit"] == Resolved(1.0, "user:jane")  # a user entry may restrict
    assert jane.values["max_containers"] == Resolved(6, "group:phd_students")


# --- null versus missing ----------------------------------------------------------------------


def test_user_null_means_unlimited_from_the_user() -> None:
    config = config_from(
        """
        defaults: {gpu_limit: 1, memory_limit: 16G}
        groups:
          lab: {gpu_limit: 2}
        users:
          jane: {gpu_limit: null, memory_limit: null}
        """
    )
    jane = resolve_limits(config, "jane", ["lab"])
    assert jane.values["gpu_limit"] == Resolved(None, "user:jane")
    assert jane.values["memory_limit"] == Resolved(None, "user:jane")
    assert jane.gpu_limit is None and jane.memory_limit_bytes is None


def test_a_group_lacking_a_key_inherits_the_defaults() -> None:
    config = config_from(
        """
        defaults: {gpu_limit: 1, max_containers: 2}
        groups:
          lab: {max_containers: 5}
        """
    )
    member = resolve_limits(config, "ann", ["lab"])
    assert member.values["gpu_limit"] == Resolved(1.0, "defaults")
    assert member.values["max_containers"] == Resolved(5, "group:lab")


def test_defaults_null_means_unlimited_not_builtin() -> None:
    config = config_from("defaults: {pids_limit: null, idle_timeout_hours: null}\n")
    anyone = resolve_limits(config, "ann", [])
    assert anyone.values["pids_limit"] == Resolved(None, "defaults")
    assert anyone.idle_timeout_hours is None
    assert anyone.to_dict()["idle_timeout_hours"] is None


# --- several groups -----------------------------------------------------------------------------


def test_null_beats_any_number_and_true_beats_false() -> None:
    config = config_from(
        """
        groups:
          small: {gpu_limit: 1, allow_full_gpu: false, allow_mig: true, cpu_limit: 64}
          huge: {gpu_limit: null, allow_full_gpu: true, allow_mig: false, cpu_limit: 8}
        """
    )
    both = resolve_limits(config, "ann", ["small", "huge"])
    assert both.values["gpu_limit"] == Resolved(None, "group:huge")
    assert both.values["allow_full_gpu"] == Resolved(True, "group:huge")
    assert both.values["allow_mig"] == Resolved(True, "group:small")
    assert both.values["cpu_limit"] == Resolved(64.0, "group:small")


def test_sizes_are_compared_as_bytes() -> None:
    config = config_from(
        """
        groups:
          a: {memory_limit: 900M, shm_size: 32M}
          b: {memory_limit: 1G, shm_size: null}
        """
    )
    both = resolve_limits(config, "ann", ["a", "b"])
    assert both.values["memory_limit"] == Resolved("1G", "group:b")
    # shm_size: null is Docker's 64M default, which is more than 32M.
    assert both.values["shm_size"] == Resolved(None, "group:b")
    bigger_shm = config_from("groups:\n  a: {shm_size: 1G}\n  b: {shm_size: null}\n")
    assert resolve_limits(bigger_shm, "ann", ["a", "b"]).shm_size_bytes == GIB


def test_ties_go_to_the_group_listed_first() -> None:
    config = config_from("groups:\n  first: {gpu_limit: 2}\n  second: {gpu_limit: 2}\n")
    both = resolve_limits(config, "ann", ["second", "first"])
    assert both.values["gpu_limit"] == Resolved(2.0, "group:first")


# --- membership and admins ----------------------------------------------------------------------


def test_membership_by_members_list_or_unix_group() -> None:
    config = config_from(
        """
        groups:
          listed: {members: [alice]}
          by_unix: {}
          renamed: {unix_group: lab-x}
        """
    )
    assert groups_of(config, "alice", []) == ("listed",)
    assert groups_of(config, "bob", ["by_unix"]) == ("by_unix",)
    assert groups_of(config, "bob", ["renamed"]) == ()  # its Unix group is lab-x
    assert groups_of(config, "bob", ["lab-x"]) == ("renamed",)
    assert groups_of(config, "alice", ["lab-x", "by_unix"]) == ("listed", "by_unix", "renamed")
    assert groups_of(config, "listed", []) == ()  # a user name is not a group membership


def test_admins_are_root_or_in_the_admin_group() -> None:
    config = config_from("admin_group: lab-admins\n")
    assert is_admin(config, [], uid=0)
    assert is_admin(config, ["users", "lab-admins"], uid=1001)
    assert not is_admin(config, ["users", "ds01-admin"], uid=1001)
    assert is_admin(ResourceLimitsConfig(), ["ds01-admin"], uid=1001)


# --- typed access ---------------------------------------------------------------------------------


def test_typed_properties_and_dictionaries() -> None:
    config = config_from(
        """
        defaults:
          priority: 10
          gpu_limit: 1.5
          max_gpus_per_container: 0.5
          allow_full_gpu: false
          allow_mig: true
          cpu_limit: 4
          memory_limit: 1536m
          shm_size: 2g
          disk_limit: 20g
          pids_limit: 100
          max_containers: 0
          max_runtime_hours: 12
          idle_timeout_hours: 0.5
          gpu_hold_after_stop_minutes: 0
          borrow: auto
        """
    )
    limits = resolve_limits(config, "ann", [])
    assert limits.user == "ann"
    assert limits.priority == 10
    assert limits.gpu_limit == 1.5
    assert limits.max_gpus_per_container == 0.5
    assert limits.allow_full_gpu is False
    assert limits.allow_mig is True
    assert limits.cpu_limit == 4.0
    assert limits.memory_limit == "1.5G"
    assert limits.memory_limit_bytes == 1536 * MIB
    assert limits.shm_size == "2G"
    assert limits.shm_size_bytes == 2 * GIB
    assert limits.disk_limit == "20G"
    assert limits.disk_limit_bytes == 20 * GIB
    assert limits.pids_limit == 100
    assert limits.max_containers == 0
    assert limits.max_runtime_hours == 12.0
    assert limits.idle_timeout_hours == 0.5
    assert limits.gpu_hold_after_stop_minutes == 0.0
    assert limits.borrow == "auto"
    assert limits.gpu_quota() == GpuQuota(
        gpu_limit=Fraction(3, 2),
        max_gpus_per_container=Fraction(1, 2),
        allow_full_gpu=False,
        allow_mig=True,
        max_containers=0,
    )
    assert limits.to_dict()["memory_limit"] == "1.5G"
    assert list(limits.to_dict()) == list(LIMIT_KEYS)
    assert all(entry["source"] == "defaults" for entry in limits.explain().values())
    assert limits.source_of("gpu_limit") == "defaults"


def test_result_is_immutable() -> None:
    limits = resolve_limits(ResourceLimitsConfig(), "ann", [])
    with pytest.raises(AttributeError):
        limits.user = "bob"  # type: ignore[misc]


# --- properties -----------------------------------------------------------------------------

GROUP_NAMES = ("g0", "g1", "g2", "g3")
USER = "u"

_hours = st.floats(min_value=0.01, max_value=10_000, allow_nan=False)
_gpus = st.floats(min_value=0, max_value=64, allow_nan=False)
_sizes = st.integers(min_value=1, max_value=2 * 1024**4).map(format_bytes)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "priority": st.integers(0, 1000),
    "gpu_limit": st.none() | _gpus,
    "max_gpus_per_container": st.none() | _gpus,
    "allow_full_gpu": st.booleans(),
    "allow_mig": st.booleans(),
    "cpu_limit": st.none() | st.floats(min_value=0.01, max_value=1024),
    "memory_limit": st.none() | _sizes,
    "shm_size": st.none() | _sizes,
    "disk_limit": st.none() | _sizes,
    "pids_limit": st.none() | st.integers(1, 10**6),
    "max_containers": st.none() | st.integers(0, 100),
    "max_runtime_hours": st.none() | _hours,
    "idle_timeout_hours": st.none() | _hours,
    "gpu_hold_after_stop_minutes": st.none() | st.floats(min_value=0, max_value=10_000),
    "borrow": st.sampled_from(["ask", "auto"]),
}
assert set(VALUES) == set(LIMIT_KEYS)

# A section writes any subset of the keys.
sections = st.fixed_dictionaries({}, optional=VALUES)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ResourceLimitsConfig, tuple[str, ...]]:
    """A configuration with a few groups, maybe an entry for USER, and USER's Unix groups."""
    groups: dict[str, dict[str, Any]] = {}
    for name in draw(st.lists(st.sampled_from(GROUP_NAMES), unique=True, max_size=4)):
        section = dict(draw(sections))
        if draw(st.booleans()):
            section["members"] = [USER]
        groups[name] = section
    document: dict[str, Any] = {"defaults": draw(sections), "groups": groups}
    if draw(st.booleans()):
        document["users"] = {USER: draw(sections), "someone_else": draw(sections)}
    unix_groups = draw(st.lists(st.sampled_from((*GROUP_NAMES, "unrelated")), unique=True))
    return ResourceLimitsConfig.model_validate(document), tuple(unix_groups)


def rank(key: str, value: Any) -> float:
    """How much a value grants, from the specification: null = unlimited (shm: Docker's 64M)."""
    if value is None:
        return 64 * MIB if key == "shm_size" else math.inf
    if key in ("memory_limit", "shm_size", "disk_limit"):
        return parse_bytes(value)
    if key == "borrow":  # auto grants more than ask
        return float(value == "auto")
    return float(value)


def layers_setting(
    config: ResourceLimitsConfig, resolved: ResolvedLimits, key: str
) -> dict[str, Any]:
    """Every layer that writes ``key`` for this user, by source label, with its value."""
    found: dict[str, Any] = {}
    user_entry = config.users.get(resolved.user)
    if user_entry is not None and key in user_entry.declared():
        found[f"user:{resolved.user}"] = user_entry.declared()[key]
    for group in resolved.groups:
        if key in config.groups[group].declared():
            found[f"group:{group}"] = config.groups[group].declared()[key]
    if key in config.defaults.declared():
        found["defaults"] = config.defaults.declared()[key]
    found["builtin"] = BUILTIN_LIMITS.declared()[key]
    return found


@given(scenarios())
def test_the_user_value_wins_whenever_the_user_sets_it(
    scenario: tuple[ResourceLimitsConfig, tuple[str, ...]],
) -> None:
    config, unix_groups = scenario
    resolved = resolve_limits(config, USER, unix_groups)
    for key, value in (config.users[USER].declared() if USER in config.users else {}).items():
        assert resolved.values[key] == Resolved(value, f"user:{USER}")


@given(scenarios())
def test_group_values_are_at_least_every_group_value(
    scenario: tuple[ResourceLimitsConfig, tuple[str, ...]],
) -> None:
    config, unix_groups = scenario
    resolved = resolve_limits(config, USER, unix_groups)
    user_keys = config.users[USER].declared() if USER in config.users else {}
    for key in LIMIT_KEYS:
        if key in user_keys:
            continue
        group_values = [
            config.groups[group].declared()[key]
            for group in resolved.groups
            if key in config.groups[group].declared()
        ]
        for value in group_values:
            assert rank(key, resolved.values[key].value) >= rank(key, value)
        if group_values:
            assert resolved.source_of(key).startswith("group:")


@given(scenarios())
def test_the_source_names_a_layer_that_set_the_key(
    scenario: tuple[ResourceLimitsConfig, tuple[str, ...]],
) -> None:
    config, unix_groups = scenario
    resolved = resolve_limits(config, USER, unix_groups)
    assert set(resolved.values) == set(LIMIT_KEYS)
    for key, result in resolved.values.items():
        layers = layers_setting(config, resolved, key)
        assert result.source in layers
        assert layers[result.source] == result.value
        # No layer above the chosen one sets the key.
        order = list(layers)
        first_kind = order[0].split(":")[0]
        assert result.source.split(":")[0] == first_kind


@given(scenarios())
def test_membership_is_exactly_members_or_unix_group(
    scenario: tuple[ResourceLimitsConfig, tuple[str, ...]],
) -> None:
    config, unix_groups = scenario
    expected = tuple(
        name
        for name, group in config.groups.items()
        if USER in group.members or name in unix_groups
    )
    assert groups_of(config, USER, unix_groups) == expected
    assert resolve_limits(config, USER, unix_groups).groups == expected


@given(scenarios(), st.lists(st.text(min_size=1, max_size=8), max_size=3))
def test_unix_groups_outside_the_configuration_change_nothing(
    scenario: tuple[ResourceLimitsConfig, tuple[str, ...]], extra: list[str]
) -> None:
    config, unix_groups = scenario
    unrelated = [name for name in extra if name not in config.groups]
    assert resolve_limits(config, USER, unix_groups) == resolve_limits(
        config, USER, (*unix_groups, *unrelated)
    )
