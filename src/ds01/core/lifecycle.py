"""Lifecycle decisions as pure functions: is a container idle, when is it stopped, and why.

Nothing here touches Docker, cgroups, NVML, the database or the clock: ``now`` is always a
parameter, and every datetime passed in must be timezone-aware (UTC). ds01d's lifecycle loop
(and ``ds01 simulate``) drives it, every ``lifecycle_interval_seconds``:

1. take a :class:`Sample` of each running container and fold it into the container's
   :class:`ContainerClock` with :func:`observe` (a container that cannot be sampled, e.g.
   whose CPU counter cannot be read, is skipped in that pass: no sample, no decision);
2. close the run of a container seen stopped with :func:`stopped`;
3. call :func:`decide`; send each :class:`Warn` it returns and record it with
   :func:`warned`; stop the container on a :class:`Stop`;
4. persist the clocks (:meth:`ContainerClock.to_row`), so that a restart of the daemon
   loses neither idle time, nor runtime, nor the warnings already sent;
5. remove containers for which :func:`cleanup_created` or :func:`cleanup_stopped` holds.

**Signals** (:func:`activity`), over the interval between two samples of the same run:

=========  ===========================================  ===========================================
signal     measured as                                  active when
=========  ===========================================  ===========================================
cpu        CPU seconds of the cgroup / elapsed seconds  ``>= cpu_percent`` (percent of one CPU)
network    bytes received + sent / elapsed seconds      ``>= network_bytes_per_second``
gpu        utilisation of its busiest whole GPU         ``>= gpu_utilization_percent``
sessions   terminals ds01d relays, at the sample        at least one
=========  ===========================================  ===========================================

GPU memory held is not activity where utilisation is known: a notebook that keeps a model
in GPU memory and computes nothing is idle, the very case idle reclaim exists for. Where
utilisation is unknown (a MIG instance: NVML gives none per instance), its devices count as
idle when no compute process runs on them or when less than ``gpu_memory_mib`` is used;
otherwise the GPU signal is unknown (ds01 cannot tell a computing process from one that
only holds memory) and the other signals decide: a training loop keeps its CPU busy, an
idle notebook does not.

Counters start at zero with each run (Docker creates the container's cgroup and network
namespace at every start), so the first sample of a run is measured against the run's
start. A run first sampled more than two ``lifecycle_interval_seconds`` after its start
(the daemon was down, or lost its state) counts as active at that sample instead: ds01
never stops a container for idle time it did not observe. A rate is unknown when its
counter went backwards (a restart the loop did not see), when a counter is not available,
or when no time elapsed. **Unknown signals are left out**: they never make a container
active, and they are no evidence of idleness either. A container is *active* over an
interval when at least one known signal is active, and idle otherwise. The session count
is always known, so no interval is entirely unknown; a read failure cannot turn into
idleness because the sampler yields no sample at all without the CPU counter (step 1).

**Idle time.** ``active_at`` is the end of the last interval in which the container was
active (the sample's time: the activity happened somewhere in the interval, so nothing is
judged idle early), or the start of the run. A keep-alive file (``/workspace/.keep-alive``)
touched at ``m`` counts as activity at ``min(m, active_at + keep_alive_max_hours)``: however
often it is touched, the keep-alive defers the idle stop by at most
``keep_alive_max_hours``, counted from when the stop would have come without it
(``Decision.keep_alive_until``). Only real activity (the signals above) moves
``active_at``, which the clock keeps across restarts of the daemon, and starts a new cap.
``null`` means no cap (a touch counts at its time), 0 that the file is ignored. A
modification time in the future is ignored (it would otherwise keep a container forever).

**Sessions** are what the caller counts as someone at a terminal; ds01d counts only the
terminals it relays itself to a connected client, never processes in the container (any
process may be named ``sshd: alice@pts/0``).

**Stops** are times, not loop counts. With ``T`` the user's ``idle_timeout_hours``,
multiplied by ``demand_idle_factor`` while ``demand`` (requests wait in the queue for
devices), the idle stop is due when the idle time reaches ``T``, but never within
``idle_grace_minutes`` of the run's start. The runtime stop is due when the runtime, summed
over every run of the container, reaches ``max_runtime_hours``. :func:`decide` reports when
each is due (``stop_at``: the earlier one) and returns a :class:`Stop` from the first call at
or after it: the loop interval adds its own latency to a stop, never to ``stop_at``.

Runtime survives restarts of the container and of the daemon: :func:`observe` seeing a new
``StartedAt`` adds the previous run up to its last sample, :func:`stopped` adds it up to the
stop. A container that reached its runtime limit is therefore stopped again at its next
start (unless exempt): its owner re-creates it (``/workspace`` is kept).

**Jumps of the wall clock.** Every time in a clock lies on the loop's timeline: the wall
clock, except that each jump of it (an admin's ``date -s``, an NTP step, a wrong RTC after
a reboot…) is taken out. The loop notes each pass on the wall clock and on the host's
monotonic clock (:class:`PassMark`); :func:`clock_jump` is how much more (or less) time the
wall clock says passed since the previous pass than the monotonic clock measured, and
:func:`rebased` moves every time of a clock by it. Idle time and runtime measured afterwards
against the new wall clock are therefore the time that really passed: a jump adds or
removes none, and never causes a stop. Docker's ``StartedAt`` is kept as it was
(``docker_started_at``) to recognise the run; a keep-alive file's modification time as read
(``keep_alive_file_at``) to recognise the same touch after a jump.

**Warnings** at each fraction ``f`` of ``idle_warning_fractions`` (for runtime:
``runtime_warning_fractions``) are due ``(1 - f)`` of the limit before the stop, i.e. when
the idle time (the runtime) reaches ``f`` of its limit. Each level is sent once (recorded
with :func:`warned`); when several come due at once (the loop paused, a timeout shrank
under demand) only the highest is sent; none during the grace period, and none in a pass
that stops the container. New activity, or a new touch of the keep-alive file that still
counts (one that moves the idle stop later), re-arms the idle warnings.

**Exemptions** (:class:`Exemption`) granted by admins cover all of a user's containers or one
of them, until an expiry or for good; while one is in force :func:`decide` returns no action
and no ``stop_at``, and says why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias

from ds01.config.policies import LifecyclePolicy
from ds01.errors import QuotaExceeded
from ds01.model.units import format_duration

#: Per-signal names, in the order they are shown.
Signal = Literal["cpu", "network", "gpu", "sessions"]

#: Why a container is stopped.
StopKind = Literal["idle", "runtime"]

_PERCENT = 100.0
_NO_TIME = timedelta(0)
#: A run's first sample normally comes within one loop interval of its start; one more
#: absorbs a slow pass. Later than that, the loop did not watch the run from its start.
_FIRST_SAMPLE_INTERVALS = 2


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)


def _at_least(moment: datetime, earliest: datetime) -> datetime:
    return moment if moment >= earliest else earliest


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="minutes")


def _duration(span: timedelta | None) -> str:
    """``span`` for people (``"45 s"``, ``"2 h 05 min"``); ``"none"`` for ``None``."""
    return "none" if span is None else format_duration(span.total_seconds())


# --------------------------------------------------------------------------------------------
# Samples and activity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One observation of a running container.

    Counters count from the start of the run (the cgroup and the network namespace are
    created at every start).

    Attributes:
        at: when it was taken.
        cpu_seconds: cumulative CPU time of the container's cgroup, in seconds.
        network_bytes: cumulative bytes received plus sent by its network namespace;
            ``None`` = unknown.
        gpu_utilization_percent: utilisation of its busiest whole GPU, 0..100; ``None`` = not
            available (a MIG instance, no GPU, or the read failed).
        gpu_memory_used_mib: GPU memory used on its devices, summed, in MiB; ``None`` = unknown.
        gpu_processes: compute processes on its devices; ``None`` = unknown.
        sessions: interactive sessions: terminals into it that ds01d relays to a client.
        keep_alive_at: modification time of its ``/workspace/.keep-alive``; ``None`` = no file.
    """

    at: datetime
    cpu_seconds: float
    network_bytes: int | None = None
    gpu_utilization_percent: float | None = None
    gpu_memory_used_mib: int | None = None
    gpu_processes: int | None = None
    sessions: int = 0
    keep_alive_at: datetime | None = None


