"""``Access``: who is calling, whom a request is about, and which container it names.

Callers are always ``Caller`` objects built from kernel credentials; a user may act on
their own containers only, admins (root or the configured admin group) on everyone's. A
hub identity (``hub:`` in resource-limits.yaml) may name a user it acts for: the caller is
then that user with no admin rights (``Caller.via`` names the hub), so the hub can do
nothing the user could not; a request naming a user from anyone else is refused, and so is
one naming anyone but an ordinary user (root, a system account below ``UID_MIN`` of
/etc/login.defs, an admin, a hub identity).
Every refusal is logged (``DaemonContext.log_refusal``/``deny``) before it is raised.
``resource_of`` and ``devices_details`` say what the collaborators' events name: the
container, and the devices it took or gave back.

State: none. Locks: none taken; callable with or without the allocation lock. Calls: the
context (configuration, ``runtime.find_managed``, the events).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction

from ds01.config.resolve import is_admin
from ds01.core.allocation import equivalents_to_float
from ds01.daemon import schemas as api
from ds01.daemon.context import DaemonContext
from ds01.daemon.identity import Caller
from ds01.errors import InvalidInput, NotFound, PermissionDenied, PolicyError
from ds01.model import labels as L
from ds01.model.names import validate_container_name
from ds01.model.text import shown
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.identity import (
    PeerCredentials,
    UnixUser,
    ordinary_uid_min,
    user_by_name,
    user_by_uid,
)

DOCKER_ID_RE = re.compile(r"^[0-9a-f]{12,64}\Z")  # a Docker id or its (12+ digit) prefix


def resource_of(record: ContainerRecord) -> str:
    """The resource an event about ``record`` names."""
    return f"container/{record.docker_name}"


def devices_details(
    devices: Iterable[str], gpu_equivalents: Fraction, **more: object
) -> dict[str, object]:
    """The details of a ``gpu.allocate`` or ``gpu.release`` event: the devices, what they
    count for in the owner's quota, and ``more``."""
    details: dict[str, object] = {
        "devices": list(devices),
        "gpu_equivalents": equivalents_to_float(gpu_equivalents),
    }
    return details | more


