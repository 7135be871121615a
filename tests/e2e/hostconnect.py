"""Connections from a host shell as a real user (no tests here): what ds01's firewall lets
through to a container's address (``tests/e2e/test_bypass_network.py``,
``tests/e2e/test_bypass_hub.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

REACHED, BLOCKED = "REACHED", "BLOCKED"

#: Python, run as a host user: ``connect(host, port)`` asks for the page and returns
#: "REACHED" and the answer, or "BLOCKED" and why.
CONNECT_FUNCTION = textwrap.dedent(
    """
    import os, socket, sys
    def connect(host, port):
        try:
            with socket.create_connection((host, int(port)), timeout=3) as conn:
                conn.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
                conn.settimeout(3)
                answer = b"".join(iter(lambda: conn.recv(4096), b""))
            return "REACHED " + answer.decode(errors="replace")
        except OSError as exc:
            return f"BLOCKED {exc}"
    """
)
#: Connect once to ``argv[1]``:``argv[2]`` and print the outcome.
CONNECT_SCRIPT = CONNECT_FUNCTION + "print(connect(sys.argv[1], sys.argv[2]))\n"
#: Kept running: print its groups, then for each "HOST PORT" line read, connect and print
#: the outcome on one line.
SHELL_SCRIPT = CONNECT_FUNCTION + textwrap.dedent(
    """
    print(*os.getgroups(), flush=True)
    for line in sys.stdin:
        print(" ".join(connect(*line.split()).split()), flush=True)  # one line, no CR
    """
)


class HostShell:
    """A process of ``user`` on the host that keeps running, with the groups it was given
    at its start (``groups``), as a login shell left open: it connects when asked."""

    def __init__(self, user: str) -> None:
        self.process = subprocess.Popen(
            ["runuser", "-u", user, "--", sys.executable, "-c", SHELL_SCRIPT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
        )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in, self._out = self.process.stdin, self.process.stdout
        self.groups = {int(gid) for gid in self._out.readline().split()}

    def connect(self, host: str, port: int) -> str:
        """``REACHED …`` or ``BLOCKED …``, as ``host_connect``."""
        self._in.write(f"{host} {port}{os.linesep}")
        self._in.flush()
        return self._out.readline().strip()

    def close(self) -> None:
        self._in.close()
        self.process.wait(timeout=30)


def host_connect(user: str | None, host: str, port: int) -> str:
    """Connect from a host shell as ``user`` (``None``: root): ``REACHED …`` or ``BLOCKED …``."""
    prefix = [] if user is None else ["runuser", "-u", user, "--"]
    done = subprocess.run(
        [*prefix, sys.executable, "-c", CONNECT_SCRIPT, host, str(port)],
        capture_output=True, text=True, timeout=30, cwd="/",
    )  # fmt: skip
    return (done.stdout + done.stderr).strip()
