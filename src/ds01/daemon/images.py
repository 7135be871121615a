"""Images through ds01d: the registry listing, a user's own builds, pulls and removals.

Builds (``image-build``). A user builds from a directory they own (symlinks resolved,
``ds01.daemon.launch.owned_directory``). ds01d never reads that directory itself: a ``tar``
running as the user (their uid, gid and groups) packs it, so a file the user cannot read
stays out, and the build fails saying which. ds01d then reads the Dockerfile from that
archive and checks every image it builds from (``FROM``, ``COPY --from=``) against the image
policy: a registry image, an ``allow`` pattern, or one of the user's own images, before
Docker pulls anything. A registry short name in ``FROM`` (``FROM python``) means that
entry's image: the ``FROM`` is rewritten to the reference
(``ds01.core.dockerfile_bases.resolve_short_names``), the rewritten text is what the policy
checks, and Docker builds from it (added to the archive under a name of its own). The build
runs in Docker's legacy builder with the user's per-container CPU and memory limits on every
step (no swap, no GPU), under the user's cgroup parent, whose totals (``aggregate:``) ds01d
writes first, so a build counts towards the same totals as the user's containers. The image
is labelled ``ds01.image.owner=<user>`` (after every ``LABEL`` of the Dockerfile, so it
cannot be overridden), checked for other ``ds01.*`` labels, and only then tagged
``<namespace>/<name>:<tag>`` (``ds01.core.image_build``); a tag that is a registry image or
belongs to someone else is never moved.

Pulls (``image-pull``) fetch only what the image policy allows. Builds and pulls are jobs
(``ds01.daemon.image_jobs``): the request returns at once (HTTP 202), and the owner (or an
admin) follows the output with long polls.

Removals (``image-remove``): users remove their own images; admins any image, a registry
image only with ``force``; an image a container uses is refused, naming the containers.
"""

from __future__ import annotations

import contextlib
import logging
import tarfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from ds01.config.loader import Ds01Config
from ds01.config.resolve import resolve_policy
from ds01.core.dockerfile_bases import resolve_short_names
from ds01.core.image_build import (
    IMAGE_DECLARED_LABELS,
    BaseReference,
    BuildTarget,
    build_step,
    build_target,
    foreign_labels,
    owns_reference,
    validate_dockerfile_path,
)
from ds01.daemon import schemas as api
from ds01.daemon.creation import DEFAULT_SLICE_GROUP
from ds01.daemon.identity import Caller
from ds01.daemon.image_jobs import ImageJob, JobKind, jobs_of
from ds01.daemon.launch import owned_directory
from ds01.daemon.networks import network_name
from ds01.daemon.service import Ds01Service
from ds01.daemon.spool import spools_of
from ds01.errors import (
    Conflict,
    Ds01Error,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PolicyError,
)
from ds01.model import labels as L
from ds01.model.names import is_image_reference, validate_image_reference, with_default_tag
from ds01.model.text import plain
from ds01.model.units import format_bytes, format_duration
from ds01.runtime.build_context import add_dockerfile, context_archive
from ds01.runtime.cgroups import (
    AggregateLimits,
    CgroupError,
    build_slice_path,
    slice_unit,
    user_slice_path,
)
from ds01.runtime.docker_images import BuildLimits
from ds01.runtime.dockerfile_parser import parse_isolated
from ds01.runtime.identity import UnixUser

log = logging.getLogger(__name__)
#: Largest Dockerfile ds01d reads.
MAX_DOCKERFILE_BYTES = 1024**2
#: Where build contexts are spooled, below the state directory (unlinked files).
SPOOL_DIR = "builds"
# Moving a tag and checking whose it is happen together.
_TAG_LOCK = threading.Lock()


def _now(service: Ds01Service) -> str:
    return service.now().isoformat(timespec="seconds")


