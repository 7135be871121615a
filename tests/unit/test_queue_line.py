"""The queue as ``ds01 queue`` shows it (``ds01.core.scheduler.line_places``): position,
length and status from one plan, whatever left the queue since that plan was made."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from test_scheduler import FAIR, NOW, PROPERTY_SETTINGS, make_inventory, pending, scenarios

from ds01.core.allocation import AllocationState
from ds01.core.scheduler import LinePlace, Plan, UsageTotals, line_places, plan

#: Statuses of requests that block nobody: they may stand ahead of the head.
BLOCKS_NOBODY = frozenset({"quota", "unsatisfiable"})


@st.composite
def plans_and_leavers(draw: st.DrawFn) -> tuple[Plan, set[str]]:
    """A plan, and the ids still waiting after some of its requests left (started by that
    pass, or cancelled, or started later) before the next pass."""
    scenario: dict[str, Any] = draw(st.one_of(scenarios(), scenarios(crowded=True)))
    result = plan(**scenario)
    ids = [e.request.id for e in result.ranked]
    left = draw(st.sets(st.sampled_from(ids))) if ids else set()
    return result, set(ids) - left


def shown(places: dict[str, LinePlace]) -> list[LinePlace]:
    """The places as a listing shows them: in line, those starting first."""
    return sorted(places.values(), key=lambda p: p.entry.position)


@PROPERTY_SETTINGS
@given(case=plans_and_leavers())
def test_the_head_is_first_in_line_and_positions_count_the_line(
    case: tuple[Plan, set[str]],
) -> None:
    result, waiting_now = case
    places = line_places(result, waiting_now)
    assert set(places) == waiting_now
    in_line = [p for p in shown(places) if p.position is not None]
    assert [p.position for p in in_line] == list(range(1, len(in_line) + 1))
    assert all(p.queue_length == len(in_line) for p in places.values())
    assert all((p.position is None) == p.entry.starts for p in places.values())
    heads = [p for p in in_line if p.entry.status == "head"]
    assert len(heads) <= 1
    for head in heads:
        assert head.position is not None
        ahead = in_line[: head.position - 1]
        assert all(p.entry.status in BLOCKS_NOBODY for p in ahead), ahead


@PROPERTY_SETTINGS
@given(case=plans_and_leavers())
def test_each_place_is_its_own_entry_of_the_plan(case: tuple[Plan, set[str]]) -> None:
    result, waiting_now = case
    for request_id, place in line_places(result, waiting_now).items():
        assert place.entry == result.entry(request_id)


def test_the_request_behind_one_that_started_is_first_in_line() -> None:
    """The reported case: on one free GPU the pass starts #1 and makes #2 the head; once #1
    has started (and before the next pass), #2 is position 1 of 1, not 2 of 2."""
    queue = [pending("a", "alice", gpus=1, waited_hours=2), pending("b", "bob", gpus=1)]
    result = plan(queue, make_inventory(1), AllocationState(), NOW, UsageTotals(), FAIR)
    assert [(e.request.id, e.status) for e in result.ranked] == [("a", "starting"), ("b", "head")]

    while_a_starts = line_places(result, {"a", "b"})
    assert (while_a_starts["a"].position, while_a_starts["b"].position) == (None, 1)
    once_a_started = line_places(result, {"b"})
    assert (once_a_started["b"].position, once_a_started["b"].queue_length) == (1, 1)
    assert once_a_started["b"].entry.status == "head"
