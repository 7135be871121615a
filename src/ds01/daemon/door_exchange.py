"""The Docker API door's exchange: one request's state and what every handler shares.

:class:`DoorExchange` holds one request on the door (``ds01.daemon.docker_api``): the
connection (``Exchange``), the caller the kernel named, what the audit log calls the
request, and whether a streamed body is still on the socket. It gives its handlers, the
subclasses in ``door_containers``, ``door_images`` and ``door_volumes``:

- the answers (``_send``, ``_send_empty``, ``_error``, ``_refuse``: each raises
  :class:`Answered` once written; a refusal is audited), after ``_claim`` (the drain may
  have answered first);
- the body the connection reader left on the socket (``_streamed_body``), with a spool
  file taken first for an upload (``_spooled_body``);
- the caller's containers and execs, by their name or Docker's (``_own_container``,
  ``_own_exec``, ``_container_target``): another user's is Docker's "No such ..."; a
  container by its full id as the container ledger holds it (``_own_known``).

State: per request only; the shared ``engine`` (``EngineProxy``) and ``volume_lock`` (held
while a user's volumes are counted and one is made) belong to ``DockerApiServer``. Locks:
none held by a caller. Calls: the service's entry points and audit log, dockerd through the
engine proxy, ``ds01.core.docker_api`` for every decision.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import quote

from pydantic import ValidationError

from ds01.core import docker_api as decide
from ds01.core.docker_archive import Owner
from ds01.daemon.connections import MAX_BODY_BYTES, Exchange
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.daemon.spool import spools_of
from ds01.errors import InvalidInput, NotFound, PermissionDenied
from ds01.model import labels as L
from ds01.model.untrusted import json_value
from ds01.runtime.archive_rewrite import RequestBody
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.engine_proxy import EngineProxy

#: The door's logger, shared by its handler modules: one name for the door in ds01d's log.
log = logging.getLogger("ds01.daemon.docker_api")
_T = TypeVar("_T")

#: A container's full id.
_FULL_ID = re.compile(r"^[0-9a-f]{64}\Z")
#: The action of the audit events of refused requests.
AUDIT_ACTION = "docker_api.request"
#: Where copies into containers are spooled, below the state directory (unlinked files).
ARCHIVE_SPOOL_DIR = "archives"


class Answered(Exception):
    """The exchange was answered (or its client left): nothing more to write."""


class DoorExchange:
    """One request on the door; the helpers every handler shares (module docstring)."""

    def __init__(
        self,
        service: Ds01Service,
        engine: EngineProxy,
        volume_lock: threading.Lock,
        exchange: Exchange,
    ) -> None:
        self.service = service
        self.engine = engine
        self.volume_lock = volume_lock
        self.exchange = exchange
        self.sock = exchange.sock
        self.caller: Caller | None = None
        self.what = exchange.request_line  # for the audit log, until the request is read
        self.body_pending = False  # a streamed body not read to its end

    def _refuse(self, status: int, message: str) -> NoReturn:
        """Audit a refusal of this request and answer it; never returns."""
        assert self.caller is not None
        error = NotFound(message) if status == 404 else PermissionDenied(message)
        self.service.log_refusal(
            self.caller, AUDIT_ACTION, f"docker/{self.what}", error, status=status
        )
        self._error(status, message)

    def _refuse_invalid(self, doing: str, exc: ValidationError) -> NoReturn:
        """Refuse (HTTP 400) a request whose values ds01's API model does not take, naming
        the first problem (pydantic's message, which quotes none of the input)."""
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        self._refuse(400, f"ds01 cannot {doing}: {where}: {problem['msg']}.")

    def _error(self, status: int, message: str) -> NoReturn:
        """Answer Docker's error body with ``status``; never returns."""
        self._send(status, decide.error_body(message))

    def _send(self, status: int, body: bytes) -> NoReturn:
        """Answer a whole JSON body; never returns."""
        phrase = HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self._claim()
        with contextlib.suppress(OSError):
            self.sock.sendall(head + body)
        raise Answered

    def _send_empty(self, status: int) -> NoReturn:
        """Answer ``status`` without a body; never returns."""
        phrase = HTTPStatus(status).phrase
        self._claim()
        with contextlib.suppress(OSError):
            self.sock.sendall(f"HTTP/1.1 {status} {phrase}\r\nConnection: close\r\n\r\n".encode())
        raise Answered

    def _claim(self) -> None:
        """Claim the answer before the first write (the drain may have answered)."""
        if not self.exchange.reply.claim():
            raise Answered

    def _streamed_body(self, request: decide.DockerRequest) -> IO[bytes]:
        """A body the connection reader left on the socket (chunked, or longer than it
        reads), or the one it read."""
        if request.chunked:
            self._continue(request)
            return io.BufferedReader(RequestBody(self.sock, self.exchange.read_ahead, None))
        text = request.headers.get("Content-Length") or "0"
        if not (text.isascii() and text.isdigit()):
            self._refuse(400, f"Invalid Content-Length {text[:40]!r}.")
        length = int(text)
        if length <= MAX_BODY_BYTES:
            start = request.head_bytes
            return io.BytesIO(self.exchange.data[start : start + length])
        self._continue(request)
        return io.BufferedReader(RequestBody(self.sock, self.exchange.read_ahead, length))

    def _continue(self, request: decide.DockerRequest) -> None:
        """Tell a client that waits for it (``Expect: 100-continue``) to send its body."""
        if (request.headers.get("Expect") or "").lower() == "100-continue":
            with contextlib.suppress(OSError):
                self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _container_target(
        self, request: decide.DockerRequest, prefix: str, ref: str, full_id: str | None = None
    ) -> str:
        """The request's target with the caller's container ``ref`` as its full id (looked
        up unless given), so that dockerd acts on the container that was checked."""
        full_id = full_id or self._own_container(ref)[0]
        path = request.path.replace(f"{prefix}{ref}", f"{prefix}{full_id}", 1)
        return decide.request_path(request, decide.quoted(path)) + query_of(request)

    def _own_container(self, ref: str) -> tuple[str, str]:
        """The full id and Docker name of the caller's container ``ref`` names
        (:meth:`_own_container_info`)."""
        info = self._own_container_info(ref)
        return str(info["Id"]), str(info.get("Name", "")).lstrip("/")

    def _own_container_info(self, ref: str) -> dict[str, Any]:
        """dockerd's inspection of the caller's container ``ref`` names (their name for
        it first, then Docker's resolution); another user's, or none, is Docker's "No such
        container"."""
        assert self.caller is not None
        uid = self.caller.uid
        # A Docker name or a full id (what the docker CLI sends after a create) needs no
        # second look under the caller's suffix.
        whole = L.CONTAINER_NAME_SEPARATOR in ref or _FULL_ID.match(ref) is not None
        candidates = [ref] if whole else [L.container_name(ref, uid), ref]
        for candidate in candidates:
            status, info = self.engine.json("GET", f"/containers/{quote(candidate, safe='')}/json")
            if status == 200 and isinstance(info, dict):
                config = info.get("Config") or {}
                if decide.owns(config.get("Labels"), uid):
                    return info
        raise NotFound(decide.no_such_container(ref))

    def _own_known(self, ref: str) -> ContainerRecord | None:
        """The caller's container ``ref`` names as the container ledger holds it, when ``ref``
        is a full id (what the docker CLI sends after a create) and the ledger, trusted,
        holds it; ``None`` otherwise (look it up: :meth:`_own_container`). Whose it is comes
        from its labels, which nothing changes after a create."""
        assert self.caller is not None
        if _FULL_ID.match(ref) is None:
            return None
        record = self.service.ledger.known(ref)
        return record if record is not None and record.uid == self.caller.uid else None

    def _own_exec(self, exec_id: str) -> None:
        """Refuse (as Docker's "No such exec instance") an exec not in the caller's
        containers."""
        status, info = self.engine.json("GET", f"/exec/{quote(exec_id, safe='')}/json")
        if status == 200 and isinstance(info, dict):
            with contextlib.suppress(NotFound):
                self._own_container(str(info.get("ContainerID") or "-"))
                return
        raise NotFound(f"No such exec instance: {exec_id}")

    def _owner(self) -> Owner:
        """Whose the files of a copy or a build context become: the caller's."""
        assert self.caller is not None
        user = self.caller.user
        return Owner(user.uid, user.gid, user.name, user.groups[0] if user.groups else "")

    def _spooled_body(self, request: decide.DockerRequest) -> tuple[IO[bytes], IO[bytes]]:
        """An upload's body (``_streamed_body``) and the empty spool file it may be written
        to: the caller's spool is taken first (``ds01.daemon.spool``: ``Throttled`` or
        ``NoSpace`` raised before a byte of the body is read or asked for), and is theirs
        until the spool file is closed."""
        assert self.caller is not None
        spool_dir = self.service.paths.state_dir / ARCHIVE_SPOOL_DIR
        spool_dir.mkdir(mode=0o700, exist_ok=True)
        spool = spools_of(self.service).take(self.caller.uid, spool_dir)
        try:
            return self._streamed_body(request), spool
        except BaseException:
            spool.close()
            raise


def json_body(body: bytes) -> object:
    """A request body's JSON (``None`` when empty: the check that follows refuses it)."""
    if not body.strip():
        return None
    try:
        return json_value(body)
    except ValueError:
        raise InvalidInput("The request body is not JSON.") from None


def checked(check: Callable[[object], _T], body: object) -> _T:
    """A core check of a body, its refusals as ds01's errors."""
    try:
        return check(body)
    except decide.BadRequest as exc:
        raise InvalidInput(f"ds01 could not read this request: {exc}.") from exc
    except PermissionError as exc:
        raise PermissionDenied(str(exc)) from exc


def user_name(docker_name: str) -> str:
    """The caller's name for a volume (its Docker name without ds01's suffix)."""
    return docker_name.rsplit(L.CONTAINER_NAME_SEPARATOR, 1)[0]


def query_of(request: decide.DockerRequest) -> str:
    target = decide.with_query(request)
    return target[target.index("?") :] if "?" in target else ""
