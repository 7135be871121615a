"""Disk limits in ds01d: the host's mode, the meter that measures, the watch that warns and
stops (decisions in ``ds01.core.disk``).

- ``detect_storage`` (once, at start): whether Docker's storage driver caps a container's
  writable layer (``--storage-opt size=``), from ``docker info`` and a probe container. In
  ``enforced`` mode every container is created with its disk limit as that size.
- ``DiskMeter`` (a thread of its own, every ``lifecycle_interval_seconds`` at most, and idle
  for at least ``IDLE_FACTOR`` times as long as its last round took): measures what each
  managed container holds outside its bind mounts (its overlay2 ``UpperDir`` and its
  volumes, walked by ``runtime.diskusage`` without following any link; the Engine's
  ``SizeRw`` for other storage drivers). A running container is measured every round, a
  stopped one once (it cannot write). The walks run outside the lifecycle pass: a big layer
  costs the meter time, never the pass (budget: a pass over 300 containers ≤ 1 s).
- ``DiskWatch`` (called by each lifecycle pass): compares the latest measurements with each
  container's limit (its ``ds01.disk_bytes`` label) and each user's total
  (``aggregate.disk_limit``): a warning, then a stop (``cleanup.disk``) when the use stays
  over the limit for ``disk_grace_minutes``. In enforced mode the driver caps the layer, so
  a container's own check counts only its volumes; the total counts everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ds01.config.resolve import resolve_policy
from ds01.core.disk import (
    DiskClock,
    DiskStop,
    DiskWarn,
    Mode,
    decide_disk,
    driver_can_enforce,
    human_bytes,
    start_refusal,
)
from ds01.daemon import schemas as api
from ds01.daemon.periodic import PeriodicPass
from ds01.errors import Ds01Error
from ds01.model import labels as L
from ds01.runtime.diskusage import tree_usage
from ds01.runtime.docker import ContainerRecord, DockerRuntime, EngineInfo

if TYPE_CHECKING:
    from ds01.daemon.service import Ds01Service
    from ds01.daemon.status import DaemonStatus

log = logging.getLogger(__name__)

#: The size the probe container asks for (any size the driver accepts would do).
PROBE_SIZE_BYTES = 20 * 1024**3
#: After a round of measurements, the meter waits at least this many times as long as the
#: round took: it uses at most a fifth of one CPU, however big the layers are.
IDLE_FACTOR = 4.0


@dataclass(frozen=True)
class StorageMode:
    """How disk limits hold on this host.

    Attributes:
        mode: ``enforced`` (the storage driver caps each container's layer) or ``measured``
            (the lifecycle loop measures, warns and stops).
        driver: Docker's storage driver; ``backing_filesystem``: the filesystem under it.
        reason: why, in one sentence (for ``admin doctor`` and ``check-limits``).
    """

    mode: Mode
    driver: str
    backing_filesystem: str | None
    reason: str


#: The mode until ``detect_storage`` ran: nothing is given to the storage driver.
UNDETECTED = StorageMode("measured", "", None, "the storage driver was not asked yet")


def detect_storage(runtime: DockerRuntime, engine: EngineInfo) -> StorageMode:
    """The host's mode: from the storage driver in the engine's info (``engine``, read at
    start), then, where the driver may cap a container's size, a probe container (created
    with ``--storage-opt size=`` and removed, never started). Any doubt gives ``measured``."""
    driver, backing = engine.storage_driver, engine.backing_filesystem
    capable, why = driver_can_enforce(driver, backing)
    if not capable:
        return StorageMode("measured", driver, backing, why)
    try:
        images = sorted(runtime.local_image_tags())
        refused = (
            runtime.probe_storage_size(images[0], PROBE_SIZE_BYTES)
            if images
            else "no local image to probe it with"
        )
    except Ds01Error as exc:
        refused = exc.message
    if refused is not None:
        return StorageMode(
            "measured", driver, backing, f"{why}, but a probe container was refused: {refused}"
        )
    return StorageMode("enforced", driver, backing, f"{why}; a probe container confirmed it")


@dataclass(frozen=True)
class DiskUse:
    """What one container holds outside its bind mounts, at one measurement.

    ``layer_bytes``: its writable layer; ``volume_bytes``: its volumes; ``complete``: the
    walk saw the whole trees (``False``: part changed under it).
    """

    layer_bytes: int
    volume_bytes: int
    at: datetime
    status: str
    complete: bool = True

    @property
    def bytes(self) -> int:
        return self.layer_bytes + self.volume_bytes


class DiskMeter(PeriodicPass):
    """Measures every managed container's disk use in a thread of its own (module
    docstring). ``usage`` (container id → ``DiskUse``) is replaced whole after each round,
    so readers never see a half-made map."""

    thread_name = "ds01-disk"
    work_name = "disk measurement"
    check_name = "disk-meter"
    consequence = "containers' disk use is not measured"

    def __init__(self, service: Ds01Service, clock: Callable[[], datetime]) -> None:
        super().__init__()
        self.service = service
        self._clock = clock
        self._sources: dict[str, tuple[str | None, tuple[str, ...]]] = {}
        self._round_seconds = 0.0
        self.usage: dict[str, DiskUse] = {}

    def run_pass(self) -> dict[str, DiskUse]:
        began = time.monotonic()
        records = self.service.records()
        usage = dict(self.usage)
        for record in records:
            known = usage.get(record.id)
            if known is not None and record.status != "running" and known.status == record.status:
                continue  # not running: it has not written since it was measured so
            measured = self.measure(record)
            if measured is not None:
                usage[record.id] = measured
        ids = {r.id for r in records}
        self._sources = {k: v for k, v in self._sources.items() if k in ids}
        self.usage = {k: v for k, v in usage.items() if k in ids}
        self.service.status.disk_usage = self.usage
        self._round_seconds = time.monotonic() - began
        return self.usage

    def measure(self, record: ContainerRecord) -> DiskUse | None:
        """One container's use now; ``None`` when it is gone or cannot be read (fails soft)."""
        runtime = self.service.runtime
        try:
            if record.id not in self._sources:
                self._sources[record.id] = runtime.disk_sources(record.id)
            upper, volumes = self._sources[record.id]
            layer_complete = True
            if upper is not None:
                layer = tree_usage([upper])
                layer_bytes, layer_complete = layer.bytes, layer.complete
            else:
                layer_bytes = runtime.writable_layer_bytes(record.id) or 0
        except Ds01Error as exc:
            log.debug("disk use of %s not measured: %s", record.docker_name, exc.message)
            return None
        in_volumes = tree_usage(volumes)
        return DiskUse(
            layer_bytes=layer_bytes,
            volume_bytes=in_volumes.bytes,
            at=self._clock(),
            status=record.status,
            complete=layer_complete and in_volumes.complete,
        )

    def interval_seconds(self) -> float:
        interval = self.service.config().limits.policies.lifecycle_interval_seconds
        return max(interval, IDLE_FACTOR * self._round_seconds)


