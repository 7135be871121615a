"""The GPU use watch of ds01d: processes on the GPUs outside ds01's allocation.

Every ``interval`` seconds (``ds01d --gpu-use-interval``, 15 s by default) one pass asks the
backend for every process on every device (one call), reads each one's
``/proc/<pid>/cgroup`` and owner, and lets ``ds01.core.gpu_use`` decide which are outside
ds01's allocation, against the holders in the ledger: a host process (a user's shell
running CUDA, possible while ``/dev/nvidia*`` are open to everyone: ``ds01 admin doctor``),
a ds01 container on a device it does not hold, a container ds01 did not make.

The result replaces ``DaemonStatus.unmanaged_gpu_use`` (``gpu-status``, the dashboard, the
exporter's ``ds01_gpu_unmanaged_processes``). Each use is logged once in the audit log as
``gpu.unmanaged_use`` when first seen (not at every pass); a pid that went away is
forgotten, so a later process with that pid is reported again. A backend that cannot list
processes (no driver) leaves the list empty.

State: the keys reported so far (in memory: after a restart of ds01d, uses still going on
are reported once more). Locks: none taken (observation; nothing is decided).
"""

from __future__ import annotations

import logging

from ds01.core.gpu_use import (
    UNMANAGED_USE_ACTION,
    ContainerHolding,
    ProcessFacts,
    UnmanagedUse,
    new_uses,
    unmanaged_uses,
)
from ds01.daemon.periodic import PeriodicPass
from ds01.daemon.service import Ds01Service
from ds01.runtime.procfs import process_cgroup, process_user

log = logging.getLogger(__name__)

#: Seconds between two passes unless ``ds01d --gpu-use-interval`` says otherwise.
DEFAULT_INTERVAL_SECONDS = 15.0


class GpuUseWatch(PeriodicPass):
    """Finds GPU use outside ds01's allocation (see the module docstring)."""

    thread_name = "ds01-gpu-use"
    work_name = "GPU use pass"
    check_name = "gpu-use"
    consequence = "GPU use outside ds01 is not detected"

    def __init__(
        self, service: Ds01Service, *, interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    ) -> None:
        self.service = service
        self._interval = interval_seconds
        self._reported: frozenset[tuple[str, int]] = frozenset()
        super().__init__()

    def run_pass(self) -> list[UnmanagedUse]:
        """One look at the GPUs' processes; returns the uses outside the allocation."""
        service = self.service
        processes = service.backend.processes() or []
        holdings = {
            r.id: ContainerHolding(r.id, r.name, r.user, frozenset(r.gpus))
            for r in service.records()
        }
        facts = [
            ProcessFacts(p.device_uuid, p.pid, process_cgroup(p.pid), process_user(p.pid))
            for p in processes
        ]
        uses = unmanaged_uses(facts, holdings)
        service.status.unmanaged_gpu_use = tuple(uses)
        fresh, self._reported = new_uses(uses, self._reported)
        for use in fresh:
            self._report(use)
        return uses

    def _report(self, use: UnmanagedUse) -> None:
        where = {
            "host": "a host process (in no container)",
            "not-held": f"container {use.container} of {use.container_user}, which does not "
            "hold it",
            "other-container": f"container {(use.container_id or '')[:12]}, not made by ds01",
        }[use.reason]
        log.warning(
            "GPU use outside ds01: pid %d of %s on %s: %s",
            use.pid,
            use.user or "?",
            use.device_uuid,
            where,
        )
        self.service.events.emit(
            UNMANAGED_USE_ACTION,
            user=use.user or "?",
            resource=f"gpu/{use.device_uuid}",
            details={
                "pid": use.pid,
                "reason": use.reason,
                "container": use.container,
                "container_id": use.container_id,
                "container_user": use.container_user,
            },
        )

    def interval_seconds(self) -> float:
        return self._interval


__all__ = ["DEFAULT_INTERVAL_SECONDS", "UNMANAGED_USE_ACTION", "GpuUseWatch"]
