"""Connections from a host shell as a real user (no tests here): what ds01's firewall lets
through to a container's address (``tests/e2e/test_bypass_network.py``,
``tests/e2e/test_bypass_hub.py``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

REACHED, BLOCKED = "REACHED", "BLOCKED"

#: Run as a host user: connect, ask for the page, print REACHED and the answer, or BLOCKED.
CONNECT_SCRIPT = textwrap.dedent(
    """
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as conn:
            conn.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
            conn.settimeout(3)
            answer = b"".join(iter(lambda: conn.recv(4096), b""))
        print("REACHED", answer.decode(errors="replace"))
    except OSError as exc:
        print("BLOCKED", exc)
    """
)


def host_connect(user: str | None, host: str, port: int) -> str:
    """Connect from a host shell as ``user`` (``None``: root): ``REACHED …`` or ``BLOCKED …``."""
    prefix = [] if user is None else ["runuser", "-u", user, "--"]
    done = subprocess.run(
        [*prefix, sys.executable, "-c", CONNECT_SCRIPT, host, str(port)],
        capture_output=True, text=True, timeout=30, cwd="/",
    )  # fmt: skip
    return (done.stdout + done.stderr).strip()
