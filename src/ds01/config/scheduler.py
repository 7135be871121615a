"""The ``scheduler:`` section of ``resource-limits.yaml``: how the GPU queue is ordered.

A request that fits its user's quota but finds no free device waits in the queue. Each
waiting request has a score in *points*; the highest score goes first
(``ds01.core.scheduler`` computes it, ``ds01 queue --explain`` shows each part)::

    score = priority_weight      * priority / 100           (priority: the Limits key, 0..1000)
          + fairshare_weight     * fair-share factor        (0..1; 1 = no recent GPU usage)
          + age_weight_per_hour  * hours waited

Why the defaults (1.0, 1.0, 0.1 per hour, a 168-hour half-life) make sense together:

- 100 priority, the whole fair-share range and 10 hours of waiting are each worth one point.
  Group priorities a few tens apart (the mission's 50/80/100) therefore weigh about as much
  as a user's recent usage, and an admin who wants a group to go first whatever its usage
  gives it a priority a few hundred higher.
- Fair share forgets: usage a week old counts half, two weeks old a quarter, so one heavy
  week does not keep a student at the back of the queue for a semester.
- The age term grows without bound: at the defaults, a request is never overtaken by one
  submitted more than 20 hours after it as long as priorities are within 100 of each other
  (110 hours across the whole 0..1000 range), so nobody waits forever. That is why
  ``age_weight_per_hour`` must be above 0.

Backfill: when the first request in line (the *head*) cannot be placed, it holds a
reservation on the devices it will need; later requests may start on the other free
devices, and on the reserved ones only if they are expected to end before the head's
estimated start plus ``backfill_max_delay_minutes``.

A configuration without ``scheduler:`` gets every default below.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ds01.config.sections import NonNegative, Positive

#: The highest ``priority`` a Limits section may set (the lowest is 0).
MAX_PRIORITY = 1000

#: Priority (the Limits key) is counted in hundreds: 100 priority is one point at weight 1.
PRIORITY_POINTS_DIVISOR = 100


class SchedulerConfig(BaseModel):
    """The queue's ordering and backfill policy (see the module docstring for the score).

    Weights are dimensionless multipliers of score points. Every value must be finite and
    non-negative; ``age_weight_per_hour`` must be positive.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    priority_weight: NonNegative = Field(
        default=1.0,
        description="Score points per 100 of the user's priority (0..1000); 0 ignores priority.",
    )
    fairshare_weight: NonNegative = Field(
        default=1.0,
        description="Score points of a user without recent GPU usage; the fair-share factor "
        "(0..1) scales it down as recent usage grows; 0 ignores usage.",
    )
    age_weight_per_hour: float = Field(
        default=0.1,
        allow_inf_nan=False,
        description="Score points per hour a request has waited; must be above 0 so that "
        "every request eventually reaches the head of the queue.",
    )
    usage_half_life_hours: Positive = Field(
        default=168.0,
        description="Hours after which past GPU usage counts half in the fair-share factor.",
    )
    backfill: bool = Field(
        default=True,
        description="Whether requests behind a head that cannot start may start on devices "
        "the head does not need.",
    )
    backfill_max_delay_minutes: NonNegative | None = Field(
        default=0.0,
        description="Minutes by which a backfilled request may delay the head's estimated "
        "start: 0 = never, null = no bound.",
    )

    @field_validator("age_weight_per_hour")
    @classmethod
    def _age_must_grow(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(
                f"must be greater than 0 (got {value}): without an age term a request could "
                "wait forever behind newer ones"
            )
        return value

    @classmethod
    def first_come_first_served(cls) -> SchedulerConfig:
        """Strict arrival order: no priority, no fair share, no backfill (a baseline)."""
        return cls(
            priority_weight=0.0, fairshare_weight=0.0, age_weight_per_hour=1.0, backfill=False
        )

    def overtaking_horizon_hours(self) -> float:
        """Hours after which a newer request can no longer rank ahead of an older one.

        Priority and fair share together differ by at most ``priority_weight * MAX_PRIORITY /
        PRIORITY_POINTS_DIVISOR + fairshare_weight`` points between two requests; the older
        one gains ``age_weight_per_hour`` points per hour of difference in submission time.
        """
        widest_priority = self.priority_weight * MAX_PRIORITY / PRIORITY_POINTS_DIVISOR
        widest_gap = widest_priority + self.fairshare_weight
        return widest_gap / self.age_weight_per_hour


__all__ = ["MAX_PRIORITY", "PRIORITY_POINTS_DIVISOR", "SchedulerConfig"]
