"""``resource-limits.yaml`` compiled into Slurm's accounting: the desired state, the current
state as ``sacctmgr`` shows it, and the ``sacctmgr`` changes between them. Pure.

What ds01 owns in slurmdbd, and nothing else is read or changed:

- **accounts** whose Organization is ``ds01`` (``OWNER``): one per config group (the group's
  name, lower case: Slurm folds account names), plus ``DEFAULT_ACCOUNT`` for users in no
  group;
- **QOS** whose name starts with ``QOS_PREFIX``: ``ds01-group-<group>`` carries the limits of a
  member of that group alone, ``ds01-default`` those of a user in no group, and
  ``ds01-user-<name>`` those of a user whose effective limits (their own entry, or several
  groups merged by ds01's "most permissive wins") are neither;
- **user associations** in those accounts: a user has one in each of their groups' accounts,
  each allowing exactly one QOS (their QOS, also the default QOS) and with ``Fairshare`` (the
  user's shares) from their ``priority``; their default account is their first group's (file
  order).

Each QOS holds a user's effective values (``ds01.config.resolve``), mapped so:

=====================  ==========================================================
ds01 key               Slurm QOS field
=====================  ==========================================================
``priority``           ``Priority`` (same number; ``PriorityWeightQOS`` weighs it)
``gpu_limit``          ``MaxTRESPerUser=gres/gpu=N``: N devices (a whole GPU or a MIG
                       slice each), the GPU-equivalents rounded up; null: none
``max_containers``     ``MaxJobsPerUser`` (running jobs; more wait, pending)
``max_runtime_hours``  ``MaxWall`` in minutes, rounded up
=====================  ==========================================================

and ``priority`` also sets each of the user's associations' ``Fairshare`` (``fairshare``: the
same number, at least 1, as Slurm's shares must be): with ``PriorityWeightFairshare``, a
user's recent usage is weighed against these shares, so a higher priority also decays more
slowly under use.

A QOS limit rather than an association's ``GrpTRES``: ``MaxTRESPerUser`` counts all of a
user's jobs, whichever of their accounts they charge, as ds01's ``gpu_limit`` does; a user in
two groups would otherwise get the limit once per association. Slurm 22.05 holds a job over
the limit as ``PENDING`` with reason ``QOSMaxGRESPerUser``.

``diff(desired, current)`` lists the ``Change`` objects that turn ``current`` into
``desired`` (each one ``sacctmgr -i`` command line, ``Change.argv``), in an order Slurm
accepts: QOS, accounts and associations are added before they are used, and removed after
nothing uses them. ``apply(state, changes)`` is what those commands do to the state, so that
``diff(desired, apply(current, diff(desired, current)))`` is empty: a second sync finds nothing
to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ds01.config.limits import ResourceLimitsConfig
from ds01.config.resolve import groups_of, resolve_limits
from ds01.errors import InvalidInput

#: The Organization of the accounts ds01 manages.
OWNER = "ds01"
#: The prefix of the QOS ds01 manages.
QOS_PREFIX = "ds01-"
#: The account of users in no group.
DEFAULT_ACCOUNT = "ds01-default"
#: The QOS of users in no group (and with no entry of their own).
DEFAULT_QOS = f"{QOS_PREFIX}default"
_GROUP_QOS_PREFIX = f"{QOS_PREFIX}group-"
_USER_QOS_PREFIX = f"{QOS_PREFIX}user-"

#: Account and QOS names: what Slurm keeps (lower case) and sacctmgr parses as one word.
_SLURM_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
#: User names: anything sacctmgr reads as one value (no blank, ``=``, ``,``, quote).
_SLURM_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@$-]{0,63}", re.ASCII)

#: The text sacctmgr takes to clear a limit.
_CLEAR = "-1"
_GPU_TRES = "gres/gpu"


def fairshare(priority: int) -> int:
    """The ``Fairshare`` (shares) of an association of a user with ds01 ``priority``: the same
    number, at least 1 (Slurm's shares are positive)."""
    return max(1, priority)


@dataclass(frozen=True)
class QosLimits:
    """The fields of one ds01 QOS; ``None`` is no limit."""

    priority: int
    max_gpus_per_user: int | None
    max_jobs_per_user: int | None
    max_wall_minutes: int | None

    def settings(self) -> tuple[str, ...]:
        """The ``Field=value`` words of ``sacctmgr add/modify qos`` that set all four."""

        def text(value: int | None) -> str:
            return _CLEAR if value is None else str(value)

        return (
            f"Priority={self.priority}",
            f"MaxTRESPerUser={_GPU_TRES}={text(self.max_gpus_per_user)}",
            f"MaxJobsPerUser={text(self.max_jobs_per_user)}",
            f"MaxWall={text(self.max_wall_minutes)}",
        )

    @classmethod
    def from_settings(cls, words: Iterable[str]) -> QosLimits:
        """The inverse of ``settings``."""
        values = dict(word.split("=", 1) for word in words)

        def number(text: str) -> int | None:
            return None if text == _CLEAR else int(text)

        gpus = values["MaxTRESPerUser"].removeprefix(f"{_GPU_TRES}=")
        return cls(
            priority=int(values["Priority"]),
            max_gpus_per_user=number(gpus),
            max_jobs_per_user=number(values["MaxJobsPerUser"]),
            max_wall_minutes=number(values["MaxWall"]),
        )


@dataclass(frozen=True)
class Accounting:
    """What ds01 owns in Slurm's accounting (see the module docstring).

    Attributes:
        qos: QOS name → its limits.
        accounts: the account names.
        associations: (user, account) → the one QOS the association allows (also its
            default QOS); ``None`` when it allows anything else (several QOS, another
            default): a sync sets it.
        default_accounts: user → default account, for users with an association here.
        fairshares: (user, account) → the association's ``Fairshare``; ``None`` or absent
            when it is not a number (``parent``): a sync sets it.
    """

    qos: Mapping[str, QosLimits] = field(default_factory=dict)
    accounts: frozenset[str] = frozenset()
    associations: Mapping[tuple[str, str], str | None] = field(default_factory=dict)
    default_accounts: Mapping[str, str] = field(default_factory=dict)
    fairshares: Mapping[tuple[str, str], int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "qos": {
                name: {
                    "priority": q.priority,
                    "max_gpus_per_user": q.max_gpus_per_user,
                    "max_jobs_per_user": q.max_jobs_per_user,
                    "max_wall_minutes": q.max_wall_minutes,
                }
                for name, q in sorted(self.qos.items())
            },
            "accounts": sorted(self.accounts),
            "associations": [
                {
                    "user": user,
                    "account": account,
                    "qos": qos,
                    "fairshare": self.fairshares.get((user, account)),
                }
                for (user, account), qos in sorted(self.associations.items())
            ],
            "default_accounts": dict(sorted(self.default_accounts.items())),
        }


Action = Literal["add", "modify", "delete"]
Entity = Literal["qos", "account", "user"]


@dataclass(frozen=True)
class Change:
    """One ``sacctmgr -i`` command.

    Attributes:
        action, entity: what it does to what.
        name: the QOS, account or user.
        account: for a user: the association's account; ``None`` for the user as a whole
            (their default account).
        settings: ``Field=value`` words it sets.
    """

    action: Action
    entity: Entity
    name: str
    account: str | None = None
    settings: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """The arguments after ``sacctmgr -i`` (never through a shell)."""
        if self.action == "add":
            where = [f"Account={self.account}"] if self.account else []
            return ["add", self.entity, self.name, *where, *self.settings]
        selector = ["where", f"name={self.name}"]
        if self.account:
            selector.append(f"account={self.account}")
        if self.action == "delete":
            return ["delete", self.entity, *selector]
        return ["modify", self.entity, *selector, "set", *self.settings]

    def describe(self) -> str:
        """``sacctmgr`` and its arguments as one line (for people; no shell runs it)."""
        return " ".join(["sacctmgr", *self.argv()])

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "entity": self.entity,
            "name": self.name,
            "account": self.account,
            "settings": list(self.settings),
            "argv": self.argv(),
        }


