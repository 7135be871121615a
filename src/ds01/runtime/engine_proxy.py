"""Requests forwarded to dockerd as bytes: the adapter behind ds01's Docker API door.

The door (``ds01.daemon.docker_api``) decides what a user may ask; this module only
carries an allowed request to dockerd's socket and dockerd's answer back, unchanged and
unbuffered (one ``recv`` at a time), so that streams (``logs -f``, ``events``, ``stats``)
reach the client as dockerd writes them. It also reads small JSON answers for the door's
own checks (:meth:`EngineProxy.json`).

Every forwarded request asks dockerd to close after its answer (``Connection: close``):
the end of dockerd's stream is then the end of the answer, whatever its framing, and the
door closes the client's connection after it too.
"""

from __future__ import annotations

import contextlib
import http
import http.client
import io
import json
import logging
import os
import re
import selectors
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from email.message import Message
from typing import IO, Any, cast
from urllib.parse import quote

from ds01.errors import DockerUnavailable
from ds01.runtime.docker_errors import DOCKER_SOCKET
from ds01.runtime.engine_socket import UnixConnection

log = logging.getLogger(__name__)

_CHUNK = 65536
#: The most bytes of dockerd's answer head read before a hijack's relay (a real one is
#: about 200).
_MAX_HEAD_BYTES = 65536
#: Seconds to connect to dockerd and for a small JSON answer of the door's own.
ENGINE_TIMEOUT_S = 30.0
#: Request headers not passed on: they describe the client's connection, not the request.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "host",
        "upgrade",
        "proxy-connection",
        "te",
        "trailer",
        "expect",
    }
)


