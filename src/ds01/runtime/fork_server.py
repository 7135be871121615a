"""A small process that forks short-lived children for a large one: a fork server.

A ``fork`` costs in proportion to the parent's memory (its page tables are copied, and every
page either side then writes is copied again while the child lives): about 17 ms from ds01d
holding 160 MB against about 2 ms from a fresh interpreter. ds01d forks a child for every
check it makes as a user (``ds01.runtime.userfs``), two for each container it creates and
starts, so it asks a server instead: a separate interpreter, started once, single-threaded,
that forks each child from its own small image.

The protocol (one ``SOCK_SEQPACKET`` socket pair, private to the two processes):

- The client sends one message per child: a JSON object (the request; ``timeout_seconds``
  among its keys) with one descriptor attached (``SCM_RIGHTS``): the write end of a pipe the
  client reads the child's report from. Nothing comes back on the socket.
- The server forks; the child runs ``run_child(request, report_fd)`` (given by the module
  the server runs in) and never returns. The server closes its copy of the descriptor at
  once, so the client sees end-of-file as soon as the child is gone, whatever happens.
- The server is the children's parent: it reaps them, and kills one still running
  ``timeout_seconds`` after it was asked for (a lookup stuck on a hung file system), so no
  process id is ever signalled after it could have been reused.
- The server ends when the socket reaches end-of-file: the client closed it or died.

Who may talk to the server: only the holder of the socket pair's other end (an inherited
descriptor, no path in the file system). The server trusts its requests as its client's own.

:class:`ForkServerClient` is the client side: thread-safe, started on first use (or by
``start``), started again once if the server died, and ``submit`` says ``False`` when no
server can be reached, so that the caller forks for itself.
"""

from __future__ import annotations

import array
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
#: The environment variable naming the server's end of the socket pair (a descriptor number).
_FD_VARIABLE = "DS01_FORK_SERVER_FD"
#: What the server's environment keeps of its client's.
_PASSED_VARIABLES = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONUTF8")

ChildMain = Callable[[Mapping[str, Any], int], NoReturn]


class _Children:
    """The server's running children: each one's deadline, killed once past it, forgotten
    once reaped."""

    def __init__(self) -> None:
        self._deadlines: dict[int, float] = {}

    def add(self, pid: int, deadline: float) -> None:
        self._deadlines[pid] = deadline

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


def _timeout_of(request: object) -> float | None:
    """A request's ``timeout_seconds`` if it is a JSON object with a positive one."""
    if not isinstance(request, dict):
        return None
    timeout = request.get("timeout_seconds")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        return None
    return float(timeout)


def _receive(control: socket.socket) -> tuple[dict[str, Any], float, int] | None:
    """The next request, its timeout and its descriptor; ``None`` at end-of-file. A
    malformed message (not one descriptor, not a JSON object with a positive
    ``timeout_seconds``) is dropped and its descriptors closed: its client sees
    end-of-file with no report."""
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
        timeout = _timeout_of(request)
        if timeout is not None and len(descriptors) == 1:
            return request, timeout, descriptors[0]
        for fd in descriptors:
            os.close(fd)


def serve(control: socket.socket, run_child: ChildMain) -> None:
    """The server's loop (module docstring): fork a child per request until end-of-file."""
    children = _Children()
    poller = select.poll()
    poller.register(control, select.POLLIN)
    while True:
        wait = children.wait_seconds(time.monotonic())
        ready = poller.poll(None if wait is None else wait * 1000)
        if ready:
            received = _receive(control)
            if received is None:
                return
            request, timeout, report = received
            try:
                pid = os.fork()
            except OSError:  # no process to be had now: the client sees no report
                pid = -1
            if pid == 0:  # pragma: no cover - the child; its report is what the client sees
                control.close()
                run_child(request, report)
            os.close(report)
            if pid > 0:
                children.add(pid, time.monotonic() + timeout)
        children.reap_and_kill(time.monotonic())


def serve_inherited(run_child: ChildMain) -> None:
    """The server's entry point: serve on the descriptor the client named in the
    environment, with SIGINT ignored (a Ctrl-C meant for a foreground client)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=int(os.environ[_FD_VARIABLE]))
    serve(control, run_child)


class ForkServerClient:
    """The client side: a server running ``python -m <module>`` (a module whose main calls
    :func:`serve_inherited`), started on first use.

    Thread-safe: ``submit`` and ``start`` take the client's lock only to (re)start the
    server; sending is one ``sendmsg``, atomic on the socket.
    """

    def __init__(self, module: str) -> None:
        self._module = module
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        """Start the server unless it runs; whether it runs."""
        with self._lock:
            return self._started_locked() is not None

    def _started_locked(self) -> socket.socket | None:
        if self._control is not None and self._process is not None:
            if self._process.poll() is None:
                return self._control
            self._stop_locked()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = str(Path(__file__).resolve().parents[2])
        environment = {
            name: os.environ[name] for name in _PASSED_VARIABLES if name in os.environ
        }  # the locale too: paths are encoded as this process encodes them
        environment["PYTHONPATH"] = package_root  # the very code of this process
        environment[_FD_VARIABLE] = str(theirs.fileno())
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-s", "-m", self._module],
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
        return ours

    def _stop_locked(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            with suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1.0)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._process = None

    def stop(self) -> None:
        """End the server (it sees end-of-file and exits) and wait for it."""
        with self._lock:
            self._stop_locked()

    def submit(self, request: Mapping[str, Any], report_fd: int) -> bool:
        """Ask the server for a child running ``request`` that reports to ``report_fd``
        (the caller keeps and closes its own copy); ``False`` if no server took it: the
        request is too large, or no server could be started or reached (tried twice; a
        server that is gone or no longer reads is ended and a new one started)."""
        message = json.dumps(request).encode()
        if len(message) > MAX_REQUEST_BYTES:
            return False
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [report_fd]))]
        for _ in range(2):
            with self._lock:
                control = self._started_locked()
            if control is None:
                return False
            try:  # never blocks: a server that stopped reading is replaced
                control.sendmsg([message], rights, socket.MSG_DONTWAIT)
            except OSError:
                with self._lock:
                    if self._control is control:
                        self._stop_locked()
                continue
            return True
        return False


__all__ = ["MAX_REQUEST_BYTES", "ChildMain", "ForkServerClient", "serve", "serve_inherited"]