def _refused(
    service: Ds01Service, caller: Caller, action: str, resource: str, exc: Ds01Error
) -> None:
    if isinstance(exc, PolicyError):
        kind = "auth.denied" if isinstance(exc, PermissionDenied) else action
        service.log_refusal(caller, kind, resource, exc)


# -- listing -----------------------------------------------------------------------------------

#: What ``image-list`` shows of a registry entry as the registry has it.
_LISTED_ENTRY_FIELDS = {"name", "image", "framework", "description", "version"}


def listing(
    service: Ds01Service, caller: Caller, *, include_missing: bool = False, catalog: bool = False
) -> list[api.ImageInfo]:
    """Registry entries present here (``include_missing``/``catalog``: all of them), then,
    unless ``catalog``, the caller's own images."""
    registry = service.config().images
    present = service.runtime.local_image_tags()
    result = []
    for entry in registry.entries:
        is_present = with_default_tag(entry.image) in present
        if is_present or include_missing or catalog:
            result.append(
                api.ImageInfo(
                    **entry.model_dump(include=_LISTED_ENTRY_FIELDS),
                    present=is_present,
                    source=registry.source_of(entry),
                    architectures=list(entry.architectures),
                    starter=entry.name == registry.starter,
                )
            )
    if catalog:
        return result
    own = []
    for image in service.runtime.owned_images(caller.name):
        built = datetime.fromtimestamp(image.created, tz=timezone.utc)
        for tag in image.tags:
            own.append(
                api.ImageInfo(
                    name=tag,
                    image=tag,
                    framework="-",
                    description=f"yours, built {built:%Y-%m-%d %H:%M} UTC",
                    version=None,
                    present=True,
                    own=True,
                    id=image.id,
                    size_bytes=image.size_bytes,
                    created_at=built.isoformat(timespec="seconds"),
                )
            )
    return result + sorted(own, key=lambda i: i.name)


#: Most references one ``presence`` question may name.
MAX_PRESENCE_REFERENCES = 1000


def presence(service: Ds01Service, caller: Caller, references: str) -> api.ImagesPresent:
    """Which of ``references`` (comma-separated) are on this machine: for ``ds01 config
    check``, which checks a registry ds01d may not have loaded yet. Admins only (it would
    tell a user which images others have)."""
    if not caller.is_admin:
        refusal = PermissionDenied("Only admins may ask which images are on this machine.")
        service.log_refusal(caller, "auth.denied", "images/present", refusal)
        raise refusal
    wanted = [r for r in references.split(",") if r]
    if len(wanted) > MAX_PRESENCE_REFERENCES:
        raise InvalidInput(f"Ask about at most {MAX_PRESENCE_REFERENCES} images at once.")
    for reference in wanted:
        validate_image_reference(reference)
    return api.ImagesPresent(
        present={r: service.runtime.local_image(r) is not None for r in wanted}
    )


# -- builds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BuildPlan:
    target: BuildTarget
    context: Path
    dockerfile: str
    limits: BuildLimits
    parent: str  # the user's cgroup parent, as a path below the cgroup root
    pull: bool
    build_parent: str  # where the steps run, inside ``parent``: it holds the pids limit
    pids: int | None  # the most processes all steps of the user's builds may have at once
    no_cache: bool


def build_limits(service: Ds01Service, user: UnixUser) -> tuple[BuildLimits, str]:
    """What each step of ``user``'s builds may use, and their cgroup parent path: the
    per-container CPU, memory and shm limits, within the user's totals and the host; the
    user's build cgroup inside their parent (``build_slice_path``); their own network, or
    none when the ``build_network`` policy says so."""
    limits = service.limits_for(user)
    aggregate = service.aggregate_for(user)
    memory = [m for m in (limits.memory_limit_bytes, aggregate.memory_limit_bytes) if m]
    cpus = [c for c in (limits.cpu_limit, aggregate.cpu_limit) if c]
    group = limits.groups[0] if limits.groups else DEFAULT_SLICE_GROUP
    parent = user_slice_path(group, user.name)
    builds = build_slice_path(parent)
    policy = resolve_policy(service.config().limits, user.name, user.groups)
    return (
        BuildLimits(
            cgroup_parent=slice_unit(builds)
            if service.engine.cgroup_driver == "systemd"
            else builds,
            memory_bytes=min(memory) if memory else None,
            cpus=min([*cpus, float(service.engine.cpus)]) if cpus else None,
            shm_size_bytes=limits.shm_size_bytes,
            network_mode=network_name(user.uid) if policy.build_network else "none",
        ),
        parent,
    )