@dataclass(frozen=True)
class Reading:
    """One signal over one interval, for explanations (``container-list``, dry runs).

    Attributes:
        signal: which one.
        value: what was measured, in ``unit``; ``None`` = unknown.
        threshold: the value at or above which it is active, in ``unit``.
        unit: ``"% of one CPU"``, ``"bytes/s"``, ``"%"`` (GPU utilisation), ``"MiB"`` (GPU
            memory, where utilisation is unknown) or ``"sessions"``.
        active: ``True`` active, ``False`` idle, ``None`` unknown.
        note: why it is unknown, or how it was decided, when that is not obvious.
    """

    signal: Signal
    value: float | None
    threshold: float
    unit: str
    active: bool | None
    note: str = ""

    def describe(self) -> str:
        """E.g. ``"cpu 12.3 % of one CPU (active at >= 5)"`` or ``"network unknown: …"``."""
        state = "active" if self.active else "idle" if self.active is False else "unknown"
        if self.value is None:
            text = f"{self.signal} {state}"
        else:
            text = f"{self.signal} {self.value:g} {self.unit} ({state} at >= {self.threshold:g})"
        return text + (f": {self.note}" if self.note else "")


@dataclass(frozen=True)
class Activity:
    """Every signal over one interval (see :func:`activity`)."""

    readings: tuple[Reading, ...]

    @property
    def active(self) -> bool:
        """Whether any known signal was active."""
        return any(reading.active for reading in self.readings)

    @property
    def active_signals(self) -> tuple[Signal, ...]:
        """The signals that were active."""
        return tuple(r.signal for r in self.readings if r.active)

    @property
    def unknown_signals(self) -> tuple[Signal, ...]:
        """The signals that could not be judged."""
        return tuple(r.signal for r in self.readings if r.active is None)

    def reading(self, signal: Signal) -> Reading:
        """The reading of ``signal``."""
        return next(r for r in self.readings if r.signal == signal)

    def describe(self) -> str:
        """All readings in one line, ``"; "``-separated."""
        return "; ".join(reading.describe() for reading in self.readings)


def _rate_reading(
    signal: Signal,
    counters: tuple[float | None, float | None] | None,
    seconds: float,
    scale: float,
    threshold: float,
    unit: str,
) -> Reading:
    """A counter's increase per second, times ``scale``, against ``threshold``.

    ``counters`` are its (previous, current) values, ``None`` without an earlier sample.
    """
    if counters is None:
        note = "no earlier sample of this run"
    elif counters[0] is None or counters[1] is None:
        note = "counter not available"
    elif seconds <= 0:
        note = "no time elapsed"
    elif counters[1] < counters[0]:
        note = "the counter went backwards (restarted)"
    else:
        rate = (counters[1] - counters[0]) / seconds * scale
        return Reading(signal, rate, threshold, unit, rate >= threshold)
    return Reading(signal, None, threshold, unit, None, note)