# -- desired state -------------------------------------------------------------------------------


def account_name(group: str) -> str:
    """The Slurm account of config group ``group``.

    Raises:
        InvalidInput: the group's name is not one Slurm keeps as it is (lower case).
    """
    name = group.lower()
    if not _SLURM_NAME_RE.fullmatch(name) or name == DEFAULT_ACCOUNT:
        raise InvalidInput(
            f"group {group!r} cannot be a Slurm account: rename it in resource-limits.yaml "
            f"(letters, digits, '_', '.' and '-'; not {DEFAULT_ACCOUNT!r})."
        )
    return name


def check_user_name(user: str) -> str:
    """``user`` if sacctmgr reads it as one name, else ``InvalidInput``."""
    if not _SLURM_USER_RE.fullmatch(user):
        raise InvalidInput(f"user {user!r} cannot be a Slurm user name.")
    return user


def _limits_of(config: ResourceLimitsConfig, user: str, unix_groups: Collection[str]) -> QosLimits:
    limits = resolve_limits(config, user, unix_groups)
    gpu_limit = limits.gpu_limit
    hours = limits.max_runtime_hours
    return QosLimits(
        priority=limits.priority,
        max_gpus_per_user=None if gpu_limit is None else math.ceil(gpu_limit),
        max_jobs_per_user=limits.max_containers,
        max_wall_minutes=None if hours is None else math.ceil(hours * 60),
    )


