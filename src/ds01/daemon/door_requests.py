"""One request on the Docker API door, from its bytes to its answer (``DoorRequest``).

``ds01.daemon.docker_api`` serves the door and loads this module on the door's first
request: its handlers (``door_containers``, ``door_images``, ``door_volumes``) and the
door's decisions (``ds01.core.docker_api``) are not on ds01d's start path.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from ds01.core import docker_api as decide
from ds01.daemon.connections import MAX_BODY_BYTES, Exchange
from ds01.daemon.door_containers import ContainerRequests
from ds01.daemon.door_exchange import Answered
from ds01.daemon.door_images import ImageRequests
from ds01.errors import Ds01Error, PolicyError
from ds01.model.text import visible

if TYPE_CHECKING:
    from ds01.daemon.docker_api import DockerApiServer

#: The door's log (one name for the server and its requests).
log = logging.getLogger("ds01.daemon.docker_api")
#: How long, and how much, a refused request's streamed body is read away (see
#: ``DoorRequest.answer``).
_READ_AWAY_S = 10.0
_READ_AWAY_BYTES = 256 * 1024**2


class DoorRequest(ContainerRequests, ImageRequests):
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
            log.error("%s %s failed: %s", request.method, visible(request.path), exc.message)
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
