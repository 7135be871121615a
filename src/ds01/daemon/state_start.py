"""Open the state database at ds01d's start, or refuse to, in words.

:func:`open_state` checks the file (``state_files.examine``: missing, empty, damaged,
unreadable, healthy), asks Docker which ds01 containers exist, and lets
``ds01.core.state_recovery.decide_start`` choose: open it, start anew (nothing to lose,
or an admin accepted the loss with ``ds01 admin state restore --empty``), or refuse with
a message that names the file, what is wrong and the repair commands (``StateRefused``;
``ds01d`` prints it and exits 1, and a ``state.damaged`` event records it).

After a restore it writes the audit event of what the admin did and what was lost
(``state.restore`` from the backup, ``state.reset`` anew), and at every start it marks
released the stopped containers that Docker's labels prove cannot hold their devices
(``core.state_recovery.inferred_releases``), so that no device is given twice after a
lost or older database.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from ds01.core.state_recovery import LabelledContainer, decide_start, inferred_releases
from ds01.errors import SystemFault
from ds01.events.log import EventLog, utc_now
from ds01.runtime.docker import ContainerRecord
from ds01.runtime.store import StateStore
from ds01.runtime.store_files import backup_info, clear_restore_record, examine, read_restore_record

log = logging.getLogger(__name__)

#: What a database started anew has lost, as ``state.reset`` lists it.
LOST_WHEN_EMPTY = (
    "the GPU queue (every waiting request)",
    "lifecycle clocks (idle and runtime countdowns start anew)",
    "the usage ledger (fair-share history)",
    "released-device records",
    "exemptions",
    "OOM kill counts",
    "the energy ledger and GPU activity",
)


class StateRefused(SystemFault):
    """ds01d must not start on the state database as it is; the message says why."""


def _resource(db_path: Path) -> str:
    return f"state/{db_path.name}"


class ContainerLister(Protocol):
    """Where the managed containers come from (ds01d's ``ContainerLedger``)."""

    def list_managed(self) -> list[ContainerRecord]: ...


def open_state(db_path: Path, containers: ContainerLister, events: EventLog) -> StateStore:
    """The store of ``db_path``, checked (see the module docstring).

    Raises:
        StateRefused: it must not be opened as it is; nothing was changed.
        DockerUnavailable: Docker could not be asked which containers exist.
    """
    condition = examine(db_path)
    backup = backup_info(db_path)
    restored = read_restore_record(db_path.parent)
    records = containers.list_managed()
    loss_accepted = restored is not None and restored.get("source") == "empty"
    decision = decide_start(str(db_path), condition, backup, len(records), loss_accepted)
    if decision.action == "refuse":
        events.emit(
            "state.damaged",
            user="ds01d",
            resource=_resource(db_path),
            details={"when": "start", "condition": condition.kind, "error": condition.detail},
            outcome="failure",
        )
        raise StateRefused(decision.message)
    if decision.action == "start_empty" and restored is None:
        log.warning("%s: starting with a new state database", condition.describe(str(db_path)))

    def damaged(message: str) -> None:
        events.emit(
            "state.damaged",
            user="ds01d",
            resource=_resource(db_path),
            details={"when": "running", "error": message},
            outcome="failure",
        )

    try:
        store = StateStore(db_path, on_damage=damaged)
    except sqlite3.Error as exc:
        raise StateRefused(f"cannot open {db_path}: {exc}; ds01d does not start.") from exc
    released = _release_contested(store, records)
    if restored is not None:
        _record_restore(store, events, restored, records, released)
        clear_restore_record(db_path.parent)
    return store


def _release_contested(store: StateStore, records: list[ContainerRecord]) -> list[str]:
    """Mark released the stopped containers that another container's labels prove cannot
    hold their devices; return their Docker names."""
    labelled = [LabelledContainer(r.id, r.docker_name, r.status, r.gpus) for r in records]
    found = set(inferred_releases(labelled, store.released()))
    now = utc_now().isoformat(timespec="seconds")
    names = []
    for record in records:
        if record.id in found:
            store.release(record.id, record.docker_name, now)
            names.append(record.docker_name)
    if names:
        log.warning(
            "devices released from stopped container(s) whose devices another holds: %s",
            ", ".join(names),
        )
    return names


def _record_restore(
    store: StateStore,
    events: EventLog,
    restored: dict[str, Any],
    records: list[ContainerRecord],
    released: list[str],
) -> None:
    """The audit event of ``ds01 admin state restore``: what it did, and what was lost."""
    details: dict[str, Any] = {
        key: restored.get(key)
        for key in ("at", "condition", "kept_as", "backup", "backup_age_seconds")
    }
    details["released_devices_of"] = released
    by = str(restored.get("by") or "root")
    if restored.get("source") == "empty":
        details["lost"] = list(LOST_WHEN_EMPTY)
        details["containers_reset"] = sorted(f"{r.user}/{r.name}" for r in records)
        action = "state.reset"
    else:
        details["lost"] = [
            "every change made after the backup was taken: requests queued or started, "
            "releases, exemptions, clock and usage updates since then"
        ]
        details["waiting_requests"] = [q.id for q in store.queued()]
        details["create_intents_dropped"] = restored.get("dropped_intents") or []
        action = "state.restore"
    database = Path(str(restored.get("database")))
    events.emit(action, user=by, resource=_resource(database), details=details)
    log.warning("%s recorded: %s", action, details)


__all__ = ["LOST_WHEN_EMPTY", "StateRefused", "open_state"]
