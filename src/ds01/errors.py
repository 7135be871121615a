"""One exception root for ds01, with policy refusals kept apart from system failures.

``Ds01Error`` is the root: catch it to catch everything ds01 raises on purpose.

- ``PolicyError`` and its subclasses are *expected refusals*: the request was understood
  and policy says no (quota, permission, bad input, unknown name). They carry a message
  written for the user and are never logged with a traceback.
- ``SystemFault`` and its subclasses mean something around ds01 failed (Docker down,
  unreadable configuration, NVML error). The user is told what failed; admins get details.

Every error knows its process exit code and HTTP status, so the daemon and the CLI agree
without a mapping table of their own.
"""

from __future__ import annotations

from ds01.exitcodes import ExitCode

# The CLI imports this module on every command: keep `typing` (~10 ms) out of it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar


class Ds01Error(Exception):
    """Root of every ds01 error."""

    exit_code: ClassVar[ExitCode] = ExitCode.ERROR
    http_status: ClassVar[int] = 500
    kind: ClassVar[str] = "error"

    def __init_subclass__(
        cls,
        *,
        kind: str | None = None,
        http_status: int | None = None,
        exit_code: ExitCode | None = None,
        **kwargs: Any,
    ) -> None:
        """An error class gives its ``kind``, HTTP status and exit code in its ``class``
        line (or as class attributes); what it does not give is its parent's."""
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = kind
        if http_status is not None:
            cls.http_status = http_status
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "exit_code": int(self.exit_code),
            "details": self.details,
        }


class PolicyError(Ds01Error, kind="policy", http_status=409):
    """The request was understood and refused by policy."""


class InvalidInput(PolicyError, kind="invalid_input", http_status=400, exit_code=ExitCode.USAGE):
    """A name, path, image or value in the request is malformed."""


class QuotaExceeded(PolicyError, kind="quota", exit_code=ExitCode.QUOTA):
    """The request would take the user over one of their limits."""


class NoCapacity(PolicyError, kind="capacity", exit_code=ExitCode.QUOTA):
    """The request fits the quota but no suitable device is free now."""


class NoSpace(NoCapacity, kind="no_space", http_status=507):
    """The disk ds01d writes to has too little room left for what the request needs."""


class PortInUse(PolicyError, kind="port_in_use", exit_code=ExitCode.QUOTA):
    """A host port the container publishes is held by another container or process.

    Not ``NoCapacity``: waiting in the GPU queue would not free it."""

    def __init__(self, message: str, *, port: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={"port": port, **(details or {})})
        self.port = port


class NotFound(PolicyError, kind="not_found", http_status=404, exit_code=ExitCode.NOT_FOUND):
    """The named container, image or device does not exist (for this caller)."""


class PermissionDenied(
    PolicyError, kind="permission", http_status=403, exit_code=ExitCode.PERMISSION
):
    """The caller may not do this."""


class Conflict(PolicyError, kind="conflict", exit_code=ExitCode.ERROR):
    """The object is in a state that does not allow the action (e.g. name taken)."""


class SystemFault(Ds01Error, kind="system"):
    """Something ds01 depends on failed."""


class ConfigError(SystemFault, kind="config"):
    """A configuration file is invalid; the message names file, line and key."""


class StateDamaged(SystemFault, kind="state_damaged", http_status=503):
    """ds01d's state database is damaged; the message names the admin's repair command."""


class DeviceInUse(SystemFault, kind="device_in_use"):
    """The driver refused to destroy a MIG instance because a process still runs on it
    (NVML's ``InUse``); ds01d tries again later."""


class DockerUnavailable(SystemFault, kind="docker", http_status=503):
    """The Docker engine did not answer or answered with an unexpected error."""


class StorageFault(SystemFault, kind="storage", http_status=507):  # Insufficient Storage
    """ds01d cannot write its own files (state database, audit log, notices): their file
    system is full, over quota or read-only. The message names the directory and its file
    system; ds01d retries by itself once there is room.

    Exit code 1 (an error), not 3: the user's quota and the GPUs are not the problem, and
    nothing the user can stop or wait for in the queue frees the disk."""


class SlurmError(SystemFault, kind="slurm"):
    """Slurm's tools are missing or failed (slurmdbd down, a change Slurm refused); the
    message quotes Slurm's."""


class SlurmJobRequired(PolicyError, kind="slurm_job_required", exit_code=ExitCode.ERROR):
    """Cluster mode: a container is created by its Slurm job, not by ds01d at once.
    ``details["sbatch"]`` are the job's ``sbatch`` options; ``ds01 container-create``
    submits it as the user."""


class DaemonUnavailable(SystemFault, kind="daemon_unavailable"):
    """The CLI could not reach ds01d."""


class Throttled(PolicyError, kind="throttled", http_status=429, exit_code=ExitCode.QUOTA):
    """The caller already holds as many connections or waiting requests as one user may."""


class ServerBusy(Throttled, kind="busy", http_status=503):
    """ds01d serves as many connections as it may in all; the caller should retry soon."""


class RequestTimeout(PolicyError, kind="timeout", http_status=408, exit_code=ExitCode.ERROR):
    """The request did not arrive in full in time; the connection was closed."""


class DaemonStopping(SystemFault, kind="stopping", http_status=503):
    """ds01d is stopping and did not run this request: nothing was done."""


class OutcomeUnknown(SystemFault, kind="outcome_unknown", http_status=503):
    """ds01d stopped while this request was still running: it may or may not have happened."""


class DoorRefusal(ValueError):
    """A request the Docker API door refuses, answered to the Docker client as Docker's own
    error body: ``message`` (why, in the user's terms) and ``status`` (the HTTP status,
    403 unless the request itself is malformed).

    Not a ``Ds01Error``: raised by the door's pure readers in ``core`` (a create body, a
    ``docker cp`` tar, a ``docker load`` tar) and never seen by the ds01 API or the CLI.
    """

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