class Access:
    """Identity and targets of requests (see the module docstring for the contract)."""

    def __init__(self, context: DaemonContext) -> None:
        self.context = context

    def caller(self, creds: PeerCredentials, on_behalf_of: str | None = None) -> Caller:
        """Who calls: the peer's account, or the user a hub identity acts for."""
        user = user_by_uid(creds.uid)
        admin = is_admin(self.context.config().limits, user.groups, user.uid)
        own = Caller(user=user, pid=creds.pid, is_admin=admin)
        return own if on_behalf_of is None else self._acting_for(own, on_behalf_of)

    def _acting_for(self, hub: Caller, name: str) -> Caller:
        """The caller ``hub`` acts for; refused (and logged as the hub) unless ``hub`` is a
        hub identity and ``name`` an ordinary user (``_hub_may_not_act_for``)."""
        resource = f"user/{name[:80]}"
        limits = self.context.config().limits
        if not limits.hub.admits(hub.name, hub.uid, hub.user.groups):
            raise self.context.deny(
                hub,
                resource,
                f"{hub.name} may not act on behalf of another user: only the accounts under "
                "hub: in resource-limits.yaml may.",
            )
        try:
            user = user_by_name(name)
        except NotFound as exc:
            self.context.log_refusal(hub, "auth.denied", resource, exc)
            raise
        reason = self._hub_may_not_act_for(user)
        if reason is not None:
            raise self.context.deny(hub, resource, f"A hub may not act on behalf of {reason}.")
        return Caller(user=user, pid=hub.pid, is_admin=False, via=hub.name)

    def _hub_may_not_act_for(self, user: UnixUser) -> str | None:
        """Why a hub may not act for ``user``, or ``None`` for an ordinary user. A hub
        serves ordinary users only, so a hub that is taken over reaches no more than their
        accounts: never root or a system account (uid below this machine's ``UID_MIN``), whose
        files are the system's; never an admin, whose containers and workspace may hold what
        no user's do; never a hub identity, so no hub works through another."""
        limits = self.context.config().limits
        if user.uid == 0:
            return "root"
        uid_min = ordinary_uid_min()
        if user.uid < uid_min:
            return f"{user.name}, a system account (uid {user.uid}, below UID_MIN {uid_min})"
        if is_admin(limits, user.groups, user.uid):
            return f"{user.name}, a ds01 admin (group {limits.admin_group})"
        if limits.hub.admits(user.name, user.uid, user.groups):
            return f"{user.name}, a hub identity"
        return None

    def whoami(self, caller: Caller) -> api.WhoAmI:
        return api.WhoAmI(
            user=caller.name,
            uid=caller.uid,
            groups=list(caller.user.groups),
            is_admin=caller.is_admin,
            via=caller.via,
        )

    def subject(self, caller: Caller, user: str | None) -> UnixUser:
        """The user a request is about: the caller, or (admins only) someone else."""
        if user is None or user == caller.name:
            return caller.user
        if not caller.is_admin:
            raise self.context.deny(
                caller,
                f"user/{user}",
                f"Only admins may act for another user ({user}).",
            )
        return user_by_name(user)

    def refused(self, caller: Caller, resource: str, exc: PolicyError) -> None:
        """Log a refused create (``auth.denied`` for a permission, else ``container.create``)."""
        action = "auth.denied" if isinstance(exc, PermissionDenied) else "container.create"
        self.context.log_refusal(caller, action, resource, exc)

    def target(self, caller: Caller, name: str, user: str | None, verb: str) -> ContainerRecord:
        """Find the container a request names and check the caller may act on it.

        ``name`` is the user's name for it, the Docker name ``{name}._.{uid}``, or a Docker
        id (or id prefix, 12+ hex digits). Every refusal is logged.
        """
        try:
            return self._find_target(caller, name, user, verb)
        except (InvalidInput, NotFound) as exc:
            self.context.log_refusal(caller, f"container.{verb}", f"container/{name[:80]}", exc)
            raise

    def target_to_read(
        self, caller: Caller, name: str, user: str | None, verb: str
    ) -> ContainerRecord:
        """The container a read-only request (``logs``, ``stats``) names: the caller's own
        (admins: USER's), found and refused exactly as for ``container-stop``; devices given
        back while it was stopped are not shown as held."""
        return self.context.without_released([self.target(caller, name, user, verb)])[0]

    def target_for_terminal(self, caller: Caller, name: str, user: str | None) -> ContainerRecord:
        """The container ``container-open`` may enter: the caller's own (admins: USER's)."""
        return self.target(caller, name, user, "open")

    def _named(
        self, caller: Caller, name: str, user: str | None
    ) -> tuple[str, int, ContainerRecord | None]:
        """The Docker name, owner uid and (when looked up already) record ``name`` means."""
        runtime = self.context.runtime
        if L.CONTAINER_NAME_SEPARATOR in name:
            base, _, uid_text = name.rpartition(L.CONTAINER_NAME_SEPARATOR)
            validate_container_name(base)
            if not (uid_text.isascii() and uid_text.isdigit()):
                raise InvalidInput(f"Invalid container reference {shown(name)}.")
            if user is not None:
                raise InvalidInput("Give either a full container name or --user, not both.")
            return name, int(uid_text), runtime.find_managed(name)
        if DOCKER_ID_RE.match(name) and user is None:
            record = runtime.find_managed(L.container_name(name, caller.uid))
            if record is None:
                record = runtime.find_managed_by_id(name)
            if record is None:
                return name, caller.uid, None
            return record.docker_name, record.uid, record
        validate_container_name(name)
        owner_uid = self.subject(caller, user).uid
        return L.container_name(name, owner_uid), owner_uid, None

    def _find_target(
        self, caller: Caller, name: str, user: str | None, verb: str
    ) -> ContainerRecord:
        docker_name, owner_uid, record = self._named(caller, name, user)
        if owner_uid != caller.uid and not caller.is_admin:
            raise self.context.deny(
                caller,
                f"container/{docker_name}",
                f"You may not {verb} {shown(name)}: it belongs to another user.",
                verb=verb,
            )
        record = record or self.context.runtime.find_managed(docker_name)
        if record is not None:
            return record
        raise NotFound(
            f"No container named {shown(name)}"
            + (f" for user {user}" if user else "")
            + ". `container-list` shows yours."
        )


__all__ = ["DOCKER_ID_RE", "Access", "resource_of"]