def _gpu_reading(sample: Sample, policy: LifecyclePolicy) -> Reading:
    """The GPU signal at ``sample`` (module docstring: utilisation, else processes and memory)."""
    utilization = sample.gpu_utilization_percent
    if utilization is not None:
        threshold = policy.gpu_utilization_percent
        return Reading("gpu", utilization, threshold, "%", utilization >= threshold)
    threshold = float(policy.gpu_memory_mib)
    memory, processes = sample.gpu_memory_used_mib, sample.gpu_processes
    value = None if memory is None else float(memory)
    if processes == 0:
        return Reading("gpu", value, threshold, "MiB", False, "no compute process")
    if value is not None and value < threshold:
        return Reading("gpu", value, threshold, "MiB", False, "no utilisation (MIG)")
    if value is None and processes is None:
        return Reading("gpu", None, threshold, "MiB", None, "no GPU figures")
    note = "no utilisation (MIG): processes hold memory, the other signals decide"
    return Reading("gpu", value, threshold, "MiB", None, note)


def activity(previous: Sample | None, current: Sample, policy: LifecyclePolicy) -> Activity:
    """Which signals were active between ``previous`` and ``current`` (module docstring).

    ``previous`` must be the preceding sample of the same run (for the first one,
    :func:`observe` passes the run's start with zero counters); without it, rates are unknown.
    """
    seconds = 0.0 if previous is None else (current.at - previous.at).total_seconds()
    cpu_counters = network_counters = None
    if previous is not None:
        cpu_counters = (previous.cpu_seconds, current.cpu_seconds)
        network_counters = (_float(previous.network_bytes), _float(current.network_bytes))
    cpu = _rate_reading("cpu", cpu_counters, seconds, _PERCENT, policy.cpu_percent, "% of one CPU")
    network = _rate_reading(
        "network", network_counters, seconds, 1.0, policy.network_bytes_per_second, "bytes/s"
    )
    sessions = Reading("sessions", float(current.sessions), 1.0, "sessions", current.sessions >= 1)
    return Activity((cpu, network, _gpu_reading(current, policy), sessions))


# --------------------------------------------------------------------------------------------
# The per-container clock
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerClock:
    """What the lifecycle loop keeps per container between passes (persist it, one row each).

    Every field is a ``str``, ``int``, ``float``, ``datetime`` or ``None``;
    :meth:`to_row` and :meth:`from_row` convert to and from a flat mapping whose datetimes
    are ISO 8601 strings (every column ending in ``_at``), in :data:`CLOCK_COLUMNS` order.

    Every time is on the loop's timeline (module docstring: jumps of the wall clock), except
    ``docker_started_at`` and ``keep_alive_file_at``, which are as read.

    Attributes:
        run_started_at: when the current run started (Docker's ``StartedAt``, moved with
            every jump of the wall clock since); ``None`` while stopped.
        active_at: when the container was last seen active, or its run started.
        runtime_seconds_before: running time of its earlier runs, in seconds.
        idle_warning_level: idle warnings sent since it was last active (0 = none; ``n`` =
            the warning at the ``n``-th of ``idle_warning_fractions``).
        runtime_warning_level: runtime warnings sent, likewise (never re-armed).
        sample_*: the last :class:`Sample` of the current run (``sample_at`` ``None``: none
            yet); see :attr:`last_sample`.
        docker_started_at: Docker's ``StartedAt`` of the current run, as Docker reports it:
            what tells a new run from the current one (``None``: ``run_started_at``).
        keep_alive_file_at: the keep-alive file's modification time as last read (the same
            touch as ``sample_keep_alive_at``, which may have moved with a jump since;
            ``None``: ``sample_keep_alive_at``).
        ended_at: when the last run ended (``None`` while running, or never seen ending).
    """

    run_started_at: datetime | None
    active_at: datetime
    runtime_seconds_before: float = 0.0
    idle_warning_level: int = 0
    runtime_warning_level: int = 0
    sample_at: datetime | None = None
    sample_cpu_seconds: float | None = None
    sample_network_bytes: int | None = None
    sample_gpu_utilization_percent: float | None = None
    sample_gpu_memory_used_mib: int | None = None
    sample_gpu_processes: int | None = None
    sample_sessions: int | None = None
    sample_keep_alive_at: datetime | None = None
    docker_started_at: datetime | None = None
    keep_alive_file_at: datetime | None = None
    ended_at: datetime | None = None

    def __post_init__(self) -> None:
        # Until a jump moves them apart, the times as read are the times on the timeline
        # (and a row written before the two were kept apart has only the latter).
        if self.docker_started_at is None:
            object.__setattr__(self, "docker_started_at", self.run_started_at)
        if self.keep_alive_file_at is None:
            object.__setattr__(self, "keep_alive_file_at", self.sample_keep_alive_at)

    @property
    def running(self) -> bool:
        """Whether a run is open."""
        return self.run_started_at is not None

    @property
    def last_sample(self) -> Sample | None:
        """The last sample of the current run, if any."""
        if self.sample_at is None or self.sample_cpu_seconds is None:
            return None
        return Sample(
            at=self.sample_at,
            cpu_seconds=self.sample_cpu_seconds,
            network_bytes=self.sample_network_bytes,
            gpu_utilization_percent=self.sample_gpu_utilization_percent,
            gpu_memory_used_mib=self.sample_gpu_memory_used_mib,
            gpu_processes=self.sample_gpu_processes,
            sessions=self.sample_sessions or 0,
            keep_alive_at=self.sample_keep_alive_at,
        )

    def runtime(self, now: datetime) -> timedelta:
        """Running time over every run, the current one counted up to ``now``."""
        current = _NO_TIME
        if self.run_started_at is not None:
            current = max(_NO_TIME, now - self.run_started_at)
        return timedelta(seconds=self.runtime_seconds_before) + current

    def runtime_stop_at(self, limit_hours: float | None) -> datetime | None:
        """When the current run reaches a runtime limit of ``limit_hours`` over every run
        (``core.lifecycle.runtime_limit_hours``); ``None`` without a limit or a run."""
        if limit_hours is None or self.run_started_at is None:
            return None
        left = timedelta(hours=limit_hours, seconds=-self.runtime_seconds_before)
        return self.run_started_at + left

    def to_row(self) -> dict[str, str | int | float | None]:
        """The clock as a flat mapping: :data:`CLOCK_COLUMNS`, datetimes as ISO 8601."""
        row: dict[str, str | int | float | None] = {}
        for name in CLOCK_COLUMNS:
            value = getattr(self, name)
            row[name] = value.isoformat() if isinstance(value, datetime) else value
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ContainerClock:
        """The clock :meth:`to_row` gave (a missing column reads as its default)."""
        values: dict[str, Any] = {}
        for name in CLOCK_COLUMNS:
            if name not in row:
                continue
            value = row[name]
            if name.endswith("_at") and isinstance(value, str):
                value = datetime.fromisoformat(value)
            values[name] = value
        return cls(**values)