def desired_accounting(
    config: ResourceLimitsConfig, users: Mapping[str, Collection[str]]
) -> Accounting:
    """The accounting ``config`` asks for, for ``users`` (name → their Unix groups, as NSS
    says; see ``candidate_users``). A group QOS exists for every group, even one without
    members, so that its limits can be read in Slurm before anyone joins.

    Raises:
        InvalidInput: a group or user name Slurm cannot take, or two groups that differ only
            in case.
    """
    accounts: dict[str, str] = {}
    for group in config.groups:
        name = account_name(group)
        if name in accounts:
            raise InvalidInput(f"groups {accounts[name]!r} and {group!r} are one Slurm account.")
        accounts[name] = group
    qos: dict[str, QosLimits] = {DEFAULT_QOS: _limits_of(config, "", ())}
    for name, group in accounts.items():
        # A member of this group alone, with no entry of their own ("" is no user's name).
        qos[_GROUP_QOS_PREFIX + name] = _limits_of(config, "", (config.unix_group_of(group),))
    associations: dict[tuple[str, str], str | None] = {}
    shares: dict[tuple[str, str], int | None] = {}
    defaults: dict[str, str] = {}
    for user, unix_groups in sorted(users.items()):
        check_user_name(user)
        mine = [account_name(g) for g in groups_of(config, user, unix_groups)] or [DEFAULT_ACCOUNT]
        limits = _limits_of(config, user, unix_groups)
        shared = DEFAULT_QOS if mine == [DEFAULT_ACCOUNT] else _GROUP_QOS_PREFIX + mine[0]
        user_qos = shared
        if qos[shared] != limits:
            user_qos = _USER_QOS_PREFIX + user.lower()
            if not _SLURM_NAME_RE.fullmatch(user_qos) or qos.get(user_qos, limits) != limits:
                # Slurm folds QOS names: "Bob" and "bob" would share one.
                raise InvalidInput(f"user {user!r} cannot name a Slurm QOS of their own.")
            qos[user_qos] = limits
        for account in mine:
            associations[(user, account)] = user_qos
            shares[(user, account)] = fairshare(limits.priority)
        defaults[user] = mine[0]
    all_accounts = set(accounts)
    if DEFAULT_ACCOUNT in defaults.values():
        all_accounts.add(DEFAULT_ACCOUNT)
    return Accounting(
        qos=qos,
        accounts=frozenset(all_accounts),
        associations=associations,
        default_accounts=defaults,
        fairshares=shares,
    )


def user_association(
    config: ResourceLimitsConfig, user: str, unix_groups: Collection[str]
) -> tuple[str, str]:
    """The account and QOS a job of ``user`` (in ``unix_groups``) charges: their default
    account and its QOS, as ``desired_accounting`` gives them.

    Raises:
        InvalidInput: as ``desired_accounting``.
    """
    accounting = desired_accounting(config, {user: unix_groups})
    account = accounting.default_accounts[user]
    return account, accounting.associations[(user, account)] or DEFAULT_QOS


#: ds01's limits that a sync writes into the user's QOS, with the QOS field of each.
QOS_FIELDS = {
    "priority": "Priority",
    "gpu_limit": "MaxTRESPerUser",
    "max_containers": "MaxJobsPerUser",
    "max_runtime_hours": "MaxWall",
}


def _shown(field_name: str, value: str) -> str:
    """``Field=value`` as sacctmgr takes it, "no limit" spelt out."""
    if value == _CLEAR or value == f"{_GPU_TRES}={_CLEAR}":
        return f"{field_name} none"
    return f"{field_name}={value}"


