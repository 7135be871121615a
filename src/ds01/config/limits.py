"""``resource-limits.yaml``: per-user quotas as defaults, groups and user overrides.

Every limit key is optional in every section, and the difference between a key written as
``null`` and a key left out is essential:

- ``gpu_limit: null`` means *unlimited* (for ``shm_size``: Docker's default size;
  for ``idle_timeout_hours``: never reclaimed for idleness; for
  ``gpu_hold_after_stop_minutes``: a stopped container keeps its GPUs until removed);
- no ``gpu_limit`` key at all means *inherit* from the next layer
  (user → groups → defaults → ``BUILTIN_LIMITS``).

Models keep that difference in pydantic's ``model_fields_set``; read it through
``Limits.declared()``, never by testing an attribute for ``None``. Resolution for one user
lives in ``ds01.config.resolve``.

The ``aggregate:`` section (``AggregateConfig``) follows the same rules for a user's totals
across all their containers: ``cpu_limit`` (CPUs), ``memory_limit`` (a size),
``pids_limit`` (processes) and ``disk_limit`` (a size), set under ``defaults``, ``groups``
and ``users``.

The ``scheduler:`` section (``SchedulerConfig``, in ``ds01.config.scheduler``) sets how the
GPU queue is ordered and backfilled; it is one policy for the whole server.

The ``reservations:`` section (``ReservationsConfig``, in ``ds01.config.reservations``) sets
how users may reserve GPUs ahead, with per-group and per-user limits.

The ``policies:`` section (``PoliciesConfig``, in ``ds01.config.policies``) sets how idle and
over-long containers are found and reclaimed: its defaults at the top, then ``groups`` and
``users`` overrides.

The ``borrowing:`` section (``BorrowingConfig``, in ``ds01.config.borrowing``) lets users go
above ``gpu_limit`` on idle devices, reclaimed on demand; the limit key ``borrow`` (``ask`` or
``auto``) says whether a user borrows only with ``--borrow`` or whenever over quota.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from ds01.config.borrowing import BorrowingConfig
from ds01.config.policies import PoliciesConfig
from ds01.config.reservations import ReservationsConfig
from ds01.config.scheduler import MAX_PRIORITY, SchedulerConfig
from ds01.config.sections import (
    GroupName,
    LayerEntry,
    NonNegative,
    Positive,
    SectionEntry,
    UserName,
    empty_if_null,
    mark_undefined_groups,
)
from ds01.model.units import format_bytes, parse_bytes, parse_cpus

DEFAULT_ADMIN_GROUP = "ds01-admin"

# Keys where null is refused: they have no "unlimited" meaning.
_NOT_NULLABLE = ("priority", "allow_full_gpu", "allow_mig", "borrow")

#: The values of the ``borrow`` key: ``ask`` borrows only with ``--borrow``; ``auto`` borrows
#: whenever a request is over ``gpu_limit`` (and the ``borrowing:`` policy allows it).
BORROW_MODES = ("ask", "auto")


def _cpu_count(value: Any) -> Any:
    """A CPU count as a float (``None`` stays ``None``: unlimited)."""
    return None if value is None else parse_cpus(value)


def _positive_size(value: Any) -> Any:
    """A size normalised to its shortest form (``"32G"``); ``None`` stays ``None``."""
    if value is None:
        return None
    size = parse_bytes(value)
    if size == 0:
        raise ValueError(f"invalid size {value!r}: must be greater than 0 (null = no limit)")
    return format_bytes(size)


class Limits(LayerEntry):
    """The limit keys one section (``defaults``, a group or a user) may set.

    An attribute reads ``None`` both when the key is absent and when it is ``null``; use
    ``declared()`` to tell them apart.
    """

    priority: int | None = Field(
        default=None,
        ge=0,
        le=MAX_PRIORITY,
        description=f"Scheduling priority, 0..{MAX_PRIORITY}; higher goes first.",
    )
    gpu_limit: NonNegative | None = Field(
        default=None,
        description="GPU-equivalents one user may hold over all containers; null = unlimited.",
    )
    max_gpus_per_container: NonNegative | None = Field(
        default=None,
        description="GPU-equivalents one container may hold; null = unlimited.",
    )
    allow_full_gpu: bool | None = Field(
        default=None, description="Whether the user may be given a whole (non-MIG) GPU."
    )
    allow_mig: bool | None = Field(
        default=None, description="Whether the user may be given a MIG instance."
    )
    cpu_limit: float | None = Field(
        default=None, description="CPUs per container (Docker --cpus); null = unlimited."
    )
    memory_limit: str | None = Field(
        default=None,
        description="Memory per container, a size such as '32G' (1024-based, stored "
        "normalised); null = unlimited.",
    )
    shm_size: str | None = Field(
        default=None,
        description="/dev/shm size per container, a size such as '8G'; null = Docker's default.",
    )
    disk_limit: str | None = Field(
        default=None,
        description="Disk space per container for what it writes outside its mounts (its own "
        "filesystem layer and anonymous volumes), a size such as '50G'; null = unlimited.",
    )
    pids_limit: int | None = Field(
        default=None, ge=1, description="Processes per container; null = unlimited."
    )
    max_containers: int | None = Field(
        default=None,
        ge=0,
        description="Containers one user may have (running or stopped); null = unlimited.",
    )
    max_runtime_hours: Positive | None = Field(
        default=None,
        description="Hours a container may run before it is stopped; null = unlimited.",
    )
    idle_timeout_hours: Positive | None = Field(
        default=None,
        description="Idle hours after which a container is stopped; null = never.",
    )
    gpu_hold_after_stop_minutes: NonNegative | None = Field(
        default=None,
        description="Minutes a stopped container keeps its GPUs before they are released; "
        "null = until the container is removed.",
    )
    borrow: Literal["ask", "auto"] | None = Field(
        default=None,
        description="Borrowing above gpu_limit when the borrowing: policy is on: 'ask' = only "
        "with --borrow, 'auto' = whenever a request is over gpu_limit.",
    )

    @field_validator(*_NOT_NULLABLE, mode="before")
    @classmethod
    def _refuse_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null (no unlimited value); remove the key to inherit")
        return value

    @field_validator("cpu_limit", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> Any:
        return _cpu_count(value)

    @field_validator("memory_limit", "shm_size", "disk_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return _positive_size(value)


#: Every limit key, in the order they are documented and shown.
LIMIT_KEYS: tuple[str, ...] = tuple(Limits.model_fields)
Limits.layer_keys = LIMIT_KEYS


class GroupLimits(Limits):
    """A group's limits plus how users become members.

    A user belongs to the group if listed in ``members`` or if they are in the Unix group
    ``unix_group`` (when not given: the Unix group of the same name as this group).
    """

    # strict=False lets the YAML list become a tuple; the items are still checked as names.
    members: tuple[UserName, ...] = Field(
        default=(), strict=False, description="User names in this group."
    )
    unix_group: GroupName | None = Field(
        default=None, description="Unix group whose members belong here; default: group's name."
    )


# Keys of the reference implementation's aggregate section, with the ds01 key to use instead.
_REFERENCE_AGGREGATE_KEYS = {
    "cpu_quota": "cpu_limit (CPUs, e.g. 96, not a systemd percentage)",
    "memory_max": "memory_limit",
    "memory_high": "memory_limit (there is no soft limit)",
    "tasks_max": "pids_limit",
    "gpu_limit": "gpu_limit outside the aggregate section",
}


class Aggregate(SectionEntry):
    """A user's totals across all their containers, as one section sets them.

    Written under ``aggregate.defaults``, ``aggregate.groups.<name>`` or
    ``aggregate.users.<name>``. As in ``Limits``: ``null`` = unlimited, no key = inherit.
    """

    section_word: ClassVar[str] = "aggregate"
    renamed_keys: ClassVar[Mapping[str, str]] = _REFERENCE_AGGREGATE_KEYS

    cpu_limit: float | None = Field(
        default=None,
        description="CPUs the user's containers may use together (0.5 = half a core's time); "
        "null = unlimited.",
    )
    memory_limit: str | None = Field(
        default=None,
        description="Memory the user's containers may use together, a size such as '96G' "
        "(1024-based, stored normalised); null = unlimited.",
    )
    pids_limit: int | None = Field(
        default=None, ge=1, description="Processes of all the user's containers; null = unlimited."
    )
    disk_limit: str | None = Field(
        default=None,
        description="Disk space all the user's containers (running or stopped) may hold "
        "together outside their mounts, a size such as '200G'; null = unlimited.",
    )

    @field_validator("cpu_limit", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> Any:
        return _cpu_count(value)

    @field_validator("memory_limit", "disk_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return _positive_size(value)


#: Every aggregate key, in the order they are documented and shown.
AGGREGATE_KEYS: tuple[str, ...] = tuple(Aggregate.model_fields)
Aggregate.layer_keys = AGGREGATE_KEYS


class AggregateConfig(BaseModel):
    """The ``aggregate:`` section: per-user totals, enforced on the user's cgroup parent.

    Group names must be groups defined in the top-level ``groups:`` section (membership is
    decided there).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    defaults: Aggregate = Field(default_factory=Aggregate)
    groups: dict[GroupName, Aggregate] = Field(default_factory=dict)
    users: dict[UserName, Aggregate] = Field(default_factory=dict)

    @field_validator("defaults", "groups", "users", mode="before")
    @classmethod
    def _null_section(cls, value: Any) -> Any:
        return empty_if_null(value)


