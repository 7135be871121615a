"""Admin commands served by ds01d: ``add-user``, ``remove-user`` and ``mig plan|apply``.

They change the configuration, users' directories, cgroups, containers and GPUs, so they
run in the daemon (as root, under its locks) and answer admins only; every refusal is
logged like any other (``auth.denied`` for non-admins, the action's own ``denied`` event
otherwise).

- **add-user** checks the Unix account (NSS), writes the user into ``resource-limits.yaml``
  with a targeted edit validated as the loader validates (``ds01.config.edit``), then
  prepares ``~USER/workspace`` (owned by the user) and writes the user's totals on their
  cgroup parent. The daemon reloads the configuration at once.
- **remove-user** cancels the user's queued requests, stops and removes their containers
  (freeing their GPUs), removes their configuration entries and exemptions, cancels their
  reservations not ended (``reservation.cancel``), and then, last because it can take long,
  optionally archives ``~USER/workspace`` into a tar.gz only root can read (sparse files
  stored as such), created through a descriptor of the ``--archive`` directory held since
  it was checked. It deletes no file of theirs:
  home and workspace stay until an admin deletes the account (``userdel -r``).
- **mig plan|apply** compares the GPUs with ``mig_layout`` in ``gpu-config.yaml``
  (``ds01.core.mig``) and changes, under the allocation lock, only GPUs none of whose
  devices a container holds.
"""

from __future__ import annotations

import gzip
import os
import stat
import threading
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from ds01.config.edit import LimitsEdit
from ds01.config.edit import add_user as edit_add_user
from ds01.config.edit import remove_user as edit_remove_user
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import parse_config
from ds01.config.resolve import groups_of, resolve_aggregate
from ds01.config.sections import account_name_checker
from ds01.core.allocation import describe_gpus, equivalents_to_float
from ds01.core.mig import GpuPlan, Layout, plan_mig
from ds01.daemon import queue_view, reservations
from ds01.daemon import schemas as api
from ds01.daemon.creation import DEFAULT_SLICE_GROUP
from ds01.daemon.identity import Caller
from ds01.daemon.launch import DEFAULT_WORKSPACE_DIR, existing_directory, make_user_directory
from ds01.daemon.limits_enforcement import aggregate_limits
from ds01.daemon.service import Ds01Service
from ds01.daemon.views import allocation_state
from ds01.errors import Conflict, Ds01Error, InvalidInput, NotFound, SystemFault
from ds01.files import replace_file
from ds01.paths import RESOURCE_LIMITS_FILE
from ds01.runtime.build_context import archive_as_user
from ds01.runtime.cgroups import CgroupError, user_slice_path
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import UnixUser, user_by_name
from ds01.runtime.store import ExemptionRecord, QueuedRequest, ReservationRecord

MigOutcome = Literal["applied", "unchanged", "refused", "failed", "pending_reset", "skipped"]

#: One edit of resource-limits.yaml at a time.
_CONFIG_LOCK = threading.Lock()
_check_user_name = account_name_checker("user")
_DEFAULT_LIMITS = ("ds01.config", "defaults/resource-limits.yaml")


def _require_admin(service: Ds01Service, caller: Caller, resource: str, what: str) -> None:
    if not caller.is_admin:
        raise service.deny(caller, resource, f"Only admins may {what}.")


def directories(service: Ds01Service, caller: Caller) -> api.DaemonDirectories:
    """This ds01d's directories (admins)."""
    _require_admin(service, caller, "admin/directories", "see ds01d's directories")
    paths = service.paths
    return api.DaemonDirectories(
        config_dir=str(paths.config_dir),
        state_dir=str(paths.state_dir),
        log_dir=str(paths.log_dir),
        socket=str(paths.socket),
    )


def _valid_name(name: str) -> str:
    try:
        return _check_user_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


# -- resource-limits.yaml -----------------------------------------------------------------------


def _limits_file(service: Ds01Service) -> tuple[Path, str, bool]:
    """The file, its text (the packaged skeleton when it does not exist) and whether it
    exists."""
    path = service.paths.config_dir / RESOURCE_LIMITS_FILE
    try:
        return path, path.read_text(encoding="utf-8"), True
    except FileNotFoundError:
        from importlib import resources

        package, name = _DEFAULT_LIMITS
        return path, resources.files(package).joinpath(name).read_text(encoding="utf-8"), False