def container_limit_bytes(record: ContainerRecord) -> int | None:
    """The container's disk limit from its ``ds01.disk_bytes`` label; ``None``: none."""
    text = record.labels.get(L.DISK_BYTES, "")
    return int(text) if text.isdigit() else None


def checked_bytes(use: DiskUse, mode: Mode) -> int:
    """What a container's own limit is compared with: everything it holds, or only its
    volumes where the storage driver caps its layer."""
    return use.volume_bytes if mode == "enforced" else use.bytes


def user_total(records: list[ContainerRecord], usage: dict[str, DiskUse], uid: int) -> int | None:
    """What ``uid``'s containers hold together; ``None`` while one of them is unmeasured."""
    uses = [usage.get(r.id) for r in records if r.uid == uid]
    if any(u is None for u in uses):
        return None
    return sum(u.bytes for u in uses if u is not None)


def refuse_start(
    status: DaemonStatus,
    record: ContainerRecord,
    total_limit: int | None,
    records: Callable[[], list[ContainerRecord]],
) -> str | None:
    """Why ``record`` may not start for its disk use or its owner's total (``total_limit``);
    ``None``: it may. ``records`` (a list call) is asked only when a total is set."""
    usage = status.disk_usage
    use = usage.get(record.id)
    own = None if use is None else checked_bytes(use, status.storage.mode)
    total = user_total(records(), usage, record.uid) if total_limit is not None else None
    return start_refusal(record.name, own, container_limit_bytes(record), total, total_limit)


