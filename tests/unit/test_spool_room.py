"""Spool files for uploads: how many a user and all users hold, and the free-space floor
(``ds01.core.spool_room``, counted by ``ds01.daemon.spool``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from ds01.core.spool_room import (
    MAX_SPOOLS,
    MAX_SPOOLS_PER_USER,
    MIN_FREE_BYTES,
    space_refusal,
    spool_refusal,
)
from ds01.daemon.spool import Spools
from ds01.errors import NoSpace, Throttled


def test_a_user_holds_at_most_their_share_and_all_users_the_total() -> None:
    assert spool_refusal(MAX_SPOOLS_PER_USER - 1, MAX_SPOOLS - 1) is None
    mine = spool_refusal(MAX_SPOOLS_PER_USER, MAX_SPOOLS_PER_USER)
    assert isinstance(mine, Throttled) and mine.http_status == 429
    assert "uploads of yours" in mine.message
    full = spool_refusal(0, MAX_SPOOLS)
    assert isinstance(full, Throttled) and "of all users" in full.message


def test_no_spool_begins_below_the_free_space_floor() -> None:
    assert space_refusal(MIN_FREE_BYTES) is None
    low = space_refusal(MIN_FREE_BYTES - 1)
    assert isinstance(low, NoSpace) and low.http_status == 507
    assert "2G ds01 keeps free" in low.message


def test_a_spool_is_held_until_its_file_is_closed_and_only_by_its_user(tmp_path: Path) -> None:
    spools = Spools()
    with contextlib.ExitStack() as held:
        for _ in range(MAX_SPOOLS_PER_USER):
            held.enter_context(spools.take(1001, tmp_path))
        with pytest.raises(Throttled, match="uploads of yours"):
            spools.take(1001, tmp_path)
        with spools.take(1002, tmp_path) as other:  # another user's share is theirs
            other.write(b"x")
        assert spools.held(1001) == MAX_SPOOLS_PER_USER and spools.held() == 2
    assert spools.held() == 0
    spools.take(1001, tmp_path).close()
    assert list(tmp_path.iterdir()) == []  # unlinked files


def test_all_users_together_hold_at_most_the_total(tmp_path: Path) -> None:
    spools = Spools()
    files = [spools.take(2000 + n, tmp_path) for n in range(MAX_SPOOLS)]
    with pytest.raises(Throttled, match="of all users"):
        spools.take(3000, tmp_path)
    files.pop().close()
    spools.take(3000, tmp_path).close()
    for spool in files:
        spool.close()
    assert spools.held() == 0