def _write_limits(service: Ds01Service, path: Path, text: str, existed: bool) -> None:
    """Replace the file atomically, keeping its mode and owner, and reload at once."""
    if existed:
        st = path.stat()
        mode, owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode, owner = 0o644, (0, 0)
    replace_file(path, text, mode=mode, owner=owner)
    service.config()  # reloads it now (and writes changed totals on live cgroup parents)


# -- add-user -------------------------------------------------------------------------------------


def add_user(
    service: Ds01Service, caller: Caller, request: api.AddUserRequest
) -> api.AddUserResult:
    """Register a Unix user with ds01 (see the module docstring)."""
    resource = f"user/{request.user[:64]}"
    _require_admin(service, caller, resource, "add users")
    try:
        user = user_by_name(_valid_name(request.user))
        if user.uid == 0:
            raise InvalidInput("root is an admin of ds01 already; add other users.")
        with _CONFIG_LOCK:
            path, text, existed = _limits_file(service)
            current = parse_config(text, "resource-limits", str(path))
            already = request.group is not None and request.group in groups_of(
                current, user.name, user.groups
            )
            edit = (
                LimitsEdit(text=text, changes=())
                if already
                else edit_add_user(text, str(path), user.name, request.group)
            )
            if edit.changes and not request.dry_run:
                _write_limits(service, path, edit.text, existed)
    except Ds01Error as exc:
        service.log_refusal(caller, "user.add", resource, exc)
        raise
    changes = edit.changes
    limits = parse_config(edit.text, "resource-limits", str(path))
    groups = groups_of(limits, user.name, user.groups)
    actions = [f"{change} in {path}" for change in changes]
    notes: list[str] = []
    if already:
        notes.append(
            f"{user.name} is in group {request.group} already (through the Unix group "
            f"{limits.unix_group_of(request.group or '')}): nothing to write."
        )
    elif not changes:
        notes.append(f"{path} lists {user.name} already: nothing to write.")
    if not edit.comments_kept:
        notes.append(f"{path} was written anew: its comments could not be kept.")
    workspace = _prepare_workspace(user, request.dry_run, actions, notes)
    parent = _prepare_cgroup_parent(service, user, limits, request.dry_run, actions, notes)
    if not request.dry_run:
        service.events.emit(
            "user.add",
            user=caller.name,
            resource=f"user/{user.name}",
            details={
                "uid": user.uid,
                "group": request.group,
                "groups": list(groups),
                "config_changes": list(changes),
                "workspace": workspace,
                "cgroup_parent": parent,
            },
        )
    return api.AddUserResult(
        user=user.name,
        uid=user.uid,
        dry_run=request.dry_run,
        config_file=str(path),
        config_changes=list(changes),
        comments_kept=edit.comments_kept,
        groups=list(groups),
        workspace=workspace,
        cgroup_parent=parent,
        actions=actions,
        notes=notes,
    )


def _prepare_workspace(
    user: UnixUser, dry_run: bool, actions: list[str], notes: list[str]
) -> str | None:
    """``~USER/workspace``, created owned by the user if missing; never a home directory."""
    if not user.home.is_dir():
        notes.append(
            f"{user.name} has no home directory ({user.home}); ds01 creates none. Create it "
            f"(e.g. `mkhomedir_helper {user.name}`), then run add-user again for the workspace."
        )
        return None
    workspace = user.home / DEFAULT_WORKSPACE_DIR
    try:
        st = workspace.lstat()
    except FileNotFoundError:
        actions.append(f"create {workspace} (as {user.name}, mode 0755)")
        if not dry_run:
            try:
                make_user_directory(workspace, user)
            except Ds01Error as exc:
                notes.append(exc.message)
        return str(workspace)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != user.uid:
        notes.append(
            f"{workspace} is not a directory {user.name} owns: `container-create` will refuse "
            "it as their workspace until it is."
        )
    return str(workspace)


def _parent_of(limits: ResourceLimitsConfig, user: UnixUser) -> str:
    """The cgroup parent ``user``'s containers get under ``limits`` (as a create decides it:
    their first config group, or the group of users in none)."""
    groups = groups_of(limits, user.name, user.groups)
    return user_slice_path(groups[0] if groups else DEFAULT_SLICE_GROUP, user.name)