class HubConfig(BaseModel):
    """The ``hub:`` section: the identities allowed to act on behalf of a user (a
    JupyterHub). A request from one of them may name a user; ds01d then treats it as that
    user's own request (their quotas, queue place and rules, never an admin's), and every
    event it logs names the hub too. Empty (the default): no such identity."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # strict=False lets the YAML list become a tuple; the items are still checked as names.
    users: tuple[UserName, ...] = Field(
        default=(), strict=False, description="Unix users who may act on behalf of a user."
    )
    unix_groups: tuple[GroupName, ...] = Field(
        default=(),
        strict=False,
        description="Unix groups whose members may act on behalf of a user.",
    )
    # A hub's own connection caps (ds01.core.admission.HubCaps), in place of one user's: a
    # user behind the hub gets a user's share of workers within them.
    connections: int = Field(
        default=512,
        ge=1,
        description="Connections one hub identity may hold open at once, for all the users it "
        "serves (in place of one user's cap; ds01d's total cap still applies).",
    )
    user_requests: int = Field(
        default=16,
        ge=1,
        description="Requests one user behind the hub may have open at once (being answered "
        "or waiting for a worker); more are refused (HTTP 429) for that user only.",
    )
    workers: int = Field(
        default=16,
        ge=1,
        description="Of ds01d's workers for ordinary requests, how many the hub's users take "
        "together (each at most a user's share); the rest stay for local users.",
    )
    waiting: int = Field(
        default=64,
        ge=1,
        description="Of ds01d's slots for requests that wait (queue waits, long polls), how "
        "many the hub's users hold together (each at most a user's share); more are "
        "refused (HTTP 429).",
    )

    # A user's emptied network outlives her last container by this much, so a freed subnet
    # cannot give another user's container the address the hub's proxy still routes to.
    address_keep_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="Seconds a user's network (and so her servers' addresses) is kept after "
        "her last container is removed, while a hub identity is configured: more than the "
        "hub's poll_interval, until which its proxy still sends her pages there.",
    )

    @field_validator("users")
    @classmethod
    def _not_root(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "root" in value:
            raise ValueError(
                "root may not be a hub identity: run the hub as its own Unix user "
                "(docs/jupyterhub.md)"
            )
        return value

    def emptied_network_keep_seconds(self) -> float:
        """How long a user's emptied network is kept: ``address_keep_seconds`` while a hub
        identity is configured (only a hub's proxy routes to containers' addresses), else 0
        (removed at once)."""
        return self.address_keep_seconds if self.users or self.unix_groups else 0.0

    def admits(self, user: str, uid: int, unix_groups: Collection[str]) -> bool:
        """Whether the Unix account ``user`` (``uid``, in ``unix_groups``) is a hub identity
        (never root)."""
        if uid == 0:
            return False
        return user in self.users or any(g in unix_groups for g in self.unix_groups)


class ResourceLimitsConfig(BaseModel):
    """The whole ``resource-limits.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    defaults: Limits = Field(default_factory=Limits)
    groups: dict[GroupName, GroupLimits] = Field(default_factory=dict)
    users: dict[UserName, Limits] = Field(default_factory=dict)
    admin_group: GroupName = Field(
        default=DEFAULT_ADMIN_GROUP, description="Unix group whose members are ds01 admins."
    )
    hub: HubConfig = Field(
        default_factory=HubConfig,
        description="Who may act on behalf of a user (a JupyterHub); nobody by default.",
    )
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig)
    scheduler: SchedulerConfig = Field(
        default_factory=SchedulerConfig,
        description="How the GPU queue is ordered and backfilled (one policy per server).",
    )
    policies: PoliciesConfig = Field(
        default_factory=PoliciesConfig,
        description="How idle and over-long containers are found and reclaimed, with "
        "per-group and per-user overrides.",
    )
    borrowing: BorrowingConfig = Field(
        default_factory=BorrowingConfig,
        description="Borrowing idle devices above gpu_limit, reclaimed on demand (off by "
        "default; one policy per server).",
    )
    reservations: ReservationsConfig = Field(
        default_factory=ReservationsConfig,
        description="How users may reserve GPUs ahead (ds01.config.reservations).",
    )
    cluster: Literal["none", "slurm"] = Field(
        default="none",
        description="none: a single server (ds01d places and queues). slurm: a node of a "
        "Slurm cluster; a container is a Slurm job's, created on the devices Slurm gave the "
        "job (docs/cluster.md).",
    )

    @field_validator(
        "defaults", "groups", "users", "hub", "aggregate", "scheduler", "policies", "borrowing",
        "reservations", mode="before",
    )  # fmt: skip
    @classmethod
    def _null_section(cls, value: Any) -> Any:
        return empty_if_null(value)

    @field_validator("groups", "users", mode="before")
    @classmethod
    def _null_entries(cls, value: Any) -> Any:
        # "jane:" with nothing under it is an entry that sets no key.
        if isinstance(value, dict):
            return {name: empty_if_null(entry) for name, entry in value.items()}
        return value

    @field_validator("aggregate", "policies", "reservations", mode="before")
    @classmethod
    def _known_groups(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs before the section is validated, so that the error lands on the group's own
        # line: the entry of an undefined group is replaced by a marker that the entry's
        # model refuses with the message (ds01.config.sections).
        defined = info.data.get("groups")
        if defined is None:
            return value  # an invalid groups: section is reported on its own
        return mark_undefined_groups(value, tuple(defined))

    def unix_group_of(self, group: str) -> str:
        """The Unix group whose members belong to config group ``group``."""
        return self.groups[group].unix_group or group


#: The baseline used for any key that not even ``defaults`` sets.
BUILTIN_LIMITS = Limits(
    priority=50,
    gpu_limit=1.0,
    max_gpus_per_container=1.0,
    allow_full_gpu=True,
    allow_mig=True,
    cpu_limit=8.0,
    memory_limit="32G",
    shm_size="8G",
    disk_limit="100G",
    pids_limit=4096,
    max_containers=3,
    max_runtime_hours=48.0,
    idle_timeout_hours=48.0,
    gpu_hold_after_stop_minutes=15.0,
    borrow="ask",
)

#: The baseline for any aggregate key that not even ``aggregate.defaults`` sets: unlimited.
BUILTIN_AGGREGATE = Aggregate(cpu_limit=None, memory_limit=None, pids_limit=None, disk_limit=None)
