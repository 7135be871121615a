"""Host port claims (ds01.core.ports): a published port stays with its container."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ds01.core.ports import (
    PortClaim,
    choose_host_port,
    claimed_by_others,
    port_claims,
    port_taken_message,
)

ALICE_NB = PortClaim(20000, "nb._.1001", "alice")
BOB_WEB = PortClaim(20001, "web._.1002", "bob")


def test_a_port_claimed_by_another_container_is_reported_and_ones_own_is_not() -> None:
    claims = port_claims([ALICE_NB, BOB_WEB])
    assert claimed_by_others([20000, 20005], claims, "steal._.1002") == [ALICE_NB]
    assert claimed_by_others([20000], claims, "nb._.1001") == []  # its own (a re-create)
    assert claimed_by_others([20000, 20001], claims, "twin._.1001") == [ALICE_NB, BOB_WEB]


def test_the_choice_skips_claimed_ports_and_ports_something_listens_on() -> None:
    claims = port_claims([ALICE_NB])
    assert choose_host_port(range(20000, 20003), claims, lambda p: True) == 20001
    assert choose_host_port(range(20000, 20003), claims, lambda p: p != 20001) == 20002
    assert choose_host_port(range(20000, 20002), claims, lambda p: p != 20001) is None


def test_the_message_names_a_container_only_to_its_owner() -> None:
    assert "'nb'" in port_taken_message(20000, ALICE_NB, "alice")
    to_bob = port_taken_message(20000, ALICE_NB, "bob")
    assert "nb" not in to_bob.replace("another", "") and "another user's" in to_bob
    assert "20000 on 127.0.0.1" in to_bob


@given(
    claimed=st.dictionaries(st.integers(1024, 1100), st.sampled_from(["a._.1", "b._.2"])),
    free=st.sets(st.integers(1024, 1100)),
)
def test_a_chosen_port_is_never_claimed_and_always_free(
    claimed: dict[int, str], free: set[int]
) -> None:
    claims = port_claims(PortClaim(p, c, c[0]) for p, c in claimed.items())
    chosen = choose_host_port(range(1024, 1101), claims, free.__contains__)
    if chosen is None:
        assert not (free - set(claimed))
    else:
        assert chosen in free and chosen not in claimed
        assert all(p in claimed or p not in free for p in range(1024, chosen))