def _prepare_cgroup_parent(
    service: Ds01Service,
    user: UnixUser,
    limits: ResourceLimitsConfig,
    dry_run: bool,
    actions: list[str],
    notes: list[str],
) -> str:
    """The user's cgroup parent, with their totals (``aggregate:``) written on it."""
    parent = _parent_of(limits, user)
    aggregate = resolve_aggregate(limits, user.name, user.groups)
    if aggregate.unlimited:
        notes.append(
            f"No totals (aggregate:) apply to {user.name}: nothing to write on the cgroup "
            f"parent {parent}; Docker creates it with their first container."
        )
        return parent
    totals = ", ".join(f"{k} {v}" for k, v in aggregate.to_dict().items() if v is not None)
    actions.append(f"write {user.name}'s totals ({totals}) on the cgroup parent {parent}")
    if dry_run:
        return parent
    service.store.own_cgroup_parent(parent, service.now().isoformat())
    try:
        service.cgroups.apply(parent, aggregate_limits(aggregate), create=True)
    except CgroupError as exc:
        notes.append(f"The totals could not be written: {exc.message}")
        service.events.emit(
            "resource.aggregate",
            user=user.name,
            resource=f"cgroup{parent}",
            details={"limits": aggregate.to_dict(), "error": exc.message},
            outcome="failure",
        )
    return parent


# -- remove-user ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ArchiveDirectory:
    """``--archive``'s directory as checked: its path, for the admin's messages, and a
    descriptor of it, open from the check on, through which the archive is created; a
    directory renamed or swapped on the path meanwhile (in a parent others can write) is
    never the one written in."""

    path: Path
    fd: int

    def close(self) -> None:
        os.close(self.fd)


def _archive_directory(text: str, home: Path | None) -> _ArchiveDirectory:
    """``--archive DIR`` checked: an existing directory of root's that no one else can write,
    outside the user's home; the owner and mode checked are those of the directory opened
    (the caller closes it)."""
    real, _ = existing_directory(text, "--archive")
    if home is not None and real.is_relative_to(home.resolve()):
        raise InvalidInput(f"--archive {text} is inside the user's home; pick another place.")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:  # changed since it was resolved
        raise InvalidInput(f"--archive {text} cannot be used: {exc.strerror}.") from exc
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        os.close(fd)
        raise InvalidInput(
            f"--archive {text} must be a directory owned by root that no one else can write "
            "(the archive holds the user's files)."
        )
    return _ArchiveDirectory(real, fd)


def _write_archive(
    account: UnixUser, directory: _ArchiveDirectory, stamp: str
) -> tuple[Path, list[str]]:
    """The account's workspace as ``DIR/ds01-USER-workspace-STAMP.tar.gz`` (owner root, mode
    0600), created in the directory checked (by its descriptor), and what tar could not read
    in it.

    ``tar`` reads the workspace running as the user (``archive_as_user``), never ds01d as
    root: symbolic links are stored as links, and one swapped in while tar walks the tree
    leads only to what the user could read anyway. ds01d only compresses tar's output into
    the file it opened.
    """
    name = f"ds01-{account.name}-workspace-{stamp}.tar.gz"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=directory.fd)
    try:
        os.fchown(fd, 0, 0)
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as packed:
            unread = archive_as_user(account, account.home, DEFAULT_WORKSPACE_DIR, packed)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=directory.fd)
        raise
    return directory.path / name, unread


@dataclass(frozen=True)
class _Removal:
    """What taking user ``name`` out of ds01 touches, as found before any change."""

    name: str
    account: UnixUser | None  # None: the Unix account is gone already
    records: list[ContainerRecord]
    queued: list[QueuedRequest]
    exemptions: list[ExemptionRecord]
    reservations: list[ReservationRecord]  # theirs, not ended
    limits_path: Path
    preview: LimitsEdit
    parent: str | None  # the cgroup parent add-user may have prepared
    archive_into: _ArchiveDirectory | None  # where to archive their workspace (``--archive``)

    @property
    def workspace(self) -> Path | None:
        return self.account.home / DEFAULT_WORKSPACE_DIR if self.account is not None else None

    @property
    def workspace_is_dir(self) -> bool:
        workspace = self.workspace
        return workspace is not None and workspace.is_dir() and not workspace.is_symlink()


