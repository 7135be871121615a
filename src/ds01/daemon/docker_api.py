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
  answers come back unbuffered; every connection closes after one answer. A create that
  asks for GPUs when none is free waits in ds01's GPU queue, its connection held until
  the container is made (``ds01.daemon.door_queue``); it runs among the waiting requests
  (bounded per user), never taking a worker of ordinary requests.

This module is the door's server; one request's handling is ``ds01.daemon.door_requests``,
loaded on the door's first request (not on ds01d's start path).

A user's name for a container (``thesis``) finds their Docker name (``thesis._.1001``)
first, then Docker's own resolution applies (name, id, id prefix).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from pathlib import Path

from ds01.daemon.connections import (
    DEFAULT_LIMITS,
    ConnectionLimits,
    ConnectionServer,
    Exchange,
    LaneName,
    open_to_everyone,
)
from ds01.daemon.server import audit_connection_refusal
from ds01.daemon.service import Ds01Service
from ds01.errors import Ds01Error
from ds01.runtime.engine_proxy import EngineProxy

#: The resource of the audit events of refused connections (a user over their cap).
CONNECTION_RESOURCE = "docker/connection"
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
            error_body=_error_body,
        )

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.connections.serve_forever(poll_interval)

    def drain(self, timeout_s: float) -> None:
        """Begin to stop: followed streams and hijacked connections end now (their
        clients see the connection close), creates held in the GPU queue are withdrawn
        (their clients told so); other requests finish as on the API socket."""
        self.engine.close_streams()
        self.service.queue_desk.held.wake_all()  # they see ``engine.closing``
        self.connections.drain(timeout_s)

    def hurry(self) -> None:
        self.connections.hurry()

    @property
    def cut_short(self) -> list[str]:
        return self.connections.cut_short

    def server_close(self) -> None:
        self.connections.close()

    def _answer(self, exchange: Exchange) -> bool:
        """Answer one exchange; the connection always closes after it. The handlers load
        on the first request (``door_requests``): ds01d answers its API before."""
        from ds01.daemon.door_exchange import Answered
        from ds01.daemon.door_requests import DoorRequest

        with contextlib.suppress(Answered):
            DoorRequest(self, exchange).answer()
        return False


def _error_body(error: Ds01Error) -> bytes:
    """Docker's shape of an error, so that the docker CLI prints ds01's words."""
    from ds01.core import docker_api as decide

    return decide.error_body(error.message)


def _lane(request: bytes) -> LaneName:
    """Requests that follow a stream, and creates that ask for GPUs (they may wait in the
    GPU queue), run in the pool of waiting requests: bounded per user, apart from the
    workers (``decide.request_waits``)."""
    from ds01.core import docker_api as decide

    return "waiting" if decide.request_waits(request) else "workers"


def _wait_only(request_line: bytes) -> bool:
    """A followed read changes nothing: the drain may cut it at once."""
    return request_line.startswith(b"GET ") and _lane(request_line + b"\r\n\r\n") == "waiting"


__all__ = ["CONNECTION_RESOURCE", "DockerApiServer"]
