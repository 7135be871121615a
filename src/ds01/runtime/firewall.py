"""The host firewall adapter: only a network's owner, a hub identity or root reaches it from
the host.

Every user's containers sit on a bridge of their own (``ds01.daemon.networks``). Docker
already drops traffic between two bridges (its ``DOCKER-ISOLATION`` chains), so another
user's *containers* cannot reach them; but any process on the host can open a connection to
any container address, because locally made packets go out through ``OUTPUT``, which Docker
leaves open. ds01 closes that door in the ``filter`` table::

    OUTPUT  -j DS01                                  (first rule, once)
    DS01    -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
    DS01    -o ds01u1001 -j DS01-ds01u1001           (one per user bridge)
    DS01-ds01u1001  -m owner --uid-owner 1001 -j RETURN
    DS01-ds01u1001  -m owner --uid-owner 0 -j RETURN
    DS01-ds01u1001  -m owner --uid-owner 998 -j RETURN   (each hub identity's uid)
    DS01-ds01u1001  -m conntrack --ctorigdst 127.0.0.0/8 -j RETURN
    DS01-ds01u1001  -j REJECT

so a new connection from the host to a container address is let through only when the
socket belongs to the network's owner, to root, or to a hub identity (``hub:`` in
resource-limits.yaml: a user named there, or an account NSS lists as a member of a group
named there, each by uid; not by ``--gid-owner``, which would match the groups a process
still carries after its user left the group). A hub already acts for every user through
ds01d; it reaches its servers at their containers' own addresses (``ds01.jupyterhub``), so
that no host port stands between its proxy and a server for another local user to take
once the server stops. Replies to connections the containers opened stay allowed
(``ESTABLISHED``), and so do published ports: they are on 127.0.0.1, where Docker's proxy
(root) or its DNAT rule (original destination 127.0.0.1) carries them on, behind the
container's own token, as before.

Rules are spelled by pure functions; ``Firewall`` runs ``iptables -w`` (the same binary, and
so the same backend, nft or legacy, that Docker uses) and its ``iptables-restore`` through an
injected runner. Installing is idempotent: a bridge's chain is written whole each time, in
one ``iptables-restore --noflush`` transaction (``restore_text``) that replaces the chain's
old rules by its new ones at once, so a chain in use never lets through more than its old
or its new rules do (never an empty chain, open to everyone, for the moment between a flush
and the rules that follow).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ds01.errors import SystemFault

#: ds01's chain in the ``filter`` table, jumped to first from ``OUTPUT``.
CHAIN = "DS01"
#: What every bridge chain's name starts with.
BRIDGE_CHAIN_PREFIX = "DS01-"
#: The hook ds01's chain hangs from: packets the host itself sends.
HOOK = "OUTPUT"
#: Destinations that published ports are reached at (Docker's DNAT keeps this as the
#: original destination when its userland proxy is off).
PUBLISHED_ORIGIN = "127.0.0.0/8"
IPTABLES_TIMEOUT_SECONDS = 30.0
#: Longest chain name iptables accepts.
MAX_CHAIN_LENGTH = 28


class FirewallError(SystemFault):
    """The host firewall could not be read or changed (no iptables, or it refused)."""

    kind = "firewall"


# --- rules (pure) ---------------------------------------------------------------------------


def bridge_chain(bridge: str) -> str:
    """The chain that guards ``bridge`` (a Linux interface name, 15 characters at most)."""
    name = BRIDGE_CHAIN_PREFIX + bridge
    if not bridge or len(name) > MAX_CHAIN_LENGTH or not bridge.replace("-", "").isalnum():
        raise ValueError(f"not a bridge name ds01 guards: {bridge!r}")
    return name


def hook_rule() -> list[str]:
    """The rule (without ``-A``/``-I``/``-C`` and chain) that sends the host's packets to ds01."""
    return ["-j", CHAIN]


def base_rules() -> list[list[str]]:
    """The rules at the top of ``CHAIN``: replies of established connections pass."""
    return [["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"]]


def dispatch_rule(bridge: str) -> list[str]:
    """The rule of ``CHAIN`` that sends packets leaving through ``bridge`` to its chain."""
    return ["-o", bridge, "-j", bridge_chain(bridge)]


