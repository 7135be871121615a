"""``resource-limits.yaml``: per-user quotas as defaults, groups and user overrides.

Every limit key is optional in every section, and the difference between a key written as
``null`` and a key left out is essential (DESIGN.md §2.7):

- ``gpu_limit: null`` means *unlimited* (for ``shm_size``: Docker's default size;
  for ``idle_timeout_hours``: never reclaimed for idleness);
- no ``gpu_limit`` key at all means *inherit* from the next layer
  (user → groups → defaults → ``BUILTIN_LIMITS``).

Models keep that difference in pydantic's ``model_fields_set``; read it through
``Limits.declared()``, never by testing an attribute for ``None``. Resolution for one user
lives in ``ds01.config.resolve``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ds01.core.units import format_bytes, parse_bytes, parse_cpus

DEFAULT_ADMIN_GROUP = "ds01-admin"

# User and group names as NSS may return them (local, LDAP, SSSD "user@domain"): anything
# without whitespace, ':' or '/'.
_ACCOUNT_NAME_RE = re.compile(r"[^\s:/]+")

# Keys where null is refused: they have no "unlimited" meaning.
_NOT_NULLABLE = ("priority", "allow_full_gpu", "allow_mig")


def _empty_if_null(value: Any) -> Any:
    """A section written with nothing under it (``users:``) parses to null: treat it as empty."""
    return {} if value is None else value


def _account_name_checker(what: str) -> Callable[[str], str]:
    def check(name: str) -> str:
        if not _ACCOUNT_NAME_RE.fullmatch(name):
            raise ValueError(
                f"invalid {what} name {name!r}: must be non-empty, without spaces, ':' or '/'"
            )
        return name

    return check


UserName = Annotated[str, AfterValidator(_account_name_checker("user"))]
GroupName = Annotated[str, AfterValidator(_account_name_checker("group"))]


class Limits(BaseModel):
    """The limit keys one section (``defaults``, a group or a user) may set.

    An attribute reads ``None`` both when the key is absent and when it is ``null``; use
    ``declared()`` to tell them apart.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    priority: int | None = Field(
        default=None, ge=0, le=1000, description="Scheduling priority, 0..1000; higher goes first."
    )
    gpu_limit: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="GPU-equivalents one user may hold over all containers; null = unlimited.",
    )
    max_gpus_per_container: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
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
    pids_limit: int | None = Field(
        default=None, ge=1, description="Processes per container; null = unlimited."
    )
    max_containers: int | None = Field(
        default=None,
        ge=0,
        description="Containers one user may have (running or stopped); null = unlimited.",
    )
    max_runtime_hours: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Hours a container may run before it is stopped; null = unlimited.",
    )
    idle_timeout_hours: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Idle hours after which a container is stopped; null = never.",
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
        return None if value is None else parse_cpus(value)

    @field_validator("memory_limit", "shm_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if value is None:
            return None
        size = parse_bytes(value)
        if size == 0:
            raise ValueError(f"invalid size {value!r}: must be greater than 0 (null = no limit)")
        return format_bytes(size)

    def declared(self) -> dict[str, Any]:
        """The limit keys written in this section, with their values (``None`` = null).

        Keys left out of the section are absent from the result: they inherit.
        """
        return {key: getattr(self, key) for key in LIMIT_KEYS if key in self.model_fields_set}


#: Every limit key, in the order they are documented and shown.
LIMIT_KEYS: tuple[str, ...] = tuple(Limits.model_fields)


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


class ResourceLimitsConfig(BaseModel):
    """The whole ``resource-limits.yaml``.

    ``aggregate`` and ``policies`` are reserved sections, accepted and kept as raw mappings
    until their schema is defined.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    defaults: Limits = Field(default_factory=Limits)
    groups: dict[GroupName, GroupLimits] = Field(default_factory=dict)
    users: dict[UserName, Limits] = Field(default_factory=dict)
    admin_group: GroupName = Field(
        default=DEFAULT_ADMIN_GROUP, description="Unix group whose members are ds01 admins."
    )
    aggregate: dict[str, Any] = Field(default_factory=dict)
    policies: dict[str, Any] = Field(default_factory=dict)

    @field_validator("defaults", "groups", "users", "aggregate", "policies", mode="before")
    @classmethod
    def _null_section(cls, value: Any) -> Any:
        return _empty_if_null(value)

    @field_validator("groups", "users", mode="before")
    @classmethod
    def _null_entries(cls, value: Any) -> Any:
        # "jane:" with nothing under it is an entry that sets no key.
        if isinstance(value, dict):
            return {name: _empty_if_null(entry) for name, entry in value.items()}
        return value

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
    pids_limit=4096,
    max_containers=3,
    max_runtime_hours=48.0,
    idle_timeout_hours=48.0,
)
