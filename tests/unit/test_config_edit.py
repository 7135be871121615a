"""Targeted edits of resource-limits.yaml (``ds01 admin add-user`` / ``remove-user``): only
the lines that must change do, comments stay, and every result passes the loader's own
validation; forms the edit does not handle are written anew, and the result says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.config.edit import add_user, remove_user, user_entries
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import parse_config
from ds01.config.resolve import resolve_limits
from ds01.errors import ConfigError, InvalidInput

#: The mission's example resource-limits.yaml, as shipped in examples/config/.
MISSION_EXAMPLE = Path(__file__).resolve().parents[2] / "examples/config/resource-limits.yaml"

LIMITS = """\
# Lab limits: reviewed every term.
admin_group: ds01-admin  # who administers ds01

defaults:
  gpu_limit: 1

groups:
  phd_students:
    unix_group: phd
    members:
      - jane      # joined 2026
      - karl
    gpu_limit: 2   # two GPUs for PhDs
  msc_students: {}
  visitors:

users:
  jane:
    gpu_limit: 4   # thesis deadline
  karl: {}

aggregate:
  users:
    jane:
      memory_limit: 64G

policies:
  users:
    jane:
      idle_grace_minutes: 60
"""


def parse(text: str) -> ResourceLimitsConfig:
    return parse_config(text, "resource-limits", "resource-limits.yaml")


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines only in before, lines only in after)."""
    old, new = before.splitlines(), after.splitlines()
    return [line for line in old if line not in new], [line for line in new if line not in old]


def test_adding_a_user_entry_changes_one_line_and_keeps_every_comment() -> None:
    edit = add_user(LIMITS, "resource-limits.yaml", "dave")

    assert edit.changes == ("add an entry for dave under users:",)
    assert edit.comments_kept
    assert changed_lines(LIMITS, edit.text) == ([], ["  dave: {}"])
    assert edit.text.index("  dave: {}") > edit.text.index("  karl: {}")
    assert parse(edit.text).users["dave"].declared() == {}


def test_adding_to_a_group_appends_to_members_in_each_form() -> None:
    block = add_user(LIMITS, "r.yaml", "alice", "phd_students")
    assert changed_lines(LIMITS, block.text) == ([], ["      - alice"])
    assert parse(block.text).groups["phd_students"].members == ("jane", "karl", "alice")

    flow = add_user(LIMITS, "r.yaml", "bob", "msc_students")
    assert changed_lines(LIMITS, flow.text) == (
        ["  msc_students: {}"],
        ["  msc_students: {members: [bob]}"],
    )
    empty = add_user(LIMITS, "r.yaml", "erin", "visitors")
    assert changed_lines(LIMITS, empty.text)[1] == ["    members: [erin]"]
    config = parse(empty.text)
    assert config.groups["visitors"].members == ("erin",)
    assert resolve_limits(config, "erin", ()).groups == ("visitors",)


def test_adding_someone_already_there_changes_nothing() -> None:
    assert add_user(LIMITS, "r.yaml", "karl").changes == ()
    assert add_user(LIMITS, "r.yaml", "karl", "phd_students").text == LIMITS


def test_an_undefined_group_is_refused_with_the_defined_ones() -> None:
    with pytest.raises(InvalidInput) as refused:
        add_user(LIMITS, "r.yaml", "alice", "phd")
    assert "No group 'phd'" in refused.value.message
    assert "phd_students, msc_students, visitors" in refused.value.message


def test_sections_that_do_not_exist_yet_are_created() -> None:
    edit = add_user("# only a comment\ndefaults:\n  gpu_limit: 1\n", "r.yaml", "yes")
    assert edit.text == "# only a comment\ndefaults:\n  gpu_limit: 1\nusers:\n  'yes': {}\n"
    assert parse(edit.text).users["yes"].declared() == {}
    assert parse(add_user("", "r.yaml", "amy").text).users.keys() == {"amy"}
    assert "users:\n  amy: {}" in add_user("users:\n", "r.yaml", "amy").text


def test_removing_a_user_takes_their_reservation_limits_too() -> None:
    text = LIMITS + "\nreservations:\n  users:\n    jane: {max_hours: 12}  # course\n"
    edit = remove_user(text, "r.yaml", "jane")
    assert "remove reservations.users.jane" in edit.changes
    assert "jane" not in parse(edit.text).reservations.users