#: The fields of :class:`ContainerClock`, in order: the columns of its table.
CLOCK_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ContainerClock))


def _sample_columns(sample: Sample | None) -> dict[str, Any]:
    """The ``sample_*`` fields of a clock holding ``sample``."""
    if sample is None:
        return {name: None for name in CLOCK_COLUMNS if name.startswith("sample_")}
    return {f"sample_{f.name}": getattr(sample, f.name) for f in dataclasses.fields(Sample)}


def _run_start(running_since: datetime) -> Sample:
    """The counters at the start of a run: zero (a new cgroup and network namespace)."""
    return Sample(running_since, cpu_seconds=0.0, network_bytes=0)


def start_run(clock: ContainerClock | None, running_since: datetime) -> ContainerClock:
    """``clock`` at the start of a new run at ``running_since``.

    The previous run, if still open, is closed at its last sample (the last moment it was
    known to run). Idle time counts from the start; runtime warnings carry over.
    """
    if clock is None:
        return ContainerClock(
            run_started_at=running_since,
            active_at=running_since,
            docker_started_at=running_since,
        )
    if clock.run_started_at is not None:
        closed_at = clock.sample_at or clock.run_started_at
        clock = stopped(clock, closed_at)
    return replace(
        clock,
        run_started_at=running_since,
        active_at=running_since,
        idle_warning_level=0,
        docker_started_at=running_since,
        keep_alive_file_at=None,
        ended_at=None,
        **_sample_columns(None),
    )


def observe(
    clock: ContainerClock | None,
    sample: Sample,
    *,
    running_since: datetime,
    policy: LifecyclePolicy,
) -> ContainerClock:
    """``clock`` advanced by ``sample`` of a running container (``None``: first seen).

    ``running_since`` is Docker's ``StartedAt`` of the run the sample belongs to; a value other
    than the clock's ``docker_started_at`` starts a new run (:func:`start_run`). A sample
    that is not later than the last one, nor than the run's start, is ignored (the clock is
    returned as is). The first sample of a run is measured against the run's start, unless
    it comes more than two loop intervals after it: then the run counts as active at that
    sample. A first sample earlier than the run's start (the wall clock went back since
    Docker noted it) starts the run's clock at that sample instead. A keep-alive time equal
    to ``keep_alive_file_at`` is the touch the clock knows, at the time the clock keeps for
    it (which moved with any jump since).
    """
    if clock is None or not clock.running or clock.docker_started_at != running_since:
        clock = start_run(clock, running_since)
    previous = clock.last_sample
    start = clock.run_started_at or running_since
    file_at = sample.keep_alive_at
    if file_at is not None and file_at == clock.keep_alive_file_at:
        sample = replace(sample, keep_alive_at=clock.sample_keep_alive_at)
    if previous is None and sample.at < start:
        # The wall clock went back since Docker noted the start: the run counts from this
        # sample, the earliest moment the loop can vouch for on its own timeline.
        return replace(
            clock,
            run_started_at=sample.at,
            active_at=sample.at,
            keep_alive_file_at=file_at,
            **_sample_columns(sample),
        )
    if sample.at <= (start if previous is None else previous.at):
        return clock
    if previous is None:
        late = _FIRST_SAMPLE_INTERVALS * timedelta(seconds=policy.lifecycle_interval_seconds)
        active = sample.at - start > late or activity(_run_start(start), sample, policy).active
    else:
        active = activity(previous, sample, policy).active
    active_at, idle_level = clock.active_at, clock.idle_warning_level
    if active:
        active_at, idle_level = max(active_at, sample.at), 0
    if _touch_counts_more(clock.sample_keep_alive_at, sample, active_at, policy):
        idle_level = 0  # a new touch that defers the stop re-arms the idle warnings
    return replace(
        clock,
        active_at=active_at,
        idle_warning_level=idle_level,
        keep_alive_file_at=file_at,
        **_sample_columns(sample),
    )