def remove_user(
    service: Ds01Service, caller: Caller, name: str, *, archive_dir: str | None, dry_run: bool
) -> api.RemoveUserResult:
    """Take a user out of ds01 (see the module docstring)."""
    resource = f"user/{name[:64]}"
    _require_admin(service, caller, resource, "remove users")
    try:
        removal = _removal(service, name, archive_dir)
    except Ds01Error as exc:
        service.log_refusal(caller, "user.remove", resource, exc)
        raise
    try:
        actions, notes = _removal_actions(removal)
        archive = None if dry_run else _carry_out_removal(service, caller, removal, notes)
    finally:
        if removal.archive_into is not None:
            removal.archive_into.close()
    records, account = removal.records, removal.account
    freed = sum((r.gpu_equivalents for r in records), Fraction(0))
    return api.RemoveUserResult(
        user=removal.name,
        dry_run=dry_run,
        containers=[r.name for r in records],
        freed_gpu_equivalents=equivalents_to_float(freed),
        cancelled_requests=[q.id for q in removal.queued],
        config_changes=list(removal.preview.changes),
        comments_kept=removal.preview.comments_kept,
        archive=str(archive) if archive else None,
        home=str(account.home) if account is not None else None,
        actions=actions,
        notes=notes,
    )


def _removal(service: Ds01Service, name: str, archive_dir: str | None) -> _Removal:
    """What removing ``name`` touches; ``Ds01Error`` when there is nothing of theirs or
    ``archive_dir`` cannot be used."""
    name = _valid_name(name)
    try:
        account: UnixUser | None = user_by_name(name)
    except NotFound:
        account = None
    records = [
        r
        for r in service.records()
        if r.user == name or (account is not None and r.uid == account.uid)
    ]
    queued = [q for q in service.store.queued() if q.user == name]
    exemptions = [e for e in service.store.exemptions() if e.user == name]
    now = service.now()
    booked = [
        r
        for r in service.store.reservations()
        if r.holder == name and datetime.fromisoformat(r.end) > now
    ]
    path, text, _ = _limits_file(service)
    preview = edit_remove_user(text, str(path), name)
    # The parent add-user may have prepared, from the configuration before the change.
    parent = (
        _parent_of(parse_config(text, "resource-limits", str(path)), account)
        if account is not None
        else None
    )
    if account is None and not (records or queued or exemptions or booked or preview.changes):
        raise NotFound(
            f"No user {name!r}: no account on this machine, and no container, queued "
            "request or configuration entry in ds01."
        )
    directory = None
    if archive_dir is not None:
        if account is None:
            raise InvalidInput(
                f"{name} has no account any more, so ds01 does not know their home: "
                "archive it by hand, or leave out --archive."
            )
        directory = _archive_directory(archive_dir, account.home)
    return _Removal(
        name, account, records, queued, exemptions, booked, path, preview, parent, directory
    )


def _removal_actions(removal: _Removal) -> tuple[list[str], list[str]]:
    """What a removal does, and the notes for the admin."""
    workspace, directory, name = removal.workspace, removal.archive_into, removal.name
    actions = [
        f"cancel queued request {q.id} ({q.container}: "
        f"{describe_gpus(q.whole_gpus, q.mig_profiles)})"
        for q in removal.queued
    ]
    actions += [f"stop and remove container {r.name} ({r.status})" for r in removal.records]
    actions += [f"{change} in {removal.limits_path}" for change in removal.preview.changes]
    actions += [f"revoke exemption {e.id}" for e in removal.exemptions]
    actions += [f"cancel reservation {r.id} (from {r.start})" for r in removal.reservations]
    notes: list[str] = []
    if directory is not None:
        if removal.workspace_is_dir:
            actions.append(f"archive {workspace} into {directory.path} (owner root, mode 0600)")
        else:
            notes.append(f"{workspace} is not a directory: nothing to archive.")
    account = removal.account
    if account is None:
        notes.append(f"{name} has no account on this machine any more.")
    else:
        notes.append(
            f"Nothing of {name}'s files is deleted: {account.home} (and its workspace) stays. "
            f"Delete the account and its home with `userdel -r {name}` when you are sure."
        )
    return actions, notes


