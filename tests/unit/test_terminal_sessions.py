"""The terminal sessions ds01d keeps (``ds01.core.terminal_sessions``): one user's many
terminals never make another user's live one ``NotFound``; a user's live ones are capped."""

from __future__ import annotations

import pytest

from ds01.core.terminal_sessions import MAX_LIVE_SESSIONS_PER_USER, MAX_SESSIONS, SessionTable
from ds01.errors import ServerBusy, Throttled

ALICE, BOB = 1001, 1002


def test_many_finished_terminals_of_one_user_forget_only_finished_ones() -> None:
    table: SessionTable[str] = SessionTable()
    table.add("bob-live", BOB, "b")
    table.add("bob-done", BOB, "b")
    table.end("bob-done")
    for n in range(MAX_SESSIONS * 2):  # alice's terminals, each ending at once
        table.add(f"alice-{n}", ALICE, "a")
        table.end(f"alice-{n}")
    assert len(table) == MAX_SESSIONS
    assert table.get("bob-live") == (BOB, "b")  # live: never forgotten
    assert table.get("bob-done") == (BOB, "b")  # alice's own finished ones went first
    assert table.get(f"alice-{MAX_SESSIONS * 2 - 1}") == (ALICE, "a")


def test_when_the_caller_has_none_finished_the_oldest_finished_of_anyone_goes() -> None:
    table: SessionTable[str] = SessionTable()
    for n in range(MAX_SESSIONS):
        table.add(f"s{n}", 3000 + n, "x")  # one live session each: nobody reaches a cap
    table.end("s5")
    table.end("s7")
    assert table.add("new", ALICE, "a") == "s5"
    assert table.get("s5") is None and table.get("s7") is not None
    assert table.add("new2", ALICE, "a") == "s7"
    with pytest.raises(ServerBusy, match="the most it keeps"):  # all live: none forgotten
        table.add("more", ALICE, "a")


def test_a_user_holds_at_most_their_share_of_live_terminals() -> None:
    table: SessionTable[str] = SessionTable()
    for n in range(MAX_LIVE_SESSIONS_PER_USER):
        table.add(f"a{n}", ALICE, "a")
    refused = table.refusal(ALICE)
    assert isinstance(refused, Throttled) and refused.http_status == 429
    with pytest.raises(
        Throttled, match=f"the most one user may \\({MAX_LIVE_SESSIONS_PER_USER}\\)"
    ):
        table.add("one-more", ALICE, "a")
    assert table.refusal(BOB) is None
    table.end("a0")  # one ends: another may open
    table.add("one-more", ALICE, "a")
    assert table.live(ALICE) == MAX_LIVE_SESSIONS_PER_USER
