"""The lifecycle loop of ds01d: idle and runtime limits that warn, then stop; cleanup.

Every ``lifecycle_interval_seconds`` (the top of ``policies:``), one *pass*
(``LifecycleLoop.run_pass``) goes over every managed container, from one Docker list call:

- **running**: a ``Sample`` (``daemon.sampler``) is folded into the container's clock
  (``core.lifecycle.observe``), then ``core.lifecycle.decide`` says what is due under the
  owner's policy and limits, the queue's demand and any exemption. A ``Warn`` is sent to the
  owner's terminals, as a notice file in the workspace (``/workspace/.ds01-notice``), as a
  ``lifecycle.warn`` event and to the admin's webhook; a ``Stop`` stops the container
  (``cleanup.idle`` or ``cleanup.runtime``) and tells the owner the same ways.
- **reserved devices** (``daemon.reservations.ReservationWatch``): the phases of
  reservations are announced, and containers in the way of one are warned
  ``reservations.warning_minutes`` before its start and stopped at it (``cleanup.reservation``);
  a holder's containers over quota without the reservation, before and at its end. The
  loop waits less than its interval when such a step falls due sooner
  (``LifecycleLoop.wait_seconds``), so a warning, a start (its drain, its slots' slices
  made) and an end are taken at their moment, not up to an interval late.
- **stopped**: its run is closed in the clock (runtime survives restarts); a container
  stopped for longer than ``container_hold_after_stop_hours`` is removed, and one created
  but never started for ``created_unstarted_minutes`` too (``cleanup.orphan``), each with its
  devices, its kept image and its empty cgroup parent.

Every pass also records each running container's GPU activity since its previous sample
(``gpu_activity`` table: GPU-equivalent seconds with a utilisation reading, and the same
weighted by it), the "GPU-hours used" of ``ds01 admin report``.

Clocks are kept in SQLite (``lifecycle`` table), so a restarted daemon continues every
countdown where it was.

**Jumps of the wall clock.** Each pass is noted on the wall clock and on the host's
monotonic clock (``core.lifecycle.PassMark``, kept in the store with the host's boot id).
When the wall clock moved more or less than the monotonic one since the last pass, by a
second or more, every clock is moved by the difference before anything is observed
(``core.lifecycle.rebased``): idle time and runtime grow by the time that passed, never by
the jump, so a jump stops no container, and a stopped container's hold is counted likewise.
A jump of a minute or more is reported once: a ``clock.jump`` event and one log line. The
same holds across a restart of ds01d on the same boot of the host (the monotonic clock runs
on meanwhile); after a reboot every run is new anyway.

``ds01 maintenance run [--dry-run]`` runs the same pass on demand and shows what it did, or
would do, and why. The last pass's decisions feed ``container-list`` (idle for, stop time,
reason).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from ds01.config.policies import LifecyclePolicy
from ds01.config.resolve import resolve_policy
from ds01.core.event_query import DAEMON_USER
from ds01.core.lifecycle import (
    CLOCK_JUMP_REPORTED,
    ContainerClock,
    Decision,
    Exemption,
    LimitsForContainer,
    PassMark,
    Stop,
    Warn,
    cleanup_created,
    cleanup_stopped,
    clock_jump,
    covering_exemption,
    decide,
    observe,
    rebased,
    runtime_limit_hours,
    stopped,
    warned,
)
from ds01.daemon import schemas as api
from ds01.daemon.access import resource_of
from ds01.daemon.disk import DiskWatch
from ds01.daemon.dispatcher import USAGE_HALF_LIVES_KEPT
from ds01.daemon.limits_enforcement import record_parent
from ds01.daemon.periodic import PeriodicPass
from ds01.daemon.reservations import ReservationWatch
from ds01.daemon.sampler import Sampler, workspace_of
from ds01.daemon.service import Ds01Service
from ds01.daemon.views import users_waiting_for_devices
from ds01.errors import Ds01Error
from ds01.events.log import utc_now
from ds01.gpu.backend import DeviceTelemetry
from ds01.model.labels import runtime_hours_of
from ds01.model.units import format_duration
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser, user_by_uid
from ds01.runtime.notify import NOTICE_FILE, post_webhook, write_notice
from ds01.runtime.procfs import boot_id
from ds01.runtime.store import GpuActivity
from ds01.runtime.userfs import UserIds

log = logging.getLogger(__name__)

#: Seconds between two looks for kept images whose container is gone (an image list).
KEPT_IMAGES_EVERY_SECONDS = 600.0


@dataclass(frozen=True)
class _Owner:
    user: UnixUser
    policy: LifecyclePolicy
    limits: LimitsForContainer


class LifecycleLoop(PeriodicPass):
    """Runs lifecycle passes in a thread of ds01d (see the module docstring).

    Args:
        service: the daemon's service (Docker, store, events, config).
        sampler: takes the samples.
        clock: the current UTC time (the wall clock).
        monotonic: seconds on a clock that never jumps (the host's monotonic clock).
        boot: the host's boot id, within which ``monotonic`` readings compare.
    """

    thread_name = "ds01-lifecycle"
    work_name = "lifecycle pass"
    check_name = "lifecycle"
    consequence = "idle and over-long containers are not reclaimed"

    def __init__(
        self,
        service: Ds01Service,
        sampler: Sampler,
        *,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        boot: Callable[[], str] = boot_id,
    ) -> None:
        self.service = service
        self.sampler = sampler
        self._clock = clock
        self._monotonic = monotonic
        self._boot = boot()
        self._pass_lock = threading.Lock()
        self.disk = DiskWatch(service)  # disk limits: warned and stopped in the same pass
        self.reservations = ReservationWatch(  # reserved devices: warned, then drained
            service,
            stop=lambda record, reason: service.containers.stop_by_daemon(
                record, reason=reason, cause="reservation"
            ),
            release=lambda record, now, reason: service.queue_desk.release_devices(
                record, now, held_minutes=0, reason=reason
            ),
            slices=service.mig_on_demand,
        )
        super().__init__(wake=service.lifecycle_condition)
        self._activity_hour: datetime | None = None
        self._kept_images_at: float | None = None

    # -- one pass ------------------------------------------------------------------------------

    def run_pass(self, *, dry_run: bool = False) -> api.MaintenanceReport:
        """One pass over every managed container; with ``dry_run`` nothing is changed."""
        with self._pass_lock:
            return self._pass(dry_run)

    def _pass(self, dry_run: bool) -> api.MaintenanceReport:
        service, store = self.service, self.service.store
        now = self._clock()
        mark = PassMark(now, self._monotonic(), self._boot)
        records = service.records()
        clocks = self._clocks_without_jump(mark, dry_run)
        telemetry = Sampler.telemetry(service.backend, records)
        exemptions = [r.exemption() for r in store.exemptions()]
        waiting = users_waiting_for_devices(service)
        owners: dict[int, _Owner | None] = {}
        rows: list[api.LifecycleStatus] = []
        for record in records:
            owner = owners.get(record.uid) if record.uid in owners else self._owner(record, owners)
            if owner is None:
                continue
            if record.status == "running":
                demand = bool(waiting - {record.user})  # others wait, not only its owner
                status = self._running(
                    record, owner, clocks, telemetry, exemptions, demand, now, dry_run
                )
            else:
                status = self._not_running(record, owner, clocks, now, dry_run)
            if status is not None:
                rows.append(status)
        rows = self.disk.run(records, owners, rows, now, dry_run, self._tell)
        drained = self.reservations.run(records, owners, now, dry_run, self._tell)
        for row in rows:
            row.actions.extend(drained.get(row.container_id, ()))
        if not dry_run:
            self._record_activity(records, clocks, telemetry, now)
            store.forget_lifecycle_clocks(set(clocks) - {r.id for r in records})
            store.forget_exemptions(now.isoformat(timespec="seconds"))
            service.status.publish_lifecycle_pass({row.container_id: row for row in rows}, now)
            self._remove_unused_kept_images()
        return api.MaintenanceReport(
            at=now.isoformat(timespec="seconds"), dry_run=dry_run, containers=rows
        )

    def _remove_unused_kept_images(self) -> None:
        """At the first pass and then every ``KEPT_IMAGES_EVERY_SECONDS``."""
        at = self._monotonic()
        if self._kept_images_at is None or at - self._kept_images_at >= KEPT_IMAGES_EVERY_SECONDS:
            self._kept_images_at = at
            self.service.containers.remove_unused_kept_images()

    def _clocks_without_jump(self, mark: PassMark, dry_run: bool) -> dict[str, ContainerClock]:
        """Every clock, moved by the jump of the wall clock since the last pass, if any
        (module docstring); ``mark`` becomes the last pass unless ``dry_run``."""
        store = self.service.store
        jump = clock_jump(store.lifecycle_mark(), mark)
        if dry_run:
            return {cid: rebased(c, jump) for cid, c in store.lifecycle_clocks().items()}
        if jump:
            store.move_lifecycle_clocks(lambda c: rebased(c, jump), mark)
            self._report_jump(jump)
        else:
            store.save_lifecycle_mark(mark)
        return store.lifecycle_clocks()

    def _report_jump(self, jump: timedelta) -> None:
        """One ``clock.jump`` event and one log line for a jump worth telling an admin."""
        seconds = jump.total_seconds()
        direction = "forward" if seconds > 0 else "backward"
        if abs(jump) < CLOCK_JUMP_REPORTED:
            log.info("the wall clock stepped %s by %.1f s; lifecycle timers ignore it",
                     direction, abs(seconds))  # fmt: skip
            return
        log.warning(
            "the wall clock jumped %s by %s between two lifecycle passes; idle time and "
            "runtime count only the time that passed, so the jump stops no container",
            direction,
            format_duration(abs(seconds)),
        )
        self.service.events.emit(
            "clock.jump",
            user=DAEMON_USER,
            resource="host/clock",
            details={"seconds": round(seconds, 3), "direction": direction},
        )

    def _record_activity(
        self,
        records: list[ContainerRecord],
        clocks: dict[str, ContainerClock],
        telemetry: dict[str, DeviceTelemetry],
        now: datetime,
    ) -> None:
        """Add each running container's GPU activity since its last sample to the store
        (``gpu_activity``: the "GPU-hours used" of ``ds01 admin report``). Fails soft."""
        # Here, not at the top: the report's module loads with the first pass, after
        # ds01d's first answer, not on its start path.
        from ds01.core.report import activity_sample, hour_start, max_sample_gap

        config = self.service.config().limits
        gap = max_sample_gap(config.policies.lifecycle_interval_seconds)
        hour = hour_start(now)
        rows = []
        for record in records:
            clock = clocks.get(record.id)
            if record.status != "running" or not record.gpus or clock is None:
                continue
            if not clock.running or clock.sample_at is None:
                continue
            seconds = (now - clock.sample_at).total_seconds()
            if not 0 < seconds <= gap:
                continue  # no earlier sample of this run, or ds01d was away: not measured
            readings = [
                telemetry[u].gpu_util_percent if u in telemetry else None for u in record.gpus
            ]
            sample = activity_sample(record.gpu_equivalents, readings, seconds)
            if sample is not None:
                rows.append(
                    GpuActivity(record.id, record.user, record.group, hour.isoformat(), *sample)
                )
        store = self.service.store
        try:
            store.add_gpu_activity(rows)
            if hour != self._activity_hour:  # once an hour: drop what the ledger forgot
                self._activity_hour = hour
                kept = USAGE_HALF_LIVES_KEPT * config.scheduler.usage_half_life_hours
                store.forget_gpu_activity((hour - timedelta(hours=kept)).isoformat())
        except sqlite3.Error as exc:
            log.error("cannot record GPU activity: %s", exc)

    def _owner(self, record: ContainerRecord, owners: dict[int, _Owner | None]) -> _Owner | None:
        try:
            user = user_by_uid(record.uid)
            limits = self.service.limits_for(user)
            policy = resolve_policy(self.service.config().limits, user.name, user.groups)
        except Ds01Error as exc:
            log.warning("lifecycle skips %s: %s", record.docker_name, exc.message)
            owners[record.uid] = None
            return None
        owner = _Owner(
            user,
            policy,
            LimitsForContainer(limits.idle_timeout_hours, limits.max_runtime_hours),
        )
        owners[record.uid] = owner
        return owner

    def _running(
        self,
        record: ContainerRecord,
        owner: _Owner,
        clocks: dict[str, ContainerClock],
        telemetry: dict[str, DeviceTelemetry],
        exemptions: list[Exemption],
        demand: bool,
        now: datetime,
        dry_run: bool,
    ) -> api.LifecycleStatus | None:
        parent = record_parent(record)
        cgroup = self.sampler.cgroup_of(record, parent)
        started = self.sampler.started_at(record, cgroup) if cgroup else None
        sample = self.sampler.sample(record, parent, telemetry, self._clock)
        if started is None or sample is None:
            return None  # no sample, no decision (it may have just ended)
        now = sample.at  # the decision is the sample's: its readings are all before it
        clock = observe(clocks.get(record.id), sample, running_since=started, policy=owner.policy)
        exemption = covering_exemption(exemptions, record.user, record.name, now)
        # Its own runtime limit: the one its owner declared for it, if any.
        limit = runtime_limit_hours(owner.limits.max_runtime_hours, runtime_hours_of(record.labels))
        limits = replace(owner.limits, max_runtime_hours=limit)
        decision = decide(clock, now, owner.policy, limits, demand=demand, exemption=exemption)
        done: list[str] = []
        for action in decision.actions:
            if isinstance(action, Warn):
                done.append(f"warn: {action.kind} limit, stop at {_when(action.stop_at)}")
                if not dry_run:
                    self._warn(record, owner, action, decision)
                    clock = warned(clock, action)
            elif isinstance(action, Stop):
                done.append(f"stop: {action.reason}")
                if not dry_run and self._stop_container(record, owner, action):
                    clock = stopped(clock, now)
        if not dry_run:
            self.service.store.save_lifecycle_clock(record.id, record.docker_name, clock)
        return _status(record, decision, done)

    def _not_running(
        self,
        record: ContainerRecord,
        owner: _Owner,
        clocks: dict[str, ContainerClock],
        now: datetime,
        dry_run: bool,
    ) -> api.LifecycleStatus | None:
        clock = clocks.get(record.id)
        finished = (
            self.service.containers.stopped_since(record) if record.status == "stopped" else None
        )
        if clock is not None and clock.running:
            clock = stopped(clock, min(finished or now, now))
            if not dry_run:
                self.service.store.save_lifecycle_clock(record.id, record.docker_name, clock)
        if finished is not None and clock is not None and clock.ended_at is not None:
            # Docker's FinishedAt is wall time of its day; the clock's end moved with any
            # jump since. The later of the two never removes a container early.
            finished = max(finished, clock.ended_at)
        policy = owner.policy
        if record.status == "created":
            created = _iso(record.created_at)
            if created is None or not cleanup_created(created, now, policy):
                return None
            why = f"created {format_duration((now - created).total_seconds())} ago, never started"
        elif finished is not None and cleanup_stopped(finished, now, policy):
            why = f"stopped for {format_duration((now - finished).total_seconds())}"
        else:
            return None
        if not dry_run:
            self.service.containers.remove_by_daemon(record, reason=why)
        return api.LifecycleStatus(
            container_id=record.id,
            name=record.name,
            user=record.user,
            status=record.status,
            reason=f"Removed: {why}.",
            actions=[f"remove: {why}"],
        )

    # -- what the owner is told ------------------------------------------------------------

    def _warn(
        self, record: ContainerRecord, owner: _Owner, warning: Warn, decision: Decision
    ) -> None:
        what = "idle" if warning.kind == "idle" else "running for long"
        message = (
            f"ds01: your container {record.name!r} is {what} and will be stopped at "
            f"{_when(warning.stop_at)} ({decision.reason}) " + _hint(warning.kind, owner.policy)
        )
        keep_alive = decision.keep_alive_until if warning.kind == "idle" else None
        self.service.events.emit(
            "lifecycle.warn",
            user=record.user,
            resource=resource_of(record),
            details={
                "kind": warning.kind,
                "level": warning.level,
                "fraction": warning.fraction,
                "stop_at": _when(warning.stop_at),
                **({"keep_alive_until": _when(keep_alive)} if keep_alive else {}),
            },
        )
        self._tell(record, owner, message)

    def _stop_container(self, record: ContainerRecord, owner: _Owner, stop: Stop) -> bool:
        try:
            self.service.containers.stop_by_daemon(record, reason=stop.reason, cause=stop.kind)
        except Ds01Error as exc:
            log.error("lifecycle could not stop %s: %s", record.docker_name, exc.message)
            return False
        self._tell(  # first: whoever sees the event finds the owner told
            record,
            owner,
            f"ds01: your container {record.name!r} was stopped: {stop.reason} "
            + _after_stop(stop.kind, record.name),
        )
        self.service.events.emit(
            f"cleanup.{stop.kind}",
            user=record.user,
            resource=resource_of(record),
            details={"reason": stop.reason},
        )
        return True

    def _tell(self, record: ContainerRecord, owner: _Owner, message: str) -> None:
        """Tell the owner every way there is; a way that fails is logged and skipped, never
        stops the pass (the notice file is written as the owner, ``daemon.notify``)."""
        user, workspace = owner.user, workspace_of(record)
        url = self.service.config().limits.policies.webhook_url
        ways: list[tuple[str, Callable[[], object]]] = [
            ("terminals", lambda: self.service.notify_user(record.uid, message)),
        ]
        if workspace is not None:
            ids = UserIds.of(user.name, user.uid, user.gid)
            ways.append(("notice file", lambda: self._notice(record, workspace, ids, message)))
        if url:
            payload = {"text": message, "user": record.user, "container": record.name}
            ways.append(("webhook", lambda: post_webhook(url, payload)))
        for way, tell in ways:
            try:
                tell()
            except Exception:  # observation fails soft: the pass goes on
                log.exception("could not tell %s about %s (%s)", record.user, record.name, way)

    def _notice(self, record: ContainerRecord, workspace: Path, ids: UserIds, message: str) -> None:
        """The notice file, as the owner; one that cannot be written is an audit event (a
        link or FIFO planted under its name shows there)."""
        why = write_notice(workspace, ids, message + "\n")
        if why is not None:
            self.service.events.emit(
                "lifecycle.notice",
                user=record.user,
                resource=resource_of(record),
                details={"file": str(workspace / NOTICE_FILE), "error": why},
                outcome="failure",
            )

    def interval_seconds(self) -> float:
        return self.service.config().limits.policies.lifecycle_interval_seconds

    def wait_seconds(self) -> float:
        """The interval, or less: until the next reservation step is due (a warning at the
        lead time, a start with its drain and its slots' slices, an end), so that it is
        taken at that moment rather than up to an interval late. A reservation made or
        cancelled meanwhile ends the wait (``lifecycle_condition``)."""
        interval = self.interval_seconds()
        now = self._clock()
        try:
            due = self.reservations.next_change(now)
        except Ds01Error:  # the store is unreadable: the pass reports it; wait as usual
            return interval
        if due is None:
            return interval
        return max(0.0, min(interval, (due - now).total_seconds()))


def _status(record: ContainerRecord, decision: Decision, actions: list[str]) -> api.LifecycleStatus:
    return api.LifecycleStatus(
        container_id=record.id,
        name=record.name,
        user=record.user,
        status=record.status,
        idle_minutes=round(decision.idle_for.total_seconds() / 60, 1),
        runtime_minutes=round(decision.runtime.total_seconds() / 60, 1),
        stop_at=_when(decision.stop_at) if decision.stop_at else None,
        stop_kind=decision.stop_kind,
        runtime_stop_at=_when(decision.runtime_stop_at) if decision.runtime_stop_at else None,
        exempt_until=_exempt_until(decision),
        reason=decision.reason,
        actions=actions,
    )


def _exempt_until(decision: Decision) -> str | None:
    """When the exemption in force ends ("never" for one without end); ``None``: none."""
    if decision.exemption is None:
        return None
    until = decision.exemption.until
    return "never" if until is None else _when(until)


def _hint(kind: str, policy: LifecyclePolicy) -> str:
    if kind == "idle":
        cap = policy.keep_alive_max_hours
        if cap == 0:
            return "Any use keeps it: a running job, or a terminal in it (`container-open`)."
        limit = ""
        if cap is not None:
            limit = f", which defers a stop by at most {format_duration(cap * 3600)}"
        return (
            "Any use keeps it: a running job, a terminal in it (`container-open`), or "
            f"`touch /workspace/.keep-alive`{limit}."
        )
    return "Save your work to /workspace now: it is the part that outlives the container."


def _after_stop(kind: str, name: str) -> str:
    if kind == "idle":
        return f"Its files are kept: `container-start {name}` starts it again."
    return (
        f"It used up its running time: re-create it (`container-remove {name}`, then "
        "`container-create`; /workspace is kept), or ask an admin for an exemption."
    )


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


__all__ = ["LifecycleLoop"]