def _carry_out_removal(
    service: Ds01Service, caller: Caller, removal: _Removal, notes: list[str]
) -> Path | None:
    """Do the removal (``notes`` gets what the admin should know); return the archive."""
    name = removal.name
    for entry in removal.queued:
        with suppress(Conflict, NotFound):  # it started or was cancelled meanwhile
            queue_view.cancel(service, caller, entry.id)
    for record in removal.records:
        with suppress(NotFound):  # gone meanwhile
            service.remove(caller, record.docker_name, force=True)
    # Their limits, exemptions, reservations and cgroup parent go before the archive, which
    # can take long (a workspace of terabytes): nothing of theirs lingers meanwhile.
    with _CONFIG_LOCK:
        path, text, existed = _limits_file(service)
        edit = edit_remove_user(text, str(path), name)
        if edit.changes:
            _write_limits(service, path, edit.text, existed)
    for exemption in removal.exemptions:
        service.store.remove_exemption(exemption.id)
    for booked in removal.reservations:
        with suppress(NotFound, InvalidInput):  # cancelled, or ended, meanwhile
            reservations.cancel(service, caller, booked.id)
    if removal.parent is not None:
        service.enforcement.remove_parent_if_unused(removal.parent)
    details: dict[str, Any] = {
        "containers": [r.name for r in removal.records],
        "cancelled": [q.id for q in removal.queued],
        "config_changes": list(edit.changes),
        "archive": None,
        "exemptions": [e.id for e in removal.exemptions],
        "reservations": [r.id for r in removal.reservations],
    }
    try:
        archive = _archive_workspace(service, removal, notes)
    except SystemFault as exc:  # all but the archive is done: say so in the log too
        details["error"] = exc.message
        service.events.emit(
            "user.remove", user=caller.name, resource=f"user/{name}", details=details,
            outcome="failure",
        )  # fmt: skip
        raise
    owned = service.runtime.owned_images(name)
    if owned:
        notes.append(
            f"{len(owned)} image(s) built for {name} are kept: `image-remove REF` (as an "
            "admin) removes them."
        )
    details["archive"] = str(archive) if archive else None
    service.events.emit("user.remove", user=caller.name, resource=f"user/{name}", details=details)
    return archive


def _archive_workspace(service: Ds01Service, removal: _Removal, notes: list[str]) -> Path | None:
    """The workspace archived where ``--archive`` said, if it asked and it is a directory;
    ``notes`` gets what the user's own tar could not read (left out of the archive)."""
    workspace, directory, account = removal.workspace, removal.archive_into, removal.account
    if directory is None or workspace is None or account is None or not removal.workspace_is_dir:
        return None
    stamp = service.now().strftime("%Y%m%dT%H%M%SZ")
    try:
        archive, unread = _write_archive(account, directory, stamp)
    except (Conflict, OSError) as exc:
        why = exc.message if isinstance(exc, Conflict) else f"{exc}."
        raise SystemFault(
            f"Could not archive {workspace} into {directory.path}: {why} The rest is done "
            f"({removal.name}'s containers, configuration entries, exemptions and "
            "reservations are gone); run remove-user again with --archive once it can be "
            "written."
        ) from exc
    if unread:
        shown = "\n  ".join(unread[:10]) + ("\n  …" if len(unread) > 10 else "")
        notes.append(
            f"{archive} holds what {account.name} could read in {workspace}; tar, running "
            f"as {account.name}, left out:\n  {shown}"
        )
    return archive


# -- MIG ------------------------------------------------------------------------------------------


def _layout_info(layout: Layout | None) -> api.MigLayoutInfo | None:
    if layout is None:
        return None
    return api.MigLayoutInfo(
        mig=layout.mig, profiles=list(layout.profiles), description=layout.describe()
    )


def _plan(service: Ds01Service) -> tuple[str, tuple[GpuPlan, ...]]:
    config = service.config()
    backend = service.backend
    inventory = backend.inventory()
    desired = {key: Layout.of(value) for key, value in config.gpus.mig_layout.items()}
    managed = [g for g in inventory.gpus if g.index in desired or g.uuid in desired]
    offered = {gpu.index: backend.mig_profiles(gpu) for gpu in managed}
    tables = {gpu.index: backend.mig_placements(gpu) for gpu in managed}
    held = allocation_state(service.records()).held()
    return inventory.backend, plan_mig(inventory, desired, held, offered, tables)


