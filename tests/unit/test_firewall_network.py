"""The host firewall adapter's rules and its bookkeeping, on an in-memory filter table.

The real rules are exercised against the kernel in ``tests/e2e/test_bypass_network.py``;
here: the names and rules it spells, reading ``iptables -S`` back, and that installing is
idempotent and removing leaves nothing of a bridge.
"""

from __future__ import annotations

import grp
import os
import pwd
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from ds01.config.limits import HubConfig
from ds01.daemon.networks import (
    NetworkUpkeep,
    UserNetworks,
    bridge_name,
    network_name,
)
from ds01.events.log import EventLog
from ds01.runtime.docker import DockerRuntime
from ds01.runtime.docker_networks import NetworkRecord
from ds01.runtime.firewall import (
    CHAIN,
    Firewall,
    FirewallError,
    bridge_chain,
    bridge_rules,
    guard_of,
    parse_rules,
    restore_text,
)
from ds01.runtime.identity import member_uids


class FilterTable:
    """Just enough of ``iptables -w -t filter`` and ``iptables-restore -w --noflush`` for
    ``Firewall``: chains of rule lists; a restore's text is applied whole or not at all, as
    the kernel's transaction, and kept in ``restored``."""

    def __init__(self) -> None:
        self.chains: dict[str, list[list[str]]] = {"INPUT": [], "FORWARD": [], "OUTPUT": []}
        self.restored: list[str] = []

    def __call__(self, argv: Sequence[str], stdin: str = "") -> str:
        if list(argv) == ["iptables-restore", "-w", "--noflush"]:
            self.restore(stdin)
            return ""
        assert list(argv[:4]) == ["iptables", "-w", "-t", "filter"] and not stdin, argv
        op, *rest = argv[4:]
        if op == "-S" and not rest:
            return self.dump()
        chain, *rule = rest
        if op != "-N" and chain not in self.chains:
            raise FirewallError(f"iptables: no chain {chain}")
        rules = self.chains.get(chain, [])
        if op == "-S":
            return ""
        if op == "-N":
            if chain in self.chains:
                raise FirewallError("iptables: Chain already exists.")
            self.chains[chain] = []
        elif op == "-C" and rule not in rules:
            raise FirewallError("iptables: Bad rule")
        elif op == "-A":
            rules.append(rule)
        elif op == "-I":
            rules.insert(int(rule[0]) - 1, rule[1:])
        elif op == "-D":
            rules.remove(rule)
        elif op == "-F":
            rules.clear()
        elif op == "-X":
            del self.chains[chain]
        return ""

    def restore(self, text: str) -> None:
        lines = text.splitlines()
        assert lines[0] == "*filter" and lines[-1] == "COMMIT" and text.endswith("\n"), text
        chains = {name: list(rules) for name, rules in self.chains.items()}
        for line in lines[1:-1]:
            if line.startswith(":"):
                name, policy, counters = line[1:].split()
                assert (policy, counters) == ("-", "[0:0]"), line
                chains[name] = []  # --noflush: a declared chain is made, or emptied
            else:
                op, chain, *rule = line.split()
                if op != "-A" or chain not in chains:
                    raise FirewallError(f"iptables-restore: line {line!r} refused")
                chains[chain].append(rule)
        self.chains = chains
        self.restored.append(text)

    def dump(self) -> str:
        lines = [f"-P {c} ACCEPT" for c in ("INPUT", "FORWARD", "OUTPUT")]
        lines += [f"-N {c}" for c in self.chains if c not in ("INPUT", "FORWARD", "OUTPUT")]
        for chain, rules in self.chains.items():
            for rule in rules:
                spelled = [*rule, "--reject-with", "icmp-port-unreachable"]
                lines.append(
                    " ".join(["-A", chain, *(spelled if rule == ["-j", "REJECT"] else rule)])
                )
        return "\n".join(lines) + "\n"


def test_names_fit_linux_and_iptables_for_every_uid():
    assert network_name(1001) == "ds01-u1001"
    assert bridge_name(4294967294) == "ds01u4294967294"
    assert len(bridge_name(4294967294)) <= 15  # IFNAMSIZ - 1
    assert bridge_chain(bridge_name(4294967294)) == "DS01-ds01u4294967294"
    for bad in ("", "a b", "x" * 30, "br;rm"):
        with pytest.raises(ValueError):
            bridge_chain(bad)


