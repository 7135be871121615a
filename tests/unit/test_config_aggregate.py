"""The ``aggregate:`` section of resource-limits.yaml: schema, errors, resolution."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ds01.config.limits import AGGREGATE_KEYS, BUILTIN_AGGREGATE
from ds01.config.resolve import resolve_aggregate
from ds01.model.units import GIB, format_bytes
from support import limits_error, limits_from

CONFIG = """
    groups:
      phd: {}
      msc:
        members: [bob]
      staff: {}
    aggregate:
      defaults:
        cpu_limit: 8
        memory_limit: 64g
      groups:
        phd:
          memory_limit: 96G
          pids_limit: 12288
        msc:
          cpu_limit: 4
          memory_limit: 32G
        staff:
          memory_limit: null
      users:
        jane:
          cpu_limit: 0.5
"""


def test_the_section_is_typed_and_sizes_are_normalised() -> None:
    config = limits_from(CONFIG).aggregate
    assert config.defaults.declared() == {"cpu_limit": 8.0, "memory_limit": "64G"}
    assert config.groups["phd"].declared() == {"memory_limit": "96G", "pids_limit": 12288}
    assert config.groups["staff"].declared() == {"memory_limit": None}  # null: unlimited
    assert config.users["jane"].declared() == {"cpu_limit": 0.5}


def test_resolution_is_user_then_groups_then_defaults_then_unlimited() -> None:
    config = limits_from(CONFIG)
    jane = resolve_aggregate(config, "jane", ["phd"])
    assert jane.explain() == {
        "cpu_limit": {"value": 0.5, "source": "user:jane"},
        "memory_limit": {"value": "96G", "source": "group:phd"},
        "pids_limit": {"value": 12288, "source": "group:phd"},
        "disk_limit": {"value": None, "source": "builtin"},
    }
    assert jane.memory_limit_bytes == 96 * GIB
    nobody = resolve_aggregate(config, "nobody", [])
    assert nobody.explain() == {
        "cpu_limit": {"value": 8.0, "source": "defaults"},
        "memory_limit": {"value": "64G", "source": "defaults"},
        "pids_limit": {"value": None, "source": "builtin"},
        "disk_limit": {"value": None, "source": "builtin"},
    }
    assert not nobody.unlimited


def test_in_several_groups_each_key_takes_the_most_permissive_value() -> None:
    config = limits_from(CONFIG)
    both = resolve_aggregate(config, "bob", ["phd"])  # msc by members, phd by Unix group
    assert both.groups == ("phd", "msc")
    assert both.values["memory_limit"].value == "96G"
    assert both.values["cpu_limit"].value == 4.0  # only msc sets it
    assert both.source_of("cpu_limit") == "group:msc"
    unlimited = resolve_aggregate(config, "carol", ["phd", "staff"])
    assert unlimited.memory_limit_bytes is None  # null beats any size
    assert unlimited.source_of("memory_limit") == "group:staff"


def test_without_a_section_everyone_is_unlimited() -> None:
    for text in ("{}", "aggregate:\n", "aggregate:\n  defaults:\n  users:\n"):
        resolved = resolve_aggregate(limits_from(text), "alice", ["phd"])
        assert resolved.unlimited
        assert all(source == "builtin" for source in map(resolved.source_of, AGGREGATE_KEYS))
    assert BUILTIN_AGGREGATE.declared() == dict.fromkeys(AGGREGATE_KEYS)


def test_a_group_entry_must_name_a_defined_group_on_its_own_line() -> None:
    message = limits_error(
        """
        groups:
          phd: {}
        aggregate:
          groups:
            phd: {memory_limit: 96G}
            phdd: {memory_limit: 96G}
        """
    )
    assert message.startswith("limits.yaml:6: aggregate.groups.phdd: no such group")
    assert "(defined: phd)" in message


def test_invalid_values_name_file_line_and_key() -> None:
    message = limits_error(
        """
        aggregate:
          users:
            jane:
              cpu_limit: -1
              memory_limit: 0
              pids_limit: 0
        """
    )
    lines = message.splitlines()
    assert lines[0].startswith("limits.yaml:4: aggregate.users.jane.cpu_limit: invalid CPU count")
    assert lines[1].startswith("limits.yaml:5: aggregate.users.jane.memory_limit: invalid size")
    assert lines[2].startswith("limits.yaml:6: aggregate.users.jane.pids_limit:")
    assert "cheese" in limits_error("aggregate:\n  defaults:\n    memory_limit: cheese\n")


def test_the_reference_implementations_keys_get_a_hint() -> None:
    message = limits_error("aggregate:\n  defaults:\n    memory_max: 96G\n")
    assert message == (
        "limits.yaml:2: aggregate.defaults: unknown key 'memory_max'; use memory_limit "
        "(aggregate keys: cpu_limit, memory_limit, pids_limit, disk_limit)"
    )
    assert "use cpu_limit (CPUs" in limits_error("aggregate:\n  defaults:\n    cpu_quota: 9600%\n")
    assert "unknown key" in limits_error("aggregate:\n  anything: 1\n")


@given(
    default=st.one_of(st.none(), st.integers(min_value=1, max_value=2**40)),
    groups=st.lists(st.one_of(st.none(), st.integers(min_value=1, max_value=2**40)), max_size=4),
)
def test_a_group_total_never_lowers_the_most_permissive_one(
    default: int | None, groups: list[int | None]
) -> None:
    def size(value: int | None) -> str:
        return "null" if value is None else format_bytes(value)

    text = "groups:\n" + "".join(f"  g{i}: {{}}\n" for i in range(len(groups)))
    text += f"aggregate:\n  defaults:\n    memory_limit: {size(default)}\n  groups:\n"
    text += "".join(f"    g{i}: {{memory_limit: {size(v)}}}\n" for i, v in enumerate(groups))
    resolved = resolve_aggregate(limits_from(text), "u", [f"g{i}" for i in range(len(groups))])
    if not groups:
        assert resolved.memory_limit_bytes == default
    elif None in groups:
        assert resolved.memory_limit_bytes is None
    else:
        assert resolved.memory_limit_bytes == max(groups)
