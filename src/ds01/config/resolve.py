"""Resolve one user's effective limits from ``resource-limits.yaml``, with provenance.

Per key, the first layer that sets it wins:

1. the user's own entry under ``users:`` (``source = "user:<name>"``);
2. the config groups the user belongs to (``"group:<name>"``); when several set the key,
   the most permissive value wins (see ``permissiveness``), ties going to the group listed
   first in the file;
3. ``defaults:`` (``"defaults"``);
4. ``BUILTIN_LIMITS`` (``"builtin"``).

"Sets" includes ``null``: a layer that writes ``gpu_limit: null`` makes the user unlimited,
whatever the lower layers say. A user entry overrides only the keys it writes; its other keys
still come from the user's groups.

The ``aggregate:`` section resolves the same way (``resolve_aggregate``), with its own
``defaults`` and a builtin baseline of "unlimited" for every key.

The ``policies:`` section resolves the same way too (``resolve_policy``): its top level plays
the part of ``defaults``, ``BUILTIN_POLICY`` the builtin baseline, and "most permissive"
means "reclaims least aggressively" (``ds01.config.policies.policy_permissiveness``).

Everything here is pure: the caller supplies the user's Unix groups (the daemon asks NSS).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast, overload

from ds01.config.limits import (
    AGGREGATE_KEYS,
    BORROW_MODES,
    BUILTIN_AGGREGATE,
    BUILTIN_LIMITS,
    LIMIT_KEYS,
    ResourceLimitsConfig,
)
from ds01.config.policies import (
    BUILTIN_POLICY,
    POLICY_KEYS,
    LifecyclePolicy,
    policy_permissiveness,
)
from ds01.config.reservations import BUILTIN_RESERVATION_LIMITS, RESERVATION_KEYS
from ds01.model.quota import GpuQuota
from ds01.model.units import MIB, parse_bytes

SOURCE_DEFAULTS = "defaults"
SOURCE_BUILTIN = "builtin"

#: The limit keys whose values are sizes (strings such as ``"32G"``).
SIZE_KEYS = frozenset({"memory_limit", "shm_size", "disk_limit"})

#: The aggregate keys that no cgroup enforces (the lifecycle loop measures them).
NOT_CGROUP_AGGREGATE_KEYS = frozenset({"disk_limit"})

#: Docker's ``/dev/shm`` size when none is given, which is what ``shm_size: null`` means.
DOCKER_DEFAULT_SHM_BYTES = 64 * MIB


def user_source(user: str) -> str:
    """The provenance label of a value taken from ``users.<user>``."""
    return f"user:{user}"


def group_source(group: str) -> str:
    """The provenance label of a value taken from ``groups.<group>``."""
    return f"group:{group}"


def source_keys(source: str, key: str) -> tuple[str, ...] | None:
    """Where in ``resource-limits.yaml`` a value of ``key`` from ``source`` is written
    (``("groups", "phd", "gpu_limit")``); ``None`` for the builtin baseline."""
    if source == SOURCE_DEFAULTS:
        return ("defaults", key)
    kind, _, name = source.partition(":")
    sections = {"user": "users", "group": "groups"}
    return (sections[kind], name, key) if kind in sections and name else None


@dataclass(frozen=True)
class Resolved:
    """One effective value and the layer it came from (``"user:jane"``, ``"group:phd"``,
    ``"defaults"`` or ``"builtin"``). ``None`` means unlimited (see ``Limits``)."""

    value: Any
    source: str


#: Orders the values of one key: ``rank(key, value)`` is larger for a more permissive value.
Ranking = Callable[[str, Any], tuple[float, ...]]


def permissiveness(key: str, value: Any) -> tuple[int, float]:
    """Order the values of limit ``key``: a larger result grants the user more.

    ``null`` (unlimited) ranks above every number, except for ``shm_size`` where ``null``
    means Docker's default of 64 MiB. Otherwise larger numbers are more permissive (sizes
    compared in bytes, higher priority first), ``true`` beats ``false`` and ``borrow: auto``
    beats ``borrow: ask``.
    """
    if value is None:
        if key == "shm_size":
            return (0, float(DOCKER_DEFAULT_SHM_BYTES))
        return (1, 0.0)
    if key in SIZE_KEYS:
        return (0, float(parse_bytes(value)))
    if key == "borrow":
        return (0, float(BORROW_MODES.index(value)))
    return (0, float(value))


@dataclass(frozen=True)
class _ResolvedValues:
    """One ``Resolved`` per key for ``user``, who is in config ``groups`` (file order)."""

    #: The keys resolved, in the order they are shown.
    KEYS: ClassVar[Sequence[str]] = ()
    #: Which of the groups' values wins (the most permissive by this ranking).
    RANK: ClassVar[staticmethod[[str, Any], tuple[float, ...]]] = staticmethod(permissiveness)

    user: str
    groups: tuple[str, ...]
    values: dict[str, Resolved]

    def source_of(self, key: str) -> str:
        """Which layer the value of ``key`` came from."""
        return self.values[key].source

    def to_dict(self) -> dict[str, Any]:
        """``{key: value}`` for every limit, JSON-friendly (sizes as strings like ``"32G"``)."""
        return {key: resolved.value for key, resolved in self.values.items()}

    def explain(self) -> dict[str, dict[str, Any]]:
        """``{key: {"value": ..., "source": ...}}`` for every limit (``check-limits --explain``)."""
        return {
            key: {"value": resolved.value, "source": resolved.source}
            for key, resolved in self.values.items()
        }


_Value_T = TypeVar("_Value_T")


class _Value(Generic[_Value_T]):
    """A typed read-only attribute of a ``_ResolvedValues``: the value of the key it is named
    after (``priority = _Value[int](doc)`` reads ``values["priority"].value``)."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, resolved: None, owner: type) -> _Value[_Value_T]: ...
    @overload
    def __get__(self, resolved: _ResolvedValues, owner: type) -> _Value_T: ...
    def __get__(self, resolved: _ResolvedValues | None, owner: type) -> _Value[_Value_T] | _Value_T:
        if resolved is None:
            return self
        return cast(_Value_T, resolved.values[self.key].value)