def total_refusal(
    status: DaemonStatus, uid: int, limit_bytes: int | None, records: list[ContainerRecord]
) -> str | None:
    """Why ``uid`` may not create a container: their containers' total is at or over
    ``limit_bytes``; ``None``: it may."""
    if limit_bytes is None:
        return None
    total = user_total(records, status.disk_usage, uid)
    if total is None or total < limit_bytes:
        return None
    return (
        f"Your containers hold {human_bytes(total)} of disk together, at or above your disk "
        f"total of {human_bytes(limit_bytes)}: no new container until you remove one "
        "(`container-list` shows each one's disk use; /workspace is kept)."
    )


def with_disk(
    info: api.ContainerInfo, record: ContainerRecord, usage: dict[str, DiskUse]
) -> api.ContainerInfo:
    """``info`` with its disk limit and, where measured, its use (``container-list``)."""
    use = usage.get(record.id)
    limit = container_limit_bytes(record)
    if use is None and limit is None:
        return info
    return info.model_copy(
        update={"disk_bytes": None if use is None else use.bytes, "disk_limit_bytes": limit}
    )


def with_disk_usage(
    usage: api.AggregateUsage, mine: list[ContainerRecord], status: DaemonStatus
) -> api.AggregateUsage:
    """``usage`` with what ``mine`` (one user's containers) hold on disk (``check-limits``)."""
    measured = status.disk_usage
    mode = status.storage
    uid = mine[0].uid if mine else -1
    return usage.model_copy(
        update={
            "disk_bytes": user_total(mine, measured, uid) if mine else 0,
            "disk_by_container": {r.name: measured[r.id].bytes for r in mine if r.id in measured},
            "disk_mode": f"{mode.mode}: {mode.reason}",
        }
    )


#: Tells the owner of a container a message (terminals, notice file, webhook).
Tell = Callable[[ContainerRecord, Any, str], None]