def build_pids_limit(service: Ds01Service, user: UnixUser) -> int | None:
    """The most processes the steps of ``user``'s builds may have together: their
    per-container ``pids_limit`` (a build is one container at a time), within their
    aggregate total; ``None`` when both are unlimited."""
    pids = [
        p
        for p in (service.limits_for(user).pids_limit, service.aggregate_for(user).pids_limit)
        if p
    ]
    return min(pids) if pids else None


def _limits_info(limits: BuildLimits, pids: int | None) -> dict[str, Any]:
    return {
        "cpus": limits.cpus,
        "memory_bytes": limits.memory_bytes,
        "pids": pids,
        "network": limits.network_mode,
        "cgroup_parent": limits.cgroup_parent,
    }


def _check_target(
    service: Ds01Service, config: Ds01Config, caller: Caller, target: BuildTarget
) -> None:
    """Refuse a tag that would shadow a registry image or move someone else's tag."""
    if config.images.registry_image(target.reference):
        raise PermissionDenied(
            f"{target.reference} is the image of a registry entry, which other users rely on; "
            "build under another name."
        )
    existing = service.runtime.local_image(target.reference)
    if existing is not None and existing.owner() != caller.name:
        raise PermissionDenied(
            f"{target.reference} exists already and is not one of your images; build under "
            "another name or tag."
        )


def _check_base(
    service: Ds01Service, config: Ds01Config, caller: Caller, base: BaseReference
) -> None:
    where = f"Dockerfile line {base.line}"
    if not is_image_reference(base.reference):
        raise InvalidInput(
            f"{where}: {base.instruction} {base.reference!r} is not an image reference ds01 can "
            "check (e.g. 'aimehub/pytorch-2.8.0-cuda12.6.3', 'alice/base:v1')."
        )
    if config.images.allows_reference(base.reference):
        return
    image = service.runtime.local_image(base.reference)
    if image is not None and image.owner() == caller.name:
        return
    raise PermissionDenied(
        f"{where}: {base.instruction} {base.reference} is not an image you may build from. "
        "Start from an image of the registry (the IMAGE column of `image-list --catalog`), "
        "or from one of your own images (`image-list`); an admin can allow others in "
        "images.yaml."
    )


def _build_context(service: Ds01Service, user: UnixUser, requested: str) -> Path:
    """The build directory, resolved; ``PermissionDenied`` unless ``user`` owns it."""
    try:
        return owned_directory(user, requested, "--context", service.engine.data_root)
    except PermissionDenied as exc:
        mounted = "only your own directories can be mounted."
        raise PermissionDenied(
            exc.message.replace(mounted, "ds01 builds only from your own directories.")
        ) from None