def _plan_response(backend: str, plans: tuple[GpuPlan, ...]) -> api.MigPlan:
    return api.MigPlan(
        backend=backend,
        gpus=[
            api.MigGpuPlan(
                key=p.key,
                gpu_index=p.gpu_index,
                gpu_uuid=p.gpu_uuid,
                model=p.model,
                current=_layout_info(p.current),
                desired=_layout_info(p.desired),
                status=p.status,
                reason=p.reason,
                steps=[s.describe() for s in p.steps],
                holders=list(p.holders),
            )
            for p in plans
        ],
    )


def mig_plan(service: Ds01Service, caller: Caller) -> api.MigPlan:
    """Per GPU: its layout now, the one ``mig_layout`` wants, and whether it can be applied."""
    _require_admin(service, caller, "admin/mig", "see the MIG plan")
    return _plan_response(*_plan(service))


def mig_apply(
    service: Ds01Service, caller: Caller, request: api.MigApplyRequest
) -> api.MigApplyResult:
    """Give every GPU (``request.gpus``: those) no container holds its desired layout."""
    _require_admin(service, caller, "admin/mig", "change MIG layouts")
    outcomes: list[api.MigGpuOutcome] = []
    changed = False
    with service.allocation_lock:  # no container can take a device of a GPU being changed
        backend_name, plans = _plan(service)
        known = {p.gpu_index for p in plans if p.gpu_index is not None}
        for index in sorted(set(request.gpus) - known):
            outcomes.append(
                api.MigGpuOutcome(
                    gpu_index=index,
                    gpu_uuid=None,
                    outcome="refused",
                    message=f"GPU {index}: there is no such GPU here.",
                    done=[],
                )
            )
        for plan in plans:
            if request.gpus and plan.gpu_index not in request.gpus:
                continue
            outcome = _apply_one(service, caller, plan, explicit=bool(request.gpus))
            if outcome is not None:
                changed = changed or bool(outcome.done)
                outcomes.append(outcome)
        after = _plan_response(*_plan(service))
    if changed:
        service.queue_changed()  # new devices may let a queued request start
    complete = all(o.outcome in ("applied", "unchanged", "skipped") for o in outcomes)
    return api.MigApplyResult(backend=backend_name, gpus=outcomes, complete=complete, plan=after)


def _apply_one(
    service: Ds01Service, caller: Caller, plan: GpuPlan, *, explicit: bool
) -> api.MigGpuOutcome | None:
    """Apply one GPU's plan, under the allocation lock; ``None`` for an unmanaged GPU that
    was not asked for by index."""
    name = f"GPU {plan.gpu_index if plan.gpu_index is not None else plan.key}"
    resource = f"gpu/{plan.gpu_uuid or plan.key}"

    def outcome(kind: MigOutcome, message: str, done: list[str] | None = None) -> api.MigGpuOutcome:
        return api.MigGpuOutcome(
            gpu_index=plan.gpu_index,
            gpu_uuid=plan.gpu_uuid,
            outcome=kind,
            message=message,
            done=done or [],
        )

    if plan.status == "unmanaged":
        return outcome("skipped", f"{name}: {plan.reason}.") if explicit else None
    if plan.status == "unchanged":
        return outcome("unchanged", f"{name}: {plan.reason}.")
    if plan.status != "apply":
        why = plan.reason if plan.status == "held" else f"not changed: {plan.reason}"
        refusal = Conflict(f"{name}: {why}.")
        service.log_refusal(caller, "gpu.mig_apply", resource, refusal)
        return outcome("refused", refusal.message)
    gpu = next(g for g in service.backend.inventory().gpus if g.uuid == plan.gpu_uuid)
    desired = plan.desired.describe() if plan.desired else "-"
    try:
        applied = service.backend.apply_mig(gpu, plan.steps)
    except SystemFault as exc:
        service.events.emit(
            "gpu.mig_apply",
            user=caller.name,
            resource=resource,
            details={"desired": desired, "error": exc.message},
            outcome="failure",
        )
        return outcome("failed", exc.message)
    service.events.emit(
        "gpu.mig_apply",
        user=caller.name,
        resource=resource,
        details={"desired": desired, "steps": list(applied.done), "pending": applied.pending_reset},
    )
    if applied.pending_reset:
        message = applied.message or f"{name}: waits for a GPU reset."
        return outcome("pending_reset", message, list(applied.done))
    return outcome("applied", f"{name}: now {desired}.", list(applied.done))


__all__ = ["add_user", "mig_apply", "mig_plan", "remove_user"]
