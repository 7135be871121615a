"""ds01's Docker Engine API door: a second unix socket for users' own Docker tools.

``ds01d --docker-socket PATH`` (``$DS01_DOCKER_SOCKET``; default ``docker.sock`` next to
the API socket, so ``/run/ds01/docker.sock``; ``off``: no door) serves the Docker Engine
API to every local user, mode 0666, on ds01's rules:

- **who**: the kernel says (``SO_PEERCRED``, read at accept by
  ``ds01.daemon.connections``, which also caps each user's connections and workers as on
  the API socket);
- **what**: ``ds01.core.docker_api`` decides from the method and path; everything not on
  its allowlist is refused (HTTP 403, Docker's error body, a message naming the endpoint)
  and audited (``docker_api.request``, outcome ``denied``);
- **whose**: lists and event streams are filtered by dockerd itself (the caller's
  ``ds01.uid`` label added to their filters), images to those the caller may run, and a
  request about one container goes on only when that container is the caller's
  (``ds01.managed`` and ``ds01.uid`` labels): another user's container, by name, id or id
  prefix, gets Docker's own "No such container" answer. The request is then forwarded
  with the container's full id in its path, so that what was checked is what dockerd acts
  on;
- **how**: allowed requests go to dockerd byte for byte (``ds01.runtime.engine_proxy``),
  answers come back unbuffered; every connection closes after one answer.

A user's name for a container (``thesis``) finds their Docker name (``thesis._.1001``)
first, then Docker's own resolution applies (name, id, id prefix).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import re
import secrets
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import quote

from pydantic import ValidationError

from ds01.core import docker_api as decide
from ds01.core.docker_archive import (
    MAX_ARCHIVE_BYTES,
    ArchiveRefused,
    Owner,
    ReadableMembers,
)
from ds01.core.docker_create import (
    CreateRefused,
    is_network_name,
    is_object_name,
    read_create,
    unset,
)
from ds01.core.docker_load import LOAD_REFUSED, MAX_LOAD_BYTES, LoadArchive, LoadRefused
from ds01.core.image_build import owns_reference, user_namespace
from ds01.daemon import images
from ds01.daemon import schemas as api
from ds01.daemon.connections import (
    DEFAULT_LIMITS,
    MAX_BODY_BYTES,
    ConnectionLimits,
    ConnectionServer,
    Exchange,
    LaneName,
    open_to_everyone,
)
from ds01.daemon.identity import Caller
from ds01.daemon.networks import network_name
from ds01.daemon.prepared import Created
from ds01.daemon.server import audit_connection_refusal
from ds01.daemon.service import Ds01Service
from ds01.errors import (
    DockerUnavailable,
    Ds01Error,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PolicyError,
    QuotaExceeded,
)
from ds01.model import labels as L
from ds01.runtime.archive_rewrite import (
    BodyError,
    RequestBody,
    filter_archive,
    rewrite_archive,
    spool_load,
)
from ds01.runtime.build_context import MAX_CONTEXT_BYTES
from ds01.runtime.engine_proxy import EngineProxy
from ds01.runtime.volume_root import give_volume_root

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: A container's full id.
_FULL_ID = re.compile(r"^[0-9a-f]{64}\Z")
#: The action of the audit events of refused requests.
AUDIT_ACTION = "docker_api.request"
#: The resource of the audit events of refused connections (a user over their cap).
CONNECTION_RESOURCE = "docker/connection"
#: How long, and how much, a refused request's streamed body is read away (see
#: ``_DoorExchange.answer``).
_READ_AWAY_S = 10.0
_READ_AWAY_BYTES = 256 * 1024**2
#: Where copies into containers are spooled, below the state directory (unlinked files).
ARCHIVE_SPOOL_DIR = "archives"


class _Answered(Exception):
    """The exchange was answered (or its client left): nothing more to write."""


class DockerApiServer:
    """The door on ``socket_path``: ``serve_forever`` (in a thread of its own) until a
    ``drain``, then ``server_close``; a listening socket found there is refused as
    ``Ds01HttpServer`` refuses its own."""

    def __init__(
        self,
        socket_path: Path,
        service: Ds01Service,
        limits: ConnectionLimits = DEFAULT_LIMITS,
        engine: EngineProxy | None = None,
    ) -> None:
        self.service = service
        self.socket_path = socket_path
        self.engine = engine or EngineProxy()
        # Counting a user's volumes and making one happen together (the per-user cap).
        self.volume_lock = threading.Lock()
        listener = open_to_everyone(socket_path)
        # A user's connections past their cap are refused as on the API socket, and audited
        # (``api.throttled`` on ``docker/connection``).
        self.connections = ConnectionServer(
            listener,
            self._answer,
            _lane,
            limits=limits,
            on_refusal=functools.partial(audit_connection_refusal, service, CONNECTION_RESOURCE),
            wait_only=_wait_only,
            # Docker's shape, so that the docker CLI prints ds01's words.
            error_body=lambda error: decide.error_body(error.message),
        )

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.connections.serve_forever(poll_interval)

    def drain(self, timeout_s: float) -> None:
        """Begin to stop: followed streams and hijacked connections end now (their
        clients see the connection close); other requests finish as on the API socket."""
        self.engine.close_streams()
        self.connections.drain(timeout_s)

    def hurry(self) -> None:
        self.connections.hurry()

    @property
    def cut_short(self) -> list[str]:
        return self.connections.cut_short

    def server_close(self) -> None:
        self.connections.close()

    def _answer(self, exchange: Exchange) -> bool:
        """Answer one exchange; the connection always closes after it."""
        with contextlib.suppress(_Answered):
            _DoorExchange(self, exchange).answer()
        return False


class _DoorExchange:
    """One request on the door, from its bytes to its answer."""

    def __init__(self, server: DockerApiServer, exchange: Exchange) -> None:
        self.server = server
        self.service = server.service
        self.exchange = exchange
        self.sock = exchange.sock
        self.caller: Caller | None = None
        self.what = exchange.request_line  # for the audit log, until the request is read
        self.body_pending = False  # a streamed body not read to its end

    def answer(self) -> None:
        """Answer the exchange (``_Answered`` when done); a streamed body the answer came
        before is read away first, so that a client still sending it reads the answer
        instead of a broken pipe."""
        try:
            self._answer()
        except _Answered:
            if self.body_pending:
                self._read_away()
            raise

    def _read_away(self) -> None:
        """Read and drop what the client still sends, for at most ``_READ_AWAY_S`` and
        ``_READ_AWAY_BYTES``, then stop (the connection closes after it either way)."""
        deadline = time.monotonic() + _READ_AWAY_S
        left = _READ_AWAY_BYTES
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)  # the answer is whole
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                self.sock.settimeout(wait)
                data = self.sock.recv(65536)
                if not data:
                    return
                left -= len(data)

    def _answer(self) -> None:
        try:
            # Identity is fixed for the whole connection by the kernel (read at accept).
            self.caller = self.service.caller(self.exchange.creds)
        except Ds01Error as exc:
            self._error(exc.http_status, exc.message)
        try:
            request = decide.parse_request(self.exchange.data)
        except decide.BadRequest as exc:
            self._refuse(400, f"ds01 could not read this request: {exc}.")
        self.what = f"{request.method} {request.path[:120]}"
        routed = decide.route(request.method, request.path)
        # An import streams a tar it is refused before (read away, not refused as chunked).
        imported = decide.import_refusal(request)
        # A copy into a container, a build context and a load stream their bodies.
        streamed = imported is not None or (
            isinstance(routed, decide.Routed)
            and routed.endpoint.kind in ("archive_put", "build", "image_load")
        )
        # Chunked or longer than the connection reader reads: still on the socket.
        length = request.headers.get("Content-Length") or "0"
        self.body_pending = streamed and (
            request.chunked or not length.isdigit() or int(length) > MAX_BODY_BYTES
        )
        body = b"" if streamed else self._body(request)
        if decide.version_too_old(request.version):
            low = ".".join(str(n) for n in decide.MIN_API_VERSION)
            self._refuse(
                400,
                f"client version {request.version} is too old. Minimum supported API "
                f"version is {low}, please upgrade your client to a newer version",
            )
        if isinstance(routed, decide.Refused):
            self._refuse(routed.status, routed.message)
        if imported is not None:
            self._refuse(403, imported)
        try:
            self._serve(request, routed, body)
        except PolicyError as exc:
            self._refuse(exc.http_status, exc.message)
        except Ds01Error as exc:
            log.error("%s %s failed: %s", request.method, request.path, exc.message)
            self._error(exc.http_status, exc.message)

    def _body(self, request: decide.DockerRequest) -> bytes:
        """The request's body; a chunked, oversized or malformed length is refused (the
        connection reader waits only for a ``Content-Length`` body of at most
        ``MAX_BODY_BYTES``)."""
        if request.chunked:
            self._refuse(
                411,
                "ds01's Docker socket needs a Content-Length: chunked request bodies are refused.",
            )
        text = request.headers.get("Content-Length") or "0"
        if not (text.isascii() and text.isdigit()):
            self._refuse(400, f"Invalid Content-Length {text[:40]!r}.")
        length = int(text)
        if length > MAX_BODY_BYTES:
            self._refuse(
                413,
                f"Request body too large ({length} bytes; ds01 takes at most {MAX_BODY_BYTES}).",
            )
        data = self.exchange.data
        return data[request.head_bytes : request.head_bytes + length]

    def _serve(self, request: decide.DockerRequest, routed: decide.Routed, body: bytes) -> None:
        assert self.caller is not None
        uid = self.caller.uid
        kind, ref = routed.endpoint.kind, routed.ref or ""
        upgrade = False
        if kind == "engine":
            target = decide.with_query(request)
        elif kind in ("list", "events"):
            try:
                filters = decide.owned_filters(
                    request.query_value("filters"), uid, container_events=kind == "events"
                )
            except decide.BadRequest as exc:
                self._refuse(400, f"Invalid filters: {exc}.")
            target = decide.with_query(request, filters=filters)
        elif kind == "images":
            self._images(request)
        elif kind == "image":
            self._image(request, ref)
        elif kind == "image_save":
            self._checked_save(request, routed.ref)
            target = decide.with_query(request)
        elif kind == "create":
            self._create(request, body)
        elif kind == "archive_put":
            self._archive_put(request, ref)
        elif kind == "archive_get":
            self._archive_get(request, ref)
        elif kind == "image_load":
            self._load(request)
        elif kind == "commit":
            self._commit(request, body)
        elif kind == "image_tag":
            self._tag(request, ref)
        elif kind == "image_remove":
            self._remove_image(request, ref)
        elif kind == "pull":
            self._pull(request)
        elif kind == "build":
            self._build(request)
        elif kind == "info":
            self._info()
        elif kind.startswith("network"):
            self._network(request, kind, ref, body)
        elif kind.startswith("volume"):
            self._volume(request, kind, ref, body)
            target = decide.request_path(request, f"/volumes/{quote(self._volume_name(ref))}")
        elif kind == "update":
            info = self._own_container_info(ref)
            body = self._checked_update(info, body)
            target = self._container_target(request, "/containers/", ref, str(info["Id"]))
        elif kind in ("start", "stop", "restart", "remove"):
            self._operate(request, kind, self._own_container(ref)[1])
        elif kind == "exec_create":
            body = self._checked_exec(body)
            target = self._container_target(request, "/containers/", ref)
        elif kind in ("exec", "exec_start"):
            self._own_exec(ref)
            target = decide.with_query(request)
            upgrade = kind == "exec_start" and request.wants_upgrade
        else:  # container, attach
            target = self._container_target(request, "/containers/", ref)
            upgrade = kind == "attach"
        self._claim()
        try:
            self.server.engine.forward(
                self.sock,
                request.method,
                target,
                request.headers,
                body,
                upgrade=upgrade,
                read_ahead=self.exchange.read_ahead,
                follow=decide.waits(request),
            )
        finally:
            if kind == "exec_start" and self.server.engine.closing:
                self._hang_up(ref)

    def _hang_up(self, exec_id: str) -> None:
        """An exec whose connection ds01d's stop cut: its process would run on without its
        client (dockerd does not end it), so it gets a terminal's hangup."""
        with contextlib.suppress(Ds01Error):
            if self.server.engine.hang_up_exec(exec_id):
                log.info("exec %s hung up: ds01d's stop cut its connection", exec_id[:12])

    def _container_target(
        self, request: decide.DockerRequest, prefix: str, ref: str, full_id: str | None = None
    ) -> str:
        """The request's target with the caller's container ``ref`` as its full id (looked
        up unless given), so that dockerd acts on the container that was checked."""
        full_id = full_id or self._own_container(ref)[0]
        path = request.path.replace(f"{prefix}{ref}", f"{prefix}{full_id}", 1)
        return decide.request_path(request, path) + _query_of(request)

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
            status, info = self.server.engine.json(
                "GET", f"/containers/{quote(candidate, safe='')}/json"
            )
            if status == 200 and isinstance(info, dict):
                config = info.get("Config") or {}
                if decide.owns(config.get("Labels"), uid):
                    return info
        raise NotFound(decide.no_such_container(ref))

    def _own_exec(self, exec_id: str) -> None:
        """Refuse (as Docker's "No such exec instance") an exec not in the caller's
        containers."""
        status, info = self.server.engine.json("GET", f"/exec/{quote(exec_id, safe='')}/json")
        if status == 200 and isinstance(info, dict):
            with contextlib.suppress(NotFound):
                self._own_container(str(info.get("ContainerID") or "-"))
                return
        raise NotFound(f"No such exec instance: {exec_id}")

    def _checked_exec(self, body: bytes) -> bytes:
        """The exec create as dockerd gets it: re-encoded from what the check read."""
        assert self.caller is not None
        user = self.caller.user
        try:
            return json.dumps(
                decide.check_exec(_json(body), uid=user.uid, gid=user.gid, user=user.name)
            ).encode()
        except decide.BadRequest as exc:
            raise InvalidInput(f"ds01 could not read this exec: {exc}.") from exc
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from exc

    def _checked_update(self, info: dict[str, Any], body: bytes) -> bytes:
        """An update as dockerd gets it: limits at most those the container was made with
        (its ds01 labels), re-encoded from what the check read."""
        labels = (info.get("Config") or {}).get("Labels") or {}
        cpus = L.cpus_of(labels)
        try:
            update = decide.check_update(
                _json(body),
                memory_bytes=L.size_of(labels, L.MEMORY_BYTES) or 0,
                nano_cpus=round(cpus * 1e9) if cpus else 0,
            )
        except decide.BadRequest as exc:
            raise InvalidInput(f"ds01 could not read this update: {exc}.") from exc
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from exc
        return json.dumps(update).encode()

    def _create(self, request: decide.DockerRequest, body: bytes) -> NoReturn:
        """A create through ds01's creation path (quotas, allocator, hardening, labels,
        name suffix, cgroup parent, the caller's uid:gid); 201 with the new id."""
        assert self.caller is not None
        user = self.caller.user
        try:
            wanted = read_create(_json(body), uid=user.uid, gid=user.gid, user=user.name)
        except CreateRefused as exc:
            self._refuse(exc.status, exc.message)
        name = request.query_value("name") or f"docker-{secrets.token_hex(4)}"
        try:
            create = api.CreateContainerRequest(
                name=name,
                image=wanted.image,
                gpus=wanted.gpus,
                cpus=wanted.cpus,
                memory=str(wanted.memory_bytes) if wanted.memory_bytes else None,
                shm_size=str(wanted.shm_size_bytes) if wanted.shm_size_bytes else None,
                workspace=wanted.workspace,
                data=wanted.data,
                ports=[api.PortRequest(container_port=c, host_port=h) for c, h in wanted.ports],
                interface="docker",
            )
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            self._refuse(400, f"ds01 cannot create this: {where}: {problem['msg']}.")
        made: list[str] = []  # the volumes this create made, removed again if it fails
        try:
            try:
                # Named volumes are the caller's own, made when missing (as dockerd makes
                # them).
                run = dataclasses.replace(
                    wanted.run,
                    volumes=tuple(
                        (str(self._own_volume(name, create={}, made=made)["Name"]), target)
                        for name, target in wanted.run.volumes
                    ),
                )
                created = self.service.create(self.caller, create, run)
            except BaseException:
                self._remove_volumes(made)
                raise
        except NotFound as exc:
            # Not 404: the docker CLI would answer it by pulling the image.
            self._refuse(403, exc.message)
        assert isinstance(created, Created)  # never queued: ``queue`` is not set
        docker_name = created.info.docker_name
        status, info = self.server.engine.json("GET", f"/containers/{quote(docker_name)}/json")
        full_id = str(info["Id"]) if status == 200 and isinstance(info, dict) else docker_name
        payload = json.dumps({"Id": full_id, "Warnings": []}).encode()
        self.service.confirm_create(created.request_id, docker_name)
        self._send(201, payload)

    def _operate(self, request: decide.DockerRequest, kind: str, docker_name: str) -> NoReturn:
        """start, stop, restart, remove through ds01's container operations (a start
        re-acquires devices the container gave back); 204 as Docker answers."""
        assert self.caller is not None
        caller, service = self.caller, self.service
        if kind in ("stop", "restart"):
            service.stop(caller, docker_name)
        if kind in ("start", "restart"):
            started = service.start(caller, docker_name)
            if not isinstance(started, api.ContainerInfo):  # never queued: ``queue`` unset
                raise DockerUnavailable("ds01 queued this start; tell an admin.")
        if kind == "remove":
            service.remove(caller, docker_name, force=request.flag("force"))
        self._send_empty(204)

    def _archive_put(self, request: decide.DockerRequest, ref: str) -> NoReturn:
        """``docker cp`` into the caller's container: the client's tar written again
        (``ds01.core.docker_archive``: the caller's ownership, no set-id bits, no extended
        attributes, no device nodes) and spooled; only once every member passed does it
        go to dockerd, so a refused copy changes nothing."""
        assert self.caller is not None
        target = self._container_target(request, "/containers/", ref)
        try:
            source = self._streamed_body(request)
            spool, size = rewrite_archive(
                source, self._owner(), self._spool_dir(), MAX_ARCHIVE_BYTES
            )
            self.body_pending = False
        except ArchiveRefused as exc:
            self._refuse(exc.status, exc.message)
        except BodyError as exc:
            self._refuse(400, f"ds01 could not read this copy: {exc}.")
        with spool:
            self._claim()
            self.server.engine.forward(
                self.sock, request.method, target, request.headers, (spool, size)
            )
        raise _Answered

    def _archive_get(self, request: decide.DockerRequest, ref: str) -> NoReturn:
        """``docker cp`` out of (or ``export`` of) the caller's container: dockerd reads it
        as root, so its tar comes back without what the container's user could not read
        (``ReadableMembers``)."""
        assert self.caller is not None
        target = self._container_target(request, "/containers/", ref)
        user = self.caller.user
        readable = ReadableMembers(user.uid, user.gid, frozenset(user.gids))
        self._claim()
        try:
            self.server.engine.forward_transformed(
                self.sock,
                target,
                request.headers,
                lambda source, sink: filter_archive(source, sink, readable),
                keep=("X-Docker-Container-Path-Stat",),
            )
        except tarfile.TarError as exc:  # the client's tar is cut short: it sees an error
            log.warning("a copy out of %s was cut short: %s", ref[:80], exc)
        raise _Answered

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

    def _own_repository(self, repository: str) -> str:
        """The image name in ``repository`` when it lies in the caller's namespace."""
        assert self.caller is not None
        try:
            return decide.own_repository(repository, self.caller.name, self.caller.uid)
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from exc

    def _commit(self, request: decide.DockerRequest, body: bytes) -> NoReturn:
        """``docker commit`` of the caller's container into their namespace, labelled
        theirs, the container's ds01 labels emptied (``retire --keep-as``'s commit); 201
        with the image's id. No ``--change`` and no config: an image claims nothing."""
        assert self.caller is not None
        docker_name = self._own_container(request.query_value("container") or "-")[1]
        if request.query_value("changes") or not unset(_json(body)):
            self._refuse(
                403, "docker commit --change (and a config) is not allowed: ds01 labels the "
                "image yours and nothing else; use image-build for more."
            )
        name = self._own_repository(request.query_value("repo") or "")
        tag = request.query_value("tag") or None
        reference = self.service.commit(self.caller, docker_name, f"{name}:{tag}" if tag else name)
        status, info = self.server.engine.json("GET", f"/images/{quote(reference, safe='/:')}/json")
        image_id = str(info["Id"]) if status == 200 and isinstance(info, dict) else reference
        self._send(201, json.dumps({"Id": image_id}).encode())

    def _tag(self, request: decide.DockerRequest, ref: str) -> NoReturn:
        """``docker tag`` of the caller's own image into their namespace."""
        assert self.caller is not None
        name = self._own_repository(request.query_value("repo") or "")
        images.tag(self.service, self.caller, ref, name, request.query_value("tag") or None)
        self._send_empty(201)

    def _remove_image(self, request: decide.DockerRequest, ref: str) -> NoReturn:
        """``docker rmi`` of the caller's own image (``image-remove``'s rules: not while a
        container uses it); one they may not see is Docker's "No such image"."""
        assert self.caller is not None
        self._visible_image(request, ref)
        removed = images.remove(self.service, self.caller, ref)
        self._send(200, json.dumps([{"Untagged": removed.image}]).encode())

    def _visible_image(self, request: decide.DockerRequest, ref: str) -> dict[str, object]:
        """The inspection of an image the caller may see, as they may see it; any other is
        Docker's "No such image"."""
        assert self.caller is not None
        status, info = self.server.engine.json(
            "GET", decide.request_path(request, f"/images/{quote(ref, safe='/:@')}/json")
        )
        images_config = self.service.config().images
        if status == 200 and isinstance(info, dict):
            shown = decide.visible_image_by(
                ref, info, self.caller.name, self._shows(images_config.allows_reference)
            )
            if shown is not None:
                return shown
        raise NotFound(decide.no_such_image(ref))

    def _checked_save(self, request: decide.DockerRequest, ref: str | None) -> None:
        """A ``docker save`` goes on only where ``images.yaml`` allows it, and only of
        images the caller may see (another is Docker's "No such image")."""
        if not self.service.config().images.docker_save:
            raise PermissionDenied(decide.SAVE_REFUSED)
        try:
            names = decide.save_names(request, ref)
        except decide.BadRequest as exc:
            self._refuse(400, f"ds01 could not read this request: {exc}.")
        for name in names:
            self._visible_image(request, name)

    def _load(self, request: decide.DockerRequest) -> NoReturn:
        """``docker load`` where ``images.yaml`` allows it: the tar spooled as it comes
        (bounded) and read on the way; only a tar whose every image is tagged in the
        caller's namespace and claims none of ds01's labels (``ds01.core.docker_load``)
        goes on to dockerd, whose answer the client gets. Audited (``image.load``)."""
        assert self.caller is not None
        user = self.caller.user
        if not self.service.config().images.docker_load:
            namespace = user_namespace(user.name, user.uid)
            raise PermissionDenied(LOAD_REFUSED.format(namespace=namespace))
        archive = LoadArchive()
        try:
            spool, size = spool_load(
                self._streamed_body(request), archive, self._spool_dir(), MAX_LOAD_BYTES
            )
            self.body_pending = False
        except ArchiveRefused as exc:
            self._refuse(exc.status, exc.message)
        except LoadRefused as exc:
            self._refuse(403, str(exc))
        except BodyError as exc:
            self._refuse(400, f"ds01 could not read this image tar: {exc}.")
        with spool:
            try:
                tags = archive.tags(lambda repo: decide.own_repository(repo, user.name, user.uid))
            except (LoadRefused, PermissionError) as exc:
                self._refuse(403, str(exc))
            self.service.events.emit(
                "image.load",
                user=user.name,
                resource=f"image/{tags[0]}",
                details={"via": "docker", "tags": tags, "bytes": size},
            )
            self._claim()
            self.server.engine.forward(
                self.sock, request.method, decide.with_query(request), request.headers,
                (spool, size),
            )  # fmt: skip
        raise _Answered

    def _pull(self, request: decide.DockerRequest) -> NoReturn:
        """``docker pull`` as ``image-pull`` does it (only what the image policy allows,
        audited, one job per user's pull), its progress streamed as Docker streams it."""
        assert self.caller is not None
        try:
            reference = decide.pull_reference(request)
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from exc
        job = images.start_pull(self.service, self.caller, api.ImagePullRequest(image=reference))
        with contextlib.suppress(OSError):
            job = self._follow_job(job, decide.pull_line)
            message = job.message or f"Pulling {reference} ended."
            ended = decide.stream_error if job.state != "succeeded" else decide.pull_line
            self.sock.sendall(ended(message))
        raise _Answered

    def _build(self, request: decide.DockerRequest) -> NoReturn:
        """``docker build`` (the classic builder) as ``image-build`` does it, from the
        context the client sends (written again as a copy is: the caller's files, no set-id
        bits, no device nodes), its output streamed as Docker streams it."""
        assert self.caller is not None
        user = self.caller.user
        try:
            options = decide.build_options(request, user.name, user.uid)
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from exc
        try:
            spool, _ = rewrite_archive(
                self._streamed_body(request), self._owner(), self._spool_dir(), MAX_CONTEXT_BYTES
            )
            self.body_pending = False
        except ArchiveRefused as exc:
            self._refuse(exc.status, exc.message)
        except BodyError as exc:
            self._refuse(400, f"ds01 could not read this build context: {exc}.")
        build = api.ImageBuildRequest(
            name=options.name,
            context="the context docker build sent",
            dockerfile=options.dockerfile,
            tag=options.tag,
            pull=options.pull,
            no_cache=options.no_cache,
        )
        job = images.start_archive_build(self.service, self.caller, spool, build)
        with contextlib.suppress(OSError):
            job = self._follow_job(job, decide.build_line)
            if job.state != "succeeded" or not job.image_id:
                self.sock.sendall(decide.stream_error(job.message or "The build failed."))
                raise _Answered
            short = job.image_id.removeprefix("sha256:")[:12]
            self.sock.sendall(
                json.dumps({"aux": {"ID": job.image_id}}).encode() + b"\r\n"
                + decide.build_line(f"Successfully built {short}")
                + decide.build_line(f"Successfully tagged {job.image}")
            )  # fmt: skip
        raise _Answered

    def _follow_job(
        self, job: api.ImageJobInfo, line: Callable[[str], bytes]
    ) -> api.ImageJobInfo:
        """Answer 200 and stream an image job's output as it comes (``line``: one line as
        Docker's JSON) until it ends; the job as it ended."""
        assert self.caller is not None
        self._claim()
        self.sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        )
        since = 0
        while job.state == "running":
            job = images.follow(self.service, self.caller, job.kind, job.id, 30.0, str(since))
            self.sock.sendall(b"".join(line(text) for text in job.lines))
            since = job.next
        return job

    def _owner(self) -> Owner:
        """Whose the files of a copy or a build context become: the caller's."""
        assert self.caller is not None
        user = self.caller.user
        return Owner(user.uid, user.gid, user.name, user.groups[0] if user.groups else "")

    def _spool_dir(self) -> Path:
        spool_dir = self.service.paths.state_dir / ARCHIVE_SPOOL_DIR
        spool_dir.mkdir(mode=0o700, exist_ok=True)
        return spool_dir

    def _info(self) -> NoReturn:
        """The engine's ``/info`` as the caller may see it (``decide.info_view``)."""
        assert self.caller is not None
        status, info = self.server.engine.json("GET", "/info")
        if status != 200 or not isinstance(info, dict):
            self._error(502, "Docker did not describe itself; tell an admin.")
        filters = json.dumps({"label": decide.owner_labels(self.caller.uid)})
        listed = self.server.engine.json("GET", f"/containers/json?all=1&filters={quote(filters)}")
        states = [str(c.get("State", "")) for c in listed[1] or [] if isinstance(c, dict)]
        self._send(200, json.dumps(decide.info_view(info, states)).encode())

    # -- networks and volumes ------------------------------------------------------------------

    def _network(self, request: decide.DockerRequest, kind: str, ref: str, body: bytes) -> NoReturn:
        """Every network name the caller uses means their own network (``ds01-u<uid>``, on
        which ds01 puts all their containers, isolated from other users'): a create makes
        nothing, an inspection shows their network under that name, a removal, connect or
        disconnect changes nothing (a connect's container must be theirs)."""
        assert self.caller is not None
        real = network_name(self.caller.uid)
        status, info = self.server.engine.json("GET", f"/networks/{real}")
        exists = status == 200 and isinstance(info, dict)
        net_id = str(info["Id"]) if exists else hashlib.sha256(real.encode()).hexdigest()
        subnet = list((info.get("IPAM") or {}).get("Config") or []) if exists else []
        if kind == "networks":
            shown = [decide.network_view(real, net_id, subnet)] if exists else []
            self._send(200, json.dumps(shown).encode())
        if kind == "network_create":
            _checked(decide.check_network_create, _json(body))
            self._send(201, json.dumps({"Id": net_id, "Warning": ""}).encode())
        if not is_network_name(ref):
            raise NotFound(f"network {ref} not found")
        if kind == "network_connect":
            fields = _json(body)
            container = fields.get("Container") if isinstance(fields, dict) else None
            self._own_container(str(container or "-"))
            self._send_empty(200)
        if request.method == "DELETE":
            self._send_empty(204)
        self._send(200, json.dumps(decide.network_view(ref, net_id, subnet)).encode())

    def _volume(self, request: decide.DockerRequest, kind: str, ref: str, body: bytes) -> None:
        """The caller's named volumes: listed, inspected and created under their names
        (Docker's is ``NAME._.<uid>``, labelled theirs, at most ``MAX_USER_VOLUMES``);
        returns only for a removal of one of theirs, which dockerd then does."""
        if kind == "volumes":
            shown = [
                decide.volume_view(v, _user_name(str(v.get("Name", ""))))
                for v in self._own_volumes()
            ]
            self._send(200, json.dumps({"Volumes": shown, "Warnings": []}).encode())
        if kind == "volume_create":
            name, labels = _checked(decide.check_volume_create, _json(body))
            name = name or secrets.token_hex(32)  # Docker's own name for an anonymous one
            volume = self._own_volume(name, create=labels)
            self._send(201, json.dumps(decide.volume_view(volume, name)).encode())
        volume = self._own_volume(ref)
        if request.method != "DELETE":
            self._send(200, json.dumps(decide.volume_view(volume, ref)).encode())

    def _volume_name(self, name: str) -> str:
        assert self.caller is not None
        return L.container_name(name, self.caller.uid)

    def _own_volumes(self) -> list[dict[str, Any]]:
        assert self.caller is not None
        uid = self.caller.uid
        filters = json.dumps({"label": decide.owner_labels(uid)})
        listed = self.server.engine.json("GET", f"/volumes?filters={quote(filters)}")[1]
        volumes = listed.get("Volumes") if isinstance(listed, dict) else None
        return [
            v for v in volumes or [] if isinstance(v, dict) and decide.owns(v.get("Labels"), uid)
        ]

    def _own_volume(
        self, name: str, create: dict[str, str] | None = None, made: list[str] | None = None
    ) -> dict[str, Any]:
        """dockerd's inspection of the caller's volume ``name``; made first (labelled
        theirs, its root given to them) when ``create`` (the client's labels) is given and
        it is missing, its Docker name then added to ``made``; otherwise Docker's "no such
        volume"."""
        assert self.caller is not None
        user = self.caller.user
        if not is_object_name(name):
            raise NotFound(decide.no_such_volume(name))
        docker_name = self._volume_name(name)
        status, info = self.server.engine.json("GET", f"/volumes/{quote(docker_name)}")
        if status == 200 and isinstance(info, dict) and decide.owns(info.get("Labels"), user.uid):
            return info
        if create is None or status == 200:  # someone else's under that name: not touched
            raise NotFound(decide.no_such_volume(name))
        labels = {**create, L.MANAGED: "true", L.UID: str(user.uid), L.USER: user.name}
        with self.server.volume_lock:
            if len(self._own_volumes()) >= decide.MAX_USER_VOLUMES:
                raise QuotaExceeded(
                    f"You have {decide.MAX_USER_VOLUMES} named volumes, the most one user "
                    "may: remove one (docker volume rm NAME) first."
                )
            status, made_info = self.server.engine.json(
                "POST",
                "/volumes/create",
                {"Name": docker_name, "Driver": "local", "Labels": labels},
            )
        if status != 201 or not isinstance(made_info, dict) or not decide.owns(
            made_info.get("Labels"), user.uid
        ):
            raise NotFound(decide.no_such_volume(name))
        volume: dict[str, Any] = made_info
        if made is not None:
            made.append(docker_name)
        give_volume_root(str(volume.get("Mountpoint", "")), user.uid, user.gid)
        self.service.events.emit(
            "volume.create", user=user.name, resource=f"volume/{name}", details={"via": "docker"}
        )
        return volume

    def _remove_volumes(self, docker_names: list[str]) -> None:
        """Remove the volumes a refused or failed create made (only those: a volume that
        existed before stays, and one another container took meanwhile is in use, which
        dockerd refuses to remove)."""
        assert self.caller is not None
        for docker_name in docker_names:
            try:
                status, _ = self.server.engine.json("DELETE", f"/volumes/{quote(docker_name)}")
            except Ds01Error as exc:
                status = 0
                log.warning("volume %s of a refused create stays: %s", docker_name, exc.message)
            if status == 204:
                self.service.events.emit(
                    "volume.remove",
                    user=self.caller.name,
                    resource=f"volume/{_user_name(docker_name)}",
                    details={"via": "docker", "reason": "the create that made it failed"},
                )

    def _shows(self, allows_reference: Callable[[str], bool]) -> Callable[[str], bool]:
        """The references of images the caller may see: those the image policy allows, and
        those in their own namespace (a loaded image's tags: no other user can put one
        there, and the caller can see and remove what they loaded)."""
        assert self.caller is not None
        user = self.caller.user
        return lambda ref: allows_reference(ref) or owns_reference(user.name, user.uid, ref)

    def _image(self, request: decide.DockerRequest, ref: str) -> NoReturn:
        """An image's inspection, when the caller may see the image."""
        self._send(200, json.dumps(self._visible_image(request, ref)).encode())

    def _images(self, request: decide.DockerRequest) -> NoReturn:
        assert self.caller is not None
        status, summaries = self.server.engine.json("GET", decide.with_query(request))
        if status != 200 or not isinstance(summaries, list):
            self._error(502, "Docker did not list its images; tell an admin.")
        images = self.service.config().images
        user = self.caller.name
        shown = [
            visible
            for s in summaries
            if isinstance(s, dict)
            and (visible := decide.visible_image(s, user, self._shows(images.allows_reference)))
            is not None
        ]
        self._send(200, json.dumps(shown).encode())

    # -- answers ---------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> NoReturn:
        """Audit a refusal of this request and answer it; never returns."""
        assert self.caller is not None
        error = NotFound(message) if status == 404 else PermissionDenied(message)
        self.service.log_refusal(
            self.caller, AUDIT_ACTION, f"docker/{self.what}", error, status=status
        )
        self._error(status, message)

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
        raise _Answered

    def _send_empty(self, status: int) -> NoReturn:
        """Answer ``status`` without a body; never returns."""
        phrase = HTTPStatus(status).phrase
        self._claim()
        with contextlib.suppress(OSError):
            self.sock.sendall(f"HTTP/1.1 {status} {phrase}\r\nConnection: close\r\n\r\n".encode())
        raise _Answered

    def _claim(self) -> None:
        """Claim the answer before the first write (the drain may have answered)."""
        if not self.exchange.reply.claim():
            raise _Answered


