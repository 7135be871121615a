"""The audit log: one JSON object a line in ``<log-dir>/events.jsonl``, written only by ds01d.

Schema: ``ts`` (ISO 8601, UTC), ``user`` (who acted), ``action``
(``container.create``, ``gpu.allocate``, ``auth.denied``, …), ``resource`` (what it acted
on, e.g. ``container/thesis._.1001``), ``details`` (an object, secrets redacted: see
``ds01.events.redact``), ``outcome`` (``success``, ``denied``, ``failure``,
``rolled_back``), plus the hash chain's ``seq`` and ``prev`` (see ``ds01.events.chain``),
which ``ds01 audit verify`` (``ds01.events.verify``) checks.

Writing
    One ``write(2)`` per event on a file opened with ``O_APPEND``, no fsync: an emit costs
    tens of microseconds. The file is opened for each write, so a removed or replaced live
    file or log directory is noticed at once instead of writes vanishing into a deleted
    inode. At each open the file is made mode 0640, owned by the daemon's uid and, when
    ``group_gid`` is given, by the admin group, whatever it was before.

Rotation
    Inside :meth:`EventLog.emit`, once the live file's first event is ``rotate_after_days``
    old (7 by default), or the live file has reached ``max_bytes`` (64 MiB by default;
    ``None``: no size limit): the live file is compressed to a temporary file, fsynced and
    renamed to ``events-<UTC date>-<first seq>.jsonl.gz`` (mode and owner as above), the
    live file is removed, and the oldest rotated files beyond ``keep_files`` (4 by default)
    are deleted. The chain simply continues: the next line's ``prev`` is the hash of the
    rotated file's last line. A rotation that fails is retried ten minutes later; the live
    file meanwhile keeps growing.

Bounded events and repeated refusals
    Every field of an event is bounded when it is made (:class:`Event`,
    ``ds01.events.bound``). Refusals (outcome ``denied``) of a user beyond
    ``refusals_per_action`` of one action or ``refusals_per_user`` in all within
    ``refusal_window_seconds`` are counted instead of written (``ds01.events.throttle``);
    when the window ends (a timer, or the next event) or at :meth:`EventLog.close`, one
    ``audit.suppressed`` event per user records how many of each action were left out.

Failures never reach the caller
    An ``OSError`` while writing (disk full, read-only file system, log directory removed,
    permissions) never raises out of :meth:`EventLog.emit`: the event, already numbered and
    chained, waits in memory (at most ``buffer_limit`` events; later ones are counted and
    dropped) and every later emit tries again, writing the waiting lines in order, so the
    chain has no gap. Each distinct error is logged once (``logging``, logger
    ``ds01.events.log``) and shown by :attr:`EventLog.alarm` and :meth:`EventLog.health`.
    When writing works again, an ``audit.dropped`` event records how many events were lost.

Restart
    A new ``EventLog`` continues ``seq`` and ``prev`` from the last line of the live file (or
    of the newest rotated file when the live file is empty or missing). If that line is
    damaged (not JSON, cut short by a crash, or edited), the chain is continued from the
    hash of its raw bytes and the number after the last intact line, counting each damaged
    line as one event; the first new line is an ``audit.tail_damaged`` event (outcome
    ``failure``). Nothing is rewritten, so ``ds01 audit verify`` still reports the damaged
    line itself. A live file left next to a rotated copy of itself by a crash in the middle
    of a rotation is removed. If a file that is needed cannot be read, nothing is written
    (events wait in memory, the alarm says why) until it can.

On behalf of a user
    Inside :func:`acting_via` (ds01d wraps each request of a hub identity in it), every
    event emitted by that thread carries ``details.via``: the hub that acted for ``user``.

Limits
    A hash chain proves the order and content of every line that has a successor: while
    ds01d runs, editing or removing the newest lines is revealed by the next event (ds01d
    keeps the last hash in memory), but lines edited or cut off at the end while ds01d is
    stopped, or a whole chain rewritten by root, cannot be told from genuine ones. Removing
    the oldest rotated files looks like retention.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import logging
import os
import shutil
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ds01.core.event_query import DAEMON_USER, parse_ts
from ds01.events import chain
from ds01.events.bound import NAME_CHARS, RESOURCE_CHARS, bound_details, bound_text
from ds01.events.redact import REDACTED, redact_details
from ds01.events.throttle import (
    DEFAULT_PER_ACTION,
    DEFAULT_PER_USER,
    DEFAULT_WINDOW_SECONDS,
    SUPPRESSED_ACTION,
    RefusalThrottle,
    Suppressed,
)

__all__ = [
    "REDACTED",
    "AuditAlarm",
    "Event",
    "EventLog",
    "Outcome",
    "acting_via",
    "utc_now",
]

log = logging.getLogger(__name__)

Outcome = Literal["success", "denied", "failure", "rolled_back"]

DEFAULT_ROTATE_AFTER_DAYS = 7.0
DEFAULT_KEEP_FILES = 4
#: Size of the live file (bytes) at which it is rotated, whatever its age.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_BUFFER_LIMIT = 10_000
#: How long to wait before trying a failed rotation again.
ROTATION_RETRY = timedelta(minutes=10)
#: Bytes read at a time when looking for the last line of a file.
_TAIL_CHUNK = 64 * 1024

#: The hub identity the current thread's request comes through (see ``acting_via``).
_VIA: ContextVar[str | None] = ContextVar("ds01_event_via", default=None)


@contextlib.contextmanager
def acting_via(hub: str | None) -> Iterator[None]:
    """Within this block, every event this thread emits names ``hub`` as ``details.via``
    (``None``: nothing added)."""
    token = _VIA.set(hub)
    try:
        yield
    finally:
        _VIA.reset(token)


class Event(BaseModel):
    """One event as the daemon describes it (the log adds ``seq`` and ``prev``).

    Every field is bounded when the event is made (``ds01.events.bound``): ``user`` and
    ``action`` to 64 characters, ``resource`` to 256, ``details`` to about 8 KiB of JSON,
    each cut visibly marked; so no caller can write an unbounded line.
    """

    model_config = ConfigDict(frozen=True)

    ts: str
    user: str
    action: str
    resource: str
    details: dict[str, Any] = Field(default_factory=dict)
    outcome: Outcome = "success"

    @field_validator("user", "action")
    @classmethod
    def _bound_name(cls, value: str) -> str:
        return bound_text(value, NAME_CHARS)

    @field_validator("resource")
    @classmethod
    def _bound_resource(cls, value: str) -> str:
        return bound_text(value, RESOURCE_CHARS)

    @field_validator("details")
    @classmethod
    def _bound_details(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bound_details(value)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class AuditAlarm:
    """The log cannot be written: what admins see while it lasts.

    Attributes:
        message: the last error, e.g. ``cannot write …/events.jsonl: No space left on device``.
        since: when the first failed write of this outage happened (UTC).
        last: when the last one happened (UTC).
        failures: failed write attempts in this outage.
        buffered: events waiting in memory to be written.
        dropped: events lost since the start because the buffer was full.
    """

    message: str
    since: datetime
    last: datetime
    failures: int
    buffered: int
    dropped: int


@dataclass
class _Outage:
    """Failed writes since the last one that worked."""

    message: str
    since: datetime
    last: datetime
    failures: int


@dataclass(frozen=True)
class _Resume:
    """Where the chain continues, read from the files at start."""

    next_seq: int
    prev: str
    needs_newline: bool  # the live file ends in the middle of a line
    damaged: str | None  # why the last line is not an intact event, if it is not
    live_start: datetime | None  # time of the live file's first event
    live_first_seq: int | None


class EventLog:
    """Append-only, hash-chained, rotating JSONL writer, safe to call from many threads.

    Args:
        path: the live file, ``<log-dir>/events.jsonl``; rotated files go next to it.
        clock: returns the current time (UTC, timezone-aware); injected by tests.
        group_gid: gid to own the files (the admin group), or ``None`` to leave the group
            the files get when created (the daemon's).
        rotate_after_days: rotate when the live file's first event is this many days old.
        max_bytes: rotate when the live file has this many bytes (``None``: no limit).
        keep_files: rotated files to keep; older ones are deleted (0: keep none).
        buffer_limit: events kept in memory while the file cannot be written.
        refusal_window_seconds, refusals_per_action, refusals_per_user: how many refusals
            of one user are written per window (``ds01.events.throttle``).
        summary_timer: write a window's ``audit.suppressed`` summary from a timer thread
            when the window ends (off: at the next event or :meth:`flush_due`).

    Raises:
        ValueError: a limit is out of range. Nothing else: an unreadable or unwritable log
            raises the alarm (:attr:`alarm`) instead.
    """

    def __init__(
        self,
        path: Path,
        clock: Callable[[], datetime] = utc_now,
        *,
        group_gid: int | None = None,
        rotate_after_days: float = DEFAULT_ROTATE_AFTER_DAYS,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        keep_files: int = DEFAULT_KEEP_FILES,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        refusal_window_seconds: float = DEFAULT_WINDOW_SECONDS,
        refusals_per_action: int = DEFAULT_PER_ACTION,
        refusals_per_user: int = DEFAULT_PER_USER,
        summary_timer: bool = True,
    ) -> None:
        if not rotate_after_days > 0:
            raise ValueError(f"rotate_after_days must be more than 0, got {rotate_after_days}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be 1 or more, got {max_bytes}")
        if keep_files < 0:
            raise ValueError(f"keep_files must be 0 or more, got {keep_files}")
        if buffer_limit < 1:
            raise ValueError(f"buffer_limit must be 1 or more, got {buffer_limit}")
        self.path = path
        self.group_gid = group_gid
        self._clock = clock
        self._lock = threading.Lock()
        self._uid = os.geteuid()
        self._rotate_after = timedelta(days=rotate_after_days)
        self._max_bytes = max_bytes
        self._live_bytes = 0  # size of the live file after the last write
        self._throttle = RefusalThrottle(
            refusal_window_seconds, refusals_per_action, refusals_per_user
        )
        self._summary_timer = summary_timer
        self._timer: threading.Timer | None = None
        self._keep_files = keep_files
        self._buffer_limit = buffer_limit
        # The chain; _next_seq is None until it could be read from the files.
        self._next_seq: int | None = None
        self._prev = chain.GENESIS
        self._needs_newline = False
        self._live_start: datetime | None = None
        self._live_first_seq: int | None = None
        self._rotation_retry_at: datetime | None = None
        # Events not yet written: records not yet numbered (only while the chain is not
        # resumed), then numbered lines.
        self._records: deque[dict[str, Any]] = deque()
        self._lines = bytearray()
        self._line_count = 0
        self._lines_first_seq: int | None = None
        # Failures.
        self._dropped = 0
        self._unreported_count = 0  # events dropped since the last audit.dropped event
        self._unreported_span: tuple[str, str] = ("", "")  # ts of the first and last of them
        self._outage: _Outage | None = None
        self._last_error: tuple[str, datetime] | None = None
        self._logged: set[str] = set()
        self._listeners: list[Callable[[Event], None]] = []
        with self._lock:
            self._flush(clock(), probe=True)  # creates the live file with its mode and owner

    # -- the public surface ---------------------------------------------------------------

    def emit(
        self,
        action: str,
        *,
        user: str,
        resource: str,
        details: dict[str, Any] | None = None,
        outcome: Outcome = "success",
    ) -> Event:
        """Log one event and return it (``details`` redacted, every field bounded); a
        refusal beyond the throttle's limits is counted instead of written (see the module
        docstring). Never raises ``OSError``."""
        via = _VIA.get()
        if via is not None:
            details = {**(details or {}), "via": via}
        with self._lock:
            now = self._clock()
            event = Event(
                ts=now.isoformat(timespec="milliseconds"),
                user=user,
                action=action,
                resource=resource,
                details=redact_details(details or {}),
                outcome=outcome,
            )
            self._summarise(self._throttle.due(now), now)
            if self._throttled(event) and not self._throttle.admit(event.user, action, now):
                self._arm_timer(now)
            else:
                self._records.append(event.model_dump())
            self._maybe_rotate(now)
            self._flush(now)
            if self._buffered > self._buffer_limit:
                self._drop_newest()
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener never fails an emit
                log.exception("event listener %r failed", listener)
        return event

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` after every :meth:`emit`, in the emitting thread and
        outside the log's lock (e.g. the exporter's counters). Subscribe before the
        daemon's threads start; a listener that raises is logged and skipped."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Write the summaries of refusals left out so far, and try once more to write the
        events still waiting (call at shutdown)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            now = self._clock()
            self._summarise(self._throttle.drain(), now)
            self._flush(now)

    def flush_due(self) -> None:
        """Write the summaries of the refusal windows that have ended (the timer calls it)."""
        with self._lock:
            self._timer = None
            now = self._clock()
            summaries = self._throttle.due(now)
            if summaries:
                self._summarise(summaries, now)
                self._maybe_rotate(now)
                self._flush(now)
            self._arm_timer(now)

    # -- refusals left out ---------------------------------------------------------------------

    @staticmethod
    def _throttled(event: Event) -> bool:
        """Whether ``event`` counts against its user's refusal limits."""
        return (
            event.outcome == "denied"
            and event.user != DAEMON_USER
            and not event.action.startswith("audit.")
        )

    def _summarise(self, summaries: list[Suppressed], now: datetime) -> None:
        """Queue one ``audit.suppressed`` event per summary."""
        for summary in summaries:
            self._records.append(
                Event(
                    ts=now.isoformat(timespec="milliseconds"),
                    user=summary.user,
                    action=SUPPRESSED_ACTION,
                    resource=f"user/{summary.user}",
                    details=summary.details(),
                    outcome="denied",
                ).model_dump()
            )

    def _arm_timer(self, now: datetime) -> None:
        """Have :meth:`flush_due` run when the next summary is due (if none is armed)."""
        due = self._throttle.next_due()
        if not self._summary_timer or self._timer is not None or due is None:
            return
        delay = max((due - now).total_seconds(), 0.0) + 0.05
        self._timer = threading.Timer(delay, self.flush_due)
        self._timer.daemon = True
        self._timer.start()

    @property
    def alarm(self) -> AuditAlarm | None:
        """The current outage, or ``None`` while the log can be written."""
        with self._lock:
            outage = self._outage
            if outage is None:
                return None
            return AuditAlarm(
                message=outage.message,
                since=outage.since,
                last=outage.last,
                failures=outage.failures,
                buffered=self._buffered,
                dropped=self._dropped,
            )

    def health(self) -> dict[str, Any]:
        """For doctor and metrics, JSON-ready.

        Keys: ``path``; ``writable`` (the last write worked); ``last_error`` and
        ``last_error_at`` (ISO 8601; the last failure of any kind, also after recovery, or
        ``None``); ``failures`` (failed writes in the current outage); ``buffered``
        (events waiting in memory); ``dropped`` (events lost since the start); ``next_seq``
        (``None`` while the files could not be read).
        """
        with self._lock:
            error, error_at = self._last_error or (None, None)
            return {
                "path": str(self.path),
                "writable": self._outage is None,
                "last_error": error,
                "last_error_at": error_at.isoformat(timespec="seconds") if error_at else None,
                "failures": self._outage.failures if self._outage else 0,
                "buffered": self._buffered,
                "dropped": self._dropped,
                "next_seq": self._next_seq,
            }

    # -- buffering and writing --------------------------------------------------------------

    @property
    def _buffered(self) -> int:
        return len(self._records) + self._line_count

    def _drop_newest(self) -> None:
        """Forget the newest waiting event (the buffer is full); the chain stays gapless."""
        if self._records:
            record = self._records.pop()
        else:  # already numbered: take back its number and the hash before it
            start = self._lines.rfind(b"\n", 0, len(self._lines) - 1) + 1
            record = json.loads(self._lines[start:])
            del self._lines[start:]
            self._line_count -= 1
            self._next_seq, self._prev = record["seq"], record["prev"]
        first = self._unreported_span[0] if self._unreported_count else record["ts"]
        self._unreported_span = (first, record["ts"])
        self._unreported_count += 1
        self._dropped += 1

    def _number(self) -> None:
        """Give the waiting records their ``seq`` and ``prev`` and encode them."""
        assert self._next_seq is not None
        while self._records:
            record = self._records.popleft()
            record["seq"] = self._next_seq
            record["prev"] = self._prev
            raw = chain.encode(record)
            if not self._line_count:
                self._lines_first_seq = self._next_seq
            self._lines += raw + b"\n"
            self._line_count += 1
            self._prev = chain.line_hash(raw)
            self._next_seq += 1

    def _flush(self, now: datetime, *, probe: bool = False) -> None:
        """Write everything waiting, in order; on failure keep it and raise the alarm.

        With nothing to write, the live file is only opened (and created) when ``probe``
        is true or during an outage, to find out whether it is over.
        """
        if not self._resume(now):
            return
        self._number()
        if not (self._lines or probe or self._outage):
            return
        try:
            self._append(self._lines, now)
        except OSError as exc:
            self._failed(f"cannot write {self.path}: {_reason(exc)}", now)
            return
        self._lines.clear()
        self._line_count = 0
        self._recovered(now)
        if self._unreported_count:
            first, last = self._unreported_span
            details = {"count": self._unreported_count, "first_ts": first, "last_ts": last}
            self._unreported_count = 0
            self._records.append(self._own_event("audit.dropped", now, details))
            self._flush(now)

    def _own_event(self, action: str, now: datetime, details: dict[str, Any]) -> dict[str, Any]:
        """A record of an event about the log itself."""
        return Event(
            ts=now.isoformat(timespec="milliseconds"),
            user=DAEMON_USER,
            action=action,
            resource=f"audit/{self.path.name}",
            details=details,
            outcome="failure",
        ).model_dump()

    def _append(self, data: bytes | bytearray, now: datetime) -> None:
        """Append ``data`` (whole lines) to the live file in one write, or not at all.

        Raises:
            OSError: the file could not be opened or written; a partial write is undone.
        """
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, chain.FILE_MODE)
        try:
            st = os.fstat(fd)
            self._enforce_owner(fd, st, self.path)
            if not data:
                return
            if st.st_size == 0:  # a new live file
                self._needs_newline = False
                self._live_start = now
                self._live_first_seq = self._lines_first_seq
            payload = memoryview(b"\n" + data if self._needs_newline else data)
            written = 0
            try:
                while written < len(payload):
                    n = os.write(fd, payload[written:])
                    if n <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    written += n
            except OSError:
                if written:
                    self._undo_partial_write(fd, st.st_size)
                raise
            self._needs_newline = False
            self._live_bytes = st.st_size + written
        finally:
            os.close(fd)

    def _undo_partial_write(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            self._needs_newline = True  # start the next write on a line of its own
            self._log_once(f"cannot undo a partial write to {self.path}: {_reason(exc)}")

    def _enforce_owner(self, fd: int, st: os.stat_result, path: Path) -> None:
        """Make an open log file mode 0640, owned by the daemon and the admin group."""
        try:
            if stat.S_IMODE(st.st_mode) != chain.FILE_MODE:
                os.fchmod(fd, chain.FILE_MODE)
            gid = self.group_gid
            if st.st_uid != self._uid or (gid is not None and st.st_gid != gid):
                os.fchown(fd, self._uid, -1 if gid is None else gid)
        except OSError as exc:
            self._log_once(f"cannot set the mode or owner of {path}: {_reason(exc)}")

    # -- failures ---------------------------------------------------------------------------

    def _failed(self, message: str, now: datetime) -> None:
        if self._outage is None:
            self._outage = _Outage(message, since=now, last=now, failures=1)
        else:
            self._outage.message, self._outage.last = message, now
            self._outage.failures += 1
        self._last_error = (message, now)
        self._log_once(f"{message} (events wait in memory and are written when it works)")

    def _recovered(self, now: datetime) -> None:
        outage = self._outage
        if outage is None:
            return
        self._outage = None
        self._logged.clear()
        log.warning(
            "event log %s writable again after %d failed attempt(s) since %s; %d event(s) lost",
            self.path,
            outage.failures,
            outage.since.isoformat(timespec="seconds"),
            self._dropped,
        )

    def _log_once(self, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.error("%s", message)

    # -- start: where the chain continues -------------------------------------------------

    def _resume(self, now: datetime) -> bool:
        """Read where the chain continues (once). False (alarm raised) if that failed."""
        if self._next_seq is not None:
            return True
        try:
            with contextlib.suppress(FileExistsError):  # a file there: reading says so
                self.path.parent.mkdir(parents=True, exist_ok=True)
            _finish_interrupted_rotation(self.path)
            state = _read_resume(self.path, now)
        except (OSError, EOFError) as exc:
            self._failed(f"cannot read {self.path}: {_reason(exc)}", now)
            return False
        self._next_seq = state.next_seq
        self._prev = state.prev
        self._needs_newline = state.needs_newline
        self._live_start = state.live_start
        self._live_first_seq = state.live_first_seq
        if state.damaged:
            log.warning("%s: %s; the chain continues after it", self.path, state.damaged)
            details = {"reason": state.damaged, "seq": state.next_seq - 1}
            self._records.appendleft(self._own_event("audit.tail_damaged", now, details))
        return True

    # -- rotation ---------------------------------------------------------------------------

    def _maybe_rotate(self, now: datetime) -> None:
        start = self._live_start
        if start is None:
            return
        full = self._max_bytes is not None and self._live_bytes >= self._max_bytes
        if not full and abs(now - start) < self._rotate_after:  # abs: the clock went back
            return
        if self._rotation_retry_at is not None and now < self._rotation_retry_at:
            return
        try:
            self._rotate(start)
        except (OSError, EOFError) as exc:
            self._rotation_retry_at = now + ROTATION_RETRY
            self._last_error = (f"cannot rotate {self.path}: {_reason(exc)}", now)
            self._log_once(f"{self._last_error[0]} (retried in {ROTATION_RETRY})")
            return
        self._rotation_retry_at = None
        self._live_start = None
        self._live_first_seq = None
        self._live_bytes = 0
        self._prune()

    def _rotate(self, start: datetime) -> None:
        """Compress the live file to its rotated name (atomically) and remove it."""
        try:
            if self.path.stat().st_size == 0:
                return
        except FileNotFoundError:
            return
        directory = self.path.parent
        first_seq = self._live_first_seq or self._next_seq or 1
        copy = 0
        while (directory / chain.rotated_name(self.path, start, first_seq, copy)).exists():
            copy += 1
        final = directory / chain.rotated_name(self.path, start, first_seq, copy)
        tmp = directory / f".{final.name}.tmp"
        try:
            with self.path.open("rb") as source:
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = os.open(tmp, flags, chain.FILE_MODE)
                with open(fd, "wb") as target:
                    self._enforce_owner(fd, os.fstat(fd), final)
                    mtime = int(start.timestamp())
                    with gzip.GzipFile(filename="", mode="wb", fileobj=target, mtime=mtime) as gz:
                        shutil.copyfileobj(source, gz, 1024 * 1024)
                        if self._needs_newline:
                            gz.write(b"\n")
                    target.flush()
                    os.fsync(target.fileno())
            os.rename(tmp, final)
            _fsync_dir(directory)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        try:
            self.path.unlink()
        except OSError:
            _unlink_quietly(final)  # both would hold the same lines
            raise
        self._needs_newline = False
        _fsync_dir(directory)

    def _prune(self) -> None:
        """Delete the oldest rotated files beyond ``keep_files``."""
        try:
            files = chain.rotated_files(self.path)
            for old in files[: max(0, len(files) - self._keep_files)]:
                old.unlink()
        except OSError as exc:
            self._last_error = (f"cannot delete old event logs: {_reason(exc)}", self._clock())
            self._log_once(self._last_error[0])


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _finish_interrupted_rotation(live: Path) -> None:
    """Remove a live file that a crash left next to its rotated, compressed copy."""
    rotated = chain.rotated_files(live)
    if not rotated:
        return
    try:
        head = chain.first_line(live)
    except FileNotFoundError:
        return
    try:
        rotated_head = chain.first_line(rotated[-1])
    except (OSError, EOFError):
        return  # verify reports it; the live file is needed either way
    if head is not None and head == rotated_head:
        log.warning("%s was already rotated to %s; removing it", live, rotated[-1].name)
        live.unlink()


def lines_backwards(path: Path) -> Iterator[bytes]:
    """The lines of a plain file from the last to the first, without newlines."""
    with path.open("rb") as stream:
        position = stream.seek(0, os.SEEK_END)
        rest = b""
        while position > 0:
            step = min(_TAIL_CHUNK, position)
            position -= step
            stream.seek(position)
            lines = (stream.read(step) + rest).split(b"\n")
            rest = lines[0]
            yield from reversed(lines[1:])
        yield rest


@dataclass(frozen=True)
class _Tail:
    """The end of one file of the chain."""

    last: bytes | None  # the last non-empty line
    last_seq: int | None  # seq of the last chained line, None if there is none
    after: int  # lines after that one (or in all, if none): damaged, so one event each


def _tail(lines_backwards: Iterable[bytes]) -> _Tail:
    last = None
    after = 0
    for raw in lines_backwards:
        if not raw:
            continue
        if last is None:
            last = raw
        fields = chain.chain_fields(raw)
        if fields is not None and fields.seq is not None:
            return _Tail(last, fields.seq, after)
        after += 1
    return _Tail(last, None, after)


def _read_resume(live: Path, now: datetime) -> _Resume:
    """Where the chain continues: after the last chained line of the live file, else of the
    newest rotated file, counting every damaged line after it as one event (as verify
    does), else at the start (``seq`` 1, ``prev`` the genesis value).

    Raises:
        OSError, EOFError: a file that is needed cannot be read.
    """
    try:
        size = live.stat().st_size
    except FileNotFoundError:
        size = 0
    tail = _tail(lines_backwards(live)) if size else _Tail(None, None, 0)
    if tail.last_seq is not None:
        next_seq = tail.last_seq + 1 + tail.after
    else:
        rotated = chain.rotated_files(live)
        older = _tail(reversed(list(chain.iter_lines(rotated[-1])))) if rotated else None
        if older is not None and older.last_seq is not None:
            next_seq = older.last_seq + 1 + older.after + tail.after
        else:
            next_seq = 1
        if tail.last is None and older is not None:
            tail = older
    prev = chain.line_hash(tail.last) if tail.last is not None else chain.GENESIS
    if not size:
        return _Resume(next_seq, prev, False, None, None, None)
    with live.open("rb") as stream:
        stream.seek(-1, os.SEEK_END)
        needs_newline = stream.read(1) != b"\n"
    damaged = None
    if tail.last is not None and chain.chain_fields(tail.last) is None:
        damaged = "its last line is not an intact event (cut short or edited)"
    head = chain.first_line(live)
    head_fields = chain.chain_fields(head) if head else None
    return _Resume(
        next_seq=next_seq,
        prev=prev,
        needs_newline=needs_newline,
        damaged=damaged,
        live_start=parse_ts(head_fields.ts if head_fields else None) or now,
        live_first_seq=head_fields.seq if head_fields and head_fields.seq else next_seq,
    )
