"""ds01.core.admission: connection caps, fair worker shares and rate-limited notices."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.core.admission import (
    ConnectionTable,
    Group,
    HubCaps,
    RefusalNotices,
    Share,
    WorkShares,
    party_of,
    request_refusal,
)


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


# Operations: ("submit", party, privileged) | ("take",) | ("done", index into running jobs).
# Parties 0-4 are uids; 5-7 users behind a hub (group HUB_UID, of ``group_slots``).
HUB_UID = 990
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 7), st.booleans()),
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
    group_slots=st.integers(1, 4),
)
def test_shares_hold_their_invariants(
    ops: list[tuple[object, ...]], slots: int, per_uid: int, reserved: int, group_slots: int
) -> None:
    if not per_uid <= slots - reserved:
        return
    share = Share(slots=slots, per_uid=per_uid, reserved=reserved)
    shares: WorkShares[int] = WorkShares(share)
    ready: list[tuple[Any, int, bool]] = []  # (party, job, privileged), the model of what waits
    running: list[tuple[Any, bool]] = []
    counter = 0

    def in_hub(party: Any) -> bool:
        return isinstance(party, tuple)

    for op in ops:
        if op[0] == "submit":
            n, privileged = int(op[1]), bool(op[2])  # type: ignore[call-overload]
            party: Any = n if n < 5 else (HUB_UID, f"user{n}")
            counter += 1
            group = Group(HUB_UID, group_slots) if in_hub(party) else None
            shares.submit(party, counter, privileged=privileged and not group, group=group)
            ready.append((party, counter, privileged and not group))
        elif op[0] == "take":
            picked = shares.take()
            per = Counter(p for p, _ in running)
            open_to_all = sum(not priv for _, priv in running) < slots - reserved
            hub_room = sum(in_hub(p) for p, _ in running) < group_slots
            # Within one party jobs run in the order they came: only each one's first counts.
            heads = {p: (p, job, priv) for p, job, priv in reversed(ready)}
            allowed = [
                (p, job, priv)
                for p, job, priv in heads.values()
                if len(running) < slots
                and per[p] < per_uid
                and (open_to_all or priv)
                and (hub_room or not in_hub(p))
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
        assert sum(in_hub(p) for p, _ in running) <= group_slots
        assert shares.waiting() == len(ready)
        assert shares.group_load(HUB_UID) == sum(in_hub(p) for p, *_ in ready + running)


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


HUB = HubCaps(connections=4, user_requests=3, workers=4, waiting=5)


def test_a_hubs_connection_cap_is_its_own() -> None:
    table = ConnectionTable(per_uid=2, total=10)
    assert [table.admit(990, HUB.connections) for _ in range(5)] == [None] * 4 + ["per_uid"]
    assert [table.admit(1000) for _ in range(3)] == [None, None, "per_uid"]


def test_each_user_behind_a_hub_is_a_party_of_its_own_and_nobody_else_is() -> None:
    assert party_of(990, HUB, "alice") == (990, "alice")
    assert party_of(990, HUB, None) == 990  # the hub as itself
    assert party_of(1000, None, "alice") == 1000  # a user naming someone counts as itself


def test_one_user_behind_a_hub_leaves_workers_for_its_other_users_and_the_hub_for_locals() -> None:
    shares: WorkShares[str] = WorkShares(Share(slots=6, per_uid=2, reserved=1))
    hub = Group(990, HUB.workers)
    for i in range(50):
        shares.submit((990, "alice"), f"flood{i}", group=hub)
    shares.submit((990, "bob"), "bob", group=hub)
    taken = [shares.take() for _ in range(3)]
    assert [t[1] for t in taken if t] == ["flood0", "bob", "flood1"]
    shares.submit((990, "carol"), "carol", group=hub)
    shares.submit(1000, "local")
    assert shares.take() == ((990, "carol"), "carol", False)
    assert shares.take() == (1000, "local", False)  # the hub's 4 slots are full; the rest stay
    shares.submit((990, "dave"), "dave", group=hub)
    assert shares.take() is None  # dave waits for a hub slot, not for alice's flood
    # Hub slots that free up go round its users: dave gets one of the next two.
    shares.done((990, "alice"))
    first = shares.take()
    assert first is not None
    shares.done(first[0])
    second = shares.take()
    assert second is not None and "dave" in (first[1], second[1]), (first, second)
    assert shares.group_load(990) == 4 + 47  # four running, alice's 47 ready


def test_a_request_is_refused_by_the_cap_that_it_reaches() -> None:
    def refusal(waits: bool, lane: int, open_: int, hub: HubCaps | None, hub_load: int) -> object:
        return request_refusal(
            waits=waits, per_uid=4, lane_load=lane, open_requests=open_,
            hub=hub, hub_waiting_load=hub_load,
        )  # fmt: skip

    assert refusal(False, 50, 50, None, 0) is None  # ordinary requests wait their turn
    assert refusal(True, 4, 4, None, 0) == "waiting_per_uid"
    assert refusal(True, 3, 3, None, 99) is None  # no hub: no hub cap
    assert refusal(False, 2, 3, HUB, 0) == "hub_user_requests"
    assert refusal(False, 2, 2, HUB, 5) is None
    assert refusal(True, 2, 2, HUB, 5) == "hub_waiting"
    assert refusal(True, 2, 2, HUB, 4) is None
    with pytest.raises(ValueError):
        HubCaps(connections=0, user_requests=1, workers=1, waiting=1)