def _spool_dir(service: Ds01Service) -> Path:
    path = service.paths.state_dir / SPOOL_DIR
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def read_dockerfile(archive: IO[bytes], path: str, context: Path) -> str:
    """The text of the Dockerfile at ``path`` in the build context's ``archive``."""
    archive.seek(0)
    try:
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            try:  # ds01's own archives name it ./PATH, the docker CLI's PATH
                names = set(tar.getnames())
                member = tar.getmember(f"./{path}" if f"./{path}" in names else path)
            except KeyError:
                raise InvalidInput(
                    f"No Dockerfile at {context / path}. Write one (`image-create NAME` makes "
                    "a commented one to start from), or name it with --file."
                ) from None
            if not (member.isreg() or member.islnk()):
                raise InvalidInput(
                    f"{context / path} is not a regular file (a symbolic link?): ds01 needs "
                    "the Dockerfile itself in the build context."
                )
            if member.size > MAX_DOCKERFILE_BYTES:
                raise InvalidInput(f"{context / path} is larger than 1 MiB; is it a Dockerfile?")
            handle = tar.extractfile(member)
            data = handle.read(MAX_DOCKERFILE_BYTES) if handle is not None else b""
    except tarfile.TarError as exc:
        raise Conflict(f"Could not read the archive of your build context: {exc}") from exc
    finally:
        archive.seek(0)
    try:
        return data.decode("utf-8-sig")  # Docker, too, skips a byte order mark
    except UnicodeDecodeError as exc:
        # Docker reads bytes: ds01 must read the same text, not a repaired one.
        raise InvalidInput(
            f"{context / path} is not UTF-8 text (byte {exc.start + 1}); save it as UTF-8."
        ) from None


def start_build(
    service: Ds01Service, caller: Caller, request: api.ImageBuildRequest
) -> api.ImageJobInfo:
    """Check a build request, pack its context as the user, check its base images, and
    start it in the background. Every refusal is logged and raised."""
    resource = f"image/{request.name[:80]}"
    try:
        target = build_target(caller.name, caller.uid, request.name, request.tag)
        resource = f"image/{target.reference}"
        dockerfile = validate_dockerfile_path(request.dockerfile)
        context = _build_context(service, caller.user, request.context)
        _check_target(service, service.config(), caller, target)
        jobs_of(service).check_room(caller.uid)
        spool = spools_of(service).take(caller.uid, _spool_dir(service))
        archive, warnings = context_archive(caller.user, context, spool)
    except Ds01Error as exc:
        _refused(service, caller, "image.build", resource, exc)
        raise
    build = _ArchiveBuild(target, dockerfile, request.pull, request.no_cache, str(context))
    return _start_archive_build(service, caller, archive, build, warnings)


@dataclass(frozen=True)
class _ArchiveBuild:
    """A build whose context is packed: where it is tagged, its Dockerfile's path in the
    archive, its options, and the context as messages name it."""

    target: BuildTarget
    dockerfile: str
    pull: bool
    no_cache: bool
    context: str


def start_archive_build(
    service: Ds01Service,
    caller: Caller,
    archive: IO[bytes],
    request: api.ImageBuildRequest,
) -> api.ImageJobInfo:
    """A build of a context the client sent (``docker build`` through the Docker API door:
    ``archive``, written again as the door writes a copy; ``request.context`` only names it
    in messages), checked and run as :func:`start_build`'s. ``archive`` is the job's (closed
    with it, or here on a refusal)."""
    resource = f"image/{request.name[:80]}"
    try:
        target = build_target(caller.name, caller.uid, request.name, request.tag)
        resource = f"image/{target.reference}"
        dockerfile = validate_dockerfile_path(request.dockerfile)
        _check_target(service, service.config(), caller, target)
        jobs_of(service).check_room(caller.uid)
    except Ds01Error as exc:
        archive.close()
        _refused(service, caller, "image.build", resource, exc)
        raise
    build = _ArchiveBuild(target, dockerfile, request.pull, request.no_cache, request.context)
    return _start_archive_build(service, caller, archive, build, [])


