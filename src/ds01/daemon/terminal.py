"""Interactive terminals in a user's own container, through ds01d (``container-open``).

Users have no Docker socket, so ds01d runs ``docker exec`` for them and relays the bytes:

1. ``POST /v1/containers/{name}/terminal`` (with ``Connection: Upgrade``): ds01d checks the
   caller owns the container (admins: any), starts it if needed, creates an exec with a
   terminal **as the container's owner** (uid:gid, never root), in ``/workspace``, sized as
   asked, and answers ``101 Switching Protocols`` with the session id in
   ``X-Ds01-Session``. From then on the connection carries the raw terminal both ways.
2. ``POST /v1/terminals/{id}/resize?rows=R&cols=C`` follows the client's window size.
3. ``GET /v1/terminals/{id}`` tells, once the program ended, its exit code.

Sessions are kept in memory, each bound to the uid that opened it; only that uid may
resize it or read its exit code. A user holds at most ``MAX_LIVE_SESSIONS_PER_USER`` live
ones (HTTP 429 past that); past ``MAX_SESSIONS`` kept, finished ones are forgotten (the
opener's own first), never a live one (``ds01.core.terminal_sessions``). While ds01d
relays a session to a connected client (``Terminals.serve``), it counts as use of the
container for the lifecycle loop (``Terminals.attached``); once the client is gone, it no
longer does, even if the program in the container still runs.

When ds01d stops, ``Terminals.close_all`` ends every relay with a last line to its user
(``CLOSED_FOR_STOP``): the container goes on running; the terminal's program loses its
terminal, as with a dropped ssh connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ds01.core.terminal_sessions import SessionTable
from ds01.daemon import schemas as api
from ds01.daemon.access import resource_of
from ds01.daemon.holds import Holds
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.errors import Ds01Error, NotFound
from ds01.runtime.identity import user_by_uid

log = logging.getLogger(__name__)

#: What runs when the user names no command: a login shell, bash where the image has it.
LOGIN_SHELL = ("/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash -l || exec sh -l")
_CHUNK = 65536
#: How long a relay whose program ended waits for the client to close its side.
HANG_UP_SECONDS = 2.0
#: The last bytes of a terminal that ds01d closes because it stops.
CLOSED_FOR_STOP = (
    b"\r\n[ds01d is stopping, so it closed this terminal. The container keeps running: "
    b"open a terminal again with container-open once ds01d is back.]\r\n"
)


@dataclass(frozen=True)
class Session:
    """An exec session: whose it is, in which container, and Docker's exec id."""

    id: str
    uid: int
    docker_name: str
    exec_id: str


