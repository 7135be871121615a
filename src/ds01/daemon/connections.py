"""ds01d's connections: accepted, read and answered without one thread per connection.

The API socket is open to every local user, so one user's connections must not be able to
starve the others (before: one thread per connection and no timeouts, so 3,000 idle
connections held 3,008 threads, and 5,000 made everyone's requests fail). Here:

1. **Accept.** One thread (the caller of :meth:`ConnectionServer.serve_forever`) accepts,
   reads the peer's uid (``SO_PEERCRED``) and admits the connection only under the per-uid
   and total caps (:class:`ds01.core.admission.ConnectionTable`). A refused connection gets
   one small JSON error (HTTP 429, or 503 when ds01d is full) and is closed at once: no
   thread, no traceback, one log line per uid and minute (``RefusalNotices``).
2. **Read.** The same thread reads every admitted connection through a selector until a
   whole request (head and ``Content-Length`` body) is there. A request must arrive in full
   within ``request_read_s`` of its first byte (408 otherwise), and a connection may stay
   idle ``idle_s`` between requests: a client that sends a byte a second holds no thread and
   only until then.
3. **Run.** A complete request goes to one of two bounded pools (:class:`Lane`): ordinary
   requests to ``workers``, requests that wait (long polls, terminals) to ``waiting``. In
   each pool one uid runs at most its share (``ds01.core.admission.WorkShares``, fair
   between uids), so others always find a worker; the ordinary pool keeps slots for root
   and admins. A uid that already has its share of waiting requests gets 429.
   A hub identity (``hub_caps``) has caps of its own: more connections at accept; each
   user it names in ``X-Ds01-On-Behalf-Of`` is a party of its own in the pools, with a
   user's share and at most ``user_requests`` open; its users together take at most
   ``workers`` and ``waiting`` slots (``ds01.core.admission.HubCaps``).
4. **Answer.** The worker answers on the connection (``write_s`` bounds a client that does
   not read); a keep-alive connection then goes back to step 2.
5. **Drain.** :meth:`ConnectionServer.drain` (on SIGTERM) stops the reactor from running
   anything new: a request read in full from then on, on a new or a kept connection, is
   refused at once (503, "nothing was done"). Requests that only wait to read (long polls)
   are answered at once that ds01d stopped waiting; every other request already handed to
   a lane runs to its end. When none is left, or at the drain deadline, the reactor returns;
   a request still running then is answered that its outcome is unknown (and logged), one
   not yet begun that nothing was done. Whoever answers first, the worker or the drain,
   writes the only answer (:class:`Reply`): every client learns whether its request ran.

The HTTP/API layer (``ds01.daemon.server``) gives the request's bytes, the caller's
credentials and the socket (:class:`Exchange`) and says whether to keep the connection.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import os
import pwd
import resource
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from pathlib import Path
from typing import Literal

from ds01.core.admission import (
    ConnectionTable,
    Group,
    HubCaps,
    Notice,
    Party,
    RefusalNotices,
    RequestRefusal,
    Share,
    WorkShares,
    party_of,
    request_refusal,
)
from ds01.errors import (
    DaemonStopping,
    Ds01Error,
    InvalidInput,
    OutcomeUnknown,
    RequestTimeout,
    ServerBusy,
    Throttled,
)
from ds01.model.hub import ON_BEHALF_HEADER
from ds01.model.text import visible
from ds01.runtime.identity import PeerCredentials, peer_credentials

log = logging.getLogger(__name__)

#: Every request body is a small JSON object.
MAX_BODY_BYTES = 64 * 1024

LaneName = Literal["workers", "waiting"]

#: Seconds the drain still waits, after its deadline, for answers already being written.
ANSWER_GRACE_S = 2.0

STOPPING_MESSAGE = (
    "ds01d is stopping, so it did not run this request: nothing was done. Try again when "
    "ds01d is back."
)
STOPPED_WAITING_MESSAGE = (
    "ds01d is stopping, so it stopped this wait; waiting changed nothing. A queued request "
    "stays in the queue and starts when ds01d is back (`ds01 queue` shows it then); a "
    "running image build or pull ends with ds01d. Ask again when ds01d is back."
)


def outcome_unknown_message(request: str) -> str:
    """What a client is told when ds01d stopped while its request (``request``: its method
    and path) was still running."""
    return (
        f"ds01d stopped while still running this request ({request}): whether it took "
        "effect is unknown. When ds01d is back, `ds01 container-list` (or `ds01 images`, "
        "`ds01 queue`) shows how things are; `ds01 events` lists what ds01d did."
    )


@dataclass(frozen=True)
class ConnectionLimits:
    """Every bound on ds01d's connections, with why it is what it is."""

    #: Connections one uid may hold at once. A CLI command holds one while it runs, so 64
    #: leaves room for a user's parallel scripts (40 at the same moment are tested), while one
    #: user holds at most 64 descriptors and 64 request buffers.
    per_uid_connections: int = 64
    #: Connections in all: far more than a lab runs commands at once, well below the
    #: descriptor limit ds01d sets itself (``fd_reserve`` more).
    total_connections: int = 1024
    #: Descriptors kept for everything else (Docker, SQLite, logs, cgroup files, terminals).
    fd_reserve: int = 512
    #: Seconds from a request's first byte until its head and body are all there: a
    #: slowloris client is closed (408) after this, whatever its pace.
    request_read_s: float = 10.0
    #: Seconds a connection may stay open with no request (before its first, or between
    #: keep-alive requests).
    idle_s: float = 60.0
    #: Seconds to write one answer in all (a client that stops reading is dropped).
    write_s: float = 30.0
    #: Longest request head (request line and headers) in bytes; longer ones get 431.
    max_head_bytes: int = 64 * 1024
    #: Workers for ordinary requests: 32 in all (Docker calls wait on dockerd, not on the
    #: CPU), 8 at most for one uid, 2 only for root and admins.
    workers: Share = field(default_factory=lambda: Share(slots=32, per_uid=8, reserved=2))
    #: Workers for requests that wait (long polls up to 60 s; terminals for their life):
    #: 16 at most for one uid (then 429), 128 in all.
    waiting: Share = field(default_factory=lambda: Share(slots=128, per_uid=16))
    #: Seconds an idle worker thread lives before it exits (the pools shrink when quiet).
    worker_idle_s: float = 30.0
    #: Seconds between two log lines (and audit events) about one uid's refusals of a kind.
    notice_interval_s: float = 60.0