def _start_archive_build(
    service: Ds01Service,
    caller: Caller,
    archive: IO[bytes],
    build: _ArchiveBuild,
    warnings: list[str],
) -> api.ImageJobInfo:
    """Check the base images of a packed build (short names resolved) and start it."""
    resource = f"image/{build.target.reference}"
    jobs = jobs_of(service)
    notes: list[str] = []
    dockerfile = build.dockerfile
    try:
        config = service.config()
        try:
            text = read_dockerfile(archive, dockerfile, Path(build.context))
            resolved = resolve_short_names(text, config.images.image_of, parse=parse_isolated)
            for base in resolved.bases:
                _check_base(service, config, caller, base)
            if resolved.short_names:
                dockerfile = add_dockerfile(archive, resolved.text)
                notes += [
                    f"Dockerfile line {s.line}: FROM {s.name} is the registry's {s.name}, "
                    f"built from {s.image}"
                    for s in resolved.short_names
                ]
        except Ds01Error:
            archive.close()
            raise
    except Ds01Error as exc:
        _refused(service, caller, "image.build", resource, exc)
        raise
    limits, parent = build_limits(service, caller.user)
    plan = _BuildPlan(
        target=build.target,
        context=Path(build.context),
        dockerfile=dockerfile,
        limits=limits,
        parent=parent,
        pull=build.pull,
        no_cache=build.no_cache,
        build_parent=build_slice_path(parent),
        pids=build_pids_limit(service, caller.user),
    )
    try:
        job = jobs.start(
            "build",
            caller.name,
            caller.uid,
            build.target.reference,
            _now(service),
            lambda job: _run_build(service, caller, job, archive, plan, notes, warnings),
            limits=_limits_info(limits, plan.pids),
        )
    except Ds01Error as exc:
        archive.close()
        _refused(service, caller, "image.build", resource, exc)
        raise
    return job.info()


def _apply_totals(service: Ds01Service, user: UnixUser, plan: _BuildPlan) -> None:
    """Write the user's totals on their cgroup parent (creating it), as a create does, and
    the pids limit of their builds on the build cgroup inside it. Fails closed: a limit
    that cannot be written stops the build."""
    with service.allocation_lock:
        service.enforcement.enforce(user.name, plan.parent, service.aggregate_for(user))
        try:
            service.cgroups.apply(plan.build_parent, AggregateLimits(pids=plan.pids))
        except CgroupError as exc:
            raise CgroupError(
                f"The build was stopped: its process limit could not be set ({exc.message})."
            ) from exc


def _run_build(
    service: Ds01Service,
    caller: Caller,
    job: ImageJob,
    archive: IO[bytes],
    plan: _BuildPlan,
    notes: list[str],
    warnings: list[str],
) -> None:
    jobs = jobs_of(service)
    started = time.monotonic()
    limits = plan.limits
    for note in notes:
        jobs.add_line(job, note)
    for warning in warnings:
        jobs.add_line(job, f"warning: {warning}")
    error: str | None = None
    image_id: str | None = None
    network = contextlib.ExitStack()
    try:
        _apply_totals(service, caller.user, plan)
        if limits.network_mode != "none":
            network.enter_context(service.networks.holding(caller.uid))
            service.networks.ensure(caller.uid)  # guarded before the first step runs
        stream = service.runtime.build_image(
            archive,
            dockerfile=plan.dockerfile,
            labels={L.IMAGE_OWNER: caller.name},
            limits=limits,
            pull=plan.pull,
            nocache=plan.no_cache,
        )
        # Docker has read the whole context once its answer begins: the spool file, and
        # with it the user's upload slot, is given back now, not when the build ends.
        archive.close()
        jobs.update(job, stream=stream)
        if job.cancel_requested:
            stream.close()
        error, image_id = _followed(service, caller, job, stream, plan)
        if job.cancel_requested:
            if image_id is not None:  # finished just before: not tagged, so not kept
                service.runtime.remove_image(image_id)
            raise _Cancelled
        if error is None and image_id is None:
            error = "Docker ended the build without an image."
        if error is None and image_id is not None:
            _tag_built(service, caller, plan, image_id)
    except _Cancelled:
        _build_event(service, caller, plan, started, error=f"cancelled by {job.cancelled_by}")
        jobs.finish(job, "cancelled", f"Cancelled by {job.cancelled_by}.", _now(service))
        return
    except Ds01Error as exc:
        error = exc.message
    finally:
        archive.close()
        network.close()
        if not [j for j in jobs.running(caller.uid) if j is not job and j.kind == "build"]:
            # Each with its empty ancestors.
            service.enforcement.remove_parent_if_unused(plan.build_parent)
            service.enforcement.remove_parent_if_unused(plan.parent)
            service.containers.release_networks_if_unused([caller.uid])
    seconds = time.monotonic() - started
    if error is not None:
        _build_event(service, caller, plan, started, error=error)
        jobs.finish(
            job, "failed", f"The build of {plan.target.reference} failed: {error}", _now(service)
        )
        return
    _build_event(service, caller, plan, started, image_id=image_id)
    jobs.finish(
        job,
        "succeeded",
        f"Built {plan.target.reference} in {format_duration(seconds)}. Use it: "
        f"container-create NAME --image {plan.target.reference}",
        _now(service),
        image_id=image_id,
    )


