"""ds01.core.admission: connection caps, fair worker shares and rate-limited notices."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.core.admission import ConnectionTable, RefusalNotices, Share, WorkShares


def test_a_uid_at_its_cap_is_refused_and_others_are_not() -> None:
    table = ConnectionTable(per_uid=2, total=3)
    assert table.admit(1000) is None
    assert table.admit(1000) is None
    assert table.admit(1000) == "per_uid"
    assert table.admit(1001) is None
    assert table.admit(1002) == "total"
    table.release(1000)
    assert table.admit(1002) is None
    assert (table.held(1000), table.held(1002), table.count) == (1, 1, 3)


def test_releasing_what_was_never_admitted_is_an_error() -> None:
    with pytest.raises(ValueError):
        ConnectionTable(per_uid=1, total=1).release(5)


def test_a_share_must_leave_room_for_others() -> None:
    with pytest.raises(ValueError):
        Share(slots=4, per_uid=4, reserved=1)
    with pytest.raises(ValueError):
        Share(slots=4, per_uid=0)


def test_one_uid_with_many_jobs_leaves_workers_for_the_others() -> None:
    shares: WorkShares[str] = WorkShares(Share(slots=6, per_uid=2, reserved=1))
    for i in range(100):
        shares.submit(1000, f"flood{i}")
    shares.submit(1001, "victim")
    taken = [shares.take() for _ in range(3)]
    assert taken == [(1000, "flood0", False), (1001, "victim", False), (1000, "flood1", False)]
    assert shares.take() is None  # the flooder is at its share; nobody else waits
    shares.submit(1002, "other")
    assert shares.take() == (1002, "other", False)


def test_the_reserved_slot_is_only_for_privileged_jobs() -> None:
    shares: WorkShares[str] = WorkShares(Share(slots=3, per_uid=1, reserved=1))
    shares.submit(1, "a")
    shares.submit(2, "b")
    shares.submit(3, "c")
    shares.submit(0, "root", privileged=True)
    assert [shares.take() for _ in range(2)] == [(1, "a", False), (2, "b", False)]
    assert shares.take() == (0, "root", True)  # c waits: the last slot is reserved
    assert shares.take() is None
    shares.done(1)
    assert shares.take() == (3, "c", False)
    shares.submit(0, "root again", privileged=True)
    assert shares.take() is None  # every slot is taken
    shares.done(0, privileged=True)
    assert shares.take() == (0, "root again", True)


# Operations: ("submit", uid, privileged) | ("take",) | ("done", index into running jobs).
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 4), st.booleans()),
        st.tuples(st.just("take")),
        st.tuples(st.just("done"), st.integers(0, 50)),
    ),
    max_size=200,
)


@settings(max_examples=300)
@given(
    ops=OPS,
    slots=st.integers(1, 6),
    per_uid=st.integers(1, 6),
    reserved=st.integers(0, 2),
)
def test_shares_hold_their_invariants(
    ops: list[tuple[object, ...]], slots: int, per_uid: int, reserved: int
) -> None:
    if not per_uid <= slots - reserved:
        return
    share = Share(slots=slots, per_uid=per_uid, reserved=reserved)
    shares: WorkShares[int] = WorkShares(share)
    ready: list[tuple[int, int, bool]] = []  # (uid, job, privileged), the model of what waits
    running: list[tuple[int, bool]] = []
    counter = 0
    for op in ops:
        if op[0] == "submit":
            uid, privileged = int(op[1]), bool(op[2])  # type: ignore[call-overload]
            counter += 1
            shares.submit(uid, counter, privileged=privileged)
            ready.append((uid, counter, privileged))
        elif op[0] == "take":
            picked = shares.take()
            per = Counter(uid for uid, _ in running)
            open_to_all = sum(not priv for _, priv in running) < slots - reserved
            # Within one uid jobs run in the order they came: only each uid's first counts.
            heads = {uid: (uid, job, priv) for uid, job, priv in reversed(ready)}
            allowed = [
                (uid, job, priv)
                for uid, job, priv in heads.values()
                if len(running) < slots and per[uid] < per_uid and (open_to_all or priv)
            ]
            if picked is None:
                assert not allowed, "a job could run but none was taken"
                continue
            uid, job, privileged = picked
            entry = next(e for e in ready if e[1] == job)
            assert entry in allowed and entry[2] == privileged
            # Within one uid, jobs run in the order they came.
            assert job == min(j for u, j, _ in ready if u == uid)
            ready.remove(entry)
            running.append((uid, entry[2]))
        elif running:
            uid, priv = running.pop(int(op[1]) % len(running))  # type: ignore[call-overload]
            shares.done(uid, privileged=priv)
        assert shares.running() == len(running) <= slots
        assert all(n <= per_uid for n in Counter(u for u, _ in running).values())
        assert sum(not priv for _, priv in running) <= slots - reserved
        assert shares.waiting() == len(ready)


def test_uids_are_served_round_robin() -> None:
    shares: WorkShares[str] = WorkShares(Share(slots=1, per_uid=1))
    for uid in (1, 2, 3):
        for i in range(3):
            shares.submit(uid, f"{uid}-{i}")
    order = []
    while (picked := shares.take()) is not None:
        order.append(picked[1])
        shares.done(picked[0])
    assert order == ["1-0", "2-0", "3-0", "1-1", "2-1", "3-1", "1-2", "2-2", "3-2"]


def test_refusals_are_reported_once_per_interval_with_the_count() -> None:
    notices = RefusalNotices(interval_s=60)
    first = notices.refused(1000, "per_uid", now_s=0)
    assert first is not None and first.count == 1
    assert all(notices.refused(1000, "per_uid", now_s=t) is None for t in range(1, 60))
    assert notices.refused(1001, "per_uid", now_s=30) is not None  # another uid
    assert notices.refused(1000, "read_timeout", now_s=30) is not None  # another reason
    later = notices.refused(1000, "per_uid", now_s=61)
    assert later is not None and later.count == 60  # 59 suppressed, and this one
