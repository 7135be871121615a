"""The exporter's HTTP endpoint: ``GET /metrics`` on ``--metrics-listen`` (127.0.0.1:9101).

The endpoint has no authentication and shows who holds which GPU, user and container
names, quota use and energy per user. It therefore listens on loopback by default, and a
non-loopback address is refused unless ``--metrics-allow-remote`` (or
``DS01_METRICS_ALLOW_REMOTE=1``) says so; then restrict who can reach the port (firewall)
or put a TLS/authenticating proxy in front of it.

The server is prometheus-client's (``start_http_server``, a threaded WSGI server) on a
registry of its own: the ds01 collector and the process collector (``process_*``: the
daemon's memory, CPU time and open files).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.registry import Collector

from ds01.metrics.listen import DEFAULT_LISTEN as DEFAULT_LISTEN
from ds01.metrics.listen import ENV_METRICS_ALLOW_REMOTE as ENV_METRICS_ALLOW_REMOTE
from ds01.metrics.listen import ENV_METRICS_CONTAINER_NAMES as ENV_METRICS_CONTAINER_NAMES
from ds01.metrics.listen import ENV_METRICS_LISTEN as ENV_METRICS_LISTEN
from ds01.metrics.listen import OFF as OFF
from ds01.metrics.listen import ListenAddress as ListenAddress
from ds01.metrics.listen import parse_listen as parse_listen

log = logging.getLogger(__name__)


class MetricsExporter:
    """Serves a collector's metrics over HTTP in a thread of ds01d.

    Args:
        collector: the ds01 collector (``Ds01Collector``; on a login node,
            ``ds01.metrics.slurm_queue.SlurmQueueCollector``).
        process_metrics: also export ``process_*`` of this process.
    """

    def __init__(self, collector: Collector, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        if process_metrics:
            ProcessCollector(registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

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
        self._server, self._thread = start_http_server(
            address.port, addr=address.host, registry=self.registry
        )
        bound = self.address
        assert bound is not None
        return bound

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        # serve_forever looks for the shutdown request between selects of half a second
        # (prometheus-client's thread does not say otherwise): shutting the listening socket
        # down wakes that select at once (Linux), so that ds01d's stop does not wait for it.
        with contextlib.suppress(OSError):
            server.socket.shutdown(socket.SHUT_RDWR)
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5.0)


__all__ = [
    "DEFAULT_LISTEN",
    "ENV_METRICS_ALLOW_REMOTE",
    "ENV_METRICS_LISTEN",
    "OFF",
    "ListenAddress",
    "MetricsExporter",
    "parse_listen",
]