def _followed(
    service: Ds01Service,
    caller: Caller,
    job: ImageJob,
    stream: Iterable[dict[str, Any]],
    plan: _BuildPlan,
) -> tuple[str | None, str | None]:
    """Read a build's messages into ``job`` (its lines and step); return Docker's error
    and the built image's id. A read that fails because the build was cancelled ends it."""
    jobs = jobs_of(service)
    error: str | None = None
    image_id: str | None = None
    try:
        for message in stream:
            text = message.get("stream")
            if isinstance(text, str):
                for line in jobs.add_text(job, text):
                    step = build_step(line)
                    if step is not None:
                        jobs.update(job, step=step[0], steps=step[1])
                        # The parent may have been removed and made again by Docker
                        # without the totals (the user's last container went): again.
                        _apply_totals(service, caller.user, plan)
            elif message.get("error"):
                error = plain(str(message["error"])).strip()
            elif isinstance(message.get("aux"), dict):
                image_id = str(message["aux"].get("ID") or "") or None
            elif message.get("status") and not message.get("progress"):
                layer = message.get("id")
                jobs.add_line(
                    job, f"{layer}: {message['status']}" if layer else str(message["status"])
                )
    except Exception:
        if not job.cancel_requested:
            raise
    return error, image_id


class _Cancelled(Exception):
    pass


def _tag_built(service: Ds01Service, caller: Caller, plan: _BuildPlan, image_id: str) -> None:
    """Check the built image and tag it; a refused image is removed again."""
    runtime = service.runtime
    image = runtime.local_image(image_id)
    if image is None:
        raise NotFound(f"The built image {image_id[:19]} vanished before it could be tagged.")
    foreign = foreign_labels(image.labels, L.IMAGE_OWNER, caller.name, IMAGE_DECLARED_LABELS)
    if foreign or image.owner() != caller.name:
        runtime.remove_image(image_id)
        raise PermissionDenied(
            f"The image carries labels that only ds01 may set ({', '.join(foreign)}), from "
            "a LABEL line of the Dockerfile or from its base image. Remove them; nothing was "
            "tagged."
        )
    target = plan.target
    with _TAG_LOCK:
        _check_target(service, service.config(), caller, target)
        previous = runtime.local_image(target.reference)
        runtime.tag_image(image_id, target.repository, target.tag)
    if previous is not None and previous.id and previous.id != image.id:
        left = runtime.local_image(previous.id)
        if left is not None and not left.tags:  # the old build, now untagged: not kept
            runtime.remove_image(previous.id)


def _build_event(
    service: Ds01Service,
    caller: Caller,
    plan: _BuildPlan,
    started: float,
    *,
    error: str | None = None,
    image_id: str | None = None,
) -> None:
    details: dict[str, object] = {
        "tag": plan.target.reference,
        "context": str(plan.context),
        "dockerfile": plan.dockerfile,
        "seconds": round(time.monotonic() - started, 1),
        "cpus": plan.limits.cpus,
        "memory": format_bytes(plan.limits.memory_bytes) if plan.limits.memory_bytes else None,
    }
    _job_event(service, caller, "image.build", plan.target.reference, details, error, image_id)