def _touch_counts_more(
    before: datetime | None, sample: Sample, active_at: datetime, policy: LifecyclePolicy
) -> bool:
    """Whether ``sample``'s keep-alive touch counts later than the touch ``before`` did (it
    moves the idle stop later): a touch past the cap, or in the future, does not."""
    touched = sample.keep_alive_at
    if touched is None or touched == before or touched > sample.at:
        return False
    now = _counted_touch(touched, active_at, policy)
    if now is None:
        return False
    then = None if before is None else _counted_touch(before, active_at, policy)
    return then is None or now > then


def stopped(clock: ContainerClock, at: datetime) -> ContainerClock:
    """``clock`` once its container stopped at ``at``: the run's time joins the runtime.

    A stop time before the run's last sample counts as that sample: the run was seen
    running then (Docker's ``FinishedAt`` may predate a jump the clock has been moved by).
    A clock without an open run is returned as is.
    """
    if clock.run_started_at is None:
        return clock
    at = max(at, clock.sample_at or clock.run_started_at)
    ran = (at - clock.run_started_at).total_seconds()
    return replace(
        clock,
        run_started_at=None,
        runtime_seconds_before=clock.runtime_seconds_before + ran,
        idle_warning_level=0,
        ended_at=at,
    )


# --------------------------------------------------------------------------------------------
# Jumps of the wall clock
# --------------------------------------------------------------------------------------------

#: A difference between the wall and the monotonic clock's elapsed time below this is
#: measurement noise (the two are read one after the other), not a jump.
CLOCK_STEP = timedelta(seconds=1)
#: A jump at least this large is reported (an audit event and one log line); smaller steps
#: (NTP corrections) are taken out silently.
CLOCK_JUMP_REPORTED = timedelta(seconds=60)


@dataclass(frozen=True)
class PassMark:
    """When a lifecycle pass ran, on both clocks (persist the last one).

    Attributes:
        wall: the wall clock (UTC).
        monotonic: the host's monotonic clock, in seconds (it never jumps).
        boot: the host's boot id: monotonic readings compare only within one boot.
    """

    wall: datetime
    monotonic: float
    boot: str


def clock_jump(previous: PassMark | None, current: PassMark) -> timedelta:
    """How far the wall clock jumped between two passes: the wall clock's elapsed time
    minus the monotonic clock's; positive forward, negative backward. Zero when they cannot
    be compared (no previous pass, another or an unknown boot) or differ by less than
    :data:`CLOCK_STEP`."""
    if previous is None or not current.boot or previous.boot != current.boot:
        return _NO_TIME
    wall = current.wall - previous.wall
    steady = timedelta(seconds=current.monotonic - previous.monotonic)
    jump = wall - steady
    return jump if abs(jump) >= CLOCK_STEP else _NO_TIME


def rebased(clock: ContainerClock, jump: timedelta) -> ContainerClock:
    """``clock`` after the wall clock jumped by ``jump``: every time on the loop's timeline
    moved by it, so that spans measured against the new wall clock stay true. Docker's
    ``StartedAt`` and the keep-alive file's time as read stay as they are."""

    def moved(moment: datetime | None) -> datetime | None:
        return None if moment is None else moment + jump

    return replace(
        clock,
        run_started_at=moved(clock.run_started_at),
        active_at=clock.active_at + jump,
        sample_at=moved(clock.sample_at),
        sample_keep_alive_at=moved(clock.sample_keep_alive_at),
        ended_at=moved(clock.ended_at),
    )


# --------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exemption:
    """An admin's exemption from idle and runtime stops.

    Attributes:
        user: whose containers it covers.
        container: the one container it covers (its name as the user sees it); ``None`` =
            all of the user's containers.
        until: when it ends; ``None`` = never.
        reason: why it was granted (shown to the user).
    """

    user: str
    container: str | None
    until: datetime | None
    reason: str

    def in_force(self, now: datetime) -> bool:
        """Whether it still applies at ``now``."""
        return self.until is None or now < self.until

    def covers(self, user: str, container: str, now: datetime) -> bool:
        """Whether it applies to ``user``'s ``container`` at ``now``."""
        return self.user == user and self.container in (None, container) and self.in_force(now)

    def describe(self) -> str:
        """E.g. ``"exempt until 2026-01-12T09:00+00:00: thesis deadline"``."""
        until = "for good" if self.until is None else f"until {_when(self.until)}"
        return f"exempt from idle and runtime stops {until}: {self.reason}"


def covering_exemption(
    exemptions: Sequence[Exemption], user: str, container: str, now: datetime
) -> Exemption | None:
    """The exemption in force for ``user``'s ``container`` that lasts longest, if any."""
    matching = [e for e in exemptions if e.covers(user, container, now)]
    return max(matching, key=lambda e: (e.until is None, e.until or now), default=None)


def runtime_limit_hours(max_runtime_hours: float | None, declared: float | None) -> float | None:
    """A container's runtime limit in hours: the runtime its owner declared for it
    (``container-create --runtime-hours``), else their ``max_runtime_hours``; never more than
    ``max_runtime_hours`` (``None``: no limit). Every place that stops, plans or keeps
    devices by a container's runtime uses this one answer."""
    if declared is None:
        return max_runtime_hours
    return declared if max_runtime_hours is None else min(declared, max_runtime_hours)


def runtime_stop(
    clock: ContainerClock | None,
    max_runtime_hours: float | None,
    declared: float | None,
    exemptions: Sequence[Exemption],
    user: str,
    container: str,
    now: datetime,
) -> datetime | None:
    """When ``user``'s ``container`` is stopped for its runtime: its ``clock``'s current run
    reaching its runtime limit (:func:`runtime_limit_hours` of ``max_runtime_hours`` and the
    ``declared`` runtime), unless an exemption covers it at ``now``. ``None``: no clock, no
    limit, no run, or exempted."""
    if clock is None or covering_exemption(exemptions, user, container, now) is not None:
        return None
    return clock.runtime_stop_at(runtime_limit_hours(max_runtime_hours, declared))