def _json(body: bytes) -> object:
    """A request body's JSON (``None`` when empty: the check that follows refuses it)."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise InvalidInput("The request body is not JSON.") from None


def _checked(check: Callable[[object], _T], body: object) -> _T:
    """A core check of a body, its refusals as ds01's errors."""
    try:
        return check(body)
    except decide.BadRequest as exc:
        raise InvalidInput(f"ds01 could not read this request: {exc}.") from exc
    except PermissionError as exc:
        raise PermissionDenied(str(exc)) from exc


def _user_name(docker_name: str) -> str:
    """The caller's name for a volume (its Docker name without ds01's suffix)."""
    return docker_name.rsplit(L.CONTAINER_NAME_SEPARATOR, 1)[0]


def _query_of(request: decide.DockerRequest) -> str:
    target = decide.with_query(request)
    return target[target.index("?") :] if "?" in target else ""


def _lane(request_line: bytes) -> LaneName:
    """Requests that follow a stream run in the pool of waiting requests."""
    try:
        request = decide.parse_request(request_line + b"\r\n\r\n")
    except decide.BadRequest:
        return "workers"
    return "waiting" if decide.waits(request) else "workers"


def _wait_only(request_line: bytes) -> bool:
    """A followed read changes nothing: the drain may cut it at once."""
    return request_line.startswith(b"GET ") and _lane(request_line) == "waiting"


__all__ = ["AUDIT_ACTION", "CONNECTION_RESOURCE", "DockerApiServer"]