class _Bytes:
    """A read-only attribute of a ``_ResolvedValues``: the size key ``key`` in bytes
    (``None`` = unlimited)."""

    def __init__(self, key: str, doc: str) -> None:
        self.key = key
        self.__doc__ = doc

    @overload
    def __get__(self, resolved: None, owner: type) -> _Bytes: ...
    @overload
    def __get__(self, resolved: _ResolvedValues, owner: type) -> int | None: ...
    def __get__(self, resolved: _ResolvedValues | None, owner: type) -> _Bytes | int | None:
        if resolved is None:
            return self
        value = resolved.values[self.key].value
        return None if value is None else parse_bytes(value)


class ResolvedLimits(_ResolvedValues):
    """A user's effective limits: one ``Resolved`` per key in ``LIMIT_KEYS``.

    ``groups`` are the config groups the user belongs to, in file order. The properties
    give typed access; ``None`` means unlimited (``shm_size``: Docker's default;
    ``idle_timeout_hours``: never stopped for idleness; ``gpu_hold_after_stop_minutes``:
    GPUs kept until the container is removed).
    """

    KEYS = LIMIT_KEYS

    priority = _Value[int]("Scheduling priority, 0..1000; higher goes first.")
    gpu_limit = _Value[float | None]("GPU-equivalents the user may hold over all containers.")
    max_gpus_per_container = _Value[float | None]("GPU-equivalents one container may hold.")
    allow_full_gpu = _Value[bool]("Whether the user may be given a whole (non-MIG) GPU.")
    allow_mig = _Value[bool]("Whether the user may be given a MIG instance.")
    cpu_limit = _Value[float | None]("CPUs per container (Docker ``--cpus``).")
    memory_limit = _Value[str | None](
        'Memory per container as a normalised size string (``"32G"``).'
    )
    memory_limit_bytes = _Bytes("memory_limit", "Memory per container in bytes.")
    shm_size = _Value[str | None](
        '``/dev/shm`` size per container as a normalised size string (``"8G"``).'
    )
    shm_size_bytes = _Bytes("shm_size", "``/dev/shm`` size per container in bytes.")
    disk_limit = _Value[str | None](
        'Disk space per container outside its mounts, as a size string (``"100G"``).'
    )
    disk_limit_bytes = _Bytes(
        "disk_limit", "Disk space per container outside its mounts, in bytes."
    )
    pids_limit = _Value[int | None]("Processes per container.")
    max_containers = _Value[int | None]("Containers the user may have, running or stopped.")
    max_runtime_hours = _Value[float | None]("Hours a container may run before it is stopped.")
    idle_timeout_hours = _Value[float | None]("Idle hours after which a container is stopped.")
    gpu_hold_after_stop_minutes = _Value[float | None](
        "Minutes a stopped container keeps its GPUs; ``None``: until it is removed."
    )
    borrow = _Value[str]("``ask`` (borrow only with ``--borrow``) or ``auto`` (whenever over "
                         "``gpu_limit``).")  # fmt: skip

    def gpu_quota(self) -> GpuQuota:
        """The GPU keys as the allocator takes them (limits as exact fractions)."""
        return GpuQuota.from_values(
            gpu_limit=self.gpu_limit,
            max_gpus_per_container=self.max_gpus_per_container,
            allow_full_gpu=self.allow_full_gpu,
            allow_mig=self.allow_mig,
            max_containers=self.max_containers,
        )