def declared_runtime(max_runtime_hours: float | None, declared: float | None) -> float | None:
    """``declared`` (``--runtime-hours HOURS``, ``None``: not given) checked against the owner's
    ``max_runtime_hours``.

    Raises:
        QuotaExceeded: more than ``max_runtime_hours`` (exit 3).
    """
    if declared is not None and max_runtime_hours is not None and declared > max_runtime_hours:
        raise QuotaExceeded(
            f"--runtime-hours {declared:g} is more than your max_runtime_hours "
            f"({max_runtime_hours:g} hours): ask for at most that."
        )
    return declared


@dataclass(frozen=True)
class LimitsForContainer:
    """The owner's resolved limits that the lifecycle enforces.

    Attributes:
        idle_timeout_hours: idle hours before the idle stop; ``None`` = never.
        max_runtime_hours: running hours (over every run) before the runtime stop;
            ``None`` = unlimited.
    """

    idle_timeout_hours: float | None
    max_runtime_hours: float | None

    def __post_init__(self) -> None:
        for name in ("idle_timeout_hours", "max_runtime_hours"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value}")


@dataclass(frozen=True)
class Warn:
    """Tell the owner that a stop is coming.

    Attributes:
        kind: which limit.
        level: 1-based position of ``fraction`` in the policy's warning fractions; record it
            with :func:`warned` once sent.
        fraction: the part of the limit used up.
        stop_at: when the stop is due if nothing changes.
    """

    kind: StopKind
    level: int
    fraction: float
    stop_at: datetime


@dataclass(frozen=True)
class Stop:
    """Stop the container now.

    Attributes:
        kind: which limit.
        reason: one sentence for the owner and the audit log.
    """

    kind: StopKind
    reason: str


