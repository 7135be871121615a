"""Idle reclaim policies that ``ds01 simulate`` compares, and the reference's idle check.

A simulated job computes for its busy time, then stays allocated and idle until its owner
stops it (the trace's idle tail) or its runtime limit does. Idle reclaim may stop it sooner:

- ``ds01``: ds01's lifecycle (:func:`ds01.core.lifecycle.decide`, applied by
  :mod:`ds01.sim.engine`): the stop comes exactly when the idle time reaches the user's
  ``idle_timeout_hours``, multiplied by ``demand_idle_factor`` while requests wait for
  devices, and never within ``idle_grace_minutes`` of the start.
- ``none``: nothing is reclaimed; the whole idle tail is held.
- ``reference``: the reference implementation's hourly check (:func:`reference_check`).

The reference (``reference/ds01-infra.md`` §5a, keys in §2b ``policies:``) checks every
running container once an hour, at minute 20, skipping containers younger than its 30-minute
grace period. A check that finds the container active sets its ``LAST_ACTIVITY`` to the
check's time and its idle streak to 0; a check that finds it idle adds one to the streak.
The container is stopped at a check where the streak has reached ``idle_detection_window``
(3) *and* the idle time, counted from ``LAST_ACTIVITY`` (or the start), has reached the
owner's idle timeout, halved in "high demand" (at least 80 % of the GPUs allocated). So an
idle tail is held for 2 to 3 hours at least, whatever the timeout: the three checks come
an hour apart, and the first may come just after the job went idle.

This module imports only the standard library: the ``ds01 simulate`` parser, built at every
start of ``ds01``, takes its choices from :data:`RECLAIMS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ds01.sim.names import RECLAIMS

if TYPE_CHECKING:
    pass

#: The reference's idle check runs hourly at minute 20 (its cron.d entry, §1c and §5a).
REFERENCE_CHECK_PERIOD_HOURS = 1.0
REFERENCE_CHECK_MINUTE = 20
#: Consecutive idle checks before a stop (``idle_detection_window``, §2b).
REFERENCE_WINDOW_CHECKS = 3
#: Containers younger than this are not checked (``grace_period_m``, §2b).
REFERENCE_GRACE_HOURS = 0.5
#: "High demand": at least this fraction of the GPUs allocated (``high_demand_threshold``).
REFERENCE_HIGH_DEMAND_FRACTION = 0.8
#: The idle timeout is multiplied by this in high demand (``high_demand_idle_reduction``).
REFERENCE_HIGH_DEMAND_FACTOR = 0.5


def reference_first_check(start_hours: float) -> float:
    """The first check, in trace hours, that sees a container started at ``start_hours``:
    the first minute-20 mark at or after the end of its grace period (trace hour 0 is
    midnight)."""
    offset = REFERENCE_CHECK_MINUTE / 60
    earliest = start_hours + REFERENCE_GRACE_HOURS - offset
    return (
        math.ceil(earliest / REFERENCE_CHECK_PERIOD_HOURS) * REFERENCE_CHECK_PERIOD_HOURS + offset
    )


@dataclass(frozen=True)
class ReferenceIdleState:
    """What the reference keeps per container between checks (its ``.state`` file).

    Attributes:
        last_activity_hours: ``LAST_ACTIVITY``: the last check that found it active, or its
            start, in trace hours.
        streak: consecutive checks that found it idle.
    """

    last_activity_hours: float
    streak: int = 0


def reference_check(
    state: ReferenceIdleState,
    check_hours: float,
    busy_until_hours: float,
    idle_timeout_hours: float | None,
    high_demand: bool,
) -> tuple[ReferenceIdleState, bool]:
    """One hourly check of a container that computes until ``busy_until_hours``.

    Returns the new state and whether the check stops the container. A ``None`` timeout
    means the owner is exempt (never stopped).
    """
    if check_hours < busy_until_hours:
        return ReferenceIdleState(last_activity_hours=check_hours), False
    state = ReferenceIdleState(state.last_activity_hours, state.streak + 1)
    if idle_timeout_hours is None:
        return state, False
    timeout = idle_timeout_hours * (REFERENCE_HIGH_DEMAND_FACTOR if high_demand else 1.0)
    idle = check_hours - state.last_activity_hours
    return state, state.streak >= REFERENCE_WINDOW_CHECKS and idle >= timeout


__all__ = [
    "RECLAIMS",
    "REFERENCE_CHECK_MINUTE",
    "REFERENCE_CHECK_PERIOD_HOURS",
    "REFERENCE_GRACE_HOURS",
    "REFERENCE_HIGH_DEMAND_FACTOR",
    "REFERENCE_HIGH_DEMAND_FRACTION",
    "REFERENCE_WINDOW_CHECKS",
    "ReferenceIdleState",
    "reference_check",
    "reference_first_check",
]
