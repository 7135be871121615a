"""A small process that forks short-lived children for a large one: a fork server.

A ``fork`` costs in proportion to the parent's memory (its page tables are copied, and every
page either side then writes is copied again while the child lives): about 17 ms from ds01d
holding 160 MB against about 2 ms from a fresh interpreter. ds01d forks a child for every
check it makes as a user (``ds01.runtime.userfs``), two for each container it creates and
starts, so it asks a server instead: a separate interpreter, started once, single-threaded,
that forks each child from its own small image.

The protocol (one ``SOCK_SEQPACKET`` socket pair, private to the two processes):

- Once it is ready, the server sends one message, :data:`READY`; a client that does not get
  it soon after the start (the interpreter or the module failed) forks for itself.
- The client sends one message per child: a JSON object (the request; ``deadline`` among its
  keys: a ``time.monotonic()`` instant, the clock is the system's and so the same in both
  processes) with one descriptor attached (``SCM_RIGHTS``): the write end of a pipe the
  client reads the child's report from. Nothing else comes back on the socket.
- The server forks; the child runs ``run_child(request, report_fd)`` (given by the module
  the server runs in) and never returns. The server closes its copy of the descriptor at
  once, so the client sees end-of-file as soon as the child is gone, whatever happens.
- The server is the children's parent: it reaps them, and kills one still running at its
  deadline (a lookup stuck on a hung file system), so no process id is ever signalled after
  it could have been reused. A request already past its deadline when it is read (the client
  has given up on it) is dropped, never run late.
- The server ends when the socket reaches end-of-file (the client closed it or died), once
  its last child has ended or been killed at its deadline. It ignores SIGINT, SIGTERM and
  SIGHUP: its client's stop is its end-of-file.

Who may talk to the server: only the holder of the socket pair's other end (an inherited
descriptor, no path in the file system). The server trusts its requests as its client's own.

:class:`ForkServerClient` is the client side: thread-safe, started on first use (or by
``start``), started again if the server died (not within :data:`RETRY_AFTER_SECONDS` of a
start that failed), and ``submit`` says ``False`` when no server takes the request (none
could be started, it is busy, or the client was stopped), so that the caller forks for
itself.
"""

from __future__ import annotations

import array
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, NoReturn

#: The largest request a message carries, in bytes (a ``SOCK_SEQPACKET`` message must fit
#: the socket's buffer); a larger one is the caller's to run.
MAX_REQUEST_BYTES = 65536
#: How long a server waits between reaps when none of its children has a deadline sooner.
_REAP_INTERVAL_SECONDS = 1.0
#: The server's first message: it is ready for requests.
READY = b"ready"
#: How long a client waits for :data:`READY` after starting a server.
READY_TIMEOUT_SECONDS = 10.0
#: How long ``stop`` waits for a server to finish its children before killing it.
STOP_TIMEOUT_SECONDS = 10.0
#: How long after a failed start (no interpreter, or no :data:`READY`) the client tries no
#: other: a server that cannot start would otherwise cost every request a start.
RETRY_AFTER_SECONDS = 60.0
#: What a send failing with these means: the server is gone (any other failure: busy).
_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOTCONN})
#: The environment variable naming the server's end of the socket pair (a descriptor number).
_FD_VARIABLE = "DS01_FORK_SERVER_FD"
#: What the server's environment keeps of its client's.
_PASSED_VARIABLES = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONUTF8")

ChildMain = Callable[[Mapping[str, Any], int], NoReturn]

#: The server's interpreter: no user site directory, and (3.11 and later) nothing put in
#: front of the module path.
_ISOLATION = ("-s", "-P") if sys.version_info >= (3, 11) else ("-s",)


def _installed_paths() -> set[str]:
    """Where this interpreter finds installed packages by itself (its site-packages)."""
    import sysconfig  # here: only a starting server needs it

    paths = sysconfig.get_paths()
    return {str(Path(paths[key]).resolve()) for key in ("purelib", "platlib")}


