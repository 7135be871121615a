"""A lifecycle loop on a virtual clock, for the tests of ``ds01.core.lifecycle`` (no tests
here): samples every interval, observes, decides, records warnings and the stop.

Time here is what a monotonic clock measures; the loop reads a wall clock that may jump
(``wall_jumps``) and takes the jumps out as ds01d's loop does (``PassMark``, ``clock_jump``,
``rebased``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ds01.config.policies import LifecyclePolicy
from ds01.core.lifecycle import (
    ContainerClock,
    Decision,
    LimitsForContainer,
    PassMark,
    Sample,
    Stop,
    Warn,
    clock_jump,
    decide,
    observe,
    rebased,
    warned,
)


@dataclass
class Loop:
    """What a loop saw: every warning sent, and the stop (when, what), on the monotonic
    timeline; the jumps of the wall clock it took out."""

    warnings: list[tuple[datetime, Warn]] = field(default_factory=list)
    stop: tuple[datetime, Stop] | None = None
    last: Decision | None = None
    clock: ContainerClock | None = None
    jumps: list[timedelta] = field(default_factory=list)

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
    wall_jumps: Sequence[tuple[datetime, timedelta]] = (),
) -> Loop:
    """Pass every ``interval`` from ``start`` (the container's start) to ``until``, with
    ``sample_at(now)`` the pass's sample (called once per pass, in order), until a stop.
    At the first pass from ``restart_at`` on, the clock goes through its database row, as
    across a restart of the daemon. At each ``(moment, jump)`` of ``wall_jumps`` the wall
    clock jumps by ``jump``: the loop sees every time (the samples', the keep-alive file's,
    the run's start) as the wall clock showed it then."""
    policy = policy.model_copy(update={"lifecycle_interval_seconds": interval.total_seconds()})

    def wall(moment: datetime) -> datetime:
        return moment + sum((j for t, j in wall_jumps if t <= moment), timedelta(0))

    loop, now, previous = Loop(), start + interval, None
    while now <= until:
        mark = PassMark(wall(now), (now - start).total_seconds(), "one boot")
        jump, previous = clock_jump(previous, mark), mark
        if jump:
            loop.jumps.append(jump)
            loop.clock = None if loop.clock is None else rebased(loop.clock, jump)
        sample = sample_at(now)
        touched = sample.keep_alive_at
        sample = replace(
            sample, at=wall(sample.at), keep_alive_at=None if touched is None else wall(touched)
        )
        loop.clock = observe(loop.clock, sample, running_since=wall(start), policy=policy)
        if restart_at is not None and restart_at <= now < restart_at + interval:
            row = json.loads(json.dumps(loop.clock.to_row()))  # what the state database keeps
            loop.clock = ContainerClock.from_row(row)
        loop.last = decide(loop.clock, wall(now), policy, limits, demand=demand, exemption=None)
        for action in loop.last.actions:
            if isinstance(action, Warn):
                loop.warnings.append((now, action))
                loop.clock = warned(loop.clock, action)
            else:
                loop.stop = (now, action)
                return loop
        now += interval
    return loop