#: A line break and the white space after it in a header's value (``obs-fold``).
_FOLD = re.compile(r"\r?\n[ \t]+")
#: The content type whose body Go's ``ParseForm`` reads as query parameters (before the
#: query's own): never sent, so dockerd reads the query the door checked.
_FORM = "application/x-www-form-urlencoded"
#: Characters no forwarded header line may hold (HTTP's control characters but tab).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class EngineProxy:
    """dockerd's socket, for the door: JSON reads and byte-for-byte forwarding."""

    def __init__(self, socket_path: str = DOCKER_SOCKET) -> None:
        self.socket_path = socket_path
        self._lock = threading.Lock()
        self._streams: set[socket.socket] = set()  # followed and hijacked, while relayed
        self._closing = False

    def close_streams(self) -> None:
        """ds01d stops: end every followed or hijacked relay now (its client sees the
        connection close), and refuse new ones. Thread-safe."""
        with self._lock:
            self._closing = True
            streams = list(self._streams)
        for engine in streams:
            with contextlib.suppress(OSError):
                engine.shutdown(socket.SHUT_RDWR)

    @property
    def closing(self) -> bool:
        """Whether :meth:`close_streams` was called (ds01d stops)."""
        with self._lock:
            return self._closing

    def hang_up_exec(self, exec_id: str) -> bool:
        """End the process of exec ``exec_id`` as a terminal's hangup would (``SIGHUP``),
        if it still runs; whether it was signalled. dockerd leaves an exec's process
        running when its hijacked connection closes (moby/moby#9098), and has no call to
        end one: its host pid is signalled, after checking that the pid is in the exec's
        container's cgroup (not a pid reused since)."""
        status, info = self.json("GET", f"/exec/{quote(exec_id, safe='')}/json")
        if status != 200 or not isinstance(info, dict) or not info.get("Running"):
            return False
        pid, container = info.get("Pid"), str(info.get("ContainerID") or "")
        if not isinstance(pid, int) or pid <= 1 or not container:
            return False
        try:
            with open(f"/proc/{pid}/cgroup", encoding="utf-8") as cgroups:
                if container not in cgroups.read():
                    return False
            os.kill(pid, signal.SIGHUP)
        except OSError:
            return False  # it ended meanwhile
        return True

    def json(self, method: str, target: str, body: object = None) -> tuple[int, Any]:
        """dockerd's status and JSON answer to a request (``body``: sent as JSON unless
        ``None``); the answer is ``None`` when it is not JSON.

        Raises:
            DockerUnavailable: dockerd does not answer.
        """
        conn = UnixConnection(self.socket_path, ENGINE_TIMEOUT_S)
        headers = {"Host": "docker"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except OSError as exc:
            raise DockerUnavailable(_unreachable(self.socket_path, exc)) from exc
        finally:
            conn.close()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, None

    def connect(self) -> socket.socket:
        """A fresh connection to dockerd.

        Raises:
            DockerUnavailable: dockerd does not answer.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(ENGINE_TIMEOUT_S)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise DockerUnavailable(_unreachable(self.socket_path, exc)) from exc
        return sock

    @contextlib.contextmanager
    def _engine(self, *, long_lived: bool) -> Iterator[socket.socket]:
        """A new connection to dockerd for one exchange, closed when the block ends. A
        ``long_lived`` one (a followed stream, a hijack, an export) is also among the
        streams :meth:`close_streams` ends while the block runs.

        Raises:
            DockerUnavailable: dockerd does not answer, or (``long_lived``) ds01d is
                stopping.
        """
        engine = self.connect()
        if long_lived:
            with self._lock:
                if self._closing:
                    engine.close()
                    raise DockerUnavailable("ds01d is stopping; try again when it is back.")
                self._streams.add(engine)
        try:
            yield engine
        finally:
            if long_lived:
                with self._lock:
                    self._streams.discard(engine)
            engine.close()

    def forward(
        self,
        client: socket.socket,
        method: str,
        target: str,
        headers: Message,
        body: bytes | tuple[IO[bytes], int] = b"",
        *,
        upgrade: bool = False,
        read_ahead: bytes = b"",
        follow: bool = False,
        seen: Callable[[bytes], None] | None = None,
    ) -> None:
        """Send one request to dockerd (``target``: its path and query) with the client's
        end-to-end ``headers`` and ``body`` (bytes, or a file and its length: sent as it is
        read), and copy dockerd's answer to ``client`` as it
        comes, until dockerd closes or the client hangs up.

        ``upgrade``: the request asks for the connection (attach, exec start): once
        dockerd hands it over (``101``) the bytes flow both ways (``read_ahead``: what the
        client sent after its request); the client's end of input is passed on as a
        half-close, and the relay ends when dockerd closes. Any other answer (an error, a
        detached exec) reaches the client whole and ends the exchange (``_hijacked``).
        ``follow``: the answer is a stream that may stay quiet for long (``logs -f``,
        ``events``), so a client that closes its side ends it at once instead of at the
        next write. ``seen``: given each piece of
        dockerd's answer (raw HTTP) before the client gets it (not with ``upgrade``).

        Raises:
            DockerUnavailable: dockerd does not answer (nothing was sent to the client).
        """
        with self._engine(long_lived=follow or upgrade) as engine:
            if isinstance(body, bytes):
                engine.sendall(request_bytes(method, target, headers, body, upgrade=upgrade))
            else:
                source, length = body
                engine.sendall(request_bytes(method, target, headers, b"", length=length))
                while data := source.read(_CHUNK):
                    engine.sendall(data)
            if upgrade:
                _hijacked(engine, client, read_ahead)
            else:
                _copy_answer(engine, client, follow=follow, seen=seen)

    def forward_transformed(
        self,
        client: socket.socket,
        target: str,
        headers: Message,
        transform: Callable[[IO[bytes], io.RawIOBase], None],
        keep: tuple[str, ...] = (),
    ) -> None:
        """A GET of ``target`` whose answer, when 200, reaches ``client`` through
        ``transform`` (dockerd's body, the client's socket as a file) after a head of its
        own (``keep``: dockerd's headers passed on), ending at its close; any other answer
        goes back as dockerd gave it. Long-lived (an export): ended by
        :meth:`close_streams`.

        Raises:
            DockerUnavailable: dockerd does not answer (nothing was sent to the client).
        """
        with self._engine(long_lived=True) as engine:
            try:
                engine.sendall(request_bytes("GET", target, headers, b""))
                engine.settimeout(None)
                response = http.client.HTTPResponse(engine, method="GET")
                response.begin()
                if response.status != 200:
                    _send_whole(response, client)
                    return
                lines = ["HTTP/1.1 200 OK", "Content-Type: application/x-tar"]
                lines += [f"{h}: {v}" for h in keep if (v := response.getheader(h))]
                client.sendall(("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode())
                # Loaded with the first copy out: the archive code (tarfile, the door's
                # archive rules) stays off ds01d's start.
                from ds01.runtime.archive_rewrite import SocketWriter

                transform(response, SocketWriter(client))
            except http.client.HTTPException as exc:
                log.warning("dockerd's answer to GET %s could not be read: %s", target[:120], exc)


def request_bytes(
    method: str,
    target: str,
    headers: Message,
    body: bytes,
    *,
    upgrade: bool = False,
    length: int | None = None,
) -> bytes:
    """The request as dockerd gets it: the client's end-to-end headers (a folded value
    unfolded, a header with any other control character left out, no form content type),
    a length for the
    body (``length``: of a body sent after these bytes), and ``Connection: close`` (or,
    for a hijack, ``Upgrade: tcp``)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: docker"]
    for name, value in headers.items():
        # A folded value (``obs-fold``) goes on as one line; no other line break or control
        # character reaches dockerd, whose reading of it need not be the door's.
        unfolded = _FOLD.sub(" ", value)
        if name.lower() in _HOP_BY_HOP or _CONTROL.search(name + unfolded):
            continue
        if name.lower() == "content-type" and _FORM in unfolded.lower():
            continue  # dockerd would read such a body's fields as query parameters
        lines.append(f"{name}: {unfolded}")
    if length is not None or body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines.extend(["Connection: Upgrade", "Upgrade: tcp"] if upgrade else ["Connection: close"])
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@contextlib.contextmanager
def _watching(engine: socket.socket, client: socket.socket) -> Iterator[selectors.BaseSelector]:
    """A selector that reports input on dockerd's socket and on the client's. Reads from
    dockerd then block without a timeout: a followed stream or an attached program may
    stay quiet for hours."""
    engine.settimeout(None)
    with selectors.PollSelector() as selector:
        selector.register(engine, selectors.EVENT_READ)
        selector.register(client, selectors.EVENT_READ)
        yield selector


def _copy_answer(
    engine: socket.socket,
    client: socket.socket,
    *,
    follow: bool,
    seen: Callable[[bytes], None] | None = None,
) -> None:
    """dockerd's answer to the client, chunk by chunk (each to ``seen`` first), until
    dockerd closes. A client that closes its side ends a followed stream at once (it
    left); any other answer is written in full (a client may half-close after its
    request). What a client sends on this exchange is not read: it has nothing more to
    say on it."""
    with _watching(engine, client) as selector:
        while True:
            for key, _ in selector.select():
                if key.fileobj is client:
                    with contextlib.suppress(BlockingIOError):
                        if follow and not client.recv(_CHUNK, socket.MSG_PEEK):
                            return  # the client left
                    selector.unregister(client)
                    continue
                data = engine.recv(_CHUNK)
                if not data:
                    return
                if seen is not None:
                    seen(data)
                client.sendall(data)


def _hijacked(engine: socket.socket, client: socket.socket, read_ahead: bytes) -> None:
    """After a request that asks dockerd for the connection: the bytes both ways
    (``_relay``) only once dockerd has handed it over (``101``). Any other answer (an error,
    an exec started detached) goes to the client whole, and the exchange ends there: dockerd
    still reads requests on that connection, as root's, so nothing more the client sends
    may reach it."""
    head, early = _answer_head(engine)
    if not head.endswith(b"\r\n\r\n"):
        log.warning("dockerd's answer to a hijack ended or ran on before its head did")
        return
    if _status_of(head) != http.HTTPStatus.SWITCHING_PROTOCOLS:
        replay = cast(socket.socket, _ReadAgain(head + early, engine))
        response = http.client.HTTPResponse(replay)
        try:
            response.begin()
            _send_whole(response, client)
        except (http.client.HTTPException, OSError) as exc:
            log.warning("dockerd's answer to a hijack could not be passed on: %s", exc)
        return
    client.sendall(head + early)
    if read_ahead:
        engine.sendall(read_ahead)
    _relay(engine, client)


def _answer_head(engine: socket.socket) -> tuple[bytes, bytes]:
    """dockerd's answer head (its status line and headers through the blank line), and
    the bytes that came after it in the same reads: the start of a hijacked stream. A head
    cut short (dockerd closed, or ``_MAX_HEAD_BYTES`` without its end) is returned as it
    came, without its blank line (``_hijacked`` then passes nothing on)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) <= _MAX_HEAD_BYTES:
        chunk = engine.recv(_CHUNK)
        if not chunk:
            break
        data += chunk
    head, blank, early = data.partition(b"\r\n\r\n")
    return head + blank, early


def _status_of(head: bytes) -> int | None:
    """The status code of an answer head (``HTTP/1.1 101 UPGRADED``), ``None`` if none."""
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


class _ReadAgain:
    """A socket for ``http.client.HTTPResponse`` whose first bytes (``already``) were read
    from it before: ``http.client`` then reads the answer's framing (a length, chunks)."""

    def __init__(self, already: bytes, sock: socket.socket) -> None:
        self._already = already
        self._sock = sock

    def makefile(self, mode: str) -> IO[bytes]:
        return io.BufferedReader(_Prefixed(self._already, self._sock))


class _Prefixed(io.RawIOBase):
    """``prefix``, then what ``sock`` receives."""

    def __init__(self, prefix: bytes, sock: socket.socket) -> None:
        super().__init__()
        self._prefix = bytearray(prefix)
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, target: memoryview | bytearray) -> int:  # type: ignore[override]
        if not self._prefix:
            return self._sock.recv_into(target)
        n = min(len(target), len(self._prefix))
        target[:n] = self._prefix[:n]
        del self._prefix[:n]
        return n