def limit_sources(
    config: ResourceLimitsConfig, user: str, unix_groups: Collection[str], current: Accounting
) -> dict[str, str]:
    """For ``check-limits --explain`` in cluster mode: each of ``QOS_FIELDS``' limits of
    ``user`` as Slurm holds it in ``current`` (what ``sacctmgr`` shows): the QOS and field a
    sync made from it (and, for ``priority``, the association's ``Fairshare``), with what a
    sync would set where Slurm differs from ``resource-limits.yaml``.

    Raises:
        InvalidInput: as ``desired_accounting``.
    """
    desired = desired_accounting(config, {user: unix_groups})
    account = desired.default_accounts[user]
    qos = desired.associations[(user, account)] or DEFAULT_QOS
    want = dict(word.split("=", 1) for word in desired.qos[qos].settings())
    held = current.qos.get(qos)
    have = {} if held is None else dict(word.split("=", 1) for word in held.settings())
    sources = {}
    for key, field_name in QOS_FIELDS.items():
        text = f"QOS {qos} " + (
            _shown(field_name, have[field_name]) if have else "(not in Slurm)"
        )
        if have.get(field_name) != want[field_name]:
            text += f"; a sync would set {_shown(field_name, want[field_name])}"
        sources[key] = text
    association = (user, account)
    shares = desired.fairshares[association]
    if association not in current.associations:
        sources["priority"] += f"; association {account}/{user} (not in Slurm)"
        return sources
    found = current.fairshares.get(association)
    sources["priority"] += f"; association {account}/{user} Fairshare={found or 'parent'}"
    if found != shares:
        sources["priority"] += f"; a sync would set Fairshare={shares}"
    return sources


def candidate_users(
    config: ResourceLimitsConfig, unix_group_members: Mapping[str, Collection[str]]
) -> set[str]:
    """The users a sync gives associations: those named in ``users:`` and in groups'
    ``members``, and the members of each group's Unix group (``unix_group_members``: Unix
    group → its members, as NSS lists them)."""
    names = set(config.users)
    for name, group in config.groups.items():
        names.update(group.members)
        names.update(unix_group_members.get(config.unix_group_of(name), ()))
    return names


# -- current state -------------------------------------------------------------------------------


def _minutes(text: str) -> int | None:
    """Slurm's ``[D-]HH:MM:SS`` (or ``MM:SS``, ``MM``) in minutes; ``None`` when empty."""
    if not text or text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        parts.append(0)  # MM
    if len(parts) == 2:
        parts.insert(0, 0)  # MM:SS
    hours, minutes, seconds = parts
    return (int(days or 0) * 24 + hours) * 60 + minutes + math.ceil(seconds / 60)


def _tres(text: str, name: str) -> int | None:
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key == name:
            return int(value)
    return None


def parse_qos(text: str) -> dict[str, QosLimits]:
    """``sacctmgr -P -n show qos format=Name,Priority,MaxTRESPU,MaxJobsPU,MaxWall``: ds01's QOS."""
    found: dict[str, QosLimits] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, priority, tres, jobs, wall = line.split("|")[:5]
        if name.startswith(QOS_PREFIX):
            found[name] = QosLimits(
                priority=int(priority or 0),
                max_gpus_per_user=_tres(tres, _GPU_TRES),
                max_jobs_per_user=int(jobs) if jobs else None,
                max_wall_minutes=_minutes(wall),
            )
    return found


def parse_accounts(text: str) -> frozenset[str]:
    """``sacctmgr -P -n show account format=Account,Organization``: ds01's accounts."""
    rows = (line.split("|") for line in text.splitlines() if line.strip())
    return frozenset(row[0] for row in rows if len(row) > 1 and row[1] == OWNER)


def parse_associations(
    text: str, accounts: Collection[str]
) -> tuple[dict[tuple[str, str], str | None], dict[tuple[str, str], int | None]]:
    """``sacctmgr -P -n show assoc format=Account,User,QOS,DefaultQOS,Fairshare``: the user
    associations in ``accounts`` (ds01's), with the one QOS each allows (``None``: not exactly
    one, or a default QOS that is not it), and each one's ``Fairshare`` (``None``: not a
    number, such as ``parent``)."""
    found: dict[tuple[str, str], str | None] = {}
    shares: dict[tuple[str, str], int | None] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        account, user, qos_list, default_qos, share = [*line.split("|"), ""][:5]
        if not user or account not in accounts:
            continue
        allowed = [q for q in qos_list.split(",") if q]
        one = allowed[0] if len(allowed) == 1 and default_qos == allowed[0] else None
        found[(user, account)] = one
        shares[(user, account)] = int(share) if share.isdigit() else None
    return found, shares


def parse_default_accounts(text: str, users: Collection[str]) -> dict[str, str]:
    """``sacctmgr -P -n show user format=User,DefaultAccount``: the default account of each of
    ``users``."""
    rows = (line.split("|") for line in text.splitlines() if line.strip())
    return {row[0]: row[1] for row in rows if len(row) > 1 and row[0] in users}


def current_accounting(qos: str, accounts: str, associations: str, users: str) -> Accounting:
    """The state from the four ``sacctmgr`` listings (see the ``parse_*`` functions)."""
    mine = parse_accounts(accounts)
    assoc, shares = parse_associations(associations, mine)
    return Accounting(
        qos=parse_qos(qos),
        accounts=mine,
        associations=assoc,
        default_accounts=parse_default_accounts(users, {user for user, _ in assoc}),
        fairshares=shares,
    )


