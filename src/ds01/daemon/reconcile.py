"""``StartupReconciler``: what a crash or a restart left half-done, settled at start.

At start, before ds01d answers: a re-creation on other devices that was interrupted is
finished or undone; containers whose create never finished (an intent left in the store)
are removed; the bind staging of containers that are gone is removed.

State: none. Locks: it takes the allocation lock where it decides (staging); the rest runs
before any request is served. Calls: the context, ``CreateIntents.rolled_back`` (the
audit event of a rolled-back create).
"""

from __future__ import annotations

import logging
import time

from ds01.daemon.context import DaemonContext
from ds01.daemon.create_intents import CreateIntents
from ds01.model import labels as L
from ds01.runtime.store import CreateIntent

log = logging.getLogger(__name__)


class StartupReconciler:
    """Settles what the last ds01d left half-done (see the module docstring)."""

    def __init__(self, context: DaemonContext, intents: CreateIntents) -> None:
        self.context = context
        self.intents = intents

    def _settle_replacements(self) -> None:
        """Finish or undo a re-creation on other devices that a crash interrupted: the old
        container is removed if the new one exists, else it gets its name back."""
        runtime = self.context.runtime
        records = self.context.records()
        names = {r.docker_name for r in records}
        for record in records:
            if not record.docker_name.endswith(L.REPLACED_SUFFIX):
                continue
            original = record.docker_name[: -len(L.REPLACED_SUFFIX)]
            if original in names:
                runtime.remove(record.docker_name, force=True, missing_ok=True)
                self.context.ledger.forget(record.id)
            else:
                runtime.rename(record.docker_name, original)
                self.context.ledger.refresh(record.id)
            log.warning("settled the interrupted re-creation of %s", original)

    def reconcile(self, settle_seconds: float = 1.5) -> list[str]:
        """Remove containers whose create never finished; return their Docker names.

        An intent left in the store means ds01d died between recording the create and
        confirming it. Docker may still be finishing that create, so an intent whose
        container is not there yet is looked at again for ``settle_seconds``.
        """
        ctx = self.context
        removed: list[str] = []
        self._settle_replacements()
        pending = ctx.store.intents()
        deadline = time.monotonic() + settle_seconds
        while pending:
            by_name = {r.docker_name: r for r in ctx.records()}
            still: list[CreateIntent] = []
            for intent in pending:
                record = by_name.get(intent.docker_name)
                if record is not None and record.request_id == intent.request_id:
                    ctx.runtime.remove(record.docker_name, force=True, missing_ok=True)
                    ctx.ledger.forget(record.id)
                    removed.append(record.docker_name)
                    self.intents.rolled_back(intent, "daemon stopped before the create completed")
                    ctx.store.remove_intent(intent.request_id)
                elif time.monotonic() < deadline:
                    still.append(intent)
                else:
                    ctx.store.remove_intent(intent.request_id)
            pending = still
            if pending:
                time.sleep(0.1)
        self.reconcile_staging()
        return removed

    def reconcile_staging(self) -> list[str]:
        """Takes the allocation lock. At start: unmount and remove the staging directories of
        containers that are gone (they are this instance's: the tree lies in its state
        directory), found by the staging keys that no container's bind sources use. Returns
        those keys."""
        ctx = self.context
        with ctx.allocation_lock:
            existing = ctx.staging.keys_of(s for r in ctx.records() for s in r.bind_sources)
            gone = sorted(ctx.staging.staged() - existing)
            for container in gone:
                ctx.staging.unstage(container)
        if gone:
            log.info("removed the bind staging of %d removed container(s)", len(gone))
        return gone


__all__ = ["StartupReconciler"]