@dataclass(frozen=True)
class Guard:
    """Who besides root may open connections from the host into a user's bridge: its owner,
    and the hub identities by uid (``hub_uids``: the users a hub names and the members of
    the groups it names). Make one with ``guard_of``, which puts them in the order
    ``bridge_rules`` writes and ``parse_rules`` reads."""

    owner: int
    hub_uids: tuple[int, ...] = ()


def guard_of(owner_uid: int, hub_uids: Iterable[int] = ()) -> Guard:
    """The ``Guard`` of ``owner_uid``'s bridge with these hub identities (sorted, each once;
    the owner and root, let through anyway, not again)."""
    uids = set(hub_uids)
    if min((owner_uid, *uids)) < 0:
        raise ValueError(f"not a uid: {min((owner_uid, *uids))}")
    return Guard(owner_uid, tuple(sorted(uids - {owner_uid, 0})))


def _uid_rule(uid: int) -> list[str]:
    return ["-m", "owner", "--uid-owner", str(uid), "-j", "RETURN"]


def bridge_rules(guard: Guard) -> list[list[str]]:
    """The rules of a bridge chain: its owner, root, the hub identities and published ports
    pass; all else is refused (the sender sees "connection refused")."""
    if guard != guard_of(guard.owner, guard.hub_uids):
        raise ValueError(f"not a guard made by guard_of: {guard}")
    return [
        _uid_rule(guard.owner),
        _uid_rule(0),
        *(_uid_rule(uid) for uid in guard.hub_uids),
        ["-m", "conntrack", "--ctorigdst", PUBLISHED_ORIGIN, "-j", "RETURN"],
        ["-j", "REJECT"],
    ]


def restore_text(bridge: str, guard: Guard) -> str:
    """The ``iptables-restore --noflush`` input that makes ``bridge``'s chain exactly
    ``bridge_rules(guard)`` in one transaction: declaring the chain creates it or empties
    it, and the kernel sees the emptied chain only with its new rules (``COMMIT`` replaces
    the table at once; a refused rule leaves it as it was). Other chains are untouched."""
    chain = bridge_chain(bridge)
    lines = ["*filter", f":{chain} - [0:0]"]
    lines += [" ".join(["-A", chain, *rule]) for rule in bridge_rules(guard)]
    return "\n".join([*lines, "COMMIT", ""])


@dataclass(frozen=True)
class FirewallState:
    """What ``iptables -S`` shows of ds01's rules: whether ``OUTPUT`` jumps to ``CHAIN``
    and, per guarded bridge, whom its chain lets through (``None``: the chain is not
    ``bridge_rules`` of any ``Guard``)."""

    hooked: bool
    bridges: dict[str, Guard | None]


def parse_rules(text: str) -> FirewallState:
    """Read ``iptables -S`` (the whole ``filter`` table) into a ``FirewallState``."""
    hooked = False
    chains: dict[str, list[list[str]]] = {}
    dispatched: set[str] = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2:
            continue
        if words[0] == "-N" and words[1].startswith(BRIDGE_CHAIN_PREFIX):
            chains.setdefault(words[1], [])
        elif words[0] == "-A" and words[1] == HOOK and words[2:] == hook_rule():
            hooked = True
        elif words[0] == "-A" and words[1] == CHAIN and words[2:3] == ["-o"] and len(words) > 3:
            dispatched.add(words[3])
        elif words[0] == "-A" and words[1].startswith(BRIDGE_CHAIN_PREFIX):
            chains.setdefault(words[1], []).append(words[2:])
    bridges: dict[str, Guard | None] = {}
    for bridge in dispatched:
        try:
            rules = chains.get(bridge_chain(bridge), [])
        except ValueError:
            continue
        bridges[bridge] = _guard_in(rules)
    return FirewallState(hooked=hooked, bridges=bridges)


def _ids_of(rules: list[list[str]], spelled: Callable[[int], list[str]]) -> list[int]:
    """The ids of the rules that are ``spelled(id)`` (the others ignored)."""
    found = []
    for rule in rules:
        number = rule[3] if len(rule) > 3 else ""
        if number.isascii() and number.isdigit() and rule == spelled(int(number)):
            found.append(int(number))
    return found


