"""``container-logs``: the output of one of the caller's containers, streamed through.

``GET /v1/containers/{name}/logs?tail=N|all&follow=1&user=NAME`` answers ``200`` with the
raw bytes Docker keeps of the container's output (a container with a terminal, as every
ds01 container has, has one stream: stdout and stderr interleaved as printed), then closes
the connection; with ``follow=1`` it goes on with what the container prints until it stops
or the client hangs up. ds01d never holds the log: it copies Docker's chunks to the client
as they come (``ds01.daemon.server.Streamed``).

The container is found and refused exactly as ``container-stop`` finds and refuses it
(someone else's: 403 and an ``auth.denied`` event). Like ``container-list``, a read that
succeeds leaves no event.
"""

from __future__ import annotations

from ds01.core.container_stats import parse_tail
from ds01.daemon.identity import Caller
from ds01.daemon.service import Ds01Service
from ds01.errors import InvalidInput
from ds01.runtime.docker import OutputStream


def open_logs(
    service: Ds01Service,
    caller: Caller,
    name: str,
    *,
    tail: str,
    follow: bool,
    user: str | None,
) -> OutputStream:
    """The output stream of the caller's container ``name`` (admins: ``user``'s), its last
    ``tail`` lines (``all``: every line Docker kept).

    Raises:
        InvalidInput: ``tail`` is not a number from 0 to 100000 or ``all`` (logged).
        PermissionDenied, NotFound: as for ``container-stop``.
    """
    try:
        lines = parse_tail(tail)
    except ValueError as exc:
        refusal = InvalidInput(str(exc))
        service.log_refusal(caller, "container.logs", f"container/{name[:80]}", refusal)
        raise refusal from None
    record = service.access.target_to_read(caller, name, user, "logs")
    return service.runtime.logs(record.docker_name, tail=lines, follow=follow)


__all__ = ["open_logs"]
