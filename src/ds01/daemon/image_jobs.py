"""Image builds and pulls running in ds01d: their output, state and long-polling readers.

A job runs in a thread of its own; its output lines are kept in memory (the last
``MAX_LINES``), numbered from 0 over the whole run, so that a client asking for the lines
``since`` N gets each line once, however often it asks. ``wait`` blocks until there is
something new (a line or the end) or the time is up, like ``GET /v1/queue/{id}?wait=``.
Jobs live as long as the daemon: a finished one is kept ``KEEP_FINISHED_SECONDS`` for late
readers; a restart of ds01d ends the running ones (Docker cancels a build whose client went
away) and forgets them all.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ds01.daemon import schemas as api
from ds01.errors import QuotaExceeded
from ds01.model.text import plain
from ds01.runtime.docker_images import MessageStream

log = logging.getLogger(__name__)

JobKind = Literal["build", "pull"]
JobState = Literal["running", "succeeded", "failed", "cancelled"]

#: Output lines kept per job (older ones are dropped; the numbering goes on).
MAX_LINES = 5000
#: Longest line kept, in characters; a longer one is cut there and ends with ``CUT_MARK``.
MAX_LINE_LENGTH = 4000
#: What ends a line that was cut at ``MAX_LINE_LENGTH``.
CUT_MARK = f" [line cut: longer than {MAX_LINE_LENGTH} characters]"
#: How long a finished job stays readable.
KEEP_FINISHED_SECONDS = 3600.0
#: Jobs one user may have running at once, and all users together.
MAX_RUNNING_PER_USER = 2
MAX_RUNNING = 8


@dataclass
class ImageJob:
    """One build or pull. Mutated only through ``ImageJobs`` (under its condition)."""

    id: str
    kind: JobKind
    user: str
    uid: int
    image: str
    started_at: str
    limits: dict[str, Any] = field(default_factory=dict)
    state: JobState = "running"
    ended_at: str | None = None
    lines: list[str] = field(default_factory=list)
    dropped: int = 0  # lines no longer kept, from the start
    step: int | None = None
    steps: int | None = None
    progress: str | None = None
    message: str | None = None
    image_id: str | None = None
    stream: MessageStream | None = None
    cancel_requested: bool = False
    cancelled_by: str | None = None
    finished_at: float | None = None  # time.monotonic() at the end
    partial: str = ""  # text after the last newline, not a line yet (at most MAX_LINE_LENGTH)
    partial_cut: bool = False  # text of the partial line was dropped past MAX_LINE_LENGTH

    @property
    def total_lines(self) -> int:
        return self.dropped + len(self.lines)

    def info(self, since: int = 0) -> api.ImageJobInfo:
        since = max(since, self.dropped)
        return api.ImageJobInfo(
            id=self.id,
            kind=self.kind,
            user=self.user,
            image=self.image,
            state=self.state,
            started_at=self.started_at,
            ended_at=self.ended_at,
            lines=self.lines[since - self.dropped :],
            since=since,
            next=self.total_lines,
            step=self.step,
            steps=self.steps,
            progress=self.progress,
            message=self.message,
            image_id=self.image_id,
            limits=dict(self.limits),
        )


def _kept(line: str) -> str:
    """``line`` as kept: cut at ``MAX_LINE_LENGTH``, ending with ``CUT_MARK`` if it was."""
    if len(line) <= MAX_LINE_LENGTH or line.endswith(CUT_MARK):
        return line[: MAX_LINE_LENGTH + len(CUT_MARK)]
    return line[:MAX_LINE_LENGTH] + CUT_MARK


class ImageJobs:
    """The jobs of one daemon. Thread-safe."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._jobs: dict[str, ImageJob] = {}

    def running(self, uid: int | None = None) -> list[ImageJob]:
        with self._condition:
            return [
                j
                for j in self._jobs.values()
                if j.state == "running" and (uid is None or j.uid == uid)
            ]

    def check_room(self, uid: int) -> None:
        """Refuse (``QuotaExceeded``) a new job when the user or the machine has too many."""
        with self._condition:
            self._check_room(uid)

    def _check_room(self, uid: int) -> None:
        running = [j for j in self._jobs.values() if j.state == "running"]
        mine = [j for j in running if j.uid == uid]
        if len(mine) >= MAX_RUNNING_PER_USER:
            raise QuotaExceeded(
                f"You have {len(mine)} image builds or pulls running "
                f"({', '.join(j.image for j in mine)}); at most {MAX_RUNNING_PER_USER} at once. "
                "Wait for one to finish."
            )
        if len(running) >= MAX_RUNNING:
            raise QuotaExceeded(
                f"{len(running)} image builds and pulls are running on this machine, the most "
                "ds01 runs at once. Try again in a few minutes."
            )

    def start(
        self,
        kind: JobKind,
        user: str,
        uid: int,
        image: str,
        started_at: str,
        work: Callable[[ImageJob], None],
        limits: dict[str, Any] | None = None,
    ) -> ImageJob:
        """Register a job and run ``work(job)`` in a thread; ``QuotaExceeded`` if no room."""
        with self._condition:
            self._forget_old()
            self._check_room(uid)
            job = ImageJob(
                id=uuid.uuid4().hex[:12],
                kind=kind,
                user=user,
                uid=uid,
                image=image,
                started_at=started_at,
                limits=dict(limits or {}),
            )
            self._jobs[job.id] = job
        thread = threading.Thread(
            target=self._run, args=(job, work), name=f"image-{kind}-{job.id}", daemon=True
        )
        thread.start()
        return job

    def _run(self, job: ImageJob, work: Callable[[ImageJob], None]) -> None:
        try:
            work(job)
        except Exception:  # the job must end, whatever happened
            log.exception("image %s %s crashed", job.kind, job.id)
            self.finish(
                job, "failed", "ds01d hit an internal error; an admin can find details in its log."
            )
        else:
            if job.state == "running":
                self.finish(job, "failed", "The job ended without a result.")

    def _forget_old(self) -> None:
        now = time.monotonic()
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > KEEP_FINISHED_SECONDS:
                del self._jobs[job_id]

    def get(self, job_id: str) -> ImageJob | None:
        with self._condition:
            return self._jobs.get(job_id)

    # -- what a running job reports --------------------------------------------------------

    def add_text(self, job: ImageJob, text: str) -> list[str]:
        """Append output ``text`` (lines end at newlines; the rest waits); return the lines
        it completed.

        The unfinished line is kept to ``MAX_LINE_LENGTH`` characters (what comes after is
        dropped, and the line ends with ``CUT_MARK``), so that output without newlines costs
        memory that is bounded and time in proportion to ``text`` alone."""
        with self._condition:
            *ended, rest = text.split("\n")
            lines = [self._end_line(job, piece) for piece in ended]
            self._extend_partial(job, rest)
            self._append(job, lines)
            if lines:
                self._condition.notify_all()
            return lines

    @staticmethod
    def _extend_partial(job: ImageJob, text: str) -> None:
        room = MAX_LINE_LENGTH - len(job.partial)
        if len(text) > room:
            job.partial_cut = True
        if room > 0 and text:
            job.partial += text[:room]

    def _end_line(self, job: ImageJob, text: str) -> str:
        """The partial line, ended by ``text`` and a newline (marked if it was cut)."""
        self._extend_partial(job, text)
        line = job.partial.rstrip("\r") + (CUT_MARK if job.partial_cut else "")
        job.partial, job.partial_cut = "", False
        return line

    def add_line(self, job: ImageJob, line: str) -> None:
        with self._condition:
            self._append(job, [line])
            self._condition.notify_all()

    def _append(self, job: ImageJob, lines: list[str]) -> None:
        # Plain text: a build's output is the user's, the reader may be an admin's terminal.
        job.lines.extend(_kept(plain(line)) for line in lines)
        extra = len(job.lines) - MAX_LINES
        if extra > 0:
            del job.lines[:extra]
            job.dropped += extra

    def update(self, job: ImageJob, **fields: Any) -> None:
        with self._condition:
            for key, value in fields.items():
                setattr(job, key, value)
            self._condition.notify_all()

    def finish(
        self,
        job: ImageJob,
        state: JobState,
        message: str,
        ended_at: str | None = None,
        image_id: str | None = None,
    ) -> None:
        with self._condition:
            if job.state != "running":
                return
            if job.partial:
                self._append(job, [self._end_line(job, "")])
            job.state = state
            job.message = message
            job.ended_at = ended_at
            job.image_id = image_id or job.image_id
            job.stream = None
            job.finished_at = time.monotonic()
            self._condition.notify_all()

    def cancel(self, job: ImageJob, by: str) -> bool:
        """Ask a running job to stop (``by``: who asks); ``False`` if it is not running."""
        with self._condition:
            if job.state != "running":
                return False
            job.cancel_requested = True
            job.cancelled_by = by
            stream = job.stream
        if stream is not None:
            stream.close()
        return True

    # -- readers ---------------------------------------------------------------------------

    def wait(self, job: ImageJob, since: int, timeout_seconds: float) -> api.ImageJobInfo:
        """The job's lines from ``since`` on, once there are any or the job ended, or as it
        is after ``timeout_seconds``."""
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        with self._condition:
            while job.state == "running" and job.total_lines <= since:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            return job.info(since)


_TABLES: weakref.WeakKeyDictionary[object, ImageJobs] = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def jobs_of(owner: object) -> ImageJobs:
    """The job table of one daemon (``owner``: its service), made on first use."""
    with _TABLES_LOCK:
        table = _TABLES.get(owner)
        if table is None:
            table = _TABLES[owner] = ImageJobs()
        return table


__all__ = [
    "MAX_LINES",
    "MAX_RUNNING",
    "MAX_RUNNING_PER_USER",
    "ImageJob",
    "ImageJobs",
    "JobKind",
    "JobState",
    "jobs_of",
]
