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

import ipaddress
import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from ds01.errors import InvalidInput
from ds01.metrics.collector import Ds01Collector

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9101"
ENV_METRICS_LISTEN = "DS01_METRICS_LISTEN"
ENV_METRICS_ALLOW_REMOTE = "DS01_METRICS_ALLOW_REMOTE"
ENV_METRICS_CONTAINER_NAMES = "DS01_METRICS_CONTAINER_NAMES"
#: The value of ``--metrics-listen`` that turns the exporter off.
OFF = "off"


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (``localhost``, 127.0.0.0/8, ``::1``)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str, *, allow_remote: bool = False) -> ListenAddress | None:
    """``HOST:PORT`` (``[::1]:9101`` for IPv6) as an address; ``off`` gives ``None``.

    Raises:
        ds01.errors.InvalidInput: not of that form, a port outside 0-65535 (0: any free
            port), or a non-loopback host without ``allow_remote``.
    """
    value = text.strip()
    if value.lower() == OFF:
        return None
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise InvalidInput(
            f"metrics listen address {text!r}: expected HOST:PORT (e.g. {DEFAULT_LISTEN}, "
            f"[::1]:9101) or {OFF!r}"
        )
    address = ListenAddress(host, int(port_text))
    if not address.loopback and not allow_remote:
        raise InvalidInput(
            f"metrics listen address {text!r} is not loopback: the metrics name users, "
            "containers and their GPU use, without authentication. Listen on 127.0.0.1 and "
            "let Prometheus scrape locally, or allow it with --metrics-allow-remote "
            f"(${ENV_METRICS_ALLOW_REMOTE}=1) behind a firewall or an authenticating proxy."
        )
    return address


class MetricsExporter:
    """Serves a collector's metrics over HTTP in a thread of ds01d.

    Args:
        collector: the ds01 collector.
        process_metrics: also export ``process_*`` of this process.
    """

    def __init__(self, collector: Ds01Collector, *, process_metrics: bool = True) -> None:
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