def test_removing_a_user_takes_every_entry_and_membership_and_nothing_else() -> None:
    edit = remove_user(LIMITS, "r.yaml", "jane")

    assert edit.changes == (
        "remove users.jane",
        "remove aggregate.users.jane",
        "remove policies.users.jane",
        "remove jane from groups.phd_students.members",
    )
    assert edit.comments_kept
    removed, added = changed_lines(LIMITS, edit.text)
    assert added == ["  users: {}"] * 2  # the last entries of aggregate.users, policies.users
    assert "      - jane      # joined 2026" in removed
    assert "    gpu_limit: 4   # thesis deadline" in removed
    for kept in ("# Lab limits: reviewed every term.", "# two GPUs for PhDs", "  karl: {}"):
        assert kept in edit.text
    config = parse(edit.text)
    assert "jane" not in config.users
    assert config.groups["phd_students"].members == ("karl",)
    assert user_entries(yaml.safe_load(edit.text), "jane") == []


def test_removing_the_last_member_leaves_an_empty_list_not_null() -> None:
    one = "groups:\n  staff:\n    members:\n      - amy\n"
    edit = remove_user(one, "r.yaml", "amy")
    assert edit.text == "groups:\n  staff:\n    members: []\n"
    assert parse(edit.text).groups["staff"].members == ()


def test_flow_collections_are_edited_in_place() -> None:
    text = "groups: {phd: {members: [a, b]}}\nusers: {a: {gpu_limit: 3}, b: {}}\n"
    assert (
        remove_user(text, "r.yaml", "a").text == "groups: {phd: {members: [b]}}\nusers: {b: {}}\n"
    )
    assert (
        remove_user(text, "r.yaml", "b").text
        == "groups: {phd: {members: [a]}}\nusers: {a: {gpu_limit: 3}}\n"
    )
    assert add_user(text, "r.yaml", "c").text.endswith("users: {a: {gpu_limit: 3}, b: {}, c: {}}\n")


def test_forms_the_edit_does_not_handle_are_written_anew_and_say_so() -> None:
    anchored = (
        "# a comment that will be lost\n"
        "groups:\n  phd: &base\n    members: [a]\n    gpu_limit: 2\n  postdoc: *base\n"
    )
    edit = add_user(anchored, "r.yaml", "b", "phd")
    assert not edit.comments_kept
    assert "a comment that will be lost" not in edit.text
    config = parse(edit.text)
    assert config.groups["phd"].members == ("a", "b")
    assert config.groups["postdoc"].members == ("a",)  # the alias's own copy is unchanged


def test_an_invalid_file_cannot_be_edited_and_an_edit_never_makes_one() -> None:
    with pytest.raises(ConfigError, match=r"r\.yaml:2"):
        add_user("defaults:\n  gpu_limit: -1\n", "r.yaml", "amy")
    with pytest.raises(ConfigError, match="invalid user name"):
        add_user(LIMITS, "r.yaml", "two words")


def test_the_missions_example_keeps_loading_after_edits() -> None:
    text = MISSION_EXAMPLE.read_text()
    added = add_user(add_user(text, "r.yaml", "alice", "phd_students").text, "r.yaml", "bob")
    assert added.comments_kept
    config = parse(added.text)
    assert resolve_limits(config, "alice", ()).gpu_limit == 2
    assert resolve_limits(config, "jane.researcher", ()).gpu_limit == 4
    assert parse(remove_user(added.text, "r.yaml", "jane.researcher").text).users.keys() == {"bob"}


NAMES = st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    adds=st.lists(
        st.tuples(NAMES, st.sampled_from([None, "phd_students", "msc_students", "visitors"])),
        max_size=6,
    ),
    removes=st.lists(NAMES, max_size=3),
)
def test_any_sequence_of_edits_is_what_the_same_changes_on_the_data_give(
    adds: list[tuple[str, str | None]], removes: list[str]
) -> None:
    text = LIMITS
    members: dict[str, list[str]] = {
        "phd_students": ["jane", "karl"],
        "msc_students": [],
        "visitors": [],
    }
    users = {"jane", "karl"}
    for name, group in adds:
        text = add_user(text, "r.yaml", name, group).text
        if group is None:
            users.add(name)
        elif name not in members[group]:
            members[group].append(name)
    for name in removes:
        text = remove_user(text, "r.yaml", name).text
        users.discard(name)
        members = {g: [m for m in ms if m != name] for g, ms in members.items()}
    config = parse(text)
    assert set(config.users) == users
    assert {g: list(config.groups[g].members) for g in members} == members
    assert "# thesis deadline" in text or "jane" in removes
