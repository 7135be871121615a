"""``CreateIntents``: the create intent of each create in progress, and its rollback.

A create intent is recorded before ``docker create`` (``record``) and removed once the
client is told (``confirm_create``): a crash in between rolls the container back at the
next start (``StartupReconciler``, which reports it with ``rolled_back``). A failed create
is undone at once (``undo_create``); if Docker stopped answering, its intent stays and the
undo waits until Docker is back (``settle_failed_creates``).

State: the request ids whose undo waits for Docker. Locks: ``record`` and ``undo_create``
run under the allocation lock (inside ``Creation``'s create); ``settle_failed_creates``
takes it; ``confirm_create`` and ``rolled_back`` need none. Calls: the context's store,
runtime, ledger, staging and audit log; no other collaborator.
"""

from __future__ import annotations

import logging

from ds01.daemon.context import DaemonContext
from ds01.errors import Ds01Error, StorageFault
from ds01.runtime.staging import staging_key
from ds01.runtime.store import CreateIntent

#: A create's name in ds01d's log, its rollback included.
log = logging.getLogger("ds01.daemon.creation")


class CreateIntents:
    """The create intents and their rollback (see the module docstring for the contract)."""

    def __init__(self, context: DaemonContext) -> None:
        self.context = context
        self._failed_creates: set[str] = set()  # request ids whose undo waits for Docker

    @property
    def undo_waits(self) -> bool:
        """Whether a failed create's undo waits for Docker (``settle_failed_creates``)."""
        return bool(self._failed_creates)

    def record(self, intent: CreateIntent) -> None:
        """Under the allocation lock, before ``docker create``: store ``intent``. If it
        cannot be stored (e.g. a full disk), the create's bind staging is removed (nothing
        else exists yet) and the error raised."""
        try:
            self.context.store.add_intent(intent)
        except Ds01Error:
            self.context.staging.unstage(staging_key(intent.docker_name, intent.request_id))
            raise

    def confirm_create(self, request_id: str, docker_name: str) -> None:
        """The client is being told about the create: from now on it is permanent.

        If the intent cannot be removed (a full disk), the create is undone instead and the
        error raised: the client is told it failed, so the container must not stay.
        """
        try:
            self.context.store.remove_intent(request_id)
        except StorageFault as exc:
            self.undo_create(docker_name, request_id)
            self.context.events.emit(
                "container.create",
                user="ds01d",
                resource=f"container/{docker_name}",
                details={"error": exc.message},
                outcome="rolled_back",
            )
            raise

    def undo_create(self, docker_name: str, request_id: str) -> None:
        """After a failed ``docker create``: remove what Docker may have made anyway.

        If Docker cannot be asked, the intent stays for ``settle_failed_creates`` once
        Docker is back (or the start-up reconcile at the next start).
        """
        try:
            self.roll_back(docker_name, request_id)
        except Ds01Error:
            log.warning(
                "could not undo the failed create of %s; undone when Docker is back", docker_name
            )
            self._failed_creates.add(request_id)
            return
        try:
            self.context.store.remove_intent(request_id)
        except StorageFault:  # the container is gone; the next start drops the intent
            log.warning("the create intent of %s stays until there is room", docker_name)

    def roll_back(self, docker_name: str, request_id: str) -> bool:
        """Remove the container a create with ``request_id`` made, if any, and its bind
        staging; ``True`` if there was one. Raises ``Ds01Error`` if Docker cannot be asked."""
        ctx = self.context
        record = ctx.runtime.find_managed(docker_name)
        made = record is not None and record.request_id == request_id
        if made and record is not None:
            ctx.runtime.remove(docker_name, force=True, missing_ok=True)
            ctx.ledger.forget(record.id)
        # The key is this create's own: another container of the name never uses it.
        ctx.staging.unstage(staging_key(docker_name, request_id))
        return made

    def rolled_back(self, intent: CreateIntent, reason: str) -> None:
        """The audit event of a half-made container removed for its create ``intent``."""
        self.context.events.emit(
            "container.create",
            user=intent.user,
            resource=f"container/{intent.docker_name}",
            details={"reason": reason},
            outcome="rolled_back",
        )

    def settle_failed_creates(self) -> list[str]:
        """Takes the allocation lock. Undo the creates whose undo failed because Docker
        could not be asked (their intents stayed): what Docker made of them is removed and
        the intents dropped, as the start-up reconcile does, without a restart. Call it when
        Docker is back. Returns the Docker names removed; Docker still away leaves the rest
        for next time.
        """
        ctx = self.context
        removed: list[str] = []
        with ctx.allocation_lock:
            for intent in ctx.store.intents():
                if intent.request_id not in self._failed_creates:
                    continue  # a create in progress: its own request settles it
                try:
                    made = self.roll_back(intent.docker_name, intent.request_id)
                except Ds01Error as exc:
                    log.warning("failed creates stay pending: %s", exc.message)
                    break
                if made:
                    removed.append(intent.docker_name)
                    self.rolled_back(intent, "Docker stopped answering during the create")
                ctx.store.remove_intent(intent.request_id)
                self._failed_creates.discard(intent.request_id)
        if removed:
            log.warning("removed %d half-made container(s): %s", len(removed), ", ".join(removed))
        return removed
