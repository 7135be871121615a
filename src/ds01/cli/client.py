"""HTTP client of ds01d over its unix socket.

Deliberately minimal: one HTTP/1.1 request per connection with a JSON body and a
``Content-Length`` answer (all ds01d sends). ``http.client`` would pull in ``ssl`` and the
``email`` parser, about 30 ms of start-up on every command, which is most of the budget for
``container-list`` (DESIGN.md §8).
"""

from __future__ import annotations

import json
import socket
from urllib.parse import quote, urlencode

from ds01.errors import DaemonUnavailable, Ds01Error
from ds01.exitcodes import ExitCode
from ds01.paths import socket_path

TYPE_CHECKING = False  # keep `typing` out of CLI start-up
if TYPE_CHECKING:
    from typing import Any


class ApiError(Ds01Error):
    """An error answered by ds01d, carrying the exit code the daemon chose."""

    def __init__(self, message: str, *, exit_code: int, kind: str, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)
        self.code = (
            ExitCode(exit_code) if exit_code in ExitCode._value2member_map_ else ExitCode.ERROR
        )
        self.error_kind = kind


def unreachable_message(path: str, reason: str | None) -> str:
    """Why a command failed when no ds01d took its connection (nothing was done)."""
    return (
        f"Cannot reach ds01d at {path} ({reason}): it is not running, or it is stopping. "
        "Nothing was done. Try again when it is back; an admin starts it with `ds01d` (or "
        "`make setup`)."
    )


class ProtocolError(Exception):
    """ds01d's answer was not the HTTP it should be."""


def _exchange(path: str, timeout: float, request: bytes) -> tuple[int, bytes]:
    """Send one request on a fresh connection; return (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        # Connect blocking: with a timeout set, a full backlog fails at once with EAGAIN.
        sock.connect(path)
        sock.settimeout(timeout)
        try:  # noqa: SIM105 (no contextlib import on the CLI's start-up path)
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before reading it (too many connections): the answer says why
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ProtocolError("connection closed before the answer's headers")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise ProtocolError(f"bad status line {lines[0]!r}") from exc
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = sock.recv(max(65536, length - len(body)))
            if not chunk:
                raise ProtocolError("connection closed in the middle of the answer")
            body += chunk
        return status, body[:length]


class Ds01Client:
    """Calls the ds01d API. ``path`` defaults to ``$DS01_SOCKET`` or /run/ds01/ds01.sock."""

    def __init__(self, path: str | None = None, timeout: float = 300.0) -> None:
        self.path = str(socket_path(path))
        self.timeout = timeout

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """The answer's JSON; an error answer raises ``ApiError``."""
        return self.call(method, endpoint, body=body, query=query)[1]

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """(HTTP status, JSON) of a successful answer; an error answer raises ``ApiError``."""
        params = {k: v for k, v in (query or {}).items() if v not in (None, False)}
        url = endpoint + ("?" + urlencode(params) if params else "")
        payload = json.dumps(body).encode() if body is not None else b""
        request = (
            f"{method} {url} HTTP/1.1\r\nHost: ds01d\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        try:
            status, raw = _exchange(self.path, self.timeout, request)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(unreachable_message(self.path, exc.strerror)) from exc
        except PermissionError as exc:
            raise DaemonUnavailable(f"Cannot open {self.path}: permission denied.") from exc
        except (OSError, ProtocolError) as exc:
            raise DaemonUnavailable(
                f"Lost the connection to ds01d at {self.path} ({exc}) before its answer: "
                "whether your request took effect is unknown. Once ds01d answers again, "
                "`ds01 container-list` shows your containers as they are."
            ) from exc
        data = json.loads(raw) if raw else None
        if status >= 400:
            error = (data or {}).get("error", {})
            raise ApiError(
                error.get("message", f"ds01d answered HTTP {status}"),
                exit_code=int(error.get("exit_code", ExitCode.ERROR)),
                kind=str(error.get("kind", "error")),
                details=error.get("details") or {},
            )
        return status, data

    @staticmethod
    def container_path(name: str, action: str | None = None) -> str:
        base = f"/v1/containers/{quote(name, safe='')}"
        return f"{base}/{action}" if action else base
