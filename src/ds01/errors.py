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


class PolicyError(Ds01Error):
    """The request was understood and refused by policy."""

    http_status = 409
    kind = "policy"


class InvalidInput(PolicyError):
    """A name, path, image or value in the request is malformed."""

    exit_code = ExitCode.USAGE
    http_status = 400
    kind = "invalid_input"


class QuotaExceeded(PolicyError):
    """The request would take the user over one of their limits."""

    exit_code = ExitCode.QUOTA
    kind = "quota"


class NoCapacity(PolicyError):
    """The request fits the quota but no suitable device is free now."""

    exit_code = ExitCode.QUOTA
    kind = "capacity"


class PortInUse(PolicyError):
    """A host port the container publishes is held by another container or process.

    Not ``NoCapacity``: waiting in the GPU queue would not free it."""

    exit_code = ExitCode.QUOTA
    kind = "port_in_use"

    def __init__(self, message: str, *, port: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={"port": port, **(details or {})})
        self.port = port


class NotFound(PolicyError):
    """The named container, image or device does not exist (for this caller)."""

    exit_code = ExitCode.NOT_FOUND
    http_status = 404
    kind = "not_found"


class PermissionDenied(PolicyError):
    """The caller may not do this."""

    exit_code = ExitCode.PERMISSION
    http_status = 403
    kind = "permission"


class Conflict(PolicyError):
    """The object is in a state that does not allow the action (e.g. name taken)."""

    exit_code = ExitCode.ERROR
    kind = "conflict"


class SystemFault(Ds01Error):
    """Something ds01 depends on failed."""

    kind = "system"


class ConfigError(SystemFault):
    """A configuration file is invalid; the message names file, line and key."""

    kind = "config"


class StateDamaged(SystemFault):
    """ds01d's state database is damaged; the message names the admin's repair command."""

    http_status = 503
    kind = "state_damaged"


class DockerUnavailable(SystemFault):
    """The Docker engine did not answer or answered with an unexpected error."""

    http_status = 503
    kind = "docker"


class StorageFault(SystemFault):
    """ds01d cannot write its own files (state database, audit log, notices): their file
    system is full, over quota or read-only. The message names the directory and its file
    system; ds01d retries by itself once there is room.

    Exit code 1 (an error), not 3: the user's quota and the GPUs are not the problem, and
    nothing the user can stop or wait for in the queue frees the disk."""

    http_status = 507  # Insufficient Storage
    kind = "storage"


class DaemonUnavailable(SystemFault):
    """The CLI could not reach ds01d."""

    kind = "daemon_unavailable"


class Throttled(PolicyError):
    """The caller already holds as many connections or waiting requests as one user may."""

    exit_code = ExitCode.QUOTA
    http_status = 429
    kind = "throttled"


class ServerBusy(Throttled):
    """ds01d serves as many connections as it may in all; the caller should retry soon."""

    http_status = 503
    kind = "busy"


class RequestTimeout(PolicyError):
    """The request did not arrive in full in time; the connection was closed."""

    exit_code = ExitCode.ERROR
    http_status = 408
    kind = "timeout"


class DaemonStopping(SystemFault):
    """ds01d is stopping and did not run this request: nothing was done."""

    http_status = 503
    kind = "stopping"


class OutcomeUnknown(SystemFault):
    """ds01d stopped while this request was still running: it may or may not have happened."""

    http_status = 503
    kind = "outcome_unknown"