DEFAULT_LIMITS = ConnectionLimits()

#: Seconds between two sweeps for connections past their deadline.
_SWEEP_S = 0.25
#: Seconds the listener rests when ds01d ran out of file descriptors.
_EMFILE_PAUSE_S = 0.1
_RECV_BYTES = 65536
_ACCEPTS_PER_WAKE = 64


def declared_body_length(headers: Message) -> int | None:
    """The body length a request's ``Content-Length`` declares, or ``None`` when it is
    malformed or over ``MAX_BODY_BYTES`` (the request is then refused without its body).
    A missing header is an empty body."""
    text = headers.get("Content-Length") or "0"
    if not (text.isascii() and text.isdigit()):
        return None
    length = int(text)
    return length if length <= MAX_BODY_BYTES else None


ReplyState = Literal["queued", "running", "answering", "taken"]


class Reply:
    """Who writes the answer of one exchange: the worker that runs the request, or the
    drain when it cuts the exchange short. Decided once, so a client never gets two answers
    or half of one. Thread-safe.

    ``queued`` (handed to a lane) → ``running`` (:meth:`run`) → ``answering`` (the worker's
    first write, :meth:`claim`); or, from ``queued`` or ``running``, ``taken`` (:meth:`take`):
    the drain answered, and the worker writes nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: ReplyState = "queued"

    @property
    def state(self) -> ReplyState:
        return self._state

    def run(self) -> bool:
        """The worker is about to run the request: ``False`` when the drain answered it."""
        with self._lock:
            if self._state == "taken":
                return False
            self._state = "running"
            return True

    def claim(self) -> bool:
        """The worker is about to write (its first write claims the answer): ``False`` when
        the drain answered it."""
        with self._lock:
            if self._state == "taken":
                return False
            self._state = "answering"
            return True

    def take(self) -> ReplyState | None:
        """The drain takes the answer over: returns the state it took it from (``queued``:
        the request never ran; ``running``: it may have taken effect), or ``None`` when the
        worker already writes its own answer."""
        with self._lock:
            if self._state in ("answering", "taken"):
                return None
            was = self._state
            self._state = "taken"
            return was


@dataclass
class Exchange:
    """One complete request on an admitted connection, for the HTTP layer.

    ``data``: the request's bytes (head and body; after an early end of file, whatever
    came). ``read_ahead``: bytes the client sent after it (a terminal's first input).
    ``reply``: the HTTP layer claims it before every write (:meth:`Reply.claim`).
    """

    sock: socket.socket
    creds: PeerCredentials
    data: bytes
    read_ahead: bytes = b""
    reply: Reply = field(default_factory=Reply)

    @property
    def request_line(self) -> str:
        """The request's method and path, for logs and messages (clipped; control characters
        written as escapes: the client chose them)."""
        words = self.data.split(b"\n", 1)[0].decode("latin-1").split()
        return visible(" ".join(words[:2])[:200])


#: The HTTP layer: answers one exchange; returns whether the connection may be kept.
Handler = Callable[[Exchange], bool]
#: Which lane a request goes to, from its bytes (head and ``Content-Length`` body, as read).
Classifier = Callable[[bytes], LaneName]
#: Whether a request line only waits to read (a long poll): the drain answers it at once.
WaitOnly = Callable[[bytes], bool]


class _Conn:
    """An admitted connection, owned by the reactor thread while it is not being answered.
    ``hub``: the caps of the hub identity it comes from, as they were at accept."""

    __slots__ = (
        "buf", "creds", "deadline", "eof", "head_end", "hub", "need", "reading", "scan", "sock"
    )  # fmt: skip

    def __init__(
        self, sock: socket.socket, creds: PeerCredentials, deadline: float, hub: HubCaps | None
    ) -> None:
        self.sock = sock
        self.creds = creds
        self.hub = hub
        self.buf = bytearray()
        self.deadline = deadline
        self.reading = False  # a request has begun (its deadline is the read deadline)
        self.eof = False
        self.reset()

    def reset(self) -> None:
        self.scan = 0  # where the search for the end of the head resumes
        self.head_end: int | None = None
        self.need: int | None = None  # the whole request's length, once known


def _head_end(buf: bytearray, start: int) -> tuple[int | None, int]:
    """Where the request head in ``buf`` ends (after its empty line), as ``http.server``
    reads it: a request line, then header lines up to an empty one. Returns (end or
    ``None``, where to resume the search)."""
    first = buf.find(b"\n")
    if first < 0:
        return None, 0
    if not buf[:first].strip(b"\r"):
        return first + 1, first + 1  # an empty request line: the handler closes
    pos = max(start, first + 1)
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return None, pos
        if nl == pos or (nl == pos + 1 and buf[pos] == 0x0D):
            return nl + 1, nl + 1
        pos = nl + 1


def _parse_headers(head: bytes) -> Message | None:
    """The headers of a request head, parsed as ``http.server`` parses them (``None``
    when it would refuse them: too long a line, too many)."""
    lines = io.BytesIO(head)
    lines.readline()  # the request line
    try:
        return http.client.parse_headers(lines)
    except (http.client.HTTPException, ValueError):
        return None


def _on_behalf_of(head: bytes) -> str | None:
    """The user a request head names in ``ON_BEHALF_HEADER`` (clipped), if any."""
    headers = _parse_headers(head)
    value = None if headers is None else headers.get(ON_BEHALF_HEADER)
    name = (value or "").strip()[:64]
    return name or None


def _wants_continue(headers: Message) -> bool:
    return (headers.get("Expect") or "").lower() == "100-continue"


def ds01_error_body(error: Ds01Error) -> bytes:
    """``error`` in ds01's error shape, the API socket's."""
    return json.dumps({"error": error.to_dict()}, separators=(",", ":")).encode()


def error_answer(
    error: Ds01Error,
    status_code: int | None = None,
    error_body: Callable[[Ds01Error], bytes] = ds01_error_body,
) -> bytes:
    """A whole HTTP answer carrying ``error`` (in ``error_body``'s shape, as HTTP
    ``status_code``, by default the error's own); the connection closes after it."""
    body = error_body(error)
    status = HTTPStatus(status_code or error.http_status)
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Lane:
    """A bounded pool of worker threads that runs jobs fairly between uids.

    Threads are started when work waits and none is idle, up to ``share.slots``, and end
    after ``idle_s`` without work. Thread-safe.
    """

    def __init__(self, name: str, share: Share, idle_s: float) -> None:
        self.name = name
        self.share = share
        self.idle_s = idle_s
        self._shares: WorkShares[Callable[[], None]] = WorkShares(share)
        self._cond = threading.Condition()
        self._threads = 0
        self._idle = 0
        self._started = 0
        self._stopping = False

    def load(self, party: Party) -> int:
        """Jobs of ``party`` running or ready to run."""
        with self._cond:
            return self._shares.running(party) + self._shares.waiting(party)

    def group_load(self, name: int) -> int:
        """Jobs running or ready of the parties of group ``name`` (a hub's users)."""
        with self._cond:
            return self._shares.group_load(name)

    def submit(
        self,
        party: Party,
        job: Callable[[], None],
        *,
        privileged: bool = False,
        group: Group | None = None,
    ) -> None:
        with self._cond:
            self._shares.submit(party, job, privileged=privileged, group=group)
            # More ready jobs than threads waiting for one (a woken thread counts as waiting
            # until it runs): start one more.
            if self._shares.waiting() > self._idle and self._threads < self.share.slots:
                self._threads += 1
                self._started += 1
                threading.Thread(
                    target=self._work, name=f"ds01d-{self.name}-{self._started}", daemon=True
                ).start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _next(self) -> tuple[Party, Callable[[], None], bool] | None:
        """The next job for this thread, or ``None`` when the thread should end."""
        with self._cond:
            while not self._stopping:
                picked = self._shares.take()
                if picked is not None:
                    return picked
                self._idle += 1
                woken = self._cond.wait(self.idle_s)
                self._idle -= 1
                if not woken:
                    picked = None if self._stopping else self._shares.take()
                    if picked is not None:
                        return picked
                    break
            self._threads -= 1
            return None

    def _work(self) -> None:
        while (picked := self._next()) is not None:
            party, job, privileged = picked
            try:
                job()
            except Exception:  # a job handles its own errors; this is a bug
                log.exception("%s job crashed", self.name)
            finally:
                with self._cond:
                    # The slot is free: this thread takes the next job itself.
                    self._shares.done(party, privileged=privileged)


def _raise_fd_limit(wanted: int) -> int:
    """Raise the soft descriptor limit towards ``wanted`` (never above the hard limit);
    return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return wanted if soft == resource.RLIM_INFINITY else soft


class Waker:
    """A wake-up that a thread waiting in ``select`` watches beside its sockets: ``wake``
    (any thread; never blocks) makes ``fileno`` readable until ``woken`` takes the wake-ups
    sent so far."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (it wakes anyway) or closed (it ended)
            self._writer.send(b"\0")

    def woken(self) -> None:
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class ConnectionServer:
    """Accepts and reads connections on a listening unix socket and hands each complete
    request to ``handler`` on a bounded lane chosen by ``classify`` (from the request's
    bytes: its head and body).

    ``is_privileged(uid)`` says whether a uid may use the reserved workers (root always);
    ``hub_caps(uid)`` the caps of a hub identity (``None``: the uid is none), asked once per
    connection, at accept;
    ``wait_only(request_line)`` whether a request only waits to read (the drain answers it
    at once). :meth:`serve_forever` runs in the calling thread until a :meth:`drain` is
    over; then ``cut_short`` names the requests whose clients were told that their outcome
    is unknown.
    """

    def __init__(
        self,
        listener: socket.socket,
        handler: Handler,
        classify: Classifier,
        *,
        limits: ConnectionLimits = DEFAULT_LIMITS,
        is_privileged: Callable[[int], bool] = lambda uid: uid == 0,
        on_refusal: Callable[[Notice, int], None] | None = None,
        wait_only: WaitOnly = lambda request_line: False,
        hub_caps: Callable[[int], HubCaps | None] = lambda uid: None,
        error_body: Callable[[Ds01Error], bytes] = ds01_error_body,
    ) -> None:
        self.listener = listener
        self.error_body = error_body  # the shape of the refusals this server writes itself
        self.handler = handler
        self.classify = classify
        self.wait_only = wait_only
        self.limits = limits
        self.is_privileged = is_privileged
        self.hub_caps = hub_caps
        self.on_refusal = on_refusal
        soft = _raise_fd_limit(limits.total_connections + limits.fd_reserve)
        total = max(16, min(limits.total_connections, soft - limits.fd_reserve))
        self.table = ConnectionTable(limits.per_uid_connections, total)
        self.lanes: dict[LaneName, Lane] = {
            "workers": Lane("worker", limits.workers, limits.worker_idle_s),
            "waiting": Lane("waiting", limits.waiting, limits.worker_idle_s),
        }
        self.notices = RefusalNotices(limits.notice_interval_s)
        self._selector = selectors.DefaultSelector()
        self._waker = Waker()
        self._finished: deque[tuple[_Conn, bool]] = deque()
        self._conns: set[_Conn] = set()
        # Connections being answered (handed to a lane), with whether they only wait to read.
        self._busy: dict[_Conn, tuple[Exchange, bool]] = {}
        self._drain_deadline: float | None = None  # set (from any thread) by drain/hurry
        self._drain_begun = False
        self.cut_short: list[str] = []
        self._paused_until = 0.0

    # --- the reactor ---------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until a :meth:`drain` is over; then the socket's name is gone (new clients
        find no ds01d) and whoever connected just before was refused."""
        self.listener.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._selector.register(self._waker, selectors.EVENT_READ, self._waker)
        next_sweep = time.monotonic() + _SWEEP_S
        try:
            while True:
                for key, _ in self._selector.select(min(poll_interval, _SWEEP_S)):
                    if key.data is None:
                        self._accept()
                    elif key.data is self._waker:
                        self._waker.woken()
                    else:
                        self._read(key.data)
                self._take_back()
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SWEEP_S
                if self._drain_deadline is not None and self._drained(now):
                    break
            self._stop_listening()
        finally:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self.listener)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._waker)

    def drain(self, timeout_s: float) -> None:
        """Begin to stop (from any thread; step 5 of the module docstring): from now on no
        request runs that has not been handed to a lane yet, and :meth:`serve_forever`
        returns once those that were are answered, at the latest ``timeout_s`` from now
        (plus ``ANSWER_GRACE_S`` for answers being written). Calling it again changes
        nothing; :meth:`hurry` ends it sooner."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + timeout_s
        self._wake()

    def hurry(self) -> None:
        """End the drain now: every request still running is answered that its outcome is
        unknown, every one not yet begun that nothing was done."""
        self._drain_deadline = time.monotonic()
        self._wake()

    @property
    def running(self) -> int:
        """Requests handed to a lane and not answered yet."""
        return len(self._busy)

    def _drained(self, now: float) -> bool:
        """One step of the drain, in the reactor's thread: whether it is over."""
        assert self._drain_deadline is not None
        if not self._drain_begun:
            self._drain_begun = True
            log.info(
                "stopping: no new requests run; %d accepted one(s) still running", self.running
            )
            for conn, (exchange, waiting) in list(self._busy.items()):
                if waiting:
                    self._cut_short(conn, exchange, waiting=True)
        if not self._busy:
            return True
        if now < self._drain_deadline:
            return False
        for conn, (exchange, waiting) in list(self._busy.items()):
            self._cut_short(conn, exchange, waiting=waiting)
        if not self._busy:
            return True
        if now < self._drain_deadline + ANSWER_GRACE_S:
            return False  # answers being written: they are complete within moments
        for conn, (exchange, _) in self._busy.items():
            what = f"{exchange.request_line} of {_user_name(conn.creds.uid)}"
            self.cut_short.append(what)
            log.warning("stopping: the answer to %s was still being written; cut off", what)
        return True

    def _cut_short(self, conn: _Conn, exchange: Exchange, *, waiting: bool) -> None:
        """Answer a busy exchange in the place of its worker (which then writes nothing),
        unless the worker writes its own answer already; either way the drain no longer
        waits for it, except in that last case."""
        was = exchange.reply.take()
        if was is None:
            return
        error: Ds01Error
        if waiting:
            error = DaemonStopping(STOPPED_WAITING_MESSAGE)
        elif was == "queued":
            error = DaemonStopping(STOPPING_MESSAGE)
        else:
            what = f"{exchange.request_line} of {_user_name(conn.creds.uid)}"
            self.cut_short.append(what)
            log.warning(
                "stopping: %s was still running at the drain deadline; its client was told "
                "that the outcome is unknown",
                what,
            )
            error = OutcomeUnknown(outcome_unknown_message(exchange.request_line))
        with contextlib.suppress(OSError):
            conn.sock.sendall(error_answer(error, error_body=self.error_body))
            conn.sock.shutdown(socket.SHUT_WR)
        del self._busy[conn]

    def _stop_listening(self) -> None:
        """Take the socket's name away, so that new clients find no ds01d, then refuse
        whoever connected before that (the listener itself is closed by :meth:`close`)."""
        with contextlib.suppress(OSError):
            name = self.listener.getsockname()
            if isinstance(name, str) and name:
                os.unlink(name)
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # none left (BlockingIOError) or no descriptor for one
                return
            self._refuse_fresh(sock, DaemonStopping(STOPPING_MESSAGE))

    def close(self) -> None:
        """Close the listener and every connection the reactor holds; stop the lanes."""
        for lane in self.lanes.values():
            lane.stop()
        for conn in list(self._conns):
            self._close(conn)
        self._selector.close()
        self.listener.close()
        self._waker.close()

    def _wake(self) -> None:
        self._waker.wake()

    def _accept(self) -> None:
        if time.monotonic() < self._paused_until:
            return
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE/ENFILE/ENOBUFS: rest, then try again
                self._paused_until = time.monotonic() + _EMFILE_PAUSE_S
                self._notice(
                    -1, "accept_failed", f"accept failed ({exc}); resting {_EMFILE_PAUSE_S:g} s"
                )
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        try:
            creds = peer_credentials(sock)
        except OSError:
            sock.close()
            return
        hub = self.hub_caps(creds.uid)
        cap = self.limits.per_uid_connections if hub is None else hub.connections
        refusal = self.table.admit(creds.uid, cap)
        if refusal is not None:
            error: Ds01Error
            if refusal == "per_uid":
                error = Throttled(
                    f"ds01d refused this connection: you already hold {cap} open connections "
                    f"to it, the most {'this hub' if hub else 'one user'} may. Some of your "
                    "ds01 commands or scripts are still running or hung; end them and try "
                    "again."
                )
            else:
                error = ServerBusy(
                    f"ds01d is serving its maximum of {self.table.total} connections; try "
                    "again in a moment. If this lasts, tell an admin (ds01d's log names the "
                    "users who hold them)."
                )
            self._refuse_fresh(sock, error)
            what = (
                f"holds {cap} connections, the {'hub' if hub else 'per-user'} cap (HTTP 429)"
                if refusal == "per_uid"
                else f"ds01d holds {self.table.total} connections, its total cap (HTTP 503)"
            )
            self._notice(creds.uid, f"connection_{refusal}", what)
            return
        sock.setblocking(False)
        conn = _Conn(sock, creds, time.monotonic() + self.limits.idle_s, hub)
        self._conns.add(conn)
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _refuse_fresh(self, sock: socket.socket, error: Ds01Error) -> None:
        """Answer a connection that was never admitted and close it, without blocking.
        What the client already sent is read first, so that closing does not reset the
        connection before the client has read the answer."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.recv(_RECV_BYTES)
        with contextlib.suppress(OSError):
            sock.send(error_answer(error, error_body=self.error_body))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        sock.close()

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            conn.eof = True
            if conn.buf:
                self._dispatch(conn, len(conn.buf))  # what came: the handler answers it
            else:
                self._close(conn)
            return
        conn.buf += data
        if not conn.reading:
            conn.reading = True
            conn.deadline = time.monotonic() + self.limits.request_read_s
        self._advance(conn)

    def _advance(self, conn: _Conn) -> None:
        """Dispatch the connection's request if it is complete; refuse an oversized head."""
        if conn.head_end is None:
            conn.head_end, conn.scan = _head_end(conn.buf, conn.scan)
            if conn.head_end is None:
                if len(conn.buf) > self.limits.max_head_bytes:
                    limit = self.limits.max_head_bytes
                    if b"\n" not in conn.buf:
                        line = InvalidInput(
                            f"Request line too long (HTTP 414): at most {limit} bytes."
                        )
                        self._refuse(conn, line, 414)
                    else:
                        head = InvalidInput(
                            f"Request header too large (HTTP 431): at most {limit} bytes."
                        )
                        self._refuse(conn, head, 431)
                return
            headers = _parse_headers(bytes(conn.buf[: conn.head_end]))
            length = declared_body_length(headers) if headers is not None else None
            conn.need = conn.head_end + (length or 0)
            if len(conn.buf) < conn.need and headers is not None and _wants_continue(headers):
                with contextlib.suppress(OSError):
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert conn.need is not None
        if len(conn.buf) >= conn.need:
            self._dispatch(conn, conn.need)

    def _lane_of(self, data: bytes) -> LaneName:
        """``classify``'s lane for a request; ``workers`` if it fails: a request it cannot
        read must never end this thread, which reads every user's requests."""
        try:
            return self.classify(data)
        except Exception:
            log.exception("could not choose a lane for a request; it goes to the workers")
            return "workers"

    def _dispatch(self, conn: _Conn, length: int) -> None:
        if self._drain_deadline is not None:
            self._refuse(conn, DaemonStopping(STOPPING_MESSAGE))
            return
        data = bytes(conn.buf[:length])
        head_end = conn.head_end
        del conn.buf[:length]
        conn.reset()
        self._selector.unregister(conn.sock)
        uid, hub = conn.creds.uid, conn.hub
        behalf = _on_behalf_of(data[:head_end]) if hub is not None and head_end else None
        party = party_of(uid, hub, behalf)
        lane_name = self._lane_of(data)
        lane = self.lanes[lane_name]
        refusal = request_refusal(
            waits=lane_name == "waiting",
            per_uid=lane.share.per_uid,
            lane_load=lane.load(party),
            open_requests=sum(each.load(party) for each in self.lanes.values()),
            hub=hub,
            hub_waiting_load=self.lanes["waiting"].group_load(uid),
        )
        if refusal is not None:
            self._refuse_request(conn, refusal, lane.share.per_uid, behalf)
            return
        group = None
        if hub is not None:
            group = Group(uid, hub.workers if lane_name == "workers" else hub.waiting)
        exchange = Exchange(conn.sock, conn.creds, data, bytes(conn.buf))
        self._busy[conn] = (exchange, self.wait_only(data.split(b"\n", 1)[0]))
        lane.submit(
            party,
            lambda: self._serve(conn, exchange),
            privileged=lane_name == "workers" and party == uid and self.is_privileged(uid),
            group=group,
        )

    def _refuse_request(
        self, conn: _Conn, refusal: RequestRefusal, per_uid: int, behalf: str | None
    ) -> None:
        """Answer a complete request that ``request_refusal`` refused (HTTP 429), and note
        it (per uid, or per user behind a hub)."""
        hub = conn.hub
        if refusal == "waiting_per_uid":
            error = Throttled(
                f"You already have {per_uid} requests that wait open in ds01d (terminals, "
                "`events --follow`, queue or image waits), the most one user may. End one "
                "and try again."
            )
            what = f"has {per_uid} waiting requests open, the per-user cap (HTTP 429)"
        elif refusal == "hub_user_requests":
            assert hub is not None
            error = Throttled(
                f"You already have {hub.user_requests} requests open in ds01d through the "
                "hub, the most one user may through it. Wait for them to end and try again."
            )
            what = f"has {hub.user_requests} requests open, the per-user cap of a hub (HTTP 429)"
        else:
            assert hub is not None
            error = Throttled(
                f"The hub's users already hold {hub.waiting} requests that wait in ds01d, the "
                "most one hub may (hub: waiting in resource-limits.yaml). Try again in a "
                "moment."
            )
            what = f"holds {hub.waiting} waiting requests for its users, the hub's cap (HTTP 429)"
        self._notice(conn.creds.uid, refusal, what, behalf)
        self._refuse(conn, error)

    def _serve(self, conn: _Conn, exchange: Exchange) -> None:
        """In a worker: answer the exchange (unless the drain answered it before it began),
        then give the connection back to the reactor."""
        keep = False
        if exchange.reply.run():
            try:
                conn.sock.settimeout(self.limits.write_s)
                keep = self.handler(exchange)
            except OSError as exc:  # the client went away or stopped reading
                log.debug("uid %d: connection dropped while answering: %s", conn.creds.uid, exc)
            except Exception:
                log.exception("answering uid %d failed", conn.creds.uid)
        self._finished.append((conn, keep and not conn.eof))
        self._wake()

    def _take_back(self) -> None:
        """Connections whose answer was written: keep-alive ones are read again."""
        while self._finished:
            conn, keep = self._finished.popleft()
            self._busy.pop(conn, None)
            if not keep:
                self._close(conn)
                continue
            try:
                conn.sock.setblocking(False)
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError):
                self._close(conn)
                continue
            now = time.monotonic()
            conn.reading = bool(conn.buf)
            conn.deadline = now + (self.limits.request_read_s if conn.buf else self.limits.idle_s)
            if conn.buf:
                self._advance(conn)

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self._conns if c.deadline <= now]:
            try:
                self._selector.get_key(conn.sock)
            except (KeyError, ValueError):
                continue  # being answered
            if conn.reading:
                seconds = self.limits.request_read_s
                error = RequestTimeout(
                    f"The request did not arrive in full within {seconds:g} s of its first "
                    "byte; ds01d closed the connection. Send the whole request at once."
                )
                what = f"sent no whole request within {seconds:g} s (HTTP 408, closed)"
                self._notice(conn.creds.uid, "read_timeout", what)
                self._refuse(conn, error)
            else:
                self._close(conn)  # idle: nothing to say

    def _refuse(self, conn: _Conn, error: Ds01Error, status_code: int | None = None) -> None:
        """Answer an admitted connection with ``error`` (without blocking) and close it."""
        with contextlib.suppress(OSError):
            conn.sock.send(error_answer(error, status_code, self.error_body))
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.table.release(conn.creds.uid)

    def _notice(self, uid: int, reason: str, what: str, behalf: str | None = None) -> None:
        """One log line per uid (or user ``behalf`` of a hub's uid), reason and interval,
        counting the refusals it stands for (this one and those suppressed since the last
        line). The notice's key is the uid, or (uid, behalf)."""
        key = uid if behalf is None else (uid, behalf)
        notice = self.notices.refused(key, reason, time.monotonic())
        if notice is None:
            return
        who = _user_name(uid) if behalf is None else f"{behalf} via {_user_name(uid)}"
        log.warning(
            "connections: %s %s; %d refusal(s) of this kind since the last such line "
            "(at most one line per %g s)",
            who,
            what,
            notice.count,
            self.limits.notice_interval_s,
        )
        if self.on_refusal is not None and uid >= 0:
            callback = self.on_refusal
            self.lanes["workers"].submit(uid, lambda: callback(notice, uid))