def groups_of(
    config: ResourceLimitsConfig, user: str, unix_groups: Collection[str]
) -> tuple[str, ...]:
    """The config groups ``user`` belongs to, in file order.

    A user belongs to a group listed in its ``members``, or when ``unix_groups`` (the
    names of the user's Unix groups) contains the group's ``unix_group``.
    """
    member_of = set(unix_groups)
    return tuple(
        name
        for name, group in config.groups.items()
        if user in group.members or config.unix_group_of(name) in member_of
    )


def _layered(
    keys: Sequence[str],
    user: str,
    user_values: Mapping[str, Any],
    group_values: Sequence[tuple[str, Mapping[str, Any]]],
    default_values: Mapping[str, Any],
    builtin_values: Mapping[str, Any],
    rank: Ranking = permissiveness,
) -> dict[str, Resolved]:
    """Per key: the user's value, else the most permissive of the groups' (by ``rank``), else
    the defaults', else the builtin one (each layer given as its *declared* keys)."""
    values: dict[str, Resolved] = {}
    for key in keys:
        from_groups = [
            Resolved(declared[key], group_source(name))
            for name, declared in group_values
            if key in declared
        ]
        if key in user_values:
            values[key] = Resolved(user_values[key], user_source(user))
        elif from_groups:
            # max() keeps the first of equal values: ties go to the group listed first.
            values[key] = max(from_groups, key=lambda item: rank(key, item.value))
        elif key in default_values:
            values[key] = Resolved(default_values[key], SOURCE_DEFAULTS)
        else:
            values[key] = Resolved(builtin_values[key], SOURCE_BUILTIN)
    return values


class _Layer(Protocol):
    """One layer of a section (its defaults, a group's or a user's entry): the keys it writes."""

    def declared(self) -> Mapping[str, Any]: ...


class _Section(Protocol):
    """A section of ``resource-limits.yaml`` with per-user and per-group entries."""

    @property
    def users(self) -> Mapping[str, _Layer]: ...

    @property
    def groups(self) -> Mapping[str, _Layer]: ...


_Resolved_T = TypeVar("_Resolved_T", bound=_ResolvedValues)


def _resolve_section(
    resolved: type[_Resolved_T],
    config: ResourceLimitsConfig,
    user: str,
    unix_groups: Collection[str],
    section: _Section,
    defaults: _Layer,
    builtin_values: Mapping[str, Any],
) -> _Resolved_T:
    """``user``'s values of ``keys`` in one section (its user entry, the entries of the user's
    groups, ``defaults``, ``builtin_values``; see ``_layered``); a group the section has no
    entry for sets nothing."""
    groups = groups_of(config, user, unix_groups)
    user_entry = section.users.get(user)
    values = _layered(
        resolved.KEYS,
        user,
        user_entry.declared() if user_entry is not None else {},
        [(name, section.groups[name].declared()) for name in groups if name in section.groups],
        defaults.declared(),
        builtin_values,
        resolved.RANK,
    )
    return resolved(user=user, groups=groups, values=values)


def resolve_limits(
    config: ResourceLimitsConfig, user: str, unix_groups: Collection[str]
) -> ResolvedLimits:
    """``user``'s effective limits: user entry, then groups (most permissive), then
    defaults, then builtin, decided key by key."""
    builtin = BUILTIN_LIMITS.declared()
    return _resolve_section(
        ResolvedLimits, config, user, unix_groups, config, config.defaults, builtin
    )


