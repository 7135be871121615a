"""Engine API requests of ds01d's start over dockerd's socket with the standard library alone.

ds01d's start reads Docker before it serves (the ledger's one list and its event stream,
the engine's info, the users' networks, the local images) and, on a host whose storage
driver may cap a container's size, creates and removes a probe container; docker-py, with
requests and urllib3 under it, is about a sixth of what the start would import. These
requests go through :class:`EngineSocket` instead, so docker-py loads only when ds01d first
does something else with Docker (``DockerRuntime.api``). The answers are Docker's JSON,
exactly what docker-py's low-level calls return for the same requests.

Errors: an answer that is not a success raises :class:`EngineError` (its status and
Docker's message); a socket that does not answer raises :class:`EngineUnreachable`.
``ds01.runtime.docker_errors`` translates both as it does docker-py's.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

#: Seconds for an answer, as docker-py's client in ds01d waits (``DockerRuntime.from_env``).
READ_TIMEOUT_S = 120.0

#: A filter's values as the Engine API takes them: a value or a list of values per key.
Filters = Mapping[str, str | bool | list[str]]


class EngineError(Exception):
    """Docker answered with an error status; ``explanation`` is its message."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(f"{status}: {explanation}")
        self.status = status
        self.explanation = explanation


class EngineUnreachable(Exception):
    """dockerd's socket did not answer (``timed_out``: it accepted, but took too long)."""

    def __init__(self, path: str, cause: OSError) -> None:
        super().__init__(f"{path}: {cause}")
        self.timed_out = isinstance(cause, TimeoutError)


class UnixConnection(http.client.HTTPConnection):
    """An HTTP connection to a Unix socket (``timeout``: ``None`` waits without end)."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def target(path: str, filters: Filters | None = None, **query: str | int) -> str:
    """``path`` with its query: ``filters`` encoded as the Engine API wants them (each
    value a list of strings, as docker-py's ``convert_filters`` sends them)."""
    params: dict[str, str | int] = dict(query)
    if filters:
        params["filters"] = json.dumps(
            {
                key: value if isinstance(value, list) else [_filter_value(value)]
                for key, value in filters.items()
            }
        )
    return f"{path}?{urlencode(params)}" if params else path


def _filter_value(value: str | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else value


class EngineSocket:
    """Requests to dockerd's socket at ``path``, one connection each; thread-safe."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get(
        self,
        path: str,
        filters: Filters | None = None,
        *,
        timeout_s: float = READ_TIMEOUT_S,
        **query: str | int,
    ) -> Any:
        """Docker's JSON answer to ``GET path?query``.

        Raises:
            EngineError: Docker answered with an error.
            EngineUnreachable: the socket did not answer within ``timeout_s`` seconds.
        """
        return self.send("GET", path, filters, timeout_s=timeout_s, **query)

    def send(
        self,
        method: str,
        path: str,
        filters: Filters | None = None,
        *,
        body: Any = None,
        timeout_s: float = READ_TIMEOUT_S,
        **query: str | int,
    ) -> Any:
        """Docker's JSON answer (``None`` when it has no body) to ``method path?query``,
        with ``body`` sent as JSON when given; raises as :meth:`get`."""
        conn = UnixConnection(self.path, timeout_s)
        try:
            response = self._sent(conn, target(path, filters, **query), method, body)
            data = response.read()
        except OSError as exc:
            raise EngineUnreachable(self.path, exc) from exc
        finally:
            conn.close()
        return json.loads(data) if data else None

    def stream(self, path: str, filters: Filters | None = None, **query: str | int) -> JsonLines:
        """Docker's answer to ``GET path?query`` as it comes, one JSON value a line (events),
        read without a timeout on a connection of its own."""
        conn = UnixConnection(self.path, None)
        try:
            response = self._sent(conn, target(path, filters, **query))
        except OSError as exc:
            conn.close()
            raise EngineUnreachable(self.path, exc) from exc
        except EngineError:
            conn.close()
            raise
        return JsonLines(self.path, conn, response)

    def _sent(
        self, conn: UnixConnection, request_target: str, method: str = "GET", body: Any = None
    ) -> http.client.HTTPResponse:
        """The answer's head (its body not read); an error status raises."""
        headers = {"Host": "docker"}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, request_target, body=content, headers=headers)
        response = conn.getresponse()
        if response.status >= 400:
            raise EngineError(response.status, _message(response.read()))
        return response


def _message(body: bytes) -> str:
    """Docker's error message from an error answer's body (``{"message": ...}``)."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("message") or "")
    return body.decode(errors="replace").strip()


class JsonLines:
    """A streamed answer, one decoded JSON value per line. Iterate to block for the next;
    :meth:`close` (from any thread) ends an iteration that waits."""

    def __init__(self, path: str, conn: UnixConnection, response: http.client.HTTPResponse) -> None:
        self._path = path
        self._conn = conn
        self._response = response
        self._closed = False
        self._reading = False

    def __iter__(self) -> Iterator[Any]:
        self._reading = True
        try:
            while line := self._response.readline():
                if line.strip():
                    yield json.loads(line)
        except Exception as exc:
            if self._closed:  # ended on purpose, from another thread: any error is its echo
                return
            if isinstance(exc, OSError):
                raise EngineUnreachable(self._path, exc) from exc
            if isinstance(exc, http.client.HTTPException):  # cut off mid-answer
                raise EngineUnreachable(self._path, OSError(str(exc))) from exc
            raise
        finally:
            self._conn.close()

    def close(self) -> None:
        """End the stream; a reader blocked in another thread wakes to its end (and closes
        the connection); a stream never read is closed here."""
        self._closed = True
        if not self._reading:
            self._conn.close()
            return
        # Only shut the socket down: closing it here would race with that reader, which
        # closes the connection itself once it wakes.
        if self._conn.sock is not None:
            with contextlib.suppress(OSError):
                self._conn.sock.shutdown(socket.SHUT_RDWR)
