"""The exporter's HTTP endpoint: ``GET /metrics`` on ``--metrics-listen`` (127.0.0.1:9101).

The endpoint has no authentication and shows who holds which GPU, user and container
names, quota use and energy per user. It therefore listens on loopback by default, and a
non-loopback address is refused unless ``--metrics-allow-remote`` (or
``DS01_METRICS_ALLOW_REMOTE=1``) says so; then restrict who can reach the port (firewall)
or put a TLS/authenticating proxy in front of it.

The server is prometheus-client's WSGI app (``make_wsgi_app``: the exposition, gzip,
``name[]`` filters) on a registry of its own (the ds01 collector and the process collector,
``process_*``: the daemon's memory, CPU time and open files), served by a threaded WSGI
server of this module that bounds what a client can hold, since every local user can
connect: at most ``MAX_CONNECTIONS`` connections are served at once (a thread each), a
connection silent for ``CONNECTION_TIMEOUT_SECONDS`` is closed, and when all are taken a
new one makes room by closing the oldest that has still not sent its whole request (a slow
or idle client); if every one is being answered, the new one is closed at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.registry import Collector

from ds01.metrics.listen import DEFAULT_LISTEN as DEFAULT_LISTEN
from ds01.metrics.listen import ENV_METRICS_ALLOW_REMOTE as ENV_METRICS_ALLOW_REMOTE
from ds01.metrics.listen import ENV_METRICS_CONTAINER_NAMES as ENV_METRICS_CONTAINER_NAMES
from ds01.metrics.listen import ENV_METRICS_LISTEN as ENV_METRICS_LISTEN
from ds01.metrics.listen import OFF as OFF
from ds01.metrics.listen import ListenAddress as ListenAddress
from ds01.metrics.listen import parse_listen as parse_listen

log = logging.getLogger(__name__)

#: Connections served at once, each on a thread (Prometheus needs one per scrape; a few
#: more for curl and a second Prometheus).
MAX_CONNECTIONS = 16
#: Seconds a connection may be silent (sending its request, or reading the answer) before
#: it is closed; a scrape takes milliseconds.
CONNECTION_TIMEOUT_SECONDS = 5.0
#: Seconds a new connection waits for the one closed to make room to end.
_EVICTION_WAIT_SECONDS = 1.0

_Stage = Literal["reading", "answering", "closing"]


class _Connections:
    """The connections being served, oldest first, and how far each is. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._changed = threading.Condition()
        self._open: dict[socket.socket, _Stage] = {}

    def admit(self, conn: socket.socket) -> bool:
        """Count ``conn`` in, making room if needed by closing the oldest connection that
        has not sent its whole request; ``False`` if there is no room."""
        with self._changed:
            if len(self._open) >= self.limit:
                slow = next((c for c, stage in self._open.items() if stage == "reading"), None)
                if slow is None:
                    return False  # every one is being answered: they end in milliseconds
                self._open[slow] = "closing"
                with contextlib.suppress(OSError):
                    slow.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once
                self._changed.wait_for(
                    lambda: len(self._open) < self.limit, timeout=_EVICTION_WAIT_SECONDS
                )
                if len(self._open) >= self.limit:
                    return False
            self._open[conn] = "reading"
            return True

    def answering(self, conn: socket.socket) -> None:
        with self._changed:
            if self._open.get(conn) == "reading":
                self._open[conn] = "answering"

    def done(self, conn: socket.socket) -> None:
        with self._changed:
            self._open.pop(conn, None)
            self._changed.notify_all()

    def close_all(self) -> None:
        with self._changed:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def count(self) -> int:
        with self._changed:
            return len(self._open)


class _Handler(WSGIRequestHandler):
    """prometheus-client's quiet handler, with a timeout on every read and write."""

    server: _BoundedServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.connection_timeout)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:  # the whole request head is in: no longer a slow client to make room from
            self.server.connections.answering(self.connection)
        return ok

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing (a scrape a second)."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most ``connections.limit`` of them (see the module)."""

    daemon_threads = True
    # socketserver's 5 would drop a scrape's SYN (a second's retry) behind a burst of others
    request_queue_size = 128
    connections: _Connections
    connection_timeout: float

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.admit(request):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.done(request)
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went silent (timeout) or away: its business, not a traceback on
        # ds01d's stderr (socketserver's default) that any local user could repeat.
        log.debug("metrics: a connection from %s ended early", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.done(request)


def _serve(
    address: ListenAddress, registry: CollectorRegistry, max_connections: int, timeout: float
) -> _BoundedServer:
    """A bound ``_BoundedServer`` for ``registry``'s metrics (IPv6 when the address is)."""
    infos = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, sockaddr = infos[0]

    class Server(_BoundedServer):
        address_family = family

    server = make_server(
        str(sockaddr[0]), address.port, make_wsgi_app(registry), Server, handler_class=_Handler
    )
    assert isinstance(server, _BoundedServer)
    server.connections = _Connections(max_connections)
    server.connection_timeout = timeout
    return server


class MetricsExporter:
    """Serves a collector's metrics over HTTP in a thread of ds01d.

    Args:
        collector: the ds01 collector (``Ds01Collector``; on a login node,
            ``ds01.metrics.slurm_queue.SlurmQueueCollector``).
        process_metrics: also export ``process_*`` of this process.
        max_connections, connection_timeout: the bounds on clients (see the module).
    """

    def __init__(
        self,
        collector: Collector,
        *,
        process_metrics: bool = True,
        max_connections: int = MAX_CONNECTIONS,
        connection_timeout: float = CONNECTION_TIMEOUT_SECONDS,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        if process_metrics:
            ProcessCollector(registry=self.registry)
        self.max_connections = max_connections
        self.connection_timeout = connection_timeout
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None

    def open_connections(self) -> int:
        """Connections being served now (each holds a thread)."""
        return 0 if self._server is None else self._server.connections.count()

    @property
    def address(self) -> ListenAddress | None:
        """Where it listens (the real port when 0 was asked for); ``None`` when stopped."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return ListenAddress(str(host), int(port))

    def start(self, address: ListenAddress) -> ListenAddress:
        """Listen on ``address`` and serve in a daemon thread.

        Raises:
            OSError: the address cannot be bound (in use, not a local address).
        """
        if self._server is not None:
            raise RuntimeError("the exporter is already running")
        server = _serve(address, self.registry, self.max_connections, self.connection_timeout)
        thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        bound = self.address
        assert bound is not None
        return bound

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        # serve_forever looks for the shutdown request between selects of half a second:
        # shutting the listening socket
        # down wakes that select at once (Linux), so that ds01d's stop does not wait for it.
        with contextlib.suppress(OSError):
            server.socket.shutdown(socket.SHUT_RDWR)
        server.shutdown()
        server.server_close()
        server.connections.close_all()
        if thread is not None:
            thread.join(5.0)


__all__ = [
    "CONNECTION_TIMEOUT_SECONDS",
    "DEFAULT_LISTEN",
    "ENV_METRICS_ALLOW_REMOTE",
    "ENV_METRICS_LISTEN",
    "MAX_CONNECTIONS",
    "OFF",
    "ListenAddress",
    "MetricsExporter",
    "parse_listen",
]
