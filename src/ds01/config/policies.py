"""The ``policies:`` section of ``resource-limits.yaml``: how idle and over-long containers are
found and reclaimed (``ds01.core.lifecycle`` applies it; the limits themselves,
``idle_timeout_hours`` and ``max_runtime_hours``, are per-user limit keys).

Every key is optional; the top of the section sets the server's defaults, ``groups.<name>``
and ``users.<name>`` override some keys for the members of a group (defined under the
top-level ``groups:``) or for one user::

    policies:
      idle_grace_minutes: 30
      cpu_percent: 5
      groups:
        students: {demand_idle_factor: 0.25}
      users:
        jane.researcher: {idle_warning_fractions: [0.5, 0.8, 0.95]}

Resolution per key (``ds01.config.resolve.resolve_policy``): the user's entry, else the
user's groups, else the top of the section, else the builtin default below. When several of
the user's groups set a key, the *most permissive* value wins: the one that reclaims least
aggressively (``policy_permissiveness``). For most keys that is the larger value (a longer
grace, a longer hold, a weaker shrink under demand); for the signal thresholds it is the
*smaller* one, because a container is idle when every signal stays below its threshold, so a
lower threshold makes fewer containers idle. Among warning schedules, the one whose first
warning comes earliest wins (then the one with more warnings).

``max_queued`` bounds how many requests a user may have waiting in the GPU queue (the
daemon's ``ds01.core.queue_room`` applies it); it resolves like every other key, ``null``
(unlimited) being the most permissive value.

``lifecycle_interval_seconds`` (one loop for the whole server) and ``webhook_url`` (the
admins' endpoint) may only be set at the top of the section.

Keys of the reference implementation (``gpu_idle_threshold``, ``idle_detection_window``, …)
are refused with the ds01 key to use instead: several of them count differently (a
cumulative byte count instead of a rate, hourly checks instead of time).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from ds01.config.sections import (
    Fraction,
    GroupName,
    NonNegative,
    Positive,
    SectionEntry,
    UserName,
    empty_if_null,
)

#: Keys that only the top of the ``policies:`` section may set.
SERVER_WIDE_KEYS = frozenset({"lifecycle_interval_seconds", "webhook_url"})

#: The signal thresholds: a container is idle while every signal stays below its threshold.
THRESHOLD_KEYS = frozenset(
    {"gpu_utilization_percent", "gpu_memory_mib", "cpu_percent", "network_bytes_per_second"}
)

#: The warning schedules (fractions of a limit).
WARNING_KEYS = frozenset({"idle_warning_fractions", "runtime_warning_fractions"})

_HTTP_URL_RE = re.compile(r"https?://[^\s/]+\S*")

# Keys of the reference implementation's policies section, with what to write instead.
_REFERENCE_POLICY_KEYS = {
    "gpu_idle_threshold": "gpu_utilization_percent",
    "cpu_idle_threshold": "cpu_percent (percent of one CPU)",
    "network_idle_threshold": "network_bytes_per_second (a rate, not a cumulative count)",
    "idle_detection_window": "nothing: idle time is measured exactly, not in checks",
    "grace_period_m": "idle_grace_minutes",
    "keepalive_max_duration_h": "keep_alive_max_hours",
    "high_demand_idle_reduction": "demand_idle_factor",
    "high_demand_threshold": "nothing: demand means requests waiting in the queue for devices",
    "created_container_timeout_m": "created_unstarted_minutes",
    "container_hold_after_stop_h": "container_hold_after_stop_hours",
    "gpu_hold_after_manual_stop_m": "gpu_hold_after_stop_minutes (a limit key, not a policy)",
}


def _check_fractions(value: tuple[float, ...]) -> tuple[float, ...]:
    increasing = all(a < b for a, b in pairwise(value))
    if not (all(0 < f < 1 for f in value) and increasing):
        shown = ", ".join(f"{f:g}" for f in value)
        raise ValueError(
            "must be fractions of the limit strictly between 0 and 1, in increasing order, "
            f"e.g. [0.8, 0.95] ([] = no warning); got [{shown}]"
        )
    return value


class LifecyclePolicy(SectionEntry):
    """One set of lifecycle settings: a user's resolved policy, or one layer of the section.

    Every key has a default. As a layer (the top of ``policies:``, a group or a user entry),
    ``declared()`` tells which keys the file wrote.
    """

    section_word: ClassVar[str] = "policy"
    renamed_keys: ClassVar[Mapping[str, str]] = _REFERENCE_POLICY_KEYS

    lifecycle_interval_seconds: Positive = Field(
        default=60.0,
        description="Seconds between two passes of the lifecycle loop (server-wide). Stop "
        "times do not depend on it; it only bounds how late after its time a stop happens.",
    )
    idle_grace_minutes: NonNegative = Field(
        default=30.0,
        description="Minutes after a start during which no idle warning or idle stop is "
        "issued (idle time still counts from the start).",
    )
    gpu_utilization_percent: float = Field(
        default=5.0,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="GPU utilisation (percent, busiest whole GPU of the container) at or "
        "above which the container is active.",
    )
    gpu_memory_mib: int = Field(
        default=256,
        ge=1,
        description="Where GPU utilisation is unknown (MIG instances): GPU memory (MiB, summed "
        "over the container's devices) below which its devices count as idle. At or above it "
        "the GPU signal is unknown and the other signals decide.",
    )
    cpu_percent: Positive = Field(
        default=5.0,
        description="CPU use over the interval, in percent of one CPU (200 = two CPUs busy), "
        "at or above which the container is active.",
    )
    network_bytes_per_second: Positive = Field(
        default=10240.0,
        description="Network traffic (bytes received plus sent per second over the interval) "
        "at or above which the container is active.",
    )
    idle_warning_fractions: tuple[float, ...] = Field(
        default=(0.8, 0.95),
        strict=False,
        description="Fractions of the idle timeout at which the owner is warned, increasing, "
        "each in (0, 1); [] = no warning.",
    )
    runtime_warning_fractions: tuple[float, ...] = Field(
        default=(0.75, 0.9),
        strict=False,
        description="Fractions of max_runtime_hours at which the owner is warned, increasing, "
        "each in (0, 1); [] = no warning.",
    )
    keep_alive_max_hours: NonNegative | None = Field(
        default=24.0,
        description="Hours by which touching /workspace/.keep-alive may defer an idle stop, "
        "however often it is touched: a touch counts as activity, but never later than this "
        "long after the container's last real activity, so the stop comes at most this long "
        "after it would have come without the file; 0 = the file is ignored; null = no cap.",
    )
    demand_idle_factor: Fraction = Field(
        default=0.5,
        description="While requests wait in the queue for devices, idle timeouts are "
        "multiplied by this factor, in (0, 1]; 1 = no shrink.",
    )
    created_unstarted_minutes: Positive = Field(
        default=30.0,
        description="Minutes after which a container that was created but never started is "
        "removed.",
    )
    container_hold_after_stop_hours: NonNegative | None = Field(
        default=168.0,
        description="Hours after which a stopped container is removed (its /workspace stays); "
        "null = never removed.",
    )
    max_queued: int | None = Field(
        default=10,
        ge=0,
        description="Requests (creates and starts) the user may have waiting in the GPU "
        "queue at once; null = unlimited. Waiting creates also count against max_containers.",
    )
    disk_warning_fraction: Fraction = Field(
        default=0.9,
        description="Part of disk_limit (and of aggregate.disk_limit) at which the owner is "
        "warned that the disk use nears it, in (0, 1].",
    )
    disk_grace_minutes: NonNegative = Field(
        default=10.0,
        description="Minutes from the first measurement over a disk limit to the stop: the "
        "owner is warned and may delete files in that time.",
    )
    build_network: bool = Field(
        default=True,
        description="Whether the RUN steps of image builds get a network: the user's own "
        "network (other users' containers unreachable), e.g. for package installs; "
        "false = no network in builds.",
    )
    webhook_url: str | None = Field(
        default=None,
        description="http(s) URL that receives every lifecycle warning and stop as a JSON "
        "POST (server-wide); null = none.",
    )

    @field_validator(*WARNING_KEYS)
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return _check_fractions(value)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_URL_RE.fullmatch(value):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value

    def values(self) -> dict[str, Any]:
        """Every policy key with its value, written or default."""
        return {key: getattr(self, key) for key in POLICY_KEYS}


#: Every policy key, in the order they are documented and shown.
POLICY_KEYS: tuple[str, ...] = tuple(LifecyclePolicy.model_fields)
LifecyclePolicy.layer_keys = POLICY_KEYS

#: The defaults of every key (what a configuration without ``policies:`` gets).
BUILTIN_POLICY = LifecyclePolicy()


class PolicyOverride(LifecyclePolicy):
    """The keys one group or one user entry of ``policies:`` overrides (read ``declared()``)."""

    @model_validator(mode="before")
    @classmethod
    def _not_server_wide(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if key in SERVER_WIDE_KEYS:
                    raise ValueError(
                        f"{key} is one setting for the whole server: set it at the top of "
                        "the policies: section"
                    )
        return value


class PoliciesConfig(LifecyclePolicy):
    """The ``policies:`` section: the server's defaults, then per-group and per-user overrides.

    Group names must be groups defined under the top-level ``groups:`` section.
    """

    groups: dict[GroupName, PolicyOverride] = Field(
        default_factory=dict, description="Overrides for the members of a group."
    )
    users: dict[UserName, PolicyOverride] = Field(
        default_factory=dict, description="Overrides for one user."
    )

    @field_validator("groups", "users", mode="before")
    @classmethod
    def _null_entries(cls, value: Any) -> Any:
        value = empty_if_null(value)
        if isinstance(value, dict):
            return {name: empty_if_null(entry) for name, entry in value.items()}
        return value

    def defaults(self) -> LifecyclePolicy:
        """The policy of a user whom no group or user entry concerns."""
        return LifecyclePolicy(**self.values())


def policy_permissiveness(key: str, value: Any) -> tuple[float, ...]:
    """Order the values of policy ``key``: a larger result reclaims less aggressively.

    Thresholds: smaller is more permissive (fewer containers fall below all of them).
    Warning schedules: an earlier first warning, then more warnings; none ranks last.
    ``container_hold_after_stop_hours`` and ``keep_alive_max_hours``: ``null`` (never removed,
    no cap) ranks above every number.
    Every other key: larger is more permissive. ``SERVER_WIDE_KEYS`` are never ranked (no
    group or user entry sets them).
    """
    if key in THRESHOLD_KEYS:
        return (-float(value),)
    if key in WARNING_KEYS:
        fractions: tuple[float, ...] = value
        return (1.0, -fractions[0], float(len(fractions))) if fractions else (0.0, 0.0, 0.0)
    if value is None:
        return (1.0, 0.0)
    return (0.0, float(value))


__all__ = [
    "BUILTIN_POLICY",
    "POLICY_KEYS",
    "SERVER_WIDE_KEYS",
    "THRESHOLD_KEYS",
    "WARNING_KEYS",
    "LifecyclePolicy",
    "PoliciesConfig",
    "PolicyOverride",
    "policy_permissiveness",
]