def test_a_bridge_chain_lets_only_its_owner_root_and_published_ports_through():
    rules = bridge_rules(guard_of(1001))
    assert rules[-1] == ["-j", "REJECT"]
    passes = [r for r in rules if r[-1] == "RETURN"]
    assert ["-m", "owner", "--uid-owner", "1001", "-j", "RETURN"] in passes
    assert ["-m", "owner", "--uid-owner", "0", "-j", "RETURN"] in passes
    assert len(passes) == 3  # and the DNAT of a published 127.0.0.1 port
    with pytest.raises(ValueError):
        bridge_rules(guard_of(-1))


def test_a_bridge_chain_lets_the_hub_identities_through_before_its_reject():
    guard = guard_of(1001, hub_uids=[998, 0, 1001, 998, 997])
    assert guard == guard_of(1001, (997, 998))  # root and the owner pass anyway
    rules = bridge_rules(guard)

    assert rules[:4] == [
        ["-m", "owner", "--uid-owner", "1001", "-j", "RETURN"],
        ["-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
        # by uid only, a hub group's members too: a process keeps the groups it had when
        # its user left the group, so --gid-owner would still let it in
        ["-m", "owner", "--uid-owner", "997", "-j", "RETURN"],
        ["-m", "owner", "--uid-owner", "998", "-j", "RETURN"],
    ]
    assert rules[-1] == ["-j", "REJECT"] and len(rules) == 6
    assert not any("--gid-owner" in rule for rule in rules)
    assert bridge_rules(guard_of(1001)) == [r for r in rules if "998" not in r and "997" not in r]
    with pytest.raises(ValueError):
        bridge_rules(guard_of(1001, hub_uids=[-5]))
    with pytest.raises(ValueError):  # unsorted: not what parse_rules reads back
        bridge_rules(type(guard)(1001, (999, 998)))


def test_the_hub_identities_read_back_and_a_changed_hub_reads_as_unguarded():
    table = FilterTable()
    firewall = Firewall(run=table)
    with_hubs = guard_of(1001, hub_uids=[998, 996, 997, 995])
    firewall.guard("ds01u1001", with_hubs)
    firewall.guard("ds01u1002", guard_of(1002))

    assert firewall.state().bridges == {"ds01u1001": with_hubs, "ds01u1002": guard_of(1002)}
    chain = table.chains["DS01-ds01u1001"]
    chain.insert(6, ["-m", "owner", "--uid-owner", "1003", "-j", "RETURN"])  # an intruder
    assert firewall.state().bridges["ds01u1001"] == guard_of(1001, [998, 996, 997, 995, 1003])
    assert firewall.state().bridges["ds01u1001"] != with_hubs  # so ds01d writes it again
    chain[6] = ["-m", "owner", "--gid-owner", "997", "--suppl-groups", "-j", "RETURN"]
    assert firewall.state().bridges["ds01u1001"] is None  # a group rule of an older ds01
    chain.pop(6)
    assert firewall.state().bridges["ds01u1001"] == with_hubs
    chain.insert(1, chain.pop(2))  # a hub ahead of root: not as ds01 writes it
    assert firewall.state().bridges["ds01u1001"] is None

    firewall.guard("ds01u1001", guard_of(1001))  # the hub left the configuration
    assert table.chains["DS01-ds01u1001"] == bridge_rules(guard_of(1001))


def test_guarding_is_idempotent_and_reads_back_as_written():
    table = FilterTable()
    firewall = Firewall(run=table)

    for _ in range(3):
        firewall.guard("ds01u1001", guard_of(1001))
        firewall.guard("ds01u1002", guard_of(1002))

    assert table.chains["OUTPUT"] == [["-j", CHAIN]]
    assert table.chains[CHAIN][0][-1] == "RETURN"  # established replies first
    assert len(table.chains[CHAIN]) == 3
    assert table.chains["DS01-ds01u1001"] == bridge_rules(guard_of(1001))
    state = firewall.state()
    assert state.hooked and state.bridges == {
        "ds01u1001": guard_of(1001),
        "ds01u1002": guard_of(1002),
    }


def test_guarding_after_installing_the_base_writes_the_same_rules_with_fewer_runs():
    alone, table = FilterTable(), FilterTable()
    runs: list[Sequence[str]] = []

    def counted(through: FilterTable) -> Callable[[Sequence[str], str], str]:
        def run(argv: Sequence[str], stdin: str) -> str:
            runs.append(argv)
            return through(argv, stdin)

        return run

    Firewall(run=counted(alone)).guard("ds01u1001", guard_of(1001))
    guard_alone = len(runs)
    runs.clear()
    firewall = Firewall(run=counted(table))
    firewall.install_base()
    base = len(runs)
    firewall.guard("ds01u1001", guard_of(1001), base_installed=True)

    assert table.chains == alone.chains
    assert len(runs) == guard_alone  # the base is checked once, not again by the guard
    assert not any(argv[4:] == ["-S", "OUTPUT"] for argv in runs[base:])


def test_a_chain_is_written_in_one_transaction_that_declares_it_and_replaces_its_rules():
    text = restore_text("ds01u1001", guard_of(1001, hub_uids=[998]))

    assert text == (
        "*filter\n"
        ":DS01-ds01u1001 - [0:0]\n"
        "-A DS01-ds01u1001 -m owner --uid-owner 1001 -j RETURN\n"
        "-A DS01-ds01u1001 -m owner --uid-owner 0 -j RETURN\n"
        "-A DS01-ds01u1001 -m owner --uid-owner 998 -j RETURN\n"
        "-A DS01-ds01u1001 -m conntrack --ctorigdst 127.0.0.0/8 -j RETURN\n"
        "-A DS01-ds01u1001 -j REJECT\n"
        "COMMIT\n"
    )
    with pytest.raises(ValueError):
        restore_text("ds01u1001\n-A OUTPUT -j ACCEPT", guard_of(1001))


def test_rewriting_a_live_chain_never_lets_through_more_than_its_old_or_its_new_rules():
    table = FilterTable()
    seen: list[list[list[str]]] = []  # the live chain after each command

    def watched(argv: Sequence[str], stdin: str) -> str:
        out = table(argv, stdin)
        if ["-o", "ds01u1001", "-j", "DS01-ds01u1001"] in table.chains.get(CHAIN, []):
            seen.append(list(table.chains["DS01-ds01u1001"]))
        return out

    firewall = Firewall(run=watched)
    old, new = guard_of(1001, hub_uids=[998]), guard_of(1001, hub_uids=[999])
    firewall.guard("ds01u1001", old)
    seen.clear()
    firewall.guard("ds01u1001", new)  # the hub identities changed while the chain is in use

    assert seen and all(rules in (bridge_rules(old), bridge_rules(new)) for rules in seen)
    assert seen[-1] == bridge_rules(new)

    def refusing(argv: Sequence[str], stdin: str) -> str:
        if argv[0] == "iptables-restore":
            raise FirewallError("iptables-restore: refused")
        return table(argv, stdin)

    with pytest.raises(FirewallError):
        Firewall(run=refusing).guard("ds01u1001", old)
    assert table.chains["DS01-ds01u1001"] == bridge_rules(new)  # a refusal changes nothing


def test_a_tampered_chain_reads_as_unguarded_and_guarding_repairs_it():
    table = FilterTable()
    firewall = Firewall(run=table)
    firewall.guard("ds01u1001", guard_of(1001))

    table.chains["DS01-ds01u1001"].insert(0, ["-m", "owner", "--uid-owner", "1002", "-j", "RETURN"])
    assert firewall.state().bridges == {"ds01u1001": None}
    table.chains["DS01-ds01u1001"].clear()
    assert firewall.state().bridges == {"ds01u1001": None}
    table.chains["OUTPUT"].clear()
    assert not firewall.state().hooked

    firewall.guard("ds01u1001", guard_of(1001))
    assert firewall.state().bridges == {"ds01u1001": guard_of(1001)} and firewall.state().hooked


def test_unguarding_removes_the_bridge_and_only_it():
    table = FilterTable()
    firewall = Firewall(run=table)
    firewall.guard("ds01u1001", guard_of(1001))
    firewall.guard("ds01u1002", guard_of(1002))

    firewall.unguard("ds01u1001")
    firewall.unguard("ds01u1001")  # already gone: fine

    assert "DS01-ds01u1001" not in table.chains
    assert parse_rules(table.dump()).bridges == {"ds01u1002": guard_of(1002)}


def test_no_iptables_is_a_clear_error():
    firewall = Firewall(run=FilterTable(), iptables="/nonexistent/iptables")
    with pytest.raises(FirewallError, match="not installed"):
        firewall.install_base()


class NetworkEngine:
    """Just enough of Docker's networks for ``UserNetworks``, noting each call in ``calls``;
    ``looked_up`` is set once a network is looked up by name (a use, not the start)."""

    def __init__(self) -> None:
        self.made: dict[str, NetworkRecord] = {}
        self.calls: list[str] = []
        self.looked_up = threading.Event()

    def networks(self, label: str) -> list[NetworkRecord]:
        self.calls.append("networks")
        return list(self.made.values())

    def find_network(self, name: str) -> NetworkRecord | None:
        self.calls.append("find_network")
        self.looked_up.set()
        return self.made.get(name)

    def create_network(self, name: str, bridge: str, labels: dict[str, str]) -> NetworkRecord:
        self.calls.append("create_network")
        self.made[name] = NetworkRecord(f"id-{name}", name, bridge, dict(labels))
        return self.made[name]

    def remove_network(self, network_id: str) -> None:
        self.calls.append("remove_network")
        self.made = {name: n for name, n in self.made.items() if n.id != network_id}


#: How long a use of the networks is given to (wrongly) begin while the start's
#: reconcile is under way: nothing marks a thread as blocked on a lock.
NO_USE_WINDOW_S = 0.3


def test_a_use_of_the_networks_waits_for_the_reconcile_begun_at_start(tmp_path: Path):
    engine = NetworkEngine()
    table = FilterTable()
    networks = UserNetworks(
        cast(DockerRuntime, engine), Firewall(run=table), EventLog(tmp_path / "events"), "me"
    )
    uid = 1001
    made: dict[str, Any] = {}

    run_reconcile = networks.begin_reconcile([uid])  # as ds01d's start: in_use listed
    user = threading.Thread(target=lambda: made.update(name=networks.ensure(uid)))
    user.start()  # a create, say, arriving while the reconcile has not run yet
    assert not engine.looked_up.wait(NO_USE_WINDOW_S), "a network was used before the reconcile"
    assert run_reconcile() == []
    user.join(timeout=10)

    assert made == {"name": network_name(uid)}
    assert engine.calls == ["networks", "find_network", "create_network"]
    assert table.chains[f"DS01-{bridge_name(uid)}"] == bridge_rules(guard_of(uid))


def test_the_start_rewrites_only_the_rules_that_do_not_read_back_complete(tmp_path: Path):
    engine = NetworkEngine()
    table = FilterTable()
    runs: list[Sequence[str]] = []

    def counted(argv: Sequence[str], stdin: str) -> str:
        runs.append(argv)
        return table(argv, stdin)

    firewall = Firewall(run=counted)
    networks = UserNetworks(
        cast(DockerRuntime, engine), firewall, EventLog(tmp_path / "events"), "me"
    )
    intact, tampered = 1001, 1002
    for uid in (intact, tampered):
        engine.create_network(network_name(uid), bridge_name(uid), {"ds01.network": "user",
                              "ds01.uid": str(uid), "ds01.instance": "me"})  # fmt: skip
        firewall.guard(bridge_name(uid), guard_of(uid))
    table.chains[f"DS01-{bridge_name(tampered)}"].pop()  # its REJECT gone
    runs.clear()

    assert networks.begin_reconcile([intact, tampered])() == []  # as ds01d's start

    assert [argv[0] for argv in runs].count("iptables-restore") == 1
    assert table.restored[-1] == restore_text(bridge_name(tampered), guard_of(tampered))
    assert firewall.state().bridges == {
        bridge_name(intact): guard_of(intact),
        bridge_name(tampered): guard_of(tampered),
    }


def networks_with_hubs(
    tmp_path: Path, hub_uids: Callable[..., tuple[int, ...]]
) -> tuple[UserNetworks, FilterTable]:
    """Users' networks on a fresh engine and filter table, with these hub identities."""
    table = FilterTable()
    networks = UserNetworks(
        cast(DockerRuntime, NetworkEngine()),
        Firewall(run=table),
        EventLog(tmp_path / "events"),
        "me",
        hub_uids=hub_uids,
    )
    return networks, table


def test_networks_let_the_hub_identities_in_and_follow_their_change(tmp_path: Path):
    hubs: dict[str, tuple[int, ...]] = {"now": (998,)}
    networks, table = networks_with_hubs(tmp_path, lambda renew=False: hubs["now"])
    chain = f"DS01-{bridge_name(1001)}"

    assert networks.begin_reconcile([])() == []
    networks.ensure(1001)
    assert table.chains[chain] == bridge_rules(guard_of(1001, (998,)))
    assert networks.unguarded() == []

    hubs["now"] = (997, 998, 999)  # the configuration names another hub and a group
    assert networks.unguarded() == [f"{network_name(1001)} ({bridge_name(1001)})"]
    networks.ensure(1001)  # the next create or start writes them
    assert table.chains[chain] == bridge_rules(guard_of(1001, (997, 998, 999)))
    assert networks.unguarded() == []

    hubs["now"] = ()
    assert networks.begin_reconcile([1001])() == []  # as ds01d's start
    assert table.chains[chain] == bridge_rules(guard_of(1001))


def test_a_refresh_rewrites_every_guarded_network_once_the_hub_identities_change(
    tmp_path: Path,
):
    asked: list[bool] = []
    hubs: dict[str, tuple[int, ...]] = {"now": (997, 998)}  # a hub group's members, say

    def hub_uids(renew: bool = False) -> tuple[int, ...]:
        asked.append(renew)
        return hubs["now"]

    networks, table = networks_with_hubs(tmp_path, hub_uids)
    assert networks.begin_reconcile([])() == []
    for uid in (1001, 1002):
        networks.ensure(uid)
    restores = len(table.restored)

    asked.clear()
    assert networks.refresh_guards() == []  # nothing changed: nothing written
    assert asked == [True] and len(table.restored) == restores  # but looked up afresh

    hubs["now"] = (998,)  # 997 left the hub's group: no next create of theirs is waited for
    assert networks.refresh_guards() == [network_name(1001), network_name(1002)]
    for uid in (1001, 1002):
        assert table.chains[f"DS01-{bridge_name(uid)}"] == bridge_rules(guard_of(uid, (998,)))
    assert networks.unguarded() == []
    assert networks.ensure(1001) == network_name(1001)
    assert len(table.restored) == restores + 2  # ensure saw the rules as they are


def test_a_hub_groups_members_are_those_nss_gives_the_group_as_ds01d_checks_a_caller():
    accounts = pwd.getpwall()
    for group in grp.getgrall()[:40]:
        expected = {
            a.pw_uid for a in accounts if group.gr_gid in os.getgrouplist(a.pw_name, a.pw_gid)
        }
        assert set(member_uids([], [group.gr_name])) == expected, group.gr_name
    assert member_uids(["root", "no-such-user-here"], ["no-such-group-here"]) == (0,)
    assert member_uids([], []) == ()


def test_a_configuration_reload_wakes_the_refresh_at_once(tmp_path: Path):
    hubs: dict[str, tuple[int, ...]] = {"now": (998,)}
    networks, table = networks_with_hubs(tmp_path, lambda renew=False: hubs["now"])
    assert networks.begin_reconcile([])() == []
    networks.ensure(1001)
    passes: list[list[str]] = []
    first, refreshed = threading.Event(), threading.Event()

    class Watched(NetworkUpkeep):
        def run_pass(self) -> list[str]:
            passes.append(super().run_pass())
            (refreshed if first.is_set() else first).set()
            return passes[-1]

    loop = Watched(networks, interval_seconds=3600.0)  # no periodic pass within the test
    loop.start()
    try:
        assert first.wait(10)  # the pass at start: nothing changed
        hubs["now"] = (999,)
        # a reload notifies; one made before the loop waits again finds no one waiting,
        # so notify until a pass has run (never the periodic one: an hour away)
        deadline = time.monotonic() + 10
        while not refreshed.wait(0.05) and time.monotonic() < deadline:
            networks.hub_may_have_changed()
    finally:
        assert loop.stop(10.0)
    assert passes == [[], [network_name(1001)]]
    assert table.chains[f"DS01-{bridge_name(1001)}"] == bridge_rules(guard_of(1001, (999,)))


#: The keep while a hub is configured (``hub: address_keep_seconds``, its default).
KEEP_S = HubConfig(users=("jupyterhub",)).emptied_network_keep_seconds()


def keeping_networks(
    tmp_path: Path,
    clock: dict[str, float],
    keep_s: float,
    on: tuple[NetworkEngine, FilterTable] | None = None,
) -> tuple[NetworkEngine, FilterTable, UserNetworks]:
    """Networks with a keep of ``keep_s`` on ``clock``, on a new engine and filter table or
    ``on`` those (as a restarted ds01d)."""
    engine, table = on or (NetworkEngine(), FilterTable())
    networks = UserNetworks(
        cast(DockerRuntime, engine),
        Firewall(run=table),
        EventLog(tmp_path / "events"),
        "me",
        keep_seconds=lambda: keep_s,
        monotonic=lambda: clock["now"],
    )
    return engine, table, networks


def test_an_emptied_network_is_kept_a_while_after_its_last_use_before_it_is_removed(
    tmp_path: Path,
):
    assert KEEP_S == 60.0 and HubConfig().emptied_network_keep_seconds() == 0.0  # no hub
    clock = {"now": 1000.0}
    engine, table, networks = keeping_networks(tmp_path, clock, KEEP_S)
    name, chain = network_name(1001), f"DS01-{bridge_name(1001)}"
    assert networks.begin_reconcile([])() == []
    networks.ensure(1001)

    def released_at(now: float, in_use: Sequence[int] = ()) -> bool:
        clock["now"] = now
        return networks.release_if_unused(1001, in_use)

    # her last container removed: a hub's proxy may still send her pages to its address
    assert not released_at(1000.0) and networks.emptied() == [1001]
    assert not released_at(1000.0 + KEEP_S - 1)
    assert name in engine.made and chain in table.chains
    networks.ensure(1001)  # a new container of hers: the while starts again after it
    assert networks.emptied() == []
    assert not released_at(1070.0)
    assert not released_at(1070.0 + KEEP_S - 1)
    assert not released_at(1070.0 + KEEP_S, in_use=[1001])  # in use after all
    assert networks.emptied() == []
    assert not released_at(1200.0)
    assert released_at(1200.0 + KEEP_S)

    assert name not in engine.made and chain not in table.chains
    assert networks.emptied() == [] and not released_at(2000.0)


def test_without_a_keep_an_emptied_network_goes_with_the_last_container(tmp_path: Path):
    clock = {"now": 1000.0}
    engine, table, networks = keeping_networks(tmp_path, clock, 0.0)
    assert networks.begin_reconcile([])() == []
    networks.ensure(1001)
    assert networks.release_if_unused(1001, [])
    assert network_name(1001) not in engine.made
    assert f"DS01-{bridge_name(1001)}" not in table.chains and networks.emptied() == []


@pytest.mark.parametrize("keep_s", [0.0, KEEP_S])
def test_at_start_an_unused_network_is_removed_only_after_the_keep(tmp_path: Path, keep_s: float):
    """A server removed just before a restart may still be routed to: the keep counts
    from the start, where there is one."""
    clock = {"now": 1000.0}
    engine, table, networks = keeping_networks(tmp_path, clock, keep_s)
    assert networks.begin_reconcile([])() == []
    networks.ensure(1001)  # the last run's network, left when her container went
    _, _, restarted = keeping_networks(tmp_path, clock, keep_s, on=(engine, table))

    removed = restarted.begin_reconcile([])()
    if keep_s == 0:
        assert removed == [network_name(1001)] and not engine.made
        return
    assert removed == [] and network_name(1001) in engine.made
    assert restarted.emptied() == [1001] and restarted.unguarded() == []
    clock["now"] = 1000.0 + keep_s - 1
    assert not restarted.release_if_unused(1001, [])
    clock["now"] = 1000.0 + keep_s
    assert restarted.release_if_unused(1001, [])
    assert not engine.made and f"DS01-{bridge_name(1001)}" not in table.chains
