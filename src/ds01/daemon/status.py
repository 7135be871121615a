"""``DaemonStatus``: what ds01d's loops last found, for the requests that show it.

ds01d's ``main`` owns one ``DaemonStatus`` and hands it to the service (``context.status``)
and to each loop. Every field has exactly one writer, named next to it; everyone else only
reads. A field is replaced whole (never mutated in place), so a reader sees either the old
or the new value without a lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ds01.daemon import schemas as api
from ds01.daemon.disk import UNDETECTED, DiskUse, StorageMode
from ds01.daemon.health import LoopRegistry

if TYPE_CHECKING:
    from ds01.core.gpu_use import UnmanagedUse
    from ds01.core.scheduler import Plan

#: ``ds01 maintenance run``: one lifecycle pass (``True``: dry run).
LifecyclePass = Callable[[bool], api.MaintenanceReport]


@dataclass
class DaemonStatus:
    """The loops' latest word. Writers (one per field):

    - ``queue_plan``, ``queue_reserved``: the queue dispatcher, after each pass
      (``publish_queue_pass``). ``queue_reserved`` are the free devices the queue holds for
      its head: nobody else may be given them.
    - ``lifecycle_status``, ``lifecycle_last_pass``: the lifecycle loop, after each pass
      that is not a dry run (``publish_lifecycle_pass``).
    - ``lifecycle_pass``: ``main``, once the lifecycle loop exists.
    - ``storage``: ds01d's start, once, in its settling thread before the sockets are bound
      (the host's disk-limit mode; ``ds01.daemon.run``).
    - ``disk_usage``: the disk meter, after each round of measurements.
    - ``unmanaged_gpu_use``: the GPU use watch, after each pass: processes on the GPUs
      outside ds01's allocation (``ds01.core.gpu_use``).
    - ``loops``: ``main`` adds each background loop's tracker at start.
    - ``started_at``: set once, when the service is made.
    """

    started_at: datetime
    queue_plan: Plan | None = None
    queue_reserved: frozenset[str] = frozenset()
    lifecycle_status: dict[str, api.LifecycleStatus] = field(default_factory=dict)
    lifecycle_last_pass: datetime | None = None
    lifecycle_pass: LifecyclePass | None = None
    storage: StorageMode = UNDETECTED
    disk_usage: dict[str, DiskUse] = field(default_factory=dict)
    unmanaged_gpu_use: tuple[UnmanagedUse, ...] = ()
    loops: LoopRegistry = field(default_factory=LoopRegistry)

    def publish_queue_pass(self, plan: Plan) -> None:
        """The dispatcher's pass result: the plan and the devices reserved for its head."""
        self.queue_plan = plan
        self.queue_reserved = frozenset(plan.reservation.devices if plan.reservation else ())

    def publish_lifecycle_pass(
        self, rows: dict[str, api.LifecycleStatus], finished_at: datetime
    ) -> None:
        """The lifecycle loop's decisions by container id, and when that pass ran."""
        self.lifecycle_status = rows
        self.lifecycle_last_pass = finished_at


__all__ = ["DaemonStatus", "LifecyclePass"]
