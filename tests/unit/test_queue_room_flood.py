"""How many requests a user may have waiting in the GPU queue (``ds01.core.queue_room``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.core.queue_room import SHOWN_REQUESTS, WaitingRequest, check_queue_room
from ds01.errors import ExitCode, QuotaExceeded


def waiting(*kinds: str) -> list[WaitingRequest]:
    return [WaitingRequest(f"id{i:04d}", kind, f"c{i}") for i, kind in enumerate(kinds)]  # type: ignore[arg-type]


def test_waiting_creates_count_against_max_containers() -> None:
    check_queue_room("create", ["a"], waiting("create"), max_containers=3, max_queued=None)
    with pytest.raises(QuotaExceeded) as refused:
        check_queue_room(
            "create", ["a"], waiting("create", "create"), max_containers=3, max_queued=None
        )
    message = refused.value.message
    assert refused.value.exit_code == ExitCode.QUOTA
    assert "max_containers is 3" in message and "1 container(s) (a)" in message
    assert "id0000 (create 'c0')" in message and "id0001 (create 'c1')" in message
    assert "`ds01 queue cancel ID`" in message
    assert refused.value.details["waiting"] == ["id0000", "id0001"]


def test_waiting_starts_do_not_count_as_containers() -> None:
    check_queue_room(
        "create", ["a", "b"], waiting("start", "start"), max_containers=3, max_queued=None
    )


def test_max_queued_counts_creates_and_starts() -> None:
    check_queue_room("start", [], waiting("create", "start"), max_containers=None, max_queued=3)
    for kind in ("create", "start"):
        with pytest.raises(QuotaExceeded) as refused:
            check_queue_room(
                kind,  # type: ignore[arg-type]
                [],
                waiting("create", "start", "start"),
                max_containers=None,
                max_queued=3,
            )
        message = refused.value.message
        assert "3 of your requests wait in the queue (max_queued is 3)" in message
        assert "id0002 (start 'c2')" in message and "`ds01 queue cancel ID`" in message


def test_max_queued_zero_and_unlimited() -> None:
    with pytest.raises(QuotaExceeded, match="max_queued is 0"):
        check_queue_room("start", [], [], max_containers=None, max_queued=0)
    check_queue_room("start", [], waiting(*["start"] * 5000), max_containers=None, max_queued=None)


def test_a_long_queue_is_named_in_part() -> None:
    with pytest.raises(QuotaExceeded) as refused:
        check_queue_room(
            "start", [], waiting(*["start"] * 1820), max_containers=None, max_queued=10
        )
    message = refused.value.message
    assert f"and {1820 - SHOWN_REQUESTS} more" in message and len(message) < 600


@given(
    st.integers(0, 6),
    st.lists(st.sampled_from(["create", "start"]), max_size=12),
    st.none() | st.integers(0, 8),
    st.none() | st.integers(0, 8),
    st.sampled_from(["create", "start"]),
)
def test_admitted_exactly_when_within_both_limits(
    containers: int,
    kinds: list[str],
    max_containers: int | None,
    max_queued: int | None,
    kind: str,
) -> None:
    queue = waiting(*kinds)
    creates = kinds.count("create")
    fits_containers = (
        kind != "create" or max_containers is None or containers + creates + 1 <= max_containers
    )
    fits_queue = max_queued is None or len(kinds) + 1 <= max_queued
    names = [f"n{i}" for i in range(containers)]
    try:
        check_queue_room(
            kind,  # type: ignore[arg-type]
            names,
            queue,
            max_containers=max_containers,
            max_queued=max_queued,
        )
    except QuotaExceeded:
        assert not (fits_containers and fits_queue)
    else:
        assert fits_containers and fits_queue
