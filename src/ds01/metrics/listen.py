"""Where the exporter listens: ``--metrics-listen`` and its environment, parsed and checked.

Standard library only, apart from it (``ds01.metrics.exporter`` loads prometheus-client):
ds01d checks its flags with this before it serves, and loads the exporter only once its
socket answers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ds01.errors import InvalidInput

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
