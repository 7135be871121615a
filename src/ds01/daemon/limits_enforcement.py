"""``LimitsEnforcement``: a user's totals across their containers, written and checked.

Aggregate limits (``aggregate:`` in ``resource-limits.yaml``) are written on the user's
cgroup parent right before a container is created or started there; a changed
configuration is written on the live parents at once; an emptied parent is removed.
Memory is also checked before a create or start: the memory limits of the user's
containers that are not stopped (one that has no limit counts as the whole total) may not
add up to more than the total. The kernel's limit on the parent backs that check up.

State: none of its own (the parents this instance made are in the state store).
Locks: see ``ds01.daemon.context`` for the allocation lock; each method says whether it
runs under it or takes it. Calls: the context only (store, cgroups, events, ``records()``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from ds01.config.loader import Ds01Config
from ds01.config.resolve import ResolvedAggregate
from ds01.core.allocation import equivalents_to_float
from ds01.core.container_resources import memory_total_refusal
from ds01.core.lifecycle import covering_exemption, runtime_limit_hours
from ds01.daemon import disk
from ds01.daemon import schemas as api
from ds01.daemon.context import DaemonContext
from ds01.daemon.views import allocation_state
from ds01.errors import Ds01Error, QuotaExceeded
from ds01.model import labels as L
from ds01.model.units import format_duration
from ds01.runtime.cgroups import (
    AggregateLimits,
    CgroupError,
    slice_unit,
    user_slice_path,
)
from ds01.runtime.docker import CgroupDriver, ContainerRecord
from ds01.runtime.identity import UnixUser, user_by_name

log = logging.getLogger(__name__)

AGGREGATE_ACTION = "resource.aggregate"


def cgroup_parent(group: str, user: str, driver: CgroupDriver) -> str:
    """The per-user cgroup parent, ``/ds01.slice/ds01-<group>.slice/ds01-<group>-<user>.slice``,
    as Docker's ``--cgroup-parent`` takes it for ``driver``."""
    path = user_slice_path(group, user)
    if driver == "systemd":
        return slice_unit(path)  # systemd expands the dashes into the same nesting
    return path


def record_parent(record: ContainerRecord) -> str:
    """The cgroup parent (a path below the cgroup root) a ds01 container was created under:
    its owner's slice, or its Slurm job's cgroup (cluster mode)."""
    return record.labels.get(L.SLURM_CGROUP) or user_slice_path(record.group, record.user)


def own_parent(record: ContainerRecord) -> str | None:
    """The parent ds01 keeps the owner's totals on (its slice): ``None`` for a container in
    its Slurm job's cgroup, which is Slurm's to limit and remove."""
    return None if record.labels.get(L.SLURM_CGROUP) else record_parent(record)


def label_size(record: ContainerRecord, key: str) -> int | None:
    """A byte count a ds01 label holds; ``None`` (unlimited) when empty, absent or invalid."""
    return L.size_of(record.labels, key)


def label_cpus(record: ContainerRecord) -> float | None:
    """The container's CPU limit from its label; ``None`` when unlimited or unknown."""
    return L.cpus_of(record.labels)


def aggregate_limits(aggregate: ResolvedAggregate) -> AggregateLimits:
    """What to write on the user's cgroup parent for these resolved totals."""
    return AggregateLimits(
        cpus=aggregate.cpu_limit,
        memory_bytes=aggregate.memory_limit_bytes,
        pids=aggregate.pids_limit,
    )


