"""What ds01d does at start with a state database that is missing, empty or damaged.

The SQLite store holds what Docker's labels cannot: the GPU queue, lifecycle clocks, the
usage ledger, released devices, exemptions. Losing it silently would drop queued requests
and reset every countdown, so ds01d starts on a database that is not healthy only when
that loses nothing (a new install: no database, no backup, no ds01 container) or when an
admin has said so (``ds01 admin state restore``, with a backup or ``--empty``). Otherwise
it refuses to start, saying what is wrong and how to repair it (:func:`decide_start`).

Docker's labels still say which containers exist and which devices each was given; when
several containers name the same device, only a running one can hold it (a stopped one
had its devices released, and the record of that may be lost): :func:`inferred_releases`.

Pure functions over plain data; the files are read by ``ds01.runtime.store_files``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ds01.model.units import format_duration

#: The admin's repair commands, as the messages quote them.
RESTORE_COMMAND = "ds01 admin state restore"
START_EMPTY_COMMAND = "ds01 admin state restore --empty"

DbKind = Literal["healthy", "missing", "empty", "damaged", "unreadable"]


@dataclass(frozen=True)
class DbCondition:
    """The state database as found: ``kind``, and for ``damaged`` and ``unreadable`` what
    is wrong in words (SQLite's or the system's own)."""

    kind: DbKind
    detail: str = ""

    def describe(self, path: str) -> str:
        """``path`` and its condition, as a sentence's subject and verb."""
        if self.kind == "healthy":
            return f"{path} is healthy"
        if self.kind == "missing":
            return f"{path} does not exist"
        if self.kind == "empty":
            return f"{path} is empty (0 bytes)"
        if self.kind == "damaged":
            return f"{path} is damaged ({self.detail})"
        return f"{path} cannot be read ({self.detail})"


@dataclass(frozen=True)
class BackupInfo:
    """The last backup of the state database: where, and its age in seconds."""

    path: str
    age_seconds: float

    def describe(self) -> str:
        return f"{self.path}, taken {format_duration(self.age_seconds)} ago"


StartAction = Literal["open", "start_empty", "refuse"]


@dataclass(frozen=True)
class StartDecision:
    """``open`` the database as it is; ``start_empty`` (a new database: nothing is lost,
    or an admin accepted the loss); or ``refuse`` to start, with ``message`` for the admin."""

    action: StartAction
    message: str = ""


def decide_start(
    db_path: str,
    condition: DbCondition,
    backup: BackupInfo | None,
    managed_containers: int,
    loss_accepted: bool,
) -> StartDecision:
    """Whether ds01d may start on the database found at ``db_path``.

    ``managed_containers``: how many ds01 containers Docker has; ``loss_accepted``: an
    admin ran ``ds01 admin state restore --empty`` since the last start. A healthy database
    opens; a missing or empty one starts empty when that loses nothing or the loss was
    accepted; anything else refuses, naming the repair commands.
    """
    if condition.kind == "healthy":
        return StartDecision("open")
    nothing_to_lose = backup is None and managed_containers == 0
    if condition.kind in ("missing", "empty") and (loss_accepted or nothing_to_lose):
        return StartDecision("start_empty")
    return StartDecision(
        "refuse", refusal_message(db_path, condition, backup, managed_containers)
    )


def refusal_message(
    db_path: str, condition: DbCondition, backup: BackupInfo | None, managed_containers: int
) -> str:
    """Why ds01d does not start, what would be lost, and the admin's two ways out."""
    found = f"The state database {condition.describe(db_path)}"
    if managed_containers:
        found += f", and Docker has {managed_containers} ds01 container(s)"
    parts = [
        found + ".",
        "Starting without it would silently lose the GPU queue, lifecycle clocks, usage "
        "ledger and released-device records, so ds01d does not start.",
    ]
    if backup is not None:
        parts.append(
            f"Restore the last backup ({backup.describe()}): `{RESTORE_COMMAND}`, then "
            "start ds01d again."
        )
    else:
        parts.append("There is no backup to restore.")
    parts.append(
        f"Or start anew, accepting the loss (an audit event lists it): `{START_EMPTY_COMMAND}`."
    )
    return " ".join(parts)


@dataclass(frozen=True)
class LabelledContainer:
    """A ds01 container as its Docker labels describe it."""

    id: str
    name: str
    status: str
    devices: tuple[str, ...]


def inferred_releases(
    containers: Iterable[LabelledContainer], released: Iterable[str] = ()
) -> list[str]:
    """Ids of stopped containers that cannot hold the devices their labels name.

    A device goes to one container at a time; when another container was given it, a
    stopped one naming it had it released. So wherever several containers name a device
    and none of them is marked released in ``released``, every stopped one among them is
    released: a running one keeps it, and when all are stopped none does (whoever starts
    first gets devices again, as after any release). Nothing is given twice.
    """
    already = set(released)
    claimants: dict[str, list[LabelledContainer]] = {}
    for container in containers:
        if container.id in already:
            continue
        for device in container.devices:
            claimants.setdefault(device, []).append(container)
    found: set[str] = set()
    for holders in claimants.values():
        if len(holders) > 1:
            found.update(c.id for c in holders if c.status != "running")
    return sorted(found)


__all__ = [
    "RESTORE_COMMAND",
    "START_EMPTY_COMMAND",
    "BackupInfo",
    "DbCondition",
    "LabelledContainer",
    "StartDecision",
    "decide_start",
    "inferred_releases",
    "refusal_message",
]
