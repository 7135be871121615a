"""ds01's Docker Engine API door: a second unix socket for users' own Docker tools.

``ds01d --docker-socket PATH`` (``$DS01_DOCKER_SOCKET``; default ``docker.sock`` next to
the API socket, so ``/run/ds01/docker.sock``; ``off``: no door) serves the Docker Engine
API to every local user, mode 0666, on ds01's rules:

- **who**: the kernel says (``SO_PEERCRED``, read at accept by
  ``ds01.daemon.connections``, which also caps each user's connections and workers as on
  the API socket);
- **what**: ``ds01.core.docker_api`` decides from the method and path; everything not on
  its allowlist is refused (HTTP 403, Docker's error body, a message naming the endpoint)
  and audited (``docker_api.request``, outcome ``denied``);
- **whose**: lists and event streams are filtered by dockerd itself (the caller's
  ``ds01.uid`` label added to their filters), images to those the caller may run, and a
  request about one container goes on only when that container is the caller's
  (``ds01.managed`` and ``ds01.uid`` labels): another user's container, by name, id or id
  prefix, gets Docker's own "No such container" answer. The request is then forwarded
  with the container's full id in its path, so that what was checked is what dockerd acts
  on;
- **how**: allowed requests go to dockerd byte for byte (``ds01.runtime.engine_proxy``),
  answers come back unbuffered; every connection closes after one answer.

A user's name for a container (``thesis``) finds their Docker name (``thesis._.1001``)
first, then Docker's own resolution applies (name, id, id prefix).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

from ds01.core import docker_api as decide
from ds01.daemon.connections import (
    DEFAULT_LIMITS,
    MAX_BODY_BYTES,
    ConnectionLimits,
    ConnectionServer,
    Exchange,
    LaneName,
    open_to_everyone,
)
from ds01.daemon.door_containers import ContainerRequests
from ds01.daemon.door_exchange import AUDIT_ACTION, Answered
from ds01.daemon.door_images import ImageRequests
from ds01.daemon.server import audit_connection_refusal
from ds01.daemon.service import Ds01Service
from ds01.errors import Ds01Error, PolicyError
from ds01.runtime.engine_proxy import EngineProxy

log = logging.getLogger(__name__)

#: The resource of the audit events of refused connections (a user over their cap).
CONNECTION_RESOURCE = "docker/connection"
#: How long, and how much, a refused request's streamed body is read away (see
#: ``_DoorExchange.answer``).
_READ_AWAY_S = 10.0
_READ_AWAY_BYTES = 256 * 1024**2


class DockerApiServer:
    """The door on ``socket_path``: ``serve_forever`` (in a thread of its own) until a
    ``drain``, then ``server_close``; a listening socket found there is refused as
    ``Ds01HttpServer`` refuses its own."""

    def __init__(
        self,
        socket_path: Path,
        service: Ds01Service,
        limits: ConnectionLimits = DEFAULT_LIMITS,
        engine: EngineProxy | None = None,
    ) -> None:
        self.service = service
        self.socket_path = socket_path
        self.engine = engine or EngineProxy()
        # Counting a user's volumes and making one happen together (the per-user cap).
        self.volume_lock = threading.Lock()
        listener = open_to_everyone(socket_path)
        # A user's connections past their cap are refused as on the API socket, and audited
        # (``api.throttled`` on ``docker/connection``).
        self.connections = ConnectionServer(
            listener,
            self._answer,
            _lane,
            limits=limits,
            on_refusal=functools.partial(audit_connection_refusal, service, CONNECTION_RESOURCE),
            wait_only=_wait_only,
            # Docker's shape, so that the docker CLI prints ds01's words.
            error_body=lambda error: decide.error_body(error.message),
        )

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.connections.serve_forever(poll_interval)

    def drain(self, timeout_s: float) -> None:
        """Begin to stop: followed streams and hijacked connections end now (their
        clients see the connection close); other requests finish as on the API socket."""
        self.engine.close_streams()
        self.connections.drain(timeout_s)

    def hurry(self) -> None:
        self.connections.hurry()

    @property
    def cut_short(self) -> list[str]:
        return self.connections.cut_short

    def server_close(self) -> None:
        self.connections.close()

    def _answer(self, exchange: Exchange) -> bool:
        """Answer one exchange; the connection always closes after it."""
        with contextlib.suppress(Answered):
            _DoorExchange(self, exchange).answer()
        return False


class _DoorExchange(ContainerRequests, ImageRequests):
    """One request on the door, from its bytes to its answer: read, checked, then routed to
    its handler (``door_containers``, ``door_images``, ``door_volumes``) or forwarded."""

    def __init__(self, server: DockerApiServer, exchange: Exchange) -> None:
        super().__init__(server.service, server.engine, server.volume_lock, exchange)

    def answer(self) -> None:
        """Answer the exchange (``Answered`` when done); a streamed body the answer came
        before is read away first, so that a client still sending it reads the answer
        instead of a broken pipe."""
        try:
            self._answer()
        except Answered:
            if self.body_pending:
                self._read_away()
            raise

    def _read_away(self) -> None:
        """Read and drop what the client still sends, for at most ``_READ_AWAY_S`` and
        ``_READ_AWAY_BYTES``, then stop (the connection closes after it either way)."""
        deadline = time.monotonic() + _READ_AWAY_S
        left = _READ_AWAY_BYTES
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)  # the answer is whole
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                self.sock.settimeout(wait)
                data = self.sock.recv(65536)
                if not data:
                    return
                left -= len(data)

    def _answer(self) -> None:
        try:
            # Identity is fixed for the whole connection by the kernel (read at accept).
            self.caller = self.service.caller(self.exchange.creds)
        except Ds01Error as exc:
            self._error(exc.http_status, exc.message)
        try:
            request = decide.parse_request(self.exchange.data)
        except decide.BadRequest as exc:
            self._refuse(400, f"ds01 could not read this request: {exc}.")
        self.what = f"{request.method} {request.path[:120]}"
        routed = decide.route(request.method, request.path)
        # An import streams a tar it is refused before (read away, not refused as chunked).
        imported = decide.import_refusal(request)
        # A copy into a container, a build context and a load stream their bodies.
        streamed = imported is not None or (
            isinstance(routed, decide.Routed)
            and routed.endpoint.kind in ("archive_put", "build", "image_load")
        )
        # Chunked or longer than the connection reader reads: still on the socket.
        length = request.headers.get("Content-Length") or "0"
        self.body_pending = streamed and (
            request.chunked or not length.isdigit() or int(length) > MAX_BODY_BYTES
        )
        body = b"" if streamed else self._body(request)
        if decide.version_too_old(request.version):
            low = ".".join(str(n) for n in decide.MIN_API_VERSION)
            self._refuse(
                400,
                f"client version {request.version} is too old. Minimum supported API "
                f"version is {low}, please upgrade your client to a newer version",
            )
        if isinstance(routed, decide.Refused):
            self._refuse(routed.status, routed.message)
        if imported is not None:
            self._refuse(403, imported)
        try:
            self._serve(request, routed, body)
        except PolicyError as exc:
            self._refuse(exc.http_status, exc.message)
        except Ds01Error as exc:
            log.error("%s %s failed: %s", request.method, request.path, exc.message)
            self._error(exc.http_status, exc.message)

    def _body(self, request: decide.DockerRequest) -> bytes:
        """The request's body; a chunked, oversized or malformed length is refused (the
        connection reader waits only for a ``Content-Length`` body of at most
        ``MAX_BODY_BYTES``)."""
        if request.chunked:
            self._refuse(
                411,
                "ds01's Docker socket needs a Content-Length: chunked request bodies are refused.",
            )
        text = request.headers.get("Content-Length") or "0"
        if not (text.isascii() and text.isdigit()):
            self._refuse(400, f"Invalid Content-Length {text[:40]!r}.")
        length = int(text)
        if length > MAX_BODY_BYTES:
            self._refuse(
                413,
                f"Request body too large ({length} bytes; ds01 takes at most {MAX_BODY_BYTES}).",
            )
        data = self.exchange.data
        return data[request.head_bytes : request.head_bytes + length]

    def _serve(self, request: decide.DockerRequest, routed: decide.Routed, body: bytes) -> None:
        assert self.caller is not None
        uid = self.caller.uid
        kind, ref = routed.endpoint.kind, routed.ref or ""
        upgrade = False
        if kind == "engine":
            target = decide.with_query(request)
        elif kind in ("list", "events"):
            try:
                filters = decide.owned_filters(
                    request.query_value("filters"), uid, container_events=kind == "events"
                )
            except decide.BadRequest as exc:
                self._refuse(400, f"Invalid filters: {exc}.")
            target = decide.with_query(request, filters=filters)
        elif kind == "images":
            self._images(request)
        elif kind == "image":
            self._image(request, ref)
        elif kind == "image_save":
            self._checked_save(request, routed.ref)
            target = decide.with_query(request)
        elif kind == "create":
            self._create(request, body)
        elif kind == "archive_put":
            self._archive_put(request, ref)
        elif kind == "archive_get":
            self._archive_get(request, ref)
        elif kind == "image_load":
            self._load(request)
        elif kind == "commit":
            self._commit(request, body)
        elif kind == "image_tag":
            self._tag(request, ref)
        elif kind == "image_remove":
            self._remove_image(request, ref)
        elif kind == "pull":
            self._pull(request)
        elif kind == "build":
            self._build(request)
        elif kind == "info":
            self._info()
        elif kind.startswith("network"):
            self._network(request, kind, ref, body)
        elif kind.startswith("volume"):
            self._volume(request, kind, ref, body)
            target = decide.request_path(request, f"/volumes/{quote(self._volume_name(ref))}")
        elif kind == "update":
            info = self._own_container_info(ref)
            body = self._checked_update(info, body)
            target = self._container_target(request, "/containers/", ref, str(info["Id"]))
        elif kind in ("start", "stop", "restart", "remove"):
            self._operate(request, kind, ref)
        elif kind == "rename":
            self._rename(request, self._own_container(ref)[1])
        elif kind == "exec_create":
            body = self._checked_exec(body)
            target = self._container_target(request, "/containers/", ref)
        elif kind in ("exec", "exec_start"):
            self._own_exec(ref)
            target = decide.with_query(request)
            upgrade = kind == "exec_start" and request.wants_upgrade
        else:  # container, attach
            target = self._container_target(request, "/containers/", ref)
            upgrade = kind == "attach"
        self._claim()
        try:
            self.engine.forward(
                self.sock,
                request.method,
                target,
                request.headers,
                body,
                upgrade=upgrade,
                read_ahead=self.exchange.read_ahead,
                follow=decide.waits(request),
            )
        finally:
            if kind == "exec_start" and self.engine.closing:
                self._hang_up(ref)


def _lane(request_line: bytes) -> LaneName:
    """Requests that follow a stream run in the pool of waiting requests."""
    try:
        request = decide.parse_request(request_line + b"\r\n\r\n")
    except decide.BadRequest:
        return "workers"
    return "waiting" if decide.waits(request) else "workers"


def _wait_only(request_line: bytes) -> bool:
    """A followed read changes nothing: the drain may cut it at once."""
    return request_line.startswith(b"GET ") and _lane(request_line) == "waiting"


__all__ = ["AUDIT_ACTION", "CONNECTION_RESOURCE", "DockerApiServer"]