class LimitsEnforcement:
    """Writes users' totals on their cgroup parents and checks containers against them
    (see the module docstring for the contract)."""

    def __init__(self, context: DaemonContext) -> None:
        self.context = context

    # -- cgroup parents -----------------------------------------------------------------------

    def enforce(
        self, user: str, parent: str, aggregate: ResolvedAggregate, *, create: bool = True
    ) -> None:
        """Under the allocation lock: write ``aggregate`` on ``parent``. Fails closed when a
        total is set: the error is logged as an event and raised; with no total set, a
        failure is only logged. With ``create``, the parent is recorded as this instance's
        (it, or Docker for one of its containers, makes it now)."""
        ctx = self.context
        if create:
            ctx.store.own_cgroup_parent(parent, ctx.now().isoformat())
        try:
            ctx.cgroups.apply(parent, aggregate_limits(aggregate), create=create)
        except CgroupError as exc:
            ctx.events.emit(
                AGGREGATE_ACTION,
                user=user,
                resource=f"cgroup{parent}",
                details={"limits": aggregate.to_dict(), "error": exc.message},
                outcome="failure",
            )
            if not aggregate.unlimited:
                raise
            log.warning("%s", exc.message)

    def apply_live_aggregates(self, config: Ds01Config, reason: str) -> None:
        """Write each user's totals on every existing parent that holds their containers
        (derived from one list call), e.g. after a configuration change. Fails soft."""
        ctx = self.context
        try:
            records = ctx.records()
        except Ds01Error as exc:
            log.error("aggregate limits not updated: %s", exc.message)
            return
        parents = sorted({(r.user, p) for r in records if r.user and (p := own_parent(r))})
        if not parents:
            return
        updated, failed = 0, []
        for name, parent in parents:
            try:
                aggregate = ctx.aggregate_for(user_by_name(name), config)
                self.enforce(name, parent, aggregate, create=False)
                updated += 1
            except Ds01Error as exc:
                log.error("aggregate limits of %s not updated: %s", name, exc.message)
                failed.append(name)
        ctx.events.emit(
            AGGREGATE_ACTION,
            user="ds01d",
            resource=f"config/{ctx.paths.config_dir}",
            details={"reason": reason, "updated": updated, "failed": failed},
            outcome="failure" if failed else "success",
        )

    def remove_parent_if_unused(self, parent: str) -> None:
        """Takes the allocation lock: remove ``parent`` (and its empty ancestors) if no
        container of ds01 uses it."""
        ctx = self.context
        with ctx.allocation_lock:
            try:
                records = ctx.records()
            except Ds01Error as exc:
                log.warning("cgroup %s left for the next start: %s", parent, exc.message)
                return
            if all(record_parent(r) != parent for r in records):
                self._remove_own_parent(parent)

    def _remove_own_parent(self, parent: str) -> bool:
        """Under the allocation lock: remove ``parent`` if it is empty and forget it once
        gone. The caller has checked that no container uses it."""
        store = self.context.store
        if parent not in store.owned_cgroup_parents():
            return False  # made by an admin or another ds01d on this engine: not ours to remove
        if not self.context.cgroups.remove_if_empty(parent):
            return False
        store.disown_cgroup_parent(parent)
        return True

    def reconcile_cgroups(self) -> list[str]:
        """Takes the allocation lock. At start: write the current totals on the parents that
        hold containers, and remove the empty parents of this instance that no container
        uses. Returns the parents removed."""
        ctx = self.context
        self.apply_live_aggregates(ctx.config(), "ds01d started")
        removed = []
        with ctx.allocation_lock:
            in_use = {record_parent(r) for r in ctx.records()}
            for parent in sorted(ctx.store.owned_cgroup_parents() - in_use):
                if self._remove_own_parent(parent):
                    removed.append(parent)
        return removed

    # -- checks before a create or start --------------------------------------------------------

    def check_memory_total(
        self,
        aggregate: ResolvedAggregate,
        container: str | None,
        memory_bytes: int | None,
        records: Sequence[ContainerRecord],
    ) -> None:
        """Refuse (``QuotaExceeded``) a container whose memory limit does not fit in the
        user's total next to ``records``, the user's containers (those stopped, and
        ``container`` itself, are not counted)."""
        others = [
            (r.name, label_size(r, L.MEMORY_BYTES))
            for r in records
            if r.status != "stopped" and r.name != container
        ]
        problem = memory_total_refusal(
            aggregate.memory_limit_bytes, container, memory_bytes, others
        )
        if problem is not None:
            raise QuotaExceeded(problem)

    def check_disk_total(
        self, uid: int, aggregate: ResolvedAggregate, mine: list[ContainerRecord]
    ) -> None:
        """Refuse (``QuotaExceeded``) a new container of ``uid`` whose containers (``mine``)
        hold their disk total already."""
        over = disk.total_refusal(self.context.status, uid, aggregate.disk_limit_bytes, mine)
        if over is not None:
            raise QuotaExceeded(over)

    def check_runtime_left(self, record: ContainerRecord, owner: UnixUser) -> None:
        """Refuse (``QuotaExceeded``) to start a container that used up ``max_runtime_hours``
        over its runs, unless an exemption covers it: it would be stopped again at once."""
        ctx = self.context
        limit = runtime_limit_hours(
            ctx.limits_for(owner).max_runtime_hours, L.runtime_hours_of(record.labels)
        )
        clock = ctx.store.lifecycle_clocks().get(record.id) if limit is not None else None
        if limit is None or clock is None:
            return
        now = ctx.now()
        ran = clock.runtime(now)
        if ran < timedelta(hours=limit):
            return
        exemptions = [r.exemption() for r in ctx.store.exemptions()]
        if covering_exemption(exemptions, record.user, record.name, now) is not None:
            return
        raise QuotaExceeded(
            f"{record.name} has used up its running time ({format_duration(ran.total_seconds())} "
            f"of {limit:g} h over its runs). Re-create it (`container-remove {record.name}`, then "
            "`container-create`; your /workspace is kept), or ask an admin for an exemption."
        )

    def check_can_start(self, record: ContainerRecord, aggregate: ResolvedAggregate) -> None:
        """Under the allocation lock: the checks of a create that a total changed since
        then can make fail."""
        ctx = self.context
        cpus, total_cpus = label_cpus(record), aggregate.cpu_limit
        # cgroup v1 refuses a container CPU quota above its parent's (v2 takes the lower).
        if (
            ctx.cgroups.version == "v1"
            and cpus is not None
            and total_cpus is not None
            and cpus > total_cpus
        ):
            raise QuotaExceeded(
                f"{record.name} has a limit of {cpus:g} CPUs, more than your CPU total of "
                f"{total_cpus:g} CPUs across all your containers, so it cannot start here. "
                f"Re-create it with --cpus {total_cpus:g} or less."
            )
        if aggregate.memory_limit_bytes is not None:
            mine = [r for r in ctx.records() if r.uid == record.uid]
            memory = label_size(record, L.MEMORY_BYTES)
            self.check_memory_total(aggregate, record.name, memory, mine)
        over = disk.refuse_start(ctx.status, record, aggregate.disk_limit_bytes, ctx.records)
        if over is not None:
            raise QuotaExceeded(over)

    # -- what a user uses -----------------------------------------------------------------------

    def usage_of(
        self, subject: UnixUser, mine: list[ContainerRecord]
    ) -> tuple[api.Usage, api.AggregateUsage]:
        """What ``subject`` uses through ``mine``, their containers: GPU-equivalents and
        containers against their quota, and memory (now, from the cgroup parents; and
        committed, the limits of the containers that are not stopped)."""
        state = allocation_state(mine)
        in_use = state.user_gpu_equivalents(subject.name)
        holding = [label_size(r, L.MEMORY_BYTES) for r in mine if r.status != "stopped"]
        usages = [self.context.cgroups.memory_usage(p) for p in {record_parent(r) for r in mine}]
        known_usages = [u for u in usages if u is not None]
        usage = api.Usage(
            gpu_equivalents=equivalents_to_float(in_use),
            containers=len(mine),
            gpu_containers=sorted(r.name for r in mine if r.gpus),
            borrowed_gpu_equivalents=equivalents_to_float(
                state.user_borrowed_equivalents(subject.name)
            ),
        )
        return usage, api.AggregateUsage(
            memory_bytes=sum(known_usages) if known_usages else None,
            memory_committed_bytes=None
            if None in holding
            else sum(size for size in holding if size is not None),
        )


__all__ = [
    "AGGREGATE_ACTION",
    "LimitsEnforcement",
    "aggregate_limits",
    "cgroup_parent",
    "label_cpus",
    "label_size",
    "record_parent",
]