class DiskWatch:
    """The disk limits' warnings and stops, for the lifecycle loop (module docstring).

    Clocks live in memory: after a restart of ds01d a container over its limit gets its
    warning and its grace again.
    """

    def __init__(self, service: Ds01Service) -> None:
        self.service = service
        self._clocks: dict[str, DiskClock] = {}
        self._totals: dict[int, DiskClock] = {}
        self._lock = threading.Lock()

    def run(
        self,
        records: list[ContainerRecord],
        owners: dict[int, Any],
        rows: list[api.LifecycleStatus],
        now: datetime,
        dry_run: bool,
        tell: Tell,
    ) -> list[api.LifecycleStatus]:
        """One pass: warn and stop (unless ``dry_run``); returns ``rows`` with what was done
        added to each container's actions. ``owners``: uid → the loop's owner (``.user``),
        ``None`` for owners it skips."""
        with self._lock:
            service = self.service
            usage, mode = service.status.disk_usage, service.status.storage.mode
            config = service.config().limits
            stopped = {r.container_id for r in rows if any(a.startswith("stop") for a in r.actions)}
            done: dict[str, list[str]] = {}
            clocks: dict[str, DiskClock] = {}
            totals: dict[int, DiskClock] = {}
            for uid in sorted({r.uid for r in records}):
                owner = owners.get(uid)
                if owner is None:
                    continue
                policy = resolve_policy(config, owner.user.name, owner.user.groups)
                grace = timedelta(minutes=policy.disk_grace_minutes)
                mine = [r for r in records if r.uid == uid]
                running = [r for r in mine if r.status == "running" and r.id not in stopped]
                for record in mine:
                    use = usage.get(record.id)
                    clock, action = decide_disk(
                        self._clocks.get(record.id, DiskClock()),
                        None if use is None else checked_bytes(use, mode),
                        container_limit_bytes(record),
                        now,
                        warning_fraction=policy.disk_warning_fraction,
                        grace=grace,
                        running=record in running,
                        scope="container",
                    )
                    clocks[record.id] = clock
                    if action is not None:
                        done.setdefault(record.id, []).append(
                            self._act(record, owner, action, dry_run, tell)
                        )
                        if isinstance(action, DiskStop) and not dry_run:
                            running.remove(record)
                limit = service.aggregate_for(owner.user).disk_limit_bytes
                clock, action = decide_disk(
                    self._totals.get(uid, DiskClock()),
                    user_total(records, usage, uid),
                    limit,
                    now,
                    warning_fraction=policy.disk_warning_fraction,
                    grace=grace,
                    running=bool(running),
                    scope="total",
                )
                totals[uid] = clock
                if action is not None:
                    for record in running:
                        done.setdefault(record.id, []).append(
                            self._act(record, owner, action, dry_run, tell)
                        )
            if not dry_run:
                self._clocks, self._totals = clocks, totals
            return [_with_actions(row, done.get(row.container_id, [])) for row in rows] + [
                api.LifecycleStatus(
                    container_id=r.id,
                    name=r.name,
                    user=r.user,
                    status=r.status,
                    reason="Disk limit.",
                    actions=done[r.id],
                )
                for r in records
                if r.id in done and r.id not in {row.container_id for row in rows}
            ]

    def _act(
        self,
        record: ContainerRecord,
        owner: Any,
        action: DiskWarn | DiskStop,
        dry_run: bool,
        tell: Tell,
    ) -> str:
        """Send ``action`` about ``record`` (unless ``dry_run``); what was done, in words."""
        events = self.service.events
        resource = f"container/{record.docker_name}"
        kind = "disk" if action.scope == "container" else "disk_total"
        if isinstance(action, DiskWarn):
            stop = "" if action.stop_at is None else f", stop at {_when(action.stop_at)}"
            text = f"warn: {kind} {action.describe()}{stop}"
            if dry_run:
                return text
            events.emit(
                "lifecycle.warn",
                user=record.user,
                resource=resource,
                details={
                    "kind": kind,
                    "level": action.level,
                    "used_bytes": action.used_bytes,
                    "limit_bytes": action.limit_bytes,
                    "stop_at": None if action.stop_at is None else _when(action.stop_at),
                },
            )
            subject = (
                f"your container {record.name!r}"
                if action.scope == "container"
                else f"your containers (this one: {record.name!r})"
            )
            then = (
                f"It will be stopped at {_when(action.stop_at)} unless you delete files first."
                if action.stop_at is not None
                else "It is stopped if the use goes over the limit."
            )
            tell(record, owner, f"ds01: {subject} {action.describe()}. {then} {_DISK_HINT}")
            return text
        text = f"stop: {action.reason}."
        if dry_run:
            return text
        try:
            self.service.containers.stop_by_daemon(record, reason=action.reason, cause="disk")
        except Ds01Error as exc:
            log.error("could not stop %s for its disk use: %s", record.docker_name, exc.message)
            return f"stop failed: {exc.message}"
        events.emit(
            "cleanup.disk",
            user=record.user,
            resource=resource,
            details={
                "reason": action.reason,
                "scope": action.scope,
                "used_bytes": action.used_bytes,
                "limit_bytes": action.limit_bytes,
            },
        )
        tell(
            record,
            owner,
            f"ds01: your container {record.name!r} was stopped: {action.reason}. It cannot "
            f"start again while over: `container-remove {record.name}` (your /workspace is "
            "kept) frees its space. " + _DISK_HINT,
        )
        return text


_DISK_HINT = (
    "Keep large files in /workspace: what a container writes elsewhere (/, /tmp, /root) "
    "counts against disk_limit."
)


def _with_actions(row: api.LifecycleStatus, actions: list[str]) -> api.LifecycleStatus:
    if not actions:
        return row
    return row.model_copy(update={"actions": [*row.actions, *actions]})


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


__all__ = [
    "UNDETECTED",
    "DiskMeter",
    "DiskUse",
    "DiskWatch",
    "StorageMode",
    "checked_bytes",
    "container_limit_bytes",
    "detect_storage",
    "refuse_start",
    "total_refusal",
    "user_total",
    "with_disk",
    "with_disk_usage",
]
