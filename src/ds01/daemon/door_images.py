"""The Docker API door's images: lists, inspections, pulls, builds, loads, saves, tags,
removals and commits, as ds01's image rules allow them.

A caller sees the images the image policy allows and those in their own namespace; they
tag, commit and load only into their namespace; a pull and a build run as ``image-pull``
and ``image-build`` jobs, their output streamed as Docker streams it.

State: none beyond the exchange's. Locks: none. Calls: ``ds01.daemon.images`` (jobs, tags,
removals), the service (commit, configuration, audit log), dockerd through the engine
proxy.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import NoReturn
from urllib.parse import quote

from pydantic import ValidationError

from ds01.core import docker_api as decide
from ds01.core.docker_archive import ArchiveRefused
from ds01.core.docker_create import unset
from ds01.core.docker_load import (
    LOAD_REFUSED,
    MAX_LOAD_BYTES,
    LoadAnswer,
    LoadArchive,
    LoadRefused,
)
from ds01.core.image_build import owns_reference, user_namespace
from ds01.daemon import images
from ds01.daemon import schemas as api
from ds01.daemon.door_exchange import Answered, DoorExchange, json_body
from ds01.daemon.image_jobs import jobs_of
from ds01.errors import NotFound, PermissionDenied
from ds01.runtime.archive_rewrite import BodyError, rewrite_archive, spool_load
from ds01.runtime.build_context import MAX_CONTEXT_BYTES


class ImageRequests(DoorExchange):
    """The door's image requests (module docstring)."""

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
        if request.query_value("changes") or not unset(json_body(body)):
            self._refuse(
                403, "docker commit --change (and a config) is not allowed: ds01 labels the "
                "image yours and nothing else; use image-build for more."
            )
        name = self._own_repository(request.query_value("repo") or "")
        tag = request.query_value("tag") or None
        reference = self.service.commit(self.caller, docker_name, f"{name}:{tag}" if tag else name)
        status, info = self.engine.json("GET", f"/images/{quote(reference, safe='/:')}/json")
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
        status, info = self.engine.json(
            "GET", decide.request_path(request, f"/images/{decide.quoted(ref)}/json")
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
        """``docker load`` where ``images.yaml`` allows it: the tar read as it comes
        (bounded) and written again, plain, into a spool (``spool_load``: dockerd gets
        what the door read, never the client's bytes); only a tar whose every image is
        tagged in the caller's namespace and claims none of ds01's labels
        (``ds01.core.docker_load``) goes on to dockerd, whose answer the client gets.
        Audited (``image.load``) once dockerd has answered, with what it did (``bytes``:
        the size of the tar dockerd got)."""
        assert self.caller is not None
        user = self.caller.user
        if not self.service.config().images.docker_load:
            namespace = user_namespace(user.name, user.uid)
            raise PermissionDenied(LOAD_REFUSED.format(namespace=namespace))
        archive = LoadArchive()
        source, empty = self._spooled_body(request)
        try:
            spool, size = spool_load(source, archive, empty, MAX_LOAD_BYTES)
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
            self._claim()
            answer = LoadAnswer()
            try:
                self.engine.forward(
                    self.sock, request.method, decide.with_query(request), request.headers,
                    (spool, size), seen=answer.feed,
                )  # fmt: skip
            finally:
                self._audit_load(tags, size, answer)
        raise Answered

    def _audit_load(self, tags: list[str], size: int, answer: LoadAnswer) -> None:
        """``image.load`` once dockerd has answered: success with the images dockerd said
        it loaded, or failure with why (dockerd's error, or an answer that never said)."""
        assert self.caller is not None
        failure = answer.failure()
        details: dict[str, object] = {"via": "docker", "tags": tags, "bytes": size}
        if failure is None:
            details["loaded"] = answer.loaded
        else:
            details["error"] = failure
        self.service.events.emit(
            "image.load",
            user=self.caller.name,
            resource=f"image/{tags[0]}",
            details=details,
            outcome="success" if failure is None else "failure",
        )

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
        raise Answered

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
        # The request and room for the build first: a context is not spooled for a build
        # refused after.
        try:
            build = api.ImageBuildRequest(
                name=options.name,
                context="the context docker build sent",
                dockerfile=options.dockerfile,
                tag=options.tag,
                pull=options.pull,
                no_cache=options.no_cache,
            )
        except ValidationError as exc:
            self._refuse_invalid("build this", exc)
        jobs_of(self.service).check_room(user.uid)
        source, empty = self._spooled_body(request)
        try:
            spool, _ = rewrite_archive(source, self._owner(), empty, MAX_CONTEXT_BYTES)
            self.body_pending = False
        except ArchiveRefused as exc:
            self._refuse(exc.status, exc.message)
        except BodyError as exc:
            self._refuse(400, f"ds01 could not read this build context: {exc}.")
        job = images.start_archive_build(self.service, self.caller, spool, build)
        with contextlib.suppress(OSError):
            job = self._follow_job(job, decide.build_line)
            if job.state != "succeeded" or not job.image_id:
                self.sock.sendall(decide.stream_error(job.message or "The build failed."))
                raise Answered
            short = job.image_id.removeprefix("sha256:")[:12]
            self.sock.sendall(
                json.dumps({"aux": {"ID": job.image_id}}).encode() + b"\r\n"
                + decide.build_line(f"Successfully built {short}")
                + decide.build_line(f"Successfully tagged {job.image}")
            )  # fmt: skip
        raise Answered

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
        status, summaries = self.engine.json("GET", decide.with_query(request))
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