def _job_event(
    service: Ds01Service,
    caller: Caller,
    action: str,
    reference: str,
    details: dict[str, object],
    error: str | None,
    image_id: str | None,
) -> None:
    """The event of a finished build or pull: its ``details`` with the image or the error."""
    if image_id:
        details["image_id"] = image_id
    if error:
        details["error"] = error
    service.events.emit(
        action,
        user=caller.name,
        resource=f"image/{reference}",
        details=details,
        outcome="failure" if error else "success",
    )


# -- pulls -------------------------------------------------------------------------------------


def start_pull(
    service: Ds01Service, caller: Caller, request: api.ImagePullRequest
) -> api.ImageJobInfo:
    """Pull a registry entry's image or a reference the policy allows, in the background."""
    resource = f"image/{request.image[:200]}"
    jobs = jobs_of(service)
    try:
        registry = service.config().images
        entry = registry.find(request.image)
        reference = entry.image if entry is not None else validate_image_reference(request.image)
        resource = f"image/{reference}"
        if not registry.allows_reference(reference):
            raise PermissionDenied(
                f"{request.image} is not in the image registry and not allowed by images.yaml, "
                "so it cannot be pulled here. `image-list --catalog` shows what can; ask an "
                "admin to add it."
            )
        job = jobs.start(
            "pull",
            caller.name,
            caller.uid,
            reference,
            _now(service),
            lambda job: _run_pull(service, caller, job, reference),
        )
    except Ds01Error as exc:
        _refused(service, caller, "image.pull", resource, exc)
        raise
    return job.info()


def _run_pull(service: Ds01Service, caller: Caller, job: ImageJob, reference: str) -> None:
    jobs = jobs_of(service)
    started = time.monotonic()
    error: str | None = None
    image_id: str | None = None
    try:
        for message in service.runtime.pull_image(reference):
            if message.get("error"):
                error = str(message["error"]).strip()
                continue
            status, layer = message.get("status"), message.get("id")
            if not status:
                continue
            if message.get("progress"):
                jobs.update(job, progress=f"{layer}: {status} {message['progress']}")
            else:
                jobs.add_line(job, f"{layer}: {status}" if layer else str(status))
        if error is None:
            image = service.runtime.local_image(reference)
            image_id = image.id if image is not None else None
            if image_id is None:
                error = "Docker reported no error, but the image is not here."
    except Ds01Error as exc:
        error = exc.message
    details: dict[str, object] = {"seconds": round(time.monotonic() - started, 1)}
    _job_event(service, caller, "image.pull", reference, details, error, image_id)
    if error:
        jobs.finish(job, "failed", f"Pulling {reference} failed: {error}", _now(service))
    else:
        jobs.finish(job, "succeeded", f"Pulled {reference}.", _now(service), image_id=image_id)


# -- following and cancelling jobs -------------------------------------------------------------


def _since(text: str | None) -> int:
    if text is None or text == "":
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise InvalidInput(f"since must be a line number (0 or more), got {text[:20]!r}.")
    return int(text)


def _owned_job(
    service: Ds01Service, caller: Caller, kind: JobKind, job_id: str, verb: str
) -> ImageJob:
    job = jobs_of(service).get(job_id[:64])
    if job is None or job.kind != kind:
        raise NotFound(f"No image {kind} {job_id[:64]!r} (finished ones are kept for an hour).")
    if job.uid != caller.uid and not caller.is_admin:
        raise service.deny(
            caller,
            f"image-{kind}/{job.id}",
            f"Image {kind} {job.id} is not yours; you may not {verb} it.",
        )
    return job


def follow(
    service: Ds01Service,
    caller: Caller,
    kind: JobKind,
    job_id: str,
    wait_seconds: float,
    since: str | None,
) -> api.ImageJobInfo:
    """A job's output from line ``since``, once there is some (or it ended), waiting at
    most ``wait_seconds``. Only its owner and admins may read it."""
    job = _owned_job(service, caller, kind, job_id, "follow")
    return jobs_of(service).wait(job, _since(since), wait_seconds)


