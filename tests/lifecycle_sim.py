"""A lifecycle loop on a virtual clock, for the tests of ``ds01.core.lifecycle`` (no tests
here): samples every interval, observes, decides, records warnings and the stop."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ds01.config.policies import LifecyclePolicy
from ds01.core.lifecycle import (
    ContainerClock,
    Decision,
    LimitsForContainer,
    Sample,
    Stop,
    Warn,
    decide,
    observe,
    warned,
)


@dataclass
class Loop:
    """What a loop saw: every warning sent, and the stop (when, what)."""

    warnings: list[tuple[datetime, Warn]] = field(default_factory=list)
    stop: tuple[datetime, Stop] | None = None
    last: Decision | None = None
    clock: ContainerClock | None = None

    @property
    def stopped_at(self) -> datetime | None:
        return None if self.stop is None else self.stop[0]


def simulate(
    start: datetime,
    interval: timedelta,
    until: datetime,
    sample_at: Callable[[datetime], Sample],
    *,
    policy: LifecyclePolicy,
    limits: LimitsForContainer,
    demand: bool = False,
    restart_at: datetime | None = None,
) -> Loop:
    """Pass every ``interval`` from ``start`` (the container's start) to ``until``, with
    ``sample_at(now)`` the pass's sample (called once per pass, in order), until a stop.
    At the first pass from ``restart_at`` on, the clock goes through its database row, as
    across a restart of the daemon."""
    policy = policy.model_copy(update={"lifecycle_interval_seconds": interval.total_seconds()})
    loop, now = Loop(), start + interval
    while now <= until:
        loop.clock = observe(loop.clock, sample_at(now), running_since=start, policy=policy)
        if restart_at is not None and restart_at <= now < restart_at + interval:
            row = json.loads(json.dumps(loop.clock.to_row()))  # what the state database keeps
            loop.clock = ContainerClock.from_row(row)
        loop.last = decide(loop.clock, now, policy, limits, demand=demand, exemption=None)
        for action in loop.last.actions:
            if isinstance(action, Warn):
                loop.warnings.append((now, action))
                loop.clock = warned(loop.clock, action)
            else:
                loop.stop = (now, action)
                return loop
        now += interval
    return loop
