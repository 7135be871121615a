"""The firewall adapter against the kernel's own filter table, in a network namespace of
the test's (so the host's rules are never touched): a bridge's chain rewritten while in use
is, after every command ds01 runs, its old rules or its new ones, never empty or half
written; and a refused transaction leaves the old rules in place.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence

import pytest

from conftest import require_root
from ds01.runtime.firewall import (
    Firewall,
    FirewallError,
    _default_run,
    bridge_rules,
    guard_of,
    parse_rules,
)

BRIDGE = "ds01u1001"


@pytest.fixture
def netns_run() -> Iterator[tuple[Firewall, list[str]]]:
    """A ``Firewall`` whose commands run in a fresh network namespace, and the text of
    ``iptables -S`` there after each of them."""
    require_root("a network namespace's iptables")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    try:
        enter = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
        after: list[str] = []

        def run(argv: Sequence[str], stdin: str) -> str:
            out = _default_run([*enter, *argv], stdin)
            after.append(_default_run([*enter, "iptables", "-w", "-S"], ""))
            return out

        yield Firewall(run=run), after
    finally:
        holder.kill()
        holder.wait()


def test_a_live_chain_is_at_every_step_its_old_or_its_new_rules(
    netns_run: tuple[Firewall, list[str]],
) -> None:
    firewall, after = netns_run
    old, new = guard_of(1001, hub_uids=[998, 997]), guard_of(1001, hub_uids=[999])
    firewall.guard(BRIDGE, old)
    assert firewall.state().bridges == {BRIDGE: old}
    after.clear()

    firewall.guard(BRIDGE, new)

    assert after and all(parse_rules(text).bridges[BRIDGE] in (old, new) for text in after)
    assert firewall.state().bridges == {BRIDGE: new}
    assert bridge_rules(new)[-1] == ["-j", "REJECT"]


def test_a_refused_transaction_leaves_the_chain_as_it_was(
    netns_run: tuple[Firewall, list[str]],
) -> None:
    firewall, _ = netns_run
    guard = guard_of(1001, hub_uids=[998])
    firewall.guard(BRIDGE, guard)

    with pytest.raises(FirewallError):  # a rule the kernel refuses, as a bad module would be
        firewall._restore("*filter\n:DS01-ds01u1001 - [0:0]\n-A DS01-ds01u1001 -j NOSUCH\nCOMMIT\n")

    assert firewall.state().bridges == {BRIDGE: guard}