class ResolvedAggregate(_ResolvedValues):
    """A user's effective totals across all their containers: one ``Resolved`` per key in
    ``AGGREGATE_KEYS``. ``None`` means unlimited."""

    KEYS = AGGREGATE_KEYS

    cpu_limit = _Value[float | None]("CPUs all the user's containers may use together.")
    memory_limit = _Value[str | None](
        'Memory all the user\'s containers may use together, as a size string (``"96G"``).'
    )
    memory_limit_bytes = _Bytes(
        "memory_limit", "Memory all the user's containers may use together, in bytes."
    )
    pids_limit = _Value[int | None]("Processes of all the user's containers together.")
    disk_limit_bytes = _Bytes(
        "disk_limit", "Disk space all the user's containers may hold together, in bytes."
    )

    @property
    def unlimited(self) -> bool:
        """Whether no total is set that the user's cgroup parent enforces (CPUs, memory,
        processes; the disk total is watched by the lifecycle loop instead)."""
        return all(
            resolved.value is None
            for key, resolved in self.values.items()
            if key not in NOT_CGROUP_AGGREGATE_KEYS
        )


def resolve_aggregate(
    config: ResourceLimitsConfig, user: str, unix_groups: Collection[str]
) -> ResolvedAggregate:
    """``user``'s totals from ``aggregate:``: the user's entry, then the entries of their
    groups (most permissive), then ``aggregate.defaults``, then unlimited, key by key."""
    section, builtin = config.aggregate, BUILTIN_AGGREGATE.declared()
    return _resolve_section(
        ResolvedAggregate, config, user, unix_groups, section, section.defaults, builtin
    )


class ResolvedPolicy(_ResolvedValues):
    """A user's effective lifecycle policy: one ``Resolved`` per key in ``POLICY_KEYS``."""

    KEYS = POLICY_KEYS
    RANK = staticmethod(policy_permissiveness)

    @property
    def policy(self) -> LifecyclePolicy:
        """The values as a ``LifecyclePolicy`` (what ``ds01.core.lifecycle`` takes)."""
        return LifecyclePolicy.model_validate(self.to_dict())


def resolve_policy_sources(
    config: ResourceLimitsConfig, user: str, unix_groups: Collection[str]
) -> ResolvedPolicy:
    """``user``'s lifecycle policy with the layer of every value: the user's entry under
    ``policies.users``, then the entries of their groups under ``policies.groups`` (the one
    that reclaims least aggressively), then the top of ``policies:``, then the builtin
    default, key by key."""
    section, builtin = config.policies, BUILTIN_POLICY.values()
    # The top of ``policies:`` is its own defaults layer.
    return _resolve_section(ResolvedPolicy, config, user, unix_groups, section, section, builtin)


def resolve_policy(
    config: ResourceLimitsConfig, user: str, unix_groups: Collection[str]
) -> LifecyclePolicy:
    """``user``'s lifecycle policy (``resolve_policy_sources`` without the provenance)."""
    return resolve_policy_sources(config, user, unix_groups).policy


class ResolvedReservationLimits(_ResolvedValues):
    """A user's effective reservation limits: one ``Resolved`` per key in
    ``RESERVATION_KEYS``. ``None`` means unlimited, except ``max_gpus`` from the builtin
    layer, which means the user's ``gpu_limit`` (``resolve_reservation_limits`` puts it in)."""

    KEYS = RESERVATION_KEYS


def resolve_reservation_limits(
    config: ResourceLimitsConfig, user: str, unix_groups: Collection[str]
) -> ResolvedReservationLimits:
    """``user``'s reservation limits from ``reservations:``: the user's entry, then their
    groups' (most permissive), then ``reservations.defaults``, then the builtin values (8
    hours, 14 days ahead, and ``max_gpus`` = the user's ``gpu_limit``), key by key."""
    section, builtin = config.reservations, BUILTIN_RESERVATION_LIMITS.declared()
    resolved = _resolve_section(
        ResolvedReservationLimits, config, user, unix_groups, section, section.defaults, builtin
    )
    if resolved.source_of("max_gpus") == SOURCE_BUILTIN:
        gpu_limit = resolve_limits(config, user, unix_groups).values["gpu_limit"].value
        resolved.values["max_gpus"] = Resolved(gpu_limit, "gpu_limit")
    return resolved


def is_admin(config: ResourceLimitsConfig, unix_groups: Collection[str], uid: int) -> bool:
    """Whether the caller is a ds01 admin: root (uid 0) or in the ``admin_group`` Unix group."""
    return uid == 0 or config.admin_group in unix_groups