def _guard_in(rules: list[list[str]]) -> Guard | None:
    """Whom a bridge chain lets through, if the chain is exactly ``bridge_rules`` of it."""
    uids = _ids_of(rules, _uid_rule)
    if not uids:
        return None
    guard = guard_of(uids[0], uids[1:])
    # iptables -S spells out REJECT's default reason (--reject-with icmp-port-unreachable).
    normalised = [r[:2] if r[:2] == ["-j", "REJECT"] else r for r in rules]
    return guard if normalised == bridge_rules(guard) else None


# --- the adapter ------------------------------------------------------------------------------


def _default_run(argv: Sequence[str], stdin: str) -> str:
    try:
        done = subprocess.run(
            list(argv), check=True, capture_output=True, text=True, input=stdin,
            timeout=IPTABLES_TIMEOUT_SECONDS,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()
        raise FirewallError(f"{' '.join(argv)} failed: {detail or exc}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"{' '.join(argv)} failed: {exc}") from exc
    return done.stdout


class Firewall:
    """Installs and removes ds01's rules with ``iptables``.

    Args:
        run: runs a command with the text given as its standard input ("": none) and
            returns its output, raising ``FirewallError`` if it fails (injected for tests).
        iptables: the command (found on ``PATH`` by ``available``); its restore command is
            the same name with ``-restore`` (``iptables-restore``), of the same backend.
    """

    def __init__(
        self,
        run: Callable[[Sequence[str], str], str] = _default_run,
        iptables: str = "iptables",
    ) -> None:
        self._run = run
        self._iptables = iptables

    def _ipt(self, *args: str) -> str:
        return self._run([self._iptables, "-w", "-t", "filter", *args], "")

    def _restore(self, text: str) -> None:
        """Apply ``text`` in one transaction, leaving the chains it does not name alone."""
        self._run([self._iptables + "-restore", "-w", "--noflush"], text)

    def _has(self, chain: str, rule: Sequence[str]) -> bool:
        try:
            self._ipt("-C", chain, *rule)
        except FirewallError:
            return False
        return True

    def _ensure_chain(self, chain: str) -> None:
        try:
            self._ipt("-S", chain)
        except FirewallError:
            self._ipt("-N", chain)

    def check_available(self) -> None:
        """Raise ``FirewallError`` saying why ds01 cannot guard containers here."""
        if shutil.which(self._iptables) is None:
            raise FirewallError(
                f"{self._iptables} is not installed, so ds01 cannot keep other users away "
                "from containers' addresses. Install it (apt-get install iptables) and "
                "restart ds01d."
            )
        self._ipt("-S", HOOK)

    def install_base(self) -> None:
        """Make ``CHAIN``, its top rules and the jump from ``OUTPUT`` (first), if missing."""
        self.check_available()
        self._ensure_chain(CHAIN)
        for position, rule in enumerate(base_rules(), start=1):
            if not self._has(CHAIN, rule):
                self._ipt("-I", CHAIN, str(position), *rule)
        if not self._has(HOOK, hook_rule()):
            self._ipt("-I", HOOK, "1", *hook_rule())

    def guard(self, bridge: str, guard: Guard, *, base_installed: bool = False) -> None:
        """Let only root and those ``guard`` names open connections from the host into
        ``bridge``;
        ``install_base`` first, unless the caller just did (``base_installed``: ds01d's
        start guards every network after one ``install_base``, each ``iptables`` run some
        3 ms).

        The chain is replaced in one transaction (``restore_text``): a chain in use lets
        through what its old rules or its new ones do, never more, at every moment; a new
        chain is complete before the rule that sends packets to it is added."""
        if not base_installed:
            self.install_base()
        self._restore(restore_text(bridge, guard))
        if not self._has(CHAIN, dispatch_rule(bridge)):
            self._ipt("-A", CHAIN, *dispatch_rule(bridge))

    def unguard(self, bridge: str) -> None:
        """Remove the bridge's rules (after its network is gone); missing ones are fine."""
        chain = bridge_chain(bridge)
        while self._has(CHAIN, dispatch_rule(bridge)):
            self._ipt("-D", CHAIN, *dispatch_rule(bridge))
        try:
            self._ipt("-S", chain)
        except FirewallError:
            return
        self._ipt("-F", chain)
        self._ipt("-X", chain)

    def state(self) -> FirewallState:
        """ds01's rules as they are now."""
        return parse_rules(self._ipt("-S"))
