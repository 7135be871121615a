"""Whether a TCP port on the host's loopback address is free, asked of the kernel."""

from __future__ import annotations

import socket

from ds01.runtime.docker import PUBLISH_HOST_IP


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` (TCP) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Connections of an earlier listener in TIME_WAIT do not make a port taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((PUBLISH_HOST_IP, port))
        except OSError:
            return False
    return True