def _said_ready(control: socket.socket) -> bool:
    """Whether a new server sent :data:`READY` within :data:`READY_TIMEOUT_SECONDS`."""
    poller = select.poll()
    poller.register(control, select.POLLIN)
    if not poller.poll(READY_TIMEOUT_SECONDS * 1000):
        return False
    try:
        return control.recv(len(READY) + 1) == READY
    except OSError:
        return False


class _Children:
    """The server's running children: each one's deadline, killed once past it, forgotten
    once reaped."""

    def __init__(self) -> None:
        self._deadlines: dict[int, float] = {}

    def add(self, pid: int, deadline: float) -> None:
        self._deadlines[pid] = deadline

    def __bool__(self) -> bool:
        return bool(self._deadlines)

    def wait_seconds(self, now: float) -> float | None:
        """How long the server may sleep before a deadline passes; ``None``: no child."""
        if not self._deadlines:
            return None
        soonest = min(self._deadlines.values())
        return max(0.0, min(soonest - now, _REAP_INTERVAL_SECONDS))

    def reap_and_kill(self, now: float) -> None:
        """Forget the children that ended; kill those past their deadline (reaped later)."""
        while self._deadlines:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._deadlines.clear()
                return
            if pid == 0:
                break
            self._deadlines.pop(pid, None)
        for pid, deadline in list(self._deadlines.items()):
            if now >= deadline:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._deadlines[pid] = float("inf")  # killed: only its reaping is left


def _deadline_of(request: object) -> float | None:
    """A request's ``deadline`` if it is a JSON object with a finite number there."""
    if not isinstance(request, dict):
        return None
    deadline = request.get("deadline")
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
        return None
    return float(deadline) if abs(deadline) < float("inf") else None


def _receive(control: socket.socket) -> tuple[dict[str, Any], float, int] | None:
    """The next request, its deadline and its descriptor; ``None`` at end-of-file. A
    malformed message (not one descriptor, not a JSON object with a numeric ``deadline``)
    is dropped and its descriptors closed: its client sees end-of-file with no report."""
    while True:
        message, ancillary, _, _ = control.recvmsg(
            MAX_REQUEST_BYTES, socket.CMSG_SPACE(array.array("i").itemsize)
        )
        if not message and not ancillary:
            return None
        descriptors = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                descriptors.frombytes(data[: len(data) - len(data) % descriptors.itemsize])
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        deadline = _deadline_of(request)
        if deadline is not None and len(descriptors) == 1:
            return request, deadline, descriptors[0]
        for fd in descriptors:
            os.close(fd)


def _fork_child(control: socket.socket, run_child: ChildMain, request: Any, report: int) -> int:
    """The pid of a child running ``request``; -1 if no process could be had (the client
    then sees no report)."""
    try:
        pid = os.fork()
    except OSError:
        return -1
    if pid == 0:  # pragma: no cover - the child; its report is what the client sees
        try:
            control.close()
            run_child(request, report)
        finally:
            os._exit(1)  # whatever run_child raised, the child never returns into the loop
    return pid


def serve(control: socket.socket, run_child: ChildMain) -> None:
    """The server's loop (module docstring): fork a child per request until end-of-file,
    then wait for the children still running (each killed at its deadline)."""
    children = _Children()
    poller = select.poll()
    poller.register(control, select.POLLIN)
    reading = True
    while reading or children:
        wait = children.wait_seconds(time.monotonic())
        if not reading:
            time.sleep(_REAP_INTERVAL_SECONDS if wait is None else wait)
        elif poller.poll(None if wait is None else wait * 1000):
            received = _receive(control)
            if received is None:
                reading = False
            else:
                request, deadline, report = received
                late = time.monotonic() >= deadline
                pid = -1 if late else _fork_child(control, run_child, request, report)
                os.close(report)
                if pid > 0:
                    children.add(pid, deadline)
        children.reap_and_kill(time.monotonic())


