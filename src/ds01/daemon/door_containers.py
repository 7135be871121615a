"""The Docker API door's containers: create, operate, exec, update and copy, on ds01's
terms.

A create goes through ds01's creation path (named volumes made the caller's first; one
that asks for GPUs when none is free waits in the GPU queue: ``door_queue``); a
start, stop, restart, rename or remove through ds01's container operations; an exec and an update
are re-encoded from what the check read; a copy in is written again and spooled before
dockerd sees it, a copy out filtered to what the container's user may read.

State: none beyond the exchange's. Locks: none held by a caller; a create takes the
allocation lock inside the service. Calls: the service's entry points, the volumes of
``door_volumes`` (a create's), dockerd through the engine proxy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import tarfile
from typing import Any, NoReturn
from urllib.parse import quote

from pydantic import ValidationError

from ds01.core import docker_api as decide
from ds01.core.docker_archive import MAX_ARCHIVE_BYTES, ArchiveRefused, ReadableMembers
from ds01.core.docker_create import CreateRefused, read_create
from ds01.daemon import schemas as api
from ds01.daemon.door_exchange import Answered, json_body, log
from ds01.daemon.door_queue import wait_for_turn
from ds01.daemon.door_volumes import VolumeNetworkRequests
from ds01.daemon.held_creates import DOOR_INTERFACE
from ds01.daemon.prepared import Queued
from ds01.errors import DockerUnavailable, Ds01Error, InvalidInput, NotFound, PermissionDenied
from ds01.model import labels as L
from ds01.runtime.archive_rewrite import BodyError, filter_archive, rewrite_archive


class ContainerRequests(VolumeNetworkRequests):
    """The door's container requests (module docstring)."""

    def _create(self, request: decide.DockerRequest, body: bytes) -> NoReturn:
        """A create through ds01's creation path (quotas, allocator, hardening, labels,
        name suffix, cgroup parent, the caller's uid:gid); 201 with the new id. One that
        asks for GPUs when none is free waits in the GPU queue, its client held until the
        container is made (``door_queue.wait_for_turn``): the same 201 then. One that names
        devices (``--gpus device=…``) gets exactly them, or is refused."""
        assert self.caller is not None
        user = self.caller.user
        try:
            wanted = read_create(json_body(body), uid=user.uid, gid=user.gid, user=user.name)
        except CreateRefused as exc:
            self._refuse(exc.status, exc.message)
        name = request.query_value("name") or f"docker-{secrets.token_hex(4)}"
        try:
            create = api.CreateContainerRequest(
                name=name,
                image=wanted.image,
                gpus=wanted.gpus,
                devices=list(wanted.gpu_ids),
                cpus=wanted.cpus,
                memory=str(wanted.memory_bytes) if wanted.memory_bytes else None,
                shm_size=str(wanted.shm_size_bytes) if wanted.shm_size_bytes else None,
                workspace=wanted.workspace,
                data=wanted.data,
                ports=[api.PortRequest(container_port=c, host_port=h) for c, h in wanted.ports],
                interface=DOOR_INTERFACE,
                queue=wanted.gpus > 0,  # no GPU free: wait in the queue, as container-create
            )
        except ValidationError as exc:
            self._refuse_invalid("create this", exc)
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
                if isinstance(created, Queued):
                    created = wait_for_turn(
                        self.service, self.engine, self.sock, self.caller, created
                    )
            except BaseException:
                self._remove_volumes(made)
                raise
        except NotFound as exc:
            # Not 404: the docker CLI would answer it by pulling the image.
            self._refuse(403, exc.message)
        docker_name = created.info.docker_name
        if created.record is not None:  # as Docker listed it right after the create
            full_id = created.record.id
        else:
            status, info = self.engine.json("GET", f"/containers/{quote(docker_name)}/json")
            full_id = str(info["Id"]) if status == 200 and isinstance(info, dict) else docker_name
        payload = json.dumps({"Id": full_id, "Warnings": []}).encode()
        self.service.confirm_create(created.request_id, docker_name)
        self._send(201, payload)

    def _operate(self, request: decide.DockerRequest, kind: str, ref: str) -> NoReturn:
        """start, stop, restart, remove of the caller's container ``ref`` through ds01's
        container operations (a start re-acquires devices the container gave back); 204 as
        Docker answers. A start of a container the ledger holds as not running (``docker
        run``'s, by the id its create answered) starts that record without looking it up
        again."""
        assert self.caller is not None
        caller, service = self.caller, self.service
        known = self._own_known(ref) if kind == "start" else None
        if known is not None and known.status == "running":
            known = None  # the ledger may lag a stop: Docker's answer decides
        docker_name = known.docker_name if known is not None else self._own_container(ref)[1]
        if kind in ("stop", "restart"):
            service.stop(caller, docker_name)
        if kind in ("start", "restart"):
            started = service.start(caller, docker_name, record=known)
            if not isinstance(started, api.ContainerInfo):  # never queued: ``queue`` unset
                raise DockerUnavailable("ds01 queued this start; tell an admin.")
        if kind == "remove":
            service.remove(caller, docker_name, force=request.flag("force"))
        self._send_empty(204)

    def _rename(self, request: decide.DockerRequest, docker_name: str) -> NoReturn:
        """A rename of the caller's container, in any state, through ds01's (its ds01 name,
        network alias and exemptions follow it); 204 as Docker answers."""
        assert self.caller is not None
        new_name = decide.rename_target(request, self.caller.uid)
        self.service.rename(self.caller, docker_name, new_name)
        self._send_empty(204)

    def _checked_exec(self, body: bytes) -> bytes:
        """The exec create as dockerd gets it: re-encoded from what the check read."""
        assert self.caller is not None
        user = self.caller.user
        try:
            return json.dumps(
                decide.check_exec(json_body(body), uid=user.uid, gid=user.gid, user=user.name)
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
                json_body(body),
                memory_bytes=L.size_of(labels, L.MEMORY_BYTES) or 0,
                nano_cpus=round(cpus * 1e9) if cpus else 0,
            )
        except decide.BadRequest as exc:
            raise InvalidInput(f"ds01 could not read this update: {exc}.") from exc
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from exc
        return json.dumps(update).encode()

    def _archive_put(self, request: decide.DockerRequest, ref: str) -> NoReturn:
        """``docker cp`` into the caller's container: the client's tar written again
        (``ds01.core.docker_archive``: the caller's ownership, no set-id bits, no extended
        attributes, no device nodes) and spooled; only once every member passed does it
        go to dockerd, so a refused copy changes nothing."""
        assert self.caller is not None
        target = self._container_target(request, "/containers/", ref)
        source, empty = self._spooled_body(request)
        try:
            spool, size = rewrite_archive(source, self._owner(), empty, MAX_ARCHIVE_BYTES)
            self.body_pending = False
        except ArchiveRefused as exc:
            self._refuse(exc.status, exc.message)
        except BodyError as exc:
            self._refuse(400, f"ds01 could not read this copy: {exc}.")
        with spool:
            self._claim()
            self.engine.forward(
                self.sock, request.method, target, request.headers, (spool, size)
            )
        raise Answered

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
            self.engine.forward_transformed(
                self.sock,
                target,
                request.headers,
                lambda source, sink: filter_archive(source, sink, readable),
                keep=("X-Docker-Container-Path-Stat",),
            )
        except tarfile.TarError as exc:  # the client's tar is cut short: it sees an error
            log.warning("a copy out of %s was cut short: %s", ref[:80], exc)
        raise Answered

    def _hang_up(self, exec_id: str) -> None:
        """An exec whose connection ds01d's stop cut: its process would run on without its
        client (dockerd does not end it), so it gets a terminal's hangup."""
        with contextlib.suppress(Ds01Error):
            if self.engine.hang_up_exec(exec_id):
                log.info("exec %s hung up: ds01d's stop cut its connection", exec_id[:12])

    def _info(self) -> NoReturn:
        """The engine's ``/info`` as the caller may see it (``decide.info_view``)."""
        assert self.caller is not None
        status, info = self.engine.json("GET", "/info")
        if status != 200 or not isinstance(info, dict):
            self._error(502, "Docker did not describe itself; tell an admin.")
        filters = json.dumps({"label": decide.owner_labels(self.caller.uid)})
        listed = self.engine.json("GET", f"/containers/json?all=1&filters={quote(filters)}")
        states = [str(c.get("State", "")) for c in listed[1] or [] if isinstance(c, dict)]
        self._send(200, json.dumps(decide.info_view(info, states)).encode())