def cancel_build(service: Ds01Service, caller: Caller, job_id: str) -> api.ImageJobInfo:
    """Stop a running build (its owner or an admin); Docker removes what it made so far."""
    job = _owned_job(service, caller, "build", job_id, "cancel")
    if not jobs_of(service).cancel(job, caller.name):
        raise Conflict(
            f"Build {job.id} is {job.state} already; only running ones can be cancelled."
        )
    return job.info(job.total_lines)


# -- removal -----------------------------------------------------------------------------------


def tag(service: Ds01Service, caller: Caller, source: str, name: str, tag: str | None) -> str:
    """Tag the caller's own image ``source`` as ``<namespace>/<name>:<tag>`` (``docker
    tag`` through the Docker API door); the new reference. Never a registry image's
    reference nor another user's tag (as a build's).

    Raises:
        NotFound: ``source`` is not an image built for the caller.
        PermissionDenied: the target is a registry image's or someone else's.
    """
    runtime = service.runtime
    target = build_target(caller.name, caller.uid, name, tag)
    try:
        image = runtime.local_image(source)
        if image is None or image.owner() != caller.name:
            raise NotFound(f"No such image: {source}")
        with _TAG_LOCK:
            _check_target(service, service.config(), caller, target)
            runtime.tag_image(image.id, target.repository, target.tag)
    except Ds01Error as exc:
        _refused(service, caller, "image.tag", f"image/{target.reference}", exc)
        raise
    service.events.emit(
        "image.tag",
        user=caller.name,
        resource=f"image/{target.reference}",
        details={"image_id": image.id, "source": source[:200]},
    )
    return target.reference


def remove(
    service: Ds01Service, caller: Caller, reference: str, *, force: bool = False
) -> api.ImageRemoved:
    """Remove (untag) an image: the caller's own (built or committed for them, or a
    reference in their namespace, such as a ``docker load``'s tag); admins any, registry
    images with ``force``."""
    resource = f"image/{reference[:200]}"
    runtime = service.runtime
    try:
        registry = service.config().images
        entry = registry.find(reference)
        ref = entry.image if entry is not None else validate_image_reference(reference)
        resource = f"image/{ref}"
        image = runtime.local_image(ref)
        if image is None:
            raise NotFound(f"No image {ref} on this machine. `image-list` shows yours.")
        if (
            not caller.is_admin
            and image.owner() != caller.name
            and not owns_reference(caller.name, caller.uid, ref)
        ):
            raise PermissionDenied(
                f"{ref} is not one of your images; you may remove only images built for you "
                "(`image-list` marks them)."
            )
        if registry.registry_image(ref) and not force:
            raise Conflict(
                f"{ref} is a registry image (images.yaml) that users rely on; remove it with "
                "--force if you mean it."
            )
        tag = with_default_tag(ref)
        if len(image.tags) <= 1 or tag not in image.tags:  # the image itself would go
            users = runtime.containers_of_image(image.id)
            if users:
                names = [
                    f"{c.name} (yours)"
                    if c.uid == caller.uid
                    else f"{c.name} of {c.user or 'another user'}"
                    for c in users
                ]
                raise Conflict(
                    f"{ref} is in use by container(s) {', '.join(names)}. Remove them first "
                    "(`container-remove NAME`), then the image."
                )
        runtime.delete_image(ref)
    except Ds01Error as exc:
        _refused(service, caller, "image.remove", resource, exc)
        raise
    service.events.emit(
        "image.remove",
        user=caller.name,
        resource=f"image/{ref}",
        details={"image_id": image.id, "owner": image.owner(), "force": force},
    )
    return api.ImageRemoved(image=ref, id=image.id, message=f"Removed {ref}.")


__all__ = [
    "build_limits",
    "cancel_build",
    "follow",
    "listing",
    "read_dockerfile",
    "remove",
    "start_archive_build",
    "start_build",
    "start_pull",
    "tag",
]
