"""``container-open``: a real terminal in your own container, through ds01d.

The CLI asks ds01d to open a terminal (``POST /v1/containers/{name}/terminal`` with
``Connection: Upgrade``); after ``101 Switching Protocols`` the connection carries the raw
terminal. This side puts its own terminal in raw mode (so Ctrl-C, arrows and full-screen
programs reach the container), copies bytes both ways, follows window-size changes
(SIGWINCH → ``POST /v1/terminals/{id}/resize``) and, when the program ends, exits with
its exit status (``GET /v1/terminals/{id}``). Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import termios
import tty
from urllib.parse import quote

from ds01.cli.client import ApiError, Ds01Client, unreachable_message
from ds01.errors import DaemonUnavailable
from ds01.paths import socket_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

_CHUNK = 65536


#: What a terminal sends for end of input (Ctrl-D).
EOF_KEY = b"\x04"


def _window_size() -> tuple[int, int]:
    """(rows, columns) of our terminal; 24 x 80 when unknown (a new pty reports 0 x 0)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return 24, 80
    return (size.lines or 24, size.columns or 80)


def connect(
    name: str, command: list[str], user: str | None, path: str | None = None
) -> tuple[socket.socket, str]:
    """Open the terminal; return the upgraded connection and the session id."""
    rows, cols = _window_size()
    body = json.dumps(
        {
            "command": command,
            "rows": rows,
            "cols": cols,
            "term": os.environ.get("TERM") or "xterm-256color",
            "user": user,
        }
    ).encode()
    target = f"/v1/containers/{quote(name, safe='')}/terminal"
    request = (
        f"POST {target} HTTP/1.1\r\nHost: ds01d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    where = str(socket_path(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(where)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonUnavailable(unreachable_message(where, exc.strerror)) from exc
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: what follows the headers is the terminal's
        if not chunk:
            sock.close()
            raise DaemonUnavailable("ds01d closed the connection before answering.")
        head += chunk
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if status != 101:
        length = int(headers.get("content-length") or 0)
        payload = b""
        while len(payload) < length:
            chunk = sock.recv(length - len(payload))
            if not chunk:
                break
            payload += chunk
        sock.close()
        error = (json.loads(payload) if payload else {}).get("error", {})
        raise ApiError(
            error.get("message", f"ds01d answered HTTP {status}"),
            exit_code=int(error.get("exit_code", 1)),
            kind=str(error.get("kind", "error")),
            details=error.get("details") or {},
        )
    return sock, headers.get("x-ds01-session", "")


def run(name: str, command: list[str], user: str | None) -> int:
    """Open the terminal, relay it until the program ends; return its exit status."""
    client = Ds01Client()
    sock, session = connect(name, command, user)
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None

    def resize(signum: int, frame: FrameType | None) -> None:
        rows, cols = _window_size()
        # The session may be ending; the next resize will tell.
        with contextlib.suppress(ApiError, DaemonUnavailable):
            client.request(
                "POST", f"/v1/terminals/{session}/resize", query={"rows": rows, "cols": cols}
            )

    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        if saved is not None:
            tty.setraw(stdin)
        _relay(sock, stdin, sys.stdout.fileno())
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
        sock.close()
    info: dict[str, Any] = client.request("GET", f"/v1/terminals/{session}")
    code = info.get("exit_code")
    return int(code) if isinstance(code, int) else 1


def _relay(sock: socket.socket, stdin: int, stdout: int) -> None:
    sources: list[socket.socket | int] = [sock, stdin]
    while True:
        try:
            readable, _, _ = select.select(sources, [], [])
        except InterruptedError:  # SIGWINCH
            continue
        if sock in readable:
            try:
                data = sock.recv(_CHUNK)
            except ConnectionResetError:  # ds01d hung up; the session's status says how
                return
            if not data:
                return
            os.write(stdout, data)
        if stdin in readable:
            data = os.read(stdin, _CHUNK)
            if not data:
                # End of our input (a script, `< /dev/null`): tell the program as a terminal
                # does, with Ctrl-D. Closing our side instead would hang up the terminal and
                # kill the program before it has finished.
                sources.remove(stdin)
            try:
                sock.sendall(data or EOF_KEY)
            except (BrokenPipeError, ConnectionResetError):  # the program ended: read the rest
                with contextlib.suppress(ValueError):
                    sources.remove(stdin)


__all__ = ["connect", "run"]
