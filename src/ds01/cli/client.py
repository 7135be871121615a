"""HTTP client of ds01d over its unix socket. Standard library only, to start fast."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote, urlencode

from ds01.errors import DaemonUnavailable, Ds01Error
from ds01.exitcodes import ExitCode
from ds01.paths import socket_path


class ApiError(Ds01Error):
    """An error answered by ds01d, carrying the exit code the daemon chose."""

    def __init__(self, message: str, *, exit_code: int, kind: str, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)
        self.code = (
            ExitCode(exit_code) if exit_code in ExitCode._value2member_map_ else ExitCode.ERROR
        )
        self.error_kind = kind


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Ds01Client:
    """Calls the ds01d API. ``path`` defaults to ``$DS01_SOCKET`` or /run/ds01/ds01.sock."""

    def __init__(self, path: str | None = None, timeout: float = 300.0) -> None:
        self.path = str(socket_path(path))
        self.timeout = timeout
        self._conn: _UnixHTTPConnection | None = None

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        params = {k: v for k, v in (query or {}).items() if v not in (None, False)}
        url = endpoint + ("?" + urlencode(params) if params else "")
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if self._conn is None:
            self._conn = _UnixHTTPConnection(self.path, self.timeout)
        try:
            self._conn.request(method, url, body=payload, headers=headers)
            response = self._conn.getresponse()
            raw = response.read()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(
                f"Cannot reach ds01d at {self.path} ({exc.strerror}). Is the daemon running? "
                "An admin starts it with `ds01d` (or `make setup`)."
            ) from exc
        except PermissionError as exc:
            raise DaemonUnavailable(f"Cannot open {self.path}: permission denied.") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnavailable(f"Lost the connection to ds01d at {self.path}: {exc}") from exc
        data = json.loads(raw) if raw else None
        if response.status >= 400:
            error = (data or {}).get("error", {})
            raise ApiError(
                error.get("message", f"ds01d answered HTTP {response.status}"),
                exit_code=int(error.get("exit_code", ExitCode.ERROR)),
                kind=str(error.get("kind", "error")),
                details=error.get("details") or {},
            )
        return data

    @staticmethod
    def container_path(name: str, action: str | None = None) -> str:
        base = f"/v1/containers/{quote(name, safe='')}"
        return f"{base}/{action}" if action else base