def _send_whole(response: http.client.HTTPResponse, client: socket.socket) -> None:
    """dockerd's answer (its head read by ``response.begin()``) to the client in one piece,
    with ``Connection: close``: its status, content type and body."""
    body = response.read()
    kind = response.getheader("Content-Type") or "application/json"
    head = (
        f"HTTP/1.1 {response.status} {response.reason}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    client.sendall(head.encode("latin-1") + body)


def _relay(engine: socket.socket, client: socket.socket) -> None:
    """Bytes both ways until dockerd closes; the client's end of input becomes a
    half-close towards dockerd (the program in the container sees its input end)."""
    client_open = True
    with _watching(engine, client) as selector:
        while True:
            for key, _ in selector.select():
                if key.fileobj is engine:
                    data = engine.recv(_CHUNK)
                    if not data:
                        with contextlib.suppress(OSError):
                            client.shutdown(socket.SHUT_WR)
                        return
                    client.sendall(data)
                elif client_open:
                    try:
                        data = client.recv(_CHUNK)
                    except OSError:
                        data = b""
                    if data:
                        engine.sendall(data)
                    else:
                        client_open = False
                        selector.unregister(client)
                        with contextlib.suppress(OSError):
                            engine.shutdown(socket.SHUT_WR)


def _unreachable(path: str, exc: OSError) -> str:
    return f"Docker on {path} does not answer ({exc.strerror or exc}); tell an admin."


__all__ = ["ENGINE_TIMEOUT_S", "EngineProxy", "request_bytes"]