class Terminals:
    """The terminal sessions of one ds01d (thread-safe)."""

    def __init__(self, service: Ds01Service) -> None:
        self.service = service
        self._sessions: SessionTable[Session] = SessionTable()
        self._attached: Holds[str] = Holds()  # Docker name -> sessions with a client
        self._lock = threading.Lock()
        # Written once by close_all and never read: it then stays readable, so every relay
        # watching it, now or later, sees it.
        self._closing_r, self._closing_w = os.pipe()
        self._closing = False

    def close_all(self) -> None:
        """ds01d stops: end every relay now, and any begun from now on at once, each with
        ``CLOSED_FOR_STOP`` to its client."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        os.write(self._closing_w, b"\0")

    def attached(self, docker_name: str) -> int:
        """How many sessions in container ``docker_name`` ds01d relays to a connected client
        now: the interactive sessions the lifecycle loop counts as use."""
        return self._attached.count(docker_name)

    def serve(
        self, session: Session, client: socket.socket, docker_side: Any, read_ahead: bytes = b""
    ) -> None:
        """Relay ``session`` between ``client`` and the exec (:func:`relay`); it counts as
        attached from now until the client's side ends (the client closed or went away) or
        the program ends, whichever comes first."""
        release = self._attached.take(session.docker_name)
        try:
            relay(
                client,
                docker_side,
                read_ahead,
                on_client_closed=release,
                closing=self._closing_r,
            )
        finally:
            release()
            self.end(session)

    def end(self, session: Session) -> None:
        """ds01d relays ``session`` no more (its program ended, or its client or ds01d
        went away): it is finished, kept for its exit code until forgotten."""
        with self._lock:
            self._sessions.end(session.id)

    def open(self, caller: Caller, name: str, request: api.TerminalRequest) -> tuple[Session, Any]:
        """Start (if needed) the caller's container ``name`` and an exec in it; return the
        session and Docker's raw, bidirectional socket of the exec."""
        service = self.service
        with self._lock:  # refused before an exec is made; checked again when kept
            refused = self._sessions.refusal(caller.uid)
        if refused is not None:
            raise refused
        record = service.access.target_for_terminal(caller, name, request.user)
        if record.status != "running":
            service.start(caller, record.docker_name, user=request.user)
        command = list(request.command) if request.command else list(LOGIN_SHELL)
        owner = f"{record.uid}:{user_by_uid(record.uid).gid}"
        exec_id = service.runtime.exec_create(
            record.docker_name,
            command,
            user=owner,
            workdir="/workspace",
            environment={"TERM": request.term},
        )
        raw = service.runtime.exec_attach(exec_id)
        # Docker sizes an exec's terminal only once it runs (API < 1.42); a program that
        # already ended needs no size.
        with contextlib.suppress(Ds01Error):
            service.runtime.exec_resize(exec_id, rows=request.rows, cols=request.cols)
        session = Session(uuid.uuid4().hex[:16], caller.uid, record.docker_name, exec_id)
        try:
            with self._lock:
                self._sessions.add(session.id, caller.uid, session)
        except Ds01Error:
            raw.close()  # the exec's program loses its terminal, as a dropped connection
            raise
        service.events.emit(
            "container.terminal",
            user=caller.name,
            resource=resource_of(record),
            details={"command": command[:1] if request.command else ["login shell"]},
        )
        return session, raw

    def session(self, caller: Caller, session_id: str) -> Session:
        with self._lock:
            found = self._sessions.get(session_id[:64])
        if found is None or found[0] != caller.uid:
            raise NotFound(f"No terminal session {session_id[:64]!r} of yours.")
        return found[1]

    def resize(self, caller: Caller, session_id: str, rows: int, cols: int) -> api.TerminalInfo:
        session = self.session(caller, session_id)
        self.service.runtime.exec_resize(session.exec_id, rows=rows, cols=cols)
        return self.info(caller, session_id)

    def info(self, caller: Caller, session_id: str) -> api.TerminalInfo:
        session = self.session(caller, session_id)
        state = self.service.runtime.exec_state(session.exec_id)
        return api.TerminalInfo(
            id=session.id, running=bool(state.get("Running")), exit_code=state.get("ExitCode")
        )


def _nothing() -> None:
    pass


def relay(
    client: socket.socket,
    docker_side: Any,
    read_ahead: bytes = b"",
    on_client_closed: Callable[[], None] = _nothing,
    closing: int | None = None,
) -> None:
    """Copy bytes both ways between the client's connection and the exec's socket until the
    program ends (Docker closes its side); the client closing its side ends the input, and
    ``on_client_closed`` is called then. ``read_ahead``: what the client sent after its
    request, before the relay began. ``closing``: a descriptor that becomes readable when
    ds01d stops; the relay then sends ``CLOSED_FOR_STOP`` to the client and ends.

    Waits with a poll-based selector: ds01d may hold more than 1024 descriptors (its
    connection caps allow that many clients), which ``select.select`` cannot watch."""
    inner: socket.socket = getattr(docker_side, "_sock", docker_side)
    client_open = True
    try:
        if read_ahead:
            inner.sendall(read_ahead)
        with selectors.PollSelector() as selector:
            selector.register(inner, selectors.EVENT_READ)
            selector.register(client, selectors.EVENT_READ)
            if closing is not None:
                selector.register(closing, selectors.EVENT_READ)
            while True:
                readable = {key.fileobj for key, _ in selector.select()}
                if closing in readable:
                    client.sendall(CLOSED_FOR_STOP)
                    _hang_up(client)
                    return
                if inner in readable:
                    data = inner.recv(_CHUNK)
                    if not data:
                        _hang_up(client)
                        return
                    client.sendall(data)
                if client_open and client in readable:
                    data = client.recv(_CHUNK)
                    if data:
                        inner.sendall(data)
                    else:
                        client_open = False
                        selector.unregister(client)
                        on_client_closed()
                        inner.shutdown(socket.SHUT_WR)
    except OSError as exc:
        log.debug("terminal relay ended: %s", exc)
    finally:
        inner.close()


def _hang_up(client: socket.socket) -> None:
    """End the client's stream after everything written, then read what it still sends
    (a Ctrl-D for an input that ended as the program did) until it closes, for at most
    ``HANG_UP_SECONDS``: closing with bytes unread would make the kernel reset the
    connection, and the client lose the program's last output."""
    client.shutdown(socket.SHUT_WR)
    client.settimeout(HANG_UP_SECONDS)
    deadline = time.monotonic() + HANG_UP_SECONDS
    while time.monotonic() < deadline and client.recv(_CHUNK):
        pass


__all__ = ["CLOSED_FOR_STOP", "LOGIN_SHELL", "Session", "Terminals", "relay"]