# -- the diff, and what it does ------------------------------------------------------------------


def diff(desired: Accounting, current: Accounting) -> list[Change]:
    """The changes that make ``current`` ``desired`` (see the module docstring for the order)."""
    changes: list[Change] = []
    for name, limits in sorted(desired.qos.items()):
        if name not in current.qos:
            changes.append(Change("add", "qos", name, settings=limits.settings()))
        elif current.qos[name] != limits:
            changes.append(Change("modify", "qos", name, settings=limits.settings()))
    for account in sorted(desired.accounts - current.accounts):
        changes.append(Change("add", "account", account, settings=(f"Organization={OWNER}",)))
    changes += _association_changes(desired, current)
    stale = [key for key in current.associations if key not in desired.associations]
    for user, account in sorted(stale):
        changes.append(Change("delete", "user", user, account=account))
    for account in sorted(current.accounts - desired.accounts):
        changes.append(Change("delete", "account", account))
    for name in sorted(set(current.qos) - set(desired.qos)):
        changes.append(Change("delete", "qos", name))
    return changes


def _association_changes(desired: Accounting, current: Accounting) -> list[Change]:
    """Adds and modifications of users' associations, then their default accounts."""
    changes: list[Change] = []
    users_now = {user for user, _ in current.associations}
    for user, default in sorted(desired.default_accounts.items()):
        # A new user's first association is in their default account, which it sets.
        mine = sorted(
            (account for u, account in desired.associations if u == user),
            key=lambda account: account != default,
        )
        for account in mine:
            key = (user, account)
            qos = desired.associations[key]
            assert qos is not None  # desired associations name their QOS
            shares = desired.fairshares.get(key)
            words = (f"QOS={qos}", f"DefaultQOS={qos}") + (
                () if shares is None else (f"Fairshare={shares}",)
            )
            if key not in current.associations:
                first = user not in users_now and account == default
                extra = (f"DefaultAccount={default}",) if first else ()
                changes.append(Change("add", "user", user, account, words + extra))
            elif (current.associations[key], current.fairshares.get(key)) != (qos, shares):
                changes.append(Change("modify", "user", user, account, words))
        if user in users_now and current.default_accounts.get(user) != default:
            changes.append(Change("modify", "user", user, settings=(f"DefaultAccount={default}",)))
    return changes


def apply(state: Accounting, changes: Sequence[Change]) -> Accounting:
    """The state after ``changes``, as Slurm makes it (deleting a QOS takes it off the
    associations that allowed it; deleting an account deletes its associations; a user's
    first association sets their default account when the command does not)."""
    qos = dict(state.qos)
    accounts = set(state.accounts)
    assoc = dict(state.associations)
    shares = dict(state.fairshares)
    defaults = dict(state.default_accounts)
    for change in changes:
        words = dict(word.split("=", 1) for word in change.settings)
        if change.entity == "qos":
            if change.action == "delete":
                qos.pop(change.name, None)
                assoc = {k: (None if v == change.name else v) for k, v in assoc.items()}
            else:
                qos[change.name] = QosLimits.from_settings(change.settings)
        elif change.entity == "account":
            if change.action == "delete":
                accounts.discard(change.name)
                assoc = {k: v for k, v in assoc.items() if k[1] != change.name}
                shares = {k: v for k, v in shares.items() if k[1] != change.name}
            else:
                accounts.add(change.name)
        elif change.account is None:
            defaults[change.name] = words["DefaultAccount"]
        elif change.action == "delete":
            assoc.pop((change.name, change.account), None)
            shares.pop((change.name, change.account), None)
        else:
            assoc[(change.name, change.account)] = words["QOS"]
            if "Fairshare" in words:
                shares[(change.name, change.account)] = int(words["Fairshare"])
            if change.action == "add" and change.name not in defaults:
                defaults[change.name] = words.get("DefaultAccount", change.account)
    users = {user for user, _ in assoc}
    return replace(
        state,
        qos=qos,
        accounts=frozenset(accounts),
        associations=assoc,
        default_accounts={u: a for u, a in defaults.items() if u in users},
        fairshares={k: v for k, v in shares.items() if k in assoc},
    )


__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_QOS",
    "OWNER",
    "QOS_FIELDS",
    "QOS_PREFIX",
    "Accounting",
    "Change",
    "QosLimits",
    "account_name",
    "apply",
    "candidate_users",
    "check_user_name",
    "current_accounting",
    "desired_accounting",
    "diff",
    "fairshare",
    "limit_sources",
    "user_association",
]