def serve_inherited(run_child: ChildMain) -> None:
    """The server's entry point: tell the client it is ready, then serve on the descriptor
    the client named in the environment. SIGINT (a Ctrl-C meant for a foreground client),
    SIGTERM and SIGHUP (a stop meant for its client's whole service) are ignored: the
    client's end is the server's end-of-file."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    control = socket.socket(fileno=int(os.environ[_FD_VARIABLE]))
    control.send(READY)
    serve(control, run_child)


class ForkServerClient:
    """The client side: a server running ``python -m <module>`` (a module whose main calls
    :func:`serve_inherited`), started on first use.

    Thread-safe: every method takes the client's lock; a send never blocks (a server that
    does not keep up is busy, and its requests go back to their callers), so the lock is
    held long only while a server starts (until :data:`READY`) or ``stop`` waits.
    After ``stop``, ``submit`` takes nothing until ``start`` is called again.
    """

    def __init__(self, module: str) -> None:
        self._module = module
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._failed_at: float | None = None  # time.monotonic() of the last failed start

    def start(self) -> bool:
        """Start the server unless it runs (also after ``stop``, or soon after a failed
        start); whether it runs."""
        with self._lock:
            self._stopped = False
            self._failed_at = None
            return self._started_locked() is not None

    def _started_locked(self) -> socket.socket | None:
        if self._stopped:
            return None
        if self._control is not None and self._process is not None:
            if self._process.poll() is None:
                return self._control
            self._forget_locked()
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < RETRY_AFTER_SECONDS:
            return None
        control = self._spawn_locked()
        self._failed_at = None if control is not None else time.monotonic()
        return control

    def _spawn_locked(self) -> socket.socket | None:
        """A new server's socket once it said it is ready; ``None`` if it did not."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        environment = {
            name: os.environ[name] for name in _PASSED_VARIABLES if name in os.environ
        }  # the locale too: paths are encoded as this process encodes them
        package_root = str(Path(__file__).resolve().parents[2])
        if package_root not in _installed_paths():  # a source tree: the very code of this one
            environment["PYTHONPATH"] = package_root
        environment[_FD_VARIABLE] = str(theirs.fileno())
        try:
            self._process = subprocess.Popen(
                [sys.executable, *_ISOLATION, "-m", self._module],
                env=environment,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
            )
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()
        self._control = ours
        if not _said_ready(ours):
            self._forget_locked(kill=True)
            return None
        return ours

    def _forget_locked(self, wait_seconds: float = 0.0, *, kill: bool = False) -> None:
        """Close the socket (the server finishes its children, then exits) and wait up to
        ``wait_seconds`` for the server to end; with ``kill``, kill it if it has not. One
        left running is reaped by ``subprocess`` once it ends."""
        if self._control is not None:
            self._control.close()
            self._control = None
        process, self._process = self._process, None
        if process is None:
            return
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait_seconds)
        if kill and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self, wait_seconds: float = STOP_TIMEOUT_SECONDS) -> None:
        """End the server: it sees end-of-file and exits once its children have ended
        (killed at their deadlines); wait up to ``wait_seconds`` for that, then kill it."""
        with self._lock:
            self._stopped = True
            self._forget_locked(wait_seconds, kill=True)

    def submit(self, request: Mapping[str, Any], report_fd: int) -> bool:
        """Ask the server for a child running ``request`` that reports to ``report_fd``
        (the caller keeps and closes its own copy); ``False`` if no server took it: the
        request is too large, or no server could be started or reached (tried twice; a
        server that is gone or no longer reads is ended and a new one started)."""
        message = json.dumps(request).encode()
        if len(message) > MAX_REQUEST_BYTES:
            return False
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [report_fd]))]
        with self._lock:  # held while sending: no other thread closes the socket meanwhile
            for _ in range(2):
                control = self._started_locked()
                if control is None:
                    return False
                try:
                    control.sendmsg([message], rights, socket.MSG_DONTWAIT)
                except OSError as exc:
                    if exc.errno not in _GONE:
                        return False  # busy (its queue is full): this one is the caller's
                    self._forget_locked()
                    continue
                return True
        return False


__all__ = [
    "MAX_REQUEST_BYTES",
    "READY",
    "ChildMain",
    "ForkServerClient",
    "serve",
    "serve_inherited",
]