def _user_name(uid: int) -> str:
    if uid < 0:
        return "ds01d"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def listening_socket(path: str) -> socket.socket:
    """A unix stream socket bound to ``path`` and listening with the system's full backlog
    (a lab's worth of clients connect at once; the default of 5 would refuse them)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    os.set_inheritable(sock.fileno(), False)
    return sock


def clear_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on (a crash's leftover); exit when a live daemon
    listens there."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: a leftover from a crash
        return
    finally:
        probe.close()
    raise SystemExit(f"ds01d: another daemon already listens on {path}")


def open_to_everyone(path: Path) -> socket.socket:
    """A listening unix socket at ``path`` that every local user may connect to: a crash's
    leftover there is removed first (exit when a live daemon listens), its directory made.
    Who connects comes from the kernel (``SO_PEERCRED``), not from the socket's mode."""
    clear_stale_socket(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = listening_socket(str(path))
    path.chmod(0o666)
    return listener


__all__ = [
    "ANSWER_GRACE_S",
    "DEFAULT_LIMITS",
    "MAX_BODY_BYTES",
    "STOPPED_WAITING_MESSAGE",
    "STOPPING_MESSAGE",
    "ConnectionLimits",
    "ConnectionServer",
    "Exchange",
    "Lane",
    "Reply",
    "clear_stale_socket",
    "declared_body_length",
    "ds01_error_body",
    "error_answer",
    "listening_socket",
    "open_to_everyone",
    "outcome_unknown_message",
]
