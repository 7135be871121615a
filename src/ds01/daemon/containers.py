"""``ContainerOps``: start, stop, rename, remove and retire a container, by a user or by
ds01d.

A start checks again what a create checked (totals changed since, the runtime left), gets
devices again for a container whose devices were released (``Reacquire``; queued when none
are free and the caller asks to), writes the owner's totals on its cgroup parent and lets
``Launcher`` start it. A remove takes with it what the container leaves: its bind staging,
its kept image, its devices, an emptied cgroup parent and the owner's network once it was
their last container; a kept image whose container was removed behind ds01d's back is
removed later (``remove_unused_kept_images``, from the lifecycle loop).

State: when each stopped container stopped (asked of Docker once per stop). Locks: a start
takes the allocation lock around its checks and the start itself; stop and remove need none
(freeing never makes two containers share a device: ``ds01.daemon.context``); the cleanup
after a remove takes it. Calls: the context, its ``Gatekeepers`` (``Access``,
``LimitsEnforcement``, ``Launcher``, ``QueueDesk``: those of ``Creation``) and ``Reacquire``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import TypedDict

from ds01.config.resolve import ResolvedAggregate
from ds01.core.slurm_job import STOP_NOTES, StopCause
from ds01.daemon import schemas as api
from ds01.daemon.access import devices_details, resource_of
from ds01.daemon.context import DaemonContext
from ds01.daemon.creation import Gatekeepers
from ds01.daemon.identity import Caller
from ds01.daemon.limits_enforcement import own_parent, record_parent
from ds01.daemon.networks import network_name
from ds01.daemon.prepared import Queued
from ds01.daemon.queue_desk import release_devices
from ds01.daemon.reacquire import Reacquire, kept_run_options
from ds01.daemon.reservations import due_back
from ds01.daemon.slurm_jobs import note_on_job
from ds01.daemon.views import container_info
from ds01.errors import Conflict, Ds01Error, NoCapacity, PolicyError
from ds01.model import labels as L
from ds01.model.names import validate_container_name
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser, user_by_name

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 10


class StartOptions(TypedDict, total=False):
    """The keyword options of ``ContainerOps.start``, for the callers that pass them on."""

    user: str | None
    queue: bool
    borrow: bool
    record: ContainerRecord | None


class ContainerOps:
    """Starts, stops, removes and retires containers (see the module docstring)."""

    def __init__(self, context: DaemonContext, gates: Gatekeepers, reacquire: Reacquire) -> None:
        self.context = context
        self.gates = gates
        self.reacquire = reacquire
        self._stopped_since: dict[str, datetime | None] = {}

    def start(
        self,
        caller: Caller,
        name: str,
        *,
        user: str | None = None,
        queue: bool = False,
        borrow: bool = False,
        record: ContainerRecord | None = None,
    ) -> api.ContainerInfo | Queued:
        """Takes the allocation lock: start a container. One whose devices were released
        gets devices again first (above quota when ``borrow`` asks and borrowing allows:
        ``Reacquire``); if none are free it is queued when ``queue`` is set.

        ``record``: the container ``name`` names as Docker listed it just now (a create
        that starts what it made for ``caller``), instead of looking it up again."""
        ctx = self.context
        if record is None:
            record = self.gates.access.target(caller, name, user, "start")
        if record.status == "running":
            return container_info(record).model_copy(update={"already": True})
        owner = caller.user if record.uid == caller.uid else user_by_name(record.user)
        if record.id in ctx.store.released():  # refuse before it gets devices again
            self.gates.launcher.check_mounts(caller, owner, record)
        aggregate = ctx.aggregate_for(owner)
        with ctx.allocation_lock:
            queued = self._admit_start(
                caller, owner, record, aggregate, queue=queue, borrow=borrow
            )
            if isinstance(queued, Queued):
                return queued
            record = queued
            # The parent may be gone (a reboot) or hold old limits: runc would make a bare one.
            parent = own_parent(record)
            if parent is not None:  # a Slurm job's cgroup is Slurm's to limit
                self.gates.enforcement.enforce(record.user, parent, aggregate)
            self.gates.launcher.launch(caller, owner, record)
        ctx.events.emit("container.start", user=caller.name, resource=resource_of(record))
        if record.ports:  # Docker chose host ports only now
            record = ctx.runtime.find_managed(record.docker_name) or record
        return container_info(record).model_copy(update={"status": "running"})

    def _admit_start(
        self,
        caller: Caller,
        owner: UnixUser,
        record: ContainerRecord,
        aggregate: ResolvedAggregate,
        *,
        queue: bool,
        borrow: bool = False,
    ) -> ContainerRecord | Queued:
        """Under the allocation lock: the checks a start passes (the record with its devices
        again, if they were released), or its place in the queue. Refusals are logged."""
        if record.status == "running":
            return record
        ctx = self.context
        try:
            self.gates.enforcement.check_can_start(record, aggregate)
            self.gates.enforcement.check_runtime_left(record, owner)
            if (
                record.id not in ctx.store.released()
                and (why := due_back(ctx, owner, record)) is not None
            ):  # the devices of an ended reservation, beyond quota: back first
                release_devices(ctx, record, ctx.now(), why)
            if record.id in ctx.store.released():
                record = self.reacquire.reacquire_now(owner, record, borrow=borrow)
        except NoCapacity as exc:
            if not queue:
                ctx.log_refusal(caller, "container.start", resource_of(record), exc)
                raise
            try:
                return self.gates.queue.enqueue_start(owner, record, exc, via=caller.via)
            except PolicyError as refusal:
                ctx.log_refusal(caller, "container.start", resource_of(record), refusal)
                raise
        except PolicyError as exc:
            ctx.log_refusal(caller, "container.start", resource_of(record), exc)
            raise
        return record

    def stop(self, caller: Caller, name: str, *, user: str | None = None) -> api.ContainerInfo:
        record = self.gates.access.target(caller, name, user, "stop")
        if record.status != "running":
            return container_info(record).model_copy(update={"status": "stopped", "already": True})
        ctx = self.context
        ctx.runtime.stop(record.docker_name, timeout_seconds=STOP_TIMEOUT_SECONDS)
        ctx.ledger.refresh(record.id)
        ctx.events.emit("container.stop", user=caller.name, resource=resource_of(record))
        ctx.queue_changed()
        return container_info(record).model_copy(update={"status": "stopped"})

    def remove(
        self, caller: Caller, name: str, *, user: str | None = None, force: bool = False
    ) -> api.ContainerInfo:
        record = self.gates.access.target(caller, name, user, "remove")
        if record.status == "running" and not force:
            raise Conflict(
                f"Container {record.name!r} is running. Stop it first with "
                f"`container-stop {record.name}`, or remove it anyway with --force."
            )
        self._remove_record(record, caller.name, force=force, details={"force": force})
        return container_info(record).model_copy(update={"status": "removed"})

    def rename(self, caller: Caller, name: str, new_name: str) -> api.ContainerInfo:
        """Takes the allocation lock: give the caller's container ``name`` (in any state) the
        ds01 name ``new_name`` (its Docker name becomes ``{new_name}._.{uid}``, which is where
        ds01 reads a container's name from: ``ds01.model.labels.name_of``). Its bind staging
        stays (the key is in its bind sources); admins' exemptions of ``name`` move to
        ``new_name`` with it; its alias on the owner's network follows. Docker keeps a
        container's aliases through a rename, so the alias moves by attaching it to its
        network again: a running (or paused) container gets a new endpoint there (its open
        connections over that network end; a host port Docker chose may change).

        Raises:
            InvalidInput: ``new_name`` is not a container name.
            Conflict: the owner has a container of that name, or the queue names either.
        """
        record = self.gates.access.target(caller, name, None, "rename")
        try:
            new = validate_container_name(new_name)
        except PolicyError as exc:
            self.context.log_refusal(caller, "container.rename", resource_of(record), exc)
            raise
        ctx = self.context
        docker_name = L.container_name(new, record.uid)
        moved: list[str] = []
        renamed = done = False
        try:
            with ctx.allocation_lock:  # a create of ``new`` waits for the name to be taken
                taken = ctx.runtime.find_managed(docker_name)
                refusal = None
                if taken is not None and taken.id != record.id:
                    refusal = Conflict(
                        f'Conflict. The container name "/{new}" is already in use by container '
                        f'"{taken.id}". You have to remove (or rename) that container to be able '
                        "to reuse that name."
                    )
                elif any(  # the queue names containers: a start of the old, a create of the new
                    q.uid == record.uid
                    and (q.kind, q.container) in (("start", record.name), ("create", new))
                    for q in ctx.store.queued("waiting")
                ):
                    refusal = Conflict(
                        f"The GPU queue holds a request for {record.name!r} or {new!r}: cancel "
                        "it (`ds01 queue cancel ID`) or wait for it, then rename."
                    )
                if refusal is not None:
                    ctx.log_refusal(caller, "container.rename", resource_of(record), refusal)
                    raise refusal
                if taken is None:
                    network = network_name(record.uid)
                    # Its aliases other than its name (a compose service's, --network-alias).
                    extra = kept_run_options(record, ctx.runtime.inspect(record.docker_name))
                    ctx.runtime.rename(record.docker_name, docker_name)
                    renamed = True
                    moved = ctx.store.move_exemptions(record.user, record.name, new)
                    if network in record.networks:
                        ctx.runtime.realias(docker_name, network, (new, *extra.aliases))
                    ctx.ledger.refresh(record.id)
            done = True
        finally:
            if renamed or done:  # a rename Docker made is audited even if a step after it failed
                ctx.events.emit(
                    "container.rename",
                    user=caller.name,
                    resource=resource_of(record),
                    details={
                        "from": record.name,
                        "to": new,
                        "docker_name": docker_name,
                        "status": record.status,
                        "exemptions": moved,
                    },
                    outcome="success" if done else "failure",
                )
        return container_info(record).model_copy(update={"name": new, "docker_name": docker_name})

    def retire(self, caller: Caller, name: str, request: api.RetireRequest) -> api.RetireResult:
        """Remove a container for good, freeing its devices at once; with ``keep_as``, first
        keep its filesystem (what the user installed) as an image of the owner's."""
        record = self.gates.access.target(caller, name, request.user, "retire")
        kept = None
        if request.keep_as:
            kept = self._keep_as_image(caller, record, request.keep_as)
        self._remove_record(
            record, caller.name, force=True, details={"retired": True, "kept_as": kept}
        )
        info = container_info(record).model_copy(update={"status": "removed"})
        return api.RetireResult(container=info, kept_image=kept)

    def commit(self, caller: Caller, name: str, keep_as: str) -> str:
        """Commit the caller's container ``name`` as ``keep_as`` (``NAME[:TAG]``) into its
        owner's namespace, labelled theirs (``docker commit`` through the Docker API door);
        the image's reference. Refused as ``retire --keep-as`` refuses its name."""
        record = self.gates.access.target(caller, name, None, "commit")
        return self._keep_as_image(caller, record, keep_as)

    def _keep_as_image(self, caller: Caller, record: ContainerRecord, keep_as: str) -> str:
        """Commit ``record`` into its owner's namespace, labelled theirs, its ds01 labels
        emptied (an image claims nothing of a container's)."""
        ctx = self.context
        name, _, tag = keep_as.partition(":")
        # Here, not at the top: the image rules (and the Dockerfile bases) stay off ds01d's
        # start, which does not commit.
        from ds01.core.image_build import build_target

        target = build_target(record.user, record.uid, name, tag or None)
        existing = ctx.runtime.local_image(target.reference)
        if ctx.config().images.registry_image(target.reference) or (
            existing is not None and existing.owner() != record.user
        ):
            raise ctx.deny(
                caller,
                resource_of(record),
                f"{target.reference} is a registry image or not one of {record.user}'s; "
                "keep it under another name.",
            )
        # What the image serves (ds01.jupyter.port) stays; what was this container's goes.
        emptied = {
            k: ""
            for k in record.labels
            if k.startswith((L.PREFIX, L.AIME_MLC)) and k != L.JUPYTER_PORT
        }
        reference = ctx.runtime.commit(
            record.docker_name,
            target.repository,
            target.tag,
            labels={**emptied, L.IMAGE_OWNER: record.user},
        )
        ctx.events.emit(
            "image.keep",
            user=caller.name,
            resource=f"image/{reference}",
            details={"container": record.name, "owner": record.user},
        )
        return reference

    def remove_by_daemon(self, record: ContainerRecord, *, reason: str) -> None:
        """Remove a container for the lifecycle's cleanup (``cleanup.orphan``)."""
        self._remove_record(record, "ds01d", force=True, details={"reason": reason})
        self.context.events.emit(
            "cleanup.orphan",
            user=record.user,
            resource=resource_of(record),
            details={"reason": reason},
        )

    def stop_by_daemon(self, record: ContainerRecord, *, reason: str, cause: StopCause) -> None:
        """Stop a container for one of ds01's rules (``cause``: the idle or runtime limit, a
        reservation, a reclaim, the disk limit). A Slurm job's container: its job's
        ``AdminComment`` says why first (``slurm_jobs.note_on_job``)."""
        ctx = self.context
        note_on_job(record, STOP_NOTES[cause], reason)
        ctx.runtime.stop(record.docker_name, timeout_seconds=STOP_TIMEOUT_SECONDS)
        ctx.ledger.refresh(record.id)
        ctx.events.emit(
            "container.stop", user="ds01d", resource=resource_of(record), details={"reason": reason}
        )
        ctx.queue_changed()

    def _remove_record(
        self, record: ContainerRecord, actor: str, *, force: bool, details: dict[str, object]
    ) -> None:
        """Remove ``record`` with what it leaves: devices, kept image, empty cgroup parent."""
        ctx = self.context
        # No lock needed: freeing devices can never make two containers share one.
        released = record.id in ctx.store.released()
        ctx.runtime.remove(record.docker_name, force=force)
        ctx.ledger.forget(record.id)
        for key in ctx.staging.keys_of(record.bind_sources):
            ctx.staging.unstage(key)
        if record.labels.get(L.KEPT_IMAGE):
            ctx.runtime.remove_image(record.labels[L.KEPT_IMAGE])
        ctx.events.emit(
            "container.remove", user=actor, resource=resource_of(record), details=details
        )
        if record.gpus and not released:
            ctx.events.emit(
                "gpu.release",
                user=actor,
                resource=resource_of(record),
                details=devices_details(record.gpus, record.gpu_equivalents),
            )
        parent = own_parent(record)
        if parent is not None:
            self.gates.enforcement.remove_parent_if_unused(parent)
        else:  # a Slurm job's cgroup: Slurm removes its own; Docker made it in the others
            job_cgroup = record_parent(record)
            user_cgroup = job_cgroup.rsplit("/", 1)[0] + "/"
            # Another container of the owner's job(s) here keeps their uid_ cgroup: its start
            # (runc's mkdir of the chain) must not find it gone.
            shared = any(
                r.id != record.id and r.labels.get(L.SLURM_CGROUP, "").startswith(user_cgroup)
                for r in ctx.records()
            )
            ctx.cgroups.remove_job_cgroup(job_cgroup, with_parent=not shared)
        self.release_networks_if_unused([record.uid])
        ctx.store.unrelease([record.id])
        self._stopped_since.pop(record.id, None)
        ctx.queue_changed()

    def release_networks_if_unused(self, uids: Collection[int]) -> None:
        """Takes the allocation lock: remove the networks of the users ``uids`` once their
        last container is gone and a while has passed (``UserNetworks.release_if_unused``).
        Fails soft."""
        ctx = self.context
        with ctx.allocation_lock:
            try:
                in_use = {r.uid for r in ctx.records()}
            except Ds01Error as exc:
                log.warning("networks of uids %s left for the next try: %s", uids, exc.message)
                return
            for uid in uids:
                ctx.networks.release_if_unused(uid, in_use)

    def remove_unused_kept_images(self) -> list[str]:
        """Takes the allocation lock: remove every commit kept for a re-created container
        (``ds01.kept_image``) that no managed container names any more (it was removed
        behind ds01d's back, with ``docker rm``); the tags removed. Under the lock, so a
        re-creation's commit is never taken before its new container names it. Fails soft."""
        ctx = self.context
        with ctx.allocation_lock:
            try:
                named = {r.labels.get(L.KEPT_IMAGE) for r in ctx.records()}
                unused = sorted(ctx.runtime.tags_in(L.KEPT_REPOSITORY_PREFIX) - named)
            except Ds01Error as exc:
                log.warning("kept images not looked at: %s", exc.message)
                return []
            for tag in unused:
                ctx.runtime.remove_image(tag)  # one a container still uses stays (Docker)
        if unused:
            log.info("removed %d kept image(s) of removed containers: %s", len(unused), unused)
        return unused

    def stopped_since(self, record: ContainerRecord) -> datetime | None:
        """When a stopped container stopped (Docker's ``FinishedAt``), asked once per stop."""
        if record.status != "stopped":
            self._stopped_since.pop(record.id, None)
            return None
        if record.id not in self._stopped_since:
            try:
                self._stopped_since[record.id] = self.context.runtime.finished_at(
                    record.docker_name
                )
            except Ds01Error:
                return None
        return self._stopped_since[record.id]


__all__ = ["STOP_TIMEOUT_SECONDS", "ContainerOps", "StartOptions"]
