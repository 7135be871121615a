"""HTTP client of ds01d over its unix socket.

Deliberately minimal: one HTTP/1.1 request per connection with a JSON body and a
``Content-Length`` answer (all ds01d sends). ``http.client`` would pull in ``ssl`` and the
``email`` parser, about 30 ms of start-up on every command, which is most of the budget for
``container-list``. ``socket`` and ``json`` are imported when a request is made, not at
import: a page of ``--help`` never connects; ``urllib.parse`` only for a query.
"""

from __future__ import annotations

import os

from ds01.errors import DaemonUnavailable, Ds01Error
from ds01.exitcodes import ExitCode
from ds01.model.hub import ON_BEHALF_HEADER
from ds01.paths import socket_path

TYPE_CHECKING = False  # keep `typing` out of CLI start-up
if TYPE_CHECKING:
    import socket
    from collections.abc import Generator
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
    """Why a command failed when no ds01d took its connection (nothing was done), and what
    to do about it, for whoever can: root gets the command, a user is sent to their admin."""
    if os.geteuid() == 0:
        todo = (
            "Start it with `systemctl start ds01d` (or `ds01d` in the foreground), then "
            "check with `ds01 admin doctor`."
        )
    else:
        todo = (
            "ds01d runs everyone's containers here: if it is not back soon, ask your admin "
            "to start it."
        )
    return (
        f"Cannot reach ds01d at {path} ({reason}): it is not running, or it is stopping. "
        f"Nothing was done. {todo}"
    )


class ProtocolError(Exception):
    """ds01d's answer was not the HTTP it should be."""


def _send(sock: socket.socket, path: str, timeout: float, request: bytes) -> None:
    # Connect blocking: with a timeout set, a full backlog fails at once with EAGAIN.
    sock.connect(path)
    sock.settimeout(timeout)
    try:  # noqa: SIM105 (no contextlib import on the CLI's start-up path)
        sock.sendall(request)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before reading it (too many connections): the answer says why


def _read_head(sock: socket.socket) -> tuple[int, int | None, bytes]:
    """Read an answer's head: (status, Content-Length or None, the body's first bytes)."""
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
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, length, body


def _read_body(sock: socket.socket, length: int, body: bytes) -> bytes:
    """The rest of a body of ``length`` bytes whose start is ``body``."""
    while len(body) < length:
        chunk = sock.recv(max(65536, length - len(body)))
        if not chunk:
            raise ProtocolError("connection closed in the middle of the answer")
        body += chunk
    return body[:length]


def _exchange(path: str, timeout: float, request: bytes) -> tuple[int, bytes]:
    """Send one request on a fresh connection; return (status, body)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        _send(sock, path, timeout, request)
        status, length, body = _read_head(sock)
        return status, _read_body(sock, length or 0, body)


def _request_bytes(
    method: str,
    endpoint: str,
    query: dict[str, Any] | None,
    body: dict[str, Any] | None,
    on_behalf_of: str | None = None,
) -> bytes:
    import json

    params = {k: v for k, v in (query or {}).items() if v not in (None, False)}
    url = endpoint
    if params:  # urllib.parse (and the ipaddress it loads) only when there is a query
        from urllib.parse import urlencode

        url += "?" + urlencode(params)
    payload = json.dumps(body).encode() if body is not None else b""
    behalf = f"{ON_BEHALF_HEADER}: {on_behalf_of}\r\n" if on_behalf_of else ""
    return (
        f"{method} {url} HTTP/1.1\r\nHost: ds01d\r\nConnection: close\r\n{behalf}"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def _api_error(status: int, raw: bytes) -> ApiError:
    import json

    error = (json.loads(raw) if raw else {}).get("error", {})
    return ApiError(
        error.get("message", f"ds01d answered HTTP {status}"),
        exit_code=int(error.get("exit_code", ExitCode.ERROR)),
        kind=str(error.get("kind", "error")),
        details=error.get("details") or {},
    )


class Ds01Client:
    """Calls the ds01d API. ``path`` defaults to ``$DS01_SOCKET`` or /run/ds01/ds01.sock.
    ``on_behalf_of``: the user a hub identity acts for (ds01d refuses it from anyone else)."""

    def __init__(
        self, path: str | None = None, timeout: float = 300.0, on_behalf_of: str | None = None
    ) -> None:
        if on_behalf_of is not None and not on_behalf_of.isprintable():
            raise ValueError(f"invalid user name {on_behalf_of!r}")
        self.path = str(socket_path(path))
        self.timeout = timeout
        self.on_behalf_of = on_behalf_of

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
        request = _request_bytes(method, endpoint, query, body, self.on_behalf_of)
        try:
            status, raw = _exchange(self.path, self.timeout, request)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        except ProtocolError as exc:
            raise self._lost(exc) from exc
        if status >= 400:
            raise _api_error(status, raw)
        import json

        return status, json.loads(raw) if raw else None

    def stream(
        self, method: str, endpoint: str, *, query: dict[str, Any] | None = None
    ) -> Generator[bytes, None, None]:
        """The body of a streamed answer (one whose end is the connection's end), chunk by
        chunk as it arrives, with no deadline between chunks; an error answer raises
        ``ApiError`` before the first chunk. Closing the iterator hangs up, which ends the
        stream in ds01d too."""
        import socket

        request = _request_bytes(method, endpoint, query, None, self.on_behalf_of)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                _send(sock, self.path, self.timeout, request)
                status, length, body = _read_head(sock)
                if status >= 400:
                    raise _api_error(status, _read_body(sock, length or 0, body))
            except OSError as exc:
                raise self._unavailable(exc) from exc
            except ProtocolError as exc:
                raise DaemonUnavailable(
                    f"Lost the connection to ds01d at {self.path}: {exc}"
                ) from exc
            sock.settimeout(None)  # a followed container may stay quiet for hours
            if body:
                yield body
            while chunk := sock.recv(65536):
                yield chunk
        finally:
            sock.close()

    def _unavailable(self, exc: OSError) -> DaemonUnavailable:
        if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
            return DaemonUnavailable(unreachable_message(self.path, exc.strerror))
        if isinstance(exc, PermissionError):
            return DaemonUnavailable(f"Cannot open {self.path}: permission denied.")
        return self._lost(exc)

    def _lost(self, exc: Exception) -> DaemonUnavailable:
        return DaemonUnavailable(
            f"Lost the connection to ds01d at {self.path} ({exc}) before its answer: "
            "whether your request took effect is unknown. Once ds01d answers again, "
            "`ds01 container-list` shows your containers as they are."
        )

    @staticmethod
    def container_path(name: str, action: str | None = None) -> str:
        from urllib.parse import quote

        base = f"/v1/containers/{quote(name, safe='')}"
        return f"{base}/{action}" if action else base
