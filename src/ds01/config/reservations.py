"""The ``reservations:`` section of ``resource-limits.yaml``: how users may reserve GPUs.

```yaml
reservations:
  warning_minutes: 15          # server-wide: owners in the way are warned this long before
  min_minutes: 15              # server-wide: the shortest reservation
  defaults: {max_hours: 8, max_days_ahead: 14}
  groups:
    phd: {max_gpus: 2, gpu_hours_per_week: 40}
  users:
    alice: {max_reservations: 5}
```

Entries resolve like ``aggregate:`` (user, then the user's groups, most permissive, then
``defaults``, then the builtin values): ``null`` = unlimited, no key = inherit. The builtin
values are the contract's defaults: at most 8 hours a reservation, at most 14 days ahead,
at most :data:`DEFAULT_MAX_RESERVATIONS` not yet ended (generous, but finite: a chain of
reservations cannot keep a GPU for the whole horizon), and ``max_gpus`` left out means
the user's ``gpu_limit`` (``builtin`` source). Every reservation of a user lasts at least
``min_minutes`` (:data:`DEFAULT_MIN_MINUTES`), so that its cost in GPU-hours is never
nothing while it still keeps a GPU from everyone else's longer runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ds01.config.sections import (
    GroupName,
    NonNegative,
    Positive,
    SectionEntry,
    UserName,
    empty_if_null,
)

#: Lead time of the warning to owners of containers on devices about to be reserved.
DEFAULT_WARNING_MINUTES = 15.0
#: The shortest reservation a user may make, in minutes (``min_minutes``).
DEFAULT_MIN_MINUTES = 15.0
#: Reservations one user may have not yet ended when no layer sets ``max_reservations``.
DEFAULT_MAX_RESERVATIONS = 20


class ReservationLimitsEntry(SectionEntry):
    """The reservation limits one layer (``defaults``, a group or a user) may set."""

    section_word: ClassVar[str] = "reservations"

    max_gpus: NonNegative | None = Field(
        default=None,
        description="GPU-equivalents one user may have reserved at any moment; "
        "not set anywhere: their gpu_limit; null = unlimited.",
    )
    max_hours: Positive | None = Field(
        default=None,
        description="The longest reservation, in hours (builtin 8); null = unlimited.",
    )
    max_days_ahead: Positive | None = Field(
        default=None,
        description="How far ahead a reservation may start, in days (builtin 14); "
        "null = unlimited.",
    )
    max_reservations: int | None = Field(
        default=None,
        ge=0,
        description="Reservations one user may have that have not ended (builtin "
        f"{DEFAULT_MAX_RESERVATIONS}); null = unlimited.",
    )
    gpu_hours_per_week: NonNegative | None = Field(
        default=None,
        description="GPU-hours of the reservations starting in one calendar week (Monday "
        "00:00, server time); null = unlimited.",
    )


#: Every reservation limit key, in the order they are documented and shown.
RESERVATION_KEYS: tuple[str, ...] = (
    "max_gpus",
    "max_hours",
    "max_days_ahead",
    "max_reservations",
    "gpu_hours_per_week",
)
ReservationLimitsEntry.layer_keys = RESERVATION_KEYS

#: The builtin layer; ``max_gpus`` from here means "the user's gpu_limit".
BUILTIN_RESERVATION_LIMITS = ReservationLimitsEntry(
    max_gpus=None, max_hours=8.0, max_days_ahead=14.0,
    max_reservations=DEFAULT_MAX_RESERVATIONS,
    gpu_hours_per_week=None,
)  # fmt: skip


class ReservationsConfig(BaseModel):
    """The ``reservations:`` section (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    warning_minutes: Positive = Field(
        default=DEFAULT_WARNING_MINUTES,
        description="Minutes before a reservation starts at which the owners of containers "
        "still on its devices are warned (server-wide).",
    )
    min_minutes: Positive = Field(
        default=DEFAULT_MIN_MINUTES,
        description="The shortest reservation a user may make, in minutes (server-wide; "
        "maintenance windows excepted).",
    )
    defaults: ReservationLimitsEntry = Field(default_factory=ReservationLimitsEntry)
    groups: dict[GroupName, ReservationLimitsEntry] = Field(default_factory=dict)
    users: dict[UserName, ReservationLimitsEntry] = Field(default_factory=dict)

    @field_validator("defaults", "groups", "users", mode="before")
    @classmethod
    def _null_section(cls, value: Any) -> Any:
        return empty_if_null(value)


__all__ = [
    "BUILTIN_RESERVATION_LIMITS",
    "DEFAULT_MAX_RESERVATIONS",
    "DEFAULT_MIN_MINUTES",
    "DEFAULT_WARNING_MINUTES",
    "RESERVATION_KEYS",
    "ReservationLimitsEntry",
    "ReservationsConfig",
]