#: What :func:`decide` asks the loop to do.
Action: TypeAlias = Warn | Stop


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` found for one container at one instant.

    Attributes:
        idle_for: how long it has been idle (0 while stopped).
        effective_idle_timeout: the idle timeout in force (shrunk under demand); ``None``
            = never stopped for idleness.
        runtime: running time over every run.
        idle_stop_at: when the idle stop is due if nothing changes; ``None`` = none.
        runtime_stop_at: when the runtime stop is due; ``None`` = none.
        stop_at: the earlier of the two (``None`` while exempt or stopped).
        reason: one sentence for people: how long idle and running, when it stops and why.
        actions: what to do now.
        exemption: the exemption in force, if any.
        keep_alive_until: while a keep-alive touch defers the idle stop, the latest the
            keep-alive can defer it to (``keep_alive_max_hours`` after the stop it
            deferred); ``None`` otherwise, or when there is no cap.
    """

    idle_for: timedelta
    effective_idle_timeout: timedelta | None
    runtime: timedelta
    idle_stop_at: datetime | None
    runtime_stop_at: datetime | None
    stop_at: datetime | None
    reason: str
    actions: tuple[Action, ...] = ()
    exemption: Exemption | None = None
    keep_alive_until: datetime | None = None

    @property
    def stop_kind(self) -> StopKind | None:
        """Which stop ``stop_at`` is (runtime when both are due at the same time)."""
        if self.stop_at is None:
            return None
        return "runtime" if self.stop_at == self.runtime_stop_at else "idle"


def _keep_alive_cap(policy: LifecyclePolicy) -> timedelta | None:
    """``keep_alive_max_hours`` as a span; ``None`` = no cap."""
    hours = policy.keep_alive_max_hours
    return None if hours is None else timedelta(hours=hours)


def _counted_touch(
    touched: datetime, active_at: datetime, policy: LifecyclePolicy
) -> datetime | None:
    """When a touch at ``touched`` counts as activity: never later than the cap after the
    last real activity; ``None`` when the file is ignored (``keep_alive_max_hours`` 0)."""
    cap = _keep_alive_cap(policy)
    if cap is None:
        return touched
    if cap <= _NO_TIME:
        return None
    return min(touched, active_at + cap)


def _keep_alive(clock: ContainerClock, now: datetime, policy: LifecyclePolicy) -> datetime | None:
    """The keep-alive touch that can still count at ``now`` (not in the future, honoured)."""
    touched = clock.sample_keep_alive_at
    if touched is None or touched > now or _counted_touch(touched, clock.active_at, policy) is None:
        return None
    return touched


def _idle_since(clock: ContainerClock, now: datetime, policy: LifecyclePolicy) -> datetime:
    """The last activity at ``now``, a keep-alive touch included at the time it counts
    (:func:`_counted_touch`)."""
    touched = _keep_alive(clock, now, policy)
    counted = None if touched is None else _counted_touch(touched, clock.active_at, policy)
    return clock.active_at if counted is None else max(clock.active_at, counted)


def _idle_due(
    clock: ContainerClock, now: datetime, policy: LifecyclePolicy, timeout: timedelta
) -> datetime:
    """When the idle stop is due if no new activity comes (before the grace period applies):
    ``timeout`` after the last activity, a keep-alive touch included at the time it counts,
    so never later than ``active_at + keep_alive_max_hours + timeout``."""
    return _idle_since(clock, now, policy) + timeout


def _keep_alive_until(
    clock: ContainerClock,
    now: datetime,
    policy: LifecyclePolicy,
    timeout: timedelta,
    grace_end: datetime,
) -> datetime | None:
    """While a keep-alive touch defers the idle stop (it counts after the last activity),
    the latest it can defer it to: at most the cap after the stop it deferred."""
    touched = _keep_alive(clock, now, policy)
    cap = _keep_alive_cap(policy)
    if touched is None or cap is None or touched <= clock.active_at:
        return None
    return _at_least(clock.active_at + cap + timeout, grace_end)


def _warning_level(
    fractions: tuple[float, ...], stop_at: datetime, span: timedelta, now: datetime
) -> int:
    """How many warnings are due at ``now``: the one at fraction ``f`` is due ``(1 - f)`` of
    ``span`` before ``stop_at``."""
    return sum(1 for f in fractions if now >= stop_at - span * (1 - f))


def _warning(
    kind: StopKind,
    fractions: tuple[float, ...],
    sent: int,
    stop_at: datetime,
    span: timedelta,
    now: datetime,
) -> Warn | None:
    level = _warning_level(fractions, stop_at, span, now)
    return Warn(kind, level, fractions[level - 1], stop_at) if level > sent else None


def _unplanned_decision(
    idle_for: timedelta,
    timeout: timedelta | None,
    runtime: timedelta,
    reason: str,
) -> Decision:
    """A decision with no stop planned and nothing to do (stopped, exempt, or the start of
    one that plans a stop)."""
    return Decision(
        idle_for=idle_for,
        effective_idle_timeout=timeout,
        runtime=runtime,
        idle_stop_at=None,
        runtime_stop_at=None,
        stop_at=None,
        reason=reason,
    )


def _stopped_decision(clock: ContainerClock, now: datetime) -> Decision:
    runtime = clock.runtime(now)
    return _unplanned_decision(
        _NO_TIME, None, runtime, f"Not running (ran {_duration(runtime)} in all)."
    )


@dataclass(frozen=True)
class _IdleLimit:
    """The idle timeout in force at one instant and when it stops the container."""

    timeout: timedelta
    stop_at: datetime
    keep_alive_until: datetime | None


def _idle_limit(
    clock: ContainerClock,
    now: datetime,
    policy: LifecyclePolicy,
    limits: LimitsForContainer,
    demand: bool,
    grace_end: datetime,
) -> _IdleLimit | None:
    """The idle timeout (shrunk under demand) and its stop; ``None`` = no idle timeout."""
    if limits.idle_timeout_hours is None:
        return None
    factor = policy.demand_idle_factor if demand else 1.0
    timeout = timedelta(hours=limits.idle_timeout_hours * factor)
    return _IdleLimit(
        timeout=timeout,
        stop_at=_at_least(_idle_due(clock, now, policy, timeout), grace_end),
        keep_alive_until=_keep_alive_until(clock, now, policy, timeout, grace_end),
    )


def _runtime_limit(
    clock: ContainerClock, limits: LimitsForContainer, start: datetime
) -> tuple[timedelta | None, datetime | None]:
    """The runtime limit and when this run reaches it; ``(None, None)`` = no limit."""
    if limits.max_runtime_hours is None:
        return None, None
    limit = timedelta(hours=limits.max_runtime_hours)
    before = timedelta(seconds=clock.runtime_seconds_before)
    return limit, start + max(_NO_TIME, limit - before)


def _stop_reason(
    decision: Decision,
    kind: StopKind,
    limit: timedelta | None,
    policy: LifecyclePolicy,
    demand: bool,
    keep_alive: str,
) -> str:
    """Why a stop that is due now happens (without the final full stop)."""
    if kind == "runtime":
        return f"Ran {_duration(decision.runtime)} over its runs, the limit is {_duration(limit)}"
    why = (
        f"Idle for {_duration(decision.idle_for)}, "
        f"the limit is {_duration(decision.effective_idle_timeout)}"
    )
    if demand and policy.demand_idle_factor < 1:
        why += " while others wait for GPUs"
    return why + keep_alive


def _due_warnings(
    decision: Decision,
    clock: ContainerClock,
    now: datetime,
    policy: LifecyclePolicy,
    limit: timedelta | None,
    grace_end: datetime,
) -> tuple[Action, ...]:
    """The runtime and idle warnings due at ``now`` that were not sent yet."""
    warnings: list[Warn | None] = []
    if decision.runtime_stop_at is not None and limit is not None:
        warnings.append(
            _warning(
                "runtime",
                policy.runtime_warning_fractions,
                clock.runtime_warning_level,
                decision.runtime_stop_at,
                limit,
                now,
            )
        )
    timeout = decision.effective_idle_timeout
    if decision.idle_stop_at is not None and timeout is not None and now >= grace_end:
        warnings.append(
            _warning(
                "idle",
                policy.idle_warning_fractions,
                clock.idle_warning_level,
                decision.idle_stop_at,
                timeout,
                now,
            )
        )
    return tuple(warn for warn in warnings if warn is not None)


def decide(
    clock: ContainerClock,
    now: datetime,
    policy: LifecyclePolicy,
    limits: LimitsForContainer,
    *,
    demand: bool,
    exemption: Exemption | None,
) -> Decision:
    """What to do with the container of ``clock`` at ``now`` (contract: module docstring).

    Args:
        clock: its state, as :func:`observe` left it.
        now: the instant of the decision.
        policy: its owner's lifecycle policy.
        limits: its owner's idle timeout and runtime limit.
        demand: whether requests wait in the queue for devices (the idle timeout shrinks).
        exemption: the owner's exemption covering it, if any (an expired one is ignored).
    """
    start = clock.run_started_at
    if start is None:
        return _stopped_decision(clock, now)
    runtime = clock.runtime(now)
    idle_for = max(_NO_TIME, now - _idle_since(clock, now, policy))
    grace_end = start + timedelta(minutes=policy.idle_grace_minutes)
    idle = _idle_limit(clock, now, policy, limits, demand, grace_end)
    timeout = None if idle is None else idle.timeout
    keep_alive_until = None if idle is None else idle.keep_alive_until
    limit, runtime_stop_at = _runtime_limit(clock, limits, start)

    about = _describe(idle_for, timeout, runtime, limit, demand, policy)
    keep_alive = _describe_keep_alive(keep_alive_until, policy)
    unplanned = _unplanned_decision(idle_for, timeout, runtime, "")
    if exemption is not None and exemption.in_force(now):
        return replace(unplanned, reason=f"{about}; {exemption.describe()}.", exemption=exemption)

    idle_stop_at = None if idle is None else idle.stop_at
    due = [moment for moment in (runtime_stop_at, idle_stop_at) if moment is not None]
    decision = replace(
        unplanned,
        idle_stop_at=idle_stop_at,
        runtime_stop_at=runtime_stop_at,
        stop_at=min(due) if due else None,
        keep_alive_until=keep_alive_until,
    )
    stop_at = decision.stop_at
    kind = decision.stop_kind
    if stop_at is None or kind is None:
        return replace(decision, reason=f"{about}{keep_alive}; no stop planned.")
    if now >= stop_at:
        why = _stop_reason(decision, kind, limit, policy, demand, keep_alive)
        return replace(decision, reason=f"{why}: stopped.", actions=(Stop(kind, f"{why}."),))
    reason = f"{about}{keep_alive}; stops at {_when(stop_at)} ({kind} limit)."
    actions = _due_warnings(decision, clock, now, policy, limit, grace_end)
    return replace(decision, reason=reason, actions=actions)


def _describe(
    idle_for: timedelta,
    timeout: timedelta | None,
    runtime: timedelta,
    limit: timedelta | None,
    demand: bool,
    policy: LifecyclePolicy,
) -> str:
    """``"Idle 1h10m of 4h00m; ran 5h00m of 48h00m"`` and the like."""
    if timeout is None:
        idle = f"Idle {_duration(idle_for)} (never stopped for idleness)"
    else:
        idle = f"Idle {_duration(idle_for)} of {_duration(timeout)}"
        if demand and policy.demand_idle_factor < 1:
            idle += " (shortened while others wait for GPUs)"
    ran = f"ran {_duration(runtime)}"
    ran += " (no runtime limit)" if limit is None else f" of {_duration(limit)}"
    return f"{idle}; {ran}"


def _describe_keep_alive(until: datetime | None, policy: LifecyclePolicy) -> str:
    """``"; /workspace/.keep-alive defers the idle stop by at most 24 h 00 min
    (keep_alive_max_hours), to …"`` while a touch defers it; ``""`` otherwise."""
    cap = _keep_alive_cap(policy)
    if until is None or cap is None:
        return ""
    return (
        f"; /workspace/.keep-alive defers the idle stop by at most {_duration(cap)} "
        f"(keep_alive_max_hours), to {_when(until)} at the latest"
    )


def warned(clock: ContainerClock, warning: Warn) -> ContainerClock:
    """``clock`` once ``warning`` was sent: that level and those below it are not sent again."""
    if warning.kind == "idle":
        return replace(clock, idle_warning_level=max(clock.idle_warning_level, warning.level))
    return replace(clock, runtime_warning_level=max(clock.runtime_warning_level, warning.level))


# --------------------------------------------------------------------------------------------
# Cleanup
# --------------------------------------------------------------------------------------------


def unstarted_removal_at(created_at: datetime, policy: LifecyclePolicy) -> datetime:
    """When a container created at ``created_at`` and never started is removed."""
    return created_at + timedelta(minutes=policy.created_unstarted_minutes)


def cleanup_created(created_at: datetime, now: datetime, policy: LifecyclePolicy) -> bool:
    """Whether a container created at ``created_at`` and never started is removed at ``now``."""
    return now >= unstarted_removal_at(created_at, policy)


def stopped_removal_at(finished_at: datetime, policy: LifecyclePolicy) -> datetime | None:
    """When a container stopped at ``finished_at`` is removed; ``None`` = never."""
    hold = policy.container_hold_after_stop_hours
    return None if hold is None else finished_at + timedelta(hours=hold)


def cleanup_stopped(finished_at: datetime, now: datetime, policy: LifecyclePolicy) -> bool:
    """Whether a container stopped at ``finished_at`` is removed at ``now``."""
    removal = stopped_removal_at(finished_at, policy)
    return removal is not None and now >= removal


__all__ = [
    "CLOCK_COLUMNS",
    "CLOCK_JUMP_REPORTED",
    "CLOCK_STEP",
    "Action",
    "Activity",
    "ContainerClock",
    "Decision",
    "Exemption",
    "LimitsForContainer",
    "PassMark",
    "Reading",
    "Sample",
    "Signal",
    "Stop",
    "StopKind",
    "Warn",
    "activity",
    "cleanup_created",
    "cleanup_stopped",
    "clock_jump",
    "covering_exemption",
    "decide",
    "declared_runtime",
    "observe",
    "rebased",
    "runtime_limit_hours",
    "runtime_stop",
    "start_run",
    "stopped",
    "stopped_removal_at",
    "unstarted_removal_at",
    "warned",
]
